//! Headless Chromium through playwright-core (Node.js), for the tests that use the gateway's
//! pages as a person does: the web form, and the `/call` page of browser calls.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/browser`: the scripts and their `package.json`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Install playwright-core from the committed lock file (once), into tests/browser/node_modules.
pub fn ensure_playwright() {
    let dir = browser_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): run `scripts/setup.sh --test` to install nodejs and npm")
        });
    assert!(
        out.status.success(),
        "npm install in tests/browser failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
