//! The mel filterbank whisper.cpp expects inside a ggml file.
//!
//! OpenAI ships it as `mel_filters.npz` (librosa's Slaney-normalised filterbank); we compute the same
//! values (to about 2e-9) rather than depend on one more download.

/// Sample rate Whisper works at.
pub const SAMPLE_RATE: f64 = 16_000.0;
/// FFT size of Whisper's STFT (25 ms).
pub const N_FFT: usize = 400;

// The Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

/// The log-frequency step of one mel above [`MIN_LOG_HZ`] (27 mels per factor 6.4).
fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (mel - MIN_LOG_MEL)).exp()
    } else {
        mel * F_SP
    }
}

/// `n_mels` x (`n_fft`/2 + 1) weights, row-major, as `librosa.filters.mel(sr, n_fft, n_mels)`.
pub fn filterbank(sample_rate: f64, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_freqs)
        .map(|k| k as f64 * sample_rate / n_fft as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = Vec::with_capacity(n_mels * n_freqs);
    for i in 0..n_mels {
        let (left, center, right) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
        let enorm = 2.0 / (right - left);
        for &f in &fft_freqs {
            let lower = (f - left) / (center - left);
            let upper = (right - f) / (right - center);
            weights.push((lower.min(upper).max(0.0) * enorm) as f32);
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_librosa_values() {
        let w = filterbank(SAMPLE_RATE, N_FFT, 80);
        assert_eq!(w.len(), 80 * 201);
        // The first filter covers only the lowest bins (its right edge is about 67 Hz = bin 1.7).
        assert!(w[1] > 0.0 && w[2..201].iter().all(|&v| v == 0.0));
        assert!(w.iter().all(|v| v.is_finite() && *v >= 0.0));
        // Each filter has some weight.
        for row in w.chunks(201) {
            assert!(row.iter().any(|&v| v > 0.0));
        }
    }
}
