//! The crate stays sans-IO: no source file under `src/` reads the clock, the file system or a
//! global random generator, or uses tokio, outside its `#[cfg(test)]` code. Time and randomness
//! come in as arguments; the gateway's `runtime` does the I/O.

use std::path::{Path, PathBuf};

/// What only the I/O edge may do. `rand::rng()` is rand 0.9's name for the thread RNG.
const FORBIDDEN: [&str; 7] = [
    "Instant::now",
    "SystemTime::now",
    "std::fs",
    "rand::random",
    "thread_rng",
    "rand::rng()",
    "tokio",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text before the first `#[cfg(test)]` line: the code that ships.
fn shipped(text: &str) -> String {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .collect::<Vec<_>>()
        .join("\n")
}

fn offences(path: &Path, text: &str) -> Vec<String> {
    let code = shipped(text);
    FORBIDDEN
        .iter()
        .filter(|needle| code.contains(*needle))
        .map(|needle| format!("{}: {needle}", path.display()))
        .collect()
}

#[test]
fn sources_do_no_io_outside_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("rtp_session.rs")),
        "no sources found under {}",
        src.display()
    );
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| offences(f, &std::fs::read_to_string(f).expect("read source")))
        .collect();
    assert!(found.is_empty(), "I/O in the sans-IO crate: {found:#?}");
}

#[test]
fn the_check_catches_each_forbidden_call_and_skips_test_code() {
    let path = Path::new("example.rs");
    for needle in FORBIDDEN {
        let text = format!("fn f() {{ let _ = {needle}; }}\n");
        assert_eq!(offences(path, &text).len(), 1, "{needle} not caught");
        let in_tests = format!("fn f() {{}}\n#[cfg(test)]\nmod tests {{ {needle} }}\n");
        assert!(offences(path, &in_tests).is_empty(), "{needle} in tests");
    }
}
