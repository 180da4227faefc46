//! SMS provider callbacks and long-message part markers must never panic.
#![no_main]

use adapters::sms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sms::parse_aliyun(data);
    let _ = sms::parse_tencent(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(m) = sms::part_marker(s) {
            assert!(m.index >= 1 && m.index <= m.total && m.len <= s.len());
        }
        let _ = sms::strip_marker(s);
        let _ = sms::reassemble([(2, s), (1, s)]);
        let _ = sms::parse_query(s);
    }
});
