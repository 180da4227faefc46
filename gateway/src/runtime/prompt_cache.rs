//! Prompt files: read a WAV from disk into 8 kHz PCM with [`media::prompt::pcm8k_from_wav`], and
//! keep the encoded frames shared by all calls.
//!
//! Encoding per call would cost a resample for every caller hearing the greeting, so
//! [`PromptCache`] keeps the encoded frames keyed by (path, modification time, codec): an edited
//! prompt is picked up on its next use without a restart, and old versions are dropped.
//! Loading does blocking file I/O and CPU work: call it from `spawn_blocking` (or at flow load).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use media::Codec;
use media::prompt::{EncodedPrompt, WavError, pcm8k_from_wav};

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

impl PromptError {
    fn of(path: &Path, e: WavError) -> Self {
        match e {
            WavError::Wav(source) => PromptError::Wav {
                path: path.to_path_buf(),
                source,
            },
            WavError::Unsupported(reason) => PromptError::Unsupported {
                path: path.to_path_buf(),
                reason,
            },
            WavError::Resample(reason) => PromptError::Resample(reason),
        }
    }
}

/// Read a WAV file as 8 kHz mono 16-bit PCM.
pub fn load_pcm8k(path: &Path) -> Result<Vec<i16>, PromptError> {
    let file = File::open(path).map_err(|e| PromptError::Wav {
        path: path.to_path_buf(),
        source: hound::Error::IoError(e),
    })?;
    pcm8k_from_wav(BufReader::new(file)).map_err(|e| PromptError::of(path, e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use media::FRAME_SAMPLES;
    use std::time::Duration;

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

    /// Decoding (every rate and channel count to 8 kHz mono) is tested in `media::prompt`; here
    /// only that a file is read whole and handed to it.
    #[test]
    fn loads_a_file_as_its_bytes_decode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p44100-2.wav");
        write_wav(&path, 44100, 2, 1.0, 440.0, 10000.0);
        let pcm = load_pcm8k(&path).expect("load");
        assert!((7990..=8010).contains(&pcm.len()), "{}", pcm.len());
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(pcm, pcm8k_from_wav(&bytes[..]).expect("decode"));
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
}
