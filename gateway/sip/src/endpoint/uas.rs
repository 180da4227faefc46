//! The UAS role: requests from the trunk (and in-dialog requests from an agent's side), each in
//! its server transaction (RFC 3261 17.2): new calls, re-INVITEs, the ACK for our 2xx, BYE,
//! CANCEL, OPTIONS and INFO, and the responses the call layer's commands send to the pending
//! INVITE.

use std::time::Instant;

use super::{
    ACCEPT, ALLOW, Call, CallEvent, CallId, CallState, CommandError, Dtmf, Endpoint, Peer,
    ServerInviteEntry, TerminationReason, transmit,
};
use crate::dialog::Dialog;
use crate::message::{Method, Request, Response, reason_phrase};
use crate::registrar::Decision;
use crate::serialize;
use crate::transaction::{ServerInvite, ServerInviteState, ServerNonInvite};

impl Endpoint {
    pub(super) fn handle_request(&mut self, now: Instant, peer: Peer, req: Request) {
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
                        self.out.push_back(transmit(peer, bytes));
                    }
                    return;
                }
            }
            _ => {
                if let Some((tx, _)) = self.server_others.get(&key) {
                    if let Some(bytes) = tx.on_retransmission() {
                        self.out.push_back(transmit(peer, bytes));
                    }
                    return;
                }
            }
        }
        // A new call beyond its source's rate: refused before anything is set up for it.
        if req.method == Method::Invite
            && req.headers.to().is_ok_and(|t| t.tag().is_none())
            && !self.call_rate.admit(now, peer.addr.ip())
        {
            self.refuse_flood(peer, &req);
            return;
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
            Method::Register if self.registrar.is_some() => self.on_register(now, peer, &key, &req),
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

    /// A REGISTER from an agent's phone: challenge, refuse or bind (see [`crate::registrar`]).
    fn on_register(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
        let Some(registrar) = self.registrar.as_mut() else {
            return;
        };
        let decision = registrar.handle(now, req);
        let (status, extra): (u16, Vec<(&str, String)>) = match &decision {
            Decision::Challenge { stale } => (
                401,
                vec![("WWW-Authenticate", registrar.challenge(now, *stale))],
            ),
            Decision::Forbidden(why) => {
                let user = req
                    .headers
                    .to()
                    .ok()
                    .and_then(|t| t.uri.user().map(str::to_owned))
                    .unwrap_or_default();
                tracing::warn!(from = %peer.addr, %user, why, "agent registration refused: 403");
                (403, Vec::new())
            }
            Decision::TooBrief => (
                423,
                vec![("Min-Expires", registrar.min_expires().to_string())],
            ),
            Decision::Bad(why) => {
                tracing::info!(from = %peer.addr, why, "bad REGISTER: 400");
                (400, Vec::new())
            }
            Decision::Done {
                contact, expires, ..
            } => (
                200,
                contact
                    .iter()
                    .map(|c| ("Contact", format!("<{c}>;expires={expires}")))
                    .collect(),
            ),
        };
        let resp = self.simple(req, status, peer).map(|mut r| {
            for (name, value) in extra {
                r.headers.push(name, value);
            }
            r
        });
        self.tx_send(now, key, false, resp, peer);
        if let Decision::Done {
            user,
            contact,
            expires,
        } = decision
        {
            match contact {
                Some(contact) => {
                    tracing::info!(%user, %contact, expires, "agent registered");
                    self.event(CallEvent::AgentRegistered {
                        user,
                        contact,
                        source: peer.addr,
                        transport: peer.transport,
                        expires: std::time::Duration::from_secs(u64::from(expires)),
                    });
                }
                None if req.headers.get("Contact").is_some() => {
                    tracing::info!(%user, "agent unregistered");
                    self.event(CallEvent::AgentUnregistered { user });
                }
                None => {}
            }
        }
    }

    /// Send a response through the transaction under `key` (so retransmissions repeat it).
    pub(super) fn tx_send(
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
            self.out.push_back(transmit(peer, bytes));
        }
    }

    pub(super) fn tx_reply(
        &mut self,
        now: Instant,
        key: &str,
        req: &Request,
        status: u16,
        peer: Peer,
    ) {
        let resp = self.simple(req, status, peer);
        self.tx_send(now, key, req.method == Method::Invite, resp, peer);
    }

    pub(super) fn on_invite(&mut self, now: Instant, peer: Peer, key: String, req: Request) {
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
        // A feature code (`*21`) is an agent's, authenticated like their REGISTER.
        let mut agent = None;
        if crate::endpoint::is_feature_code(&req)
            && let Some(registrar) = self.registrar.as_mut()
        {
            let (status, extra): (u16, Option<(&str, String)>) =
                match registrar.authenticate(now, &req) {
                    Ok(user) => {
                        agent = Some(user);
                        (0, None)
                    }
                    Err(Decision::Challenge { stale }) => (
                        401,
                        Some(("WWW-Authenticate", registrar.challenge(now, stale))),
                    ),
                    Err(Decision::Forbidden(why)) => {
                        tracing::warn!(from = %peer.addr, why, "feature code refused: 403");
                        (403, None)
                    }
                    Err(_) => (400, None),
                };
            if status != 0 {
                let resp = self.simple(&req, status, peer).map(|mut r| {
                    if let Some((name, value)) = extra {
                        r.headers.push(name, value);
                    }
                    r
                });
                self.tx_send(now, &key, is_invite, resp, peer);
                return;
            }
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
        let to = req
            .headers
            .to()
            .map(|t| t.uri.into_string())
            .unwrap_or_default();
        let event = CallEvent::IncomingCall {
            call: id,
            sip_call_id: call_id.to_owned(),
            agent,
            from: from.uri.to_string(),
            from_display: from.display.clone(),
            to,
            request_uri: req.uri.to_string(),
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

    pub(super) fn on_reinvite(&mut self, now: Instant, peer: Peer, key: String, req: Request) {
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
    pub(super) fn dialog_ack(&mut self, now: Instant, req: &Request) {
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

    pub(super) fn on_bye(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
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

    pub(super) fn on_cancel(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
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

    pub(super) fn on_info(&mut self, now: Instant, peer: Peer, key: &str, req: &Request) {
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

    /// A response to the call's pending INVITE, with our tag, Contact and Record-Route.
    pub(super) fn dialog_response(
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

    pub(super) fn invite_respond(&mut self, now: Instant, call: CallId, resp: &Response) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (peer, key) = (c.peer, c.invite_tx.clone());
        let bytes = serialize::response(resp);
        if let Some(e) = self.server_invites.get_mut(&key)
            && e.tx.respond(now, resp.status, bytes.clone())
        {
            self.out.push_back(transmit(peer, bytes));
        }
    }

    /// Timer H/L fired for an INVITE server transaction.
    pub(super) fn invite_timed_out(&mut self, now: Instant, call: CallId, key: &str) {
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
