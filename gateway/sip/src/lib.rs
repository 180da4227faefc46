//! # sip: the sans-IO SIP core of the 12345 intake gateway
//!
//! SIP for calls from the carrier trunk: parse/serialize, RFC 3261 transactions and dialogs, and
//! the user agent the call layer drives ([`Endpoint`]). The gateway's tokio UDP and TCP
//! transports (`gateway::runtime::sip_transport`) carry its bytes to sockets; nothing here does.
//!
//! # Why our own core
//! The Rust SIP crates did not fit: `rsip` (types and parser) is unmaintained; `rsipstack` and
//! `ezk` are async stacks tied to tokio, each driven by one author, so their timers and sockets
//! would be inside code we cannot test deterministically; `rvoip` is not stable. A UAS facing a
//! single carrier trunk needs a small part of SIP (INVITE/ACK/BYE/CANCEL/OPTIONS/INFO, no
//! registration, no proxying; outgoing INVITEs only to transfer a caller to an agent, with no
//! authentication and no redirects), so we own a sans-IO core in the style of `quinn-proto` and
//! `str0m`: plain state machines fed bytes and an `Instant`, returning bytes to send and call
//! events. Everything here is deterministic and tested with a fake clock; only the gateway's
//! transport touches sockets and tokio time.
//!
//! # No I/O, no clock, no global randomness
//! This crate does not depend on tokio, does not touch the file system, and never reads the
//! clock: every entry point takes the current time as an `Instant` argument. The branch ids,
//! tags and Call-IDs it invents come from a seeded RNG owned by the [`Endpoint`]
//! ([`SipSettings::rng_seed`]); the gateway seeds it from the OS at start, tests use fixed seeds
//! and get the same bytes every run. `tests/no_io.rs` keeps it that way.
//!
//! # The poll convention
//! Every sans-IO core of the gateway (`sip::Endpoint`, `media::rtp_session::RtpSession` and the
//! gateway's `call::core::CallCore`) is driven the same way, as str0m's `Rtc` is:
//!
//! 1. **Input.** Tell the core what happened, with the current time: `handle_*(now, input)` for a
//!    datagram, a command or an event, and `handle_timeout(now)` once the instant it asked for has
//!    come. Inputs hand out no output: they return `()`, a `Result` when the core may refuse a
//!    command, or a value the caller needs at once (such as a new call's id).
//! 2. **Output.** Call `poll_output()` until it returns `Output::Timeout` (the call core's is
//!    `poll_output(now)`: it runs its flow interpreter as its commands are taken). Before that it
//!    hands out, in the order it arose, everything the inputs caused: `Output::Transmit` (a
//!    datagram to send) and `Output::Event` (news for the layer above), or, from the call core,
//!    `Output::Command` (work for its driver). Output not drained waits for the next
//!    `poll_output`: nothing is lost, but nothing is sent either, so drain after every input.
//! 3. **Wait.** `Output::Timeout(when)` says nothing else is pending and when to call
//!    `handle_timeout` next. Wait for that instant or the next input, whichever comes first, and
//!    start again at 1. A core with no timer running says `Timeout(None)`: come back only with
//!    new input. (The RTP session always has its next 20 ms tick, so its `Timeout` holds a plain
//!    `Instant`.)
//!
//! Here: the inputs are [`Endpoint::handle_datagram`]`(now, from, transport, bytes)` (a datagram
//! or a framed TCP message), the call layer's commands ([`Endpoint::ring`],
//! [`Endpoint::answer`], [`Endpoint::reject`], [`Endpoint::hangup`], [`Endpoint::send_info`],
//! [`Endpoint::invite`], each `(now, ...)`; a refused one returns [`CommandError`] and causes no
//! output; `invite` returns the new leg's [`CallId`]) and [`Endpoint::handle_timeout`]`(now)`.
//! [`Endpoint::poll_output`] hands out [`Output::Transmit`] (bytes for an address and
//! transport) and [`Output::Event`] (a [`CallEvent`]), then [`Output::Timeout`] with the
//! earliest timer deadline (retransmissions, transaction timeouts), `None` when no transaction
//! runs.
//!
//! # Layout
//! - [`message`]: types and typed header access (Via, From/To tags, CSeq, Contact, ...).
//! - [`parse`] / [`serialize`]: the wire format; the parser passes the RFC 4475 torture corpus.
//! - [`uri`]: [`Uri`], a SIP/SIPS URI (or any other scheme, kept opaque) parsed once where its
//!   request line or header is parsed, so nothing downstream re-splits URI text by hand; the
//!   text stays as received, so serializing gives the same bytes.
//! - `transaction` (private): RFC 3261 section 17 state machines and their timers, named once
//!   (A to K, and RFC 6026's L and M) in one table; only their settings ([`Timers`]) are public.
//! - `timed` (private): the index of transactions by next deadline behind
//!   [`Output::Timeout`].
//! - `dialog` (private): dialog state for both roles (tags, CSeq, route set, remote target).
//! - `endpoint` (private, its types re-exported here): the user agent ([`Endpoint`]): UAS for
//!   calls from the trunk, UAC for the legs to human agents that a transfer bridges
//!   ([`Endpoint::invite`]). Its code is split by role into `endpoint/uas.rs`,
//!   `endpoint/uac.rs` and `endpoint/validation.rs` (the checks that reject requests).
//! - This root: [`SipSettings`] (addresses, trunk allow list, identity, timers, RNG seed) and
//!   [`Transport`].

#![warn(missing_docs, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};

mod dialog;
mod endpoint;
pub mod message;
pub mod parse;
pub mod registrar;
pub mod serialize;
mod timed;
mod transaction;
pub mod uri;

pub use endpoint::{
    CallEvent, CallId, CommandError, Dtmf, Endpoint, OutgoingCall, Output, TerminationReason,
    Transmit, parse_dtmf,
};
pub use ipnet::IpNet;
pub use transaction::Timers;
pub use uri::{Uri, UriError};

/// The transport a message came in on or goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: one message each, retransmitted by the transactions.
    Udp,
    /// A stream framed by Content-Length; reliable, so no retransmission timers.
    Tcp,
}

impl Transport {
    /// Reliable transports need no retransmission timers (RFC 3261 17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The name written in Via (`SIP/2.0/UDP`) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// SIP settings; the gateway's config maps onto this.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// Our UDP address: the port written in Via and Contact for UDP, and the host when
    /// `advertised_host` is `None`.
    pub udp: SocketAddr,
    /// Our TCP address: the port written in Via and Contact for TCP.
    pub tcp: SocketAddr,
    /// Trunk source addresses allowed to send requests; others get 403 Forbidden.
    pub trunk_allow: Vec<IpNet>,
    /// Sent in the Server and User-Agent headers.
    pub user_agent: String,
    /// Host written in our Via and Contact headers; the bound address when `None`.
    pub advertised_host: Option<String>,
    /// User part of our Contact URI.
    pub contact_user: String,
    /// RFC 3261 T1, T2 and T4, from which every transaction timer is derived.
    pub timers: Timers,
    /// Seed of the endpoint's RNG for branch ids, tags and Call-IDs. Seed it from the OS in
    /// production (two runs must not reuse identifiers); a fixed seed makes a test repeatable.
    pub rng_seed: u64,
    /// New calls (INVITEs without a To tag) taken per second from one source address; beyond
    /// it (after `source_call_burst`) they are answered 503 with Retry-After. `0`: no limit.
    pub source_call_rate: u32,
    /// How many new calls one address may start at once before `source_call_rate` applies.
    pub source_call_burst: u32,
    /// Agents' phones that may REGISTER (digest-authenticated, from any address); `None`:
    /// REGISTER is answered 405.
    pub registrar: Option<registrar::RegistrarSettings>,
}

impl Default for SipSettings {
    fn default() -> Self {
        let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5060));
        SipSettings {
            udp: local,
            tcp: local,
            trunk_allow: vec![
                ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).into(),
                ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128).into(),
            ],
            user_agent: "12345-gateway".into(),
            advertised_host: None,
            contact_user: "12345".into(),
            timers: Timers::default(),
            rng_seed: 0,
            source_call_rate: 1000,
            source_call_burst: 1000,
            registrar: None,
        }
    }
}

impl SipSettings {
    /// Whether a source address may send us requests.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trunk_allow.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allow_list_is_loopback() {
        let s = SipSettings::default();
        assert!(s.allows("127.0.0.1".parse().expect("ip")));
        assert!(s.allows("127.9.8.7".parse().expect("ip")));
        assert!(s.allows("::1".parse().expect("ip")));
        assert!(s.allows("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!s.allows("192.0.2.1".parse().expect("ip")));
        assert!(!s.allows("::2".parse().expect("ip")));
    }
}
