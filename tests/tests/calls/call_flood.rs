//! A flood of new calls from one address against the running gateway: with
//! `sip.source_call_rate` set, the calls beyond the burst are answered 503 with Retry-After and
//! the reason, none of them is set up, and a caller from another address is still answered.
//! Raw INVITEs over UDP, so the flood is as fast as the test can send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::{Gateway, GatewayOptions, free_port};
use tokio::net::UdpSocket;

fn invite(me: SocketAddr, call_id: &str) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n",
        ip = me.ip(),
        port = me.port() + 2
    );
    format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:13800138000@{me}>;tag=f-{call_id}\r\nTo: <sip:12345@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:13800138000@{me}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The first answer (status, whole text) to each Call-ID read on `sock` within `wait`.
async fn answers(sock: &UdpSocket, wait: Duration) -> HashMap<String, (u16, String)> {
    let mut got = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let call_id = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID:").map(|v| v.trim().to_owned()))
            .unwrap_or_default();
        // A provisional answer first is still a call taken; keep the first final one over it.
        let entry = got.entry(call_id).or_insert((status, text.clone()));
        if entry.0 < 200 && status >= 200 {
            *entry = (status, text);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_calls_from_one_address_is_refused_and_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sip_port = free_port();
    let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ivr-flows/flows");
    let extra = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\
         source_call_rate = 2\nsource_call_burst = 5\n\n\
         [media]\nrtp_port_min = 47000\nrtp_port_max = 47999\n\n\
         [ivr]\nflows_dir = {:?}\nreload = false\n",
        flows.display().to_string()
    );
    let mut gw = Gateway::spawn_with_extra(GatewayOptions::new(dir.path()), free_port(), &extra);
    gw.wait_ready().await;
    let gateway: SocketAddr = format!("127.0.0.1:{sip_port}").parse().expect("addr");

    // 40 new calls at once from 127.0.0.2 (inside the default trunk allow-list 127.0.0.0/8).
    let flood = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let me = flood.local_addr().expect("addr");
    for i in 0..40 {
        let msg = invite(me, &format!("flood-{i}"));
        flood.send_to(msg.as_bytes(), gateway).await.expect("send");
    }
    let got = answers(&flood, Duration::from_secs(2)).await;
    let refused: Vec<&String> = got
        .values()
        .filter(|(s, _)| *s == 503)
        .map(|(_, t)| t)
        .collect();
    let taken = got.values().filter(|(s, _)| *s != 503).count();
    println!(
        "flood: 40 INVITEs from one address, {taken} taken, {} refused 503",
        refused.len()
    );
    assert_eq!(got.len(), 40, "every INVITE was answered: {:?}", got.keys());
    assert!(
        (5..=6).contains(&taken),
        "the burst of 5 (and perhaps one more) is taken: {taken}"
    );
    for text in &refused {
        assert!(text.contains("Retry-After: 5"), "{text}");
        assert!(
            text.contains("too many new calls from this address"),
            "{text}"
        );
    }

    // Another address is served at once.
    let other = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = other.local_addr().expect("addr");
    other
        .send_to(invite(me, "other-1").as_bytes(), gateway)
        .await
        .expect("send");
    let got = answers(&other, Duration::from_secs(2)).await;
    let (status, text) = got.get("other-1").expect("an answer to the other caller");
    assert_eq!(*status, 200, "{text}");

    // Only the calls taken were set up: the gateway's count of calls in progress says so.
    let active = support::metric(&gw.metrics().await, "gateway_calls_active", &[]);
    println!("flood: {active} calls in progress");
    assert!(active <= (taken + 1) as f64, "{active} calls in progress");
    gw.kill9();
}
