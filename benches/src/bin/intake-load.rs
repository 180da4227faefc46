//! `intake-load`: HTTP/1.1 keep-alive load on `POST /v1/submissions`, reporting durable
//! submissions per second, latency percentiles and the CPU split between gateway and generator.
//!
//! ```text
//! intake-load --spawn target/release/gateway --connections 64 --duration 20 --warmup 3
//! intake-load --url http://127.0.0.1:8080 --key-file data/api-key --requests 100000
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use benches::load::http::{Conn, get};
use benches::load::report::{self, CpuSplit};
use benches::load::{body, cpu, driver, spawn};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "intake-load",
    about = "Load generator for POST /v1/submissions"
)]
struct Args {
    /// Gateway base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (Bearer).
    #[arg(long, env = "INTAKE_LOAD_KEY")]
    key: Option<String>,
    /// File holding the API key, such as the gateway's generated `data/api-key`.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Start this gateway binary in a temporary data dir (ignores --url and --key).
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Extra TOML appended to the spawned gateway's config, e.g. "[store]\nmax_batch = 4096".
    #[arg(long, default_value = "")]
    gateway_config: String,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, short, default_value_t = 64)]
    connections: usize,
    /// Seconds to measure after the warm-up (default 10 unless --requests is given).
    #[arg(long, short)]
    duration: Option<f64>,
    /// Measured requests to send instead of a duration.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600.0)]
    max_time: f64,
    /// Generator worker threads (1: a current-thread runtime, leanest on a shared machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Distinct request bodies to cycle through.
    #[arg(long, default_value_t = 1024)]
    bodies: usize,
    /// Also page through GET /v1/orders and count every stored order (slow on big runs).
    #[arg(long)]
    verify_all: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let summary = runtime.block_on(run(args))?;
    println!("\nSUMMARY {summary}");
    Ok(())
}

fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http:// (no TLS here)")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    with_port
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("cannot resolve {authority}"))
}

async fn run(args: Args) -> anyhow::Result<String> {
    let gateway = match &args.spawn {
        Some(bin) => {
            let gw = spawn::Gateway::start(bin, &args.gateway_config).await?;
            println!(
                "spawned gateway pid {} on {} (data in {})",
                gw.process.pid(),
                gw.addr,
                gw.process.data_dir().display()
            );
            Some(gw)
        }
        None => None,
    };
    let (addr, key) = match &gateway {
        Some(gw) => (gw.addr, gw.key.clone()),
        None => {
            let key = match (&args.key, &args.key_file) {
                (Some(k), _) => k.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim()
                    .to_owned(),
                (None, None) => bail!("give --key, --key-file or --spawn"),
            };
            (parse_url(&args.url)?, key)
        }
    };
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let plan = driver::Plan {
        addr,
        key: key.clone(),
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration,
        requests: args.requests,
        max_time: Duration::from_secs_f64(args.max_time),
        request_timeout: Duration::from_secs(30),
        run_id: format!("load-{}-{}", std::process::id(), now_millis()),
    };
    let gw_pid = gateway.as_ref().map(|gw| gw.process.pid());
    let sample_cpu = move || {
        (
            gw_pid.and_then(|p| cpu::cpu_time(Some(p))),
            cpu::cpu_time(None),
            gw_pid.map(cpu::thread_times).unwrap_or_default(),
        )
    };
    let bodies = body::bodies(args.bodies.max(1), 12345);
    println!(
        "load: {} connections, warm-up {:.1} s, {}",
        args.connections,
        args.warmup,
        match (duration, args.requests) {
            (Some(d), _) => format!("{:.1} s measured", d.as_secs_f64()),
            (None, Some(n)) => format!("{n} measured requests"),
            (None, None) => unreachable!("a duration is the default"),
        }
    );
    let mut at_start = (None, None, Default::default());
    let outcome = driver::run(plan, bodies, || at_start = sample_cpu()).await;
    let at_end = sample_cpu();
    let window = outcome.finished - outcome.measure_from;
    let cpu = CpuSplit {
        gateway: at_end.0.zip(at_start.0).map(|(e, s)| e.saturating_sub(s)),
        generator: at_end.1.zip(at_start.1).map(|(e, s)| e.saturating_sub(s)),
    };
    let stats = outcome.stats;
    let summary = report::print(&stats, window, args.connections, cpu);
    let threads = cpu::thread_delta(&at_start.2, &at_end.2);
    if !threads.is_empty() {
        let secs = window.as_secs_f64().max(1e-9);
        let split: Vec<String> = threads
            .iter()
            .filter(|(_, t)| !t.is_zero())
            .map(|(name, t)| format!("{name} {:.0}%", 100.0 * t.as_secs_f64() / secs))
            .collect();
        println!("gateway threads    {} (of one core)", split.join(", "));
    }

    let host = addr.to_string();
    store_metrics(addr, &host).await;
    let verified = verify(addr, &host, &key, &stats, args.verify_all).await;
    if let Some(gw) = gateway {
        println!("{}", gw.process.stop(Duration::from_secs(20))?);
    }
    let verified = verified?;
    Ok(format!("{summary} verified={verified}"))
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Group-commit figures from `/metrics`: mean batch size and commit time over the whole run.
async fn store_metrics(addr: SocketAddr, host: &str) {
    let Ok(mut conn) = Conn::connect(addr).await else {
        return;
    };
    let Ok(r) = conn.send(&get(host, "", "/metrics")).await else {
        return;
    };
    let text = String::from_utf8_lossy(r.body);
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    if let (Some(bs), Some(bc), Some(cs), Some(cc)) = (
        value("gateway_store_batch_size_sum"),
        value("gateway_store_batch_size_count"),
        value("gateway_store_commit_seconds_sum"),
        value("gateway_store_commit_seconds_count"),
    ) {
        println!(
            "group commit       {:.0} commits, mean batch {:.1} writes, mean commit {:.2} ms, writer busy {:.1} s",
            cc,
            bs / bc.max(1.0),
            1000.0 * cs / cc.max(1.0),
            cs
        );
    }
}

/// Read acknowledged orders back: the last one acknowledged, a sample, and optionally all.
async fn verify(
    addr: SocketAddr,
    host: &str,
    key: &str,
    stats: &report::Stats,
    all: bool,
) -> anyhow::Result<String> {
    let mut conn = Conn::connect(addr).await?;
    let mut ids: Vec<&str> = stats.sample.iter().map(String::as_str).take(200).collect();
    if let Some((_, last)) = &stats.last_acked {
        ids.push(last);
    }
    let mut missing = Vec::new();
    for id in &ids {
        let r = conn
            .send(&get(host, key, &format!("/v1/orders/{id}")))
            .await?;
        if r.status != 200 || !String::from_utf8_lossy(r.body).contains(id) {
            missing.push(format!("{id} ({})", r.status));
        }
    }
    if !missing.is_empty() {
        bail!("acknowledged orders are not readable: {missing:?}");
    }
    let mut verdict = format!("{}/{} acked orders read back", ids.len(), ids.len());
    if let Some((_, last)) = &stats.last_acked {
        verdict.push_str(&format!(" (last {last})"));
    }
    println!("durability         {verdict}");
    if all {
        let total = count_all(&mut conn, host, key).await?;
        let acked = stats.accepted + stats.warmup_accepted;
        println!("stored orders      {total} (202s received: {acked})");
        if total < acked {
            bail!("{acked} orders acknowledged but only {total} stored");
        }
        verdict.push_str(&format!(", {total} stored >= {acked} acked"));
    }
    Ok(verdict.replace(' ', "_"))
}

async fn count_all(conn: &mut Conn, host: &str, key: &str) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/orders?limit=500&after={a}"),
            None => "/v1/orders?limit=500".to_owned(),
        };
        let r = conn.send(&get(host, key, &path)).await?;
        if r.status != 200 {
            bail!("GET {path}: {}", r.status);
        }
        let page: serde_json::Value = serde_json::from_slice(r.body)?;
        let n = page["orders"].as_array().map_or(0, Vec::len) as u64;
        total += n;
        match page["next_after"].as_str() {
            Some(next) if n > 0 => after = Some(next.to_owned()),
            _ => return Ok(total),
        }
    }
}
