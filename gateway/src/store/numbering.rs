//! Order-number sequences, per node and local day.
//!
//! The writer of a node is the only one that issues numbers for it, so the next sequence lives in
//! memory; the highest number used is written to the `counters` table in the same transaction as
//! the orders that used it, so a restart (or crash) continues after the last committed number.
//! Numbers handed out by a transaction that then failed are skipped, never reused.

use std::collections::HashMap;

use adapters::OrderNumber;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

#[derive(Debug)]
pub struct Numbering {
    node: u8,
    offset: FixedOffset,
    /// Next sequence per day, for days seen since start.
    next: HashMap<NaiveDate, u64>,
    /// Highest sequence used per day in the transaction being built.
    used: HashMap<NaiveDate, u64>,
}

impl Numbering {
    pub fn new(node: u8, offset: FixedOffset) -> Self {
        Numbering {
            node,
            offset,
            next: HashMap::new(),
            used: HashMap::new(),
        }
    }

    pub fn node(&self) -> u8 {
        self.node
    }

    pub fn day_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.offset).date_naive()
    }

    /// The number for an order received at `at`. `last_committed` is asked once per day for the
    /// highest sequence already stored.
    pub fn issue<E>(
        &mut self,
        at: DateTime<Utc>,
        last_committed: impl FnOnce(NaiveDate) -> Result<u64, E>,
    ) -> Result<OrderNumber, E> {
        let day = self.day_of(at);
        let next = match self.next.get_mut(&day) {
            Some(n) => n,
            None => {
                let last = last_committed(day)?;
                // Forget days long past so a node that runs for months keeps a small map.
                self.next.retain(|d, _| (day - *d).num_days().abs() <= 2);
                self.next.entry(day).or_insert(last + 1)
            }
        };
        let seq = *next;
        *next += 1;
        self.used.insert(day, seq);
        Ok(OrderNumber::compose(day, self.node, seq))
    }

    /// The day of `at` when its counter has not been loaded yet (async back ends load it first,
    /// then [`seed`](Self::seed) it).
    pub fn unseeded_day(&self, at: DateTime<Utc>) -> Option<NaiveDate> {
        let day = self.day_of(at);
        (!self.next.contains_key(&day)).then_some(day)
    }

    pub fn seed(&mut self, day: NaiveDate, last_committed: u64) {
        self.next.entry(day).or_insert(last_committed + 1);
    }

    /// The counters to persist with the current transaction, clearing them.
    pub fn take_used(&mut self) -> Vec<(NaiveDate, u64)> {
        self.used.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_after_the_last_committed_number_and_rolls_over_days() {
        let mut n = Numbering::new(3, FixedOffset::east_opt(8 * 3600).expect("offset"));
        // 2026-11-23 15:59 UTC is 23:59 in UTC+8; one minute later is the next local day.
        let t = DateTime::parse_from_rfc3339("2026-11-23T15:59:00Z")
            .expect("t")
            .to_utc();
        let a = n.issue(t, |_| Ok::<_, ()>(41)).expect("a");
        let b = n
            .issue(t, |_| -> Result<u64, ()> { panic!("cached") })
            .expect("b");
        assert_eq!((a.sequence(), b.sequence()), (42, 43));
        assert!(a.as_str().starts_with("26112303"));
        let c = n
            .issue(t + chrono::Duration::minutes(1), |_| Ok::<_, ()>(0))
            .expect("c");
        assert!(c.as_str().starts_with("26112403"), "{c}");
        assert_eq!(c.sequence(), 1);
        let mut used = n.take_used();
        used.sort();
        assert_eq!(used.len(), 2);
        assert_eq!(used[0].1, 43);
        assert!(n.take_used().is_empty());
    }
}
