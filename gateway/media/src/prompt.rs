//! Prompt playback: WAV audio of any rate and channel count, converted to 20 ms G.711 frames and
//! played by a [`Player`] that stops on the very next frame (barge-in).
//!
//! Administrators record prompts with whatever tool they have (44.1 kHz stereo is common), so
//! [`pcm8k_from_wav`] reads any PCM or float WAV with `hound`, mixes to mono and resamples to
//! 8 kHz with `rubato`'s FFT resampler (fixed ratio, band-limited, so no aliasing from 44.1 kHz
//! material). The WAV comes in as bytes from any reader the caller opened (a byte slice, a
//! buffered file): this module reads no file and keeps no cache; the gateway's
//! `runtime::prompt_cache` opens the files and caches the [`EncodedPrompt`]s by modification time.
//! Decoding is CPU work: call it from `spawn_blocking` (or at flow load).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::g711::Codec;
use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Why WAV audio could not be turned into 8 kHz PCM.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Not a WAV `hound` can read (or the reader failed).
    #[error("{0}")]
    Wav(#[from] hound::Error),
    /// A readable WAV we will not play (no channels, zero rate, too long).
    #[error("{0}")]
    Unsupported(String),
    /// The resampler refused the audio.
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Longest prompt we load (ten minutes): protects memory from a wrong file.
const MAX_SECONDS: u64 = 600;

/// Resample mono audio between rates (whole clip, delay trimmed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, WavError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| WavError::Resample(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| WavError::Resample(e.to_string()))?;
    let out = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| WavError::Resample(e.to_string()))?;
    Ok(out.take_data())
}

/// Decode WAV audio (from a byte slice, or a file the caller opened) as 8 kHz mono 16-bit PCM.
pub fn pcm8k_from_wav(wav: impl Read) -> Result<Vec<i16>, WavError> {
    let reader = hound::WavReader::new(wav)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 || spec.sample_rate == 0 {
        return Err(WavError::Unsupported(
            "no channels or zero sample rate".into(),
        ));
    }
    if u64::from(reader.duration()) > MAX_SECONDS * u64::from(spec.sample_rate) {
        return Err(WavError::Unsupported(format!(
            "longer than {MAX_SECONDS} s"
        )));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect();
    let resampled = resample(&mono, spec.sample_rate, SAMPLE_RATE)?;
    Ok(resampled
        .iter()
        .map(|&v| (v * 32768.0).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// A prompt encoded into 20 ms frames of one codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// The codec the frames are encoded in; a [`Player`] skips clips of another.
    pub codec: Codec,
    /// 160-byte payloads; the last is padded with silence.
    pub frames: Vec<Vec<u8>>,
}

impl EncodedPrompt {
    /// Encode PCM into frames.
    pub fn encode(pcm: &[i16], codec: Codec) -> Self {
        let frames = pcm
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut f = Vec::with_capacity(FRAME_SAMPLES);
                codec.encode(chunk, &mut f);
                f.resize(FRAME_SAMPLES, codec.silence_code());
                f
            })
            .collect();
        Self { codec, frames }
    }

    /// Playing time of the whole prompt.
    pub fn duration(&self) -> Duration {
        super::FRAME_DURATION * self.frames.len() as u32
    }
}

/// One item of a play sequence.
#[derive(Debug, Clone)]
pub enum PlayItem {
    /// An encoded prompt, shared between calls.
    Clip(Arc<EncodedPrompt>),
    /// Silence of this length (rounded up to whole frames).
    Silence(Duration),
}

/// Plays a sequence of clips and silences as 20 ms frames.
#[derive(Debug)]
pub struct Player {
    codec: Codec,
    items: VecDeque<PlayItem>,
    position: usize,
    stopped: bool,
    id: u64,
}

impl Player {
    /// Clips in another codec than `codec` are skipped (the cache encodes per codec).
    pub fn new(codec: Codec, items: impl IntoIterator<Item = PlayItem>) -> Self {
        Self {
            codec,
            items: items.into_iter().collect(),
            position: 0,
            stopped: false,
            id: 0,
        }
    }

    /// Tag the player so that its end can be told from the end of one it replaced.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }

    /// The tag given with [`Player::with_id`] (0 without).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Barge-in: no further frame is produced.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.items.clear();
    }

    /// Whether [`Player::stop`] ended it (barge-in), as opposed to running out.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether no further frame will come (stopped, or every item played).
    pub fn is_finished(&self) -> bool {
        self.stopped || self.items.is_empty()
    }

    /// Append to the sequence.
    pub fn push(&mut self, item: PlayItem) {
        if !self.stopped {
            self.items.push_back(item);
        }
    }

    /// The next 20 ms payload, or `None` when finished or stopped.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.stopped {
                return None;
            }
            let item = self.items.front()?;
            match item {
                PlayItem::Clip(clip) => {
                    if clip.codec == self.codec
                        && let Some(frame) = clip.frames.get(self.position)
                    {
                        self.position += 1;
                        return Some(frame.clone());
                    }
                    if clip.codec != self.codec {
                        tracing::warn!("prompt in another codec skipped");
                    }
                }
                PlayItem::Silence(d) => {
                    let frames = d.as_millis().div_ceil(20) as usize;
                    if self.position < frames {
                        self.position += 1;
                        return Some(vec![self.codec.silence_code(); FRAME_SAMPLES]);
                    }
                }
            }
            self.items.pop_front();
            self.position = 0;
        }
    }
}

impl Iterator for Player {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.next_frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV (16-bit) of a sine, in memory.
    fn wav_bytes(rate: u32, channels: u16, seconds: f32, freq: f32, amp: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).expect("create wav");
        let n = (rate as f32 * seconds) as usize;
        for i in 0..n {
            let v =
                (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()) as i16;
            for _ in 0..channels {
                w.write_sample(v).expect("write");
            }
        }
        w.finalize().expect("finalize");
        out.into_inner()
    }

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
    }

    #[test]
    fn decodes_any_rate_and_channels_to_8k_mono() {
        for (rate, channels) in [(8000, 1), (16000, 1), (44100, 2), (48000, 2), (22050, 1)] {
            let wav = wav_bytes(rate, channels, 1.0, 440.0, 10000.0);
            let pcm = pcm8k_from_wav(&wav[..]).expect("decode");
            assert!((7990..=8010).contains(&pcm.len()), "{rate}: {}", pcm.len());
            let level = rms(&pcm[400..7600]);
            assert!(
                (level - 7071.0).abs() < 300.0,
                "{rate}/{channels}: rms {level}"
            );
        }
    }

    #[test]
    fn unreadable_bytes_are_errors() {
        assert!(matches!(
            pcm8k_from_wav(&b"RIFF....not a wav"[..]),
            Err(WavError::Wav(_))
        ));
        assert!(pcm8k_from_wav(&b""[..]).is_err());
    }

    #[test]
    fn player_sequences_and_stops_on_the_next_frame() {
        let clip = Arc::new(EncodedPrompt::encode(&[1000; 400], Codec::Pcmu));
        assert_eq!(clip.frames.len(), 3);
        assert_eq!(clip.frames[2][79], Codec::Pcmu.encode_sample(1000));
        assert_eq!(clip.frames[2][80], 0xFF);
        let player = Player::new(
            Codec::Pcmu,
            [
                PlayItem::Clip(Arc::clone(&clip)),
                PlayItem::Silence(Duration::from_millis(100)),
                PlayItem::Clip(Arc::clone(&clip)),
            ],
        );
        let frames: Vec<_> = player.collect();
        assert_eq!(frames.len(), 3 + 5 + 3);
        assert!(frames[3..8].iter().all(|f| f.iter().all(|&b| b == 0xFF)));

        let mut p = Player::new(Codec::Pcmu, [PlayItem::Clip(Arc::clone(&clip))]);
        assert!(p.next_frame().is_some());
        p.stop();
        assert_eq!(p.next_frame(), None);
        assert!(p.is_finished() && p.is_stopped());
        p.push(PlayItem::Clip(clip));
        assert_eq!(p.next_frame(), None);
    }
}
