//! `POST /v1/submissions` bodies: any bytes get a submission or a clear error, never a panic;
//! an accepted submission always has non-empty text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match adapters::Submission::from_app_json(data) {
        Ok(s) => assert!(!s.text.trim().is_empty()),
        Err(e) => assert!(!e.message.is_empty()),
    }
});
