//! Intake end to end: the submissions and orders API, delivery to the dispatch receiver, the
//! work-order schema, the store conformance suite (SQLite and PostgreSQL), multi-node PostgreSQL
//! and faults (full disk, killed processes, PostgreSQL restarts).

mod faults;
mod intake_api;
mod intake_delivery;
mod postgres_nodes;
mod schema;
mod store_conformance;
