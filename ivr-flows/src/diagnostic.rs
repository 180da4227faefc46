//! Diagnostics: one error in a flow file, pinned to file, line and column.
//!
//! Administrators edit flows by hand, so every error must say where it is and what to do about
//! it. A diagnostic always carries a hint; `Display` renders the compiler-style one-liner
//! `main.yaml:12:5: error: <what is wrong>; <what to do>`.

use std::fmt;

/// A position in a source file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Pos {
    /// A position from 1-based line and column.
    pub fn new(line: usize, col: usize) -> Self {
        Pos { line, col }
    }
}

/// One problem found while loading or checking flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name relative to the flows directory, e.g. `main.yaml`.
    pub file: String,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do about it (may be empty when the message already says it).
    pub hint: String,
}

impl Diagnostic {
    /// A new error diagnostic.
    pub fn new(
        file: impl Into<String>,
        pos: Pos,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            pos,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Renders a list of diagnostics one per line (for CLI output and test failure messages).
pub fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}

/// Edit distance, used for "did you mean" suggestions.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A hint string: `did you mean "x"?` or the fallback.
pub fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    fallback: impl FnOnce() -> String,
) -> String {
    match did_you_mean(word, candidates) {
        Some(c) => format!("did you mean \"{c}\"?"),
        None => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("reprot", ["report", "query"]), Some("report"));
        assert_eq!(did_you_mean("zzzzzz", ["report", "query"]), None);
    }

    #[test]
    fn display_is_compiler_style() {
        let d = Diagnostic::new("main.yaml", Pos::new(12, 5), "bad", "fix it");
        assert_eq!(d.to_string(), "main.yaml:12:5: error: bad; fix it");
    }
}
