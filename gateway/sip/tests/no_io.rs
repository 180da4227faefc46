//! The core stays sans-IO: no source file of this crate reaches for tokio, the file system, the
//! clock or a global RNG outside its `#[cfg(test)]` code. Time comes in as an `Instant` argument
//! and randomness from the endpoint's seeded RNG; a call to any of these would make the core
//! untestable with a fake clock and fixed seeds.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::fs",
    "rand::random",
    "thread_rng",
    "tokio",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code a build without `cfg(test)` compiles: everything before the first `#[cfg(test)]`
/// line (test modules sit at the end of each file, by convention here), without comment lines,
/// since the docs may well say why the core does not use tokio.
fn non_test_part(source: &str) -> String {
    source
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn offences(source: &str) -> Vec<&'static str> {
    let code = non_test_part(source);
    FORBIDDEN
        .iter()
        .copied()
        .filter(|f| code.contains(f))
        .collect()
}

#[test]
fn the_core_calls_no_clock_rng_file_or_tokio() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("endpoint.rs")),
        "no sources found under {}",
        src.display()
    );
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let source = std::fs::read_to_string(file).expect("read source");
        for f in offences(&source) {
            found.push(format!("{}: {f}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "I/O in the sans-IO core:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_a_call_and_ignores_test_code() {
    let bad = "fn f() -> u64 {\n    rand::random()\n}\n";
    assert_eq!(offences(bad), ["rand::random"]);
    let clock = "fn f() { let _ = std::time::Instant::now(); }\n";
    assert_eq!(offences(clock), ["Instant::now"]);
    let tested = "fn f() {}\n\n#[cfg(test)]\nmod tests {\n    use tokio::fs;\n}\n";
    assert!(offences(tested).is_empty());
    let documented = "//! Not tied to tokio.\n/// No `Instant::now` here.\nfn f() {}\n";
    assert!(offences(documented).is_empty());
    let imported = "use tokio::net::UdpSocket;\n";
    assert_eq!(offences(imported), ["tokio"]);
    let after_test = "#[cfg(test)]\nfn t() {}\n\nfn f() { let _ = std::fs::read(\"x\"); }\n";
    assert!(
        offences(after_test).is_empty(),
        "only the text before the first #[cfg(test)] is checked"
    );
}
