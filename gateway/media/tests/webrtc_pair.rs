//! Both ends of a WebRTC call in one process on virtual time (as quinn's tests do): a full-ICE
//! str0m peer plays the browser, our [`WebRtcTransport`] answers; datagrams move between them
//! through a vector, and time moves only when both wait.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media::Codec;
use media::webrtc::{OfferError, TransportOutput, WebRtcSettings, WebRtcTransport, check_offer};
use str0m::format::Codec as Str0mCodec;
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const BROWSER: &str = "10.0.0.2:50000";
const GATEWAY: &str = "10.0.0.1:20000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// The browser: a full-ICE peer offering `codecs` and telephone-event.
fn browser(now: Instant, codecs: &[Str0mCodec]) -> Rtc {
    // RTP mode: the test reads the packets the gateway sent as they are.
    let mut cfg = RtcConfig::new().set_rtp_mode(true).clear_codecs();
    let c = cfg.codec_config();
    c.enable_opus(codecs.contains(&Str0mCodec::Opus), false);
    c.enable_pcmu(codecs.contains(&Str0mCodec::PCMU), false);
    c.enable_pcma(codecs.contains(&Str0mCodec::PCMA), false);
    c.add_config(
        126.into(),
        None,
        Str0mCodec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        Default::default(),
    );
    let mut rtc = cfg.build(now);
    rtc.add_local_candidate(Candidate::host(addr(BROWSER), "udp").expect("candidate"));
    rtc
}

fn offer(rtc: &mut Rtc) -> (String, str0m::change::SdpPendingOffer, Mid) {
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    (offer.to_sdp_string(), pending, mid)
}

/// What each side received.
#[derive(Default)]
struct Seen {
    gateway_rtp: Vec<Vec<u8>>,
    gateway_connected: bool,
    gateway_gone: bool,
    browser_rtp: Vec<(u8, u16, Vec<u8>)>,
    browser_connected: bool,
}

/// Run both ends until `until` (virtual), moving datagrams; `each` runs at every 20 ms mark.
fn run(
    now: &mut Instant,
    until: Instant,
    b: &mut Rtc,
    g: &mut WebRtcTransport,
    seen: &mut Seen,
    mut each: impl FnMut(Instant, &mut Rtc, &mut WebRtcTransport),
) {
    let mut next_tick = *now;
    while *now < until {
        if *now >= next_tick {
            each(*now, b, g);
            next_tick = *now + Duration::from_millis(20);
        }
        // Drain the browser.
        let mut to_gateway = Vec::new();
        let b_timeout = loop {
            match b.poll_output().expect("browser output") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => to_gateway.push(t.contents.to_vec()),
                Output::Event(Event::Connected) => seen.browser_connected = true,
                Output::Event(Event::RtpPacket(p)) => seen.browser_rtp.push((
                    *p.header.payload_type,
                    p.header.sequence_number,
                    p.payload.to_vec(),
                )),
                Output::Event(_) => {}
            }
        };
        // Drain the gateway.
        let mut to_browser = Vec::new();
        let g_timeout = loop {
            match g.poll_output() {
                TransportOutput::Timeout(t) => break t,
                TransportOutput::Transmit { to, data } => {
                    assert_eq!(to, addr(BROWSER), "the gateway sends to the browser");
                    to_browser.push(data)
                }
                TransportOutput::Rtp { from, data } => {
                    assert_eq!(from, addr(BROWSER));
                    seen.gateway_rtp.push(data)
                }
                TransportOutput::Connected => seen.gateway_connected = true,
                TransportOutput::Gone => seen.gateway_gone = true,
            }
        };
        let moved = !to_gateway.is_empty() || !to_browser.is_empty();
        for d in to_gateway {
            g.handle_datagram(*now, addr(BROWSER), &d);
        }
        for d in to_browser {
            b.handle_input(Input::Receive(
                *now,
                Receive {
                    proto: Protocol::Udp,
                    source: addr(GATEWAY),
                    destination: addr(BROWSER),
                    contents: d
                        .as_slice()
                        .try_into()
                        .expect("a datagram the browser reads"),
                },
            ))
            .expect("browser input");
        }
        if moved {
            continue;
        }
        let next = b_timeout.min(g_timeout).min(next_tick).max(*now);
        *now = if next == *now {
            *now + Duration::from_millis(1)
        } else {
            next
        };
        b.handle_input(Input::Timeout(*now))
            .expect("browser timeout");
        g.handle_timeout(*now);
    }
}

/// An RTP packet as our RTP session makes it: PCMU or PCMA payload of 160 bytes.
fn rtp(pt: u8, seq: u16, ts: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 160));
    p
}

#[test]
fn a_browser_connects_and_audio_and_digits_flow_both_ways() {
    let settings = WebRtcSettings::new(&[Codec::Pcma, Codec::Pcmu]).expect("a certificate");
    let mut now = Instant::now();
    let mut b = browser(now, &[Str0mCodec::Opus, Str0mCodec::PCMU, Str0mCodec::PCMA]);
    let (offer_sdp, pending, mid) = offer(&mut b);
    let accepted =
        WebRtcTransport::accept(now, &offer_sdp, &settings, addr(GATEWAY), addr(GATEWAY))
            .expect("the offer is answered");
    assert_eq!(
        accepted.negotiated.codec,
        Codec::Pcma,
        "our preference among the offered"
    );
    assert_eq!(accepted.negotiated.payload_type, 8);
    assert_eq!(accepted.negotiated.telephone_event, Some(126));
    assert!(
        accepted.answer.contains("a=ice-lite"),
        "{}",
        accepted.answer
    );
    assert!(accepted.answer.contains("a=fingerprint:sha-256"));
    assert!(accepted.answer.contains("10.0.0.1 20000 typ host"));
    let answer = str0m::change::SdpAnswer::from_sdp_string(&accepted.answer).expect("answer");
    b.sdp_api()
        .accept_answer(pending, answer)
        .expect("the browser takes the answer");
    let mut g = accepted.transport;

    let mut seen = Seen::default();
    let until = now + Duration::from_secs(3);
    run(&mut now, until, &mut b, &mut g, &mut seen, |_, _, _| {});
    assert!(
        seen.browser_connected && seen.gateway_connected,
        "ICE and DTLS are up"
    );
    assert!(g.is_connected());

    // 50 packets each way, and one RFC 4733 digit from the browser.
    let (mut seq, mut ts, mut sent) = (65_500u16, 1000u32, 0);
    let mut b_seq = 7u64;
    let until = now + Duration::from_secs(1);
    run(&mut now, until, &mut b, &mut g, &mut seen, |t, b, g| {
        if sent < 50 {
            g.send_rtp(t, &rtp(8, seq, ts, 0xd5));
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            let mut api = b.direct_api();
            let stream = api.stream_tx_by_mid(mid, None).expect("browser stream");
            let payload = if sent == 10 {
                (126u8, vec![5, 0x8a, 0, 160])
            } else {
                (8u8, vec![0x55; 160])
            };
            stream.write_rtp(RtpWrite::new(
                payload.0.into(),
                b_seq.into(),
                sent * 160,
                t,
                payload.1,
            ));
            b_seq += 1;
            sent += 1;
        }
    });
    assert_eq!(
        seen.browser_rtp.len(),
        50,
        "every packet reached the browser"
    );
    assert!(
        seen.browser_rtp
            .iter()
            .all(|(pt, _, p)| *pt == 8 && p.len() == 160)
    );
    // The sequence numbers wrapped past 65535 and kept going.
    assert!(seen.browser_rtp.iter().any(|(_, s, _)| *s == 65_535));
    assert!(seen.browser_rtp.iter().any(|(_, s, _)| *s == 3));
    assert_eq!(
        seen.gateway_rtp.len(),
        50,
        "every packet reached the gateway"
    );
    let digit = seen
        .gateway_rtp
        .iter()
        .find(|p| p[1] & 0x7f == 126)
        .expect("the digit's packet");
    assert_eq!(&digit[12..], &[5, 0x8a, 0, 160]);
    assert!(
        seen.gateway_rtp
            .iter()
            .filter(|p| p[1] & 0x7f == 8)
            .all(|p| p.len() == 172 && p[12..].iter().all(|&b| b == 0x55))
    );

    // Garbage on the port: counted, the call goes on.
    let mut x = 0x1234_5678u32;
    for i in 0..2000usize {
        let len = i % 300;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        g.handle_datagram(now, addr(BROWSER), &junk);
    }
    assert!(g.refused > 0);
    let before = seen.browser_rtp.len();
    let until = now + Duration::from_millis(200);
    run(&mut now, until, &mut b, &mut g, &mut seen, |t, _, g| {
        g.send_rtp(t, &rtp(8, seq, ts, 0xd5));
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
    });
    assert!(
        seen.browser_rtp.len() > before,
        "audio still flows after the garbage"
    );
    assert!(!seen.gateway_gone);

    // The browser vanishes: no more checks; the gateway says so within ICE's consent time.
    let mut gone_at = None;
    for _ in 0..4000 {
        now += Duration::from_millis(20);
        g.handle_timeout(now);
        loop {
            match g.poll_output() {
                TransportOutput::Timeout(_) => break,
                TransportOutput::Gone => gone_at = Some(now),
                _ => {}
            }
        }
        if gone_at.is_some() {
            break;
        }
    }
    assert!(gone_at.is_some(), "a vanished browser is noticed");
}

#[test]
fn offers_the_gateway_cannot_take_are_refused_with_the_reason() {
    let settings = WebRtcSettings::new(&[Codec::Pcma, Codec::Pcmu]).expect("a certificate");
    let now = Instant::now();
    let g = addr(GATEWAY);
    let mut opus_only = browser(now, &[Str0mCodec::Opus]);
    let (sdp, _, _) = offer(&mut opus_only);
    assert_eq!(
        WebRtcTransport::accept(now, &sdp, &settings, g, g).err(),
        Some(OfferError::NoCommonCodec)
    );
    assert!(matches!(
        WebRtcTransport::accept(now, "hello", &settings, g, g),
        Err(OfferError::Invalid(_))
    ));
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(10_000));
    assert_eq!(
        WebRtcTransport::accept(now, &huge, &settings, g, g).err(),
        Some(OfferError::TooLarge)
    );
    // A plain SIP-style offer: no ICE credentials, no fingerprint.
    let plain = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert!(WebRtcTransport::accept(now, plain, &settings, g, g).is_err());

    // The check made before a call takes a line refuses the same offers for the same reasons
    // and passes a browser's good one.
    let (opus, _, _) = offer(&mut browser(now, &[Str0mCodec::Opus]));
    assert_eq!(
        check_offer(&opus, &settings).err(),
        Some(OfferError::NoCommonCodec)
    );
    assert!(matches!(
        check_offer("hello", &settings),
        Err(OfferError::Invalid(_))
    ));
    assert_eq!(
        check_offer(&huge, &settings).err(),
        Some(OfferError::TooLarge)
    );
    let (good, _, _) = offer(&mut browser(now, &[Str0mCodec::Opus, Str0mCodec::PCMU]));
    assert_eq!(check_offer(&good, &settings), Ok(()));
    assert!(WebRtcTransport::accept(now, &good, &settings, g, g).is_ok());
}
