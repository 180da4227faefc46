//! The UAS side of a dialog (RFC 3261 12): the state that in-dialog requests are checked
//! against and built from.
//!
//! As UAS we take the route set from the INVITE's Record-Route in order, the remote target from
//! its Contact, and our local tag from the To of our responses. Loose routing (`;lr`) is assumed:
//! carrier trunks and SBCs use it, and strict routing (RFC 2543) is not worth the code.

use super::message::{HeaderError, Headers, Method, NameAddr, Request};

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// The caller's From tag; empty for an RFC 2543 peer that sent none.
    pub remote_tag: String,
    /// Our URI (the INVITE's To, without tag).
    pub local: NameAddr,
    /// The caller's From (with tag).
    pub remote: NameAddr,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
}

impl Dialog {
    /// The dialog a 2xx/18x to this INVITE creates.
    pub fn uas(invite: &Request, local_tag: &str) -> Result<Dialog, HeaderError> {
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

    /// Whether an in-dialog request (To tag = ours, From tag = theirs) belongs here.
    pub fn matches(&self, call_id: &str, to_tag: Option<&str>, from_tag: Option<&str>) -> bool {
        self.call_id == call_id
            && to_tag == Some(self.local_tag.as_str())
            && from_tag.unwrap_or_default() == self.remote_tag
    }

    /// Accept a remote CSeq for a new in-dialog request: it must grow (12.2.2), otherwise the
    /// request is answered 500.
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        if seq <= self.remote_cseq {
            return false;
        }
        self.remote_cseq = seq;
        true
    }

    /// Build an in-dialog request (12.2.1.1); the caller adds Via first.
    pub fn request(
        &mut self,
        method: Method,
        via: String,
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) -> Request {
        self.local_cseq += 1;
        let mut headers = Headers::default();
        headers.push("Via", via);
        headers.push("Max-Forwards", "70");
        let mut from = self.local.clone();
        from.params
            .push(("tag".into(), Some(self.local_tag.clone())));
        headers.push("From", from.render());
        headers.push("To", self.remote.render());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{} {}", self.local_cseq, method));
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
    use crate::sip::message::Message;
    use crate::sip::parse::parse_datagram;

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
}
