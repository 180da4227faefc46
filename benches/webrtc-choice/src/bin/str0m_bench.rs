//! str0m 0.25 as our gateway's WebRTC leg, on virtual time.
//!
//! * answerer ("gateway"): `RtcConfig::set_ice_lite(true)`, RTP mode, PCMU/0 + telephone-event/101,
//!   accepts an SDP offer, writes its own RTP packets with `StreamTx::write_rtp`, reads decrypted
//!   ones as `Event::RtpPacket`.
//! * offerer ("browser"): a normal full-ICE str0m `Rtc` with the same codecs.
//!
//! Both ends run in this thread; the "network" is two queues of datagrams. Output: one JSON line.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use webrtc_choice::{
    CpuMeter, PCMU_LEN, PTIME, Rng, answerer_addr, mean_us, offerer_addr, thread_cpu, thread_rusage,
};

const PT_PCMU: u8 = 0;
const PT_TEL: u8 = 101;

/// Print/check the SDP of the first call only once.
static SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Both ends use the same local codec config: PCMU (static PT 0) + telephone-event/8000 as PT 101,
/// RTP mode (we hand str0m finished RTP payloads + header fields, it does SRTP only).
fn config(ice_lite: bool) -> RtcConfig {
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .set_rtp_mode(true)
        .set_ice_lite(ice_lite);
    let codecs = cfg.codec_config();
    codecs.enable_pcmu(true, false);
    codecs.add_config(
        PT_TEL.into(),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::parse_line("0-16"),
    );
    cfg
}

/// One end of a call plus the queue of datagrams addressed to it.
struct Side {
    rtc: Rtc,
    addr: SocketAddr,
    /// Next time str0m wants `Input::Timeout`.
    next_timeout: Instant,
    /// Datagrams in flight *to* this side: (source, bytes).
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Our sending SSRC and RTP state.
    ssrc: Option<Ssrc>,
    seq: u64,
    ts: u32,
    rtp_rx: u64,
    connected: bool,
    disconnected_at: Option<Instant>,
    /// What told us the peer is gone (first such event).
    disconnect_signal: Option<String>,
    /// Garbage datagrams str0m refused with an Err from handle_input (not fatal).
    input_errors: u64,
}

impl Side {
    fn new(rtc: Rtc, addr: SocketAddr, now: Instant) -> Self {
        Side {
            rtc,
            addr,
            next_timeout: now,
            inbox: VecDeque::new(),
            ssrc: None,
            seq: 1,
            ts: 0,
            rtp_rx: 0,
            connected: false,
            disconnected_at: None,
            disconnect_signal: None,
            input_errors: 0,
        }
    }

    /// Drain `poll_output` until it hands back a timeout; transmits go to `out`.
    fn poll(&mut self, now: Instant, out: &mut VecDeque<(SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => out.push_back((t.source, t.contents.to_vec())),
                Ok(Output::Event(e)) => match e {
                    Event::RtpPacket(_) => self.rtp_rx += 1,
                    Event::Connected => self.connected = true,
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.disconnected_at.get_or_insert(now);
                        self.disconnect_signal.get_or_insert_with(|| {
                            "Event::IceConnectionStateChange(Disconnected)".into()
                        });
                    }
                    _ => {}
                },
                Err(e) => panic!("poll_output: {e:?}"),
            }
        }
    }

    /// One "turn" of this side at virtual time `now`: fire a due timeout, drain output (also
    /// picks up RTP written since the last turn), then feed every queued datagram, draining
    /// output after each input (as str0m's docs require).
    fn turn(&mut self, now: Instant, out: &mut VecDeque<(SocketAddr, Vec<u8>)>) {
        if now >= self.next_timeout {
            self.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        }
        self.poll(now, out);
        while let Some((source, bytes)) = self.inbox.pop_front() {
            self.feed(now, source, &bytes);
            self.poll(now, out);
        }
    }

    /// Feed one datagram exactly as a socket read would.
    fn feed(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        // `try_into` is str0m's demultiplexer (STUN/DTLS/RTP); unknown first bytes fail here.
        let Ok(contents) = bytes.try_into() else {
            self.input_errors += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.addr,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_err() {
            self.input_errors += 1;
        }
    }

    /// Write one 160-byte PCMU packet with our own header fields (our RTP session's job).
    fn send_pcmu(&mut self, now: Instant) {
        let Some(ssrc) = self.ssrc else { return };
        let payload = [0xffu8; PCMU_LEN];
        let mut api = self.rtc.direct_api();
        let stream = api.stream_tx(&ssrc).expect("stream_tx");
        stream.write_rtp(RtpWrite::new(
            PT_PCMU.into(),
            self.seq.into(),
            self.ts,
            now,
            &payload[..],
        ));
        self.seq += 1;
        self.ts = self.ts.wrapping_add(PCMU_LEN as u32);
    }
}

/// A call: offerer ("browser") + answerer ("gateway").
struct Call {
    off: Side,
    ans: Side,
}

impl Call {
    fn next_timeout(&self) -> Instant {
        self.off.next_timeout.min(self.ans.next_timeout)
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

/// Offer -> answer for call `i` at virtual time `now` (answerer work metered into `ans_meter`).
fn negotiate(i: usize, now: Instant, ans_meter: &mut CpuMeter) -> Call {
    let now = &now;

    // Browser side: full ICE, creates the offer.
    let mut off = config(false).build(*now);
    off.add_local_candidate(Candidate::host(offerer_addr(i), "udp").expect("cand"));
    let mut change = off.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("offer");
    let offer_sdp = offer.to_sdp_string(); // goes over signaling as text

    // Gateway side: ICE-lite answerer.
    let (ans, answer_sdp) = ans_meter.time(|| {
        let mut ans = config(true).build(*now);
        ans.add_local_candidate(Candidate::host(answerer_addr(i), "udp").expect("cand"));
        let offer = SdpOffer::from_sdp_string(&offer_sdp).expect("parse offer");
        let answer = ans.sdp_api().accept_offer(offer).expect("accept_offer");
        (ans, answer.to_sdp_string())
    });
    if i == 0 && !SHOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
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
        if std::env::var_os("SHOW_SDP").is_some() {
            eprintln!("--- str0m offer ---\n{offer_sdp}--- str0m answer ---\n{answer_sdp}");
        }
    }
    off.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer_sdp).expect("parse answer"),
        )
        .expect("accept_answer");

    let mut call = Call {
        off: Side::new(off, offerer_addr(i), *now),
        ans: Side::new(ans, answerer_addr(i), *now),
    };
    for side in [&mut call.off, &mut call.ans] {
        side.ssrc = side
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| s.ssrc());
        assert!(side.ssrc.is_some(), "no tx stream for mid {mid}");
    }

    call
}

/// Drive calls (ICE, DTLS, first RTP from the offerer) until every answerer has decrypted
/// its first RTP packet. All calls advance together so none sits idle on virtual time.
fn drive_until_media(
    calls: &mut [Call],
    start: Instant,
    now: &mut Instant,
    ans_meter: &mut CpuMeter,
) {
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
        let next = calls.iter().map(Call::next_timeout).min().expect("calls");
        *now = next.min(*now + PTIME).max(*now + Duration::from_millis(1));
        assert!(
            *now - start < Duration::from_secs(3600),
            "setup never completed"
        );
    }
}

/// Offer -> answer -> ICE -> DTLS -> first RTP decrypted by the answerer, for one call.
/// Returns the call and the answerer-only CPU it took.
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
    drop(config(true).build(now));
    let mut build = CpuMeter::default();
    for _ in 0..50 {
        let x = build.time(|| config(true).build(now));
        drop(x);
    }

    // ... of which: generating the self-signed ECDSA P-256 DTLS certificate (dimpl + rcgen).
    // A gateway can generate one at start-up and hand it to every call (RtcConfig::set_dtls_cert).
    let provider = str0m::crypto::from_feature_flags();
    let mut certgen = CpuMeter::default();
    for _ in 0..50 {
        let c = certgen.time(|| provider.dtls_provider.generate_certificate());
        assert!(c.is_some());
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

    // ---- 2. steady state: N established calls, 50 pps each way, 10 virtual seconds -----
    // All calls are negotiated at the same instant and brought up together, so that none of
    // them idles (and hits a consent/ICE timeout) while the others are set up.
    let mut scratch = CpuMeter::default();
    let mut calls: Vec<Call> = (0..n_calls)
        .map(|i| negotiate(i, now, &mut scratch))
        .collect();
    drive_until_media(&mut calls, start, &mut now, &mut scratch);
    // Let everything settle for a second (first RTCP, ICE keepalives), not metered.
    for _ in 0..50 {
        now += PTIME;
        exchange(&mut calls, now, &mut scratch);
    }
    let rx0: Vec<(u64, u64)> = calls.iter().map(|c| (c.off.rtp_rx, c.ans.rtp_rx)).collect();
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
    // one more quiet tick so the last packets land
    now += PTIME;
    exchange(&mut calls, now, &mut scratch);
    let (mut lost_to_ans, mut lost_to_off) = (0u64, 0u64);
    for (c, (o0, a0)) in calls.iter().zip(&rx0) {
        lost_to_ans += ticks.saturating_sub(c.ans.rtp_rx - a0);
        lost_to_off += ticks.saturating_sub(c.off.rtp_rx - o0);
    }
    let call_secs = (n_calls as u64 * secs) as f64;

    // ---- 3. garbage: 10k random datagrams into an established answerer ------------------
    let mut rng = Rng::new(0x1234_5678_9abc_def0);
    let g = &mut calls[0];
    let errs0 = g.ans.input_errors;
    let rx_before = (g.off.rtp_rx, g.ans.rtp_rx);
    let src = g.off.addr;
    let garbage = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sink = VecDeque::new();
        for _ in 0..10_000 {
            let d = rng.garbage(1500);
            g.ans.feed(now, src, &d);
            g.ans.poll(now, &mut sink);
        }
        g.off.inbox.extend(sink); // whatever it answered goes back to the browser
    }));
    let garbage_panicked = garbage.is_err();
    let mut survived = false;
    if !garbage_panicked {
        // Keep the call going for 2 s and see whether media still flows both ways.
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
            && g.ans.rtc.is_connected()
            && g.ans.disconnected_at.is_none();
    }
    let garbage_rejected = calls[0].ans.input_errors - errs0;

    // ---- 4. peer vanishes: how long until the ICE-lite answerer notices -----------------
    let d = &mut calls[1];
    let vanish_at = now;
    let mut t = now;
    while d.ans.disconnected_at.is_none() && t - vanish_at < Duration::from_secs(120) {
        t += PTIME;
        d.ans.send_pcmu(t); // we keep sending; the browser is gone
        d.off.inbox.clear();
        let ans = &mut d.ans;
        let mut sink = VecDeque::new();
        ans.turn(t, &mut sink);
    }
    let disconnect_ms = d
        .ans
        .disconnected_at
        .map(|x| (x - vanish_at).as_millis() as u64);

    let total_cpu = thread_cpu();
    println!(
        "{{\"lib\":\"str0m 0.25.0 (aws-lc-rs)\",\
\"answerer_construct_cpu_us\":{:.1},\"of_which_cert_gen_cpu_us\":{:.1},\"setup_calls\":{n_setup},\"setup_cpu_us_per_call_both_ends\":{:.1},\"setup_cpu_us_per_call_answerer\":{:.1},\
\"setup_wall_us_per_call\":{:.1},\"setup_virtual_ms_per_call\":{:.1},\
\"steady_calls\":{n_calls},\"steady_virtual_secs\":{secs},\"steady_answerer_cpu_us_per_call_second\":{:.2},\
\"steady_answerer_wall_us_per_call_second\":{:.2},\"pkts_per_side_per_call\":{ticks},\
\"lost_to_answerer\":{lost_to_ans},\"lost_to_offerer\":{lost_to_off},\
\"garbage_datagrams\":10000,\"garbage_panicked\":{garbage_panicked},\"garbage_rejected_with_err\":{garbage_rejected},\
\"garbage_call_survived\":{survived},\"disconnect_detected_after_ms\":{},\"disconnect_signal\":{:?},\"thread_cpu_s\":{:.2},\"thread_rusage_s\":{:.2}}}",
        mean_us(build.cpu, 50),
        mean_us(certgen.cpu, 50),
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
