//! A phone call answered by speaking: SIPp places the call (signalling only), the test itself
//! sends the caller's voice as RTP (G.711 mu-law, 20 ms packets, real time) from the port its
//! SDP offer names, and the gateway hears it: the VAD endpoints each answer, Whisper transcribes
//! it, the pinyin matcher maps it to the step's keyword, and the IVR flow moves on. No key is
//! pressed in the whole call. The caller's voice is espeak-ng's Mandarin pinyin voice carried
//! over 8 kHz mu-law by sox: "我要投诉" chooses the complaint option of a menu, "我在武昌区" names the
//! district, and the order the flow submits must say so.
//!
//! The model is prepared by `scripts/setup.sh` (or here, idempotently, on first use), in the
//! default format (f16); `SPEECH_QUANTIZATION=q8_0` (or `f16`) runs the call on that one, to
//! compare what each hears.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Gateway, GatewayOptions, free_port};

/// A test flow: a spoken menu, a spoken district, a submit. Prompts are text (espeak-ng).
const FLOW: &str = r#"
flow: main
start: menu
settings:
  language: zh
  barge_in: { speech: true, dtmf: true }
  timeouts: { initial_ms: 20000, no_input_ms: 20000, inter_digit_ms: 2000 }
steps:
  menu:
    type: menu
    say: "投诉请说投诉，咨询请说咨询。"
    no_input: { max: 2 }
    no_match: { max: 3 }
    on_fail: failed
    options:
      - digit: "1"
        say: [投诉, 举报]
        set: { kind: complaint }
        goto: district
      - digit: "2"
        say: [咨询, 建议]
        set: { kind: consultation }
        goto: district
  district:
    type: menu
    say: "请说出区名。"
    no_input: { max: 2 }
    no_match: { max: 3 }
    on_fail: failed
    options:
      - digit: "2"
        say: [江汉区, 江汉]
        set: { district: 江汉区 }
        goto: submit
      - digit: "5"
        say: [武昌区, 武昌]
        set: { district: 武昌区 }
        goto: submit
      - digit: "7"
        say: [洪山区, 洪山]
        set: { district: 洪山区 }
        goto: submit
      - digit: "8"
        say: [东西湖区, 东西湖]
        set: { district: 东西湖区 }
        goto: submit
  submit:
    type: submit
    order: { kind: vars.kind, district: vars.district, text: "'电话语音受理测试'", caller: caller }
    into: order_id
    next: bye
    on_fail: failed
  bye:
    type: hangup
    say: "再见。"
    reason: completed
  failed:
    type: hangup
    say: "再见。"
    reason: failed
"#;

/// SIPp: INVITE offering PCMU at the test's own RTP port (`RTP_PORT`), ACK, then wait for the
/// gateway's BYE (the flow hangs up after the order); if none comes, hang up ourselves.
const SCENARIO: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="12345 caller answers by speaking">
  <send retrans="500">
    <![CDATA[
      INVITE sip:12345@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Citizen" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:12345@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio RTP_PORT RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Citizen" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv request="BYE" timeout="60000" ontimeout="hangup"/>
  <send next="done">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <label id="hangup"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Citizen" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
  <label id="done"/>
</scenario>
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have_tools() -> bool {
    ["espeak-ng", "sox", "sipp"].iter().all(|t| {
        Command::new(t)
            .arg(if *t == "sipp" { "-v" } else { "--version" })
            .output()
            .is_ok()
    })
}

/// Hanzi -> tone-numbered pinyin for espeak-ng's `cmn-latn-pinyin` voice, which sounds like
/// Mandarin (its `cmn` voice reads many Hanzi as letters).
fn tone_pinyin(text: &str) -> String {
    // The few syllables the test speaks; a table keeps the test free of a pinyin dependency.
    let table = [
        ('我', "wo3"),
        ('要', "yao4"),
        ('投', "tou2"),
        ('诉', "su4"),
        ('武', "wu3"),
        ('昌', "chang1"),
        ('区', "qu1"),
    ];
    text.chars()
        .filter_map(|c| table.iter().find(|(h, _)| *h == c).map(|(_, p)| *p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The speech model's directory, prepared if it is not yet (idempotent), and the format
/// (`SPEECH_QUANTIZATION`, default f16) a test's `[speech] quantization` should name.
pub(super) async fn prepared_model() -> (PathBuf, speech_models::model::Quantization) {
    let models = repo().join("speech-models/models");
    let quantization: speech_models::model::Quantization =
        match std::env::var("SPEECH_QUANTIZATION") {
            Ok(q) => q
                .parse()
                .unwrap_or_else(|e| panic!("SPEECH_QUANTIZATION: {e}")),
            Err(_) => Default::default(),
        };
    let prepared = tokio::task::spawn_blocking({
        let models = models.clone();
        move || {
            let options = speech_models::model::PrepareOptions {
                quantization,
                ..Default::default()
            };
            speech_models::model::prepare(&models, &options)
        }
    })
    .await
    .expect("prepare task");
    if let Err(e) = prepared {
        panic!("the speech model is needed (scripts/setup.sh prepares it): {e}");
    }
    (models, quantization)
}

/// `text` spoken by espeak-ng into `raw`, then converted by sox to `out` in `format`, with
/// sox's `effects` after.
fn spoken(text: &str, raw: &Path, format: &[&str], out: &Path, effects: &[&str]) {
    let ok = Command::new("espeak-ng")
        .args(["-v", "cmn-latn-pinyin", "-s", "140", "-w"])
        .arg(raw)
        .arg(tone_pinyin(text))
        .status()
        .expect("espeak-ng runs");
    assert!(ok.success(), "espeak-ng failed");
    let ok = Command::new("sox")
        .arg(raw)
        .args(format)
        .arg(out)
        .args(effects)
        .status()
        .expect("sox runs");
    assert!(ok.success(), "sox failed");
}

/// `text` spoken by espeak-ng as a 16-bit 8 kHz WAV at `wav`, after `lead_s` seconds of
/// silence and followed by `trail_s` (a browser's fake microphone plays it in a loop).
pub(super) fn spoken_wav(text: &str, wav: &Path, lead_s: f64, trail_s: f64) {
    let format = ["-r", "8000", "-c", "1", "-b", "16"];
    let (lead, trail) = (lead_s.to_string(), trail_s.to_string());
    let pad = ["pad", lead.as_str(), trail.as_str()];
    spoken(text, &wav.with_extension("tts.wav"), &format, wav, &pad);
}

/// `text` spoken by espeak-ng and encoded as 8 kHz G.711 mu-law bytes by sox.
fn spoken_ulaw(text: &str, dir: &Path) -> Vec<u8> {
    let ul = dir.join("line.ul");
    let format = ["-t", "raw", "-r", "8000", "-c", "1", "-e", "u-law"];
    spoken(text, &dir.join("tts.wav"), &format, &ul, &[]);
    std::fs::read(&ul).expect("mu-law audio")
}

/// Wait for `gw` to have loaded its speech model (it loads in the background after start;
/// a call should not race it).
pub(super) async fn wait_speech_ready(gw: &Gateway) {
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            let log = gw.log();
            async move { log.contains("speech recognition ready") }
        })
        .await,
        "the speech model did not load: {}",
        gw.log()
    );
}

/// The caller's side of the call: `(at_seconds, mu-law audio)` clips over silence, `total`
/// seconds long.
fn timeline(clips: &[(f64, Vec<u8>)], total: f64) -> Vec<u8> {
    let mut line = vec![0xFFu8; (total * 8000.0) as usize];
    for (at, clip) in clips {
        let start = (at * 8000.0) as usize;
        let end = (start + clip.len()).min(line.len());
        line[start..end].copy_from_slice(&clip[..end - start]);
    }
    line
}

/// Sends `audio` as RTP (PT 0, 20 ms) to wherever the gateway's RTP comes from, in real time;
/// keeps reading (and dropping) the gateway's prompt audio. Stops at the end or on `stop`.
fn send_rtp(socket: UdpSocket, audio: Vec<u8>, stop: Arc<AtomicBool>) -> Result<usize, String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let waited = Instant::now();
    let gateway: SocketAddr = loop {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            break from;
        }
        if waited.elapsed() > Duration::from_secs(30) || stop.load(Ordering::Relaxed) {
            return Err("no RTP from the gateway within 30 s".into());
        }
    };
    let started = Instant::now();
    let mut sent = 0;
    for (i, chunk) in audio.chunks(160).enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = started + Duration::from_millis(20 * i as u64);
        while Instant::now() < due {
            let _ = socket.recv_from(&mut buf);
        }
        let mut packet = Vec::with_capacity(12 + 160);
        packet.push(0x80);
        packet.push(if i == 0 { 0x80 } else { 0x00 });
        packet.extend_from_slice(&(i as u16).to_be_bytes());
        packet.extend_from_slice(&((i as u32) * 160).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend_from_slice(chunk);
        packet.resize(12 + 160, 0xFF);
        // After the gateway hangs up its port is closed; the rest of the line is not needed.
        if socket.send_to(&packet, gateway).is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

#[tokio::test]
async fn a_spoken_answer_chooses_the_menu_option_and_names_the_district() {
    if !have_tools() {
        eprintln!("skipped: espeak-ng, sox and sipp are needed (scripts/setup.sh --test)");
        return;
    }
    let (models, quantization) = prepared_model().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir flows");
    std::fs::write(flows.join("main.yaml"), FLOW).expect("write flow");
    std::fs::copy(
        repo().join("ivr-flows/flows/calendar.yaml"),
        flows.join("calendar.yaml"),
    )
    .expect("copy the calendar");

    let sip_port = free_port();
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
         [media]\nrtp_port_min = 46000\nrtp_port_max = 46999\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n\n\
         [speech]\ncache_dir = {:?}\nquantization = \"{quantization}\"\n",
        flows.display().to_string(),
        models.display().to_string(),
    );
    let gw_dir = dir.path().join("gw");
    let mut gw = Gateway::spawn_with_extra(GatewayOptions::new(&gw_dir), free_port(), &extra);
    gw.wait_ready().await;
    wait_speech_ready(&gw).await;

    // The caller: silence, "我要投诉" during the menu prompt (barge-in), then, once the menu
    // has moved on, "我在武昌区" to the district question, and once more later, as a caller
    // asked "请说出区名" again would (heard only if the first was not understood: after a
    // right answer the flow has hung up by then; a wrong district fails the test either way).
    // A whole sentence, as callers answer: espeak-ng's bare "武昌区" or "洪山区" is heard by
    // Whisper base as one or two syllables ("无故", "俞") in about half the runs here.
    let audio_dir = dir.path().join("audio");
    std::fs::create_dir_all(&audio_dir).expect("mkdir audio");
    let complaint = spoken_ulaw("我要投诉", &audio_dir);
    let district = spoken_ulaw("我在武昌区", &audio_dir);
    let line = timeline(
        &[(1.5, complaint), (11.0, district.clone()), (21.0, district)],
        32.0,
    );

    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || send_rtp(rtp, line, stop)
    });

    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).expect("mkdir sipp");
    let scenario = work.join("speaker.xml");
    std::fs::write(
        &scenario,
        SCENARIO.replace("RTP_PORT", &rtp_port.to_string()),
    )
    .expect("write scenario");
    let target = format!("127.0.0.1:{sip_port}");
    let sipp = tokio::task::spawn_blocking(move || {
        Command::new("sipp")
            .current_dir(&work)
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-m", "1", "-timeout", "90", "-timeout_error", "-trace_err"])
            .arg(&target)
            .output()
    })
    .await
    .expect("sipp task")
    .expect("sipp is installed by scripts/setup.sh --test (Debian package sip-tester)");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("RTP sender");
    let log = gw.log();
    assert!(
        sipp.status.success(),
        "SIPp call failed: {}{}\n--- gateway log ---\n{log}",
        String::from_utf8_lossy(&sipp.stdout),
        String::from_utf8_lossy(&sipp.stderr)
    );
    let sent = sent.unwrap_or_else(|e| panic!("RTP: {e}\n--- gateway log ---\n{log}"));
    assert!(sent > 100, "only {sent} RTP packets sent");

    let mut orders = Vec::new();
    for _ in 0..100 {
        orders = gw.all_orders(100).await;
        if !orders.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in log.lines().filter(|l| l.contains("gateway::speech")) {
        eprintln!("{line}");
    }
    assert_eq!(orders.len(), 1, "{orders:?}\n--- gateway log ---\n{log}");
    let order = &orders[0];
    assert_eq!(order["channel"], "phone", "{order}");
    assert_eq!(order["kind"], "complaint", "{order}\n{log}");
    assert_eq!(order["location"]["district"], "武昌区", "{order}\n{log}");
    assert_eq!(order["citizen"]["phone"], "13800138000");
    // Both answers were heard by speech (no key was sent), and the call ended by the flow.
    assert!(
        log.matches("caller said").count() >= 2,
        "expected two recognized answers: {log}"
    );
    assert!(
        !log.contains("13800138000"),
        "the caller's number appears unmasked in the log"
    );
}
