//! Checks of the SQLite database and WAL files before SQLite opens them.
//!
//! SQLite is forgiving where a hotline must not be: a WAL whose header is damaged is ignored
//! (every acknowledged order still in it silently gone), and a failed open may still run the
//! connection's close path, which removes the WAL. So the files are read first, by hand, against
//! the published file format (<https://www.sqlite.org/fileformat2.html>): a database file that
//! does not start with SQLite's magic, or is shorter than the pages its header counts, and a
//! WAL that is long enough to hold a header but does not carry WAL magic, are refused with a
//! message that names the file and what to do, and nothing is opened or changed. A WAL whose
//! last frame is torn is normal after a power cut (that commit was never acknowledged: the
//! gateway syncs before it answers), so SQLite's own recovery handles it.
//! `PRAGMA quick_check` then checks the pages themselves once the files are opened.

use std::io::Read;
use std::path::Path;

use super::StoreError;

const DB_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const WAL_MAGIC: [u32; 2] = [0x377f_0682, 0x377f_0683];
const DB_HEADER: usize = 100;
const WAL_HEADER: u64 = 32;

fn refuse(path: &Path, what: &str) -> StoreError {
    StoreError::Failed(format!(
        "{} {what}; refusing to start so that nothing in it is lost: restore it from a backup \
         or move it aside (with its -wal file) to start empty",
        path.display()
    ))
}

/// Refuse a database file or WAL that SQLite would open but lose orders from.
pub(crate) fn check(db: &Path, wal: &Path) -> Result<(), StoreError> {
    if let Some(header) = read_prefix(db, DB_HEADER)? {
        if header.len() < DB_HEADER || &header[..16] != DB_MAGIC {
            return Err(refuse(
                db,
                "is not a SQLite database (its header is damaged)",
            ));
        }
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65_536,
            n => u64::from(n),
        };
        if !page_size.is_power_of_two() || !(512..=65_536).contains(&page_size) {
            return Err(refuse(db, "has a damaged header (page size)"));
        }
        // The in-header page count is valid when the "version valid for" number equals the
        // change counter (SQLite 3.7.0 and later always write it so).
        let counter = &header[24..28];
        let valid_for = &header[92..96];
        let pages = u64::from(u32::from_be_bytes([
            header[28], header[29], header[30], header[31],
        ]));
        let len = std::fs::metadata(db).map_err(|e| io_error(db, e))?.len();
        // With frames in the WAL the file may rightly be shorter: a checkpoint that ran out of
        // disk wrote page 1 but not the pages after it, and the WAL still holds them (what it
        // does not hold, `PRAGMA quick_check` finds).
        let wal_frames = std::fs::metadata(wal).is_ok_and(|m| m.len() > WAL_HEADER);
        if counter == valid_for && len < pages * page_size && !wal_frames {
            return Err(refuse(
                db,
                &format!(
                    "is truncated ({len} bytes where its header counts {pages} pages of \
                     {page_size})"
                ),
            ));
        }
    }
    if let Some(header) = read_prefix(wal, WAL_HEADER as usize)?
        && header.len() as u64 >= WAL_HEADER
    {
        let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if !WAL_MAGIC.contains(&magic) {
            return Err(refuse(
                wal,
                "is not a SQLite write-ahead log (its header is damaged)",
            ));
        }
    }
    Ok(())
}

/// The first `n` bytes of a file; `None` when it does not exist or is empty.
fn read_prefix(path: &Path, n: usize) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut buf = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(path, e))?;
    Ok((!buf.is_empty()).then_some(buf))
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Failed(format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_db(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let db = dir.join("t.db");
        let c = rusqlite::Connection::open(&db).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); \
             INSERT INTO t SELECT zeroblob(1000) FROM (WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) SELECT i FROM n);",
        )
        .expect("fill");
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t VALUES (1);")
            .expect("wal frame");
        std::mem::forget(c); // keep the WAL as a crash would
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        (db, wal.into())
    }

    #[test]
    fn healthy_files_and_no_files_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check(&dir.path().join("none.db"), &dir.path().join("none.db-wal")).is_ok());
        let (db, wal) = fresh_db(dir.path());
        assert!(std::fs::metadata(&wal).expect("wal").len() > WAL_HEADER);
        check(&db, &wal).expect("healthy");
    }

    #[test]
    fn damaged_header_truncated_file_and_damaged_wal_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, wal) = fresh_db(dir.path());
        let good = std::fs::read(&db).expect("read");

        let mut bad = good.clone();
        bad[..7].copy_from_slice(b"garbage");
        std::fs::write(&db, &bad).expect("write");
        let e = check(&db, &wal).expect_err("damaged header").to_string();
        assert!(
            e.contains("not a SQLite database") && e.contains("t.db"),
            "{e}"
        );

        std::fs::write(&db, &good[..good.len() / 2]).expect("truncate");
        let frames = std::fs::read(&wal).expect("wal");
        std::fs::remove_file(&wal).expect("no WAL");
        let e = check(&db, &wal).expect_err("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&wal, &frames).expect("WAL back");
        // A shorter file beside a WAL with frames is what a checkpoint cut short by a full
        // disk leaves: SQLite reads the missing pages from the WAL.
        check(&db, &wal).expect("cut short by a full disk");

        std::fs::write(&db, &good[..40]).expect("truncate header");
        assert!(check(&db, &wal).is_err());

        std::fs::write(&db, &good).expect("restore");
        let mut w = std::fs::read(&wal).expect("wal");
        w[..4].copy_from_slice(&[0; 4]);
        std::fs::write(&wal, &w).expect("write wal");
        let e = check(&db, &wal).expect_err("damaged WAL").to_string();
        assert!(e.contains("write-ahead log"), "{e}");
    }
}
