//! Shared harness of the end-to-end tests: run the built `gateway` binary on a temporary data
//! directory, talk to it over HTTP, receive its deliveries on an in-test dispatch receiver that
//! checks every signature, and (for the multi-node tests) run a real PostgreSQL server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Admin API key configured on every test gateway.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// A non-admin API key.
pub const USER_KEY: &str = "test-user-key-9876543210";
/// Shared dispatch secret (deliveries and status events).
pub const SECRET: &str = "test-dispatch-secret";

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
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

/// `sha256=<hex HMAC-SHA256(secret, ts + "." + body)>`, computed independently of the gateway.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// Damm interim digit of a digit string.
pub fn damm(digits: &str) -> u8 {
    digits
        .bytes()
        .fold(0u8, |i, d| DAMM[i as usize][(d - b'0') as usize])
}

/// An order id as the contract describes it: 14-20 digits whose Damm check is 0.
pub fn is_valid_order_id(id: &str) -> bool {
    (14..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) && damm(id) == 0
}

/// `prefix` (digits) completed with its Damm check digit.
pub fn with_check_digit(prefix: &str) -> String {
    format!("{prefix}{}", damm(prefix))
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
    config_path: PathBuf,
    pub http: reqwest::Client,
}

pub fn http_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: building a client needs a provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the test HTTP client")
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
        let log_path = opts
            .data_dir
            .join(format!("gateway-{}-{}.log", opts.node_id, port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
        if !extra.contains("[sip]") {
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
        let mut fresh = Self::spawn(self.opts.clone(), self.port);
        self.child = fresh.child.take();
        self.log_path = fresh.log_path.clone();
        self.wait_ready().await;
    }

    /// POST a submission with the admin key.
    pub async fn submit(&self, body: &Value, idempotency_key: Option<&str>) -> Reply {
        let mut req = self
            .http
            .post(self.url("/v1/submissions"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("serialize"));
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        Reply::from(req.send().await.expect("POST /v1/submissions")).await
    }

    /// Submit and insist on 202: the new order id.
    pub async fn submit_ok(&self, body: &Value) -> String {
        let r = self.submit(body, None).await;
        assert_eq!(r.status, 202, "submission refused: {}", r.body);
        r.body["order_id"]
            .as_str()
            .expect("order_id in the answer")
            .to_owned()
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>) -> Reply {
        let mut req = self.http.post(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.expect("POST")).await
    }

    pub async fn order(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/orders/{id}"), Some(ADMIN_KEY)).await;
        assert_eq!(r.status, 200, "GET /v1/orders/{id}: {}", r.body);
        r.body
    }

    /// Every order, paging through the list endpoint with `limit`.
    pub async fn all_orders(&self, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let path = match &after {
                Some(a) => format!("/v1/orders?limit={limit}&after={a}"),
                None => format!("/v1/orders?limit={limit}"),
            };
            let r = self.get(&path, Some(ADMIN_KEY)).await;
            assert_eq!(r.status, 200, "GET {path}: {}", r.body);
            let page = r.body["orders"].as_array().expect("orders array").clone();
            assert!(page.len() <= limit as usize, "page larger than limit");
            out.extend(page);
            match r.body["next_after"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return out,
            }
        }
        panic!("paging did not end");
    }

    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("metrics body")
    }

    /// Send a status event signed with `secret` at `timestamp`.
    pub async fn event(&self, id: &str, body: &[u8], secret: &str, timestamp: i64) -> Reply {
        let ts = timestamp.to_string();
        let r = self
            .http
            .post(self.url(&format!("/v1/orders/{id}/events")))
            .header("content-type", "application/json")
            .header("x-gateway-timestamp", &ts)
            .header("x-gateway-signature", sign(secret, &ts, body))
            .body(body.to_vec())
            .send()
            .await
            .expect("POST event");
        Reply::from(r).await
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

/// An HTTP answer: status, headers and the body as JSON (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Assert the error shape `{"error":{"code","message","field"?}}` and return the code.
    pub fn error_code(&self) -> String {
        let e = &self.body["error"];
        assert!(
            e.is_object(),
            "not an error body ({}): {}",
            self.status,
            self.text
        );
        let message = e["message"].as_str().expect("error.message is a string");
        assert!(!message.is_empty(), "empty error message");
        e["code"]
            .as_str()
            .expect("error.code is a string")
            .to_owned()
    }

    pub fn error_field(&self) -> Option<String> {
        self.body["error"]["field"].as_str().map(str::to_owned)
    }
}

/// Sum of the samples of `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        {
            sum += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// The dispatch receiver: a small HTTP/1.1 server written on raw sockets so that it can also drop
// a connection without answering. It checks the signature of every request it reads.

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Status(u16),
    /// Read the request, then close the socket without answering.
    Drop,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub order_id: String,
    pub idempotency_key: String,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct ReceiverState {
    pub mode: Option<Mode>,
    /// Orders whose text contains this marker are answered 400.
    pub reject_marker: Option<String>,
    /// Delay before answering each request.
    pub delay: Duration,
    /// Requests whose request line contains this are held for 30 s, then dropped unanswered.
    pub hold_marker: Option<String>,
    /// Orders of held requests, with when they arrived.
    pub held: Vec<(String, Instant)>,
    /// Accepted (2xx-answered) deliveries, in arrival order.
    pub delivered: Vec<Delivery>,
    /// Every request read, whatever the answer.
    pub attempts: u64,
    /// Requests read and not yet answered whose sender still waits (connection open).
    pub in_flight: usize,
    /// The most `in_flight` ever was.
    pub max_in_flight: usize,
    pub answered_503: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// Problems: bad signature, stale timestamp, key/body mismatch, unparsable request.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub port: u16,
    pub state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver addr").port();
        let state = Arc::new(Mutex::new(ReceiverState {
            mode: Some(Mode::Accept),
            ..Default::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, st).await;
                });
            }
        });
        Receiver { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/orders", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("receiver lock").mode = Some(mode);
    }

    pub fn set_reject_marker(&self, marker: Option<&str>) {
        self.state.lock().expect("receiver lock").reject_marker = marker.map(str::to_owned);
    }

    pub fn set_hold_marker(&self, marker: Option<&str>) {
        self.state.lock().expect("receiver lock").hold_marker = marker.map(str::to_owned);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("receiver lock").delay = delay;
    }

    pub fn with<T>(&self, f: impl FnOnce(&ReceiverState) -> T) -> T {
        f(&self.state.lock().expect("receiver lock"))
    }

    /// How many times each order was accepted.
    pub fn delivery_counts(&self) -> HashMap<String, usize> {
        self.with(|s| {
            let mut m = HashMap::new();
            for d in &s.delivered {
                *m.entry(d.order_id.clone()).or_insert(0) += 1;
            }
            m
        })
    }

    pub fn problems(&self) -> Vec<String> {
        self.with(|s| s.problems.clone())
    }

    /// Wait (bounded) until every id in `ids` was accepted at least once.
    pub async fn wait_for_all(&self, ids: &[String], timeout: Duration) -> bool {
        wait_until(timeout, || async {
            let got = self.delivery_counts();
            ids.iter().all(|id| got.contains_key(id))
        })
        .await
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

async fn serve_connection(
    mut stream: TcpStream,
    state: Arc<Mutex<ReceiverState>>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(i) = find_header_end(&buf) {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers: HashMap<String, String> = HashMap::new();
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);

        let (status, delay) = judge(&state, &head, &headers, &body);
        if !delay.is_zero() {
            // Wait, but notice a sender that gives up (closes) meanwhile: `in_flight` counts
            // only requests someone still waits for.
            {
                let mut st = state.lock().expect("receiver lock");
                st.in_flight += 1;
                st.max_in_flight = st.max_in_flight.max(st.in_flight);
            }
            let mut probe = [0u8; 1];
            let gone = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                r = stream.read(&mut probe) => matches!(r, Ok(0) | Err(_)),
            };
            state.lock().expect("receiver lock").in_flight -= 1;
            if gone {
                return Ok(());
            }
        }
        let Some(status) = status else {
            // Drop mode: close without answering.
            return Ok(());
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let response = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n");
        stream.write_all(response.as_bytes()).await?;
    }
}

/// Check one request and decide the answer (`None`: drop the connection).
fn judge(
    state: &Arc<Mutex<ReceiverState>>,
    head: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> (Option<u16>, Duration) {
    let mut s = state.lock().expect("receiver lock");
    s.attempts += 1;
    let delay = s.delay;
    if headers.contains_key("transfer-encoding") {
        s.problems
            .push(format!("chunked delivery not expected: {head}"));
    }
    let ts = headers
        .get("x-gateway-timestamp")
        .cloned()
        .unwrap_or_default();
    let sig = headers
        .get("x-gateway-signature")
        .cloned()
        .unwrap_or_default();
    let key = headers.get("idempotency-key").cloned().unwrap_or_default();
    if sign(SECRET, &ts, body) != sig {
        s.problems
            .push(format!("bad signature {sig:?} for timestamp {ts:?}"));
    }
    match ts.parse::<i64>() {
        Ok(t) if (now_unix() - t).abs() <= 300 => {}
        _ => s
            .problems
            .push(format!("stale or missing timestamp {ts:?}")),
    }
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let order_id = parsed["id"].as_str().unwrap_or_default().to_owned();
    if order_id.is_empty() || order_id != key {
        s.problems.push(format!(
            "Idempotency-Key {key:?} does not match body id {order_id:?}"
        ));
    }
    if !head.starts_with("POST /orders") {
        s.problems.push(format!("unexpected request line: {head}"));
    }
    let request_line = head.lines().next().unwrap_or_default();
    if s.hold_marker
        .as_ref()
        .is_some_and(|m| request_line.contains(m.as_str()))
    {
        s.held.push((order_id, Instant::now()));
        return (None, Duration::from_secs(30));
    }
    let rejected = s.reject_marker.as_ref().is_some_and(|m| {
        parsed["text"]
            .as_str()
            .unwrap_or_default()
            .contains(m.as_str())
    });
    if rejected {
        s.rejected += 1;
        return (Some(400), delay);
    }
    match s.mode.unwrap_or(Mode::Accept) {
        Mode::Accept => {
            s.delivered.push(Delivery {
                at: Instant::now(),
                order_id,
                idempotency_key: key,
                body: parsed,
            });
            (Some(200), delay)
        }
        Mode::Status(code) => {
            if code == 503 {
                s.answered_503 += 1;
            }
            (Some(code), delay)
        }
        Mode::Drop => {
            s.dropped += 1;
            (None, delay)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a throwaway server on loopback, stopped on drop.

fn find_pg_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Debian links initdb into /usr/local/bin or /usr/bin; the `postgres` server it
                // needs lives beside the real file.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl PgServer {
    fn cmd(&self, program: &str) -> Command {
        pg_cmd(&self.bin, self.as_postgres, program)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// initdb, start on 127.0.0.1 with the socket in the temp dir. Panics (test failure) when the
    /// PostgreSQL binaries are missing.
    pub fn start() -> PgServer {
        let bin = find_pg_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in \
                 /usr/lib/postgresql/*/bin: run `scripts/setup.sh --test` to install them"
            )
        });
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("gateway-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                ok.success(),
                "cannot chown the PostgreSQL dir to user postgres"
            );
        }
        let port = free_port();
        let mut pg = PgServer {
            dir,
            bin,
            as_postgres,
            port,
        };
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            pg.dir.path().display()
        );
        let out = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(pg.data())
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(pg.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            let log =
                std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap_or_default();
            pg.port = 0;
            panic!(
                "pg_ctl start failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg
    }

    /// Restart the server (fast shutdown: open connections are cut, as in a failover).
    pub fn restart(&self) {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            // The log file again: without it the restarted server would keep this command's
            // output pipes open, and `output()` would wait for ever.
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-m", "fast", "-w", "-t", "60", "restart"])
            .output()
            .expect("run pg_ctl restart");
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Create a database and return its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let admin = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL server");
        let conn = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        drop(client);
        let _ = conn.await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

fn pg_cmd(bin: &Path, as_postgres: bool, program: &str) -> Command {
    let exe = bin.join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c.current_dir("/");
        c
    } else {
        Command::new(exe)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// Channel tests: a gateway whose config file has extra sections (`[channels]`).

impl Gateway {
    /// Start a gateway whose config is the usual one plus `extra` TOML, and wait until ready.
    pub async fn start_with_extra(opts: GatewayOptions, extra: &str) -> Gateway {
        let mut gw = Self::spawn_with_extra(opts, free_port(), extra);
        gw.wait_ready().await;
        gw
    }

    /// POST a raw body with a content type; the answer as text (and JSON when it is).
    pub async fn post_raw(&self, path_and_query: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let r = self
            .http
            .post(self.url(path_and_query))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        Reply::from(r).await
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
}

/// Write 8 kHz mono 16-bit samples as a WAV file (prompts and caller audio for call tests).
pub fn write_wav_8k(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create a WAV file");
    for &s in samples {
        w.write_sample(s).expect("write a WAV file");
    }
    w.finalize().expect("finish a WAV file");
}
