//! Prepares the speech model, as `gateway models prepare` does, without building the gateway:
//! `scripts/setup.sh` runs it so a fresh machine has the model before anything else is built.
//!
//! `cargo run -p speech-models --example prepare_model [-- CACHE_DIR]`
//! (default `speech-models/models`, relative to the working directory). Prints the model's path.

use std::path::PathBuf;
use std::process::ExitCode;

use speech_models::model::{self, PrepareOptions};

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(model::DEFAULT_CACHE_DIR));
    match model::prepare(&dir, &PrepareOptions::default()) {
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
