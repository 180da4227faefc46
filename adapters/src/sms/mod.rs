//! # SMS: upstream messages from the SMS providers' callbacks
//!
//! Citizens text the hotline's number; the provider (Aliyun SmsUp, Tencent Cloud SMS) posts each
//! message to the gateway. This module reads both wire formats into one [`SmsMessage`], finds the
//! part markers carriers put on long messages split in several (`(1/3)`, `【1/3】`) so the
//! gateway can put them back together, and builds the [`Submission`]. Each message gets a stable
//! id ([`SmsMessage::id`]) that a redelivered callback repeats, which is what makes storing it
//! idempotent: Aliyun's `sequence_id`; Tencent sends none, so a hash of mobile, time and text.
//! No I/O and no clock here: the gateway owns buffering, storage and replies.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::submission::{Submission, normalize_phone};
use crate::work_order::{Channel, Citizen, Source};

pub use crate::wechat::command::{Query, parse_query};

/// Most messages accepted in one Aliyun batch.
pub const MAX_BATCH: usize = 100;
/// Longest message text accepted (carriers concatenate at most a few hundred characters).
pub const MAX_SMS_CHARS: usize = 2_000;

/// One upstream SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    /// The sender, digits with an optional leading `+` (international numbers).
    pub phone: String,
    pub text: String,
    /// Stable per message across redeliveries (see the module doc).
    pub id: String,
    /// The provider's send time, as given (for the log and the order's history).
    pub sent_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SmsError {
    /// The offending field, e.g. `[1].phone_number`.
    pub field: Option<String>,
    pub message: String,
}

fn err(field: Option<String>, message: impl Into<String>) -> SmsError {
    SmsError {
        field,
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
struct AliyunItem {
    phone_number: Option<String>,
    send_time: Option<String>,
    content: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    sign_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    dest_code: Option<String>,
    sequence_id: Option<serde_json::Value>,
}

fn check_text(field: String, text: String) -> Result<String, SmsError> {
    if text.chars().count() > MAX_SMS_CHARS {
        return Err(err(
            Some(field),
            format!("at most {MAX_SMS_CHARS} characters"),
        ));
    }
    Ok(text)
}

fn phone(field: String, raw: &str) -> Result<String, SmsError> {
    normalize_phone(raw).ok_or_else(|| err(Some(field), "not a phone number"))
}

/// Aliyun SmsUp HTTP batch push: a JSON array of `{phone_number, send_time, content, sign_name,
/// dest_code, sequence_id}`.
pub fn parse_aliyun(body: &[u8]) -> Result<Vec<SmsMessage>, SmsError> {
    let items: Vec<AliyunItem> = serde_json::from_slice(body).map_err(|e| {
        err(
            None,
            format!("the body is not a JSON array of messages: {e}"),
        )
    })?;
    if items.is_empty() {
        return Err(err(None, "the batch is empty"));
    }
    if items.len() > MAX_BATCH {
        return Err(err(None, format!("at most {MAX_BATCH} messages per batch")));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let f = |name: &str| format!("[{i}].{name}");
        let raw_phone = item
            .phone_number
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| err(Some(f("phone_number")), "required"))?;
        let text = item
            .content
            .ok_or_else(|| err(Some(f("content")), "required"))?;
        let id = match item.sequence_id {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => {
                s.trim().to_owned()
            }
            _ => {
                return Err(err(
                    Some(f("sequence_id")),
                    "required: a number or a string of at most 64 characters",
                ));
            }
        };
        out.push(SmsMessage {
            phone: phone(f("phone_number"), &raw_phone)?,
            text: check_text(f("content"), text)?,
            id,
            sent_at: item.send_time,
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct TencentBody {
    #[serde(default)]
    #[allow(dead_code)]
    extend: Option<String>,
    mobile: Option<String>,
    nationcode: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    sign: Option<String>,
    text: Option<String>,
    time: Option<serde_json::Value>,
}

/// Tencent Cloud SMS reply callback: `{extend, mobile, nationcode, sign, text, time}`.
pub fn parse_tencent(body: &[u8]) -> Result<SmsMessage, SmsError> {
    let b: TencentBody = serde_json::from_slice(body)
        .map_err(|e| err(None, format!("the body is not a JSON reply callback: {e}")))?;
    let mobile = b
        .mobile
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| err(Some("mobile".into()), "required"))?;
    let text = b.text.ok_or_else(|| err(Some("text".into()), "required"))?;
    let time = match b.time {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 32 => s,
        _ => return Err(err(Some("time".into()), "required: the unix time")),
    };
    let nation = match b.nationcode {
        None => "86".to_owned(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.trim().trim_start_matches('+').to_owned(),
        Some(_) => return Err(err(Some("nationcode".into()), "a country code such as 86")),
    };
    if nation.is_empty() || nation.len() > 4 || !nation.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(Some("nationcode".into()), "a country code such as 86"));
    }
    let raw_phone = if nation == "86" {
        mobile.clone()
    } else {
        format!("+{nation}{mobile}")
    };
    let phone = phone("mobile".into(), &raw_phone)?;
    let text = check_text("text".into(), text)?;
    let mut h = Sha256::new();
    for part in [phone.as_str(), time.as_str(), text.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let id = format!("t{}", &hex::encode(h.finalize())[..32]);
    Ok(SmsMessage {
        phone,
        text,
        id,
        sent_at: Some(time),
    })
}

/// A part of a long message, as carriers mark it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartMarker {
    /// 1-based.
    pub index: u16,
    pub total: u16,
    /// Byte length of the marker (and the space after it) at the start of the text.
    pub len: usize,
}

/// Most parts a long message is split into that the gateway reassembles.
pub const MAX_PARTS: u16 = 10;

/// Find a `(i/n)`, `（i/n）`, `[i/n]` or `【i/n】` marker at the start of the text.
pub fn part_marker(text: &str) -> Option<PartMarker> {
    let pairs = [("(", ")"), ("（", "）"), ("[", "]"), ("【", "】")];
    let (open, close) = pairs.iter().find(|(o, _)| text.starts_with(o))?;
    let inner_start = open.len();
    let close_at = text[inner_start..].find(close)? + inner_start;
    let inner = &text[inner_start..close_at];
    if inner.len() > 7 {
        return None;
    }
    let (i, n) = inner.split_once(['/', '／'])?;
    let index: u16 = i.trim().parse().ok()?;
    let total: u16 = n.trim().parse().ok()?;
    if !(2..=MAX_PARTS).contains(&total) || index == 0 || index > total {
        return None;
    }
    let mut len = close_at + close.len();
    let after = &text[len..];
    let trimmed = after.trim_start_matches([' ', '\u{3000}']);
    len += after.len() - trimmed.len();
    Some(PartMarker { index, total, len })
}

/// The text of a part without its marker.
pub fn strip_marker(text: &str) -> &str {
    match part_marker(text) {
        Some(m) => &text[m.len..],
        None => text,
    }
}

/// Put the parts of a long message back together, in index order (duplicated indexes: the first
/// one given wins).
pub fn reassemble<'a>(parts: impl IntoIterator<Item = (u16, &'a str)>) -> String {
    let mut v: Vec<(u16, &str)> = parts.into_iter().collect();
    v.sort_by_key(|(i, _)| *i);
    v.dedup_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, t)| strip_marker(t)).collect()
}

/// The submission for a (possibly reassembled) SMS.
pub fn submission(phone: &str, text: &str, sms_id: &str) -> Submission {
    Submission::text_message(
        Channel::Sms,
        Citizen {
            phone: Some(phone.to_owned()),
            ..Citizen::default()
        },
        text,
        Source {
            sms_id: Some(sms_id.to_owned()),
            ..Source::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_batch() {
        let m = parse_aliyun(
            r#"[{"phone_number":"13800138000","send_time":"2026-11-23 10:00:00","content":"路灯坏了","sign_name":"12345","dest_code":"1234","sequence_id":1234567890},
                {"phone_number":"13900139000","send_time":"2026-11-23 10:00:01","content":"噪音","sign_name":"12345","dest_code":"1234","sequence_id":"1234567891"}]"#
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, "1234567890");
        assert_eq!(m[1].id, "1234567891");
        assert_eq!(m[0].phone, "13800138000");
        let e = parse_aliyun(br#"[{"phone_number":"138","content":"x"}]"#).expect_err("no id");
        assert_eq!(e.field.as_deref(), Some("[0].sequence_id"));
        let e = parse_aliyun(br#"[{"content":"x","sequence_id":1}]"#).expect_err("no phone");
        assert_eq!(e.field.as_deref(), Some("[0].phone_number"));
        assert!(parse_aliyun(b"{").is_err());
        assert!(parse_aliyun(b"[]").is_err());
        assert!(parse_aliyun(b"{\"a\":1}").is_err());
    }

    #[test]
    fn tencent_callback() {
        let body = r#"{"extend":"","mobile":"13800138000","nationcode":"86","sign":"12345","text":"路灯坏了","time":1470250287}"#.as_bytes();
        let a = parse_tencent(body).expect("valid");
        let b = parse_tencent(body).expect("valid");
        assert_eq!(a.id, b.id);
        assert_eq!(a.phone, "13800138000");
        let other =
            parse_tencent(br#"{"mobile":"5551234","nationcode":"1","text":"hi","time":"1"}"#)
                .expect("valid");
        assert_eq!(other.phone, "+15551234");
        assert_ne!(other.id, a.id);
        assert_eq!(
            parse_tencent(br#"{"mobile":"138","text":"x"}"#)
                .expect_err("no time")
                .field
                .as_deref(),
            Some("time")
        );
    }

    #[test]
    fn part_markers() {
        assert_eq!(
            part_marker("(1/3)开头"),
            Some(PartMarker {
                index: 1,
                total: 3,
                len: 5
            })
        );
        assert_eq!(part_marker("【2/3】 中间").map(|m| m.index), Some(2));
        assert_eq!(part_marker("（3／3）结尾").map(|m| m.index), Some(3));
        assert_eq!(part_marker("(4/3)x"), None);
        assert_eq!(part_marker("(1/1)x"), None);
        assert_eq!(part_marker("(a/3)x"), None);
        assert_eq!(part_marker("路灯(1/3)"), None);
        assert_eq!(
            reassemble([(3, "(3/3)三"), (1, "(1/3)一"), (2, "【2/3】二")]),
            "一二三"
        );
    }
}
