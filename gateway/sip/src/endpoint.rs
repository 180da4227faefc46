//! The sans-IO user agent that the call layer drives: the UAS for calls from the trunk, and the
//! UAC for the legs we place to human agents when a call is transferred (we bridge the two as a
//! B2BUA, so each leg is a plain call of its own).
//!
//! Feed it datagrams or framed stream messages ([`Endpoint::handle_datagram`]) and the time
//! ([`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] is due); give it commands
//! ([`Endpoint::ring`], [`Endpoint::answer`], [`Endpoint::reject`], [`Endpoint::hangup`],
//! [`Endpoint::send_info`], [`Endpoint::invite`]). Each call returns [`Output`]s: bytes to
//! transmit and [`CallEvent`]s for the call layer. No sockets, no clock, no tasks.
//!
//! An outgoing leg ([`Endpoint::invite`]) reports [`CallEvent::OutgoingProgress`] for each
//! provisional response, then either [`CallEvent::OutgoingAnswered`] (the ACK is already out)
//! or [`CallEvent::OutgoingFailed`], and ends with [`CallEvent::CallTerminated`] like any call.
//! Hanging up before the answer cancels: CANCEL once a provisional response has arrived (RFC
//! 3261 9.1 forbids it earlier; until then the hangup waits, and timer B bounds the wait). A 2xx
//! that still arrives is ACKed and ended with BYE; one from a second fork likewise, since a leg
//! bridges one agent.
//!
//! Decisions worth knowing:
//! - Responses go back to the packet's source address and transport (symmetric signalling, as
//!   RFC 3581 rport makes standard); in-dialog requests we send (BYE, INFO) go to the address the
//!   INVITE came from. We face one carrier trunk and do no DNS.
//! - Every request on an outgoing leg goes to its [`OutgoingCall::destination`], whatever the
//!   callee's Contact says: the agents' PBX is a configured next hop, and we do no DNS. The
//!   Contact and Record-Route still shape the requests themselves (Request-URI, Route).
//! - Requests from addresses outside [`SipSettings::trunk_allow`] get a stateless 403 with a
//!   Warning saying why; their malformed messages and responses are dropped. The exception is
//!   the peer of an outgoing leg (an agents' PBX is not the trunk): responses to our client
//!   transactions are taken from the address the request went to, and in-dialog requests (a BYE
//!   from the agent) from that address are served. A new INVITE from it still gets 403: placing
//!   a call to an agent must not open the trunk to it.
//! - A request that fails validation gets a stateless 400 whose reason phrase names the faulty
//!   header, when it has the headers a response needs; otherwise it is dropped. An ACK is never
//!   answered.
//! - Transactions are found by a linear scan per timeout; a trunk carries hundreds of calls, not
//!   millions, and a timer wheel would be premature.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dialog::Dialog;
use super::message::{Headers, Message, Method, Request, Response, Via, reason_phrase};
use super::parse::{self, ParseError};
use super::serialize;
use super::timed::{Timed, Timer};
use super::transaction::{
    ClientInvite, ClientNonInvite, ServerInvite, ServerInviteState, ServerNonInvite, TxOutput,
    ack_for_non_2xx, cancel_for,
};
use super::{SipSettings, Transport};

use super::message;

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO";
const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";

/// The call layer's handle for one call (one INVITE dialog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Bytes to send: the driver writes them to `to` over `transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination address.
    pub to: SocketAddr,
    /// The transport to send on (over TCP, the peer's connection when it has one).
    pub transport: Transport,
    /// A whole serialized message.
    pub bytes: Vec<u8>,
}

/// One thing the endpoint asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes.
    Transmit(Transmit),
    /// Tell the call layer.
    Event(CallEvent),
}

/// A DTMF digit carried by SIP INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtmf {
    /// `0`-`9`, `*`, `#` or `A`-`D`.
    pub digit: char,
    /// The duration, when the sender gave one.
    pub duration_ms: Option<u32>,
}

/// A call leg to place ([`Endpoint::invite`]): the transfer of a caller to a human agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    /// The Request-URI: the agent's configured SIP URI (`sip:` only; we have no TLS for `sips:`).
    pub target_uri: String,
    /// Our identity in From, e.g. `sip:12345@gw.example`.
    pub from_uri: String,
    /// Display name in From (e.g. the caller's number, so the agent sees who waits).
    pub from_display: Option<String>,
    /// The To URI; normally the same as `target_uri`.
    pub to_uri: String,
    /// Where every request of this leg is sent (the agents' PBX or the agent's phone).
    pub destination: SocketAddr,
    /// The transport for this leg's requests.
    pub transport: Transport,
    /// The SDP offer (our media towards the agent); sent as application/sdp when not empty.
    pub sdp_offer: Vec<u8>,
    /// Headers the call layer adds, e.g. `X-12345-Order-Draft`. Headers the endpoint writes
    /// itself (Via, From, To, Call-ID, CSeq, Contact, Route, Record-Route, Max-Forwards, Allow,
    /// User-Agent, Content-Type, Content-Length) are refused: a second copy would break the
    /// transaction or the dialog, or contradict us.
    pub extra_headers: Vec<(String, String)>,
}

/// Why a call ended, given in [`CallEvent::CallTerminated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationReason {
    /// The caller (or, on an outgoing leg, the agent) sent BYE.
    RemoteBye,
    /// Our BYE was answered (or the call was rejected/hung up before answer, or an outgoing leg
    /// we hung up was cancelled).
    LocalHangup,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We rejected the call with this status.
    Rejected(u16),
    /// Our 2xx got no ACK within 64*T1; we sent BYE.
    NoAck,
    /// Our BYE got no final response within 64*T1.
    ByeTimeout,
    /// Our outgoing INVITE got this final error status (3xx-6xx; 3xx redirects are not
    /// followed), or 408 when nothing final came within timer B.
    Failed(u16),
}

/// What happened to a call, for the call layer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A new call from the trunk: ring, answer or reject it.
    IncomingCall {
        /// Our id for the call, used in every later event and command.
        call: CallId,
        /// The SIP Call-ID header, for logs and correlation with the trunk.
        sip_call_id: String,
        /// The caller's From URI and display name.
        from: String,
        /// The caller's display name, when the From header has one.
        from_display: Option<String>,
        /// The To URI (the number dialled).
        to: String,
        /// The Request-URI of the INVITE.
        request_uri: String,
        /// The INVITE body when it has one (normally application/sdp; multipart is passed
        /// whole with its content type).
        sdp_offer: Option<Vec<u8>>,
        /// The content type of `sdp_offer`.
        offer_content_type: Option<String>,
        /// The address the INVITE came from (the trunk).
        source: SocketAddr,
        /// The transport the INVITE came on.
        transport: Transport,
    },
    /// The ACK for our 2xx to the initial INVITE: media may flow both ways.
    CallAcked {
        /// The call.
        call: CallId,
    },
    /// A re-INVITE (hold/resume, codec change); answer with [`Endpoint::answer`] or
    /// [`Endpoint::reject`].
    ReInvite {
        /// The call.
        call: CallId,
        /// The new offer; `None` asks us for one (an offerless re-INVITE).
        sdp: Option<Vec<u8>>,
    },
    /// An INFO request in the dialog (answered 200 already), e.g. DTMF relay.
    Info {
        /// The call.
        call: CallId,
        /// The body's media type, lower-cased without parameters.
        content_type: Option<String>,
        /// The body as received.
        body: Vec<u8>,
        /// The digit, when the body is DTMF we read.
        dtmf: Option<Dtmf>,
    },
    /// The caller hung up (BYE answered 200); `CallTerminated` follows.
    Bye {
        /// The call.
        call: CallId,
    },
    /// The caller cancelled before answer (487 sent); `CallTerminated` follows.
    Cancelled {
        /// The call.
        call: CallId,
    },
    /// A provisional response to our outgoing INVITE (180 Ringing, 183 Session Progress...).
    /// 100 Trying is not reported: it is hop by hop and says nothing of the agent.
    OutgoingProgress {
        /// The outgoing leg.
        call: CallId,
        /// The provisional status, 101-199.
        status: u16,
    },
    /// The outgoing leg was answered with 2xx and our ACK is already sent: media may flow. `sdp`
    /// is the answer to our offer.
    OutgoingAnswered {
        /// The outgoing leg.
        call: CallId,
        /// The SDP answer, when the 2xx has a body.
        sdp: Option<Vec<u8>>,
    },
    /// The outgoing leg failed: a 3xx-6xx final response (ACKed), or 408 when timer B expired.
    /// `reason` is the response's reason phrase. `CallTerminated` follows. Not sent for a leg we
    /// hung up ourselves.
    OutgoingFailed {
        /// The outgoing leg.
        call: CallId,
        /// The final status, or 408 for timer B.
        status: u16,
        /// The reason phrase, for logs and the call layer's decision.
        reason: String,
    },
    /// The call is over and forgotten by the endpoint; its id will not be used again.
    CallTerminated {
        /// The call.
        call: CallId,
        /// Why it ended.
        reason: TerminationReason,
    },
}

/// Why a command from the call layer was refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The call is unknown, or already over.
    #[error("no such call")]
    NoSuchCall,
    /// The call is not in a state for this command (e.g. answering twice).
    #[error("the call is not in a state for this command")]
    WrongState,
    /// A reject status outside 300-699.
    #[error("status {0} is not a final error status (300-699)")]
    BadStatus(u16),
    /// An outgoing call whose URIs or headers would not make a valid INVITE.
    #[error("cannot place this call: {0}")]
    InvalidCall(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    transport: Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Inbound: initial INVITE pending, no final response yet.
    Offered,
    /// Inbound: 2xx sent, waiting for the ACK.
    Answered,
    /// Outbound: our INVITE is out, no response yet.
    Dialing,
    /// Outbound: a provisional response arrived, so a CANCEL may be sent.
    Early,
    /// Outbound: hung up before the final response. `sent`: the CANCEL is out; otherwise it
    /// waits for the first provisional response (RFC 3261 9.1).
    Cancelling {
        sent: bool,
    },
    Confirmed,
    /// Our BYE is out.
    Ending,
}

impl CallState {
    /// An outgoing leg without a 2xx yet: its dialog is only our half ([`Dialog::uac_pending`])
    /// and nothing may match it.
    fn awaiting_answer(self) -> bool {
        matches!(
            self,
            CallState::Dialing | CallState::Early | CallState::Cancelling { .. }
        )
    }
}

#[derive(Debug)]
struct Call {
    state: CallState,
    dialog: Dialog,
    peer: Peer,
    /// The INVITE in progress. Inbound: the one (initial or re-INVITE) the call layer answers
    /// next or whose ACK we wait for. Outbound: ours, until the agent sends a re-INVITE.
    invite: Request,
    /// The key of `invite`'s transaction: in `server_invites`, or for our own INVITE its branch
    /// in `client_invites`.
    invite_tx: String,
    reinvite_pending: bool,
    bye_after_ack: bool,
    /// A leg we placed ([`Endpoint::invite`]); its peer may send in-dialog requests from outside
    /// the trunk allow-list.
    outbound: bool,
}

#[derive(Debug)]
struct ServerInviteEntry {
    tx: ServerInvite,
    peer: Peer,
    call: Option<CallId>,
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientNonInvite,
    peer: Peer,
    /// `None` for the BYE that ends a second fork's dialog, which no call owns.
    call: Option<CallId>,
    method: Method,
}

/// Our INVITE's client transaction and what the UAC core needs beside it.
#[derive(Debug)]
struct ClientInviteEntry {
    tx: ClientInvite,
    peer: Peer,
    call: CallId,
    /// The INVITE itself: the non-2xx ACK and the CANCEL are built from it.
    invite: Request,
    /// The ACK sent for each 2xx, by the 2xx's To tag: a retransmitted 2xx gets the same ACK
    /// again (13.2.2.4), a 2xx with a new tag is a new fork.
    acks: Vec<(String, Vec<u8>)>,
}

impl Timer for ServerInviteEntry {
    fn deadline(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }
    fn terminated(&self) -> bool {
        self.tx.is_terminated()
    }
}

impl Timer for (ServerNonInvite, Peer) {
    fn deadline(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn terminated(&self) -> bool {
        self.0.is_terminated()
    }
}

impl Timer for ClientEntry {
    fn deadline(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }
    fn terminated(&self) -> bool {
        self.tx.is_terminated()
    }
}

impl Timer for ClientInviteEntry {
    fn deadline(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }
    fn terminated(&self) -> bool {
        self.tx.is_terminated()
    }
}

/// The SIP user agent server for the trunk. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    settings: SipSettings,
    calls: HashMap<CallId, Call>,
    server_invites: Timed<ServerInviteEntry>,
    server_others: Timed<(ServerNonInvite, Peer)>,
    clients: Timed<ClientEntry>,
    /// Our INVITEs, by branch.
    client_invites: Timed<ClientInviteEntry>,
    next_call: u64,
    out: Vec<Output>,
    /// Branch ids, tags and Call-IDs, seeded from [`SipSettings::rng_seed`]. In a cell because
    /// responses (which may need a To tag) are built through `&self`.
    rng: RefCell<StdRng>,
}

/// What we check before acting on a request, with the response if it fails.
struct Reject {
    status: u16,
    reason: String,
}

impl Reject {
    fn bad(reason: impl Into<String>) -> Self {
        Reject {
            status: 400,
            reason: reason.into(),
        }
    }
}

impl Endpoint {
    /// An endpoint with these settings, its RNG seeded from [`SipSettings::rng_seed`].
    pub fn new(settings: SipSettings) -> Self {
        Endpoint {
            rng: RefCell::new(StdRng::seed_from_u64(settings.rng_seed)),
            settings,
            calls: HashMap::new(),
            server_invites: Timed::default(),
            server_others: Timed::default(),
            clients: Timed::default(),
            client_invites: Timed::default(),
            next_call: 1,
            out: Vec::new(),
        }
    }

    /// The settings it was made with (the driver binds its sockets from them).
    pub fn settings(&self) -> &SipSettings {
        &self.settings
    }

    /// Calls in progress: inbound ones offered, answered or confirmed, and outgoing legs from
    /// their INVITE to their end.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// One datagram (UDP) or one framed message (TCP, cut by [`parse::frame`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> Vec<Output> {
        let peer = Peer {
            addr: from,
            transport,
        };
        let allowed = self.settings.allows(from.ip());
        match parse::parse_datagram(bytes) {
            Err(e) => {
                if allowed {
                    self.answer_parse_error(peer, &e);
                } else {
                    tracing::debug!(%from, "dropping unparsable message from outside the trunk allow-list");
                }
            }
            Ok(Message::Response(r)) => self.handle_response(now, from, allowed, &r),
            Ok(Message::Request(r)) if !allowed && !self.is_outbound_peer(from, &r) => {
                if r.method != Method::Ack {
                    tracing::warn!(%from, method = %r.method, "request from outside the trunk allow-list: 403");
                    let mut resp = match self.response(&r.headers, 403, "Forbidden", None, peer) {
                        Some(resp) => resp,
                        None => return self.drain(),
                    };
                    resp.headers.push(
                        "Warning",
                        format!(
                            "399 {} \"source address not in the trunk allow-list\"",
                            self.host()
                        ),
                    );
                    resp.headers
                        .push("Reason", "SIP;cause=403;text=\"source not allowed\"");
                    self.send_response(peer, &resp);
                }
            }
            Ok(Message::Request(r)) => self.handle_request(now, peer, r),
        }
        self.drain()
    }

    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.server_invites.next_deadline(),
            self.server_others.next_deadline(),
            self.clients.next_deadline(),
            self.client_invites.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run the timers that are due at `now`: retransmissions, and timeouts that end calls.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut no_ack = Vec::new();
        for key in self.server_invites.due(now) {
            let Some(e) = self.server_invites.get_mut(&key) else {
                continue;
            };
            for o in e.tx.handle_timeout(now) {
                match o {
                    TxOutput::Retransmit(bytes) => self.out.push(transmit(e.peer, bytes)),
                    TxOutput::Timeout => {
                        if let Some(call) = e.call {
                            no_ack.push((call, key.clone()));
                        }
                    }
                    TxOutput::Response(_) => {}
                }
            }
        }
        for (call, key) in no_ack {
            self.invite_timed_out(now, call, &key);
        }
        for key in self.server_others.due(now) {
            if let Some((tx, _)) = self.server_others.get_mut(&key) {
                tx.handle_timeout(now);
            }
        }
        let mut bye_timeouts = Vec::new();
        for key in self.clients.due(now) {
            let Some(e) = self.clients.get_mut(&key) else {
                continue;
            };
            for o in e.tx.handle_timeout(now) {
                match o {
                    TxOutput::Retransmit(bytes) => self.out.push(transmit(e.peer, bytes)),
                    TxOutput::Timeout if e.method == Method::Bye => {
                        bye_timeouts.extend(e.call);
                    }
                    _ => {}
                }
            }
        }
        for call in bye_timeouts {
            self.end_call(call, TerminationReason::ByeTimeout);
        }
        let mut invite_timeouts = Vec::new();
        for key in self.client_invites.due(now) {
            let Some(e) = self.client_invites.get_mut(&key) else {
                continue;
            };
            for o in e.tx.handle_timeout(now) {
                match o {
                    TxOutput::Retransmit(bytes) => self.out.push(transmit(e.peer, bytes)),
                    TxOutput::Timeout => invite_timeouts.push(e.call),
                    TxOutput::Response(_) => {}
                }
            }
        }
        for call in invite_timeouts {
            tracing::info!(call = call.0, "no final response to our INVITE (timer B)");
            self.outgoing_failed(call, 408, reason_phrase(408));
        }
        // Terminated transactions leave their maps when next indexed.
        self.drain()
    }

    // ---- commands from the call layer -------------------------------------------------------

    /// Send 180 Ringing for an offered call.
    pub fn ring(&mut self, now: Instant, call: CallId) -> Result<Vec<Output>, CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Offered {
            return Err(CommandError::WrongState);
        }
        let resp = self.dialog_response(call, 180, Vec::new())?;
        self.invite_respond(now, call, &resp);
        Ok(self.drain())
    }

    /// Answer the pending INVITE (initial or re-INVITE) with 200 OK and this SDP.
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallId,
        sdp: Vec<u8>,
    ) -> Result<Vec<Output>, CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        let initial = c.state == CallState::Offered;
        if !initial && !c.reinvite_pending {
            return Err(CommandError::WrongState);
        }
        let resp = self.dialog_response(call, 200, sdp)?;
        self.invite_respond(now, call, &resp);
        if let Some(c) = self.calls.get_mut(&call) {
            if initial {
                c.state = CallState::Answered;
            }
            c.reinvite_pending = false;
        }
        Ok(self.drain())
    }

    /// Refuse the pending INVITE with a final error status (e.g. 486, 503, 488 for a re-INVITE).
    /// For the initial INVITE the call ends; for a re-INVITE the call goes on unchanged.
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallId,
        status: u16,
    ) -> Result<Vec<Output>, CommandError> {
        if !(300..=699).contains(&status) {
            return Err(CommandError::BadStatus(status));
        }
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        let initial = c.state == CallState::Offered;
        if !initial && !c.reinvite_pending {
            return Err(CommandError::WrongState);
        }
        let resp = self.dialog_response(call, status, Vec::new())?;
        self.invite_respond(now, call, &resp);
        if initial {
            self.end_call(call, TerminationReason::Rejected(status));
        } else if let Some(c) = self.calls.get_mut(&call) {
            c.reinvite_pending = false;
        }
        Ok(self.drain())
    }

    /// End the call: BYE once answered (after the ACK, RFC 3261 15), 480 before answer.
    ///
    /// An outgoing leg not yet answered is cancelled: CANCEL now if a provisional response has
    /// arrived, otherwise as soon as one does (RFC 3261 9.1); if none comes, timer B ends the
    /// leg. `CallTerminated` (LocalHangup) follows the INVITE's final response, normally 487.
    pub fn hangup(&mut self, now: Instant, call: CallId) -> Result<Vec<Output>, CommandError> {
        let c = self.calls.get_mut(&call).ok_or(CommandError::NoSuchCall)?;
        match c.state {
            CallState::Offered => {
                let resp = self.dialog_response(call, 480, Vec::new())?;
                self.invite_respond(now, call, &resp);
                self.end_call(call, TerminationReason::LocalHangup);
            }
            CallState::Answered => c.bye_after_ack = true,
            CallState::Dialing => c.state = CallState::Cancelling { sent: false },
            CallState::Early => {
                c.state = CallState::Cancelling { sent: true };
                self.send_cancel(now, call);
            }
            CallState::Confirmed => self.send_bye(now, call),
            CallState::Ending | CallState::Cancelling { .. } => {
                return Err(CommandError::WrongState);
            }
        }
        Ok(self.drain())
    }

    /// Place an outgoing call leg: send the INVITE and run its client transaction (timers A and
    /// B, RFC 3261 17.1.1). Returns the new leg's id with the INVITE to transmit; what follows
    /// comes as [`CallEvent::OutgoingProgress`], then [`CallEvent::OutgoingAnswered`] or
    /// [`CallEvent::OutgoingFailed`], then [`CallEvent::CallTerminated`].
    ///
    /// The URIs, display name and extra headers come from configuration and from the caller's
    /// data; anything that would not survive the trip into a header is refused with
    /// [`CommandError::InvalidCall`] rather than sent broken.
    pub fn invite(
        &mut self,
        now: Instant,
        call: OutgoingCall,
    ) -> Result<(CallId, Vec<Output>), CommandError> {
        let bad = |m: String| CommandError::InvalidCall(m);
        check_uri("target_uri", &call.target_uri)?;
        if !call.target_uri.to_ascii_lowercase().starts_with("sip:") {
            return Err(bad(format!(
                "target_uri {:?} is not a sip: URI",
                call.target_uri
            )));
        }
        check_uri("from_uri", &call.from_uri)?;
        check_uri("to_uri", &call.to_uri)?;
        let display = match &call.from_display {
            Some(d) if d.chars().any(char::is_control) => {
                return Err(bad("from_display has control characters".into()));
            }
            Some(d) => format!("\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\"")),
            None => String::new(),
        };
        for (name, value) in &call.extra_headers {
            if name.is_empty() || !name.bytes().all(message::is_token_byte) {
                return Err(bad(format!("header name {name:?} is not a token")));
            }
            if RESERVED.contains(&message::canonical_name(name).as_str()) {
                return Err(bad(format!("header {name} is the endpoint's own")));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad(format!("header {name} has control characters")));
            }
        }
        let peer = Peer {
            addr: call.destination,
            transport: call.transport,
        };
        let (via, branch) = self.via(call.transport);
        let sip_call_id = format!("{:016x}{:016x}", self.random_u64(), self.random_u64());
        let mut h = Headers::default();
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push(
            "From",
            format!("{display}<{}>;tag={}", call.from_uri, self.new_tag()),
        );
        h.push("To", format!("<{}>", call.to_uri));
        h.push("Call-ID", sip_call_id.clone());
        h.push("CSeq", "1 INVITE");
        h.push("Contact", self.contact(call.transport));
        h.push("Allow", ALLOW);
        h.push("User-Agent", self.settings.user_agent.clone());
        for (name, value) in call.extra_headers {
            h.push(&name, value);
        }
        if !call.sdp_offer.is_empty() {
            h.push("Content-Type", "application/sdp");
        }
        let invite = Request {
            method: Method::Invite,
            uri: call.target_uri,
            version: "SIP/2.0".into(),
            headers: h,
            body: call.sdp_offer,
        };
        // Our own headers: this fails only if the checks above missed something.
        let dialog = Dialog::uac_pending(&invite).map_err(|e| bad(e.to_string()))?;
        let id = CallId(self.next_call);
        self.next_call += 1;
        let bytes = serialize::request(&invite);
        self.out.push(transmit(peer, bytes.clone()));
        let tx = ClientInvite::new(
            now,
            peer.transport.is_reliable(),
            self.settings.timers,
            bytes,
        );
        tracing::info!(call = id.0, sip_call_id, to = %peer.addr, transport = peer.transport.as_str(), "placing outgoing call");
        self.client_invites.insert(
            branch.clone(),
            ClientInviteEntry {
                tx,
                peer,
                call: id,
                invite: invite.clone(),
                acks: Vec::new(),
            },
        );
        self.calls.insert(
            id,
            Call {
                state: CallState::Dialing,
                dialog,
                peer,
                invite,
                invite_tx: branch,
                reinvite_pending: false,
                bye_after_ack: false,
                outbound: true,
            },
        );
        Ok((id, self.drain()))
    }

    /// Send INFO in the dialog (e.g. DTMF relay towards the trunk).
    pub fn send_info(
        &mut self,
        now: Instant,
        call: CallId,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<Output>, CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Confirmed {
            return Err(CommandError::WrongState);
        }
        self.send_in_dialog(
            now,
            call,
            Method::Info,
            &[("Content-Type", content_type.to_owned())],
            body,
        );
        Ok(self.drain())
    }

    // ---- internals ----------------------------------------------------------------------------

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().random()
    }

    /// A fresh To/From tag.
    fn new_tag(&self) -> String {
        format!("{:016x}", self.random_u64())
    }

    fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn event(&mut self, e: CallEvent) {
        self.out.push(Output::Event(e));
    }

    fn host(&self) -> String {
        self.settings
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.settings.udp.ip().to_string())
    }

    fn local_addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.settings.udp,
            Transport::Tcp => self.settings.tcp,
        }
    }

    fn contact(&self, transport: Transport) -> String {
        let port = self.local_addr(transport).port();
        let host = match self.settings.advertised_host.clone() {
            Some(h) => h,
            None => match self.local_addr(transport).ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            },
        };
        let tp = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        format!("<sip:{}@{host}:{port}{tp}>", self.settings.contact_user)
    }

    fn answer_parse_error(&mut self, peer: Peer, e: &ParseError) {
        let Some(s) = &e.salvage else {
            tracing::debug!(from = %peer.addr, problem = e.problem, "dropping unparsable message");
            return;
        };
        if !s.is_request || s.method == Some(Method::Ack) {
            tracing::debug!(from = %peer.addr, problem = e.problem, "dropping malformed response or ACK");
            return;
        }
        match self.response(
            &s.headers,
            400,
            &format!("Bad Request ({})", e.problem),
            None,
            peer,
        ) {
            Some(resp) => {
                tracing::info!(from = %peer.addr, problem = e.problem, "malformed request: 400");
                self.send_response(peer, &resp);
            }
            None => {
                tracing::debug!(from = %peer.addr, problem = e.problem, "malformed request without the headers to answer it");
            }
        }
    }

    /// Build a response from a request's headers (RFC 3261 8.2.6). `None` when the request
    /// lacks what a response needs (Via, From, To, Call-ID, CSeq).
    fn response(
        &self,
        req: &Headers,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        peer: Peer,
    ) -> Option<Response> {
        let vias = req.get_all("Via").map(str::to_owned).collect::<Vec<_>>();
        // An unreadable Via (we are answering 400) is copied as is: the response goes to the
        // packet's source anyway.
        let top = req.top_via().ok();
        if vias.is_empty() {
            return None;
        }
        let from = req.get("From")?;
        let to_raw = req.get("To")?;
        let call_id = req.get("Call-ID")?;
        let cseq = req.get("CSeq")?;
        let mut headers = Headers::default();
        for (i, v) in vias.iter().enumerate() {
            if let (0, Some(top)) = (i, &top) {
                headers.push("Via", stamp_via(top, v, peer.addr));
            } else {
                headers.push("Via", v.clone());
            }
        }
        headers.push("From", from.to_owned());
        let to_value = match req.to() {
            Ok(to) if to.tag().is_none() && status > 100 => {
                let mut to = to.clone();
                let tag = to_tag.map_or_else(|| self.new_tag(), str::to_owned);
                to.params.push(("tag".into(), Some(tag)));
                to.render()
            }
            // unparsable To (we are answering 400): copy it and still tag it
            Err(_) if status > 100 => format!("{to_raw};tag={}", self.new_tag()),
            _ => to_raw.to_owned(),
        };
        headers.push("To", to_value);
        headers.push("Call-ID", call_id.to_owned());
        headers.push("CSeq", cseq.to_owned());
        headers.push("Server", self.settings.user_agent.clone());
        let reason = reason.replace(['\r', '\n'], " ");
        Some(Response {
            status,
            reason,
            version: "SIP/2.0".into(),
            headers,
            body: Vec::new(),
        })
    }

    fn simple(&self, req: &Request, status: u16, peer: Peer) -> Option<Response> {
        self.response(&req.headers, status, reason_phrase(status), None, peer)
    }

    fn send_response(&mut self, peer: Peer, resp: &Response) {
        self.out.push(transmit(peer, serialize::response(resp)));
    }

    /// A response to the call's pending INVITE, with our tag, Contact and Record-Route.
    fn dialog_response(
        &self,
        call: CallId,
        status: u16,
        sdp: Vec<u8>,
    ) -> Result<Response, CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        let mut resp = self
            .response(
                &c.invite.headers,
                status,
                reason_phrase(status),
                Some(&c.dialog.local_tag),
                c.peer,
            )
            .ok_or(CommandError::WrongState)?;
        if (101..300).contains(&status) {
            for rr in c.invite.headers.get_all("Record-Route") {
                resp.headers.push("Record-Route", rr.to_owned());
            }
            resp.headers.push("Contact", self.contact(c.peer.transport));
        }
        if status == 200 {
            resp.headers.push("Allow", ALLOW);
            if !sdp.is_empty() {
                resp.headers.push("Content-Type", "application/sdp");
            }
            resp.body = sdp;
        }
        Ok(resp)
    }

    fn invite_respond(&mut self, now: Instant, call: CallId, resp: &Response) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (peer, key) = (c.peer, c.invite_tx.clone());
        let bytes = serialize::response(resp);
        if let Some(e) = self.server_invites.get_mut(&key)
            && e.tx.respond(now, resp.status, bytes.clone())
        {
            self.out.push(transmit(peer, bytes));
        }
    }

    fn end_call(&mut self, call: CallId, reason: TerminationReason) {
        if self.calls.remove(&call).is_some() {
            tracing::info!(call = call.0, ?reason, "call ended");
            self.event(CallEvent::CallTerminated { call, reason });
        }
    }

    fn via(&self, transport: Transport) -> (String, String) {
        let branch = format!("z9hG4bK{:016x}", self.random_u64());
        let addr = self.local_addr(transport);
        let host = self
            .settings
            .advertised_host
            .clone()
            .unwrap_or_else(|| match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            });
        (
            format!(
                "SIP/2.0/{} {host}:{};branch={branch};rport",
                transport.as_str(),
                addr.port()
            ),
            branch,
        )
    }

    fn send_in_dialog(
        &mut self,
        now: Instant,
        call: CallId,
        method: Method,
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) {
        let Some(transport) = self.calls.get(&call).map(|c| c.peer.transport) else {
            return;
        };
        let (via, branch) = self.via(transport);
        let ua = self.settings.user_agent.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let mut extra = extra.to_vec();
        extra.push(("User-Agent", ua));
        let req = c.dialog.request(method, via, &extra, body);
        let peer = c.peer;
        self.send_non_invite(now, peer, branch, &req, Some(call));
    }

    /// Transmit a request of ours and start its non-INVITE client transaction.
    fn send_non_invite(
        &mut self,
        now: Instant,
        peer: Peer,
        branch: String,
        req: &Request,
        call: Option<CallId>,
    ) {
        let bytes = serialize::request(req);
        self.out.push(transmit(peer, bytes.clone()));
        let tx = ClientNonInvite::new(
            now,
            peer.transport.is_reliable(),
            self.settings.timers,
            bytes,
        );
        self.clients.insert(
            branch,
            ClientEntry {
                tx,
                peer,
                call,
                method: req.method.clone(),
            },
        );
    }

    /// CANCEL our pending INVITE (9.1). The CANCEL shares the INVITE's branch, so its client
    /// transaction sits in `clients` under the key the INVITE has in `client_invites`.
    fn send_cancel(&mut self, now: Instant, call: CallId) {
        let Some(branch) = self.calls.get(&call).map(|c| c.invite_tx.clone()) else {
            return;
        };
        let Some(e) = self.client_invites.get_mut(&branch) else {
            return;
        };
        e.tx.cancelled(now);
        let (cancel, peer) = (cancel_for(&e.invite), e.peer);
        tracing::info!(call = call.0, "cancelling outgoing call");
        self.send_non_invite(now, peer, branch, &cancel, Some(call));
    }

    fn send_bye(&mut self, now: Instant, call: CallId) {
        self.send_in_dialog(now, call, Method::Bye, &[], Vec::new());
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = CallState::Ending;
        }
    }

    /// Timer H/L fired for an INVITE server transaction.
    fn invite_timed_out(&mut self, now: Instant, call: CallId, key: &str) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.invite_tx != key {
            return;
        }
        match c.state {
            CallState::Answered => {
                tracing::warn!(
                    call = call.0,
                    "no ACK for our 200 OK within 64*T1: sending BYE"
                );
                self.send_bye(now, call);
                self.end_call(call, TerminationReason::NoAck);
            }
            CallState::Confirmed => {
                // a re-INVITE's 2xx was never ACKed: end the session as for the initial one
                tracing::warn!(
                    call = call.0,
                    "no ACK for the re-INVITE's 200 OK: sending BYE"
                );
                self.send_bye(now, call);
                self.end_call(call, TerminationReason::NoAck);
            }
            _ => {}
        }
    }

    /// Whether a request from outside the trunk allow-list belongs to a dialog of an outgoing
    /// leg whose peer is that address (a BYE from the agent's side).
    fn is_outbound_peer(&self, from: SocketAddr, req: &Request) -> bool {
        self.find_dialog(req)
            .and_then(|id| self.calls.get(&id))
            .is_some_and(|c| c.outbound && c.peer.addr.ip() == from.ip())
    }

    /// A response, matched to our client transaction by branch and CSeq method (17.1.3). It is
    /// taken from the trunk, or from the address the request went to (an agents' PBX).
    fn handle_response(&mut self, now: Instant, from: SocketAddr, trusted: bool, r: &Response) {
        let Ok(via) = r.headers.top_via() else {
            return;
        };
        let Some(branch) = via.branch() else {
            return;
        };
        let Ok(cseq) = r.headers.cseq() else {
            return;
        };
        if cseq.method == Method::Invite {
            self.invite_response(now, from, trusted, branch, r);
            return;
        }
        let Some(e) = self.clients.get_mut(branch) else {
            tracing::debug!(status = r.status, "response matches no transaction");
            return;
        };
        if cseq.method != e.method {
            return;
        }
        if !trusted && e.peer.addr.ip() != from.ip() {
            tracing::debug!(%from, "dropping response from neither the trunk nor the request's peer");
            return;
        }
        let Some(TxOutput::Response(status)) = e.tx.on_response(now, r.status) else {
            return;
        };
        let (call, method) = (e.call, e.method.clone());
        if status >= 200 {
            tracing::debug!(call = call.map(|c| c.0), %method, status, "final response to our request");
            if let (Method::Bye, Some(call)) = (method, call) {
                self.end_call(call, TerminationReason::LocalHangup);
            }
        }
    }

    /// A response to one of our INVITEs.
    fn invite_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        trusted: bool,
        branch: &str,
        r: &Response,
    ) {
        let Some(e) = self.client_invites.get_mut(branch) else {
            tracing::debug!(status = r.status, "INVITE response matches no transaction");
            return;
        };
        if !trusted && e.peer.addr.ip() != from.ip() {
            tracing::debug!(%from, "dropping INVITE response from neither the trunk nor the callee");
            return;
        }
        let status = match e.tx.on_response(now, r.status) {
            Some(TxOutput::Response(status)) => status,
            Some(TxOutput::Retransmit(ack)) => {
                // a retransmitted non-2xx: the transaction repeats its ACK
                self.out.push(transmit(e.peer, ack));
                return;
            }
            _ => return,
        };
        let call = e.call;
        match status {
            ..=199 => self.outgoing_provisional(now, call, status),
            200..=299 => self.outgoing_2xx(now, branch, r),
            _ => {
                let ack = serialize::request(&ack_for_non_2xx(&e.invite, r));
                e.tx.set_ack(ack.clone());
                self.out.push(transmit(e.peer, ack));
                tracing::info!(call = call.0, status, "outgoing call failed");
                self.outgoing_failed(call, status, &r.reason);
            }
        }
    }

    fn outgoing_provisional(&mut self, now: Instant, call: CallId, status: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.state {
            CallState::Dialing | CallState::Early => {
                c.state = CallState::Early;
                if status > 100 {
                    self.event(CallEvent::OutgoingProgress { call, status });
                }
            }
            CallState::Cancelling { sent: false } => {
                // the hangup was waiting for this (9.1)
                c.state = CallState::Cancelling { sent: true };
                self.send_cancel(now, call);
            }
            _ => {}
        }
    }

    /// A 2xx to our INVITE, first copy or not: ACK it (13.2.2.4). The first 2xx confirms the
    /// leg; a 2xx with another To tag comes from a second fork, and since a leg bridges one
    /// agent that dialog is ended at once (13.2.2.4 allows either).
    fn outgoing_2xx(&mut self, now: Instant, branch: &str, r: &Response) {
        let to_tag = r
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        let Some(e) = self.client_invites.get(branch) else {
            return;
        };
        if let Some((_, ack)) = e.acks.iter().find(|(tag, _)| *tag == to_tag) {
            self.out.push(transmit(e.peer, ack.clone()));
            return;
        }
        let (call, peer) = (e.call, e.peer);
        let dialog = match Dialog::uac(&e.invite, r) {
            Ok(d) => d,
            Err(err) => {
                // Without a dialog there is no ACK to build; the callee gives up on its own
                // when its 2xx goes unacknowledged.
                tracing::warn!(call = call.0, error = %err, "unusable 2xx to our INVITE");
                self.outgoing_failed(call, 502, "Bad Gateway (unusable 2xx)");
                return;
            }
        };
        let (via, _) = self.via(peer.transport);
        let ack = serialize::request(&dialog.ack(via, &[]));
        self.out.push(transmit(peer, ack.clone()));
        if let Some(e) = self.client_invites.get_mut(branch) {
            e.acks.push((to_tag, ack));
        }
        let state = self.calls.get(&call).map(|c| c.state);
        match (state, self.calls.get_mut(&call)) {
            (Some(CallState::Dialing | CallState::Early), Some(c)) => {
                c.dialog = dialog;
                c.state = CallState::Confirmed;
                tracing::info!(call = call.0, "outgoing call answered");
                let sdp = (!r.body.is_empty()).then(|| r.body.clone());
                self.event(CallEvent::OutgoingAnswered { call, sdp });
            }
            (Some(CallState::Cancelling { .. }), Some(c)) => {
                // answered while our CANCEL was on its way: the call is up, so end it
                c.dialog = dialog;
                c.state = CallState::Confirmed;
                tracing::info!(call = call.0, "outgoing call answered after hangup: BYE");
                self.send_bye(now, call);
            }
            _ => {
                tracing::info!(call = call.0, "2xx from a second fork: ACK and BYE");
                let mut dialog = dialog;
                let (via, branch) = self.via(peer.transport);
                let ua = self.settings.user_agent.clone();
                let bye = dialog.request(Method::Bye, via, &[("User-Agent", ua)], Vec::new());
                self.send_non_invite(now, peer, branch, &bye, None);
            }
        }
    }

    /// The outgoing leg got no answer: a final error, or a timeout (408). A leg the call layer
    /// hung up ends quietly as LocalHangup; others report why first.
    fn outgoing_failed(&mut self, call: CallId, status: u16, reason: &str) {
        match self.calls.get(&call).map(|c| c.state) {
            Some(CallState::Dialing | CallState::Early) => {
                self.event(CallEvent::OutgoingFailed {
                    call,
                    status,
                    reason: reason.to_owned(),
                });
                self.end_call(call, TerminationReason::Failed(status));
            }
            Some(CallState::Cancelling { .. }) => {
                self.end_call(call, TerminationReason::LocalHangup);
            }
            _ => {}
        }
    }

    /// Validation beyond the parser: RFC 4475's application-layer faults.
    fn validate(req: &Request) -> Result<(), Reject> {
        let h = &req.headers;
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if h.get(name).is_none() {
                return Err(Reject::bad(format!("Missing {name} header")));
            }
        }
        for name in [
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "Content-Type",
        ] {
            if h.count(name) > 1 {
                return Err(Reject::bad(format!("Multiple {name} headers")));
            }
        }
        h.via().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        h.from().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        h.to().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        h.call_id().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        let cseq = h.cseq().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        h.max_forwards()
            .map_err(|e| Reject::bad(format!("Bad {e}")))?;
        h.contact().map_err(|e| Reject::bad(format!("Bad {e}")))?;
        if cseq.method != req.method {
            return Err(Reject::bad("CSeq method does not match the request line"));
        }
        if !req.version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(Reject {
                status: 505,
                reason: reason_phrase(505).into(),
            });
        }
        // `?headers` follow the host part; a '?' in the user part is legal (RFC 4475 intmeth).
        let scheme = req.uri.split(':').next().unwrap_or_default();
        let hostpart = req.uri.rsplit('@').next().unwrap_or_default();
        if (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips"))
            && hostpart.contains('?')
        {
            return Err(Reject::bad("Request-URI carries headers"));
        }
        Ok(())
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, req: Request) {
        if let Err(rej) = Self::validate(&req) {
            if req.method == Method::Ack {
                return;
            }
            tracing::info!(from = %peer.addr, status = rej.status, reason = %rej.reason, "rejecting request");
            if let Some(resp) = self.response(&req.headers, rej.status, &rej.reason, None, peer) {
                self.send_response(peer, &resp);
            }
            return;
        }
        let key = tx_key(&req);
        // Retransmissions and non-2xx ACKs are absorbed by their transaction.
        match req.method {
            Method::Ack => {
                if let Some(e) = self.server_invites.get_mut(&key)
                    && e.tx.state() == ServerInviteState::Completed
                {
                    e.tx.on_ack(now);
                    return;
                }
                self.dialog_ack(now, &req);
                return;
            }
            Method::Invite => {
                if let Some(e) = self.server_invites.get(&key) {
                    if let Some(bytes) = e.tx.on_retransmission() {
                        self.out.push(transmit(peer, bytes));
                    }
                    return;
                }
            }
            _ => {
                if let Some((tx, _)) = self.server_others.get(&key) {
                    if let Some(bytes) = tx.on_retransmission() {
                        self.out.push(transmit(peer, bytes));
                    }
                    return;
                }
            }
        }
        // A new server transaction.
        if req.method == Method::Invite {
            self.server_invites.insert(
                key.clone(),
                ServerInviteEntry {
                    tx: ServerInvite::new(peer.transport.is_reliable(), self.settings.timers),
                    peer,
                    call: None,
                },
            );
        } else {
            self.server_others.insert(
                key.clone(),
                (
                    ServerNonInvite::new(peer.transport.is_reliable(), self.settings.timers),
                    peer,
                ),
            );
        }
        if req.headers.max_forwards() == Ok(0) {
            self.tx_reply(now, &key, &req, 483, peer);
            return;
        }
        if !matches!(req.method, Method::Cancel) {
            let unsupported: Vec<String> = req.headers.tokens("Require");
            if !unsupported.is_empty() {
                let resp = self.simple(&req, 420, peer).map(|mut r| {
                    r.headers.push("Unsupported", unsupported.join(", "));
                    r
                });
                self.tx_send(now, &key, req.method == Method::Invite, resp, peer);
                return;
            }
        }
        match req.method {
            Method::Invite => self.on_invite(now, peer, key, req),
            Method::Bye => self.on_bye(now, peer, &key, &req),
            Method::Cancel => self.on_cancel(now, peer, &key, &req),
            Method::Options => {
                let resp = self.simple(&req, 200, peer).map(|mut r| {
                    r.headers.push("Allow", ALLOW);
                    r.headers.push("Accept", ACCEPT);
                    r
                });
                self.tx_send(now, &key, false, resp, peer);
            }
            Method::Info => self.on_info(now, peer, &key, &req),
            Method::Ack => {}
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Message
            | Method::Update
            | Method::Prack
            | Method::Refer
            | Method::Publish => {
                let resp = self.simple(&req, 405, peer).map(|mut r| {
                    r.headers.push("Allow", ALLOW);
                    r
                });
                self.tx_send(now, &key, false, resp, peer);
            }
            Method::Extension(_) => {
                let resp = self.simple(&req, 501, peer).map(|mut r| {
                    r.headers.push("Allow", ALLOW);
                    r
                });
                self.tx_send(now, &key, false, resp, peer);
            }
        }
    }

    /// Send a response through the transaction under `key` (so retransmissions repeat it).
    fn tx_send(
        &mut self,
        now: Instant,
        key: &str,
        invite: bool,
        resp: Option<Response>,
        peer: Peer,
    ) {
        let Some(resp) = resp else {
            return;
        };
        let bytes = serialize::response(&resp);
        let accepted = if invite {
            self.server_invites
                .get_mut(key)
                .is_some_and(|e| e.tx.respond(now, resp.status, bytes.clone()))
        } else {
            self.server_others
                .get_mut(key)
                .is_some_and(|(t, _)| t.respond(now, resp.status, bytes.clone()))
        };
        if accepted {
            self.out.push(transmit(peer, bytes));
        }
    }

    fn tx_reply(&mut self, now: Instant, key: &str, req: &Request, status: u16, peer: Peer) {
        let resp = self.simple(req, status, peer);
        self.tx_send(now, key, req.method == Method::Invite, resp, peer);
    }

    fn find_dialog(&self, req: &Request) -> Option<CallId> {
        let call_id = req.headers.call_id().ok()?;
        let to = req.headers.to().ok()?;
        let from = req.headers.from().ok()?;
        self.calls
            .iter()
            .find(|(_, c)| {
                !c.state.awaiting_answer() && c.dialog.matches(call_id, to.tag(), from.tag())
            })
            .map(|(id, _)| *id)
    }

    fn on_invite(&mut self, now: Instant, peer: Peer, key: String, req: Request) {
        let is_invite = true;
        // Body checks apply to both initial and re-INVITEs.
        if !req.body.is_empty() {
            let ct = req.headers.content_type().unwrap_or_default();
            if ct != "application/sdp" && !ct.starts_with("multipart/") {
                let resp = self.simple(&req, 415, peer).map(|mut r| {
                    r.headers.push("Accept", "application/sdp");
                    r
                });
                self.tx_send(now, &key, is_invite, resp, peer);
                return;
            }
        }
        let accept = req.headers.values("Accept");
        if !accept.is_empty()
            && !accept.iter().any(|a| {
                let t = a
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                t == "application/sdp" || t == "application/*" || t == "*/*"
            })
        {
            let resp = self.simple(&req, 406, peer).map(|mut r| {
                r.headers.push("Accept", "application/sdp");
                r
            });
            self.tx_send(now, &key, is_invite, resp, peer);
            return;
        }
        let to_tag = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        if to_tag.is_some() {
            self.on_reinvite(now, peer, key, req);
            return;
        }
        // Merged request (8.2.2.2): same Call-ID, From tag and CSeq on another branch.
        let (Ok(call_id), Ok(from), Ok(cseq)) = (
            req.headers.call_id(),
            req.headers.from(),
            req.headers.cseq(),
        ) else {
            return;
        };
        let merged = self.calls.values().any(|c| {
            c.dialog.call_id == call_id
                && c.dialog.remote_tag == from.tag().unwrap_or_default()
                && c.invite.headers.cseq().is_ok_and(|s| s.seq == cseq.seq)
        });
        if merged {
            self.tx_reply(now, &key, &req, 482, peer);
            return;
        }
        let local_tag = self.new_tag();
        let dialog = match Dialog::uas(&req, &local_tag) {
            Ok(d) => d,
            Err(e) => {
                let resp = self.response(&req.headers, 400, &format!("Bad {e}"), None, peer);
                self.tx_send(now, &key, is_invite, resp, peer);
                return;
            }
        };
        // 100 Trying at once, so the trunk stops retransmitting while the call layer decides.
        if let Some(trying) = self.response(&req.headers, 100, "Trying", None, peer) {
            self.tx_send(now, &key, is_invite, Some(trying), peer);
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        if let Some(e) = self.server_invites.get_mut(&key) {
            e.call = Some(id);
        }
        let to = req.headers.to().map(|t| t.uri).unwrap_or_default();
        let event = CallEvent::IncomingCall {
            call: id,
            sip_call_id: call_id.to_owned(),
            from: from.uri.clone(),
            from_display: from.display.clone(),
            to,
            request_uri: req.uri.clone(),
            sdp_offer: (!req.body.is_empty()).then(|| req.body.clone()),
            offer_content_type: req.headers.content_type(),
            source: peer.addr,
            transport: peer.transport,
        };
        tracing::info!(call = id.0, sip_call_id = call_id, from = %peer.addr, "incoming call");
        self.calls.insert(
            id,
            Call {
                state: CallState::Offered,
                dialog,
                peer,
                invite: req,
                invite_tx: key,
                reinvite_pending: false,
                bye_after_ack: false,
                outbound: false,
            },
        );
        self.event(event);
    }

    fn on_reinvite(&mut self, now: Instant, peer: Peer, key: String, req: Request) {
        let Some(id) = self.find_dialog(&req) else {
            self.tx_reply(now, &key, &req, 481, peer);
            return;
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.state != CallState::Confirmed || c.reinvite_pending {
            // an INVITE is still in progress (RFC 3261 14.2)
            self.tx_reply(now, &key, &req, 491, peer);
            return;
        }
        if !c.dialog.accept_remote_cseq(seq) {
            self.tx_reply(now, &key, &req, 500, peer);
            return;
        }
        c.reinvite_pending = true;
        c.invite_tx = key.clone();
        c.invite = req.clone();
        if let Some(e) = self.server_invites.get_mut(&key) {
            e.call = Some(id);
        }
        if let Some(trying) = self.response(&req.headers, 100, "Trying", None, peer) {
            self.tx_send(now, &key, true, Some(trying), peer);
        }
        let sdp = (!req.body.is_empty()).then(|| req.body.clone());
        self.event(CallEvent::ReInvite { call: id, sdp });
    }

    /// An ACK outside any INVITE transaction: the ACK for our 2xx (13.3.1.4).
    fn dialog_ack(&mut self, now: Instant, req: &Request) {
        let Some(id) = self.find_dialog(req) else {
            tracing::debug!("ACK matches no dialog");
            return;
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.invite.headers.cseq().map(|c| c.seq).unwrap_or_default() != seq {
            return;
        }
        let first = self
            .server_invites
            .get_mut(&c.invite_tx)
            .is_some_and(|e| e.tx.on_ack(now));
        if !first || c.state == CallState::Ending {
            return;
        }
        let initial = c.state == CallState::Answered;
        c.state = CallState::Confirmed;
        let bye = c.bye_after_ack;
        if initial {
            self.event(CallEvent::CallAcked { call: id });
        }
        if bye {
            self.send_bye(now, id);
        }
    }

    fn on_bye(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
        let Some(id) = self.find_dialog(req) else {
            self.tx_reply(now, key, req, 481, peer);
            return;
        };
        self.tx_reply(now, key, req, 200, peer);
        if self
            .calls
            .get(&id)
            .is_some_and(|c| c.state == CallState::Offered)
        {
            // BYE on an early dialog: the INVITE ends with 487 (15.1.2)
            if let Ok(resp) = self.dialog_response(id, 487, Vec::new()) {
                self.invite_respond(now, id, &resp);
            }
        }
        self.event(CallEvent::Bye { call: id });
        self.end_call(id, TerminationReason::RemoteBye);
    }

    fn on_cancel(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
        let invite_key = key_with_method(req, "INVITE");
        let Some(e) = self.server_invites.get(&invite_key) else {
            self.tx_reply(now, key, req, 481, peer);
            return;
        };
        let (pending, call) = (e.tx.state() == ServerInviteState::Proceeding, e.call);
        let tag = call
            .and_then(|id| self.calls.get(&id))
            .map(|c| c.dialog.local_tag.clone());
        let resp = self.response(&req.headers, 200, "OK", tag.as_deref(), peer);
        self.tx_send(now, key, false, resp, peer);
        let Some(id) = call.filter(|_| pending) else {
            return;
        };
        if let Ok(resp) = self.dialog_response(id, 487, Vec::new()) {
            self.invite_respond(now, id, &resp);
        }
        let initial = self
            .calls
            .get(&id)
            .is_some_and(|c| c.state == CallState::Offered);
        if initial {
            self.event(CallEvent::Cancelled { call: id });
            self.end_call(id, TerminationReason::Cancelled);
        } else if let Some(c) = self.calls.get_mut(&id) {
            c.reinvite_pending = false;
        }
    }

    fn on_info(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
        let Some(id) = self.find_dialog(req) else {
            self.tx_reply(now, key, req, 481, peer);
            return;
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        if let Some(c) = self.calls.get_mut(&id)
            && !c.dialog.accept_remote_cseq(seq)
        {
            self.tx_reply(now, key, req, 500, peer);
            return;
        }
        self.tx_reply(now, key, req, 200, peer);
        let content_type = req.headers.content_type();
        let dtmf = parse_dtmf(content_type.as_deref(), &req.body);
        self.event(CallEvent::Info {
            call: id,
            content_type,
            body: req.body.clone(),
            dtmf,
        });
    }
}

/// Headers of an outgoing INVITE that the endpoint writes itself (canonical names).
const RESERVED: &[&str] = &[
    "Via",
    "Max-Forwards",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Route",
    "Record-Route",
    "Content-Type",
    "Content-Length",
    "Allow",
    "User-Agent",
];

/// A URI for an outgoing call must come out of `<...>` unchanged: that rules out spaces, quotes
/// and angle brackets, and anything that would read as header parameters.
fn check_uri(field: &str, uri: &str) -> Result<(), CommandError> {
    match message::NameAddr::parse("To", &format!("<{uri}>")) {
        Ok(n) if n.uri == uri && n.params.is_empty() && !uri.chars().any(char::is_control) => {
            Ok(())
        }
        _ => Err(CommandError::InvalidCall(format!(
            "{field} {uri:?} is not a usable URI"
        ))),
    }
}

fn transmit(peer: Peer, bytes: Vec<u8>) -> Output {
    Output::Transmit(Transmit {
        to: peer.addr,
        transport: peer.transport,
        bytes,
    })
}

/// Add `received` (and fill an empty `rport`) to the top Via (RFC 3261 18.2.1, RFC 3581).
fn stamp_via(top: &Via, raw_line: &str, source: SocketAddr) -> String {
    // The top value is the first element of the first Via line; the rest of the line stays.
    let rest = message::split_list(raw_line)
        .into_iter()
        .skip(1)
        .collect::<Vec<_>>();
    let mut v = top.clone();
    let ip = source.ip().to_string();
    let host_ip = v.host.trim_start_matches('[').trim_end_matches(']');
    if host_ip != ip {
        v.params.retain(|(n, _)| n != "received");
        v.params.push(("received".into(), Some(ip)));
    }
    for (n, val) in &mut v.params {
        if n == "rport" && val.is_none() {
            *val = Some(source.port().to_string());
        }
    }
    let mut s = format!("SIP/2.0/{} {}", v.transport, v.host);
    if let Some(p) = v.port {
        s.push_str(&format!(":{p}"));
    }
    for (n, val) in &v.params {
        s.push(';');
        s.push_str(n);
        if let Some(val) = val {
            s.push('=');
            s.push_str(val);
        }
    }
    for r in rest {
        s.push_str(", ");
        s.push_str(&r);
    }
    s
}

/// The server transaction key (17.2.3): branch + sent-by + method for RFC 3261 peers (ACK
/// matches the INVITE); for RFC 2543 peers (no magic cookie) the identifying headers.
fn tx_key(req: &Request) -> String {
    let method = match req.method {
        Method::Ack => "INVITE".to_owned(),
        ref m => m.as_str().to_owned(),
    };
    key_with_method(req, &method)
}

fn key_with_method(req: &Request, method: &str) -> String {
    let h = &req.headers;
    let via = h.top_via().ok();
    match via.as_ref().and_then(|v| v.branch().map(|b| (v, b))) {
        Some((v, b)) if b.starts_with("z9hG4bK") => format!("{b}|{}|{method}", v.sent_by()),
        _ => {
            let from_tag = h.from().ok().and_then(|f| f.tag().map(str::to_owned));
            let seq = h.cseq().map(|c| c.seq).unwrap_or_default();
            format!(
                "2543|{}|{}|{}|{}|{}|{method}",
                h.call_id().unwrap_or_default(),
                seq,
                from_tag.unwrap_or_default(),
                via.map(|v| v.sent_by()).unwrap_or_default(),
                req.uri,
            )
        }
    }
}

/// DTMF from an INFO body: `application/dtmf-relay` (`Signal=5`, `Duration=160`) or
/// `application/dtmf` (the digit alone).
pub fn parse_dtmf(content_type: Option<&str>, body: &[u8]) -> Option<Dtmf> {
    let text = std::str::from_utf8(body).ok()?;
    let digit_of = |s: &str| {
        let s = s.trim();
        let mut chars = s.chars();
        let c = chars.next()?.to_ascii_uppercase();
        if chars.next().is_some() {
            return match s.parse::<u8>().ok()? {
                10 => Some('*'),
                11 => Some('#'),
                _ => None,
            };
        }
        matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
    };
    match content_type? {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = digit_of(v),
                    "duration" => duration = v.trim().parse().ok(),
                    _ => {}
                }
            }
            digit.map(|digit| Dtmf {
                digit,
                duration_ms: duration,
            })
        }
        "application/dtmf" => digit_of(text).map(|digit| Dtmf {
            digit,
            duration_ms: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
