//! A gateway process a load generator started with `--spawn`: its temporary data directory,
//! waiting until its HTTP side answers `/readyz`, and stopping it with SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::load::http::{Conn, get};

/// A started gateway binary and the directory it keeps its data in.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// Holds the data directory until the gateway is stopped.
    dir: TempDir,
}

impl GatewayProcess {
    /// Starts `cmd` (which runs `binary`), then waits up to 30 s until `http` answers
    /// `GET /readyz` (with API key `key`, empty for none) with 200.
    pub async fn start(
        mut cmd: Command,
        binary: &Path,
        dir: TempDir,
        http: SocketAddr,
        key: &str,
    ) -> anyhow::Result<GatewayProcess> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut process = GatewayProcess { child, dir };
        process
            .wait_ready(http, key, Duration::from_secs(30))
            .await?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(
        &mut self,
        http: SocketAddr,
        key: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let request = get(&http.to_string(), key, "/readyz");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the gateway exited before it was ready: {status}");
            }
            if let Ok(mut conn) = Conn::connect(http).await
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
