//! SIPp (Debian's `sip-tester`) as the caller in the call tests: the scenarios in `tests/sipp`
//! and one call run to its end.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scenario file of `tests/sipp`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Runs `sipp` in `workdir` on loopback for one call of `scenario` against `target`, with
/// `args` (ports, keys) and a `timeout_s` after which the call counts as failed. Returns the exit
/// code and what SIPp said: stdout, stderr and the `*errors.log` files in `workdir`.
pub fn call(
    workdir: &Path,
    scenario: &Path,
    args: &[&str],
    timeout_s: u32,
    target: &str,
) -> (i32, String) {
    let out = Command::new("sipp")
        .current_dir(workdir)
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(args)
        .args(["-m", "1", "-timeout", &timeout_s.to_string()])
        .args(["-timeout_error", "-trace_err"])
        .arg(target)
        .output()
        .expect("sipp is installed by `scripts/setup.sh --test` (Debian package sip-tester)");
    let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    log.push_str(&logs(workdir, "errors.log"));
    (out.status.code().unwrap_or(-1), log)
}

/// The text of SIPp's files in `dir` whose names end with `suffix`.
pub fn logs(dir: &Path, suffix: &str) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(suffix) {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    out
}
