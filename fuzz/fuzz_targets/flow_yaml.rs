//! Flow files edited by administrators: any text gets a flow set or diagnostics, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ivr_flows::check_source("fuzz.yaml", text);
    }
});
