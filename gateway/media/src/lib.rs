//! Media for calls: SDP offer/answer, RTP/RTCP sessions, G.711, the jitter buffer, DTMF,
//! prompt playback and recording.
//!
//! Everything that is logic here is sans-IO (in the style of str0m): state machines fed with
//! datagrams and the current time, handing back datagrams to send, frames and events. No socket or
//! clock is touched inside them, so every timing rule (20 ms pacing, RTCP intervals, the media
//! timeout, jitter-buffer playout) is tested deterministically by moving time by hand. The I/O around them
//! (one call's RTP/RTCP port pair, the pacer threads that drive every call's session from one
//! clock, prompt files and recordings) is in the gateway's `runtime` module.
//!
//! The one audio currency between modules is the [`Frame`]: 20 ms of 8 kHz mono 16-bit PCM, the
//! natural unit of G.711 telephony (one RTP packet at the usual ptime).

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod prompt;
pub mod rtp_session;
pub mod sdp;
pub mod speech_feed;

pub use g711::Codec;

/// Telephony sample rate (G.711).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one frame and the RTP packetization interval we send with.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// 20 ms of 8 kHz mono linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// A frame of silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];

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
    pub fn jitter_frames(&self) -> usize {
        (self.jitter_ms as usize).div_ceil(20).max(1)
    }
}
