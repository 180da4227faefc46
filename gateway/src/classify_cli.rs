//! `gateway classify FILE.csv`: normalize a CSV of messages in bulk.
//!
//! Administrators and evaluators run the same normalization the gateway applies to live
//! submissions over an export of messages (`id`, `subject`, `detail`; other columns ignored)
//! and get `id,category,kind,district,emergency` back, one row per message in input order.
//! Columns are found by header name so exports with extra or reordered columns work; a UTF-8
//! byte-order mark (as Excel writes) is tolerated. A malformed row stops with an error naming its
//! line rather than silently skipping a citizen's message. Message texts are never logged.

use std::io::{Read, Write};

use adapters::normalize::normalize_text;
use anyhow::{Context, bail};

/// Read messages from `input` and write one classified row per message to `output`.
pub fn classify_csv(input: impl Read, output: impl Write) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let headers = reader
        .headers()
        .context("reading the CSV header line")?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim() == name)
    };
    let Some(id_col) = column("id") else {
        bail!(
            "the CSV has no `id` column (header line: {:?})",
            headers.iter().collect::<Vec<_>>()
        );
    };
    let (subject_col, detail_col) = (column("subject"), column("detail"));
    if subject_col.is_none() && detail_col.is_none() {
        bail!("the CSV needs a `subject` or `detail` column (or both)");
    }
    let mut writer = csv::Writer::from_writer(output);
    writer.write_record(["id", "category", "kind", "district", "emergency"])?;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            anyhow::anyhow!("line {line}: malformed CSV row: {e}")
        })?;
        let field = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or_default();
        let n = normalize_text(field(subject_col), field(detail_col));
        let emergency = n
            .emergency_referral
            .map(|e| e.number().to_string())
            .unwrap_or_default();
        writer.write_record([
            field(Some(id_col)),
            n.category.as_deref().unwrap_or_default(),
            n.kind.as_str(),
            n.district.as_deref().unwrap_or_default(),
            emergency.as_str(),
        ])?;
    }
    writer.flush().context("writing the output")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> anyhow::Result<String> {
        let mut out = Vec::new();
        classify_csv(input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn classifies_rows_by_header_name() {
        let out = run("\u{feff}detail,extra,id,subject\n\
             光谷步行街旁边的烧烤店油烟太大，晚上窗户都不敢开,x,1,油烟扰民\n\
             \"江岸区后湖街道楼下着火了，快来人\",y,2,\n")
        .expect("classified");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("id,category,kind,district,emergency"));
        let first: Vec<&str> = lines.next().expect("row 1").split(',').collect();
        assert_eq!(first[0], "1");
        assert_eq!(first[1], "环境保护");
        assert_eq!(first[3], "洪山区");
        assert_eq!(first[4], "");
        let second: Vec<&str> = lines.next().expect("row 2").split(',').collect();
        assert_eq!((second[0], second[3], second[4]), ("2", "江岸区", "119"));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = run("subject,detail\na,b\n").expect_err("no id column");
        assert!(err.to_string().contains("`id`"), "{err}");
        let err = run("id,subject,detail\n1,a,b\n2,a\n").expect_err("short row");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = run("id,name\n1,a\n").expect_err("no text columns");
        assert!(err.to_string().contains("subject"), "{err}");
        assert_eq!(
            run("id,subject,detail\n").expect("empty"),
            "id,category,kind,district,emergency\n"
        );
    }
}
