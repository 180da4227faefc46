//! A dialog (RFC 3261 12): the state that in-dialog requests are checked against and built
//! from, for calls we answer (UAS) and for the legs we place to agents (UAC).
//!
//! As UAS we take the route set from the INVITE's Record-Route in order, the remote target from
//! its Contact, and our local tag from the To of our responses. As UAC (12.1.2) the 2xx decides:
//! its Record-Route reversed is the route set, its Contact the remote target, its To tag the
//! remote tag; the local CSeq goes on from the INVITE's. Loose routing (`;lr`) is assumed:
//! carrier trunks, SBCs and PBXes use it, and strict routing (RFC 2543) is not worth the code.
//! Early dialogs (a 1xx with a tag) are not kept: we send nothing inside one but CANCEL, which
//! is built from the INVITE, so they would be state without a use.

use super::message::{HeaderError, Headers, Method, NameAddr, Request, Response};
use super::uri::Uri;

#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub(crate) call_id: String,
    pub(crate) local_tag: String,
    /// The caller's From tag; empty for an RFC 2543 peer that sent none.
    pub(crate) remote_tag: String,
    /// Our URI without tag: the INVITE's To as UAS, its From as UAC.
    pub(crate) local: NameAddr,
    /// The peer with its tag: the caller's From as UAS, the callee's To (from the 2xx) as UAC.
    pub(crate) remote: NameAddr,
    pub(crate) remote_target: Uri,
    pub(crate) route_set: Vec<String>,
    pub(crate) local_cseq: u32,
    pub(crate) remote_cseq: u32,
}

impl Dialog {
    /// The dialog a 2xx/18x to this INVITE creates.
    pub(crate) fn uas(invite: &Request, local_tag: &str) -> Result<Dialog, HeaderError> {
        let h = &invite.headers;
        let remote = h.from()?;
        let mut local = h.to()?;
        local.params.retain(|(n, _)| n != "tag");
        let remote_target = h
            .contact()?
            .into_iter()
            .next()
            .map(|c| c.uri)
            .unwrap_or_else(|| remote.uri.clone());
        Ok(Dialog {
            call_id: h.call_id()?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote.tag().unwrap_or_default().to_owned(),
            route_set: h.record_route()?.iter().map(NameAddr::render).collect(),
            remote_cseq: h.cseq()?.seq,
            local_cseq: 0,
            local,
            remote,
            remote_target,
        })
    }

    /// The dialog a 2xx to our INVITE creates (12.1.2). A 2xx without a Contact (which RFC 3261
    /// requires) is still usable: requests then go to the INVITE's Request-URI.
    pub(crate) fn uac(invite: &Request, ok: &Response) -> Result<Dialog, HeaderError> {
        let (inv, h) = (&invite.headers, &ok.headers);
        let mut local = inv.from()?;
        let local_tag = local.tag().unwrap_or_default().to_owned();
        local.params.retain(|(n, _)| n != "tag");
        let remote = h.to()?;
        let remote_target = h
            .contact()?
            .into_iter()
            .next()
            .map_or_else(|| invite.uri.clone(), |c| c.uri);
        let mut route_set: Vec<String> = h.record_route()?.iter().map(NameAddr::render).collect();
        route_set.reverse();
        Ok(Dialog {
            call_id: inv.call_id()?.to_owned(),
            local_tag,
            remote_tag: remote.tag().unwrap_or_default().to_owned(),
            local,
            remote,
            remote_target,
            route_set,
            local_cseq: inv.cseq()?.seq,
            // "empty" until the callee sends a request (12.1.2); CSeq numbers start above 0 in
            // practice, so 0 stands for empty without an Option everywhere else.
            remote_cseq: 0,
        })
    }

    /// Our half of a dialog for an INVITE we sent, before any 2xx: it stands in the call's
    /// place until [`Dialog::uac`] replaces it, so that the call record always has a dialog.
    /// The endpoint never matches requests against it (it has no remote tag yet).
    pub(crate) fn uac_pending(invite: &Request) -> Result<Dialog, HeaderError> {
        let inv = &invite.headers;
        let mut local = inv.from()?;
        let local_tag = local.tag().unwrap_or_default().to_owned();
        local.params.retain(|(n, _)| n != "tag");
        Ok(Dialog {
            call_id: inv.call_id()?.to_owned(),
            local_tag,
            remote_tag: String::new(),
            local,
            remote: inv.to()?,
            remote_target: invite.uri.clone(),
            route_set: Vec::new(),
            local_cseq: inv.cseq()?.seq,
            remote_cseq: 0,
        })
    }

    /// Whether an in-dialog request (To tag = ours, From tag = theirs) belongs here.
    pub(crate) fn matches(
        &self,
        call_id: &str,
        to_tag: Option<&str>,
        from_tag: Option<&str>,
    ) -> bool {
        self.call_id == call_id
            && to_tag == Some(self.local_tag.as_str())
            && from_tag.unwrap_or_default() == self.remote_tag
    }

    /// Accept a remote CSeq for a new in-dialog request: it must grow (12.2.2), otherwise the
    /// request is answered 500.
    pub(crate) fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        if seq <= self.remote_cseq {
            return false;
        }
        self.remote_cseq = seq;
        true
    }

    /// Build an in-dialog request (12.2.1.1); the caller adds Via first.
    pub(crate) fn request(
        &mut self,
        method: Method,
        via: String,
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) -> Request {
        self.local_cseq += 1;
        self.build(method, self.local_cseq, via, extra, body)
    }

    /// The ACK for the 2xx that created this dialog (13.2.2.4): in the dialog, but with the
    /// INVITE's CSeq number (the ACK is not a new request) and a Via of its own (`via` carries
    /// a new branch: the ACK for a 2xx is its own transaction). Call it before any other
    /// request, while the local CSeq is still the INVITE's.
    pub(crate) fn ack(&self, via: String, extra: &[(&str, String)]) -> Request {
        self.build(Method::Ack, self.local_cseq, via, extra, Vec::new())
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        via: String,
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) -> Request {
        let mut headers = Headers::default();
        headers.push("Via", via);
        headers.push("Max-Forwards", "70");
        let mut from = self.local.clone();
        from.params
            .push(("tag".into(), Some(self.local_tag.clone())));
        headers.push("From", from.render());
        headers.push("To", self.remote.render());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{seq} {method}"));
        for r in &self.route_set {
            headers.push("Route", r.clone());
        }
        for (n, v) in extra {
            headers.push(n, v.clone());
        }
        Request {
            method,
            uri: self.remote_target.clone(),
            version: "SIP/2.0".into(),
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::parse::parse_datagram;

    fn invite() -> Request {
        let m = "INVITE sip:12345@gw SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
From: \"A\" <sip:a@example>;tag=ft\r\nTo: <sip:12345@gw>\r\nCall-ID: d1\r\n\
CSeq: 7 INVITE\r\nContact: <sip:a@192.0.2.1:5062>\r\nl: 0\r\n\r\n";
        match parse_datagram(m.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uas_dialog_from_invite() {
        let mut d = Dialog::uas(&invite(), "lt").expect("dialog");
        assert_eq!(d.remote_tag, "ft");
        assert_eq!(d.remote_target, "sip:a@192.0.2.1:5062");
        assert_eq!(d.route_set, ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
        assert!(d.matches("d1", Some("lt"), Some("ft")));
        assert!(!d.matches("d1", Some("xx"), Some("ft")));
        assert!(!d.matches("d1", None, Some("ft")));
        assert!(!d.accept_remote_cseq(7), "not above the INVITE's");
        assert!(d.accept_remote_cseq(8));
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP me;branch=z9hG4bKb".into(),
            &[],
            Vec::new(),
        );
        assert_eq!(bye.uri, "sip:a@192.0.2.1:5062");
        assert_eq!(bye.headers.cseq().expect("cseq").seq, 1);
        assert_eq!(bye.headers.from().expect("from").tag(), Some("lt"));
        assert_eq!(bye.headers.to().expect("to").tag(), Some("ft"));
        assert_eq!(bye.headers.route().expect("route").len(), 2);
        let info = d.request(
            Method::Info,
            "SIP/2.0/UDP me;branch=z9hG4bKc".into(),
            &[],
            Vec::new(),
        );
        assert_eq!(info.headers.cseq().expect("cseq").seq, 2);
    }

    #[test]
    fn uac_dialog_from_our_invite_and_its_2xx() {
        let inv = "INVITE sip:agent@pbx SIP/2.0\r\n\
Via: SIP/2.0/UDP gw;branch=z9hG4bKi\r\nFrom: \"12345\" <sip:12345@gw>;tag=ours\r\n\
To: <sip:agent@pbx>\r\nCall-ID: out1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
        let ok = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP gw;branch=z9hG4bKi\r\n\
Record-Route: <sip:p2.example;lr>\r\nRecord-Route: <sip:p1.example;lr>\r\n\
From: \"12345\" <sip:12345@gw>;tag=ours\r\nTo: <sip:agent@pbx>;tag=theirs\r\n\
Call-ID: out1\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@10.0.0.7:5062>\r\nl: 0\r\n\r\n";
        let (Ok(Message::Request(inv)), Ok(Message::Response(ok))) = (
            parse_datagram(inv.as_bytes()),
            parse_datagram(ok.as_bytes()),
        ) else {
            panic!("test messages parse");
        };
        let pending = Dialog::uac_pending(&inv).expect("pending");
        assert_eq!(
            (pending.local_tag.as_str(), pending.remote_tag.as_str()),
            ("ours", "")
        );
        let mut d = Dialog::uac(&inv, &ok).expect("dialog");
        assert_eq!(d.local_tag, "ours");
        assert_eq!(d.remote_tag, "theirs");
        assert_eq!(d.remote_target, "sip:agent@10.0.0.7:5062");
        assert_eq!(
            d.route_set,
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"],
            "Record-Route reversed"
        );
        assert!(
            d.matches("out1", Some("ours"), Some("theirs")),
            "the callee's BYE"
        );
        let ack = d.ack("SIP/2.0/UDP gw;branch=z9hG4bKa".into(), &[]);
        assert_eq!(ack.headers.cseq().expect("cseq").to_string(), "1 ACK");
        assert_eq!(ack.uri, "sip:agent@10.0.0.7:5062");
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP gw;branch=z9hG4bKb".into(),
            &[],
            Vec::new(),
        );
        assert_eq!(bye.headers.cseq().expect("cseq").seq, 2);
        assert_eq!(bye.headers.from().expect("from").tag(), Some("ours"));
        assert_eq!(bye.headers.to().expect("to").tag(), Some("theirs"));
        assert_eq!(
            bye.headers.route().expect("route")[0].uri,
            "sip:p1.example;lr"
        );
        assert!(d.accept_remote_cseq(1), "remote CSeq starts empty");
    }
}
