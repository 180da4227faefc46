//! A registrar for agents' softphones (RFC 3261 10.3), with HTTP digest authentication (RFC
//! 2617, MD5, `qop=auth` or none, as every SIP phone speaks it), sans-IO.
//!
//! Agents' phones REGISTER with the gateway so that a queue can ring them wherever they are
//! logged in. Each agent has one binding (a hotline agent has one phone; a new REGISTER
//! replaces the old contact). The nonce is stateless: the seconds since the registrar started
//! and a keyed hash of them, so a nonce needs no table, a forged one fails, and one older than
//! [`NONCE_LIFETIME`] is answered `stale=true` (the phone retries with the new nonce without
//! asking its user). A wrong password is answered 403, not another challenge: a phone then
//! stops instead of retrying forever, and the log says which agent failed.
//!
//! Written here because the digest crates on crates.io are client-side (they compute a
//! response; none verifies one against a stateless nonce), and the header syntax is small.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::message::{Method, NameAddr, Request};

/// A nonce is good for this long; after it, `stale=true`.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Who may register, and for how long (`[sip.agents]`, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarSettings {
    /// The digest realm phones show and hash with.
    pub realm: String,
    /// Agent user name -> password.
    pub users: BTreeMap<String, String>,
    /// Shorter registrations are refused 423 Interval Too Brief (RFC 3261 10.3 step 7).
    pub min_expires: u32,
    /// Longer ones are cut to this.
    pub max_expires: u32,
    /// When the REGISTER names no expiry.
    pub default_expires: u32,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        Self {
            realm: "12345".into(),
            users: BTreeMap::new(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
        }
    }
}

/// Where an agent's phone is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI the phone registered.
    pub contact: String,
    /// When it lapses unless the phone registers again.
    pub expires_at: Instant,
}

/// What to answer a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 401 with a fresh challenge ([`Registrar::challenge`]); `stale` when only the nonce was old.
    Challenge {
        /// Only the nonce was too old (the credentials were right).
        stale: bool,
    },
    /// 403: unknown agent or wrong password (the reason is for the log).
    Forbidden(&'static str),
    /// 423 Interval Too Brief, with Min-Expires.
    TooBrief,
    /// 400 with this reason phrase.
    Bad(&'static str),
    /// 200: `user`'s binding is now `contact` for `expires` seconds, or removed (`None`).
    Done {
        /// The agent.
        user: String,
        /// Their Contact now; `None` when removed (or queried with none held).
        contact: Option<String>,
        /// Seconds the binding holds.
        expires: u32,
    },
}

/// The registrar's state (see the module doc).
#[derive(Debug)]
pub struct Registrar {
    settings: RegistrarSettings,
    secret: u64,
    /// The nonces' clock starts at the first REGISTER (no clock inside).
    epoch: Option<Instant>,
    bindings: BTreeMap<String, Binding>,
    /// Nonces answered, per agent, while fresh: the highest nonce count (`nc`) used with each
    /// (0 without `qop`, when a nonce is good once), so a captured request cannot be replayed.
    used: BTreeMap<(String, String), (u64, u32)>,
    /// Challenges issued (each nonce's sequence number).
    issued: u64,
}

/// Most nonces remembered as used at once (each is forgotten when it goes stale anyway).
const MAX_USED_NONCES: usize = 10_000;

/// The fields of `Authorization: Digest ...` we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCredentials {
    /// The agent's user name.
    pub username: String,
    /// The realm the phone hashed with.
    pub realm: String,
    /// The nonce of our challenge it answers.
    pub nonce: String,
    /// The digest-uri the phone hashed (its Request-URI).
    pub uri: String,
    /// The response, lower-case hex.
    pub response: String,
    /// `MD5` when given.
    pub algorithm: Option<String>,
    /// `auth` when given.
    pub qop: Option<String>,
    /// The nonce count, with `qop`.
    pub nc: Option<String>,
    /// The client nonce, with `qop`.
    pub cnonce: Option<String>,
}

/// Why an Authorization header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Another scheme (Basic...).
    #[error("not a Digest authorization")]
    NotDigest,
    /// Not `name=value` pairs, or an unterminated quote.
    #[error("malformed parameter list")]
    Malformed,
    /// A parameter the response needs.
    #[error("missing {0}")]
    Missing(&'static str),
}

/// Parse `Digest username="1001", realm="12345", ...` (RFC 2617 3.2.2): comma-separated
/// `name=value` pairs, values quoted (with backslash escapes) or tokens.
pub fn parse_digest(header: &str) -> Result<DigestCredentials, DigestError> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    let mut c = DigestCredentials::default();
    let mut chars = rest.trim_start().chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|ch| ch.is_whitespace() || *ch == ',')
        {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = chars
            .by_ref()
            .take_while(|ch| *ch != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() || name.contains(|ch: char| ch.is_whitespace() || ch == ',') {
            return Err(DigestError::Malformed);
        }
        while chars.peek().is_some_and(|ch| ch.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                match ch {
                    '\\' => v.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    _ => v.push(ch),
                }
            }
            if !closed {
                return Err(DigestError::Malformed);
            }
            v
        } else {
            let mut v = String::new();
            while let Some(&ch) = chars.peek() {
                if ch == ',' {
                    break;
                }
                v.push(ch);
                chars.next();
            }
            let v = v.trim().to_owned();
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err(DigestError::Malformed);
            }
            v
        };
        match name.as_str() {
            "username" => c.username = value,
            "realm" => c.realm = value,
            "nonce" => c.nonce = value,
            "uri" => c.uri = value,
            "response" => c.response = value.to_ascii_lowercase(),
            "algorithm" => c.algorithm = Some(value),
            "qop" => c.qop = Some(value),
            "nc" => c.nc = Some(value),
            "cnonce" => c.cnonce = Some(value),
            _ => {}
        }
    }
    for (field, name) in [
        (&c.username, "username"),
        (&c.realm, "realm"),
        (&c.nonce, "nonce"),
        (&c.uri, "uri"),
        (&c.response, "response"),
    ] {
        if field.is_empty() {
            return Err(DigestError::Missing(name));
        }
    }
    Ok(c)
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The response a phone with `password` computes for `c` and `method` (RFC 2617 3.2.2.1).
pub fn expected_response(c: &DigestCredentials, password: &str, method: &str) -> String {
    let ha1 = md5_hex(&[&c.username, &c.realm, password]);
    let ha2 = md5_hex(&[method, &c.uri]);
    match (&c.qop, &c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&[&ha1, &c.nonce, nc, cnonce, qop, &ha2]),
        _ => md5_hex(&[&ha1, &c.nonce, &ha2]),
    }
}

/// Compare in time independent of where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Registrar {
    /// `secret` keys the nonces (from the endpoint's RNG).
    pub fn new(settings: RegistrarSettings, secret: u64) -> Self {
        Self {
            settings,
            secret,
            epoch: None,
            bindings: BTreeMap::new(),
            used: BTreeMap::new(),
            issued: 0,
        }
    }

    /// Seconds on the nonces' clock at `now`.
    fn clock(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    /// The nonce issued at `secs` as the `seq`-th challenge: each challenge has its own, so
    /// two phones (or two calls of one) challenged in the same second never share a nonce and
    /// its counts ([`Registrar::first_use`]).
    fn nonce_at(&self, secs: u64, seq: u64) -> String {
        let stamp = format!("{secs:x}");
        let seq = format!("{seq:x}");
        let mac = md5_hex(&[
            &format!("{:x}", self.secret),
            &stamp,
            &seq,
            &self.settings.realm,
        ]);
        format!("{stamp}.{seq}.{}", &mac[..20])
    }

    /// The WWW-Authenticate value of a 401 at `now`.
    pub fn challenge(&mut self, now: Instant, stale: bool) -> String {
        let secs = self.clock(now);
        self.issued += 1;
        format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
            self.settings.realm,
            self.nonce_at(secs, self.issued),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// Whether `nonce` is ours: `Some(true)` if still fresh, `Some(false)` if stale.
    fn nonce_fresh(&mut self, now: Instant, nonce: &str) -> Option<bool> {
        let mut parts = nonce.splitn(3, '.');
        let (stamp, seq) = (parts.next()?, parts.next()?);
        let secs = u64::from_str_radix(stamp, 16).ok()?;
        let seq = u64::from_str_radix(seq, 16).ok()?;
        if !same(&self.nonce_at(secs, seq), nonce) {
            return None;
        }
        let age = self.clock(now).checked_sub(secs)?;
        Some(age <= NONCE_LIFETIME.as_secs())
    }

    /// The smallest expiry the registrar takes (for Min-Expires).
    pub fn min_expires(&self) -> u32 {
        self.settings.min_expires
    }

    /// Decide on a REGISTER (validated by the endpoint) at `now`.
    pub fn handle(&mut self, now: Instant, req: &Request) -> Decision {
        if req.method != Method::Register {
            return Decision::Bad("Not a REGISTER");
        }
        let user = match self.authenticate(now, req) {
            Ok(user) => user,
            Err(decision) => return decision,
        };
        // The To header names whose binding this is; an agent registers only themself.
        let to_user = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.uri.user().map(str::to_owned));
        if to_user.as_deref() != Some(user.as_str()) {
            return Decision::Forbidden("To names another agent");
        }
        self.update(now, user, req)
    }

    /// Check a request's digest credentials (RFC 2617, computed with the request's own method:
    /// a REGISTER, or an agent's INVITE to a feature code): the agent's name, or what to answer
    /// instead ([`Decision::Challenge`], [`Decision::Forbidden`], [`Decision::Bad`]).
    pub fn authenticate(&mut self, now: Instant, req: &Request) -> Result<String, Decision> {
        let Some(auth) = req.headers.get("Authorization") else {
            return Err(Decision::Challenge { stale: false });
        };
        let c = match parse_digest(auth) {
            Ok(c) => c,
            Err(DigestError::NotDigest) => return Err(Decision::Challenge { stale: false }),
            Err(_) => return Err(Decision::Bad("Malformed Authorization")),
        };
        if c.algorithm
            .as_deref()
            .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
            || c.qop.as_deref().is_some_and(|q| q != "auth")
            || c.realm != self.settings.realm
        {
            return Err(Decision::Challenge { stale: false });
        }
        match self.nonce_fresh(now, &c.nonce) {
            None => return Err(Decision::Challenge { stale: false }),
            Some(false) => return Err(Decision::Challenge { stale: true }),
            Some(true) => {}
        }
        let Some(password) = self.settings.users.get(&c.username) else {
            return Err(Decision::Forbidden("unknown agent"));
        };
        if !same(
            &expected_response(&c, password, req.method.as_str()),
            &c.response,
        ) {
            return Err(Decision::Forbidden("wrong password"));
        }
        if !self.first_use(now, &c) {
            // A replay (or a client reusing a nonce without qop): a fresh nonce is the answer.
            return Err(Decision::Challenge { stale: true });
        }
        Ok(c.username)
    }

    /// Record the credentials' use of their nonce; `false` when it is not new: the same nonce
    /// count again (or a lower one) with `qop=auth`, or the nonce again without it.
    fn first_use(&mut self, now: Instant, c: &DigestCredentials) -> bool {
        let clock = self.clock(now);
        let lifetime = NONCE_LIFETIME.as_secs();
        self.used
            .retain(|_, (issued, _)| clock.saturating_sub(*issued) <= lifetime);
        if self.used.len() >= MAX_USED_NONCES {
            self.used.clear();
        }
        let nc = match (&c.qop, &c.nc) {
            (Some(_), Some(nc)) => match u32::from_str_radix(nc, 16) {
                Ok(n) if n > 0 => n,
                _ => return false,
            },
            (Some(_), None) => return false,
            (None, _) => 0,
        };
        let issued = c
            .nonce
            .split_once('.')
            .and_then(|(stamp, _)| u64::from_str_radix(stamp, 16).ok())
            .unwrap_or(clock);
        let key = (c.username.clone(), c.nonce.clone());
        match self.used.get(&key) {
            Some(&(_, last)) if nc <= last || nc == 0 => false,
            _ => {
                self.used.insert(key, (issued, nc));
                true
            }
        }
    }

    fn update(&mut self, now: Instant, user: String, req: &Request) -> Decision {
        let header_expires = match req.headers.expires() {
            Ok(e) => e,
            Err(_) => return Decision::Bad("Bad Expires"),
        };
        let raw_contacts = req.headers.values("Contact");
        if raw_contacts.is_empty() {
            // A query: report the binding as it is.
            let b = self.bindings.get(&user);
            let expires = b.map_or(0, |b| {
                b.expires_at.saturating_duration_since(now).as_secs() as u32
            });
            return Decision::Done {
                contact: b.map(|b| b.contact.clone()),
                user,
                expires,
            };
        }
        if raw_contacts.iter().any(|c| c.trim() == "*") {
            if raw_contacts.len() > 1 || header_expires != Some(0) {
                return Decision::Bad("Contact * needs Expires: 0 alone");
            }
            self.bindings.remove(&user);
            return Decision::Done {
                user,
                contact: None,
                expires: 0,
            };
        }
        let contacts: Result<Vec<NameAddr>, _> = req.headers.contact();
        let Ok(contacts) = contacts else {
            return Decision::Bad("Bad Contact");
        };
        let Some(contact) = contacts.last() else {
            return Decision::Bad("Bad Contact");
        };
        let param_expires = contact
            .params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.as_deref())
            .map(str::parse::<u32>);
        let expires = match param_expires {
            Some(Ok(e)) => e,
            Some(Err(_)) => return Decision::Bad("Bad Contact expires"),
            None => header_expires.unwrap_or(self.settings.default_expires),
        };
        if expires == 0 {
            self.bindings.remove(&user);
            return Decision::Done {
                user,
                contact: None,
                expires: 0,
            };
        }
        if expires < self.settings.min_expires {
            return Decision::TooBrief;
        }
        let expires = expires.min(self.settings.max_expires);
        let uri = contact.uri.as_str().to_owned();
        self.bindings.insert(
            user.clone(),
            Binding {
                contact: uri.clone(),
                expires_at: now + Duration::from_secs(u64::from(expires)),
            },
        );
        Decision::Done {
            user,
            contact: Some(uri),
            expires,
        }
    }

    /// Drop bindings that expired by `now`; returns their agents.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.expires_at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &gone {
            self.bindings.remove(u);
        }
        gone
    }

    /// When the next binding expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.bindings.values().map(|b| b.expires_at).min()
    }

    /// The agent's binding, if registered.
    pub fn binding(&self, user: &str) -> Option<&Binding> {
        self.bindings.get(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::parse::parse_datagram;

    fn settings() -> RegistrarSettings {
        RegistrarSettings {
            users: [("1001".to_owned(), "s3cret".to_owned())].into(),
            ..RegistrarSettings::default()
        }
    }

    fn register(auth: Option<&str>, contact: &str, expires: Option<u32>, to: &str) -> Request {
        let mut text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:{to}@127.0.0.1>;tag=a\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: r1\r\n\
             CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: {contact}\r\n"
        );
        if let Some(e) = expires {
            text.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = auth {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        match parse_datagram(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// What a phone answers to `challenge` (qop=auth).
    fn answer(challenge: &str, user: &str, password: &str) -> String {
        answer_nc(challenge, user, password, 1)
    }

    /// The digest answer with nonce count `nc` (a phone counts up as it reuses a nonce).
    fn answer_nc(challenge: &str, user: &str, password: &str, nc: u32) -> String {
        let nc = format!("{nc:08x}");
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("nonce");
        let c = DigestCredentials {
            username: user.into(),
            realm: "12345".into(),
            nonce: nonce.into(),
            uri: "sip:127.0.0.1".into(),
            response: String::new(),
            algorithm: Some("MD5".into()),
            qop: Some("auth".into()),
            nc: Some(nc.clone()),
            cnonce: Some("0a4f113b".into()),
        };
        let response = expected_response(&c, password, "REGISTER");
        format!(
            "Digest username=\"{user}\", realm=\"12345\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"0a4f113b\""
        )
    }

    /// RFC 2617 3.5's example: the response for Mufasa's GET of /dir/index.html.
    #[test]
    fn the_rfc_2617_example_response() {
        let c = DigestCredentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: None,
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("0a4f113b".into()),
        };
        assert_eq!(
            expected_response(&c, "Circle Of Life", "GET"),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn a_phone_is_challenged_then_registered_then_expires() {
        let t0 = Instant::now();
        let mut r = Registrar::new(settings(), 42);
        let req = register(None, "<sip:1001@127.0.0.1:5071>", None, "1001");
        assert_eq!(r.handle(t0, &req), Decision::Challenge { stale: false });
        let challenge = r.challenge(t0, false);
        let auth = answer(&challenge, "1001", "s3cret");
        let req = register(
            Some(&auth),
            "<sip:1001@127.0.0.1:5071>;expires=120",
            None,
            "1001",
        );
        assert_eq!(
            r.handle(t0 + Duration::from_secs(1), &req),
            Decision::Done {
                user: "1001".into(),
                contact: Some("sip:1001@127.0.0.1:5071".into()),
                expires: 120
            }
        );
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(121)));
        assert!(r.expire(t0 + Duration::from_secs(120)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(121)), ["1001"]);
        assert_eq!(r.binding("1001"), None);
    }

    #[test]
    fn wrong_passwords_strangers_and_forged_or_old_nonces_are_refused() {
        let t0 = Instant::now();
        let mut r = Registrar::new(settings(), 42);
        let challenge = r.challenge(t0, false);
        let contact = "<sip:1001@127.0.0.1:5071>";
        let wrong = register(
            Some(&answer(&challenge, "1001", "guess")),
            contact,
            None,
            "1001",
        );
        assert_eq!(r.handle(t0, &wrong), Decision::Forbidden("wrong password"));
        let stranger = register(
            Some(&answer(&challenge, "9999", "x")),
            contact,
            None,
            "9999",
        );
        assert_eq!(
            r.handle(t0, &stranger),
            Decision::Forbidden("unknown agent")
        );
        let other = register(
            Some(&answer(&challenge, "1001", "s3cret")),
            contact,
            None,
            "1002",
        );
        assert_eq!(
            r.handle(t0, &other),
            Decision::Forbidden("To names another agent")
        );
        // Another registrar's nonce (another secret) is not ours: a fresh challenge.
        let foreign = Registrar::new(settings(), 7).challenge(t0, false);
        let forged = register(
            Some(&answer(&foreign, "1001", "s3cret")),
            contact,
            None,
            "1001",
        );
        assert_eq!(r.handle(t0, &forged), Decision::Challenge { stale: false });
        // Our own nonce, too old: stale, so the phone retries without asking its user.
        let ok = register(
            Some(&answer(&challenge, "1001", "s3cret")),
            contact,
            None,
            "1001",
        );
        let late = t0 + NONCE_LIFETIME + Duration::from_secs(1);
        assert_eq!(r.handle(late, &ok), Decision::Challenge { stale: true });
        assert!(r.challenge(late, true).ends_with("stale=true"));
        assert_eq!(r.binding("1001"), None);
    }

    #[test]
    fn expiry_is_bounded_and_zero_or_star_unregisters() {
        let t0 = Instant::now();
        let mut r = Registrar::new(settings(), 42);
        let challenge = r.challenge(t0, false);
        // One nonce, counted up request by request, as a phone does.
        let auth = |nc| answer_nc(&challenge, "1001", "s3cret", nc);
        let contact = "<sip:1001@10.0.0.9:5060>";
        let brief = register(Some(&auth(1)), contact, Some(10), "1001");
        assert_eq!(r.handle(t0, &brief), Decision::TooBrief);
        let long = register(Some(&auth(2)), contact, Some(86_400), "1001");
        assert!(matches!(
            r.handle(t0, &long),
            Decision::Done { expires: 3600, .. }
        ));
        let star = register(Some(&auth(3)), "*", Some(0), "1001");
        assert!(matches!(
            r.handle(t0, &star),
            Decision::Done { contact: None, .. }
        ));
        assert_eq!(r.binding("1001"), None);
        let star_without_zero = register(Some(&auth(4)), "*", None, "1001");
        assert!(matches!(r.handle(t0, &star_without_zero), Decision::Bad(_)));
    }

    #[test]
    fn a_captured_register_cannot_be_replayed() {
        let t0 = Instant::now();
        let mut r = Registrar::new(settings(), 42);
        let challenge = r.challenge(t0, false);
        let contact = "<sip:1001@127.0.0.1:5071>";
        let first = register(
            Some(&answer_nc(&challenge, "1001", "s3cret", 1)),
            contact,
            None,
            "1001",
        );
        assert!(matches!(r.handle(t0, &first), Decision::Done { .. }));
        // The same request again (an eavesdropper's copy): a fresh nonce is asked for.
        assert_eq!(r.handle(t0, &first), Decision::Challenge { stale: true });
        // The phone itself counts on: accepted; an older count is not.
        let next = register(
            Some(&answer_nc(&challenge, "1001", "s3cret", 2)),
            contact,
            None,
            "1001",
        );
        assert!(matches!(r.handle(t0, &next), Decision::Done { .. }));
        assert_eq!(r.handle(t0, &first), Decision::Challenge { stale: true });
        // A zero or unreadable count is no count.
        let zero = register(
            Some(&answer_nc(&challenge, "1001", "s3cret", 0)),
            contact,
            None,
            "1001",
        );
        assert_eq!(r.handle(t0, &zero), Decision::Challenge { stale: true });
    }

    #[test]
    fn malformed_authorization_is_read_or_refused_never_panics() {
        for bad in [
            "",
            "Digest",
            "Digest username",
            "Digest username=\"unterminated",
            "Digest =\"x\"",
            "Digest username=a b",
            "Digest realm=\"12345\", nonce=\"n\", uri=\"u\", response=\"r\"",
            "Digest \u{0}=\u{0}",
            "Digest username=\"a\\",
        ] {
            assert!(parse_digest(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_digest("Basic dXNlcg=="), Err(DigestError::NotDigest));
        let c = parse_digest(
            "digest  USERNAME = \"a\\\"b\" ,realm=\"r, with comma\",nonce=n,uri=\"sip:x\",response=ABC",
        )
        .expect("lenient but exact");
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "r, with comma");
        assert_eq!(c.response, "abc");
    }
}
