//! # ivr_flows: the IVR flow language
//!
//! This crate owns the declarative flow files that hotline administrators edit
//! (`ivr-flows/flows/`): their schema, the loader, the checker that reports errors by file, line
//! and column, and the sans-IO interpreter that the call session feeds with events (digits,
//! speech results, timers, hang-up) and that answers with actions (play, listen, transfer, submit
//! an order, hang up). It does no I/O and reads no clock.
//!
//! Entry points for the gateway: [`check_dir`] / [`FlowRegistry`] to load and hot-reload a
//! flows directory, [`Session`] to run one call (`handle(now_ms, Event) -> Vec<Action>`;
//! [`Session::set_inputs`] / [`Session::with_inputs`] for a flow that takes `inputs:`, checked
//! beforehand with [`FlowSet::check_inputs`]),
//! [`simulate`] and [`mermaid`] for tooling, [`check_source`] for fuzzing.
//! The language is documented in `ivr-flows/REFERENCE.md`.

pub mod calendar;
mod check;
pub mod damm;
mod decode;
pub mod diagnostic;
pub mod expr;
pub mod flowset;
pub mod graph;
pub mod io;
pub mod model;
mod render;
pub mod session;
pub mod simulate;
pub mod yaml;

pub use check::{number_clip_path, number_clips};
pub use diagnostic::{Diagnostic, Pos};
pub use flowset::{FlowRegistry, FlowSet, InputError, check_dir, check_source, check_sources};
pub use graph::mermaid;
pub use io::{Action, Event, PlayItem};
pub use render::number_items;
pub use session::Session;
pub use simulate::{SimOptions, simulate, simulate_with};
