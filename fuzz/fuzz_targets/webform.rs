//! Web form fields and photo sniffing: any input validates to a submission or to field errors,
//! never a panic; an accepted form always has text and one of the 13 districts.
#![no_main]
use adapters::webform::{DISTRICTS, WebForm, sniff_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sniff_image(data);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let mut form = WebForm::default();
    for name in ["text", "district", "address", "name", "phone"] {
        form.set(name, parts.next().unwrap_or(""));
    }
    match form.validate(2000) {
        Ok(s) => {
            assert!(!s.text.is_empty());
            assert!(DISTRICTS.contains(&s.location.district.as_deref().unwrap_or("")));
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
