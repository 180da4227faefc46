//! Faults a hotline meets, against the built gateway, each counting what was lost (none):
//! - the SQLite database or its WAL damaged while the gateway was down: each case starts the
//!   gateway on the damaged files and expects a refusal that names the file, with the files left
//!   byte for byte as they were; then the good files are put back and every acknowledged order
//!   is still there;
//! - the dispatch backend answering after 30 s for a while: the outbox keeps its concurrency
//!   bound and intake stays fast; once the backend recovers every order is delivered.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{Gateway, GatewayOptions, Receiver};

const ORDERS: usize = 30;

/// A gateway that acknowledged `ORDERS` orders and was stopped; the ids it answered.
async fn stopped_with_orders(dir: &Path) -> (Gateway, Vec<String>) {
    let mut gw = Gateway::start(GatewayOptions::new(dir)).await;
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let text = format!("第{i}号楼门口路灯不亮，已经三天了，晚上出行很不方便");
        ids.push(gw.submit_ok(&json!({"text": text})).await);
    }
    let status = gw.sigterm().await;
    assert!(status.success(), "clean stop: {status}");
    (gw, ids)
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("gateway.db"), dir.join("gateway.db-wal"))
}

/// Start on damaged files: refused within 20 s, the log names the file and says why, and
/// neither file was touched.
async fn refused(gw: &Gateway, dir: &Path, expect: &str) {
    let (db, wal) = files(dir);
    let before = (std::fs::read(&db).ok(), std::fs::read(&wal).ok());
    let mut again = Gateway::spawn(gw.opts.clone(), gw.port);
    let status = again
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("started on damaged files; log:\n{}", again.log()));
    assert!(!status.success(), "exit status {status}");
    let log = again.log();
    assert!(log.contains(expect), "{expect:?} not in log:\n{log}");
    assert!(log.contains("refusing to start"), "{log}");
    let after = (std::fs::read(&db).ok(), std::fs::read(&wal).ok());
    assert!(
        before == after,
        "the damaged files were changed by the refused start"
    );
}

/// Put the good files back and check that every acknowledged order is there.
async fn nothing_lost(gw: &mut Gateway, dir: &Path, good: &[(PathBuf, Vec<u8>)], ids: &[String]) {
    for (path, bytes) in good {
        std::fs::write(path, bytes).expect("restore");
    }
    gw.restart().await;
    let mut lost = 0;
    for id in ids {
        if gw
            .get(&format!("/v1/orders/{id}"), Some(support::ADMIN_KEY))
            .await
            .status
            != 200
        {
            lost += 1;
        }
    }
    println!(
        "{} acknowledged orders, {lost} lost after restoring {}",
        ids.len(),
        dir.display()
    );
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_database_or_wal_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut gw, ids) = stopped_with_orders(dir.path()).await;
    let (db, wal) = files(dir.path());
    let good_db = std::fs::read(&db).expect("database file");
    let good_wal = std::fs::read(&wal).unwrap_or_default();
    assert!(
        good_wal.len() > 32,
        "the stopped gateway keeps its last commits in the WAL ({} bytes)",
        good_wal.len()
    );
    let good = vec![
        (db.clone(), good_db.clone()),
        (wal.clone(), good_wal.clone()),
    ];

    // 1. The database header overwritten.
    let mut bad = good_db.clone();
    bad[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&db, &bad).expect("damage the header");
    refused(&gw, dir.path(), "is not a SQLite database").await;

    // 2. The database file cut short.
    std::fs::write(&db, &good_db[..good_db.len() / 2]).expect("truncate");
    refused(&gw, dir.path(), "is truncated").await;

    // 3. The WAL, which holds the last acknowledged orders, with a damaged header: SQLite
    //    alone would ignore it and start without them.
    std::fs::write(&db, &good_db).expect("restore the database");
    let mut bad_wal = good_wal.clone();
    bad_wal[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    std::fs::write(&wal, &bad_wal).expect("damage the WAL");
    refused(&gw, dir.path(), "is not a SQLite write-ahead log").await;

    nothing_lost(&mut gw, dir.path(), &good, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_dispatch_backend_neither_floods_it_nor_slows_intake() {
    const CONCURRENCY: usize = 4;
    const SUBMISSIONS: usize = 200;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = GatewayOptions::new(dir.path()).dispatch_to(&receiver);
    opts.concurrency = CONCURRENCY;
    opts.lease_ms = 30_000;
    let gw = Gateway::start(opts).await;

    // Intake while every delivery hangs (the gateway gives up on each after its 3 s timeout
    // and retries with backoff).
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    let started = std::time::Instant::now();
    for i in 0..SUBMISSIONS {
        let t = std::time::Instant::now();
        ids.push(
            gw.submit_ok(&json!({"text": format!("井盖缺失{i}号，请尽快处理")}))
                .await,
        );
        slowest = slowest.max(t.elapsed());
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Long enough for several timeouts and retries of each leased delivery.
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (max_in_flight, attempts) = receiver.with(|s| (s.max_in_flight, s.attempts));
    println!(
        "slow backend: {SUBMISSIONS} accepted, slowest 202 in {slowest:?}; at most \
         {max_in_flight} deliveries open at once (bound {CONCURRENCY}), {attempts} attempts"
    );
    assert!(attempts > 0, "the gateway never tried to deliver");
    assert!(
        max_in_flight <= CONCURRENCY,
        "{max_in_flight} deliveries open at once, more than dispatch.concurrency = {CONCURRENCY}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a submission waited {slowest:?}"
    );

    // The backend recovers: every acknowledged order arrives, signed, none lost.
    receiver.set_delay(Duration::ZERO);
    assert!(
        receiver.wait_for_all(&ids, Duration::from_secs(60)).await,
        "not every order was delivered after the backend recovered"
    );
    let counts = receiver.delivery_counts();
    let lost = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    println!("slow backend: {} acknowledged, {lost} lost", ids.len());
    assert_eq!(lost, 0);
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
}
