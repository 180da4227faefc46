//! End-to-end calls that check the media, not only the signalling, with real SIP user agents.
//!
//! SIPp (Debian's `sip-tester`) places most calls with the scenarios in `tests/sipp/`
//! (`caller-until-bye.xml` offers PCMU + RFC 4733 on the test's own RTP socket and waits for the
//! gateway's BYE, answering it 200; `caller-info-until-bye.xml` also presses a key by SIP INFO;
//! `caller-hangs-up.xml` hangs up itself), and the test is the caller's phone on that socket: it
//! keeps every RTP packet the gateway sends and speaks in 20 ms packets of its own (silence,
//! DTMF tones, a voice clip, RFC 4733 events, garbage). baresip (Debian's `baresip`) is a whole
//! softphone with its own RTP stack: it hears with its `sndfile` recorder, speaks from a WAV file
//! and presses keys by RFC 4733.
//!
//! - the greeting is heard whole: the decoded audio has the prompt's duration (to the frame),
//!   level and loudness contour; a goodbye before the flow's BYE is heard to its last frame;
//! - RFC 4733, in-band tones and SIP INFO each select a menu option, seen in the order the option
//!   submits (and in the gateway's log, which names the path); a key sent both as tones and as
//!   RFC 4733 counts once;
//! - a voice message is recorded: the WAV exists, is 8 kHz mono 16-bit, holds the caller's clip
//!   (duration, level and contour), and the order and the call record reference it; a caller who
//!   hangs up after the message leaves it in the callback order;
//! - calls the flow ends are ended by the gateway's BYE: SIPp must receive it and answer 200, and
//!   baresip reports the session reset by the peer;
//! - garbage datagrams on the RTP and RTCP ports, from the caller's own address and from another
//!   one, change nothing: the prompt keeps coming from the same port, a key still selects an
//!   option, none of the garbage counts as media and nothing is sent to the stranger.
//!
//! The flows are the test's own (a temporary flows directory whose `prompts` is the shipped
//! prompts directory), so that each call does one thing and ends by itself. Missing tools fail
//! the tests (`scripts/setup.sh --test` installs them); nothing is skipped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use support::{Gateway, GatewayOptions, free_port, sipp};

// ---------------------------------------------------------------------------------------------
// G.711 mu-law (ITU-T G.711), written here independently of the gateway's codec.

fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

// ---------------------------------------------------------------------------------------------
// Audio measurements on 8 kHz PCM.

const FRAME: usize = 160;
/// A 20 ms frame louder than this RMS (about -40 dBFS) is sound, not silence.
const ACTIVE_RMS: f64 = 330.0;

fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// RMS of each whole 20 ms frame.
fn envelope(x: &[i16]) -> Vec<f64> {
    x.chunks_exact(FRAME).map(rms).collect()
}

/// First and last active frame (inclusive), if any.
fn active_span(env: &[f64]) -> Option<(usize, usize)> {
    let first = env.iter().position(|&e| e > ACTIVE_RMS)?;
    let last = env.iter().rposition(|&e| e > ACTIVE_RMS)?;
    Some((first, last))
}

/// Pearson correlation of two equally long series.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 {
        return 0.0;
    }
    cov / (va.sqrt() * vb.sqrt())
}

/// Follow `got` through `reference` in chunks of half a second, each aligned on its own (the
/// first within `max_start_shift` frames, later ones within 4 frames of the previous one), as a
/// softphone's jitter buffer may drop, repeat or delay a frame. Returns each chunk's correlation
/// (1.0 for a chunk that is silent in both).
fn follow(got: &[f64], reference: &[f64], max_start_shift: usize) -> Vec<f64> {
    const CHUNK: usize = 25;
    let mut out = Vec::new();
    let mut shift = 0usize;
    for (k, chunk) in got.chunks_exact(CHUNK).enumerate() {
        let range = if k == 0 {
            0..=max_start_shift
        } else {
            shift.saturating_sub(4)..=shift + 4
        };
        let mut best: Option<(usize, f64)> = None;
        for s in range {
            let at = k * CHUNK + s;
            let Some(r) = reference.get(at..at + CHUNK) else {
                continue;
            };
            let c = if chunk.iter().chain(r).all(|&e| e <= ACTIVE_RMS) {
                1.0
            } else {
                correlation(chunk, r)
            };
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((s, c));
            }
        }
        let Some((s, c)) = best else { break };
        shift = s;
        out.push(c);
    }
    out
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Share of a frame's energy at `freq` (Goertzel), 0 to about 1.
fn tone_share(x: &[i16], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    if energy <= 0.0 {
        return 0.0;
    }
    2.0 * power / (x.len() as f64 * energy)
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{} is not a readable WAV: {e}", path.display()));
    let spec = reader.spec();
    let samples = reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: bad samples: {e}", path.display()));
    (spec, samples)
}

fn shipped_prompt(rel: &str) -> Vec<i16> {
    let path = flows_src().join(rel);
    let (spec, samples) = read_wav(&path);
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (8000, 1, 16),
        "{rel} is expected to be 8 kHz mono 16-bit"
    );
    samples
}

/// The two tones of a DTMF key for `ms` milliseconds, each at about -9 dBFS.
fn dtmf_tone(key: char, ms: usize) -> Vec<i16> {
    let (row, col) = match key {
        '1' => (697.0, 1209.0),
        '2' => (697.0, 1336.0),
        '3' => (697.0, 1477.0),
        '4' => (770.0, 1209.0),
        '5' => (770.0, 1336.0),
        '6' => (770.0, 1477.0),
        '7' => (852.0, 1209.0),
        '8' => (852.0, 1336.0),
        '9' => (852.0, 1477.0),
        '*' => (941.0, 1209.0),
        '0' => (941.0, 1336.0),
        '#' => (941.0, 1477.0),
        other => panic!("no DTMF key {other}"),
    };
    (0..ms * 8)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let v = 0.35 * (2.0 * std::f64::consts::PI * row * t).sin()
                + 0.35 * (2.0 * std::f64::consts::PI * col * t).sin();
            (v * 32767.0 * 0.5) as i16
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The caller's phone: one RTP socket, paced sending, everything received kept.

/// An RTP packet the phone received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    from: SocketAddr,
    payload_type: u8,
    seq: u16,
    payload: Vec<u8>,
}

/// What the phone sends, one RTP packet per 20 ms.
#[derive(Debug, Clone)]
enum Outgoing {
    /// 160 mu-law bytes.
    Audio(Vec<u8>),
    /// One RFC 4733 packet; `first` starts an event (marker bit, new event timestamp).
    Event {
        code: u8,
        end: bool,
        duration: u16,
        first: bool,
    },
}

#[derive(Debug, Default)]
struct PhoneState {
    received: Vec<Received>,
    queue: VecDeque<Outgoing>,
    /// The gateway's RTP address (where its first RTP packet came from).
    peer: Option<SocketAddr>,
    /// RTP packets sent (audio, silence and events).
    sent: u64,
    /// The call is over: send nothing more.
    hung_up: bool,
    /// RTP packets that arrived at the address the SDP names, when the phone is behind NAT.
    at_signalled: u64,
}

const PT_PCMU: u8 = 0;
const PT_EVENT: u8 = 101;

struct Phone {
    socket: Arc<UdpSocket>,
    /// Behind NAT: the socket the SDP names, which the phone never sends from.
    signalled: Option<Arc<UdpSocket>>,
    state: Arc<Mutex<PhoneState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Phone {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Phone {
    async fn new() -> Phone {
        Self::start(false).await
    }

    /// A phone behind NAT: its SDP names one address (where nothing is ever sent from) and its
    /// media comes from another, as a NAT maps it.
    async fn behind_nat() -> Phone {
        Self::start(true).await
    }

    async fn start(nat: bool) -> Phone {
        let socket = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind the phone's RTP socket"),
        );
        let state = Arc::new(Mutex::new(PhoneState::default()));
        let receiver = {
            let (socket, state) = (Arc::clone(&socket), Arc::clone(&state));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let Some(packet) = parse_rtp(&buf[..n], from) else {
                        continue;
                    };
                    let mut s = state.lock().expect("phone state");
                    s.peer.get_or_insert(from);
                    s.received.push(packet);
                }
            })
        };
        let sender = {
            let (socket, state) = (Arc::clone(&socket), Arc::clone(&state));
            tokio::spawn(async move {
                let ssrc: u32 = 0x1234_5678;
                let mut seq: u16 = 40_000;
                let mut timestamp: u32 = 3_000_000;
                let mut event_timestamp = timestamp;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                // A late test task sends what it owes at once; the jitter buffer takes bursts.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    tick.tick().await;
                    let (peer, next) = {
                        let mut s = state.lock().expect("phone state");
                        let Some(peer) = s.peer.filter(|_| !s.hung_up) else {
                            continue;
                        };
                        let next = s
                            .queue
                            .pop_front()
                            .unwrap_or_else(|| Outgoing::Audio(vec![0xFF; FRAME]));
                        s.sent += 1;
                        (peer, next)
                    };
                    let packet = match next {
                        Outgoing::Audio(payload) => {
                            rtp_packet(PT_PCMU, false, seq, timestamp, ssrc, &payload)
                        }
                        Outgoing::Event {
                            code,
                            end,
                            duration,
                            first,
                        } => {
                            if first {
                                event_timestamp = timestamp;
                            }
                            let d = duration.to_be_bytes();
                            // RFC 4733 2.3: event, E bit + volume (-10 dBm0), duration.
                            let payload = [code, (u8::from(end) << 7) | 10, d[0], d[1]];
                            rtp_packet(PT_EVENT, first, seq, event_timestamp, ssrc, &payload)
                        }
                    };
                    let _ = socket.send_to(&packet, peer).await;
                    seq = seq.wrapping_add(1);
                    timestamp = timestamp.wrapping_add(FRAME as u32);
                }
            })
        };
        let mut tasks = vec![receiver, sender];
        let mut signalled = None;
        if nat {
            let decoy = Arc::new(
                UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("bind the signalled RTP socket"),
            );
            let (sock, state) = (Arc::clone(&decoy), Arc::clone(&state));
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                        continue;
                    };
                    if parse_rtp(&buf[..n], from).is_some() {
                        let mut s = state.lock().expect("phone state");
                        s.peer.get_or_insert(from);
                        s.at_signalled += 1;
                    }
                }
            }));
            signalled = Some(decoy);
        }
        Phone {
            socket,
            signalled,
            state,
            tasks,
        }
    }

    fn hang_up(&self) {
        self.state.lock().expect("phone state").hung_up = true;
    }

    /// The RTP port the SDP offer names.
    fn port(&self) -> u16 {
        self.signalled
            .as_ref()
            .unwrap_or(&self.socket)
            .local_addr()
            .expect("phone address")
            .port()
    }

    fn at_signalled(&self) -> u64 {
        self.state.lock().expect("phone state").at_signalled
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.state.lock().expect("phone state").peer
    }

    fn sent(&self) -> u64 {
        self.state.lock().expect("phone state").sent
    }

    fn received_count(&self) -> usize {
        self.state.lock().expect("phone state").received.len()
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().expect("phone state").received.clone()
    }

    /// Queue 8 kHz PCM to be sent as mu-law, 20 ms a packet (the last frame padded with silence).
    fn say(&self, pcm: &[i16]) {
        let mut s = self.state.lock().expect("phone state");
        for chunk in pcm.chunks(FRAME) {
            let mut payload: Vec<u8> = chunk.iter().map(|&x| ulaw_encode(x)).collect();
            payload.resize(FRAME, 0xFF);
            s.queue.push_back(Outgoing::Audio(payload));
        }
    }

    /// Queue silence.
    fn pause(&self, ms: usize) {
        self.say(&vec![0; ms * 8]);
    }

    /// Queue one key as an RFC 4733 event of `ms` milliseconds: a packet every 20 ms with the
    /// duration so far, the first with the marker bit, then the end packet three times.
    fn press_rfc4733(&self, key: char, ms: u16) {
        let code = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            other => panic!("no key {other}"),
        };
        let total = ms * 8;
        let mut s = self.state.lock().expect("phone state");
        let mut duration = FRAME as u16;
        let mut first = true;
        while duration < total {
            s.queue.push_back(Outgoing::Event {
                code,
                end: false,
                duration,
                first,
            });
            first = false;
            duration += FRAME as u16;
        }
        for _ in 0..3 {
            s.queue.push_back(Outgoing::Event {
                code,
                end: true,
                duration: total,
                first: false,
            });
        }
    }

    /// Queue one key as tones in the audio (in-band DTMF), then a gap.
    fn press_inband(&self, key: char) {
        self.say(&dtmf_tone(key, 120));
        self.pause(100);
    }

    /// Queue one key both ways, as a trunk that sends tones and RFC 4733 events does: the tones,
    /// then the event right after them.
    fn press_both(&self, key: char) {
        self.say(&dtmf_tone(key, 120));
        self.press_rfc4733(key, 100);
        self.pause(300);
    }

    /// Everything queued has been sent.
    async fn drained(&self, timeout: Duration) -> bool {
        let state = Arc::clone(&self.state);
        support::wait_until(timeout, || {
            let empty = state.lock().expect("phone state").queue.is_empty();
            async move { empty }
        })
        .await
    }

    /// The gateway's audio (PCMU) in sequence order, decoded; and how many packets that was.
    fn heard(&self) -> Vec<i16> {
        let packets = self.received();
        let mut audio: Vec<(i64, &Received)> = Vec::new();
        let mut last: Option<(u16, i64)> = None;
        for p in packets.iter().filter(|p| p.payload_type == PT_PCMU) {
            // Extend the 16-bit sequence number across wrap-around.
            let ext = match last {
                None => i64::from(p.seq),
                Some((prev, prev_ext)) => prev_ext + i64::from(p.seq.wrapping_sub(prev) as i16),
            };
            last = Some((p.seq, ext));
            audio.push((ext, p));
        }
        audio.sort_by_key(|(ext, _)| *ext);
        audio.dedup_by_key(|(ext, _)| *ext);
        audio
            .iter()
            .flat_map(|(_, p)| p.payload.iter().map(|&b| ulaw_decode(b)))
            .collect()
    }

    /// Wait until the gateway's audio has `frames` consecutive active frames after frame `after`;
    /// returns the index of the first of them.
    async fn wait_for_sound(
        &self,
        after: usize,
        frames: usize,
        timeout: Duration,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let env = envelope(&self.heard());
            let mut run = 0;
            for (i, &e) in env.iter().enumerate().skip(after) {
                run = if e > ACTIVE_RMS { run + 1 } else { 0 };
                if run == frames {
                    return Some(i + 1 - frames);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the menu prompt is heard (5 active frames); the frame it starts at.
    async fn hears_menu(&self, gw: &Gateway, timeout: Duration) -> usize {
        self.wait_for_sound(0, 5, timeout)
            .await
            .unwrap_or_else(|| panic!("the menu prompt was not heard: {}", gw.log()))
    }

    /// Wait until the 1 kHz beep that starts a recording is heard after frame `after`.
    async fn hears_beep(&self, gw: &Gateway, after: usize, timeout: Duration) {
        self.wait_for_tone(1000.0, after, 5, timeout)
            .await
            .unwrap_or_else(|| panic!("no beep before the recording: {}", gw.log()));
    }

    /// Wait until `frames` consecutive frames after frame `after` are a tone of `freq` Hz.
    async fn wait_for_tone(
        &self,
        freq: f64,
        after: usize,
        frames: usize,
        timeout: Duration,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let heard = self.heard();
            let mut run = 0;
            for (i, f) in heard.chunks_exact(FRAME).enumerate().skip(after) {
                run = if rms(f) > ACTIVE_RMS && tone_share(f, freq) > 0.8 {
                    run + 1
                } else {
                    0
                };
                if run == frames {
                    return Some(i + 1 - frames);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send datagrams from the phone's own socket (its latched address) to `to`.
    async fn send_raw(&self, to: SocketAddr, data: &[u8]) {
        let _ = self.socket.send_to(data, to).await;
    }
}

fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push((u8::from(marker) << 7) | pt);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An RTP packet (RFC 3550 5.1), or `None` (RTCP and anything else).
fn parse_rtp(data: &[u8], from: SocketAddr) -> Option<Received> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let payload_type = data[1] & 0x7F;
    if (72..=79).contains(&payload_type) {
        return None; // RTCP muxed
    }
    let csrc = usize::from(data[0] & 0x0F);
    let mut start = 12 + 4 * csrc;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*data.last()?))?;
    }
    Some(Received {
        at: Instant::now(),
        from,
        payload_type,
        seq: u16::from_be_bytes([data[2], data[3]]),
        payload: data.get(start..end)?.to_vec(),
    })
}

// ---------------------------------------------------------------------------------------------
// The gateway, the flows, SIPp.

fn flows_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ivr-flows/flows")
}

/// A flows directory holding `main.yaml` and the shipped prompts.
fn flows_dir(root: &Path, main: &str) -> PathBuf {
    let dir = root.join("flows");
    std::fs::create_dir_all(&dir).expect("mkdir flows");
    // (A test may have put prompts of its own there already.)
    std::os::unix::fs::symlink(flows_src().join("prompts"), dir.join("prompts"))
        .expect("link the shipped prompts");
    std::fs::write(dir.join("main.yaml"), main).expect("write main.yaml");
    dir
}

async fn gateway(root: &Path, main_flow: &str) -> (Gateway, u16) {
    gateway_on(root, main_flow, Sockets::PerCall).await
}

/// How the gateway under test carries RTP (`[media] rtp_sockets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sockets {
    /// A port pair per call (the default).
    PerCall,
    /// One pair per pacer for all its calls.
    Shared,
}

async fn gateway_on(root: &Path, main_flow: &str, sockets: Sockets) -> (Gateway, u16) {
    let flows = flows_dir(root, main_flow);
    // Each gateway its own RTP ports: a port another gateway just released may still receive
    // the end of its call's stream.
    static RANGES: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let i = RANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 40;
    let (min, max) = (43000 + 50 * i, 43000 + 50 * i + 49);
    let mut opts = GatewayOptions::new(&root.join("gw"));
    opts.log_level = "info,gateway::call=debug,media::dtmf=trace";
    // A SIP port free a moment ago may be taken (UDP sockets come and go in parallel tests):
    // another one then.
    for _ in 0..5 {
        let sip_port = free_port();
        let extra = format!(
            "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ntcp = \"127.0.0.1:{sip_port}\"\n\n\
             [media]\nrtp_port_min = {min}\nrtp_port_max = {max}\nrtp_sockets = \"{}\"\n\n\
             [ivr]\nflows_dir = {:?}\nreload = false\n",
            match sockets {
                Sockets::PerCall => "per_call",
                Sockets::Shared => "shared",
            },
            flows.display().to_string()
        );
        let gw = Gateway::spawn_with_extra(opts.clone(), free_port(), &extra);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if gw.log().contains("cannot listen for SIP") {
                break;
            }
            let ready = gw
                .http
                .get(gw.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return (gw, sip_port);
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready within 30 s: {}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("no free SIP port in 5 tries");
}

/// SIPp places one call with `scenario`, offering the phone's RTP port, and waits for the
/// gateway's BYE; `extra` are further SIPp arguments (`-key NAME VALUE`, `-d MS`).
fn sipp_call(
    scenario_name: &str,
    extra: &[String],
    sip_port: u16,
    rtp_port: u16,
    workdir: &Path,
) -> (i32, String) {
    std::fs::create_dir_all(workdir).expect("mkdir sipp");
    let mut failed_binds = String::new();
    // SIPp's own ports: its SIP port is left to the system; its (unused) media port must be
    // named, and one that was free a moment ago may be taken by the time SIPp binds it, so a
    // bind failure (before any message was sent) is retried on another.
    let (rtp_port, target) = (rtp_port.to_string(), format!("127.0.0.1:{sip_port}"));
    for _ in 0..5 {
        let media_port = free_port().to_string();
        let mut args = vec!["-mp", &media_port, "-key", "rtp_port", &rtp_port];
        args.extend(extra.iter().map(String::as_str));
        let (code, log) = sipp::call(workdir, &sipp::scenario(scenario_name), &args, 150, &target);
        // A retry reads only its own errors.
        for entry in std::fs::read_dir(workdir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with("errors.log") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if code != 0 && log.contains("Unable to bind") {
            failed_binds.push_str(&log);
            continue;
        }
        return (code, log);
    }
    (
        -1,
        format!("SIPp could not bind its ports 5 times: {failed_binds}"),
    )
}

/// A call in progress: SIPp runs in a blocking task while the test plays the phone.
struct Call {
    sipp: JoinHandle<(i32, String)>,
}

fn place_call(root: &Path, sip_port: u16, phone: &Phone) -> Call {
    place_call_with(root, sip_port, phone, "caller-until-bye.xml", &[])
}

fn place_call_with(
    root: &Path,
    sip_port: u16,
    phone: &Phone,
    scenario_name: &'static str,
    extra: &[&str],
) -> Call {
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    let work = root.join("sipp");
    let rtp = phone.port();
    Call {
        sipp: tokio::task::spawn_blocking(move || {
            sipp_call(scenario_name, &extra, sip_port, rtp, &work)
        }),
    }
}

impl Call {
    /// Wait for SIPp to end: it saw the gateway's BYE and answered 200.
    async fn ended_by_gateway(self, gw: &Gateway, phone: &Phone) {
        self.ended(gw, phone, "the call end by the gateway's BYE")
            .await;
    }

    /// Wait for SIPp to finish its scenario successfully.
    /// The phone stops sending then, as a phone does once its call is over.
    async fn ended(self, gw: &Gateway, phone: &Phone, what: &str) {
        let (code, log) = tokio::time::timeout(Duration::from_secs(180), self.sipp)
            .await
            .expect("SIPp did not end within 180 s")
            .expect("sipp task");
        phone.hang_up();
        assert_eq!(
            code,
            0,
            "SIPp did not see {what}: {log}\n--- gateway log ---\n{}",
            gw.log()
        );
    }
}

/// A gateway running [`MENU_FLOW`] and a call from `phone` to it, answered: the gateway, the
/// call, and where the gateway's media comes from.
async fn call_the_menu(root: &Path, phone: &Phone) -> (Gateway, Call, SocketAddr) {
    call_the_menu_on(root, phone, Sockets::PerCall).await
}

async fn call_the_menu_on(
    root: &Path,
    phone: &Phone,
    sockets: Sockets,
) -> (Gateway, Call, SocketAddr) {
    let (gw, sip_port) = gateway_on(root, MENU_FLOW, sockets).await;
    let mut call = place_call(root, sip_port, phone);
    let rtp = answered(phone, &gw, &mut call).await;
    (gw, call, rtp)
}

/// Wait for the gateway's first RTP packet (the call is answered and media flows).
async fn answered(phone: &Phone, gw: &Gateway, call: &mut Call) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(peer) = phone.peer() {
            return peer;
        }
        if call.sipp.is_finished() {
            let (code, log) = (&mut call.sipp).await.expect("sipp task");
            panic!(
                "SIPp ended ({code}) before any RTP came: {log}\n--- gateway log ---\n{}",
                gw.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no RTP from the gateway within 30 s: {}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The call record of a call the flow ended after submitting one order; that order.
async fn the_order(gw: &Gateway) -> (Value, Value) {
    let record = gw.call_record().await;
    assert_eq!(record["outcome"], "flow_hangup", "{record}");
    assert_eq!(record["codec"], "PCMU", "{record}");
    let orders = record["orders"].as_array().expect("orders").clone();
    assert_eq!(orders.len(), 1, "one order expected: {record}");
    let order = gw.order(orders[0].as_str().expect("order id")).await;
    assert_eq!(order["channel"], "phone", "{order}");
    assert_eq!(order["source"]["call_id"], record["sip_call_id"], "{order}");
    (record, order)
}

/// The menu the key tests use: each key 1-9 submits an order whose text names the key; `0`
/// records a voice message (ended by any key) and submits it; `*` collects digits up to `#` and
/// submits them as the text; every path ends with a hang-up.
const MENU_FLOW: &str = r##"
flow: main
start: menu
settings:
  language: zh
  barge_in: { speech: false, dtmf: true }
  timeouts: { initial_ms: 30000, no_input_ms: 30000, inter_digit_ms: 3000 }
steps:
  menu:
    type: menu
    say:
      zh: { text: "反映问题请按1。", audio: prompts/zh/main_menu.wav }
      en: { text: "To report a problem, press 1.", audio: prompts/en/main_menu.wav }
    no_input: { max: 3 }
    no_match: { max: 3 }
    on_fail: bye
    options:
      - { digit: "1", set: { choice: "key 1" }, goto: take }
      - { digit: "2", set: { choice: "key 2" }, goto: take }
      - { digit: "3", set: { choice: "key 3" }, goto: take }
      - { digit: "4", set: { choice: "key 4" }, goto: take }
      - { digit: "5", set: { choice: "key 5" }, goto: take }
      - { digit: "6", set: { choice: "key 6" }, goto: take }
      - { digit: "7", set: { choice: "key 7" }, goto: take }
      - { digit: "8", set: { choice: "key 8" }, goto: take }
      - { digit: "9", set: { choice: "key 9" }, goto: take }
      - { digit: "0", goto: message }
      - { digit: "*", goto: keys }
  keys:
    type: collect
    say:
      zh: { text: "请输入号码，以井号键结束。", audio: prompts/zh/ask_order.wav }
      en: { text: "Enter the number, then the hash key.", audio: prompts/en/ask_order.wav }
    into: keys
    digits: { min: 1, max: 8, terminator: "#" }
    no_input: { max: 3 }
    no_match: { max: 3 }
    on_fail: bye
    next: take_keys
  take_keys:
    type: submit
    order: { kind: "'consultation'", text: vars.keys }
    into: order_id
    next: bye
    on_fail: bye
  take:
    type: submit
    order: { kind: "'consultation'", text: vars.choice }
    into: order_id
    next: bye
    on_fail: bye
  message:
    type: record
    into: voicemail
    max_seconds: 30
    beep: true
    next: keep
  keep:
    type: submit
    order: { kind: "'help'", text: "'voice message'", recording: vars.voicemail }
    into: order_id
    next: bye
    on_fail: bye
  bye:
    type: hangup
    reason: completed
"##;

// ---------------------------------------------------------------------------------------------
// The tests.

/// A phone that confirms the call 700 ms after our 200 hears the greeting from its start: the
/// flow waits for the ACK (media flows meanwhile, as silence).
#[tokio::test]
async fn the_greeting_waits_for_the_callers_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, sip_port) = gateway(dir.path(), MENU_FLOW).await;
    let phone = Phone::new().await;
    let mut call = place_call_with(dir.path(), sip_port, &phone, "caller-slow-ack.xml", &[]);
    answered(&phone, &gw, &mut call).await;
    let first_sound = phone
        .wait_for_sound(0, 5, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the menu prompt was not heard: {}", gw.log()));
    // Frames are 20 ms: before the ACK (700 ms) only silence, then the prompt at once.
    assert!(
        first_sound >= 25,
        "the prompt began {} ms into the call, before the ACK",
        first_sound * 20
    );
    assert!(
        first_sound <= 75,
        "the prompt began {} ms into the call, long after the ACK",
        first_sound * 20
    );
    phone.press_rfc4733('1', 100);
    call.ended_by_gateway(&gw, &phone).await;
}

/// The greeting is heard whole and unchanged; then the flow hangs up and the caller sees the BYE.
#[tokio::test]
async fn the_caller_hears_the_greeting_and_the_flow_hangs_up() {
    let flow = r#"
flow: main
start: greeting
steps:
  greeting:
    type: prompt
    barge_in: false
    say:
      zh: { text: "您好，欢迎致电12345市民服务热线。", audio: prompts/zh/welcome.wav }
      en: { text: "Welcome to the 12345 citizen service hotline.", audio: prompts/en/welcome.wav }
    next: bye
  bye:
    type: hangup
    reason: completed
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, sip_port) = gateway(dir.path(), flow).await;
    let phone = Phone::new().await;
    let mut call = place_call(dir.path(), sip_port, &phone);
    answered(&phone, &gw, &mut call).await;
    call.ended_by_gateway(&gw, &phone).await;
    // The call is over for the gateway's media too: it stops sending.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = phone.received_count();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if phone.received_count() == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway still sends RTP after its BYE"
        );
    }

    let heard = phone.heard();
    let reference = shipped_prompt("prompts/zh/welcome.wav");
    let (got_env, ref_env) = (envelope(&heard), envelope(&reference));
    let (g0, g1) = active_span(&got_env).unwrap_or_else(|| {
        panic!(
            "only silence heard ({} packets): {}",
            phone.received_count(),
            gw.log()
        )
    });
    let (r0, r1) = active_span(&ref_env).expect("the greeting has sound");
    // Duration: the span from the first to the last sound, to the frame.
    let (got_ms, ref_ms) = ((g1 - g0 + 1) * 20, (r1 - r0 + 1) * 20);
    assert!(
        got_ms.abs_diff(ref_ms) <= 40,
        "heard {got_ms} ms of greeting, the prompt has {ref_ms} ms"
    );
    // Level: the same loudness within 1 dB (G.711 keeps it).
    let got_rms = rms(&heard[g0 * FRAME..(g1 + 1) * FRAME]);
    let ref_rms = rms(&reference[r0 * FRAME..(r1 + 1) * FRAME]);
    assert!(
        db(got_rms / ref_rms).abs() < 1.0,
        "greeting heard at RMS {got_rms:.0}, the prompt is {ref_rms:.0}"
    );
    assert!(got_rms > 1000.0, "greeting too quiet: RMS {got_rms:.0}");
    // Contour: frame by frame, it is the greeting and not some other sound.
    let c = correlation(&got_env[g0..=g1], &ref_env[r0..=r1]);
    eprintln!(
        "greeting: heard {got_ms} ms at RMS {got_rms:.0}, prompt {ref_ms} ms at RMS {ref_rms:.0}, r = {c:.4}"
    );
    assert!(c > 0.95, "the heard audio is not the greeting (r = {c:.3})");
    // Nothing else was played after it: silence until the BYE.
    assert!(
        got_env[g1 + 1..].iter().all(|&e| e <= ACTIVE_RMS),
        "sound after the greeting"
    );

    let record = gw.call_record().await;
    assert_eq!(record["outcome"], "flow_hangup", "{record}");
    assert_eq!(record["last_step"], "main/bye", "{record}");
    assert!(record["orders"].as_array().is_some_and(Vec::is_empty));
    assert!(record["callback_order"].is_null(), "{record}");
    // The caller's silence arrived as media.
    let received = record["rtp"]["packets_received"]
        .as_u64()
        .expect("received");
    assert!(received >= 100, "{record}");
    assert!(received <= phone.sent(), "{record}");
}

/// The goodbye before the flow's BYE is heard to its last frame: the BYE waits until the prompt
/// has been sent, not only handed to the media.
#[tokio::test]
async fn the_goodbye_is_heard_to_its_end_before_the_bye() {
    let flow = r#"
flow: main
start: bye
steps:
  bye:
    type: hangup
    say:
      zh: { text: "再见。", audio: tone.wav }
      en: { text: "Goodbye.", audio: tone.wav }
    reason: completed
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    // A goodbye that is sound to its very last sample: 1 s of 440 Hz.
    let tone: Vec<i16> = (0..8000)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin()) as i16
        })
        .collect();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).expect("mkdir flows");
    support::write_wav_8k(&flows.join("tone.wav"), &tone);
    let (gw, sip_port) = gateway(dir.path(), flow).await;
    let phone = Phone::new().await;
    let mut call = place_call(dir.path(), sip_port, &phone);
    answered(&phone, &gw, &mut call).await;
    call.ended_by_gateway(&gw, &phone).await;
    // Packets sent just before the BYE may still be on their way.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let env = envelope(&phone.heard());
    let (g0, g1) =
        active_span(&env).unwrap_or_else(|| panic!("the goodbye was not heard: {}", gw.log()));
    if (g1 - g0 + 1) * 20 != 1000 {
        let t0 = phone.received()[0].at;
        let dump: Vec<String> = phone
            .received()
            .iter()
            .map(|p| {
                format!(
                    "{} {} {:?} {}",
                    p.seq,
                    p.payload_type,
                    p.at - t0,
                    p.payload[0]
                )
            })
            .collect();
        std::fs::write(
            format!("/tmp/goodbye-{}.txt", std::process::id()),
            format!("{}\n{:?}\n{}", dump.join("\n"), env, gw.log()),
        )
        .expect("dump");
    }
    assert_eq!(
        (g1 - g0 + 1) * 20,
        1000,
        "heard {} ms of a 1000 ms goodbye",
        (g1 - g0 + 1) * 20
    );
}

/// An RFC 4733 key pressed while the menu plays selects its option.
#[tokio::test]
async fn an_rfc4733_key_selects_the_menu_option() {
    rfc4733_key_selects_the_menu_option(Sockets::PerCall).await;
}

/// The same on the pacers' shared sockets: the call's RTP is found by its address, both ways.
#[tokio::test]
async fn on_shared_sockets_an_rfc4733_key_selects_the_menu_option() {
    rfc4733_key_selects_the_menu_option(Sockets::Shared).await;
}

async fn rfc4733_key_selects_the_menu_option(sockets: Sockets) {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::new().await;
    let (gw, call, _) = call_the_menu_on(dir.path(), &phone, sockets).await;
    phone.hears_menu(&gw, Duration::from_secs(30)).await;
    phone.press_rfc4733('7', 100);
    call.ended_by_gateway(&gw, &phone).await;

    let (record, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 7", "{order}");
    assert_eq!(order["kind"], "consultation", "{order}");
    assert_eq!(order["citizen"]["phone"], "13800138000", "{order}");
    assert_eq!(record["last_step"], "main/bye", "{record}");
    assert!(
        gw.log().contains("Rfc4733"),
        "the key did not come by RFC 4733: {}",
        gw.log()
    );
}

/// A key sent as tones in the audio (no RFC 4733 event) selects its option.
#[tokio::test]
async fn an_inband_key_selects_the_menu_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::new().await;
    let (gw, call, _) = call_the_menu(dir.path(), &phone).await;
    phone.hears_menu(&gw, Duration::from_secs(30)).await;
    phone.press_inband('5');
    call.ended_by_gateway(&gw, &phone).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 5", "{order}");
    let log = gw.log();
    assert!(
        log.contains("Inband"),
        "the key was not heard in-band: {log}"
    );
    assert!(!log.contains("Rfc4733"), "an RFC 4733 key appeared: {log}");
}

/// Keys that arrive both as tones and as RFC 4733 events count once each.
#[tokio::test]
async fn a_key_sent_both_in_band_and_by_rfc4733_counts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::new().await;
    let (gw, call, _) = call_the_menu(dir.path(), &phone).await;
    phone.hears_menu(&gw, Duration::from_secs(30)).await;
    phone.press_rfc4733('*', 100);
    for key in ['1', '2', '3'] {
        phone.press_both(key);
    }
    phone.press_rfc4733('#', 100);
    call.ended_by_gateway(&gw, &phone).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(order["text"], "123", "{order}");
    let log = gw.log();
    // Each of 1, 2, 3 was heard by both paths, and the second report was dropped.
    let duplicates = log.matches("duplicate DTMF from a second path").count();
    assert_eq!(duplicates, 3, "keys did not come both ways: {log}");
}

/// A key pressed by SIP INFO (application/dtmf-relay) selects its option.
#[tokio::test]
async fn a_sip_info_key_selects_the_menu_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, sip_port) = gateway(dir.path(), MENU_FLOW).await;
    let phone = Phone::new().await;
    let mut call = place_call_with(
        dir.path(),
        sip_port,
        &phone,
        "caller-info-until-bye.xml",
        &["-key", "info_digit", "9"],
    );
    answered(&phone, &gw, &mut call).await;
    call.ended_by_gateway(&gw, &phone).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 9", "{order}");
    let log = gw.log();
    assert!(
        log.contains("SipInfo"),
        "the key did not come by SIP INFO: {log}"
    );
}

/// Key 0, the beep, the caller's message, `#` to finish: the WAV holds the message and the order
/// and the call record point at it.
#[tokio::test]
async fn a_voice_message_is_recorded_and_the_order_references_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::new().await;
    let (gw, call, _) = call_the_menu(dir.path(), &phone).await;
    let menu = phone.hears_menu(&gw, Duration::from_secs(30)).await;
    phone.press_rfc4733('0', 100);
    // The beep (1 kHz) says the recording runs.
    phone.hears_beep(&gw, menu, Duration::from_secs(30)).await;
    // The caller's message: a real voice clip (a shipped prompt stands in for the citizen).
    let message = shipped_prompt("prompts/zh/describe.wav");
    phone.pause(200);
    phone.say(&message);
    phone.pause(300);
    assert!(
        phone.drained(Duration::from_secs(60)).await,
        "the message was not sent"
    );
    phone.press_rfc4733('#', 100);
    call.ended_by_gateway(&gw, &phone).await;

    let (record, order) = the_order(&gw).await;
    assert_eq!(order["text"], "voice message", "{order}");
    assert_eq!(order["kind"], "help", "{order}");
    let url = order["recording"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("the order has no recording: {order}"))
        .to_owned();
    assert_eq!(
        record["recordings"],
        serde_json::json!([url.clone()]),
        "{record}"
    );
    let path = PathBuf::from(&url);
    assert!(
        path.starts_with(gw.opts.data_dir.join("recordings")),
        "recording outside the recordings directory: {url}"
    );
    let (spec, samples) = read_wav(&path);
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (8000, 1, 16),
        "{spec:?}"
    );
    let wav_ms = samples.len() as u64 / 8;
    let order_ms = order["recording"]["duration_ms"]
        .as_u64()
        .expect("duration_ms");
    assert!(
        wav_ms.abs_diff(order_ms) <= 20,
        "the order says {order_ms} ms, the file has {wav_ms} ms"
    );
    // The message is in it: the same duration of sound and the same contour.
    let (got_env, ref_env) = (envelope(&samples), envelope(&message));
    let (g0, g1) = active_span(&got_env).expect("the recording is silent");
    let (r0, r1) = active_span(&ref_env).expect("the clip has sound");
    let (got_ms, ref_ms) = ((g1 - g0 + 1) * 20, (r1 - r0 + 1) * 20);
    assert!(
        got_ms.abs_diff(ref_ms) <= 200,
        "recorded {got_ms} ms of sound, the caller said {ref_ms} ms"
    );
    assert!(
        wav_ms as usize >= ref_ms,
        "recording ({wav_ms} ms) shorter than the message ({ref_ms} ms)"
    );
    let c = correlation(&got_env[g0..=g1], &ref_env[r0..=r1]);
    let got_rms = rms(&samples[g0 * FRAME..(g1 + 1) * FRAME]);
    let ref_rms = rms(&message[r0 * FRAME..(r1 + 1) * FRAME]);
    eprintln!(
        "voice message: file {wav_ms} ms, sound {got_ms} ms at RMS {got_rms:.0}; said {ref_ms} ms at RMS {ref_rms:.0}; r = {c:.4}"
    );
    assert!(
        c > 0.9,
        "the recording is not the caller's message (r = {c:.3})"
    );
    assert!(
        db(got_rms / ref_rms).abs() < 1.5,
        "recorded at RMS {got_rms:.0}, the caller spoke at {ref_rms:.0}"
    );
}

/// A caller who leaves a message and hangs up (as the shipped voicemail prompt invites) leaves
/// the message: the callback order references the recording, which holds all of it.
#[tokio::test]
async fn a_caller_who_hangs_up_after_the_message_leaves_it_in_the_callback_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, sip_port) = gateway(dir.path(), MENU_FLOW).await;
    let phone = Phone::new().await;
    // The caller hangs up 12 s after the answer: time enough to pick 0 and speak (about 6 s).
    let mut call = place_call_with(
        dir.path(),
        sip_port,
        &phone,
        "caller-hangs-up.xml",
        &["-d", "12000"],
    );
    answered(&phone, &gw, &mut call).await;
    let menu = phone.hears_menu(&gw, Duration::from_secs(10)).await;
    phone.press_rfc4733('0', 100);
    phone.hears_beep(&gw, menu, Duration::from_secs(10)).await;
    let message = shipped_prompt("prompts/zh/describe.wav");
    phone.pause(200);
    phone.say(&message);
    let sent_in_time = phone.drained(Duration::from_secs(20)).await;
    call.ended(&gw, &phone, "its BYE answered").await;
    assert!(sent_in_time, "the message was not sent");

    let record = gw.call_record().await;
    assert_eq!(record["outcome"], "caller_hangup", "{record}");
    assert_eq!(record["last_step"], "main/message", "{record}");
    let callback = record["callback_order"]
        .as_str()
        .unwrap_or_else(|| panic!("no callback order: {record}"))
        .to_owned();
    let order = gw.order(&callback).await;
    assert_eq!(order["kind"], "help", "{order}");
    let url = order["recording"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("the callback order has no recording: {order}"))
        .to_owned();
    assert_eq!(
        record["recordings"],
        serde_json::json!([url.clone()]),
        "{record}"
    );
    let (spec, samples) = read_wav(Path::new(&url));
    assert_eq!((spec.sample_rate, spec.channels), (8000, 1), "{spec:?}");
    let (got_env, ref_env) = (envelope(&samples), envelope(&message));
    let (g0, g1) = active_span(&got_env).expect("the recording is silent");
    let (r0, r1) = active_span(&ref_env).expect("the clip has sound");
    let (got_ms, ref_ms) = ((g1 - g0 + 1) * 20, (r1 - r0 + 1) * 20);
    assert!(
        got_ms.abs_diff(ref_ms) <= 200,
        "recorded {got_ms} ms of sound, the caller said {ref_ms} ms"
    );
    let c = correlation(&got_env[g0..=g1], &ref_env[r0..=r1]);
    assert!(
        c > 0.9,
        "the recording is not the caller's message (r = {c:.3})"
    );
}

/// A caller behind NAT: the gateway starts with the address of the SDP, then sends where the
/// caller's media comes from, so the caller hears the menu and its key works.
#[tokio::test]
async fn a_caller_behind_nat_is_heard_and_hears_the_menu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::behind_nat().await;
    let (gw, call, _) = call_the_menu(dir.path(), &phone).await;
    phone
        .wait_for_sound(0, 25, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the menu was not heard where the media comes from ({} packets there, {} at the \
                 SDP's address): {}",
                phone.received_count(),
                phone.at_signalled(),
                gw.log()
            )
        });
    phone.press_rfc4733('3', 100);
    call.ended_by_gateway(&gw, &phone).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 3", "{order}");
    assert!(phone.at_signalled() >= 1);
}

/// Garbage on both media ports, from the caller's address and from elsewhere, is ignored.
#[tokio::test]
async fn garbage_on_the_media_ports_does_not_disturb_the_call() {
    garbage_does_not_disturb_the_call(Sockets::PerCall).await;
}

/// The same on the pacers' shared sockets: the stranger's datagrams match no call.
#[tokio::test]
async fn on_shared_sockets_garbage_does_not_disturb_the_call() {
    garbage_does_not_disturb_the_call(Sockets::Shared).await;
}

async fn garbage_does_not_disturb_the_call(sockets: Sockets) {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Phone::new().await;
    let (gw, call, rtp) = call_the_menu_on(dir.path(), &phone, sockets).await;
    let rtcp = SocketAddr::new(rtp.ip(), rtp.port() + 1);
    phone.hears_menu(&gw, Duration::from_secs(30)).await;

    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let garbage = garbage_datagrams();
    for round in 0..3 {
        for g in &garbage {
            for to in [rtp, rtcp] {
                phone.send_raw(to, g).await;
                let _ = stranger.send_to(g, to).await;
            }
        }
        if round < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The prompt keeps coming after the garbage.
    let before = phone.received_count();
    let more = support::wait_until(Duration::from_secs(20), || {
        let n = phone.received_count();
        async move { n >= before + 50 }
    })
    .await;
    assert!(more, "the gateway stopped sending after the garbage");
    assert!(
        phone.received().iter().all(|p| p.from == rtp),
        "RTP came from elsewhere than the gateway's port"
    );
    // And a key still works.
    phone.press_rfc4733('4', 100);
    call.ended_by_gateway(&gw, &phone).await;

    let (record, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 4", "{order}");
    // None of the garbage counted as the caller's media.
    let received = record["rtp"]["packets_received"]
        .as_u64()
        .expect("received");
    assert!(
        received <= phone.sent(),
        "{received} RTP packets counted, the phone sent {}: {record}",
        phone.sent()
    );
    assert!(received >= 50, "{record}");
    assert_eq!(record["rtp"]["packets_lost"], 0, "{record}");
    // The stranger never got our audio (no re-latching onto it).
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_millis(200), stranger.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the gateway sent media to the stranger");
}

/// Datagrams no RTP or RTCP stack should take: empty, truncated, wrong version, payload types
/// nobody negotiated, RTCP with lying lengths, random bytes (with the version or payload type
/// forced wrong, so that none is by chance a valid packet of the call).
fn garbage_datagrams() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 0x00, 0x01],
        vec![0x80; 11],
        // RTP v2, PCMU, but 15 CSRCs announced in a 20-byte packet.
        [vec![0x8F, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2], vec![0; 8]].concat(),
        // RTP v2 with an extension header longer than the packet.
        [
            vec![0x90, 0x00, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2],
            vec![0xBE, 0xDE, 0xFF, 0xFF],
        ]
        .concat(),
        // RTP v2 with padding longer than the packet.
        [
            vec![0xA0, 0x00, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2],
            vec![0x55; 3],
            vec![200],
        ]
        .concat(),
        // A payload type nobody negotiated (96).
        rtp_packet(96, false, 7, 7, 7, &[0x11; 160]),
        // RTCP SR/RR/SDES/BYE/APP with lengths that lie.
        vec![0x80, 200, 0xFF, 0xFF, 0, 0, 0, 1],
        vec![0x81, 201, 0x00, 0x07, 0, 0, 0, 1, 1, 2, 3],
        vec![0x81, 202, 0x00, 0x01, 0, 0, 0, 1, 1, 200, 0, 0],
        vec![0x9F, 203, 0x00, 0x00],
        vec![0x80, 204, 0x00, 0x02, 0, 0, 0, 1],
        b"INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\r\n".to_vec(),
        vec![0xFF; 1500],
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..60 {
        let len = 1 + (i * 37) % 400;
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 2 == 0 {
            d[0] &= 0x3F; // version 0
        } else if d.len() > 1 {
            d[0] = 0x80 | (d[0] & 0x3F);
            d[1] = (d[1] & 0x80) | (96 + (d[1] & 0x03)); // payload type 96-99
        }
        out.push(d);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// baresip (Debian's baresip 1.0): a real softphone with its own RTP stack. It dials the gateway,
// sends its microphone from a WAV file (the `aufile` source), records what it hears to a WAV
// file (the `sndfile` filter), sends RFC 4733 keys with `sndcode`, and reports its call events
// over `ctrl_tcp` (netstring-framed JSON).

struct Baresip {
    child: std::process::Child,
    dir: PathBuf,
    ctrl: tokio::net::TcpStream,
    buf: Vec<u8>,
    events: Vec<Value>,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Baresip {
    /// Start baresip in `dir` with `microphone` (8 kHz mono 16-bit PCM) as its audio source.
    async fn start(dir: &Path, microphone: &[i16]) -> Baresip {
        std::fs::create_dir_all(dir).expect("mkdir baresip");
        let mic = dir.join("microphone.wav");
        support::write_wav_8k(&mic, microphone);
        let ctrl_port = free_port();
        let config = format!(
            "sip_listen\t127.0.0.1:{sip}\n\
             audio_source\taufile,{mic}\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\nmodule\taufile.so\nmodule\tsndfile.so\n\
             module_app\taccount.so\nmodule_app\tmenu.so\nmodule\tctrl_tcp.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n\
             snd_path\t{snd}\n\
             rtp_ports\t46000-46999\n",
            sip = free_port(),
            mic = mic.display(),
            snd = dir.display(),
        );
        std::fs::write(dir.join("config"), config).expect("write baresip config");
        std::fs::write(
            dir.join("accounts"),
            "<sip:13800138000@127.0.0.1>;regint=0;audio_codecs=PCMU\n",
        )
        .expect("write baresip accounts");
        let log = std::fs::File::create(dir.join("baresip.log")).expect("baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .arg("-v")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("baresip is installed by `scripts/setup.sh --test` (Debian package baresip)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ctrl = loop {
            if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", ctrl_port)).await {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "baresip's ctrl_tcp did not open within 30 s: {}",
                std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Baresip {
            child,
            dir: dir.to_owned(),
            ctrl,
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    async fn command(&mut self, command: &str, params: &str) {
        use tokio::io::AsyncWriteExt;
        let body =
            serde_json::json!({"command": command, "params": params, "token": command}).to_string();
        let framed = format!("{}:{body},", body.len());
        self.ctrl
            .write_all(framed.as_bytes())
            .await
            .expect("write to baresip's ctrl_tcp");
    }

    /// Read ctrl_tcp messages until an event of `kind` arrives (or `timeout` passes).
    async fn wait_event(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Whole netstrings in the buffer: "<len>:<json>,".
            while let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("netstring length from baresip");
                if self.buf.len() < colon + 1 + len + 1 {
                    break;
                }
                let msg: Value = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                    .expect("JSON from baresip");
                self.buf.drain(..colon + 1 + len + 1);
                if msg["event"] == true {
                    self.events.push(msg.clone());
                    if msg["type"] == kind {
                        return Some(msg);
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.ctrl.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// What baresip heard (its decoder's output, written by `sndfile`).
    fn heard(&self) -> Vec<i16> {
        let dump = std::fs::read_dir(&self.dir)
            .expect("baresip dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("sndfile wrote no -dec.wav: {}", self.log()));
        let (spec, samples) = read_wav(&dump);
        assert_eq!((spec.sample_rate, spec.channels), (8000, 1), "{spec:?}");
        samples
    }
}

/// Start a gateway with the menu flow and let baresip call it with `microphone` as its voice.
async fn baresip_call(root: &Path, microphone: &[i16]) -> (Gateway, Baresip) {
    let (gw, sip_port) = gateway(root, MENU_FLOW).await;
    let mut phone = Baresip::start(&root.join("baresip"), microphone).await;
    phone
        .command("dial", &format!("sip:12345@127.0.0.1:{sip_port}"))
        .await;
    let established = phone
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(30))
        .await;
    assert!(
        established.is_some(),
        "baresip's call was not answered: {:?}\n--- baresip ---\n{}\n--- gateway ---\n{}",
        phone.events,
        phone.log(),
        gw.log()
    );
    (gw, phone)
}

/// The gateway's BYE ends baresip's call: libre answers it 200 and reports the session reset by
/// the peer.
async fn closed_by_gateway(phone: &mut Baresip, gw: &Gateway) {
    let closed = phone
        .wait_event("CALL_CLOSED", Duration::from_secs(90))
        .await;
    let Some(closed) = closed else {
        panic!(
            "baresip's call did not end: {:?}\n--- baresip ---\n{}\n--- gateway ---\n{}",
            phone.events,
            phone.log(),
            gw.log()
        );
    };
    assert!(
        closed["param"]
            .as_str()
            .is_some_and(|p| p.contains("reset by peer")),
        "the call did not end by the gateway's BYE: {closed}\n{}",
        phone.log()
    );
}

/// baresip hears the menu prompt (checked against the prompt's WAV), presses 8 by RFC 4733, the
/// option's order is created and the gateway's BYE ends baresip's call.
#[tokio::test]
async fn baresip_hears_the_menu_and_its_rfc4733_key_selects_an_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut phone) = baresip_call(dir.path(), &vec![0; 8000 * 120]).await;
    // Let a good part of the menu prompt play, then press the key.
    tokio::time::sleep(Duration::from_secs(4)).await;
    phone.command("sndcode", "8").await;
    closed_by_gateway(&mut phone, &gw).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(
        order["text"],
        "key 8",
        "{order}\n--- gateway ---\n{}\n--- baresip ---\n{}",
        gw.log(),
        phone.log()
    );
    assert!(gw.log().contains("Rfc4733"), "{}", gw.log());

    // What baresip heard starts with the menu prompt: its level and contour, for as long as it
    // played before the key stopped it.
    let heard = phone.heard();
    let reference = shipped_prompt("prompts/zh/main_menu.wav");
    let (got_env, ref_env) = (envelope(&heard), envelope(&reference));
    let (g0, g1) = active_span(&got_env)
        .unwrap_or_else(|| panic!("baresip heard only silence: {}", phone.log()));
    let (r0, _) = active_span(&ref_env).expect("the prompt has sound");
    // baresip may start hearing a little late (its media starts after the 200 while the
    // gateway's starts with it), so the first chunk is looked for within the first 3 s.
    let chunks = follow(&got_env[g0..=g1], &ref_env[r0..], 150);
    let heard_ms = chunks.len() * 500;
    eprintln!("baresip heard {heard_ms} ms of the menu, chunk correlations {chunks:.3?}");
    assert!(
        heard_ms >= 2000,
        "baresip heard only {heard_ms} ms of the menu"
    );
    assert!(
        chunks.iter().all(|&c| c > 0.9),
        "baresip did not hear the menu prompt: chunk correlations {chunks:.3?}"
    );
    let got_rms = rms(&heard[g0 * FRAME..(g1 + 1) * FRAME]);
    let end = ((r0 + g1 - g0 + 1) * FRAME).min(reference.len());
    let ref_rms = rms(&reference[r0 * FRAME..end]);
    assert!(got_rms > 1000.0, "heard at RMS {got_rms:.0}");
    assert!(
        db(got_rms / ref_rms).abs() < 3.0,
        "heard at RMS {got_rms:.0}, the prompt is {ref_rms:.0}"
    );
}

/// baresip's microphone carries the tones of key 6 (no RFC 4733): the option's order is created.
#[tokio::test]
async fn baresip_inband_tones_select_an_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mic = vec![0i16; 8000 * 3];
    mic.extend(dtmf_tone('6', 150));
    mic.extend(vec![0i16; 8000 * 120]);
    let (gw, mut phone) = baresip_call(dir.path(), &mic).await;
    closed_by_gateway(&mut phone, &gw).await;

    let (_, order) = the_order(&gw).await;
    assert_eq!(order["text"], "key 6", "{order}");
    let log = gw.log();
    assert!(
        log.contains("Inband"),
        "the key was not heard in-band: {log}"
    );
}
