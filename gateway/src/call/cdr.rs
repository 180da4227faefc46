//! Call detail records: one JSON line per finished call in `<data_dir>/cdr/YYYY-MM-DD.jsonl`.
//!
//! Operators reconcile calls with the carrier's bill and look for bad media here: the record
//! keeps the outcome, the orders the call produced, the recording, and the RTP figures (loss,
//! jitter, late packets) the media session measured. The caller's number is stored as data (the
//! file is the gateway's own, like the database); it never goes to the logs unmasked.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::core::Outcome;
use super::events::{BridgeFigures, RtpFigures};
use media::rtp_session::RtpStats;

/// One line of the call detail records: how the call ended (from the core) beside the
/// driver's facts, flattened into one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// How the call ended: `caller_hangup`, `flow_hangup`, `agent_hangup`, `media_timeout`, ...
    pub outcome: String,
    /// Flow and step the caller was in at the end.
    pub last_step: Option<String>,
    pub orders: Vec<String>,
    #[serde(flatten)]
    pub facts: CallFacts,
}

/// What the driver knows of a finished call besides the core's [`Outcome`]: who called, the
/// wall-clock times, the callback order it wrote, recordings and the media's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CallFacts {
    /// `inbound` (a citizen called the hotline) or `outbound` (the gateway called them).
    pub direction: &'static str,
    /// `phone` (SIP) or `webrtc` (a browser or app).
    pub channel: &'static str,
    /// The outbound call's job (`/v1/calls/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_id: Option<String>,
    pub sip_call_id: String,
    pub caller: String,
    pub called: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub callback_order: Option<String>,
    pub recordings: Vec<String>,
    pub transfer_to: Option<String>,
    /// The agent leg of a transfer: when it answered, how long it talked, frames each way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeFigures>,
    pub codec: Option<String>,
    pub rtp: Option<RtpFigures>,
}

/// The record's `channel`.
pub fn channel(webrtc: bool) -> &'static str {
    if webrtc { "webrtc" } else { "phone" }
}

/// The record's `direction`.
pub fn direction(outbound: bool) -> &'static str {
    if outbound { "outbound" } else { "inbound" }
}

impl CallRecord {
    /// The record of a call: how it ended and where from the core, the rest from the driver.
    /// Pure, so the call simulation checks the very record the call task writes.
    pub fn new(outcome: &Outcome, facts: CallFacts) -> CallRecord {
        CallRecord {
            outcome: outcome.ending.as_str().into(),
            last_step: outcome.last_step.clone(),
            orders: outcome.orders.clone(),
            facts,
        }
    }
}

impl RtpFigures {
    /// The record's figures from a media session's counters (jitter from RTP units at 8 kHz to
    /// milliseconds).
    pub fn from_stats(s: &RtpStats) -> RtpFigures {
        RtpFigures {
            packets_received: s.packets_received,
            packets_sent: s.packets_sent,
            packets_lost: s.packets_lost,
            jitter_ms: s.jitter / 8.0,
            late: s.late,
            concealed: s.concealed,
        }
    }
}

#[derive(Debug)]
pub struct CdrWriter {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl CdrWriter {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            lock: Mutex::new(()),
        }
    }

    /// Append a record to today's file (UTC date of the call's end).
    pub fn write(&self, record: &CallRecord) {
        let path = self.dir.join(format!(
            "{}.jsonl",
            record.facts.ended_at.format("%Y-%m-%d")
        ));
        let line = match serde_json::to_string(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "call record not serializable");
                return;
            }
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            writeln!(f, "{line}")
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %path.display(), "call record not written");
        }
    }
}
