//! Shared helpers for the integration tests: the prepared model and synthesized phone audio.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use speech_models::model::{self, PrepareOptions};

/// The shared model cache: `SPEECH_MODELS_DIR`, else `speech-models/models`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SPEECH_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// How the tests' model is prepared: the default format, or `SPEECH_QUANTIZATION` (`f16` or
/// `q8_0`), so the speech tests and the latency example can compare formats.
pub fn prepare_options() -> PrepareOptions {
    let quantization = match std::env::var("SPEECH_QUANTIZATION") {
        Ok(q) => q
            .parse()
            .unwrap_or_else(|e| panic!("SPEECH_QUANTIZATION: {e}")),
        Err(_) => model::Quantization::default(),
    };
    PrepareOptions {
        quantization,
        ..PrepareOptions::default()
    }
}

/// Prepares the model once per test binary (downloads about 135 MB the first time).
pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match model::prepare(&cache_dir(), &prepare_options()) {
        Ok(path) => path,
        Err(e) => panic!("preparing the speech model: {e}"),
    })
    .clone()
}

/// Whether espeak-ng and sox are installed (scripts/setup.sh --test installs them).
pub fn have_tools() -> bool {
    ["espeak-ng", "sox"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok())
}

/// Speaks `text` with espeak-ng `voice`, carries it over an 8 kHz G.711 mu-law line with sox,
/// and returns it as 8 kHz 16-bit PCM, as the gateway's media stage would hand it over.
pub fn phone_audio(text: &str, voice: &str) -> Vec<i16> {
    phone_audio_at(text, voice, 150)
}

/// [`phone_audio`] at `speed` words per minute.
pub fn phone_audio_at(text: &str, voice: &str, speed: u32) -> Vec<i16> {
    try_phone_audio_at(text, voice, speed).unwrap_or_else(|e| panic!("{e}"))
}

/// [`phone_audio_at`], saying what failed instead of panicking (the latency example uses it).
pub fn try_phone_audio_at(text: &str, voice: &str, speed: u32) -> Result<Vec<i16>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let wav = dir.path().join("tts.wav");
    let ulaw = dir.path().join("line.wav");
    let raw = dir.path().join("back.raw");
    let run = |what: &str, cmd: &mut Command| -> Result<(), String> {
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            other => Err(format!(
                "{what} failed: {cmd:?}: {other:?} (install espeak-ng and sox: scripts/setup.sh --test)"
            )),
        }
    };
    run(
        "espeak-ng",
        Command::new("espeak-ng")
            .args(["-v", voice, "-s", &speed.to_string(), "-w"])
            .arg(&wav)
            .arg(text),
    )?;
    run(
        "sox to mu-law",
        Command::new("sox")
            .arg(&wav)
            .args(["-r", "8000", "-c", "1", "-e", "u-law"])
            .arg(&ulaw),
    )?;
    run(
        "sox back to PCM",
        Command::new("sox")
            .arg(&ulaw)
            .args([
                "-t",
                "raw",
                "-e",
                "signed-integer",
                "-b",
                "16",
                "-r",
                "8000",
                "-c",
                "1",
            ])
            .arg(&raw),
    )?;
    let bytes = std::fs::read(&raw).map_err(|e| format!("raw audio: {e}"))?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Hanzi -> tone-numbered pinyin for espeak-ng's `cmn-latn-pinyin` voice ("ni3 hao3").
pub fn tone_pinyin(text: &str) -> String {
    use pinyin::ToPinyin;
    let mut out = Vec::new();
    for (ch, py) in text.chars().zip(text.to_pinyin()) {
        match py {
            Some(p) => out.push(p.with_tone_num_end().to_owned()),
            None if "，。,.？?".contains(ch) => out.push(",".to_owned()),
            None => {}
        }
    }
    out.join(" ").replace(" ,", ",")
}

/// Character error rate (Levenshtein over characters / reference length), ignoring punctuation.
pub fn cer(reference: &str, hypothesis: &str) -> f64 {
    let clean = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<Vec<char>>()
    };
    let (r, h) = (clean(reference), clean(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rc) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hc) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rc != hc))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}
