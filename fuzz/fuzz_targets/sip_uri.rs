//! The URI parser on arbitrary text: no panic, every accessor answers, and what parses is kept
//! byte for byte, so its string form parses again to an equal value with the same parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Uri::parse(text) else {
        return;
    };
    assert_eq!(uri.as_str(), text);
    let again = Uri::parse(&uri.to_string()).expect("a parsed URI parses again");
    assert_eq!(again, uri);
    assert_eq!(
        (again.scheme(), again.user(), again.password(), again.host(), again.port()),
        (uri.scheme(), uri.user(), uri.password(), uri.host(), uri.port())
    );
    assert_eq!(
        (again.host_port(), again.headers(), again.ip(), again.is_sips()),
        (uri.host_port(), uri.headers(), uri.ip(), uri.is_sips())
    );
    assert!(again.params().eq(uri.params()));
    assert_eq!(uri.is_sip(), uri.host().is_some());
    for (name, _) in uri.params() {
        assert!(uri.param(name).is_some());
    }
});
