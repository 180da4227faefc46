//! End-of-speech -> final-text latency of the recognizer pool, and the real-time factor.
//!
//! `cargo run --release -p speech-models --features recognizer --example latency [-- ROUNDS]`
//!
//! Speaks a short Mandarin answer and a 3 s English sentence with espeak-ng, carries them over
//! 8 kHz G.711 mu-law with sox (as a phone line would), then has 1, 2 and 4 simulated callers
//! finish an utterance at the same moment, repeatedly. Latency runs from the end of speech (the
//! moment the VAD hands the utterance over) to the final text, waiting for a free recognizer
//! included, through the same path a call takes (`answer::recognize`: one or two Whisper
//! passes); "busy" counts how often the first try found the pool full (the gateway would then
//! offer the keypad menu instead).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use speech_models::answer;
use speech_models::matcher::{Choice, DEFAULT_THRESHOLD, Matcher};
use speech_models::model;
use speech_models::recognizer::{Language, Recognizer, RecognizerConfig, Request};

/// Phone-line audio as the recognizer takes it (16 kHz f32).
fn phone_audio(text: &str, voice: &str) -> Result<Vec<f32>, String> {
    let pcm = common::try_phone_audio_at(text, voice, 150)?;
    Ok(speech_models::vad::to_whisper_input(&pcm, 8000))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), String> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    // SPEECH_QUANTIZATION=q8_0 measures the 8-bit model instead of the default f16.
    let options = common::prepare_options();
    let model = model::prepare(&common::cache_dir(), &options).map_err(|e| e.to_string())?;
    // SPEECH_POOL / SPEECH_THREADS override the pool's sizing, to compare layouts.
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut cfg = RecognizerConfig::new(model);
    cfg.pool_size = env("SPEECH_POOL");
    cfg.threads = env("SPEECH_THREADS");
    let threads = cfg.threads;
    let recognizer = Recognizer::new(cfg).map_err(|e| e.to_string())?;
    let answer = Arc::new(phone_audio("tou2 su4", "cmn-latn-pinyin")?);
    let hints: Arc<Vec<String>> =
        Arc::new(["投诉", "咨询", "建议", "求助"].map(String::from).to_vec());
    let matcher = Arc::new(Matcher::new(
        &hints
            .iter()
            .map(|h| Choice::new(h.clone(), [h.clone()]))
            .collect::<Vec<_>>(),
        DEFAULT_THRESHOLD,
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "model {}; pool: {} recognizers, {} cores; answer {:.2} s of audio; {rounds} rounds",
        options.quantization,
        recognizer.capacity(),
        cores,
        answer.len() as f64 / 16_000.0
    );

    // Warm up (first run allocates buffers).
    let _ = recognizer.try_recognize(&Request {
        audio: &answer,
        language: Language::Zh,
        hints: &hints,
    });

    for callers in [1usize, 2, 4] {
        let mut latencies = Vec::new();
        let mut busy = 0;
        for _ in 0..rounds {
            let handles: Vec<_> = (0..callers)
                .map(|_| {
                    let (r, audio, hints, matcher) = (
                        recognizer.clone(),
                        Arc::clone(&answer),
                        Arc::clone(&hints),
                        Arc::clone(&matcher),
                    );
                    std::thread::spawn(move || {
                        let end_of_speech = Instant::now();
                        let mut was_busy = false;
                        let lease = loop {
                            if let Some(lease) = r.try_acquire() {
                                break lease;
                            }
                            was_busy = true;
                            std::thread::sleep(Duration::from_millis(5));
                        };
                        let mut lease = lease;
                        // What a call does with an answer (one or two Whisper passes).
                        let result = answer::recognize(
                            &mut lease,
                            &audio,
                            Language::Zh,
                            &hints,
                            &hints,
                            &matcher,
                        );
                        (
                            end_of_speech.elapsed(),
                            was_busy,
                            result.text().map(str::to_owned),
                        )
                    })
                })
                .collect();
            for h in handles {
                let (took, was_busy, _) =
                    h.join().map_err(|_| "caller thread panicked".to_string())?;
                latencies.push(took);
                busy += usize::from(was_busy);
            }
        }
        latencies.sort();
        println!(
            "{callers} concurrent caller(s): p50 {:>4} ms  p95 {:>4} ms  max {:>4} ms  busy on first try {busy}/{}",
            percentile(&latencies, 0.5).as_millis(),
            percentile(&latencies, 0.95).as_millis(),
            latencies.last().copied().unwrap_or_default().as_millis(),
            latencies.len()
        );
    }

    let sentence = phone_audio(
        "I would like to report a broken street light near the school.",
        "en",
    )?;
    let three_s = &sentence[..sentence.len().min(3 * 16_000)];
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..rounds.max(3) {
        let started = Instant::now();
        let r = recognizer
            .try_recognize(&Request {
                audio: three_s,
                language: Language::En,
                hints: &[],
            })
            .map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        text = format!("{r:?}");
    }
    times.sort();
    let median = percentile(&times, 0.5);
    println!(
        "3 s utterance: median {} ms, real-time factor {:.3} ({} threads per recognition)",
        median.as_millis(),
        median.as_secs_f64() / (three_s.len() as f64 / 16_000.0),
        if threads > 0 {
            threads
        } else {
            (cores / recognizer.capacity()).max(1)
        }
    );
    println!("last result: {text}");
    Ok(())
}
