//! A `gateway run` process on a temporary data directory: its options and config file, its
//! log, readiness, SIGKILL / SIGTERM / restart, and the binary it runs (see [`gateway_binary`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::http_client;
use crate::receiver::Receiver;
use crate::{ADMIN_KEY, SECRET, USER_KEY, free_port, wait_until};

/// The `gateway` binary the tests run: `GATEWAY_TEST_BIN` when set, else `target/<profile>/gateway`
/// beside the running test executable, built (or rebuilt when stale) once per test process by
/// `cargo build -p gateway --bin gateway` with that profile and target directory.
pub fn gateway_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GATEWAY_TEST_BIN") {
            return PathBuf::from(bin);
        }
        build_gateway()
    })
}

fn build_gateway() -> PathBuf {
    // target/<profile>/deps/<test executable>: the binary goes to target/<profile>/gateway.
    let exe = std::env::current_exe().expect("the path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("target/<profile> has a parent directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // `cargo test` sets CARGO for the tests it runs; run directly, the test finds cargo on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_this_test) {
            command.env_remove(&name);
        }
    }
    let out = command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--profile", profile, "-p", "gateway", "--bin", "gateway"])
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build -p gateway");
    assert!(
        out.status.success(),
        "cargo build -p gateway failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = profile_dir.join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "cargo build -p gateway did not produce {}",
        binary.display()
    );
    binary
}

/// Whether `name` is one of the variables `cargo test` sets for the test it runs (not for
/// itself). Build scripts watch some of them (ring: `CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`):
/// passed on to the inner `cargo build`, they would rerun and rebuild everything above them, and
/// the next `cargo test` would rebuild it all back.
fn set_by_cargo_for_this_test(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_CFG_")
        || name.starts_with("CARGO_FEATURE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// Which store a gateway uses.
#[derive(Debug, Clone)]
pub enum StoreOpt {
    Sqlite,
    Postgres(String),
}

/// What varies between the gateways the tests start.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub node_id: u8,
    pub data_dir: PathBuf,
    pub dispatch_url: Option<String>,
    pub log_format: &'static str,
    pub log_level: &'static str,
    pub store: StoreOpt,
    pub lease_ms: u64,
    pub concurrency: usize,
    pub max_body_bytes: usize,
}

impl GatewayOptions {
    pub fn new(data_dir: &Path) -> Self {
        GatewayOptions {
            node_id: 1,
            data_dir: data_dir.to_owned(),
            dispatch_url: None,
            log_format: "human",
            log_level: "info",
            store: StoreOpt::Sqlite,
            lease_ms: 2_000,
            concurrency: 32,
            max_body_bytes: 65_536,
        }
    }

    pub fn dispatch_to(mut self, receiver: &Receiver) -> Self {
        self.dispatch_url = Some(receiver.url());
        self
    }

    fn toml(&self, port: u16) -> String {
        let mut t = format!(
            "[node]\nid = {}\nutc_offset = \"+08:00\"\ndata_dir = {:?}\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = {}\nrequest_timeout_ms = 10000\n\n\
             [log]\nformat = \"{}\"\nlevel = \"{}\"\n\n",
            self.node_id,
            self.data_dir.display().to_string(),
            self.max_body_bytes,
            self.log_format,
            self.log_level,
        );
        match &self.store {
            StoreOpt::Sqlite => t.push_str("[store]\nkind = \"sqlite\"\n\n"),
            StoreOpt::Postgres(url) => t.push_str(&format!(
                "[store]\nkind = \"postgres\"\npostgres_url = {url:?}\n\n"
            )),
        }
        t.push_str(&format!(
            "[[api.keys]]\nname = \"admin\"\nkey = \"{ADMIN_KEY}\"\nadmin = true\n\n\
             [[api.keys]]\nname = \"app\"\nkey = \"{USER_KEY}\"\nadmin = false\n\n"
        ));
        t.push_str(&format!(
            "[dispatch]\nsecret = \"{SECRET}\"\nconcurrency = {}\ntimeout_ms = 3000\n\
             backoff_initial_ms = 50\nbackoff_max_ms = 500\npoll_interval_ms = 100\n\
             lease_ms = {}\nevent_max_skew_s = 300\n",
            self.concurrency, self.lease_ms
        ));
        if let Some(url) = &self.dispatch_url {
            t.push_str(&format!("url = {url:?}\n"));
        }
        t
    }
}

/// A running `gateway run` process. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub opts: GatewayOptions,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Start a gateway on a fresh port and wait (bounded) until `/readyz` answers 200.
    pub async fn start(opts: GatewayOptions) -> Gateway {
        let port = free_port();
        Self::start_on(opts, port).await
    }

    pub async fn start_on(opts: GatewayOptions, port: u16) -> Gateway {
        let mut gw = Self::spawn(opts, port);
        gw.wait_ready().await;
        gw
    }

    /// Start the process without waiting for it to be ready.
    pub fn spawn(opts: GatewayOptions, port: u16) -> Gateway {
        Self::spawn_with_extra(opts, port, "")
    }

    /// Like [`Gateway::spawn`], with `extra` TOML (e.g. a `[web]` section) appended to the config.
    pub fn spawn_with_extra(opts: GatewayOptions, port: u16, extra: &str) -> Gateway {
        std::fs::create_dir_all(&opts.data_dir).expect("create data dir");
        let config_path = opts.data_dir.join(format!("gateway-{}.toml", opts.node_id));
        std::fs::write(&config_path, format!("{}\n{extra}\n", opts.toml(port)))
            .expect("write the config file");
        Self::launch(opts, port, config_path)
    }

    /// Run the gateway on the config file already written.
    fn launch(opts: GatewayOptions, port: u16, config_path: PathBuf) -> Gateway {
        let log_path = opts
            .data_dir
            .join(format!("gateway-{}-{}.log", opts.node_id, port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the log file");
        let mut command = Command::new(gateway_binary());
        let config = std::fs::read_to_string(&config_path).unwrap_or_default();
        if !config.contains("[sip]") {
            // Tests run in parallel: SIP on free ports unless the test places calls itself.
            command
                .env("GATEWAY__SIP__UDP", "127.0.0.1:0")
                .env("GATEWAY__SIP__TCP", "127.0.0.1:0");
        }
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("GATEWAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn the gateway binary");
        Gateway {
            child: Some(child),
            port,
            opts,
            log_path,
            config_path,
            http: http_client(),
        }
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.base());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "gateway exited during startup with {status}; log:\n{}",
                    self.log()
                );
            }
            let ready = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!("gateway not ready within 30 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway is running").id()
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the gateway");
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (at most 20 s) for the exit status.
    pub async fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the gateway") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gateway did not exit within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (at most `timeout`) for the process to exit by itself, as a refused start does.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the same configuration again on the same port and data dir.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the gateway before restarting it"
        );
        // The same config file, extra sections and all.
        let mut fresh = Self::launch(self.opts.clone(), self.port, self.config_path.clone());
        self.child = fresh.child.take();
        self.log_path = fresh.log_path.clone();
        self.wait_ready().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// Channel tests: a gateway whose config file has extra sections (`[channels]`).

impl Gateway {
    /// Start a gateway whose config is the usual one plus `extra` TOML, and wait until ready.
    pub async fn start_with_extra(opts: GatewayOptions, extra: &str) -> Gateway {
        let mut gw = Self::spawn_with_extra(opts, free_port(), extra);
        gw.wait_ready().await;
        gw
    }
}

impl Gateway {
    /// The one call detail record the gateway wrote (`<data_dir>/cdr/*.jsonl`), waiting up to
    /// 20 s for it; fails the test if there is none or more than one.
    pub async fn call_record(&self) -> Value {
        let dir = self.opts.data_dir.join("cdr");
        let found = wait_until(Duration::from_secs(20), || {
            let dir = dir.clone();
            async move {
                std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.len() > 0))
                    })
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(found, "no call record written: {}", self.log());
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("cdr dir").flatten() {
            let text = std::fs::read_to_string(entry.path()).expect("read cdr");
            for line in text.lines() {
                records.push(serde_json::from_str::<Value>(line).expect("CDR line is JSON"));
            }
        }
        assert_eq!(records.len(), 1, "{records:?}");
        records.remove(0)
    }

    /// The call detail records once there are `n` of them (waiting up to 30 s), in the order
    /// they were written (calls end in that order).
    pub async fn call_records(&self, n: usize) -> Vec<Value> {
        let dir = self.opts.data_dir.join("cdr");
        let read = |dir: &std::path::Path| {
            let mut records = Vec::new();
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                for line in text.lines().filter(|l| l.ends_with('}')) {
                    records.push(serde_json::from_str::<Value>(line).expect("CDR line is JSON"));
                }
            }
            records
        };
        let found = wait_until(Duration::from_secs(30), || {
            let dir = dir.clone();
            async move { read(&dir).len() >= n }
        })
        .await;
        let records = read(&dir);
        assert!(
            found,
            "{} of {n} call records: {}",
            records.len(),
            self.log()
        );
        records
    }
}
