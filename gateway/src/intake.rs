//! The intake stage: one way from a channel's submission to a durable order.
//!
//! Every channel (app API, web form, Open311, WeChat, SMS, calls) used to repeat the same tail
//! after parsing its wire format: normalize, stamp `received_at`, submit to the store (which
//! links related orders) under a timeout, count `gateway_submissions_total`, write the masked
//! "order accepted" line. Six copies drift apart, so the tail lives here once, as in vector's
//! shared HTTP source tail where each source only builds events: a channel handler parses its
//! wire format into an [`adapters::Submission`], calls [`accept`], and turns the answer (or the
//! [`IntakeError`]) into its own reply — HTTP JSON, a WeChat text, an SMS provider's answer, an
//! IVR prompt.
//!
//! What still differs between channels is passed in, not decided here by guessing: [`Via`]
//! names the channel and the fields its log line carries (the metric labels and log fields
//! dashboards read are kept as they were), and [`Idempotency`] says whether a key is the
//! client's own (another body under it is a [`IntakeError::Conflict`]) or the channel's message
//! id (another body under it is a redelivery of the same message: the first order stands).
//! Personal data in the log lines (phone numbers, texts) is masked here, in one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::normalize::mask::{Masked, mask_phone};
use adapters::normalize::normalize;
use adapters::{OrderNumber, Submission, WorkOrder};
use chrono::{DateTime, Utc};

use crate::store::{IdempotencyClaim, NewOrder, Store, StoreError, SubmitOutcome};

/// Where `received_at` comes from (the system clock, or a fixed one in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What [`accept`] needs: the store, the clock stamping `received_at`, and how long the store
/// may take to confirm.
#[derive(Clone)]
pub struct Intake {
    store: Store,
    clock: Clock,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("store", &self.store)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// Submissions into `store`, stamped with the system clock, waiting for the store as long
    /// as it takes (see [`Intake::with_timeout`]).
    pub fn new(store: Store) -> Intake {
        Intake {
            store,
            clock: Arc::new(Utc::now),
            timeout: None,
        }
    }

    /// Give up on the store after `timeout` ([`IntakeError::Timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Intake {
        self.timeout = Some(timeout);
        self
    }

    /// Stamp `received_at` from `clock`.
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Intake {
        self.clock = Arc::new(clock);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The intake's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// The channel a submission came through, with what its log line names besides the order.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// `POST /v1/submissions`, by this API client.
    App { client: &'a str },
    /// The public web form; `photo` when one was attached.
    Web { photo: bool },
    /// Open311 `POST requests.json`, with the API client when a key was given.
    Open311 {
        client: Option<&'a str>,
        ignored_attributes: usize,
    },
    /// A WeChat account; `user` is already shortened (`oAbC***`).
    Wechat { account: &'a str, user: &'a str },
    /// An SMS provider; `phone` is the sender's number in full (masked in the log).
    Sms { provider: &'a str, phone: &'a str },
    /// A call's flow filed the order.
    Call,
    /// The callback order of a caller who hung up at `at` (the flow's position).
    CallCallback { at: Option<&'a str> },
}

impl Via<'_> {
    /// The `channel` label of `gateway_submissions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Via::App { .. } => "app",
            Via::Web { .. } => "web",
            Via::Open311 { .. } => "open311",
            Via::Wechat { .. } => "wechat",
            Via::Sms { .. } => "sms",
            Via::Call | Via::CallCallback { .. } => "phone",
        }
    }

    /// The `outcome` label of a new order.
    fn created_label(&self) -> &'static str {
        match self {
            Via::CallCallback { .. } => "callback",
            _ => "created",
        }
    }

    /// Whether replays are counted (calls never counted them).
    fn counts_replays(&self) -> bool {
        !matches!(self, Via::Call | Via::CallCallback { .. })
    }

    /// Whether the store's answer time goes into `gateway_submission_seconds` (the app API and
    /// WeChat, as before).
    fn timed(&self) -> bool {
        matches!(self, Via::App { .. } | Via::Wechat { .. })
    }
}

/// How a submission is deduplicated.
#[derive(Debug, Clone)]
pub enum Idempotency {
    /// Not at all: every submission is a new order.
    None,
    /// A key the client chose (`Idempotency-Key`, the web form's token nonce): the same key with
    /// the same body is the same order, with another body an [`IntakeError::Conflict`].
    Key(IdempotencyClaim),
    /// The channel's own message id (WeChat MsgId, SMS id, SIP Call-ID and submit number): the
    /// same id is a redelivery of the same message, whatever its body, so the first order
    /// stands.
    Redelivery(IdempotencyClaim),
}

/// A submission the store has made durable.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new order.
    Created(Box<WorkOrder>),
    /// A replay (or a redelivery): the order made before.
    Replayed(OrderNumber),
}

impl Accepted {
    pub fn id(&self) -> &OrderNumber {
        match self {
            Accepted::Created(o) => &o.id,
            Accepted::Replayed(id) => id,
        }
    }
}

/// Why a submission was not accepted; each channel turns it into its own reply.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The store did not confirm within the intake's timeout (it may still commit).
    #[error("the order store did not confirm in time")]
    Timeout,
    /// The client's idempotency key was used for this order with another body.
    #[error("the idempotency key was used for order {0} with another body")]
    Conflict(OrderNumber),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Normalize, stamp, store (related orders are linked by the store), count and log one
/// submission. Answers only once the order is durable.
pub async fn accept(
    intake: &Intake,
    via: Via<'_>,
    submission: Submission,
    idempotency: Idempotency,
) -> Result<Accepted, IntakeError> {
    let started = Instant::now();
    let normalized = normalize(&submission);
    let (claim, conflict_is_replay) = match idempotency {
        Idempotency::None => (None, false),
        Idempotency::Key(c) => (Some(c), false),
        Idempotency::Redelivery(c) => (Some(c), true),
    };
    let new = NewOrder {
        submission,
        normalized,
        received_at: intake.now(),
        idempotency: claim,
    };
    let outcome = match intake.timeout {
        Some(t) => tokio::time::timeout(t, intake.store.submit(new))
            .await
            .map_err(|_| IntakeError::Timeout)??,
        None => intake.store.submit(new).await?,
    };
    if via.timed() {
        metrics::histogram!("gateway_submission_seconds").record(started.elapsed().as_secs_f64());
    }
    let channel = via.label();
    match outcome {
        SubmitOutcome::Created(order) => {
            metrics::counter!("gateway_submissions_total", "channel" => channel, "outcome" => via.created_label()).increment(1);
            log_created(&via, &order);
            Ok(Accepted::Created(order))
        }
        SubmitOutcome::Conflict(id) if !conflict_is_replay => {
            metrics::counter!("gateway_submissions_total", "channel" => channel, "outcome" => "conflict").increment(1);
            Err(IntakeError::Conflict(id))
        }
        SubmitOutcome::Replayed(id) | SubmitOutcome::Conflict(id) => {
            if via.counts_replays() {
                metrics::counter!("gateway_submissions_total", "channel" => channel, "outcome" => "replayed").increment(1);
            }
            log_replayed(&via, &id);
            Ok(Accepted::Replayed(id))
        }
    }
}

/// The "order accepted" line, with each channel's fields; personal data masked.
fn log_created(via: &Via<'_>, order: &WorkOrder) {
    let phone = || Masked(order.citizen.phone.as_deref().unwrap_or(""));
    match *via {
        Via::App { client } => {
            let _span = tracing::info_span!("order", order_id = %order.id).entered();
            tracing::info!(
                channel = order.channel.as_str(),
                kind = order.kind.as_str(),
                urgency = ?order.urgency,
                client = %client,
                "order accepted"
            );
        }
        Via::Web { photo } => tracing::info!(
            order_id = %order.id,
            channel = "web",
            kind = order.kind.as_str(),
            urgency = ?order.urgency,
            district = order.location.district.as_deref().unwrap_or(""),
            phone = %phone(),
            photo,
            "order accepted"
        ),
        Via::Open311 {
            client,
            ignored_attributes,
        } => tracing::info!(
            order_id = %order.id,
            channel = "open311",
            kind = order.kind.as_str(),
            urgency = ?order.urgency,
            client = client.unwrap_or(""),
            ignored_attributes,
            phone = %phone(),
            "order accepted"
        ),
        Via::Wechat { account, user } => tracing::info!(
            order_id = %order.id,
            account = %account,
            user = %user,
            kind = order.kind.as_str(),
            urgency = ?order.urgency,
            text = %Masked(&order.text),
            "order accepted"
        ),
        Via::Sms { provider, phone } => tracing::info!(
            order_id = %order.id,
            provider,
            phone = %mask_phone(phone),
            kind = order.kind.as_str(),
            urgency = ?order.urgency,
            text = %Masked(&order.text),
            "order accepted"
        ),
        Via::Call => tracing::info!(
            order_id = %order.id,
            kind = order.kind.as_str(),
            urgency = ?order.urgency,
            "order accepted"
        ),
        Via::CallCallback { at } => tracing::info!(
            order_id = %order.id,
            at = ?at,
            "caller hung up mid-flow: callback order"
        ),
    }
}

/// The message channels say when a redelivery met its first order; the others stay quiet.
fn log_replayed(via: &Via<'_>, id: &OrderNumber) {
    match *via {
        Via::Wechat { account, user } => tracing::info!(
            order_id = %id,
            account = %account,
            user = %user,
            "wechat redelivery: same order"
        ),
        Via::Sms { provider, phone } => tracing::info!(
            order_id = %id,
            provider,
            phone = %mask_phone(phone),
            "sms redelivery: same order"
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use adapters::normalize::related::RelatedConfig;
    use adapters::work_order::Relation;
    use chrono::TimeZone;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Backend, Numbering, RelatedOrders};

    const TEXT: &str = "小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民";

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 1, 30, 0)
            .single()
            .expect("a valid instant")
    }

    /// A real SQLite store in `dir` with the related-order index, and a fixed clock.
    fn intake(dir: &std::path::Path) -> Intake {
        let numbering = Numbering::new(1, chrono::FixedOffset::east_opt(8 * 3600).expect("offset"));
        let sqlite = SqliteStore::open(&dir.join("t.db"), numbering, 64, 2).expect("open store");
        let store = Store::new(Backend::Sqlite(sqlite))
            .with_related(RelatedOrders::new(RelatedConfig::default()));
        Intake::new(store)
            .with_timeout(Duration::from_secs(10))
            .with_clock(at)
    }

    fn submission(text: &str, phone: &str) -> Submission {
        let body = serde_json::json!({
            "text": text,
            "citizen": { "phone": phone },
            "location": { "address": "武汉市洪山区珞喻路1037号" },
        });
        Submission::from_app_json(body.to_string().as_bytes()).expect("valid submission")
    }

    fn key(key: &str, body: u8) -> IdempotencyClaim {
        IdempotencyClaim {
            client: "test".into(),
            key: key.into(),
            body_sha256: [body; 32],
        }
    }

    async fn created(intake: &Intake, s: Submission, i: Idempotency) -> WorkOrder {
        match accept(intake, Via::App { client: "test" }, s, i).await {
            Ok(Accepted::Created(o)) => *o,
            other => panic!("expected a new order, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_accepted_order_is_normalized_and_stamped_by_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let intake = intake(dir.path());
        let s = submission(TEXT, "13800138000");
        let expected = normalize(&s);
        let order = created(&intake, s, Idempotency::None).await;
        assert_eq!(order.received_at, at());
        assert!(expected.category.is_some(), "{expected:?}");
        assert_eq!(order.category, expected.category);
        assert_eq!(order.kind, expected.kind);
        assert_eq!(order.location.district.as_deref(), Some("洪山区"));
        // What the store holds is what was answered.
        let stored = intake.store().order(&order.id).await.expect("read");
        let stored = stored.expect("stored");
        assert_eq!(stored.received_at, at());
        assert_eq!(stored.category, order.category);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_is_the_same_order_and_another_body_a_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let intake = intake(dir.path());
        let first = created(
            &intake,
            submission(TEXT, "13800138000"),
            Idempotency::Key(key("k1", 1)),
        )
        .await;
        let via = Via::App { client: "test" };
        let replay = accept(
            &intake,
            via,
            submission(TEXT, "13800138000"),
            Idempotency::Key(key("k1", 1)),
        )
        .await
        .expect("replayed");
        assert!(
            matches!(&replay, Accepted::Replayed(id) if *id == first.id),
            "{replay:?}"
        );
        assert_eq!(replay.id(), &first.id);
        let conflict = accept(
            &intake,
            via,
            submission("另一件事：路灯不亮", "13800138000"),
            Idempotency::Key(key("k1", 2)),
        )
        .await;
        assert!(
            matches!(&conflict, Err(IntakeError::Conflict(id)) if *id == first.id),
            "{conflict:?}"
        );
        // A channel's redelivery under its message id is the same order, whatever the body.
        let redelivered = accept(
            &intake,
            Via::Sms {
                provider: "aliyun",
                phone: "13800138000",
            },
            submission("另一件事：路灯不亮", "13800138000"),
            Idempotency::Redelivery(key("k1", 3)),
        )
        .await
        .expect("redelivery");
        assert_eq!(redelivered.id(), &first.id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn related_orders_are_filled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let intake = intake(dir.path());
        let first = created(&intake, submission(TEXT, "13800138000"), Idempotency::None).await;
        assert!(first.related.is_empty());
        let again = created(
            &intake,
            submission(TEXT, "138 0013 8000"),
            Idempotency::None,
        )
        .await;
        assert_eq!(again.related.len(), 1, "{:?}", again.related);
        assert_eq!(again.related[0].order_id, first.id);
        assert_eq!(again.related[0].relation, Relation::Duplicate);
        let stored = intake.store().order(&again.id).await.expect("read");
        assert_eq!(stored.expect("stored").related, again.related);
    }
}
