//! The converted model: header, hyperparameters, 245 tensors, and an idempotent second prepare.

mod common;

use std::time::Instant;

use speech_models::model::{self, Hparams, PrepareOptions};

#[test]
fn converts_whisper_base_and_prepares_idempotently() {
    let path = common::model_path();
    let summary = model::verify(&path).expect("verifies");
    assert_eq!(summary.hparams, Hparams::BASE);
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
        &std::fs::read(common::cache_dir().join(model::MANIFEST_FILE)).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest.tensors, 245);
    assert_eq!(
        manifest.size,
        std::fs::metadata(&path).expect("model").len()
    );

    // Second call: nothing converted, only checked.
    let started = Instant::now();
    let again =
        model::prepare(&common::cache_dir(), &PrepareOptions::default()).expect("prepares again");
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
