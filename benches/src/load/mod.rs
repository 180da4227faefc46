//! The HTTP intake load generator behind `intake-load`: a lean HTTP/1.1 keep-alive client on one
//! thread, realistic varied submissions, an optional gateway it starts itself, and the report.

pub mod body;
pub mod cpu;
pub mod driver;
pub mod http;
pub mod report;
pub mod spawn;
