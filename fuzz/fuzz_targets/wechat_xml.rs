//! WeChat push bodies: the flat XML reader, the message model, the safe-mode decryption and
//! the 查询 command must never panic, whatever WeChat (or an attacker) sends.
#![no_main]

use adapters::wechat::{self, Inbound, MessageCipher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = wechat::parse_xml(data) {
        if let Ok(msg) = Inbound::from_fields(&fields) {
            let _ = msg.submission();
            if let Some(t) = msg.order_text() {
                let _ = wechat::parse_query(t);
            }
        }
        if let Some(enc) = fields.get("Encrypt")
            && let Ok(c) = MessageCipher::new(
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                "wx2c2769f8efd9abc2",
            )
        {
            let _ = c.decrypt(enc);
        }
    }
    if let Ok(fields) = wechat::message::json_fields(data) {
        let _ = Inbound::from_fields(&fields);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = wechat::parse_query(s);
    }
});
