//! `--spawn`: run the gateway binary on free loopback ports with a fresh temporary data
//! directory, configured through `GATEWAY__SECTION__KEY` environment overrides, wait until its
//! HTTP side is ready, and stop it with SIGTERM afterwards.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::load::http::{Conn, get};

/// A gateway this run started.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// SIP over UDP (and TCP on the same port).
    pub sip: SocketAddr,
    pub http: SocketAddr,
    /// Holds the data directory until the gateway is stopped.
    dir: TempDir,
}

/// What the spawned gateway is given.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway's own RTP port range.
    pub rtp_ports: (u16, u16),
    pub max_calls: usize,
    /// More `GATEWAY__…` overrides, e.g. `GATEWAY__LOG__LEVEL=info`.
    pub env: Vec<(String, String)>,
}

impl Gateway {
    pub async fn start(binary: &Path, settings: &Settings) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new().prefix("call-load-").tempdir()?;
        let sip = free_udp_and_tcp_port()?;
        let http = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .env_remove("RUST_LOG")
            .env("GATEWAY__LOG__LEVEL", "warn")
            .env("GATEWAY__NODE__DATA_DIR", &data)
            .env("GATEWAY__HTTP__LISTEN", http.to_string())
            .env("GATEWAY__SIP__UDP", sip.to_string())
            .env("GATEWAY__SIP__TCP", sip.to_string())
            .env(
                "GATEWAY__MEDIA__RTP_PORT_MIN",
                settings.rtp_ports.0.to_string(),
            )
            .env(
                "GATEWAY__MEDIA__RTP_PORT_MAX",
                settings.rtp_ports.1.to_string(),
            )
            .env("GATEWAY__CALLS__MAX_CALLS", settings.max_calls.to_string())
            .stdin(Stdio::null());
        for (k, v) in &settings.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut gw = Gateway {
            child,
            sip,
            http,
            dir,
        };
        gw.wait_ready(Duration::from_secs(30)).await?;
        Ok(gw)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let request = get(&self.http.to_string(), "", "/readyz");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the gateway exited before it was ready: {status}");
            }
            if let Ok(mut conn) = Conn::connect(self.http).await
                && let Ok(r) = conn.send(&request).await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the gateway was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (killed after that).
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<String> {
        let pid = self.child.id().to_string();
        // std has no signal API and unsafe code is denied here: `kill` does it.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(format!("gateway exited ({status})"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(format!("gateway did not stop within {grace:?}; killed"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port free for both UDP and TCP (the gateway listens for SIP on both).
fn free_udp_and_tcp_port() -> anyhow::Result<SocketAddr> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let addr = udp.local_addr()?;
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}
