//! Jitter buffer: puts received audio back in order and plays it out one 20 ms frame per tick.
//!
//! Phone networks deliver G.711 with little jitter but some reordering and loss; the IVR needs a
//! steady 20 ms frame clock (for DTMF detection, VAD and recording, which all assume continuous
//! audio). So this is a fixed-depth buffer with a short reorder window rather than an adaptive
//! one: playout starts once the first packet has waited `depth` ticks, then every tick emits the
//! next 20 ms slot, or a concealment frame when it is missing (the last frame repeated at
//! decreasing level for up to three ticks, then silence: long enough to hide a lost packet, short
//! enough not to buzz). Audio older than the playout point is late and dropped, copies are
//! dropped, and a jump far ahead (a sender restart, a long silence-suppressed pause) resynchronises
//! rather than playing seconds of concealment.
//!
//! Audio is placed by RTP timestamp, not by sequence number, so packets of any duration work:
//! a trunk that sends 30 ms packets (240 samples, common enough, and what SIPp's sample
//! recordings use) or 10 ms ones fills the 20 ms slots exactly, where a one-packet-one-frame
//! buffer would play 30 ms packets too fast, cut a third of each and count most as late.
//! Timestamps are extended to 64 bits so the 32-bit wrap-around is seamless, and counted from the
//! stream's first packet so that slot boundaries follow the sender's packets.

use std::collections::BTreeMap;

use super::{FRAME_SAMPLES, Frame, SILENCE};

/// How a pushed packet was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Accepted,
    /// Already buffered (or already played at this position).
    Duplicate,
    /// Arrived after its playout time.
    Late,
    /// Far away from the stream: the buffer restarted on it.
    Resynchronised,
}

/// Counters for statistics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JitterStats {
    pub(crate) played: u64,
    pub(crate) concealed: u64,
    pub(crate) late: u64,
    pub(crate) duplicate: u64,
    /// Frames dropped because the buffer overflowed (sender faster than our clock).
    pub(crate) overflow: u64,
    pub(crate) resyncs: u64,
}

/// A frame the buffer played and whether it was real audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Playout {
    pub(crate) frame: Frame,
    /// `false` for concealment (repetition or silence).
    pub(crate) received: bool,
}

/// Distance (in 20 ms slots) beyond which a packet is treated as a new stream rather than
/// reordering.
const RESYNC_DISTANCE: u64 = 100;
/// Concealment ticks with attenuated repetition before falling back to silence.
const MAX_REPEATS: u32 = 3;
/// Where extended timestamps start: far enough from 0 that a packet older than the first one
/// never underflows.
const ORIGIN: u64 = 1 << 40;

/// One 20 ms slot being filled.
#[derive(Debug, Clone)]
struct Slot {
    frame: Frame,
    /// Samples written (a slot is complete at [`FRAME_SAMPLES`]).
    filled: usize,
}

/// A fixed-depth reordering jitter buffer.
#[derive(Debug, Clone)]
pub(crate) struct JitterBuffer {
    depth: usize,
    slots: BTreeMap<u64, Slot>,
    /// Extended timestamp of the stream's first packet: slot `n` holds the samples
    /// `base + 160n .. base + 160(n+1)`.
    base: Option<u64>,
    /// Highest extended timestamp seen (the reference for extending new ones).
    highest: Option<u64>,
    /// Next slot to play; `None` until playout starts.
    next: Option<u64>,
    /// Ticks waited since the first packet, before playout starts.
    waited: usize,
    last: Frame,
    repeats: u32,
    stats: JitterStats,
}

/// Extend a wrapping counter of `bits` bits to 64 bits next to a reference (RFC 3550 A.1
/// idea): the candidate nearest the reference, across a wrap either way.
fn extend_wrapping(reference: u64, value: u64, bits: u32) -> u64 {
    let period = 1u64 << bits;
    let half = period >> 1;
    let cycle = reference & !(period - 1);
    let low = reference & (period - 1);
    let candidate = cycle | value;
    if value < low && low - value > half {
        candidate + period
    } else if value > low && value - low > half && cycle > 0 {
        candidate - period
    } else {
        candidate
    }
}

/// Extend a 32-bit RTP timestamp to 64 bits next to a reference.
pub(crate) fn extend_timestamp(reference: u64, ts: u32) -> u64 {
    extend_wrapping(reference, u64::from(ts), 32)
}

/// Extend a 16-bit sequence number to 64 bits next to a reference.
pub(crate) fn extend_seq(reference: u64, seq: u16) -> u64 {
    extend_wrapping(reference, u64::from(seq), 16)
}

impl JitterBuffer {
    /// A buffer holding `depth` frames (the reorder window) before playout.
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            depth: depth.max(1),
            slots: BTreeMap::new(),
            base: None,
            highest: None,
            next: None,
            waited: 0,
            last: SILENCE,
            repeats: MAX_REPEATS,
            stats: JitterStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> JitterStats {
        self.stats
    }

    /// 20 ms slots holding audio (tests check the buffer stays bounded).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn restart(&mut self) {
        self.slots.clear();
        self.base = None;
        self.highest = None;
        self.next = None;
        self.waited = 0;
    }

    /// Add a received packet's decoded samples, sent at RTP `timestamp` (8 kHz units).
    pub(crate) fn push(&mut self, timestamp: u32, samples: &[i16]) -> PushOutcome {
        if samples.is_empty() {
            return PushOutcome::Duplicate;
        }
        let reference = self.highest.unwrap_or(ORIGIN | u64::from(timestamp));
        let mut ext = extend_timestamp(reference, timestamp);
        let mut outcome = PushOutcome::Accepted;
        if let (Some(next), Some(base)) = (self.next, self.base) {
            let slot = ext.saturating_sub(base) / FRAME_SAMPLES as u64;
            let frame = FRAME_SAMPLES as u64;
            let playing_at = base + next * frame;
            if ext + RESYNC_DISTANCE * frame < playing_at || slot > next + RESYNC_DISTANCE {
                self.stats.resyncs += 1;
                self.restart();
                outcome = PushOutcome::Resynchronised;
                ext = ORIGIN | u64::from(timestamp);
            }
        }
        let base = *self.base.get_or_insert(ext);
        if ext < base {
            // Older than the stream's first packet, before playout: it just joins earlier.
            if self.next.is_none() && base - ext < RESYNC_DISTANCE * FRAME_SAMPLES as u64 {
                let shift = (base - ext).div_ceil(FRAME_SAMPLES as u64);
                let new_base = base - shift * FRAME_SAMPLES as u64;
                self.slots = std::mem::take(&mut self.slots)
                    .into_iter()
                    .map(|(k, v)| (k + shift, v))
                    .collect();
                self.base = Some(new_base);
                return self.place(ext - new_base, samples, outcome);
            }
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        let outcome = self.place(ext - base, samples, outcome);
        if outcome != PushOutcome::Late && outcome != PushOutcome::Duplicate {
            self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        }
        outcome
    }

    /// Write samples starting `offset` samples after the base into their slots.
    fn place(&mut self, offset: u64, samples: &[i16], outcome: PushOutcome) -> PushOutcome {
        let frame = FRAME_SAMPLES as u64;
        let first = offset / frame;
        let last = (offset + samples.len() as u64 - 1) / frame;
        if let Some(next) = self.next
            && last < next
        {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        let playable_from = self.next.unwrap_or(0);
        let complete = |n: &u64| self.slots.get(n).is_some_and(|s| s.filled >= FRAME_SAMPLES);
        if (first.max(playable_from)..=last).all(|n| complete(&n)) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        // Copy slot by slot: one map lookup per 20 ms, not per sample.
        let mut i = 0usize;
        while i < samples.len() {
            let at = offset + i as u64;
            let n = at / frame;
            let start = (at % frame) as usize;
            let len = (FRAME_SAMPLES - start).min(samples.len() - i);
            if n >= playable_from {
                let slot = self.slots.entry(n).or_insert_with(|| Slot {
                    frame: SILENCE,
                    filled: 0,
                });
                slot.frame[start..start + len].copy_from_slice(&samples[i..i + len]);
                slot.filled += len;
            }
            i += len;
        }
        // Overflow: the sender runs faster than our clock, or a burst arrived; keep the newest.
        let cap = self.depth * 3 + 2;
        while self.slots.len() > cap {
            if let Some((&oldest, _)) = self.slots.iter().next() {
                self.slots.remove(&oldest);
                self.stats.overflow += 1;
                if let Some(next) = self.next.as_mut() {
                    *next = (*next).max(oldest + 1);
                }
            }
        }
        outcome
    }

    /// One 20 ms playout tick. `None` until playout has started (nothing received yet, or still
    /// filling the reorder window); afterwards always a frame.
    pub(crate) fn pop(&mut self) -> Option<Playout> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let (&first, _) = self.slots.iter().next()?;
                self.waited += 1;
                if self.waited < self.depth {
                    return None;
                }
                first
            }
        };
        // Anything older than `next` cannot be played any more.
        while let Some((&k, _)) = self.slots.iter().next() {
            if k >= next {
                break;
            }
            self.slots.remove(&k);
        }
        self.next = Some(next + 1);
        match self.slots.remove(&next).map(|s| s.frame) {
            Some(frame) => {
                self.last = frame;
                self.repeats = 0;
                self.stats.played += 1;
                Some(Playout {
                    frame,
                    received: true,
                })
            }
            None => {
                self.stats.concealed += 1;
                let frame = if self.repeats < MAX_REPEATS {
                    self.repeats += 1;
                    // Halve the level with each repetition.
                    let shift = self.repeats;
                    let mut f = self.last;
                    for s in f.iter_mut() {
                        *s >>= shift;
                    }
                    f
                } else {
                    SILENCE
                };
                Some(Playout {
                    frame,
                    received: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(v: i16) -> Vec<i16> {
        vec![v; FRAME_SAMPLES]
    }

    /// The timestamp of 20 ms packet `n` of a stream that starts at an arbitrary timestamp.
    fn ts(n: u32) -> u32 {
        0x1234_5678u32.wrapping_add(n * 160)
    }

    /// Play `ticks`, returning the first sample of each played frame (`None` for not-started).
    fn firsts(jb: &mut JitterBuffer, ticks: usize) -> Vec<Option<i16>> {
        (0..ticks).map(|_| jb.pop().map(|p| p.frame[0])).collect()
    }

    #[test]
    fn waits_for_the_window_then_plays_in_order() {
        let mut jb = JitterBuffer::new(3);
        assert_eq!(jb.pop(), None);
        // 1, 3, 2 arrive reordered within the window.
        assert_eq!(jb.push(ts(1), &frame_of(10)), PushOutcome::Accepted);
        assert_eq!(jb.pop(), None);
        assert_eq!(jb.push(ts(3), &frame_of(30)), PushOutcome::Accepted);
        assert_eq!(jb.pop(), None);
        assert_eq!(jb.push(ts(2), &frame_of(20)), PushOutcome::Accepted);
        assert_eq!(jb.push(ts(4), &frame_of(40)), PushOutcome::Accepted);
        assert_eq!(
            firsts(&mut jb, 4),
            vec![Some(10), Some(20), Some(30), Some(40)]
        );
        assert_eq!(jb.stats().played, 4);
    }

    #[test]
    fn a_packet_older_than_the_first_joins_before_playout() {
        let mut jb = JitterBuffer::new(3);
        jb.push(ts(5), &frame_of(50));
        jb.push(ts(4), &frame_of(40));
        jb.push(ts(6), &frame_of(60));
        assert_eq!(
            firsts(&mut jb, 5),
            vec![None, None, Some(40), Some(50), Some(60)]
        );
    }

    #[test]
    fn conceals_loss_with_attenuated_repeats_then_silence() {
        let mut jb = JitterBuffer::new(1);
        jb.push(ts(100), &frame_of(1000));
        jb.push(ts(106), &frame_of(600));
        let out: Vec<_> = (0..7).map(|_| jb.pop().expect("playing")).collect();
        let values: Vec<i16> = out.iter().map(|p| p.frame[0]).collect();
        assert_eq!(values, vec![1000, 500, 250, 125, 0, 0, 600]);
        assert_eq!(
            out.iter().map(|p| p.received).collect::<Vec<_>>(),
            vec![true, false, false, false, false, false, true]
        );
        assert_eq!(jb.stats().concealed, 5);
        assert_eq!(jb.stats().played, 2);
    }

    #[test]
    fn drops_duplicates_and_late_packets() {
        let mut jb = JitterBuffer::new(2);
        jb.push(ts(10), &frame_of(1));
        assert_eq!(jb.push(ts(10), &frame_of(1)), PushOutcome::Duplicate);
        jb.push(ts(11), &frame_of(2));
        assert_eq!(firsts(&mut jb, 3), vec![None, Some(1), Some(2)]);
        assert_eq!(jb.push(ts(10), &frame_of(1)), PushOutcome::Late);
        assert_eq!(jb.push(ts(11), &frame_of(2)), PushOutcome::Late);
        assert_eq!(jb.stats().late, 2);
        assert_eq!(jb.stats().duplicate, 1);
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut jb = JitterBuffer::new(2);
        let start = u32::MAX - 2 * 160 + 1;
        let at = |n: u32| start.wrapping_add(n * 160);
        let order = [0u32, 2, 1, 3, 5, 4, 6];
        let mut played = Vec::new();
        for &n in &order {
            jb.push(at(n), &frame_of(n as i16 + 1));
            if let Some(p) = jb.pop() {
                played.push(p.frame[0]);
            }
        }
        played.push(jb.pop().expect("playing").frame[0]);
        assert_eq!(played, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(jb.stats().concealed, 0);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn resynchronises_on_a_jump() {
        let mut jb = JitterBuffer::new(1);
        jb.push(ts(5), &frame_of(1));
        assert_eq!(jb.pop().map(|p| p.frame[0]), Some(1));
        assert_eq!(
            jb.push(ts(30000), &frame_of(9)),
            PushOutcome::Resynchronised
        );
        assert_eq!(jb.pop().map(|p| p.frame[0]), Some(9));
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn overflow_keeps_the_newest() {
        let mut jb = JitterBuffer::new(1);
        for n in 0..20u32 {
            jb.push(ts(n), &frame_of(n as i16));
        }
        assert!(jb.len() <= 5);
        assert!(jb.stats().overflow >= 15);
        let first = jb.pop().expect("playing").frame[0];
        assert!(first >= 15, "{first}");
    }

    #[test]
    fn extend_seq_handles_both_directions() {
        let base = 5u64 << 16;
        assert_eq!(extend_seq(base | 65535, 0), (6 << 16));
        assert_eq!(extend_seq(base | 1, 65535), (4 << 16) | 65535);
        assert_eq!(extend_seq(base | 100, 90), base | 90);
        assert_eq!(extend_seq(base | 100, 110), base | 110);
    }

    #[test]
    fn extend_timestamp_handles_both_directions() {
        let base = 5u64 << 32;
        assert_eq!(extend_timestamp(base | 0xFFFF_FFFF, 0), 6 << 32);
        assert_eq!(
            extend_timestamp(base | 1, u32::MAX),
            (4 << 32) | 0xFFFF_FFFF
        );
        assert_eq!(extend_timestamp(base | 1000, 900), base | 900);
        assert_eq!(extend_timestamp(base | 1000, 1160), base | 1160);
    }

    /// Samples of a ramp, numbered from `from`, so every sample's place can be checked.
    fn ramp(from: usize, n: usize) -> Vec<i16> {
        (from..from + n).map(|i| i as i16).collect()
    }

    #[test]
    fn thirty_ms_packets_fill_twenty_ms_frames_exactly() {
        let mut jb = JitterBuffer::new(2);
        let start = 4_000_000_000u32;
        let mut out = Vec::new();
        // 30 ms packets (240 samples) arrive every 30 ms; playout ticks every 20 ms.
        let mut sent = 0usize;
        for tick in 0..60 {
            let now_ms = tick * 20;
            while sent * 30 <= now_ms {
                let s = ramp(sent * 240, 240);
                assert_eq!(
                    jb.push(start.wrapping_add((sent * 240) as u32), &s),
                    PushOutcome::Accepted
                );
                sent += 1;
            }
            if let Some(p) = jb.pop() {
                assert!(p.received, "tick {tick}");
                out.extend_from_slice(&p.frame);
            }
        }
        assert!(out.len() >= 50 * 160, "{}", out.len());
        assert_eq!(out, ramp(0, out.len()), "samples out of place");
        let st = jb.stats();
        assert_eq!((st.late, st.concealed, st.duplicate), (0, 0, 0), "{st:?}");
    }

    #[test]
    fn ten_ms_packets_fill_twenty_ms_frames() {
        let mut jb = JitterBuffer::new(1);
        let mut out = Vec::new();
        for n in 0..20usize {
            jb.push(ts(0).wrapping_add((n * 80) as u32), &ramp(n * 80, 80));
            if n % 2 == 1
                && let Some(p) = jb.pop()
            {
                out.extend_from_slice(&p.frame);
            }
        }
        assert_eq!(out, ramp(0, 10 * 160));
    }

    #[test]
    fn a_thirty_ms_duplicate_is_dropped_and_a_half_late_packet_keeps_its_playable_part() {
        let mut jb = JitterBuffer::new(1);
        let t = |n: usize| ts(0).wrapping_add((n * 240) as u32);
        jb.push(t(0), &ramp(0, 240));
        jb.push(t(1), &ramp(240, 240));
        assert_eq!(jb.push(t(1), &ramp(240, 240)), PushOutcome::Duplicate);
        // Play slots 0..=2 (samples 0..480): everything so far.
        for _ in 0..3 {
            assert!(jb.pop().expect("playing").received);
        }
        // A packet covering slots 2 (played) and 3: slot 3's part is still taken.
        assert_eq!(jb.push(t(2) - 160, &ramp(320, 320)), PushOutcome::Accepted);
        let f = jb.pop().expect("playing");
        assert_eq!(f.frame.to_vec(), ramp(480, 160));
    }
}
