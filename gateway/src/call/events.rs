//! The call's event and report types, shared by the call modules.
//!
//! A leaf: it imports nothing from the other call modules, and they import it instead of each
//! other. Before it existed `session`, `bridge`, `cdr` and `manager` formed an import circle
//! (the session used the bridge's leg types, the bridge the session's input, the record the
//! bridge's figures, the manager the session's input and the session the manager's control),
//! so no one of them could be understood, tested or moved on its own.

use std::net::SocketAddr;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::runtime::rtp_socket::MediaEvent;
use sip::{CallEvent, CallId, Transport};

/// Input to a call task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per SIP event; boxing would allocate for each
pub enum CallInput {
    Sip(CallEvent),
    /// The gateway is stopping: end the call.
    Shutdown,
}

/// A new call as the SIP layer reported it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub call: CallId,
    pub sip_call_id: String,
    pub from: String,
    pub to: String,
    pub sdp_offer: Option<Vec<u8>>,
    pub source: SocketAddr,
    pub transport: Transport,
}

impl Incoming {
    pub fn from_event(ev: CallEvent) -> Option<Incoming> {
        match ev {
            CallEvent::IncomingCall {
                call,
                sip_call_id,
                from,
                to,
                sdp_offer,
                source,
                transport,
                ..
            } => Some(Incoming {
                call,
                sip_call_id,
                from,
                to,
                sdp_offer,
                source,
                transport,
            }),
            _ => None,
        }
    }
}

/// Requests from call tasks to the manager (see [`super::manager`]).
#[derive(Debug)]
pub enum Control {
    /// Route this leg's events to that call task too.
    Register(CallId, mpsc::UnboundedSender<CallInput>),
    /// Place an outbound call (capacity allowing) and run its flow.
    Dial(Box<super::outbound::Dial>),
    /// Answer a browser's or app's offer (capacity allowing) and run the entry flow.
    WebRtc(Box<super::webrtc::Offer>),
    /// The browser ended its WebRTC call (its DELETE).
    EndWebRtc(CallId),
}

/// Where the agent leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE sent, nothing back yet.
    Dialing,
    /// The agent's phone rings (180/183).
    Ringing,
    /// Answered: audio is relayed both ways.
    Bridged,
}

/// What the agent leg reports to the call task.
#[derive(Debug)]
pub enum LegInput {
    /// The SIP layer took the INVITE (and gave the leg's id) or refused it.
    Placed(Result<CallId, String>),
    Sip(CallEvent),
    Media(MediaEvent),
    /// The leg's media driver ended.
    MediaGone,
}

/// Frames and figures of one bridge, for the call record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BridgeFigures {
    pub agent: String,
    /// From the transfer's start to the agent's answer.
    pub answered_after_ms: Option<u64>,
    pub bridged_ms: u64,
    pub frames_to_agent: u64,
    pub frames_to_caller: u64,
    pub voiced_to_agent: u64,
    pub voiced_to_caller: u64,
    pub agent_rtp: Option<RtpFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RtpFigures {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub packets_lost: i64,
    /// Interarrival jitter (RFC 3550) in milliseconds.
    pub jitter_ms: f64,
    /// Packets that came too late for the jitter buffer.
    pub late: u64,
    /// 20 ms frames filled in for missing audio.
    pub concealed: u64,
}
