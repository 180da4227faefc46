//! The digest Authorization parser on arbitrary text: no panic, and what parses is read again
//! the same from its own rendering (every value quoted and escaped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::registrar::{expected_response, parse_digest};

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = parse_digest(text) else {
        return;
    };
    let _ = expected_response(&c, "password", "REGISTER");
    let mut again = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}",
        quoted(&c.username),
        quoted(&c.realm),
        quoted(&c.nonce),
        quoted(&c.uri),
        quoted(&c.response)
    );
    for (name, v) in [
        ("algorithm", &c.algorithm),
        ("qop", &c.qop),
        ("nc", &c.nc),
        ("cnonce", &c.cnonce),
    ] {
        if let Some(v) = v {
            again.push_str(&format!(", {name}={}", quoted(v)));
        }
    }
    assert_eq!(parse_digest(&again), Ok(c), "{again}");
});
