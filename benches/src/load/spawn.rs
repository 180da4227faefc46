//! `--spawn`: run the gateway binary in a fresh temporary data directory with its own config,
//! wait until it is ready, and stop it with SIGTERM afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};

use rand::Rng;

use crate::process::GatewayProcess;

#[derive(Debug)]
pub struct Gateway {
    /// The process: its pid, data directory, and `stop`.
    pub process: GatewayProcess,
    pub addr: SocketAddr,
    pub key: String,
}

impl Gateway {
    /// Start `binary` with a config listening on a free loopback port; `extra_toml` is appended
    /// to the generated config (e.g. `[store]\nmax_batch = 4096`).
    pub async fn start(binary: &Path, extra_toml: &str) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new().prefix("intake-load-").tempdir()?;
        let addr = free_port()?;
        let key = hex(&rand::rng().random::<[u8; 24]>());
        let config = dir.path().join("gateway.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = {data:?}\n\n[http]\nlisten = \"{addr}\"\n\n[log]\nlevel = \"warn\"\n\n\
                 [[api.keys]]\nname = \"bench\"\nkey = \"{key}\"\nadmin = true\n\n{extra_toml}\n",
                data = data.display().to_string(),
            ),
        )?;
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let process = GatewayProcess::start(cmd, binary, dir, addr, &key).await?;
        Ok(Gateway { process, addr, key })
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
