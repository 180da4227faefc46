//! # support: the shared harness of the end-to-end tests
//!
//! Run the built `gateway` binary on a temporary data directory, talk to it over HTTP, receive its
//! deliveries on an in-test dispatch receiver that checks every signature, and (for the
//! multi-node tests) run a real PostgreSQL server. The test binaries in `tests/tests/` use it as
//! `support::…`, split by concern:
//!
//! - [`process`]: the [`Gateway`] process (options, config file, readiness, kill, restart);
//! - [`http`]: the HTTP client, [`Reply`], request helpers, signatures, metrics;
//! - [`receiver`]: the dispatch [`Receiver`];
//! - [`postgres`]: a throwaway [`PgServer`];
//! - [`audio`]: WAV helpers;
//! - [`sipp`]: SIPp scenarios and one call through SIPp;
//! - [`ids`]: order ids and their Damm check digit, the WorkOrder schema.
//!
//! ## Which gateway binary runs
//!
//! Integration tests outside the `gateway` package cannot use `env!("CARGO_BIN_EXE_gateway")`,
//! and Cargo does not build another package's binary for them. [`gateway_binary`] therefore runs
//! `cargo build -p gateway --bin gateway` once per test process (guarded by a `OnceLock`), with
//! the profile and target directory of the running test executable (`target/<profile>/deps/x`
//! gives `target/<profile>/gateway`, so `CARGO_TARGET_DIR` is respected), and uses
//! `target/<profile>/gateway`. When the binary is current that build is a no-op of a second or
//! two; when `gateway/src` changed since, it is rebuilt, so a test never runs a stale gateway.
//! `GATEWAY_TEST_BIN=/path/to/gateway` skips the build and runs that binary instead.

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

pub mod audio;
pub mod browser;
pub mod http;
pub mod ids;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod sipp;

pub use audio::write_wav_8k;
pub use http::{Reply, ServedForm, http_client, metric, now_unix, sign, submit_once};
pub use ids::{damm, is_valid_order_id, with_check_digit, work_order_schema};
pub use postgres::PgServer;
pub use process::{Gateway, GatewayOptions, StoreOpt, gateway_binary};
pub use receiver::{Delivery, Mode, Receiver, ReceiverState};

/// Admin API key configured on every test gateway.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// A non-admin API key.
pub const USER_KEY: &str = "test-user-key-9876543210";
/// Shared dispatch secret (deliveries and status events).
pub const SECRET: &str = "test-dispatch-secret";

/// A port free a moment ago on 127.0.0.1 for both TCP and UDP, never handed out twice in this
/// test process.
///
/// Why not bind port 0: the kernel's ephemeral range (32768-60999) is where every outgoing
/// connection and every `bind(0)` of every process lands, and where the call tests give gateways
/// their RTP ranges, so a port "free a moment ago" there is soon taken by someone else (a CI run
/// failed on exactly that: a queue test's SIP port became another gateway's RTP port). Ports here
/// come from 12000-19999, below the ephemeral range and outside every RTP range the tests
/// configure, four apart (SIPp's media takes the port after its own) from a per-process start,
/// each checked with a TCP and a UDP bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 8_000;
    const STEP: u32 = 4;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (std::process::id() % (COUNT / STEP)) * STEP;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..COUNT / STEP {
        let port = (FIRST + NEXT.fetch_add(STEP, Ordering::Relaxed) % COUNT) as u16;
        let tcp = StdListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + COUNT - 1)
}

/// Poll `cond` until it is true or `timeout` passes; returns whether it became true.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
