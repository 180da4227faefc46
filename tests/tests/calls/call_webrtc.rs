//! Browser calls end to end: headless Chromium calls from the gateway's `/call` page (the
//! greeting heard, a key pressed with insertDTMF or the option said into the microphone and
//! understood by Whisper, an order filed with channel `webrtc`, the page's
//! hang-up ending the call and its record), the same through Debian's coturn over TCP with
//! per-token TURN credentials (a network that lets no UDP out), and at the HTTP level everything the WHIP endpoint
//! must refuse or survive (no or a bad or an expired token, the wrong content type, malformed,
//! huge and codec-less offers, another browser's hang-up, garbage on the media port).

use std::path::Path;
use std::process::Command;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::browser::{browser_dir, ensure_playwright};
use support::{ADMIN_KEY, Gateway, GatewayOptions, USER_KEY};

use super::call_transfer::{agent_exit, start_agent, wait_bound, write_prompt};

const WEB_SECRET: &str = "webrtc-test-secret-0123456789";

/// Greeting, a one-key menu, an order, the number said, and time to hang up.
const FLOW: &str = r#"
flow: main
start: menu
settings:
  language: zh
steps:
  menu:
    type: menu
    say:
      zh: { text: "您好，这里是12345。报事请按1，投诉请说投诉。", audio: hello.wav }
      en: { text: "Hello. Press 1 to report.", audio: hello.wav }
    no_input: { max: 5 }
    no_match: { max: 5 }
    on_fail: bye
    options:
      - { digit: "1", set: { choice: "浏览器来电：路灯不亮" }, goto: take }
      - { digit: "2", say: [投诉, 举报], set: { choice: "浏览器来电：投诉" }, goto: take }
      - { digit: "0", goto: agent }
  agent:
    type: transfer
    say:
      zh: { text: "正在为您转接人工服务。", audio: hello.wav }
      en: { text: "Connecting you to an agent.", audio: hello.wav }
    queue: general
    on_fail: bye
  take:
    type: submit
    order: { kind: "'report'", text: vars.choice }
    into: order_id
    next: wait
    on_fail: bye
  wait:
    type: prompt
    say:
      zh: { text: "已受理，请记下工单号。", audio: hello.wav }
      en: { text: "Registered.", audio: hello.wav }
    next: wait_more
  wait_more:
    type: prompt
    say:
      zh: { text: "已受理，请记下工单号。", audio: long.wav }
      en: { text: "Registered.", audio: long.wav }
    next: bye
  bye:
    type: hangup
    reason: completed
"#;

/// A gateway with the browser flow; its `general` agent is a phone at `agent_port`.
async fn gateway(root: &Path, agent_port: u16) -> Gateway {
    gateway_with(root, agent_port, "").await
}

/// [`gateway`] with `more` config (whole sections) at the end.
async fn gateway_with(root: &Path, agent_port: u16, more: &str) -> Gateway {
    let flows = root.join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir");
    std::fs::write(flows.join("main.yaml"), FLOW).expect("write flow");
    write_prompt(&flows.join("hello.wav"));
    // 20 s, so the browser hangs up before the flow does.
    let tone: Vec<i16> = (0..160_000)
        .map(|i| ((i as f32 / 8000.0 * 440.0 * std::f32::consts::TAU).sin() * 6000.0) as i16)
        .collect();
    support::write_wav_8k(&flows.join("long.wav"), &tone);
    let extra = format!(
        "[media]\nrtp_port_min = 48000\nrtp_port_max = 48999\nmedia_timeout_s = 3\n\n\
         [web]\nsecret = \"{WEB_SECRET}\"\nrate_burst = 100\n\n\
         [calls]\nmax_calls = 1\n\n\
         [calls.agents]\ngeneral = \"sip:agent@127.0.0.1:{agent_port}\"\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n\n{more}\n",
        flows.display().to_string()
    );
    let mut gw = Gateway::spawn_with_extra(
        GatewayOptions::new(&root.join("gw")),
        support::free_port(),
        &extra,
    );
    gw.wait_ready().await;
    gw
}

/// The microphone of the browsers: a voiced tone, 2 s (Chromium loops it).
fn microphone(dir: &Path) -> String {
    let mic = dir.join("mic.wav");
    let voice: Vec<i16> = (0..16_000)
        .map(|i| ((i as f32 / 8000.0 * 300.0 * std::f32::consts::TAU).sin() * 3000.0) as i16)
        .collect();
    support::write_wav_8k(&mic, &voice);
    mic.display().to_string()
}

/// Chromium calls from the `/call` page, presses `keys` once the menu shows, and either hangs
/// up once an order number shows (`hang_up`) or waits for the gateway to end the call.
async fn browser_call(gw: &Gateway, mic: String, keys: &str, hang_up: bool) -> Value {
    ensure_playwright();
    let (base, keys) = (gw.base(), keys.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg(browser_dir().join("webrtc-call.mjs"))
            .args([&base, &mic, &keys]);
        if hang_up {
            cmd.arg("--hangup-after-order");
        }
        cmd.output().expect(
            "run node tests/browser/webrtc-call.mjs (scripts/setup.sh --test installs node)",
        )
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "no JSON from the browser ({e}): {stdout}\n{}\ngateway log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                gw.log()
            )
        });
    assert!(
        r["error"].is_null(),
        "browser: {r:#}\ngateway log:\n{}",
        gw.log()
    );
    assert_eq!(r["connected"], true);
    assert!(
        r["heard_frames"].as_u64().unwrap_or(0) > 5,
        "the greeting is heard: {r}"
    );
    assert!(
        r["saying"].as_array().is_some_and(|s| s
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains("报事请按1")))),
        "the page shows what is said: {r}"
    );
    r
}

#[tokio::test]
async fn a_browser_calls_from_the_call_page_presses_a_key_and_files_an_order_with_channel_webrtc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path(), support::free_port()).await;
    let r = browser_call(&gw, microphone(dir.path()), "1", true).await;
    let order_id = r["order"].as_str().expect("an order number on the page");
    assert_eq!(r["route"], "host", "straight to the gateway's port: {r}");

    let order = gw
        .get(&format!("/v1/orders/{order_id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(order.status, 200, "{}", order.text);
    assert_eq!(order.body["channel"], "webrtc");
    assert!(
        order.body["description"]
            .as_str()
            .or(order.body["text"].as_str())
            .is_some_and(|t| t.contains("路灯不亮"))
            || order.text.contains("路灯不亮"),
        "{}",
        order.text
    );

    let records = gw.call_records(1).await;
    let cdr = &records[0];
    assert_eq!(cdr["channel"], "webrtc", "{cdr}");
    assert_eq!(cdr["direction"], "inbound");
    assert_eq!(cdr["outcome"], "caller_hangup", "the page hung up: {cdr}");
    assert_eq!(cdr["orders"][0], order_id);
    assert!(
        cdr["rtp"]["packets_received"].as_u64().unwrap_or(0) > 50,
        "{cdr}"
    );
}

#[tokio::test]
async fn a_browser_caller_who_says_what_they_want_is_understood() {
    let (models, quantization) = super::call_speech::prepared_model().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let speech = format!(
        "[speech]\ncache_dir = {:?}\nquantization = \"{quantization}\"\n",
        models.display().to_string()
    );
    let gw = gateway_with(dir.path(), support::free_port(), &speech).await;
    super::call_speech::wait_speech_ready(&gw).await;
    // The microphone says "我要投诉" over the greeting (barge-in), 2 s in, then keeps quiet
    // for 8 s (Chromium loops the file). No key is pressed.
    let mic = dir.path().join("voice.wav");
    super::call_speech::spoken_wav("我要投诉", &mic, 2.0, 8.0);
    let r = browser_call(&gw, mic.display().to_string(), "", true).await;
    let order_id = r["order"].as_str().expect("an order number on the page");
    let order = gw
        .get(&format!("/v1/orders/{order_id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(order.body["channel"], "webrtc", "{}", order.text);
    assert!(
        order.text.contains("浏览器来电：投诉"),
        "the spoken option was chosen: {}\n{}",
        order.text,
        gw.log()
    );
}

/// coturn from Debian on loopback, taking the TURN REST API's credentials made with `secret`
/// (`use-auth-secret`), relaying to loopback peers (the test gateway).
struct Coturn {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Coturn {
    fn start(dir: &Path, secret: &str) -> Coturn {
        let port = support::free_port();
        let relay = support::free_port();
        let log = dir.join("turn.log");
        let child = Command::new("turnserver")
            .args([
                "-n",
                "-v",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--simple-log",
            ])
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            // Four ports (free_port's step) for the relayed allocations.
            .arg(format!("--min-port={relay}"))
            .arg(format!("--max-port={}", relay + 3))
            .args(["--use-auth-secret", "--realm", "12345.test"])
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--allow-loopback-peers")
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--log-file={}", log.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run turnserver (scripts/setup.sh --test installs coturn)");
        Coturn { child, port, log }
    }

    async fn wait_listening(&self) {
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "coturn did not listen on 127.0.0.1:{} within 5 s: {}",
            self.port,
            self.log()
        );
    }

    fn log(&self) -> String {
        // coturn adds the date to the file's name.
        let dir = self.log.parent().expect("dir");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_browser_whose_network_blocks_udp_calls_through_coturn_over_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "turn-shared-secret-42";
    std::fs::write(dir.path().join("turn-secret"), format!("{secret}\n")).expect("secret");
    let turn = Coturn::start(dir.path(), secret);
    turn.wait_listening().await;
    // Every call through TURN, reached over TCP: the browser's network lets no UDP out.
    let webrtc = format!(
        "[webrtc]\nice_transport_policy = \"relay\"\n\n[[webrtc.ice_servers]]\n\
         urls = [\"turn:127.0.0.1:{}?transport=tcp\"]\nauth_secret_file = {:?}\n",
        turn.port,
        dir.path().join("turn-secret").display().to_string()
    );
    let gw = gateway_with(dir.path(), support::free_port(), &webrtc).await;

    // A token carries a credential of its own (`<expiry>:12345`, HMAC-SHA1 of the shared
    // secret) that coturn checks; the page fetches its own token the same way.
    let t = gw.post_json("/call/token", None, "").await;
    assert_eq!(t.status, 201, "{}", t.text);
    let t = t.body;
    assert_eq!(t["ice_transport_policy"], "relay");
    let user = t["ice_servers"][0]["username"].as_str().expect("username");
    let expires: i64 = user
        .split(':')
        .next()
        .and_then(|e| e.parse().ok())
        .expect("expiry");
    let now = chrono::Utc::now().timestamp();
    assert!((now + 290..=now + 310).contains(&expires), "{t}");
    assert!(t["ice_servers"][0]["credential"].is_string(), "{t}");
    assert!(t["ice_servers"][0].get("auth_secret_file").is_none(), "{t}");

    let r = browser_call(&gw, microphone(dir.path()), "1", true).await;
    assert_eq!(r["route"], "relay", "through coturn: {r}\n{}", turn.log());
    let order_id = r["order"].as_str().expect("an order number on the page");
    let order = gw
        .get(&format!("/v1/orders/{order_id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(order.body["channel"], "webrtc", "{}", order.text);
    let log = turn.log();
    assert!(
        log.lines()
            .any(|l| l.contains(":12345>") && l.contains("ALLOCATE processed, success")),
        "coturn allocated a relay with the token's credential: {log}"
    );
}

#[tokio::test]
async fn a_browser_caller_put_through_to_a_sip_agent_hears_them_and_is_heard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    let agent_port = support::free_port();
    let gw = gateway(dir.path(), agent_port).await;
    // A SIPp agent that answers after a second, echoes what it hears, and hangs up.
    let mut agent = start_agent("agent-answers.xml", agent_port, 1, &work);
    wait_bound(agent_port).await;
    browser_call(&gw, microphone(dir.path()), "0", false).await;
    let agent_code = agent_exit(&mut agent).await;
    assert_eq!(
        agent_code,
        0,
        "agent: {}",
        support::sipp::logs(&work, "errors.log")
    );
    let r = &gw.call_records(1).await[0];
    assert_eq!(r["channel"], "webrtc", "{r}");
    assert_eq!(r["outcome"], "agent_hangup", "{r}");
    let b = &r["bridge"];
    // The browser's voice reached the agent, and the agent's (its echo) came back to it.
    assert!(b["voiced_to_agent"].as_u64().unwrap_or(0) >= 25, "{r}");
    assert!(b["voiced_to_caller"].as_u64().unwrap_or(0) >= 25, "{r}");
}

/// A virtualenv with aiortc 1.16 from PyPI (once), in tests/aiortc/.venv: its python.
fn aiortc_python() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("aiortc");
    let python = dir.join(".venv/bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import aiortc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return python;
    }
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir.join(".venv"))
        .output()
        .expect("python3 -m venv (scripts/setup.sh --test installs python3-venv)");
    assert!(
        venv.status.success(),
        "{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let pip = Command::new(dir.join(".venv/bin/pip"))
        .args(["install", "--quiet", "aiortc==1.16.0"])
        .output()
        .expect("pip");
    assert!(
        pip.status.success(),
        "pip install aiortc: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    python
}

#[tokio::test]
async fn an_app_calling_with_aiortc_on_pcmu_is_answered_heard_and_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path(), support::free_port()).await;
    let (python, base, mic) = (aiortc_python(), gw.base(), microphone(dir.path()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("aiortc/call.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, USER_KEY, &mic, "4"])
            .output()
            .expect("run the aiortc client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "no JSON from aiortc ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(r["error"].is_null(), "{r}\n{}", gw.log());
    assert_eq!(r["connected"], true, "{r}");
    assert_eq!(r["codec"], "PCMU", "PCMA was not offered: {r}");
    assert!(
        r["voiced"].as_u64().unwrap_or(0) >= 25,
        "the greeting is heard: {r}"
    );
    assert_eq!(r["hangup_status"], 200, "{r}");
    let rec = &gw.call_records(1).await[0];
    assert_eq!(rec["channel"], "webrtc");
    assert_eq!(rec["codec"], "PCMU");
    assert_eq!(rec["outcome"], "caller_hangup", "{rec}");
    assert!(
        rec["rtp"]["packets_received"].as_u64().unwrap_or(0) >= 50,
        "{rec}"
    );
    // The app user hung up before the flow was done: a callback order names them.
    let id = rec["callback_order"].as_str().expect("a callback order");
    let order = gw.get(&format!("/v1/orders/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(order.body["channel"], "webrtc", "{}", order.text);
    assert!(order.text.contains("app-user-7"), "{}", order.text);
}

/// A WebRTC offer as a browser makes one (only what str0m needs), offering `codecs` lines.
fn offer(rtpmaps: &[(u8, &str)]) -> String {
    let pts: Vec<String> = rtpmaps.iter().map(|(pt, _)| pt.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n",
        pts.join(" "),
        (0..32)
            .map(|i| format!("{:02X}", i * 7 % 256))
            .collect::<Vec<_>>()
            .join(":")
    );
    for (pt, map) in rtpmaps {
        s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
    }
    s.push_str("a=ssrc:1001 cname:test\r\n");
    s
}

/// A token signed with the test gateway's web secret: `expires` unix seconds, no user.
fn signed_token(expires: i64) -> String {
    let nonce = "0123456789abcdef01234567";
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(WEB_SECRET.as_bytes()).expect("key");
    for part in ["call-token", &expires.to_string(), "", nonce] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("{expires}..{nonce}.{sig}")
}

async fn post_offer(
    gw: &Gateway,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    let mut req = gw
        .http
        .post(gw.url("/v1/calls/webrtc"))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("POST /v1/calls/webrtc")
}

/// [`post_offer`] once the line is free: the call before has written its record, and its task
/// is a moment from ending (`calls.max_calls` is 1 in these tests).
async fn post_offer_when_free(gw: &Gateway, token: &str, body: &str) -> reqwest::Response {
    for _ in 0..50 {
        let r = post_offer(gw, Some(token), "application/sdp", body).await;
        if r.status() != 503 {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the line stayed busy");
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn bad_tokens_offers_and_hang_ups_get_clear_errors_and_the_gateway_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path(), support::free_port()).await;
    let pcmu = offer(&[
        (111, "opus/48000/2"),
        (0, "PCMU/8000"),
        (126, "telephone-event/8000"),
    ]);

    // Tokens: the API needs a key; the page gets its own.
    let r = gw.post_json("/v1/call-tokens", None, "{}").await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = gw
        .post_json(
            "/v1/call-tokens",
            Some(USER_KEY),
            r#"{"user": "wx-openid-42"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.body["token"].as_str().expect("token").to_owned();
    assert!(r.body["expires_at"].is_string());
    let r = gw
        .post_json("/v1/call-tokens", Some(USER_KEY), r#"{"user": "x\u0000"}"#)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("user"))
    );
    let page = gw.post_json("/call/token", None, "").await;
    assert_eq!(page.status, 201, "{}", page.text);
    let page_token = page.body["token"].as_str().expect("token").to_owned();

    // No token, a forged one, an expired one.
    let sdp = "application/sdp";
    assert_eq!(
        error_code(post_offer(&gw, None, sdp, &pcmu).await).await,
        (401, "missing_token".into())
    );
    assert_eq!(
        error_code(post_offer(&gw, Some("1.2.3.4"), sdp, &pcmu).await).await,
        (401, "invalid_token".into())
    );
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        error_code(post_offer(&gw, Some(&signed_token(now - 5)), sdp, &pcmu).await).await,
        (401, "expired_token".into())
    );
    // Wrong type, malformed, huge, no common codec.
    let t = Some(token.as_str());
    assert_eq!(
        error_code(post_offer(&gw, t, "application/json", &pcmu).await).await,
        (415, "unsupported_media_type".into())
    );
    assert_eq!(
        error_code(post_offer(&gw, t, sdp, "v=0\r\nthis is not sdp").await).await,
        (400, "invalid_sdp".into())
    );
    let huge = format!("{pcmu}{}", "a=x-filler:0123456789\r\n".repeat(3000));
    assert_eq!(
        error_code(post_offer(&gw, t, sdp, &huge).await).await.0,
        413
    );
    let opus_only = offer(&[(111, "opus/48000/2")]);
    assert_eq!(
        error_code(post_offer(&gw, t, sdp, &opus_only).await).await,
        (422, "no_common_codec".into())
    );

    // A good offer: 201, the answer and where the call is.
    let r = post_offer(&gw, t, sdp, &pcmu).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/sdp")
    );
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let answer = r.text().await.expect("answer");
    assert!(
        answer.contains("a=ice-lite") && answer.contains("PCMU/8000"),
        "{answer}"
    );
    assert!(answer.contains("telephone-event/8000"), "{answer}");
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=candidate:"))
        .and_then(|c| c.split_whitespace().nth(5))
        .and_then(|p| p.parse().ok())
        .expect("a candidate with a port");

    // Browser and phone calls share calls.max_calls (1 here): a second call is refused.
    let full = post_offer(&gw, Some(&page_token), sdp, &pcmu).await;
    assert_eq!(error_code(full).await, (503, "busy".into()));

    // DTLS and STUN garbage on the call's media port: the gateway carries on.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..500u32 {
        let mut d = vec![(i % 64) as u8 + 20, 0xfe, 0xfd];
        d.extend((0..(i % 200)).map(|j| (j * 31 + i) as u8));
        let _ = junk.send_to(&d, ("127.0.0.1", port));
        let _ = junk.send_to(&[0, 1, 0, 8, 0x21, 0x12], ("127.0.0.1", port));
    }

    // The call's state, only for its own token; another browser cannot end it.
    let view = gw
        .http
        .get(gw.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(view.status(), 200);
    let v: Value = view.json().await.expect("json");
    assert_eq!(v["state"], "in_call", "{v}");
    let other = gw
        .http
        .delete(gw.url(&location))
        .bearer_auth(&page_token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(error_code(other).await, (403, "not_your_call".into()));
    let patch = gw
        .http
        .patch(gw.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patch.status(), 405, "no trickle ICE");
    let gone = gw
        .http
        .delete(gw.url("/v1/calls/webrtc/w-0000000000000000"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(gone.status(), 404);

    // The browser hangs up: the call ends with a record of channel webrtc.
    let bye = gw
        .http
        .delete(gw.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(bye.status(), 200);
    let records = gw.call_records(1).await;
    assert_eq!(records[0]["channel"], "webrtc");
    assert_eq!(records[0]["outcome"], "caller_hangup");
    let after = gw
        .http
        .get(gw.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(after.status(), 404, "an ended call is gone");

    // The user the API token named is someone to call back: the abandoned call left an order.
    assert!(records[0]["callback_order"].is_string(), "{}", records[0]);

    // And the gateway still takes calls. One from the page names nobody: no callback order.
    let r = post_offer_when_free(&gw, &page_token, &pcmu).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let bye = gw
        .http
        .delete(gw.url(&location))
        .bearer_auth(&page_token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(bye.status(), 200);
    let records = gw.call_records(2).await;
    let page_call = records
        .iter()
        .find(|r| r["sip_call_id"] != records[0]["sip_call_id"])
        .expect("the page's call");
    assert!(page_call["callback_order"].is_null(), "{page_call}");

    // A browser that vanishes (here: one that never sent a packet) is hung up when its media
    // times out (media.media_timeout_s, 3 s here), without its DELETE.
    let r = post_offer_when_free(&gw, &token, &pcmu).await;
    assert_eq!(r.status(), 201);
    let records = gw.call_records(3).await;
    assert!(
        records.iter().any(|r| r["outcome"] == "media_timeout"),
        "{records:?}"
    );
    assert!(gw.get("/healthz", None).await.status == 200);
}
