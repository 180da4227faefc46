//! The CTranslate2 `model.bin` parser and the ggml converter and verifier on arbitrary bytes:
//! errors, never panics, and no allocation beyond what the input holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use speech_models::model::{ct2, ggml};

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ct2::parse(data) {
        let _ = ggml::hparams_of(&model, data);
        let vocabulary = "Ġa\nb\n<|endoftext|>\n".as_bytes();
        let _ = ggml::convert(&model, data, vocabulary, &mut std::io::sink());
    }
    let _ = ggml::verify(&mut std::io::Cursor::new(data));
});
