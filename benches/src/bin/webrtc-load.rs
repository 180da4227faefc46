//! `webrtc-load`: many concurrent browser calls (WebRTC) over loopback, as `call-load` places
//! SIP calls: each call is a str0m full-ICE peer with its own UDP socket that fetches a call
//! token, POSTs its offer (PCMU + telephone-event) to `/v1/calls/webrtc`, completes ICE and
//! DTLS-SRTP, sends a 160-byte PCMU frame every 20 ms (and RFC 4733 digits), holds, and
//! DELETEs the call.
//!
//! ```text
//! webrtc-load --spawn target/release/gateway --calls 500 --cps 50 --hold-s 30
//! webrtc-load --url http://127.0.0.1:8080 --key-file data/api-key --gateway-pid $(pidof gateway)
//! ```
//!
//! Threads: HTTP signalling on a small pool (`--http-threads`, blocking keep-alive
//! connections: token, offer, DELETE), and the media of all calls on `--threads` pacer threads
//! (1 by default), each a 1 ms loop over its calls' non-blocking sockets as `call-load`'s pacer
//! is: a call's socket is read on its 20 ms send slot once connected (every tick while ICE and
//! DTLS are being set up), str0m's timeouts are served when due. No thread per call.
//!
//! What it measures: setups (POST of the offer → str0m's `Connected`, i.e. ICE and DTLS up),
//! setups per second, the gateway's RTP as it arrives (lateness and loss exactly as `call-load`
//! measures them, [`benches::call::rtp::Receiver`], from the kernel's arrival stamp of the
//! datagram that carried each packet), and the gateway's CPU per call-second: over the steady
//! window when every call is up (from the last setup to the first hang-up) and over the whole
//! run (first POST to last DELETE, against the sum of the calls' connected time).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::call::{net, rtp, spawn};
use benches::load::cpu;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use str0m::format::Codec as Str0mCodec;
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// The telephone-event payload type we offer (the gateway answers with the offer's numbers).
const EVENT_PT: u8 = 101;
/// PCMU.
const AUDIO_PT: u8 = 0;
const FRAME: Duration = Duration::from_millis(20);
const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Parser)]
#[command(
    name = "webrtc-load",
    about = "WebRTC call load generator: str0m browser peers, setup latency, RTP lateness and loss, gateway CPU per call-second"
)]
struct Args {
    /// The gateway's HTTP base, e.g. http://127.0.0.1:8080 (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key for POST /v1/call-tokens (with --url).
    #[arg(long, env = "WEBRTC_LOAD_KEY")]
    key: Option<String>,
    /// File holding the API key (e.g. the gateway's data/api-key).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// PID of a gateway started elsewhere, to report its CPU from /proc/PID/stat.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Calls to place.
    #[arg(long, short = 'n', default_value_t = 500)]
    calls: u64,
    /// Call setups per second, paced evenly (1/cps apart).
    #[arg(long, default_value_t = 50.0)]
    cps: f64,
    /// Seconds each call stays up after it connected before we DELETE it.
    #[arg(long, default_value_t = 30.0)]
    hold_s: f64,
    /// DTMF keys to send as RFC 4733 events ("" for none), as call-load's --digits.
    #[arg(long, default_value = "1")]
    digits: String,
    /// Seconds after the connection when the digits start.
    #[arg(long, default_value_t = 3.0)]
    dtmf_after: f64,
    /// Length of each digit in ms (a multiple of 20), followed by 3 end packets.
    #[arg(long, default_value_t = 100)]
    digit_ms: u32,
    /// Silence between digits in ms.
    #[arg(long, default_value_t = 100)]
    digit_gap_ms: u32,
    /// Our address (the offer's host candidate).
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// First UDP port of our calls: call k binds the first free port from BASE + k (0: any).
    /// Below the kernel's ephemeral range by default, so the gateway's RTP range is not taken.
    #[arg(long, default_value_t = 30000)]
    local_ports: u16,
    /// Media pacer threads (calls are spread over them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// HTTP signalling threads (one keep-alive connection each).
    #[arg(long, default_value_t = 4)]
    http_threads: usize,
    /// Seconds from the POST to ICE + DTLS connected before a setup counts as failed.
    #[arg(long, default_value_t = 15.0)]
    setup_timeout: f64,
    /// A received packet later than this (ms) counts as late.
    #[arg(long, default_value_t = 5.0)]
    late_ms: f64,
    /// A jump between RTP timestamp and arrival bigger than this (ms) starts a new lateness
    /// reference instead of counting as lateness (as call-load).
    #[arg(long, default_value_t = 1000.0)]
    reanchor_ms: f64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
    /// Hard limit on the whole run in seconds (default: enough for every call).
    #[arg(long)]
    max_time: Option<f64>,
    /// Start this gateway binary on free loopback ports in a temporary data dir (ignores --url).
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// RTP port range of the spawned gateway, MIN-MAX.
    #[arg(long, default_value = "40000-59999")]
    gateway_rtp_ports: String,
    /// calls.max_calls of the spawned gateway (default: --calls + 100).
    #[arg(long)]
    gateway_max_calls: Option<usize>,
    /// More config for the spawned gateway (appended to the generated one, which holds only
    /// the API key); ports, data dir, max_calls and the log level are set as call-load sets them.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// IVR flows directory of the spawned gateway (`ivr.flows_dir`).
    #[arg(long)]
    flows_dir: Option<PathBuf>,
    /// More environment for the spawned gateway, KEY=VALUE (repeatable).
    #[arg(long)]
    gateway_env: Vec<String>,
}

/// Counters the progress line reads while the run goes on.
#[derive(Debug, Default)]
struct Live {
    posted: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    held: AtomicU64,
    hangups: AtomicU64,
    /// Calls that are over: failed, hung up (DELETE answered or given up) or ended by the gateway.
    finished: AtomicU64,
    rx: AtomicU64,
    measured: AtomicU64,
    late: AtomicU64,
    stop: AtomicBool,
}

/// What one thread counted; merged at the end.
#[derive(Debug)]
struct Stats {
    failed: BTreeMap<String, u64>,
    /// POST of the offer → connected, us.
    setup: Histogram<u64>,
    /// POST of the token → 201 of the offer, us.
    signalling: Histogram<u64>,
    /// How late a setup started against its even schedule, us.
    start_lag: Histogram<u64>,
    first_post: Option<Instant>,
    last_connected: Option<Instant>,
    ended_by_gateway: u64,
    ice_disconnects: u64,
    delete_ok: u64,
    delete_failed: BTreeMap<String, u64>,
    digits_sent: u64,
    rtp_sent: u64,
    send_errors: u64,
    /// How late our pacer wrote a frame, us.
    send_lag: Histogram<u64>,
    rtp_received: u64,
    measured: u64,
    late: u64,
    lateness: Histogram<u64>,
    events_received: u64,
    anchors: u64,
    reanchors: u64,
    lost: u64,
    silent_calls: u64,
    unstamped: u64,
    /// Sum over calls of connected → hang-up (or end), s.
    call_seconds: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 600_000_000));
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            failed: BTreeMap::new(),
            setup: histogram(),
            signalling: histogram(),
            start_lag: histogram(),
            first_post: None,
            last_connected: None,
            ended_by_gateway: 0,
            ice_disconnects: 0,
            delete_ok: 0,
            delete_failed: BTreeMap::new(),
            digits_sent: 0,
            rtp_sent: 0,
            send_errors: 0,
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
            unstamped: 0,
            call_seconds: 0.0,
        }
    }
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        for (k, v) in o.failed {
            *self.failed.entry(k).or_default() += v;
        }
        for (k, v) in o.delete_failed {
            *self.delete_failed.entry(k).or_default() += v;
        }
        let _ = self.setup.add(&o.setup);
        let _ = self.signalling.add(&o.signalling);
        let _ = self.start_lag.add(&o.start_lag);
        let _ = self.send_lag.add(&o.send_lag);
        let _ = self.lateness.add(&o.lateness);
        self.first_post = min_opt(self.first_post, o.first_post);
        self.last_connected = self.last_connected.max(o.last_connected);
        self.ended_by_gateway += o.ended_by_gateway;
        self.ice_disconnects += o.ice_disconnects;
        self.delete_ok += o.delete_ok;
        self.digits_sent += o.digits_sent;
        self.rtp_sent += o.rtp_sent;
        self.send_errors += o.send_errors;
        self.rtp_received += o.rtp_received;
        self.measured += o.measured;
        self.late += o.late;
        self.events_received += o.events_received;
        self.anchors += o.anchors;
        self.reanchors += o.reanchors;
        self.lost += o.lost;
        self.silent_calls += o.silent_calls;
        self.unstamped += o.unstamped;
        self.call_seconds += o.call_seconds;
    }

    fn fail(&mut self, live: &Live, reason: impl Into<String>) {
        *self.failed.entry(reason.into()).or_default() += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
        live.finished.fetch_add(1, Ordering::Relaxed);
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Work for the HTTP threads.
enum Job {
    /// Place call `index`, due at `due`.
    Setup { index: u64, due: Instant },
    /// DELETE the call; `done` is set when the gateway answered (or gave up).
    Hangup {
        location: String,
        token: String,
        done: Arc<AtomicBool>,
    },
}

/// A call whose offer was answered, for a media thread.
struct NewCall {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    posted: Instant,
    location: String,
    token: String,
}

/// What every thread shares.
struct Plan {
    http: SocketAddr,
    key: String,
    local_ip: IpAddr,
    local_ports: u16,
    calls: u64,
    hold: Duration,
    digits: String,
    dtmf_after: Duration,
    digit_ms: u32,
    digit_gap_ms: u32,
    setup_timeout: Duration,
    late_us: u64,
    reanchor_us: i64,
    cert: str0m::config::DtlsCert,
    crypto: Arc<str0m::crypto::CryptoProvider>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.calls == 0 || args.threads == 0 || args.http_threads == 0 {
        bail!("--calls, --threads and --http-threads must be at least 1");
    }
    if !args.cps.is_finite() || args.cps <= 0.0 {
        bail!("--cps must be positive");
    }
    for secs in [
        args.hold_s,
        args.dtmf_after,
        args.setup_timeout,
        args.report_every,
        args.late_ms,
        args.reanchor_ms,
    ] {
        if !secs.is_finite() || secs < 0.0 {
            bail!("times must be finite and not negative");
        }
    }
    if let Some(bad) = args.digits.chars().find(|c| rtp::event_code(*c).is_none()) {
        bail!("--digits: {bad:?} is not a DTMF key (0-9, *, #, A-D)");
    }
    if args.local_ports != 0 && u64::from(args.local_ports) + args.calls * 2 > 65535 {
        bail!("--local-ports {} leaves too few ports", args.local_ports);
    }
    let nofile = net::raise_nofile().context("open-files limit")?;
    if nofile < args.calls + 64 {
        eprintln!(
            "warning: the open-files limit is {nofile}, {} calls need about {}",
            args.calls,
            args.calls + 64
        );
    }

    // The gateway: spawned (as call-load does, plus an API key in a config file) or given.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut _config_dir = None;
    let (gateway, http, key) = match &args.spawn {
        Some(bin) => {
            let key = format!("{:032x}", rand::random::<u128>());
            let dir = tempfile::Builder::new().prefix("webrtc-load-").tempdir()?;
            let path = dir.path().join("gateway.toml");
            let mut toml = String::new();
            if let Some(extra) = &args.gateway_config {
                toml = std::fs::read_to_string(extra)
                    .with_context(|| format!("--gateway-config {}", extra.display()))?;
                toml.push('\n');
            }
            toml.push_str(&format!(
                "[[api.keys]]\nname = \"webrtc-load\"\nkey = \"{key}\"\nadmin = true\n"
            ));
            std::fs::write(&path, toml)?;
            _config_dir = Some(dir);
            let env = args
                .gateway_env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--gateway-env {kv:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let settings = spawn::Settings {
                rtp_ports: parse_range(&args.gateway_rtp_ports)?,
                max_calls: args.gateway_max_calls.unwrap_or(args.calls as usize + 100),
                config: Some(path),
                flows_dir: args.flows_dir.clone(),
                env,
            };
            let gw = runtime.block_on(spawn::Gateway::start(bin, &settings))?;
            println!(
                "spawned gateway pid {} with HTTP on {} and SIP on {} (data in {})",
                gw.process.pid(),
                gw.http,
                gw.sip,
                gw.process.data_dir().display()
            );
            let http = gw.http;
            (Some(gw), http, key)
        }
        None => {
            let key = match (&args.key, &args.key_file) {
                (Some(k), _) => k.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("--key-file {}", f.display()))?
                    .trim()
                    .to_owned(),
                (None, None) => bail!("--url needs --key or --key-file (or use --spawn)"),
            };
            let host = args.url.trim_start_matches("http://").trim_end_matches('/');
            let http: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(host)
                .with_context(|| format!("--url {}", args.url))?
                .next()
                .context("--url resolves to nothing")?;
            (None, http, key)
        }
    };
    let gw_pid = gateway
        .as_ref()
        .map(|g| g.process.pid())
        .or(args.gateway_pid);

    let crypto = str0m::crypto::from_feature_flags();
    let cert = crypto
        .dtls_provider
        .generate_certificate()
        .context("no DTLS certificate")?;
    let plan = Arc::new(Plan {
        http,
        key,
        local_ip: args.local_ip,
        local_ports: args.local_ports,
        calls: args.calls,
        hold: Duration::from_secs_f64(args.hold_s),
        digits: args.digits.clone(),
        dtmf_after: Duration::from_secs_f64(args.dtmf_after),
        digit_ms: args.digit_ms,
        digit_gap_ms: args.digit_gap_ms,
        setup_timeout: Duration::from_secs_f64(args.setup_timeout),
        late_us: (args.late_ms * 1000.0) as u64,
        reanchor_us: (args.reanchor_ms * 1000.0) as i64,
        cert,
        crypto: Arc::new(crypto),
    });
    let max_time =
        Duration::from_secs_f64(args.max_time.unwrap_or(
            args.calls as f64 / args.cps + args.hold_s + 2.0 * args.setup_timeout + 60.0,
        ));
    println!(
        "webrtc-load: {} calls to http://{http} at {}/s, {:.1} s each, digits {:?} after {:.1} s; {} media thread(s), {} HTTP thread(s)",
        args.calls,
        args.cps,
        args.hold_s,
        args.digits,
        args.dtmf_after,
        args.threads,
        args.http_threads
    );

    let live = Arc::new(Live::default());
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut media_tx = Vec::new();
    let mut media = Vec::new();
    for t in 0..args.threads {
        let (tx, rx) = mpsc::channel::<NewCall>();
        media_tx.push(tx);
        let (plan, live, jobs) = (plan.clone(), live.clone(), job_tx.clone());
        media.push(
            std::thread::Builder::new()
                .name(format!("media-{t}"))
                .spawn(move || media_thread(&plan, &live, rx, jobs))?,
        );
    }
    let mut signalling = Vec::new();
    for t in 0..args.http_threads {
        let (plan, live, jobs, media_tx) =
            (plan.clone(), live.clone(), job_rx.clone(), media_tx.clone());
        signalling.push(
            std::thread::Builder::new()
                .name(format!("http-{t}"))
                .spawn(move || http_thread(&plan, &live, &jobs, &media_tx))?,
        );
    }
    drop(media_tx);

    // The pacer of setups and the progress lines, on this thread.
    let start = Instant::now();
    let gateway_cpu = || gw_pid.and_then(|p| cpu::cpu_time(Some(p)));
    let threads_start = gw_pid.map(cpu::thread_times).unwrap_or_default();
    let cpu_start = gateway_cpu();
    let own_start = cpu::cpu_time(None);
    let interval = Duration::from_secs_f64(1.0 / args.cps);
    let report_every = Duration::from_secs_f64(args.report_every.max(0.1));
    let mut next_report = start + report_every;
    let mut last_mark = (start, gateway_cpu(), cpu::cpu_time(None), 0u64);
    let mut sent = 0u64;
    // Steady window: every call up (the last setup finished) until the first hang-up.
    let mut steady_from: Option<(Instant, Option<Duration>, u64)> = None;
    let mut steady: Option<(Duration, Option<Duration>, u64)> = None;
    let mut cut_short = false;
    loop {
        let now = Instant::now();
        while sent < args.calls && start + interval.mul_f64(sent as f64) <= now {
            let due = start + interval.mul_f64(sent as f64);
            let _ = job_tx.send(Job::Setup { index: sent, due });
            sent += 1;
        }
        let connected = live.connected.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        let hangups = live.hangups.load(Ordering::Relaxed);
        let held = live.held.load(Ordering::Relaxed);
        if steady_from.is_none() && connected + failed >= args.calls && hangups == 0 {
            steady_from = Some((now, gateway_cpu(), held));
        }
        if let (Some((from, cpu0, up)), None) = (steady_from, steady)
            && (hangups > 0 || live.finished.load(Ordering::Relaxed) >= args.calls)
        {
            let d = gateway_cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
            steady = Some((now - from, d, up));
        }
        if now >= next_report {
            let (at, gcpu, ocpu, rx0) = last_mark;
            let secs = (now - at).as_secs_f64().max(1e-9);
            let (g, o) = (gateway_cpu(), cpu::cpu_time(None));
            let pct = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
                (Some(a), Some(b)) => {
                    format!("{:.0}%", 100.0 * a.saturating_sub(b).as_secs_f64() / secs)
                }
                _ => "-".to_owned(),
            };
            let rx = live.rx.load(Ordering::Relaxed);
            let measured = live.measured.load(Ordering::Relaxed).max(1);
            let late = live.late.load(Ordering::Relaxed);
            println!(
                "[{:6.1}s] posted {} connected {} failed {}, held {}, hung up {} | rtp in {:.0}/s, late {} ({:.3}%) | CPU gateway {} generator {}",
                (now - start).as_secs_f64(),
                live.posted.load(Ordering::Relaxed),
                connected,
                failed,
                held,
                hangups,
                (rx - rx0) as f64 / secs,
                late,
                100.0 * late as f64 / measured as f64,
                pct(g, gcpu),
                pct(o, ocpu),
            );
            last_mark = (now, g, o, rx);
            next_report += report_every;
        }
        if live.finished.load(Ordering::Relaxed) >= args.calls {
            break;
        }
        if now - start > max_time {
            cut_short = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let window = start.elapsed();
    let cpu_end = gateway_cpu();
    let threads_end = gw_pid.map(cpu::thread_times).unwrap_or_default();
    let own_end = cpu::cpu_time(None);
    live.stop.store(true, Ordering::Relaxed);
    drop(job_tx);
    let mut stats = Stats::default();
    for t in media.into_iter().chain(signalling) {
        match t.join() {
            Ok(s) => stats.merge(s),
            Err(_) => eprintln!("a thread panicked"),
        }
    }
    let gw_total = cpu_end.zip(cpu_start).map(|(b, a)| b.saturating_sub(a));
    let own_total = own_end.zip(own_start).map(|(b, a)| b.saturating_sub(a));
    let ok = report(
        &args, &stats, window, gw_total, own_total, steady, cut_short, max_time,
    );
    let split: Vec<String> = cpu::thread_delta(&threads_start, &threads_end)
        .iter()
        .filter(|(_, t)| !t.is_zero())
        .map(|(name, t)| {
            format!(
                "{name} {:.0}%",
                100.0 * t.as_secs_f64() / window.as_secs_f64().max(1e-9)
            )
        })
        .collect();
    if !split.is_empty() {
        println!("gateway threads    {} (of one core)", split.join(", "));
    }
    if let Some(gw) = gateway {
        println!("{}", gw.process.stop(Duration::from_secs(20))?);
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    s: &Stats,
    window: Duration,
    gw_total: Option<Duration>,
    own_total: Option<Duration>,
    steady: Option<(Duration, Option<Duration>, u64)>,
    cut_short: bool,
    max_time: Duration,
) -> bool {
    let ms = |us: u64| us as f64 / 1000.0;
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    let connected = s.setup.len();
    let failed: u64 = s.failed.values().sum();
    let setup_rate = match (s.first_post, s.last_connected) {
        (Some(a), Some(b)) if b > a && connected > 1 => connected as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let late_share = s.late as f64 / s.measured.max(1) as f64;
    let loss_share = s.lost as f64 / (s.rtp_received + s.lost).max(1) as f64;
    let secs = window.as_secs_f64().max(1e-9);
    let gw_ms_per_call_s = gw_total.map(|c| c.as_secs_f64() * 1000.0 / s.call_seconds.max(1e-9));
    let steady_fig = steady.and_then(|(d, c, up)| {
        let c = c?;
        let call_s = d.as_secs_f64() * up as f64;
        (call_s > 0.0).then(|| {
            (
                d.as_secs_f64(),
                up,
                100.0 * c.as_secs_f64() / d.as_secs_f64().max(1e-9),
                c.as_secs_f64() * 1000.0 / call_s,
            )
        })
    });
    println!("\nrun                {secs:.1} s");
    println!(
        "calls              {} placed, {} connected, {} failed {:?}",
        args.calls, connected, failed, s.failed
    );
    println!(
        "setups             {setup_rate:.1}/s from first POST to last connected; POST->connected p50 {:.2}ms p99 {:.2}ms max {:.2}ms; token+offer HTTP p50 {:.2}ms p99 {:.2}ms; start lag p99 {:.2}ms",
        q(&s.setup, 0.5),
        q(&s.setup, 0.99),
        ms(s.setup.max()),
        q(&s.signalling, 0.5),
        q(&s.signalling, 0.99),
        q(&s.start_lag, 0.99),
    );
    println!(
        "hang-ups           {} DELETE answered 200, failed {:?}; {} calls ended by the gateway first; {} ICE disconnects seen",
        s.delete_ok, s.delete_failed, s.ended_by_gateway, s.ice_disconnects
    );
    println!(
        "DTMF               {} digits sent as RFC 4733 events",
        s.digits_sent
    );
    println!(
        "RTP sent           {} packets ({} send errors); pacer lag p99 {:.2}ms max {:.2}ms",
        s.rtp_sent,
        s.send_errors,
        q(&s.send_lag, 0.99),
        ms(s.send_lag.max())
    );
    if q(&s.send_lag, 0.99) > args.late_ms {
        println!(
            "warning            the generator itself ran late (pacer lag p99 > {} ms): short of CPU",
            args.late_ms
        );
    }
    println!(
        "RTP received       {} packets: {} audio measured, {} stream/talkspurt starts ({} re-anchors), {} events",
        s.rtp_received, s.measured, s.anchors, s.reanchors, s.events_received
    );
    println!(
        "late > {} ms       {} ({:.4}% of measured)",
        args.late_ms,
        s.late,
        100.0 * late_share
    );
    println!(
        "lateness           p50 {:.2}ms p99 {:.2}ms p99.9 {:.2}ms max {:.2}ms",
        q(&s.lateness, 0.5),
        q(&s.lateness, 0.99),
        q(&s.lateness, 0.999),
        ms(s.lateness.max())
    );
    println!("lost (seq gaps)    {} ({:.4}%)", s.lost, 100.0 * loss_share);
    if s.silent_calls > 0 {
        println!(
            "silent calls       {} connected calls received no RTP",
            s.silent_calls
        );
    }
    if s.unstamped > 0 {
        println!(
            "unstamped          {} datagrams had no kernel stamp",
            s.unstamped
        );
    }
    if let Some(c) = gw_total {
        println!(
            "gateway            CPU {:.2} s = {:.0}% of one core over the run; {:.3} ms per call-second ({:.0} call-seconds, setups and hang-ups included)",
            c.as_secs_f64(),
            100.0 * c.as_secs_f64() / secs,
            gw_ms_per_call_s.unwrap_or(0.0),
            s.call_seconds
        );
    }
    if let Some((d, up, pct, per)) = steady_fig {
        println!(
            "gateway steady     {pct:.0}% of one core with {up} calls up for {d:.1} s (last setup to first hang-up): {per:.3} ms per call-second"
        );
    }
    if let Some(c) = own_total {
        println!(
            "generator          CPU {:.2} s = {:.0}% of one core",
            c.as_secs_f64(),
            100.0 * c.as_secs_f64() / secs
        );
    }
    if cut_short {
        println!("stopped at --max-time {:.0} s", max_time.as_secs_f64());
    }
    let summary = json!({
        "tool": "webrtc-load",
        "calls": args.calls,
        "cps_offered": args.cps,
        "hold_s": args.hold_s,
        "connected": connected,
        "failed": failed,
        "failed_by": s.failed,
        "setups_per_s": round(setup_rate, 1),
        "setup_p50_ms": round(q(&s.setup, 0.5), 2),
        "setup_p99_ms": round(q(&s.setup, 0.99), 2),
        "setup_max_ms": round(ms(s.setup.max()), 2),
        "rtp_received": s.rtp_received,
        "measured": s.measured,
        "late": s.late,
        "late_ms": args.late_ms,
        "late_share": round(late_share, 6),
        "lateness_p99_ms": round(q(&s.lateness, 0.99), 2),
        "lateness_max_ms": round(ms(s.lateness.max()), 2),
        "lost": s.lost,
        "loss_share": round(loss_share, 6),
        "rtp_sent": s.rtp_sent,
        "generator_lag_p99_ms": round(q(&s.send_lag, 0.99), 2),
        "ended_by_gateway": s.ended_by_gateway,
        "delete_ok": s.delete_ok,
        "gateway_cpu_s": gw_total.map(|c| round(c.as_secs_f64(), 2)),
        "gateway_cpu_ms_per_call_s": gw_ms_per_call_s.map(|v| round(v, 3)),
        "steady_s": steady_fig.map(|f| round(f.0, 1)),
        "steady_calls": steady_fig.map(|f| f.1),
        "steady_gateway_core_pct": steady_fig.map(|f| round(f.2, 1)),
        "steady_gateway_cpu_ms_per_call_s": steady_fig.map(|f| round(f.3, 3)),
        "generator_core_pct": own_total.map(|c| round(100.0 * c.as_secs_f64() / secs, 1)),
        "run_s": round(secs, 1),
    });
    println!("\nJSON {summary}");
    failed == 0 && !cut_short && connected == args.calls
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn parse_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("expected MIN-MAX")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a >= b {
        bail!("empty port range {s}");
    }
    Ok((a, b))
}

// ---------------------------------------------------------------------------------------------
// Signalling

/// One blocking HTTP/1.1 keep-alive connection (the gateway always sends Content-Length).
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

impl Http {
    fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        // A kept-alive connection the server has closed fails at once: try a fresh one once.
        let reused = self.conn.is_some();
        match self.exchange(head.as_bytes(), body) {
            Err(e) if reused && e.kind() != io::ErrorKind::TimedOut => {
                self.conn = None;
                self.exchange(head.as_bytes(), body)
            }
            r => r,
        }
    }

    fn exchange(&mut self, head: &[u8], body: &[u8]) -> io::Result<Reply> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.conn = Some(BufReader::new(s));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        match Self::exchange_on(conn, head, body) {
            Ok((reply, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// The reply, and whether the server closes the connection after it.
    fn exchange_on(
        c: &mut BufReader<TcpStream>,
        head: &[u8],
        body: &[u8],
    ) -> io::Result<(Reply, bool)> {
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head);
        req.extend_from_slice(body);
        c.get_mut().write_all(&req)?;
        let mut line = String::new();
        if c.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
        let (mut length, mut location, mut close) = (0usize, None, false);
        loop {
            line.clear();
            if c.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("location") {
                    location = Some(v.to_owned());
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0; length];
        c.read_exact(&mut body)?;
        Ok((
            Reply {
                status,
                location,
                body,
            },
            close,
        ))
    }
}

fn http_thread(
    plan: &Plan,
    live: &Live,
    jobs: &Mutex<Receiver<Job>>,
    media: &[Sender<NewCall>],
) -> Stats {
    let mut stats = Stats::default();
    let mut http = Http {
        addr: plan.http,
        conn: None,
    };
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else {
                return stats;
            };
            rx.recv_timeout(Duration::from_millis(100))
        };
        let job = match job {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) if !live.stop.load(Ordering::Relaxed) => continue,
            Err(_) => return stats,
        };
        match job {
            Job::Setup { index, due } => {
                let now = Instant::now();
                record(&mut stats.start_lag, (now - due).as_micros() as u64);
                match place(plan, &mut http, index, &mut stats) {
                    Ok(call) => {
                        live.posted.fetch_add(1, Ordering::Relaxed);
                        let t = (index % media.len() as u64) as usize;
                        if media[t].send(call).is_err() {
                            stats.fail(live, "media-thread-gone");
                        }
                    }
                    Err(reason) => stats.fail(live, reason),
                }
            }
            Job::Hangup {
                location,
                token,
                done,
            } => {
                match http.request("DELETE", &location, &token, None, b"") {
                    Ok(r) if r.status == 200 => stats.delete_ok += 1,
                    Ok(r) => *stats.delete_failed.entry(r.status.to_string()).or_default() += 1,
                    Err(e) => *stats.delete_failed.entry(e.kind().to_string()).or_default() += 1,
                }
                done.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A UDP socket on our address: call `index`'s port from the base, or the next free one.
fn bind(plan: &Plan, index: u64) -> io::Result<UdpSocket> {
    let rcvbuf = Some(256 * 1024);
    if plan.local_ports == 0 {
        return net::polled_udp(SocketAddr::new(plan.local_ip, 0), rcvbuf, true);
    }
    let mut port = u64::from(plan.local_ports) + index;
    let mut last = io::Error::other("no port");
    while port <= 65535 {
        match net::polled_udp(SocketAddr::new(plan.local_ip, port as u16), rcvbuf, true) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
        port += plan.calls;
    }
    Err(last)
}

/// Token, socket, offer, POST, answer: a call for a media thread, or why not.
fn place(plan: &Plan, http: &mut Http, index: u64, stats: &mut Stats) -> Result<NewCall, String> {
    let t_token = Instant::now();
    let r = http
        .request(
            "POST",
            "/v1/call-tokens",
            &plan.key,
            Some("application/json"),
            b"{}",
        )
        .map_err(|e| format!("token-{}", e.kind()))?;
    if r.status != 201 {
        return Err(format!("token-{}", r.status));
    }
    let token = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
        .ok_or("token-body")?;
    let sock = bind(plan, index).map_err(|e| format!("bind-{}", e.kind()))?;
    let local = sock.local_addr().map_err(|_| "bind-addr")?;
    let now = Instant::now();
    let mut cfg = RtcConfig::new()
        .set_rtp_mode(true)
        .set_dtls_cert(plan.cert.clone())
        .set_crypto_provider(plan.crypto.clone())
        .set_stats_interval(None)
        .clear_codecs();
    let c = cfg.codec_config();
    c.enable_pcmu(true, false);
    c.add_config(
        EVENT_PT.into(),
        None,
        Str0mCodec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        Default::default(),
    );
    let mut rtc = cfg.build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|_| "candidate")?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().ok_or("no-offer")?;
    let offer = offer.to_sdp_string();

    let posted = Instant::now();
    stats.first_post = min_opt(stats.first_post, Some(posted));
    let r = http
        .request(
            "POST",
            "/v1/calls/webrtc",
            &token,
            Some("application/sdp"),
            offer.as_bytes(),
        )
        .map_err(|e| format!("offer-{}", e.kind()))?;
    if r.status != 201 {
        return Err(format!("offer-{}", r.status));
    }
    record(
        &mut stats.signalling,
        (Instant::now() - t_token).as_micros() as u64,
    );
    let location = r.location.ok_or("no-location")?;
    let answer = std::str::from_utf8(&r.body)
        .ok()
        .and_then(|a| str0m::change::SdpAnswer::from_sdp_string(a).ok())
        .ok_or("bad-answer")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|_| "answer-refused")?;
    Ok(NewCall {
        rtc,
        sock,
        local,
        mid,
        posted,
        location,
        token,
    })
}

// ---------------------------------------------------------------------------------------------
// Media

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// ICE and DTLS under way.
    Setup,
    /// Connected: frames flow.
    Up,
    /// Hung up (DELETE sent) or failed: drained until the DELETE is answered, then dropped.
    Closing,
    /// Over: remove.
    Done,
}

struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    posted: Instant,
    connected: Option<Instant>,
    state: State,
    next_timeout: Instant,
    /// When the next frame is due (once connected).
    next_send: Instant,
    hold_end: Instant,
    dtmf_at: Option<Instant>,
    sender: rtp::Sender,
    ext_seq: u64,
    receiver: rtp::Receiver,
    location: String,
    token: String,
    done: Option<Arc<AtomicBool>>,
    closing_since: Option<Instant>,
    /// The gateway ended the call (str0m no longer alive).
    gone: bool,
    /// The gateway's candidate (where str0m sends): the source of what the socket receives.
    peer: Option<SocketAddr>,
}

fn media_thread(plan: &Plan, live: &Live, rx: Receiver<NewCall>, jobs: Sender<Job>) -> Stats {
    let mut stats = Stats::default();
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut cmsg = net::stamp_buffer();
    let mut frame = [0u8; rtp::MAX_PACKET];
    let mut next_tick = Instant::now();
    loop {
        let now = Instant::now();
        if next_tick > now {
            std::thread::sleep(next_tick - now);
        }
        let now = Instant::now();
        next_tick += TICK;
        if next_tick < now {
            next_tick = now + TICK;
        }
        loop {
            match rx.try_recv() {
                Ok(n) => {
                    let seed = rand::random::<u32>();
                    let mut c = Client {
                        rtc: n.rtc,
                        sock: n.sock,
                        local: n.local,
                        mid: n.mid,
                        posted: n.posted,
                        connected: None,
                        state: State::Setup,
                        next_timeout: now,
                        next_send: now,
                        hold_end: now,
                        dtmf_at: None,
                        sender: rtp::Sender::new(
                            seed,
                            seed as u16,
                            seed.rotate_left(7),
                            AUDIO_PT,
                            Some(EVENT_PT),
                            plan.digit_ms,
                            plan.digit_gap_ms,
                        ),
                        ext_seq: u64::from(seed as u16),
                        receiver: rtp::Receiver::new(Some(EVENT_PT), plan.reanchor_us),
                        location: n.location,
                        token: n.token,
                        done: None,
                        closing_since: None,
                        gone: false,
                        peer: None,
                    };
                    drive(&mut c, now, None, plan, live, &mut stats);
                    clients.push(c);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if clients.is_empty() {
                        return stats;
                    }
                    break;
                }
            }
        }
        if live.stop.load(Ordering::Relaxed) {
            for c in clients.iter_mut() {
                finish(c, now, live, &mut stats);
            }
            return stats;
        }
        for c in clients.iter_mut() {
            let sending = c.state == State::Up && now >= c.next_send;
            // Sockets are read every tick while setting up, on the frame slot afterwards.
            let read = c.state == State::Setup || sending || c.state == State::Closing;
            if read && (c.state != State::Closing || now >= c.next_send) {
                loop {
                    match net::recv_stamped(&c.sock, &mut buf, &mut cmsg) {
                        Ok((n, stamp)) => {
                            let stamp_us = match stamp {
                                Some(ns) => ns / 1000,
                                None => {
                                    stats.unstamped += 1;
                                    net::now_ns() / 1000
                                }
                            };
                            let Ok(contents) = buf[..n].try_into() else {
                                continue;
                            };
                            // The source is the gateway's candidate: the only peer of this socket.
                            let Some(source) = c.peer else {
                                continue;
                            };
                            let input = Input::Receive(
                                now,
                                Receive {
                                    proto: Protocol::Udp,
                                    source,
                                    destination: c.local,
                                    contents,
                                },
                            );
                            if c.rtc.handle_input(input).is_ok() {
                                drive(c, now, Some(stamp_us), plan, live, &mut stats);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                if c.state == State::Closing {
                    c.next_send += FRAME;
                }
            }
            if c.state == State::Up {
                if let Some(at) = c.dtmf_at
                    && now >= at
                {
                    c.dtmf_at = None;
                    if c.sender.queue_digits(&plan.digits) {
                        stats.digits_sent += plan.digits.chars().count() as u64;
                    }
                }
                let mut wrote = false;
                while now >= c.next_send && c.state == State::Up {
                    record(&mut stats.send_lag, (now - c.next_send).as_micros() as u64);
                    let n = c.sender.next_packet(&mut frame);
                    if let Some(h) = rtp::parse(&frame[..n]) {
                        let mut api = c.rtc.direct_api();
                        match api.stream_tx_by_mid(c.mid, None) {
                            Some(stream) => {
                                stream.write_rtp(
                                    RtpWrite::new(
                                        h.pt.into(),
                                        c.ext_seq.into(),
                                        h.ts,
                                        now,
                                        frame[12..n].to_vec(),
                                    )
                                    .marker(h.marker),
                                );
                                stats.rtp_sent += 1;
                            }
                            None => stats.send_errors += 1,
                        }
                        c.ext_seq += 1;
                    }
                    c.next_send += FRAME;
                    wrote = true;
                }
                if wrote {
                    drive(c, now, None, plan, live, &mut stats);
                }
            }
            if now >= c.next_timeout && c.state != State::Done {
                if c.rtc.handle_input(Input::Timeout(now)).is_err() {
                    c.gone = true;
                }
                drive(c, now, None, plan, live, &mut stats);
            }
            match c.state {
                State::Setup if c.gone || now - c.posted > plan.setup_timeout => {
                    // Counted as finished by the failure; the DELETE only tidies up.
                    stats.fail(
                        live,
                        if c.gone {
                            "setup-gone"
                        } else {
                            "not-connected"
                        },
                    );
                    hang_up(c, now, &jobs);
                    c.state = State::Done;
                }
                State::Up if c.gone || now >= c.hold_end => {
                    if c.gone {
                        stats.ended_by_gateway += 1;
                        finish(c, now, live, &mut stats);
                        live.finished.fetch_add(1, Ordering::Relaxed);
                        c.state = State::Done;
                    } else {
                        finish(c, now, live, &mut stats);
                        hang_up(c, now, &jobs);
                    }
                }
                State::Closing => {
                    let answered = c.done.as_ref().is_some_and(|d| d.load(Ordering::Relaxed));
                    let stale = c
                        .closing_since
                        .is_some_and(|t| now - t > Duration::from_secs(35));
                    if answered || stale {
                        live.finished.fetch_add(1, Ordering::Relaxed);
                        c.state = State::Done;
                    }
                }
                _ => {}
            }
        }
        clients.retain(|c| c.state != State::Done);
    }
}

/// Send the DELETE (through the HTTP threads) and start closing.
fn hang_up(c: &mut Client, now: Instant, jobs: &Sender<Job>) {
    let done = Arc::new(AtomicBool::new(false));
    let _ = jobs.send(Job::Hangup {
        location: std::mem::take(&mut c.location),
        token: std::mem::take(&mut c.token),
        done: done.clone(),
    });
    c.done = Some(done);
    c.closing_since = Some(now);
    c.next_send = now;
    c.state = State::Closing;
}

/// Account for a call that stops carrying media (hang-up or the gateway ended it).
fn finish(c: &mut Client, now: Instant, live: &Live, stats: &mut Stats) {
    if let Some(at) = c.connected.take() {
        stats.call_seconds += (now - at).as_secs_f64();
        stats.lost += c.receiver.lost();
        stats.reanchors += c.receiver.reanchors;
        if c.receiver.packets() == 0 {
            stats.silent_calls += 1;
        }
        live.held.fetch_sub(1, Ordering::Relaxed);
        live.hangups.fetch_add(1, Ordering::Relaxed);
    }
}

/// Take everything str0m has: datagrams out, connection and RTP events in. `stamp_us`: the
/// kernel arrival stamp of the datagram just handed in (its RTP packets are timed by it).
fn drive(
    c: &mut Client,
    now: Instant,
    stamp_us: Option<i64>,
    plan: &Plan,
    live: &Live,
    stats: &mut Stats,
) {
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                c.next_timeout = t;
                break;
            }
            Ok(Output::Transmit(t)) => {
                c.peer = Some(t.destination);
                if c.sock.send_to(&t.contents, t.destination).is_err() {
                    stats.send_errors += 1;
                }
            }
            Ok(Output::Event(Event::Connected)) => {
                if c.state == State::Setup {
                    c.state = State::Up;
                    c.connected = Some(now);
                    c.next_send = now;
                    c.hold_end = now + plan.hold;
                    if !plan.digits.is_empty() {
                        c.dtmf_at = Some(now + plan.dtmf_after);
                    }
                    record(&mut stats.setup, (now - c.posted).as_micros() as u64);
                    stats.last_connected = stats.last_connected.max(Some(now));
                    live.connected.fetch_add(1, Ordering::Relaxed);
                    live.held.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Output::Event(Event::RtpPacket(p))) => {
                if c.state != State::Up {
                    continue;
                }
                let h = rtp::Header {
                    marker: p.header.marker,
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    ts: p.header.timestamp,
                    ssrc: *p.header.ssrc,
                };
                let arrival = stamp_us.unwrap_or_else(|| net::now_ns() / 1000);
                stats.rtp_received += 1;
                live.rx.fetch_add(1, Ordering::Relaxed);
                match c.receiver.on_packet(&h, arrival) {
                    rtp::Seen::Audio { late_us } => {
                        stats.measured += 1;
                        live.measured.fetch_add(1, Ordering::Relaxed);
                        if late_us > plan.late_us {
                            stats.late += 1;
                            live.late.fetch_add(1, Ordering::Relaxed);
                        }
                        record(&mut stats.lateness, late_us);
                    }
                    rtp::Seen::Anchor => stats.anchors += 1,
                    rtp::Seen::Event => stats.events_received += 1,
                }
            }
            Ok(Output::Event(Event::IceConnectionStateChange(
                IceConnectionState::Disconnected,
            ))) => {
                stats.ice_disconnects += 1;
            }
            Ok(Output::Event(_)) => {}
            Err(_) => {
                c.gone = true;
                break;
            }
        }
    }
    if !c.rtc.is_alive() {
        c.gone = true;
    }
}
