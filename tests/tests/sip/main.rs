//! SIP: the RFC 4475 torture messages against the sans-IO core, the transport (UDP and TCP) and
//! outgoing calls (UAC).

mod sip_torture;
mod sip_transport;
mod sip_uac;
