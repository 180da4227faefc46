//! The SIP parser and stream framer on arbitrary bytes: no panic, and what parses re-serializes
//! into something that parses again.
#![no_main]

use sip::{parse, serialize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse::frame(data);
    if let Ok(m) = parse::parse_datagram(data) {
        let _ = m.headers().via();
        let _ = m.headers().from();
        let _ = m.headers().to();
        let _ = m.headers().cseq();
        let _ = m.headers().contact();
        let bytes = serialize::message(&m);
        assert!(parse::parse_stream_message(&bytes).is_ok());
    }
});
