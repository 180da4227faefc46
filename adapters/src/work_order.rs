//! The WorkOrder: the one schema every channel produces and the dispatch backend receives.
//!
//! The JSON form is a published contract (`adapters/schema/work-order.schema.json`, checked by a
//! test against orders serialized by the running gateway). Fields are never removed or renamed;
//! new optional fields may be added.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::order_number::OrderNumber;

/// Where a submission came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Phone,
    Webrtc,
    Wechat,
    Sms,
    App,
    Web,
    Open311,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Phone => "phone",
            Channel::Webrtc => "webrtc",
            Channel::Wechat => "wechat",
            Channel::Sms => "sms",
            Channel::App => "app",
            Channel::Web => "web",
            Channel::Open311 => "open311",
        }
    }
}

/// What the citizen wants: the six kinds a 12345 hotline distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Consultation,
    Help,
    Complaint,
    Report,
    Suggestion,
    Praise,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Consultation,
        Kind::Help,
        Kind::Complaint,
        Kind::Report,
        Kind::Suggestion,
        Kind::Praise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Consultation => "consultation",
            Kind::Help => "help",
            Kind::Complaint => "complaint",
            Kind::Report => "report",
            Kind::Suggestion => "suggestion",
            Kind::Praise => "praise",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Normal,
    Urgent,
    Emergency,
}

/// The emergency services a 12345 operator refers callers to. Serialized as the number itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum EmergencyReferral {
    /// 110: police.
    Police,
    /// 119: fire.
    Fire,
    /// 120: medical emergency.
    Medical,
    /// 122: traffic accident.
    Traffic,
}

impl EmergencyReferral {
    pub fn number(self) -> u16 {
        match self {
            EmergencyReferral::Police => 110,
            EmergencyReferral::Fire => 119,
            EmergencyReferral::Medical => 120,
            EmergencyReferral::Traffic => 122,
        }
    }
}

impl From<EmergencyReferral> for u16 {
    fn from(e: EmergencyReferral) -> u16 {
        e.number()
    }
}

impl TryFrom<u16> for EmergencyReferral {
    type Error = String;
    fn try_from(n: u16) -> Result<Self, String> {
        match n {
            110 => Ok(EmergencyReferral::Police),
            119 => Ok(EmergencyReferral::Fire),
            120 => Ok(EmergencyReferral::Medical),
            122 => Ok(EmergencyReferral::Traffic),
            other => Err(format!(
                "{other} is not an emergency number (110, 119, 120, 122)"
            )),
        }
    }
}

/// Lifecycle of an order. `accepted` and `delivered` are set by the gateway; the rest arrive from
/// the dispatch backend through `POST /v1/orders/{id}/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    Delivered,
    Assigned,
    InProgress,
    Resolved,
    Closed,
    Rejected,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Accepted,
        Status::Delivered,
        Status::Assigned,
        Status::InProgress,
        Status::Resolved,
        Status::Closed,
        Status::Rejected,
    ];

    /// What citizens are told (WeChat replies, the web status page, the phone).
    pub fn label_zh(self) -> &'static str {
        match self {
            Status::Accepted => "已受理",
            Status::Delivered => "已转交承办单位",
            Status::Assigned => "已派单",
            Status::InProgress => "办理中",
            Status::Resolved => "已办结",
            Status::Closed => "已关闭",
            Status::Rejected => "已退回",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Delivered => "passed to the responsible department",
            Status::Assigned => "assigned",
            Status::InProgress => "in progress",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Rejected => "returned",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Delivered => "delivered",
            Status::Assigned => "assigned",
            Status::InProgress => "in_progress",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Statuses the dispatch backend may report (the gateway sets the others itself).
    pub fn is_backend_status(self) -> bool {
        !matches!(self, Status::Accepted | Status::Delivered)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Citizen {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// A channel-specific identity (WeChat openid, app user id) for follow-ups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_user: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lng: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    pub text: String,
    /// 0.0 to 1.0, from the recognizer.
    pub confidence: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub url: String,
    pub mime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub url: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same citizen about the same matter within the window.
    Duplicate,
    /// Other citizens reporting the same category at the same place within the window.
    SameEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Related {
    pub order_id: OrderNumber,
    pub relation: Relation,
    /// Why the gateway linked them, in words a dispatcher can check.
    pub reason: String,
}

/// References into the channel the submission came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechat_msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_id: Option<String>,
    /// The integrator's own reference (`external_id` in the submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Name (never the secret) of the API key that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who set it: `gateway` or the dispatch backend's own actor name.
    pub by: String,
}

/// One work order. See the module doc for the compatibility rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub id: OrderNumber,
    pub channel: Channel,
    pub received_at: DateTime<Utc>,
    pub citizen: Citizen,
    pub kind: Kind,
    /// First-level category from the taxonomy; `null` until classified.
    pub category: Option<String>,
    pub text: String,
    #[serde(default)]
    pub transcript: Vec<TranscriptSegment>,
    /// BCP 47 language tag of the text, `zh` by default.
    pub language: String,
    pub location: Location,
    pub urgency: Urgency,
    pub emergency_referral: Option<EmergencyReferral>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    pub recording: Option<Recording>,
    #[serde(default)]
    pub related: Vec<Related>,
    pub source: Source,
    pub status: Status,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl WorkOrder {
    /// Record a status change in both `status` and `history`.
    pub fn push_status(
        &mut self,
        status: Status,
        at: DateTime<Utc>,
        note: Option<String>,
        by: &str,
    ) {
        self.status = status;
        self.history.push(HistoryEntry {
            at,
            status,
            note,
            by: by.to_owned(),
        });
    }
}
