//! Normalization: what the gateway works out about every submission, whatever its channel.
//!
//! Every channel (a call transcript, a WeChat message, a web form) ends up as the same work order,
//! so this is where one message becomes useful to a dispatcher:
//!
//! - [`classify`]: the first-level category from a model trained on real citizen messages, and
//!   [`taxonomy`]: a second-level keyword route in the taxonomy administrators edit;
//! - [`rules`]: kind, urgency and emergency referral (110/119/120/122), with negation handling so
//!   that "没有着火" is not a fire — rules, because a referral must be explainable at once;
//! - [`locate`]: district and street from the shipped Wuhan gazetteer;
//! - [`related`]: duplicates and same-event orders among recent ones;
//! - [`mask`]: personal data kept out of logs.
//!
//! Everything is pure and fast (well under a millisecond per message); the model, taxonomy and
//! gazetteer are embedded in the binary and parsed once.

pub mod classify;
pub mod locate;
pub mod mask;
pub mod related;
pub mod rules;
pub mod taxonomy;

use crate::submission::Submission;
use crate::work_order::{EmergencyReferral, Kind, Urgency};

/// What a citizen is told at once when their message looks like an emergency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmergencyNotice {
    pub zh: &'static str,
    pub en: &'static str,
}

impl EmergencyNotice {
    /// The notice for a service.
    pub fn for_referral(referral: EmergencyReferral) -> EmergencyNotice {
        match referral {
            EmergencyReferral::Fire => EmergencyNotice {
                zh: "您反映的情况可能涉及火灾、燃气泄漏或被困，请立即拨打119。12345已记录您的诉求，\
                     但无法代替紧急救援。",
                en: "This may be a fire, gas leak or entrapment: call 119 now. 12345 has recorded \
                     your message but cannot replace emergency services.",
            },
            EmergencyReferral::Police => EmergencyNotice {
                zh: "您反映的情况可能危及人身或财产安全，请立即拨打110报警。12345已记录您的诉求，\
                     但无法代替紧急救援。",
                en: "Someone's safety may be at risk: call the police on 110 now. 12345 has \
                     recorded your message but cannot replace emergency services.",
            },
            EmergencyReferral::Medical => EmergencyNotice {
                zh: "您反映的情况可能需要急救，请立即拨打120。12345已记录您的诉求，\
                     但无法代替紧急救援。",
                en: "This may be a medical emergency: call 120 for an ambulance now. 12345 has \
                     recorded your message but cannot replace emergency services.",
            },
            EmergencyReferral::Traffic => EmergencyNotice {
                zh: "您反映的情况可能是交通事故，请立即拨打122（有人受伤请同时拨打120）。\
                     12345已记录您的诉求，但无法代替紧急救援。",
                en: "This may be a traffic accident: call 122 now (and 120 if anyone is hurt). \
                     12345 has recorded your message but cannot replace emergency services.",
            },
        }
    }
}

/// What normalization adds to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub kind: Kind,
    /// First-level category predicted by the trained model (one of the seven trained ones).
    pub category: Option<String>,
    pub urgency: Urgency,
    pub emergency_referral: Option<EmergencyReferral>,
    /// The model's probability for `category` (0 to 1).
    pub category_confidence: Option<f32>,
    /// Keyword route in the taxonomy, `一级/二级` (may name an untrained first level such as
    /// `公共安全/电信诈骗`).
    pub subcategory: Option<String>,
    /// Canonical district name from the gazetteer (`洪山区`).
    pub district: Option<String>,
    /// Street (街道), landmark or zone named in the text.
    pub street: Option<String>,
    /// Shown to the citizen at once when `emergency_referral` is set.
    pub emergency_notice: Option<EmergencyNotice>,
    /// Why: one short line per decision, naming the words that decided it. Cue words only,
    /// never the citizen's text, so reasons may be logged.
    pub reasons: Vec<String>,
}

/// Normalize a submission: its text, and its location where the channel gave one (a district
/// the citizen chose wins over one found in the text; an address is searched before the text).
pub fn normalize(submission: &Submission) -> Normalized {
    let mut n = normalize_text("", &submission.text);
    let Ok(gazetteer) = locate::wuhan() else {
        return n;
    };
    let loc = &submission.location;
    let chosen = loc
        .district
        .as_deref()
        .and_then(|d| gazetteer.district_named(d));
    let from_address = loc.address.as_deref().and_then(|a| gazetteer.locate(a));
    if let Some(district) = chosen {
        n.district = Some(district.to_owned());
        n.reasons
            .push(format!("district {district}: given by the citizen"));
        let street = from_address
            .filter(|p| p.district == district)
            .and_then(|p| p.street);
        if street.is_some() || n.district.as_deref() != Some(district) {
            n.street = street;
        }
    } else if let Some(place) = from_address {
        n.reasons.push(format!(
            "district {}: address names {}",
            place.district, place.matched
        ));
        n.district = Some(place.district);
        n.street = place.street;
    }
    if let Some(street) = &loc.street {
        n.street = Some(street.clone());
    }
    n
}

/// Normalize a message given as subject and detail (the subject may be empty).
pub fn normalize_text(subject: &str, detail: &str) -> Normalized {
    let mut reasons = Vec::new();
    let joined;
    let text = if subject.is_empty() {
        detail
    } else {
        joined = format!("{subject}。{detail}");
        joined.as_str()
    };

    let decided = rules::decide(text);
    let emergency_referral = decided.emergency.map(|(service, cue)| {
        reasons.push(format!("emergency {}: {cue}", service.number()));
        service
    });
    let (urgency, urgent_cue) = decided.urgency;
    if let Some(cue) = urgent_cue {
        reasons.push(format!("urgent: {cue}"));
    }
    let (kind, cues) = decided.kind;
    reasons.push(if cues.is_empty() {
        format!("kind {}: no cue, default", kind.as_str())
    } else {
        format!("kind {}: {}", kind.as_str(), cues.join("、"))
    });

    let prediction = classify::shipped_model()
        .ok()
        .and_then(|m| m.predict(subject, detail));
    let category = prediction.as_ref().map(|p| p.category.to_owned());
    let category_confidence = prediction.as_ref().map(|p| p.confidence);
    if let Some(p) = &prediction {
        reasons.push(format!(
            "category {}: model, p={:.2}",
            p.category, p.confidence
        ));
    }
    let subcategory = taxonomy::shipped()
        .ok()
        .and_then(|t| t.route(category.as_deref(), text));

    let place = locate::wuhan().ok().and_then(|g| g.locate(text));
    if let Some(p) = &place {
        reasons.push(format!("district {}: {}", p.district, p.matched));
    }
    let (district, street) = place.map_or((None, None), |p| (Some(p.district), p.street));

    Normalized {
        kind,
        category,
        urgency,
        emergency_referral,
        category_confidence,
        subcategory,
        district,
        street,
        emergency_notice: emergency_referral.map(EmergencyNotice::for_referral),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(text: &str) -> Submission {
        Submission::from_app_json(serde_json::json!({ "text": text }).to_string().as_bytes())
            .expect("valid")
    }

    #[test]
    fn emergencies_are_referred_to_the_right_service() {
        assert_eq!(
            normalize(&sub("楼下着火了")).emergency_referral,
            Some(EmergencyReferral::Fire)
        );
        assert_eq!(
            normalize(&sub("有人晕倒在路边")).emergency_referral,
            Some(EmergencyReferral::Medical)
        );
        assert_eq!(
            normalize(&sub("路口发生车祸")).emergency_referral,
            Some(EmergencyReferral::Traffic)
        );
        assert_eq!(
            normalize(&sub("有人持刀抢劫")).emergency_referral,
            Some(EmergencyReferral::Police)
        );
        let n = normalize(&sub("小区路灯坏了"));
        assert_eq!((n.emergency_referral, n.urgency), (None, Urgency::Normal));
        assert_eq!(normalize(&sub("有人晕倒")).urgency, Urgency::Emergency);
    }

    #[test]
    fn kind_follows_the_citizens_words() {
        assert_eq!(
            normalize(&sub("我要投诉工地夜间施工扰民")).kind,
            Kind::Complaint
        );
        assert_eq!(normalize(&sub("表扬社区网格员")).kind, Kind::Praise);
        assert_eq!(normalize(&sub("建议在公园增设座椅")).kind, Kind::Suggestion);
        assert_eq!(normalize(&sub("社保怎么转移")).kind, Kind::Consultation);
    }
}
