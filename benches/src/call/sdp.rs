//! Our SDP offer (PCMU, PCMA, telephone-event, 20 ms) and what we need from the answer: where to
//! send RTP, which audio payload type, and the telephone-event payload type.

use std::net::{IpAddr, SocketAddr};

/// The payload type we offer for telephone-event.
pub const OFFERED_EVENT_PT: u8 = 101;

/// The offer of one call.
pub fn offer(ip: IpAddr, rtp_port: u16, session_id: u64) -> String {
    let ip_kind = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\n\
         o=call-load {session_id} 1 IN {ip_kind} {ip}\r\n\
         s=call-load\r\n\
         c=IN {ip_kind} {ip}\r\n\
         t=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 8 {ev}\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{ev} telephone-event/8000\r\n\
         a=fmtp:{ev} 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        ev = OFFERED_EVENT_PT,
    )
}

/// What the answer chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Where the peer wants our RTP.
    pub rtp: SocketAddr,
    /// 0 (PCMU) or 8 (PCMA): the first of them in the answer's format list.
    pub audio_pt: u8,
    /// The answer's telephone-event payload type, if it accepted telephone-event.
    pub event_pt: Option<u8>,
}

/// Why an answer is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    NoAudio,
    NoAddress,
    Rejected,
    NoCommonCodec,
}

impl AnswerError {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerError::NoAudio => "sdp-no-audio",
            AnswerError::NoAddress => "sdp-no-address",
            AnswerError::Rejected => "sdp-port-0",
            AnswerError::NoCommonCodec => "sdp-no-g711",
        }
    }
}

/// Read the answer: the first `m=audio`, its (or the session's) `c=`, its formats and rtpmaps.
pub fn parse_answer(body: &[u8]) -> Result<Answer, AnswerError> {
    let text = String::from_utf8_lossy(body);
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut formats: Vec<u8> = Vec::new();
    let mut event_pt: Option<u8> = None;
    let mut rtpmap_audio: Vec<(u8, bool)> = Vec::new();
    // 0: session level, 1: in our audio m= section, 2: in any other m= section.
    let mut section = 0;
    for line in text.lines() {
        let line = line.trim_end();
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                if port.is_none() && value.starts_with("audio ") {
                    section = 1;
                    let mut parts = value.split_whitespace().skip(1);
                    port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok());
                    formats = parts.skip(1).filter_map(|f| f.parse().ok()).collect();
                    if port.is_none() {
                        section = 2;
                    }
                } else {
                    section = 2;
                }
            }
            "c" if section < 2 => {
                let ip = value
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next())
                    .and_then(|a| a.parse().ok());
                if section == 0 {
                    session_ip = ip;
                } else {
                    media_ip = ip;
                }
            }
            "a" if section == 1 => {
                if let Some(map) = value.strip_prefix("rtpmap:") {
                    let mut parts = map.split_whitespace();
                    let pt: Option<u8> = parts.next().and_then(|p| p.parse().ok());
                    let enc = parts.next().unwrap_or("").to_ascii_lowercase();
                    if let Some(pt) = pt {
                        if enc.starts_with("telephone-event/") {
                            event_pt = event_pt.or(Some(pt));
                        } else if enc.starts_with("pcmu/") {
                            rtpmap_audio.push((pt, true));
                        } else if enc.starts_with("pcma/") {
                            rtpmap_audio.push((pt, false));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let port = port.ok_or(AnswerError::NoAudio)?;
    if port == 0 {
        return Err(AnswerError::Rejected);
    }
    let ip = media_ip.or(session_ip).ok_or(AnswerError::NoAddress)?;
    // Static types 0 and 8 need no rtpmap; a dynamic type mapped to PCMU/PCMA is not sent by us
    // (we send 0 or 8), so only 0 and 8 count.
    let audio_pt = formats
        .iter()
        .copied()
        .find(|f| *f == 0 || *f == 8)
        .ok_or(AnswerError::NoCommonCodec)?;
    let event_pt = event_pt.filter(|pt| formats.contains(pt));
    Ok(Answer {
        rtp: SocketAddr::new(ip, port),
        audio_pt,
        event_pt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_gateway_style_answer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40002 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\n\
                   a=rtpmap:96 telephone-event/8000\r\na=ptime:20\r\n";
        let a = parse_answer(sdp.as_bytes()).expect("usable");
        assert_eq!(a.rtp, "127.0.0.1:40002".parse().expect("addr"));
        assert_eq!(a.audio_pt, 8);
        assert_eq!(a.event_pt, Some(96));
    }

    #[test]
    fn media_level_address_wins_and_sipp_answer_without_events() {
        let sdp = "v=0\nc=IN IP4 10.0.0.1\nm=audio 6000 RTP/AVP 0\nc=IN IP4 127.0.0.2\n\
                   a=rtpmap:0 PCMU/8000\nm=video 7000 RTP/AVP 96\na=rtpmap:96 telephone-event/8000\n";
        let a = parse_answer(sdp.as_bytes()).expect("usable");
        assert_eq!(a.rtp, "127.0.0.2:6000".parse().expect("addr"));
        assert_eq!((a.audio_pt, a.event_pt), (0, None));
    }

    #[test]
    fn unusable_answers() {
        assert_eq!(parse_answer(b"v=0\r\n"), Err(AnswerError::NoAudio));
        assert_eq!(
            parse_answer(b"c=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\n"),
            Err(AnswerError::Rejected)
        );
        assert_eq!(
            parse_answer(b"m=audio 5 RTP/AVP 0\n"),
            Err(AnswerError::NoAddress)
        );
        assert_eq!(
            parse_answer(b"c=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 18\n"),
            Err(AnswerError::NoCommonCodec)
        );
        assert_eq!(
            parse_answer(b"c=IN IP4 nonsense\nm=audio x RTP/AVP\n\xff"),
            Err(AnswerError::NoAudio)
        );
    }

    #[test]
    fn offer_lists_our_formats() {
        let o = offer("127.0.0.1".parse().expect("ip"), 30000, 7);
        assert!(o.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"));
        assert!(o.contains("a=ptime:20\r\n"));
    }
}
