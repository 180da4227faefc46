//! The SIP endpoint on arbitrary datagrams, split into up to four messages fed in turn with
//! timers run in between: no panic, whatever the trunk (or an agent's phone registering with
//! the registrar, on here) sends.
#![no_main]

use std::time::{Duration, Instant};

use sip::{Endpoint, Output, SipSettings, Transport};
use libfuzzer_sys::fuzz_target;

/// Take everything the endpoint hands out, as its driver would.
fn drain(ep: &mut Endpoint) {
    while !matches!(ep.poll_output(), Output::Timeout(_)) {}
}

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(SipSettings {
        registrar: Some(sip::registrar::RegistrarSettings {
            users: [("1001".to_owned(), "s3cret".to_owned())].into(),
            ..Default::default()
        }),
        ..SipSettings::default()
    });
    let from = std::net::SocketAddr::from(([127, 0, 0, 1], 5080));
    let mut now = Instant::now();
    for (i, part) in data.split(|b| *b == 0xfe).take(4).enumerate() {
        let transport = if i % 2 == 0 { Transport::Udp } else { Transport::Tcp };
        ep.handle_datagram(now, from, transport, part);
        drain(&mut ep);
        now += Duration::from_millis(700);
        ep.handle_timeout(now);
        drain(&mut ep);
    }
    now += Duration::from_secs(4000);
    ep.handle_timeout(now);
    drain(&mut ep);
});
