//! Drive `connections` keep-alive connections, each sending one submission at a time (closed
//! loop), until the duration or the request budget is spent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::http::{Conn, SubmissionRequests, order_id};
use super::report::Stats;

#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub key: String,
    pub connections: usize,
    pub warmup: Duration,
    /// Measure for this long after the warm-up...
    pub duration: Option<Duration>,
    /// ...or until this many measured requests were sent.
    pub requests: Option<u64>,
    /// Hard stop however the run is bounded.
    pub max_time: Duration,
    /// A request unanswered after this long counts as an error (and the connection is replaced).
    pub request_timeout: Duration,
    /// Distinguishes this run's idempotency keys from earlier runs against the same gateway.
    pub run_id: String,
}

struct Shared {
    plan: Plan,
    requests: SubmissionRequests,
    bodies: Vec<Vec<u8>>,
    measure_from: Instant,
    stop_at: Instant,
    budget: AtomicU64,
}

/// What the run measured and when the measured window started and ended.
#[derive(Debug)]
pub struct Outcome {
    pub stats: Stats,
    pub measure_from: Instant,
    pub finished: Instant,
}

/// Run the plan. `at_measure_start` is called once when the warm-up ends (to sample CPU times).
pub async fn run(plan: Plan, bodies: Vec<Vec<u8>>, at_measure_start: impl FnOnce()) -> Outcome {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop_at = start
        + match plan.duration {
            Some(d) => (plan.warmup + d).min(plan.max_time),
            None => plan.max_time,
        };
    let shared = Arc::new(Shared {
        requests: SubmissionRequests::new(&plan.addr.to_string(), &plan.key),
        budget: AtomicU64::new(plan.requests.unwrap_or(u64::MAX)),
        bodies,
        measure_from,
        stop_at,
        plan,
    });
    let tasks: Vec<_> = (0..shared.plan.connections)
        .map(|i| tokio::spawn(connection(shared.clone(), i)))
        .collect();
    tokio::time::sleep_until(measure_from).await;
    at_measure_start();
    let mut stats = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(s);
        }
    }
    Outcome {
        stats,
        measure_from,
        finished: Instant::now(),
    }
}

async fn connection(shared: Arc<Shared>, index: usize) -> Stats {
    let mut stats = Stats::default();
    let mut request = Vec::with_capacity(4096);
    let mut conn: Option<Conn> = None;
    let bodies = shared.bodies.len();
    let mut n: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= shared.stop_at {
            break;
        }
        let measured = started >= shared.measure_from;
        if measured
            && shared
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_err()
        {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(shared.plan.addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    if measured {
                        stats.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        n += 1;
        let body = &shared.bodies[(index.wrapping_mul(7919) + n as usize) % bodies];
        shared.requests.build(
            &mut request,
            format_args!("{}-{index}-{n}", shared.plan.run_id),
            body,
        );
        if measured {
            stats.sent += 1;
        }
        let answer = tokio::time::timeout(shared.plan.request_timeout, c.send(&request)).await;
        let done = Instant::now();
        let close = match answer {
            Ok(Ok(r)) => {
                if r.status == 202 {
                    if measured {
                        stats.accepted += 1;
                    } else {
                        stats.warmup_accepted += 1;
                    }
                    if let Some(id) = order_id(r.body) {
                        let id = id.to_owned();
                        if n % 1000 == 1 {
                            stats.sample.push(id.clone());
                        }
                        stats.last_acked = Some((done.into_std(), id));
                    }
                } else if measured {
                    *stats.by_status.entry(r.status).or_default() += 1;
                    if stats.first_refusal.is_none() {
                        stats.first_refusal = Some(format!(
                            "{} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                        ));
                    }
                }
                if measured {
                    stats.record_latency(done - started);
                }
                r.close
            }
            Ok(Err(_)) | Err(_) => {
                if measured {
                    stats.errors += 1;
                }
                true
            }
        };
        if close {
            conn = None;
        }
    }
    stats
}
