//! The SIP/RTP call generator behind `call-load`: places calls over loopback, streams 20 ms RTP
//! frames, sends RFC 4733 digits, and measures how late and how complete the peer's RTP arrives.
//! See `src/bin/call-load.rs` for why it exists rather than SIPp.

pub mod driver;
pub mod net;
pub mod report;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod spawn;
