//! Voice activity detection and endpointing on call audio.
//!
//! Energy and zero-crossing rate against an adaptive noise floor, written here rather than taken
//! from a crate: `webrtc-vad` wraps unmaintained C (last release 2019) and `voice_activity_detector`
//! needs ONNX Runtime binaries fetched at build time, which an offline build cannot do. Telephone
//! audio (G.711, 300-3400 Hz) is simple enough that frame energy relative to the line's own noise
//! floor, plus a voicing check (low zero-crossing rate) to start an utterance, endpoints well; the
//! Whisper stage decides afterwards whether there were words.
//!
//! Sans-IO: the caller pushes 10/20/30 ms frames of 8 or 16 kHz PCM with the current time and gets
//! at most one [`VadEvent`] back. No clocks, no threads.
//!
//! - [`VadEvent::SpeechStarted`] fires after a short run of voiced frames (barge-in: stop the prompt).
//! - [`VadEvent::SpeechEnded`] fires after `end_silence` of quiet, with the utterance resampled to
//!   16 kHz f32 (what Whisper takes), including a short pre-roll so the first syllable is whole.
//! - [`VadEvent::MaxLength`] fires when a caller talks longer than `max_utterance`, with the audio so far.
//! - [`VadEvent::Partial`], only when `partial_every` is set, carries the audio so far for
//!   interim recognition.

use std::collections::VecDeque;
use std::time::Duration;

/// Endpointing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// 8000 or 16000.
    pub sample_rate: u32,
    /// Quiet that ends an utterance.
    pub end_silence: Duration,
    /// Voiced audio needed before speech counts as started.
    pub start_speech: Duration,
    /// An utterance is cut here and returned as [`VadEvent::MaxLength`].
    pub max_utterance: Duration,
    /// Audio kept from before the start was detected.
    pub pre_roll: Duration,
    /// How far above the noise floor (dB) a frame must be to count as speech.
    pub threshold_db: f32,
    /// Frames quieter than this (dBFS) are never speech, however quiet the line.
    pub min_level_dbfs: f32,
    /// Zero-crossing rate (crossings per sample) above which a frame is noise-like and cannot
    /// start an utterance (white noise is about 0.5; voiced speech well under 0.25).
    pub max_start_zcr: f32,
    /// Emit [`VadEvent::Partial`] this often during speech.
    pub partial_every: Option<Duration>,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            sample_rate: 8000,
            end_silence: Duration::from_millis(800),
            start_speech: Duration::from_millis(120),
            max_utterance: Duration::from_secs(15),
            pre_roll: Duration::from_millis(300),
            threshold_db: 10.0,
            min_level_dbfs: -50.0,
            max_start_zcr: 0.3,
            partial_every: None,
        }
    }
}

/// A finished stretch of speech, ready for the recognizer.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// 16 kHz mono, -1.0..1.0.
    pub audio: Vec<f32>,
    /// Time of the first frame (pre-roll included), as passed to [`Vad::push`].
    pub started_at_ms: u64,
    /// Length of `audio`.
    pub duration: Duration,
}

/// What a frame changed.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    SpeechStarted { at_ms: u64 },
    Partial(Utterance),
    SpeechEnded(Utterance),
    MaxLength(Utterance),
}

/// Invalid settings or input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VadError {
    #[error("sample rate {0} Hz is not supported (8000 or 16000)")]
    SampleRate(u32),
    #[error("frame of {0} samples is not 10 to 60 ms long")]
    FrameLength(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Speech,
}

/// The endpointer for one call leg.
#[derive(Debug)]
pub struct Vad {
    cfg: VadConfig,
    state: State,
    /// Noise floor in dBFS; `None` until the first frame.
    floor: Option<f32>,
    /// Recent frames before speech (pre-roll), input rate.
    history: VecDeque<i16>,
    /// Samples of consecutive voiced frames while idle.
    voiced_run: usize,
    /// The utterance being collected, input rate.
    current: Vec<i16>,
    started_at_ms: u64,
    /// Samples of quiet since the last speech frame.
    silence_run: usize,
    since_partial: usize,
}

fn samples(d: Duration, rate: u32) -> usize {
    (d.as_millis() as usize).saturating_mul(rate as usize) / 1000
}

/// Level (dBFS) and zero-crossing rate of a frame.
fn analyse(frame: &[i16]) -> (f32, f32) {
    let energy: f64 = frame
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / frame.len().max(1) as f64;
    let db = 10.0 * (energy / (32768.0 * 32768.0)).max(1e-12).log10();
    let crossings = frame
        .windows(2)
        .filter(|w| (w[0] >= 0) != (w[1] >= 0))
        .count();
    (db as f32, crossings as f32 / frame.len().max(1) as f32)
}

impl Vad {
    pub fn new(cfg: VadConfig) -> Result<Self, VadError> {
        if cfg.sample_rate != 8000 && cfg.sample_rate != 16000 {
            return Err(VadError::SampleRate(cfg.sample_rate));
        }
        Ok(Vad {
            cfg,
            state: State::Idle,
            floor: None,
            history: VecDeque::new(),
            voiced_run: 0,
            current: Vec::new(),
            started_at_ms: 0,
            silence_run: 0,
            since_partial: 0,
        })
    }

    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        self.state == State::Speech
    }

    /// Current noise floor estimate in dBFS.
    pub fn noise_floor_dbfs(&self) -> Option<f32> {
        self.floor
    }

    /// Changes how utterances end, for the next question: a step that expects a long
    /// description waits for a longer pause than a menu. Takes effect with the next frame; the
    /// noise floor is kept.
    pub fn set_endpointing(&mut self, end_silence: Duration, max_utterance: Duration) {
        self.cfg.end_silence = end_silence;
        self.cfg.max_utterance = max_utterance;
    }

    /// Forgets any utterance in progress (for example when the IVR moves to another step);
    /// the noise floor is kept, since the line is the same.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.history.clear();
        self.current.clear();
        self.voiced_run = 0;
        self.silence_run = 0;
        self.since_partial = 0;
    }

    /// Feeds one frame captured at `now_ms`.
    pub fn push(&mut self, frame: &[i16], now_ms: u64) -> Result<Option<VadEvent>, VadError> {
        let rate = self.cfg.sample_rate as usize;
        if frame.len() < rate / 100 || frame.len() > rate * 60 / 1000 {
            return Err(VadError::FrameLength(frame.len()));
        }
        let (db, zcr) = analyse(frame);
        let floor = *self.floor.get_or_insert(db.min(-60.0));
        let loud = db > floor + self.cfg.threshold_db && db > self.cfg.min_level_dbfs;
        self.adapt_floor(db, loud);
        Ok(match self.state {
            State::Idle => self.idle(frame, now_ms, loud && zcr <= self.cfg.max_start_zcr),
            State::Speech => self.speech(frame, loud),
        })
    }

    /// The floor follows quiet frames quickly downwards and slowly upwards, and creeps up even
    /// under "speech" so a steady loud noise eventually becomes the floor instead of endless speech.
    fn adapt_floor(&mut self, db: f32, loud: bool) {
        let Some(floor) = self.floor.as_mut() else {
            return;
        };
        let alpha = if db < *floor {
            0.3
        } else if loud {
            0.002
        } else {
            0.05
        };
        *floor = (*floor + alpha * (db - *floor)).clamp(-90.0, 0.0);
    }

    fn idle(&mut self, frame: &[i16], now_ms: u64, voiced: bool) -> Option<VadEvent> {
        self.history.extend(frame.iter().copied());
        let keep = samples(self.cfg.pre_roll, self.cfg.sample_rate)
            + samples(self.cfg.start_speech, self.cfg.sample_rate)
            + frame.len();
        while self.history.len() > keep {
            self.history.pop_front();
        }
        self.voiced_run = if voiced {
            self.voiced_run + frame.len()
        } else {
            0
        };
        if self.voiced_run < samples(self.cfg.start_speech, self.cfg.sample_rate).max(1) {
            return None;
        }
        self.state = State::Speech;
        self.current = self.history.drain(..).collect();
        let rate = u64::from(self.cfg.sample_rate);
        self.started_at_ms = (now_ms + frame.len() as u64 * 1000 / rate)
            .saturating_sub(self.current.len() as u64 * 1000 / rate);
        self.silence_run = 0;
        self.since_partial = 0;
        self.voiced_run = 0;
        Some(VadEvent::SpeechStarted { at_ms: now_ms })
    }

    fn speech(&mut self, frame: &[i16], loud: bool) -> Option<VadEvent> {
        self.current.extend_from_slice(frame);
        self.silence_run = if loud {
            0
        } else {
            self.silence_run + frame.len()
        };
        self.since_partial += frame.len();
        let rate = self.cfg.sample_rate;
        if self.silence_run >= samples(self.cfg.end_silence, rate) {
            // Keep a little of the trailing quiet: Whisper likes a soft ending.
            let tail = samples(Duration::from_millis(200), rate).min(self.silence_run);
            let cut = self.current.len() - self.silence_run + tail;
            self.current.truncate(cut);
            let utterance = self.take();
            return Some(VadEvent::SpeechEnded(utterance));
        }
        if self.current.len() >= samples(self.cfg.max_utterance, rate) {
            return Some(VadEvent::MaxLength(self.take()));
        }
        if let Some(every) = self.cfg.partial_every
            && self.since_partial >= samples(every, rate).max(1)
        {
            self.since_partial = 0;
            return Some(VadEvent::Partial(self.utterance(&self.current)));
        }
        None
    }

    fn take(&mut self) -> Utterance {
        let pcm = std::mem::take(&mut self.current);
        let utterance = self.utterance(&pcm);
        self.reset();
        utterance
    }

    fn utterance(&self, pcm: &[i16]) -> Utterance {
        let audio = to_whisper_input(pcm, self.cfg.sample_rate);
        let duration = Duration::from_secs_f64(audio.len() as f64 / 16_000.0);
        Utterance {
            audio,
            started_at_ms: self.started_at_ms,
            duration,
        }
    }
}

/// 8 or 16 kHz PCM to 16 kHz f32, as Whisper takes it (8 kHz is upsampled linearly: telephone
/// audio has nothing above 4 kHz to lose).
pub fn to_whisper_input(pcm: &[i16], sample_rate: u32) -> Vec<f32> {
    let norm = |s: i16| f32::from(s) / 32768.0;
    if sample_rate != 8000 {
        return pcm.iter().map(|&s| norm(s)).collect();
    }
    let mut out = Vec::with_capacity(pcm.len() * 2);
    for (i, &s) in pcm.iter().enumerate() {
        let next = pcm.get(i + 1).copied().unwrap_or(s);
        out.push(norm(s));
        out.push((norm(s) + norm(next)) / 2.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: usize, amp: f32, rate: usize) -> Vec<i16> {
        (0..ms * rate / 1000)
            .map(|i| {
                (amp * 32767.0
                    * (i as f32 * 2.0 * std::f32::consts::PI * 200.0 / rate as f32).sin())
                    as i16
            })
            .collect()
    }

    fn run(vad: &mut Vad, pcm: &[i16], t0: u64) -> Vec<VadEvent> {
        pcm.chunks(160)
            .enumerate()
            .filter_map(|(i, f)| vad.push(f, t0 + i as u64 * 20).ok().flatten())
            .collect()
    }

    #[test]
    fn finds_one_utterance_in_quiet() {
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        let mut pcm = vec![0i16; 8000];
        pcm.extend(tone(1000, 0.3, 8000));
        pcm.extend(vec![0i16; 8000]);
        let events = run(&mut vad, &pcm, 0);
        assert!(
            matches!(events[0], VadEvent::SpeechStarted { at_ms } if (1000..1200).contains(&at_ms)),
            "{events:?}"
        );
        let VadEvent::SpeechEnded(u) = &events[1] else {
            panic!("{events:?}")
        };
        // 1 s of tone plus pre-roll and a short tail.
        assert!(
            u.duration > Duration::from_millis(1100) && u.duration < Duration::from_millis(1700),
            "{:?}",
            u.duration
        );
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn white_noise_never_starts_and_long_talk_is_cut() {
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        let mut x: u32 = 1;
        let noise: Vec<i16> = (0..8000 * 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as i16) / 4
            })
            .collect();
        assert!(run(&mut vad, &noise, 0).is_empty());
        let mut vad = Vad::new(VadConfig {
            max_utterance: Duration::from_secs(2),
            ..VadConfig::default()
        })
        .expect("config");
        let events = run(&mut vad, &tone(5000, 0.3, 8000), 0);
        assert!(events.iter().any(
            |e| matches!(e, VadEvent::MaxLength(u) if u.duration <= Duration::from_millis(2100))
        ));
    }

    #[test]
    fn rejects_bad_frames() {
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        assert_eq!(vad.push(&[0; 3], 0), Err(VadError::FrameLength(3)));
        assert!(
            Vad::new(VadConfig {
                sample_rate: 44100,
                ..VadConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn clipped_speech_ends_and_a_longer_pause_can_be_asked_for() {
        // A shouting caller on a hot line: the tone hard-clipped to a square wave.
        let clipped: Vec<i16> = tone(1000, 1.0, 8000)
            .iter()
            .map(|s| if *s >= 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut pcm = vec![0i16; 4000];
        pcm.extend(&clipped);
        pcm.extend(vec![0i16; 8000]);
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        let events = run(&mut vad, &pcm, 0);
        assert!(matches!(
            events[..],
            [VadEvent::SpeechStarted { .. }, VadEvent::SpeechEnded(_)]
        ));

        // A pause of 1 s inside the answer: one utterance with 1.5 s end silence, two with 0.8 s.
        let mut pcm = vec![0i16; 4000];
        pcm.extend(tone(800, 0.3, 8000));
        pcm.extend(vec![0i16; 8000]);
        pcm.extend(tone(800, 0.3, 8000));
        pcm.extend(vec![0i16; 16000]);
        let ended = |events: &[VadEvent]| {
            events
                .iter()
                .filter(|e| matches!(e, VadEvent::SpeechEnded(_)))
                .count()
        };
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        assert_eq!(ended(&run(&mut vad, &pcm, 0)), 2);
        let mut vad = Vad::new(VadConfig::default()).expect("config");
        vad.set_endpointing(Duration::from_millis(1500), Duration::from_secs(15));
        assert_eq!(ended(&run(&mut vad, &pcm, 0)), 1);
    }
}
