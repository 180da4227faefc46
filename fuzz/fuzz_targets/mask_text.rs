//! Masking free text for logs: never panics, and no 11-digit mobile number survives.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let masked = adapters::normalize::mask::mask_text(s);
        let digits: Vec<&str> = masked.split(|c: char| !c.is_ascii_digit()).collect();
        for run in digits {
            assert!(!(run.len() == 11 && run.starts_with('1')), "{run} left unmasked in {masked}");
        }
    }
});
