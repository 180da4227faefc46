//! The tokio driver end to end on loopback: a raw trunk socket talks to the SIP service and a
//! trivial in-test call layer answers every call with a fixed SDP.

use std::net::SocketAddr;
use std::time::Duration;

use gateway::runtime::sip_transport::{Command, SipService};
use sip::message::Message;
use sip::parse;
use sip::{CallEvent, SipSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n";

/// The SIP service on free loopback ports (UDP and TCP); `sip_uac` starts its service so too.
pub(crate) fn local() -> SipSettings {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    SipSettings {
        udp: any,
        tcp: any,
        ..SipSettings::default()
    }
}

/// Answer every call at once; report other events.
fn call_layer(
    mut svc: SipService,
) -> (tokio::sync::mpsc::UnboundedReceiver<CallEvent>, SipService) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut events = std::mem::replace(&mut svc.events, tokio::sync::mpsc::unbounded_channel().1);
    let commands = svc.commands.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let CallEvent::IncomingCall { call, .. } = &e {
                let _ = commands.send(Command::Ring(*call)).await;
                let _ = commands
                    .send(Command::Answer {
                        call: *call,
                        sdp: SDP.to_vec(),
                    })
                    .await;
            }
            let _ = tx.send(e);
        }
    });
    (rx, svc)
}

fn invite(transport: &str, me: SocketAddr, call_id: &str) -> String {
    format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/{transport} {me};branch=z9hG4bK{call_id};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:caller@trunk>;tag=ft\r\nTo: <sip:12345@gw>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n\
Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
}

fn in_dialog(
    method: &str,
    transport: &str,
    me: SocketAddr,
    call_id: &str,
    tag: &str,
    seq: u32,
) -> String {
    format!(
        "{method} sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/{transport} {me};branch=z9hG4bK{method}{call_id}\r\n\
Max-Forwards: 70\r\nFrom: <sip:caller@trunk>;tag=ft\r\nTo: <sip:12345@gw>;tag={tag}\r\n\
Call-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn recv_udp(sock: &UdpSocket) -> sip::message::Response {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("a response in time")
        .expect("recv");
    match parse::parse_datagram(&buf[..n]).expect("parse") {
        Message::Response(r) => r,
        Message::Request(r) => panic!("unexpected request {r:?}"),
    }
}

#[tokio::test]
async fn udp_call_answer_ack_bye() {
    let svc = SipService::start(local()).await.expect("start");
    let (mut events, svc) = call_layer(svc);
    let trunk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = trunk.local_addr().expect("addr");
    trunk
        .send_to(invite("UDP", me, "u1").as_bytes(), svc.udp_addr)
        .await
        .expect("send");
    assert_eq!(recv_udp(&trunk).await.status, 100);
    assert_eq!(recv_udp(&trunk).await.status, 180);
    let ok = recv_udp(&trunk).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, SDP);
    let tag = ok.headers.to().expect("to").tag().expect("tag").to_owned();
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let request = in_dialog(method, "UDP", me, "u1", &tag, cseq);
        trunk
            .send_to(request.as_bytes(), svc.udp_addr)
            .await
            .expect(method);
    }
    let bye_ok = recv_udp(&trunk).await;
    assert_eq!(
        (bye_ok.status, bye_ok.headers.cseq().expect("cseq").seq),
        (200, 2)
    );
    let mut seen = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_millis(500), events.recv()).await {
        let done = matches!(e, CallEvent::CallTerminated { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    assert!(
        matches!(seen[0], CallEvent::IncomingCall { .. }),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, CallEvent::CallAcked { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, CallEvent::Bye { .. })),
        "{seen:?}"
    );
    // garbage gets nothing back, and the service still answers afterwards
    trunk
        .send_to(b"\x00\xffnot sip at all", svc.udp_addr)
        .await
        .expect("send");
    let opt = "OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKo\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    trunk
        .send_to(opt.as_bytes(), svc.udp_addr)
        .await
        .expect("send");
    assert_eq!(recv_udp(&trunk).await.status, 200);
}

/// Read responses off a TCP stream until `n` arrived.
async fn read_tcp(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> Vec<sip::message::Response> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Ok(Some(len)) = parse::frame(buf) {
            let msg: Vec<u8> = buf.drain(..len).collect();
            if let Ok(Message::Response(r)) = parse::parse_stream_message(&msg) {
                out.push(r);
            }
        }
        if out.len() >= n {
            break;
        }
        let mut chunk = [0u8; 4096];
        let k = timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("data in time")
            .expect("read");
        assert!(k > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

#[tokio::test]
async fn tcp_call_with_split_writes_and_two_messages_in_one_read() {
    let svc = SipService::start(local()).await.expect("start");
    let (_events, svc) = call_layer(svc);
    let mut stream = TcpStream::connect(svc.tcp_addr).await.expect("connect");
    let me = stream.local_addr().expect("addr");
    let inv = invite("TCP", me, "t1");
    // an INVITE in three writes, cut inside the headers and inside the body
    for part in [&inv[..17], &inv[17..inv.len() - 2], &inv[inv.len() - 2..]] {
        stream.write_all(part.as_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = Vec::new();
    let r = read_tcp(&mut stream, &mut buf, 3).await;
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [100, 180, 200]
    );
    let tag = r[2]
        .headers
        .to()
        .expect("to")
        .tag()
        .expect("tag")
        .to_owned();
    // ACK and BYE in one write
    let two = format!(
        "{}{}",
        in_dialog("ACK", "TCP", me, "t1", &tag, 1),
        in_dialog("BYE", "TCP", me, "t1", &tag, 2)
    );
    stream.write_all(two.as_bytes()).await.expect("write");
    let r = read_tcp(&mut stream, &mut buf, 1).await;
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].headers.cseq().expect("cseq").method.as_str(), "BYE");
}

#[tokio::test]
async fn tcp_stream_that_cannot_be_framed_is_closed() {
    let svc = SipService::start(local()).await.expect("start");
    let mut stream = TcpStream::connect(svc.tcp_addr).await.expect("connect");
    stream
        .write_all(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\n")
        .await
        .expect("write");
    let mut chunk = [0u8; 256];
    let n = timeout(Duration::from_secs(5), stream.read(&mut chunk))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    drop(svc);
}
