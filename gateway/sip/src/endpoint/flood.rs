//! New calls per source address: a token bucket per address, so one address sending a flood of
//! INVITEs (a misbehaving PBX, a scanner inside the allow-list, a loop) is answered 503 with
//! Retry-After beyond its rate, while calls from every other address are still taken. Only
//! new calls count (an INVITE without a To tag); re-INVITEs, BYEs and retransmissions of a call
//! already taken pass. Time comes in as an argument, like everything in this crate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Buckets kept before full ones are forgotten, so a spray of addresses cannot grow the map
/// without bound.
const PRUNE_AT: usize = 10_000;

/// Per-address limit on new calls.
#[derive(Debug)]
pub(crate) struct CallRate {
    per_second: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl CallRate {
    /// `per_second` new calls from one address, after a burst of `burst`; `0` turns it off.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        CallRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether a new call from `ip` may be taken now (and take its token).
    pub(crate) fn admit(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let (rate, burst) = (self.per_second, self.burst);
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
        };
        if self.buckets.len() >= PRUNE_AT {
            self.buckets
                .retain(|_, (tokens, at)| refill(*tokens, *at) < burst);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        let available = refill(*tokens, *at);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate_per_address() {
        let t0 = Instant::now();
        let mut r = CallRate::new(10, 5);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!((0..8).filter(|_| r.admit(t0, a)).count(), 5);
        assert!(r.admit(t0, b), "another address has its own budget");
        // 10 a second: one more after 100 ms, none before.
        assert!(!r.admit(t0 + Duration::from_millis(50), a));
        assert!(r.admit(t0 + Duration::from_millis(160), a));
        assert!(CallRate::new(0, 0).admit(t0, a), "0 is no limit");
    }

    #[test]
    fn a_spray_of_addresses_stays_bounded() {
        let t0 = Instant::now();
        let mut r = CallRate::new(1, 1);
        for i in 0..30_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.admit(t0 + Duration::from_secs(u64::from(i)), ip);
        }
        assert!(r.buckets.len() <= PRUNE_AT, "{}", r.buckets.len());
    }
}
