//! Caller audio for the speech stage: 8 kHz PCM frames in, 16 kHz mono `f32` frames out (the
//! input format of Whisper-family recognizers and most VADs).
//!
//! A plain push/pull consumer: [`SpeechFeed::push`] the frames the jitter buffer plays out,
//! then drain 20 ms output frames with [`SpeechFeed::pop_frame`] or [`SpeechFeed::frames`].
//! Upsampling uses `rubato`'s synchronous FFT resampler (ratio fixed at 2, band-limited so no
//! imaging above 4 kHz), in chunks of one input frame so latency stays at a few milliseconds; its
//! startup delay is trimmed so output sample n corresponds to input sample n/2.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::FRAME_SAMPLES;

/// Output rate.
pub const SPEECH_RATE: u32 = 16000;
/// Samples per 20 ms output frame.
pub const SPEECH_FRAME: usize = 320;

/// The resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
#[error("speech feed resampler: {0}")]
pub struct SpeechFeedError(String);

/// 8 kHz i16 in, 16 kHz f32 out.
pub struct SpeechFeed {
    resampler: Fft<f32>,
    input: Vec<f32>,
    output: VecDeque<f32>,
    scratch: Vec<f32>,
    to_trim: usize,
}

impl std::fmt::Debug for SpeechFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechFeed")
            .field("pending_in", &self.input.len())
            .field("pending_out", &self.output.len())
            .finish()
    }
}

impl SpeechFeed {
    /// A feed with an empty buffer; fails only if the resampler cannot be built.
    pub fn new() -> Result<Self, SpeechFeedError> {
        let resampler = Fft::<f32>::new(
            8000,
            SPEECH_RATE as usize,
            FRAME_SAMPLES,
            1,
            FixedSync::Both,
        )
        .map_err(|e| SpeechFeedError(e.to_string()))?;
        let to_trim = resampler.output_delay();
        let scratch = vec![0.0; resampler.output_frames_max()];
        Ok(Self {
            resampler,
            input: Vec::with_capacity(FRAME_SAMPLES * 2),
            output: VecDeque::new(),
            scratch,
            to_trim,
        })
    }

    /// Add 8 kHz samples (any count).
    pub fn push(&mut self, samples: &[i16]) -> Result<(), SpeechFeedError> {
        self.input
            .extend(samples.iter().map(|&s| f32::from(s) / 32768.0));
        loop {
            let need = self.resampler.input_frames_next();
            if self.input.len() < need {
                return Ok(());
            }
            self.run(need, None)?;
        }
    }

    /// Push out what is buffered (end of utterance), padding with silence.
    pub fn flush(&mut self) -> Result<(), SpeechFeedError> {
        let pending = self.input.len();
        if pending > 0 {
            let need = self.resampler.input_frames_next();
            self.input.resize(need, 0.0);
            self.run(need, Some(pending))?;
        }
        Ok(())
    }

    fn run(&mut self, need: usize, partial: Option<usize>) -> Result<(), SpeechFeedError> {
        let e = |e: &dyn std::fmt::Display| SpeechFeedError(e.to_string());
        let out_len = self.resampler.output_frames_next();
        if self.scratch.len() < out_len {
            self.scratch.resize(out_len, 0.0);
        }
        let input = InterleavedSlice::new(&self.input[..need], 1, need).map_err(|x| e(&x))?;
        let mut output = InterleavedSlice::new_mut(&mut self.scratch[..out_len], 1, out_len)
            .map_err(|x| e(&x))?;
        let (_, produced) = self
            .resampler
            .process_into_buffer(&input, &mut output, None)
            .map_err(|x| e(&x))?;
        self.input.drain(..need);
        let mut produced_slice = &self.scratch[..produced];
        let skip = self.to_trim.min(produced_slice.len());
        self.to_trim -= skip;
        produced_slice = &produced_slice[skip..];
        if let Some(real) = partial {
            // Only the part of the last chunk that came from real input.
            produced_slice = &produced_slice[..(real * 2).min(produced_slice.len())];
        }
        self.output.extend(produced_slice.iter().copied());
        Ok(())
    }

    /// The next 20 ms (320-sample) frame at 16 kHz, when available.
    pub fn pop_frame(&mut self) -> Option<Vec<f32>> {
        if self.output.len() < SPEECH_FRAME {
            return None;
        }
        Some(self.output.drain(..SPEECH_FRAME).collect())
    }

    /// Drain every complete output frame.
    pub fn frames(&mut self) -> impl Iterator<Item = Vec<f32>> + '_ {
        std::iter::from_fn(move || self.pop_frame())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsamples_a_tone_keeping_frequency_and_level() {
        let mut feed = SpeechFeed::new().expect("feed");
        let tone: Vec<i16> = (0..8000)
            .map(|i| {
                (10000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 8000.0).sin()) as i16
            })
            .collect();
        let mut out = Vec::new();
        for chunk in tone.chunks(FRAME_SAMPLES) {
            feed.push(chunk).expect("push");
            out.extend(feed.frames().flatten());
        }
        feed.flush().expect("flush");
        out.extend(feed.frames().flatten());
        // About one second at 16 kHz (the resampler's delay is trimmed, the tail kept).
        assert!((15000..=16000).contains(&out.len()), "{}", out.len());
        assert_eq!(out.len() % SPEECH_FRAME, 0);
        let body = &out[1600..14000];
        let crossings = body
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        // 1 kHz over 12400 samples at 16 kHz: 775 cycles.
        assert!((770..=780).contains(&crossings), "{crossings}");
        let rms = (body.iter().map(|v| v * v).sum::<f32>() / body.len() as f32).sqrt();
        assert!((rms - 0.2158).abs() < 0.01, "{rms}");
    }

    #[test]
    fn nothing_out_until_enough_in() {
        let mut feed = SpeechFeed::new().expect("feed");
        feed.push(&[0; 10]).expect("push");
        assert_eq!(feed.pop_frame(), None);
    }
}
