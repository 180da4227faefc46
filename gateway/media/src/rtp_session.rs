//! One call's RTP/RTCP session, sans-IO: fed datagrams and time, it returns datagrams to send,
//! played-out frames and events. The gateway's `runtime::rtp_socket` and `runtime::media_engine`
//! drive it with sockets and a clock.
//!
//! - Packets are parsed and built with the `rtp-rs` crate (zero-copy reader, checked builder).
//! - Symmetric RTP (RFC 4961 practice): callers behind NAT send from an address other than the
//!   one in their SDP, so we send to where their media really comes from. We latch onto the source
//!   of the first valid packet with a negotiated payload type, and re-latch only after
//!   `relatch_after` consecutive valid packets from one new source, so stray or spoofed datagrams
//!   can neither divert nor interrupt the call. The address the SDP named is the exception: its
//!   packets take the stream back at once, so a stale stream still aimed at a reused port (or a
//!   spoofer) that got in first cannot keep the real caller out. Anything that is not RTP of a negotiated payload
//!   type is counted as discarded and dropped.
//! - Sending is paced at 20 ms by [`Output::Timeout`] / [`RtpSession::handle_timeout`]:
//!   each tick sends one packet (a queued DTMF event packet, else queued audio, else silence so the
//!   peer's NAT pinhole and its own latching stay open) and plays one frame out of the jitter buffer.
//! - RTCP (RFC 3550 §6.4) is written by hand: we need SR/RR with one report block, SDES CNAME and
//!   a parser that reads SR/RR report blocks out of compound packets; that is ~150 lines, while the
//!   RTCP crates (webrtc-rtcp, rtcp) bring their own buffer and error stacks for dozens of packet
//!   types we never see. The parser bounds-checks every length and never panics (fuzzed).
//! - Statistics follow RFC 3550 A.3 (expected/lost from the extended highest sequence number) and
//!   A.8 (interarrival jitter), plus late, duplicate and discarded counts.
//! - The media timeout (the call hangs up) fires once when no RTP has arrived for the configured
//!   time; it is suspended while the peer has us on hold.
//!
//! The jitter buffer places audio by RTP timestamp and telephone-event packets never enter it, so
//! the time they take in place of audio plays out as concealment/silence, which is what the peer
//! intended.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use super::dtmf::{OutgoingEvent, TelephoneEventReceiver, telephone_event_packets};
use super::g711::Codec;
use super::jitter::{JitterBuffer, JitterStats, PushOutcome, extend_seq};
use super::sdp::Negotiated;
use super::{FRAME_DURATION, FRAME_SAMPLES, Frame, MediaSettings};

/// Settings of one session.
#[derive(Debug, Clone)]
pub struct RtpConfig {
    /// The negotiated codec we send and decode.
    pub codec: Codec,
    /// Payload type of that codec on this stream.
    pub payload_type: u8,
    /// Payload type of RFC 4733 telephone-event, when negotiated.
    pub telephone_event: Option<u8>,
    /// Where the SDP says to send RTP (until latching finds better); `None` while unknown/on hold.
    pub remote: Option<SocketAddr>,
    /// Jitter buffer depth in 20 ms frames.
    pub jitter_frames: usize,
    /// Raise [`RtpEvent::MediaTimeout`] after this long without RTP or RTCP.
    pub media_timeout: Duration,
    /// Interval between our RTCP reports.
    pub rtcp_interval: Duration,
    /// Consecutive valid packets from a new source before re-latching to it.
    pub relatch_after: u32,
    /// Our synchronization source (random, RFC 3550 §8).
    pub ssrc: u32,
    /// Our first sequence number (random, RFC 3550 §5.1).
    pub initial_seq: u16,
    /// Our first RTP timestamp (random, RFC 3550 §5.1).
    pub initial_timestamp: u32,
    /// Send silence when nothing is queued (keeps NAT bindings and the peer's latching alive).
    pub send_silence: bool,
    /// The SDES CNAME our RTCP carries.
    pub cname: String,
}

impl RtpConfig {
    /// Settings for a negotiated stream, with random SSRC, sequence and timestamp (RFC 3550 §5.1)
    /// drawn from `rng`: the caller owns the randomness (the gateway passes the thread-local
    /// generator, tests and fuzzers a seeded one), so the session stays free of global state.
    pub fn new(
        settings: &MediaSettings,
        negotiated: &Negotiated,
        rng: &mut impl rand::Rng,
    ) -> Self {
        let ssrc = rng.random::<u32>();
        Self {
            codec: negotiated.codec,
            payload_type: negotiated.payload_type,
            telephone_event: negotiated.telephone_event,
            remote: negotiated.remote,
            jitter_frames: settings.jitter_frames(),
            media_timeout: settings.media_timeout,
            rtcp_interval: settings.rtcp_interval,
            relatch_after: settings.relatch_after.max(1),
            ssrc,
            initial_seq: rng.random(),
            initial_timestamp: rng.random(),
            send_silence: true,
            cname: format!("gateway-{ssrc:08x}@12345"),
        }
    }
}

/// Which socket a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The RTP port.
    Rtp,
    /// The RTCP port (the odd one above RTP).
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which of the call's sockets sends it.
    pub channel: Channel,
    /// Where it goes.
    pub destination: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// A report block of an SR or RR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (for the round trip).
    pub delay_since_last_sr: u32,
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP time the report was sent.
    pub ntp: u64,
    /// RTP timestamp matching that time.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// An SR or RR from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpReport {
    /// The reporter's SSRC.
    pub ssrc: u32,
    /// Present in an SR (the peer sends media).
    pub sender_info: Option<SenderInfo>,
    /// One block per source the peer receives.
    pub blocks: Vec<ReportBlock>,
}

/// What the session tells the call.
// Frames are nearly every event, so boxing them would only add an allocation per 20 ms.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RtpEvent {
    /// One 20 ms frame of caller audio at playout time; `received` is false for concealment.
    Frame {
        /// The audio.
        frame: Frame,
        /// Whether it came from a packet (false: concealment).
        received: bool,
    },
    /// An RFC 4733 digit (once per event).
    Digit {
        /// The digit.
        digit: char,
        /// RTP timestamp of the event (tells repeated presses apart).
        timestamp: u32,
    },
    /// We now send to this address (first latch or re-latch).
    Latched(SocketAddr),
    /// Nothing arrived for the media timeout: hang up.
    MediaTimeout,
    /// The peer's RTCP report, with the round-trip time when it reflects one of our SRs.
    Report {
        /// The report as received.
        report: RtcpReport,
        /// Round trip from its LSR/DLSR fields, when it reflects one of our SRs.
        round_trip: Option<Duration>,
    },
}

/// One thing the session asks of its driver, from [`RtpSession::poll_output`].
// Frames are nearly every event, so boxing them would only add an allocation per 20 ms.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell the call.
    Event(RtpEvent),
    /// Nothing else is pending: call [`RtpSession::handle_timeout`] at this instant, or earlier
    /// with new input. Always an instant: the 20 ms tick never stops.
    Timeout(Instant),
}

/// Counters for the call record and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtpStats {
    /// RTP packets accepted.
    pub packets_received: u64,
    /// Payload octets of those packets.
    pub octets_received: u64,
    /// RFC 3550 A.3: expected minus received (can be negative with duplicates).
    pub packets_lost: i64,
    /// Packets expected from the sequence numbers (RFC 3550 A.3).
    pub expected: u64,
    /// Interarrival jitter in timestamp units (RFC 3550 A.8).
    pub jitter: f64,
    /// Datagrams that were not RTP of a negotiated type, or came from a source we are not latched to.
    pub discarded: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames played out as concealment (nothing arrived in time).
    pub concealed: u64,
    /// RTP packets we sent.
    pub packets_sent: u64,
    /// Payload octets we sent.
    pub octets_sent: u64,
    /// Times symmetric RTP moved to a new source after the first latch.
    pub relatches: u64,
}

#[derive(Debug, Clone, Default)]
struct Reception {
    ssrc: Option<u32>,
    base: u64,
    max: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<f64>,
    jitter: f64,
}

/// The session.
#[derive(Debug)]
pub struct RtpSession {
    cfg: RtpConfig,
    decoded: Vec<i16>,
    start: Instant,
    start_wall: SystemTime,
    latched: Option<SocketAddr>,
    candidate: Option<(SocketAddr, u32)>,
    rtcp_remote: Option<SocketAddr>,
    seq: Seq,
    timestamp: u32,
    next_tick: Instant,
    next_rtcp: Instant,
    last_rx: Instant,
    timed_out: bool,
    on_hold: bool,
    sending: bool,
    marker_next: bool,
    out_audio: VecDeque<Vec<u8>>,
    out_events: VecDeque<OutgoingEvent>,
    event_timestamp: Option<u32>,
    jitter: JitterBuffer,
    events_rx: TelephoneEventReceiver,
    reception: Reception,
    stats: RtpStats,
    /// Middle 32 bits of the NTP time of the peer's last SR, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// What the inputs caused, in order, until [`RtpSession::poll_output`] hands it out. Its
    /// capacity is kept, so a session in its steady state does not allocate for it.
    out: VecDeque<Output>,
}

/// Most frames queued for sending (2 s); more is a caller bug and is dropped.
const MAX_QUEUED: usize = 100;
/// If the driver falls this far behind, skip ticks rather than burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn ntp_time(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

impl RtpSession {
    /// A session starting at `now`; `wall` is the wall-clock time at `now` (for RTCP's NTP times).
    pub fn new(cfg: RtpConfig, now: Instant, wall: SystemTime) -> Self {
        let rtcp_remote = cfg.remote.map(rtcp_of);
        let jitter = JitterBuffer::new(cfg.jitter_frames);
        Self {
            seq: Seq::from(cfg.initial_seq),
            timestamp: cfg.initial_timestamp,
            start: now,
            start_wall: wall,
            latched: None,
            candidate: None,
            rtcp_remote,
            next_tick: now,
            next_rtcp: now + cfg.rtcp_interval / 2,
            last_rx: now,
            timed_out: false,
            on_hold: cfg.remote.is_none(),
            sending: cfg.remote.is_some(),
            marker_next: true,
            out_audio: VecDeque::new(),
            out_events: VecDeque::new(),
            event_timestamp: None,
            jitter,
            events_rx: TelephoneEventReceiver::default(),
            decoded: Vec::with_capacity(crate::FRAME_SAMPLES * 2),
            reception: Reception::default(),
            stats: RtpStats::default(),
            last_sr: None,
            out: VecDeque::new(),
            cfg,
        }
    }

    /// Begin the 20 ms clock at `at` instead of at creation. Only before the first tick:
    /// once the session has ticked (or its clock was moved) this does nothing, so the stream's
    /// timing never jumps. A driver that paces many sessions from one timer puts every
    /// session's ticks on a shared grid this way, so sessions due together share one wakeup.
    pub fn start_ticks_at(&mut self, at: Instant) {
        if self.next_tick == self.start {
            self.next_tick = at;
        }
    }

    /// Our SSRC (for the call record and RTCP).
    pub fn ssrc(&self) -> u32 {
        self.cfg.ssrc
    }

    /// The codec this session sends and decodes.
    pub fn codec(&self) -> Codec {
        self.cfg.codec
    }

    /// Where RTP goes now: the latched source, else the signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.cfg.remote)
    }

    /// Where the SDP says the peer's RTP comes from and goes to (`None` while unknown).
    pub fn signalled(&self) -> Option<SocketAddr> {
        self.cfg.remote
    }

    /// The source symmetric RTP latched onto, if any yet.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Counters so far, with the jitter buffer's late, duplicate and concealed counts.
    pub fn stats(&self) -> RtpStats {
        let mut s = self.stats;
        let j: JitterStats = self.jitter.stats();
        s.late = j.late;
        s.duplicates = j.duplicate;
        s.concealed = j.concealed;
        s.jitter = self.reception.jitter;
        if self.reception.ssrc.is_some() {
            s.expected = self.reception.max - self.reception.base + 1;
        }
        s.packets_lost = s.expected as i64 - self.reception.received as i64;
        s
    }

    /// A re-INVITE changed the stream (codec, address, hold).
    pub fn update(&mut self, n: &Negotiated) {
        self.cfg.codec = n.codec;
        self.cfg.payload_type = n.payload_type;
        self.cfg.telephone_event = n.telephone_event;
        if n.remote != self.cfg.remote {
            self.cfg.remote = n.remote;
            self.latched = None;
            self.candidate = None;
            self.rtcp_remote = n.remote.map(rtcp_of);
        }
        self.on_hold = n.on_hold();
        self.sending = n.should_send();
    }

    /// Queue one frame of PCM to send.
    pub fn send_frame(&mut self, frame: &Frame) {
        let mut payload = Vec::with_capacity(FRAME_SAMPLES);
        self.cfg.codec.encode(frame, &mut payload);
        self.send_payload(payload);
    }

    /// Queue one already encoded payload (prompt frames are encoded once, in the session's codec).
    pub fn send_payload(&mut self, payload: Vec<u8>) {
        if self.out_audio.len() >= MAX_QUEUED {
            tracing::debug!("RTP send queue full: frame dropped");
            return;
        }
        self.out_audio.push_back(payload);
    }

    /// Frames waiting to be sent.
    pub fn queued(&self) -> usize {
        self.out_audio.len()
    }

    /// Drop queued audio (barge-in: the prompt stops on the next tick).
    pub fn clear_queued(&mut self) {
        self.out_audio.clear();
    }

    /// Send a digit as RFC 4733; false when the peer did not negotiate telephone-event.
    pub fn send_digit(&mut self, digit: char, duration: Duration) -> bool {
        if self.cfg.telephone_event.is_none() {
            return false;
        }
        let packets = telephone_event_packets(digit, duration, 10);
        if packets.is_empty() {
            return false;
        }
        self.out_events.extend(packets);
        true
    }

    /// The next thing to do: what the inputs so far caused, in order, and once that is all
    /// handed out, [`Output::Timeout`] with the next instant [`Self::handle_timeout`] is due.
    /// Drain it after every input until it says `Timeout` (see the crate doc's poll
    /// convention).
    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.next_deadline()),
        }
    }

    /// The next 20 ms tick, RTCP report or media timeout, whichever comes first.
    fn next_deadline(&self) -> Instant {
        let mut t = self.next_tick.min(self.next_rtcp);
        if !self.timed_out && !self.on_hold {
            t = t.min(self.last_rx + self.cfg.media_timeout);
        }
        t
    }

    /// How many 20 ms ticks [`RtpSession::handle_timeout`] will play at `now` (after skipping,
    /// if it is that far behind). A driver that keeps only a few frames of a prompt queued tops
    /// up this many more first: a wake-up 60 ms late plays three frames at once, and with two
    /// queued the third would be silence in the middle of the prompt.
    pub fn ticks_due(&self, now: Instant) -> usize {
        let next = self.next_tick + FRAME_DURATION * self.ticks_skipped(now);
        match now.checked_duration_since(next) {
            Some(late) => (late.as_nanos() / FRAME_DURATION.as_nanos()) as usize + 1,
            None => 0,
        }
    }

    /// Ticks a driver this far behind skips rather than bursts ([`MAX_CATCH_UP`]); 0 if none.
    fn ticks_skipped(&self, now: Instant) -> u32 {
        if now > self.next_tick + MAX_CATCH_UP {
            ((now - self.next_tick).as_millis() / 20) as u32
        } else {
            0
        }
    }

    /// Advance time: send due packets, play out due frames, RTCP, media timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let skipped = self.ticks_skipped(now);
        if skipped > 0 {
            tracing::debug!(skipped, "RTP ticks skipped");
            self.timestamp = self
                .timestamp
                .wrapping_add(skipped.wrapping_mul(FRAME_SAMPLES as u32));
            self.next_tick += FRAME_DURATION * skipped;
        }
        while now >= self.next_tick {
            self.tick();
            self.next_tick += FRAME_DURATION;
        }
        if now >= self.next_rtcp {
            self.send_rtcp(now);
            self.next_rtcp = now + self.cfg.rtcp_interval;
        }
        if !self.timed_out && !self.on_hold && now >= self.last_rx + self.cfg.media_timeout {
            self.timed_out = true;
            tracing::info!(timeout = ?self.cfg.media_timeout, "no media from the caller");
            self.event(RtpEvent::MediaTimeout);
        }
    }

    fn event(&mut self, e: RtpEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn transmit(&mut self, t: Transmit) {
        self.out.push_back(Output::Transmit(t));
    }

    fn tick(&mut self) {
        // Sending.
        if let Some(ev) = self.out_events.pop_front() {
            let ts = *self.event_timestamp.get_or_insert(self.timestamp);
            if let Some(pt) = self.cfg.telephone_event {
                self.send_rtp(pt, ev.marker, ts, &ev.payload);
            }
            if self.out_events.front().is_none_or(|e| e.marker) {
                self.event_timestamp = None;
                self.marker_next = true;
            }
        } else if let Some(payload) = self.out_audio.pop_front() {
            let marker = std::mem::take(&mut self.marker_next);
            self.send_rtp(self.cfg.payload_type, marker, self.timestamp, &payload);
        } else if self.cfg.send_silence {
            let payload = vec![self.cfg.codec.silence_code(); FRAME_SAMPLES];
            let marker = std::mem::take(&mut self.marker_next);
            self.send_rtp(self.cfg.payload_type, marker, self.timestamp, &payload);
        }
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        // Playout.
        if let Some(p) = self.jitter.pop() {
            self.event(RtpEvent::Frame {
                frame: p.frame,
                received: p.received,
            });
        }
    }

    fn send_rtp(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let Some(destination) = self.destination() else {
            return;
        };
        if !self.sending {
            return;
        }
        let built = RtpPacketBuilder::new()
            .payload_type(pt)
            .marked(marker)
            .sequence(self.seq)
            .ssrc(self.cfg.ssrc)
            .timestamp(ts)
            .payload(payload)
            .build();
        match built {
            Ok(data) => {
                self.seq = self.seq.next();
                self.stats.packets_sent += 1;
                self.stats.octets_sent += payload.len() as u64;
                self.transmit(Transmit {
                    channel: Channel::Rtp,
                    destination,
                    data,
                });
            }
            Err(e) => tracing::warn!(?e, "cannot build an RTP packet"),
        }
    }

    /// An RTP datagram arrived on our RTP port.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(packet) = RtpReader::new(data) else {
            self.stats.discarded += 1;
            return;
        };
        let pt = packet.payload_type();
        let is_audio = pt == self.cfg.payload_type;
        let is_event = Some(pt) == self.cfg.telephone_event;
        if !is_audio && !is_event {
            self.stats.discarded += 1;
            return;
        }
        if !self.accept_source(from) {
            self.stats.discarded += 1;
            return;
        }
        self.last_rx = now;
        if self.timed_out {
            self.timed_out = false;
        }
        let seq = u16::from(packet.sequence_number());
        self.count_reception(packet.ssrc(), seq, data.len());
        let payload = packet.payload();
        if is_event {
            if let Some(digit) = self.events_rx.on_packet(packet.timestamp(), payload) {
                self.event(RtpEvent::Digit {
                    digit,
                    timestamp: packet.timestamp(),
                });
            }
            return;
        }
        // Interarrival jitter (RFC 3550 A.8), in timestamp units.
        let arrival = now.saturating_duration_since(self.start).as_secs_f64() * 8000.0;
        let transit = arrival - f64::from(packet.timestamp());
        if let Some(prev) = self.reception.transit {
            let mut d = (transit - prev).abs();
            // Timestamps wrap at 2^32; a wrap shows as a huge step.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.reception.jitter += (d - self.reception.jitter) / 16.0;
        }
        self.reception.transit = Some(transit);

        // One decode buffer per session: no allocation per packet.
        self.decoded.clear();
        self.cfg.codec.decode(payload, &mut self.decoded);
        if self.jitter.push(packet.timestamp(), &self.decoded) == PushOutcome::Resynchronised {
            tracing::debug!("jitter buffer resynchronised");
        }
    }

    /// Symmetric RTP latching; true when packets from `from` are to be used.
    fn accept_source(&mut self, from: SocketAddr) -> bool {
        match self.latched {
            None => {
                self.latch(from);
                true
            }
            Some(l) if l == from => {
                self.candidate = None;
                true
            }
            // The address the peer signalled is its own: it wins back the stream at once from
            // whatever was latched first (a stream still aimed at this port from its previous
            // call, or a spoofer). Packets from there only arrive when it is reachable, so NATed
            // callers, whose SDP names a private address, are latched as before.
            Some(_) if self.cfg.remote == Some(from) => {
                self.stats.relatches += 1;
                self.latch(from);
                true
            }
            Some(_) => {
                let count = match self.candidate {
                    Some((c, n)) if c == from => n + 1,
                    _ => 1,
                };
                self.candidate = Some((from, count));
                if count >= self.cfg.relatch_after {
                    self.stats.relatches += 1;
                    self.latch(from);
                    true
                } else {
                    false
                }
            }
        }
    }

    fn latch(&mut self, from: SocketAddr) {
        tracing::debug!(%from, "RTP latched");
        self.latched = Some(from);
        self.candidate = None;
        self.rtcp_remote = Some(rtcp_of(from));
        self.event(RtpEvent::Latched(from));
    }

    fn count_reception(&mut self, ssrc: u32, seq: u16, len: usize) {
        let r = &mut self.reception;
        if r.ssrc != Some(ssrc) {
            // New stream (first packet, or the peer restarted): start the sequence accounting
            // afresh, keeping the totals of the previous one in `stats`.
            let base = (1u64 << 32) | u64::from(seq);
            *r = Reception {
                ssrc: Some(ssrc),
                base,
                max: base,
                received: 0,
                expected_prior: 0,
                received_prior: 0,
                transit: None,
                jitter: r.jitter,
            };
        }
        let ext = extend_seq(r.max, seq);
        if ext > r.max {
            r.max = ext;
        }
        if ext < r.base {
            r.base = ext;
        }
        r.received += 1;
        self.stats.packets_received += 1;
        self.stats.octets_received += len as u64;
    }

    /// An RTCP datagram arrived on our RTCP port (or muxed on the RTP port).
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(reports) = parse_rtcp(data) else {
            self.stats.discarded += 1;
            return;
        };
        if self.latched.is_some_and(|l| l.ip() == from.ip()) || self.latched.is_none() {
            self.rtcp_remote = Some(from);
        }
        for report in reports {
            if let Some(si) = report.sender_info {
                self.last_sr = Some((middle32(si.ntp), now));
            }
            let round_trip = report
                .blocks
                .iter()
                .find(|b| b.ssrc == self.cfg.ssrc && b.last_sr != 0)
                .and_then(|b| {
                    let now_mid = middle32(ntp_time(self.wall(now)));
                    let rtt = now_mid
                        .wrapping_sub(b.last_sr)
                        .wrapping_sub(b.delay_since_last_sr);
                    // Units of 1/65536 s; ignore nonsense (more than a minute).
                    (rtt < 60 << 16)
                        .then(|| Duration::from_micros(u64::from(rtt) * 1_000_000 / 65536))
                });
            self.event(RtpEvent::Report { report, round_trip });
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.start_wall + now.saturating_duration_since(self.start)
    }

    fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let stats = self.stats();
        let r = &mut self.reception;
        let ssrc = r.ssrc?;
        let expected = r.max - r.base + 1;
        let expected_interval = expected - r.expected_prior.min(expected);
        let received_interval = r.received - r.received_prior.min(r.received);
        r.expected_prior = expected;
        r.received_prior = r.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((mid, at)) => {
                let d = now.saturating_duration_since(at);
                (mid, (d.as_micros() * 65536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: stats.packets_lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq: (r.max - (1 << 32)) as u32,
            jitter: stats.jitter as u32,
            last_sr,
            delay_since_last_sr,
        })
    }

    fn send_rtcp(&mut self, now: Instant) {
        let Some(destination) = self.rtcp_remote else {
            return;
        };
        let block = self.report_block(now);
        let sender = (self.stats.packets_sent > 0).then(|| SenderInfo {
            ntp: ntp_time(self.wall(now)),
            rtp_timestamp: self.timestamp,
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.octets_sent as u32,
        });
        let data = build_rtcp(self.cfg.ssrc, sender, block, &self.cfg.cname);
        self.transmit(Transmit {
            channel: Channel::Rtcp,
            destination,
            data,
        });
    }
}

/// The RTCP address paired with an RTP address (RFC 3550 §11: the next port).
fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().saturating_add(1))
}

/// A compound RTCP packet: SR (or RR) with at most one report block, then SDES CNAME.
pub(crate) fn build_rtcp(
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(100);
    let rc = u8::from(block.is_some());
    let (pt, words) = match sender {
        Some(_) => (200u8, 6 + 6 * u16::from(rc)),
        None => (201u8, 1 + 6 * u16::from(rc)),
    };
    out.push(0x80 | rc);
    out.push(pt);
    out.extend_from_slice(&words.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packet_count.to_be_bytes());
        out.extend_from_slice(&s.octet_count.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    // SDES with one chunk: SSRC, CNAME item, end, padding to 32 bits.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let mut chunk = Vec::with_capacity(8 + name.len());
    chunk.extend_from_slice(&ssrc.to_be_bytes());
    chunk.push(1);
    chunk.push(name.len() as u8);
    chunk.extend_from_slice(name);
    chunk.push(0);
    while chunk.len() % 4 != 0 {
        chunk.push(0);
    }
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((chunk.len() / 4) as u16).to_be_bytes());
    out.extend_from_slice(&chunk);
    out
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(s))
}

/// Parse a compound RTCP packet into its SR/RR reports. `None` when it is not RTCP at all
/// (bad version, lengths that do not add up, or no packet of a known type).
pub fn parse_rtcp(data: &[u8]) -> Option<Vec<RtcpReport>> {
    let mut reports = Vec::new();
    let mut at = 0usize;
    let mut any = false;
    while at < data.len() {
        let header = data.get(at..at + 4)?;
        if header[0] >> 6 != 2 {
            return None;
        }
        let count = usize::from(header[0] & 0x1F);
        let pt = header[1];
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = data.get(at..at + len)?;
        at += len;
        if !(192..=223).contains(&pt) {
            return None;
        }
        any = true;
        let (sender_info, blocks_at) = match pt {
            200 => {
                let ntp_hi = be32(packet, 8)?;
                let ntp_lo = be32(packet, 12)?;
                (
                    Some(SenderInfo {
                        ntp: (u64::from(ntp_hi) << 32) | u64::from(ntp_lo),
                        rtp_timestamp: be32(packet, 16)?,
                        packet_count: be32(packet, 20)?,
                        octet_count: be32(packet, 24)?,
                    }),
                    28,
                )
            }
            201 => (None, 8),
            _ => continue,
        };
        let ssrc = be32(packet, 4)?;
        let mut blocks = Vec::with_capacity(count);
        for i in 0..count {
            let o = blocks_at + i * 24;
            let lost = be32(packet, o + 4)?;
            // 24-bit signed cumulative loss.
            let cumulative = ((lost & 0x00FF_FFFF) << 8) as i32 >> 8;
            blocks.push(ReportBlock {
                ssrc: be32(packet, o)?,
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: cumulative,
                highest_seq: be32(packet, o + 8)?,
                jitter: be32(packet, o + 12)?,
                last_sr: be32(packet, o + 16)?,
                delay_since_last_sr: be32(packet, o + 20)?,
            });
        }
        reports.push(RtcpReport {
            ssrc,
            sender_info,
            blocks,
        });
    }
    any.then_some(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

    fn negotiated(remote: &str) -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote: Some(remote.parse().expect("addr")),
            ptime: Some(20),
            remote_direction: Direction::SendRecv,
            local_direction: Direction::SendRecv,
            media_index: 0,
        }
    }

    fn session(now: Instant) -> RtpSession {
        let mut cfg = RtpConfig::new(
            &MediaSettings::default(),
            &negotiated("10.0.0.1:40000"),
            &mut rand::rng(),
        );
        cfg.ssrc = 0x1234_5678;
        cfg.initial_seq = 65530;
        cfg.initial_timestamp = u32::MAX - 400;
        cfg.jitter_frames = 2;
        cfg.media_timeout = Duration::from_secs(2);
        RtpSession::new(cfg, now, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(pt)
            .sequence(Seq::from(seq))
            .timestamp(ts)
            .ssrc(ssrc)
            .payload(payload)
            .build()
            .expect("build")
    }

    /// Everything the session hands out, and the instant it asks to be woken at.
    fn drain_until_timeout(s: &mut RtpSession) -> (Vec<Transmit>, Vec<RtpEvent>, Instant) {
        let (mut t, mut e) = (Vec::new(), Vec::new());
        loop {
            match s.poll_output() {
                Output::Transmit(x) => t.push(x),
                Output::Event(x) => e.push(x),
                Output::Timeout(at) => return (t, e, at),
            }
        }
    }

    fn drain(s: &mut RtpSession) -> (Vec<Transmit>, Vec<RtpEvent>) {
        let (t, e, _) = drain_until_timeout(s);
        (t, e)
    }

    #[test]
    fn paces_one_packet_per_20ms_with_wrapping_seq_and_timestamp() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.send_frame(&[1000; FRAME_SAMPLES]);
        let mut tx = Vec::new();
        for i in 0..10u32 {
            let now = t0 + FRAME_DURATION * i;
            let (sent, _, due) = drain_until_timeout(&mut s);
            assert!(due <= now);
            tx.extend(sent);
            s.handle_timeout(now);
        }
        let (sent, _, due) = drain_until_timeout(&mut s);
        tx.extend(sent);
        let rtp: Vec<_> = tx.iter().filter(|t| t.channel == Channel::Rtp).collect();
        assert_eq!(rtp.len(), 10);
        let seqs: Vec<u16> = rtp
            .iter()
            .map(|t| u16::from(RtpReader::new(&t.data).expect("rtp").sequence_number()))
            .collect();
        assert_eq!(
            seqs,
            vec![65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3]
        );
        let first = RtpReader::new(&rtp[0].data).expect("rtp");
        assert!(first.mark());
        assert_eq!(first.payload()[0], Codec::Pcmu.encode_sample(1000));
        let second = RtpReader::new(&rtp[1].data).expect("rtp");
        assert!(!second.mark());
        assert_eq!(second.payload(), &[0xFF; 160][..], "silence when idle");
        assert_eq!(
            second.timestamp(),
            first.timestamp().wrapping_add(160),
            "timestamp advances 160"
        );
        assert_eq!(
            RtpReader::new(&rtp[3].data).expect("rtp").timestamp(),
            (u32::MAX - 400).wrapping_add(480)
        );
        assert_eq!(rtp[0].destination, "10.0.0.1:40000".parse().expect("addr"));
        assert!(due > t0 + FRAME_DURATION * 9);
    }

    #[test]
    fn the_clock_moves_to_a_later_start_once_and_never_after_it_ticked() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let start = t0 + Duration::from_millis(3);
        s.start_ticks_at(start);
        let (sent, _, due) = drain_until_timeout(&mut s);
        assert!(sent.is_empty());
        assert_eq!(due, start, "the first tick is at the new start");
        // Asked again: the clock stays where it was put.
        s.start_ticks_at(t0 + Duration::from_millis(4));
        assert_eq!(drain_until_timeout(&mut s).2, start);
        s.handle_timeout(t0 + Duration::from_millis(2));
        assert!(drain(&mut s).0.is_empty(), "nothing before the new start");
        s.handle_timeout(start);
        let (sent, _, due) = drain_until_timeout(&mut s);
        assert_eq!(sent.len(), 1);
        assert_eq!(due, start + FRAME_DURATION);
        // After the first tick the clock does not move.
        s.start_ticks_at(t0 + Duration::from_millis(50));
        assert_eq!(drain_until_timeout(&mut s).2, start + FRAME_DURATION);
    }

    #[test]
    fn the_signalled_address_takes_the_stream_back_from_a_source_latched_first() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let signalled: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        let stale: SocketAddr = "10.0.0.7:30000".parse().expect("addr");
        // A stream still aimed at this port (its previous call's caller) gets in first, with the
        // end of a key press.
        let end_of_7 = [7u8, 0x80 | 10, 0x03, 0x20];
        s.handle_rtp(t0, stale, &packet(101, 500, 8000, 5, &end_of_7));
        s.handle_rtp(t0, stale, &packet(0, 501, 8800, 5, &[0xFF; 160]));
        assert_eq!(s.destination(), Some(stale));
        // The caller the SDP names starts sending: it has the stream from its first packet on,
        // interleaved with the stale stream, which is then dropped.
        for i in 0..20u16 {
            s.handle_rtp(
                t0,
                signalled,
                &packet(0, 1000 + i, 160 * u32::from(i), 7, &[0xFF; 160]),
            );
            assert_eq!(s.destination(), Some(signalled));
            s.handle_rtp(t0, stale, &packet(0, 502 + i, 8960, 5, &[0xFF; 160]));
            assert_eq!(s.destination(), Some(signalled), "stale packet {i}");
        }
        let st = s.stats();
        assert_eq!(st.relatches, 1);
        assert_eq!(st.discarded, 20);
        assert_eq!(st.packets_received, 2 + 20);
    }

    #[test]
    fn latches_to_the_real_source_and_resists_strays() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let nat: SocketAddr = "203.0.113.9:5555".parse().expect("addr");
        let stray: SocketAddr = "198.51.100.1:6666".parse().expect("addr");
        // Garbage first: not latched.
        s.handle_rtp(t0, stray, b"hello");
        s.handle_rtp(t0, stray, &packet(96, 1, 0, 9, &[0; 160]));
        assert_eq!(
            s.destination(),
            Some("10.0.0.1:40000".parse().expect("addr"))
        );
        s.handle_rtp(t0, nat, &packet(0, 1, 0, 7, &[0xFF; 160]));
        assert_eq!(s.destination(), Some(nat));
        // A few stray packets with the right payload type do not steal the stream.
        for i in 0..4 {
            s.handle_rtp(t0, stray, &packet(0, 100 + i, 0, 9, &[0xFF; 160]));
        }
        assert_eq!(s.destination(), Some(nat));
        // Interleaved packets from the latched source reset the candidate run.
        s.handle_rtp(t0, nat, &packet(0, 2, 160, 7, &[0xFF; 160]));
        s.handle_rtp(t0, stray, &packet(0, 104, 0, 9, &[0xFF; 160]));
        assert_eq!(s.destination(), Some(nat));
        // A sustained run from a new source (the caller's NAT rebinding) re-latches.
        for i in 0..5 {
            s.handle_rtp(t0, stray, &packet(0, 200 + i, 0, 9, &[0xFF; 160]));
        }
        assert_eq!(s.destination(), Some(stray));
        let st = s.stats();
        assert_eq!(st.relatches, 1);
        assert_eq!(st.discarded, 2 + 4 + 1 + 3);
        let (_, events) = drain(&mut s);
        let latches: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, RtpEvent::Latched(_)))
            .collect();
        assert_eq!(latches.len(), 2);
    }

    #[test]
    fn plays_out_reordered_audio_and_counts_loss() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let from: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        // Seq 65534.. 5 with 2 lost (65535 and 3) and 1 and 0 swapped.
        let order = [65534u16, 1, 0, 2, 4, 5];
        for (i, &seq) in order.iter().enumerate() {
            let ts = u32::from(seq.wrapping_sub(65534)) * 160;
            let payload = vec![Codec::Pcmu.encode_sample(100 * (i as i16 + 1)); 160];
            let now = t0 + FRAME_DURATION * i as u32;
            s.handle_rtp(now, from, &packet(0, seq, ts, 7, &payload));
            s.handle_timeout(now);
        }
        for i in 6..12u32 {
            s.handle_timeout(t0 + FRAME_DURATION * i);
        }
        let (_, events) = drain(&mut s);
        let frames: Vec<bool> = events
            .iter()
            .filter_map(|e| match e {
                RtpEvent::Frame { received, .. } => Some(*received),
                _ => None,
            })
            .collect();
        // 65534 ok, 65535 lost, 0 ok, 1 ok, 2 ok, 3 lost, 4, 5, then concealment.
        assert_eq!(
            &frames[..8],
            &[true, false, true, true, true, false, true, true]
        );
        let st = s.stats();
        assert_eq!(st.packets_received, 6);
        assert_eq!(st.expected, 8);
        assert_eq!(st.packets_lost, 2);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let from: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        // Perfectly paced packets: zero jitter.
        for i in 0..50u32 {
            let now = t0 + FRAME_DURATION * i;
            s.handle_rtp(now, from, &packet(0, i as u16, i * 160, 7, &[0xFF; 160]));
        }
        assert!(s.stats().jitter < 1e-6, "{}", s.stats().jitter);
        // Alternating 10 ms early/late: jitter converges towards 80 samples (|D| = 160).
        for i in 50..400u32 {
            let skew = if i % 2 == 0 { 10 } else { 0 };
            let now = t0 + FRAME_DURATION * i + Duration::from_millis(skew);
            s.handle_rtp(now, from, &packet(0, i as u16, i * 160, 7, &[0xFF; 160]));
        }
        let j = s.stats().jitter;
        assert!((j - 80.0).abs() < 5.0, "{j}");
    }

    #[test]
    fn rfc4733_digits_once_and_outgoing_events() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let from: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        let packets = telephone_event_packets('#', Duration::from_millis(100), 10);
        for (i, p) in packets.iter().enumerate() {
            s.handle_rtp(t0, from, &packet(101, i as u16, 8000, 7, &p.payload));
        }
        let (_, events) = drain(&mut s);
        let digits: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                RtpEvent::Digit { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec!['#']);

        assert!(s.send_digit('7', Duration::from_millis(60)));
        assert!(!s.send_digit('x', Duration::from_millis(60)));
        for i in 0..8u32 {
            s.handle_timeout(t0 + FRAME_DURATION * i);
        }
        let (tx, _) = drain(&mut s);
        let rtp: Vec<_> = tx
            .iter()
            .filter(|t| t.channel == Channel::Rtp)
            .map(|t| RtpReader::new(&t.data).expect("rtp"))
            .collect();
        let ev: Vec<_> = rtp.iter().filter(|r| r.payload_type() == 101).collect();
        assert_eq!(ev.len(), 2 + 3);
        assert!(ev[0].mark());
        assert!(ev.iter().all(|r| r.timestamp() == ev[0].timestamp()));
        // Audio resumes after the event with the marker set and a later timestamp.
        let after = &rtp[5];
        assert_eq!(after.payload_type(), 0);
        assert!(after.mark());
        assert_eq!(after.timestamp(), ev[0].timestamp().wrapping_add(5 * 160));
    }

    #[test]
    fn media_timeout_fires_once_and_not_on_hold() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let from: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        s.handle_rtp(t0, from, &packet(0, 1, 0, 7, &[0xFF; 160]));
        let mut timeouts = 0;
        let mut now = t0;
        let (_, _, mut due) = drain_until_timeout(&mut s);
        while now < t0 + Duration::from_secs(5) {
            now = due.max(now + Duration::from_millis(1));
            s.handle_timeout(now);
            let ev;
            (_, ev, due) = drain_until_timeout(&mut s);
            timeouts += ev.iter().filter(|e| **e == RtpEvent::MediaTimeout).count();
            if timeouts == 1 && now < t0 + Duration::from_millis(1990) {
                panic!("timed out early at {:?}", now - t0);
            }
        }
        assert_eq!(timeouts, 1);

        // On hold (sendonly from the peer): no timeout, and we stop sending.
        let mut s = session(t0);
        let mut held = negotiated("10.0.0.1:40000");
        held.remote_direction = Direction::SendOnly;
        held.local_direction = Direction::RecvOnly;
        s.update(&held);
        for i in 0..300u32 {
            s.handle_timeout(t0 + FRAME_DURATION * i);
        }
        let (tx, ev) = drain(&mut s);
        assert!(!ev.contains(&RtpEvent::MediaTimeout));
        assert!(tx.iter().all(|t| t.channel == Channel::Rtcp));
    }

    #[test]
    fn rtcp_reports_round_trip() {
        let t0 = Instant::now();
        let mut a = session(t0);
        let from: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        for i in 0..10u16 {
            if i != 4 {
                a.handle_rtp(
                    t0,
                    from,
                    &packet(0, 100 + i, u32::from(i) * 160, 77, &[0xFF; 160]),
                );
            }
            a.handle_timeout(t0 + FRAME_DURATION * u32::from(i));
        }
        a.handle_timeout(t0 + Duration::from_secs(3));
        let (tx, _) = drain(&mut a);
        let rtcp: Vec<_> = tx.iter().filter(|t| t.channel == Channel::Rtcp).collect();
        assert_eq!(rtcp.len(), 1);
        assert_eq!(rtcp[0].destination, "10.0.0.1:40001".parse().expect("addr"));
        let reports = parse_rtcp(&rtcp[0].data).expect("rtcp");
        assert_eq!(reports.len(), 1);
        let sr = &reports[0];
        assert_eq!(sr.ssrc, 0x1234_5678);
        assert!(sr.sender_info.is_some());
        let block = sr.blocks[0];
        assert_eq!(block.ssrc, 77);
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.fraction_lost, 25); // 1 of 10 = 25.6/256
        assert_eq!(block.highest_seq, 109);

        // The peer answers with an RR reflecting our SR 100 ms later, having held it 40 ms.
        let si = sr.sender_info.expect("sr");
        let rr = build_rtcp(
            77,
            None,
            Some(ReportBlock {
                ssrc: 0x1234_5678,
                fraction_lost: 0,
                cumulative_lost: -1,
                highest_seq: 5,
                jitter: 3,
                last_sr: middle32(si.ntp),
                delay_since_last_sr: 65536 * 40 / 1000,
            }),
            "peer",
        );
        a.handle_rtcp(
            t0 + Duration::from_millis(3100),
            "10.0.0.1:40001".parse().expect("a"),
            &rr,
        );
        let (_, ev) = drain(&mut a);
        let Some(RtpEvent::Report { report, round_trip }) = ev.first() else {
            panic!("no report: {ev:?}");
        };
        assert_eq!(report.blocks[0].cumulative_lost, -1);
        let rtt = round_trip.expect("rtt").as_millis();
        assert!((59..=61).contains(&rtt), "{rtt}");
    }

    #[test]
    fn rtcp_parser_rejects_garbage() {
        assert_eq!(parse_rtcp(&[]), None);
        assert_eq!(parse_rtcp(&[0x80, 200, 0, 50]), None);
        assert_eq!(parse_rtcp(&[0x40, 200, 0, 0]), None);
        assert_eq!(parse_rtcp(&[0x80, 100, 0, 0]), None);
        // RR claiming 3 blocks with room for none.
        assert_eq!(parse_rtcp(&[0x83, 201, 0, 1, 0, 0, 0, 1]), None);
        let ok = build_rtcp(1, None, None, "x");
        assert_eq!(parse_rtcp(&ok).map(|r| r.len()), Some(1));
    }
}
