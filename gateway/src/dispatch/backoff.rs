//! Retry policy for deliveries: what is retried, and when.
//!
//! Capped exponential backoff with jitter: attempt n waits between half and all of
//! `min(max, initial * 2^n)`. The jitter spreads retries so that a backend coming back after an
//! outage is not hit by the whole backlog in the same second.

use std::time::Duration;

/// What a delivery attempt's result means for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry(String),
    Dead(String),
}

/// Classify an HTTP status from the dispatch backend (contract: 2xx delivered; 408, 429, 5xx
/// retried; any other status is permanent and goes to dead letters).
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry(format!("dispatch answered {status}")),
        other => Verdict::Dead(format!("dispatch answered {other}")),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before the next attempt after `attempts` failed ones; `unit` in [0, 1) is the
    /// random draw (passed in so the policy stays deterministic under test).
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempts.min(31)))
            .min(self.max);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(classify_status(200), Verdict::Delivered);
        assert_eq!(classify_status(204), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify_status(s), Verdict::Retry(_)), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 409, 422] {
            assert!(matches!(classify_status(s), Verdict::Dead(_)), "{s}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(250));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(20, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(30));
    }
}
