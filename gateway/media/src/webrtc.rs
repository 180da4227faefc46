//! A browser's or app's call leg: ICE-lite, DTLS-SRTP and RTCP around our own RTP session.
//!
//! A WebRTC caller reaches exactly what a phone caller reaches, so its audio goes through the
//! same [`crate::rtp_session::RtpSession`] (jitter buffer, RFC 4733 digits, prompt pacing, media
//! timeout, statistics) as a SIP call's. What WebRTC adds is the transport around it: ICE
//! connectivity checks on the call's UDP port, the DTLS handshake that keys SRTP, SRTP itself,
//! and the RTCP feedback a browser expects. [`WebRtcTransport`] is that layer and nothing more:
//! the RTP session's packets go in plain and come out encrypted for the browser's nominated
//! address; the browser's datagrams go in as they arrived and come out as plain RTP for the
//! session (or not at all: STUN, DTLS and RTCP stay here).
//!
//! ## Why str0m
//!
//! The two sans-IO WebRTC stacks that build here are str0m 0.25 and webrtc-rs's `rtc` 0.21.
//! Both are driven as this crate's cores are (input with the time, `poll_output` until a
//! timeout), so either fits a pacer thread. str0m was chosen because it has what this layer
//! needs as first-class, tested API: ICE-lite (a server on a known address answers checks and
//! never sends any), an RTP mode in which we write our own RTP headers and payloads and read the
//! peer's decrypted packets (so the gateway's RTP session stays the one source of timing), RFC
//! 4733 telephone-event negotiation, and tests against malformed packets. The figures that
//! compare the two (setup CPU, CPU per call-second, build weight, garbage input) are in
//! `benches/webrtc-choice/README.md`.
//!
//! ## What the session sees
//!
//! Negotiation picks one audio codec of ours (PCMA or PCMU, in our order of preference; every
//! browser offers both) and telephone-event at 8 kHz when offered; [`Accepted::negotiated`]
//! is what the RTP session is configured with, as a SIP call's is from its SDP. The session's
//! own RTCP is not sent (str0m reports for the stream it carries); the peer's RTCP is consumed
//! here. The session's SSRC is replaced by the one the answer announced.
//!
//! Time and randomness come in from the caller (`now`; the DTLS certificate is made once per
//! process by [`WebRtcSettings::new`], outside any call).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::{Codec as Str0mCodec, FormatParams};
use str0m::media::{Frequency, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::Codec;
use crate::sdp::{Direction, Negotiated, SessionDescription, codec_pt, telephone_event_pt};

/// The largest SDP offer taken: a browser's audio-only offer is 2-4 KiB, one with video and a
/// data channel under 10 KiB.
pub const MAX_OFFER_BYTES: usize = 32 * 1024;

/// The payload type we ask for telephone-event when the offer has it at 8 kHz under another
/// number: the offer's number is used (str0m answers with the offer's numbers).
const TELEPHONE_EVENT_PT: u8 = 101;

/// What every WebRTC call of a process shares: the DTLS certificate (made once: a key pair per
/// call would cost a handshake's worth of CPU) and the crypto provider.
#[derive(Clone)]
pub struct WebRtcSettings {
    cert: str0m::config::DtlsCert,
    crypto: Arc<str0m::crypto::CryptoProvider>,
    /// Codecs in our order of preference (PCMA and PCMU only are carried).
    pub codecs: Vec<Codec>,
}

impl std::fmt::Debug for WebRtcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcSettings")
            .field("codecs", &self.codecs)
            .finish_non_exhaustive()
    }
}

/// Why an offer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    /// Longer than [`MAX_OFFER_BYTES`].
    #[error("the offer is larger than {MAX_OFFER_BYTES} bytes")]
    TooLarge,
    /// Not an SDP offer str0m or our parser can read.
    #[error("the offer is not valid SDP: {0}")]
    Invalid(String),
    /// No audio section offers a codec we carry.
    #[error("the offer has no audio with a codec we take (PCMA, PCMU)")]
    NoCommonCodec,
    /// The offer lacks what WebRTC requires (ICE credentials, a DTLS fingerprint).
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
}

impl WebRtcSettings {
    /// A certificate for this process and the crypto provider; `None` when the provider cannot
    /// make a certificate.
    pub fn new(codecs: &[Codec]) -> Option<Self> {
        let crypto = str0m::crypto::from_feature_flags();
        let cert = crypto.dtls_provider.generate_certificate()?;
        let codecs = codecs
            .iter()
            .copied()
            .filter(|c| matches!(c, Codec::Pcma | Codec::Pcmu))
            .collect();
        Some(Self {
            cert,
            crypto: Arc::new(crypto),
            codecs,
        })
    }
}

/// An accepted offer: the transport, the SDP answer for the browser and what the RTP session
/// is to be configured with.
#[derive(Debug)]
pub struct Accepted {
    /// The call leg's transport, for the pacer.
    pub transport: WebRtcTransport,
    /// The SDP answer for the browser (our ICE credentials, fingerprint and candidate).
    pub answer: String,
    /// The RTP session's codec and payload types.
    pub negotiated: Negotiated,
}

/// What the transport hands out (see the crate's poll convention).
#[derive(Debug, PartialEq, Eq)]
pub enum TransportOutput {
    /// A datagram for the peer.
    Transmit {
        /// The peer's address.
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// A decrypted RTP packet of the peer, for the RTP session, as from `from`.
    Rtp {
        /// Where it came from (the address ICE checked).
        from: SocketAddr,
        /// RTP header (12 bytes, no extensions) and payload.
        data: Vec<u8>,
    },
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The peer is gone (ICE consent lost, DTLS closed or failed): end the call.
    Gone,
    /// Nothing more now; come back at this instant or with input.
    Timeout(Instant),
}

/// One WebRTC call leg's transport (see the module doc).
pub struct WebRtcTransport {
    rtc: Rtc,
    mid: Option<Mid>,
    /// Where our socket is (the candidate's base), for str0m's `Receive`.
    local: SocketAddr,
    /// Where the datagram being handled came from: the source of the RTP it yields.
    from: Option<SocketAddr>,
    /// Our RTP sequence numbers, extended with their rollover count.
    seq: Option<(u16, u64)>,
    out: VecDeque<TransportOutput>,
    next_timeout: Instant,
    connected: bool,
    gone: bool,
    /// Datagrams str0m refused (garbage on the port): counted, never fatal.
    pub refused: u64,
}

impl std::fmt::Debug for WebRtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcTransport")
            .field("local", &self.local)
            .field("connected", &self.connected)
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

/// Our choice for an offer: the first codec of ours that an audio section offers, and
/// whether telephone-event at 8 kHz is offered there.
fn choose(offer: &SessionDescription, prefs: &[Codec]) -> Option<(Codec, Option<u8>)> {
    let audio: Vec<_> = offer
        .media
        .iter()
        .filter(|m| m.kind == "audio" && m.port != 0)
        .collect();
    let codec = prefs
        .iter()
        .copied()
        .find(|&c| audio.iter().any(|m| codec_pt(m, c).is_some()))?;
    Some((codec, audio.iter().find_map(|m| telephone_event_pt(m))))
}

/// An offer that passed [`check_offer`]: what [`WebRtcTransport::accept`] builds on.
struct Screened {
    codec: Codec,
    telephone_event: Option<u8>,
    offer: SdpOffer,
}

fn screen(offer: &str, codecs: &[Codec]) -> Result<Screened, OfferError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge);
    }
    let parsed =
        SessionDescription::parse(offer).map_err(|e| OfferError::Invalid(e.to_string()))?;
    let (codec, telephone_event) = choose(&parsed, codecs).ok_or(OfferError::NoCommonCodec)?;
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::Invalid(e.to_string()))?;
    Ok(Screened {
        codec,
        telephone_event,
        offer,
    })
}

/// Whether [`WebRtcTransport::accept`] could answer `offer` with `settings`' codecs: too large,
/// malformed and codec-less offers are refused here, before a call takes a line or a port.
pub fn check_offer(offer: &str, settings: &WebRtcSettings) -> Result<(), OfferError> {
    screen(offer, &settings.codecs).map(|_| ())
}

impl WebRtcTransport {
    /// Answer `offer` for a call whose UDP socket is at `local`, advertised to the browser as
    /// `advertised` (the address a browser behind NAT reaches us at; `local` when none).
    pub fn accept(
        now: Instant,
        offer: &str,
        settings: &WebRtcSettings,
        local: SocketAddr,
        advertised: SocketAddr,
    ) -> Result<Accepted, OfferError> {
        let Screened {
            codec,
            telephone_event: te,
            offer: sdp_offer,
        } = screen(offer, &settings.codecs)?;

        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(settings.cert.clone())
            .set_crypto_provider(Arc::clone(&settings.crypto))
            .set_stats_interval(None)
            .clear_codecs();
        let codecs = config.codec_config();
        match codec {
            Codec::Pcma => codecs.enable_pcma(true, false),
            _ => codecs.enable_pcmu(true, false),
        }
        codecs.add_config(
            te.unwrap_or(TELEPHONE_EVENT_PT).into(),
            None,
            Str0mCodec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(now);
        let candidate = Candidate::host(advertised, "udp")
            .map_err(|e| OfferError::Unanswerable(format!("our candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(sdp_offer)
            .map_err(|e| OfferError::Unanswerable(e.to_string()))?;
        let answer = answer.to_sdp_string();
        let negotiated = negotiated_from_answer(&answer, codec)?;
        let mut t = WebRtcTransport {
            rtc,
            mid: None,
            local,
            from: None,
            seq: None,
            out: VecDeque::new(),
            next_timeout: now,
            connected: false,
            gone: false,
            refused: 0,
        };
        t.drain();
        Ok(Accepted {
            transport: t,
            answer,
            negotiated,
        })
    }

    /// A datagram that arrived at `now` from `from` on the call's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let contents = match DatagramRecv::try_from(data) {
            Ok(c) => c,
            Err(_) => {
                self.refused += 1;
                return;
            }
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.local,
                contents,
            },
        );
        self.from = Some(from);
        if self.rtc.handle_input(input).is_err() {
            self.refused += 1;
        }
        self.drain();
    }

    /// The time has come ([`TransportOutput::Timeout`]). Earlier calls do nothing: the pacer
    /// visits a call every 20 ms for its RTP, and str0m's timers (ICE consent, RTCP, DTLS
    /// retransmits) are due far less often, so this keeps those visits cheap.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_timeout {
            return;
        }
        if self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.gone();
        }
        self.drain();
    }

    /// One of our RTP packets (header and payload, as the RTP session made it) to encrypt and
    /// send. Dropped before the connection is up, as a phone's media before the answer.
    pub fn send_rtp(&mut self, now: Instant, packet: &[u8]) {
        let (Some(mid), true) = (self.mid, self.connected) else {
            return;
        };
        let Ok(rtp) = rtp_rs::RtpReader::new(packet) else {
            return;
        };
        let seq16 = u16::from(rtp.sequence_number());
        let ext = match self.seq {
            None => u64::from(seq16),
            Some((last, ext)) => {
                let diff = seq16.wrapping_sub(last) as i16;
                ext.saturating_add_signed(i64::from(diff))
            }
        };
        self.seq = Some((seq16, ext));
        let pt = rtp.payload_type();
        let marker = rtp.mark();
        let time = rtp.timestamp();
        let payload = rtp.payload().to_vec();
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        let seq_no: SeqNo = ext.into();
        stream.write_rtp(RtpWrite::new(pt.into(), seq_no, time, now, payload).marker(marker));
        self.drain();
    }

    /// Stop: str0m closes DTLS; nothing more comes out but what that sends.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.drain();
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The next output, ending with a [`TransportOutput::Timeout`] each time it is drained.
    pub fn poll_output(&mut self) -> TransportOutput {
        self.out
            .pop_front()
            .unwrap_or(TransportOutput::Timeout(self.next_timeout))
    }

    fn gone(&mut self) {
        if !self.gone {
            self.gone = true;
            self.out.push_back(TransportOutput::Gone);
        }
    }

    /// Take everything str0m has, up to its next timeout.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.out.push_back(TransportOutput::Transmit {
                    to: t.destination,
                    data: t.contents.into(),
                }),
                Ok(Output::Event(ev)) => self.on_event(ev),
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC transport failed");
                    self.gone();
                    // str0m is no longer usable; wake again in a while only to be dropped.
                    return;
                }
            }
            if !self.rtc.is_alive() {
                self.gone();
                return;
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected => {
                self.connected = true;
                self.out.push_back(TransportOutput::Connected);
            }
            Event::MediaAdded(m) => self.mid = Some(m.mid),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.gone(),
            Event::RtpPacket(p) => {
                let Some(from) = self.from else {
                    return;
                };
                let h = &p.header;
                let mut data = Vec::with_capacity(12 + p.payload.len());
                data.push(0x80);
                data.push((*h.payload_type & 0x7f) | if h.marker { 0x80 } else { 0 });
                data.extend_from_slice(&h.sequence_number.to_be_bytes());
                data.extend_from_slice(&h.timestamp.to_be_bytes());
                data.extend_from_slice(&(*h.ssrc).to_be_bytes());
                data.extend_from_slice(&p.payload);
                self.out.push_back(TransportOutput::Rtp { from, data });
            }
            _ => {}
        }
    }
}

/// What the RTP session is configured with, from our answer: `codec` at the payload type the
/// answer gives it, telephone-event when the answer kept it.
fn negotiated_from_answer(answer: &str, codec: Codec) -> Result<Negotiated, OfferError> {
    let parsed = SessionDescription::parse(answer)
        .map_err(|e| OfferError::Unanswerable(format!("our answer does not parse: {e}")))?;
    let (index, m) = parsed
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind == "audio" && m.port != 0)
        .ok_or(OfferError::NoCommonCodec)?;
    let pt = codec_pt(m, codec).ok_or(OfferError::NoCommonCodec)?;
    let te = telephone_event_pt(m);
    let local_direction = parsed.direction_for(m);
    Ok(Negotiated {
        codec,
        payload_type: pt,
        telephone_event: te,
        // The transport sends where ICE nominated, whatever the session names; the session
        // only needs a peer to send at all (RFC 8839's placeholder, `c=0.0.0.0`, port 9), and
        // latches the browser's address from its first packet.
        remote: Some(SocketAddr::from(([0, 0, 0, 0], 9))),
        ptime: Some(20),
        remote_direction: Direction::SendRecv,
        local_direction,
        media_index: index,
    })
}
