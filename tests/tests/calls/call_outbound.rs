//! Outbound calls end to end: the built gateway dials through a "trunk" that is a SIPp phone on
//! loopback, and runs the shipped flows (`ivr-flows/flows`) on the answer.
//!
//! - `POST /v1/calls` with the survey flow and its `order_id`: the phone answers and keys 5,
//!   the survey's order is filed with the score, and the call ends `completed` with a call
//!   detail record marked outbound.
//! - A busy phone is tried as often as `busy_tries` says, then the call ends `busy`; every try
//!   has its record.
//! - Bad requests are refused with the field named, and outside the calling hours nothing is
//!   dialled (the trunk's socket hears nothing) until the call is cancelled.
//! - Calls waiting when the gateway is killed are made after the restart, each once.
//! - A call refused at `max_calls` is called back (漏话回拨) once the line is free, and its
//!   callback order's history says so.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::sipp;
use support::{ADMIN_KEY, Gateway, GatewayOptions, USER_KEY, free_port, wait_until};

use super::call_transfer::{agent_exit, start_uas, wait_bound};

fn shipped_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("ivr-flows")
        .join("flows")
}

/// A gateway running the shipped flows whose trunk is `127.0.0.1:trunk_port`, with `outbound`
/// and `calls` lines added to those sections.
async fn gateway(root: &Path, trunk_port: u16, outbound: &str, calls: &str) -> (Gateway, u16) {
    let sip_port = free_port();
    // Tests run at any hour: no calling hours unless the test sets its own.
    let hours = if outbound.contains("calling_hours") {
        ""
    } else {
        "calling_hours = \"00:00-24:00\""
    };
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
         [media]\nrtp_port_min = 45000\nrtp_port_max = 45999\n\n\
         [calls]\n{calls}\n\n\
         [calls.outbound]\ntrunk = \"sip:127.0.0.1:{trunk_port}\"\ncaller_id = \"12345\"\n{hours}\n{outbound}\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        shipped_flows().display().to_string()
    );
    let mut gw =
        Gateway::spawn_with_extra(GatewayOptions::new(&root.join("gw")), free_port(), &extra);
    gw.wait_ready().await;
    (gw, sip_port)
}

fn workdirs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    (dir, work)
}

async fn post_call(gw: &Gateway, body: &str) -> String {
    let r = gw.post_json("/v1/calls", Some(ADMIN_KEY), body).await;
    assert_eq!(r.status, 201, "POST /v1/calls: {}", r.text);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/calls/{id}").as_str())
    );
    assert_eq!(r.body["status"], "queued", "{}", r.text);
    id
}

async fn call(gw: &Gateway, id: &str) -> Value {
    let r = gw.get(&format!("/v1/calls/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 200, "GET /v1/calls/{id}: {}", r.text);
    r.body
}

/// The call once its status is final (waiting up to `within`).
async fn ended(gw: &Gateway, id: &str, within: Duration) -> Value {
    let done = wait_until(within, || async {
        let s = call(gw, id).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !matches!(s.as_str(), "queued" | "dialing" | "ringing" | "answered")
    })
    .await;
    let c = call(gw, id).await;
    assert!(
        done,
        "call {id} did not end: {c}\n--- gateway ---\n{}",
        gw.log()
    );
    c
}

#[tokio::test]
async fn an_outbound_call_runs_its_flow_and_the_phone_s_keys_are_heard() {
    let (dir, work) = workdirs();
    let phone_port = support::free_port();
    let (gw, _) = gateway(dir.path(), phone_port, "", "").await;
    let mut phone = start_uas(
        "phone-answers-keys.xml",
        phone_port,
        1,
        &work,
        &["-key", "info_digit", "5"],
    );
    wait_bound(phone_port).await;
    let id = post_call(
        &gw,
        r#"{"to": "138-0013-8000", "flow": "survey", "vars": {"order_id": "2612070100001"}}"#,
    )
    .await;
    let c = ended(&gw, &id, Duration::from_secs(60)).await;
    assert_eq!(
        agent_exit(&mut phone).await,
        0,
        "the phone's scenario failed: {}",
        sipp::logs(&work, ".log")
    );
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(
        c["to"], "13800138000",
        "the number as dialled, normalized: {c}"
    );
    assert_eq!(c["attempts"].as_array().map(Vec::len), Some(1), "{c}");
    let result = &c["result"];
    assert_eq!(result["ending"], "flow_hangup", "{c}");
    assert_eq!(
        result["collected"]["score"], "5",
        "the key 5 was heard: {c}"
    );
    assert_eq!(result["last_step"], "survey/thanks", "{c}");
    let orders = result["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1, "{c}");
    let order = gw.order(orders[0].as_str().expect("order id")).await;
    assert_eq!(order["citizen"]["phone"], "13800138000", "{order}");
    assert!(
        order["text"].as_str().unwrap_or_default().contains('5'),
        "the score is in the order: {order}"
    );
    let record = gw.call_record().await;
    assert_eq!(record["direction"], "outbound", "{record}");
    assert_eq!(record["outbound_id"], id.as_str(), "{record}");
    assert_eq!(record["caller"], "12345", "{record}");
    assert_eq!(record["called"], "13800138000", "{record}");
    assert_eq!(record["outcome"], "flow_hangup", "{record}");
    assert!(
        record["rtp"]["packets_received"].as_u64().unwrap_or(0) > 0,
        "the phone's audio came back: {record}"
    );
}

#[tokio::test]
async fn a_busy_phone_is_tried_per_policy_and_every_try_recorded() {
    let (dir, work) = workdirs();
    let phone_port = support::free_port();
    let (gw, _) = gateway(
        dir.path(),
        phone_port,
        "busy_tries = 2\nbusy_retry_s = 1",
        "",
    )
    .await;
    let mut phone = start_uas("agent-busy.xml", phone_port, 2, &work, &[]);
    wait_bound(phone_port).await;
    let id = post_call(
        &gw,
        r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "x"}}"#,
    )
    .await;
    let c = ended(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(
        agent_exit(&mut phone).await,
        0,
        "two INVITEs, each refused 486"
    );
    assert_eq!(c["status"], "busy", "{c}");
    let attempts = c["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{c}");
    for a in attempts {
        assert_eq!(a["result"], "busy", "{c}");
        assert_eq!(a["sip_status"], 486, "{c}");
    }
    let records = gw.call_records(2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["outcome"], "busy", "{r}");
        assert_eq!(r["direction"], "outbound", "{r}");
    }
}

#[tokio::test]
async fn a_phone_nobody_answers_is_cancelled_at_the_ring_timeout_and_ends_no_answer() {
    let (dir, work) = workdirs();
    let phone_port = support::free_port();
    let (gw, _) = gateway(
        dir.path(),
        phone_port,
        "ring_timeout_s = 2\nno_answer_tries = 1",
        "",
    )
    .await;
    // Rings until the gateway cancels (200 to the CANCEL, 487 to the INVITE).
    let mut phone = start_uas("agent-rings.xml", phone_port, 1, &work, &[]);
    wait_bound(phone_port).await;
    let id = post_call(
        &gw,
        r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "x"}}"#,
    )
    .await;
    let c = ended(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(agent_exit(&mut phone).await, 0, "the phone saw the CANCEL");
    assert_eq!(c["status"], "no_answer", "{c}");
    let attempts = c["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{c}");
    assert_eq!(attempts[0]["result"], "no_answer", "{c}");
    let record = gw.call_record().await;
    assert_eq!(record["outcome"], "no_answer", "{record}");
    let took = record["duration_ms"].as_u64().unwrap_or(0);
    assert!(
        (1500..10_000).contains(&took),
        "cancelled at the 2 s ring timeout: {record}"
    );
}

#[tokio::test]
async fn bad_requests_and_the_hours_outside_calling_hours_dial_nothing() {
    let (dir, _work) = workdirs();
    // The "trunk": a socket that must hear nothing.
    let trunk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    trunk.set_nonblocking(true).expect("nonblocking");
    let trunk_port = trunk.local_addr().expect("addr").port();
    // A window that opens two hours from now (UTC+8, the default node offset).
    let local = chrono::Utc::now() + chrono::Duration::hours(8);
    let open = local + chrono::Duration::hours(2);
    let close = local + chrono::Duration::hours(3);
    let hours = format!(
        "calling_hours = \"{}-{}\"",
        open.format("%H:%M"),
        close.format("%H:%M")
    );
    let (gw, _) = gateway(dir.path(), trunk_port, &hours, "").await;

    let bad = [
        (
            r#"{"to": "12ab", "flow": "survey", "vars": {"order_id": "x"}}"#,
            400,
            "invalid_number",
            Some("to"),
        ),
        (
            r#"{"to": "13800138000", "flow": "nope", "vars": {}}"#,
            422,
            "unknown_flow",
            Some("flow"),
        ),
        (
            r#"{"to": "13800138000", "flow": "survey", "vars": {}}"#,
            400,
            "invalid_vars",
            Some("vars"),
        ),
        (
            r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "x", "name": "y"}}"#,
            400,
            "invalid_vars",
            Some("vars"),
        ),
        (
            r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "a\nb"}}"#,
            400,
            "invalid_vars",
            Some("vars"),
        ),
        (r#"{"to": "13800138000"}"#, 400, "invalid_body", None),
        (r#"not json"#, 400, "invalid_body", None),
    ];
    for (body, status, code, field) in bad {
        let r = gw.post_json("/v1/calls", Some(ADMIN_KEY), body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.error_code(), code, "{body}");
        assert_eq!(r.error_field().as_deref(), field, "{body}: {}", r.text);
    }
    let r = gw
        .post_json(
            "/v1/calls",
            Some(USER_KEY),
            r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "x"}}"#,
        )
        .await;
    assert_eq!(r.status, 403, "a user key may not dial: {}", r.text);
    let r = gw.get("/v1/calls", Some(ADMIN_KEY)).await;
    assert_eq!(
        r.body["calls"],
        serde_json::json!([]),
        "nothing stored: {}",
        r.text
    );

    let id = post_call(
        &gw,
        r#"{"to": "13800138000", "flow": "survey", "vars": {"order_id": "x"}}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = call(&gw, &id).await;
    assert_eq!(c["status"], "queued", "{c}");
    assert_eq!(c["attempts"], serde_json::json!([]), "{c}");
    let mut buf = [0u8; 2048];
    assert!(
        trunk.recv_from(&mut buf).is_err(),
        "an INVITE went out outside the calling hours"
    );
    assert!(
        gw.metrics()
            .await
            .contains("gateway_outbound_calls{state=\"queued\"} 1")
    );
    // A retried POST with the same Idempotency-Key gets the call it placed, not a second one;
    // the key with another body is a conflict.
    let body = r#"{"to": "13800138001", "flow": "survey", "vars": {"order_id": "k"}}"#;
    let first = gw
        .post_json_idempotent("/v1/calls", Some(ADMIN_KEY), "retry-1", body)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = gw
        .post_json_idempotent("/v1/calls", Some(ADMIN_KEY), "retry-1", body)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["id"], first.body["id"], "the same call");
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let other = r#"{"to": "13800138002", "flow": "survey", "vars": {"order_id": "k"}}"#;
    let conflict = gw
        .post_json_idempotent("/v1/calls", Some(ADMIN_KEY), "retry-1", other)
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    assert_eq!(conflict.error_code(), "idempotency_conflict");
    let listed = gw.get("/v1/calls", Some(ADMIN_KEY)).await;
    assert_eq!(
        listed.body["calls"].as_array().map(Vec::len),
        Some(2),
        "{}",
        listed.text
    );
    let r = gw
        .delete(
            &format!(
                "/v1/calls/{}",
                first.body["id"].as_str().unwrap_or_default()
            ),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.get("/v1/calls/c-nope", Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = gw.delete(&format!("/v1/calls/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled", "{}", r.text);
    assert_eq!(call(&gw, &id).await["status"], "cancelled");
    let r = gw.delete(&format!("/v1/calls/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.error_code(), "already_ended");
    let r = gw.get("/v1/calls", Some(ADMIN_KEY)).await;
    assert!(
        r.body["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == id.as_str())),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn calls_waiting_when_the_gateway_is_killed_are_made_after_the_restart_each_once() {
    let (dir, work) = workdirs();
    let phone_port = support::free_port();
    let (mut gw, _) = gateway(dir.path(), phone_port, "", "").await;
    let later = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let mut ids = Vec::new();
    for order in ["2612070100001", "2612070100002"] {
        let body = format!(
            r#"{{"to": "13800138000", "flow": "survey", "vars": {{"order_id": "{order}"}}, "not_before": "{later}"}}"#
        );
        ids.push(post_call(&gw, &body).await);
    }
    gw.kill9();
    let mut phone = start_uas(
        "phone-answers-keys.xml",
        phone_port,
        2,
        &work,
        &["-key", "info_digit", "4"],
    );
    wait_bound(phone_port).await;
    gw.restart().await;
    for id in &ids {
        let c = ended(&gw, id, Duration::from_secs(90)).await;
        assert_eq!(c["status"], "completed", "{c}");
        assert_eq!(
            c["attempts"].as_array().map(Vec::len),
            Some(1),
            "dialled once: {c}"
        );
        assert_eq!(c["result"]["collected"]["score"], "4", "{c}");
    }
    assert_eq!(
        agent_exit(&mut phone).await,
        0,
        "the phone took exactly two calls"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.call_records(2).await.len(), 2, "no third call");
}

#[tokio::test]
async fn a_call_refused_at_capacity_is_called_back_when_the_line_is_free() {
    let (dir, work) = workdirs();
    let phone_port = support::free_port();
    let (gw, sip_port) = gateway(
        dir.path(),
        phone_port,
        "missed_call_flow = \"callback\"\nmissed_call_delay_s = 1",
        // Only the refused call is a missed call here (the first caller gives up in the IVR).
        "max_calls = 1\ncallback_orders = false",
    )
    .await;
    let target = format!("127.0.0.1:{sip_port}");
    // The one call the hotline takes: a caller who hangs up after 12 s.
    let mut first = super::call_transfer::spawn_caller("caller-gives-up.xml", &target, &work);
    let busy = wait_until(Duration::from_secs(20), || async {
        gw.metrics().await.contains("gateway_calls_active 1")
    })
    .await;
    assert!(busy, "the first call was not taken: {}", gw.log());
    // The phone the callback reaches: it answers and keys nothing the menu knows.
    let mut phone = start_uas(
        "phone-answers-keys.xml",
        phone_port,
        1,
        &work,
        &["-key", "info_digit", "9"],
    );
    wait_bound(phone_port).await;
    let (w, t) = (work.clone(), target.clone());
    let (code, log) = tokio::task::spawn_blocking(move || {
        let (port, rtp) = (
            support::free_port().to_string(),
            support::free_port().to_string(),
        );
        sipp::call(
            &w,
            &sipp::scenario("caller-refused.xml"),
            &["-p", &port, "-mp", &rtp],
            30,
            &t,
        )
    })
    .await
    .expect("sipp task");
    assert_eq!(code, 0, "expected 503: {log}");
    let _ = first.wait();
    // The callback: queued from the refused call, dialled once the first call has ended.
    let found = wait_until(Duration::from_secs(20), || async {
        gw.get("/v1/calls", Some(ADMIN_KEY)).await.body["calls"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .await;
    assert!(found, "no callback queued: {}", gw.log());
    let calls = gw.get("/v1/calls", Some(ADMIN_KEY)).await.body;
    let job = &calls["calls"][0];
    assert_eq!(job["flow"], "callback", "{job}");
    assert_eq!(job["to"], "13800138000", "{job}");
    assert_eq!(job["origin"]["kind"], "missed_call", "{job}");
    let order_id = job["origin"]["order_id"]
        .as_str()
        .expect("order")
        .to_owned();
    let id = job["id"].as_str().expect("id").to_owned();
    let c = ended(&gw, &id, Duration::from_secs(90)).await;
    assert_eq!(agent_exit(&mut phone).await, 0, "the phone was called back");
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(c["vars"]["order_id"], order_id.as_str(), "{c}");
    assert_eq!(
        c["result"]["last_step"], "callback/goodbye",
        "the citizen heard why and was let go: {c}"
    );
    let history_says = wait_until(Duration::from_secs(10), || async {
        gw.order(&order_id).await.to_string().contains("回拨")
    })
    .await;
    assert!(
        history_says,
        "the callback order's history says it was called back: {}",
        gw.order(&order_id).await
    );
}
