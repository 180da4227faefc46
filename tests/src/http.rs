//! HTTP against a test gateway: the client, the [`Reply`] every request helper returns, the
//! dispatch signature computed independently of the gateway, and Prometheus text parsing.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::ADMIN_KEY;
use crate::process::Gateway;

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

pub fn http_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: building a client needs a provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the test HTTP client")
}

impl Gateway {
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

    /// PUT a JSON body (as given, valid or not) with `key`.
    pub async fn put_json(&self, path: &str, key: Option<&str>, body: &str) -> Reply {
        self.send_json(reqwest::Method::PUT, path, key, body).await
    }

    /// POST a JSON body (as given, valid or not) with `key`.
    pub async fn post_json(&self, path: &str, key: Option<&str>, body: &str) -> Reply {
        self.send_json(reqwest::Method::POST, path, key, body).await
    }

    /// POST a JSON body with `key` and an `Idempotency-Key`.
    pub async fn post_json_idempotent(
        &self,
        path: &str,
        key: Option<&str>,
        idempotency_key: &str,
        body: &str,
    ) -> Reply {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.expect("POST")).await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(
            req.send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}")),
        )
        .await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> Reply {
        let mut req = self.http.delete(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.expect("DELETE")).await
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

    /// Waits up to `within` until the outbox is empty and has delivered `delivered` orders in
    /// all; whether it got there.
    pub async fn outbox_settled(&self, delivered: usize, within: Duration) -> bool {
        crate::wait_until(within, || async {
            let m = self.metrics().await;
            metric(&m, "gateway_outbox_queued", &[]) == 0.0
                && metric(&m, "gateway_outbox_delivered", &[]) == delivered as f64
        })
        .await
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

impl Gateway {
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

/// One `POST {base}/v1/submissions` with Idempotency-Key `key` (admin key, 5 s timeout): the 202
/// answer's body, or `None` after a connection error or a 5xx (to be tried again with the same
/// key). Any other answer panics.
pub async fn submit_once(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &[u8],
) -> Option<Value> {
    let sent = client
        .post(format!("{base}/v1/submissions"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .timeout(Duration::from_secs(5))
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == 202 => Some(r.json().await.expect("202 body is JSON")),
        Ok(r) if r.status().is_server_error() => None,
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            panic!("submission {key} answered {status}: {text}");
        }
        Err(_) => None,
    }
}

/// The web form as served to one browser: its anti-forgery token and the cookie it is bound to.
#[derive(Debug)]
pub struct ServedForm {
    pub token: String,
    pub cookie: String,
}

impl Gateway {
    /// `GET /`: the web form, with its token and cookie.
    pub async fn serve_form(&self) -> ServedForm {
        let r = self.http.get(self.url("/")).send().await.expect("GET /");
        assert_eq!(r.status(), 200);
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a form cookie")
            .to_owned();
        let html = r.text().await.expect("form html");
        let token = html
            .split("name=\"token\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a token in the form")
            .to_owned();
        ServedForm { token, cookie }
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
