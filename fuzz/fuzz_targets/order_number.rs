//! Order numbers typed by citizens: parsing never panics, and whatever parses composes back to
//! itself from its parts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = adapters::OrderNumber::parse(s) {
            assert!(n.as_str().bytes().all(|b| b.is_ascii_digit()));
            let _ = (n.node(), n.sequence());
        }
    }
});
