//! Related orders: the same citizen calling again, and many citizens reporting one event.
//!
//! A burst pipe brings twenty calls and an impatient citizen calls three times; dispatchers need
//! to see that at once, not discover it while handling the orders one by one. [`RelatedIndex`]
//! keeps recent orders in memory (bounded in count, pruned by time) and, for a new order, finds:
//!
//! - **duplicates**: the same caller about the same matter within [`RelatedConfig::duplicate_window`]
//!   (character-bigram Jaccard similarity of the texts at least
//!   [`RelatedConfig::duplicate_similarity`]);
//! - **same event**: other callers reporting the same category at the same place (street when both
//!   have one, else district) within [`RelatedConfig::event_window`], with similar text, once there
//!   are at least [`RelatedConfig::event_min_reports`] reports including the new one.
//!
//! It is pure (time is an argument) so the gateway can rebuild it from the store on start and
//! tests need no clock. Reasons name the caller only by a masked phone number.

use std::collections::{HashSet, VecDeque};

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
    pub event_min_reports: usize,
    /// Most orders kept; the oldest go first.
    pub capacity: usize,
    /// Most same-event links reported for one order (the most similar first).
    pub max_event_links: usize,
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
            max_event_links: 5,
        }
    }
}

/// What the index needs to know about an order.
#[derive(Debug, Clone, Copy)]
pub struct OrderFacts<'a> {
    pub order_id: &'a OrderNumber,
    /// Phone number (or another stable identity such as a WeChat openid).
    pub caller: Option<&'a str>,
    pub category: Option<&'a str>,
    pub district: Option<&'a str>,
    pub street: Option<&'a str>,
    pub text: &'a str,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Entry {
    order_id: OrderNumber,
    caller: Option<String>,
    category: Option<String>,
    district: Option<String>,
    street: Option<String>,
    bigrams: HashSet<(char, char)>,
    at: DateTime<Utc>,
}

/// Recent orders, for finding related ones.
#[derive(Debug, Clone)]
pub struct RelatedIndex {
    config: RelatedConfig,
    entries: VecDeque<Entry>,
}

/// Character bigrams of the text, ignoring whitespace and punctuation.
pub fn bigrams(text: &str) -> HashSet<(char, char)> {
    let chars: Vec<char> = text.chars().filter(|c| c.is_alphanumeric()).collect();
    match chars.as_slice() {
        [only] => HashSet::from([(*only, *only)]),
        _ => chars.windows(2).map(|w| (w[0], w[1])).collect(),
    }
}

/// Jaccard similarity of two bigram sets (0 when both are empty).
pub fn jaccard(a: &HashSet<(char, char)>, b: &HashSet<(char, char)>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

fn ago(d: Duration) -> String {
    if d < Duration::hours(1) {
        format!("{} min ago", d.num_minutes().max(0))
    } else if d < Duration::hours(48) {
        format!("{} h ago", d.num_hours())
    } else {
        format!("{} days ago", d.num_days())
    }
}

/// Identities compare by their digits when they are phone numbers (`+86 138-0013-8000`).
fn caller_key(caller: &str) -> String {
    let digits: String = caller.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 7 {
        digits
            .strip_prefix("86")
            .filter(|d| d.len() == 11)
            .unwrap_or(&digits)
            .to_owned()
    } else {
        caller.trim().to_owned()
    }
}

fn masked_caller(key: &str) -> String {
    if key.len() >= 7 && key.chars().all(|c| c.is_ascii_digit()) {
        mask_phone(key)
    } else {
        "(same identity)".to_owned()
    }
}

impl Default for RelatedIndex {
    fn default() -> Self {
        RelatedIndex::new(RelatedConfig::default())
    }
}

impl RelatedIndex {
    pub fn new(config: RelatedConfig) -> Self {
        RelatedIndex {
            config,
            entries: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Orders related to `new`, duplicates first. Does not record `new`.
    pub fn find(&self, new: &OrderFacts<'_>) -> Vec<Related> {
        let cfg = &self.config;
        let grams = bigrams(new.text);
        let caller = new.caller.map(caller_key).filter(|c| !c.is_empty());
        let topic = new.category.unwrap_or("the same matter");
        let mut duplicates = Vec::new();
        let mut events: Vec<(f64, &Entry)> = Vec::new();
        for e in &self.entries {
            let age = new.at - e.at;
            if age < Duration::zero() || &e.order_id == new.order_id {
                continue;
            }
            let same_caller = caller.is_some() && e.caller == caller;
            if same_caller && age <= cfg.duplicate_window {
                let sim = jaccard(&grams, &e.bigrams);
                if sim >= cfg.duplicate_similarity {
                    duplicates.push(Related {
                        order_id: e.order_id.clone(),
                        relation: Relation::Duplicate,
                        reason: format!(
                            "same caller {} reported {} {} (similarity {sim:.2})",
                            masked_caller(caller.as_deref().unwrap_or_default()),
                            e.category.as_deref().unwrap_or("the same matter"),
                            ago(age)
                        ),
                    });
                    continue;
                }
            }
            if same_caller || age > cfg.event_window || new.category.is_none() {
                continue;
            }
            let same_place = match (new.street, e.street.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => new.district.is_some() && new.district == e.district.as_deref(),
            };
            if same_place && e.category.as_deref() == new.category {
                let sim = jaccard(&grams, &e.bigrams);
                if sim >= cfg.event_similarity {
                    events.push((sim, e));
                }
            }
        }
        let mut out = duplicates;
        // Count distinct other callers: one citizen calling three times is not three reports.
        let mut reporters: HashSet<Option<&str>> = HashSet::new();
        let mut anonymous = 0;
        for (_, e) in &events {
            match e.caller.as_deref() {
                Some(c) => {
                    reporters.insert(Some(c));
                }
                None => anonymous += 1,
            }
        }
        let reports = reporters.len() + anonymous + 1;
        if reports >= cfg.event_min_reports {
            events.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.at.cmp(&a.1.at)));
            let place = new.street.or(new.district).unwrap_or("the same place");
            for (sim, e) in events.into_iter().take(cfg.max_event_links) {
                out.push(Related {
                    order_id: e.order_id.clone(),
                    relation: Relation::SameEvent,
                    reason: format!(
                        "{reports} reports of {topic} at {place} within {} h; this one {} \
                         (similarity {sim:.2})",
                        cfg.event_window.num_hours(),
                        ago(new.at - e.at)
                    ),
                });
            }
        }
        out
    }

    /// Record an order, dropping orders older than both windows and the oldest beyond capacity.
    pub fn insert(&mut self, new: &OrderFacts<'_>) {
        let horizon = new.at - self.config.duplicate_window.max(self.config.event_window);
        while self.entries.front().is_some_and(|e| e.at < horizon) {
            self.entries.pop_front();
        }
        while self.entries.len() >= self.config.capacity.max(1) {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            order_id: new.order_id.clone(),
            caller: new.caller.map(caller_key).filter(|c| !c.is_empty()),
            category: new.category.map(str::to_owned),
            district: new.district.map(str::to_owned),
            street: new.street.map(str::to_owned),
            bigrams: bigrams(new.text),
            at: new.at,
        });
    }

    /// [`find`](Self::find), then [`insert`](Self::insert).
    pub fn find_and_insert(&mut self, new: &OrderFacts<'_>) -> Vec<Related> {
        let found = self.find(new);
        self.insert(new);
        found
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

    fn facts<'a>(
        order_id: &'a OrderNumber,
        caller: &'a str,
        text: &'a str,
        at: DateTime<Utc>,
    ) -> OrderFacts<'a> {
        OrderFacts {
            order_id,
            caller: Some(caller),
            category: Some("环境保护"),
            district: Some("洪山区"),
            street: Some("关山街道"),
            text,
            at,
        }
    }

    #[test]
    fn same_caller_same_matter_is_a_duplicate() {
        let mut index = RelatedIndex::default();
        let (a, b, c) = (id(1), id(2), id(3));
        index.insert(&facts(
            &a,
            "13800138000",
            "小区旁边工地夜间施工噪音太大",
            t(0),
        ));
        let found = index.find(&facts(
            &b,
            "+86 138-0013-8000",
            "小区旁工地夜间施工噪音太大了",
            t(2),
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].relation, Relation::Duplicate);
        assert_eq!(found[0].order_id, a);
        assert!(
            found[0].reason.contains("138****8000"),
            "{}",
            found[0].reason
        );
        assert!(found[0].reason.contains("2 h ago"), "{}", found[0].reason);
        assert!(!found[0].reason.contains("13800138000"));
        // Outside the window, or about something else: not a duplicate.
        assert!(
            index
                .find(&facts(
                    &c,
                    "13800138000",
                    "小区旁边工地夜间施工噪音太大",
                    t(80)
                ))
                .is_empty()
        );
        assert!(
            index
                .find(&facts(&c, "13800138000", "社保卡丢了怎么补办", t(1)))
                .is_empty()
        );
    }

    #[test]
    fn many_callers_one_place_is_one_event() {
        let mut index = RelatedIndex::default();
        let ids: Vec<OrderNumber> = (1..=4).map(id).collect();
        index.insert(&facts(
            &ids[0],
            "13800000001",
            "关山大道这边化工厂排出刺鼻气味",
            t(0),
        ));
        let second = index.find_and_insert(&facts(
            &ids[1],
            "13800000002",
            "化工厂刺鼻气味，关山这边",
            t(1),
        ));
        assert!(
            second.is_empty(),
            "two reports are not yet an event: {second:?}"
        );
        let third = index.find(&facts(
            &ids[2],
            "13800000003",
            "关山街道化工厂又排刺鼻气味了",
            t(3),
        ));
        assert_eq!(third.len(), 2, "{third:?}");
        assert!(third.iter().all(|r| r.relation == Relation::SameEvent));
        assert!(
            third[0]
                .reason
                .starts_with("3 reports of 环境保护 at 关山街道"),
            "{}",
            third[0].reason
        );
        // Another place or category is another event.
        let mut elsewhere = facts(&ids[3], "13800000004", "关山街道化工厂又排刺鼻气味了", t(3));
        elsewhere.street = Some("纸坊街道");
        elsewhere.district = Some("江夏区");
        assert!(index.find(&elsewhere).is_empty());
    }

    #[test]
    fn bounded_and_pruned() {
        let mut index = RelatedIndex::new(RelatedConfig {
            capacity: 2,
            ..RelatedConfig::default()
        });
        let ids: Vec<OrderNumber> = (1..=3).map(id).collect();
        for (i, o) in ids.iter().enumerate() {
            index.insert(&facts(o, "1", "x", t(i as i64)));
        }
        assert_eq!(index.len(), 2);
        index.insert(&facts(&id(9), "1", "x", t(1000)));
        assert_eq!(index.len(), 1);
        assert_eq!(jaccard(&bigrams(""), &bigrams("")), 0.0);
    }
}
