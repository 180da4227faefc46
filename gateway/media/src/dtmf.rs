//! DTMF: RFC 4733 telephone-events (receive and send), an in-band Goertzel detector, and a
//! merger of the paths a key press can arrive by.
//!
//! Callers' digits reach us three ways: RFC 4733 packets (most carriers), tones in the audio
//! (older gateways, and some that send both), and SIP INFO. The IVR must see each key press
//! exactly once, so:
//! - The (crate-private) `TelephoneEventReceiver` keys an event by its RTP timestamp (all packets
//!   of one event share it; the marker bit is unreliable when the first packet is lost) and
//!   reports it once, on the end bit or as soon as the duration reaches the minimum, ignoring the
//!   three redundant end packets.
//! - [`InbandDetector`] is a Goertzel detector over 102-sample blocks (12.75 ms at 8 kHz, the block
//!   spandsp uses: fine enough in time for 40 ms tones, coarse enough in frequency for the DTMF
//!   grid). A block counts only when one row and one column tone dominate their groups (relative
//!   peak), the two together carry most of the block's energy (speech and noise spread energy
//!   elsewhere), the twist is within 8 dB (column stronger) or 4 dB (row stronger), and second
//!   harmonics are weak (speech vowels have strong harmonics, DTMF none). A digit needs three
//!   consecutive blocks (about 40 ms) and a gap before the same digit counts again.
//! - [`DtmfMerger`] merges the three sources: the same digit from a different source within a
//!   window is the same key press.
//!
//! Hand-written because the logic is small and the false-trigger rules are the point; no crate
//! offers a tested detector with these checks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Events 0-15 of RFC 4733 §3.2 in order.
const EVENT_DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The digit of a telephone-event code.
pub(crate) fn event_to_digit(event: u8) -> Option<char> {
    EVENT_DIGITS.get(usize::from(event)).copied()
}

/// The telephone-event code of a digit.
pub(crate) fn digit_to_event(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase();
    EVENT_DIGITS.iter().position(|&c| c == d).map(|p| p as u8)
}

/// One RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (0-9, 10 `*`, 11 `#`, 12-15 A-D).
    pub event: u8,
    /// The E bit: the last packets of an event carry it, so the digit is complete.
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parse a payload (4 bytes; a longer payload carries further events we ignore).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub(crate) fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// Receives RFC 4733 packets and reports each digit once.
#[derive(Debug, Clone)]
pub(crate) struct TelephoneEventReceiver {
    min_duration: u16,
    /// Timestamps of events already reported (a few, for reordered stragglers).
    reported: VecDeque<u32>,
}

impl Default for TelephoneEventReceiver {
    fn default() -> Self {
        Self::new(Duration::from_millis(40))
    }
}

impl TelephoneEventReceiver {
    /// Report an event once it has lasted `min_duration` even if its end packets are lost.
    pub(crate) fn new(min_duration: Duration) -> Self {
        let samples = min_duration
            .as_millis()
            .saturating_mul(8)
            .min(u128::from(u16::MAX)) as u16;
        Self {
            min_duration: samples.max(1),
            reported: VecDeque::with_capacity(8),
        }
    }

    /// A telephone-event packet with its RTP timestamp: the digit, the first time an event is due.
    pub(crate) fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let ev = TelephoneEvent::parse(payload)?;
        let digit = event_to_digit(ev.event)?;
        if self.reported.contains(&timestamp) {
            return None;
        }
        if ev.end || ev.duration >= self.min_duration {
            if self.reported.len() == 8 {
                self.reported.pop_front();
            }
            self.reported.push_back(timestamp);
            return Some(digit);
        }
        None
    }
}

/// One packet of an event we send; all share the event's start timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutgoingEvent {
    pub payload: [u8; 4],
    /// Set on the first packet of the event.
    pub marker: bool,
}

/// The packets of one digit sent as RFC 4733, one per 20 ms: a start with the marker, continuations
/// with growing duration, and three end packets (§2.5.1.4) with the final duration.
pub(crate) fn telephone_event_packets(
    digit: char,
    duration: Duration,
    volume: u8,
) -> Vec<OutgoingEvent> {
    let Some(event) = digit_to_event(digit) else {
        return Vec::new();
    };
    let step = 160u32;
    let total = (duration.as_millis() as u32)
        .saturating_mul(8)
        .clamp(step, u32::from(u16::MAX));
    let mut out = Vec::new();
    let mut d = step;
    while d < total {
        out.push(OutgoingEvent {
            payload: TelephoneEvent {
                event,
                end: false,
                volume,
                duration: d as u16,
            }
            .to_bytes(),
            marker: out.is_empty(),
        });
        d += step;
    }
    for _ in 0..3 {
        out.push(OutgoingEvent {
            payload: TelephoneEvent {
                event,
                end: true,
                volume,
                duration: total as u16,
            }
            .to_bytes(),
            marker: out.is_empty(),
        });
    }
    out
}

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Samples per analysis block.
pub(crate) const BLOCK: usize = 102;
/// Normal twist (column stronger) limit: 8 dB in power.
const NORMAL_TWIST: f32 = 6.31;
/// Reverse twist (row stronger) limit: 4 dB.
const REVERSE_TWIST: f32 = 2.51;
/// The other tones of a group must be this far below the strongest (8 dB).
const RELATIVE_PEAK: f32 = 6.31;
/// The tone pair must carry this share of the block's energy.
const TONE_SHARE: f32 = 0.70;
/// Second harmonics must be this far below their fundamental (10 dB).
const HARMONIC: f32 = 0.1;
/// Minimum amplitude of each tone (about -36 dBm0).
const MIN_AMPLITUDE: f32 = 300.0;

/// Goertzel power at `freq` over `x`.
fn goertzel(x: &[f32], freq: f32) -> f32 {
    let coeff = 2.0 * (2.0 * std::f32::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn strongest(powers: &[f32; 4]) -> (usize, f32) {
    let mut best = (0, powers[0]);
    for (i, &p) in powers.iter().enumerate() {
        if p > best.1 {
            best = (i, p);
        }
    }
    best
}

/// The digit a block carries, if it passes every check.
fn classify_block(x: &[f32]) -> Option<char> {
    let n = x.len() as f32;
    let energy: f32 = x.iter().map(|v| v * v).sum();
    // Two tones of at least MIN_AMPLITUDE carry a mean power of at least MIN_AMPLITUDE² per
    // sample; a quieter block (silence, most speech) cannot pass the checks below, so the eight
    // Goertzel filters are skipped for it (with a factor of two to spare). Most blocks of most
    // calls end here, which matters at thousands of calls.
    if energy <= 0.0 || energy < 0.5 * n * MIN_AMPLITUDE * MIN_AMPLITUDE {
        return None;
    }
    let rows = ROWS.map(|f| goertzel(x, f));
    let cols = COLS.map(|f| goertzel(x, f));
    let (r, pr) = strongest(&rows);
    let (c, pc) = strongest(&cols);
    // Amplitude of a tone from its Goertzel power: A = 2 sqrt(P) / N.
    let min_power = (MIN_AMPLITUDE * n / 2.0).powi(2);
    if pr < min_power || pc < min_power {
        return None;
    }
    if pc > pr * NORMAL_TWIST || pr > pc * REVERSE_TWIST {
        return None;
    }
    if rows
        .iter()
        .enumerate()
        .any(|(i, &p)| i != r && p * RELATIVE_PEAK > pr)
        || cols
            .iter()
            .enumerate()
            .any(|(i, &p)| i != c && p * RELATIVE_PEAK > pc)
    {
        return None;
    }
    // Tone energy estimate: 2P/N per tone, against the block's energy.
    if 2.0 * (pr + pc) / n < TONE_SHARE * energy {
        return None;
    }
    // Second harmonics. The harmonics of 697 and 770 Hz lie within a bin of the 1336 and 1477 Hz
    // column tones, whose leakage would fail the check, so those two are judged by the energy
    // share alone.
    if r >= 2 && goertzel(x, 2.0 * ROWS[r]) > pr * HARMONIC {
        return None;
    }
    if goertzel(x, 2.0 * COLS[c]) > pc * HARMONIC {
        return None;
    }
    Some(KEYPAD[r][c])
}

/// A digit found in the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InbandDigit {
    /// The digit heard (`0`-`9`, `*`, `#`, `A`-`D`).
    pub digit: char,
    /// Sample index (since the detector started) where the tone began.
    pub start_sample: u64,
}

/// In-band DTMF detector on 8 kHz PCM. Feed any number of samples at a time.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    buf: Vec<f32>,
    samples_seen: u64,
    candidate: Option<char>,
    run: u32,
    misses: u32,
    last_reported: Option<char>,
    min_blocks: u32,
    gap_blocks: u32,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    /// Three blocks (38 ms) to accept a digit, two blocks (25 ms) of gap to re-arm.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(BLOCK),
            samples_seen: 0,
            candidate: None,
            run: 0,
            misses: 0,
            last_reported: None,
            min_blocks: 3,
            gap_blocks: 2,
        }
    }

    /// Process samples; returns the digits that completed their minimum duration in them.
    pub fn process(&mut self, samples: &[i16]) -> Vec<InbandDigit> {
        let mut found = Vec::new();
        let mut rest = samples;
        // Whole runs up to the end of the block at a time, not a push per sample: this runs
        // on every frame of every call that listens for in-band digits.
        while !rest.is_empty() {
            let (run, after) = rest.split_at((BLOCK - self.buf.len()).min(rest.len()));
            self.buf.extend(run.iter().map(|&s| f32::from(s)));
            self.samples_seen += run.len() as u64;
            rest = after;
            if self.buf.len() == BLOCK {
                let hit = classify_block(&self.buf);
                self.buf.clear();
                if let Some(d) = self.on_block(hit) {
                    found.push(d);
                }
            }
        }
        found
    }

    fn on_block(&mut self, hit: Option<char>) -> Option<InbandDigit> {
        match hit {
            None => {
                self.candidate = None;
                self.run = 0;
                self.misses += 1;
                if self.misses >= self.gap_blocks {
                    self.last_reported = None;
                }
                None
            }
            Some(d) => {
                self.misses = 0;
                if self.candidate == Some(d) {
                    self.run += 1;
                } else {
                    self.candidate = Some(d);
                    self.run = 1;
                }
                if self.run == self.min_blocks && self.last_reported != Some(d) {
                    self.last_reported = Some(d);
                    let start = self
                        .samples_seen
                        .saturating_sub(u64::from(self.run) * BLOCK as u64);
                    return Some(InbandDigit {
                        digit: d,
                        start_sample: start,
                    });
                }
                None
            }
        }
    }
}

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigitSource {
    /// An RFC 4733 telephone-event packet on the RTP stream.
    Rfc4733,
    /// Tones in the caller's audio, found by the Goertzel detector.
    Inband,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
}

impl DigitSource {
    fn index(self) -> usize {
        match self {
            DigitSource::Rfc4733 => 0,
            DigitSource::Inband => 1,
            DigitSource::SipInfo => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Press {
    digit: char,
    at: Instant,
    sources: [bool; 3],
}

/// Merges digits from every source into one stream of key presses: a digit that another source
/// already reported within the window is the same press and is dropped. Each source is trusted to
/// report a press once, so two reports from the same source are two presses.
#[derive(Debug, Clone)]
pub struct DtmfMerger {
    window: Duration,
    recent: VecDeque<Press>,
}

impl DtmfMerger {
    /// A merger that counts reports of one digit within `window` as one press.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            recent: VecDeque::new(),
        }
    }

    /// A digit from a source at a time: `Some(digit)` when it is a new key press.
    pub fn push(&mut self, digit: char, at: Instant, source: DigitSource) -> Option<char> {
        let digit = digit.to_ascii_uppercase();
        let window = self.window;
        let close = |p: &Press| {
            let d = if p.at > at { p.at - at } else { at - p.at };
            d <= window
        };
        // Forget presses too old to match anything again (keep a short history regardless).
        while self.recent.len() > 32
            || self
                .recent
                .front()
                .is_some_and(|p| at > p.at && at - p.at > window * 4)
        {
            self.recent.pop_front();
        }
        let i = source.index();
        if let Some(p) = self
            .recent
            .iter_mut()
            .find(|p| p.digit == digit && !p.sources[i] && close(p))
        {
            p.sources[i] = true;
            tracing::trace!(%digit, ?source, "duplicate DTMF from a second path");
            return None;
        }
        let mut sources = [false; 3];
        sources[i] = true;
        self.recent.push_back(Press { digit, at, sources });
        Some(digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ms` of a DTMF pair at amplitude `amp` for each tone.
    fn tone(digit: char, ms: usize, row_amp: f32, col_amp: f32) -> Vec<i16> {
        let (mut fr, mut fc) = (0.0, 0.0);
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, &d) in row.iter().enumerate() {
                if d == digit {
                    fr = ROWS[r];
                    fc = COLS[c];
                }
            }
        }
        mix(&[(fr, row_amp), (fc, col_amp)], ms)
    }

    fn mix(parts: &[(f32, f32)], ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v: f32 = parts
                    .iter()
                    .map(|(f, a)| a * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum();
                v.clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    /// Deterministic white noise (xorshift).
    fn noise(ms: usize, amp: f32, seed: u32) -> Vec<i16> {
        let mut s = seed.max(1);
        (0..ms * 8)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                ((s as f32 / u32::MAX as f32) * 2.0 - 1.0) * amp
            })
            .map(|v| v as i16)
            .collect()
    }

    fn detect(signal: &[i16]) -> String {
        let mut d = InbandDetector::new();
        // Feed in 20 ms frames as the call does.
        signal
            .chunks(160)
            .flat_map(|c| d.process(c))
            .map(|d| d.digit)
            .collect()
    }

    #[test]
    fn detects_every_key() {
        for digit in "123A456B789C*0#D".chars() {
            let mut s = silence(30);
            s.extend(tone(digit, 80, 6000.0, 7000.0));
            s.extend(silence(60));
            assert_eq!(detect(&s), digit.to_string(), "digit {digit}");
        }
    }

    #[test]
    fn detects_a_sequence_with_short_gaps_and_noise() {
        let mut s = Vec::new();
        for digit in "12345".chars().chain("5590#".chars()) {
            s.extend(tone(digit, 60, 4000.0, 5000.0));
            s.extend(silence(50));
        }
        let n = noise(s.len() / 8, 300.0, 7);
        let s: Vec<i16> = s.iter().zip(n).map(|(a, b)| a.saturating_add(b)).collect();
        assert_eq!(detect(&s), "123455590#");
    }

    #[test]
    fn long_press_counts_once_and_start_is_reported() {
        let mut s = silence(100);
        s.extend(tone('7', 1500, 5000.0, 5000.0));
        let mut d = InbandDetector::new();
        let found = d.process(&s);
        assert_eq!(found.len(), 1);
        let start = found[0].start_sample as i64;
        assert!((start - 800).abs() <= BLOCK as i64, "{start}");
    }

    #[test]
    fn too_short_and_too_weak_tones_are_ignored() {
        let mut s = tone('5', 20, 6000.0, 6000.0);
        s.extend(silence(100));
        s.extend(tone('5', 200, 150.0, 150.0));
        assert_eq!(detect(&s), "");
    }

    #[test]
    fn twist_limits() {
        // Column 6 dB stronger: accepted; 12 dB: rejected. Row 3 dB stronger accepted, 6 dB not.
        assert_eq!(detect(&tone('8', 100, 2000.0, 4000.0)), "8");
        assert_eq!(detect(&tone('8', 100, 1000.0, 4000.0)), "");
        assert_eq!(detect(&tone('8', 100, 4000.0, 2900.0)), "8");
        assert_eq!(detect(&tone('8', 100, 4000.0, 2000.0)), "");
    }

    #[test]
    fn speech_like_and_noise_do_not_trigger() {
        // White noise, loud and quiet.
        assert_eq!(detect(&noise(2000, 20000.0, 1)), "");
        assert_eq!(detect(&noise(2000, 2000.0, 3)), "");
        // A single DTMF frequency, and two from the same group.
        assert_eq!(detect(&mix(&[(697.0, 8000.0)], 500)), "");
        assert_eq!(detect(&mix(&[(697.0, 6000.0), (852.0, 6000.0)], 500)), "");
        assert_eq!(detect(&mix(&[(1209.0, 6000.0), (1477.0, 6000.0)], 500)), "");
        // Other frequencies.
        assert_eq!(
            detect(&mix(
                &[(500.0, 6000.0), (1000.0, 6000.0), (1500.0, 6000.0)],
                500
            )),
            ""
        );
        // A valid pair drowned in other energy (music, speech over a tone).
        assert_eq!(
            detect(&mix(
                &[(852.0, 3000.0), (1336.0, 3000.0), (400.0, 6000.0)],
                500
            )),
            ""
        );
        // Vowel-like harmonic series, f0 sweeping through the DTMF region's subharmonics.
        for f0 in [100.0f32, 116.0, 139.0, 174.0, 232.0, 348.5, 426.0] {
            let parts: Vec<(f32, f32)> = (1..20)
                .map(|k| {
                    let f = f0 * k as f32;
                    // Formant-ish envelope peaking near 700 and 1200 Hz.
                    let env = 4000.0 / (1.0 + ((f - 700.0) / 200.0).powi(2))
                        + 3000.0 / (1.0 + ((f - 1200.0) / 250.0).powi(2));
                    (f, env)
                })
                .filter(|(f, _)| *f < 3900.0)
                .collect();
            assert_eq!(detect(&mix(&parts, 600)), "", "f0 {f0}");
        }
        // A pair with strong second harmonics (a distorted, voice-like source).
        assert_eq!(
            detect(&mix(
                &[
                    (941.0, 5000.0),
                    (1209.0, 5000.0),
                    (1882.0, 3000.0),
                    (2418.0, 3000.0)
                ],
                300
            )),
            ""
        );
    }

    #[test]
    fn telephone_event_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Some(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
        assert_eq!(event_to_digit(11), Some('#'));
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('x'), None);
    }

    #[test]
    fn sender_emits_start_continuations_and_three_ends() {
        let p = telephone_event_packets('5', Duration::from_millis(100), 10);
        assert_eq!(p.len(), 4 + 3);
        assert!(p[0].marker);
        assert!(p[1..].iter().all(|e| !e.marker));
        let parsed: Vec<_> = p
            .iter()
            .map(|e| TelephoneEvent::parse(&e.payload).expect("event"))
            .collect();
        assert_eq!(
            parsed.iter().map(|e| e.duration).collect::<Vec<_>>(),
            vec![160, 320, 480, 640, 800, 800, 800]
        );
        assert_eq!(parsed.iter().filter(|e| e.end).count(), 3);
        assert!(parsed.iter().all(|e| e.event == 5 && e.volume == 10));
        assert!(telephone_event_packets('x', Duration::from_millis(100), 10).is_empty());
    }

    #[test]
    fn receiver_reports_once_per_event() {
        let mut rx = TelephoneEventReceiver::default();
        let packets = telephone_event_packets('9', Duration::from_millis(100), 10);
        let digits: Vec<char> = packets
            .iter()
            .filter_map(|p| rx.on_packet(1000, &p.payload))
            .collect();
        assert_eq!(digits, vec!['9']);
        // The same digit again is a new event with a new timestamp.
        let again: Vec<char> = packets
            .iter()
            .filter_map(|p| rx.on_packet(2600, &p.payload))
            .collect();
        assert_eq!(again, vec!['9']);
        // Late straggler of the first event: nothing.
        assert_eq!(rx.on_packet(1000, &packets[6].payload), None);
    }

    #[test]
    fn receiver_survives_lost_start_and_lost_ends() {
        let mut rx = TelephoneEventReceiver::default();
        let packets = telephone_event_packets('4', Duration::from_millis(100), 10);
        // Start (marker) lost, then continuations: reported at 40 ms duration.
        assert_eq!(rx.on_packet(5000, &packets[1].payload), Some('4'));
        assert_eq!(rx.on_packet(5000, &packets[2].payload), None);
        // Only end packets survive of a short event.
        let short = telephone_event_packets('1', Duration::from_millis(20), 10);
        let ends: Vec<char> = short[short.len() - 3..]
            .iter()
            .filter_map(|p| rx.on_packet(9000, &p.payload))
            .collect();
        assert_eq!(ends, vec!['1']);
        // A short start packet alone is not yet a digit.
        assert_eq!(rx.on_packet(12000, &packets[0].payload), None);
        // Events 16+ (flash, tones) and garbage are ignored.
        assert_eq!(rx.on_packet(13000, &[16, 0x80, 0, 160]), None);
        assert_eq!(rx.on_packet(13000, &[]), None);
    }

    #[test]
    fn merger_deduplicates_across_paths() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = DtmfMerger::new(Duration::from_millis(200));
        let mut out = String::new();
        let mut push = |d, t, s| {
            if let Some(c) = m.push(d, t, s) {
                out.push(c);
            }
        };
        // "5" by RFC 4733 and in-band, "5" again by both, "1" by SIP INFO only,
        // "2" in-band arriving before RFC 4733.
        push('5', ms(0), DigitSource::Rfc4733);
        push('5', ms(70), DigitSource::Inband);
        push('5', ms(220), DigitSource::Rfc4733);
        push('5', ms(290), DigitSource::Inband);
        push('1', ms(600), DigitSource::SipInfo);
        push('2', ms(900), DigitSource::Inband);
        push('2', ms(880), DigitSource::Rfc4733);
        // The same source twice is two presses.
        push('3', ms(1200), DigitSource::SipInfo);
        push('3', ms(1250), DigitSource::SipInfo);
        // Another source far outside the window is a new press.
        push('3', ms(2000), DigitSource::Rfc4733);
        assert_eq!(out, "5512333");
    }
}
