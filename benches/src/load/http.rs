//! A minimal HTTP/1.1 client connection: writes pre-built request bytes, reads one response with a
//! `Content-Length` body. Enough for the gateway (axum always sends a length) at a fraction of
//! a full client's CPU, which matters when the generator shares the cores with the server.

use std::io::{self, Write};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the previous response.
    consumed: usize,
}

/// A response; `body` borrows the connection's buffer.
#[derive(Debug)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The server said `Connection: close`: open a new connection for the next request.
    pub close: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8 * 1024),
            consumed: 0,
        })
    }

    /// Send a complete request and wait for its response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response<'_>> {
        self.stream.write_all(request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<Response<'_>> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        let mut scanned = 0;
        let head_end = loop {
            if let Some(p) = find(&self.buf[scanned..], b"\r\n\r\n") {
                break scanned + p + 4;
            }
            scanned = self.buf.len().saturating_sub(3);
            self.fill().await?;
        };
        let head = Head::parse(&self.buf[..head_end])?;
        let end = head_end + head.content_length;
        while self.buf.len() < end {
            self.fill().await?;
        }
        self.consumed = end;
        Ok(Response {
            status: head.status,
            body: &self.buf[head_end..end],
            close: head.close,
        })
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }
}

struct Head {
    status: u16,
    content_length: usize,
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut content_length = None;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not supported"));
            }
        }
        Ok(Head {
            status,
            content_length: content_length.unwrap_or(0),
            close,
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builds `POST /v1/submissions` requests from a fixed head, so each one costs a few copies.
#[derive(Debug, Clone)]
pub struct SubmissionRequests {
    head: Vec<u8>,
}

impl SubmissionRequests {
    pub fn new(host: &str, key: &str) -> Self {
        let head = format!(
            "POST /v1/submissions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n"
        );
        SubmissionRequests {
            head: head.into_bytes(),
        }
    }

    /// Write the request with this idempotency key and body into `out` (cleared first).
    pub fn build(&self, out: &mut Vec<u8>, idempotency_key: std::fmt::Arguments<'_>, body: &[u8]) {
        out.clear();
        out.extend_from_slice(&self.head);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "Idempotency-Key: {idempotency_key}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        out.extend_from_slice(body);
    }
}

/// A `GET` with the API key.
pub fn get(host: &str, key: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n")
        .into_bytes()
}

/// Pull `"order_id":"…"` out of a 202 answer without a JSON parser.
pub fn order_id(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"order_id\":\"";
    let start = find(body, KEY)? + KEY.len();
    let len = body[start..].iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_order_ids_are_read() {
        let h = Head::parse(
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\nconnection: close\r\n\r\n",
        )
        .expect("head");
        assert_eq!((h.status, h.content_length, h.close), (202, 12, true));
        assert_eq!(
            order_id(br#"{"order_id":"26112301000017","status":"accepted"}"#),
            Some("26112301000017")
        );
        let r = SubmissionRequests::new("h", "k");
        let mut out = Vec::new();
        r.build(&mut out, format_args!("a-{}", 7), b"{}");
        let s = String::from_utf8(out).expect("utf8");
        assert!(
            s.contains("Idempotency-Key: a-7\r\nContent-Length: 2\r\n\r\n{}"),
            "{s}"
        );
    }
}
