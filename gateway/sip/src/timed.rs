//! A map of transactions indexed by their next timer, so the endpoint finds what is due without
//! looking at every transaction.
//!
//! Why: a transaction outlives its call by up to 32 s (Timer J/L/M on UDP), so at 500 call
//! setups a second the endpoint holds tens of thousands of them. Scanning all of them for the
//! earliest timer after every datagram (and again on every timer) made signalling quadratic in
//! the setup rate: at 500 calls/s with 3 s calls it was the top user-space cost of the gateway's
//! SIP task and INVITEs went unanswered long enough to be retransmitted.
//!
//! The index is a min-heap of (deadline, key) with lazy deletion: every mutation goes through
//! [`Timed::insert`] or [`Timed::get_mut`], which note the key; noted keys are (re)indexed at
//! their new deadline before the next look at the heap, and a heap entry whose deadline no
//! longer matches its transaction's is dropped when it surfaces. Terminated transactions are
//! removed when they are (re)indexed. Reading goes through `Deref` to the map; there is no
//! `DerefMut`, so a mutation that bypasses the index does not compile.
//!
//! Hand-written: a timer wheel crate would need its own handles kept per transaction, and the
//! transactions' deadlines are already computed by their state machines.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Deref;
use std::time::Instant;

/// What the index needs from a transaction entry.
pub(crate) trait Timer {
    /// The next instant its `handle_timeout` must run, if any.
    fn deadline(&self) -> Option<Instant>;
    /// Finished: it can be forgotten.
    fn terminated(&self) -> bool;
}

/// Transactions by key, indexed by deadline. See the module docs.
#[derive(Debug)]
pub(crate) struct Timed<V> {
    map: HashMap<String, V>,
    heap: BinaryHeap<Reverse<(Instant, String)>>,
    touched: Vec<String>,
}

impl<V> Default for Timed<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            heap: BinaryHeap::new(),
            touched: Vec::new(),
        }
    }
}

impl<V> Deref for Timed<V> {
    type Target = HashMap<String, V>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<V: Timer> Timed<V> {
    pub(crate) fn insert(&mut self, key: String, value: V) {
        self.touched.push(key.clone());
        self.map.insert(key, value);
    }

    /// Mutable access; the entry is re-indexed afterwards.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let entry = self.map.get_mut(key)?;
        self.touched.push(key.to_owned());
        Some(entry)
    }

    /// Index what was touched since the last look: at its deadline, or gone when terminated.
    fn reindex(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            match self.map.get(&key) {
                Some(v) if v.terminated() => {
                    self.map.remove(&key);
                }
                Some(v) => {
                    if let Some(t) = v.deadline() {
                        self.heap.push(Reverse((t, key)));
                    }
                }
                None => {}
            }
        }
    }

    /// Whether the heap entry (`t`, `key`) still stands for its transaction's deadline.
    fn current(&self, t: Instant, key: &str) -> bool {
        self.map.get(key).and_then(V::deadline) == Some(t)
    }

    /// The earliest deadline of any transaction.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.reindex();
        while let Some(Reverse((t, key))) = self.heap.peek() {
            if self.current(*t, key) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// Keys of the transactions due at `now`, each once. The caller runs their timers through
    /// [`Timed::get_mut`], which re-indexes them at their next deadlines.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        self.reindex();
        let mut keys: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(Reverse((t, key))) = self.heap.peek() {
            if *t > now {
                break;
            }
            let (t, key) = (*t, key.clone());
            self.heap.pop();
            if self.current(t, &key) && seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        keys
    }

    /// Entries in the index, stale ones included.
    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug)]
    struct Tx {
        at: Option<Instant>,
        done: bool,
    }

    impl Timer for Tx {
        fn deadline(&self) -> Option<Instant> {
            self.at
        }
        fn terminated(&self) -> bool {
            self.done
        }
    }

    #[test]
    fn finds_the_earliest_deadline_and_follows_changes() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = Timed::default();
        assert_eq!(m.next_deadline(), None);
        m.insert(
            "a".into(),
            Tx {
                at: Some(ms(500)),
                done: false,
            },
        );
        m.insert(
            "b".into(),
            Tx {
                at: Some(ms(100)),
                done: false,
            },
        );
        m.insert(
            "c".into(),
            Tx {
                at: None,
                done: false,
            },
        );
        assert_eq!(m.next_deadline(), Some(ms(100)));

        // b moves later: its old entry is stale, the new one counts.
        if let Some(b) = m.get_mut("b") {
            b.at = Some(ms(900));
        }
        assert_eq!(m.next_deadline(), Some(ms(500)));
        // c gets a deadline before everyone.
        if let Some(c) = m.get_mut("c") {
            c.at = Some(ms(50));
        }
        assert_eq!(m.next_deadline(), Some(ms(50)));

        // Due at 600: c and a, each once, earliest first.
        assert_eq!(m.due(ms(600)), vec!["c".to_owned(), "a".to_owned()]);
        // Their timers ran: c finished, a has no more timer.
        if let Some(c) = m.get_mut("c") {
            c.done = true;
        }
        if let Some(a) = m.get_mut("a") {
            a.at = None;
        }
        assert_eq!(m.next_deadline(), Some(ms(900)));
        assert!(!m.contains_key("c"), "terminated transactions are dropped");
        assert!(m.contains_key("a"));
        assert!(m.due(ms(800)).is_empty());
        assert_eq!(m.due(ms(900)), vec!["b".to_owned()]);
    }

    #[test]
    fn many_short_lived_transactions_leave_nothing_behind() {
        let t0 = Instant::now();
        let mut m = Timed::default();
        for i in 0..10_000u64 {
            m.insert(
                format!("k{i}"),
                Tx {
                    at: Some(t0 + Duration::from_millis(i % 100)),
                    done: false,
                },
            );
        }
        let due = m.due(t0 + Duration::from_millis(100));
        assert_eq!(due.len(), 10_000);
        for k in &due {
            if let Some(tx) = m.get_mut(k) {
                tx.done = true;
            }
        }
        assert_eq!(m.next_deadline(), None);
        assert!(m.is_empty());
        assert_eq!(m.heap_len(), 0);
    }
}
