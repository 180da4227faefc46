//! Related orders in the live path: duplicates and same-event reports found for every new order,
//! whatever its channel, and written into the order (`related`, with the reason).
//!
//! [`Store::submit`] is the one place every channel's new orders pass exactly once, so the
//! index sits there, around the back end's writer rather than inside it: the lookup
//! (two small index buckets, see `adapters::normalize::related`) runs on the submitting task,
//! and the finished links go into the document there too (the SQLite writer gets the document
//! already serialized, see `store::Drafted`; the PostgreSQL writer copies them in). The index
//! is behind one mutex held for a few microseconds per order; the text's bigrams are computed
//! before it is taken.
//!
//! An order is held in the index from before its commit (without a number), so a second
//! submission in flight at the same moment (a double tap) already sees it. When a new order is a
//! duplicate of such an order, it waits (at most [`PENDING_WAIT`], woken by that order's commit
//! alone) until the earlier one is numbered; links only point at earlier orders, so this cannot
//! deadlock. Same-event links name only committed reports and never wait. An order that is not
//! committed (idempotent replay, conflict, failure, a caller that gave up) is taken out again.
//!
//! Measured cost: see `benches/README.md` (a few microseconds per order on a full index; the
//! writer's only extra work is writing the longer document when links were found).
//!
//! **On restart** the index is rebuilt from the store: the newest `capacity` orders received
//! within the longer window, oldest first, before the gateway takes requests
//! ([`RelatedOrders::rebuild`]; `related.rebuild_on_start`). With several nodes each node keeps its
//! own index: it sees every order in the database when it starts and, after that, the orders it
//! takes itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use adapters::normalize::related::{Link, OrderFacts, RelatedConfig, RelatedIndex, Slot};
use adapters::work_order::{Channel, Citizen, Related};
use adapters::{OrderNumber, WorkOrder};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{NewOrder, Store, StoreError};

/// Longest wait for an earlier order, still being committed, that a new order links to. A
/// commit takes milliseconds; one that takes longer leaves the link out rather than holding the
/// citizen's answer.
pub const PENDING_WAIT: Duration = Duration::from_secs(2);

/// Orders read per page while rebuilding.
const REBUILD_PAGE: u32 = 1_000;

/// The live related-order index of this node.
#[derive(Debug)]
pub struct RelatedOrders {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    index: RelatedIndex,
    /// Orders still being committed that a newer order waits for, each with its own wake-up: a
    /// commit wakes only those waiting for it (a wake-up of every waiter on every commit cost
    /// more than the lookups themselves under load).
    waiting: HashMap<Slot, Arc<Notify>>,
}

/// A new order's place in the index: dropped without [`Ticket::committed`], it is taken out.
#[derive(Debug)]
pub(crate) struct Ticket {
    owner: Arc<RelatedOrders>,
    slot: Option<Slot>,
}

impl Ticket {
    pub(crate) fn committed(mut self, id: &OrderNumber) {
        if let Some(slot) = self.slot.take() {
            self.owner
                .settle(slot, |index| index.confirm(slot, id.clone()));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.owner.settle(slot, |index| index.cancel(slot));
        }
    }
}

/// Who reported: the phone number, else the channel identity scoped by channel (a WeChat openid
/// and an app user id may look alike).
fn caller(channel: Channel, citizen: &Citizen) -> Option<String> {
    citizen.phone.clone().or_else(|| {
        citizen
            .channel_user
            .as_ref()
            .map(|u| format!("{}:{u}", channel.as_str()))
    })
}

/// The facts of a new order, as the order will have them (the citizen's own district and
/// street win over the ones found in the text, as in `Submission::into_order`).
pub fn facts_of(order: &NewOrder) -> OrderFacts {
    let s = &order.submission;
    let n = &order.normalized;
    OrderFacts::new(
        caller(s.channel, &s.citizen).as_deref(),
        n.category.as_deref(),
        s.location.district.as_deref().or(n.district.as_deref()),
        s.location.street.as_deref().or(n.street.as_deref()),
        &s.text,
        order.received_at,
    )
}

/// The facts of a stored order.
pub fn facts_of_stored(order: &WorkOrder) -> OrderFacts {
    OrderFacts::new(
        caller(order.channel, &order.citizen).as_deref(),
        order.category.as_deref(),
        order.location.district.as_deref(),
        order.location.street.as_deref(),
        &order.text,
        order.received_at,
    )
}

impl RelatedOrders {
    pub fn new(config: RelatedConfig) -> Arc<RelatedOrders> {
        Arc::new(RelatedOrders {
            state: Mutex::new(State {
                index: RelatedIndex::new(config),
                waiting: HashMap::new(),
            }),
        })
    }

    /// The index; a panic elsewhere while it was held can at worst have left a link out, so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number or drop the order at `slot`, and wake whoever waits for it.
    fn settle(&self, slot: Slot, f: impl FnOnce(&mut RelatedIndex)) {
        let (held, waiters) = {
            let mut state = self.lock();
            f(&mut state.index);
            (state.index.len(), state.waiting.remove(&slot))
        };
        if let Some(waiters) = waiters {
            waiters.notify_waiters();
        }
        metrics::gauge!("gateway_related_index_orders").set(held as f64);
    }

    /// Orders held.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().index.is_empty()
    }

    /// Before the store: hold the new order in the index and return its related orders.
    pub(crate) async fn prepare(self: &Arc<Self>, order: &NewOrder) -> (Ticket, Vec<Related>) {
        let facts = facts_of(order);
        // One critical section in the common case: reserve, and name the links at once when
        // none of them is still being committed.
        let (slot, ready) = {
            let mut state = self.lock();
            let r = state.index.reserve(facts);
            let ready = if r.links.iter().any(|l| state.index.is_pending(l.slot)) {
                Err(r.links)
            } else {
                Ok(state.index.related(r.links))
            };
            (r.slot, ready)
        };
        let ticket = Ticket {
            owner: self.clone(),
            slot: Some(slot),
        };
        let related = match ready {
            Ok(related) => related,
            Err(links) => self.resolve(links).await,
        };
        (ticket, related)
    }

    /// The reservation's links as `related` entries, once the orders they point at are
    /// numbered (or [`PENDING_WAIT`] has passed; links still pending are then left out).
    async fn resolve(&self, links: Vec<Link>) -> Vec<Related> {
        if links.is_empty() {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + PENDING_WAIT;
        loop {
            let (slot, wake) = {
                let mut state = self.lock();
                let pending = links.iter().find(|l| state.index.is_pending(l.slot));
                match pending.map(|l| l.slot) {
                    None => return state.index.related(links),
                    Some(slot) => (slot, state.waiting.entry(slot).or_default().clone()),
                }
            };
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Settled between the look and the registration: its wake-up was missed; look again.
            if !self.lock().index.is_pending(slot) {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    "a related order was still being committed after {PENDING_WAIT:?}; link left out"
                );
                return self.lock().index.related(links);
            }
        }
    }

    /// Fill the index from the store: the newest `capacity` orders received since `now` minus
    /// the longer window, oldest first. Returns how many were read.
    pub async fn rebuild(&self, store: &Store, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let (since, keep) = {
            let state = self.lock();
            let c = state.index.config();
            let window = c.duplicate_window.max(c.event_window);
            (now - window, u32::try_from(c.capacity).unwrap_or(u32::MAX))
        };
        let start = store.recent_start(since, keep).await?;
        let mut after: Option<OrderNumber> = None;
        let mut read = 0usize;
        loop {
            let page = store
                .orders(Some(start), after.clone(), REBUILD_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id.clone());
            let full = page.len() == REBUILD_PAGE as usize;
            read += page.len();
            {
                let mut state = self.lock();
                for order in &page {
                    state.index.insert(order.id.clone(), facts_of_stored(order));
                }
                metrics::gauge!("gateway_related_index_orders").set(state.index.len() as f64);
            }
            if !full {
                break;
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use adapters::Submission;
    use adapters::normalize::normalize;
    use adapters::work_order::Relation;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Backend, IdempotencyClaim, Numbering, SubmitOutcome};

    fn open(dir: &std::path::Path) -> Store {
        let numbering = Numbering::new(1, chrono::FixedOffset::east_opt(8 * 3600).expect("offset"));
        let sqlite = SqliteStore::open(&dir.join("t.db"), numbering, 64, 2).expect("open store");
        Store::new(Backend::Sqlite(sqlite))
    }

    fn new_order(text: &str, phone: &str, key: Option<&str>) -> NewOrder {
        let body = serde_json::json!({ "text": text, "citizen": { "phone": phone } }).to_string();
        let submission = Submission::from_app_json(body.as_bytes()).expect("valid submission");
        NewOrder {
            normalized: normalize(&submission),
            submission,
            received_at: Utc::now(),
            idempotency: key.map(|k| IdempotencyClaim {
                client: "test".into(),
                key: k.into(),
                body_sha256: [1; 32],
            }),
        }
    }

    async fn created(store: &Store, order: NewOrder) -> WorkOrder {
        match store.submit(order).await.expect("submit") {
            SubmitOutcome::Created(o) => *o,
            other => panic!("expected a new order, got {other:?}"),
        }
    }

    const TEXT: &str = "小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_leave_no_trace_and_duplicates_name_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let related = RelatedOrders::new(RelatedConfig::default());
        let store = open(dir.path()).with_related(related.clone());
        let first = created(&store, new_order(TEXT, "13800138000", Some("k1"))).await;
        assert!(first.related.is_empty());
        let replay = store
            .submit(new_order(TEXT, "13800138000", Some("k1")))
            .await
            .expect("submit");
        assert!(matches!(replay, SubmitOutcome::Replayed(ref id) if *id == first.id));
        assert_eq!(related.len(), 1, "the replay is not held");
        let again = created(&store, new_order(TEXT, "138 0013 8000", Some("k2"))).await;
        assert_eq!(again.related.len(), 1, "{:?}", again.related);
        assert_eq!(again.related[0].order_id, first.id);
        assert_eq!(again.related[0].relation, Relation::Duplicate);
        // The link is part of the stored (and delivered) document.
        let stored = store.order(&again.id).await.expect("read").expect("stored");
        assert_eq!(stored.related, again.related);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_reads_the_newest_orders_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut ids = Vec::new();
        for i in 0..5 {
            let o = created(&store, new_order(TEXT, &format!("1390000000{i}"), None)).await;
            ids.push(o.id);
        }
        let related = RelatedOrders::new(RelatedConfig {
            capacity: 3,
            ..RelatedConfig::default()
        });
        let read = related.rebuild(&store, Utc::now()).await.expect("rebuild");
        assert_eq!((read, related.len()), (3, 3));
        // The oldest two were not read: the first caller again is not a duplicate, the fifth is.
        let store = store.with_related(related);
        let old = created(&store, new_order(TEXT, "13900000000", None)).await;
        assert!(
            old.related
                .iter()
                .all(|r| r.relation != Relation::Duplicate),
            "{:?}",
            old.related
        );
        let recent = created(&store, new_order(TEXT, "13900000004", None)).await;
        assert!(
            recent
                .related
                .iter()
                .any(|r| r.relation == Relation::Duplicate && r.order_id == ids[4]),
            "{:?}",
            recent.related
        );
    }
}
