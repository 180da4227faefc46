//! An outgoing leg (the transfer of a caller to an agent) against a SIP stack that is not ours:
//! SIPp's built-in UAS scenario, from Debian's `sip-tester` (`scripts/setup.sh --test`
//! installs it; `SIPP=/path/to/sipp` points elsewhere). It answers 180 then 200 with SDP,
//! waits for the ACK and a BYE, and answers the BYE. Our unit tests check the UAC against our
//! own reading of RFC 3261; this checks it against someone else's.
//!
//! Without SIPp the test fails and says how to install it: a transfer path that was never run
//! against a real peer should not pass quietly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gateway::runtime::sip_transport::{Command, SipService};
use sip::{CallEvent, OutgoingCall, TerminationReason, Transport};
use tokio::time::timeout;

use crate::sip_transport::local;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Wait until SIPp holds its port (ours can no longer be bound there). Over TCP a connection
/// refused would lose the INVITE for good (no retransmission on a reliable transport).
async fn wait_bound(port: u16, tcp: bool, sipp: &mut tokio::process::Child) {
    for _ in 0..250 {
        let free = if tcp {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        } else {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        };
        if !free {
            return;
        }
        if let Ok(Some(status)) = sipp.try_wait() {
            panic!("SIPp exited at start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("SIPp did not bind 127.0.0.1:{port} within 5 s");
}

/// Start `sipp -sn uas` on `port`, logging every message it sends and receives to `log`.
fn start_sipp(port: u16, tcp: bool, log: &Path) -> tokio::process::Child {
    let sipp = std::env::var("SIPP").unwrap_or_else(|_| "sipp".into());
    let port = port.to_string();
    let mut args = vec!["-sn", "uas", "-i", "127.0.0.1", "-p", &port, "-m", "1"];
    // never run forever, and count running out of time as a failure
    args.extend(["-timeout", "30s", "-timeout_error", "-nostdin"]);
    let log = log.to_str().expect("utf-8 temp path");
    args.extend(["-trace_msg", "-message_file", log]);
    if tcp {
        args.extend(["-t", "t1"]);
    }
    tokio::process::Command::new(&sipp)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {sipp:?} ({e}): this test needs SIPp; install Debian's sip-tester \
                 (`scripts/setup.sh --test`) or set SIPP to the sipp binary"
            )
        })
}

/// The next event, within a few seconds.
async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<CallEvent>) -> CallEvent {
    timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the SIP driver is running")
}

async fn call_sipp(tcp: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sipp-messages.log");
    let port = support::free_port();
    let mut sipp = start_sipp(port, tcp, &log);
    wait_bound(port, tcp, &mut sipp).await;
    let mut svc = SipService::start(local()).await.expect("start");
    let target = format!("sip:service@127.0.0.1:{port}");
    let (cmd, reply) = Command::invite(OutgoingCall {
        target_uri: target.clone(),
        from_uri: "sip:12345@127.0.0.1".into(),
        from_display: Some("13800000000".into()),
        to_uri: target,
        destination: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        sdp_offer: SDP.to_vec(),
        extra_headers: vec![("X-12345-Order-Draft".into(), "WH-2025-000042".into())],
    });
    svc.commands.send(cmd).await.expect("driver running");
    let call = reply
        .await
        .expect("a reply")
        .expect("the INVITE is accepted");
    let mut seen = Vec::new();
    let answer = loop {
        match next(&mut svc.events).await {
            CallEvent::OutgoingAnswered { call: c, sdp } if c == call => break sdp,
            e @ CallEvent::OutgoingProgress { .. } => seen.push(e),
            e => panic!("unexpected {e:?} after {seen:?}"),
        }
    };
    assert_eq!(
        seen,
        [CallEvent::OutgoingProgress { call, status: 180 }],
        "SIPp rings first"
    );
    let answer = String::from_utf8(answer.expect("SIPp answers with SDP")).expect("utf-8 SDP");
    assert!(answer.contains("m=audio"), "{answer}");
    svc.commands
        .send(Command::Hangup(call))
        .await
        .expect("driver running");
    assert_eq!(
        next(&mut svc.events).await,
        CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }
    );
    // SIPp lingers 4 s after the BYE (its timewait), then exits 0 when its one call passed.
    let out = timeout(Duration::from_secs(20), async {
        let status = sipp.wait().await.expect("wait for sipp");
        let mut err = String::new();
        if let Some(mut e) = sipp.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        (status, err)
    })
    .await
    .expect("SIPp ends its scenario in time");
    let messages = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.0.success(),
        "SIPp failed ({}): {}\n{messages}",
        out.0,
        out.1
    );
    // what SIPp saw from us: the ACK for its 200 (optional in its scenario, so check here),
    // our extra header, and the BYE
    for needle in [
        "X-12345-Order-Draft: WH-2025-000042",
        "\nACK sip:",
        "\nBYE sip:",
    ] {
        assert!(messages.contains(needle), "no {needle:?} in:\n{messages}");
    }
}

#[tokio::test]
async fn udp_leg_to_sipp_is_answered_acked_and_hung_up() {
    call_sipp(false).await;
}

#[tokio::test]
async fn tcp_leg_to_sipp_is_answered_acked_and_hung_up() {
    call_sipp(true).await;
}
