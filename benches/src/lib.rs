//! # benches: how fast the gateway is
//!
//! Criterion benches of the hot paths and load generators that drive the gateway's servers over
//! loopback and report throughput and latency: `load` for HTTP intake, `call` for SIP calls with
//! RTP and DTMF.

pub mod call;
pub mod load;
pub mod process;
