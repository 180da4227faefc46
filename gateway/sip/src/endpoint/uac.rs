//! The UAC role: the legs we place to human agents ([`Endpoint::invite`]) and the responses to
//! every request of ours, matched to its client transaction (RFC 3261 17.1): INVITE progress,
//! answer or failure, CANCEL, and the ACK and BYE for a 2xx from a second fork.

use std::net::SocketAddr;
use std::time::Instant;

use super::validation::check_outgoing;
use super::{
    ALLOW, Call, CallEvent, CallId, CallState, ClientInviteEntry, CommandError, Endpoint,
    OutgoingCall, Peer, TerminationReason, transmit,
};
use crate::dialog::Dialog;
use crate::message::{Headers, Method, Request, Response};
use crate::serialize;
use crate::transaction::{ClientInvite, TxOutput, ack_for_non_2xx, cancel_for};

impl Endpoint {
    /// Place an outgoing call leg: send the INVITE and run its client transaction (timers A and
    /// B, RFC 3261 17.1.1). Returns the new leg's id (the call layer needs it before anything
    /// about the leg comes out); the INVITE to transmit waits in [`Endpoint::poll_output`]. What
    /// follows comes as [`CallEvent::OutgoingProgress`], then [`CallEvent::OutgoingAnswered`] or
    /// [`CallEvent::OutgoingFailed`], then [`CallEvent::CallTerminated`].
    ///
    /// The URIs, display name and extra headers come from configuration and from the caller's
    /// data; anything that would not survive the trip into a header is refused with
    /// [`CommandError::InvalidCall`] rather than sent broken.
    pub fn invite(&mut self, now: Instant, call: OutgoingCall) -> Result<CallId, CommandError> {
        let (display, target) = check_outgoing(&call)?;
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
            uri: target,
            version: "SIP/2.0".into(),
            headers: h,
            body: call.sdp_offer,
        };
        // Our own headers: this fails only if the checks above missed something.
        let dialog =
            Dialog::uac_pending(&invite).map_err(|e| CommandError::InvalidCall(e.to_string()))?;
        let id = CallId(self.next_call);
        self.next_call += 1;
        let bytes = serialize::request(&invite);
        self.out.push_back(transmit(peer, bytes.clone()));
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
        Ok(id)
    }

    /// CANCEL our pending INVITE (9.1). The CANCEL shares the INVITE's branch, so its client
    /// transaction sits in `clients` under the key the INVITE has in `client_invites`.
    pub(super) fn send_cancel(&mut self, now: Instant, call: CallId) {
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

    /// Whether a request from outside the trunk allow-list belongs to a dialog of an outgoing
    /// leg whose peer is that address (a BYE from the agent's side).
    pub(super) fn is_outbound_peer(&self, from: SocketAddr, req: &Request) -> bool {
        self.find_dialog(req)
            .and_then(|id| self.calls.get(&id))
            .is_some_and(|c| c.outbound && c.peer.addr.ip() == from.ip())
    }

    /// A response, matched to our client transaction by branch and CSeq method (17.1.3). It is
    /// taken from the trunk, or from the address the request went to (an agents' PBX).
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        trusted: bool,
        r: &Response,
    ) {
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
    pub(super) fn invite_response(
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
                self.out.push_back(transmit(e.peer, ack));
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
                self.out.push_back(transmit(e.peer, ack));
                tracing::info!(call = call.0, status, "outgoing call failed");
                self.outgoing_failed(call, status, &r.reason);
            }
        }
    }

    pub(super) fn outgoing_provisional(&mut self, now: Instant, call: CallId, status: u16) {
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
    pub(super) fn outgoing_2xx(&mut self, now: Instant, branch: &str, r: &Response) {
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
            self.out.push_back(transmit(e.peer, ack.clone()));
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
        self.out.push_back(transmit(peer, ack.clone()));
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
    pub(super) fn outgoing_failed(&mut self, call: CallId, status: u16, reason: &str) {
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
}
