//! Normalization results, field by field, over the evaluation set (`tests/eval/messages.csv`)
//! and the 6,159 real messages of `shared/data/citizen-messages/train.csv` (beside the
//! repository, as in CI; skipped with a note where absent), compared with the results committed
//! in `adapters/tests/golden/`. Any change to what normalization decides (category and its
//! confidence, subcategory, kind, urgency, emergency referral, district, street, the reasons
//! given and the masked text) shows here as a diff of the rows that changed, so a rewrite for
//! speed can prove it decides exactly as before. `UPDATE_GOLDEN=1` rewrites the files after an
//! intended change. Message texts are never printed (rows carry ids and a hash of the masked
//! text only).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use adapters::normalize::mask::mask_text;
use adapters::normalize::normalize_text;

/// FNV-1a, 64 bits: stable across Rust versions, unlike std's hasher.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One output row per message: what normalization decided.
fn row(id: &str, subject: &str, detail: &str) -> String {
    let n = normalize_text(subject, detail);
    let masked = mask_text(&format!("{subject}\n{detail}")).into_owned();
    let mut s = String::new();
    let _ = write!(
        s,
        "{id},{},{:.4},{},{},{:?},{},{},{},{},{:016x},{}",
        n.category.as_deref().unwrap_or_default(),
        n.category_confidence.unwrap_or_default(),
        n.subcategory.as_deref().unwrap_or_default(),
        n.kind.as_str(),
        n.urgency,
        n.emergency_referral.map(|e| e.number()).unwrap_or_default(),
        n.emergency_notice.is_some(),
        n.district.as_deref().unwrap_or_default(),
        n.street.as_deref().unwrap_or_default(),
        fnv(&masked),
        n.reasons.join("|").replace(',', ";"),
    );
    s
}

fn compare(name: &str, rows: Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let got = rows.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    let diff: Vec<String> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .take(20)
        .map(|(w, g)| format!("- {w}\n+ {g}"))
        .collect();
    assert!(
        diff.is_empty() && want.lines().count() == got.lines().count(),
        "normalization decides differently from {} ({} vs {} rows); first changes:\n{}",
        path.display(),
        want.lines().count(),
        got.lines().count(),
        diff.join("\n")
    );
}

fn read_csv(path: &Path) -> Option<csv::Reader<std::fs::File>> {
    csv::Reader::from_path(path).ok()
}

#[test]
fn eval_set_normalizes_as_committed() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/eval/messages.csv");
    let mut reader = read_csv(&path).expect("the evaluation set");
    let rows: Vec<String> = reader
        .records()
        .map(|r| {
            let r = r.expect("well-formed row");
            row(&r[0], "", &r[1])
        })
        .collect();
    assert!(rows.len() > 200, "expected the whole evaluation set");
    compare("eval.csv", rows);
}

#[test]
fn training_messages_normalize_as_committed() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/citizen-messages/train.csv");
    let Some(mut reader) = read_csv(&path) else {
        eprintln!("skipped: {} not found", path.display());
        return;
    };
    let rows: Vec<String> = reader
        .records()
        .map(|r| {
            let r = r.expect("well-formed row");
            row(&r[0], &r[1], &r[2])
        })
        .collect();
    assert!(rows.len() > 6000, "expected the full training file");
    compare("train.csv", rows);
}
