//! Real SIP calls against the running gateway, placed by SIPp (Debian's `sip-tester`) with the
//! scenarios in `tests/sipp/`: a citizen's call is answered with G.711 and a prompt is sent, a
//! SIP INFO key press is taken, the caller's BYE ends the call, a callback order is left for the
//! caller who hung up mid-flow, and the call detail record carries the RTP figures. An offer
//! with no common codec is refused 488.

use std::path::{Path, PathBuf};
use support::{Gateway, GatewayOptions, free_port, sipp};

fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ivr-flows/flows")
}

/// Run SIPp with a scenario against `target` for one call; returns its exit status and logs.
fn sipp(scenario: &Path, target: &str, workdir: &Path) -> (i32, String) {
    let (port, rtp) = (free_port().to_string(), free_port().to_string());
    sipp::call(workdir, scenario, &["-p", &port, "-mp", &rtp], 30, target)
}

async fn gateway_with_sip(dir: &Path) -> (Gateway, u16) {
    gateway_with_sip_and(dir, "").await
}

/// As [`gateway_with_sip`], with `calls` lines for the `[calls]` section.
async fn gateway_with_sip_and(dir: &Path, calls: &str) -> (Gateway, u16) {
    let sip_port = free_port();
    let extra = format!(
        "[calls]\n{calls}\n\n[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
         [media]\nrtp_port_min = 42000\nrtp_port_max = 42999\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        flows_dir().display().to_string()
    );
    let mut gw = Gateway::spawn_with_extra(GatewayOptions::new(dir), free_port(), &extra);
    gw.wait_ready().await;
    (gw, sip_port)
}

/// Starts a gateway in `dir/gw` and runs one SIPp call of `scenario_name` against it (working in
/// `dir/sipp`), which must pass (else the test fails with `failure`, SIPp's and the gateway's
/// logs); the gateway.
async fn call_gateway(dir: &Path, scenario_name: &str, failure: &str) -> Gateway {
    let (gw, sip_port) = gateway_with_sip(&dir.join("gw")).await;
    let work = dir.join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    let target = format!("127.0.0.1:{sip_port}");
    let scenario = sipp::scenario(scenario_name);
    let (code, log) = tokio::task::spawn_blocking(move || sipp(&scenario, &target, &work))
        .await
        .expect("sipp task");
    assert_eq!(
        code,
        0,
        "{failure}: {log}\n--- gateway log ---\n{}",
        gw.log()
    );
    gw
}

#[tokio::test]
async fn a_caller_who_hangs_up_mid_flow_leaves_a_callback_order_and_a_call_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = call_gateway(dir.path(), "caller.xml", "SIPp call failed").await;

    // The call detail record: answered with G.711, prompt audio sent for the whole call.
    let record = gw.call_record().await;
    let r = &record;
    assert_eq!(r["outcome"], "caller_hangup", "{r}");
    assert_eq!(r["caller"], "13800138000");
    assert_eq!(r["codec"], "PCMU");
    let sent = r["rtp"]["packets_sent"].as_u64().expect("packets_sent");
    // 3.5 s of call at 50 packets/s: the greeting was being sent the whole time.
    assert!(sent >= 150, "only {sent} RTP packets sent: {r}");
    let duration = r["duration_ms"].as_u64().expect("duration");
    assert!((3000..15000).contains(&duration), "{r}");

    // The callback order: the caller's number, the call's Call-ID, where they hung up.
    let callback = r["callback_order"]
        .as_str()
        .expect("callback order id")
        .to_owned();
    let order = gw.order(&callback).await;
    assert_eq!(order["channel"], "phone");
    assert_eq!(order["kind"], "help");
    assert_eq!(order["citizen"]["phone"], "13800138000");
    assert_eq!(order["source"]["call_id"], r["sip_call_id"]);
    assert!(
        order["text"]
            .as_str()
            .unwrap_or_default()
            .contains("请回拨"),
        "{order}"
    );
    assert!(
        !gw.log().contains("13800138000"),
        "the caller's number appears unmasked in the log"
    );
}

#[tokio::test]
async fn an_offer_with_no_common_codec_is_refused_488() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = call_gateway(dir.path(), "g729-only.xml", "SIPp expected 488").await;
    assert!(
        gw.all_orders(100).await.is_empty(),
        "a refused call leaves no order"
    );
}

/// A caller who finds the hotline full (503 at `calls.max_calls`) is not lost: a callback order
/// with their number is filed, one per caller per hour however often they redial (漏话回拨).
#[tokio::test]
async fn a_call_refused_at_capacity_leaves_one_callback_order_per_caller_and_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, sip_port) = gateway_with_sip_and(&dir.path().join("gw"), "max_calls = 1").await;
    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    let target = format!("127.0.0.1:{sip_port}");
    // The one call the hotline takes: a caller who stays on the line.
    let mut first = super::call_transfer::spawn_caller("caller-transfer.xml", &target, &work);
    let busy = support::wait_until(std::time::Duration::from_secs(20), || async {
        gw.get("/metrics", None)
            .await
            .text
            .contains("gateway_calls_active 1")
    })
    .await;
    assert!(busy, "the first call was not taken: {}", gw.log());
    for _ in 0..2 {
        let (t, w) = (target.clone(), work.clone());
        let (code, log) = tokio::task::spawn_blocking(move || {
            sipp(&sipp::scenario("caller-refused.xml"), &t, &w)
        })
        .await
        .expect("sipp task");
        assert_eq!(
            code,
            0,
            "expected 503: {log}\n--- gateway ---\n{}",
            gw.log()
        );
    }
    let found = support::wait_until(std::time::Duration::from_secs(20), || async {
        !gw.all_orders(100).await.is_empty()
    })
    .await;
    assert!(
        found,
        "no callback order for the refused caller: {}",
        gw.log()
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let orders = gw.all_orders(100).await;
    assert_eq!(
        orders.len(),
        1,
        "one order for two refused calls: {orders:?}"
    );
    let o = &orders[0];
    assert_eq!(o["citizen"]["phone"], "13800138000", "{o}");
    assert_eq!(o["kind"], "help", "{o}");
    assert!(
        o["text"].as_str().is_some_and(|t| t.contains("满负荷")),
        "{o}"
    );
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        !gw.log().contains("13800138000"),
        "the caller's number appears unmasked"
    );
}
