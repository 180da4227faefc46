//! Normalization: what the gateway works out about every submission, whatever its channel.
//!
//! This first version decides kind, urgency and emergency referral from keyword rules that a
//! 12345 operator would apply, and masks personal data for logs ([`mask`]). Category
//! classification from a trained model, the district gazetteer and related-order detection build
//! on the same [`Normalized`] result.

pub mod classify;
pub mod mask;

use crate::submission::Submission;
use crate::work_order::{EmergencyReferral, Kind, Urgency};

/// What normalization adds to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub kind: Kind,
    pub category: Option<String>,
    pub urgency: Urgency,
    pub emergency_referral: Option<EmergencyReferral>,
}

/// Words that mean someone needs an emergency service now, by service. Checked in this order:
/// a fire with injuries is referred to 119, who bring 120.
const EMERGENCY_WORDS: [(EmergencyReferral, &[&str]); 4] = [
    (
        EmergencyReferral::Fire,
        &[
            "着火",
            "失火",
            "火灾",
            "起火",
            "冒烟",
            "燃气泄漏",
            "煤气泄漏",
        ],
    ),
    (
        EmergencyReferral::Medical,
        &[
            "晕倒",
            "昏迷",
            "心脏病",
            "呼吸困难",
            "大出血",
            "急救",
            "不省人事",
        ],
    ),
    (
        EmergencyReferral::Traffic,
        &["车祸", "撞车", "交通事故", "追尾"],
    ),
    (
        EmergencyReferral::Police,
        &[
            "抢劫",
            "打架",
            "斗殴",
            "持刀",
            "杀人",
            "绑架",
            "入室盗窃",
            "家暴",
        ],
    ),
];

const URGENT_WORDS: &[&str] = &[
    "紧急", "马上", "立即", "危险", "隐患", "停水", "停电", "漏水", "塌",
];

const KIND_WORDS: [(Kind, &[&str]); 5] = [
    (Kind::Praise, &["表扬", "感谢", "点赞", "致谢", "锦旗"]),
    (Kind::Suggestion, &["建议", "希望增加", "能否增设", "提议"]),
    (
        Kind::Complaint,
        &["投诉", "扰民", "不作为", "乱收费", "态度恶劣", "拖欠"],
    ),
    (Kind::Help, &["求助", "帮帮", "救助", "困难", "无人照顾"]),
    (
        Kind::Report,
        &["举报", "违法", "违规", "偷排", "占道", "违建"],
    ),
];

/// Normalize a submission.
pub fn normalize(submission: &Submission) -> Normalized {
    let text = submission.text.as_str();
    let emergency_referral = EMERGENCY_WORDS
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map(|(service, _)| *service);
    let urgency = if emergency_referral.is_some() {
        Urgency::Emergency
    } else if URGENT_WORDS.iter().any(|w| text.contains(w)) {
        Urgency::Urgent
    } else {
        Urgency::Normal
    };
    let kind = KIND_WORDS
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map_or(Kind::Consultation, |(kind, _)| *kind);
    Normalized {
        kind,
        category: None,
        urgency,
        emergency_referral,
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
