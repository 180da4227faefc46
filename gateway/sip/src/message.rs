//! SIP message types: requests, responses and the headers the UAS reads.
//!
//! Headers are kept as a list of (canonical name, value) pairs in arrival order, with compact
//! forms (`i`, `m`, `f`, `t`, `v`, `l`, `c`, `k`, `s`) expanded and folded lines joined by the
//! parser. Typed views (Via, From/To, CSeq, ...) are parsed on access and return a
//! [`HeaderError`] naming the header: RFC 4475 shows that a bad value in one header is a fault
//! of that header, not of the message, and an unknown header full of junk is still legal. So the
//! structural parser never looks inside values it does not need for framing.

use std::fmt;

use crate::uri::Uri;

/// A SIP method. Unknown methods are kept verbatim (they must be answered 501, not dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE: opens a call (or, in a dialog, changes its session).
    Invite,
    /// ACK: confirms the final response to an INVITE.
    Ack,
    /// BYE: ends a call.
    Bye,
    /// CANCEL: withdraws a pending INVITE.
    Cancel,
    /// OPTIONS: a capability or keep-alive probe; we answer 200.
    Options,
    /// INFO: mid-call information, here DTMF relay.
    Info,
    /// REGISTER: not served (405); we face a trunk, not phones.
    Register,
    /// SUBSCRIBE: not served (405).
    Subscribe,
    /// NOTIFY: not served (405).
    Notify,
    /// MESSAGE: not served (405).
    Message,
    /// UPDATE: not served (405).
    Update,
    /// PRACK: not served (405); we send no reliable provisionals.
    Prack,
    /// REFER: not served (405); transfers are our own outgoing legs.
    Refer,
    /// PUBLISH: not served (405).
    Publish,
    /// Any other method, verbatim (answered 501).
    Extension(String),
}

impl Method {
    /// The method for a request-line token; case-sensitive, as RFC 3261 7.1 says.
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_owned()),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field. `name` is the canonical full name when the header is known (so lookups
/// never care about case or compact forms); unknown names keep their spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header name (canonical when known).
    pub name: String,
    /// The raw value, unfolded, as received or as we wrote it.
    pub value: String,
}

/// The canonical spelling of a header name: compact forms expanded, known names in their
/// RFC 3261 case. Unknown names are returned as given.
pub fn canonical_name(name: &str) -> String {
    const KNOWN: &[&str] = &[
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Authorization",
        "Call-ID",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Expires",
        "From",
        "Max-Forwards",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Require",
        "Route",
        "Server",
        "Subject",
        "Supported",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
    ];
    let full = match name.to_ascii_lowercase().as_str() {
        "i" => "Call-ID",
        "m" => "Contact",
        "e" => "Content-Encoding",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "f" => "From",
        "s" => "Subject",
        "k" => "Supported",
        "t" => "To",
        "v" => "Via",
        _ => {
            return KNOWN
                .iter()
                .find(|k| k.eq_ignore_ascii_case(name))
                .map_or_else(|| name.to_owned(), |k| (*k).to_owned());
        }
    };
    full.to_owned()
}

/// Header fields in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// Append a header (the name is canonicalized).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Every header line with this name, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Every comma-separated value of every line with this name (for list headers such as
    /// Via, Route, Allow), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(split_list)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// How many values of a header there are (the 400 for a repeated single header needs it).
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Remove every value of a header.
    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    /// Replace every value of a header with one.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    /// Exactly one typed header, or an error naming it.
    fn one(&self, name: &'static str) -> Result<&str, HeaderError> {
        let mut it = self.get_all(name);
        let first = it.next().ok_or(HeaderError::missing(name))?;
        if it.next().is_some() {
            return Err(HeaderError::new(name, "appears more than once"));
        }
        Ok(first)
    }

    /// Every Via value, top first; an error if one does not parse.
    pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::new();
        for line in self.get_all("Via") {
            for v in split_list(line) {
                out.push(Via::parse(&v)?);
            }
        }
        if out.is_empty() {
            return Err(HeaderError::missing("Via"));
        }
        Ok(out)
    }

    /// The top Via: the one that identifies our transaction with the peer.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let line = self.get("Via").ok_or(HeaderError::missing("Via"))?;
        let first = split_list(line)
            .into_iter()
            .next()
            .ok_or(HeaderError::new("Via", "empty"))?;
        Via::parse(&first)
    }

    /// The From header, which must appear once.
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse_single("From", self.one("From")?)
    }

    /// The To header, which must appear once.
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse_single("To", self.one("To")?)
    }

    /// The Call-ID, which must appear once and not be empty.
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let v = self.one("Call-ID")?.trim();
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(HeaderError::new("Call-ID", "not a single word"));
        }
        Ok(v)
    }

    /// The CSeq, which must appear once.
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.one("CSeq")?)
    }

    /// Max-Forwards; absent means 70 (RFC 3261 8.1.1.6 asks senders for 70).
    pub fn max_forwards(&self) -> Result<u8, HeaderError> {
        match self.get_all("Max-Forwards").count() {
            0 => Ok(70),
            1 => decimal("Max-Forwards", self.one("Max-Forwards")?, "larger than 255"),
            _ => Err(HeaderError::new("Max-Forwards", "appears more than once")),
        }
    }

    /// Contact values (name-addr or addr-spec); `*` is returned as an empty list.
    pub fn contact(&self) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for line in self.get_all("Contact") {
            if line.trim() == "*" {
                continue;
            }
            for v in split_list(line) {
                out.push(NameAddr::parse("Contact", &v)?);
            }
        }
        Ok(out)
    }

    /// Record-Route values in order, for building a dialog's route set.
    pub fn record_route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.values("Record-Route")
            .iter()
            .map(|v| NameAddr::parse("Record-Route", v))
            .collect()
    }

    /// Route values in order.
    pub fn route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.values("Route")
            .iter()
            .map(|v| NameAddr::parse("Route", v))
            .collect()
    }

    /// The media type without parameters, lower-cased.
    pub fn content_type(&self) -> Option<String> {
        self.get("Content-Type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase()
        })
    }

    /// The Content-Length, `None` when absent; an error when repeated or not a number.
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        let mut it = self.get_all("Content-Length");
        let Some(v) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(HeaderError::new("Content-Length", "appears more than once"));
        }
        decimal("Content-Length", v, "too large").map(Some)
    }

    /// Expires as seconds (RFC 3261 delta-seconds, at most 2^32-1).
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        let Some(v) = self.get("Expires") else {
            return Ok(None);
        };
        decimal("Expires", v, "out of range").map(Some)
    }

    /// Date must be an RFC 1123 date in GMT (RFC 3261 20.17).
    pub fn date(&self) -> Result<Option<&str>, HeaderError> {
        let Some(v) = self.get("Date") else {
            return Ok(None);
        };
        let v = v.trim();
        let parts: Vec<&str> = v.split_whitespace().collect();
        let ok = parts.len() == 6
            && parts.first().is_some_and(|d| d.ends_with(','))
            && parts.get(5) == Some(&"GMT")
            && parts
                .get(4)
                .is_some_and(|t| t.len() == 8 && t.matches(':').count() == 2);
        if ok {
            Ok(Some(v))
        } else {
            Err(HeaderError::new("Date", "not an RFC 1123 date in GMT"))
        }
    }

    /// Option tags of Require (or Proxy-Require, Supported, ...).
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .into_iter()
            .map(|v| v.trim().to_owned())
            .collect()
    }
}

/// A typed header could not be read; `header` names it (the 400's reason phrase uses it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} header: {problem}")]
pub struct HeaderError {
    /// The canonical name of the header that could not be read.
    pub header: &'static str,
    /// What is wrong with it, as the 400's reason phrase says.
    pub problem: &'static str,
}

impl HeaderError {
    /// A header with this problem.
    pub fn new(header: &'static str, problem: &'static str) -> Self {
        HeaderError { header, problem }
    }
    /// A required header that is absent.
    pub fn missing(header: &'static str) -> Self {
        HeaderError::new(header, "missing")
    }
}

/// Split a header value at commas that are outside quoted strings and `<...>`.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut angle = false;
    for c in value.chars() {
        if quoted {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                cur.push(c);
            }
            '<' => {
                angle = true;
                cur.push(c);
            }
            '>' => {
                angle = false;
                cur.push(c);
            }
            ',' if !angle => out.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_owned());
    out
}

/// `;name[=value]` parameters, whitespace around `;` and `=` allowed (RFC 3261 SEMI/EQUAL).
/// Values keep their quotes. Empty names are an error.
pub fn parse_params(
    header: &'static str,
    s: &str,
) -> Result<Vec<(String, Option<String>)>, HeaderError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix(';') else {
        return Err(HeaderError::new(header, "junk where parameters belong"));
    };
    let mut out = Vec::new();
    for part in split_params(rest) {
        let part = part.trim();
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (part, None),
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HeaderError::new(header, "bad parameter name"));
        }
        if let Some(v) = value {
            let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            let ipv6 = v.starts_with('[') && v.ends_with(']');
            if v.is_empty() || !(quoted || ipv6 || v.bytes().all(is_token_byte)) {
                return Err(HeaderError::new(header, "bad parameter value"));
            }
        }
        out.push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
    Ok(out)
}

fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == ';' {
            out.push(s.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    out.push(s.get(start..).unwrap_or_default());
    out
}

/// RFC 3261 token characters.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref())
}

/// One Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token, e.g. `UDP` or `TCP`.
    pub transport: String,
    /// The sent-by host, as written (IPv6 in brackets).
    pub host: String,
    /// The sent-by port, when given.
    pub port: Option<u16>,
    /// Parameters in order (branch, rport, received, ...); `None` for a flag.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parse one Via value.
    pub fn parse(v: &str) -> Result<Via, HeaderError> {
        const H: &str = "Via";
        let bad = |p| HeaderError::new(H, p);
        // sent-protocol: three tokens joined by '/', LWS allowed around the slashes.
        let mut rest = v.trim();
        let mut proto = Vec::new();
        for i in 0..3 {
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            let tok = rest.get(..end).unwrap_or_default();
            if tok.is_empty() || !tok.bytes().all(is_token_byte) {
                return Err(bad("bad sent-protocol"));
            }
            proto.push(tok);
            rest = rest.get(end..).unwrap_or_default().trim_start();
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or(bad("bad sent-protocol"))?
                    .trim_start();
            }
        }
        if !proto.first().is_some_and(|p| p.eq_ignore_ascii_case("SIP")) {
            return Err(bad("not SIP"));
        }
        let transport = proto
            .get(2)
            .copied()
            .unwrap_or_default()
            .to_ascii_uppercase();
        // sent-by: host[:port], up to ';' or end.
        let end = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest.get(..end).unwrap_or_default().trim();
        let (host, port) = split_host_port(sent_by).ok_or(bad("bad sent-by"))?;
        let params = parse_params(H, rest.get(end..).unwrap_or_default())?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The branch parameter, the transaction id for RFC 3261 peers.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").flatten()
    }

    /// Whether a parameter is present (e.g. `rport`, which has no value in a request).
    pub fn has_param(&self, name: &str) -> bool {
        param(&self.params, name).is_some()
    }

    /// `host[:port]` as sent (lower-cased host), the transaction key's sent-by part.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host.to_ascii_lowercase()),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

/// Split `host[:port]`, with IPv6 references in brackets. Whitespace around ':' allowed.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (host, rest) = if s.starts_with('[') {
        let close = s.find(']')?;
        let host = s.get(..=close)?;
        let inner = host.get(1..host.len() - 1)?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        (host, s.get(close + 1..)?)
    } else {
        let end = s.find(':').unwrap_or(s.len());
        (s.get(..end)?.trim_end(), s.get(end..)?)
    };
    if host.is_empty()
        || !(host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    let rest = rest.trim();
    let port = if rest.is_empty() {
        None
    } else {
        let p = rest.strip_prefix(':')?.trim();
        Some(p.parse::<u16>().ok()?)
    };
    Some((host.to_owned(), port))
}

/// From, To, Contact, Route, Record-Route: `[display] <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted, when there is one.
    pub display: Option<String>,
    /// The URI, parsed when the header is; its text as written, escapes untouched.
    pub uri: Uri,
    /// Whether the URI was in angle brackets (it must stay so when copied).
    pub bracketed: bool,
    /// Header parameters in order (tag, expires, ...); `None` for a flag.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    fn parse_single(header: &'static str, v: &str) -> Result<NameAddr, HeaderError> {
        if split_list(v).len() > 1 {
            return Err(HeaderError::new(header, "more than one value"));
        }
        NameAddr::parse(header, v)
    }

    /// Parse one value of the named header (the name goes into the error).
    pub fn parse(header: &'static str, v: &str) -> Result<NameAddr, HeaderError> {
        let bad = |p| HeaderError::new(header, p);
        let v = v.trim();
        let mut display = None;
        let mut rest = v;
        if let Some(after) = rest.strip_prefix('"') {
            // quoted display name with backslash escapes
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or(bad("unterminated quoted string"))?;
            display = Some(after.get(..end).unwrap_or_default().to_owned());
            rest = after.get(end + 1..).unwrap_or_default().trim_start();
            if !rest.starts_with('<') {
                return Err(bad("display name without <uri>"));
            }
        } else if let Some(lt) = rest.find('<') {
            let name = rest.get(..lt).unwrap_or_default().trim();
            if !name
                .split_whitespace()
                .all(|w| w.bytes().all(is_token_byte))
            {
                return Err(bad("display name must be tokens or quoted"));
            }
            if !name.is_empty() {
                display = Some(name.to_owned());
            }
            rest = rest.get(lt..).unwrap_or_default();
        }
        if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or(bad("missing '>'"))?;
            let uri = parse_uri(header, inner.get(..gt).unwrap_or_default())?;
            let params = parse_params(header, inner.get(gt + 1..).unwrap_or_default())?;
            return Ok(NameAddr {
                display,
                uri,
                bracketed: true,
                params,
            });
        }
        // addr-spec: parameters after ';' belong to the header; '?' and ',' need <>.
        let end = rest
            .find(|c: char| c == ';' || c.is_whitespace())
            .unwrap_or(rest.len());
        let uri = parse_uri(header, rest.get(..end).unwrap_or_default())?;
        if uri.as_str().contains(['?', ',']) {
            return Err(bad("URI with headers must be enclosed in <>"));
        }
        let params = parse_params(header, rest.get(end..).unwrap_or_default())?;
        Ok(NameAddr {
            display: None,
            uri,
            bracketed: false,
            params,
        })
    }

    /// The tag parameter: the dialog's id for this side.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").flatten()
    }

    /// Re-render, keeping the URI form valid (brackets where they were).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.display {
            s.push('"');
            s.push_str(d);
            s.push_str("\" ");
        }
        if self.bracketed || self.display.is_some() {
            s.push('<');
            s.push_str(self.uri.as_str());
            s.push('>');
        } else {
            s.push_str(self.uri.as_str());
        }
        for (n, v) in &self.params {
            s.push(';');
            s.push_str(n);
            if let Some(v) = v {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
}

/// A header value that is a plain decimal number (no sign, no spaces inside: `+5` and `-1`
/// are not numbers here), `too_big` naming the fault when it does not fit `T`.
fn decimal<T: std::str::FromStr>(
    header: &'static str,
    v: &str,
    too_big: &'static str,
) -> Result<T, HeaderError> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::new(header, "not a number"));
    }
    v.parse::<T>()
        .map_err(|_| HeaderError::new(header, too_big))
}

/// The URI of a name-addr or addr-spec; its fault is the header's.
fn parse_uri(header: &'static str, uri: &str) -> Result<Uri, HeaderError> {
    Uri::parse(uri).map_err(|e| HeaderError::new(header, e.as_str()))
}

/// `CSeq: number METHOD`, the number below 2^31 (RFC 3261 8.1.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method, which must match the request line.
    pub method: Method,
}

impl CSeq {
    /// Parse a CSeq value.
    pub fn parse(v: &str) -> Result<CSeq, HeaderError> {
        let mut it = v.split_whitespace();
        let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
            return Err(HeaderError::new("CSeq", "not 'number method'"));
        };
        if !n.bytes().all(|b| b.is_ascii_digit()) || !m.bytes().all(is_token_byte) {
            return Err(HeaderError::new("CSeq", "not 'number method'"));
        }
        let seq = n
            .parse::<u32>()
            .ok()
            .filter(|s| *s < 1 << 31)
            .ok_or(HeaderError::new("CSeq", "number out of range"))?;
        Ok(CSeq {
            seq,
            method: Method::parse(m),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A request. `uri` is parsed with the request line (its text kept as received, escapes
/// untouched); `version` as sent, e.g. `SIP/2.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method of the request line.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The SIP version of the request line.
    pub version: String,
    /// The header fields in order.
    pub headers: Headers,
    /// The body (its length is the Content-Length we write).
    pub body: Vec<u8>,
}

/// A response, with its fields as received or as we send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The SIP version of the status line.
    pub version: String,
    /// The header fields in order.
    pub headers: Headers,
    /// The body (its length is the Content-Length we write).
    pub body: Vec<u8>,
}

/// A parsed message: the parser yields either kind, and the endpoint routes on that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The headers of either kind.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

/// The standard reason phrase for the codes we send.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(canonical_name("i"), "Call-ID");
        assert_eq!(canonical_name("V"), "Via");
        assert_eq!(canonical_name("cAlL-iD"), "Call-ID");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        let mut h = Headers::default();
        h.push("l", "0");
        assert_eq!(h.get("content-length"), Some("0"));
    }

    #[test]
    fn via_with_lws_and_ipv6() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").expect("via");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::9:1]:5070 ; branch = z9hG4bKx ; rport")
            .expect("via");
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert!(v.has_param("rport"));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse("SIP/2.0/UDP [::1").is_err());
        assert!(Via::parse("HTTP/1.1/TCP a").is_err());
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v = split_list(r#""a, b" <sip:x@y>;p=1, <sip:z,w@q>, sip:r"#);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            "From",
            r#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .expect("from");
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        let n = NameAddr::parse("From", "caller<sip:caller@example.com>;tag=323").expect("lwsdisp");
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("To", "sip:user@example.com ;tag=1").expect("addr-spec");
        assert_eq!(n.tag(), Some("1"));
        assert!(NameAddr::parse("To", r#""Mr. J. User <sip:j.user@example.com>"#).is_err());
        assert!(NameAddr::parse("To", r#""W" < sip:t.watson@example.org >"#).is_err());
        assert!(NameAddr::parse("Contact", "sip:u@e.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse("From", "Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse("To", "<nobodyknowsthisscheme:totallyopaquecontent>").is_ok());
        // the URI is parsed with the header, and its fault is the header's
        let n = NameAddr::parse("Contact", "<sip:agent@10.0.0.7:5062;transport=tcp>").expect("c");
        assert_eq!((n.uri.user(), n.uri.port()), (Some("agent"), Some(5062)));
        assert_eq!(
            NameAddr::parse("Contact", "<sip:agent@[::1>"),
            Err(HeaderError::new("Contact", "unterminated '[' in URI host"))
        );
    }

    #[test]
    fn cseq_range() {
        assert_eq!(CSeq::parse("0009\t INVITE").expect("cseq").seq, 9);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
    }

    #[test]
    fn max_forwards_defaults_and_bounds() {
        let mut h = Headers::default();
        assert_eq!(h.max_forwards(), Ok(70));
        h.push("Max-Forwards", "0068");
        assert_eq!(h.max_forwards(), Ok(68));
        h.set("Max-Forwards", "300");
        assert!(h.max_forwards().is_err());
    }

    #[test]
    fn date_must_be_gmt() {
        let mut h = Headers::default();
        h.push("Date", "Sat, 13 Nov 2010 23:29:00 GMT");
        assert!(h.date().is_ok());
        h.set("Date", "Fri, 01 Jan 2010 16:00:00 EST");
        assert!(h.date().is_err());
    }
}
