//! The HTTP API end to end: bad input is refused with a clear JSON error and changes nothing,
//! idempotent replays, reading and paging orders, signed status events, clean shutdown, and logs
//! that never carry personal data in clear.

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    ADMIN_KEY, Gateway, GatewayOptions, Mode, Receiver, SECRET, USER_KEY, is_valid_order_id,
    metric, now_unix, with_check_digit,
};

/// What a bad request must not change: orders listed, outbox figures, created submissions.
async fn snapshot(gw: &Gateway) -> (usize, f64, f64) {
    let orders = gw.all_orders(500).await.len();
    let m = gw.metrics().await;
    (
        orders,
        metric(&m, "gateway_outbox_queued", &[]),
        metric(&m, "gateway_submissions_total", &[("outcome", "created")]),
    )
}

async fn raw_submit(
    gw: &Gateway,
    body: Vec<u8>,
    auth: Option<&str>,
    content_type: Option<&str>,
    idempotency_key: Option<&str>,
) -> support::Reply {
    let mut req = gw.http.post(gw.url("/v1/submissions")).body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    support::Reply::from(req.send().await.expect("POST /v1/submissions")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let bearer = format!("Bearer {ADMIN_KEY}");
    let json_ct = Some("application/json");

    let first = gw.submit(&json!({"text": "路面塌陷"}), Some("key-1")).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let before = snapshot(&gw).await;
    assert_eq!(before, (1, 1.0, 1.0));

    // (name, body, expected status, expected code, expected field)
    let long_text = "长".repeat(5_001);
    type Case = (
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            b"{\"text\": ".to_vec(),
            400,
            "invalid_json",
            None,
        ),
        (
            "not JSON at all",
            b"text=hello".to_vec(),
            400,
            "invalid_json",
            None,
        ),
        (
            "an array",
            b"[{\"text\":\"x\"}]".to_vec(),
            400,
            "invalid_json",
            None,
        ),
        (
            "missing text",
            br#"{"citizen":{"name":"x"}}"#.to_vec(),
            422,
            "invalid_field",
            Some("text"),
        ),
        (
            "empty text",
            br#"{"text":"  "}"#.to_vec(),
            422,
            "invalid_field",
            Some("text"),
        ),
        (
            "text too long",
            json!({"text": long_text}).to_string().into_bytes(),
            422,
            "invalid_field",
            Some("text"),
        ),
        (
            "text of the wrong type",
            br#"{"text":5}"#.to_vec(),
            422,
            "invalid_field",
            Some("text"),
        ),
        (
            "lat of the wrong type",
            br#"{"text":"x","location":{"lat":"north","lng":114.3}}"#.to_vec(),
            422,
            "invalid_field",
            Some("location.lat"),
        ),
        (
            "lat out of range",
            br#"{"text":"x","location":{"lat":95.0,"lng":114.3}}"#.to_vec(),
            422,
            "invalid_field",
            Some("location.lat"),
        ),
        (
            "lng without lat",
            br#"{"text":"x","location":{"lng":114.3}}"#.to_vec(),
            422,
            "invalid_field",
            Some("location.lat"),
        ),
        (
            "bad phone",
            br#"{"text":"x","citizen":{"phone":"call me"}}"#.to_vec(),
            422,
            "invalid_field",
            Some("citizen.phone"),
        ),
        (
            "unknown kind",
            br#"{"text":"x","kind":"rant"}"#.to_vec(),
            422,
            "invalid_field",
            Some("kind"),
        ),
        (
            "attachments not a list",
            br#"{"text":"x","attachments":{"url":"u"}}"#.to_vec(),
            422,
            "invalid_field",
            Some("attachments"),
        ),
    ];
    for (name, body, status, code, field) in cases {
        let r = raw_submit(&gw, body, Some(&bearer), json_ct, None).await;
        assert_eq!(r.status, status, "{name}: {}", r.text);
        assert_eq!(r.error_code(), code, "{name}: {}", r.text);
        if let Some(f) = field {
            assert_eq!(r.error_field().as_deref(), Some(f), "{name}: {}", r.text);
        }
    }

    // Unknown fields are refused and named (a typo must not lose the citizen's text).
    for (body, unknown) in [
        (r#"{"text":"x","txt":"y"}"#, "txt"),
        (r#"{"text":"x","citizen":{"nmae":"y"}}"#, "nmae"),
    ] {
        let r = raw_submit(&gw, body.as_bytes().to_vec(), Some(&bearer), json_ct, None).await;
        assert!(
            r.status == 400 || r.status == 422,
            "unknown field {unknown}: {}",
            r.text
        );
        r.error_code();
        assert!(
            r.text.contains(unknown),
            "the error should name {unknown}: {}",
            r.text
        );
    }

    // Oversized body.
    let huge = json!({"text": "x".repeat(70_000)}).to_string().into_bytes();
    let r = raw_submit(&gw, huge, Some(&bearer), json_ct, None).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.error_code(), "payload_too_large");

    // Content type.
    let ok_body = br#"{"text":"x"}"#.to_vec();
    let r = raw_submit(
        &gw,
        ok_body.clone(),
        Some(&bearer),
        Some("text/plain"),
        None,
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text);
    r.error_code();

    // Keys.
    for auth in [
        None,
        Some("Bearer wrong-key"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
    ] {
        let r = raw_submit(&gw, ok_body.clone(), auth, json_ct, None).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text);
        assert_eq!(r.error_code(), "unauthorized");
    }
    let r = gw.get("/v1/orders", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");

    // Idempotency-Key reused with another body, and malformed keys.
    let r = raw_submit(
        &gw,
        r#"{"text":"另一件事"}"#.as_bytes().to_vec(),
        Some(&bearer),
        json_ct,
        Some("key-1"),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.error_code(), "idempotency_conflict");
    assert_eq!(r.error_field().as_deref(), Some("Idempotency-Key"));
    let too_long = "k".repeat(300);
    for key in [too_long.as_str(), "has space"] {
        let r = raw_submit(&gw, ok_body.clone(), Some(&bearer), json_ct, Some(key)).await;
        assert_eq!(r.status, 400, "key {key:?}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_header");
        assert_eq!(r.error_field().as_deref(), Some("Idempotency-Key"));
    }

    // Unknown endpoint and wrong method also answer in the error shape.
    let r = gw.get("/v1/nope", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 404);
    r.error_code();
    let r = gw.get("/v1/submissions", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 405, "{}", r.text);
    r.error_code();

    // Bad query parameters.
    for q in [
        "limit=0",
        "limit=501",
        "limit=ten",
        "since=yesterday",
        "after=123",
        "colour=red",
    ] {
        let r = gw.get(&format!("/v1/orders?{q}"), Some(ADMIN_KEY)).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        r.error_code();
    }

    assert_eq!(
        snapshot(&gw).await,
        before,
        "a refused request changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_gets_the_same_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let body = json!({"text": "楼道灯坏了", "citizen": {"phone": "13800138000"}});
    let a = gw.submit(&body, Some("retry-1")).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert!(a.headers.get("idempotent-replayed").is_none());
    let b = gw.submit(&body, Some("retry-1")).await;
    assert_eq!(b.status, 202, "{}", b.text);
    assert_eq!(a.body["order_id"], b.body["order_id"]);
    assert_eq!(b.body["status"], "accepted");
    assert_eq!(
        b.headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    // Another key is another order.
    let c = gw.submit(&body, Some("retry-2")).await;
    assert_eq!(c.status, 202);
    assert_ne!(c.body["order_id"], a.body["order_id"]);
    assert_eq!(gw.all_orders(100).await.len(), 2);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "gateway_outbox_queued", &[]), 2.0, "{m}");
    assert_eq!(
        metric(&m, "gateway_submissions_total", &[("outcome", "replayed")]),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_read_by_id_and_paged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let id = gw
            .submit_ok(&json!({"text": format!("第{i}件事"), "kind": "consultation"}))
            .await;
        assert!(is_valid_order_id(&id), "{id}");
        ids.push(id);
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());

    for (i, id) in ids.iter().enumerate() {
        let o = gw.order(id).await;
        assert_eq!(o["id"], id.as_str());
        assert_eq!(o["text"], format!("第{i}件事"));
        assert_eq!(o["kind"], "consultation");
        assert_eq!(o["status"], "accepted");
        assert_eq!(o["channel"], "app");
    }
    // A non-admin key reads too.
    let r = gw
        .get(&format!("/v1/orders/{}", ids[0]), Some(USER_KEY))
        .await;
    assert_eq!(r.status, 200);

    // A mistyped number (last digit changed) fails the check digit.
    let id = &ids[0];
    let last = id.as_bytes()[id.len() - 1] - b'0';
    let typo = format!("{}{}", &id[..id.len() - 1], (last + 1) % 10);
    let r = gw.get(&format!("/v1/orders/{typo}"), Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_order_id");
    let r = gw.get("/v1/orders/12AB567890123", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_order_id");
    // A well-formed number that was never issued.
    let unknown = with_check_digit(&format!("{}99999", &id[..id.len() - 6]));
    assert!(!ids.contains(&unknown));
    let r = gw
        .get(&format!("/v1/orders/{unknown}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(r.status, 404, "{unknown}: {}", r.text);
    assert_eq!(r.error_code(), "not_found");

    // Paging: 3 + 3 + 1, in submission order, nothing twice, nothing missing.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/orders?limit=3&after={a}"),
            None => "/v1/orders?limit=3".to_owned(),
        };
        let r = gw.get(&path, Some(ADMIN_KEY)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["orders"].as_array().expect("orders").clone();
        pages += 1;
        assert!(pages <= 4, "paging does not end");
        seen.extend(
            page.iter()
                .map(|o| o["id"].as_str().expect("id").to_owned()),
        );
        match &r.body["next_after"] {
            Value::String(n) => {
                assert_eq!(page.len(), 3);
                assert_eq!(page.last().map(|o| &o["id"]), Some(&json!(n)));
                after = Some(n.clone());
            }
            Value::Null => break,
            other => panic!("next_after is {other}"),
        }
    }
    assert_eq!(seen, ids, "paging lost, repeated or reordered orders");
    assert_eq!(pages, 3);

    // `since` in the future gives nothing; far in the past gives everything.
    let r = gw
        .get(
            "/v1/orders?since=2999-01-01T00:00:00%2B08:00",
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["orders"], json!([]));
    assert_eq!(r.body["next_after"], Value::Null);
    let r = gw
        .get(
            "/v1/orders?since=2000-01-01T00:00:00Z&limit=500",
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(r.body["orders"].as_array().map(Vec::len), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_must_be_signed_and_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let id = gw.submit_ok(&json!({"text": "占道经营"})).await;

    let body = r#"{"status":"assigned","note":"已派至城管","by":"江汉区城管局"}"#.as_bytes();
    let r = gw.event(&id, body, SECRET, now_unix()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["status"], "assigned");
    let last = r.body["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .expect("history");
    assert_eq!(last["status"], "assigned");
    assert_eq!(last["note"], "已派至城管");
    assert_eq!(last["by"], "江汉区城管局");
    let r = gw
        .event(&id, br#"{"status":"resolved"}"#, SECRET, now_unix())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "resolved");
    let order = gw.order(&id).await;
    assert_eq!(order["status"], "resolved");
    let history = order["history"].as_array().expect("history").len();
    assert_eq!(history, 3, "accepted, assigned, resolved: {order}");

    let closed = br#"{"status":"closed"}"#;
    // Wrong secret.
    let r = gw.event(&id, closed, "not-the-secret", now_unix()).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "bad_signature");
    // Stale (and future) timestamps, correctly signed.
    for ts in [now_unix() - 1_000, now_unix() + 1_000] {
        let r = gw.event(&id, closed, SECRET, ts).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.error_code(), "bad_signature");
    }
    // The same body, sent as `req` says.
    let send = |req: reqwest::RequestBuilder| async move {
        support::Reply::from(req.body(closed.to_vec()).send().await.expect("POST")).await
    };
    let events = || gw.http.post(gw.url(&format!("/v1/orders/{id}/events")));
    // Missing signature headers.
    let r = send(events().header("content-type", "application/json")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "bad_signature");
    // Body changed after signing.
    let ts = now_unix().to_string();
    let signature = support::sign(SECRET, &ts, br#"{"status":"assigned"}"#);
    let r = send(
        events()
            .header("x-gateway-timestamp", &ts)
            .header("x-gateway-signature", signature),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    // An API key is no substitute for the signature.
    let r = send(events().bearer_auth(ADMIN_KEY)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    // Unknown and gateway-only statuses.
    for status in ["done", "accepted", "delivered"] {
        let b = format!(r#"{{"status":"{status}"}}"#);
        let r = gw.event(&id, b.as_bytes(), SECRET, now_unix()).await;
        assert_eq!(r.status, 422, "{status}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_field");
        assert_eq!(r.error_field().as_deref(), Some("status"));
    }
    let r = gw.event(&id, b"{\"status\":", SECRET, now_unix()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // Unknown order (well formed) and malformed order id.
    let unknown = with_check_digit(&format!("{}99999", &id[..id.len() - 6]));
    let r = gw.event(&unknown, closed, SECRET, now_unix()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), "not_found");
    let r = gw.event("12345", closed, SECRET, now_unix()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_order_id");

    let after = gw.order(&id).await;
    assert_eq!(
        after["status"], "resolved",
        "a refused event changed the order"
    );
    assert_eq!(after["history"].as_array().map(Vec::len), Some(history));
    // A retried event (same status, note, by) does not add history.
    let r = gw
        .event(&id, br#"{"status":"resolved"}"#, SECRET, now_unix())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gw.order(&id).await["history"].as_array().map(Vec::len),
        Some(history)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_a_restart_keeps_the_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(gw.submit_ok(&json!({"text": format!("停水 {i}")})).await);
    }
    let replay_body = json!({"text": "停电"});
    let first = gw.submit(&replay_body, Some("across-restart")).await;
    assert_eq!(first.status, 202);

    let status = gw.sigterm().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit: {status}; log:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert!(
        log.contains("gateway stopped"),
        "no clean-shutdown line in the log:\n{log}"
    );

    gw.restart().await;
    for id in &ids {
        assert_eq!(gw.order(id).await["id"], id.as_str());
    }
    assert_eq!(gw.all_orders(500).await.len(), 6);
    // Idempotency keys survive the restart; numbering continues without reuse.
    let again = gw.submit(&replay_body, Some("across-restart")).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body["order_id"], first.body["order_id"]);
    let new = gw.submit_ok(&json!({"text": "重启之后"})).await;
    assert!(!ids.contains(&new) && first.body["order_id"] != new.as_str());
    let status = gw.sigterm().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_and_never_show_personal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.set_reject_marker(Some("身份证"));
    let mut opts = GatewayOptions::new(dir.path()).dispatch_to(&receiver);
    opts.log_format = "json";
    opts.log_level = "gateway=debug,info";
    let mut gw = Gateway::start(opts).await;

    let phone = "13800138000";
    let id_card = "11010519491231002X";
    let accepted = gw
        .submit_ok(&json!({
            "text": format!("我的电话{phone}，身份证号{id_card}，家门口下水道堵了"),
            "citizen": {"name": "张三", "phone": "+86 138-0013-8000", "user_id": "u-1"},
            "location": {"address": "江汉路100号", "district": "江汉区", "lat": 30.58, "lng": 114.28},
        }))
        .await;
    let emergency = gw
        .submit_ok(&json!({"text": format!("着火了！电话{phone}"), "citizen": {"phone": phone}}))
        .await;
    // A refused submission whose invalid value is a phone-like number.
    let r = gw
        .submit(
            &json!({"text": "x", "citizen": {"phone": format!("{phone}{phone}9")}}),
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    receiver.set_mode(Mode::Accept);
    assert!(
        receiver
            .wait_for_all(std::slice::from_ref(&emergency), Duration::from_secs(30))
            .await
    );
    // The order with the ID card is refused by the receiver: a dead letter with an error logged.
    let dead = support::wait_until(Duration::from_secs(30), || async {
        let m = gw.metrics().await;
        metric(&m, "gateway_outbox_dead", &[]) == 1.0
    })
    .await;
    assert!(dead);
    let r = gw
        .event(
            &accepted,
            format!(r#"{{"status":"assigned","note":"请联系{phone}"}}"#).as_bytes(),
            SECRET,
            now_unix(),
        )
        .await;
    assert_eq!(r.status, 200);
    let status = gw.sigterm().await;
    assert_eq!(status.code(), Some(0));

    let log = gw.log();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "log line is not a JSON object: {line}");
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 5, "too few log lines: {log}");
    assert!(
        log.contains(&accepted),
        "the order number should be logged for operators"
    );
    for secret in [
        phone,
        "138-0013-8000",
        "138 0013 8000",
        id_card,
        "110105194912310",
        ADMIN_KEY,
        USER_KEY,
        SECRET,
    ] {
        assert!(
            !log.contains(secret),
            "the log shows {secret:?} in clear:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
