//! Records the caller's decoded audio to a WAV file (8 kHz, 16-bit, mono) for the work order's
//! `recording`, stopping at a maximum duration so a forgotten call cannot fill the disk.
//!
//! Uses `hound`, which writes a valid header on [`Recorder::finish`] (and on drop, best effort).
//! Writes go through a `BufWriter`: 320 bytes per 20 ms frame, so the blocking cost is a write
//! syscall every few seconds; the call task may call it directly.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use media::SAMPLE_RATE;

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub path: PathBuf,
    pub duration: Duration,
    /// Whether the maximum duration cut it short.
    pub truncated: bool,
}

/// Records frames to a WAV file.
pub struct Recorder {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    max_samples: u64,
    written: u64,
    truncated: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish()
    }
}

impl Recorder {
    /// Create (or truncate) the file.
    pub fn create(path: &Path, max: Duration) -> Result<Self, hound::Error> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Self {
            writer: hound::WavWriter::create(path, spec)?,
            path: path.to_path_buf(),
            max_samples: max.as_millis() as u64 * u64::from(SAMPLE_RATE) / 1000,
            written: 0,
            truncated: false,
        })
    }

    /// Append samples; returns `false` once the maximum duration is reached (further samples are
    /// dropped).
    pub fn write(&mut self, samples: &[i16]) -> Result<bool, hound::Error> {
        let room = self.max_samples.saturating_sub(self.written) as usize;
        let take = samples.len().min(room);
        for &s in &samples[..take] {
            self.writer.write_sample(s)?;
        }
        self.written += take as u64;
        if take < samples.len() {
            self.truncated = true;
        }
        Ok(self.written < self.max_samples)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.written * 1_000_000 / u64::from(SAMPLE_RATE))
    }

    /// Finalize the header and close the file.
    pub fn finish(self) -> Result<Recording, hound::Error> {
        let duration = self.duration();
        let truncated = self.truncated;
        let path = self.path.clone();
        self.writer.finalize()?;
        Ok(Recording {
            path,
            duration,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_stops_at_the_maximum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("call.wav");
        let mut r = Recorder::create(&path, Duration::from_millis(100)).expect("create");
        assert!(r.write(&[100; 160]).expect("write"));
        assert!(r.write(&[200; 480]).expect("write"));
        assert!(!r.write(&[300; 480]).expect("write"));
        assert!(!r.write(&[400; 160]).expect("write"));
        let rec = r.finish().expect("finish");
        assert_eq!(rec.duration, Duration::from_millis(100));
        assert!(rec.truncated);
        let reader = hound::WavReader::open(&path).expect("open");
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader
            .into_samples()
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(samples.len(), 800);
        assert_eq!(samples[0], 100);
        assert_eq!(samples[799], 300);
    }

    #[test]
    fn create_fails_cleanly_in_a_missing_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            Recorder::create(&dir.path().join("no/such/dir.wav"), Duration::from_secs(1)).is_err()
        );
    }
}
