//! Whole calls in one process on virtual time, in the manner of quinn's `Pair::drive`.
//!
//! A caller [`sip::Endpoint`] (UAC) calls the gateway's [`sip::Endpoint`] (UAS); the gateway
//! side answers as the call task does ([`super::session`]'s offer/answer), runs a
//! [`CallCore`] on the shipped flows (`ivr-flows/flows`, loaded by the gateway's own loader),
//! and both sides' [`RtpSession`]s exchange packets in memory, with optional loss. Nothing
//! sleeps and no socket is opened: the test moves the clock, so a call of a minute runs in
//! milliseconds and the same seed gives the same call every time. Prompts are the flows' WAV
//! files; text-to-speech items become a tone (no espeak-ng here); recognition results and store
//! answers are injected by the test as the core's inputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ivr_flows::calendar::{Date, LocalTime};
use ivr_flows::{Event, Session};
use media::dtmf::DigitSource;
use media::prompt::{EncodedPrompt, PlayItem, Player};
use media::rtp_session::{self, Channel, RtpConfig, RtpEvent, RtpSession, Transmit};
use media::sdp::{self, SessionDescription};
use media::{Codec, MediaSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip::{CallEvent, CallId, Endpoint, OutgoingCall, Output, SipSettings, Transport};

use super::bridge::voiced;
use super::cdr::{CallFacts, CallRecord};
use super::core::{
    self, ACK_WAIT, CallCommand, CallCore, CoreSettings, Ending, State, StoreResult,
};
use super::events::RtpFigures;
use super::session::answer_offer;
use crate::ivr::LiveFlows;
use crate::runtime::prompt_cache::PromptCache;

const CALLER_SIP: &str = "127.0.0.2:5060";
const GATEWAY_SIP: &str = "127.0.0.1:5060";
const CALLER_RTP: &str = "127.0.0.2:40000";
const GATEWAY_RTP: &str = "127.0.0.1:20000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

/// The caller, the gateway and the wire between them, on one virtual clock.
struct Sim {
    now: Instant,
    start: Instant,
    caller_sip: Endpoint,
    gateway_sip: Endpoint,
    /// SIP datagrams in flight: (to, from, bytes).
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    caller_call: CallId,
    gateway_call: Option<CallId>,
    /// The Call-ID the gateway saw.
    sip_call_id: String,
    caller_rtp: Option<RtpSession>,
    gateway_rtp: Option<RtpSession>,
    core: Option<CallCore>,
    flows: Arc<LiveFlows>,
    flows_dir: PathBuf,
    prompts: PromptCache,
    player: Option<Player>,
    media: MediaSettings,
    /// Every command the core gave, in order.
    commands: Vec<CallCommand>,
    /// SIP events the caller saw.
    caller_events: Vec<CallEvent>,
    /// When the caller heard a voiced frame.
    heard: Vec<Instant>,
    /// Drop every ACK the caller sends (a lossy path right after the answer).
    drop_acks: bool,
    /// The gateway records calls (`calls.record_calls`): the recording notice is due.
    recorded: bool,
    /// Share of RTP packets lost each way, and those lost so far.
    loss: f64,
    lost: u64,
    rng: StdRng,
    /// When each core asked to be woken: the `Output::Timeout` that ended its last drain.
    due: Due,
}

/// The deadline each core gave when it was last drained (see [`Sim::settle`]).
#[derive(Debug, Default)]
struct Due {
    caller_sip: Option<Instant>,
    gateway_sip: Option<Instant>,
    caller_rtp: Option<Instant>,
    gateway_rtp: Option<Instant>,
    core: Option<Instant>,
}

impl Due {
    fn earliest(&self) -> Option<Instant> {
        [
            self.caller_sip,
            self.gateway_sip,
            self.caller_rtp,
            self.gateway_rtp,
            self.core,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Everything an endpoint hands out up to its `Output::Timeout`, whose deadline goes to `due`.
fn drain_sip(ep: &mut Endpoint, due: &mut Option<Instant>) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match ep.poll_output() {
            Output::Timeout(t) => {
                *due = t;
                return out;
            }
            o => out.push(o),
        }
    }
}

/// Whether a deadline has come at `now`.
fn is_due(due: Option<Instant>, now: Instant) -> bool {
    due.is_some_and(|t| t <= now)
}

/// The RTP path between the two sessions, losing a share of the packets.
struct Wire<'a> {
    now: Instant,
    rng: &'a mut StdRng,
    loss: f64,
    lost: &'a mut u64,
}

impl Wire<'_> {
    /// Deliver one datagram `from_addr` sends to `to`, unless the path loses it.
    fn carry(&mut self, t: Transmit, to: &mut RtpSession, from_addr: SocketAddr) {
        if t.channel == Channel::Rtp && self.rng.random::<f64>() < self.loss {
            *self.lost += 1;
            return;
        }
        match t.channel {
            Channel::Rtp => to.handle_rtp(self.now, from_addr, &t.data),
            Channel::Rtcp => {
                let rtcp = SocketAddr::new(from_addr.ip(), from_addr.port() + 1);
                to.handle_rtcp(self.now, rtcp, &t.data)
            }
        }
    }
}

/// A Tuesday in March at 10:00: working hours, so the main flow reaches its menu.
fn working_hours() -> LocalTime {
    LocalTime {
        date: Date {
            year: 2026,
            month: 3,
            day: 10,
        },
        hour: 10,
        minute: 0,
    }
}

/// A second of 440 Hz for a text-to-speech item.
fn spoken_tone(codec: Codec) -> EncodedPrompt {
    let pcm: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (6000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    EncodedPrompt::encode(&pcm, codec)
}

impl Sim {
    /// A caller dials the gateway; `loss` of the RTP packets each way are dropped.
    fn call(loss: f64) -> Sim {
        Sim::dial(loss, false)
    }

    /// As [`Sim::call`]; with `drop_acks` the gateway never gets the caller's ACK.
    fn dial(loss: f64, drop_acks: bool) -> Sim {
        Sim::dial_with(loss, drop_acks, false)
    }

    /// As [`Sim::dial`]; with `recorded` the gateway records calls (`calls.record_calls`).
    fn dial_with(loss: f64, drop_acks: bool, recorded: bool) -> Sim {
        let flows_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../ivr-flows/flows"));
        let flows = LiveFlows::load(&flows_dir).expect("the shipped flows load");
        let now = Instant::now();
        let settings = |a: &str, seed| SipSettings {
            udp: addr(a),
            tcp: addr(a),
            rng_seed: seed,
            ..SipSettings::default()
        };
        let mut caller_sip = Endpoint::new(settings(CALLER_SIP, 1));
        let media = MediaSettings {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            ..MediaSettings::default()
        };
        let rtp = addr(CALLER_RTP);
        let offer = sdp::offer(
            &[Codec::Pcmu],
            media.telephone_event_pt,
            rtp.ip(),
            rtp.port(),
        );
        let caller_call = caller_sip
            .invite(
                now,
                OutgoingCall {
                    target_uri: "sip:12345@127.0.0.1".into(),
                    from_uri: "sip:13800138000@127.0.0.2".into(),
                    from_display: None,
                    to_uri: "sip:12345@127.0.0.1".into(),
                    destination: addr(GATEWAY_SIP),
                    transport: Transport::Udp,
                    sdp_offer: offer.to_string().into_bytes(),
                    extra_headers: Vec::new(),
                },
            )
            .expect("the INVITE is placed");
        let mut sim = Sim {
            now,
            start: now,
            caller_sip,
            gateway_sip: Endpoint::new(settings(GATEWAY_SIP, 2)),
            wire: VecDeque::new(),
            caller_call,
            gateway_call: None,
            sip_call_id: String::new(),
            caller_rtp: None,
            gateway_rtp: None,
            core: None,
            flows_dir: flows.current().dir().map_or(flows_dir, |d| d.to_path_buf()),
            flows,
            prompts: PromptCache::new(),
            player: None,
            media,
            commands: Vec::new(),
            caller_events: Vec::new(),
            heard: Vec::new(),
            drop_acks,
            recorded,
            loss,
            lost: 0,
            rng: StdRng::seed_from_u64(7),
            due: Due::default(),
        };
        sim.settle();
        sim
    }

    fn core(&mut self) -> &mut CallCore {
        self.core.as_mut().expect("the gateway answered")
    }

    /// Move the clock by `d`, running every timer and 20 ms tick on the way.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        // What the test fed the cores directly, so that their deadlines are current.
        self.settle();
        for _ in 0..1_000_000 {
            let Some(next) = self.due.earliest().filter(|n| *n <= until) else {
                self.now = until;
                return;
            };
            self.now = next.max(self.now);
            let now = self.now;
            if is_due(self.due.caller_sip, now) {
                self.caller_sip.handle_timeout(now);
            }
            if is_due(self.due.gateway_sip, now) {
                self.gateway_sip.handle_timeout(now);
            }
            if let Some(c) = self.core.as_mut()
                && is_due(self.due.core, now)
            {
                c.handle_timeout(now);
            }
            if is_due(self.due.gateway_rtp, now) {
                self.top_up();
                if let Some(r) = self.gateway_rtp.as_mut() {
                    r.handle_timeout(now);
                }
            }
            if let Some(r) = self.caller_rtp.as_mut()
                && is_due(self.due.caller_rtp, now)
            {
                r.handle_timeout(now);
            }
            self.settle();
        }
        panic!("the simulation does not advance");
    }

    /// Run in 20 ms steps until `done` holds, at most `max`; `what` names it for the failure.
    fn run_until(&mut self, what: &str, max: Duration, done: impl Fn(&Sim) -> bool) {
        let until = self.now + max;
        while !done(self) {
            assert!(
                self.now < until,
                "{what}: not within {max:?}; commands: {:#?}",
                self.commands
            );
            self.run_for(Duration::from_millis(20));
        }
    }

    /// Run until the core asks to play `path` (a prompt file of the flows), at most `max`.
    fn run_until_played(&mut self, path: &str, max: Duration) {
        self.run_until(path, max, |s| s.played(path));
    }

    /// Run until the prompt playing now has played out.
    fn run_until_quiet(&mut self) {
        self.run_until("the prompt's end", Duration::from_secs(30), |s| {
            s.player.is_none()
        });
    }

    /// Whether the core asked to play `path`.
    fn played(&self, path: &str) -> bool {
        self.commands.iter().any(|c| match c {
            CallCommand::Play { items, .. } => items.iter().any(
                |i| matches!(i, ivr_flows::PlayItem::Audio { path: p, .. } if p.as_str() == path),
            ),
            _ => false,
        })
    }

    /// Voiced frames the caller heard since `since`.
    fn heard_since(&self, since: Instant) -> usize {
        self.heard.iter().filter(|t| **t >= since).count()
    }

    /// The caller presses a key (RFC 4733).
    fn press(&mut self, digit: char) {
        let sent = self
            .caller_rtp
            .as_mut()
            .expect("caller media")
            .send_digit(digit, Duration::from_millis(160));
        assert!(sent, "the gateway negotiated telephone-event");
    }

    /// The recognizer heard the caller say `text`.
    fn say(&mut self, text: &str) {
        let now = self.now;
        self.core().handle_heard(
            now,
            Event::SpeechResult {
                text: text.into(),
                confidence: 0.9,
                alternatives: Vec::new(),
            },
        );
        self.settle();
    }

    /// The caller hangs up (BYE).
    fn hang_up(&mut self) {
        self.caller_sip
            .hangup(self.now, self.caller_call)
            .expect("the call is up");
        self.settle();
    }

    /// Drain every core, deliver what is in flight and carry out what the call core asks,
    /// until all is quiet. Every core's deadline in [`Sim::due`] is current afterwards.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = self.caller_output();
            busy |= self.gateway_output();
            while let Some((to, from, bytes)) = self.wire.pop_front() {
                busy = true;
                if self.drop_acks && bytes.starts_with(b"ACK ") {
                    continue;
                }
                let to = if to == addr(GATEWAY_SIP) {
                    &mut self.gateway_sip
                } else {
                    &mut self.caller_sip
                };
                to.handle_datagram(self.now, from, Transport::Udp, &bytes);
            }
            busy |= self.media_flow();
            busy |= self.carry_out();
            if !busy {
                return;
            }
        }
        panic!("the simulation does not settle");
    }

    /// Drain the caller's endpoint. Whether anything came out.
    fn caller_output(&mut self) -> bool {
        let out = drain_sip(&mut self.caller_sip, &mut self.due.caller_sip);
        let any = !out.is_empty();
        for o in out {
            match o {
                Output::Transmit(t) => self.wire.push_back((t.to, addr(CALLER_SIP), t.bytes)),
                Output::Event(ev) => {
                    if let CallEvent::OutgoingAnswered {
                        sdp: Some(body), ..
                    } = &ev
                    {
                        // The answer read as an offer names the gateway's address and codec.
                        let text = std::str::from_utf8(body).expect("SDP is text");
                        let answer = SessionDescription::parse(text).expect("the answer parses");
                        let rtp = addr(CALLER_RTP);
                        let n = sdp::negotiate(&answer, &[Codec::Pcmu], rtp.ip(), rtp.port())
                            .expect("the answer is usable")
                            .media;
                        let cfg = RtpConfig::new(&self.media, &n, &mut self.rng);
                        self.caller_rtp =
                            Some(RtpSession::new(cfg, self.now, SystemTime::UNIX_EPOCH));
                    }
                    self.caller_events.push(ev);
                }
                Output::Timeout(_) => {}
            }
        }
        any
    }

    /// Drain the gateway's endpoint. Whether anything came out.
    /// What the gateway sends out in answer waits for the next drain (see [`Sim::settle`]).
    fn gateway_output(&mut self) -> bool {
        let out = drain_sip(&mut self.gateway_sip, &mut self.due.gateway_sip);
        let any = !out.is_empty();
        for o in out {
            match o {
                Output::Transmit(t) => self.wire.push_back((t.to, addr(GATEWAY_SIP), t.bytes)),
                Output::Event(CallEvent::IncomingCall {
                    call,
                    sdp_offer,
                    sip_call_id,
                    ..
                }) => {
                    self.sip_call_id = sip_call_id;
                    self.answer(call, sdp_offer)
                }
                Output::Event(ev) => {
                    let now = self.now;
                    if let Some(c) = self.core.as_mut() {
                        c.handle_sip(now, ev);
                    }
                }
                Output::Timeout(_) => {}
            }
        }
        any
    }

    /// What the call task's setup does: answer the offer, start media and the core.
    fn answer(&mut self, call: CallId, offer: Option<Vec<u8>>) {
        let offer = offer.expect("the caller offers");
        let (answer, negotiated) =
            answer_offer(&offer, &self.media.codecs, addr(GATEWAY_RTP)).expect("offer usable");
        self.gateway_sip
            .answer(self.now, call, answer.to_string().into_bytes())
            .expect("answer");
        self.gateway_call = Some(call);
        let cfg = RtpConfig::new(&self.media, &negotiated, &mut self.rng);
        self.gateway_rtp = Some(RtpSession::new(cfg, self.now, SystemTime::UNIX_EPOCH));
        let ivr = Session::new(self.flows.current(), "main");
        self.core = Some(CallCore::new(
            self.now,
            ivr,
            Event::CallStarted {
                caller: "13800138000".into(),
                called: "12345".into(),
                local_time: working_hours(),
            },
            CoreSettings {
                ack_wait: ACK_WAIT,
                transfer_timeout: Duration::from_secs(30),
                dtmf_merge_window: self.media.dtmf_merge_window,
                recording_notice: self.recorded,
            },
        ));
    }

    /// Move RTP both ways (losing some) and hand media events on. Whether anything moved.
    fn media_flow(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        let mut wire = Wire {
            now,
            rng: &mut self.rng,
            loss: self.loss,
            lost: &mut self.lost,
        };
        if let Some(gw) = self.gateway_rtp.as_mut() {
            loop {
                match gw.poll_output() {
                    rtp_session::Output::Transmit(t) => {
                        moved = true;
                        if let Some(caller) = self.caller_rtp.as_mut() {
                            wire.carry(t, caller, addr(GATEWAY_RTP));
                        }
                    }
                    rtp_session::Output::Event(ev) => {
                        moved = true;
                        let Some(core) = self.core.as_mut() else {
                            continue;
                        };
                        match ev {
                            RtpEvent::Digit { digit, .. } => {
                                core.handle_digit(now, digit, DigitSource::Rfc4733)
                            }
                            RtpEvent::MediaTimeout => core.handle_media_timeout(now),
                            _ => {}
                        }
                    }
                    rtp_session::Output::Timeout(t) => {
                        self.due.gateway_rtp = Some(t);
                        break;
                    }
                }
            }
        }
        if let Some(caller) = self.caller_rtp.as_mut() {
            loop {
                match caller.poll_output() {
                    rtp_session::Output::Transmit(t) => {
                        moved = true;
                        if let Some(gw) = self.gateway_rtp.as_mut() {
                            wire.carry(t, gw, addr(CALLER_RTP));
                        }
                    }
                    rtp_session::Output::Event(RtpEvent::Frame {
                        frame,
                        received: true,
                    }) if voiced(&frame) => self.heard.push(now),
                    rtp_session::Output::Event(_) => {}
                    rtp_session::Output::Timeout(t) => {
                        self.due.caller_rtp = Some(t);
                        break;
                    }
                }
            }
        }
        moved
    }

    /// Keep the gateway's send queue filled from the prompt playing (as the media driver does).
    fn top_up(&mut self) {
        let (Some(player), Some(rtp)) = (self.player.as_mut(), self.gateway_rtp.as_mut()) else {
            return;
        };
        while rtp.queued() < 2 {
            match player.next_frame() {
                Some(f) => rtp.send_payload(f),
                None => {
                    let (stopped, id) = (player.is_stopped(), player.id());
                    self.player = None;
                    if !stopped && let Some(c) = self.core.as_mut() {
                        c.handle_prompt_finished(self.now, id);
                    }
                    return;
                }
            }
        }
    }

    /// Carry out the core's commands as the call task would. Whether there were any.
    fn carry_out(&mut self) -> bool {
        let mut any = false;
        let now = self.now;
        loop {
            let Some(c) = self.core.as_mut() else {
                return any;
            };
            let cmd = match c.poll_output(now) {
                core::Output::Command(cmd) => cmd,
                core::Output::Timeout(t) => {
                    self.due.core = t;
                    return any;
                }
            };
            any = true;
            self.commands.push(cmd.clone());
            match cmd {
                CallCommand::Play { id, items, .. } => {
                    let codec = self.media.codecs[0];
                    let mut out = Vec::new();
                    for item in items {
                        match item {
                            ivr_flows::PlayItem::Audio { path, .. } => {
                                let clip = self
                                    .prompts
                                    .get(&self.flows_dir.join(&path), codec)
                                    .expect("the shipped prompt decodes");
                                out.push(PlayItem::Clip(clip));
                            }
                            ivr_flows::PlayItem::Tts { .. } => {
                                out.push(PlayItem::Clip(Arc::new(spoken_tone(codec))))
                            }
                            ivr_flows::PlayItem::Silence { ms } => {
                                out.push(PlayItem::Silence(Duration::from_millis(u64::from(ms))))
                            }
                        }
                    }
                    if let Some(r) = self.gateway_rtp.as_mut() {
                        r.clear_queued();
                    }
                    self.player = Some(Player::new(codec, out).with_id(id));
                }
                CallCommand::StopPlayback => {
                    self.player = None;
                    if let Some(r) = self.gateway_rtp.as_mut() {
                        r.clear_queued();
                    }
                }
                CallCommand::Hangup => {
                    if let Some(call) = self.gateway_call {
                        // Refused only when the call is already ending; nothing to do then.
                        let _ = self.gateway_sip.hangup(now, call);
                    }
                }
                // The test answers store work, transfers and recordings itself.
                _ => {}
            }
        }
    }

    /// Whether the core asked for a transfer.
    fn asked_transfer(&self) -> bool {
        self.commands
            .iter()
            .any(|c| matches!(c, CallCommand::Transfer { .. }))
    }

    /// Submits the core asked for.
    fn submits(&self) -> Vec<&CallCommand> {
        self.commands
            .iter()
            .filter(|c| matches!(c, CallCommand::Submit { .. }))
            .collect()
    }

    /// Virtual time since the call began.
    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// Runs `f` and says how long the whole call took in real time.
fn timed(name: &str, f: impl FnOnce() -> Duration) {
    let real = Instant::now();
    let virtual_time = f();
    eprintln!(
        "sim {name}: {virtual_time:?} of call in {:?} of real time",
        real.elapsed()
    );
}

/// Past the greeting to the main menu: choose Mandarin with a key.
fn to_main_menu(sim: &mut Sim) {
    sim.run_until_played("prompts/zh/choose_language.wav", Duration::from_secs(30));
    sim.run_until_quiet();
    sim.press('1');
    sim.run_until_played("prompts/zh/main_menu.wav", Duration::from_secs(5));
}

/// Runs a call from the main menu on, under [`timed`]: `loss` as for [`Sim::call`], then `f`.
fn from_main_menu(name: &str, loss: f64, f: impl FnOnce(&mut Sim)) {
    timed(name, || {
        let mut sim = Sim::call(loss);
        to_main_menu(&mut sim);
        f(&mut sim);
        sim.elapsed()
    });
}

/// Ask for an agent (0) and run until the core asks for the transfer.
fn to_transfer(sim: &mut Sim) {
    sim.press('0');
    sim.run_until("a transfer", Duration::from_secs(15), Sim::asked_transfer);
}

#[test]
fn the_greeting_is_heard() {
    timed("greeting", || {
        let mut sim = Sim::call(0.0);
        assert!(
            sim.caller_events
                .iter()
                .any(|e| matches!(e, CallEvent::OutgoingAnswered { .. })),
            "answered at once: {:?}",
            sim.caller_events
        );
        sim.run_for(Duration::from_secs(3));
        assert!(sim.played("prompts/zh/welcome.wav"));
        // The ACK came at once: the greeting did not wait for ACK_WAIT.
        assert_eq!(sim.core().state(), &State::InFlow);
        let voiced = sim.heard_since(sim.start);
        assert!(voiced > 50, "the caller heard {voiced} voiced frames");
        sim.elapsed()
    });
}

#[test]
fn a_key_chooses_a_menu_option() {
    from_main_menu("key", 0.0, |sim| {
        let before = sim.now;
        sim.run_for(Duration::from_secs(1));
        assert!(sim.heard_since(before) > 10, "the menu is heard");
        sim.press('1');
        sim.run_until_played("prompts/zh/describe.wav", Duration::from_secs(5));
    });
}

#[test]
fn a_spoken_answer_chooses_a_menu_option() {
    from_main_menu("speech", 0.0, |sim| {
        sim.run_for(Duration::from_secs(1));
        assert!(
            sim.commands
                .iter()
                .any(|c| matches!(c, CallCommand::Listen(Some(_)))),
            "the menu listens for speech"
        );
        sim.say("我要投诉");
        sim.run_until_played("prompts/zh/describe.wav", Duration::from_secs(5));
    });
}

#[test]
fn the_report_flow_files_an_order_and_tells_its_number() {
    from_main_menu("report", 0.0, |sim| {
        sim.press('1');
        sim.run_until_played("prompts/zh/describe.wav", Duration::from_secs(5));
        sim.run_for(Duration::from_secs(2));
        sim.say("东湖路的路灯坏了");
        sim.run_until_played("prompts/zh/confirm_or_retry.wav", Duration::from_secs(5));
        sim.run_until_quiet();
        sim.press('1');
        // The district menu is spoken (no recording): its key, then the kind menu.
        sim.run_for(Duration::from_millis(200));
        sim.run_until_quiet();
        sim.press('5');
        sim.run_until_played("prompts/zh/kind.wav", Duration::from_secs(10));
        sim.run_until_quiet();
        sim.press('2');
        sim.run_until_played("prompts/zh/submit_or_restart.wav", Duration::from_secs(10));
        sim.run_until_quiet();
        sim.press('1');
        sim.run_for(Duration::from_secs(1));
        let submits = sim.submits();
        assert_eq!(submits.len(), 1, "{:#?}", sim.commands);
        let CallCommand::Submit { seq, slots } = submits[0] else {
            unreachable!()
        };
        assert_eq!(*seq, 1);
        assert_eq!(slots.get("district").map(String::as_str), Some("武昌区"));
        assert_eq!(slots.get("kind").map(String::as_str), Some("traffic"));
        assert_eq!(
            slots.get("text").map(String::as_str),
            Some("东湖路的路灯坏了")
        );
        // The store answers; the caller hears the number.
        let now = sim.now;
        sim.core().handle_store(
            now,
            StoreResult::Created {
                order_id: "2603100000017".into(),
            },
        );
        sim.settle();
        sim.run_until_played("prompts/zh/order_accepted.wav", Duration::from_secs(2));
        let before = sim.now;
        sim.run_for(Duration::from_secs(4));
        assert!(sim.heard_since(before) > 50, "the number is heard");
        assert_eq!(sim.core().orders(), ["2603100000017".to_owned()]);
        assert_eq!(sim.core().ending(), None);
    });
}

#[test]
fn a_transfer_rings_bridges_and_passes_keys_on() {
    from_main_menu("transfer", 0.0, |sim| {
        to_transfer(sim);
        let target = sim.commands.iter().find_map(|c| match c {
            CallCommand::Transfer { target, .. } => Some(target.clone()),
            _ => None,
        });
        assert_eq!(
            target,
            Some(ivr_flows::model::TransferTarget::Queue("general".into()))
        );
        let now = sim.now;
        sim.core().handle_agent_dialing(now);
        sim.core().handle_agent_ringing(now);
        assert!(matches!(
            sim.core().poll_output(now),
            core::Output::Command(CallCommand::Ringback(d)) if d == Duration::from_secs(30)
        ));
        sim.core().handle_agent_answered(now);
        assert_eq!(sim.core().state(), &State::Bridged);
        sim.settle();
        sim.press('3');
        sim.run_for(Duration::from_millis(500));
        assert!(
            sim.commands.contains(&CallCommand::DigitToAgent('3')),
            "{:#?}",
            sim.commands
        );
    });
}

#[test]
fn a_transfer_nobody_answers_falls_back_to_the_flow() {
    from_main_menu("transfer timeout", 0.0, |sim| {
        to_transfer(sim);
        assert!(sim.asked_transfer());
        let now = sim.now;
        sim.core().handle_agent_dialing(now);
        sim.run_for(Duration::from_secs(31));
        assert!(sim.commands.contains(&CallCommand::CloseAgentLeg));
        sim.run_until_played("prompts/zh/agents_busy.wav", Duration::from_secs(2));
    });
}

#[test]
fn the_caller_hanging_up_ends_the_call_and_gives_its_record() {
    from_main_menu("hang-up", 0.0, |sim| {
        sim.hang_up();
        assert!(
            sim.caller_events
                .iter()
                .any(|e| matches!(e, CallEvent::CallTerminated { .. }))
        );
        let core = sim.core();
        assert!(core.sip_gone());
        let outcome = core.outcome();
        assert_eq!(outcome.ending, Ending::CallerHangup);
        assert_eq!(outcome.ending.as_str(), "caller_hangup");
        assert_eq!(outcome.last_step.as_deref(), Some("main/main_menu"));
        assert!(outcome.abandoned, "nothing filed: a callback order is due");
        assert!(
            !sim.commands.contains(&CallCommand::Hangup),
            "no BYE of ours after the caller's"
        );
        // The record the call task writes, from the outcome and the media's figures.
        let stats = sim.gateway_rtp.as_ref().expect("media").stats();
        let started_at = chrono::DateTime::from_timestamp(1_773_108_000, 0).expect("a time");
        let duration_ms = sim.elapsed().as_millis() as u64;
        let record = CallRecord::new(
            &outcome,
            CallFacts {
                direction: super::cdr::direction(false),
                channel: super::cdr::channel(false),
                outbound_id: None,
                sip_call_id: sim.sip_call_id.clone(),
                caller: "13800138000".into(),
                called: "12345".into(),
                started_at,
                ended_at: started_at + chrono::TimeDelta::milliseconds(duration_ms as i64),
                duration_ms,
                callback_order: None,
                recordings: Vec::new(),
                transfer_to: None,
                bridge: None,
                codec: Some(Codec::Pcmu.name().into()),
                rtp: Some(RtpFigures::from_stats(&stats)),
            },
        );
        assert!(!record.facts.sip_call_id.is_empty());
        assert_eq!(record.outcome, "caller_hangup");
        assert_eq!(record.last_step.as_deref(), Some("main/main_menu"));
        assert!(record.orders.is_empty());
        let rtp = record.facts.rtp.as_ref().expect("figures");
        assert!(rtp.packets_received > 300, "{rtp:?}");
        assert_eq!(rtp.packets_lost, 0);
        let line = serde_json::to_string(&record).expect("JSON");
        assert!(line.contains(r#""outcome":"caller_hangup""#), "{line}");
    });
}

#[test]
fn a_key_gets_through_ten_percent_packet_loss() {
    from_main_menu("loss", 0.10, |sim| {
        sim.run_for(Duration::from_secs(1));
        sim.press('2');
        sim.run_for(Duration::from_secs(2));
        assert!(sim.lost > 10, "packets were lost: {}", sim.lost);
        assert!(
            sim.core()
                .position()
                .is_some_and(|p| p.starts_with("progress/")),
            "the key chose the progress flow: {:?}",
            sim.core().position()
        );
    });
}

#[test]
fn without_the_ack_the_greeting_starts_after_the_wait() {
    timed("lost ACK", || {
        let mut sim = Sim::dial(0.0, true);
        sim.run_for(ACK_WAIT - Duration::from_millis(100));
        assert!(
            matches!(sim.core().state(), State::Answering { .. }),
            "the flow waits for the ACK"
        );
        assert!(!sim.played("prompts/zh/welcome.wav"));
        sim.run_for(Duration::from_millis(200));
        assert_eq!(sim.core().state(), &State::InFlow);
        assert!(sim.played("prompts/zh/welcome.wav"));
        sim.elapsed()
    });
}

/// A recorded call: the caller hears the notice first, then the greeting, never one over the
/// other (the flow waits for the notice to play out).
#[test]
fn a_recorded_call_announces_it_before_the_greeting() {
    let mut sim = Sim::dial_with(0.0, false, true);
    sim.run_until_played("prompts/zh/welcome.wav", Duration::from_secs(15));
    let is_notice = |c: &CallCommand| matches!(c, CallCommand::Play { id, .. } if *id == core::RECORDING_NOTICE_ID);
    let is_flow_prompt = |c: &CallCommand| matches!(c, CallCommand::Play { id, .. } if *id != core::RECORDING_NOTICE_ID);
    let notice = sim.commands.iter().position(is_notice);
    let greeting = sim.commands.iter().position(is_flow_prompt);
    assert_eq!(
        notice,
        Some(0),
        "the notice comes first: {:?}",
        sim.commands
    );
    let greeting = greeting.expect("the greeting follows");
    assert!(
        !sim.commands[..greeting]
            .iter()
            .any(|c| matches!(c, CallCommand::StopPlayback)),
        "the notice was cut: {:?}",
        sim.commands
    );
    // The notice (a synthesized phrase: a tone in the simulation) played out first. (The
    // simulation's player reports its end as its last frame is queued, up to 40 ms early.)
    let notice_length = spoken_tone(Codec::Pcmu).duration() - Duration::from_millis(40);
    assert!(sim.elapsed() >= notice_length, "{:?}", sim.elapsed());
    // Without recording there is no notice.
    let mut plain = Sim::dial_with(0.0, false, false);
    plain.run_until_played("prompts/zh/welcome.wav", Duration::from_secs(15));
    assert!(!plain.commands.iter().any(is_notice));
}
