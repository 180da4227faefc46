//! [`Uri`]: a URI parsed once, where the message or header that carries it is parsed.
//!
//! SIP and SIPS URIs (RFC 3261 19.1, grammar in 25.1) are split into scheme, user, password,
//! host, port, `;params` and `?headers`; every other scheme (`tel:`, `urn:`, `http://...`) is
//! kept whole after an RFC 3986 character check, so a request for an unknown scheme still parses
//! and is answered rather than dropped (RFC 4475 3.3.2 and 3.3.3; 3.3.4 puts such URIs in From,
//! To and Contact). The text is kept exactly as received, escapes untouched: the accessors
//! return slices of it and serializing a parsed message gives back the same bytes. Equality is
//! equality of that text (RFC 3261 19.1.4's looser URI comparison is not needed by a UAS that
//! never compares URIs to route).
//!
//! Written here rather than taken from a crate: the sip crate stays dependency-light, generic
//! RFC 3986 parsers (`fluent-uri`, `uriparse`) see `sip:user@host;p` as a path (a SIP URI has no
//! `//` authority) so the user, host and parameters would still be split by hand, and the SIP
//! crates' URI types (`rsip`, `sip-uri`) own unescaped copies, which loses the byte-exact text
//! the round trip needs (and `rsip` is unmaintained).
//!
//! The grammar is RFC 3261's, with two documented leniencies: a top label may start with a
//! digit (`gw.1a`), and an all-digit dotted host must be a valid IPv4 address (rather than
//! falling back to a host name). Errors ([`UriError`]) say what was wrong in a few words, short
//! enough for a 400's reason phrase; nothing here panics on any input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::str::FromStr;

/// A URI as received, with its parts located once at parse time.
#[derive(Clone)]
pub struct Uri {
    text: String,
    scheme_end: usize,
    sip: Option<SipParts>,
}

/// Where the parts of a SIP or SIPS URI lie in its text.
#[derive(Clone)]
struct SipParts {
    secure: bool,
    user: Option<Range<usize>>,
    password: Option<Range<usize>>,
    host: Range<usize>,
    port: Option<u16>,
    /// `host[:port]`.
    host_port: Range<usize>,
    /// The parameters without their leading `;` (empty when there are none).
    params: Range<usize>,
    /// The headers without their leading `?`.
    headers: Option<Range<usize>>,
}

/// Why a URI did not parse. Each variant is one fault, phrased for a 400's reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    /// Nothing at all.
    Empty,
    /// A control character (CR, LF, NUL, ...) or a space.
    ControlOrSpace,
    /// A byte outside ASCII (URIs carry other text %-escaped).
    NotAscii,
    /// No `scheme:` prefix.
    MissingScheme,
    /// The scheme is not `ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")`.
    BadScheme,
    /// `sip:` (or any `scheme:`) with nothing after it.
    NothingAfterScheme,
    /// `sip:@host`.
    EmptyUser,
    /// A character the user part may not carry unescaped.
    BadUser,
    /// A character the password may not carry unescaped.
    BadPassword,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// No host (`sip:user@`, `sip:;p`, `sip::5060`).
    EmptyHost,
    /// A host that is not a host name, an IPv4 address or an `[IPv6]` reference.
    BadHost,
    /// All digits and dots, but not an IPv4 address (`10.0.0.256`).
    BadIpv4,
    /// `[` without its `]`.
    UnterminatedIpv6,
    /// Between `[` and `]` there is no IPv6 address.
    BadIpv6,
    /// A port that is empty or not all digits.
    BadPort,
    /// A port above 65535.
    PortOutOfRange,
    /// A `;param` that is empty or has characters a parameter may not carry.
    BadParam,
    /// `?headers` that are empty or not `name=value&...`.
    BadHeaders,
    /// A URI of another scheme with characters RFC 3986 does not allow.
    BadOpaque,
}

/// The phrases of [`UriError`], written once for both the bare and the Request-URI form (a
/// parse error's problem is a `&'static str`, so the prefix is joined at compile time).
macro_rules! phrases {
    ($($variant:ident => $text:literal,)*) => {
        impl UriError {
            /// The fault in a few words.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(UriError::$variant => $text,)*
                }
            }

            /// The fault of a Request-URI, named as such for the 400's reason phrase.
            pub fn in_request_uri(self) -> &'static str {
                match self {
                    $(UriError::$variant => concat!("bad Request-URI: ", $text),)*
                }
            }
        }
    };
}

phrases! {
    Empty => "empty URI",
    ControlOrSpace => "control character or space in URI",
    NotAscii => "non-ASCII character in URI",
    MissingScheme => "URI without a scheme",
    BadScheme => "bad URI scheme",
    NothingAfterScheme => "nothing after the URI scheme",
    EmptyUser => "empty user part in URI",
    BadUser => "bad character in the URI's user part",
    BadPassword => "bad character in the URI's password",
    BadEscape => "bad %-escape in URI",
    EmptyHost => "URI without a host",
    BadHost => "bad host in URI",
    BadIpv4 => "bad IPv4 address in URI",
    UnterminatedIpv6 => "unterminated '[' in URI host",
    BadIpv6 => "bad IPv6 address in URI",
    BadPort => "URI port is not a number",
    PortOutOfRange => "URI port out of range",
    BadParam => "bad URI parameter",
    BadHeaders => "bad URI headers",
    BadOpaque => "bad character in URI",
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for UriError {}

impl Uri {
    /// Parse a URI; see the module documentation for what is checked.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(UriError::ControlOrSpace);
        }
        if !s.is_ascii() {
            return Err(UriError::NotAscii);
        }
        let scheme_end = s.find(':').ok_or(UriError::MissingScheme)?;
        let scheme = s.get(..scheme_end).unwrap_or_default();
        if scheme.is_empty() {
            return Err(UriError::MissingScheme);
        }
        let mut bytes = scheme.bytes();
        if !bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            || !bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UriError::BadScheme);
        }
        if s.len() == scheme_end + 1 {
            return Err(UriError::NothingAfterScheme);
        }
        let secure = scheme.eq_ignore_ascii_case("sips");
        let sip = if secure || scheme.eq_ignore_ascii_case("sip") {
            Some(sip_parts(s, scheme_end + 1, secure)?)
        } else {
            check(s.get(scheme_end + 1..), is_rfc3986, UriError::BadOpaque)?;
            None
        };
        Ok(Uri {
            text: s.to_owned(),
            scheme_end,
            sip,
        })
    }

    /// The whole URI as received.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text, given up.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The scheme as written (`sip`, `SIP`, `tel`, ...); compare it without case.
    pub fn scheme(&self) -> &str {
        self.text.get(..self.scheme_end).unwrap_or_default()
    }

    /// Whether this is a SIP or SIPS URI (and so has a host).
    pub fn is_sip(&self) -> bool {
        self.sip.is_some()
    }

    /// Whether this is a SIPS URI.
    pub fn is_sips(&self) -> bool {
        self.sip.as_ref().is_some_and(|p| p.secure)
    }

    fn slice(&self, r: &Range<usize>) -> &str {
        self.text.get(r.clone()).unwrap_or_default()
    }

    /// The user part of a SIP URI, escapes untouched (`sips%3Auser%40example.com`); it may
    /// carry `;` and `?` (RFC 4475 3.1.1.2 and 3.1.1.9).
    pub fn user(&self) -> Option<&str> {
        let r = self.sip.as_ref()?.user.as_ref()?;
        Some(self.slice(r))
    }

    /// The password of a SIP URI (`sip:user:password@host`), escapes untouched.
    pub fn password(&self) -> Option<&str> {
        let r = self.sip.as_ref()?.password.as_ref()?;
        Some(self.slice(r))
    }

    /// The host of a SIP URI as written: a name, an IPv4 address or `[IPv6]` with its brackets.
    pub fn host(&self) -> Option<&str> {
        Some(self.slice(&self.sip.as_ref()?.host))
    }

    /// The host as an IP address when it is one (brackets removed), `None` for a name.
    pub fn ip(&self) -> Option<IpAddr> {
        let host = self.host()?;
        match host.strip_prefix('[') {
            Some(v6) => parse_ipv6(v6.strip_suffix(']')?).map(IpAddr::V6),
            None => host.parse().ok().map(IpAddr::V4),
        }
    }

    /// The port of a SIP URI when it has one (no default is assumed: 5060 or 5061 is the
    /// caller's choice, and DNS SRV would pick otherwise).
    pub fn port(&self) -> Option<u16> {
        self.sip.as_ref()?.port
    }

    /// `host[:port]` of a SIP URI, as written.
    pub fn host_port(&self) -> Option<&str> {
        Some(self.slice(&self.sip.as_ref()?.host_port))
    }

    /// The URI parameters of a SIP URI in order, `None` as value for a flag (`;lr`). Names
    /// and values are as written (escapes untouched).
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let text = self.sip.as_ref().map_or("", |p| self.slice(&p.params));
        text.split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
    }

    /// One URI parameter by name, compared without case (RFC 3261 19.1.4): `Some(None)` for a
    /// flag such as `lr`, `Some(Some(value))` for `transport=tcp`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The `?headers` of a SIP URI without the `?`, as written. A Request-URI must not carry
    /// them (RFC 3261 19.1.5; RFC 4475 3.1.2.11).
    pub fn headers(&self) -> Option<&str> {
        let r = self.sip.as_ref()?.headers.as_ref()?;
        Some(self.slice(r))
    }
}

/// Locate the parts of a SIP URI; `start` is just after `sip:`.
fn sip_parts(s: &str, start: usize, secure: bool) -> Result<SipParts, UriError> {
    let rest = s.get(start..).unwrap_or_default();
    // The user part ends at the first '@': neither the user, the host, the parameters nor
    // the headers may carry an unescaped one.
    let (user, password, host_start) = match rest.find('@') {
        Some(at) => {
            let info = rest.get(..at).unwrap_or_default();
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            if user.is_empty() {
                return Err(UriError::EmptyUser);
            }
            check(Some(user), is_user, UriError::BadUser)?;
            check(password, is_password, UriError::BadPassword)?;
            let user_range = start..start + user.len();
            let password_range = password.map(|_| start + user.len() + 1..start + at);
            (Some(user_range), password_range, start + at + 1)
        }
        None => (None, None, start),
    };
    let after_user = s.get(host_start..).unwrap_or_default();
    let hp_len = after_user.find([';', '?']).unwrap_or(after_user.len());
    let host_port = after_user.get(..hp_len).unwrap_or_default();
    let (host, port) = host_and_port(host_port)?;
    let params_start = host_start + hp_len;
    let tail = s.get(params_start..).unwrap_or_default();
    let params_len = tail.find('?').unwrap_or(tail.len());
    let params = tail.get(..params_len).unwrap_or_default();
    if let Some(p) = params.strip_prefix(';') {
        for param in p.split(';') {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (param, None),
            };
            if name.is_empty() || value.is_some_and(str::is_empty) {
                return Err(UriError::BadParam);
            }
            check(Some(name), is_param, UriError::BadParam)?;
            check(value, is_param, UriError::BadParam)?;
        }
    }
    let headers = match tail.get(params_len..).and_then(|h| h.strip_prefix('?')) {
        Some(h) => {
            for field in h.split('&') {
                let (name, value) = field.split_once('=').ok_or(UriError::BadHeaders)?;
                if name.is_empty() {
                    return Err(UriError::BadHeaders);
                }
                check(Some(name), is_header, UriError::BadHeaders)?;
                check(Some(value), is_header, UriError::BadHeaders)?;
            }
            let h_start = params_start + params_len + 1;
            Some(h_start..s.len())
        }
        None => None,
    };
    Ok(SipParts {
        secure,
        user,
        password,
        host: host_start..host_start + host.len(),
        port,
        host_port: host_start..params_start,
        params: (params_start + 1).min(params_start + params_len)..params_start + params_len,
        headers,
    })
}

/// Split and check `host[:port]`; returns the host text (brackets kept) and the port.
fn host_and_port(hp: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if let Some(inner) = hp.strip_prefix('[') {
        let close = inner.find(']').ok_or(UriError::UnterminatedIpv6)?;
        parse_ipv6(inner.get(..close).unwrap_or_default()).ok_or(UriError::BadIpv6)?;
        let after = inner.get(close + 1..).unwrap_or_default();
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::BadHost),
        };
        (hp.get(..close + 2).unwrap_or_default(), port)
    } else {
        let (host, port) = match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        };
        check_host_name(host)?;
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(UriError::BadPort);
        }
        Some(p) => Some(p.parse::<u16>().map_err(|_| UriError::PortOutOfRange)?),
    };
    Ok((host, port))
}

/// An IPv6 address, also in the form RFC 3261's ABNF allows by mistake: three colons before
/// an embedded IPv4 address (`2001:db8:::192.0.2.1`), which RFC 5118 4.10 says to tolerate.
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (hex, v4) = s.split_once(":::")?;
    v4.parse::<Ipv4Addr>().ok()?;
    format!("{hex}::{v4}").parse().ok()
}

/// A host name (labels of letters, digits and inner hyphens, an optional final dot) or an
/// IPv4 address. Underscores are taken in labels too, beyond RFC 3261's `hostname`: SRV-style
/// and PBX-generated names carry them, and refusing a carrier's call for it helps nobody.
fn check_host_name(host: &str) -> Result<(), UriError> {
    if host.is_empty() {
        return Err(UriError::EmptyHost);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(drop)
            .map_err(|_| UriError::BadIpv4);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(UriError::BadHost)
    }
}

/// Every byte allowed by `allowed`, or a well-formed `%XX` escape.
fn check(part: Option<&str>, allowed: fn(u8) -> bool, err: UriError) -> Result<(), UriError> {
    let Some(part) = part else { return Ok(()) };
    let mut bytes = part.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit());
            if !(hex(bytes.next()) && hex(bytes.next())) {
                return Err(UriError::BadEscape);
            }
        } else if !allowed(b) {
            return Err(err);
        }
    }
    Ok(())
}

/// RFC 3261 `unreserved`: alphanumerics and the marks.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// RFC 3261's user characters, and `#` unescaped as well: carriers and PBXs send service codes
/// such as `*98#` that way, and the number is what we need from it.
fn is_user(b: u8) -> bool {
    is_unreserved(b) || b"&=+$,;?/#".contains(&b)
}

fn is_password(b: u8) -> bool {
    is_unreserved(b) || b"&=+$,".contains(&b)
}

fn is_param(b: u8) -> bool {
    is_unreserved(b) || b"[]/:&+$".contains(&b)
}

fn is_header(b: u8) -> bool {
    is_unreserved(b) || b"[]/?:+$".contains(&b)
}

/// RFC 3986 unreserved, gen-delims and sub-delims: what any URI may carry unescaped.
fn is_rfc3986(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b)
}

impl FromStr for Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

impl TryFrom<&str> for Uri {
    type Error = UriError;

    fn try_from(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({:?})", self.text)
    }
}

impl AsRef<str> for Uri {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl From<Uri> for String {
    fn from(u: Uri) -> String {
        u.text
    }
}

// The parts are a function of the text, so the text decides equality and hashing.
impl PartialEq for Uri {
    fn eq(&self, other: &Uri) -> bool {
        self.text == other.text
    }
}

impl Eq for Uri {}

impl std::hash::Hash for Uri {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialEq<str> for Uri {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Uri {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<Uri> for str {
    fn eq(&self, other: &Uri) -> bool {
        self == other.text
    }
}

impl PartialEq<Uri> for &str {
    fn eq(&self, other: &Uri) -> bool {
        *self == other.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> UriError {
        match Uri::parse(s) {
            Ok(u) => panic!("{s:?} parsed as {u:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn sip_parts_are_located() {
        let u: Uri = "sips:alice:secret@[2001:db8::10]:5071;transport=tcp;lr?Subject=hi&X=%20"
            .parse()
            .expect("uri");
        assert_eq!(u.scheme(), "sips");
        assert!(u.is_sip() && u.is_sips());
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(u.host(), Some("[2001:db8::10]"));
        assert_eq!(u.ip(), Some("2001:db8::10".parse().expect("ip")));
        assert_eq!(u.port(), Some(5071));
        assert_eq!(u.host_port(), Some("[2001:db8::10]:5071"));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers(), Some("Subject=hi&X=%20"));
    }

    /// RFC 5118: brackets are required (4.2), a port inside them is part of the address
    /// (4.3), and RFC 3261's three-colon form before an IPv4 tail is tolerated (4.10).
    #[test]
    fn rfc5118_ipv6_references() {
        assert_eq!(err("sip:2001:db8::10"), UriError::BadIpv4);
        let u = Uri::parse("sip:[2001:db8::10:5070]").expect("port-ambiguous");
        assert_eq!((u.host(), u.port()), (Some("[2001:db8::10:5070]"), None));
        let u = Uri::parse("sip:user@[2001:db8:::192.0.2.1]").expect("3 colons");
        assert_eq!(u.host(), Some("[2001:db8:::192.0.2.1]"), "kept as written");
        assert_eq!(u.ip(), Some("2001:db8::c000:201".parse().expect("ip")));
    }

    #[test]
    fn minimal_and_ipv4_forms() {
        let u = Uri::parse("SIP:gw.example.").expect("uri");
        assert!(u.is_sip() && !u.is_sips());
        assert_eq!(
            (u.user(), u.host(), u.port()),
            (None, Some("gw.example."), None)
        );
        assert_eq!(u.ip(), None);
        assert_eq!(u.params().count(), 0);
        let u = Uri::parse("sip:12345@127.0.0.1:5060").expect("uri");
        assert_eq!(u.ip(), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(u.port(), Some(5060));
    }

    /// What carriers send beyond the strict grammar and we take: `_` in host labels, `#` in
    /// the user part.
    #[test]
    fn carrier_leniencies() {
        let u = Uri::parse("sip:*98#@sbc_1.trunk.example:5060").expect("lenient");
        assert_eq!(u.user(), Some("*98#"));
        assert_eq!(u.host(), Some("sbc_1.trunk.example"));
        assert_eq!(u.port(), Some(5060));
    }

    /// The user parts of RFC 4475 3.1.1.2 (intmeth), 3.1.1.3 (esc01) and 3.1.1.9 (semiuri):
    /// `;`, `?` and escapes belong to the user, and the text is kept as written.
    #[test]
    fn torture_user_parts() {
        let s = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(s).expect("intmeth");
        assert_eq!(
            u.user(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!((u.host(), u.headers()), (Some("example.com"), None));
        assert_eq!(u.to_string(), s);
        let u = Uri::parse("sip:sips%3Auser%40example.com@example.net").expect("esc01");
        assert_eq!(u.user(), Some("sips%3Auser%40example.com"));
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(u.params().count(), 0);
    }

    #[test]
    fn other_schemes_are_opaque() {
        for s in [
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "soap.beep://192.0.2.103:3002",
            "tel:+1-201-555-0123",
            "urn:service:sos",
            "http://www.example.com",
        ] {
            let u = Uri::parse(s).expect(s);
            assert!(!u.is_sip(), "{s}");
            assert_eq!((u.host(), u.port(), u.user()), (None, None, None));
            assert_eq!(u, s);
        }
        assert_eq!(err("tel:+1 555"), UriError::ControlOrSpace);
        assert_eq!(err("urn:a<b"), UriError::BadOpaque);
        assert_eq!(err("urn:a%zz"), UriError::BadEscape);
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        let long_digits = format!("sip:a@b:{}", "9".repeat(40));
        for (s, want) in [
            ("", UriError::Empty),
            ("sip:", UriError::NothingAfterScheme),
            ("user@example.com", UriError::MissingScheme),
            (":user@example.com", UriError::MissingScheme),
            ("1sip:a@b", UriError::BadScheme),
            ("sip:a@", UriError::EmptyHost),
            ("sip:a@;lr", UriError::EmptyHost),
            ("sip::5060", UriError::EmptyHost),
            ("sip:@b", UriError::EmptyUser),
            ("sip:a@b:", UriError::BadPort),
            ("sip:a@b:50x", UriError::BadPort),
            ("sip:a@b:65536", UriError::PortOutOfRange),
            (long_digits.as_str(), UriError::PortOutOfRange),
            ("sip:2001:db8::10", UriError::BadIpv4),
            ("sip:a@[2001:db8::1", UriError::UnterminatedIpv6),
            ("sip:a@[2001:db8::::1]", UriError::BadIpv6),
            ("sip:a@[2001:db8:::1]", UriError::BadIpv6),
            ("sip:a@[2001:db8:::192.0.2.1:::1]", UriError::BadIpv6),
            ("sip:a@[::1]x", UriError::BadHost),
            ("sip:a@10.0.0.256", UriError::BadIpv4),
            ("sip:a@-bad.example", UriError::BadHost),
            ("sip:a@b..c", UriError::BadHost),
            ("sip:a\r\n@b", UriError::ControlOrSpace),
            ("sip:a\0@b", UriError::ControlOrSpace),
            ("sip:a b@c", UriError::ControlOrSpace),
            ("sip:ü@b", UriError::NotAscii),
            ("sip:a<b@c", UriError::BadUser),
            ("sip:a:p@ss@c", UriError::BadHost),
            ("sip:a:p#@c", UriError::BadPassword),
            ("sip:a%4@b", UriError::BadEscape),
            ("sip:a@b;", UriError::BadParam),
            ("sip:a@b;;lr", UriError::BadParam),
            ("sip:a@b;x=", UriError::BadParam),
            ("sip:a@b;x=\"y\"", UriError::BadParam),
            ("sip:a@b?", UriError::BadHeaders),
            ("sip:a@b?x", UriError::BadHeaders),
            ("sip:a@b?=x", UriError::BadHeaders),
        ] {
            assert_eq!(err(s), want, "{s:?}");
            assert!(want.in_request_uri().ends_with(want.as_str()));
        }
    }

    #[test]
    fn equality_and_conversions_follow_the_text() {
        let a = Uri::parse("sip:a@b;lr").expect("uri");
        assert_eq!(a, "sip:a@b;lr");
        assert_eq!("sip:a@b;lr", a);
        assert_ne!(a, Uri::parse("sip:A@b;lr").expect("uri"));
        assert_eq!(format!("{a:?}"), "Uri(\"sip:a@b;lr\")");
        assert_eq!(String::from(a.clone()), a.as_str());
        assert_eq!(Uri::try_from(a.as_str()), Ok(a));
    }
}
