//! `--spawn`: run the gateway binary on free loopback ports with a fresh temporary data
//! directory, configured through `GATEWAY__SECTION__KEY` environment overrides, wait until its
//! HTTP side is ready, and stop it with SIGTERM afterwards.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

use crate::process::GatewayProcess;

/// A gateway this run started.
#[derive(Debug)]
pub struct Gateway {
    /// The process: its pid, data directory, and `stop`.
    pub process: GatewayProcess,
    /// SIP over UDP (and TCP on the same port).
    pub sip: SocketAddr,
    pub http: SocketAddr,
}

/// What the spawned gateway is given.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway's own RTP port range.
    pub rtp_ports: (u16, u16),
    pub max_calls: usize,
    /// A config file (`gateway run --config`); the environment overrides above win over it.
    pub config: Option<PathBuf>,
    /// `ivr.flows_dir`.
    pub flows_dir: Option<PathBuf>,
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
        cmd.arg("run");
        if let Some(config) = &settings.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(flows) = &settings.flows_dir {
            cmd.env("GATEWAY__IVR__FLOWS_DIR", flows);
        }
        cmd.env_remove("RUST_LOG")
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
        let process = GatewayProcess::start(cmd, binary, dir, http, "").await?;
        Ok(Gateway { process, sip, http })
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
