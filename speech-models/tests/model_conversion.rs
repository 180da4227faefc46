//! The converted model: header, hyperparameters, 245 tensors, an idempotent second prepare, and
//! the q8_0 file holding the f16 file's weights within q8_0's rounding.

mod common;

use std::time::Instant;

use half::f16;
use speech_models::model::{self, Hparams, PrepareOptions, Quantization, quant};

#[test]
fn converts_whisper_base_and_prepares_idempotently() {
    let path = common::model_path();
    let options = common::prepare_options();
    let summary = model::verify(&path).expect("verifies");
    assert_eq!(
        summary.hparams,
        Hparams {
            ftype: options.quantization.ftype(),
            ..Hparams::BASE
        }
    );
    assert_eq!(summary.tensors.len(), 245);
    assert_eq!(summary.vocab, 50_257);
    assert!(
        summary
            .tensors
            .iter()
            .any(|t| t == "decoder.blocks.5.cross_attn.value.bias")
    );
    assert!(!summary.tensors.iter().any(|t| t.contains("key.bias")));

    let manifest: model::Manifest = serde_json::from_slice(
        &std::fs::read(common::cache_dir().join(model::manifest_file(options.quantization)))
            .expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest.tensors, 245);
    assert_eq!(
        manifest.size,
        std::fs::metadata(&path).expect("model").len()
    );

    // Second call: nothing converted, only checked.
    let started = Instant::now();
    let again = model::prepare(&common::cache_dir(), &options).expect("prepares again");
    assert_eq!(again, path);
    assert!(
        started.elapsed().as_secs() < 20,
        "re-prepare took {:?}",
        started.elapsed()
    );
}

#[test]
fn verify_rejects_a_truncated_model() {
    let path = common::model_path();
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(&path).expect("model");
    for cut in [10, 5000, bytes.len() / 2] {
        let short = dir.path().join(format!("cut{cut}.bin"));
        std::fs::write(&short, &bytes[..cut]).expect("write");
        assert!(
            model::verify(&short).is_err(),
            "accepted a model cut at {cut}"
        );
    }
}

#[test]
fn a_configured_model_path_is_used_as_given() {
    let path = common::model_path();
    let opts = PrepareOptions::default();
    let resolved = model::resolve(Some(&path), &common::cache_dir(), &opts).expect("resolves");
    assert_eq!(resolved, path);
    let dir = tempfile::tempdir().expect("temp dir");
    let bogus = dir.path().join("not-a-model.bin");
    std::fs::write(&bogus, b"GGUF and then some").expect("write");
    assert!(model::resolve(Some(&bogus), dir.path(), &opts).is_err());
    assert!(model::resolve(Some(&dir.path().join("missing.bin")), dir.path(), &opts).is_err());
}

/// One tensor of a ggml file: its name, ggml type, element count and data.
struct Tensor {
    name: String,
    ty: i32,
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Reads a ggml Whisper file's tensors (after the header, mel filters and vocabulary).
fn tensors(bytes: &[u8]) -> Vec<Tensor> {
    let mut at = 0;
    let i32_at = |at: &mut usize| {
        let v = i32::from_le_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes"));
        *at += 4;
        v
    };
    at += 4 + 11 * 4;
    let (mels, freqs) = (i32_at(&mut at), i32_at(&mut at));
    at += (mels * freqs * 4) as usize;
    for _ in 0..i32_at(&mut at) {
        let len = i32_at(&mut at) as usize;
        at += len;
    }
    let mut out = Vec::new();
    while at < bytes.len() {
        let (ndims, name_len, ty) = (i32_at(&mut at), i32_at(&mut at), i32_at(&mut at));
        let dims: Vec<usize> = (0..ndims).map(|_| i32_at(&mut at) as usize).collect();
        let name = String::from_utf8(bytes[at..at + name_len as usize].to_vec()).expect("utf-8");
        at += name_len as usize;
        let elems: usize = dims.iter().product();
        let size = match ty {
            0 => elems * 4,
            1 => elems * 2,
            8 => elems / 32 * 34,
            other => panic!("{name}: type {other}"),
        };
        out.push(Tensor {
            name,
            ty,
            dims,
            data: bytes[at..at + size].to_vec(),
        });
        at += size;
    }
    out
}

/// The q8_0 file is the f16 file with the weight matrices (and only those) in q8_0, each value
/// within q8_0's rounding of the f16 one: the quantizer, the tensor choice and the layout agree
/// with what whisper.cpp reads.
#[test]
fn q8_0_holds_the_f16_weights_within_rounding() {
    let prepare = |quantization| {
        let options = PrepareOptions {
            quantization,
            ..PrepareOptions::default()
        };
        let path = model::prepare(&common::cache_dir(), &options).expect("prepares");
        let summary = model::verify(&path).expect("verifies");
        assert_eq!(summary.hparams.ftype, quantization.ftype());
        std::fs::read(&path).expect("model")
    };
    let (f16_file, q8_file) = (prepare(Quantization::F16), prepare(Quantization::Q8_0));
    let (f16_tensors, q8_tensors) = (tensors(&f16_file), tensors(&q8_file));
    assert_eq!(f16_tensors.len(), 245);
    assert_eq!(q8_tensors.len(), 245);
    let mut quantized = 0;
    for (a, b) in f16_tensors.iter().zip(&q8_tensors) {
        assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
        let matrix =
            a.dims.len() == 2 && a.name.ends_with(".weight") && !a.name.starts_with("encoder.conv");
        if !matrix {
            assert_eq!(a.ty, b.ty, "{}", a.name);
            assert!(a.data == b.data, "{} differs", a.name);
            continue;
        }
        quantized += 1;
        assert_eq!((a.ty, b.ty), (1, 8), "{}", a.name);
        let exact: Vec<f32> = a
            .data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let back = quant::dequantize_q8_0(&b.data).expect("whole blocks");
        for (x, y) in exact.chunks(32).zip(back.chunks(32)) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Half a step from rounding the code, plus the code (at most 127) times the scale's
            // f16 rounding: relative 2^-11, or half of 2^-24 where the scale is subnormal.
            let d = amax / 127.0;
            let bound = d * 0.5 + 127.0 * (d * 2f32.powi(-11)).max(2f32.powi(-25)) * 1.01;
            for (u, v) in x.iter().zip(y) {
                assert!((u - v).abs() <= bound, "{}: {u} became {v}", a.name);
            }
        }
    }
    // 4 attention matrices and 2 MLP matrices per encoder block, 8 + 2 per decoder block, and
    // the token embedding.
    assert_eq!(quantized, 6 * 6 + 6 * 10 + 1);
}
