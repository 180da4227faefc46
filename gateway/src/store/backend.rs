//! The contract both back ends keep ([`OrderStore`]), so that one conformance suite
//! (`tests/tests/intake/store_conformance.rs`) runs against SQLite and PostgreSQL alike, as rustls runs one
//! test suite against every crypto provider. [`Store`](super::Store) dispatches to the back end
//! the config chose and adds what is the same for both (the related-order index).
//!
//! Each method answers only once its effect is durable (writes) or reads what was committed
//! before it was called (reads). Methods return `impl Future + Send` rather than being `async fn`
//! so that callers on a multi-threaded runtime can hold them across `.await`s.

use std::future::Future;

use adapters::{OrderNumber, WorkOrder};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{
    Addition, Claimed, DeadLetter, DeliveryOutcome, NewOrder, OutboxStats, Prepared, SmsPart,
    SmsPartState, StatusEvent, StoreError, StoredCall, SubmitOutcome,
};

/// What a durable store of orders, their outbox rows, idempotency keys, channel state and
/// outbound call jobs does.
pub trait OrderStore: Send + Sync {
    /// Number, commit and sync a submission with the related orders already found.
    fn submit_prepared(
        &self,
        order: Prepared,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Number, commit and sync a submission (no related orders).
    fn submit(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send {
        self.submit_prepared(order.into())
    }

    /// The order with this number, if any.
    fn order(
        &self,
        id: &OrderNumber,
    ) -> impl Future<Output = Result<Option<WorkOrder>, StoreError>> + Send;

    /// Orders received at or after `since`, oldest first; `after` continues a previous page.
    fn orders(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<OrderNumber>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<WorkOrder>, StoreError>> + Send;

    /// The receipt time of the newest order at or after `since`, skipping `skip` newer ones.
    fn newest_time(
        &self,
        since: DateTime<Utc>,
        skip: u32,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// Apply a backend status event; `None` when there is no such order.
    fn apply_event(
        &self,
        id: OrderNumber,
        event: StatusEvent,
    ) -> impl Future<Output = Result<Option<WorkOrder>, StoreError>> + Send;

    /// Take up to `limit` due deliveries, leased to this node until `lease_until`.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Record the outcome of one delivery attempt.
    fn complete(
        &self,
        id: OrderNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Dead letters, oldest first.
    fn dead_letters(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// Put a dead letter back in the queue; `false` when the order is not a dead letter.
    fn replay(
        &self,
        id: OrderNumber,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Outbox figures for `/metrics`.
    fn stats(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<OutboxStats, StoreError>> + Send;

    /// Notified when new outbox rows were committed.
    fn outbox_signal(&self) -> &Notify;

    /// Add a photo or location to an order; `None` when there is no such order.
    fn attach(
        &self,
        id: OrderNumber,
        addition: Addition,
        by: String,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WorkOrder>, StoreError>> + Send;

    /// The newest order received since `since` from this channel user.
    fn latest_order_of(
        &self,
        channel: adapters::work_order::Channel,
        user: String,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WorkOrder>, StoreError>> + Send;

    /// Store one part of a long SMS durably; whether the message is now complete.
    fn sms_part(
        &self,
        part: SmsPart,
    ) -> impl Future<Output = Result<SmsPartState, StoreError>> + Send;

    /// Mark parts used; forget used parts older than two days.
    fn sms_parts_done(
        &self,
        provider: String,
        part_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Parts of messages not yet complete.
    fn sms_open_parts(&self) -> impl Future<Output = Result<Vec<SmsPart>, StoreError>> + Send;

    /// Save an outbound call job: insert it, or update `open`, `doc` and `updated_at` of the job
    /// with its id (`created_at` stays that of the first save).
    fn call_save(&self, call: StoredCall) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The outbound call job with this id, if any.
    fn call_get(
        &self,
        id: String,
    ) -> impl Future<Output = Result<Option<StoredCall>, StoreError>> + Send;

    /// Open outbound call jobs, oldest `created_at` first (then by id).
    fn calls_open(&self) -> impl Future<Output = Result<Vec<StoredCall>, StoreError>> + Send;

    /// The newest outbound call jobs by `created_at` (then by id, descending), at most `limit`
    /// and never more than [`MAX_RECENT`](super::outbound_calls::MAX_RECENT).
    fn calls_recent(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredCall>, StoreError>> + Send;
}
