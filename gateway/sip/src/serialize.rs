//! Serialize requests and responses. Content-Length is always written from the body (never
//! copied), so a message we send is framed correctly on a stream by construction.

use std::fmt::Write;

use super::message::{Headers, Message, Request, Response};

fn headers_and_body(out: &mut String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    for h in &headers.0 {
        if h.name == "Content-Length" {
            continue;
        }
        // values come from parsed messages (no CR/LF) or from our own code
        let _ = write!(out, "{}: {}\r\n", h.name, h.value);
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A request's bytes for the wire.
pub fn request(r: &Request) -> Vec<u8> {
    let mut out = format!("{} {} {}\r\n", r.method, r.uri, r.version);
    headers_and_body(&mut out, &r.headers, &r.body)
}

/// A response's bytes for the wire.
pub fn response(r: &Response) -> Vec<u8> {
    let mut out = format!("{} {} {}\r\n", r.version, r.status, r.reason);
    headers_and_body(&mut out, &r.headers, &r.body)
}

/// Either kind's bytes for the wire.
pub fn message(m: &Message) -> Vec<u8> {
    match m {
        Message::Request(r) => request(r),
        Message::Response(r) => response(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_stream_message;

    #[test]
    fn round_trips_through_the_stream_parser() {
        let m = "INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\ni: x\r\nl: 99\r\n\r\nbody";
        let parsed =
            crate::parse::parse_datagram(m.replace("l: 99", "l: 4").as_bytes()).expect("parse");
        let bytes = message(&parsed);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 4\r\n\r\nbody"), "{text}");
        assert_eq!(parse_stream_message(&bytes).expect("again"), parsed);
    }
}
