//! Train the category model shipped in `adapters/data/category-model.bin`.
//!
//! ```text
//! cargo run -p adapters --release --features train --bin train-classifier -- \
//!     ../shared/data/citizen-messages/train.csv adapters/data/category-model.bin
//! ```
//!
//! Deterministic: the held-out split is a seeded hash of the ids, feature selection breaks ties
//! by bucket, and L-BFGS starts from zero, so the same CSV gives the same file. Only the training
//! split (80%, stratified) is used to fit IDF, select features and train, so the held-out accuracy
//! printed here (and re-computed by `adapters/tests/classifier.rs`) is honest. Message texts are
//! never printed.

use std::process::ExitCode;

use adapters::normalize::classify::{
    CategoryModel, HASH_BITS, hashed_counts, holdout_split, sublinear_tf,
};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};

/// Buckets kept after chi-square selection: enough for the vocabulary that matters, small
/// enough for a dense training matrix on a laptop and a ~250 KB model.
const SELECTED: usize = 8000;
/// L2 penalty (linfa's `alpha`; sklearn's `C` = 1/alpha).
const ALPHA: f64 = 0.05;
const MAX_ITERATIONS: u64 = 300;

struct Row {
    id: String,
    subject: String,
    detail: String,
    label: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: train-classifier TRAIN.csv MODEL.bin");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train-classifier: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_rows(path: &str) -> Result<Vec<Row>, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{path}: {e}"))?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
            .ok_or_else(|| format!("{path}: no `{name}` column"))
    };
    let (i_id, i_subject, i_detail, i_label) =
        (col("id")?, col("subject")?, col("detail")?, col("label")?);
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("{path}: record {}: {e}", n + 1))?;
        let field = |i: usize| record.get(i).unwrap_or_default().to_owned();
        rows.push(Row {
            id: field(i_id),
            subject: field(i_subject),
            detail: field(i_detail),
            label: field(i_label),
        });
    }
    Ok(rows)
}

fn run(input: &str, output: &str) -> Result<(), String> {
    let rows = read_rows(input)?;
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.label.as_str()))
        .collect();
    let held = holdout_split(&keys);
    let mut classes: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    classes.sort();
    classes.dedup();
    let class_of = |l: &str| classes.iter().position(|c| c == l).unwrap_or(0);
    let train: Vec<&Row> = rows
        .iter()
        .zip(&held)
        .filter(|(_, h)| !**h)
        .map(|(r, _)| r)
        .collect();
    let test: Vec<&Row> = rows
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(r, _)| r)
        .collect();
    eprintln!(
        "{} rows, {} classes: training on {}, holding out {}",
        rows.len(),
        classes.len(),
        train.len(),
        test.len()
    );

    // IDF over the whole hashed space, from the training split only (smooth, as sklearn does).
    let space = 1usize << HASH_BITS;
    let counts: Vec<Vec<(u32, f32)>> = train
        .iter()
        .map(|r| hashed_counts(&r.subject, &r.detail))
        .collect();
    let mut df = vec![0u32; space];
    for doc in &counts {
        for (b, _) in doc {
            df[*b as usize] += 1;
        }
    }
    let n = train.len() as f64;
    let idf: Vec<f64> = df
        .iter()
        .map(|d| ((1.0 + n) / (1.0 + f64::from(*d))).ln() + 1.0)
        .collect();

    // Chi-square of each bucket against the classes, on L2-normalized TF-IDF.
    let k = classes.len();
    let mut per_class = vec![0f64; space * k];
    let mut class_docs = vec![0f64; k];
    for (doc, row) in counts.iter().zip(&train) {
        let c = class_of(&row.label);
        class_docs[c] += 1.0;
        let vals: Vec<f64> = doc
            .iter()
            .map(|(b, cnt)| f64::from(sublinear_tf(*cnt)) * idf[*b as usize])
            .collect();
        let norm = vals
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        for ((b, _), v) in doc.iter().zip(vals) {
            per_class[*b as usize * k + c] += v / norm;
        }
    }
    let mut scored: Vec<(f64, u32)> = (0..space)
        .filter_map(|b| {
            let obs = &per_class[b * k..(b + 1) * k];
            let total: f64 = obs.iter().sum();
            if total <= 0.0 {
                return None;
            }
            let chi2: f64 = obs
                .iter()
                .zip(&class_docs)
                .map(|(o, cd)| {
                    let e = total * cd / n;
                    (o - e) * (o - e) / e
                })
                .sum();
            Some((chi2, b as u32))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut buckets: Vec<u32> = scored.iter().take(SELECTED).map(|(_, b)| *b).collect();
    buckets.sort_unstable();
    let mut model = CategoryModel::new(
        classes.clone(),
        buckets.clone(),
        buckets.iter().map(|b| idf[*b as usize] as f32).collect(),
        Vec::new(),
        vec![0.0; k],
    );

    // Dense training matrix from the very feature function inference uses.
    let dim = model.buckets().len();
    let mut x = Array2::<f64>::zeros((train.len(), dim));
    for (i, row) in train.iter().enumerate() {
        for (j, v) in model.features(&row.subject, &row.detail) {
            x[[i, j]] = f64::from(v);
        }
    }
    let y: Array1<usize> = train.iter().map(|r| class_of(&r.label)).collect();
    eprintln!(
        "fitting multinomial logistic regression on {} features",
        dim
    );
    let fitted = MultiLogisticRegression::default()
        .alpha(ALPHA)
        .max_iterations(MAX_ITERATIONS)
        .fit(&Dataset::new(x, y))
        .map_err(|e| format!("training failed: {e}"))?;
    // linfa orders classes by label value; ours are the indices 0..k.
    let order: Vec<usize> = fitted.classes().to_vec();
    let params = fitted.params();
    model.weights = vec![0.0; dim * k];
    for j in 0..dim {
        for (col, class) in order.iter().enumerate() {
            model.weights[j * k + class] = params[[j, col]] as f32;
        }
    }
    for (col, class) in order.iter().enumerate() {
        model.bias[*class] = fitted.intercept()[col] as f32;
    }

    // Evaluate the model as shipped (f32, through `predict`).
    let bytes = model.to_bytes();
    let shipped = CategoryModel::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let mut confusion = vec![vec![0usize; k]; k];
    for row in &test {
        let truth = class_of(&row.label);
        let guess = shipped
            .predict(&row.subject, &row.detail)
            .map_or(0, |p| class_of(p.category));
        confusion[truth][guess] += 1;
    }
    print_report(&classes, &confusion);
    std::fs::write(output, &bytes).map_err(|e| format!("{output}: {e}"))?;
    eprintln!("wrote {output} ({} bytes)", bytes.len());
    Ok(())
}

fn print_report(classes: &[String], confusion: &[Vec<usize>]) {
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..classes.len()).map(|i| confusion[i][i]).sum();
    println!(
        "held-out accuracy: {:.4} ({correct}/{total})",
        correct as f64 / total.max(1) as f64
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>7}",
        "class", "precision", "recall", "f1", "n"
    );
    for (i, c) in classes.iter().enumerate() {
        let tp = confusion[i][i] as f64;
        let predicted: usize = confusion.iter().map(|r| r[i]).sum();
        let actual: usize = confusion[i].iter().sum();
        let p = tp / predicted.max(1) as f64;
        let r = tp / actual.max(1) as f64;
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        println!("{c:<12} {p:>9.3} {r:>9.3} {f1:>9.3} {actual:>7}");
    }
}
