//! # ivr_flows: the IVR flow language
//!
//! This crate owns the declarative flow files that hotline administrators edit
//! (`ivr-flows/flows/`): their schema, the loader, the checker that reports errors by file, line
//! and column, and the sans-IO interpreter that the call session feeds with events (digits,
//! speech results, timers, hang-up) and that answers with actions (play, listen, transfer, submit
//! an order, hang up). It does no I/O and reads no clock.

pub mod damm;
pub mod diagnostic;
pub mod expr;
pub mod yaml;

pub use diagnostic::{Diagnostic, Pos};
pub mod calendar;
mod check;
mod decode;
pub mod flowset;
pub mod model;

pub use check::{number_clip_path, number_clips};
pub use flowset::{FlowRegistry, FlowSet, check_dir, check_source, check_sources};
pub mod io;
mod render;
pub mod session;

pub use io::{Action, Event, PlayItem};
pub use session::Session;
pub mod graph;
pub mod simulate;

pub use graph::mermaid;
pub use simulate::{SimOptions, simulate, simulate_with};
