//! # gateway: the 12345 intake gateway
//!
//! The `gateway` binary and its wiring. Every channel ends on one path: a submission passes the
//! one [`intake`] stage, becomes a durable work order ([`store`]) and is delivered to the
//! dispatch backend ([`dispatch`]); the HTTP [`api`] takes app and integrator submissions and serves orders, health and metrics.
//! [`config`] reads the one TOML file (with environment overrides) and [`telemetry`] sets up logs
//! and metrics; [`call`] answers SIP calls and runs them through the IVR flows. Protocol and flow logic live in sans-IO modules and crates; this crate drives them
//! with tokio at the edge.

pub mod api;
pub mod call;
pub mod classify_cli;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod intake;
pub mod ivr;
pub mod run;
pub mod runtime;
pub mod speech;
pub mod store;
pub mod telemetry;
