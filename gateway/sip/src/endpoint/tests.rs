//! Endpoint behaviour, driven with a fake clock and hand-written trunk messages.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::message::Message;
use crate::parse::parse_datagram;

const TRUNK: &str = "127.0.0.1:5080";

pub(crate) fn invite(branch: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Citizen\" <sip:13800000000@trunk.example>;tag=caller1\r\n\
To: <sip:12345@gw.example>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:13800000000@127.0.0.1:5080>\r\n\
Record-Route: <sip:sbc.example;lr>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 9\r\n\r\nv=0\r\no=-\n"
    )
}

fn in_dialog(
    method: &str,
    branch: &str,
    call_id: &str,
    to_tag: &str,
    seq: u32,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\r\n\
From: \"Citizen\" <sip:13800000000@trunk.example>;tag=caller1\r\n\
To: <sip:12345@gw.example>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {seq} {method}\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Everything the endpoint has to hand out, up to (not with) the closing [`Output::Timeout`].
fn drain(ep: &mut Endpoint) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match ep.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

/// A call answered and ACKed, with what the trunk's requests in its dialog carry.
struct Confirmed {
    call: CallId,
    call_id: &'static str,
    /// Our To tag.
    tag: String,
}

impl Confirmed {
    /// The trunk's in-dialog `method` with CSeq `seq`, carrying `body` as `content_type`.
    fn request(
        &self,
        method: &str,
        branch: &str,
        seq: u32,
        content_type: &str,
        body: &str,
    ) -> String {
        let extra = format!("Content-Type: {content_type}\r\n");
        in_dialog(method, branch, self.call_id, &self.tag, seq, &extra, body)
    }
}

struct Harness {
    ep: Endpoint,
    t0: Instant,
    now: Instant,
    from: SocketAddr,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        Harness {
            ep: Endpoint::new(SipSettings::default()),
            t0: now,
            now,
            from: TRUNK.parse().expect("addr"),
        }
    }

    fn send(&mut self, msg: &str) -> Vec<Output> {
        self.send_from(self.from, Transport::Udp, msg)
    }

    fn send_from(&mut self, from: SocketAddr, transport: Transport, msg: &str) -> Vec<Output> {
        self.ep
            .handle_datagram(self.now, from, transport, msg.as_bytes());
        drain(&mut self.ep)
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now += d;
        self.ep.handle_timeout(self.now);
        drain(&mut self.ep)
    }

    /// The deadline the endpoint asks for now; every helper drains, so it must be all there is.
    fn next_timeout(&mut self) -> Option<Instant> {
        match self.ep.poll_output() {
            Output::Timeout(t) => t,
            o => panic!("output left undrained: {o:?}"),
        }
    }

    /// Run timers up to `until` after start, collecting everything.
    fn run_until(&mut self, until: Duration) -> Vec<(Duration, Output)> {
        let mut all = Vec::new();
        while let Some(t) = self.next_timeout() {
            if t > self.t0 + until {
                break;
            }
            self.now = t.max(self.now);
            self.ep.handle_timeout(self.now);
            for o in drain(&mut self.ep) {
                all.push((self.now - self.t0, o));
            }
        }
        all
    }

    /// Carry out a command of the call layer and collect what it caused. A refused command
    /// must cause nothing at all.
    fn command(
        &mut self,
        f: impl FnOnce(&mut Endpoint, Instant) -> Result<(), CommandError>,
    ) -> Result<Vec<Output>, CommandError> {
        let done = f(&mut self.ep, self.now);
        let out = drain(&mut self.ep);
        match done {
            Ok(()) => Ok(out),
            Err(e) => {
                assert!(out.is_empty(), "refused with output: {out:?}");
                Err(e)
            }
        }
    }

    fn ring(&mut self, call: CallId) -> Result<Vec<Output>, CommandError> {
        self.command(|ep, now| ep.ring(now, call))
    }

    fn answer_with(&mut self, call: CallId, sdp: Vec<u8>) -> Result<Vec<Output>, CommandError> {
        self.command(|ep, now| ep.answer(now, call, sdp))
    }

    fn reject(&mut self, call: CallId, status: u16) -> Result<Vec<Output>, CommandError> {
        self.command(|ep, now| ep.reject(now, call, status))
    }

    fn hangup(&mut self, call: CallId) -> Result<Vec<Output>, CommandError> {
        self.command(|ep, now| ep.hangup(now, call))
    }

    fn send_info(
        &mut self,
        call: CallId,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<Output>, CommandError> {
        self.command(|ep, now| ep.send_info(now, call, content_type, body.to_vec()))
    }

    fn incoming(&mut self, branch: &str, call_id: &str) -> (CallId, Vec<Output>) {
        let out = self.send(&invite(branch, call_id));
        let call = out
            .iter()
            .find_map(|o| match o {
                Output::Event(CallEvent::IncomingCall { call, .. }) => Some(*call),
                _ => None,
            })
            .expect("IncomingCall");
        (call, out)
    }

    /// An incoming call answered and ACKed.
    fn confirmed(&mut self, branch: &str, call_id: &'static str) -> Confirmed {
        let (call, _) = self.incoming(branch, call_id);
        let tag = self.answer(call);
        self.send(&in_dialog("ACK", "z9hG4bKack", call_id, &tag, 1, "", ""));
        Confirmed { call, call_id, tag }
    }

    /// Answer and return the To tag of our 200.
    fn answer(&mut self, call: CallId) -> String {
        let out = self
            .answer_with(call, b"v=0 answer".to_vec())
            .expect("answer");
        let r = responses(&out);
        assert_eq!(r.len(), 1);
        r[0].headers
            .to()
            .expect("to")
            .tag()
            .expect("tag")
            .to_owned()
    }
}

/// The messages among the output that parse (all of ours should).
fn sent(out: &[Output]) -> impl Iterator<Item = Message> + '_ {
    out.iter().filter_map(|o| match o {
        Output::Transmit(t) => parse_datagram(&t.bytes).ok(),
        Output::Event(_) | Output::Timeout(_) => None,
    })
}

fn responses(out: &[Output]) -> Vec<Response> {
    sent(out)
        .filter_map(|m| match m {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        })
        .collect()
}

fn requests(out: &[Output]) -> Vec<Request> {
    sent(out)
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        })
        .collect()
}

fn statuses(out: &[Output]) -> Vec<u16> {
    responses(out).iter().map(|r| r.status).collect()
}

fn events(out: &[Output]) -> Vec<CallEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Transmit(_) | Output::Timeout(_) => None,
        })
        .collect()
}

#[test]
fn invite_gets_100_and_an_incoming_call() {
    let mut h = Harness::new();
    let (call, out) = h.incoming("z9hG4bKa1", "c1");
    assert_eq!(statuses(&out), [100]);
    let r = &responses(&out)[0];
    assert_eq!(
        r.headers.to().expect("to").tag(),
        None,
        "100 carries no tag"
    );
    let via = r.headers.top_via().expect("via");
    assert!(
        via.params.contains(&("rport".into(), Some("5080".into()))),
        "{via:?}"
    );
    match &events(&out)[0] {
        CallEvent::IncomingCall {
            call: c,
            sip_call_id,
            from,
            from_display,
            to,
            sdp_offer,
            source,
            transport,
            ..
        } => {
            assert_eq!(*c, call);
            assert_eq!(sip_call_id, "c1");
            assert_eq!(from, "sip:13800000000@trunk.example");
            assert_eq!(from_display.as_deref(), Some("Citizen"));
            assert_eq!(to, "sip:12345@gw.example");
            assert_eq!(sdp_offer.as_deref(), Some(&b"v=0\r\no=-\n"[..]));
            assert_eq!(source, &h.from);
            assert_eq!(*transport, Transport::Udp);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.ep.call_count(), 1);
}

#[test]
fn ring_answer_ack_bye_from_caller() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa2", "c2");
    let out = h.ring(call).expect("ring");
    let ringing = responses(&out);
    assert_eq!(ringing[0].status, 180);
    let tag180 = ringing[0]
        .headers
        .to()
        .expect("to")
        .tag()
        .map(str::to_owned);
    assert!(ringing[0].headers.get("Contact").is_some());
    assert_eq!(
        ringing[0].headers.get("Record-Route"),
        Some("<sip:sbc.example;lr>")
    );
    let out = h.answer_with(call, b"v=0 answer".to_vec()).expect("answer");
    let ok = &responses(&out)[0];
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"v=0 answer");
    assert_eq!(
        ok.headers.content_type().as_deref(),
        Some("application/sdp")
    );
    let tag = ok.headers.to().expect("to").tag().expect("tag").to_owned();
    assert_eq!(Some(tag.clone()), tag180, "one dialog, one tag");
    assert_eq!(
        h.answer_with(call, Vec::new()),
        Err(CommandError::WrongState)
    );
    let out = h.send(&in_dialog("ACK", "z9hG4bKack", "c2", &tag, 1, "", ""));
    assert!(statuses(&out).is_empty(), "ACK is never answered");
    assert_eq!(events(&out), [CallEvent::CallAcked { call }]);
    // no more 200 retransmissions after the ACK
    let later = h.run_until(Duration::from_secs(40));
    assert!(
        later.iter().all(|(_, o)| !matches!(o, Output::Transmit(_))),
        "{later:?}"
    );
    let out = h.send(&in_dialog("BYE", "z9hG4bKbye", "c2", &tag, 2, "", ""));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(
        events(&out),
        [
            CallEvent::Bye { call },
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::RemoteBye
            }
        ]
    );
    assert_eq!(h.ep.call_count(), 0);
    // the BYE again: the same 200 from the transaction, no new events
    let out = h.send(&in_dialog("BYE", "z9hG4bKbye", "c2", &tag, 2, "", ""));
    assert_eq!(statuses(&out), [200]);
    assert!(events(&out).is_empty());
}

#[test]
fn ok_is_retransmitted_on_the_rfc_schedule_until_ack() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa3", "c3");
    let tag = h.answer(call);
    let out = h.run_until(Duration::from_millis(11_600));
    let times: Vec<Duration> = out
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .map(|(t, _)| *t)
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(times, [ms(500), ms(1500), ms(3500), ms(7500), ms(11_500)]);
    assert!(out.iter().all(|(_, o)| {
        match o {
            Output::Transmit(t) => parse_datagram(&t.bytes)
                .is_ok_and(|m| matches!(m, Message::Response(r) if r.status == 200)),
            Output::Event(_) | Output::Timeout(_) => false,
        }
    }));
    h.now = h.t0 + ms(12_000);
    let out = h.send(&in_dialog("ACK", "z9hG4bKack3", "c3", &tag, 1, "", ""));
    assert_eq!(events(&out), [CallEvent::CallAcked { call }]);
    assert!(
        h.run_until(Duration::from_secs(60))
            .iter()
            .all(|(_, o)| !matches!(o, Output::Transmit(_)))
    );
}

#[test]
fn no_ack_within_timer_h_ends_the_call_with_a_bye() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa4", "c4");
    h.answer(call);
    let out = h.run_until(Duration::from_secs(32));
    let ev: Vec<_> = out
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Event(e) => Some((*t, e.clone())),
            Output::Transmit(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert_eq!(
        ev,
        [(
            Duration::from_secs(32),
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::NoAck
            }
        )]
    );
    let byes: Vec<_> = out
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Transmit(t) => match parse_datagram(&t.bytes) {
                Ok(Message::Request(r)) if r.method == Method::Bye => Some(r),
                _ => None,
            },
            Output::Event(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert_eq!(byes.len(), 1);
    assert_eq!(
        byes[0].uri, "sip:13800000000@127.0.0.1:5080",
        "remote target"
    );
    assert_eq!(byes[0].headers.get("Route"), Some("<sip:sbc.example;lr>"));
    assert_eq!(h.ep.call_count(), 0);
}

#[test]
fn retransmitted_invite_gets_the_last_response_and_no_second_call() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa5", "c5");
    let out = h.send(&invite("z9hG4bKa5", "c5"));
    assert_eq!(statuses(&out), [100]);
    assert!(events(&out).is_empty());
    h.ring(call).expect("ring");
    assert_eq!(statuses(&h.send(&invite("z9hG4bKa5", "c5"))), [180]);
    h.answer(call);
    let out = h.send(&invite("z9hG4bKa5", "c5"));
    assert_eq!(statuses(&out), [200]);
    assert!(events(&out).is_empty());
    assert_eq!(h.ep.call_count(), 1);
    // same Call-ID, From tag and CSeq on another branch: a merged request
    assert_eq!(statuses(&h.send(&invite("z9hG4bKother", "c5"))), [482]);
}

#[test]
fn cancel_before_answer() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa6", "c6");
    h.ring(call).expect("ring");
    let cancel = "CANCEL sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKa6\r\n\
From: \"Citizen\" <sip:13800000000@trunk.example>;tag=caller1\r\n\
To: <sip:12345@gw.example>\r\nCall-ID: c6\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let out = h.send(cancel);
    let r = responses(&out);
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 487]);
    assert_eq!(r[0].headers.cseq().expect("cseq").method, Method::Cancel);
    assert_eq!(r[1].headers.cseq().expect("cseq").method, Method::Invite);
    assert_eq!(
        events(&out),
        [
            CallEvent::Cancelled { call },
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::Cancelled
            }
        ]
    );
    assert_eq!(
        h.answer_with(call, Vec::new()),
        Err(CommandError::NoSuchCall)
    );
    // the 487 is retransmitted (timer G) until the ACK, which uses the INVITE's branch
    let out = h.advance(Duration::from_millis(500));
    assert_eq!(statuses(&out), [487]);
    let tag = r[1]
        .headers
        .to()
        .expect("to")
        .tag()
        .expect("tag")
        .to_owned();
    let ack = in_dialog("ACK", "z9hG4bKa6", "c6", &tag, 1, "", "");
    assert!(h.send(&ack).is_empty());
    let out = h.run_until(Duration::from_secs(40));
    assert!(out.is_empty(), "{out:?}");
    // CANCEL for nothing: 481
    assert_eq!(
        statuses(&h.send(&cancel.replace("z9hG4bKa6", "z9hG4bKnone"))),
        [481]
    );
}

#[test]
fn cancel_after_answer_changes_nothing() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa7", "c7");
    h.answer(call);
    let cancel = "CANCEL sip:12345@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKa7\r\n\
From: <sip:13800000000@trunk.example>;tag=caller1\r\n\
To: <sip:12345@gw.example>\r\nCall-ID: c7\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.send(cancel);
    assert_eq!(statuses(&out), [200]);
    assert!(events(&out).is_empty());
    assert_eq!(h.ep.call_count(), 1);
}

#[test]
fn we_hang_up_with_bye_and_its_200_ends_the_call() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKa8", "c8");
    let tag = h.answer(call);
    // hangup before the ACK waits for it (RFC 3261 15)
    let out = h.hangup(call).expect("hangup");
    assert!(out.is_empty());
    let out = h.send(&in_dialog("ACK", "z9hG4bKack8", "c8", &tag, 1, "", ""));
    assert_eq!(events(&out), [CallEvent::CallAcked { call }]);
    let bye = requests(&out);
    assert_eq!(bye.len(), 1);
    let bye = &bye[0];
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.from().expect("from").tag(), Some(tag.as_str()));
    assert_eq!(bye.headers.to().expect("to").tag(), Some("caller1"));
    assert_eq!(h.hangup(call), Err(CommandError::WrongState));
    // UDP: BYE retransmitted at 500 ms
    let again = h.advance(Duration::from_millis(500));
    assert_eq!(requests(&again).len(), 1);
    let branch = bye
        .headers
        .top_via()
        .expect("via")
        .branch()
        .expect("branch")
        .to_owned();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: c8\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        bye.headers.get("Via").expect("via"),
        bye.headers.get("From").expect("from"),
        bye.headers.get("To").expect("to"),
        bye.headers.get("CSeq").expect("cseq"),
    );
    assert!(ok.contains(&branch));
    let out = h.send(&ok);
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }]
    );
    assert!(h.send(&ok).is_empty(), "retransmitted 200 absorbed");
}

#[test]
fn bye_without_answer_times_out() {
    let mut h = Harness::new();
    let Confirmed { call, .. } = h.confirmed("z9hG4bKa9", "c9");
    h.hangup(call).expect("hangup");
    let t = h.now - h.t0;
    let out = h.run_until(t + Duration::from_secs(33));
    let byes = out
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .count();
    assert!(byes >= 8, "{byes}");
    assert!(out.iter().any(|(_, o)| *o
        == Output::Event(CallEvent::CallTerminated {
            call,
            reason: TerminationReason::ByeTimeout
        })));
}

#[test]
fn reject_and_hangup_before_answer() {
    let mut h = Harness::new();
    let (call, _) = h.incoming("z9hG4bKb1", "d1");
    assert_eq!(h.reject(call, 200), Err(CommandError::BadStatus(200)));
    let out = h.reject(call, 486).expect("reject");
    assert_eq!(statuses(&out), [486]);
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::Rejected(486)
        }]
    );
    let (call, _) = h.incoming("z9hG4bKb2", "d2");
    let out = h.hangup(call).expect("hangup");
    assert_eq!(statuses(&out), [480]);
    assert_eq!(h.ring(CallId(999)), Err(CommandError::NoSuchCall));
}

#[test]
fn reinvite_hold_and_resume() {
    let mut h = Harness::new();
    let c = h.confirmed("z9hG4bKc1", "e1");
    let (call, tag) = (c.call, c.tag.clone());
    let sdp = "v=0\r\na=sendonly\r\n";
    let out = h.send(&c.request("INVITE", "z9hG4bKre1", 2, "application/sdp", sdp));
    assert_eq!(statuses(&out), [100]);
    assert_eq!(
        events(&out),
        [CallEvent::ReInvite {
            call,
            sdp: Some(b"v=0\r\na=sendonly\r\n".to_vec())
        }]
    );
    // a second re-INVITE while one is pending: 491
    let clash = in_dialog("INVITE", "z9hG4bKre2", "e1", &tag, 3, "", "");
    assert_eq!(statuses(&h.send(&clash)), [491]);
    let out = h
        .answer_with(call, b"v=0\r\na=recvonly\r\n".to_vec())
        .expect("answer");
    assert_eq!(statuses(&out), [200]);
    let out = h.send(&in_dialog("ACK", "z9hG4bKack2", "e1", &tag, 2, "", ""));
    assert!(out.is_empty(), "re-INVITE ACK is silent: {out:?}");
    // resume, refused by the call layer: the call goes on
    let resume = in_dialog("INVITE", "z9hG4bKre3", "e1", &tag, 4, "", "");
    h.send(&resume);
    assert_eq!(statuses(&h.reject(call, 488).expect("reject")), [488]);
    assert_eq!(h.ep.call_count(), 1);
    // an old CSeq in the dialog: 500
    let stale = in_dialog("INVITE", "z9hG4bKre4", "e1", &tag, 3, "", "");
    assert_eq!(statuses(&h.send(&stale)), [500]);
}

#[test]
fn info_dtmf_in_both_formats() {
    let mut h = Harness::new();
    let c = h.confirmed("z9hG4bKd1", "f1");
    let call = c.call;
    let body = "Signal=5\r\nDuration=160\r\n";
    let out = h.send(&c.request("INFO", "z9hG4bKi1", 2, "application/dtmf-relay", body));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(
        events(&out),
        [CallEvent::Info {
            call,
            content_type: Some("application/dtmf-relay".into()),
            body: b"Signal=5\r\nDuration=160\r\n".to_vec(),
            dtmf: Some(Dtmf {
                digit: '5',
                duration_ms: Some(160)
            }),
        }]
    );
    let plain = c.request("INFO", "z9hG4bKi2", 3, "application/dtmf", "#");
    match &events(&h.send(&plain))[0] {
        CallEvent::Info { dtmf, .. } => assert_eq!(
            *dtmf,
            Some(Dtmf {
                digit: '#',
                duration_ms: None
            })
        ),
        e => panic!("{e:?}"),
    }
    // we send INFO too
    let out = h
        .send_info(call, "application/dtmf-relay", b"Signal=1\r\n")
        .expect("info");
    assert_eq!(requests(&out)[0].method, Method::Info);
    // INFO outside any dialog: 481
    let stray = in_dialog("INFO", "z9hG4bKi3", "nope", "x", 2, "", "");
    assert_eq!(statuses(&h.send(&stray)), [481]);
}

#[test]
fn dtmf_parsing() {
    assert_eq!(
        parse_dtmf(
            Some("application/dtmf-relay"),
            b"Signal= *\r\nDuration= 250"
        ),
        Some(Dtmf {
            digit: '*',
            duration_ms: Some(250)
        })
    );
    assert_eq!(
        parse_dtmf(Some("application/dtmf-relay"), b"Signal=11"),
        Some(Dtmf {
            digit: '#',
            duration_ms: None
        })
    );
    assert_eq!(
        parse_dtmf(Some("application/dtmf"), b"7\r\n"),
        Some(Dtmf {
            digit: '7',
            duration_ms: None
        })
    );
    assert_eq!(parse_dtmf(Some("application/dtmf"), b"x"), None);
    assert_eq!(parse_dtmf(Some("text/plain"), b"5"), None);
    assert_eq!(parse_dtmf(None, b"5"), None);
    assert_eq!(parse_dtmf(Some("application/dtmf-relay"), &[0xff]), None);
}

#[test]
fn out_of_dialog_requests() {
    let mut h = Harness::new();
    let bye = in_dialog("BYE", "z9hG4bKx1", "unknown", "t", 2, "", "");
    assert_eq!(statuses(&h.send(&bye)), [481]);
    let opt = in_dialog("OPTIONS", "z9hG4bKx2", "o1", "t", 1, "", "").replace(";tag=t", "");
    let r = responses(&h.send(&opt));
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].headers.get("Allow"), Some(ALLOW));
    assert!(r[0].headers.get("Accept").is_some());
    assert!(
        r[0].headers.to().expect("to").tag().is_some(),
        "final responses carry a To tag"
    );
    for m in ["REGISTER", "SUBSCRIBE", "MESSAGE", "NOTIFY", "REFER"] {
        let req = in_dialog(m, &format!("z9hG4bK{m}"), "o2", "t", 1, "", "").replace(";tag=t", "");
        let r = responses(&h.send(&req));
        assert_eq!(r[0].status, 405, "{m}");
        assert_eq!(r[0].headers.get("Allow"), Some(ALLOW));
    }
    let req = in_dialog("FROBNICATE", "z9hG4bKf", "o3", "t", 1, "", "").replace(";tag=t", "");
    assert_eq!(statuses(&h.send(&req)), [501]);
    let req = in_dialog(
        "OPTIONS",
        "z9hG4bKr",
        "o4",
        "t",
        1,
        "Require: 100rel\r\n",
        "",
    )
    .replace(";tag=t", "");
    let r = responses(&h.send(&req));
    assert_eq!(r[0].status, 420);
    assert_eq!(r[0].headers.get("Unsupported"), Some("100rel"));
    // re-INVITE for an unknown dialog
    let re = in_dialog("INVITE", "z9hG4bKre", "nope", "t", 2, "", "");
    assert_eq!(statuses(&h.send(&re)), [481]);
    assert!(events(&h.send(&re)).is_empty());
}

#[test]
fn max_forwards_zero_and_missing() {
    let mut h = Harness::new();
    let zero = invite("z9hG4bKm0", "m0").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = h.send(&zero);
    assert_eq!(statuses(&out), [483]);
    assert!(events(&out).is_empty());
    let missing = invite("z9hG4bKm1", "m1").replace("Max-Forwards: 70\r\n", "");
    assert_eq!(statuses(&h.send(&missing)), [100]);
}

#[test]
fn allow_list_forbids_strangers() {
    let mut h = Harness::new();
    h.from = "192.0.2.9:5060".parse().expect("addr");
    let out = h.send(&invite("z9hG4bKs1", "s1"));
    let r = responses(&out);
    assert_eq!(r[0].status, 403);
    assert!(
        r[0].headers
            .get("Warning")
            .is_some_and(|w| w.contains("allow-list"))
    );
    assert!(r[0].headers.get("Reason").is_some());
    assert!(events(&out).is_empty());
    assert!(h.send("garbage").is_empty());
    assert!(
        h.send(&in_dialog("ACK", "z9hG4bKs", "s1", "t", 1, "", ""))
            .is_empty()
    );
    let mut settings = SipSettings::default();
    settings
        .trunk_allow
        .push("192.0.2.0/24".parse().expect("net"));
    h.ep = Endpoint::new(settings);
    assert_eq!(statuses(&h.send(&invite("z9hG4bKs2", "s2"))), [100]);
}

#[test]
fn malformed_requests_get_400_naming_the_problem() {
    let mut h = Harness::new();
    let cases = [
        (
            invite("z9hG4bKp1", "p1").replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
            "CSeq method",
        ),
        (
            invite("z9hG4bKp2", "p2")
                .replace("To: <sip:12345@gw.example>", "To: \"unterminated <sip:a@b>"),
            "To",
        ),
        (
            invite("z9hG4bKp3", "p3").replace("CSeq: 1 INVITE", "CSeq: 99999999999 INVITE"),
            "CSeq",
        ),
        (
            invite("z9hG4bKp4", "p4").replace("Content-Length: 9", "Content-Length: 80"),
            "Content-Length",
        ),
        (
            invite("z9hG4bKp5", "p5").replace(
                "INVITE sip:12345@127.0.0.1 SIP/2.0",
                "INVITE <sip:12345@127.0.0.1> SIP/2.0",
            ),
            "Request-URI",
        ),
        (
            invite("z9hG4bKp6", "p6").replace("Call-ID: p6\r\n", "Call-ID: p6\r\nCall-ID: p7\r\n"),
            "Call-ID",
        ),
    ];
    for (msg, needle) in cases {
        let r = responses(&h.send(&msg));
        assert_eq!(r.len(), 1, "{needle}");
        assert_eq!(r[0].status, 400, "{needle}");
        assert!(r[0].reason.contains(needle), "{needle}: {}", r[0].reason);
    }
    let v = invite("z9hG4bKp8", "p8").replace("SIP/2.0\r\n", "SIP/3.0\r\n");
    assert_eq!(statuses(&h.send(&v)), [505]);
    // nothing to address a response with: dropped
    assert!(
        h.send("INVITE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .is_empty()
    );
    assert!(h.send("\u{0}\u{1}garbage").is_empty());
    assert_eq!(h.ep.call_count(), 0);
}

#[test]
fn unsupported_bodies_and_accept() {
    let mut h = Harness::new();
    let odd = invite("z9hG4bKu1", "u1").replace("application/sdp", "application/unknownformat");
    let r = responses(&h.send(&odd));
    assert_eq!(r[0].status, 415);
    assert_eq!(r[0].headers.get("Accept"), Some("application/sdp"));
    let acc = invite("z9hG4bKu2", "u2").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nAccept: text/nobodyknowsthis\r\n",
    );
    assert_eq!(statuses(&h.send(&acc)), [406]);
}

#[test]
fn tcp_calls_do_not_retransmit_errors() {
    let mut h = Harness::new();
    let msg = invite("z9hG4bKt1", "t1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let out = h.send_from(h.from, Transport::Tcp, &msg);
    let call = match &events(&out)[0] {
        CallEvent::IncomingCall {
            call, transport, ..
        } => {
            assert_eq!(*transport, Transport::Tcp);
            *call
        }
        e => panic!("{e:?}"),
    };
    let out = h.reject(call, 603).expect("reject");
    match &out[0] {
        Output::Transmit(t) => assert_eq!(t.transport, Transport::Tcp),
        o => panic!("{o:?}"),
    }
    let later = h.run_until(Duration::from_secs(40));
    assert!(
        later.iter().all(|(_, o)| !matches!(o, Output::Transmit(_))),
        "{later:?}"
    );
}

#[test]
fn contact_in_200_over_tcp_says_so() {
    let mut h = Harness::new();
    let msg = invite("z9hG4bKt2", "t2").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let out = h.send_from(h.from, Transport::Tcp, &msg);
    let CallEvent::IncomingCall { call, .. } = events(&out)[0].clone() else {
        panic!("no call");
    };
    let out = h.answer_with(call, b"v=0".to_vec()).expect("answer");
    let c = responses(&out)[0]
        .headers
        .get("Contact")
        .expect("contact")
        .to_owned();
    assert!(c.contains("transport=tcp"), "{c}");
}

// ---- outgoing legs (UAC) ------------------------------------------------------------------

/// The agents' PBX: deliberately outside the trunk allow-list (127.0.0.0/8).
const AGENT: &str = "192.0.2.50:5070";

fn agent() -> SocketAddr {
    AGENT.parse().expect("addr")
}

fn outgoing(transport: Transport) -> OutgoingCall {
    OutgoingCall {
        target_uri: "sip:agent7@pbx.example".into(),
        from_uri: "sip:12345@gw.example".into(),
        from_display: Some("13800000000".into()),
        to_uri: "sip:agent7@pbx.example".into(),
        destination: agent(),
        transport,
        sdp_offer: b"v=0\r\no=gw\r\n".to_vec(),
        extra_headers: vec![("X-12345-Order-Draft".into(), "D-42".into())],
    }
}

/// A response to one of our requests, as the agent's side would write it.
fn reply(req: &Request, status: u16, to_tag: Option<&str>, extra: &str, body: &str) -> String {
    let h = &req.headers;
    let get = |n: &str| h.get(n).unwrap_or_default().to_owned();
    let to = match to_tag {
        Some(t) => format!("{};tag={t}", get("To")),
        None => get("To"),
    };
    format!(
        "SIP/2.0 {status} {}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
        crate::message::reason_phrase(status),
        get("Via"),
        get("From"),
        get("Call-ID"),
        get("CSeq"),
        body.len()
    )
}

const OK_EXTRA: &str = "Contact: <sip:agent7@192.0.2.51:5999>\r\n\
Record-Route: <sip:edge2.example;lr>\r\nRecord-Route: <sip:edge1.example;lr>\r\n\
Content-Type: application/sdp\r\n";

impl Harness {
    fn agent_sends(&mut self, msg: &str) -> Vec<Output> {
        self.send_from(agent(), Transport::Udp, msg)
    }

    /// Place a leg; return it with the INVITE that went out.
    fn place(&mut self, call: OutgoingCall) -> (CallId, Request) {
        let id = self.ep.invite(self.now, call).expect("invite");
        let out = drain(&mut self.ep);
        assert!(events(&out).is_empty(), "{out:?}");
        assert!(destinations(&out).iter().all(|d| *d == agent()));
        let mut r = requests(&out);
        assert_eq!(r.len(), 1, "{out:?}");
        (id, r.remove(0))
    }

    /// Place a leg and have it answered: (call, INVITE, our ACK).
    fn answered(&mut self) -> (CallId, Request, Request) {
        let (call, inv) = self.place(outgoing(Transport::Udp));
        self.agent_sends(&reply(&inv, 180, Some("agt"), "", ""));
        let out = self.agent_sends(&reply(&inv, 200, Some("agt"), OK_EXTRA, "v=0 agent"));
        let mut r = requests(&out);
        assert_eq!(r.len(), 1, "{out:?}");
        assert_eq!(
            events(&out),
            [CallEvent::OutgoingAnswered {
                call,
                sdp: Some(b"v=0 agent".to_vec())
            }]
        );
        (call, inv, r.remove(0))
    }
}

fn destinations(out: &[Output]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.to),
            Output::Event(_) | Output::Timeout(_) => None,
        })
        .collect()
}

fn methods(out: &[Output]) -> Vec<String> {
    requests(out)
        .iter()
        .map(|r| r.method.as_str().to_owned())
        .collect()
}

#[test]
fn outgoing_invite_carries_what_the_agent_needs() {
    let mut h = Harness::new();
    let (_, inv) = h.place(outgoing(Transport::Udp));
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(inv.uri, "sip:agent7@pbx.example");
    let hd = &inv.headers;
    let via = hd.top_via().expect("via");
    assert_eq!(via.transport, "UDP");
    assert!(via.branch().is_some_and(|b| b.starts_with("z9hG4bK")));
    assert!(via.has_param("rport"));
    assert_eq!(hd.max_forwards(), Ok(70));
    let from = hd.from().expect("from");
    assert_eq!(from.uri, "sip:12345@gw.example");
    assert_eq!(from.display.as_deref(), Some("13800000000"));
    assert!(from.tag().is_some());
    let to = hd.to().expect("to");
    assert_eq!(
        (to.uri.as_str(), to.tag()),
        ("sip:agent7@pbx.example", None)
    );
    assert!(hd.call_id().is_ok_and(|c| c.len() >= 32));
    assert_eq!(hd.cseq().expect("cseq").to_string(), "1 INVITE");
    assert_eq!(
        hd.contact().expect("contact")[0].uri,
        "sip:12345@127.0.0.1:5060"
    );
    assert_eq!(hd.content_type().as_deref(), Some("application/sdp"));
    assert_eq!(hd.get("User-Agent"), Some("12345-gateway"));
    assert_eq!(hd.get("X-12345-Order-Draft"), Some("D-42"));
    assert_eq!(inv.body, b"v=0\r\no=gw\r\n");
    assert_eq!(h.ep.call_count(), 1);
    // a display name with quotes survives as one quoted string
    let mut call = outgoing(Transport::Tcp);
    call.from_display = Some("say \"hi\" \\ 市民".into());
    let (_, inv) = h.place(call);
    let from = inv.headers.from().expect("from");
    assert_eq!(from.display.as_deref(), Some("say \\\"hi\\\" \\\\ 市民"));
    assert_eq!(inv.headers.top_via().expect("via").transport, "TCP");
    assert!(
        inv.headers
            .get("Contact")
            .is_some_and(|c| c.contains("transport=tcp"))
    );
}

#[test]
fn outgoing_invite_over_udp_retransmits_on_timer_a_then_fails_408() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Udp));
    let bytes = crate::serialize::request(&inv);
    let all = h.run_until(Duration::from_secs(40));
    let resent: Vec<u64> = all
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Transmit(x) => {
                assert_eq!((x.to, &x.bytes), (agent(), &bytes));
                Some(t.as_millis() as u64)
            }
            Output::Event(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert_eq!(resent, [500, 1500, 3500, 7500, 15_500, 31_500]);
    let evs: Vec<(u64, CallEvent)> = all
        .into_iter()
        .filter_map(|(t, o)| match o {
            Output::Event(e) => Some((t.as_millis() as u64, e)),
            Output::Transmit(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert_eq!(
        evs,
        [
            (
                32_000,
                CallEvent::OutgoingFailed {
                    call,
                    status: 408,
                    reason: "Request Timeout".into()
                }
            ),
            (
                32_000,
                CallEvent::CallTerminated {
                    call,
                    reason: TerminationReason::Failed(408)
                }
            ),
        ]
    );
    assert_eq!(h.ep.call_count(), 0);
    assert_eq!(h.next_timeout(), None, "nothing left running");
}

#[test]
fn outgoing_invite_over_tcp_is_not_retransmitted_but_times_out() {
    let mut h = Harness::new();
    let (call, _) = h.place(outgoing(Transport::Tcp));
    let all = h.run_until(Duration::from_secs(40));
    assert!(
        all.iter().all(|(_, o)| matches!(o, Output::Event(_))),
        "{all:?}"
    );
    assert!(all.iter().any(|(t, o)| *t == Duration::from_secs(32)
        && *o
            == Output::Event(CallEvent::CallTerminated {
                call,
                reason: TerminationReason::Failed(408)
            })));
}

#[test]
fn busy_is_acked_by_the_transaction_and_reported() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Udp));
    let out = h.agent_sends(&reply(&inv, 100, None, "", ""));
    assert!(out.is_empty(), "100 is not reported: {out:?}");
    assert_eq!(h.next_timeout(), None, "provisional: timers A and B stop");
    let out = h.agent_sends(&reply(&inv, 180, Some("agt"), "", ""));
    assert_eq!(
        events(&out),
        [CallEvent::OutgoingProgress { call, status: 180 }]
    );
    let busy = reply(&inv, 486, Some("agt"), "", "");
    let out = h.agent_sends(&busy);
    let acks = requests(&out);
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, inv.uri);
    assert_eq!(
        ack.headers.top_via().expect("via").branch(),
        inv.headers.top_via().expect("via").branch(),
        "the non-2xx ACK belongs to the INVITE transaction"
    );
    assert_eq!(ack.headers.cseq().expect("cseq").to_string(), "1 ACK");
    assert_eq!(ack.headers.to().expect("to").tag(), Some("agt"));
    assert_eq!(destinations(&out), [agent()]);
    assert_eq!(
        events(&out),
        [
            CallEvent::OutgoingFailed {
                call,
                status: 486,
                reason: "Busy Here".into()
            },
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::Failed(486)
            }
        ]
    );
    // the 486 again: the same ACK again, nothing for the call layer
    let again = h.agent_sends(&busy);
    assert_eq!(requests(&again), acks);
    assert!(events(&again).is_empty());
    assert_eq!(h.ep.call_count(), 0);
    // timer D (32 s over UDP) then ends the transaction
    assert_eq!(h.next_timeout(), Some(h.now + Duration::from_secs(32)));
}

#[test]
fn answer_is_acked_once_per_2xx_and_reported_once() {
    let mut h = Harness::new();
    let (call, inv, ack) = h.answered();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, "sip:agent7@192.0.2.51:5999", "the 2xx's Contact");
    assert_ne!(
        ack.headers.top_via().expect("via").branch(),
        inv.headers.top_via().expect("via").branch(),
        "the 2xx ACK is a transaction of its own"
    );
    assert_eq!(ack.headers.cseq().expect("cseq").to_string(), "1 ACK");
    assert_eq!(ack.headers.to().expect("to").tag(), Some("agt"));
    let route: Vec<String> = ack
        .headers
        .route()
        .expect("route")
        .into_iter()
        .map(|r| r.uri.into_string())
        .collect();
    assert_eq!(route, ["sip:edge1.example;lr", "sip:edge2.example;lr"]);
    // retransmitted 200: the same ACK again, no second event
    let out = h.agent_sends(&reply(&inv, 200, Some("agt"), OK_EXTRA, "v=0 agent"));
    assert_eq!(requests(&out), [ack]);
    assert_eq!(destinations(&out), [agent()], "to the configured next hop");
    assert!(events(&out).is_empty());
    // we hang up: BYE in the dialog, its 200 ends the call
    let out = h.hangup(call).expect("hangup");
    let bye = requests(&out).remove(0);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri, "sip:agent7@192.0.2.51:5999");
    assert_eq!(bye.headers.cseq().expect("cseq").to_string(), "2 BYE");
    assert_eq!(bye.headers.to().expect("to").tag(), Some("agt"));
    assert_eq!(
        bye.headers.from().expect("from").tag(),
        inv.headers.from().expect("from").tag()
    );
    assert_eq!(
        h.hangup(call),
        Err(CommandError::WrongState),
        "BYE already out"
    );
    let out = h.agent_sends(&reply(&bye, 200, None, "", ""));
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }]
    );
    assert_eq!(h.ep.call_count(), 0);
}

#[test]
fn agent_hangs_up_with_bye() {
    let mut h = Harness::new();
    let (call, inv, _) = h.answered();
    let our_tag = inv
        .headers
        .from()
        .expect("from")
        .tag()
        .expect("tag")
        .to_owned();
    let call_id = inv.headers.call_id().expect("call-id").to_owned();
    let bye = format!(
        "BYE sip:12345@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.50:5070;branch=z9hG4bKagentbye\r\n\
From: <sip:agent7@pbx.example>;tag=agt\r\n\
To: \"13800000000\" <sip:12345@gw.example>;tag={our_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.agent_sends(&bye);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(destinations(&out), [agent()]);
    assert_eq!(
        events(&out),
        [
            CallEvent::Bye { call },
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::RemoteBye
            }
        ]
    );
    assert_eq!(h.ep.call_count(), 0);
    // the agent's address is no trunk: a new call from it is refused
    let out = h.agent_sends(&invite("z9hG4bKfromagent", "agent-call"));
    assert_eq!(statuses(&out), [403]);
    assert!(events(&out).is_empty());
}

#[test]
fn cancel_after_ringing_then_487_is_acked() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Udp));
    h.agent_sends(&reply(&inv, 180, Some("agt"), "", ""));
    let out = h.hangup(call).expect("hangup");
    let cancel = requests(&out).remove(0);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, inv.uri);
    assert_eq!(
        cancel.headers.top_via().expect("via").branch(),
        inv.headers.top_via().expect("via").branch()
    );
    assert_eq!(cancel.headers.cseq().expect("cseq").to_string(), "1 CANCEL");
    assert_eq!(cancel.headers.to().expect("to").tag(), None);
    assert!(events(&out).is_empty());
    assert_eq!(h.hangup(call), Err(CommandError::WrongState));
    // the CANCEL is retransmitted like any non-INVITE request until answered
    let out = h.advance(Duration::from_millis(500));
    assert_eq!(methods(&out), ["CANCEL"]);
    assert!(
        h.agent_sends(&reply(&cancel, 200, Some("agt"), "", ""))
            .is_empty()
    );
    let out = h.agent_sends(&reply(&inv, 487, Some("agt"), "", ""));
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }],
        "our own hangup is no failure"
    );
}

#[test]
fn hangup_before_any_provisional_waits_for_one_before_cancelling() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Udp));
    let out = h.hangup(call).expect("hangup");
    assert!(out.is_empty(), "no CANCEL before a provisional: {out:?}");
    // timer A still retransmits the INVITE meanwhile
    assert_eq!(methods(&h.advance(Duration::from_millis(500))), ["INVITE"]);
    let out = h.agent_sends(&reply(&inv, 100, None, "", ""));
    assert_eq!(methods(&out), ["CANCEL"]);
    assert!(events(&out).is_empty());
    let out = h.agent_sends(&reply(&inv, 487, Some("agt"), "", ""));
    assert_eq!(methods(&out), ["ACK"]);
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }]
    );
}

#[test]
fn hangup_with_no_provisional_ever_gives_up_at_timer_b() {
    let mut h = Harness::new();
    let (call, _) = h.place(outgoing(Transport::Udp));
    h.hangup(call).expect("hangup");
    let all = h.run_until(Duration::from_secs(40));
    let methods_sent: Vec<String> = all
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Transmit(t) => match parse_datagram(&t.bytes) {
                Ok(Message::Request(r)) => Some(r.method.as_str().to_owned()),
                _ => None,
            },
            Output::Event(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert!(
        methods_sent.iter().all(|m| m == "INVITE"),
        "{methods_sent:?}"
    );
    let evs: Vec<_> = all
        .into_iter()
        .filter_map(|(t, o)| match o {
            Output::Event(e) => Some((t, e)),
            Output::Transmit(_) | Output::Timeout(_) => None,
        })
        .collect();
    assert_eq!(
        evs,
        [(
            Duration::from_secs(32),
            CallEvent::CallTerminated {
                call,
                reason: TerminationReason::LocalHangup
            }
        )]
    );
}

#[test]
fn cancel_never_answered_gives_up_64_t1_later() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Tcp));
    h.agent_sends(&reply(&inv, 183, Some("agt"), "", ""));
    h.now += Duration::from_secs(10);
    h.hangup(call).expect("hangup");
    let all = h.run_until(Duration::from_secs(60));
    assert!(all.iter().any(|(t, o)| *t == Duration::from_secs(42)
        && *o
            == Output::Event(CallEvent::CallTerminated {
                call,
                reason: TerminationReason::LocalHangup
            })));
    assert_eq!(h.ep.call_count(), 0);
}

#[test]
fn answer_racing_our_cancel_is_acked_then_ended_with_bye() {
    let mut h = Harness::new();
    let (call, inv) = h.place(outgoing(Transport::Udp));
    h.agent_sends(&reply(&inv, 180, Some("agt"), "", ""));
    h.hangup(call).expect("hangup");
    let out = h.agent_sends(&reply(&inv, 200, Some("agt"), OK_EXTRA, "v=0"));
    assert_eq!(methods(&out), ["ACK", "BYE"]);
    assert!(events(&out).is_empty(), "the call layer already hung up");
    let bye = requests(&out).remove(1);
    let out = h.agent_sends(&reply(&bye, 200, None, "", ""));
    assert_eq!(
        events(&out),
        [CallEvent::CallTerminated {
            call,
            reason: TerminationReason::LocalHangup
        }]
    );
}

#[test]
fn a_second_fork_answering_is_acked_and_ended() {
    let mut h = Harness::new();
    let (call, inv, _) = h.answered();
    let out = h.agent_sends(&reply(&inv, 200, Some("other"), OK_EXTRA, "v=0"));
    assert_eq!(methods(&out), ["ACK", "BYE"]);
    let r = requests(&out);
    assert!(
        r.iter()
            .all(|r| r.headers.to().expect("to").tag() == Some("other"))
    );
    assert!(events(&out).is_empty());
    // its BYE completing leaves our call alone
    let out = h.agent_sends(&reply(&r[1], 200, None, "", ""));
    assert!(events(&out).is_empty(), "{out:?}");
    assert_eq!(h.ep.call_count(), 1);
    assert!(h.send_info(call, "application/dtmf", b"5").is_ok());
}

#[test]
fn responses_from_strangers_are_ignored() {
    let mut h = Harness::new();
    let (_, inv) = h.place(outgoing(Transport::Udp));
    let stranger: SocketAddr = "203.0.113.9:5060".parse().expect("addr");
    let out = h.send_from(
        stranger,
        Transport::Udp,
        &reply(&inv, 200, Some("x"), OK_EXTRA, "v=0"),
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(h.next_timeout().is_some(), "still calling");
}

#[test]
fn invalid_outgoing_calls_are_refused_before_anything_is_sent() {
    let mut h = Harness::new();
    type Change = Box<dyn Fn(&mut OutgoingCall)>;
    let cases: Vec<(&str, Change)> = vec![
        ("space", Box::new(|c| c.target_uri = "sip:a b@pbx".into())),
        ("bracket", Box::new(|c| c.to_uri = "sip:a@pbx>;x=1".into())),
        ("no scheme", Box::new(|c| c.from_uri = "12345".into())),
        ("sips", Box::new(|c| c.target_uri = "sips:a@pbx".into())),
        ("tel", Box::new(|c| c.target_uri = "tel:+8612345".into())),
        (
            "port",
            Box::new(|c| c.target_uri = "sip:a@pbx:70000".into()),
        ),
        ("ipv6", Box::new(|c| c.target_uri = "sip:a@[::1".into())),
        (
            "display",
            Box::new(|c| c.from_display = Some("a\r\nVia: x".into())),
        ),
        (
            "header crlf",
            Box::new(|c| {
                c.extra_headers = vec![("X-A".into(), "1\r\nVia: SIP/2.0/UDP evil".into())]
            }),
        ),
        (
            "header name",
            Box::new(|c| c.extra_headers = vec![("X A".into(), "1".into())]),
        ),
        (
            "reserved",
            Box::new(|c| c.extra_headers = vec![("call-id".into(), "mine".into())]),
        ),
        (
            "compact reserved",
            Box::new(|c| c.extra_headers = vec![("v".into(), "SIP/2.0/UDP x".into())]),
        ),
    ];
    for (name, change) in cases {
        let mut call = outgoing(Transport::Udp);
        change(&mut call);
        match h.ep.invite(h.now, call) {
            Err(CommandError::InvalidCall(_)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(h.ep.call_count(), 0);
    assert_eq!(h.next_timeout(), None);
}

/// A flood of new calls from one address: beyond `source_call_rate` (after the burst) each is
/// answered 503 with Retry-After and leaves nothing behind; another address is still served,
/// and so are in-dialog requests and retransmissions of a call already taken.
#[test]
fn a_flood_of_new_calls_from_one_address_is_limited() {
    let mut h = Harness::new();
    h.ep = Endpoint::new(SipSettings {
        source_call_rate: 10,
        source_call_burst: 3,
        ..SipSettings::default()
    });
    let mut taken = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let out = h.send(&invite(&format!("z9hG4bKf{i}"), &format!("flood{i}")));
        let call = out.iter().find_map(|o| match o {
            Output::Event(CallEvent::IncomingCall { call, .. }) => Some(*call),
            _ => None,
        });
        match call {
            Some(c) => taken.push(c),
            None => {
                let r = responses(&out);
                assert_eq!(r.len(), 1, "one stateless answer");
                assert_eq!(r[0].status, 503);
                assert_eq!(r[0].headers.get("Retry-After"), Some("5"));
                refused += 1;
            }
        }
    }
    assert_eq!((taken.len(), refused), (3, 17));
    assert_eq!(h.ep.call_count(), 3, "nothing kept for refused calls");
    // A retransmission of a call already taken is absorbed, not refused.
    let again = h.send(&invite("z9hG4bKf0", "flood0"));
    assert!(responses(&again).iter().all(|r| r.status != 503));
    // Another address has its own budget.
    h.from = "127.0.0.2:5080".parse().expect("addr");
    let (other, _) = h.incoming("z9hG4bKother", "other1");
    assert!(!taken.contains(&other));
    // The rate refills: one more call from the first address 100 ms later.
    h.from = TRUNK.parse().expect("addr");
    h.now += Duration::from_millis(110);
    h.incoming("z9hG4bKlater", "later1");
}

/// A harness whose endpoint is a registrar for agent 1001 (password `s3cret`).
fn with_agent_1001() -> Harness {
    let mut h = Harness::new();
    h.ep = Endpoint::new(SipSettings {
        registrar: Some(crate::registrar::RegistrarSettings {
            users: [("1001".to_owned(), "s3cret".to_owned())].into(),
            ..Default::default()
        }),
        ..SipSettings::default()
    });
    h
}

/// The nonce of a `WWW-Authenticate: Digest ...` challenge.
fn nonce_of(challenge: &str) -> String {
    challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .expect("nonce")
        .to_owned()
}

/// An agent's phone registers from outside the trunk allow-list: challenged, then bound with the
/// digest answer (the event tells the call layer where to ring the agent), refused 403 with a
/// wrong password, and forgotten when the binding lapses unrefreshed.
#[test]
fn an_agent_registers_with_digest_from_anywhere_and_expires() {
    let mut h = with_agent_1001();
    let phone: SocketAddr = "198.51.100.7:5062".parse().expect("addr");
    let register = |branch: &str, cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=p1\r\nTo: <sip:1001@127.0.0.1>\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:1001@198.51.100.7:5062>\r\n\
             Expires: 120\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let out = h.send_from(phone, Transport::Udp, &register("z9hG4bKr1", 1, ""));
    let r = responses(&out);
    assert_eq!(r[0].status, 401, "{out:?}");
    let challenge = r[0]
        .headers
        .get("WWW-Authenticate")
        .expect("challenge")
        .to_owned();
    let nonce = nonce_of(&challenge);
    let auth = |password: &str| {
        let c = crate::registrar::DigestCredentials {
            username: "1001".into(),
            realm: "12345".into(),
            nonce: nonce.clone(),
            uri: "sip:127.0.0.1".into(),
            response: String::new(),
            algorithm: None,
            qop: None,
            nc: None,
            cnonce: None,
        };
        let resp = crate::registrar::expected_response(&c, password, "REGISTER");
        format!(
            "Authorization: Digest username=\"1001\", realm=\"12345\", nonce=\"{nonce}\", \
             uri=\"sip:127.0.0.1\", response=\"{resp}\"\r\n"
        )
    };
    let out = h.send_from(
        phone,
        Transport::Udp,
        &register("z9hG4bKr2", 2, &auth("nope")),
    );
    assert_eq!(statuses(&out), [403]);
    assert!(events(&out).is_empty());
    let out = h.send_from(
        phone,
        Transport::Udp,
        &register("z9hG4bKr3", 3, &auth("s3cret")),
    );
    let r = responses(&out);
    assert_eq!(r[0].status, 200);
    assert_eq!(
        r[0].headers.get("Contact"),
        Some("<sip:1001@198.51.100.7:5062>;expires=120")
    );
    assert_eq!(
        events(&out),
        [CallEvent::AgentRegistered {
            user: "1001".into(),
            contact: "sip:1001@198.51.100.7:5062".into(),
            source: phone,
            transport: Transport::Udp,
            expires: Duration::from_secs(120),
        }]
    );
    // Not refreshed: gone at the end of its 120 s.
    let out = h.advance(Duration::from_secs(121));
    assert!(
        events(&out).contains(&CallEvent::AgentUnregistered {
            user: "1001".into()
        }),
        "{out:?}"
    );
    // An INVITE from the phone's address is still not the trunk's.
    let out = h.send_from(phone, Transport::Udp, &invite("z9hG4bKi", "x1"));
    assert_eq!(statuses(&out), [403]);
}

/// An agent's phone dials a feature code (`*22`) from outside the trunk allow-list: challenged
/// 401 like its REGISTER (the 401's ACK is taken, not refused), refused 403 with a wrong
/// password, and with the right one the call comes up naming the agent. A feature code without
/// a registrar, or any other number from there, is still the trunk's 403.
#[test]
fn an_agent_dials_a_feature_code_authenticated_by_digest() {
    let mut h = with_agent_1001();
    let phone: SocketAddr = "198.51.100.7:5062".parse().expect("addr");
    let feature = |branch: &str, cseq: u32, auth: &str| {
        format!(
            "INVITE sip:*22@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=p1\r\nTo: <sip:*22@127.0.0.1>\r\n\
             Call-ID: fc-1\r\nCSeq: {cseq} INVITE\r\nContact: <sip:1001@198.51.100.7:5062>\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let out = h.send_from(phone, Transport::Udp, &feature("z9hG4bKf1", 1, ""));
    let r = responses(&out);
    assert_eq!(r[0].status, 401, "{out:?}");
    assert!(events(&out).is_empty());
    let challenge = r[0]
        .headers
        .get("WWW-Authenticate")
        .expect("challenge")
        .to_owned();
    let ack = "ACK sip:*22@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKf1\r\n\
               Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=p1\r\nTo: <sip:*22@127.0.0.1>;tag=x\r\n\
               Call-ID: fc-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    let out = h.send_from(phone, Transport::Udp, ack);
    assert!(
        responses(&out).is_empty(),
        "an ACK is never answered: {out:?}"
    );
    let nonce = nonce_of(&challenge);
    let auth = |password: &str| {
        let c = crate::registrar::DigestCredentials {
            username: "1001".into(),
            realm: "12345".into(),
            nonce: nonce.clone(),
            uri: "sip:*22@127.0.0.1".into(),
            ..Default::default()
        };
        let resp = crate::registrar::expected_response(&c, password, "INVITE");
        format!(
            "Authorization: Digest username=\"1001\", realm=\"12345\", nonce=\"{nonce}\", \
             uri=\"sip:*22@127.0.0.1\", response=\"{resp}\"\r\n"
        )
    };
    let out = h.send_from(
        phone,
        Transport::Udp,
        &feature("z9hG4bKf2", 2, &auth("nope")),
    );
    assert_eq!(statuses(&out), [403]);
    assert!(events(&out).is_empty());
    // A digest computed for REGISTER does not open an INVITE.
    let c = crate::registrar::DigestCredentials {
        username: "1001".into(),
        realm: "12345".into(),
        nonce: nonce.clone(),
        uri: "sip:*22@127.0.0.1".into(),
        ..Default::default()
    };
    let wrong_method = crate::registrar::expected_response(&c, "s3cret", "REGISTER");
    let replayed = format!(
        "Authorization: Digest username=\"1001\", realm=\"12345\", nonce=\"{nonce}\", \
         uri=\"sip:*22@127.0.0.1\", response=\"{wrong_method}\"\r\n"
    );
    let out = h.send_from(phone, Transport::Udp, &feature("z9hG4bKf3", 3, &replayed));
    assert_eq!(statuses(&out), [403]);
    let out = h.send_from(
        phone,
        Transport::Udp,
        &feature("z9hG4bKf4", 4, &auth("s3cret")),
    );
    assert_eq!(statuses(&out), [100]);
    let ev = events(&out);
    assert!(
        matches!(&ev[..], [CallEvent::IncomingCall { agent: Some(a), request_uri, .. }]
            if a == "1001" && request_uri.contains("*22")),
        "{ev:?}"
    );
    // Any other number from the phone's address is not the trunk's.
    let out = h.send_from(phone, Transport::Udp, &invite("z9hG4bKi", "x1"));
    assert_eq!(statuses(&out), [403]);
}
