//! Transfer to a human agent as a back-to-back user agent (B2BUA).
//!
//! The caller's dialog stays ours; the agent gets a second call leg that we place
//! ([`sip::Endpoint::invite`]) with our own media port pair. Audio is relayed through the
//! call task as decoded 20 ms frames: each side's played-out frame is queued on the other side's
//! paced sender. That costs one extra G.711 decode/encode per frame but keeps both legs
//! independent (different codecs, our jitter buffer on both, RTCP figures per leg) and lets the
//! gateway keep recording and hanging up either side, which a re-INVITE that points the caller's
//! media straight at the agent would not.
//!
//! The agent sees who waits (the caller's number as From's display name) and what the flow
//! collected so far, as JSON in an `X-12345-Order-Draft` header, so nobody has to ask again.
//! While the agent's phone rings the caller hears a ringback tone (450 Hz, 1 s on and 4 s off,
//! as Chinese networks play it) rather than silence.

use std::collections::BTreeMap;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::events::{BridgeFigures, CallInput, LegInput, LegState};
use crate::runtime::rtp_socket::{BoundPorts, MediaCommand, MediaHandle};
use media::Codec;
use media::Frame;
use media::prompt::{EncodedPrompt, PlayItem, Player};
use sip::{CallId, CommandError, Transport};

/// The header that carries the order draft to the agent.
pub const DRAFT_HEADER: &str = "X-12345-Order-Draft";

/// Longest draft we put in a header: a UDP INVITE must stay well under the path MTU's
/// fragmentation trouble, and an agent's screen needs the gist, not everything.
const DRAFT_MAX_BYTES: usize = 1500;

/// Where an agent URI sends the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub uri: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

impl AgentTarget {
    /// `sip:agent@pbx.example:5070;transport=tcp` → host, port (5060 when absent), transport.
    /// The URI is parsed by [`sip::Uri`], the same parser the INVITE's Request-URI will meet.
    pub fn parse(uri: &str) -> Result<AgentTarget, String> {
        let uri = uri.trim();
        let parsed = sip::Uri::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
        if !parsed.scheme().eq_ignore_ascii_case("sip") {
            return Err(format!("{uri:?} is not a sip: URI"));
        }
        let host = parsed
            .host()
            .ok_or_else(|| format!("{uri:?} has no usable host"))?;
        let transport = match parsed.param("transport") {
            None => Transport::Udp,
            Some(Some(t)) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
            Some(Some(t)) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
            Some(other) => {
                return Err(format!(
                    "{uri:?}: transport {:?} is not supported",
                    other.unwrap_or_default()
                ));
            }
        };
        Ok(AgentTarget {
            uri: uri.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: parsed.port().unwrap_or(5060),
            transport,
        })
    }

    /// The address to send to (a DNS lookup for names; no SRV/NAPTR: agents are configured by
    /// address or by a name with an A record).
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?;
        addrs
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// The order draft for the agent: what the flow collected, the call and the orders made so far.
/// Compact JSON (no raw line breaks can reach the header); long values are cut so the whole
/// stays under [`DRAFT_MAX_BYTES`].
pub fn draft_header(
    sip_call_id: &str,
    context: &BTreeMap<String, String>,
    orders: &[String],
) -> String {
    let mut per_value = 400usize;
    loop {
        let vars: BTreeMap<&str, String> = context
            .iter()
            .map(|(k, v)| (k.as_str(), cut(v, per_value)))
            .collect();
        let draft = serde_json::json!({
            "call_id": sip_call_id,
            "orders": orders,
            "vars": vars,
        });
        let text = draft.to_string();
        if text.len() <= DRAFT_MAX_BYTES || per_value <= 16 {
            return text;
        }
        per_value /= 2;
    }
}

fn cut(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

/// China's ringback tone (450 Hz, 1 s on, 4 s off) for `total`.
pub fn ringback(codec: Codec, total: Duration) -> Player {
    let tone: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (6000.0 * (2.0 * std::f32::consts::PI * 450.0 * t).sin()) as i16
        })
        .collect();
    let tone = Arc::new(EncodedPrompt::encode(&tone, codec));
    let cycles = total.as_secs().div_ceil(5).max(1);
    let mut items = Vec::new();
    for _ in 0..cycles {
        items.push(PlayItem::Clip(Arc::clone(&tone)));
        items.push(PlayItem::Silence(Duration::from_secs(4)));
    }
    Player::new(codec, items)
}

/// Hold music for callers waiting in a queue: a soft, slow four-note figure (C E G E, 0.4 s
/// each at about -22 dBFS, then 1.4 s of quiet), made once per codec, looped for an hour (a
/// queue's longest wait gives up long before). Synthesized so the gateway needs no licensed
/// recording; a flow may play its own instead.
pub fn hold_music(codec: Codec) -> Player {
    Player::new(codec, hold_music_items(codec))
}

/// The items of [`hold_music`], to follow an announcement in one player.
pub fn hold_music_items(codec: Codec) -> Vec<PlayItem> {
    type PerCodec = std::sync::Mutex<Vec<(Codec, Arc<EncodedPrompt>)>>;
    static FIGURES: std::sync::OnceLock<PerCodec> = std::sync::OnceLock::new();
    let figure = {
        let cache = FIGURES.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.iter().find(|(c, _)| *c == codec) {
            Some((_, f)) => Arc::clone(f),
            None => {
                let f = Arc::new(EncodedPrompt::encode(&hold_figure(), codec));
                cache.push((codec, Arc::clone(&f)));
                f
            }
        }
    };
    let cycle = figure.duration() + HOLD_PAUSE;
    let cycles = (3600 / cycle.as_secs().max(1)).max(1);
    let mut items = Vec::with_capacity(2 * cycles as usize);
    for _ in 0..cycles {
        items.push(PlayItem::Clip(Arc::clone(&figure)));
        items.push(PlayItem::Silence(HOLD_PAUSE));
    }
    items
}

const HOLD_PAUSE: Duration = Duration::from_millis(1400);

/// C5, E5, G5, E5: 0.4 s each with a 20 ms fade in and out (no clicks).
fn hold_figure() -> Vec<i16> {
    const NOTE: usize = 3200;
    const FADE: usize = 160;
    [523.25f32, 659.25, 783.99, 659.25]
        .iter()
        .flat_map(|&hz| {
            (0..NOTE).map(move |i| {
                let t = i as f32 / 8000.0;
                let env = (i.min(NOTE - 1 - i) as f32 / FADE as f32).min(1.0);
                (2600.0 * env * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
            })
        })
        .collect()
}

/// Whether a frame carries sound rather than silence or comfort noise (mean level above about
/// -45 dBFS). Counted per direction so a bridge that carries only silence shows in the record.
pub fn voiced(frame: &Frame) -> bool {
    let sum: u64 = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum();
    sum / frame.len() as u64 > 180
}

/// Queue a frame on the other side's paced sender and count it. `try_send`: a stalled side
/// loses frames rather than holding up this one.
pub fn relay(to: &MediaHandle, frame: Box<Frame>, sent: &mut u64, voiced_frames: &mut u64) {
    let loud = voiced(&frame);
    if to.commands.try_send(MediaCommand::Frame(frame)).is_ok() {
        *sent += 1;
        if loud {
            *voiced_frames += 1;
        }
    }
}

/// The agent leg of a transfer.
#[derive(Debug)]
pub struct AgentLeg {
    pub target: AgentTarget,
    pub state: LegState,
    /// The leg's id once the SIP layer has taken the INVITE.
    pub call: Option<CallId>,
    /// SIP reported the leg over: nothing left to hang up.
    pub terminated: bool,
    /// Give up ringing at this instant.
    pub deadline: Instant,
    pub started: Instant,
    pub answered: Option<Instant>,
    /// The port pair our offer named, until the answer lets the media start.
    pub ports: Option<BoundPorts>,
    pub media: Option<MediaHandle>,
    pub codec: Codec,
    reply: Option<oneshot::Receiver<Result<CallId, CommandError>>>,
    /// SIP events of the leg, routed here by the call manager once registered.
    pub events_tx: mpsc::UnboundedSender<CallInput>,
    events: mpsc::UnboundedReceiver<CallInput>,
    pub figures: BridgeFigures,
}

impl AgentLeg {
    pub fn new(
        target: AgentTarget,
        ports: BoundPorts,
        codec: Codec,
        reply: oneshot::Receiver<Result<CallId, CommandError>>,
        ring_timeout: Duration,
    ) -> AgentLeg {
        let (events_tx, events) = mpsc::unbounded_channel();
        let now = Instant::now();
        AgentLeg {
            figures: BridgeFigures {
                agent: target.uri.clone(),
                ..BridgeFigures::default()
            },
            target,
            state: LegState::Dialing,
            call: None,
            terminated: false,
            deadline: now + ring_timeout,
            started: now,
            answered: None,
            ports: Some(ports),
            media: None,
            codec,
            reply: Some(reply),
            events_tx,
            events,
        }
    }

    /// The next thing that happened on the leg.
    pub async fn next(&mut self) -> LegInput {
        let reply = async {
            match self.reply.as_mut() {
                Some(r) => r.await,
                None => pending().await,
            }
        };
        let media = async {
            match self.media.as_mut() {
                Some(m) => m.events.recv().await,
                None => pending().await,
            }
        };
        tokio::select! {
            r = reply => {
                self.reply = None;
                LegInput::Placed(match r {
                    Ok(Ok(id)) => Ok(id),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the SIP service stopped".to_owned()),
                })
            }
            ev = self.events.recv() => match ev {
                Some(CallInput::Sip(ev)) => LegInput::Sip(ev),
                // Only the caller's own channel carries shutdowns; nothing else comes here.
                Some(CallInput::Shutdown) | None => pending().await,
            },
            ev = media => match ev {
                Some(ev) => LegInput::Media(ev),
                None => {
                    self.media = None;
                    LegInput::MediaGone
                }
            },
        }
    }

    /// Whether the leg still waits for the agent to pick up.
    pub fn ringing(&self) -> bool {
        matches!(self.state, LegState::Dialing | LegState::Ringing)
    }
}

/// The next event of the agent leg, or never when there is none.
pub async fn next_leg(leg: &mut Option<AgentLeg>) -> LegInput {
    match leg.as_mut() {
        Some(l) => l.next().await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_uris_give_host_port_and_transport() {
        let t = AgentTarget::parse("sip:agent@127.0.0.1:5070").expect("parse");
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("127.0.0.1", 5070, Transport::Udp)
        );
        let t = AgentTarget::parse("sip:queue-7@pbx.example;transport=TCP").expect("parse");
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("pbx.example", 5060, Transport::Tcp)
        );
        let t = AgentTarget::parse("sip:[::1]:5080").expect("parse");
        assert_eq!((t.host.as_str(), t.port), ("::1", 5080));
        assert!(AgentTarget::parse("tel:+8612345").is_err());
        assert!(AgentTarget::parse("sip:agent@").is_err());
        let e = AgentTarget::parse("sip:agent@host:99999").expect_err("port");
        assert!(e.contains("port out of range"), "{e}");
        assert!(AgentTarget::parse("sip:a@h;transport=sctp").is_err());
    }

    #[test]
    fn the_draft_is_one_line_of_json_and_bounded() {
        let mut ctx = BTreeMap::new();
        ctx.insert("description".to_owned(), "路灯坏了\r\n两天了".to_owned());
        ctx.insert("district".to_owned(), "武昌区".to_owned());
        let h = draft_header("abc@host", &ctx, &["2611230001234".to_owned()]);
        assert!(!h.contains('\r') && !h.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&h).expect("json");
        assert_eq!(v["vars"]["district"], "武昌区");
        assert_eq!(v["vars"]["description"], "路灯坏了\r\n两天了");
        assert_eq!(v["orders"][0], "2611230001234");

        ctx.insert("long".to_owned(), "很".repeat(5000));
        ctx.insert("long2".to_owned(), "x".repeat(5000));
        let h = draft_header("abc@host", &ctx, &[]);
        assert!(h.len() <= DRAFT_MAX_BYTES, "{} bytes", h.len());
        let v: serde_json::Value = serde_json::from_str(&h).expect("json");
        assert_eq!(v["vars"]["district"], "武昌区");
    }

    #[test]
    fn ringback_is_one_second_of_tone_in_five() {
        let mut p = ringback(Codec::Pcmu, Duration::from_secs(10));
        let mut frames = Vec::new();
        while let Some(f) = p.next_frame() {
            frames.push(f);
        }
        // Two cycles of 50 tone frames and 200 silent ones.
        assert_eq!(frames.len(), 500);
        let decoded = |f: &Vec<u8>| -> Frame {
            let mut out = [0i16; 160];
            for (o, b) in out.iter_mut().zip(f) {
                *o = Codec::Pcmu.decode_sample(*b);
            }
            out
        };
        assert!(frames[..50].iter().all(|f| voiced(&decoded(f))));
        assert!(frames[50..250].iter().all(|f| !voiced(&decoded(f))));
        assert!(voiced(&decoded(&frames[250])));
    }

    #[test]
    fn silence_is_not_voiced() {
        assert!(!voiced(&[0; 160]));
        assert!(!voiced(&[60; 160]));
        assert!(voiced(&[2000; 160]));
    }
}
