//! `call-load`: many concurrent SIP calls over loopback that listen to the gateway's RTP and send
//! RFC 4733 digits, reporting calls held, call setups per second, late and lost packets and CPU.
//!
//! ```text
//! call-load --spawn target/release/gateway --calls 2000 --rate 500 --hold 30
//! call-load --target 127.0.0.1:5060 --calls 200 --rate 50 --hold 10 --digits 1 --dtmf-after 3
//! call-load --spawn target/release/gateway --gateway-config benches/queue-load.toml \
//!     --calls 1500 --rate 100 --hold 60 --digits 1 --digits-every 3 --dtmf-after 2
//! ```
//!
//! The last is the queue load of issue #14: with the flows of `benches/flows/queue-load` (named
//! by `benches/queue-load.toml`), every third call keys 1 into an IVR loop of prompts and the
//! other two thirds wait in queue `hotline` (hold music, announcements) for an agent who never
//! answers.
//!
//! Why our own generator rather than SIPp (which the SIP tests use for correctness): the goal is
//! 2,000 concurrent calls on a 2-core machine with every outgoing packet of the gateway within
//! 5 ms of its schedule, and SIPp cannot tell us that. SIPp plays RTP from pcap files with a
//! sending thread per playback (or `rtp_stream` threads of a few dozen streams each), so thousands
//! of streams mean hundreds to thousands of threads that would take the cores away from the
//! gateway being measured; it has no measure of the timing of the RTP it receives (`-rtp_echo`
//! only reflects it); and RFC 4733 digits would be pre-recorded pcap files with fixed timestamps.
//!
//! This generator runs on one thread (so the gateway keeps the other core): one UDP socket for
//! all signalling, demultiplexed by Call-ID; one RTP socket per call, not watched by epoll; a
//! single 1 ms pacer that sends every call's 20 ms frame and reads its socket every 100 ms; and
//! the lateness of every packet the gateway sends, measured from the kernel's arrival stamp
//! (`SO_TIMESTAMPNS`) against the packet's RTP timestamp, so the generator's own scheduling
//! delays do not count against the gateway. Lateness, loss and re-anchoring are defined on
//! `benches::call::rtp::Receiver`; the run's structure is in `benches::call::driver`.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use benches::call::{driver, net, report, rtp, spawn};
use benches::load::cpu;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "call-load",
    about = "SIP/RTP call load generator: concurrent IVR calls with DTMF, RTP lateness and loss"
)]
struct Args {
    /// The gateway's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// Request-URI to call (default sip:12345@TARGET).
    #[arg(long)]
    uri: Option<String>,
    /// Our address for SIP, SDP and RTP.
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// Our SIP port (0: any free port).
    #[arg(long, default_value_t = 0)]
    sip_port: u16,
    /// Calls to place in total.
    #[arg(long, short = 'n', default_value_t = 100)]
    calls: u64,
    /// Most calls up at once (default: --calls).
    #[arg(long, short)]
    concurrent: Option<usize>,
    /// New calls per second.
    #[arg(long, short, default_value_t = 100.0)]
    rate: f64,
    /// Seconds each call stays up after the 200 before we send BYE.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// DTMF keys to send as RFC 4733 events ("" for none).
    #[arg(long, default_value = "1")]
    digits: String,
    /// Only every K-th call sends --digits (calls 0, K, 2K, ...); the others key nothing, so a
    /// flow can send them another way (`--digits-every 3`: a third in an IVR loop, two thirds
    /// to a queue). 1: every call.
    #[arg(long, default_value_t = 1)]
    digits_every: u64,
    /// Seconds after the 200 when the digits start.
    #[arg(long, default_value_t = 3.0)]
    dtmf_after: f64,
    /// Length of each digit in ms (a multiple of 20), followed by 3 end packets.
    #[arg(long, default_value_t = 100)]
    digit_ms: u32,
    /// Silence between digits in ms.
    #[arg(long, default_value_t = 100)]
    digit_gap_ms: u32,
    /// telephone-event payload type to send digits with when the answer has none (peers like
    /// SIPp's built-in UAS); by default no digits are sent then.
    #[arg(long)]
    event_pt: Option<u8>,
    /// First of our RTP ports: call k uses an even port from BASE up (RTCP on the odd one above
    /// it); 0 for any free port and no RTCP socket.
    #[arg(long, default_value_t = 30000)]
    rtp_ports: u16,
    /// Seconds an INVITE or BYE may go unanswered (RFC 3261 Timer B / F).
    #[arg(long, default_value_t = 32.0)]
    timeout: f64,
    /// A received packet later than this (ms) counts as late.
    #[arg(long, default_value_t = 5.0)]
    late_ms: f64,
    /// A jump between RTP timestamp and arrival bigger than this (ms) starts a new lateness
    /// reference instead of counting as lateness.
    #[arg(long, default_value_t = 1000.0)]
    reanchor_ms: f64,
    /// Do not connect() RTP sockets to the answer's address: receive RTP from anywhere, at about
    /// a sixth more generator CPU.
    #[arg(long)]
    no_connect_rtp: bool,
    /// How often each call's RTP socket is read, in ms (lateness uses the kernel's arrival
    /// stamp, so this only trades system calls for socket buffer).
    #[arg(long, default_value_t = 100)]
    read_every_ms: u32,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
    /// Hard limit on the whole run in seconds (default: enough for every call and its timeouts).
    #[arg(long)]
    max_time: Option<f64>,
    /// Start this gateway binary on free loopback ports in a temporary data dir (ignores
    /// --target).
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// RTP port range of the spawned gateway, MIN-MAX.
    #[arg(long, default_value = "40000-59999")]
    gateway_rtp_ports: String,
    /// calls.max_calls of the spawned gateway (default: --concurrent + 100).
    #[arg(long)]
    gateway_max_calls: Option<usize>,
    /// Config file of the spawned gateway (`gateway run --config FILE`, e.g. queues); the
    /// settings --spawn makes (ports, data dir, max_calls, log level) and --gateway-env win.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// IVR flows directory of the spawned gateway (`ivr.flows_dir`), e.g.
    /// benches/flows/queue-load.
    #[arg(long)]
    flows_dir: Option<PathBuf>,
    /// More environment for the spawned gateway, KEY=VALUE (repeatable), e.g.
    /// GATEWAY__LOG__LEVEL=info.
    #[arg(long)]
    gateway_env: Vec<String>,
    /// A series of the spawned gateway's /metrics to watch, e.g.
    /// 'gateway_queue_waiting{queue="hotline"}' (repeatable): read every second, its peak and
    /// when it was reached are printed at the end; the first one's peak is `metric_peak=` in the
    /// SUMMARY.
    #[arg(long)]
    gateway_metric: Vec<String>,
    /// PID of a gateway started elsewhere, to report its CPU from /proc/PID/stat.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Run the generator SCHED_FIFO at this priority (below the gateway's pacers, 10 by
    /// default), after spawning the gateway so it does not inherit it. On a machine it shares
    /// with the gateway, the generator plays the carrier, which in real life has cores of its
    /// own: starved by real-time pacers it sends late and in bursts, and its own delays show up
    /// as slow call setups.
    #[arg(long)]
    realtime: Option<u8>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.calls == 0 || args.concurrent == Some(0) {
        bail!("--calls and --concurrent must be at least 1");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if let Some(bad) = args.digits.chars().find(|c| rtp::event_code(*c).is_none()) {
        bail!("--digits: {bad:?} is not a DTMF key (0-9, *, #, A-D)");
    }
    for secs in [
        args.hold,
        args.dtmf_after,
        args.timeout,
        args.report_every,
        args.late_ms,
        args.reanchor_ms,
    ] {
        if !secs.is_finite() || secs < 0.0 {
            bail!("times must be finite and not negative");
        }
    }
    let concurrent = args.concurrent.unwrap_or(args.calls as usize).max(1);
    if args.rtp_ports != 0 && u32::from(args.rtp_ports) + 2 * concurrent as u32 > 65535 {
        bail!(
            "--rtp-ports {} leaves too few ports for {concurrent} calls",
            args.rtp_ports
        );
    }
    let nofile = net::raise_nofile().context("open-files limit")?;
    let needed = 2 * concurrent as u64 + 64;
    if nofile < needed {
        eprintln!(
            "warning: the open-files limit is {nofile}, {concurrent} calls need about {needed}"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ok = local.block_on(&runtime, run(args, concurrent))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn parse_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("expected MIN-MAX")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a >= b {
        bail!("empty port range {s}");
    }
    Ok((a, b))
}

async fn run(args: Args, concurrent: usize) -> anyhow::Result<bool> {
    let gateway = match &args.spawn {
        Some(bin) => {
            let env = args
                .gateway_env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--gateway-env {kv:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let rtp_ports = parse_range(&args.gateway_rtp_ports)?;
            // Ours: even ports from the base, twice the calls up at once, RTCP beside each.
            let ours = (
                u32::from(args.rtp_ports),
                u32::from(args.rtp_ports) + 4 * concurrent as u32,
            );
            if args.rtp_ports != 0
                && ours.0 <= u32::from(rtp_ports.1)
                && u32::from(rtp_ports.0) < ours.1
            {
                bail!(
                    "--rtp-ports {}-{} overlaps --gateway-rtp-ports {}-{}",
                    ours.0,
                    ours.1 - 1,
                    rtp_ports.0,
                    rtp_ports.1
                );
            }
            let settings = spawn::Settings {
                rtp_ports,
                max_calls: args.gateway_max_calls.unwrap_or(concurrent + 100),
                config: args.gateway_config.clone(),
                flows_dir: args.flows_dir.clone(),
                env,
            };
            let gw = spawn::Gateway::start(bin, &settings).await?;
            println!(
                "spawned gateway pid {} with SIP on {} and HTTP on {} (data in {})",
                gw.process.pid(),
                gw.sip,
                gw.http,
                gw.process.data_dir().display()
            );
            Some(gw)
        }
        None => None,
    };
    if let Some(priority) = args.realtime {
        realtime(priority)?;
    }
    let target = gateway.as_ref().map_or(args.target, |g| g.sip);
    let timeout = Duration::from_secs_f64(args.timeout);
    let hold = Duration::from_secs_f64(args.hold);
    let max_time = match args.max_time {
        Some(t) => Duration::from_secs_f64(t),
        None => {
            let waves = args.calls.div_ceil(concurrent as u64) as f64;
            Duration::from_secs_f64(
                args.calls as f64 / args.rate
                    + waves * (args.hold + 2.0 * args.timeout + 1.0)
                    + 30.0,
            )
        }
    };
    let plan = driver::Plan {
        target,
        uri: args.uri.clone().unwrap_or(format!("sip:12345@{target}")),
        local_ip: args.local_ip,
        sip_port: args.sip_port,
        calls: args.calls,
        concurrent,
        rate: args.rate,
        hold,
        dtmf_after: Duration::from_secs_f64(args.dtmf_after),
        digits: args.digits.clone(),
        digits_every: args.digits_every,
        digit_ms: args.digit_ms,
        digit_gap_ms: args.digit_gap_ms,
        event_pt: args.event_pt,
        rtp_base: args.rtp_ports,
        timeout,
        late_us: (args.late_ms * 1000.0) as u64,
        read_every: (args.read_every_ms / 20).max(1),
        connect_rtp: !args.no_connect_rtp,
        reanchor_us: (args.reanchor_ms * 1000.0) as i64,
        report_every: Duration::from_secs_f64(args.report_every.max(0.1)),
        max_time,
        run_id: format!("cl{}-{}", std::process::id(), now_millis()),
    };
    println!(
        "call-load: {} calls to {} at {}/s, at most {} at once, {:.1} s each, digits {:?} after {:.1} s{}",
        plan.calls,
        plan.uri,
        plan.rate,
        plan.concurrent,
        args.hold,
        plan.digits,
        args.dtmf_after,
        if plan.digits_every > 1 {
            format!(" on one call in {}", plan.digits_every)
        } else {
            String::new()
        }
    );
    let probe_for = if gateway.is_some() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    match driver::probe(&plan, probe_for).await? {
        Some(status) => println!("OPTIONS to {target}: {status}"),
        None => println!(
            "OPTIONS to {target}: no answer within {:.0} s (not every peer answers OPTIONS)",
            probe_for.as_secs_f64()
        ),
    }

    let gw_pid = gateway
        .as_ref()
        .map(|gw| gw.process.pid())
        .or(args.gateway_pid);
    let sample = move || {
        (
            gw_pid.and_then(|p| cpu::cpu_time(Some(p))),
            cpu::cpu_time(None),
        )
    };
    let peaks = Rc::new(RefCell::new(vec![
        (f64::NAN, 0.0);
        args.gateway_metric.len()
    ]));
    if let Some(gw) = &gateway
        && !args.gateway_metric.is_empty()
    {
        tokio::task::spawn_local(watch_metrics(
            gw.http,
            args.gateway_metric.clone(),
            peaks.clone(),
        ));
    }
    let threads_before = gw_pid.map(cpu::thread_times).unwrap_or_default();
    let before = sample();
    let outcome = driver::run(plan, sample).await?;
    let after = sample();
    let threads_after = gw_pid.map(cpu::thread_times).unwrap_or_default();
    let cpu = report::Cpu {
        gateway: after.0.zip(before.0).map(|(e, s)| e.saturating_sub(s)),
        generator: after.1.zip(before.1).map(|(e, s)| e.saturating_sub(s)),
    };
    let s = &outcome.stats;
    let mut summary = report::print(s, outcome.window, args.late_ms, cpu);
    for (k, (name, (peak, at))) in args
        .gateway_metric
        .iter()
        .zip(peaks.borrow().iter())
        .enumerate()
    {
        println!("gateway metric     {name}: peak {peak} at {at:.0} s");
        if k == 0 {
            summary.push_str(&format!(" metric_peak={peak}"));
        }
    }
    let threads = cpu::thread_delta(&threads_before, &threads_after);
    if !threads.is_empty() {
        let secs = outcome.window.as_secs_f64().max(1e-9);
        let split: Vec<String> = threads
            .iter()
            .filter(|(_, t)| !t.is_zero())
            .map(|(name, t)| format!("{name} {:.0}%", 100.0 * t.as_secs_f64() / secs))
            .collect();
        if !split.is_empty() {
            println!("gateway threads    {} (of one core)", split.join(", "));
        }
    }
    if outcome.cut_short {
        println!("stopped at --max-time {:.0} s", max_time.as_secs_f64());
    }
    if let Some(gw) = gateway {
        println!("{}", gw.process.stop(Duration::from_secs(20))?);
    }
    println!("\nSUMMARY {summary}");
    let ok = s.answered == s.attempted && s.attempted == args.calls && !outcome.cut_short;
    if !ok {
        eprintln!("call-load: {} of {} calls answered", s.answered, args.calls);
    }
    Ok(ok)
}

/// Every second, read the gateway's /metrics and keep each series' peak and when (seconds from
/// the start of the watch) it was first reached.
async fn watch_metrics(http: SocketAddr, series: Vec<String>, peaks: Rc<RefCell<Vec<(f64, f64)>>>) {
    let start = std::time::Instant::now();
    let request = benches::load::http::get(&http.to_string(), "", "/metrics");
    let mut conn = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if conn.is_none() {
            conn = benches::load::http::Conn::connect(http).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let Ok(r) = c.send(&request).await else {
            conn = None;
            continue;
        };
        let text = String::from_utf8_lossy(r.body);
        let at = start.elapsed().as_secs_f64();
        for (name, peak) in series.iter().zip(peaks.borrow_mut().iter_mut()) {
            if let Some(v) = metric_value(&text, name)
                && (peak.0.is_nan() || v > peak.0)
            {
                *peak = (v, at);
            }
        }
    }
}

/// The value of `series` (a name with its labels as the exposition writes them) in Prometheus
/// text.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Run the calling thread (the generator's only busy one) SCHED_FIFO at `priority`.
fn realtime(priority: u8) -> anyhow::Result<()> {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let value = ThreadPriorityValue::try_from(priority.clamp(1, 99))
        .map_err(|e| anyhow::anyhow!("--realtime {priority}: {e}"))?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| anyhow::anyhow!("--realtime {priority}: cannot run SCHED_FIFO: {e:?}"))?;
    println!("generator runs SCHED_FIFO at priority {priority}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn a_series_is_read_with_its_labels() {
        let text = "# TYPE gateway_queue_waiting gauge\n\
                    gateway_queue_waiting{queue=\"general\"} 3\n\
                    gateway_queue_waiting{queue=\"hotline\"} 1000\n\
                    gateway_calls_active 1500\n";
        assert_eq!(
            metric_value(text, "gateway_queue_waiting{queue=\"hotline\"}"),
            Some(1000.0)
        );
        assert_eq!(metric_value(text, "gateway_calls_active"), Some(1500.0));
        assert_eq!(metric_value(text, "gateway_calls"), None);
    }
}
