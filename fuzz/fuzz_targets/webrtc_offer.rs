//! A browser's SDP offer and then whatever reaches its media port: answering never panics (a
//! clear refusal or an answer), and datagrams of any shape fed to an answered call's transport
//! never panic; its outputs are drained as the pacer drains them.
#![no_main]
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use media::Codec;
use media::webrtc::{TransportOutput, WebRtcSettings, WebRtcTransport};

fn settings() -> &'static WebRtcSettings {
    static S: OnceLock<WebRtcSettings> = OnceLock::new();
    S.get_or_init(|| WebRtcSettings::new(&[Codec::Pcma, Codec::Pcmu]).expect("a certificate"))
}

fuzz_target!(|data: &[u8]| {
    // The offer, then datagrams separated by a NUL.
    let mut parts = data.split(|b| *b == 0);
    let Some(offer) = parts.next().and_then(|o| std::str::from_utf8(o).ok()) else {
        return;
    };
    let local: SocketAddr = "127.0.0.1:20000".parse().expect("addr");
    let peer: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    let mut now = Instant::now();
    let Ok(accepted) = WebRtcTransport::accept(now, offer, settings(), local, local) else {
        return;
    };
    assert!(accepted.answer.starts_with("v=0"));
    let mut t = accepted.transport;
    for d in parts {
        now += Duration::from_millis(20);
        t.handle_datagram(now, peer, d);
        t.handle_timeout(now);
        t.send_rtp(now, d);
        while !matches!(t.poll_output(), TransportOutput::Timeout(_)) {}
    }
});
