//! Just enough SIP for a caller: build our requests (INVITE, ACK, BYE, CANCEL, OPTIONS), answer the
//! few requests a peer sends us, and parse what comes back. Lenient where practice is (compact
//! header names, `\n` line ends, any header case); anything malformed is `None`, never a panic.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { status: u16 },
}

/// A parsed message borrowing the datagram.
#[derive(Debug)]
pub struct Msg<'a> {
    pub start: Start<'a>,
    headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// Compact forms (RFC 3261 §7.3.3) of the headers we read.
fn canonical(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        other => other,
    }
}

/// Parse one datagram. `None` for anything that is not a well-formed SIP/2.0 message.
pub fn parse(buf: &[u8]) -> Option<Msg<'_>> {
    let (head_end, body_start) = find_blank_line(buf)?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let code = rest.split(' ').next()?;
        if code.len() != 3 {
            return None;
        }
        let status: u16 = code.parse().ok()?;
        if !(100..700).contains(&status) {
            return None;
        }
        Start::Response { status }
    } else {
        let mut parts = first.split(' ');
        let method = parts.next()?;
        let uri = parts.next()?;
        if parts.next()? != "SIP/2.0"
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return None;
        }
        Start::Request { method, uri }
    };
    let mut headers = Vec::with_capacity(12);
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A folded continuation line: we never need the folded part of the headers we read.
            continue;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((canonical(name.trim()), value.trim()));
    }
    let rest = &buf[body_start..];
    let msg = Msg {
        start,
        headers,
        body: rest,
    };
    let body = match msg.header("Content-Length") {
        Some(l) => {
            let len: usize = l.parse().ok()?;
            rest.get(..len)?
        }
        None => rest,
    };
    Some(Msg { body, ..msg })
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l + 1 < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}

impl<'a> Msg<'a> {
    /// The first value of a header, by its full name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Every value of a header, in order (Via, Record-Route).
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn call_id(&self) -> Option<&'a str> {
        self.header("Call-ID").filter(|c| !c.is_empty())
    }

    /// `(number, method)` of the CSeq header.
    pub fn cseq(&self) -> Option<(u32, &'a str)> {
        let mut parts = self.header("CSeq")?.split_whitespace();
        let n = parts.next()?.parse().ok()?;
        Some((n, parts.next()?))
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { status } => Some(status),
            Start::Request { .. } => None,
        }
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<&'a str> {
        self.header("To").and_then(tag)
    }

    /// The URI of the (first) Contact header.
    pub fn contact_uri(&self) -> Option<&'a str> {
        self.header("Contact").map(name_addr_uri)
    }
}

/// The URI of a name-addr (`"x" <sip:a@b>;tag=1`) or addr-spec (`sip:a@b;tag=1`).
pub fn name_addr_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => {
            let v = value.split(',').next().unwrap_or(value);
            v.split(';').next().unwrap_or(v).trim()
        }
    }
}

/// The `tag` parameter of a From or To value.
pub fn tag(value: &str) -> Option<&str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
    })
}

/// Where requests to a SIP URI go: its host (an IP literal; names are not resolved here) and
/// port (5060 when absent). The URI is read by the gateway's own parser ([`sip::Uri`]).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let uri = sip::Uri::parse(uri).ok()?;
    if !uri.scheme().eq_ignore_ascii_case("sip") {
        return None;
    }
    Some(SocketAddr::new(uri.ip()?, uri.port().unwrap_or(5060)))
}

/// The fixed parts of one call's dialog, from our side.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Our address of record, e.g. `sip:caller-17@127.0.0.1`.
    pub local_uri: String,
    /// Our host:port, for Via and Contact.
    pub local_hostport: String,
    /// The number we dial, e.g. `sip:12345@127.0.0.1:5060`.
    pub remote_uri: String,
    pub remote_tag: Option<String>,
    /// Where in-dialog requests go: the Contact of the 2xx (the remote URI until then).
    pub remote_target: String,
}

impl Dialog {
    fn common(&self, out: &mut String, method: &str, uri: &str, branch: &str, cseq: u32) {
        let _ = write!(
            out,
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {hp};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{lu}>;tag={lt}\r\n\
             To: <{ru}>",
            hp = self.local_hostport,
            lu = self.local_uri,
            lt = self.local_tag,
            ru = self.remote_uri,
        );
        if let Some(t) = &self.remote_tag {
            let _ = write!(out, ";tag={t}");
        }
        let _ = write!(
            out,
            "\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.call_id
        );
    }

    /// The INVITE with our SDP offer.
    pub fn invite(&self, branch: &str, sdp: &str) -> Vec<u8> {
        let mut out = String::with_capacity(700 + sdp.len());
        self.common(&mut out, "INVITE", &self.remote_uri, branch, 1);
        let _ = write!(
            out,
            "Contact: <sip:{user}@{hp}>\r\n\
             Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO\r\n\
             User-Agent: call-load\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            user = self.user(),
            hp = self.local_hostport,
            len = sdp.len(),
        );
        out.into_bytes()
    }

    /// ACK for a 2xx: a new transaction to the remote target (RFC 3261 §13.2.2.4).
    pub fn ack_2xx(&self, branch: &str) -> Vec<u8> {
        let mut out = String::with_capacity(400);
        self.common(&mut out, "ACK", &self.remote_target, branch, 1);
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }

    /// ACK for a non-2xx final answer: part of the INVITE transaction, same branch and
    /// Request-URI as the INVITE, To with the answer's tag (RFC 3261 §17.1.1.3).
    pub fn ack_failure(&self, invite_branch: &str, to_tag: Option<&str>) -> Vec<u8> {
        let d = Dialog {
            remote_tag: to_tag.map(str::to_owned),
            ..self.clone()
        };
        let mut out = String::with_capacity(400);
        d.common(&mut out, "ACK", &self.remote_uri, invite_branch, 1);
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }

    /// CANCEL of our INVITE: same branch, Request-URI and CSeq number, no To tag.
    pub fn cancel(&self, invite_branch: &str) -> Vec<u8> {
        let d = Dialog {
            remote_tag: None,
            ..self.clone()
        };
        let mut out = String::with_capacity(400);
        d.common(&mut out, "CANCEL", &self.remote_uri, invite_branch, 1);
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }

    pub fn bye(&self, branch: &str, cseq: u32) -> Vec<u8> {
        let mut out = String::with_capacity(400);
        self.common(&mut out, "BYE", &self.remote_target, branch, cseq);
        out.push_str("User-Agent: call-load\r\nContent-Length: 0\r\n\r\n");
        out.into_bytes()
    }

    fn user(&self) -> &str {
        let rest = self
            .local_uri
            .strip_prefix("sip:")
            .unwrap_or(&self.local_uri);
        rest.split('@').next().unwrap_or(rest)
    }
}

/// An out-of-dialog OPTIONS, to see whether the target answers at all.
pub fn options(target: &str, local_hostport: &str, call_id: &str, branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local_hostport};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:call-load@{local_hostport}>;tag=probe\r\n\
         To: <{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A response to `req` (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq copied, To copied with
/// `to_tag` added when it has none. `None` when the request lacks what a response needs.
pub fn response(
    req: &Msg<'_>,
    status: u16,
    reason: &str,
    to_tag: &str,
    body: Option<(&str, &str)>,
) -> Option<Vec<u8>> {
    let mut out = String::with_capacity(500);
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    let mut vias = 0;
    for via in req.headers("Via") {
        let _ = write!(out, "Via: {via}\r\n");
        vias += 1;
    }
    if vias == 0 {
        return None;
    }
    let from = req.header("From")?;
    let to = req.header("To")?;
    let call_id = req.call_id()?;
    let cseq = req.header("CSeq")?;
    let _ = write!(out, "From: {from}\r\nTo: {to}");
    if tag(to).is_none() {
        let _ = write!(out, ";tag={to_tag}");
    }
    let _ = write!(out, "\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n");
    match body {
        Some((content_type, body)) => {
            let _ = write!(
                out,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog {
            call_id: "cl-1-7".into(),
            local_tag: "t7".into(),
            local_uri: "sip:caller-7@127.0.0.1".into(),
            local_hostport: "127.0.0.1:5999".into(),
            remote_uri: "sip:12345@127.0.0.1:5060".into(),
            remote_tag: None,
            remote_target: "sip:12345@127.0.0.1:5060".into(),
        }
    }

    #[test]
    fn invite_round_trips_through_the_parser() {
        let inv = dialog().invite("z9hG4bK-1", "v=0\r\n");
        let m = parse(&inv).expect("parses");
        assert_eq!(
            m.start,
            Start::Request {
                method: "INVITE",
                uri: "sip:12345@127.0.0.1:5060"
            }
        );
        assert_eq!(m.call_id(), Some("cl-1-7"));
        assert_eq!(m.cseq(), Some((1, "INVITE")));
        assert_eq!(m.body, b"v=0\r\n");
        assert_eq!(m.header("from").and_then(tag), Some("t7"));
        assert_eq!(m.to_tag(), None);
    }

    #[test]
    fn reads_a_200_with_compact_headers_and_contact() {
        let raw = "SIP/2.0 200 OK\nv: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1\n\
                   f: <sip:caller-7@127.0.0.1>;tag=t7\nt: \"IVR\" <sip:12345@127.0.0.1>;tag=gw9\n\
                   i: cl-1-7\nCSeq: 1 INVITE\nm: <sip:gw@127.0.0.1:5080;transport=udp>\n\
                   l: 4\n\nv=0\nextra";
        let m = parse(raw.as_bytes()).expect("parses");
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.to_tag(), Some("gw9"));
        assert_eq!(m.contact_uri(), Some("sip:gw@127.0.0.1:5080;transport=udp"));
        assert_eq!(
            m.contact_uri().and_then(uri_addr),
            Some("127.0.0.1:5080".parse().expect("addr"))
        );
        assert_eq!(m.body, b"v=0\n");
    }

    #[test]
    fn uri_addresses() {
        let a = |s: &str| uri_addr(s).map(|a| a.to_string());
        assert_eq!(a("sip:127.0.0.1").as_deref(), Some("127.0.0.1:5060"));
        assert_eq!(
            a("sip:u@10.0.0.1:7000;lr").as_deref(),
            Some("10.0.0.1:7000")
        );
        assert_eq!(a("sip:u@[::1]:5070").as_deref(), Some("[::1]:5070"));
        assert_eq!(a("sip:u@example.com"), None);
        assert_eq!(a("tel:12345"), None);
        assert_eq!(a("sip:u@1.2.3.4:99999"), None);
    }

    #[test]
    fn answers_a_bye_with_the_request_headers() {
        let raw = "BYE sip:caller-7@127.0.0.1:5999 SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgw\r\n\
                   Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
                   From: <sip:12345@127.0.0.1>;tag=gw9\r\nTo: <sip:caller-7@127.0.0.1>;tag=t7\r\n\
                   Call-ID: cl-1-7\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = parse(raw.as_bytes()).expect("parses");
        let r = response(&m, 200, "OK", "x", None).expect("answerable");
        let r = parse(&r).expect("our answer parses");
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.headers("Via").count(), 2);
        assert_eq!(r.to_tag(), Some("t7"));
        assert_eq!(r.cseq(), Some((5, "BYE")));
    }

    #[test]
    fn garbage_is_none() {
        for raw in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 099 X\r\n\r\n",
            b"INVITE sip:x SIP/3.0\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\nNoColon\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(parse(raw).is_none(), "{:?}", String::from_utf8_lossy(raw));
        }
        let no_via = parse(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n").expect("parses");
        assert!(response(&no_via, 200, "OK", "t", None).is_none());
    }
}
