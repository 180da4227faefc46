//! `--spawn`: run the gateway binary in a fresh temporary data directory with its own config,
//! wait until it is ready, and stop it with SIGTERM afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use tempfile::TempDir;

use super::http::{Conn, get};

#[derive(Debug)]
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub key: String,
    /// Holds the data directory until the gateway is stopped.
    dir: TempDir,
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
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut gw = Gateway {
            child,
            addr,
            key,
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
        let request = get(&self.addr.to_string(), &self.key, "/readyz");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the gateway exited before it was ready: {status}");
            }
            if let Ok(mut conn) = Conn::connect(self.addr).await
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

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
