//! The sans-IO user agent that the call layer drives: the UAS for calls from the trunk, and the
//! UAC for the legs we place to human agents when a call is transferred (we bridge the two as a
//! B2BUA, so each leg is a plain call of its own).
//!
//! Feed it datagrams or framed stream messages ([`Endpoint::handle_datagram`]) and the time
//! ([`Endpoint::handle_timeout`] when the last [`Output::Timeout`] is due); give it commands
//! ([`Endpoint::ring`], [`Endpoint::answer`], [`Endpoint::reject`], [`Endpoint::hangup`],
//! [`Endpoint::send_info`], [`Endpoint::invite`]). Then drain [`Endpoint::poll_output`]: bytes to
//! transmit and [`CallEvent`]s for the call layer, then the next deadline (the crate doc's poll
//! convention). No sockets, no clock, no tasks.
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
//!
//! The code is split by role, all of it `impl Endpoint` blocks on the one state: this file holds
//! the types, the entry points (`handle_*`, `poll_output`, the call layer's commands) and what
//! both roles share (building responses, in-dialog requests, ending calls); `uas` serves requests
//! from the trunk, `uac` places outgoing legs ([`Endpoint::invite`]) and takes the responses to
//! our requests, and `validation` holds the checks that reject requests (403, 400, 505) and
//! outgoing calls that would not make a valid INVITE.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dialog::Dialog;
use super::message::{Headers, Message, Method, Request, Response, Via, reason_phrase};
use super::parse;
use super::serialize;
use super::timed::{Timed, Timer};
use super::transaction::{ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TxOutput};
use super::{SipSettings, Transport};

use super::message;

mod flood;
mod uac;
mod uas;
mod validation;

pub use uas::parse_dtmf;

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

/// One thing the endpoint asks of its driver, from [`Endpoint::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes.
    Transmit(Transmit),
    /// Tell the call layer.
    Event(CallEvent),
    /// Nothing else is pending: call [`Endpoint::handle_timeout`] at this instant, or earlier
    /// with new input; `None` when no timer runs (come back only with new input).
    Timeout(Option<Instant>),
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
        /// The registered agent who placed it, digest-authenticated: only for a call to a
        /// feature code (a Request-URI user starting with `*`, such as `*21`), which agents'
        /// phones may place from anywhere when the registrar is on.
        agent: Option<String>,
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
    /// An agent's phone registered (digest-authenticated) at `contact` for `expires`, from
    /// `source` over `transport`. Not about a call: the queues learn where to ring the agent.
    AgentRegistered {
        /// The agent's user name (`[sip.agents.<user>]`).
        user: String,
        /// The Contact URI the phone registered.
        contact: String,
        /// Where the REGISTER came from.
        source: SocketAddr,
        /// The transport it came on.
        transport: Transport,
        /// How long the binding holds unless refreshed.
        expires: std::time::Duration,
    },
    /// An agent's registration ended: removed by the phone, or expired unrefreshed.
    AgentUnregistered {
        /// The agent's user name.
        user: String,
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
    /// What the inputs caused, in order, until [`Endpoint::poll_output`] hands it out.
    out: VecDeque<Output>,
    /// Agents' registrations, when [`SipSettings::registrar`] is set.
    registrar: Option<crate::registrar::Registrar>,
    /// Branch ids, tags and Call-IDs, seeded from [`SipSettings::rng_seed`]. In a cell because
    /// responses (which may need a To tag) are built through `&self`.
    rng: RefCell<StdRng>,
    /// New calls per source address ([`SipSettings::source_call_rate`]).
    call_rate: flood::CallRate,
}

impl Endpoint {
    /// An endpoint with these settings, its RNG seeded from [`SipSettings::rng_seed`].
    pub fn new(settings: SipSettings) -> Self {
        let mut rng = StdRng::seed_from_u64(settings.rng_seed);
        let registrar = settings
            .registrar
            .clone()
            .map(|r| crate::registrar::Registrar::new(r, rng.random()));
        Endpoint {
            registrar,
            rng: RefCell::new(rng),
            call_rate: flood::CallRate::new(settings.source_call_rate, settings.source_call_burst),
            settings,
            calls: HashMap::new(),
            server_invites: Timed::default(),
            server_others: Timed::default(),
            clients: Timed::default(),
            client_invites: Timed::default(),
            next_call: 1,
            out: VecDeque::new(),
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
    ) {
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
            // An agent's phone registers from wherever it is: digest authentication decides.
            Ok(Message::Request(r))
                if !(allowed
                    || self.is_outbound_peer(from, &r)
                    || (self.registrar.is_some()
                        && (r.method == Method::Register || is_feature_code(&r)))) =>
            {
                self.forbid(peer, &r);
            }
            Ok(Message::Request(r)) => self.handle_request(now, peer, r),
        }
    }

    /// The next thing to do: what the inputs so far caused, in order, and once that is all
    /// handed out, [`Output::Timeout`] with the next timer deadline. Drain it after every input
    /// until it says `Timeout` (see the crate doc's poll convention).
    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.next_deadline()),
        }
    }

    /// The earliest timer deadline of any transaction.
    fn next_deadline(&mut self) -> Option<Instant> {
        [
            self.server_invites.next_deadline(),
            self.server_others.next_deadline(),
            self.clients.next_deadline(),
            self.client_invites.next_deadline(),
            self.registrar.as_ref().and_then(|r| r.next_expiry()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run the timers that are due at `now`: retransmissions, and timeouts that end calls.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self
            .registrar
            .as_mut()
            .map(|r| r.expire(now))
            .unwrap_or_default();
        for user in expired {
            tracing::info!(%user, "agent registration expired");
            self.event(CallEvent::AgentUnregistered { user });
        }
        let mut no_ack = Vec::new();
        for key in self.server_invites.due(now) {
            let Some(e) = self.server_invites.get_mut(&key) else {
                continue;
            };
            for o in e.tx.handle_timeout(now) {
                match o {
                    TxOutput::Retransmit(bytes) => self.out.push_back(transmit(e.peer, bytes)),
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
                    TxOutput::Retransmit(bytes) => self.out.push_back(transmit(e.peer, bytes)),
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
                    TxOutput::Retransmit(bytes) => self.out.push_back(transmit(e.peer, bytes)),
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
    }

    // ---- commands from the call layer -------------------------------------------------------

    /// Send 180 Ringing for an offered call.
    pub fn ring(&mut self, now: Instant, call: CallId) -> Result<(), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Offered {
            return Err(CommandError::WrongState);
        }
        let resp = self.dialog_response(call, 180, Vec::new())?;
        self.invite_respond(now, call, &resp);
        Ok(())
    }

    /// Answer the pending INVITE (initial or re-INVITE) with 200 OK and this SDP.
    pub fn answer(&mut self, now: Instant, call: CallId, sdp: Vec<u8>) -> Result<(), CommandError> {
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
        Ok(())
    }

    /// Refuse the pending INVITE with a final error status (e.g. 486, 503, 488 for a re-INVITE).
    /// For the initial INVITE the call ends; for a re-INVITE the call goes on unchanged.
    pub fn reject(&mut self, now: Instant, call: CallId, status: u16) -> Result<(), CommandError> {
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
        Ok(())
    }

    /// End the call: BYE once answered (after the ACK, RFC 3261 15), 480 before answer.
    ///
    /// An outgoing leg not yet answered is cancelled: CANCEL now if a provisional response has
    /// arrived, otherwise as soon as one does (RFC 3261 9.1); if none comes, timer B ends the
    /// leg. `CallTerminated` (LocalHangup) follows the INVITE's final response, normally 487.
    pub fn hangup(&mut self, now: Instant, call: CallId) -> Result<(), CommandError> {
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
        Ok(())
    }

    /// Send INFO in the dialog (e.g. DTMF relay towards the trunk).
    pub fn send_info(
        &mut self,
        now: Instant,
        call: CallId,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), CommandError> {
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
        Ok(())
    }

    // ---- internals ----------------------------------------------------------------------------

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().random()
    }

    /// A fresh To/From tag.
    fn new_tag(&self) -> String {
        format!("{:016x}", self.random_u64())
    }

    fn event(&mut self, e: CallEvent) {
        self.out.push_back(Output::Event(e));
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
        self.out
            .push_back(transmit(peer, serialize::response(resp)));
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
        self.out.push_back(transmit(peer, bytes.clone()));
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

    fn send_bye(&mut self, now: Instant, call: CallId) {
        self.send_in_dialog(now, call, Method::Bye, &[], Vec::new());
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = CallState::Ending;
        }
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

#[cfg(test)]
mod tests;

/// A request to a feature code (`sip:*21@gateway`): the Request-URI's user starts with `*`.
/// Only registered agents place these (authenticated like their REGISTER); INVITE and the ACK
/// of its non-2xx answer pass the trunk allow-list for that.
pub(crate) fn is_feature_code(r: &Request) -> bool {
    matches!(r.method, Method::Invite | Method::Ack)
        && r.uri.user().is_some_and(|u| u.starts_with('*'))
}
