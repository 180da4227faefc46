//! # WeChat: official accounts and mini-program customer-service pushes
//!
//! WeChat pushes each citizen message to the gateway and waits at most five seconds for a
//! passive reply; without one it retries three times. This module is the pure part of that
//! channel, so it can be tested with the spec's own values and fuzzed: [`crypto`] (signatures
//! and the safe-mode AES envelope), [`xml`] (a deliberately small XML reader: WeChat's XML is
//! flat, and anything richer — DOCTYPE, entities — is an attack), [`message`] (XML or JSON into
//! one [`Inbound`](message::Inbound) model), [`command`] ("查询 <order number>") and [`reply`]
//! (the passive reply XML and the texts citizens read). The gateway does the HTTP, storage and
//! clock.

pub mod command;
pub mod crypto;
pub mod message;
pub mod reply;
pub mod xml;

pub use command::{Query, parse_query};
pub use crypto::{CryptoError, MessageCipher, signature, signature_matches};
pub use message::{Body, Inbound, MessageError};
pub use xml::{XmlError, parse as parse_xml};
