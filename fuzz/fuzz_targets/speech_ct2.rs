//! The CTranslate2 `model.bin` parser, the ggml converter (f16 and q8_0) and verifier, and the
//! q8_0 block codec on arbitrary bytes: errors, never panics, and no allocation beyond what the
//! input holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use speech_models::model::{Quantization, ct2, ggml, quant};

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ct2::parse(data) {
        let _ = ggml::hparams_of(&model, data);
        let vocabulary = "Ġa\nb\n<|endoftext|>\n".as_bytes();
        for q in Quantization::ALL {
            let _ = ggml::convert(&model, data, vocabulary, q, &mut std::io::sink());
        }
    }
    let _ = ggml::verify(&mut std::io::Cursor::new(data));
    // The same bytes as q8_0 blocks, and as floats to quantize (NaN and infinities included).
    if let Ok(values) = quant::dequantize_q8_0(data) {
        let mut again = Vec::new();
        let _ = quant::quantize_q8_0(&values, &mut again);
    }
    let floats: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut out = Vec::new();
    let _ = quant::quantize_q8_0(&floats, &mut out);
});
