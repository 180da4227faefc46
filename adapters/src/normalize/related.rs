//! Related orders: the same citizen calling again, and many citizens reporting one event.
//!
//! A burst pipe brings twenty calls and an impatient citizen calls three times; dispatchers need
//! to see that at once, not discover it while handling the orders one by one. [`RelatedIndex`]
//! keeps recent orders in memory and, for each new order, finds:
//!
//! - **duplicates**: the same caller (phone number, or a channel identity such as a WeChat
//!   openid) about the same matter within [`RelatedConfig::duplicate_window`]: character-bigram
//!   Jaccard similarity of the texts at least [`RelatedConfig::duplicate_similarity`];
//! - **same event**: citizens reporting the same category at the same place (same district, and
//!   the same street when both name one) within [`RelatedConfig::event_window`] with similar text
//!   (at least [`RelatedConfig::event_similarity`]). Reports join *events*: a new report joins
//!   the event of the newest similar report at its place, so an event grows report by report and
//!   its size is known without comparing the new text with every earlier one. Once an event has
//!   [`RelatedConfig::event_min_reports`] distinct citizens, each new report names the first one
//!   and the latest others.
//!
//! Every link carries a reason in words a dispatcher can check ("same caller 138****8000
//! reported 城乡建设 2 h ago (similarity 0.82)"); callers appear only masked.
//!
//! ## Cost and memory
//!
//! The index is on the submission path of every channel, so a lookup must not grow with the
//! number of recent orders. Orders are indexed by caller and by (category, district); a lookup
//! reads only those two buckets, newest first, and compares at most
//! [`RelatedConfig::max_scan`] texts in each. Buckets hold small inline records (slot, time,
//! caller and street hashes), so a scan reads consecutive memory and visits an order only to
//! compare texts, which are sorted arrays of packed bigrams (one `u32` per pair of BMP
//! characters) merged in one branch-free pass. Memory (about 0.8 KiB per order) is bounded twice:
//! orders older than the longer window are evicted (and leave their place bucket and event once
//! older than the event window), and at most [`RelatedConfig::capacity`] orders are kept.
//!
//! ## Orders still being committed
//!
//! The gateway numbers an order only when the store commits it, but two submissions from one
//! citizen can be in flight at once (a double-tapped button). So an order is first
//! [reserved](RelatedIndex::reserve) (indexed without a number, so the next order already sees
//! it), its links point at [`Slot`]s, and [`RelatedIndex::confirm`] gives it its number once
//! committed, or [`RelatedIndex::cancel`] forgets it when it was not (an idempotent replay, a
//! failed commit). [`RelatedIndex::related`] turns links into [`Related`] entries for the links
//! whose orders have numbers. A duplicate link may point at an order still being committed (the
//! caller waits for it); same-event links name only committed reports. Links only ever point at
//! older slots, so waiting for them cannot form a cycle.
//!
//! It is pure (time is an argument) so the gateway can rebuild it from the store on start and
//! tests need no clock.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use chrono::{DateTime, Duration, Utc};

use super::mask::mask_phone;
use crate::order_number::OrderNumber;
use crate::work_order::{Related, Relation};

/// Thresholds and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct RelatedConfig {
    pub duplicate_window: Duration,
    pub duplicate_similarity: f64,
    pub event_window: Duration,
    pub event_similarity: f64,
    /// Distinct citizens (the new one included) before reports are linked as one event.
    pub event_min_reports: usize,
    /// Most orders kept; the oldest go first.
    pub capacity: usize,
    /// Most links of each relation in one order: the newest duplicates; an event's first report
    /// and its newest. Every link makes the stored document longer (work for the store's single
    /// writer), and two say what a dispatcher needs: which order is being handled, and that it
    /// is still going on.
    pub max_links: usize,
    /// Most earlier orders compared with a new one in each bucket (caller, place), newest first.
    pub max_scan: usize,
}

impl Default for RelatedConfig {
    fn default() -> Self {
        RelatedConfig {
            duplicate_window: Duration::hours(72),
            duplicate_similarity: 0.5,
            event_window: Duration::hours(24),
            event_similarity: 0.2,
            event_min_reports: 3,
            capacity: 50_000,
            max_links: 2,
            max_scan: 256,
        }
    }
}

/// Character bigrams of a text (whitespace and punctuation ignored), sorted and deduplicated.
///
/// A pair of characters from the Basic Multilingual Plane (all common Chinese, Latin and digits)
/// packs exactly into one `u32`; a pair with a rarer character is folded in by a hash, where a
/// collision could only nudge a similarity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grams(Box<[u32]>);

/// Texts longer than this are compared on their beginning (a complaint's first sentences say
/// what it is about; the bound keeps every entry small).
const MAX_GRAM_CHARS: usize = 400;

fn pack(a: char, b: char) -> u32 {
    let (a, b) = (u32::from(a), u32::from(b));
    if a <= 0xFFFF && b <= 0xFFFF {
        (a << 16) | b
    } else {
        let mut h = DefaultHasher::new();
        (a, b).hash(&mut h);
        h.finish() as u32
    }
}

impl Grams {
    pub fn of(text: &str) -> Grams {
        let mut grams = Vec::with_capacity(text.len() / 3 + 1);
        let (mut prev, mut chars) = (None, 0usize);
        for c in text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .take(MAX_GRAM_CHARS)
        {
            if let Some(p) = prev {
                grams.push(pack(p, c));
            }
            prev = Some(c);
            chars += 1;
        }
        if let (1, Some(only)) = (chars, prev) {
            grams.push(pack(only, only));
        }
        grams.sort_unstable();
        grams.dedup();
        Grams(grams.into_boxed_slice())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Jaccard similarity (0 when both are empty), by one merge of the sorted arrays.
    ///
    /// The merge is branch-free (which side advances is arithmetic, not a jump): whether the
    /// next bigram of one text sorts before the other's is a coin toss the CPU cannot predict,
    /// and the branchy merge spent most of its time in mispredictions.
    pub fn similarity(&self, other: &Grams) -> f64 {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j, mut inter) = (0, 0, 0usize);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            inter += usize::from(x == y);
            i += usize::from(x <= y);
            j += usize::from(y <= x);
        }
        let union = a.len() + b.len() - inter;
        if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        }
    }
}

/// What the index needs to know about an order, prepared (bigrams computed) before the index is
/// locked.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    caller: Option<Box<str>>,
    category: Option<Box<str>>,
    district: Option<Box<str>>,
    street: Option<Box<str>>,
    grams: Grams,
    at: DateTime<Utc>,
}

fn non_empty(s: Option<&str>) -> Option<Box<str>> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(Box::from)
}

impl OrderFacts {
    /// `caller` is a phone number in any usual notation (`+86 138-0013-8000`) or another stable
    /// identity, which the caller should scope by channel (`wechat:<openid>`).
    pub fn new(
        caller: Option<&str>,
        category: Option<&str>,
        district: Option<&str>,
        street: Option<&str>,
        text: &str,
        at: DateTime<Utc>,
    ) -> OrderFacts {
        OrderFacts {
            caller: caller.map(caller_key).filter(|c| !c.is_empty()),
            category: non_empty(category),
            district: non_empty(district),
            street: non_empty(street),
            grams: Grams::of(text),
            at,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    fn place(&self) -> String {
        match (&self.district, &self.street) {
            (Some(d), Some(s)) if !s.starts_with(&**d) => format!("{d}{s}"),
            (_, Some(s)) => s.to_string(),
            (Some(d), None) => d.to_string(),
            (None, None) => "the same place".to_owned(),
        }
    }

    fn topic(&self) -> &str {
        self.category.as_deref().unwrap_or("the same matter")
    }
}

/// Phone numbers compare by their digits (`+86 138-0013-8000` is `13800138000`); any other
/// identity as given.
fn caller_key(caller: &str) -> Box<str> {
    let caller = caller.trim();
    let phone_like = caller
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'));
    let digits: String = caller.chars().filter(char::is_ascii_digit).collect();
    if phone_like && digits.len() >= 7 {
        let national = digits
            .strip_prefix("86")
            .filter(|d| d.len() == 11)
            .unwrap_or(&digits);
        Box::from(national)
    } else {
        Box::from(caller)
    }
}

/// How a caller is named in a reason: a masked phone number, or the first characters of a
/// channel identity.
fn masked_caller(key: &str) -> String {
    if key.len() >= 7 && key.chars().all(|c| c.is_ascii_digit()) {
        mask_phone(key)
    } else if let Some((channel, id)) = key.split_once(':') {
        let head: String = id.chars().take(4).collect();
        format!("{channel} user {head}***")
    } else {
        let head: String = key.chars().take(2).collect();
        format!("{head}***")
    }
}

/// Hasher of the index's maps, whose keys are slot and event numbers (sequential) or already
/// hashes: one multiplication spreads them, where SipHash cost a fifth of a lookup.
#[derive(Debug, Clone, Copy, Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<SlotHasher>>;

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// "25 min ago", "3 h ago", "4 days ago", written straight into the reason.
struct Ago(Duration);

impl std::fmt::Display for Ago {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.max(Duration::zero());
        if d < Duration::hours(1) {
            write!(f, "{} min ago", d.num_minutes())
        } else if d < Duration::hours(48) {
            write!(f, "{} h ago", d.num_hours())
        } else {
            write!(f, "{} days ago", d.num_days())
        }
    }
}

/// A window as "30 min" or "24 h".
struct Span(Duration);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < Duration::hours(1) {
            write!(f, "{} min", self.0.num_minutes())
        } else {
            write!(f, "{} h", self.0.num_hours())
        }
    }
}

/// A similarity as two decimals ("0.82"), by integer arithmetic (exact float formatting was a
/// visible share of a lookup).
struct Sim(f64);

impl std::fmt::Display for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hundredths = (self.0.clamp(0.0, 1.0) * 100.0).round() as u32;
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// An order in the index, numbered or still being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u64);

/// A link from a new order to an earlier one, which may still be waiting for its number.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub slot: Slot,
    pub relation: Relation,
    pub reason: String,
}

/// What [`RelatedIndex::reserve`] found for a new order.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The new order's own place in the index: [`confirm`](RelatedIndex::confirm) it with its
    /// number once committed, or [`cancel`](RelatedIndex::cancel) it.
    pub slot: Slot,
    /// Duplicates first, then same-event links.
    pub links: Vec<Link>,
}

/// What a scan needs to know about a held order without visiting it: slot, time, and caller and
/// street as hashes (0: none). Buckets and events hold these inline, so a scan reads
/// consecutive memory and visits an order (a cache miss or two) only to compare texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cand {
    slot: u64,
    at_us: i64,
    caller: u64,
    street: u64,
}

impl Cand {
    fn same_caller(&self, other: &Cand) -> bool {
        self.caller != 0 && self.caller == other.caller
    }

    /// Same street, or at least one of them names none (the district is the bucket's).
    fn street_fits(&self, other: &Cand) -> bool {
        self.street == 0 || other.street == 0 || self.street == other.street
    }
}

#[derive(Debug)]
struct Entry {
    order_id: Option<OrderNumber>,
    facts: OrderFacts,
    cand: Cand,
    place_hash: Option<u64>,
    /// Still in its place bucket (younger than the event window).
    placed: bool,
    event: Option<u64>,
}

/// Reports of one matter at one place; members in slot order.
#[derive(Debug, Default)]
struct Event {
    members: VecDeque<Cand>,
    /// Members per caller (hashed), and members without one: distinct citizens.
    callers: Map<u32>,
    anonymous: u32,
}

impl Event {
    fn add(&mut self, member: Cand) {
        self.members.push_back(member);
        match member.caller {
            0 => self.anonymous += 1,
            c => *self.callers.entry(c).or_default() += 1,
        }
    }

    fn remove(&mut self, member: &Cand) {
        remove_from(&mut self.members, member.slot);
        match member.caller {
            0 => self.anonymous = self.anonymous.saturating_sub(1),
            c => {
                if let Some(n) = self.callers.get_mut(&c) {
                    *n -= 1;
                    if *n == 0 {
                        self.callers.remove(&c);
                    }
                }
            }
        }
    }

    fn reporters(&self) -> usize {
        self.callers.len() + self.anonymous as usize
    }
}

/// Remove `slot` from a queue kept in slot order; evictions take the oldest, so it is usually
/// the front.
fn remove_from(q: &mut VecDeque<Cand>, slot: u64) {
    if q.front().is_some_and(|c| c.slot == slot) {
        q.pop_front();
    } else if let Some(i) = q.iter().position(|c| c.slot == slot) {
        q.remove(i);
    }
}

fn unbucket(map: &mut Map<VecDeque<Cand>>, key: u64, slot: u64) {
    if let Some(q) = map.get_mut(&key) {
        remove_from(q, slot);
        if q.is_empty() {
            map.remove(&key);
        }
    }
}

/// Recent orders, indexed for finding related ones.
///
/// Buckets are keyed by 64-bit hashes of the caller and of (category, district); two different
/// keys sharing a hash (about one chance in 2^64 per pair) would be taken for the same.
#[derive(Debug)]
pub struct RelatedIndex {
    config: RelatedConfig,
    next_slot: u64,
    next_event: u64,
    /// The latest order time seen: eviction never moves back for an order that arrives late.
    clock: Option<DateTime<Utc>>,
    entries: Map<Entry>,
    /// Every entry by (time, slot), for eviction.
    by_time: BTreeSet<(i64, u64)>,
    /// Entries still in a place bucket by (time, slot), for leaving events after their window.
    placed: BTreeSet<(i64, u64)>,
    by_caller: Map<VecDeque<Cand>>,
    by_place: Map<VecDeque<Cand>>,
    events: Map<Event>,
}

impl Default for RelatedIndex {
    fn default() -> Self {
        RelatedIndex::new(RelatedConfig::default())
    }
}

/// A key hash, never 0 (0 means "none" in a [`Cand`]).
fn key_of(v: impl Hash) -> u64 {
    hash_of(v).max(1)
}

impl RelatedIndex {
    pub fn new(config: RelatedConfig) -> Self {
        RelatedIndex {
            config,
            next_slot: 0,
            next_event: 0,
            clock: None,
            entries: Map::default(),
            by_time: BTreeSet::new(),
            placed: BTreeSet::new(),
            by_caller: Map::default(),
            by_place: Map::default(),
            events: Map::default(),
        }
    }

    pub fn config(&self) -> &RelatedConfig {
        &self.config
    }

    /// Orders held (numbered or being committed).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Events with at least `event_min_reports` citizens.
    pub fn events(&self) -> usize {
        self.events
            .values()
            .filter(|e| e.reporters() >= self.config.event_min_reports)
            .count()
    }

    /// Whether the order at `slot` is held and still waiting for its number.
    pub fn is_pending(&self, slot: Slot) -> bool {
        self.entries
            .get(&slot.0)
            .is_some_and(|e| e.order_id.is_none())
    }

    /// Find what a new order relates to and hold it (without a number yet).
    pub fn reserve(&mut self, facts: OrderFacts) -> Reservation {
        let now = self.clock.map_or(facts.at, |c| c.max(facts.at));
        self.clock = Some(now);
        self.evict(now);
        let slot = self.next_slot;
        self.next_slot += 1;
        let cand = Cand {
            slot,
            at_us: facts.at.timestamp_micros(),
            caller: facts.caller.as_deref().map_or(0, key_of),
            street: facts.street.as_deref().map_or(0, key_of),
        };
        let place_hash = match (&facts.category, &facts.district) {
            (Some(c), Some(d)) => Some(key_of((&**c, &**d))),
            _ => None,
        };
        let mut links = self.duplicates(&facts, &cand);
        let joined = place_hash.and_then(|h| self.similar_at_place(&facts, &cand, h));

        self.by_time.insert((cand.at_us, slot));
        if cand.caller != 0 {
            self.by_caller
                .entry(cand.caller)
                .or_default()
                .push_back(cand);
        }
        if let Some(h) = place_hash {
            self.by_place.entry(h).or_default().push_back(cand);
            self.placed.insert((cand.at_us, slot));
        }
        let event = joined.map(|other| self.join(other, cand));
        if let Some(event) = event {
            self.event_links(&facts, &cand, event, &mut links);
        }
        self.entries.insert(
            slot,
            Entry {
                order_id: None,
                facts,
                cand,
                place_hash,
                placed: place_hash.is_some(),
                event,
            },
        );
        Reservation {
            slot: Slot(slot),
            links,
        }
    }

    /// The reserved order was committed with this number.
    pub fn confirm(&mut self, slot: Slot, order_id: OrderNumber) {
        if let Some(e) = self.entries.get_mut(&slot.0) {
            e.order_id = Some(order_id);
        }
    }

    /// The reserved order was not committed (a replay, a failure): forget it.
    pub fn cancel(&mut self, slot: Slot) {
        self.remove(slot.0);
    }

    /// The links whose orders are held and numbered, as the order's `related` entries.
    pub fn related(&self, links: Vec<Link>) -> Vec<Related> {
        links
            .into_iter()
            .filter_map(|l| {
                let id = self.entries.get(&l.slot.0)?.order_id.clone()?;
                Some(Related {
                    order_id: id,
                    relation: l.relation,
                    reason: l.reason,
                })
            })
            .collect()
    }

    /// Record an already numbered order (a rebuild from the store, tests); returns what it
    /// relates to among the numbered orders held.
    pub fn insert(&mut self, order_id: OrderNumber, facts: OrderFacts) -> Vec<Related> {
        let r = self.reserve(facts);
        let related = self.related(r.links);
        self.confirm(r.slot, order_id);
        related
    }

    /// The same caller's similar orders within the duplicate window, newest first.
    fn duplicates(&self, new: &OrderFacts, me: &Cand) -> Vec<Link> {
        let cfg = &self.config;
        let mut out = Vec::new();
        let Some(bucket) = self.by_caller.get(&me.caller) else {
            return out;
        };
        let window = cfg.duplicate_window.num_microseconds().unwrap_or(i64::MAX);
        let mut who: Option<String> = None;
        for c in bucket.iter().rev().take(cfg.max_scan) {
            let age = me.at_us.saturating_sub(c.at_us);
            if age > window || !c.same_caller(me) {
                continue;
            }
            let Some(e) = self.entries.get(&c.slot) else {
                continue;
            };
            let sim = new.grams.similarity(&e.facts.grams);
            if sim >= cfg.duplicate_similarity {
                let who = who.get_or_insert_with(|| {
                    masked_caller(new.caller.as_deref().unwrap_or_default())
                });
                out.push(Link {
                    slot: Slot(c.slot),
                    relation: Relation::Duplicate,
                    reason: format!(
                        "same caller {who} reported {} {} (similarity {})",
                        e.facts.topic(),
                        Ago(Duration::microseconds(age)),
                        Sim(sim)
                    ),
                });
                if out.len() >= cfg.max_links {
                    break;
                }
            }
        }
        out
    }

    /// The newest similar report of the same category at the same place within the event window.
    fn similar_at_place(&self, new: &OrderFacts, me: &Cand, place_hash: u64) -> Option<Cand> {
        let cfg = &self.config;
        let bucket = self.by_place.get(&place_hash)?;
        let window = cfg.event_window.num_microseconds().unwrap_or(i64::MAX);
        for c in bucket.iter().rev().take(cfg.max_scan) {
            if me.at_us.saturating_sub(c.at_us) > window || !me.street_fits(c) {
                continue;
            }
            let Some(e) = self.entries.get(&c.slot) else {
                continue;
            };
            if new.grams.similarity(&e.facts.grams) >= cfg.event_similarity {
                return Some(*c);
            }
        }
        None
    }

    /// Put the new order into the event of `other` (starting one with `other` when it has none).
    fn join(&mut self, other: Cand, me: Cand) -> u64 {
        let existing = self.entries.get(&other.slot).and_then(|e| e.event);
        let id = match existing {
            Some(id) if self.events.contains_key(&id) => id,
            _ => {
                let id = self.next_event;
                self.next_event += 1;
                let mut event = Event::default();
                event.add(other);
                self.events.insert(id, event);
                if let Some(e) = self.entries.get_mut(&other.slot) {
                    e.event = Some(id);
                }
                id
            }
        };
        if let Some(event) = self.events.get_mut(&id) {
            event.add(me);
        }
        id
    }

    /// Same-event links of the new order, once its event has enough citizens: the first report,
    /// then the latest ones, skipping the caller's own (duplicates say those) and reports still
    /// being committed. Those are left out rather than waited for: an event has other reports to
    /// name, and waiting would hold each report of a busy event behind the commit of the one
    /// before it (which halved the group-commit batches under load).
    fn event_links(&self, new: &OrderFacts, me: &Cand, event: u64, links: &mut Vec<Link>) {
        let cfg = &self.config;
        let Some(ev) = self.events.get(&event) else {
            return;
        };
        let reporters = ev.reporters();
        if reporters < cfg.event_min_reports {
            return;
        }
        let shared = format!(
            "{reporters} citizens reported {} at {} within {}; this one",
            new.topic(),
            new.place(),
            Span(cfg.event_window)
        );
        let first = ev.members.front().copied();
        let candidates = first
            .into_iter()
            .chain(
                ev.members
                    .iter()
                    .rev()
                    .copied()
                    .filter(|c| Some(c.slot) != first.map(|f| f.slot)),
            )
            .take(cfg.max_scan);
        let mut added = 0;
        for c in candidates {
            if added >= cfg.max_links {
                break;
            }
            let committed = self
                .entries
                .get(&c.slot)
                .is_some_and(|e| e.order_id.is_some());
            if !committed
                || c.slot == me.slot
                || c.same_caller(me)
                || links.iter().any(|l| l.slot == Slot(c.slot))
            {
                continue;
            }
            let age = Duration::microseconds(me.at_us.saturating_sub(c.at_us));
            links.push(Link {
                slot: Slot(c.slot),
                relation: Relation::SameEvent,
                reason: format!("{shared} {}", Ago(age)),
            });
            added += 1;
        }
    }

    /// Drop orders older than the longer window and, beyond capacity, the oldest; take orders
    /// older than the event window out of their place bucket and event.
    fn evict(&mut self, now: DateTime<Utc>) {
        let cfg = &self.config;
        let horizon = (now - cfg.duplicate_window.max(cfg.event_window)).timestamp_micros();
        let event_horizon = (now - cfg.event_window).timestamp_micros();
        let capacity = cfg.capacity.max(1);
        while let Some(&(at, slot)) = self.by_time.first() {
            if at >= horizon && self.entries.len() < capacity {
                break;
            }
            self.by_time.pop_first();
            self.remove(slot);
        }
        while let Some(&(at, slot)) = self.placed.first() {
            if at >= event_horizon {
                break;
            }
            self.placed.pop_first();
            self.unplace(slot);
        }
    }

    fn unplace(&mut self, slot: u64) {
        let Some(e) = self.entries.get_mut(&slot) else {
            return;
        };
        if !e.placed {
            return;
        }
        e.placed = false;
        let (cand, place, event) = (e.cand, e.place_hash, e.event.take());
        self.placed.remove(&(cand.at_us, slot));
        if let Some(h) = place {
            unbucket(&mut self.by_place, h, slot);
        }
        if let Some(id) = event
            && let Some(ev) = self.events.get_mut(&id)
        {
            ev.remove(&cand);
            if ev.members.is_empty() {
                self.events.remove(&id);
            }
        }
    }

    fn remove(&mut self, slot: u64) {
        self.unplace(slot);
        let Some(e) = self.entries.remove(&slot) else {
            return;
        };
        self.by_time.remove(&(e.cand.at_us, slot));
        if e.cand.caller != 0 {
            unbucket(&mut self.by_caller, e.cand.caller, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn id(seq: u64) -> OrderNumber {
        let day = NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
        OrderNumber::compose(day, 1, seq)
    }

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 8, 0, 0)
            .single()
            .expect("time")
            + Duration::hours(hours)
    }

    fn facts(caller: &str, text: &str, at: DateTime<Utc>) -> OrderFacts {
        OrderFacts::new(
            Some(caller),
            Some("环境保护"),
            Some("洪山区"),
            Some("关山街道"),
            text,
            at,
        )
    }

    #[test]
    fn same_caller_same_matter_is_a_duplicate() {
        let mut index = RelatedIndex::default();
        index.insert(
            id(1),
            facts("13800138000", "小区旁边工地夜间施工噪音太大", t(0)),
        );
        let found = index.insert(
            id(2),
            facts("+86 138-0013-8000", "小区旁工地夜间施工噪音太大了", t(2)),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].relation, Relation::Duplicate);
        assert_eq!(found[0].order_id, id(1));
        let reason = &found[0].reason;
        assert!(reason.contains("138****8000"), "{reason}");
        assert!(reason.contains("2 h ago"), "{reason}");
        assert!(!reason.contains("13800138000"), "{reason}");
        // Outside the window, or about something else: not a duplicate.
        let late = index.insert(
            id(3),
            facts("13800138000", "小区旁边工地夜间施工噪音太大", t(80)),
        );
        assert!(late.is_empty(), "{late:?}");
        let other = index.insert(id(4), facts("13800138000", "社保卡丢了怎么补办", t(81)));
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn channel_identities_are_scoped_and_masked() {
        let mut index = RelatedIndex::default();
        let f = |caller: &str, at| {
            OrderFacts::new(Some(caller), None, None, None, "路灯坏了一个星期", at)
        };
        index.insert(id(1), f("wechat:oAbCdEfGhIjK123456", t(0)));
        let found = index.insert(id(2), f("wechat:oAbCdEfGhIjK123456", t(1)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].reason.contains("wechat user oAbC***"),
            "{}",
            found[0].reason
        );
        assert!(!found[0].reason.contains("oAbCdEf"), "{}", found[0].reason);
        // A digit-heavy identity is not taken for a phone number.
        assert!(index.insert(id(3), f("wechat:1234567890", t(1))).is_empty());
        assert!(index.insert(id(4), f("app:1234567890", t(1))).is_empty());
    }

    #[test]
    fn many_callers_one_place_is_one_event() {
        let mut index = RelatedIndex::default();
        assert!(
            index
                .insert(
                    id(1),
                    facts("13800000001", "关山大道这边化工厂排出刺鼻气味", t(0))
                )
                .is_empty()
        );
        let second = index.insert(
            id(2),
            facts("13800000002", "化工厂刺鼻气味，关山这边", t(1)),
        );
        assert!(
            second.is_empty(),
            "two reports are not yet an event: {second:?}"
        );
        // The first caller again: a duplicate, and still two citizens.
        let again = index.insert(
            id(3),
            facts("13800000001", "关山大道这边化工厂排出刺鼻气味", t(2)),
        );
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].relation, Relation::Duplicate);
        let third = index.insert(
            id(4),
            facts("13800000003", "关山街道化工厂又排刺鼻气味了", t(3)),
        );
        assert!(third.iter().all(|r| r.relation == Relation::SameEvent));
        let linked: Vec<&OrderNumber> = third.iter().map(|r| &r.order_id).collect();
        // The first report, then the newest (the first caller's second order: the third caller
        // is another citizen, so it is linked too).
        assert_eq!(linked, vec![&id(1), &id(3)], "{third:?}");
        assert!(
            third[0]
                .reason
                .starts_with("3 citizens reported 环境保护 at 洪山区关山街道 within 24 h"),
            "{}",
            third[0].reason
        );
        assert!(third[0].reason.contains("3 h ago"), "{}", third[0].reason);
        assert_eq!(index.events(), 1);
        // Another place or category is another event.
        let elsewhere = OrderFacts::new(
            Some("13800000004"),
            Some("环境保护"),
            Some("江夏区"),
            Some("纸坊街道"),
            "关山街道化工厂又排刺鼻气味了",
            t(3),
        );
        assert!(index.insert(id(5), elsewhere).is_empty());
        let other_street = OrderFacts::new(
            Some("13800000005"),
            Some("环境保护"),
            Some("洪山区"),
            Some("珞南街道"),
            "化工厂又排刺鼻气味了",
            t(3),
        );
        assert!(index.insert(id(6), other_street).is_empty());
        // A fourth citizen joins the same event even though it only resembles the latest report.
        let fourth = index.insert(
            id(7),
            facts("13800000006", "关山街道化工厂刺鼻气味熏得人头疼", t(4)),
        );
        assert!(
            fourth[0].reason.starts_with("4 citizens reported"),
            "{fourth:?}"
        );
        assert_eq!(fourth[0].order_id, id(1));
        assert_eq!(index.events(), 1);
    }

    #[test]
    fn reports_leave_their_event_after_the_window() {
        let mut index = RelatedIndex::default();
        for (i, h) in [0, 1, 2].into_iter().enumerate() {
            index.insert(
                id(i as u64 + 1),
                facts(&format!("1390000000{i}"), "关山街道化工厂排刺鼻气味", t(h)),
            );
        }
        assert_eq!(index.events(), 1);
        // A day later the old reports are out of the event (but kept for duplicates).
        let late = index.insert(
            id(9),
            facts("13900000009", "关山街道化工厂排刺鼻气味", t(30)),
        );
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(index.events(), 0);
        assert_eq!(index.len(), 4);
        let dup = index.insert(
            id(10),
            facts("13900000000", "关山街道化工厂排刺鼻气味", t(31)),
        );
        assert_eq!(dup.len(), 1, "{dup:?}");
        assert_eq!(dup[0].order_id, id(1));
    }

    #[test]
    fn orders_being_committed_are_seen_and_named_once_numbered() {
        let mut index = RelatedIndex::default();
        let first = index.reserve(facts("13800138000", "楼下烧烤摊油烟扰民", t(0)));
        assert!(first.links.is_empty());
        assert!(index.is_pending(first.slot));
        let second = index.reserve(facts("13800138000", "楼下烧烤摊油烟扰民", t(0)));
        assert_eq!(second.links.len(), 1);
        assert_eq!(second.links[0].slot, first.slot);
        assert!(
            index.related(second.links.clone()).is_empty(),
            "no number to name yet"
        );
        index.confirm(first.slot, id(1));
        assert!(!index.is_pending(first.slot));
        let named = index.related(second.links.clone());
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].order_id, id(1));
        // A cancelled reservation (a replay) is forgotten.
        index.cancel(second.slot);
        assert_eq!(index.len(), 1);
        let third = index.reserve(facts("13800138000", "楼下烧烤摊油烟扰民", t(1)));
        assert_eq!(third.links.len(), 1);
        assert_eq!(third.links[0].slot, first.slot);
    }

    #[test]
    fn bounded_in_count_and_time() {
        let mut index = RelatedIndex::new(RelatedConfig {
            capacity: 2,
            ..RelatedConfig::default()
        });
        for i in 0..3 {
            index.insert(id(i + 1), facts("1", "x", t(i as i64)));
        }
        assert_eq!(index.len(), 2);
        index.insert(id(9), facts("1", "x", t(1000)));
        assert_eq!(index.len(), 1);
        assert!(index.by_caller.values().map(VecDeque::len).sum::<usize>() <= 1);
        assert!(index.by_place.values().map(VecDeque::len).sum::<usize>() <= 1);
    }

    #[test]
    fn a_crowded_place_costs_a_bounded_scan() {
        // Many dissimilar reports at one place: a new one compares with at most max_scan of
        // them, and everything stays consistent when they are evicted.
        let mut index = RelatedIndex::new(RelatedConfig {
            capacity: 1_000,
            max_scan: 16,
            ..RelatedConfig::default()
        });
        for i in 0..3_000u64 {
            let text = format!(
                "第{i}号报告{}",
                char::from_u32(0x4e00 + i as u32).unwrap_or('x')
            );
            index.insert(
                id(i + 1),
                facts(
                    &format!("138{i:08}"),
                    &text,
                    t(0) + Duration::seconds(i as i64),
                ),
            );
        }
        assert_eq!(index.len(), 1_000);
        assert_eq!(index.by_time.len(), 1_000);
        assert_eq!(index.placed.len(), 1_000);
        let members: usize = index.events.values().map(|e| e.members.len()).sum();
        assert!(members <= 1_000, "{members}");
    }

    #[test]
    fn similarity_of_texts() {
        assert_eq!(Grams::of("").similarity(&Grams::of("")), 0.0);
        assert_eq!(
            Grams::of("路灯坏了").similarity(&Grams::of("路灯坏了！")),
            1.0
        );
        assert!(Grams::of("路灯坏了").similarity(&Grams::of("井盖丢了")) < 0.1);
        // Characters beyond the BMP still compare.
        assert_eq!(Grams::of("𠀀𠀁").similarity(&Grams::of("𠀀𠀁")), 1.0);
        assert_eq!(Grams::of("a").len(), 1);
    }
}
