//! Normalization of arbitrary text: never panics, an emergency always carries its notice, and the
//! category (when any) is one the shipped model knows.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let (subject, detail) = s.split_once('\n').unwrap_or(("", s));
        let n = adapters::normalize::normalize_text(subject, detail);
        assert_eq!(n.emergency_referral.is_some(), n.emergency_notice.is_some());
        if let (Some(c), Ok(model)) = (&n.category, adapters::normalize::classify::shipped_model())
        {
            assert!(model.classes.contains(c));
        }
        let _ = adapters::normalize::mask::mask_text(s);
    }
});
