//! What one connection measured, merged over all connections, and how it is printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Counters and latencies of the measured requests (those started after the warm-up).
#[derive(Debug)]
pub struct Stats {
    pub sent: u64,
    pub accepted: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Connection errors and timeouts.
    pub errors: u64,
    /// 202s during the warm-up (not in the figures, but their orders exist).
    pub warmup_accepted: u64,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// The most recently acknowledged order and when its answer came.
    pub last_acked: Option<(Instant, String)>,
    /// A sample of acknowledged orders to read back.
    pub sample: Vec<String>,
    /// One refused answer, to show what went wrong.
    pub first_refusal: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: 0,
            accepted: 0,
            by_status: BTreeMap::new(),
            errors: 0,
            warmup_accepted: 0,
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            last_acked: None,
            sample: Vec::new(),
            first_refusal: None,
        }
    }
}

impl Stats {
    pub fn record_latency(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 120_000_000);
        let _ = self.latency.record(us);
    }

    pub fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.errors += other.errors;
        self.warmup_accepted += other.warmup_accepted;
        for (s, n) in other.by_status {
            *self.by_status.entry(s).or_default() += n;
        }
        let _ = self.latency.add(&other.latency);
        if other.last_acked.as_ref().map(|l| l.0) > self.last_acked.as_ref().map(|l| l.0) {
            self.last_acked = other.last_acked;
        }
        self.sample.extend(other.sample);
        if self.first_refusal.is_none() {
            self.first_refusal = other.first_refusal;
        }
    }

    pub fn refused(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// CPU seconds spent during the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub gateway: Option<Duration>,
    pub generator: Option<Duration>,
}

pub fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

/// The full report, then one summary line for the README.
pub fn print(stats: &Stats, window: Duration, connections: usize, cpu: CpuSplit) -> String {
    let secs = window.as_secs_f64().max(1e-9);
    let rate = stats.accepted as f64 / secs;
    let h = &stats.latency;
    println!("measured window    {secs:.2} s over {connections} connections");
    println!("requests sent      {}", stats.sent);
    println!("202 accepted       {}", stats.accepted);
    println!(
        "non-202            {} {:?}",
        stats.refused(),
        stats.by_status
    );
    println!("connection errors  {}", stats.errors);
    if let Some(r) = &stats.first_refusal {
        println!("first refusal      {r}");
    }
    println!("durable submits/s  {rate:.0}");
    println!(
        "latency            p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / (stats.sent.max(1) as f64);
    let mut cpu_line = String::new();
    for (name, short, used) in [
        ("gateway", "gw", cpu.gateway),
        ("generator", "gen", cpu.generator),
    ] {
        let Some(g) = used else { continue };
        let share = 100.0 * g.as_secs_f64() / secs;
        println!(
            "{:<19}{:.2} s = {share:.0}% of one core, {:.1} us/request",
            format!("{name} CPU"),
            g.as_secs_f64(),
            per_req(g)
        );
        cpu_line.push_str(&format!(" {short}_cpu={share:.0}%/{:.1}us", per_req(g)));
    }
    format!(
        "conns={connections} window={secs:.1}s sent={} 202={} non202={} errors={} rate={rate:.0}/s p50={} p90={} p99={} max={}{cpu_line}",
        stats.sent,
        stats.accepted,
        stats.refused(),
        stats.errors,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}
