//! SDP (RFC 4566) parsing and serialization, and the offer/answer rules (RFC 3264) for the
//! telephony peers we meet: carriers' SBCs and IP phones offering G.711 and telephone-event.
//!
//! Why by hand: we need only the audio subset (c=, m=, rtpmap, fmtp, ptime, direction, o=
//! versioning), and the general SDP crates are either WebRTC-shaped (and panic-prone on the
//! loose SDP some SBCs send) or unmaintained. The parser is lenient where RFC 4566 practice is
//! (unknown lines are kept and echoed, `\n` as well as `\r\n`, trailing whitespace) and strict
//! where a mistake would misroute media (addresses, ports, payload types): malformed input gives
//! an [`SdpError`] naming the line, never a panic (there is a fuzz target for it).
//!
//! [`negotiate`] answers an offer: the first of our codecs (in our preference order) that the
//! offer carries, with the offerer's payload type, plus telephone-event when offered; no common
//! codec is [`NoCommonCodec`], which the SIP layer answers with 488. [`Negotiated::on_hold`]
//! tells a re-INVITE that puts us on hold (sendonly/inactive, or the old `c=0.0.0.0`).
//! [`OriginVersioning`] keeps `o=` right across re-offers: same session id, version bumped only
//! when the description changed.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::g711::Codec;

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    /// `sendrecv`: the describing side sends and receives (the default).
    SendRecv,
    /// `sendonly`: it only sends (how a holder offers hold).
    SendOnly,
    /// `recvonly`: it only receives (the answer to a hold).
    RecvOnly,
    /// `inactive`: it neither sends nor receives.
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// Attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to an offer with this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side with this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side with this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// User name (`-` when there is none).
    pub username: String,
    /// Session id: the same for every version of one session.
    pub session_id: u64,
    /// Version: raised each time the description changes (RFC 3264 §8).
    pub session_version: u64,
    /// Address of the host that made the description.
    pub address: IpAddr,
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it maps.
    pub payload_type: u8,
    /// Encoding name (`PCMA`, `telephone-event`, ...).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels, when given.
    pub channels: Option<u8>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, ...
    pub kind: String,
    /// Port (0: the stream is refused or disabled).
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub proto: String,
    /// Format list; payload type numbers for RTP profiles.
    pub formats: Vec<String>,
    /// Media-level `c=`.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` lines, in order.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <params>`.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// Other lines of the section (attributes and `b=` lines), whole (`a=maxptime:40`), kept
    /// in order. Whole, so that serializing cannot mistake an attribute whose value looks like a
    /// line (`a=v=0`) for that line.
    pub other_attributes: Vec<String>,
}

impl MediaDescription {
    /// The payload types in the format list (for RTP profiles).
    pub(crate) fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }

    /// The rtpmap of a payload type.
    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    /// The fmtp parameters of a payload type.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, s)| s.as_str())
    }

    fn is_rtp_audio(&self) -> bool {
        self.kind == "audio" && (self.proto == "RTP/AVP" || self.proto == "RTP/AVPF")
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line.
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Other session-level lines (`t=`, `b=`, attributes...) as `x=value`, kept in order.
    pub other_lines: Vec<String>,
    /// The `m=` sections, in order (answers keep their positions).
    pub media: Vec<MediaDescription>,
}

/// A malformed description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SDP at line {line}: {reason}")]
pub struct SdpError {
    /// 1-based line number (0: the description as a whole).
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError {
        line,
        reason: reason.into(),
    }
}

/// Upper bounds so hostile input cannot make us allocate without limit.
const MAX_LEN: usize = 64 * 1024;
const MAX_MEDIA: usize = 16;
const MAX_FORMATS: usize = 64;

fn parse_connection(line: usize, value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (net, addrtype, addr) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(t), Some(a)) => (n, t, a),
        _ => return Err(err(line, "c= needs <nettype> <addrtype> <address>")),
    };
    if net != "IN" {
        return Err(err(line, format!("unsupported network type {net:?}")));
    }
    // Multicast addresses may carry /ttl; keep the address part.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| err(line, format!("bad connection address {addr:?}")))?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(err(line, format!("address {addr:?} is not {addrtype}"))),
    }
}

fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpError> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    if parts.len() != 6 {
        return Err(err(line, "o= needs 6 fields"));
    }
    let session_id = parts[1]
        .parse()
        .map_err(|_| err(line, "o= session id is not a number"))?;
    let session_version = parts[2]
        .parse()
        .map_err(|_| err(line, "o= session version is not a number"))?;
    if parts[3] != "IN" {
        return Err(err(line, "o= network type is not IN"));
    }
    // Some peers put a host name here; it is informational, so fall back to 0.0.0.0.
    let address = parts[5]
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Ok(Origin {
        username: parts[0].to_string(),
        session_id,
        session_version,
        address,
    })
}

fn parse_media(line: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let kind = parts.next().ok_or_else(|| err(line, "m= is empty"))?;
    let port = parts.next().ok_or_else(|| err(line, "m= has no port"))?;
    // Port may be <port>/<count>; we use the first.
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port
        .parse()
        .map_err(|_| err(line, format!("bad media port {port:?}")))?;
    let proto = parts
        .next()
        .ok_or_else(|| err(line, "m= has no protocol"))?;
    let formats: Vec<String> = parts.map(str::to_string).collect();
    if formats.is_empty() {
        return Err(err(line, "m= has no formats"));
    }
    if formats.len() > MAX_FORMATS {
        return Err(err(line, "m= has too many formats"));
    }
    if proto.starts_with("RTP/") {
        for f in &formats {
            match f.parse::<u8>() {
                Ok(pt) if pt <= 127 => {}
                _ => return Err(err(line, format!("bad RTP payload type {f:?}"))),
            }
        }
    }
    Ok(MediaDescription {
        kind: kind.to_string(),
        port,
        proto: proto.to_string(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        other_attributes: Vec::new(),
    })
}

fn parse_pt(line: usize, s: &str) -> Result<u8, SdpError> {
    match s.parse::<u8>() {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(err(line, format!("bad payload type {s:?}"))),
    }
}

fn parse_rtpmap(line: usize, value: &str) -> Result<RtpMap, SdpError> {
    let (pt, rest) = value
        .split_once(' ')
        .ok_or_else(|| err(line, "rtpmap needs <pt> <encoding>/<clock>"))?;
    let payload_type = parse_pt(line, pt)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts
        .next()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| err(line, "rtpmap has no encoding"))?;
    let clock_rate = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(line, "rtpmap has no valid clock rate"))?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.parse()
                .map_err(|_| err(line, "rtpmap has a bad channel count"))?,
        ),
        None => None,
    };
    Ok(RtpMap {
        payload_type,
        encoding: encoding.to_string(),
        clock_rate,
        channels,
    })
}

impl SessionDescription {
    /// Parse a description.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        if text.len() > MAX_LEN {
            return Err(err(0, "description too long"));
        }
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut direction = None;
        let mut other_lines = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut saw_version = false;

        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let raw = raw.trim_end();
            if raw.is_empty() {
                continue;
            }
            let (kind, value) = raw
                .split_once('=')
                .ok_or_else(|| err(line_no, "line is not <type>=<value>"))?;
            if kind.len() != 1 {
                return Err(err(line_no, format!("bad line type {kind:?}")));
            }
            if !saw_version {
                if kind != "v" {
                    return Err(err(line_no, "description must start with v="));
                }
                if value.trim() != "0" {
                    return Err(err(line_no, "only SDP version 0 is supported"));
                }
                saw_version = true;
                continue;
            }
            match (kind, media.last_mut()) {
                ("v", _) => return Err(err(line_no, "repeated v=")),
                ("m", _) => {
                    if media.len() >= MAX_MEDIA {
                        return Err(err(line_no, "too many m= sections"));
                    }
                    media.push(parse_media(line_no, value)?);
                }
                ("o", None) => origin = Some(parse_origin(line_no, value)?),
                ("s", None) => session_name = Some(value.to_string()),
                ("c", None) => connection = Some(parse_connection(line_no, value)?),
                ("c", Some(m)) => m.connection = Some(parse_connection(line_no, value)?),
                ("a", None) => match Direction::parse(value) {
                    Some(d) => direction = Some(d),
                    None => other_lines.push(raw.to_string()),
                },
                ("a", Some(m)) => {
                    let (name, arg) = match value.split_once(':') {
                        Some((n, a)) => (n, Some(a)),
                        None => (value, None),
                    };
                    match (name, arg) {
                        ("rtpmap", Some(a)) => m.rtpmaps.push(parse_rtpmap(line_no, a)?),
                        ("fmtp", Some(a)) => {
                            let (pt, params) = a.split_once(' ').unwrap_or((a, ""));
                            // Non-numeric fmtp formats belong to non-RTP media; keep them.
                            match pt.parse::<u8>() {
                                Ok(_) => m
                                    .fmtps
                                    .push((parse_pt(line_no, pt)?, params.trim().to_string())),
                                Err(_) => m.other_attributes.push(format!("a={value}")),
                            }
                        }
                        ("ptime", Some(a)) => {
                            m.ptime = Some(
                                a.trim()
                                    .parse()
                                    .map_err(|_| err(line_no, "ptime is not a number"))?,
                            );
                        }
                        (d, None) if Direction::parse(d).is_some() => {
                            m.direction = Direction::parse(d);
                        }
                        _ => m.other_attributes.push(format!("a={value}")),
                    }
                }
                (_, Some(m)) => m.other_attributes.push(format!("{kind}={value}")),
                (_, None) => other_lines.push(raw.to_string()),
            }
        }
        if !saw_version {
            return Err(err(0, "empty description"));
        }
        let origin = origin.ok_or_else(|| err(0, "no o= line"))?;
        Ok(SessionDescription {
            origin,
            session_name: session_name.unwrap_or_else(|| "-".into()),
            connection,
            direction,
            other_lines,
            media,
        })
    }

    /// The connection address of a media section (media-level, else session-level).
    pub(crate) fn connection_for(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// The direction of a media section (media-level, else session-level, else sendrecv).
    pub(crate) fn direction_for(&self, media: &MediaDescription) -> Direction {
        media.direction.or(self.direction).unwrap_or_default()
    }

    /// The description without `o=`, to tell whether a re-offer/answer changed anything.
    fn body_without_origin(&self) -> String {
        let mut copy = self.clone();
        copy.origin.session_version = 0;
        copy.to_string()
    }
}

fn addr_fields(ip: IpAddr) -> (&'static str, String) {
    match ip {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let (t, a) = addr_fields(self.origin.address);
        let _ = write!(
            out,
            "v=0\r\no={} {} {} IN {t} {a}\r\ns={}\r\n",
            self.origin.username,
            self.origin.session_id,
            self.origin.session_version,
            self.session_name
        );
        if let Some(c) = self.connection {
            let (t, a) = addr_fields(c);
            let _ = write!(out, "c=IN {t} {a}\r\n");
        }
        let has_t = self.other_lines.iter().any(|l| l.starts_with("t="));
        if !has_t {
            out.push_str("t=0 0\r\n");
        }
        for line in &self.other_lines {
            let _ = write!(out, "{line}\r\n");
        }
        if let Some(d) = self.direction {
            let _ = write!(out, "a={}\r\n", d.as_str());
        }
        for m in &self.media {
            let _ = write!(
                out,
                "m={} {} {} {}\r\n",
                m.kind,
                m.port,
                m.proto,
                m.formats.join(" ")
            );
            if let Some(c) = m.connection {
                let (t, a) = addr_fields(c);
                let _ = write!(out, "c=IN {t} {a}\r\n");
            }
            for r in &m.rtpmaps {
                let _ = write!(
                    out,
                    "a=rtpmap:{} {}/{}",
                    r.payload_type, r.encoding, r.clock_rate
                );
                if let Some(ch) = r.channels {
                    let _ = write!(out, "/{ch}");
                }
                out.push_str("\r\n");
            }
            for (pt, params) in &m.fmtps {
                let _ = write!(out, "a=fmtp:{pt} {params}\r\n");
            }
            if let Some(p) = m.ptime {
                let _ = write!(out, "a=ptime:{p}\r\n");
            }
            for line in &m.other_attributes {
                let _ = write!(out, "{line}\r\n");
            }
            if let Some(d) = m.direction {
                let _ = write!(out, "a={}\r\n", d.as_str());
            }
        }
        f.write_str(&out)
    }
}

/// The offer has no codec we can use: answer 488 Not Acceptable Here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no common codec: the offer has no usable G.711 audio stream")]
pub struct NoCommonCodec;

/// What an answer settled for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec both sides speak.
    pub codec: Codec,
    /// Payload type for the codec (the offerer's, which is the static one for G.711 in practice).
    pub payload_type: u8,
    /// Payload type for RFC 4733 telephone-event, when the offer had it.
    pub telephone_event: Option<u8>,
    /// Where the peer says to send media; `None` when on hold by `c=0.0.0.0` or port 0.
    pub remote: Option<SocketAddr>,
    /// Packetization time the peer asked for (we send 20 ms regardless; G.711 peers accept it).
    pub ptime: Option<u32>,
    /// The offer's direction.
    pub remote_direction: Direction,
    /// Our direction in the answer.
    pub local_direction: Direction,
    /// Index of the audio m= section in the offer.
    pub media_index: usize,
}

impl Negotiated {
    /// Whether this offer puts us on hold (RFC 3264 §8.4: the holder offers sendonly or
    /// inactive; RFC 2543's `c=0.0.0.0` and port 0 too).
    pub fn on_hold(&self) -> bool {
        self.remote.is_none() || !self.remote_direction.receives()
    }

    /// Whether we should send media now.
    pub(crate) fn should_send(&self) -> bool {
        self.remote.is_some() && self.local_direction.sends()
    }
}

/// An answer: the description to send and what it settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The description to send.
    pub sdp: SessionDescription,
    /// What it settled for the audio stream.
    pub media: Negotiated,
}

pub(crate) fn telephone_event_pt(m: &MediaDescription) -> Option<u8> {
    m.payload_types().find(|&pt| {
        m.rtpmap(pt).is_some_and(|r| {
            r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == 8000
        })
    })
}

/// The payload type the offer uses for `codec` in this section, if any.
pub(crate) fn codec_pt(m: &MediaDescription, codec: Codec) -> Option<u8> {
    m.payload_types().find(|&pt| match m.rtpmap(pt) {
        Some(r) => Codec::from_name(&r.encoding) == Some(codec) && r.clock_rate == 8000,
        None => Codec::from_static_pt(pt) == Some(codec),
    })
}

/// Answer an offer (RFC 3264 §6): one audio stream with the first codec of `prefs` that the
/// offer carries, telephone-event when offered, every other m= section rejected with port 0.
/// The answer's `o=` is a placeholder for [`OriginVersioning::stamp`].
pub fn negotiate(
    offer: &SessionDescription,
    prefs: &[Codec],
    local_addr: IpAddr,
    port: u16,
) -> Result<Answer, NoCommonCodec> {
    // The first audio RTP section (with a non-zero port) with a codec we take.
    let chosen = offer.media.iter().enumerate().find_map(|(i, m)| {
        if !m.is_rtp_audio() || m.port == 0 {
            return None;
        }
        prefs
            .iter()
            .find_map(|&c| codec_pt(m, c).map(|pt| (c, pt)))
            .map(|(c, pt)| (i, m, c, pt))
    });
    let (index, offered, codec, pt) = chosen.ok_or(NoCommonCodec)?;
    let te = telephone_event_pt(offered);
    let remote_direction = offer.direction_for(offered);
    let local_direction = remote_direction.answer();
    let remote = offer
        .connection_for(offered)
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, offered.port));

    let mut media = Vec::with_capacity(offer.media.len());
    for (i, m) in offer.media.iter().enumerate() {
        if i == index {
            let mut formats = vec![pt.to_string()];
            let mut rtpmaps = vec![RtpMap {
                payload_type: pt,
                encoding: codec.name().into(),
                clock_rate: 8000,
                channels: None,
            }];
            let mut fmtps = Vec::new();
            if let Some(te) = te {
                formats.push(te.to_string());
                rtpmaps.push(RtpMap {
                    payload_type: te,
                    encoding: "telephone-event".into(),
                    clock_rate: 8000,
                    channels: None,
                });
                fmtps.push((te, "0-16".to_string()));
            }
            media.push(MediaDescription {
                kind: "audio".into(),
                port,
                proto: m.proto.clone(),
                formats,
                connection: None,
                rtpmaps,
                fmtps,
                ptime: Some(20),
                direction: Some(local_direction),
                other_attributes: Vec::new(),
            });
        } else {
            // Rejected stream (RFC 3264 §6): same type and formats, port 0.
            media.push(MediaDescription {
                kind: m.kind.clone(),
                port: 0,
                proto: m.proto.clone(),
                formats: m.formats.clone(),
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                direction: None,
                other_attributes: Vec::new(),
            });
        }
    }
    let sdp = SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: 0,
            session_version: 0,
            address: local_addr,
        },
        session_name: "12345".into(),
        connection: Some(local_addr),
        direction: None,
        other_lines: vec!["t=0 0".into()],
        media,
    };
    Ok(Answer {
        sdp,
        media: Negotiated {
            codec,
            payload_type: pt,
            telephone_event: te,
            remote,
            ptime: offered.ptime,
            remote_direction,
            local_direction,
            media_index: index,
        },
    })
}

/// Build an offer of our own (for calls we place, such as transfers, and late-offer INVITEs).
pub fn offer(
    prefs: &[Codec],
    telephone_event_pt: u8,
    local_addr: IpAddr,
    port: u16,
) -> SessionDescription {
    let mut formats: Vec<String> = prefs.iter().map(|c| c.payload_type().to_string()).collect();
    let mut rtpmaps: Vec<RtpMap> = prefs
        .iter()
        .map(|c| RtpMap {
            payload_type: c.payload_type(),
            encoding: c.name().into(),
            clock_rate: 8000,
            channels: None,
        })
        .collect();
    formats.push(telephone_event_pt.to_string());
    rtpmaps.push(RtpMap {
        payload_type: telephone_event_pt,
        encoding: "telephone-event".into(),
        clock_rate: 8000,
        channels: None,
    });
    SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: 0,
            session_version: 0,
            address: local_addr,
        },
        session_name: "12345".into(),
        connection: Some(local_addr),
        direction: None,
        other_lines: vec!["t=0 0".into()],
        media: vec![MediaDescription {
            kind: "audio".into(),
            port,
            proto: "RTP/AVP".into(),
            formats,
            connection: None,
            rtpmaps,
            fmtps: vec![(telephone_event_pt, "0-16".into())],
            ptime: Some(20),
            direction: Some(Direction::SendRecv),
            other_attributes: Vec::new(),
        }],
    }
}

/// Our `o=` line across one call's offers and answers (RFC 3264 §8): one session id, and a version
/// that increases by one whenever what we send differs from what we sent before.
#[derive(Debug, Clone)]
pub struct OriginVersioning {
    session_id: u64,
    version: u64,
    last_body: Option<String>,
}

impl OriginVersioning {
    /// Start with a session id (random or from a clock; the call layer chooses).
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            version: session_id,
            last_body: None,
        }
    }

    /// Set `o=` on a description we are about to send.
    pub fn stamp(&mut self, sdp: &mut SessionDescription) {
        let body = sdp.body_without_origin();
        match &self.last_body {
            Some(previous) if *previous == body => {}
            Some(_) => {
                self.version = self.version.wrapping_add(1);
                self.last_body = Some(body);
            }
            None => self.last_body = Some(body),
        }
        sdp.origin.session_id = self.session_id;
        sdp.origin.session_version = self.version;
    }

    /// The origin version the last description was stamped with.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=carrier 1234 5678 IN IP4 10.0.0.1\r\n\
s=call\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 18 0 8 96 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=fmtp:18 annexb=no\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    fn local() -> IpAddr {
        "192.0.2.7".parse().expect("ip")
    }

    #[test]
    fn parses_a_carrier_offer() {
        let sdp = SessionDescription::parse(OFFER).expect("parse");
        assert_eq!(sdp.origin.session_id, 1234);
        assert_eq!(sdp.origin.session_version, 5678);
        assert_eq!(sdp.connection, Some("10.0.0.1".parse().expect("ip")));
        let m = &sdp.media[0];
        assert_eq!(m.port, 40000);
        assert_eq!(
            m.payload_types().collect::<Vec<_>>(),
            vec![18, 0, 8, 96, 101]
        );
        assert_eq!(m.rtpmap(96).and_then(|r| r.channels), Some(2));
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.ptime, Some(20));
        assert_eq!(sdp.direction_for(m), Direction::SendRecv);
    }

    #[test]
    fn serialization_round_trips() {
        let sdp = SessionDescription::parse(OFFER).expect("parse");
        let text = sdp.to_string();
        assert!(text.ends_with("\r\n"));
        let again = SessionDescription::parse(&text).expect("reparse");
        assert_eq!(sdp, again);
        // \n-only input parses the same.
        let lf = OFFER.replace("\r\n", "\n");
        assert_eq!(SessionDescription::parse(&lf).expect("lf"), sdp);
    }

    #[test]
    fn answer_follows_our_preference_and_offerer_payload_types() {
        let sdp = SessionDescription::parse(OFFER).expect("parse");
        let answer = negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], local(), 20000).expect("answer");
        assert_eq!(answer.media.codec, Codec::Pcma);
        assert_eq!(answer.media.payload_type, 8);
        assert_eq!(answer.media.telephone_event, Some(101));
        assert_eq!(
            answer.media.remote,
            Some("10.0.0.1:40000".parse().expect("addr"))
        );
        assert!(!answer.media.on_hold());
        let text = answer.sdp.to_string();
        assert!(text.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=fmtp:101 0-16\r\n"));
        assert!(text.contains("c=IN IP4 192.0.2.7\r\n"));
        assert!(text.contains("a=sendrecv\r\n"));
        let ulaw = negotiate(&sdp, &[Codec::Pcmu], local(), 20000).expect("answer");
        assert_eq!(ulaw.media.codec, Codec::Pcmu);
        assert_eq!(ulaw.media.payload_type, 0);
    }

    #[test]
    fn dynamic_payload_type_and_no_telephone_event() {
        let text = "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\n\
m=audio 5004 RTP/AVP 97\na=rtpmap:97 pcmu/8000\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        let answer = negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], local(), 20002).expect("answer");
        assert_eq!(answer.media.codec, Codec::Pcmu);
        assert_eq!(answer.media.payload_type, 97);
        assert_eq!(answer.media.telephone_event, None);
        assert!(
            answer
                .sdp
                .to_string()
                .contains("m=audio 20002 RTP/AVP 97\r\n")
        );
    }

    #[test]
    fn no_common_codec_is_an_error() {
        let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        assert_eq!(
            negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], local(), 20000),
            Err(NoCommonCodec)
        );
        // PCMA at the wrong clock rate is not PCMA.
        let text = text.replace("96 opus/48000/2", "96 PCMA/16000");
        let sdp = SessionDescription::parse(&text).expect("parse");
        assert_eq!(
            negotiate(&sdp, &[Codec::Pcma], local(), 20000),
            Err(NoCommonCodec)
        );
        // SRTP is not offered by us.
        let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 5004 RTP/SAVP 0\r\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        assert_eq!(
            negotiate(&sdp, &[Codec::Pcmu], local(), 20000),
            Err(NoCommonCodec)
        );
    }

    #[test]
    fn other_streams_are_rejected_with_port_zero() {
        let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5004 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        let answer = negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], local(), 20000).expect("answer");
        assert_eq!(answer.media.media_index, 1);
        let out = answer.sdp.to_string();
        assert!(out.contains("m=video 0 RTP/AVP 96\r\n"), "{out}");
        assert!(out.contains("m=audio 20000 RTP/AVP 0\r\n"), "{out}");
    }

    #[test]
    fn hold_detection() {
        let sendonly = OFFER.replace("a=sendrecv", "a=sendonly");
        let sdp = SessionDescription::parse(&sendonly).expect("parse");
        let a = negotiate(&sdp, &[Codec::Pcma], local(), 20000).expect("answer");
        assert!(a.media.on_hold());
        assert_eq!(a.media.local_direction, Direction::RecvOnly);
        assert!(!a.media.should_send());
        assert!(a.sdp.to_string().contains("a=recvonly\r\n"));

        let zero = OFFER.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        let sdp = SessionDescription::parse(&zero).expect("parse");
        let a = negotiate(&sdp, &[Codec::Pcma], local(), 20000).expect("answer");
        assert!(a.media.on_hold());
        assert_eq!(a.media.remote, None);

        let inactive = OFFER.replace("a=sendrecv", "a=inactive");
        let sdp = SessionDescription::parse(&inactive).expect("parse");
        let a = negotiate(&sdp, &[Codec::Pcma], local(), 20000).expect("answer");
        assert!(a.media.on_hold());
        assert_eq!(a.media.local_direction, Direction::Inactive);

        // Session-level direction applies when the media has none.
        let session_level = OFFER
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        let sdp = SessionDescription::parse(&session_level).expect("parse");
        let a = negotiate(&sdp, &[Codec::Pcma], local(), 20000).expect("answer");
        assert!(a.media.on_hold());

        // Resuming.
        let sdp = SessionDescription::parse(OFFER).expect("parse");
        let a = negotiate(&sdp, &[Codec::Pcma], local(), 20000).expect("answer");
        assert!(!a.media.on_hold());
        assert!(a.media.should_send());
    }

    #[test]
    fn origin_version_increments_only_on_change() {
        let sdp = SessionDescription::parse(OFFER).expect("parse");
        let mut versioning = OriginVersioning::new(42);
        let mut a1 = negotiate(&sdp, &[Codec::Pcma], local(), 20000)
            .expect("answer")
            .sdp;
        versioning.stamp(&mut a1);
        assert_eq!((a1.origin.session_id, a1.origin.session_version), (42, 42));
        // The same answer again (a refresh re-INVITE): same version.
        let mut a2 = negotiate(&sdp, &[Codec::Pcma], local(), 20000)
            .expect("answer")
            .sdp;
        versioning.stamp(&mut a2);
        assert_eq!(a2.origin.session_version, 42);
        // Hold changes the answer: version + 1.
        let held =
            SessionDescription::parse(&OFFER.replace("a=sendrecv", "a=sendonly")).expect("parse");
        let mut a3 = negotiate(&held, &[Codec::Pcma], local(), 20000)
            .expect("answer")
            .sdp;
        versioning.stamp(&mut a3);
        assert_eq!(a3.origin.session_version, 43);
        assert_eq!(a3.origin.session_id, 42);
        assert!(a3.to_string().contains("o=- 42 43 IN IP4 192.0.2.7\r\n"));
    }

    #[test]
    fn our_offer_parses_and_answers_itself() {
        let ours = offer(&[Codec::Pcma, Codec::Pcmu], 101, local(), 20010);
        let parsed = SessionDescription::parse(&ours.to_string()).expect("parse");
        assert_eq!(parsed, ours);
        let a = negotiate(&parsed, &[Codec::Pcmu, Codec::Pcma], local(), 30000).expect("answer");
        assert_eq!(a.media.codec, Codec::Pcmu);
        assert_eq!(a.media.telephone_event, Some(101));
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n", 1),
            ("v=1\r\n", 1),
            ("v=0\r\nnonsense\r\n", 2),
            ("v=0\r\ns=x\r\n", 0),
            ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", 2),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 999.1.1.1\r\n", 3),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP6 1.1.1.1\r\n", 3),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                3,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP\r\n",
                3,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 300\r\n",
                3,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
                4,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n",
                4,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=ptime:abc\r\n",
                4,
            ),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nxx=1\r\n", 3),
        ];
        for (text, line) in cases {
            let e = SessionDescription::parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }

    /// Found by the `sdp` fuzz target: an attribute whose value looks like a line (`a=v=0`)
    /// came back from serialization as that line (`v=0`), which no longer parsed.
    #[test]
    fn an_attribute_that_looks_like_a_line_stays_an_attribute() {
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nb=AS:64\r\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        let again = SessionDescription::parse(&sdp.to_string()).expect("serialized SDP parses");
        assert_eq!(again, sdp);
        assert_eq!(
            sdp.media[0].other_attributes,
            ["a=v=0", "o=- 1 1 IN IP4 127.0.0.1", "b=AS:64"]
        );
    }

    #[test]
    fn lenient_where_practice_is() {
        // Unknown attributes, b= lines and host-name origins are kept or tolerated.
        let text = "v=0\r\no=- 1 1 IN IP4 sbc.example.net\r\ns=-\r\nc=IN IP4 10.0.0.3\r\n\
b=AS:64\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 7000 RTP/AVP 8\r\nb=TIAS:64000\r\n\
a=silenceSupp:off - - - -\r\na=maxptime:40 \r\n";
        let sdp = SessionDescription::parse(text).expect("parse");
        assert_eq!(sdp.origin.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(sdp.media[0].other_attributes.len(), 3);
        let again = SessionDescription::parse(&sdp.to_string()).expect("reparse");
        assert_eq!(
            again.media[0].other_attributes,
            sdp.media[0].other_attributes
        );
    }
}
