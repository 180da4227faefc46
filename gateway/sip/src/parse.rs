//! The structural SIP parser: start line, header lines, framing. Nothing more.
//!
//! Following RFC 4475's layering, this parser rejects only what cannot be turned into a message:
//! a bad start line, a header line that is not `name: value`, a body whose extent is unknown
//! (Content-Length missing on a stream, repeated, non-numeric, or longer than the datagram).
//! Header *values* are checked lazily by the typed accessors in [`super::message`], so one bad
//! header costs a 400 naming it rather than a silent drop, and junk in unknown headers is legal.
//!
//! On failure the error carries what could be salvaged (the headers and whether it was a request)
//! so the endpoint can answer 400 when the message has enough headers to address a response.
//! Leading CRLFs (keep-alives, RFC 5626) are skipped; bytes beyond Content-Length in a datagram
//! are ignored (RFC 3261 18.3).

use super::message::{Headers, Message, Method, Request, Response, is_token_byte};
use super::uri::{Uri, UriError};

/// The layer of the fault, after RFC 4475's grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request or status line is malformed.
    StartLine,
    /// A header line is malformed (or a required one is unusable).
    HeaderSyntax,
    /// The message cannot be cut from its stream (Content-Length and body disagree).
    Framing,
}

/// What could be read of a message that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// Whether the start line was a request line.
    pub is_request: bool,
    /// The request's method, when the request line could be read.
    pub method: Option<Method>,
    /// The headers that could be read, enough to answer 400 when Via, From, To, Call-ID and CSeq
    /// are among them.
    pub headers: Headers,
}

/// A message that could not be parsed: why, and what of it could still be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct ParseError {
    /// The layer the fault is in.
    pub fault: Fault,
    /// What is wrong, short enough for a 400's reason phrase.
    pub problem: &'static str,
    /// What could be read, so that a malformed request can still be answered.
    pub salvage: Option<Box<Salvage>>,
}

impl ParseError {
    fn new(fault: Fault, problem: &'static str) -> Self {
        ParseError {
            fault,
            problem,
            salvage: None,
        }
    }
}

/// Largest message we accept (RFC 3261 asks UDP messages to stay below the MTU; TCP messages
/// in practice stay well below this).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Parse one datagram. Content-Length is optional; when present it bounds the body.
pub fn parse_datagram(buf: &[u8]) -> Result<Message, ParseError> {
    parse(buf, false)
}

/// Parse one complete stream message (as cut by [`frame`]); Content-Length is required.
pub fn parse_stream_message(buf: &[u8]) -> Result<Message, ParseError> {
    parse(buf, true)
}

/// Stream framing: how many bytes at the front of `buf` form one message (leading CRLFs
/// included), `Ok(None)` if more are needed, or an error if the stream cannot be framed.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let skip = leading_crlf(buf);
    let rest = buf.get(skip..).unwrap_or_default();
    let Some(head_end) = find(rest, b"\r\n\r\n") else {
        if rest.len() > MAX_MESSAGE {
            return Err(ParseError::new(Fault::Framing, "header section too long"));
        }
        return Ok(None);
    };
    let head = rest.get(..head_end).unwrap_or_default();
    let text = std::str::from_utf8(head)
        .map_err(|_| ParseError::new(Fault::HeaderSyntax, "header section is not UTF-8"))?;
    let (_, headers) = split_headers(text)?;
    let len = content_length(&headers)?.ok_or(ParseError::new(
        Fault::Framing,
        "Content-Length required on a stream",
    ))?;
    let total = skip + head_end + 4 + len;
    if total - skip > MAX_MESSAGE {
        return Err(ParseError::new(Fault::Framing, "message too long"));
    }
    Ok((buf.len() >= total).then_some(total))
}

fn leading_crlf(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse(buf: &[u8], stream: bool) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ParseError::new(Fault::Framing, "message too long"));
    }
    let buf = buf.get(leading_crlf(buf)..).unwrap_or_default();
    let head_end = find(buf, b"\r\n\r\n").ok_or(ParseError::new(
        Fault::Framing,
        "header section not terminated",
    ))?;
    let head = buf.get(..head_end).unwrap_or_default();
    let rest = buf.get(head_end + 4..).unwrap_or_default();
    let text = std::str::from_utf8(head)
        .map_err(|_| ParseError::new(Fault::HeaderSyntax, "header section is not UTF-8"))?;
    let (start, headers) = split_headers(text)?;
    let is_request = !is_sip_version_prefix(start);
    let salvage = |fault, problem| ParseError {
        fault,
        problem,
        salvage: Some(Box::new(Salvage {
            is_request,
            method: start
                .split(' ')
                .next()
                .filter(|m| is_request && !m.is_empty() && m.bytes().all(is_token_byte))
                .map(Method::parse),
            headers: headers.clone(),
        })),
    };
    let body = match content_length(&headers).map_err(|e| salvage(e.fault, e.problem))? {
        Some(len) => rest
            .get(..len)
            .ok_or_else(|| salvage(Fault::Framing, "Content-Length larger than the message"))?,
        None if stream => {
            return Err(salvage(
                Fault::Framing,
                "Content-Length required on a stream",
            ));
        }
        None => rest,
    };
    let body = body.to_vec();
    if is_request {
        let (method, uri, version) =
            request_line(start).map_err(|p| salvage(Fault::StartLine, p))?;
        Ok(Message::Request(Request {
            method,
            uri,
            version,
            headers,
            body,
        }))
    } else {
        let (version, status, reason) =
            status_line(start).map_err(|p| salvage(Fault::StartLine, p))?;
        Ok(Message::Response(Response {
            status,
            reason,
            version,
            headers,
            body,
        }))
    }
}

/// Split the header section into the start line and unfolded header fields.
fn split_headers(text: &str) -> Result<(&str, Headers), ParseError> {
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        // A bare CR or LF is refused in every line, continuations too: written back out it
        // would end the line early (found by the `sip_parse` fuzz target).
        if line.contains(['\r', '\n']) {
            return Err(ParseError::new(
                Fault::HeaderSyntax,
                "bare CR or LF in header",
            ));
        }
        if line.starts_with([' ', '\t']) {
            // folded continuation (RFC 3261 7.3.1): joins the previous value with one SP
            let Some(last) = fields.last_mut() else {
                return Err(ParseError::new(
                    Fault::HeaderSyntax,
                    "continuation line before any header",
                ));
            };
            let cont = line.trim();
            if !cont.is_empty() {
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(cont);
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::new(
            Fault::HeaderSyntax,
            "header line without ':'",
        ))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ParseError::new(Fault::HeaderSyntax, "bad header name"));
        }
        fields.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut headers = Headers::default();
    for (n, v) in fields {
        headers.push(&n, v);
    }
    Ok((start, headers))
}

fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    headers
        .content_length()
        .map_err(|e| ParseError::new(Fault::Framing, e.problem))
}

fn is_sip_version_prefix(line: &str) -> bool {
    line.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

fn check_version(v: &str) -> bool {
    let Some(num) = v.get(4..).filter(|_| is_sip_version_prefix(v)) else {
        return false;
    };
    let Some((major, minor)) = num.split_once('.') else {
        return false;
    };
    !major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit())
}

/// `Method SP Request-URI SP SIP-Version`, exactly one SP between elements (RFC 4475 3.1.2.9).
fn request_line(line: &str) -> Result<(Method, Uri, String), &'static str> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err("request line is not 'METHOD URI VERSION' with single spaces");
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err("bad method in request line");
    }
    let uri = Uri::parse(uri).map_err(UriError::in_request_uri)?;
    if !check_version(version) {
        return Err("bad SIP version in request line");
    }
    Ok((Method::parse(method), uri, (*version).to_owned()))
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`; the reason may be empty.
fn status_line(line: &str) -> Result<(String, u16, String), &'static str> {
    let mut it = line.splitn(3, ' ');
    let version = it.next().unwrap_or_default();
    let code = it.next().unwrap_or_default();
    let reason = it.next().unwrap_or_default();
    if !check_version(version) {
        return Err("bad SIP version in status line");
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("status code is not three digits");
    }
    let status: u16 = code.parse().map_err(|_| "bad status code")?;
    if !(100..=699).contains(&status) {
        return Err("status code out of range");
    }
    Ok((version.to_owned(), status, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:12345@gw.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\n\
From: <sip:caller@example.com>;tag=a\r\n\
To: <sip:12345@gw.example>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    fn req(m: Message) -> Request {
        match m {
            Message::Request(r) => r,
            Message::Response(_) => panic!("expected a request"),
        }
    }

    #[test]
    fn parses_a_plain_invite() {
        let r = req(parse_datagram(INVITE.as_bytes()).expect("parse"));
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri, "sip:12345@gw.example");
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(r.headers.call_id(), Ok("c1"));
    }

    /// Found by the `sip_parse` fuzz target: a bare CR inside a folded continuation line was
    /// taken, and the message written back out no longer parsed.
    #[test]
    fn a_bare_cr_in_a_continuation_line_is_refused() {
        let text = "OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1\r\n\
From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
 folded\rbare\r\nContent-Length: 0\r\n\r\n";
        let e = parse_datagram(text.as_bytes()).expect_err("bare CR");
        assert_eq!(e.fault, Fault::HeaderSyntax);
    }

    #[test]
    fn folding_and_compact_forms() {
        let m = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP\r\n  h;branch=z9hG4bKx\r\ni: x\r\nl: 0\r\n\r\n";
        let r = req(parse_datagram(m.as_bytes()).expect("parse"));
        assert_eq!(r.headers.get("Via"), Some("SIP/2.0/UDP h;branch=z9hG4bKx"));
        assert_eq!(r.headers.call_id(), Ok("x"));
    }

    #[test]
    fn start_line_faults() {
        for bad in [
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b SIP/2.0 ",
            "INVITE <sip:a@b> SIP/2.0",
            "INVITE sip:a @b SIP/2.0",
            "INVITE sip:a@b HTTP/1.1",
            "INVITE sip: SIP/2.0",
            "INVITE sip:a@b:99999 SIP/2.0",
            "INVITE sip:a@[::1 SIP/2.0",
            "SIP/2.0 4294967301 big",
            "SIP/2.0 99 small",
            "",
        ] {
            let m = format!("{bad}\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n");
            let e = parse_datagram(m.as_bytes()).expect_err(bad);
            assert_eq!(e.fault, Fault::StartLine, "{bad}");
        }
    }

    /// The Request-URI is parsed with the request line, once; its fault is named in the 400.
    #[test]
    fn request_uri_is_parsed_with_the_line() {
        let m = "OPTIONS sip:u%20x@[2001:db8::1]:5070;lr SIP/2.0\r\nCall-ID: x\r\nl: 0\r\n\r\n";
        let r = req(parse_datagram(m.as_bytes()).expect("parse"));
        assert_eq!(r.uri.user(), Some("u%20x"));
        assert_eq!(r.uri.host_port(), Some("[2001:db8::1]:5070"));
        assert_eq!(r.uri.param("lr"), Some(None));
        let bad = m.replace(":5070", ":70000");
        let e = parse_datagram(bad.as_bytes()).expect_err("port");
        assert_eq!(e.problem, "bad Request-URI: URI port out of range");
    }

    #[test]
    fn salvage_keeps_headers_for_a_400() {
        let m = "INVITE <sip:a@b> SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
        let e = parse_datagram(m.as_bytes()).expect_err("bad uri");
        let s = e.salvage.expect("salvage");
        assert!(s.is_request);
        assert_eq!(s.method, Some(Method::Invite));
        assert_eq!(s.headers.get("i"), Some("x"));
    }

    #[test]
    fn content_length_framing() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n";
        for (cl, fault) in [
            ("Content-Length: 5\r\n", Fault::Framing),
            ("Content-Length: -1\r\n", Fault::Framing),
            ("Content-Length: x\r\n", Fault::Framing),
            ("Content-Length: 0\r\nl: 0\r\n", Fault::Framing),
        ] {
            let m = format!("{base}{cl}\r\nab");
            assert_eq!(parse_datagram(m.as_bytes()).expect_err(cl).fault, fault);
        }
        // shorter Content-Length: the extra octets are ignored
        let m = format!("{base}Content-Length: 1\r\n\r\nabc");
        assert_eq!(req(parse_datagram(m.as_bytes()).expect("ok")).body, b"a");
        // absent on a datagram: the rest is the body; on a stream: an error
        let m = format!("{base}\r\nabc");
        assert_eq!(req(parse_datagram(m.as_bytes()).expect("ok")).body, b"abc");
        assert!(parse_stream_message(m.as_bytes()).is_err());
        assert!(frame(m.as_bytes()).is_err());
    }

    #[test]
    fn stream_framing() {
        let one = INVITE.as_bytes();
        assert_eq!(frame(one).expect("frame"), Some(one.len()));
        for cut in 0..one.len() {
            assert_eq!(frame(&one[..cut]).expect("partial"), None, "cut at {cut}");
        }
        let mut two = b"\r\n\r\n".to_vec();
        two.extend_from_slice(one);
        two.extend_from_slice(one);
        assert_eq!(frame(&two).expect("frame"), Some(4 + one.len()));
    }

    #[test]
    fn header_syntax_faults() {
        for bad in ["Bad Name: x", "NoColon", " leading: fold", "Bad(name): x"] {
            let m = format!("OPTIONS sip:a@b SIP/2.0\r\n{bad}\r\nl: 0\r\n\r\n");
            assert_eq!(
                parse_datagram(m.as_bytes()).expect_err(bad).fault,
                Fault::HeaderSyntax,
                "{bad}"
            );
        }
    }

    #[test]
    fn responses_with_empty_reason() {
        let m = "SIP/2.0 100 \r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
        match parse_datagram(m.as_bytes()).expect("parse") {
            Message::Response(r) => {
                assert_eq!(r.status, 100);
                assert_eq!(r.reason, "");
            }
            Message::Request(_) => panic!("expected a response"),
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_junk() {
        let m = INVITE.as_bytes();
        for i in 0..m.len() {
            let _ = parse_datagram(&m[..i]);
            let _ = frame(&m[..i]);
            let mut x = m.to_vec();
            x[i] = 0xff;
            let _ = parse_datagram(&x);
        }
    }
}
