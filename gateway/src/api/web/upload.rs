//! Photo storage: content-addressed by SHA-256, written atomically.
//!
//! The name is the content's hash, so the same photo sent twice is stored once, a stored file can
//! be checked against the `sha256` in the order, and no citizen-chosen name ever reaches the file
//! system. A photo is written to a temporary file in the same directory, synced, renamed into
//! place and the directory synced: a crash leaves either the whole file or none (and at worst a
//! `.tmp-` file to clean up), never a truncated photo under a valid name.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A name we could have given a stored photo: 64 lowercase hex digits.
pub fn is_photo_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Store `bytes` under `<dir>/<sha256>` unless already there; returns the hash. Blocking: call it
/// from `spawn_blocking`.
pub fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<String> {
    let sha = sha256_hex(bytes);
    let path = dir.join(&sha);
    if path.is_file() {
        return Ok(sha);
    }
    std::fs::create_dir_all(dir)?;
    let suffix: u64 = rand::rng().random();
    let tmp: PathBuf = dir.join(format!(".tmp-{sha}-{suffix:016x}"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_once_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = store(dir.path(), b"\x89PNG\r\n\x1a\nabc").expect("store");
        let b = store(dir.path(), b"\x89PNG\r\n\x1a\nabc").expect("store again");
        assert_eq!(a, b);
        assert!(is_photo_name(&a));
        assert_eq!(
            std::fs::read(dir.path().join(&a)).expect("read"),
            b"\x89PNG\r\n\x1a\nabc"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary files left: {names:?}");
    }
}
