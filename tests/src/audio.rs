//! WAV files for call tests: prompts and the audio a caller plays.

use std::path::Path;

/// Write 8 kHz mono 16-bit samples as a WAV file (prompts and caller audio for call tests).
pub fn write_wav_8k(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create a WAV file");
    for &s in samples {
        w.write_sample(s).expect("write a WAV file");
    }
    w.finalize().expect("finish a WAV file");
}
