//! Delivery end to end: submissions under load survive a SIGKILL of the gateway, every accepted
//! order reaches the dispatch receiver with a valid signature, retries ride out an unavailable
//! receiver, and refused orders become dead letters that can be replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ADMIN_KEY, Gateway, GatewayOptions, Mode, Receiver, USER_KEY, is_valid_order_id, metric,
    submit_once,
};

const CLIENTS: usize = 32;
const PER_CLIENT: usize = 75; // 2,400 submissions

/// Submit until answered 202 (retrying connection errors and 5xx with the same key); the order id.
async fn submit_until_answered(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    deadline: Instant,
) -> String {
    let bytes = serde_json::to_vec(body).expect("serialize");
    loop {
        assert!(
            Instant::now() < deadline,
            "submission {key} not answered before the deadline"
        );
        if let Some(v) = submit_once(client, base, key, &bytes).await {
            assert_eq!(v["status"], "accepted", "{v}");
            return v["order_id"]
                .as_str()
                .expect("order_id in the 202 answer")
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_with_a_crash_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(GatewayOptions::new(dir.path()).dispatch_to(&receiver)).await;
    let base = Arc::new(gw.base());
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(150);
    let total = CLIENTS * PER_CLIENT;

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = base.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let client = support::http_client();
            let mut got = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let key = format!("load-{c}-{i}");
                let body = json!({
                    "text": format!("小区路灯不亮，第{c}栋第{i}号 ({key})"),
                    "citizen": {"name": "王女士", "phone": "13800138000"},
                    "kind": "report",
                    "external_id": key,
                });
                let id = submit_until_answered(&client, &base, &key, &body, deadline).await;
                answered.fetch_add(1, Ordering::Relaxed);
                got.push((key, id));
            }
            got
        }));
    }

    // Crash the gateway in the middle of the load, then bring it back on the same data dir.
    let mid = support::wait_until(Duration::from_secs(90), || async {
        answered.load(Ordering::Relaxed) >= total / 3
    })
    .await;
    assert!(mid, "a third of the load was not answered within 90 s");
    gw.kill9();
    let at_crash = answered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.restart().await;

    let mut by_key: HashMap<String, String> = HashMap::new();
    for t in tasks {
        for (key, id) in t.await.expect("client task panicked") {
            assert!(is_valid_order_id(&id), "order id {id} breaks the format");
            assert!(by_key.insert(key.clone(), id).is_none(), "key {key} twice");
        }
    }
    assert!(
        at_crash < total,
        "the crash came after the load finished; the test proves nothing"
    );
    assert_eq!(by_key.len(), total);
    let ids: HashSet<String> = by_key.values().cloned().collect();
    assert_eq!(
        ids.len(),
        total,
        "distinct order ids ({}) != distinct idempotency keys ({total})",
        ids.len()
    );

    let want: Vec<String> = ids.iter().cloned().collect();
    let all = receiver.wait_for_all(&want, Duration::from_secs(60)).await;
    let counts = receiver.delivery_counts();
    let missing: Vec<&String> = want.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(
        all,
        "{} accepted orders never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let problems = receiver.problems();
    assert!(
        problems.is_empty(),
        "receiver saw bad deliveries: {:?}",
        &problems[..problems.len().min(5)]
    );
    let unknown: Vec<&String> = counts.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        unknown.is_empty(),
        "delivered orders no client was answered for (orphans): {unknown:?}"
    );
    // Duplicates are allowed only as redeliveries of the same order (same Idempotency-Key header,
    // checked by the receiver) around the crash: a handful, not a pattern.
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    receiver.with(|s| {
        for d in &s.delivered {
            assert_eq!(d.idempotency_key, d.order_id);
        }
    });
    assert!(
        duplicates <= 64,
        "{duplicates} duplicate deliveries for one crash: more than the 32 deliveries that can be in flight, twice over"
    );
    eprintln!(
        "load: {total} orders, crash after {at_crash} answers, {duplicates} duplicate deliveries"
    );

    // The store agrees: exactly one order per key, nothing left in the outbox.
    let listed = gw.all_orders(500).await;
    let listed_ids: HashSet<String> = listed
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        listed.len(),
        total,
        "the list endpoint shows {} orders",
        listed.len()
    );
    assert_eq!(listed_ids, ids);
    let settled = gw.outbox_settled(total, Duration::from_secs(20)).await;
    assert!(settled, "outbox not settled: {}", gw.metrics().await);
    let sample = by_key.get("load-0-0").expect("key");
    assert_eq!(gw.order(sample).await["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unavailable_receiver_is_retried_until_it_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Status(503));
    let gw = Gateway::start(GatewayOptions::new(dir.path()).dispatch_to(&receiver)).await;

    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            gw.submit_ok(&json!({"text": format!("噪音扰民 {i}")}))
                .await,
        );
    }
    let saw_503 = support::wait_until(Duration::from_secs(30), || async {
        receiver.with(|s| s.answered_503) >= 80
    })
    .await;
    assert!(saw_503, "the gateway did not retry after 503s");
    receiver.set_mode(Mode::Drop);
    let saw_drops = support::wait_until(Duration::from_secs(30), || async {
        receiver.with(|s| s.dropped) >= 60
    })
    .await;
    assert!(
        saw_drops,
        "the gateway did not retry after dropped connections"
    );
    assert!(receiver.delivery_counts().is_empty());
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "gateway_outbox_queued", &[]), 40.0, "{m}");
    assert_eq!(metric(&m, "gateway_outbox_dead", &[]), 0.0, "{m}");

    receiver.set_mode(Mode::Accept);
    assert!(
        receiver.wait_for_all(&ids, Duration::from_secs(60)).await,
        "not every order delivered after the receiver recovered"
    );
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
    let (failed_attempts, duplicates) =
        receiver.with(|s| (s.answered_503 + s.dropped, s.delivered.len() - ids.len()));
    assert_eq!(duplicates, 0, "an order was accepted twice without a crash");
    let settled = gw.outbox_settled(40, Duration::from_secs(10)).await;
    let m = gw.metrics().await;
    assert!(settled, "outbox not settled: {m}");
    let retried = metric(&m, "gateway_deliveries_total", &[("outcome", "retried")]);
    let delivered = metric(&m, "gateway_deliveries_total", &[("outcome", "delivered")]);
    assert!(
        retried >= failed_attempts as f64,
        "metrics show {retried} retries, the receiver refused {failed_attempts} attempts"
    );
    assert_eq!(delivered, 40.0, "{m}");
    assert_eq!(
        metric(&m, "gateway_deliveries_total", &[("outcome", "dead")]),
        0.0
    );
    assert_eq!(
        metric(&m, "gateway_outbox_oldest_undelivered_age_seconds", &[]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_order_becomes_a_dead_letter_and_can_be_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.set_reject_marker(Some("REFUSE-ME"));
    let gw = Gateway::start(GatewayOptions::new(dir.path()).dispatch_to(&receiver)).await;

    let bad = gw
        .submit_ok(&json!({"text": "垃圾清运不及时 REFUSE-ME", "kind": "complaint"}))
        .await;
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(
            gw.submit_ok(&json!({"text": format!("井盖缺失 {i}")}))
                .await,
        );
    }
    assert!(receiver.wait_for_all(&good, Duration::from_secs(30)).await);

    let listed = support::wait_until(Duration::from_secs(30), || async {
        let r = gw.get("/v1/dead-letters", Some(ADMIN_KEY)).await;
        r.status == 200
            && r.body["dead_letters"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d["order_id"] == bad.as_str()))
    })
    .await;
    assert!(listed, "the refused order is not listed as a dead letter");
    let r = gw.get("/v1/dead-letters", Some(ADMIN_KEY)).await;
    let letters = r.body["dead_letters"].as_array().expect("array").clone();
    assert_eq!(
        letters.len(),
        1,
        "only the refused order is dead: {letters:?}"
    );
    let d = &letters[0];
    assert_eq!(d["attempts"], 1, "a 400 is final, not retried: {d}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("400")),
        "last_error should say what the receiver answered: {d}"
    );
    assert!(d["dead_at"].is_string(), "{d}");
    assert_eq!(receiver.with(|s| s.rejected), 1);

    let m = gw.metrics().await;
    assert_eq!(metric(&m, "gateway_outbox_dead", &[]), 1.0, "{m}");
    assert_eq!(
        metric(&m, "gateway_deliveries_total", &[("outcome", "dead")]),
        1.0,
        "{m}"
    );
    assert_eq!(gw.order(&bad).await["status"], "accepted");

    // Non-admin keys may neither list nor replay.
    let r = gw.get("/v1/dead-letters", Some(USER_KEY)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), "forbidden");
    let r = gw
        .post(&format!("/v1/dead-letters/{bad}/replay"), Some(USER_KEY))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = gw
        .post(&format!("/v1/dead-letters/{bad}/replay"), None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);

    // Fix the receiver, replay, and the order arrives.
    receiver.set_reject_marker(None);
    let r = gw
        .post(&format!("/v1/dead-letters/{bad}/replay"), Some(ADMIN_KEY))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(
        receiver
            .wait_for_all(std::slice::from_ref(&bad), Duration::from_secs(30))
            .await,
        "the replayed order was not delivered"
    );
    let settled = support::wait_until(Duration::from_secs(10), || async {
        let m = gw.metrics().await;
        metric(&m, "gateway_outbox_dead", &[]) == 0.0
            && metric(&m, "gateway_outbox_delivered", &[]) == 6.0
    })
    .await;
    assert!(settled, "{}", gw.metrics().await);
    let r = gw.get("/v1/dead-letters", Some(ADMIN_KEY)).await;
    assert_eq!(r.body["dead_letters"], json!([]), "{}", r.text);
    assert_eq!(gw.order(&bad).await["status"], "delivered");
    // Replaying what is not a dead letter is refused.
    let r = gw
        .post(&format!("/v1/dead-letters/{bad}/replay"), Some(ADMIN_KEY))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
    assert_eq!(receiver.delivery_counts().get(&bad), Some(&1));
}
