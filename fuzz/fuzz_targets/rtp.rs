//! Datagrams on a media port: the RTP session and the RTCP parser take anything without
//! panicking, and time can move on afterwards.
#![no_main]
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

use media::MediaSettings;
use media::rtp_session::{Output, RtpConfig, RtpSession, parse_rtcp};
use media::sdp::{Direction, Negotiated};
use media::{Codec, dtmf};

fuzz_target!(|data: &[u8]| {
    let _ = parse_rtcp(data);
    let _ = dtmf::TelephoneEvent::parse(data);
    let remote = "127.0.0.1:40000".parse().ok();
    let negotiated = Negotiated {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        remote,
        ptime: Some(20),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        media_index: 0,
    };
    let now = Instant::now();
    let mut session = RtpSession::new(
        RtpConfig::new(
            &MediaSettings::default(),
            &negotiated,
            &mut StdRng::seed_from_u64(0),
        ),
        now,
        SystemTime::now(),
    );
    let from = "127.0.0.1:40000".parse().expect("literal address");
    // Split the input into several datagrams so sequences of packets are explored too.
    for (i, chunk) in data.split(|&b| b == 0xA5).enumerate() {
        let t = now + Duration::from_millis(10 * i as u64);
        session.handle_rtp(t, from, chunk);
        session.handle_rtcp(t, from, chunk);
        session.handle_timeout(t);
        while !matches!(session.poll_output(), Output::Timeout(_)) {}
    }
    let _ = session.stats();
});
