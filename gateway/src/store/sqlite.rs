//! SQLite back end, the embedded default.
//!
//! All writes go through one writer thread that owns the only write connection (SQLite allows one
//! writer anyway). It drains whatever is queued, applies the writes in one `BEGIN IMMEDIATE`
//! transaction and commits in WAL mode; a sync thread then `fdatasync`s the WAL and only then
//! answers each caller, while the writer already commits the next batch (see [`syncer`]; a small
//! batch waits for the sync under way rather than becoming a second commit for the next one, see
//! [`writer_loop`]). New orders arrive already serialized under a placeholder number
//! (`store::Drafted`). A write that fails is answered alone and the rest of its batch is applied
//! again. A checkpoint thread copies the WAL into the database file off the commit path (and has
//! the writer start the WAL over once it is large, see [`checkpointer`]). Reads use a small pool
//! of read-only connections on tokio's blocking threads; WAL lets them run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use adapters::{OrderNumber, WorkOrder};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::OrderStore;
use super::channel_ops::{self, Addition, SmsPart, SmsPartState};
use super::outbound_calls::{self, StoredCall};
use super::{
    Claimed, DeadLetter, DeliveryOutcome, Drafted, Numbering, OutboxStats, Prepared, StatusEvent,
    StoreError, SubmitOutcome, apply_status, from_micros, mark_delivered, micros, schema,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer thread's queue carries: writes, and the sync thread's word that the WAL
/// sync it was waiting for is done (see [`writer_loop`]).
enum Queued {
    Write(Write),
    Synced,
}

enum Write {
    Submit(Box<Drafted>, Reply<SubmitOutcome>),
    Event(OrderNumber, StatusEvent, Reply<Option<WorkOrder>>),
    Claim {
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        reply: Reply<Vec<Claimed>>,
    },
    Complete(OrderNumber, DeliveryOutcome, DateTime<Utc>, Reply<()>),
    Replay(OrderNumber, DateTime<Utc>, Reply<bool>),
    Attach(
        Box<(OrderNumber, Addition, String, DateTime<Utc>)>,
        Reply<Option<WorkOrder>>,
    ),
    SmsPart(Box<SmsPart>, Reply<SmsPartState>),
    SmsDone(String, Vec<String>, DateTime<Utc>, Reply<()>),
    CallSave(Box<StoredCall>, Reply<()>),
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: mpsc::Sender<Queued>,
    readers: Mutex<Vec<Connection>>,
    read_pool: usize,
    path: PathBuf,
    outbox: Arc<Notify>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: commits are not fsynced by SQLite; `syncer` fsyncs the WAL before any answer.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (see `checkpointer`), not inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    if let Err(e) = quick_check(&conn, path) {
        // Closing the last connection checkpoints into the damaged file and removes the WAL:
        // leave both as they are for whoever restores them (the process is about to exit).
        std::mem::forget(conn);
        return Err(e);
    }
    conn.execute_batch(schema::SQLITE)?;
    conn.execute_batch(schema::SMS_PARTS)?;
    conn.execute_batch(schema::OUTBOUND_CALLS)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// `PRAGMA quick_check`: every page of the database (and WAL) readable and well formed; a
/// damaged file is refused rather than written into.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Failed(format!(
            "{} is damaged ({verdict}); refusing to start so that nothing in it is lost: \
             restore it from a backup or move it aside (with its -wal file) to start empty",
            path.display()
        )))
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database and start its writer thread.
    pub fn open(
        path: &Path,
        numbering: Numbering,
        max_batch: usize,
        read_pool: usize,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        super::sqlite_files::check(path, Path::new(&wal_path))?;
        let conn = open_writer(path)?;
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal_path)
            .map_err(|e| StoreError::Failed(format!("cannot open the WAL {wal_path:?}: {e}")))?;
        let (tx, rx) = mpsc::channel(64 * 1024);
        let outbox = Arc::new(Notify::new());
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let signal = outbox.clone();
        let restart_wal = Arc::new(AtomicBool::new(false));
        let wanted = restart_wal.clone();
        let unsynced = Arc::new(AtomicUsize::new(0));
        let sync = Syncing {
            unsynced: unsynced.clone(),
            writer: tx.downgrade(),
        };
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || syncer(wal, sync_rx, signal, sync))
            .map_err(|e| StoreError::Failed(format!("cannot start the sync thread: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer_loop(
                    conn,
                    rx,
                    numbering,
                    max_batch,
                    sync_tx,
                    unsynced,
                    restart_wal,
                )
            })
            .map_err(|e| StoreError::Failed(format!("cannot start the writer thread: {e}")))?;
        let checkpoint_conn = Connection::open(path)?;
        let alive = tx.downgrade();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_conn, alive, wanted))
            .map_err(|e| StoreError::Failed(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writes: tx,
                readers: Mutex::new(Vec::new()),
                read_pool,
                path: path.to_owned(),
                outbox,
            }),
        })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writes
            .send(Queued::Write(make(tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut v) = inner.readers.lock()
                && v.len() < inner.read_pool
            {
                v.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Failed(format!("read task failed: {e}")))?
    }
}

impl OrderStore for SqliteStore {
    async fn submit_prepared(&self, order: Prepared) -> Result<SubmitOutcome, StoreError> {
        // Serialized here, on the caller's task, not in the writer (see `Drafted`).
        let drafted = Box::new(Drafted::new(order)?);
        self.write(|r| Write::Submit(drafted, r)).await
    }

    async fn apply_event(
        &self,
        id: OrderNumber,
        event: StatusEvent,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.write(|r| Write::Event(id, event, r)).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.write(|reply| Write::Claim {
            now,
            lease_until,
            limit,
            reply,
        })
        .await
    }

    async fn complete(
        &self,
        id: OrderNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|r| Write::Complete(id, outcome, now, r)).await
    }

    async fn replay(&self, id: OrderNumber, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.write(|r| Write::Replay(id, now, r)).await
    }

    async fn order(&self, id: &OrderNumber) -> Result<Option<WorkOrder>, StoreError> {
        let id = id.clone();
        self.read(move |c| read_order(c, id.as_str())).await
    }

    async fn orders(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<OrderNumber>,
        limit: u32,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        self.read(move |c| {
            let mut from = (since.map_or(i64::MIN, micros), String::new());
            if let Some(after) = after {
                let at: Option<i64> = c
                    .prepare_cached("SELECT received_at FROM orders WHERE id = ?1")?
                    .query_row([after.as_str()], |r| r.get(0))
                    .optional()?;
                if let Some(at) = at {
                    from = (from.0.max(at), after.to_string());
                }
            }
            let mut stmt = c.prepare_cached(
                "SELECT doc FROM orders WHERE (received_at, id) > (?1, ?2) \
                 ORDER BY received_at, id LIMIT ?3",
            )?;
            // `(t, "")` compares below every id at t, so `since` is inclusive.
            let rows = stmt.query_map(params![from.0, from.1, limit], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for doc in rows {
                out.push(serde_json::from_str(&doc?)?);
            }
            Ok(out)
        })
        .await
    }

    /// Receipt time of the order `skip` places from the newest among those received at or after
    /// `since` (the time index read backwards).
    async fn newest_time(
        &self,
        since: DateTime<Utc>,
        skip: u32,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(move |c| {
            let at: Option<i64> = c
                .prepare_cached(
                    "SELECT received_at FROM orders WHERE received_at >= ?1 \
                     ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![micros(since), skip], |r| r.get(0))
                .optional()?;
            Ok(at.map(from_micros))
        })
        .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT order_id, attempts, last_error, finished_at FROM outbox \
                 WHERE state = 'dead' ORDER BY finished_at LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, attempts, last_error, dead_at) = row?;
                if let Ok(order_id) = OrderNumber::parse(&id) {
                    out.push(DeadLetter {
                        order_id,
                        attempts,
                        last_error,
                        dead_at: dead_at.map(from_micros),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        self.read(move |c| {
            let count = |state: &str| -> Result<u64, StoreError> {
                Ok(
                    c.prepare_cached("SELECT count(*) FROM outbox WHERE state = ?1")?
                        .query_row([state], |r| r.get::<_, i64>(0))? as u64,
                )
            };
            let oldest: Option<i64> = c
                .prepare_cached("SELECT min(created_at) FROM outbox WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?;
            Ok(OutboxStats {
                pending: count("pending")?,
                dead: count("dead")?,
                delivered: count("delivered")?,
                oldest_pending_age_s: oldest
                    .map_or(0.0, |t| ((micros(now) - t).max(0) as f64) / 1_000_000.0),
            })
        })
        .await
    }

    fn outbox_signal(&self) -> &Notify {
        &self.inner.outbox
    }

    async fn attach(
        &self,
        id: OrderNumber,
        addition: Addition,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.write(|r| Write::Attach(Box::new((id, addition, by, at)), r))
            .await
    }

    async fn latest_order_of(
        &self,
        channel: adapters::work_order::Channel,
        user: String,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.read(move |c| channel_ops::sqlite::latest_order_of(c, channel, &user, since))
            .await
    }

    async fn sms_part(&self, part: SmsPart) -> Result<SmsPartState, StoreError> {
        self.write(|r| Write::SmsPart(Box::new(part), r)).await
    }

    async fn sms_parts_done(
        &self,
        provider: String,
        part_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|r| Write::SmsDone(provider, part_ids, now, r))
            .await
    }

    async fn sms_open_parts(&self) -> Result<Vec<SmsPart>, StoreError> {
        self.read(channel_ops::sqlite::open_parts).await
    }

    async fn call_save(&self, call: StoredCall) -> Result<(), StoreError> {
        self.write(|r| Write::CallSave(Box::new(call), r)).await
    }

    async fn call_get(&self, id: String) -> Result<Option<StoredCall>, StoreError> {
        self.read(move |c| outbound_calls::sqlite::get(c, &id))
            .await
    }

    async fn calls_open(&self) -> Result<Vec<StoredCall>, StoreError> {
        self.read(outbound_calls::sqlite::open).await
    }

    async fn calls_recent(&self, limit: u32) -> Result<Vec<StoredCall>, StoreError> {
        self.read(move |c| outbound_calls::sqlite::recent(c, limit))
            .await
    }
}

fn read_order(c: &Connection, id: &str) -> Result<Option<WorkOrder>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM orders WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(match doc {
        Some(d) => Some(serde_json::from_str(&d)?),
        None => None,
    })
}

fn write_order(tx: &Transaction<'_>, order: &WorkOrder) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE orders SET status = ?2, doc = ?3 WHERE id = ?1")?
        .execute(params![
            order.id.as_str(),
            order.status.as_str(),
            serde_json::to_string(order)?
        ])?;
    Ok(())
}

/// A write applied inside the open transaction, waiting for the commit to be answered.
type Pending = Box<dyn FnOnce(Option<&str>) + Send>;

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Pending {
    Box::new(move |sync_error: Option<&str>| {
        let answer = match (result, sync_error) {
            (Ok(_), Some(e)) => Err(StoreError::Failed(format!(
                "syncing the commit failed: {e}"
            ))),
            (r, _) => r,
        };
        // The caller may have given up (request timeout); the write stands regardless.
        let _ = reply.send(answer);
    })
}

/// Copy the WAL back into the database file every quarter second, beside the writer instead of
/// inside one of its commits (SQLite's auto-checkpoint runs in the committing thread and cost 10%
/// of the writer's time with an extra fsync). PASSIVE never blocks the writer; it stops with the
/// store.
///
/// Under a steady stream of commits this alone never lets the WAL start over: SQLite writes
/// from the start of the WAL again only when a write transaction begins with every frame
/// already copied, and the writer has always appended more while the checkpoint ran. The WAL
/// then grew for as long as the load lasted (580 MB in 12 s of `intake-load`), and every frame
/// went to a new part of the file, where the kernel first zeroes each page it allocates: that
/// zeroing alone was 8.6 % of all the gateway's CPU in the profile (benches/README.md, "Intake
/// past 20,000/s?"). So once the WAL holds [`RESTART_FRAMES`] frames, this thread asks the
/// writer (`restart`) to copy the last few frames itself between two commits (see
/// [`writer_loop`]): even a checkpoint that copied every frame has usually run beside an open
/// write transaction, whose frames come after it. The writer's next commit then starts the WAL
/// over, in pages that are already in the page cache. Durability is SQLite's own: a checkpoint
/// syncs the WAL before copying and the database file before the WAL may be reused.
fn checkpointer(conn: Connection, alive: mpsc::WeakSender<Queued>, restart: Arc<AtomicBool>) {
    while alive.upgrade().is_some() {
        std::thread::sleep(std::time::Duration::from_millis(250));
        match checkpoint(&conn) {
            Ok((log, _)) if log >= RESTART_FRAMES => {
                restart.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
    }
}

/// WAL frames (of a 4 KiB page each) after which the WAL is started over (see
/// [`checkpointer`]): 64 MiB, reached in about half a second at the intake benchmark's rate.
/// Each restart costs the writer one small checkpoint and SQLite's sync of the new WAL header;
/// a WAL this size is written over again in pages the kernel has already allocated.
const RESTART_FRAMES: i64 = 16_384;

/// `PRAGMA wal_checkpoint(PASSIVE)`: frames in the WAL, and frames copied into the database
/// (both -1 when the checkpoint could not run, e.g. another one was under way).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// How the sync thread tells the writer that the commits it had were synced.
struct Syncing {
    /// Commits handed to the sync thread and not yet synced.
    unsynced: Arc<AtomicUsize>,
    /// The writer's queue, to wake it with [`Queued::Synced`] (weak: the store's handles alone
    /// keep the writer running).
    writer: mpsc::WeakSender<Queued>,
}

/// Committed batches waiting for the WAL to reach the disk.
struct Committed {
    answers: Vec<Pending>,
    new_rows: bool,
}

/// Make commits durable and only then answer them.
///
/// The writer commits with `synchronous=NORMAL`: the transaction is in the WAL file but maybe
/// only in the OS cache. This thread `fdatasync`s the WAL once for every commit that has queued up
/// meanwhile and then answers their callers, so the writer prepares and commits the next batch
/// while the disk syncs the last one. An answer still follows the sync of its commit, which is
/// what `synchronous=FULL` gave, but the writer no longer sits idle in fsync (a third of its
/// time in the benchmark). WAL recovery replays every checksummed frame that reached the disk.
fn syncer(
    wal: std::fs::File,
    rx: std::sync::mpsc::Receiver<Committed>,
    outbox: Arc<Notify>,
    sync: Syncing,
) {
    while let Ok(first) = rx.recv() {
        let mut ready = vec![first];
        ready.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let synced = wal.sync_data();
        metrics::histogram!("gateway_store_sync_seconds").record(started.elapsed().as_secs_f64());
        // Let a writer that holds back its next small commit (see `writer_loop`) go ahead now.
        // A full queue needs no wake-up: the writer commits a full batch without waiting.
        sync.unsynced.fetch_sub(ready.len(), Ordering::AcqRel);
        if let Some(writer) = sync.writer.upgrade() {
            let _ = writer.try_send(Queued::Synced);
        }
        let error = synced.as_ref().err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::error!(error = %e, "syncing the SQLite WAL failed; the commits are not acknowledged");
            metrics::counter!("gateway_store_commit_failures_total").increment(1);
        }
        let mut new_rows = false;
        for batch in ready {
            new_rows |= batch.new_rows;
            for a in batch.answers {
                a(error.as_deref());
            }
        }
        if new_rows && error.is_none() {
            outbox.notify_one();
        }
    }
}

/// Below this many writes, a batch waits for the WAL sync under way (see [`writer_loop`]).
const SMALL_BATCH: usize = 64;

/// Take what is queued into `batch` (up to `max_batch`) without waiting.
fn drain(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Write>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(Queued::Write(w)) => batch.push(w),
            Ok(Queued::Synced) => {}
            Err(_) => break,
        }
    }
}

/// Commit what is queued, batch after batch, and hand each commit to the sync thread.
///
/// While a WAL sync is under way, a small batch is not committed at once: its writes could only
/// be answered after the *next* sync anyway, which starts when this one ends, so the writer keeps
/// taking writes until the sync thread says it is done (or the batch is no longer small) and
/// commits them as one. Commits and syncs come one to one instead of two or three commits per
/// sync, and each commit costs the writer and the disk per page written, not per order (the
/// pages at the end of every B-tree are written again by each commit). Large batches are
/// committed at once, beside the sync, as before.
///
/// When the checkpoint thread asks (`restart_wal`, see [`checkpointer`]), the writer checkpoints
/// the frames the checkpoint thread could not copy, right after handing its commit to the sync
/// thread (the two syncs overlap); with every frame copied, its next commit starts the WAL over.
fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Queued>,
    mut numbering: Numbering,
    max_batch: usize,
    synced: std::sync::mpsc::Sender<Committed>,
    unsynced: Arc<AtomicUsize>,
    restart_wal: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let small = SMALL_BATCH.min(max_batch);
    while let Some(first) = rx.blocking_recv() {
        if let Queued::Write(w) = first {
            batch.push(w);
        }
        drain(&mut rx, &mut batch, max_batch);
        while !batch.is_empty() && batch.len() < small && unsynced.load(Ordering::Acquire) > 0 {
            match rx.blocking_recv() {
                Some(Queued::Write(w)) => {
                    batch.push(w);
                    drain(&mut rx, &mut batch, max_batch);
                }
                Some(Queued::Synced) => {}
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let (answers, new_rows, failed) = commit_batch(&mut conn, &mut numbering, &mut batch);
        metrics::histogram!("gateway_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("gateway_store_batch_size").record(size as f64);
        if failed {
            metrics::counter!("gateway_store_commit_failures_total").increment(1);
        }
        unsynced.fetch_add(1, Ordering::AcqRel);
        if let Err(unsent) = synced.send(Committed { answers, new_rows }) {
            // No sync thread any more: nothing will be synced, so nothing is worth waiting for.
            unsynced.store(0, Ordering::Release);
            for a in unsent.0.answers {
                a(Some("the store is shutting down"));
            }
        }
        if restart_wal.swap(false, Ordering::AcqRel)
            && let Err(e) = checkpoint(&conn)
        {
            tracing::warn!(error = %e, "sqlite checkpoint before restarting the WAL failed");
        }
    }
    tracing::debug!("sqlite writer stopped");
}

/// What one write produced inside the transaction, answered once the commit is on disk.
enum Outcome {
    /// A new order under this number.
    Created(OrderNumber),
    /// A submission whose idempotency key was seen before (never `Created`).
    Submit(SubmitOutcome),
    Event(Option<Box<WorkOrder>>),
    Claim(Vec<Claimed>),
    Unit,
    Flag(bool),
    SmsPart(SmsPartState),
}

/// Pair a write's reply with its result (an outcome of another shape cannot happen: `apply`
/// returns the shape of its write).
fn respond(w: Write, result: Result<Outcome, StoreError>) -> Pending {
    fn shape<T>(
        r: Result<Outcome, StoreError>,
        f: impl FnOnce(Outcome) -> Option<T>,
    ) -> Result<T, StoreError> {
        r.and_then(|o| {
            f(o).ok_or_else(|| StoreError::Failed("internal: mismatched write outcome".into()))
        })
    }
    match w {
        Write::Submit(drafted, r) => match result {
            Ok(Outcome::Created(id)) => {
                pending(r, Ok(SubmitOutcome::Created(drafted.numbered(id))))
            }
            result => pending(
                r,
                shape(result, |o| match o {
                    Outcome::Submit(v) => Some(v),
                    _ => None,
                }),
            ),
        },
        Write::Event(_, _, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::Event(v) => Some(v.map(|o| *o)),
                _ => None,
            }),
        ),
        Write::Claim { reply, .. } => pending(
            reply,
            shape(result, |o| match o {
                Outcome::Claim(v) => Some(v),
                _ => None,
            }),
        ),
        Write::Complete(_, _, _, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::Unit => Some(()),
                _ => None,
            }),
        ),
        Write::Replay(_, _, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::Flag(v) => Some(v),
                _ => None,
            }),
        ),
        Write::Attach(_, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::Event(v) => Some(v.map(|o| *o)),
                _ => None,
            }),
        ),
        Write::SmsPart(_, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::SmsPart(v) => Some(v),
                _ => None,
            }),
        ),
        Write::SmsDone(_, _, _, r) | Write::CallSave(_, r) => pending(
            r,
            shape(result, |o| match o {
                Outcome::Unit => Some(()),
                _ => None,
            }),
        ),
    }
}

/// Commit a batch in one transaction. Writes share the transaction without savepoints (a
/// savepoint per write cost 15% of the writer's time in the benchmark): when one write fails,
/// the transaction is rolled back, that write alone is answered with its error, and the rest are
/// applied again. Returns the answers, whether new outbox rows were committed, and whether the
/// commit itself failed.
fn commit_batch(
    conn: &mut Connection,
    numbering: &mut Numbering,
    batch: &mut Vec<Write>,
) -> (Vec<Pending>, bool, bool) {
    let mut answers: Vec<Pending> = Vec::with_capacity(batch.len());
    while !batch.is_empty() {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "store cannot begin a transaction");
                let msg = e.to_string();
                answers.extend(
                    batch
                        .drain(..)
                        .map(|w| respond(w, Err(StoreError::Failed(msg.clone())))),
                );
                return (answers, false, true);
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut failed = None;
        let mut new_rows = false;
        for (i, w) in batch.iter().enumerate() {
            match apply(&tx, numbering, w) {
                Ok(outcome) => {
                    new_rows |= matches!(outcome, Outcome::Created(_) | Outcome::Flag(true));
                    results.push(outcome);
                }
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            drop(tx); // rolls back
            tracing::warn!(error = %e, "a store write failed; applying the rest of its batch again");
            answers.push(respond(batch.remove(i), Err(e)));
            continue;
        }
        let committed =
            persist_counters(&tx, numbering).and_then(|()| tx.commit().map_err(StoreError::from));
        return match committed {
            Ok(()) => {
                answers.extend(batch.drain(..).zip(results).map(|(w, o)| respond(w, Ok(o))));
                (answers, new_rows, false)
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "store commit failed");
                let msg = format!("commit failed: {e}");
                answers.extend(
                    batch
                        .drain(..)
                        .map(|w| respond(w, Err(StoreError::Failed(msg.clone())))),
                );
                (answers, false, true)
            }
        };
    }
    (answers, false, false)
}

/// Apply one write inside the open transaction.
fn apply(
    tx: &Transaction<'_>,
    numbering: &mut Numbering,
    w: &Write,
) -> Result<Outcome, StoreError> {
    Ok(match w {
        Write::Submit(order, _) => submit(tx, numbering, order)?,
        Write::Event(id, event, _) => Outcome::Event(event_update(tx, id, event)?.map(Box::new)),
        Write::Claim {
            now,
            lease_until,
            limit,
            ..
        } => Outcome::Claim(claim(tx, *now, *lease_until, *limit)?),
        Write::Complete(id, outcome, now, _) => {
            complete(tx, id, outcome.clone(), *now)?;
            Outcome::Unit
        }
        Write::Replay(id, now, _) => Outcome::Flag(replay(tx, id, *now)?),
        Write::Attach(a, _) => {
            let (id, addition, by, at) = &**a;
            Outcome::Event(channel_ops::sqlite::attach(tx, id, addition, by, *at)?.map(Box::new))
        }
        Write::SmsPart(p, _) => Outcome::SmsPart(channel_ops::sqlite::sms_part(tx, p)?),
        Write::SmsDone(provider, ids, now, _) => {
            channel_ops::sqlite::sms_done(tx, provider, ids, *now)?;
            Outcome::Unit
        }
        Write::CallSave(call, _) => {
            outbound_calls::sqlite::save(tx, call)?;
            Outcome::Unit
        }
    })
}

/// Number and insert a new order (or find the order its idempotency key already made). A new
/// order is answered as [`Outcome::Created`] with its number; [`respond`] puts the number into
/// the drafted WorkOrder.
fn submit(
    tx: &Transaction<'_>,
    numbering: &mut Numbering,
    order: &Drafted,
) -> Result<Outcome, StoreError> {
    if let Some(idem) = &order.idempotency {
        let seen: Option<(Vec<u8>, String)> = tx
            .prepare_cached(
                "SELECT body_sha256, order_id FROM idempotency WHERE client = ?1 AND key = ?2",
            )?
            .query_row(params![idem.client, idem.key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((hash, id)) = seen {
            let id = OrderNumber::parse(&id)
                .map_err(|e| StoreError::Failed(format!("stored order id {id:?}: {e}")))?;
            return Ok(Outcome::Submit(if hash == idem.body_sha256 {
                SubmitOutcome::Replayed(id)
            } else {
                SubmitOutcome::Conflict(id)
            }));
        }
    }
    let node = numbering.node();
    let received_at = order.received_at();
    let id = numbering.issue(received_at, |day| last_counter(tx, node, day))?;
    let at = micros(received_at);
    tx.prepare_cached("INSERT INTO orders (id, received_at, status, doc) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            id.as_str(),
            at,
            order.status().as_str(),
            order.document(&id)?
        ])?;
    tx.prepare_cached(
        "INSERT INTO outbox (order_id, state, next_attempt_at, created_at) \
         VALUES (?1, 'pending', ?2, ?2)",
    )?
    .execute(params![id.as_str(), at])?;
    if let Some(idem) = &order.idempotency {
        tx.prepare_cached(
            "INSERT INTO idempotency (client, key, body_sha256, order_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            idem.client,
            idem.key,
            idem.body_sha256.as_slice(),
            id.as_str(),
            at
        ])?;
    }
    Ok(Outcome::Created(id))
}

fn last_counter(tx: &Transaction<'_>, node: u8, day: NaiveDate) -> Result<u64, StoreError> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT last FROM counters WHERE node = ?1 AND day = ?2")?
        .query_row(params![node, day.to_string()], |r| r.get(0))
        .optional()?;
    Ok(last.unwrap_or(0).max(0) as u64)
}

fn persist_counters(tx: &Transaction<'_>, numbering: &mut Numbering) -> Result<(), StoreError> {
    let node = numbering.node();
    for (day, last) in numbering.take_used() {
        tx.prepare_cached(
            "INSERT INTO counters (node, day, last) VALUES (?1, ?2, ?3) \
             ON CONFLICT (node, day) DO UPDATE SET last = max(last, excluded.last)",
        )?
        .execute(params![node, day.to_string(), last as i64])?;
    }
    Ok(())
}

fn load_for_update(
    tx: &Transaction<'_>,
    id: &OrderNumber,
) -> Result<Option<WorkOrder>, StoreError> {
    let doc: Option<String> = tx
        .prepare_cached("SELECT doc FROM orders WHERE id = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    Ok(match doc {
        Some(d) => Some(serde_json::from_str(&d)?),
        None => None,
    })
}

fn event_update(
    tx: &Transaction<'_>,
    id: &OrderNumber,
    event: &StatusEvent,
) -> Result<Option<WorkOrder>, StoreError> {
    let Some(mut order) = load_for_update(tx, id)? else {
        return Ok(None);
    };
    if apply_status(&mut order, event) {
        write_order(tx, &order)?;
    }
    Ok(Some(order))
}

fn claim(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Claimed>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE outbox SET lease_until = ?1 WHERE order_id IN ( \
            SELECT order_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?2 \
            AND (lease_until IS NULL OR lease_until <= ?2) ORDER BY next_attempt_at LIMIT ?3) \
         RETURNING order_id, attempts",
    )?;
    let rows: Vec<(String, u32)> = stmt
        .query_map(params![micros(lease_until), micros(now), limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    let mut doc = tx.prepare_cached("SELECT doc FROM orders WHERE id = ?1")?;
    for (id, attempts) in rows {
        let body: String = doc.query_row([&id], |r| r.get(0))?;
        let order_id = OrderNumber::parse(&id)
            .map_err(|e| StoreError::Failed(format!("stored order id {id:?}: {e}")))?;
        out.push(Claimed {
            order_id,
            attempts,
            body,
        });
    }
    Ok(out)
}

fn complete(
    tx: &Transaction<'_>,
    id: &OrderNumber,
    outcome: DeliveryOutcome,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match outcome {
        DeliveryOutcome::Delivered => {
            tx.prepare_cached(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, \
                 lease_until = NULL, last_error = NULL, finished_at = ?2 WHERE order_id = ?1",
            )?
            .execute(params![id.as_str(), micros(now)])?;
            if let Some(mut order) = load_for_update(tx, id)?
                && mark_delivered(&mut order, now)
            {
                write_order(tx, &order)?;
            }
        }
        DeliveryOutcome::Retry { at, error } => {
            tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, \
                 lease_until = NULL, last_error = ?3 WHERE order_id = ?1 AND state = 'pending'",
            )?
            .execute(params![id.as_str(), micros(at), error])?;
        }
        DeliveryOutcome::Dead { error } => {
            tx.prepare_cached(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, lease_until = NULL, \
                 last_error = ?2, finished_at = ?3 WHERE order_id = ?1 AND state = 'pending'",
            )?
            .execute(params![id.as_str(), error, micros(now)])?;
        }
    }
    Ok(())
}

fn replay(tx: &Transaction<'_>, id: &OrderNumber, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2, \
             lease_until = NULL, finished_at = NULL WHERE order_id = ?1 AND state = 'dead'",
        )?
        .execute(params![id.as_str(), micros(now)])?;
    Ok(changed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewOrder;
    use adapters::Submission;
    use adapters::normalize::normalize;
    use adapters::work_order::Status;

    fn new_order(text: &str) -> NewOrder {
        let submission =
            Submission::from_app_json(serde_json::json!({ "text": text }).to_string().as_bytes())
                .expect("valid submission");
        NewOrder {
            normalized: normalize(&submission),
            submission,
            received_at: Utc::now(),
            idempotency: None,
        }
    }

    fn open(dir: &Path) -> SqliteStore {
        let numbering = Numbering::new(1, chrono::FixedOffset::east_opt(8 * 3600).expect("offset"));
        SqliteStore::open(&dir.join("t.db"), numbering, 64, 2).expect("open store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_alone_and_its_batch_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let SubmitOutcome::Created(first) =
            store.submit(new_order("路灯不亮")).await.expect("submit")
        else {
            panic!("expected a new order");
        };
        // Corrupt the stored document behind the store's back: an event on it must fail.
        Connection::open(dir.path().join("t.db"))
            .expect("side connection")
            .execute(
                "UPDATE orders SET doc = '{' WHERE id = ?1",
                [first.id.as_str()],
            )
            .expect("corrupt");
        let event = StatusEvent {
            status: Status::Assigned,
            note: None,
            by: "test".into(),
            at: Utc::now(),
        };
        let (bad, good, good2) = tokio::join!(
            store.apply_event(first.id.clone(), event),
            store.submit(new_order("井盖丢失")),
            store.submit(new_order("噪音扰民")),
        );
        assert!(bad.is_err(), "the event on a corrupt order fails");
        for outcome in [good, good2] {
            let SubmitOutcome::Created(order) = outcome.expect("batch mates commit") else {
                panic!("expected new orders");
            };
            assert!(
                store.order(&order.id).await.expect("read").is_some(),
                "committed and readable"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn numbers_continue_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut last = 0;
        for _ in 0..3 {
            if let SubmitOutcome::Created(o) = store.submit(new_order("a")).await.expect("submit") {
                last = o.id.sequence();
            }
        }
        drop(store);
        let store = open(dir.path());
        let SubmitOutcome::Created(o) = store.submit(new_order("b")).await.expect("submit") else {
            panic!("expected a new order");
        };
        assert!(o.id.sequence() > last, "{} after {last}", o.id);
    }

    /// The point of keeping the dialer's jobs in the store: an open job is there again after a
    /// restart, a closed one is not resumed, and a save shares its batch with other writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbound_calls_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let at = from_micros(1_790_000_000_000_000);
        let call = |id: &str, open: bool| StoredCall {
            id: id.into(),
            open,
            doc: format!(r#"{{"id":"{id}","note":"回访 \"满意度\""}}"#),
            created_at: at,
            updated_at: at,
        };
        let (waiting, done, order) = tokio::join!(
            store.call_save(call("c-waiting", true)),
            store.call_save(call("c-done", false)),
            store.submit(new_order("回访来电")),
        );
        waiting.expect("save");
        done.expect("save");
        order.expect("submit");
        drop(store);
        let store = open(dir.path());
        assert_eq!(
            store.calls_open().await.expect("open calls"),
            vec![call("c-waiting", true)]
        );
        assert_eq!(
            store.call_get("c-done".into()).await.expect("get"),
            Some(call("c-done", false))
        );
    }
}
