//! SDP from the network: parsing never panics, whatever parses serializes to text that parses to
//! the same description, and negotiating an answer to it never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

use media::Codec;
use media::sdp::{SessionDescription, negotiate};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(sdp) = SessionDescription::parse(text) {
            let again = SessionDescription::parse(&sdp.to_string());
            assert!(again.is_ok(), "serialized SDP does not parse: {again:?}");
            let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
            if let Ok(answer) = negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], local, 20000) {
                assert!(SessionDescription::parse(&answer.sdp.to_string()).is_ok());
            }
        }
    }
});
