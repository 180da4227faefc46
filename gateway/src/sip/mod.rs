//! SIP for calls from the carrier trunk: a sans-IO core (parse/serialize, RFC 3261 transactions
//! and dialogs) driven by tokio UDP and TCP transports at the edge.
//!
//! # Why our own core
//! The Rust SIP crates did not fit: `rsip` (types and parser) is unmaintained; `rsipstack` and
//! `ezk` are async stacks tied to tokio, each driven by one author, so their timers and sockets
//! would be inside code we cannot test deterministically; `rvoip` is not stable. A UAS facing a
//! single carrier trunk needs a small part of SIP (INVITE/ACK/BYE/CANCEL/OPTIONS/INFO, no
//! registration, no proxying; outgoing INVITEs only to transfer a caller to an agent, with no
//! authentication and no redirects), so we own a sans-IO core in the style of `quinn-proto` and
//! `str0m`: plain state machines fed bytes and an `Instant`, returning bytes to send and call
//! events. Everything here is deterministic and tested with a fake clock; only
//! [`transport`] touches sockets and tokio time.
//!
//! # Layout
//! - [`message`]: types and typed header access (Via, From/To tags, CSeq, Contact, ...).
//! - [`parse`] / [`serialize`]: the wire format; the parser passes the RFC 4475 torture corpus.
//! - [`transaction`]: RFC 3261 section 17 state machines and their timers.
//! - [`dialog`]: dialog state for both roles (tags, CSeq, route set, remote target).
//! - [`endpoint`]: the user agent the call layer drives ([`Endpoint`]): UAS for calls from the
//!   trunk, UAC for the legs to human agents that a transfer bridges ([`Endpoint::invite`]).
//! - [`transport`]: the tokio UDP/TCP driver task ([`transport::SipService`]).

use std::net::{IpAddr, SocketAddr};

pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod parse;
pub mod serialize;
mod timed;
pub mod transaction;
pub mod transport;

pub use endpoint::{
    CallEvent, CallId, CommandError, Dtmf, Endpoint, OutgoingCall, Output, TerminationReason,
    Transmit,
};
pub use ipnet::IpNet;
pub use transaction::Timers;

/// The transport a message came in on or goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Reliable transports need no retransmission timers (RFC 3261 17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

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
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Trunk source addresses allowed to send requests; others get 403 Forbidden.
    pub trunk_allow: Vec<IpNet>,
    /// Sent in the Server and User-Agent headers.
    pub user_agent: String,
    /// Host written in our Via and Contact headers; the bound address when `None`.
    pub advertised_host: Option<String>,
    /// User part of our Contact URI.
    pub contact_user: String,
    pub timers: Timers,
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
