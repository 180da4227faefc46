//! Transfers to a human agent, with both ends played by SIPp (Debian's `sip-tester`): the caller
//! (scenarios `tests/sipp/caller-*.xml`) and the agent's phone (`tests/sipp/agent-*.xml`). The
//! gateway bridges them as a B2BUA: a second leg to the agent URI from `calls.agents`, the order
//! draft in `X-12345-Order-Draft`, audio relayed both ways (the caller speaks PCMA, the agent
//! answers PCMU, and echoes what it hears, so voiced frames must cross the bridge in both
//! directions), and whoever hangs up ends the other side. A busy agent sends the caller down the
//! flow's `on_fail` path; a caller who gives up while the agent's phone rings makes the gateway
//! CANCEL that leg and leaves a callback order.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::sipp::{self, logs};
use support::{Gateway, GatewayOptions, free_port};

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
    queue: general
    on_fail: busy
  busy:
    type: hangup
    say:
      zh: { text: "坐席忙，请稍后再拨。" }
      en: { text: "All agents are busy. Please call again later." }
    reason: agents_busy
"#;

/// SIPp as an agent's phone: a UAS on its own port taking `calls` calls of `scenario` (a file
/// in `tests/sipp/`) one after another, echoing RTP (`-rtp_echo`).
pub(super) fn start_agent(scenario: &str, port: u16, calls: u32, workdir: &Path) -> Child {
    start_uas(scenario, port, calls, workdir, &[])
}

/// A SIPp UAS (an agent's or a citizen's phone) at `port` for `calls` calls of `scenario`,
/// echoing RTP, with `args` (keys such as `-key info_digit 5`).
pub(super) fn start_uas(
    scenario: &str,
    port: u16,
    calls: u32,
    workdir: &Path,
    args: &[&str],
) -> Child {
    Command::new("sipp")
        .current_dir(workdir)
        .arg("-sf")
        .arg(sipp::scenario(scenario))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-mp",
            &support::free_port().to_string(),
        ])
        .args(["-m", &calls.to_string(), "-rtp_echo"])
        .args(args)
        .args([
            "-timeout",
            "90",
            "-timeout_error",
            "-trace_err",
            "-trace_logs",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed by scripts/setup.sh --test (Debian package sip-tester)")
}

/// A SIPp caller running one call of `scenario` against `target` in the background (to be
/// waited for, or killed).
pub(super) fn spawn_caller(scenario: &str, target: &str, workdir: &Path) -> Child {
    let (port, rtp) = (
        support::free_port().to_string(),
        support::free_port().to_string(),
    );
    Command::new("sipp")
        .current_dir(workdir)
        .arg("-sf")
        .arg(sipp::scenario(scenario))
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port,
            "-mp",
            &rtp,
        ])
        .args(["-m", "1", "-timeout", "60", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed by scripts/setup.sh --test (Debian package sip-tester)")
}

/// Wait until the agent's SIPp holds its UDP port.
pub(super) async fn wait_bound(port: u16) {
    for _ in 0..250 {
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("SIPp (agent) did not bind 127.0.0.1:{port} within 5 s");
}

/// Run the caller's SIPp for one call; returns its exit status and logs.
pub(super) fn caller(scenario: &Path, target: &str, workdir: &Path) -> (i32, String) {
    let (port, rtp) = (
        support::free_port().to_string(),
        support::free_port().to_string(),
    );
    sipp::call(workdir, scenario, &["-p", &port, "-mp", &rtp], 60, target)
}

/// Wait for the agent's SIPp to finish; its exit status (0: scenario passed).
pub(super) async fn agent_exit(agent: &mut Child) -> i32 {
    for _ in 0..600 {
        if let Ok(Some(status)) = agent.try_wait() {
            return status.code().unwrap_or(-1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = agent.kill();
    panic!("the agent's SIPp did not finish within 60 s");
}

/// A 1 s prompt (a 600 Hz tone, 8 kHz mono WAV): recorded prompts start at once, where
/// synthesizing the text would take seconds on a loaded machine and shift the bridge's timing.
pub(super) fn write_prompt(path: &Path) {
    let tone: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (8000.0 * (2.0 * std::f32::consts::PI * 600.0 * t).sin()) as i16
        })
        .collect();
    support::write_wav_8k(path, &tone);
}

struct Setup {
    _dir: tempfile::TempDir,
    gw: Gateway,
    sip_port: u16,
    agent_port: u16,
    work: PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir");
    std::fs::write(flows.join("main.yaml"), FLOW).expect("write flow");
    write_prompt(&flows.join("connecting.wav"));
    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir");
    let sip_port = free_port();
    let agent_port = support::free_port();
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
         [media]\nrtp_port_min = 43000\nrtp_port_max = 43999\n\n\
         [calls]\ntransfer_timeout_s = 20\n\n\
         [calls.agents]\ngeneral = \"sip:agent@127.0.0.1:{agent_port}\"\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        flows.display().to_string()
    );
    let data = dir.path().join("gw");
    let mut gw = Gateway::spawn_with_extra(GatewayOptions::new(&data), free_port(), &extra);
    gw.wait_ready().await;
    Setup {
        _dir: dir,
        gw,
        sip_port,
        agent_port,
        work,
    }
}

async fn run_call(s: &Setup, caller_scenario: &str, agent_scenario: &str) -> (i32, String, i32) {
    let mut agent = start_agent(agent_scenario, s.agent_port, 1, &s.work);
    wait_bound(s.agent_port).await;
    let target = format!("127.0.0.1:{}", s.sip_port);
    let work = s.work.clone();
    let caller_scenario = sipp::scenario(caller_scenario);
    let (code, log) = tokio::task::spawn_blocking(move || caller(&caller_scenario, &target, &work))
        .await
        .expect("sipp task");
    let agent_code = agent_exit(&mut agent).await;
    (code, log, agent_code)
}

#[tokio::test]
async fn an_answered_transfer_bridges_audio_both_ways_and_the_agent_ends_the_call() {
    let s = setup().await;
    let (code, log, agent_code) = run_call(&s, "caller-transfer.xml", "agent-answers.xml").await;
    let agent_log = logs(&s.work, "_logs.log") + &logs(&s.work, "errors.log");
    assert_eq!(
        code,
        0,
        "caller's SIPp failed: {log}\n--- agent ---\n{agent_log}\n--- gateway ---\n{}",
        s.gw.log()
    );
    assert_eq!(
        agent_code,
        0,
        "agent's SIPp failed: {agent_log}\n--- gateway ---\n{}",
        s.gw.log()
    );

    // The agent got the order draft: the caller's number and the call it belongs to.
    let draft_line = agent_log
        .lines()
        .find_map(|l| l.split_once("draft=").map(|(_, d)| d.trim().to_owned()))
        .unwrap_or_else(|| panic!("the agent's INVITE had no order draft: {agent_log}"));
    let draft: serde_json::Value =
        serde_json::from_str(&draft_line).unwrap_or_else(|e| panic!("{e}: {draft_line}"));
    assert_eq!(draft["vars"]["caller"], "13800138000", "{draft}");
    assert_eq!(draft["vars"]["language"], "zh", "{draft}");

    let r = s.gw.call_record().await;
    assert_eq!(r["outcome"], "agent_hangup", "{r}");
    assert_eq!(draft["call_id"], r["sip_call_id"], "{draft} vs {r}");
    assert_eq!(
        r["transfer_to"],
        format!("sip:agent@127.0.0.1:{}", s.agent_port)
    );
    assert_eq!(r["codec"], "PCMA", "{r}");
    // The caller sends 30 ms packets (SIPp's sample recording): they fill our 20 ms frames
    // without being counted late.
    let late = r["rtp"]["late"].as_u64().expect("late");
    let received = r["rtp"]["packets_received"].as_u64().expect("received");
    assert!(received >= 100 && late <= 5, "{r}");
    let b = &r["bridge"];
    let answered = b["answered_after_ms"].as_u64().expect("answered");
    // The agent's phone rang for a second before it answered.
    assert!(answered >= 900, "{r}");
    let bridged = b["bridged_ms"].as_u64().expect("bridged_ms");
    assert!(bridged >= 4000, "{r}");
    // The caller's speech reached the agent and came back from it (the agent echoes).
    let to_agent = b["voiced_to_agent"].as_u64().unwrap_or(0);
    let to_caller = b["voiced_to_caller"].as_u64().unwrap_or(0);
    assert!(to_agent >= 25, "caller audio not relayed to the agent: {r}");
    assert!(
        to_caller >= 25,
        "agent audio not relayed to the caller: {r}"
    );
    assert!(
        b["agent_rtp"]["packets_received"].as_u64().unwrap_or(0) >= 100,
        "{r}"
    );
    // Someone answered: no callback order.
    assert!(r["callback_order"].is_null(), "{r}");
    assert!(
        !s.gw.log().contains("13800138000"),
        "the caller's number appears unmasked in the log"
    );
}

#[tokio::test]
async fn a_busy_agent_sends_the_caller_down_the_flows_on_fail_path() {
    let s = setup().await;
    let (code, log, agent_code) = run_call(&s, "caller-transfer.xml", "agent-busy.xml").await;
    let agent_log = logs(&s.work, "errors.log");
    assert_eq!(
        code,
        0,
        "caller's SIPp failed (expected the gateway's BYE after the busy prompt): {log}\n\
         --- agent ---\n{agent_log}\n--- gateway ---\n{}",
        s.gw.log()
    );
    assert_eq!(agent_code, 0, "agent's SIPp failed: {agent_log}");
    let r = s.gw.call_record().await;
    assert_eq!(r["outcome"], "flow_hangup", "{r}");
    assert_eq!(r["last_step"], "main/busy", "{r}");
    assert!(r["transfer_to"].is_null(), "{r}");
    assert!(r["bridge"]["answered_after_ms"].is_null(), "{r}");
    assert!(
        s.gw.log().contains("486"),
        "the log says why the transfer failed"
    );
}

#[tokio::test]
async fn a_caller_who_gives_up_while_the_agent_rings_cancels_the_leg_and_gets_a_callback() {
    let s = setup().await;
    let (code, log, agent_code) = run_call(&s, "caller-gives-up.xml", "agent-rings.xml").await;
    let agent_log = logs(&s.work, "errors.log");
    assert_eq!(
        code,
        0,
        "caller's SIPp failed: {log}\n--- gateway ---\n{}",
        s.gw.log()
    );
    assert_eq!(
        agent_code,
        0,
        "agent's SIPp did not see CANCEL: {agent_log}\n--- gateway ---\n{}",
        s.gw.log()
    );
    let r = s.gw.call_record().await;
    assert_eq!(r["outcome"], "caller_hangup", "{r}");
    let callback = r["callback_order"]
        .as_str()
        .unwrap_or_else(|| panic!("no callback order: {r}"))
        .to_owned();
    let order = s.gw.order(&callback).await;
    assert_eq!(order["citizen"]["phone"], "13800138000", "{order}");
}
