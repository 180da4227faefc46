//! Agent queues end to end: SIPp callers wait in a `[calls.queues]` queue for one SIPp agent
//! who answers them one after another. They are served in arrival order, the ones who wait
//! hear their position (the gateway speaks it with espeak-ng), a queue whose agent never
//! answers gives the caller up after its longest wait, down the flow's `on_fail` path, and a
//! caller who presses a `while_waiting` key leaves the queue for that step.

use std::path::Path;
use std::time::Duration;

use support::sipp::{self, logs};
use support::{ADMIN_KEY, Gateway, GatewayOptions, USER_KEY, free_port};

use super::call_transfer::{agent_exit, caller, start_agent, wait_bound, write_prompt};

const FLOW: &str = r#"
flow: main
start: agent
settings:
  language: zh
steps:
  agent:
    type: transfer
    say:
      zh: { text: "正在为您转接人工服务，请稍候。", audio: connecting.wav }
      en: { text: "Connecting you to an agent.", audio: connecting.wav }
    queue: hotline
    while_waiting:
      "0": busy
    on_fail: busy
  busy:
    type: hangup
    say:
      zh: { text: "坐席忙，请稍后再拨。", audio: connecting.wav }
      en: { text: "All agents are busy. Please call again later.", audio: connecting.wav }
    reason: agents_busy
"#;

/// A temporary directory and the `sipp` directory in it where SIPp works and logs.
fn workdirs() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    (dir, work)
}

/// A gateway whose `hotline` queue has one agent at `agent_port`.
async fn gateway(root: &Path, agent_port: u16, queue: &str) -> (Gateway, u16) {
    gateway_with(
        root,
        &format!("sip:agent@127.0.0.1:{agent_port}"),
        "",
        queue,
    )
    .await
}

/// A gateway whose `hotline` queue has the one `agent` (a SIP URI, or a registering agent's
/// name with its `[sip.agents]` entry in `sip_extra`).
async fn gateway_with(root: &Path, agent: &str, sip_extra: &str, queue: &str) -> (Gateway, u16) {
    let flows = root.join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir");
    std::fs::write(flows.join("main.yaml"), FLOW).expect("write flow");
    write_prompt(&flows.join("connecting.wav"));
    let sip_port = free_port();
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n{sip_extra}\n\n\
         [media]\nrtp_port_min = 44000\nrtp_port_max = 44999\n\n\
         [calls.queues.hotline]\nagents = [\"{agent}\"]\n{queue}\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        flows.display().to_string()
    );
    let mut gw =
        Gateway::spawn_with_extra(GatewayOptions::new(&root.join("gw")), free_port(), &extra);
    gw.wait_ready().await;
    (gw, sip_port)
}

#[tokio::test]
async fn three_callers_and_one_agent_are_served_in_arrival_order_and_hear_their_place() {
    let (dir, work) = workdirs();
    let agent_port = support::free_port();
    let (gw, sip_port) = gateway(
        dir.path(),
        agent_port,
        "wrap_up_s = 1\nannounce_every_s = 10\nring_timeout_s = 10",
    )
    .await;
    let mut agent = start_agent("agent-answers-slowly.xml", agent_port, 3, &work);
    wait_bound(agent_port).await;

    // Three callers, 250 ms apart, all in line before the agent answers the first (its phone
    // rings for 3 s, room for a slow start under load); each waits up to 40 s for the
    // gateway's BYE after speaking.
    let mut callers = Vec::new();
    for _ in 0..3 {
        let target = format!("127.0.0.1:{sip_port}");
        let work = work.clone();
        let scenario = sipp::scenario("caller-transfer.xml");
        callers.push(tokio::task::spawn_blocking(move || {
            caller(&scenario, &target, &work)
        }));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // While they wait, the admin API shows the queue: once the agent has answered the first,
    // two callers in line and the agent busy. A user key may not see it.
    let mut r = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    for _ in 0..100 {
        if r.body["queues"][0]["answered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    }
    assert_eq!(r.status, 200, "{}", r.text);
    let q = &r.body["queues"][0];
    assert_eq!(q["name"], "hotline", "{}", r.text);
    assert_eq!(q["answered"], 1, "{}", r.text);
    assert_eq!(q["waiting"], 2, "{}", r.text);
    assert_eq!(
        (q["agents_logged_in"].as_u64(), q["agents_busy"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        r.text
    );
    assert_eq!(gw.get("/v1/queues", Some(USER_KEY)).await.status, 403);
    for c in callers {
        let (code, log) = c.await.expect("caller task");
        assert_eq!(
            code,
            0,
            "a caller's SIPp failed: {log}\n--- gateway ---\n{}",
            gw.log()
        );
    }
    let agent_code = agent_exit(&mut agent).await;
    assert_eq!(
        agent_code,
        0,
        "the agent's SIPp failed: {}\n--- gateway ---\n{}",
        logs(&work, "errors.log"),
        gw.log()
    );

    // Every caller reached the agent, and in the order they called: call records are written
    // as calls end, and each call ended (the agent hung up) before the next was bridged.
    let records = gw.call_records(3).await;
    let r = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    let q = &r.body["queues"][0];
    assert_eq!(
        (
            q["waiting"].as_u64(),
            q["answered"].as_u64(),
            q["abandoned"].as_u64()
        ),
        (Some(0), Some(3), Some(0)),
        "{}",
        r.text
    );
    assert!(
        q["average_wait_s"].as_u64().is_some_and(|w| w >= 5),
        "{}",
        r.text
    );
    let metrics = gw.get("/metrics", None).await.text;
    assert!(
        metrics.contains("gateway_queue_calls_today{queue=\"hotline\",outcome=\"answered\"} 3"),
        "{metrics}"
    );
    let started: Vec<String> = records
        .iter()
        .map(|r| r["started_at"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "served out of arrival order: {records:?}");
    for r in &records {
        assert_eq!(r["outcome"], "agent_hangup", "{r}");
        assert_eq!(
            r["transfer_to"],
            format!("sip:agent@127.0.0.1:{agent_port}"),
            "{r}"
        );
        assert!(r["callback_order"].is_null(), "{r}");
    }
    // Those who had to wait heard their place on arrival, 2 and 3 in line, and later a
    // smaller one; the first caller, offered to the agent at once, heard none.
    let log = gw.log();
    let announced: Vec<(String, usize)> = log
        .lines()
        .filter(|l| l.contains("queue: position announced"))
        .filter_map(|l| {
            let call = l.split("call{call=").nth(1)?.split(' ').next()?.to_owned();
            let position = l
                .split("position=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((call, position))
        })
        .collect();
    let first_heard = |position: usize| {
        announced
            .iter()
            .position(|(_, p)| *p == position)
            .unwrap_or_else(|| panic!("nobody heard position {position}: {announced:?}\n{log}"))
    };
    let (second, third) = (first_heard(2), first_heard(3));
    assert_ne!(announced[second].0, announced[third].0, "{announced:?}");
    assert!(
        announced[third + 1..]
            .iter()
            .any(|(c, p)| *c == announced[third].0 && *p < 3),
        "the third caller's place did not shrink: {announced:?}"
    );
    let callers_heard: std::collections::BTreeSet<&String> =
        announced.iter().map(|(c, _)| c).collect();
    assert_eq!(
        callers_heard.len(),
        2,
        "the first caller heard a place: {announced:?}"
    );
    assert!(
        !log.contains("13800138000"),
        "the caller's number appears unmasked in the log"
    );
}

#[tokio::test]
async fn a_caller_nobody_answers_is_given_up_on_after_the_longest_wait() {
    let (dir, work) = workdirs();
    let agent_port = support::free_port();
    // The agent's phone rings out (3 s) twice before the caller's 8 s are up.
    let (gw, sip_port) = gateway(
        dir.path(),
        agent_port,
        "ring_timeout_s = 3\nretry_s = 1\nmax_wait_s = 8\nannounce_every_s = 0",
    )
    .await;
    let mut agent = start_agent("agent-rings.xml", agent_port, 1, &work);
    wait_bound(agent_port).await;
    let target = format!("127.0.0.1:{sip_port}");
    let scenario = sipp::scenario("caller-transfer.xml");
    let w = work.clone();
    let (code, log) = tokio::task::spawn_blocking(move || caller(&scenario, &target, &w))
        .await
        .expect("caller task");
    assert_eq!(
        code,
        0,
        "the caller's SIPp failed: {log}\n--- gateway ---\n{}",
        gw.log()
    );
    let _ = agent_exit(&mut agent).await;
    let r = gw.call_record().await;
    assert_eq!(r["outcome"], "flow_hangup", "{r}");
    assert_eq!(r["last_step"], "main/busy", "{r}");
    assert!(r["transfer_to"].is_null(), "{r}");
    let log = gw.log();
    assert!(
        log.contains("queue: the agent did not answer in time"),
        "the ring-out was not withdrawn: {log}"
    );
    assert!(
        log.contains("no agent answered within the queue's longest wait"),
        "{log}"
    );
}

#[tokio::test]
async fn a_key_while_waiting_leaves_the_queue_and_cancels_the_ringing_agent() {
    let (dir, work) = workdirs();
    let agent_port = support::free_port();
    let (gw, sip_port) = gateway(dir.path(), agent_port, "ring_timeout_s = 20").await;
    // The agent's phone rings and is never picked up: it expects the gateway's CANCEL.
    let mut agent = start_agent("agent-rings.xml", agent_port, 1, &work);
    wait_bound(agent_port).await;
    // The caller presses 0 by SIP INFO 4 s after the answer, while the agent rings (the
    // transfer's prompt is 1 s).
    let target = format!("127.0.0.1:{sip_port}");
    let scenario = sipp::scenario("caller-key-while-waiting.xml");
    let w = work.clone();
    let (code, log) = tokio::task::spawn_blocking(move || {
        let (port, rtp) = (
            support::free_port().to_string(),
            support::free_port().to_string(),
        );
        sipp::call(
            &w,
            &scenario,
            &[
                "-p",
                &port,
                "-mp",
                &rtp,
                "-key",
                "info_digit",
                "0",
                "-key",
                "rtp_port",
                &support::free_port().to_string(),
            ],
            60,
            &target,
        )
    })
    .await
    .expect("caller task");
    assert_eq!(
        code,
        0,
        "the caller's SIPp failed: {log}\n--- gateway ---\n{}",
        gw.log()
    );
    assert_eq!(
        agent_exit(&mut agent).await,
        0,
        "the ringing agent saw no CANCEL: {}\n--- gateway ---\n{}",
        logs(&work, "errors.log"),
        gw.log()
    );
    let r = gw.call_record().await;
    assert_eq!(r["outcome"], "flow_hangup", "{r}");
    assert_eq!(r["last_step"], "main/busy", "{r}");
    assert!(
        gw.log().contains("left the agent queue for another step"),
        "{}",
        gw.log()
    );
    let q = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    assert_eq!(q.body["queues"][0]["abandoned"], 1, "{}", q.text);
    assert_eq!(q.body["queues"][0]["agents_idle"], 1, "{}", q.text);
}

/// Run SIPp once as agent 1001's phone registering with `password`, its Contact at
/// `contact_port`; the scenario expects 200 (`agent-register.xml`) or 403 (`-refused`).
async fn register(
    work: &Path,
    sip_port: u16,
    scenario: &str,
    password: &str,
    contact_port: u16,
) -> (i32, String) {
    let target = format!("127.0.0.1:{sip_port}");
    let scenario = sipp::scenario(scenario);
    let (work, password) = (work.to_path_buf(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        let (port, rtp) = (
            support::free_port().to_string(),
            support::free_port().to_string(),
        );
        sipp::call(
            &work,
            &scenario,
            &[
                "-p",
                &port,
                "-mp",
                &rtp,
                "-s",
                "1001",
                "-au",
                "1001",
                "-ap",
                &password,
                "-key",
                "contact_port",
                &contact_port.to_string(),
            ],
            30,
            &target,
        )
    })
    .await
    .expect("sipp task")
}

/// One caller (`caller-transfer.xml`) is put through to a SIPp agent that answers at
/// `agent_port`; both scenarios must pass.
async fn caller_reaches_agent(gw: &Gateway, agent_port: u16, target: &str, work: &Path) {
    let mut agent = start_agent("agent-answers.xml", agent_port, 1, work);
    wait_bound(agent_port).await;
    let (t, w) = (target.to_owned(), work.to_path_buf());
    let (code, log) =
        tokio::task::spawn_blocking(move || caller(&sipp::scenario("caller-transfer.xml"), &t, &w))
            .await
            .expect("caller task");
    assert_eq!(code, 0, "{log}\n--- gateway ---\n{}", gw.log());
    assert_eq!(
        agent_exit(&mut agent).await,
        0,
        "--- gateway ---\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn an_agent_who_registers_is_rung_where_their_phone_is_and_a_wrong_password_gets_no_calls() {
    let (dir, work) = workdirs();
    let secret = dir.path().join("agent-1001");
    std::fs::write(&secret, "tiger-9\n").expect("secret");
    let sip_extra = format!(
        "\n[sip.agents.1001]\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    let (gw, sip_port) = gateway_with(dir.path(), "1001", &sip_extra, "ring_timeout_s = 10").await;
    let phone_port = support::free_port();

    // A wrong password is refused 403, and the agent is not logged in: a caller is told the
    // agents are busy at once (the queue has nobody), not held for nobody.
    let (code, log) = register(
        &work,
        sip_port,
        "agent-register-refused.xml",
        "lion-1",
        phone_port,
    )
    .await;
    assert_eq!(
        code,
        0,
        "expected 401 then 403: {log}\n--- gateway ---\n{}",
        gw.log()
    );
    let q = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    assert_eq!(q.body["queues"][0]["agents_logged_in"], 0, "{}", q.text);
    let target = format!("127.0.0.1:{sip_port}");
    let (w, t) = (work.clone(), target.clone());
    let (code, log) =
        tokio::task::spawn_blocking(move || caller(&sipp::scenario("caller-transfer.xml"), &t, &w))
            .await
            .expect("caller task");
    assert_eq!(code, 0, "{log}\n--- gateway ---\n{}", gw.log());
    let first = gw.call_records(1).await;
    assert_eq!(first[0]["last_step"], "main/busy", "{first:?}");
    assert!(
        gw.log().contains("agent registration refused: 403"),
        "{}",
        gw.log()
    );

    // The right password: registered, logged in, and rung at the Contact it registered.
    let (code, log) = register(&work, sip_port, "agent-register.xml", "tiger-9", phone_port).await;
    assert_eq!(
        code,
        0,
        "expected 401 then 200: {log}\n--- gateway ---\n{}",
        gw.log()
    );
    let q = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    assert_eq!(q.body["queues"][0]["agents_logged_in"], 1, "{}", q.text);
    caller_reaches_agent(&gw, phone_port, &target, &work).await;
    let records = gw.call_records(2).await;
    let second = &records[1];
    assert_eq!(second["outcome"], "agent_hangup", "{second}");
    assert_eq!(
        second["transfer_to"],
        format!("sip:1001@127.0.0.1:{phone_port}"),
        "{second}"
    );
    assert!(
        !gw.log().contains("tiger-9"),
        "the password appears in the log"
    );
}

#[tokio::test]
async fn an_agent_behind_nat_is_rung_where_its_register_came_from() {
    let (dir, work) = workdirs();
    let secret = dir.path().join("agent-1001");
    std::fs::write(&secret, "tiger-9\n").expect("secret");
    let sip_extra = format!(
        "\n[sip.agents.1001]\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    let (gw, sip_port) = gateway_with(dir.path(), "1001", &sip_extra, "ring_timeout_s = 10").await;
    // The phone registers from `nat_port`, naming a private address in its Contact.
    let nat_port = support::free_port();
    let target = format!("127.0.0.1:{sip_port}");
    let (w, t) = (work.clone(), target.clone());
    let (code, log) = tokio::task::spawn_blocking(move || {
        let rtp = support::free_port().to_string();
        sipp::call(
            &w,
            &sipp::scenario("agent-register-nat.xml"),
            &[
                "-p",
                &nat_port.to_string(),
                "-mp",
                &rtp,
                "-s",
                "1001",
                "-au",
                "1001",
                "-ap",
                "tiger-9",
            ],
            30,
            &t,
        )
    })
    .await
    .expect("sipp task");
    assert_eq!(
        code,
        0,
        "expected 401 then 200: {log}\n--- gateway ---\n{}",
        gw.log()
    );
    // The same port now takes calls (as the NAT binding would carry them to the phone).
    caller_reaches_agent(&gw, nat_port, &target, &work).await;
    let record = gw.call_record().await;
    assert_eq!(record["outcome"], "agent_hangup", "{record}");
    assert!(
        gw.log().contains("agent registered from behind NAT"),
        "{}",
        gw.log()
    );
}

/// A registered agent's phone dials `*22` to log out of their queues and `*21` to log back in
/// (digest-authenticated like the REGISTER); a registration refresh keeps the break.
#[tokio::test]
async fn an_agent_logs_out_and_in_by_feature_code_from_their_phone() {
    let (dir, work) = workdirs();
    let sip_extra = "\n[sip.agents.1001]\npassword = \"tiger-9\"\n";
    let (gw, sip_port) = gateway_with(dir.path(), "1001", sip_extra, "").await;
    let phone_port = support::free_port();
    let logged_in = || async {
        let r = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
        r.body["queues"][0]["agents_logged_in"].as_u64()
    };
    let (code, log) = register(&work, sip_port, "agent-register.xml", "tiger-9", phone_port).await;
    assert_eq!(code, 0, "{log}\n--- gateway ---\n{}", gw.log());
    assert_eq!(logged_in().await, Some(1));
    let feature = |code: &'static str| {
        let (w, t) = (work.clone(), format!("127.0.0.1:{sip_port}"));
        tokio::task::spawn_blocking(move || {
            let (port, rtp) = (
                support::free_port().to_string(),
                support::free_port().to_string(),
            );
            sipp::call(
                &w,
                &sipp::scenario("agent-feature-code.xml"),
                &[
                    "-p", &port, "-mp", &rtp, "-s", "1001", "-au", "1001", "-ap", "tiger-9",
                    "-key", "feature", code,
                ],
                30,
                &t,
            )
        })
    };
    let (code, log) = feature("*22").await.expect("sipp task");
    assert_eq!(code, 0, "{log}\n--- gateway ---\n{}", gw.log());
    assert_eq!(logged_in().await, Some(0), "*22 logs the agent out");
    // The phone refreshes its registration: the break holds.
    let (code, log) = register(&work, sip_port, "agent-register.xml", "tiger-9", phone_port).await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        logged_in().await,
        Some(0),
        "a refresh does not end the break"
    );
    let (code, log) = feature("*21").await.expect("sipp task");
    assert_eq!(code, 0, "{log}\n--- gateway ---\n{}", gw.log());
    assert_eq!(logged_in().await, Some(1), "*21 logs the agent back in");
    assert!(
        gw.log().contains("feature code: agent login set"),
        "{}",
        gw.log()
    );
}

/// The admin API logs an agent in and out (a break, a shift's end); mistakes get clear errors.
#[tokio::test]
async fn the_admin_api_logs_agents_in_and_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sip_extra = "\n[sip.agents.1001]\npassword = \"x-1\"\n";
    let (gw, _) = gateway_with(dir.path(), "1001", sip_extra, "").await;
    let logged_in = || async {
        let r = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
        r.body["queues"][0]["agents_logged_in"].as_u64()
    };
    assert_eq!(
        logged_in().await,
        Some(0),
        "a registering agent starts logged out"
    );
    let url = "/v1/queues/hotline/agents/1001";
    let r = gw
        .put_json(url, Some(ADMIN_KEY), r#"{"logged_in": true}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["logged_in"], true, "{}", r.text);
    assert_eq!(logged_in().await, Some(1));
    let r = gw
        .put_json(url, Some(ADMIN_KEY), r#"{"logged_in": false}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(logged_in().await, Some(0));
    for (path, body, key, want) in [
        (
            "/v1/queues/hotline/agents/nobody",
            r#"{"logged_in": true}"#,
            ADMIN_KEY,
            409,
        ),
        (
            "/v1/queues/nowhere/agents/1001",
            r#"{"logged_in": true}"#,
            ADMIN_KEY,
            404,
        ),
        (url, r#"{"logged_in": "yes"}"#, ADMIN_KEY, 400),
        (url, r#"{"logged_in": true, "extra": 1}"#, ADMIN_KEY, 400),
        (url, "not json", ADMIN_KEY, 400),
        (url, r#"{"logged_in": true}"#, USER_KEY, 403),
    ] {
        let r = gw.put_json(path, Some(key), body).await;
        assert_eq!(r.status, want, "{path} {body}: {}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            r.text
        );
    }
    assert_eq!(logged_in().await, Some(0), "no mistake changed anything");
}

/// The queue flow with a callback key, and the flow a queue callback runs on answer.
const CALLBACK_FLOW: &str = r#"
flow: main
start: agent
settings:
  language: zh
steps:
  agent:
    type: transfer
    say:
      zh: { text: "正在为您转接人工服务，请稍候。", audio: connecting.wav }
      en: { text: "Connecting you to an agent.", audio: connecting.wav }
    queue: hotline
    callback:
      key: "1"
      say:
        zh: { text: "好的，轮到您时给您回电。", audio: connecting.wav }
        en: { text: "We will call you back in your turn.", audio: connecting.wav }
    on_fail: busy
  busy:
    type: hangup
    say:
      zh: { text: "坐席忙，请稍后再拨。", audio: connecting.wav }
      en: { text: "All agents are busy. Please call again later.", audio: connecting.wav }
    reason: agents_busy
"#;

const QUEUE_CALLBACK_FLOW: &str = r#"
flow: queue_callback
start: why
steps:
  why:
    type: prompt
    say:
      zh: { text: "您好，这里是12345，现在为您接通人工服务。", audio: connecting.wav }
      en: { text: "Hello, this is 12345 calling you back.", audio: connecting.wav }
    next: agent
  agent:
    type: transfer
    queue: hotline
    on_fail: bye
  bye:
    type: hangup
    reason: agents_busy
"#;

/// A gateway whose `hotline` queue (no wrap-up, no announcements) has one agent at
/// `agent_port` and offers the callback key, calling back through the trunk at `phone_port`;
/// RTP ports from `rtp_min`.
async fn callback_gateway(
    root: &Path,
    agent_port: u16,
    phone_port: u16,
    rtp_min: u16,
) -> (Gateway, u16) {
    let flows = root.join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir");
    std::fs::write(flows.join("main.yaml"), CALLBACK_FLOW).expect("write flow");
    std::fs::write(flows.join("queue_callback.yaml"), QUEUE_CALLBACK_FLOW).expect("write flow");
    write_prompt(&flows.join("connecting.wav"));
    let sip_port = free_port();
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
         [media]\nrtp_port_min = {rtp_min}\nrtp_port_max = {}\n\n\
         [calls.queues.hotline]\nagents = [\"sip:agent@127.0.0.1:{agent_port}\"]\n\
         wrap_up_s = 0\nannounce_every_s = 0\nring_timeout_s = 10\n\n\
         [calls.outbound]\ntrunk = \"sip:127.0.0.1:{phone_port}\"\ncalling_hours = \"00:00-24:00\"\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        rtp_min + 999,
        flows.display().to_string()
    );
    let mut gw =
        Gateway::spawn_with_extra(GatewayOptions::new(&root.join("gw")), free_port(), &extra);
    gw.wait_ready().await;
    (gw, sip_port)
}

/// A caller who presses 1 (the callback key) by SIP INFO 4 s after the answer and is hung up.
async fn caller_asking_for_a_callback(target: &str, work: &Path) -> (i32, String) {
    let (t, w) = (target.to_owned(), work.to_owned());
    tokio::task::spawn_blocking(move || {
        let (port, rtp) = (
            support::free_port().to_string(),
            support::free_port().to_string(),
        );
        let rtp_port = support::free_port().to_string();
        sipp::call(
            &w,
            &sipp::scenario("caller-key-while-waiting.xml"),
            &[
                "-p",
                &port,
                "-mp",
                &rtp,
                "-key",
                "info_digit",
                "1",
                "-key",
                "rtp_port",
                &rtp_port,
            ],
            60,
            &t,
        )
    })
    .await
    .expect("caller task")
}

#[tokio::test]
async fn a_caller_who_asks_for_a_callback_is_called_back_in_their_place_before_the_next() {
    let (dir, work) = workdirs();
    let (agent_port, phone_port) = (support::free_port(), support::free_port());
    let (gw, sip_port) = callback_gateway(dir.path(), agent_port, phone_port, 46000).await;
    // The agent takes three calls: the first caller, the one called back, the third.
    let mut agent = start_agent("agent-answers-slowly.xml", agent_port, 3, &work);
    wait_bound(agent_port).await;
    // The phone the second caller is called back on.
    let mut phone = super::call_transfer::start_uas(
        "phone-answers-keys.xml",
        phone_port,
        1,
        &work,
        &["-key", "info_digit", "5"],
    );
    wait_bound(phone_port).await;
    let target = format!("127.0.0.1:{sip_port}");
    // First: served at once (the agent rings 3 s, then talks 5 s).
    let first = {
        let (t, w) = (target.clone(), work.clone());
        tokio::task::spawn_blocking(move || caller(&sipp::scenario("caller-transfer.xml"), &t, &w))
    };
    let served = support::wait_until(Duration::from_secs(20), || async {
        gw.get("/v1/queues", Some(ADMIN_KEY)).await.body["queues"][0]["agents_busy"] == 1
    })
    .await;
    assert!(
        served,
        "the first caller did not reach the agent: {}",
        gw.log()
    );
    // Second: presses 1 four seconds after the answer, hears the confirmation, is hung up.
    let second = {
        let (t, w) = (target.clone(), work.clone());
        tokio::spawn(async move { caller_asking_for_a_callback(&t, &w).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Third: waits on the line behind the second's kept place.
    let third = {
        let (t, w) = (target.clone(), work.clone());
        tokio::task::spawn_blocking(move || caller(&sipp::scenario("caller-transfer.xml"), &t, &w))
    };
    let (code, log) = second.await.expect("second caller");
    assert_eq!(
        code,
        0,
        "the second caller was not hung up after the key: {log}\n{}",
        gw.log()
    );
    let kept = gw.get("/v1/queues", Some(ADMIN_KEY)).await;
    let calls = gw.get("/v1/calls", Some(ADMIN_KEY)).await;
    let job = &calls.body["calls"][0];
    assert_eq!(job["origin"]["kind"], "queue_callback", "{}", calls.text);
    assert_eq!(job["to"], "13800138000", "{}", calls.text);
    for c in [first, third] {
        let (code, log) = c.await.expect("caller task");
        assert_eq!(
            code,
            0,
            "a caller's SIPp failed: {log}\n--- gateway ---\n{}",
            gw.log()
        );
    }
    assert_eq!(
        agent_exit(&mut agent).await,
        0,
        "the agent took three calls: {}",
        gw.log()
    );
    assert_eq!(
        agent_exit(&mut phone).await,
        0,
        "the phone was called back: {}",
        gw.log()
    );
    let id = job["id"].as_str().expect("id");
    let done = gw
        .get(&format!("/v1/calls/{id}"), Some(ADMIN_KEY))
        .await
        .body;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        kept.body["queues"][0]["callbacks"].as_u64() <= Some(1),
        "{}",
        kept.text
    );
    // Served in the order they called: the callback (an outbound call record) between the
    // first and the third caller. Each bridged call ends when the agent hangs up, before the
    // agent is offered the next: the records' ends are the order of service.
    let records = gw.call_records(4).await;
    let bridged: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["transfer_to"].is_string())
        .map(|r| {
            (
                r["ended_at"].as_str().unwrap_or_default().to_owned(),
                r["direction"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut order = bridged.clone();
    order.sort();
    let directions: Vec<&str> = order.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        directions,
        ["inbound", "outbound", "inbound"],
        "the called-back caller was served in their place: {records:?}\n--- gateway ---\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn a_callback_waiting_when_the_gateway_is_killed_is_made_after_the_restart_once() {
    let (dir, work) = workdirs();
    let (agent_port, phone_port) = (support::free_port(), support::free_port());
    let (mut gw, sip_port) = callback_gateway(dir.path(), agent_port, phone_port, 47000).await;
    // The agent is busy with a first caller while the second asks for a callback.
    let mut busy_agent = start_agent("agent-answers-slowly.xml", agent_port, 1, &work);
    wait_bound(agent_port).await;
    let target = format!("127.0.0.1:{sip_port}");
    let mut first = super::call_transfer::spawn_caller("caller-transfer.xml", &target, &work);
    let served = support::wait_until(Duration::from_secs(20), || async {
        gw.get("/v1/queues", Some(ADMIN_KEY)).await.body["queues"][0]["agents_busy"] == 1
    })
    .await;
    assert!(
        served,
        "the first caller did not reach the agent: {}",
        gw.log()
    );
    let (code, log) = caller_asking_for_a_callback(&target, &work).await;
    assert_eq!(
        code,
        0,
        "the second caller was not hung up after the key: {log}\n{}",
        gw.log()
    );
    let calls = gw.get("/v1/calls", Some(ADMIN_KEY)).await;
    let job = calls.body["calls"][0].clone();
    assert_eq!(
        job["status"], "held",
        "waiting for its turn: {}",
        calls.text
    );
    let id = job["id"].as_str().expect("id").to_owned();
    // Kill everything on the line; the callback is only in the store now.
    gw.kill9();
    let _ = first.kill();
    let _ = busy_agent.kill();
    let _ = first.wait();
    let _ = busy_agent.wait();
    let mut phone = super::call_transfer::start_uas(
        "phone-answers-keys.xml",
        phone_port,
        1,
        &work,
        &["-key", "info_digit", "5"],
    );
    wait_bound(phone_port).await;
    let mut agent = start_agent("agent-answers.xml", agent_port, 1, &work);
    wait_bound(agent_port).await;
    gw.restart().await;
    let done = support::wait_until(Duration::from_secs(60), || async {
        gw.get(&format!("/v1/calls/{id}"), Some(ADMIN_KEY))
            .await
            .body["status"]
            == "completed"
    })
    .await;
    let job = gw
        .get(&format!("/v1/calls/{id}"), Some(ADMIN_KEY))
        .await
        .body;
    assert!(
        done,
        "the kept callback was not made after the restart: {job}\n{}",
        gw.log()
    );
    assert_eq!(
        job["attempts"].as_array().map(Vec::len),
        Some(1),
        "dialled once: {job}"
    );
    assert_eq!(
        job["result"]["ending"], "agent_hangup",
        "reached the agent: {job}"
    );
    assert_eq!(
        agent_exit(&mut phone).await,
        0,
        "the phone was called back once"
    );
    assert_eq!(
        agent_exit(&mut agent).await,
        0,
        "the agent took the callback"
    );
}
