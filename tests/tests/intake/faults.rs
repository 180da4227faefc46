//! Faults a hotline meets, against the built gateway, each counting what was lost (none):
//! - the SQLite database or its WAL damaged while the gateway was down: each case starts the
//!   gateway on the damaged files and expects a refusal that names the file, with the files left
//!   byte for byte as they were; then the good files are put back and every acknowledged order
//!   is still there;
//! - the disk filling up (a tmpfs of a few MB under the data dir): submissions are answered 503
//!   with a clear error, nothing acknowledged is lost, and the gateway takes orders again by
//!   itself once space returns;
//! - PostgreSQL restarted under load: submissions during the restart are refused (503), none
//!   acknowledged is lost, and intake resumes by itself;
//! - the dispatch backend answering after 30 s for a while: the outbox keeps its concurrency
//!   bound and intake stays fast; once the backend recovers every order is delivered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{Gateway, GatewayOptions, PgServer, Receiver, StoreOpt};

const ORDERS: usize = 30;

/// A gateway that acknowledged `ORDERS` orders and was then killed (SIGKILL); the ids it
/// answered. Killed, not stopped: the files are then exactly what a crash leaves, the last
/// commits in the WAL. After a clean stop whether the WAL is still there is a race (the last
/// SQLite connection to close checkpoints and removes it, unless the process has exited first),
/// and this test needs a WAL to damage.
async fn killed_with_orders(dir: &Path) -> (Gateway, Vec<String>) {
    let mut gw = Gateway::start(GatewayOptions::new(dir)).await;
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let text = format!("第{i}号楼门口路灯不亮，已经三天了，晚上出行很不方便");
        ids.push(gw.submit_ok(&json!({"text": text})).await);
    }
    gw.kill9();
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

/// How many of the orders `ids` the gateway does not answer 200 for.
async fn unreadable(gw: &Gateway, ids: &[String]) -> usize {
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
    lost
}

/// Put the good files back and check that every acknowledged order is there.
async fn nothing_lost(gw: &mut Gateway, dir: &Path, good: &[(PathBuf, Vec<u8>)], ids: &[String]) {
    for (path, bytes) in good {
        std::fs::write(path, bytes).expect("restore");
    }
    gw.restart().await;
    let lost = unreadable(gw, ids).await;
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
    let (mut gw, ids) = killed_with_orders(dir.path()).await;
    let (db, wal) = files(dir.path());
    let good_db = std::fs::read(&db).expect("database file");
    let good_wal = std::fs::read(&wal).unwrap_or_default();
    assert!(
        good_wal.len() > 32,
        "the killed gateway left its last commits in the WAL ({} bytes)",
        good_wal.len()
    );
    // 1. The database header overwritten.
    let mut bad = good_db.clone();
    bad[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&db, &bad).expect("damage the header");
    refused(&gw, dir.path(), "is not a SQLite database").await;

    // 2. The WAL, which holds the last acknowledged orders, with a damaged header: SQLite
    //    alone would ignore it and start without them.
    std::fs::write(&db, &good_db).expect("restore the database");
    let mut bad_wal = good_wal.clone();
    bad_wal[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    std::fs::write(&wal, &bad_wal).expect("damage the WAL");
    refused(&gw, dir.path(), "is not a SQLite write-ahead log").await;

    // 3. Everything checkpointed into the database file (no WAL), then the file cut short.
    std::fs::write(&wal, &good_wal).expect("restore the WAL");
    {
        let c = rusqlite::Connection::open(&db).expect("open for a checkpoint");
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    let _ = std::fs::remove_file(&wal);
    let whole = std::fs::read(&db).expect("checkpointed database");
    std::fs::write(&db, &whole[..whole.len() / 2]).expect("truncate");
    refused(&gw, dir.path(), "is truncated").await;
    let good = vec![(db.clone(), whole)];

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

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (CI and scripts/test.sh run as root)"
        );
        Tmpfs(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount -o remount");
        assert!(ok.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_with_503_and_the_gateway_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "3m");
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(GatewayOptions::new(&disk.0).dispatch_to(&receiver)).await;
    // Logs go elsewhere: this test is about the store's files.
    let filler =
        "市民反映：小区南门外道路破损严重，雨天积水，车辆和行人通行困难，请相关部门尽快修复。"
            .repeat(8);
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut other = Vec::new();
    for i in 0..5_000 {
        let r = gw
            .submit(&json!({"text": format!("{i} {filler}")}), None)
            .await;
        match r.status {
            202 => accepted.push(r.body["order_id"].as_str().expect("id").to_owned()),
            503 => {
                assert_eq!(r.error_code(), "unavailable", "{}", r.text);
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            s => other.push(format!("{s} {}", r.text)),
        }
    }
    println!(
        "full disk: {} accepted before it filled, {refused} answered 503",
        accepted.len()
    );
    assert!(other.is_empty(), "answers other than 202/503: {other:?}");
    assert!(
        refused >= 20,
        "the disk never filled ({} accepted)",
        accepted.len()
    );
    assert!(!accepted.is_empty());

    // Space returns: the gateway takes orders again without a restart.
    disk.resize("64m");
    let mut back = None;
    for i in 0..100 {
        let r = gw
            .submit(&json!({"text": format!("恢复后第{i}条：路灯不亮")}), None)
            .await;
        if r.status == 202 {
            back = r.body["order_id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("no order accepted within 10 s of space returning");
    accepted.push(back);

    // Nothing acknowledged is lost: readable now, delivered, and still there after a restart.
    assert!(
        receiver
            .wait_for_all(&accepted, Duration::from_secs(60))
            .await,
        "not every acknowledged order was delivered"
    );
    let status = gw.sigterm().await;
    assert!(status.success(), "clean stop: {status}");
    gw.restart().await;
    let lost = unreadable(&gw, &accepted).await;
    println!("full disk: {} acknowledged, {lost} lost", accepted.len());
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_no_acknowledged_order() {
    let pg = PgServer::start();
    let url = pg.create_db("faults").await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = GatewayOptions::new(dir.path()).dispatch_to(&receiver);
    opts.store = StoreOpt::Postgres(url);
    let gw = std::sync::Arc::new(Gateway::start(opts).await);

    // Four clients submit for as long as `stop` is unset; every 202 is remembered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (gw, stop) = (gw.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut failed) = (Vec::new(), 0usize, 0usize);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 500 {
                i += 1;
                let body = json!({"text": format!("客户{c}第{i}条：小区电梯故障，老人上下楼困难")});
                let sent = gw
                    .http
                    .post(gw.url("/v1/submissions"))
                    .bearer_auth(support::ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        let v: serde_json::Value = r.json().await.expect("json");
                        ok.push((
                            v["order_id"].as_str().expect("id").to_owned(),
                            std::time::Instant::now(),
                        ));
                    }
                    Ok(r) if r.status() == 503 => refused += 1,
                    _ => failed += 1,
                }
                // About 100 submissions a second from each client: a steady load across the
                // restart, and few enough orders to check one by one afterwards.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, refused, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart_started = std::time::Instant::now();
    tokio::task::block_in_place(|| pg.restart());
    let restarted = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ids, mut refused, mut failed, mut after) = (Vec::new(), 0, 0, 0);
    for c in clients {
        let (ok, r, f) = c.await.expect("client");
        after += ok.iter().filter(|(_, at)| *at > restarted).count();
        ids.extend(ok.into_iter().map(|(id, _)| id));
        refused += r;
        failed += f;
    }
    println!(
        "postgres restart ({:?}): {} acknowledged ({after} after it), {refused} refused (503), \
         {failed} without an answer",
        restarted - restart_started,
        ids.len()
    );
    assert!(
        after > 0,
        "no submission was acknowledged after PostgreSQL came back"
    );

    assert!(
        receiver.wait_for_all(&ids, Duration::from_secs(90)).await,
        "not every acknowledged order was delivered"
    );
    let stored: std::collections::HashSet<String> = gw
        .all_orders(500)
        .await
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect();
    let lost = ids.iter().filter(|id| !stored.contains(*id)).count();
    println!("postgres restart: {} acknowledged, {lost} lost", ids.len());
    assert_eq!(lost, 0);
}
