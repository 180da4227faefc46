//! PostgreSQL back end, for several gateway nodes sharing one database.
//!
//! Submissions go through one writer task per node with its own connection, batching whatever is
//! queued into one transaction (group commit, each write in a savepoint), exactly like the SQLite
//! writer. Everything else runs on a pooled connection in its own transaction: PostgreSQL handles
//! concurrent writers itself. Nodes never deliver the same order at once: a node claims due
//! outbox rows with `FOR UPDATE SKIP LOCKED` and a lease; a node that dies leaves its lease to
//! expire and another node takes the row over. Order numbers stay unique because each node has
//! its own node id (a config contract) and its own counter row.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use adapters::{OrderNumber, WorkOrder};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use super::OrderStore;
use super::channel_ops::{self, Addition, SmsPart, SmsPartState};
use super::outbound_calls::{self, StoredCall};
use super::{
    Claimed, DeadLetter, DeliveryOutcome, Numbering, OutboxStats, Prepared, StatusEvent,
    StoreError, SubmitOutcome, apply_status, from_micros, mark_delivered, micros, schema,
};

/// Advisory lock key for schema creation ("12345gw" in ASCII).
const SCHEMA_LOCK: i64 = 0x0031_3233_3435_6777;

type SubmitReply = oneshot::Sender<Result<SubmitOutcome, StoreError>>;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    submits: mpsc::Sender<(Box<Prepared>, SubmitReply)>,
    outbox: Arc<Notify>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

impl PgStore {
    pub async fn open(
        url: &str,
        numbering: Numbering,
        max_batch: usize,
        read_pool: usize,
    ) -> Result<PgStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url)?;
        let mut client = connect(&config).await?;
        // `CREATE ... IF NOT EXISTS` is not safe against another node running it at the same
        // moment (both see "not exists", one fails on the catalog); nodes started together take
        // turns under a transaction-scoped advisory lock.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(schema::POSTGRES).await?;
        tx.batch_execute(schema::SMS_PARTS).await?;
        tx.batch_execute(schema::OUTBOUND_CALLS).await?;
        tx.commit().await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(read_pool.max(2))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64 * 1024);
        let outbox = Arc::new(Notify::new());
        tokio::spawn(writer_task(
            config,
            client,
            rx,
            numbering,
            max_batch,
            outbox.clone(),
        ));
        Ok(PgStore {
            pool,
            submits: tx,
            outbox,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }
}

impl OrderStore for PgStore {
    async fn submit_prepared(&self, order: Prepared) -> Result<SubmitOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submits
            .send((Box::new(order), tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn order(&self, id: &OrderNumber) -> Result<Option<WorkOrder>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT doc FROM orders WHERE id = $1", &[&id.as_str()])
            .await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(r.get::<_, &str>(0))?),
            None => None,
        })
    }

    async fn orders(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<OrderNumber>,
        limit: u32,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        let c = self.client().await?;
        let mut from = (since.map_or(i64::MIN, micros), String::new());
        if let Some(after) = after
            && let Some(r) = c
                .query_opt(
                    "SELECT received_at FROM orders WHERE id = $1",
                    &[&after.as_str()],
                )
                .await?
        {
            from = (from.0.max(r.get(0)), after.to_string());
        }
        let rows = c
            .query(
                "SELECT doc FROM orders WHERE (received_at, id) > ($1, $2) \
                 ORDER BY received_at, id LIMIT $3",
                &[&from.0, &from.1, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    async fn apply_event(
        &self,
        id: OrderNumber,
        event: StatusEvent,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let order =
            channel_ops::postgres::update_order(&tx, &id, |o| apply_status(o, &event)).await?;
        tx.commit().await?;
        Ok(order)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "WITH due AS ( \
                    SELECT order_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
                    AND (lease_until IS NULL OR lease_until <= $2) \
                    ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE outbox o SET lease_until = $1 FROM due, orders \
                 WHERE o.order_id = due.order_id AND orders.id = o.order_id \
                 RETURNING o.order_id, o.attempts, orders.doc",
                &[&micros(lease_until), &micros(now), &i64::from(limit)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: &str = r.get(0);
            let order_id = OrderNumber::parse(id)
                .map_err(|e| StoreError::Failed(format!("stored order id {id:?}: {e}")))?;
            out.push(Claimed {
                order_id,
                attempts: r.get::<_, i32>(1).max(0) as u32,
                body: r.get::<_, String>(2),
            });
        }
        Ok(out)
    }

    async fn complete(
        &self,
        id: OrderNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        match outcome {
            DeliveryOutcome::Delivered => {
                let changed = tx
                    .execute(
                        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, \
                         lease_until = NULL, last_error = NULL, finished_at = $2 \
                         WHERE order_id = $1 AND state <> 'delivered'",
                        &[&id.as_str(), &micros(now)],
                    )
                    .await?;
                if changed > 0 {
                    channel_ops::postgres::update_order(&tx, &id, |o| mark_delivered(o, now))
                        .await?;
                }
            }
            DeliveryOutcome::Retry { at, error } => {
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, \
                     lease_until = NULL, last_error = $3 WHERE order_id = $1 AND state = 'pending'",
                    &[&id.as_str(), &micros(at), &error],
                )
                .await?;
            }
            DeliveryOutcome::Dead { error } => {
                tx.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, \
                     lease_until = NULL, last_error = $2, finished_at = $3 \
                     WHERE order_id = $1 AND state = 'pending'",
                    &[&id.as_str(), &error, &micros(now)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Receipt time of the order `skip` places from the newest among those received at or after
    /// `since`.
    async fn newest_time(
        &self,
        since: DateTime<Utc>,
        skip: u32,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT received_at FROM orders WHERE received_at >= $1 \
                 ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET $2",
                &[&micros(since), &i64::from(skip)],
            )
            .await?;
        Ok(row.map(|r| from_micros(r.get::<_, i64>(0))))
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT order_id, attempts, last_error, finished_at FROM outbox \
                 WHERE state = 'dead' ORDER BY finished_at LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(DeadLetter {
                    order_id: OrderNumber::parse(r.get::<_, &str>(0)).ok()?,
                    attempts: r.get::<_, i32>(1).max(0) as u32,
                    last_error: r.get(2),
                    dead_at: r.get::<_, Option<i64>>(3).map(from_micros),
                })
            })
            .collect())
    }

    async fn replay(&self, id: OrderNumber, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let changed = c
            .execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, \
                 lease_until = NULL, finished_at = NULL WHERE order_id = $1 AND state = 'dead'",
                &[&id.as_str(), &micros(now)],
            )
            .await?;
        if changed > 0 {
            self.outbox.notify_one();
        }
        Ok(changed > 0)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT state, count(*) FROM outbox GROUP BY state", &[])
            .await?;
        let mut stats = OutboxStats::default();
        for r in rows {
            let n = r.get::<_, i64>(1).max(0) as u64;
            match r.get::<_, &str>(0) {
                "pending" => stats.pending = n,
                "dead" => stats.dead = n,
                "delivered" => stats.delivered = n,
                _ => {}
            }
        }
        let oldest = c
            .query_one(
                "SELECT min(created_at) FROM outbox WHERE state = 'pending'",
                &[],
            )
            .await?;
        stats.oldest_pending_age_s = oldest
            .get::<_, Option<i64>>(0)
            .map_or(0.0, |t| ((micros(now) - t).max(0) as f64) / 1_000_000.0);
        Ok(stats)
    }

    fn outbox_signal(&self) -> &Notify {
        &self.outbox
    }

    async fn attach(
        &self,
        id: OrderNumber,
        addition: Addition,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let mut c = self.client().await?;
        channel_ops::postgres::attach(&mut c, &id, &addition, &by, at).await
    }

    async fn latest_order_of(
        &self,
        channel: adapters::work_order::Channel,
        user: String,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let c = self.client().await?;
        channel_ops::postgres::latest_order_of(&**c, channel, &user, since).await
    }

    async fn sms_part(&self, part: SmsPart) -> Result<SmsPartState, StoreError> {
        let mut c = self.client().await?;
        channel_ops::postgres::sms_part(&mut c, &part).await
    }

    async fn sms_parts_done(
        &self,
        provider: String,
        part_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        channel_ops::postgres::sms_done(&mut c, &provider, &part_ids, now).await
    }

    async fn sms_open_parts(&self) -> Result<Vec<SmsPart>, StoreError> {
        let c = self.client().await?;
        channel_ops::postgres::open_parts(&**c).await
    }

    async fn call_save(&self, call: StoredCall) -> Result<(), StoreError> {
        let c = self.client().await?;
        outbound_calls::postgres::save(&**c, &call).await
    }

    async fn call_get(&self, id: String) -> Result<Option<StoredCall>, StoreError> {
        let c = self.client().await?;
        outbound_calls::postgres::get(&**c, &id).await
    }

    async fn calls_open(&self) -> Result<Vec<StoredCall>, StoreError> {
        let c = self.client().await?;
        outbound_calls::postgres::open(&**c).await
    }

    async fn calls_recent(&self, limit: u32) -> Result<Vec<StoredCall>, StoreError> {
        let c = self.client().await?;
        outbound_calls::postgres::recent(&**c, limit).await
    }
}

async fn writer_task(
    config: tokio_postgres::Config,
    mut client: Client,
    mut rx: mpsc::Receiver<(Box<Prepared>, SubmitReply)>,
    mut numbering: Numbering,
    max_batch: usize,
    outbox: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        if client.is_closed() {
            match connect(&config).await {
                Ok(c) => client = c,
                Err(e) => {
                    tracing::error!(error = %e, "postgres writer cannot reconnect");
                    for (_, reply) in batch.drain(..) {
                        let _ = reply.send(Err(StoreError::Failed(format!(
                            "database unavailable: {e}"
                        ))));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let started = std::time::Instant::now();
        let size = batch.len();
        match commit_batch(&mut client, &mut numbering, &mut batch).await {
            Ok(results) => {
                let created = results
                    .iter()
                    .any(|(_, r)| matches!(r, Ok(SubmitOutcome::Created(_))));
                for (reply, result) in results {
                    let _ = reply.send(result);
                }
                if created {
                    outbox.notify_one();
                }
            }
            Err((replies, e)) => {
                tracing::error!(error = %e, size, "postgres commit failed");
                metrics::counter!("gateway_store_commit_failures_total").increment(1);
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Failed(format!("commit failed: {msg}"))));
                }
            }
        }
        metrics::histogram!("gateway_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("gateway_store_batch_size").record(size as f64);
    }
}

type Answered = Vec<(SubmitReply, Result<SubmitOutcome, StoreError>)>;

async fn commit_batch(
    client: &mut Client,
    numbering: &mut Numbering,
    batch: &mut Vec<(Box<Prepared>, SubmitReply)>,
) -> Result<Answered, (Vec<SubmitReply>, StoreError)> {
    let mut replies_on_error = Vec::new();
    let mut answered: Answered = Vec::with_capacity(batch.len());
    let mut tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => {
            return Err((batch.drain(..).map(|(_, r)| r).collect(), e.into()));
        }
    };
    for (order, reply) in batch.drain(..) {
        let result = async {
            let mut sp = tx.savepoint("w").await?;
            let r = submit_one(&mut sp, numbering, *order).await;
            match &r {
                Ok(_) => sp.commit().await?,
                Err(_) => sp.rollback().await?,
            }
            r
        }
        .await;
        answered.push((reply, result));
    }
    let persisted = async {
        let node = i16::from(numbering.node());
        for (day, last) in numbering.take_used() {
            tx.execute(
                "INSERT INTO counters (node, day, last) VALUES ($1, $2, $3) \
                 ON CONFLICT (node, day) DO UPDATE SET last = GREATEST(counters.last, excluded.last)",
                &[&node, &day.to_string(), &(last as i64)],
            )
            .await?;
        }
        tx.commit().await
    }
    .await;
    match persisted {
        Ok(()) => Ok(answered),
        Err(e) => {
            replies_on_error.extend(answered.into_iter().map(|(r, _)| r));
            Err((replies_on_error, e.into()))
        }
    }
}

async fn submit_one(
    tx: &mut tokio_postgres::Transaction<'_>,
    numbering: &mut Numbering,
    prepared: Prepared,
) -> Result<SubmitOutcome, StoreError> {
    let order = &prepared.order;
    if let Some(day) = numbering.unseeded_day(order.received_at) {
        let last = tx
            .query_opt(
                "SELECT last FROM counters WHERE node = $1 AND day = $2",
                &[&i16::from(numbering.node()), &day.to_string()],
            )
            .await?
            .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
        numbering.seed(day, last);
    }
    let id = numbering.issue(order.received_at, |_| Ok::<u64, StoreError>(0))?;
    let at = micros(order.received_at);
    if let Some(idem) = &order.idempotency {
        // Claim the key first: when two nodes race on it, the loser sees the winner's row.
        let claimed = tx
            .execute(
                "INSERT INTO idempotency (client, key, body_sha256, order_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &idem.client,
                    &idem.key,
                    &idem.body_sha256.as_slice(),
                    &id.as_str(),
                    &at,
                ],
            )
            .await?;
        if claimed == 0 {
            let row = tx
                .query_one(
                    "SELECT body_sha256, order_id FROM idempotency WHERE client = $1 AND key = $2",
                    &[&idem.client, &idem.key],
                )
                .await?;
            let hash: Vec<u8> = row.get(0);
            let seen: &str = row.get(1);
            let seen = OrderNumber::parse(seen)
                .map_err(|e| StoreError::Failed(format!("stored order id {seen:?}: {e}")))?;
            return Ok(if hash == idem.body_sha256 {
                SubmitOutcome::Replayed(seen)
            } else {
                SubmitOutcome::Conflict(seen)
            });
        }
    }
    let work_order = prepared.into_order(id);
    tx.execute(
        "INSERT INTO orders (id, received_at, status, doc) VALUES ($1, $2, $3, $4)",
        &[
            &work_order.id.as_str(),
            &at,
            &work_order.status.as_str(),
            &serde_json::to_string(&work_order)?,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO outbox (order_id, state, next_attempt_at, created_at) \
         VALUES ($1, 'pending', $2, $2)",
        &[&work_order.id.as_str(), &at],
    )
    .await?;
    Ok(SubmitOutcome::Created(Box::new(work_order)))
}
