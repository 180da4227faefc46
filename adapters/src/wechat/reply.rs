//! What the citizen reads back: the passive reply XML and the texts of the channel.
//!
//! The texts live here, beside the message model, so WeChat and SMS say the same thing in the
//! same words, and tests can compare them without running the gateway.

use crate::work_order::{EmergencyReferral, Status, WorkOrder};

use super::crypto::{MessageCipher, signature};
use super::xml::cdata;

/// A passive text reply from the account (`from`) to the citizen (`to`).
pub fn text_xml(to: &str, from: &str, create_time: i64, content: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{}</Content></xml>",
        cdata(to),
        cdata(from),
        cdata(content)
    )
}

/// The safe-mode envelope of a reply: the reply encrypted, its `MsgSignature`, timestamp and
/// nonce.
pub fn encrypted_xml(
    cipher: &MessageCipher,
    token: &str,
    reply: &str,
    timestamp: &str,
    nonce: &str,
    random: [u8; 16],
) -> String {
    let encrypt = cipher.encrypt(reply, random);
    let sig = signature(&[token, timestamp, nonce, &encrypt]);
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(&encrypt),
        cdata(&sig),
        cdata(nonce)
    )
}

/// "Your report was accepted" with the number to quote, and the emergency referral first when
/// normalization found one.
pub fn accepted(order_id: &str, referral: Option<EmergencyReferral>) -> String {
    let mut s = String::new();
    if let Some(r) = referral {
        s.push_str(&emergency_notice(r));
        s.push('\n');
    }
    s.push_str(&format!(
        "您的诉求已受理，工单号：{order_id}，可发送“查询 工单号”了解进度。"
    ));
    s
}

/// The referral notice for an emergency.
pub fn emergency_notice(r: EmergencyReferral) -> String {
    format!(
        "如遇紧急情况请立即拨打{}，12345热线不能代替紧急救援。",
        r.number()
    )
}

pub const WELCOME: &str = "欢迎关注12345政务服务便民热线！直接发送文字或语音即可反映问题，发送“查询 工单号”可了解办理进度。";
pub const USAGE: &str = "请发送“查询 工单号”，例如：查询 26112301000012。";
pub const VOICE_UNRECOGNIZED: &str = "抱歉，暂未能识别您的语音，请用文字描述您要反映的问题。";
pub const NEED_TEXT_FIRST: &str =
    "已收到。请先用文字描述您要反映的问题，受理后再发送图片或位置，我们会一并转交办理。";
pub const UNSUPPORTED: &str = "暂不支持此类消息，请用文字描述您要反映的问题。";
pub const BUSY: &str = "系统繁忙，请稍后再试。";

pub fn attached(order_id: &str, what: &str) -> String {
    format!("已将{what}补充到工单{order_id}。")
}

pub fn status_zh(s: Status) -> &'static str {
    s.label_zh()
}

/// The answer to "查询 <number>". The owner also reads the latest note of the history; anyone
/// else (a number read off someone else's screen) learns only the status.
pub fn query_answer(order: &WorkOrder, is_owner: bool) -> String {
    let mut s = format!("工单{}当前状态：{}。", order.id, status_zh(order.status));
    if is_owner && let Some(note) = order.history.iter().rev().find_map(|h| h.note.as_deref()) {
        // The note is the dispatch backend's words and may quote a phone number: masked.
        s.push_str(&format!(
            "最新进展：{}",
            crate::normalize::mask::mask_text(note)
        ));
    }
    s
}

pub fn query_not_found(order_id: &str) -> String {
    format!("未查询到工单{order_id}，请核对工单号。")
}

pub fn query_invalid(reason: &str) -> String {
    format!("工单号有误（{reason}），请核对后重新发送“查询 工单号”。")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::{crypto::MessageCipher, xml};

    #[test]
    fn reply_xml_round_trips() {
        let x = text_xml("oUser", "gh_1", 1, "工单号：1]]>2");
        let f = xml::parse(x.as_bytes()).expect("xml");
        assert_eq!(f["Content"], "工单号：1]]>2");
        assert_eq!(f["MsgType"], "text");
        let c =
            MessageCipher::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxid").expect("key");
        let e = encrypted_xml(&c, "tok", &x, "123", "n1", [7; 16]);
        let f = xml::parse(e.as_bytes()).expect("xml");
        assert_eq!(
            f["MsgSignature"],
            signature(&["tok", "123", "n1", &f["Encrypt"]])
        );
        assert_eq!(c.decrypt(&f["Encrypt"]).as_deref(), Ok(x.as_str()));
    }

    #[test]
    fn accepted_text_names_the_referral_first() {
        let a = accepted("123", Some(EmergencyReferral::Fire));
        assert!(a.starts_with("如遇紧急情况请立即拨打119"), "{a}");
        assert!(a.contains("工单号：123"));
    }
}
