//! Work orders from calls.
//!
//! A flow's `submit` step hands over named slots; they map onto the one submission schema every
//! channel uses (`text`, `district`, `address`, `caller`, `name`, `kind`, `language`; `recording`
//! names the call's voice message, which is attached), and any other slot the
//! caller chose (such as the report flow's topic) is kept in the text, so that nothing the caller
//! said or keyed is lost and the classifier sees it. A caller who hangs up before the flow ended
//! leaves a callback order with what was collected so far.
//!
//! Each order carries an idempotency claim on the SIP Call-ID and the submit's number within the
//! call, so a retried write after a store hiccup cannot make two orders of one answer. The call
//! hands the [`CallOrder`] to [`intake::accept`](crate::intake::accept), which normalizes,
//! stores, counts and logs it like every other channel's.

use std::collections::BTreeMap;

use adapters::Submission;
use adapters::work_order::{
    Channel, Citizen, Kind, Location, Recording, Source, TranscriptSegment,
};
use sha2::{Digest, Sha256};

use crate::store::IdempotencyClaim;

/// What a call files: the submission and its claim on the Call-ID and submit number.
#[derive(Debug, Clone)]
pub struct CallOrder {
    pub submission: Submission,
    pub claim: IdempotencyClaim,
}

/// What a call knows about itself when it files an order.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    pub sip_call_id: &'a str,
    /// The caller's number when the From header carried one.
    pub caller: Option<&'a str>,
    pub language: &'a str,
    /// Final recognition results of the call, for the order's transcript.
    pub speech: &'a [TranscriptSegment],
    /// A browser's or app's call (channel `webrtc`): the app user its token named, `""` when
    /// none. `None`: a phone call.
    pub webrtc_user: Option<&'a str>,
}

/// The text of an order whose content is a voice message nobody has transcribed.
pub const VOICE_MESSAGE_TEXT: &str = "市民语音留言，请听录音";

/// Labels for the topic codes of the shipped report flow.
fn topic_label(code: &str) -> Option<&'static str> {
    Some(match code {
        "noise" => "噪音扰民",
        "traffic" => "道路交通",
        "cityscape" => "市容环境",
        "utilities" => "供水供电",
        "other" => "其他问题",
        _ => return None,
    })
}

fn claim(ctx: &CallContext<'_>, seq: u32, what: &str) -> IdempotencyClaim {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    IdempotencyClaim {
        client: "phone".into(),
        key: format!("{}#{seq}", ctx.sip_call_id),
        body_sha256: h.finalize().into(),
    }
}

fn base(ctx: &CallContext<'_>) -> Submission {
    Submission {
        channel: match ctx.webrtc_user {
            Some(_) => Channel::Webrtc,
            None => Channel::Phone,
        },
        citizen: Citizen {
            name: None,
            phone: ctx.caller.and_then(adapters::submission::normalize_phone),
            channel_user: ctx.webrtc_user.filter(|u| !u.is_empty()).map(str::to_owned),
        },
        kind: None,
        text: String::new(),
        transcript: Vec::new(),
        language: ctx.language.to_owned(),
        location: Location::default(),
        attachments: Vec::new(),
        recording: None,
        source: Source {
            call_id: Some(ctx.sip_call_id.to_owned()),
            ..Source::default()
        },
    }
}

/// The order a flow's `submit` step asks for; `None` with a reason when it has no text.
pub fn from_slots(
    ctx: &CallContext<'_>,
    seq: u32,
    slots: &BTreeMap<String, String>,
    recording: Option<Recording>,
) -> Result<CallOrder, String> {
    let mut s = base(ctx);
    let mut extras = Vec::new();
    for (key, value) in slots {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "text" | "description" => s.text = value.to_owned(),
            "district" => s.location.district = Some(value.to_owned()),
            "address" => s.location.address = Some(value.to_owned()),
            "caller" | "phone" => {
                if let Some(p) = adapters::submission::normalize_phone(value) {
                    s.citizen.phone = Some(p);
                }
            }
            "name" => s.citizen.name = Some(value.to_owned()),
            "kind" if Kind::parse(value).is_some() => s.kind = Kind::parse(value),
            // The interpreter always adds the session's language; a flow may name another
            // (a language tag, as the WorkOrder schema has it; anything else keeps the call's).
            "language" => {
                if value.len() <= 16
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    s.language = value.to_owned();
                }
            }
            // The voice message is attached as the order's recording (below), not as text: its
            // URI is a path on this machine, nothing the citizen said.
            "recording" => {}
            // The order a survey or callback is about (an outbound call's input): named as such.
            "order_id" => extras.push(format!("关于工单{value}")),
            _ => extras.push(topic_label(value).map_or_else(|| value.to_owned(), str::to_owned)),
        }
    }
    if !extras.is_empty() {
        let joined = extras.join("，");
        s.text = if s.text.is_empty() {
            joined
        } else {
            format!("{}（{joined}）", s.text)
        };
    }
    if s.text.trim().is_empty() && recording.is_some() {
        // A voice message not (yet) transcribed: the recording is the order's content.
        s.text = VOICE_MESSAGE_TEXT.to_owned();
    }
    if s.text.trim().is_empty() {
        return Err("the order has no text".into());
    }
    s.transcript = ctx
        .speech
        .iter()
        .filter(|seg| s.text.contains(seg.text.as_str()))
        .cloned()
        .collect();
    s.recording = recording;
    let what = serde_json::to_string(slots).unwrap_or_default();
    Ok(CallOrder {
        claim: claim(ctx, seq, &what),
        submission: s,
    })
}

/// The callback order of a caller who hung up before the flow ended.
pub fn callback(
    ctx: &CallContext<'_>,
    seq: u32,
    where_: &str,
    collected: &BTreeMap<String, String>,
    recording: Option<Recording>,
) -> CallOrder {
    let mut s = base(ctx);
    s.kind = Some(Kind::Help);
    let mut text = format!("来电在语音导航中挂断（{where_}），请回拨市民。");
    for key in ["description", "text", "district", "order_no"] {
        if let Some(v) = collected.get(key).filter(|v| !v.trim().is_empty()) {
            text.push_str(&format!("{key}：{v}。"));
        }
    }
    if let Some(d) = collected.get("district") {
        s.location.district = Some(d.clone());
    }
    s.text = text;
    s.transcript = ctx.speech.to_vec();
    s.recording = recording;
    CallOrder {
        claim: claim(ctx, seq, "callback"),
        submission: s,
    }
}

/// The callback order of a call refused for want of capacity (503 at `calls.max_calls`): the
/// caller reached nobody, so a call back is due (漏话回拨). One per caller per `hour` (the
/// node's local `YYYYMMDDHH`): a caller who redials into a full hotline is one task, not many.
pub fn missed(caller: &str, sip_call_id: &str, hour: &str) -> CallOrder {
    let ctx = CallContext {
        webrtc_user: None,
        sip_call_id,
        caller: Some(caller),
        language: "zh",
        speech: &[],
    };
    let mut s = base(&ctx);
    s.kind = Some(Kind::Help);
    s.text = "来电时热线满负荷未能接通，请回拨市民。".into();
    let mut h = Sha256::new();
    h.update(b"missed");
    CallOrder {
        claim: IdempotencyClaim {
            client: "phone".into(),
            key: format!("missed:{caller}:{hour}"),
            body_sha256: h.finalize().into(),
        },
        submission: s,
    }
}

/// The callback order of a queue callback not reached after every try its policy allows: the
/// caller gave up their place on the line for the call back, so the task goes on as an order.
/// One per callback job (`job`), however often the outcome is stored.
pub fn callback_not_reached(caller: &str, job: &str, status: &str) -> CallOrder {
    let ctx = CallContext {
        webrtc_user: None,
        sip_call_id: job,
        caller: Some(caller),
        language: "zh",
        speech: &[],
    };
    let mut s = base(&ctx);
    s.kind = Some(Kind::Help);
    s.text = format!("市民排队时选择回电，轮到时回拨未能接通（{status}），请再次回拨。");
    let mut h = Sha256::new();
    h.update(b"queue-callback");
    CallOrder {
        claim: IdempotencyClaim {
            client: "phone".into(),
            key: format!("queue-callback:{job}"),
            body_sha256: h.finalize().into(),
        },
        submission: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_callback_not_reached_is_one_order_per_job() {
        let a = callback_not_reached("13800138000", "c-q-1", "no_answer");
        let b = callback_not_reached("13800138000", "c-q-1", "no_answer");
        let c = callback_not_reached("13800138000", "c-q-2", "busy");
        assert_eq!(a.claim.key, b.claim.key);
        assert_ne!(a.claim.key, c.claim.key);
        assert_eq!(a.submission.kind, Some(Kind::Help));
        assert!(c.submission.text.contains("busy"), "{}", c.submission.text);
        assert_eq!(a.submission.citizen.phone.as_deref(), Some("13800138000"));
    }

    #[test]
    fn a_missed_call_is_one_order_per_caller_and_hour() {
        let a = missed("13800138000", "c1@trunk", "2026120716");
        let b = missed("13800138000", "c2@trunk", "2026120716");
        let c = missed("13800138000", "c3@trunk", "2026120717");
        assert_eq!(a.claim.key, b.claim.key);
        assert_eq!(a.claim.body_sha256, b.claim.body_sha256);
        assert_ne!(a.claim.key, c.claim.key);
        assert_eq!(a.submission.citizen.phone.as_deref(), Some("13800138000"));
        assert_eq!(a.submission.kind, Some(Kind::Help));
    }

    fn ctx() -> CallContext<'static> {
        CallContext {
            sip_call_id: "abc@trunk",
            caller: Some("13800138000"),
            language: "zh",
            speech: &[],
            webrtc_user: None,
        }
    }

    #[test]
    fn slots_map_onto_the_submission() {
        let slots: BTreeMap<String, String> = [
            ("description", "小区门口晚上施工噪音很大"),
            ("district", "江岸区"),
            ("kind", "noise"),
            ("caller", "13800138000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let o = from_slots(&ctx(), 1, &slots, None).expect("order");
        let s = &o.submission;
        assert_eq!(s.channel, Channel::Phone);
        assert_eq!(s.location.district.as_deref(), Some("江岸区"));
        assert_eq!(s.text, "小区门口晚上施工噪音很大（噪音扰民）");
        assert_eq!(s.citizen.phone.as_deref(), Some("13800138000"));
        assert_eq!(s.source.call_id.as_deref(), Some("abc@trunk"));
        assert_eq!(o.claim.key, "abc@trunk#1");
        assert_eq!(
            adapters::normalize::normalize(&o.submission).kind,
            Kind::Complaint
        );
    }

    #[test]
    fn language_and_recording_slots_are_not_text() {
        // What the interpreter hands over for the voicemail flow's submit: it adds `caller` and
        // `language` itself, and `recording` is the voice message's URI.
        let slots: BTreeMap<String, String> = [
            ("text", "voice message"),
            ("recording", "/var/lib/gateway/recordings/voice-1.wav"),
            ("caller", "13800138000"),
            ("language", "en"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let rec = Recording {
            url: "/var/lib/gateway/recordings/voice-1.wav".into(),
            duration_ms: 4200,
        };
        let o = from_slots(&ctx(), 1, &slots, Some(rec.clone())).expect("order");
        assert_eq!(o.submission.text, "voice message");
        assert_eq!(o.submission.language, "en");
        assert_eq!(o.submission.recording, Some(rec));
        // A language that is no tag keeps the call's.
        let mut slots = slots;
        slots.insert("language".into(), "普通话".into());
        let o = from_slots(&ctx(), 2, &slots, None).expect("order");
        assert_eq!(o.submission.language, "zh");
        assert_eq!(o.submission.text, "voice message");
    }

    #[test]
    fn an_untranscribed_voice_message_is_an_order_and_no_text_without_one_is_not() {
        let slots: BTreeMap<String, String> = [("text", ""), ("caller", "13800138000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let rec = Recording {
            url: "/var/lib/gateway/recordings/voice-2.wav".into(),
            duration_ms: 3000,
        };
        let o = from_slots(&ctx(), 1, &slots, Some(rec)).expect("order");
        assert_eq!(o.submission.text, VOICE_MESSAGE_TEXT);
        assert!(from_slots(&ctx(), 2, &slots, None).is_err());
    }

    #[test]
    fn an_order_without_text_is_refused() {
        let slots = [("district".to_owned(), "江岸区".to_owned())].into();
        assert!(from_slots(&ctx(), 1, &slots, None).is_err());
    }

    #[test]
    fn a_callback_keeps_what_was_collected() {
        let collected = [("district".to_owned(), "洪山区".to_owned())].into();
        let o = callback(&ctx(), 9, "report/kind", &collected, None);
        assert_eq!(o.submission.kind, Some(Kind::Help));
        assert!(
            o.submission.text.contains("请回拨"),
            "{}",
            o.submission.text
        );
        assert!(o.submission.text.contains("洪山区"));
        assert_eq!(o.submission.location.district.as_deref(), Some("洪山区"));
        assert_eq!(o.claim.key, "abc@trunk#9");
    }

    #[test]
    fn a_browser_call_files_a_webrtc_order_naming_the_app_user() {
        let mut c = ctx();
        c.caller = None;
        c.webrtc_user = Some("wx-openid-42");
        let slots = BTreeMap::from([("text".to_owned(), "路灯不亮".to_owned())]);
        let o = from_slots(&c, 1, &slots, None).expect("an order");
        assert_eq!(o.submission.channel, Channel::Webrtc);
        assert_eq!(
            o.submission.citizen.channel_user.as_deref(),
            Some("wx-openid-42")
        );
        assert_eq!(o.submission.citizen.phone, None);
        c.webrtc_user = Some("");
        let o = from_slots(&c, 1, &slots, None).expect("an order");
        assert_eq!(
            o.submission.citizen.channel_user, None,
            "an anonymous page call"
        );
    }
}
