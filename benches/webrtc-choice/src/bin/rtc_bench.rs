//! rtc 0.21 (webrtc-rs's sans-IO core, ring) as our gateway's WebRTC leg, on virtual time.
//!
//! * answerer ("gateway"): `SettingEngineBuilder::with_lite(true)`, PCMU/0 + telephone-event/101
//!   in its `MediaEngine`, RTCP SR/RR interceptors, one local audio track whose `RTCRtpSender`
//!   takes our own `rtp::Packet`s; received ones come out of `poll_read` as
//!   `RTCMessage::RtpPacket`.
//! * offerer ("browser"): a normal full-ICE `RTCPeerConnection` with the same codecs.
//!
//! Both ends run in this thread; the "network" is two queues of datagrams. Output: one JSON line.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use webrtc_choice::{
    CpuMeter, PCMU_LEN, PTIME, Rng, answerer_addr, mean_us, offerer_addr, thread_cpu, thread_rusage,
};

const PT_PCMU: u8 = 0;
const PT_TEL: u8 = 101;

/// Print/check the SDP of the first call only once.
static SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pcmu() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_PCMU.to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn tel_event() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: "0-16".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A peer connection with PCMU/0 + telephone-event/101, RTCP reports, one local audio track.
fn build_pc(
    ice_lite: bool,
    addr: SocketAddr,
    ssrc: u32,
    now: Instant,
) -> (RTCPeerConnection, RTCRtpSenderId) {
    let codecs: Vec<RTCRtpCodecParameters> = [(pcmu(), PT_PCMU), (tel_event(), PT_TEL)]
        .into_iter()
        .map(|(rtp_codec, payload_type)| RTCRtpCodecParameters {
            rtp_codec,
            payload_type,
        })
        .collect();
    let mut media_engine = MediaEngine::default();
    for c in &codecs {
        media_engine
            .register_codec(c.clone(), RtpCodecKind::Audio)
            .expect("register_codec");
    }
    // SR/RR like any RTP endpoint; no NACK/TWCC (audio-only gateway).
    let registry = configure_rtcp_reports(Registry::new());
    let setting_engine = SettingEngineBuilder::new().with_lite(ice_lite).build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("build pc");

    let track = MediaStreamTrack::new(
        "stream".to_owned(),
        "audio".to_owned(),
        "audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: pcmu(),
            ..Default::default()
        }],
    );
    let sender = pc.add_track(track).expect("add_track");
    // add_track turns the encoding's codec (PCMU) into the transceiver's codec preferences,
    // which would leave telephone-event out of the offer/answer: prefer both explicitly.
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    for t in transceivers {
        pc.rtp_transceiver(t)
            .expect("transceiver")
            .set_codec_preferences(codecs.clone())
            .expect("set_codec_preferences");
    }

    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().expect("cand json"))
        .expect("add_local_candidate");
    (pc, sender)
}

/// One end of a call plus the queue of datagrams addressed to it.
struct Side {
    pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    addr: SocketAddr,
    next_timeout: Option<Instant>,
    inbox: VecDeque<(SocketAddr, BytesMut)>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    rtp_rx: u64,
    connected: bool,
    disconnected_at: Option<Instant>,
    /// What told us the peer is gone (first such event).
    disconnect_signal: Option<String>,
    write_errors: u64,
    last_error: Option<String>,
}

impl Side {
    fn new(pc: RTCPeerConnection, sender: RTCRtpSenderId, addr: SocketAddr, ssrc: u32) -> Self {
        Side {
            pc,
            sender,
            addr,
            next_timeout: None,
            inbox: VecDeque::new(),
            ssrc,
            seq: 1,
            ts: 0,
            rtp_rx: 0,
            connected: false,
            disconnected_at: None,
            disconnect_signal: None,
            write_errors: 0,
            last_error: None,
        }
    }

    /// Drain everything the connection has for us: datagrams to send, events, received RTP.
    fn drain(&mut self, now: Instant, out: &mut VecDeque<(SocketAddr, BytesMut)>) {
        loop {
            let mut progressed = false;
            while let Some(w) = self.pc.poll_write() {
                out.push_back((w.transport.local_addr, w.message));
                progressed = true;
            }
            while let Some(ev) = self.pc.poll_event() {
                progressed = true;
                match ev {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                        RTCPeerConnectionState::Connected,
                    ) => self.connected = true,
                    ev @ (RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                        RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed,
                    )
                    | RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                        RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed,
                    )) => {
                        self.disconnected_at.get_or_insert(now);
                        self.disconnect_signal
                            .get_or_insert_with(|| format!("{ev:?}"));
                    }
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
                progressed = true;
                if let RTCMessage::RtpPacket(_track, _pkt) = message {
                    self.rtp_rx += 1;
                }
            }
            if !progressed {
                break;
            }
        }
        self.next_timeout = self.pc.poll_timeout();
    }

    /// One "turn" at virtual time `now`: fire a due timeout, drain (also picks up RTP written
    /// since the last turn), then feed queued datagrams, draining after each.
    fn turn(&mut self, now: Instant, out: &mut VecDeque<(SocketAddr, BytesMut)>) {
        if self.next_timeout.is_none_or(|t| now >= t)
            && let Err(e) = self.pc.handle_timeout(now)
        {
            self.last_error = Some(format!("handle_timeout: {e}"));
        }
        self.drain(now, out);
        while let Some((source, bytes)) = self.inbox.pop_front() {
            self.feed(now, source, bytes);
            self.drain(now, out);
        }
    }

    /// Feed one datagram exactly as a socket read would.
    fn feed(&mut self, now: Instant, source: SocketAddr, bytes: BytesMut) {
        let r = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: source,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: bytes,
        });
        if let Err(e) = r {
            self.write_errors += 1;
            self.last_error = Some(format!("handle_read: {e}"));
        }
    }

    /// Write one 160-byte PCMU packet with our own header fields (our RTP session's job).
    fn send_pcmu(&mut self, now: Instant) {
        let pkt = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: PT_PCMU,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xff; PCMU_LEN]),
        };
        let mut sender = self.pc.rtp_sender(self.sender).expect("rtp_sender");
        if let Err(e) = sender.write_rtp(now, pkt) {
            self.write_errors += 1;
            self.last_error = Some(format!("write_rtp: {e}"));
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(PCMU_LEN as u32);
    }
}

struct Call {
    off: Side,
    ans: Side,
}

impl Call {
    fn next_timeout(&self) -> Option<Instant> {
        match (self.off.next_timeout, self.ans.next_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Steady-state network step for many calls at once: all offerers take a turn (unmetered),
/// then all answerers take a turn inside ONE metered block, until no datagram is in flight.
/// Metering per phase instead of per packet keeps the clock-reading overhead negligible.
fn exchange(calls: &mut [Call], now: Instant, ans_meter: &mut CpuMeter) {
    for _round in 0..16 {
        for c in calls.iter_mut() {
            c.off.turn(now, &mut c.ans.inbox);
        }
        ans_meter.time(|| {
            for c in calls.iter_mut() {
                c.ans.turn(now, &mut c.off.inbox);
            }
        });
        if calls
            .iter()
            .all(|c| c.off.inbox.is_empty() && c.ans.inbox.is_empty())
        {
            break;
        }
    }
}

/// Offer -> answer for call `i` at virtual time `t` (answerer work metered into `ans_meter`).
fn negotiate(i: usize, t: Instant, ans_meter: &mut CpuMeter) -> Call {
    // Browser: full ICE, creates the offer.
    let (mut off, off_sender) = build_pc(false, offerer_addr(i), 0x1000_0000 + i as u32, t);
    let offer = off.create_offer(None).expect("create_offer");
    off.set_local_description(t, offer.clone())
        .expect("offer sld");
    let offer_sdp = offer.sdp.clone(); // goes over signaling as text

    // Gateway: ICE-lite answerer.
    let (ans, ans_sender, answer_sdp) = ans_meter.time(|| {
        let (mut ans, ans_sender) = build_pc(true, answerer_addr(i), 0x2000_0000 + i as u32, t);
        let offer = RTCSessionDescription::offer(offer_sdp).expect("parse offer");
        ans.set_remote_description(t, offer).expect("offer srd");
        let answer = ans.create_answer(None).expect("create_answer");
        ans.set_local_description(t, answer.clone())
            .expect("answer sld");
        (ans, ans_sender, answer.sdp)
    });
    if i == 0 && !SHOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
        if std::env::var_os("SHOW_SDP").is_some() {
            eprintln!(
                "--- rtc offer ---\n{}--- rtc answer ---\n{answer_sdp}",
                offer.sdp
            );
        }
        assert!(
            answer_sdp.contains("a=ice-lite"),
            "answer lacks ice-lite:\n{answer_sdp}"
        );
        assert!(
            answer_sdp.contains("a=rtpmap:101 telephone-event/8000"),
            "no tel-event:\n{answer_sdp}"
        );
        assert!(
            answer_sdp.contains("a=rtpmap:0 PCMU/8000"),
            "no PCMU:\n{answer_sdp}"
        );
        assert!(
            answer_sdp.contains("a=rtcp-mux"),
            "no rtcp-mux:\n{answer_sdp}"
        );
    }
    off.set_remote_description(
        t,
        RTCSessionDescription::answer(answer_sdp).expect("parse answer"),
    )
    .expect("answer srd");

    Call {
        off: Side::new(off, off_sender, offerer_addr(i), 0x1000_0000 + i as u32),
        ans: Side::new(ans, ans_sender, answerer_addr(i), 0x2000_0000 + i as u32),
    }
}

/// Drive calls (ICE, DTLS, first RTP from the offerer) until every answerer has decrypted
/// its first RTP packet. All calls advance together so none sits idle on virtual time.
fn drive_until_media(
    calls: &mut [Call],
    start: Instant,
    now: &mut Instant,
    ans_meter: &mut CpuMeter,
) {
    let t0 = *now;
    loop {
        exchange(calls, *now, ans_meter);
        let mut sent = false;
        for c in calls.iter_mut() {
            if c.off.connected && c.ans.connected && c.off.seq == 1 {
                c.off.send_pcmu(*now);
                sent = true;
            }
        }
        if sent {
            continue; // deliver it at the same instant
        }
        if calls.iter().all(|c| c.ans.rtp_rx > 0) {
            return;
        }
        // Advance virtual time to the next timeout (at least 1 ms, at most one ptime).
        let next = calls
            .iter()
            .filter_map(Call::next_timeout)
            .min()
            .unwrap_or(*now + PTIME);
        *now = next.min(*now + PTIME).max(*now + Duration::from_millis(1));
        assert!(
            *now - start < Duration::from_secs(3600),
            "setup never completed"
        );
        if *now - t0 > Duration::from_secs(30) {
            let c = calls
                .iter()
                .find(|c| c.ans.rtp_rx == 0)
                .expect("a stuck call");
            panic!(
                "a call did not get media in 30 s virtual: off connected={} ans connected={} \
                 off err={:?} ans err={:?}",
                c.off.connected, c.ans.connected, c.off.last_error, c.ans.last_error
            );
        }
    }
}

/// Offer -> answer -> ICE -> DTLS -> first RTP decrypted by the answerer, for one call.
fn setup_call(i: usize, start: Instant, now: &mut Instant) -> (Call, CpuMeter) {
    let mut ans_meter = CpuMeter::default();
    let mut calls = [negotiate(i, *now, &mut ans_meter)];
    drive_until_media(&mut calls, start, now, &mut ans_meter);
    let [call] = calls;
    (call, ans_meter)
}

fn main() {
    let n_setup: usize = env_num("SETUP_CALLS", 200);
    let n_calls: usize = env_num("STEADY_CALLS", 100);
    let secs: u64 = env_num("STEADY_SECS", 10);

    let start = Instant::now();
    let mut now = start;

    // ---- 0. constructing one answerer alone (includes generating its DTLS certificate) ----
    // The first construction pays one-time process init (for aws-lc: seeding its jitter-entropy
    // DRBG, ~100 ms); do it once, unmetered, so the figures below are per-call costs.
    drop(build_pc(true, answerer_addr(0), 42, now));
    let mut build = CpuMeter::default();
    for _ in 0..50 {
        let x = build.time(|| build_pc(true, answerer_addr(0), 42, now));
        drop(x);
    }

    // ---- 1. setup cost ------------------------------------------------------------------
    let mut setup_total = CpuMeter::default();
    let mut setup_ans = CpuMeter::default();
    let mut setup_virtual = Duration::ZERO;
    for i in 0..n_setup {
        let t0 = now;
        let (_call, m) = setup_total.time(|| setup_call(i, start, &mut now));
        setup_ans.cpu += m.cpu;
        setup_ans.wall += m.wall;
        setup_virtual += now - t0;
    }

    // ---- 2. steady state -----------------------------------------------------------------
    // All calls are negotiated at the same instant and brought up together, so that none of
    // them idles (and hits a consent/ICE timeout) while the others are set up.
    let mut scratch = CpuMeter::default();
    let mut calls: Vec<Call> = (0..n_calls)
        .map(|i| negotiate(i, now, &mut scratch))
        .collect();
    drive_until_media(&mut calls, start, &mut now, &mut scratch);
    for _ in 0..50 {
        now += PTIME;
        exchange(&mut calls, now, &mut scratch);
    }
    let rx0: Vec<(u64, u64)> = calls.iter().map(|c| (c.off.rtp_rx, c.ans.rtp_rx)).collect();
    let werr0: u64 = calls
        .iter()
        .map(|c| c.ans.write_errors + c.off.write_errors)
        .sum();
    let ticks = secs * 1000 / PTIME.as_millis() as u64;
    let mut steady = CpuMeter::default();
    for _ in 0..ticks {
        now += PTIME;
        for c in calls.iter_mut() {
            c.off.send_pcmu(now);
        }
        // Our RTP session hands one packet per call to the library: metered as one block.
        steady.time(|| {
            for c in calls.iter_mut() {
                c.ans.send_pcmu(now);
            }
        });
        exchange(&mut calls, now, &mut steady);
    }
    now += PTIME;
    exchange(&mut calls, now, &mut scratch);
    let (mut lost_to_ans, mut lost_to_off) = (0u64, 0u64);
    for (c, (o0, a0)) in calls.iter().zip(&rx0) {
        lost_to_ans += ticks.saturating_sub(c.ans.rtp_rx - a0);
        lost_to_off += ticks.saturating_sub(c.off.rtp_rx - o0);
    }
    let steady_errors: u64 = calls
        .iter()
        .map(|c| c.ans.write_errors + c.off.write_errors)
        .sum::<u64>()
        - werr0;
    if steady_errors > 0 {
        eprintln!(
            "steady-state errors: {steady_errors}, e.g. {:?}",
            calls[0].ans.last_error
        );
    }
    let call_secs = (n_calls as u64 * secs) as f64;

    // ---- 3. garbage -----------------------------------------------------------------------
    let mut rng = Rng::new(0x1234_5678_9abc_def0);
    let g = &mut calls[0];
    let errs0 = g.ans.write_errors;
    let rx_before = (g.off.rtp_rx, g.ans.rtp_rx);
    let src = g.off.addr;
    let garbage = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sink = VecDeque::new();
        for _ in 0..10_000 {
            let d = rng.garbage(1500);
            g.ans.feed(now, src, BytesMut::from(&d[..]));
            g.ans.drain(now, &mut sink);
        }
        g.off.inbox.extend(sink);
    }));
    let garbage_panicked = garbage.is_err();
    let mut survived = false;
    if !garbage_panicked {
        // (All calls keep talking, so call 1 is live right up to the vanish test below.)
        for _ in 0..100 {
            now += PTIME;
            for c in calls.iter_mut() {
                c.off.send_pcmu(now);
                c.ans.send_pcmu(now);
            }
            exchange(&mut calls, now, &mut scratch);
        }
        let g = &calls[0];
        survived = g.ans.rtp_rx - rx_before.1 >= 99
            && g.off.rtp_rx - rx_before.0 >= 99
            && g.ans.disconnected_at.is_none();
    }
    let garbage_rejected = calls[0].ans.write_errors - errs0;

    // ---- 4. peer vanishes -----------------------------------------------------------------
    let d = &mut calls[1];
    let vanish_at = now;
    let mut t = now;
    while d.ans.disconnected_at.is_none() && t - vanish_at < Duration::from_secs(120) {
        t += PTIME;
        d.ans.send_pcmu(t);
        let mut sink = VecDeque::new();
        d.ans.turn(t, &mut sink);
    }
    let disconnect_ms = d
        .ans
        .disconnected_at
        .map(|x| (x - vanish_at).as_millis() as u64);

    let total_cpu = thread_cpu();
    println!(
        "{{\"lib\":\"rtc 0.21.1 (ring)\",\
\"answerer_construct_cpu_us\":{:.1},\"setup_calls\":{n_setup},\"setup_cpu_us_per_call_both_ends\":{:.1},\"setup_cpu_us_per_call_answerer\":{:.1},\
\"setup_wall_us_per_call\":{:.1},\"setup_virtual_ms_per_call\":{:.1},\
\"steady_calls\":{n_calls},\"steady_virtual_secs\":{secs},\"steady_answerer_cpu_us_per_call_second\":{:.2},\
\"steady_answerer_wall_us_per_call_second\":{:.2},\"pkts_per_side_per_call\":{ticks},\
\"lost_to_answerer\":{lost_to_ans},\"lost_to_offerer\":{lost_to_off},\"steady_errors\":{steady_errors},\
\"garbage_datagrams\":10000,\"garbage_panicked\":{garbage_panicked},\"garbage_rejected_with_err\":{garbage_rejected},\
\"garbage_call_survived\":{survived},\"disconnect_detected_after_ms\":{},\"disconnect_signal\":{:?},\"thread_cpu_s\":{:.2},\"thread_rusage_s\":{:.2}}}",
        mean_us(build.cpu, 50),
        mean_us(setup_total.cpu, n_setup),
        mean_us(setup_ans.cpu, n_setup),
        mean_us(setup_total.wall, n_setup),
        setup_virtual.as_secs_f64() * 1e3 / n_setup as f64,
        steady.cpu.as_secs_f64() * 1e6 / call_secs,
        steady.wall.as_secs_f64() * 1e6 / call_secs,
        disconnect_ms.map_or("null".to_string(), |v| v.to_string()),
        d.ans.disconnect_signal.clone().unwrap_or_default(),
        total_cpu.as_secs_f64(),
        thread_rusage().as_secs_f64(),
    );
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
