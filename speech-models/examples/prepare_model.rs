//! Prepares the speech model, as `gateway models prepare` does, without building the gateway:
//! `scripts/setup.sh` runs it so a fresh machine has the model before anything else is built.
//!
//! `cargo run -p speech-models --example prepare_model [-- CACHE_DIR [QUANTIZATION]]`
//! (default `speech-models/models`, relative to the working directory, and `f16`; `q8_0` for
//! whisper.cpp's 8-bit weights). Prints the model's path.

use std::path::PathBuf;
use std::process::ExitCode;

use speech_models::model::{self, PrepareOptions, Quantization};

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(model::DEFAULT_CACHE_DIR));
    let quantization = match std::env::args().nth(2).map(|q| q.parse::<Quantization>()) {
        None => Quantization::default(),
        Some(Ok(q)) => q,
        Some(Err(e)) => {
            eprintln!("prepare_model: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = PrepareOptions {
        quantization,
        ..PrepareOptions::default()
    };
    match model::prepare(&dir, &options) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prepare_model: {e}");
            ExitCode::FAILURE
        }
    }
}
