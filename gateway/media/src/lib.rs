//! # media: the sans-IO media core of the 12345 gateway's calls
//!
//! SDP offer/answer, RTP/RTCP sessions, G.711, the jitter buffer, DTMF (RFC 4733, in-band and
//! their merging), prompt frames decoded from WAV bytes, and the 16 kHz feed for speech
//! recognition. Everything here is sans-IO (in the style of str0m): state machines fed with
//! datagrams and the current time, handing back datagrams to send, frames and events. No socket,
//! file, clock or global random generator is touched outside tests (`tests/no_io.rs` holds the
//! crate to that), so every timing rule (20 ms pacing, RTCP intervals, the media timeout,
//! jitter-buffer playout) is tested deterministically by moving time by hand, and the crate builds
//! without an async runtime. The I/O around it (one call's RTP/RTCP port pair, the pacer threads
//! that drive every call's session from one clock, prompt files and their cache, recordings) is in
//! the gateway's `runtime` module.
//!
//! ## The poll convention
//!
//! Every sans-IO core of the gateway (`sip::Endpoint`, `media::rtp_session::RtpSession` and the
//! gateway's `call::core::CallCore`) is driven the same way, as str0m's `Rtc` is:
//!
//! 1. **Input.** Tell the core what happened, with the current time: `handle_*(now, input)` for a
//!    datagram, a command or an event, and `handle_timeout(now)` once the instant it asked for has
//!    come. Inputs hand out no output: they return `()`, a `Result` when the core may refuse a
//!    command, or a value the caller needs at once (such as a new call's id).
//! 2. **Output.** Call `poll_output()` until it returns `Output::Timeout` (the call core's is
//!    `poll_output(now)`: it runs its flow interpreter as its commands are taken). Before that it
//!    hands out, in the order it arose, everything the inputs caused: `Output::Transmit` (a
//!    datagram to send) and `Output::Event` (news for the layer above), or, from the call core,
//!    `Output::Command` (work for its driver). Output not drained waits for the next
//!    `poll_output`: nothing is lost, but nothing is sent either, so drain after every input.
//! 3. **Wait.** `Output::Timeout(when)` says nothing else is pending and when to call
//!    `handle_timeout` next. Wait for that instant or the next input, whichever comes first, and
//!    start again at 1. A core with no timer running says `Timeout(None)`: come back only with
//!    new input. (The RTP session always has its next 20 ms tick, so its `Timeout` holds a plain
//!    `Instant`.)
//!
//! Time is always an argument (`now: Instant`; the wall clock once, at creation, for RTCP's NTP
//! times); randomness comes in from the caller too ([`rtp_session::RtpConfig::new`] takes a
//! `&mut impl rand::Rng` for the SSRC, first sequence number and first timestamp).
//!
//! Here, for [`rtp_session::RtpSession`]:
//!
//! - input: [`handle_rtp`](rtp_session::RtpSession::handle_rtp) and
//!   [`handle_rtcp`](rtp_session::RtpSession::handle_rtcp) (`now`, the source address, the
//!   datagram), [`handle_timeout`](rtp_session::RtpSession::handle_timeout) (`now`), and the call's
//!   requests: [`send_frame`](rtp_session::RtpSession::send_frame) /
//!   [`send_payload`](rtp_session::RtpSession::send_payload) queue audio,
//!   [`send_digit`](rtp_session::RtpSession::send_digit) queues RFC 4733 packets,
//!   [`clear_queued`](rtp_session::RtpSession::clear_queued) drops queued audio (barge-in),
//!   [`update`](rtp_session::RtpSession::update) applies a re-INVITE's negotiation;
//! - output: [`poll_output`](rtp_session::RtpSession::poll_output) hands out
//!   [`Output::Transmit`](rtp_session::Output::Transmit) (RTP or RTCP channel, destination,
//!   bytes) and [`Output::Event`](rtp_session::Output::Event) (an
//!   [`RtpEvent`](rtp_session::RtpEvent): a played-out or concealed frame, an RFC 4733 digit, a
//!   latch to a new source, the media timeout, a peer's RTCP report with the round trip), then
//!   [`Output::Timeout`](rtp_session::Output::Timeout): the next 20 ms tick, the next RTCP
//!   report, or the media timeout, whichever is first. Each tick sends one packet (a queued
//!   digit, else queued audio, else silence) and plays one frame out of the jitter buffer. The
//!   queue keeps its capacity, so a session in its steady state allocates nothing for it.
//!
//! The smaller cores follow the same shape without a clock of their own:
//! [`dtmf::DtmfMerger::push`] takes a digit with its time and source and returns it once,
//! [`dtmf::InbandDetector::process`] takes samples and returns the digits heard,
//! [`prompt::Player::next_frame`] hands out the next 20 ms payload, and
//! [`speech_feed::SpeechFeed`] takes 8 kHz frames and hands out 16 kHz ones.
//!
//! ## Layout
//!
//! - [`g711`]: A-law and µ-law ([`Codec`]), encoding and decoding.
//! - [`sdp`]: parsing and writing SDP, negotiating an answer, offers, origin versioning.
//! - [`rtp_session`]: one call's RTP/RTCP session (symmetric RTP, pacing, RTCP SR/RR, statistics,
//!   media timeout); the jitter buffer it plays out from is crate-private.
//! - [`dtmf`]: RFC 4733 telephone-events, the in-band (Goertzel) detector and the merger.
//! - [`prompt`]: WAV bytes to 8 kHz PCM (decode, mix down, resample), encoded prompts and the
//!   barge-in [`prompt::Player`].
//! - [`speech_feed`]: caller audio resampled to 16 kHz frames for the recognizer.
//! - this root: the [`Frame`] (20 ms of 8 kHz mono 16-bit PCM, the one audio currency between
//!   modules and one RTP packet at the usual ptime) and the [`MediaSettings`] the call layer maps
//!   from configuration.

#![warn(missing_docs, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
pub mod dtmf;
pub mod g711;
pub(crate) mod jitter;
pub mod prompt;
pub mod rtp_session;
pub mod sdp;
pub mod speech_feed;
pub mod webrtc;

pub use g711::{Codec, UnknownCodec};

/// Telephony sample rate (G.711).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one frame and the RTP packetization interval we send with.
pub(crate) const FRAME_DURATION: Duration = Duration::from_millis(20);

/// 20 ms of 8 kHz mono linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// A frame of silence.
pub(crate) const SILENCE: Frame = [0; FRAME_SAMPLES];

/// Media settings the call layer maps from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    /// Address the RTP/RTCP sockets bind to and that SDP answers advertise.
    pub bind_ip: IpAddr,
    /// Ports for RTP (even) and RTCP (the odd port above it).
    pub rtp_ports: RangeInclusive<u16>,
    /// Hang up when no RTP or RTCP has arrived for this long (not while on hold).
    pub media_timeout: Duration,
    /// Jitter buffer depth (reorder window) in milliseconds; rounded up to whole 20 ms frames.
    pub jitter_ms: u32,
    /// Codecs in our order of preference for answers.
    pub codecs: Vec<Codec>,
    /// Payload type we offer for RFC 4733 telephone-event when we make offers.
    pub telephone_event_pt: u8,
    /// Interval between our RTCP reports (RFC 3550 suggests 5 s for a two-party session).
    pub rtcp_interval: Duration,
    /// Consecutive valid packets from a new source before symmetric RTP re-latches to it.
    pub relatch_after: u32,
    /// Run the in-band (Goertzel) DTMF detector on caller audio as well as RFC 4733.
    pub inband_dtmf: bool,
    /// Window in which the same digit arriving by two paths counts once.
    pub dtmf_merge_window: Duration,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_ports: 20000..=30000,
            media_timeout: Duration::from_secs(30),
            jitter_ms: 60,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            telephone_event_pt: 101,
            rtcp_interval: Duration::from_secs(5),
            relatch_after: 5,
            inband_dtmf: true,
            dtmf_merge_window: Duration::from_millis(200),
        }
    }
}

impl MediaSettings {
    /// Jitter buffer depth in whole frames (at least one).
    pub(crate) fn jitter_frames(&self) -> usize {
        (self.jitter_ms as usize).div_ceil(20).max(1)
    }
}
