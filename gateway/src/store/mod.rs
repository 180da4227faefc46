//! The durable store: orders, their outbox rows, idempotency keys and order-number counters
//! (and the channels' and the dialer's state beside them: [`channel_ops`], [`outbound_calls`]).
//!
//! One promise matters: when a channel acknowledges a submission, the order *and* its outbox row
//! are committed in one transaction and synced to disk. Both back ends keep it with a single
//! writer per node that takes every queued write, commits them together and only then answers
//! each caller (group commit): one fsync serves hundreds of submissions, so durability costs
//! latency of about one disk sync, not throughput.
//!
//! - [`OrderStore`]: the contract both keep, checked by one conformance suite.
//! - [`sqlite`]: the embedded default (one node, WAL, `synchronous=FULL`).
//! - [`postgres`]: several nodes sharing one database; deliveries are claimed with
//!   `FOR UPDATE SKIP LOCKED` leases so nodes never deliver the same order at once.

mod backend;
pub mod channel_ops;
mod config;
mod numbering;
pub mod outbound_calls;
pub mod postgres;
pub mod related;
mod schema;
pub mod sqlite;
mod sqlite_files;

pub use config::{RelatedOrdersConfig, StoreConfig, StoreKind};

use std::sync::Arc;

use adapters::normalize::Normalized;
use adapters::work_order::{Related, Relation, Status};
use adapters::{OrderNumber, Submission, WorkOrder};
use chrono::{DateTime, Utc};

pub use backend::OrderStore;
pub use channel_ops::{Addition, SmsPart, SmsPartState};
pub use numbering::Numbering;
pub use outbound_calls::StoredCall;
pub use related::RelatedOrders;

/// A submission ready to be stored: the writer gives it its number.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub submission: Submission,
    pub normalized: Normalized,
    pub received_at: DateTime<Utc>,
    pub idempotency: Option<IdempotencyClaim>,
}

/// A new order as the writers take it: with the links the related-order index found before the
/// writer, so the writer only copies them into the document (the SQLite back end makes the
/// document on the submitting task: `Drafted`).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub order: NewOrder,
    pub related: Vec<Related>,
}

impl From<NewOrder> for Prepared {
    fn from(order: NewOrder) -> Prepared {
        Prepared {
            order,
            related: Vec::new(),
        }
    }
}

impl Prepared {
    /// The WorkOrder this submission becomes under `id`.
    pub(crate) fn into_order(self, id: OrderNumber) -> WorkOrder {
        let NewOrder {
            submission,
            normalized,
            received_at,
            ..
        } = self.order;
        let mut order = submission.into_order(id, received_at, normalized);
        order.related = self.related;
        order
    }
}

/// A new order made into its WorkOrder and JSON document on the submitting task, before the
/// single writer thread that bounds intake throughput: the writer only gives it its number.
///
/// The number is the one writer-side input, so the document is serialized under a placeholder
/// number and the writer writes `{"id":"` + number + [`tail`](Self::tail). `id` is the first
/// field of a WorkOrder and an order number is digits only (nothing to escape), so the result is
/// byte for byte what `serde_json::to_string` gives for the numbered order.
#[derive(Debug)]
pub(crate) struct Drafted {
    /// The order under a placeholder number; [`Drafted::numbered`] puts the real one in.
    order: Box<WorkOrder>,
    /// The document after the number (from the closing quote on); `None` if the document did
    /// not start as expected, and then the writer serializes the numbered order itself.
    tail: Option<String>,
    pub idempotency: Option<IdempotencyClaim>,
}

const DOC_HEAD: &str = "{\"id\":\"";

impl Drafted {
    pub(crate) fn new(mut prepared: Prepared) -> Result<Drafted, StoreError> {
        let idempotency = prepared.order.idempotency.take();
        let received_at = prepared.order.received_at;
        // Any valid number will do: it is cut out of the document below.
        let placeholder = OrderNumber::compose(received_at.date_naive(), 0, 1);
        let order = prepared.into_order(placeholder);
        let doc = serde_json::to_string(&order)?;
        let head_len = DOC_HEAD.len() + order.id.as_str().len();
        let tail = (doc.starts_with(DOC_HEAD)
            && doc.get(DOC_HEAD.len()..head_len) == Some(order.id.as_str())
            && doc[head_len..].starts_with('"'))
        .then(|| doc[head_len..].to_owned());
        Ok(Drafted {
            order: Box::new(order),
            tail,
            idempotency,
        })
    }

    pub(crate) fn received_at(&self) -> DateTime<Utc> {
        self.order.received_at
    }

    pub(crate) fn status(&self) -> Status {
        self.order.status
    }

    /// The stored document of this order under `id`.
    pub(crate) fn document(&self, id: &OrderNumber) -> Result<String, StoreError> {
        Ok(match &self.tail {
            Some(tail) => {
                let mut doc =
                    String::with_capacity(DOC_HEAD.len() + id.as_str().len() + tail.len());
                doc.push_str(DOC_HEAD);
                doc.push_str(id.as_str());
                doc.push_str(tail);
                doc
            }
            None => {
                let mut order = (*self.order).clone();
                order.id = id.clone();
                serde_json::to_string(&order)?
            }
        })
    }

    /// The order under its number.
    pub(crate) fn numbered(self, id: OrderNumber) -> Box<WorkOrder> {
        let mut order = self.order;
        order.id = id;
        order
    }
}

/// `Idempotency-Key` of a request, scoped to the API client that sent it.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub client: String,
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is a conflict.
    pub body_sha256: [u8; 32],
}

#[derive(Debug, Clone)]
pub enum SubmitOutcome {
    /// A new order was committed.
    Created(Box<WorkOrder>),
    /// The same key and body were seen before: this is that order.
    Replayed(OrderNumber),
    /// The same key came with another body.
    Conflict(OrderNumber),
}

/// A status update reported by the dispatch backend.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub status: Status,
    pub note: Option<String>,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// An outbox row taken for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub order_id: OrderNumber,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The WorkOrder as JSON, delivered byte for byte (the signature covers these bytes).
    pub body: String,
}

#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered,
    Retry { at: DateTime<Utc>, error: String },
    Dead { error: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub order_id: OrderNumber,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_at: Option<DateTime<Utc>>,
}

/// Outbox figures for `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
    /// Age in seconds of the oldest order not yet delivered (0 when none).
    pub oldest_pending_age_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("stored order is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store is shutting down")]
    Closed,
    #[error("{0}")]
    Failed(String),
}

/// The back end the config chose.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The store of this node: its back end, and the related-order index every new order passes.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    related: Option<Arc<RelatedOrders>>,
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// A store without related-order detection (see [`Store::with_related`]).
    pub fn new(backend: Backend) -> Store {
        Store {
            backend,
            related: None,
        }
    }

    /// Find related orders for every new order before it is stored.
    pub fn with_related(mut self, related: Arc<RelatedOrders>) -> Store {
        self.related = Some(related);
        self
    }

    pub fn related(&self) -> Option<&Arc<RelatedOrders>> {
        self.related.as_ref()
    }

    /// Number, commit and sync a submission; returns only once it is durable.
    ///
    /// This is the one door every channel's new orders pass (app, web form, Open311, WeChat,
    /// SMS, and calls), each exactly once, so related orders are found here: before the writer
    /// (the index lookup runs on the caller's task, not in the single writer thread that limits
    /// throughput), and the order is recorded in the index under its number once committed. A
    /// replayed or conflicting idempotency key, or a failed commit, leaves the index as it was.
    pub async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        let Some(index) = &self.related else {
            return both!(self, s => s.submit_prepared(order.into()).await);
        };
        let (ticket, related) = index.prepare(&order).await;
        let outcome = both!(self, s => s.submit_prepared(Prepared { order, related }).await)?;
        if let SubmitOutcome::Created(created) = &outcome {
            ticket.committed(&created.id);
            record_related(created);
        }
        Ok(outcome)
    }

    pub async fn order(&self, id: &OrderNumber) -> Result<Option<WorkOrder>, StoreError> {
        both!(self, s => s.order(id).await)
    }

    /// Orders received at or after `since`, oldest first; `after` continues a previous page.
    pub async fn orders(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<OrderNumber>,
        limit: u32,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        both!(self, s => s.orders(since, after, limit).await)
    }

    /// Where reading the newest `keep` orders received at or after `since` starts: the receipt
    /// time of the `keep`-th newest of them, or `since` when there are fewer.
    pub async fn recent_start(
        &self,
        since: DateTime<Utc>,
        keep: u32,
    ) -> Result<DateTime<Utc>, StoreError> {
        let skip = keep.saturating_sub(1);
        Ok(both!(self, s => s.newest_time(since, skip).await)?.unwrap_or(since))
    }

    /// Apply a status update; `None` when there is no such order.
    pub async fn apply_event(
        &self,
        id: &OrderNumber,
        event: StatusEvent,
    ) -> Result<Option<WorkOrder>, StoreError> {
        both!(self, s => s.apply_event(id.clone(), event).await)
    }

    /// Take up to `limit` deliveries that are due, leased to this node until `lease_until`.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        both!(self, s => s.claim_due(now, lease_until, limit).await)
    }

    pub async fn complete(
        &self,
        id: &OrderNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        both!(self, s => s.complete(id.clone(), outcome, now).await)
    }

    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        both!(self, s => s.dead_letters(limit).await)
    }

    /// Put a dead letter back in the queue; `false` when the order is not a dead letter.
    pub async fn replay(&self, id: &OrderNumber, now: DateTime<Utc>) -> Result<bool, StoreError> {
        both!(self, s => s.replay(id.clone(), now).await)
    }

    pub async fn stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        both!(self, s => s.stats(now).await)
    }

    /// Add a photo or location to an order (document and history); `None` when there is no
    /// such order. Adding what is already there changes nothing.
    pub async fn attach(
        &self,
        id: &OrderNumber,
        addition: Addition,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        both!(self, s => s.attach(id.clone(), addition, by.to_owned(), at).await)
    }

    /// The newest order received since `since` from this channel user (a WeChat openid).
    pub async fn latest_order_of(
        &self,
        channel: adapters::work_order::Channel,
        channel_user: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        both!(self, s => s.latest_order_of(channel, channel_user.to_owned(), since).await)
    }

    /// Store one part of a long SMS durably and say whether the message is complete.
    pub async fn sms_part(&self, part: SmsPart) -> Result<SmsPartState, StoreError> {
        both!(self, s => s.sms_part(part).await)
    }

    /// Mark parts used (their order is committed); forgets used parts older than two days.
    pub async fn sms_parts_done(
        &self,
        provider: &str,
        part_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        both!(self, s => s.sms_parts_done(provider.to_owned(), part_ids, now).await)
    }

    /// Open parts grouped by sender whose first part arrived before `older_than`.
    pub async fn sms_stale_groups(
        &self,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<Vec<SmsPart>>, StoreError> {
        let open = both!(self, s => s.sms_open_parts().await)?;
        Ok(channel_ops::stale_groups(open, older_than))
    }

    /// Save an outbound call job (insert, or update `open`, `doc` and `updated_at` of the job
    /// with this id; its `created_at` stays that of the first save). Durable once answered.
    pub async fn call_save(&self, call: StoredCall) -> Result<(), StoreError> {
        both!(self, s => s.call_save(call).await)
    }

    /// The outbound call job with this id, if any.
    pub async fn call_get(&self, id: String) -> Result<Option<StoredCall>, StoreError> {
        both!(self, s => s.call_get(id).await)
    }

    /// Every open outbound call job, oldest `created_at` first (then by id): what the dialer
    /// resumes at start.
    pub async fn calls_open(&self) -> Result<Vec<StoredCall>, StoreError> {
        both!(self, s => s.calls_open().await)
    }

    /// The newest outbound call jobs by `created_at`, at most `limit` (and never more than
    /// [`outbound_calls::MAX_RECENT`]).
    pub async fn calls_recent(&self, limit: u32) -> Result<Vec<StoredCall>, StoreError> {
        both!(self, s => s.calls_recent(limit).await)
    }

    /// Wait until new outbox rows were committed (or a while passed).
    pub fn outbox_signal(&self) -> &tokio::sync::Notify {
        both!(self, s => s.outbox_signal())
    }
}

/// Count what was linked, and log it (order numbers and relations only) at debug level.
fn record_related(order: &WorkOrder) {
    if order.related.is_empty() {
        return;
    }
    let duplicates = order
        .related
        .iter()
        .filter(|r| r.relation == Relation::Duplicate)
        .count();
    let same_event = order.related.len() - duplicates;
    metrics::counter!("gateway_related_links_total", "relation" => "duplicate")
        .increment(duplicates as u64);
    metrics::counter!("gateway_related_links_total", "relation" => "same_event")
        .increment(same_event as u64);
    // Debug only: the links are in the order itself, and an info line per linked order would
    // double the log volume when a large event is under way.
    if tracing::enabled!(tracing::Level::DEBUG) {
        let of: Vec<&str> = order.related.iter().map(|r| r.order_id.as_str()).collect();
        tracing::debug!(order_id = %order.id, duplicates, same_event, related = ?of, "related orders");
    }
}

/// Microseconds since the Unix epoch: how both back ends store instants (exact and sortable).
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Mark an order delivered unless the backend already moved it further.
pub(crate) fn mark_delivered(order: &mut WorkOrder, now: DateTime<Utc>) -> bool {
    if order.status == Status::Accepted {
        order.push_status(Status::Delivered, now, None, "gateway");
        true
    } else {
        false
    }
}

/// Apply a backend status event; a repeat of the latest entry (a retried request) changes nothing.
pub(crate) fn apply_status(order: &mut WorkOrder, event: &StatusEvent) -> bool {
    let repeat = order
        .history
        .last()
        .is_some_and(|h| h.status == event.status && h.note == event.note && h.by == event.by);
    if repeat {
        return false;
    }
    order.push_status(event.status, event.at, event.note.clone(), &event.by);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::normalize::normalize;
    use chrono::NaiveDate;

    /// The document the writer splices together is byte for byte the numbered order's JSON,
    /// and the answered order is the numbered order.
    #[test]
    fn a_drafted_document_is_the_numbered_orders_json() {
        let body = serde_json::json!({
            "text": "小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民 \"quoted\" \\ 110",
            "citizen": { "phone": "13800138000", "name": "张三" },
            "location": { "address": "武汉市洪山区珞喻路1037号" },
        });
        let submission = Submission::from_app_json(body.to_string().as_bytes()).expect("valid");
        let day = NaiveDate::from_ymd_opt(2026, 12, 7).expect("day");
        let prepared = Prepared {
            order: NewOrder {
                normalized: normalize(&submission),
                submission,
                received_at: Utc::now(),
                idempotency: Some(IdempotencyClaim {
                    client: "c".into(),
                    key: "k".into(),
                    body_sha256: [7; 32],
                }),
            },
            related: vec![Related {
                order_id: OrderNumber::compose(day, 2, 17),
                relation: Relation::Duplicate,
                reason: "same caller".into(),
            }],
        };
        let expected_order = prepared
            .clone()
            .into_order(OrderNumber::compose(day, 3, 123_456));
        let drafted = Drafted::new(prepared).expect("drafted");
        assert!(drafted.tail.is_some(), "the document starts with the id");
        assert_eq!(
            drafted.idempotency.as_ref().map(|c| c.key.as_str()),
            Some("k")
        );
        for id in [
            OrderNumber::compose(day, 3, 123_456),
            OrderNumber::compose(day, 3, 1),
            OrderNumber::compose(day, 255, 99_999_999),
        ] {
            let mut expected = expected_order.clone();
            expected.id = id.clone();
            assert_eq!(
                drafted.document(&id).expect("document"),
                serde_json::to_string(&expected).expect("json")
            );
        }
        let id = OrderNumber::compose(day, 3, 123_456);
        let numbered = drafted.numbered(id);
        assert_eq!(
            serde_json::to_value(&*numbered).expect("json"),
            serde_json::to_value(&expected_order).expect("json")
        );
    }
}
