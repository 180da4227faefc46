//! The call load's counters and histograms, the progress line and the final report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 us to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 600_000_000));
}

/// Everything the run counts. One instance, updated by every call of the one generator thread.
#[derive(Debug)]
pub struct Stats {
    pub attempted: u64,
    pub answered: u64,
    /// Failed calls by reason: a SIP status (`486`), `timeout`, `rtp-bind`, an SDP problem.
    pub failed: BTreeMap<String, u64>,
    /// Calls between INVITE and the end of their BYE.
    pub in_progress: u64,
    /// Answered calls with media running.
    pub held: u64,
    pub peak_held: u64,
    pub invite_retransmits: u64,
    /// INVITE → 200 latency, us.
    pub setup: Histogram<u64>,
    pub first_invite: Option<Instant>,
    pub last_answer: Option<Instant>,
    /// Answers per whole second since the start.
    pub answers_by_second: Vec<u32>,
    /// Calls the gateway hung up with BYE.
    pub bye_by_gateway: u64,
    pub bye_sent: u64,
    pub bye_ok: u64,
    pub bye_failed: u64,
    /// Requests the gateway sent us, by method.
    pub requests_in: BTreeMap<String, u64>,
    pub digits_sent: u64,
    /// Calls whose answer had no telephone-event, so no digits were sent.
    pub dtmf_skipped: u64,

    pub rtp_sent: u64,
    pub rtp_send_errors: u64,
    /// How late the generator's pacer sent, us.
    pub send_lag: Histogram<u64>,
    pub rtp_received: u64,
    /// Audio packets whose lateness was measured.
    pub measured: u64,
    pub late: u64,
    /// Lateness of measured packets, us.
    pub lateness: Histogram<u64>,
    pub events_received: u64,
    pub anchors: u64,
    pub reanchors: u64,
    pub lost: u64,
    /// Answered calls that received no RTP at all.
    pub silent_calls: u64,
    /// Datagrams on RTP ports that were not RTP.
    pub not_rtp: u64,
    /// Time from the kernel's arrival stamp to the generator reading the packet, us.
    pub read_lag: Histogram<u64>,
    pub unstamped: u64,
    /// SIP datagrams that did not parse or matched no call.
    pub sip_garbage: u64,
    pub sip_unmatched: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            attempted: 0,
            answered: 0,
            failed: BTreeMap::new(),
            in_progress: 0,
            held: 0,
            peak_held: 0,
            invite_retransmits: 0,
            setup: histogram(),
            first_invite: None,
            last_answer: None,
            answers_by_second: Vec::new(),
            bye_by_gateway: 0,
            bye_sent: 0,
            bye_ok: 0,
            bye_failed: 0,
            requests_in: BTreeMap::new(),
            digits_sent: 0,
            dtmf_skipped: 0,
            rtp_sent: 0,
            rtp_send_errors: 0,
            send_lag: histogram(),
            rtp_received: 0,
            measured: 0,
            late: 0,
            lateness: histogram(),
            events_received: 0,
            anchors: 0,
            reanchors: 0,
            lost: 0,
            silent_calls: 0,
            not_rtp: 0,
            read_lag: histogram(),
            unstamped: 0,
            sip_garbage: 0,
            sip_unmatched: 0,
        }
    }
}

impl Stats {
    pub fn fail(&mut self, reason: impl Into<String>) {
        *self.failed.entry(reason.into()).or_default() += 1;
    }

    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn answered_at(&mut self, start: Instant, now: Instant, setup: Duration) {
        self.answered += 1;
        self.last_answer = Some(now);
        record(&mut self.setup, setup.as_micros() as u64);
        let sec = now.saturating_duration_since(start).as_secs() as usize;
        if self.answers_by_second.len() <= sec {
            self.answers_by_second.resize(sec + 1, 0);
        }
        self.answers_by_second[sec] += 1;
        self.held += 1;
        self.peak_held = self.peak_held.max(self.held);
    }

    pub fn lateness(&mut self, late_us: u64, threshold_us: u64) {
        self.measured += 1;
        if late_us > threshold_us {
            self.late += 1;
        }
        record(&mut self.lateness, late_us);
    }

    pub fn send_lag(&mut self, us: u64) {
        record(&mut self.send_lag, us);
    }

    pub fn read_lag(&mut self, us: u64) {
        record(&mut self.read_lag, us);
    }

    /// Answered calls per second from the first INVITE to the last 200.
    pub fn setup_rate(&self) -> f64 {
        match (self.first_invite, self.last_answer) {
            (Some(a), Some(b)) if b > a && self.answered > 1 => {
                self.answered as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The most answers in one whole second.
    pub fn peak_setup_second(&self) -> u32 {
        self.answers_by_second.iter().copied().max().unwrap_or(0)
    }

    fn late_pct(&self) -> f64 {
        100.0 * self.late as f64 / self.measured.max(1) as f64
    }
}

/// A snapshot for the progress line: counters at the previous line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    pub at: Option<Instant>,
    pub answered: u64,
    pub received: u64,
    pub gateway_cpu: Option<Duration>,
    pub own_cpu: Option<Duration>,
}

pub fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn pct(cpu: Option<Duration>, before: Option<Duration>, secs: f64) -> String {
    match (cpu, before) {
        (Some(c), Some(b)) => format!("{:.0}%", 100.0 * c.saturating_sub(b).as_secs_f64() / secs),
        _ => "-".to_owned(),
    }
}

/// One progress line; returns the mark for the next one.
pub fn progress(
    s: &Stats,
    start: Instant,
    now: Instant,
    last: Mark,
    gateway_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
) -> Mark {
    let since = last.at.unwrap_or(start);
    let secs = (now - since).as_secs_f64().max(1e-9);
    println!(
        "[{:6.1}s] calls {} sent {} answered {} failed, held {} (peak {}), {:.0} setups/s | rtp in {:.0}/s, late {} ({:.3}%), max {}, lost {} | CPU gateway {} generator {}",
        (now - start).as_secs_f64(),
        s.attempted,
        s.answered,
        s.failures(),
        s.held,
        s.peak_held,
        (s.answered - last.answered) as f64 / secs,
        (s.rtp_received - last.received) as f64 / secs,
        s.late,
        s.late_pct(),
        ms(s.lateness.max()),
        s.lost,
        pct(gateway_cpu, last.gateway_cpu, secs),
        pct(own_cpu, last.own_cpu, secs),
    );
    Mark {
        at: Some(now),
        answered: s.answered,
        received: s.rtp_received,
        gateway_cpu,
        own_cpu,
    }
}

/// CPU time over the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub gateway: Option<Duration>,
    pub generator: Option<Duration>,
}

/// The full report; returns the one-line summary.
pub fn print(s: &Stats, window: Duration, late_ms: f64, cpu: Cpu) -> String {
    let secs = window.as_secs_f64().max(1e-9);
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    println!("\nrun                {secs:.1} s");
    println!(
        "calls              {} attempted, {} answered, {} failed {:?}",
        s.attempted,
        s.answered,
        s.failures(),
        s.failed
    );
    if s.in_progress > 0 {
        println!(
            "unfinished         {} calls still open at the end",
            s.in_progress
        );
    }
    println!("concurrent held    peak {}", s.peak_held);
    println!(
        "call setups        {:.1}/s from first INVITE to last 200, best second {}/s; INVITE->200 p50 {} p99 {} max {}; {} INVITE retransmissions",
        s.setup_rate(),
        s.peak_setup_second(),
        q(&s.setup, 0.5),
        q(&s.setup, 0.99),
        ms(s.setup.max()),
        s.invite_retransmits
    );
    println!(
        "hang-ups           {} BYE sent ({} answered 200, {} failed), {} BYE from the gateway",
        s.bye_sent, s.bye_ok, s.bye_failed, s.bye_by_gateway
    );
    if !s.requests_in.is_empty() {
        println!("requests from peer {:?}", s.requests_in);
    }
    println!(
        "DTMF               {} digits sent as RFC 4733 events; {} calls without telephone-event in the answer",
        s.digits_sent, s.dtmf_skipped
    );
    println!(
        "RTP sent           {} packets ({} send errors); pacer lag p99 {} max {}",
        s.rtp_sent,
        s.rtp_send_errors,
        q(&s.send_lag, 0.99),
        ms(s.send_lag.max())
    );
    if (s.send_lag.value_at_quantile(0.99) as f64) > late_ms * 1000.0 {
        println!(
            "warning            the generator itself ran late (pacer lag p99 {} > {late_ms} ms): it was short of CPU and sent its frames late, in bursts (against an echoing peer that lateness is measured too)",
            q(&s.send_lag, 0.99)
        );
    }
    println!(
        "RTP received       {} packets: {} audio measured, {} stream/talkspurt starts ({} re-anchors), {} events; {} non-RTP datagrams",
        s.rtp_received, s.measured, s.anchors, s.reanchors, s.events_received, s.not_rtp
    );
    println!(
        "late > {late_ms} ms       {} ({:.4}% of measured)",
        s.late,
        s.late_pct()
    );
    println!(
        "lateness           p50 {} p99 {} p99.9 {} max {}",
        q(&s.lateness, 0.5),
        q(&s.lateness, 0.99),
        q(&s.lateness, 0.999),
        ms(s.lateness.max())
    );
    println!("lost (seq gaps)    {}", s.lost);
    if s.silent_calls > 0 {
        println!(
            "silent calls       {} answered calls received no RTP at all (a peer that sends RTP from another address than its SDP's needs --no-connect-rtp)",
            s.silent_calls
        );
    }
    if !s.read_lag.is_empty() {
        println!(
            "generator read     p50 {} p99 {} max {} after arrival (sockets are read every --read-every-ms; lateness uses the kernel's arrival stamp)",
            q(&s.read_lag, 0.5),
            q(&s.read_lag, 0.99),
            ms(s.read_lag.max())
        );
    }
    if s.unstamped > 0 {
        println!(
            "unstamped          {} packets had no kernel arrival stamp: their lateness includes the generator's read delay",
            s.unstamped
        );
    }
    if s.sip_garbage + s.sip_unmatched > 0 {
        println!(
            "SIP ignored        {} malformed, {} for no call of ours",
            s.sip_garbage, s.sip_unmatched
        );
    }
    let mut cpu_line = String::new();
    for (name, c) in [("gateway", cpu.gateway), ("generator", cpu.generator)] {
        if let Some(c) = c {
            let p = 100.0 * c.as_secs_f64() / secs;
            println!(
                "{name:<18} CPU {:.2} s = {p:.0}% of one core",
                c.as_secs_f64()
            );
            cpu_line.push_str(&format!(" {name}_cpu={p:.0}%"));
        }
    }
    format!(
        "calls={} answered={} failed={} peak_held={} setups={:.0}/s best_s={} setup_p99={} rtp_in={} late>{late_ms}ms={} ({:.4}%) late_p99={} late_p999={} late_max={} lost={}{cpu_line}",
        s.attempted,
        s.answered,
        s.failures(),
        s.peak_held,
        s.setup_rate(),
        s.peak_setup_second(),
        q(&s.setup, 0.99),
        s.rtp_received,
        s.late,
        s.late_pct(),
        q(&s.lateness, 0.99),
        q(&s.lateness, 0.999),
        ms(s.lateness.max()),
        s.lost,
    )
}
