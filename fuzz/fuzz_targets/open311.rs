//! Open311 POST bodies and list queries: any bytes give a submission or a spec error with a
//! 4xx code, never a panic; an accepted request always has text and a location.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match adapters::open311::parse_post(data).into_submission() {
        Ok(s) => {
            assert!(!s.text.is_empty());
            assert!(s.location.address.is_some() || s.location.lat.is_some());
        }
        Err(e) => assert!((400..500).contains(&e.code) && !e.description.is_empty()),
    }
    if let Ok(q) = std::str::from_utf8(data) {
        let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("offset");
        if let Err(e) = adapters::open311::parse_list_query(q, offset) {
            assert!((400..500).contains(&e.code));
        }
    }
});
