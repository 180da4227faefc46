//! The I/O edge under calls: what drives the sans-IO `sip` and `media` crates with sockets,
//! threads, files and the clock. Nothing in here decides protocol or call behaviour; it carries
//! datagrams, frames and time to the cores and carries their output back out.

// SIP transports (UDP/TCP) around `sip::Endpoint`.
pub mod sip_transport;

// Media: RTP sockets, the pacer engine, prompt cache (files), recorder (files).
pub mod media_engine;
pub mod pacer_socket;
pub mod prompt_cache;
pub mod recorder;
pub mod rtp_socket;
