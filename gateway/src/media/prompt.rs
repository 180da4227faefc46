//! Prompt playback: WAV files of any rate and channel count, converted once to 20 ms G.711
//! frames, cached, and played by a [`Player`] that stops on the very next frame (barge-in).
//!
//! Administrators record prompts with whatever tool they have (44.1 kHz stereo is common), so
//! [`load_pcm8k`] reads any PCM or float WAV with `hound`, mixes to mono and resamples to 8 kHz
//! with `rubato`'s FFT resampler (fixed ratio, band-limited, so no aliasing from 44.1 kHz
//! material). Encoding per call would cost a resample for every caller hearing the greeting, so
//! [`PromptCache`] keeps the encoded frames keyed by (path, modification time, codec): an edited
//! prompt is picked up on its next use without a restart, and old versions are dropped.
//! Loading does blocking file I/O and CPU work: call it from `spawn_blocking` (or at flow load).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::g711::Codec;
use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Why a prompt could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read {path}: {source}")]
    Wav {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Longest prompt we load (ten minutes): protects memory from a wrong file.
const MAX_SECONDS: u64 = 600;

/// Resample mono audio between rates (whole clip, delay trimmed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, PromptError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| PromptError::Resample(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| PromptError::Resample(e.to_string()))?;
    let out = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| PromptError::Resample(e.to_string()))?;
    Ok(out.take_data())
}

/// Read a WAV file as 8 kHz mono 16-bit PCM.
pub fn load_pcm8k(path: &Path) -> Result<Vec<i16>, PromptError> {
    let wav_err = |source| PromptError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let reader = hound::WavReader::open(path).map_err(wav_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 || spec.sample_rate == 0 {
        return Err(PromptError::Unsupported {
            path: path.to_path_buf(),
            reason: "no channels or zero sample rate".into(),
        });
    }
    if u64::from(reader.duration()) > MAX_SECONDS * u64::from(spec.sample_rate) {
        return Err(PromptError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("longer than {MAX_SECONDS} s"),
        });
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(wav_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(wav_err)?
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

    pub fn duration(&self) -> Duration {
        super::FRAME_DURATION * self.frames.len() as u32
    }
}

type CacheKey = (PathBuf, SystemTime, Codec);

/// Encoded prompts shared by all calls.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: Mutex<HashMap<CacheKey, Arc<EncodedPrompt>>>,
}

impl PromptCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The prompt at `path` in `codec`, from the cache unless the file changed.
    pub fn get(&self, path: &Path, codec: Codec) -> Result<Arc<EncodedPrompt>, PromptError> {
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| PromptError::Wav {
                path: path.to_path_buf(),
                source: hound::Error::IoError(e),
            })?;
        let key = (path.to_path_buf(), mtime, codec);
        if let Some(hit) = self.lock().get(&key) {
            return Ok(Arc::clone(hit));
        }
        // Load outside the lock: other calls' prompts are not held up by this file.
        let prompt = Arc::new(EncodedPrompt::encode(&load_pcm8k(path)?, codec));
        tracing::debug!(path = %path.display(), ?codec, frames = prompt.frames.len(), "prompt loaded");
        let mut entries = self.lock();
        entries.retain(|(p, t, c), _| !(p == path && *c == codec && *t != mtime));
        Ok(Arc::clone(entries.entry(key).or_insert(prompt)))
    }

    /// Number of cached encodings.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<EncodedPrompt>>> {
        // A panic while holding the lock leaves the map consistent (single inserts), so recover.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One item of a play sequence.
#[derive(Debug, Clone)]
pub enum PlayItem {
    Clip(Arc<EncodedPrompt>),
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

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Barge-in: no further frame is produced.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.items.clear();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

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

    fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f32, freq: f32, amp: f32) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).expect("create wav");
        let n = (rate as f32 * seconds) as usize;
        for i in 0..n {
            let v =
                (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()) as i16;
            for _ in 0..channels {
                w.write_sample(v).expect("write");
            }
        }
        w.finalize().expect("finalize");
    }

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
    }

    #[test]
    fn loads_any_rate_and_channels_to_8k_mono() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rate, channels) in [(8000, 1), (16000, 1), (44100, 2), (48000, 2), (22050, 1)] {
            let path = dir.path().join(format!("p{rate}-{channels}.wav"));
            write_wav(&path, rate, channels, 1.0, 440.0, 10000.0);
            let pcm = load_pcm8k(&path).expect("load");
            assert!((7990..=8010).contains(&pcm.len()), "{rate}: {}", pcm.len());
            let level = rms(&pcm[400..7600]);
            assert!(
                (level - 7071.0).abs() < 300.0,
                "{rate}/{channels}: rms {level}"
            );
        }
    }

    #[test]
    fn unreadable_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.wav");
        std::fs::write(&path, b"RIFF....not a wav").expect("write");
        assert!(matches!(load_pcm8k(&path), Err(PromptError::Wav { .. })));
        assert!(load_pcm8k(&dir.path().join("missing.wav")).is_err());
        let cache = PromptCache::new();
        assert!(
            cache
                .get(&dir.path().join("missing.wav"), Codec::Pcma)
                .is_err()
        );
    }

    #[test]
    fn cache_reuses_and_reloads_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("greeting.wav");
        write_wav(&path, 16000, 1, 0.5, 440.0, 8000.0);
        let cache = PromptCache::new();
        let a = cache.get(&path, Codec::Pcma).expect("load");
        assert_eq!(a.frames.len(), 25);
        assert!(a.frames.iter().all(|f| f.len() == FRAME_SAMPLES));
        let b = cache.get(&path, Codec::Pcma).expect("cached");
        assert!(Arc::ptr_eq(&a, &b));
        let u = cache.get(&path, Codec::Pcmu).expect("other codec");
        assert_eq!(u.codec, Codec::Pcmu);
        assert_eq!(cache.len(), 2);
        // Edit the prompt: a new version is loaded and the old one dropped.
        write_wav(&path, 16000, 1, 1.0, 440.0, 8000.0);
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(SystemTime::now() + Duration::from_secs(10))
            .expect("mtime");
        let c = cache.get(&path, Codec::Pcma).expect("reload");
        assert_eq!(c.frames.len(), 50);
        assert_eq!(cache.len(), 2);
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
