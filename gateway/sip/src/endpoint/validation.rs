//! The checks that reject what we must not act on: requests from outside the trunk allow-list
//! (403), malformed requests and RFC 4475's application-layer faults (400, 505), and outgoing
//! calls whose URIs or headers would not survive the trip into an INVITE.

use super::{CommandError, Endpoint, OutgoingCall, Peer};
use crate::message::{self, Method, Request, reason_phrase};
use crate::parse::ParseError;
use crate::uri::Uri;

impl Endpoint {
    /// A request from outside the trunk allow-list (and not from the peer of an outgoing leg):
    /// a stateless 403 with a Warning saying why. An ACK is never answered.
    pub(super) fn forbid(&mut self, peer: Peer, r: &Request) {
        if r.method == Method::Ack {
            return;
        }
        tracing::warn!(from = %peer.addr, method = %r.method, "request from outside the trunk allow-list: 403");
        let Some(mut resp) = self.response(&r.headers, 403, "Forbidden", None, peer) else {
            return;
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

    /// A new call from a source over its rate ([`crate::SipSettings::source_call_rate`]): a
    /// stateless 503 with Retry-After (RFC 3261 21.5.4), so a well-behaved peer backs off and
    /// nothing (transaction, call, media ports) is kept for it.
    pub(super) fn refuse_flood(&mut self, peer: Peer, r: &Request) {
        tracing::debug!(from = %peer.addr, "new call over the source's rate: 503");
        let Some(mut resp) = self.response(&r.headers, 503, "Service Unavailable", None, peer)
        else {
            return;
        };
        resp.headers.push("Retry-After", "5");
        resp.headers.push(
            "Reason",
            "SIP;cause=503;text=\"too many new calls from this address\"",
        );
        self.send_response(peer, &resp);
    }

    /// Validation beyond the parser: RFC 4475's application-layer faults.
    pub(super) fn validate(req: &Request) -> Result<(), Reject> {
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
        // `?headers` follow the host part; a '?' in the user part is legal (RFC 4475 intmeth),
        // and the URI's parser tells the two apart.
        if req.uri.headers().is_some() {
            return Err(Reject::bad("Request-URI carries headers"));
        }
        Ok(())
    }

    pub(super) fn answer_parse_error(&mut self, peer: Peer, e: &ParseError) {
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
}

/// What we check before acting on a request, with the response if it fails.
pub(super) struct Reject {
    pub(super) status: u16,
    pub(super) reason: String,
}

impl Reject {
    fn bad(reason: impl Into<String>) -> Self {
        Reject {
            status: 400,
            reason: reason.into(),
        }
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

/// Check an outgoing call before anything is built from it; returns the From display name,
/// quoted and escaped (empty when there is none).
pub(super) fn check_outgoing(call: &OutgoingCall) -> Result<(String, Uri), CommandError> {
    let bad = |m: String| CommandError::InvalidCall(m);
    let target = check_uri("target_uri", &call.target_uri)?;
    if !target.scheme().eq_ignore_ascii_case("sip") {
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
    Ok((display, target))
}

/// A URI for an outgoing call must come out of `<...>` unchanged: that rules out spaces, quotes
/// and angle brackets, and anything that would read as header parameters. Returns it parsed.
fn check_uri(field: &str, uri: &str) -> Result<Uri, CommandError> {
    match message::NameAddr::parse("To", &format!("<{uri}>")) {
        Ok(n) if n.uri == uri && n.params.is_empty() => Ok(n.uri),
        Ok(_) => Err(CommandError::InvalidCall(format!(
            "{field} {uri:?} is not a usable URI"
        ))),
        Err(e) => Err(CommandError::InvalidCall(format!(
            "{field} {uri:?} is not a usable URI: {}",
            e.problem
        ))),
    }
}
