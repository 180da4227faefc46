//! The dispatch receiver: a small HTTP/1.1 server written on raw sockets so that it can also drop
//! a connection without answering. It checks the signature of every request it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::{now_unix, sign};
use crate::{SECRET, wait_until};

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
