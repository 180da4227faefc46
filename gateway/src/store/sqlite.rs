//! SQLite back end, the embedded default.
//!
//! All writes go through one writer thread that owns the only write connection (SQLite allows one
//! writer anyway). It drains whatever is queued, applies each write inside its own savepoint of
//! one `BEGIN IMMEDIATE` transaction, commits with `synchronous=FULL` in WAL mode (the commit is
//! on disk when `COMMIT` returns), and only then answers each caller. A write that fails rolls
//! back its savepoint and fails alone. Reads use a small pool of read-only connections on tokio's
//! blocking threads; WAL lets them run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use adapters::{OrderNumber, WorkOrder};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::channel_ops::{self, Addition, SmsPart, SmsPartState};
use super::{
    Claimed, DeadLetter, DeliveryOutcome, NewOrder, Numbering, OutboxStats, StatusEvent,
    StoreError, SubmitOutcome, apply_status, from_micros, mark_delivered, micros, schema,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Write {
    Submit(Box<NewOrder>, Reply<SubmitOutcome>),
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
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: mpsc::Sender<Write>,
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
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(schema::SQLITE)?;
    conn.execute_batch(schema::SMS_PARTS)?;
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS outbox_pending_age ON outbox (state, created_at);",
    )?;
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
        let conn = open_writer(path)?;
        let (tx, rx) = mpsc::channel(64 * 1024);
        let outbox = Arc::new(Notify::new());
        let signal = outbox.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, numbering, max_batch, &signal))
            .map_err(|e| StoreError::Failed(format!("cannot start the writer thread: {e}")))?;
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
            .send(make(tx))
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

    pub async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        self.write(|r| Write::Submit(Box::new(order), r)).await
    }

    pub async fn apply_event(
        &self,
        id: OrderNumber,
        event: StatusEvent,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.write(|r| Write::Event(id, event, r)).await
    }

    pub async fn claim_due(
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

    pub async fn complete(
        &self,
        id: OrderNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|r| Write::Complete(id, outcome, now, r)).await
    }

    pub async fn replay(&self, id: OrderNumber, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.write(|r| Write::Replay(id, now, r)).await
    }

    pub async fn order(&self, id: &OrderNumber) -> Result<Option<WorkOrder>, StoreError> {
        let id = id.clone();
        self.read(move |c| read_order(c, id.as_str())).await
    }

    pub async fn orders(
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

    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
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

    pub async fn stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        self.read(move |c| {
            let count = |state: &str| -> Result<u64, StoreError> {
                Ok(
                    c.prepare_cached("SELECT count(*) FROM outbox WHERE state = ?1")?
                        .query_row([state], |r| r.get::<_, i64>(0))? as u64,
                )
            };
            let oldest: Option<i64> = c
                .prepare_cached(
                    "SELECT created_at FROM outbox WHERE state = 'pending' \
                     ORDER BY created_at LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?;
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

    pub fn outbox_signal(&self) -> &Notify {
        &self.inner.outbox
    }

    pub async fn attach(
        &self,
        id: OrderNumber,
        addition: Addition,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.write(|r| Write::Attach(Box::new((id, addition, by, at)), r))
            .await
    }

    pub async fn latest_order_of(
        &self,
        channel: adapters::work_order::Channel,
        user: String,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        self.read(move |c| channel_ops::sqlite::latest_order_of(c, channel, &user, since))
            .await
    }

    pub async fn sms_part(&self, part: SmsPart) -> Result<SmsPartState, StoreError> {
        self.write(|r| Write::SmsPart(Box::new(part), r)).await
    }

    pub async fn sms_parts_done(
        &self,
        provider: String,
        part_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|r| Write::SmsDone(provider, part_ids, now, r))
            .await
    }

    pub async fn sms_open_parts(&self) -> Result<Vec<SmsPart>, StoreError> {
        self.read(channel_ops::sqlite::open_parts).await
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
    Box::new(move |commit_error: Option<&str>| {
        let answer = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(StoreError::Failed(format!("commit failed: {e}"))),
            (r, _) => r,
        };
        // The caller may have given up (request timeout); the write stands regardless.
        let _ = reply.send(answer);
    })
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Write>,
    mut numbering: Numbering,
    max_batch: usize,
    outbox: &Notify,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let (failed, new_rows) = match commit_batch(&mut conn, &mut numbering, batch.drain(..)) {
            Ok((answers, new_rows)) => {
                for a in answers {
                    a(None);
                }
                (false, new_rows)
            }
            Err((answers, e)) => {
                tracing::error!(error = %e, size, "store commit failed");
                let msg = e.to_string();
                for a in answers {
                    a(Some(&msg));
                }
                (true, false)
            }
        };
        metrics::histogram!("gateway_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("gateway_store_batch_size").record(size as f64);
        if failed {
            metrics::counter!("gateway_store_commit_failures_total").increment(1);
        }
        if new_rows {
            outbox.notify_one();
        }
    }
    tracing::debug!("sqlite writer stopped");
}

type BatchResult = Result<(Vec<Pending>, bool), (Vec<Pending>, StoreError)>;

fn commit_batch(
    conn: &mut Connection,
    numbering: &mut Numbering,
    batch: impl Iterator<Item = Write>,
) -> BatchResult {
    let mut answers: Vec<Pending> = Vec::new();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            let msg = e.to_string();
            for w in batch {
                answers.push(fail(w, &msg));
            }
            return Err((answers, e));
        }
    };
    let mut new_rows = false;
    for w in batch {
        if let Err(e) = tx.execute_batch("SAVEPOINT w") {
            answers.push(fail(w, &e.to_string()));
            continue;
        }
        let answer = apply(&tx, numbering, w, &mut new_rows);
        let outcome = if answer.1 {
            tx.execute_batch("RELEASE w")
        } else {
            tx.execute_batch("ROLLBACK TO w; RELEASE w")
        };
        if let Err(e) = outcome {
            return Err((vec![answer.0], e.into()));
        }
        answers.push(answer.0);
    }
    if let Err(e) = persist_counters(&tx, numbering) {
        return Err((answers, e));
    }
    match tx.commit() {
        Ok(()) => Ok((answers, new_rows)),
        Err(e) => Err((answers, e.into())),
    }
}

fn fail(w: Write, msg: &str) -> Pending {
    fn e<T>(msg: &str) -> Result<T, StoreError> {
        Err(StoreError::Failed(msg.to_owned()))
    }
    match w {
        Write::Submit(_, r) => pending(r, e(msg)),
        Write::Event(_, _, r) => pending(r, e(msg)),
        Write::Claim { reply, .. } => pending(reply, e(msg)),
        Write::Complete(_, _, _, r) => pending(r, e(msg)),
        Write::Replay(_, _, r) => pending(r, e(msg)),
        Write::Attach(_, r) => pending(r, e(msg)),
        Write::SmsPart(_, r) => pending(r, e(msg)),
        Write::SmsDone(_, _, _, r) => pending(r, e(msg)),
    }
}

/// Apply one write; the flag says whether it succeeded (else its savepoint is rolled back).
fn apply(
    tx: &Transaction<'_>,
    numbering: &mut Numbering,
    w: Write,
    new_rows: &mut bool,
) -> (Pending, bool) {
    fn done<T: Send + 'static>(r: Reply<T>, v: Result<T, StoreError>) -> (Pending, bool) {
        let ok = v.is_ok();
        (pending(r, v), ok)
    }
    match w {
        Write::Submit(order, r) => {
            let v = submit(tx, numbering, *order);
            if matches!(v, Ok(SubmitOutcome::Created(_))) {
                *new_rows = true;
            }
            done(r, v)
        }
        Write::Event(id, event, r) => done(r, event_update(tx, &id, &event)),
        Write::Claim {
            now,
            lease_until,
            limit,
            reply,
        } => done(reply, claim(tx, now, lease_until, limit)),
        Write::Complete(id, outcome, now, r) => done(r, complete(tx, &id, outcome, now)),
        Write::Replay(id, now, r) => {
            let v = replay(tx, &id, now);
            if matches!(v, Ok(true)) {
                *new_rows = true;
            }
            done(r, v)
        }
        Write::Attach(a, r) => {
            let (id, addition, by, at) = *a;
            done(r, channel_ops::sqlite::attach(tx, &id, &addition, &by, at))
        }
        Write::SmsPart(p, r) => done(r, channel_ops::sqlite::sms_part(tx, &p)),
        Write::SmsDone(provider, ids, now, r) => {
            done(r, channel_ops::sqlite::sms_done(tx, &provider, &ids, now))
        }
    }
}

fn submit(
    tx: &Transaction<'_>,
    numbering: &mut Numbering,
    order: NewOrder,
) -> Result<SubmitOutcome, StoreError> {
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
            return Ok(if hash == idem.body_sha256 {
                SubmitOutcome::Replayed(id)
            } else {
                SubmitOutcome::Conflict(id)
            });
        }
    }
    let node = numbering.node();
    let id = numbering.issue(order.received_at, |day| last_counter(tx, node, day))?;
    let at = micros(order.received_at);
    let idempotency = order.idempotency;
    let work_order = order
        .submission
        .into_order(id, order.received_at, order.normalized);
    tx.prepare_cached("INSERT INTO orders (id, received_at, status, doc) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            work_order.id.as_str(),
            at,
            work_order.status.as_str(),
            serde_json::to_string(&work_order)?
        ])?;
    tx.prepare_cached(
        "INSERT INTO outbox (order_id, state, next_attempt_at, created_at) \
         VALUES (?1, 'pending', ?2, ?2)",
    )?
    .execute(params![work_order.id.as_str(), at])?;
    if let Some(idem) = idempotency {
        tx.prepare_cached(
            "INSERT INTO idempotency (client, key, body_sha256, order_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            idem.client,
            idem.key,
            idem.body_sha256.as_slice(),
            work_order.id.as_str(),
            at
        ])?;
    }
    Ok(SubmitOutcome::Created(Box::new(work_order)))
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
