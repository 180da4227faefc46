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
//!
//! The slots are stored as a contiguous window, a `VecDeque` of optional slots whose first entry
//! is the next slot to play (before playout: the oldest one buffered), not as a map: every tick
//! plays the first slot, so playing is a `pop_front`, placing is an index, and no 320-byte frame
//! is moved along (a `BTreeMap` shifted the rest of its leaf on every removal of its first entry,
//! which showed in profiles at a thousand calls). The window spans only what is buffered, from the
//! playout point to the newest packet: a few slots, and at most `3 × depth + 2` present ones,
//! beyond which the oldest present are dropped as overflow. Unlike a map's, its span has to be
//! bounded too: once playing, the resync rule keeps it within `RESYNC_DISTANCE` plus that cap;
//! before playout, a packet that would stretch the buffered audio further restarts the buffer on
//! it (see [`JitterBuffer::push`]). A window stretched that far gives its memory back once it has
//! played out.

use std::collections::VecDeque;

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

/// A packet that, before playout, would stretch the window beyond [`JitterBuffer::max_span`].
#[derive(Debug)]
struct TooWide;

/// A fixed-depth reordering jitter buffer.
#[derive(Debug, Clone)]
pub(crate) struct JitterBuffer {
    depth: usize,
    /// Slots `front, front + 1, …`, `None` where nothing has arrived. The last entry is always
    /// present (or the window is empty); before playout so is the first.
    slots: VecDeque<Option<Slot>>,
    /// Slot number of `slots[0]`; once playing, the next slot to play.
    front: u64,
    /// Entries of `slots` that are present (what the overflow cap counts).
    present: usize,
    /// Extended timestamp of the stream's first packet: slot `n` holds the samples
    /// `base + 160n .. base + 160(n+1)`.
    base: Option<u64>,
    /// Highest extended timestamp seen (the reference for extending new ones).
    highest: Option<u64>,
    /// Whether playout has started (then `front` is the next slot to play).
    playing: bool,
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
            slots: VecDeque::new(),
            front: 0,
            present: 0,
            base: None,
            highest: None,
            playing: false,
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
        self.present
    }

    /// Present slots kept at most: beyond, the oldest are dropped as overflow.
    fn cap(&self) -> usize {
        self.depth * 3 + 2
    }

    /// The most slots the window spans (present or not): reordering within the resync distance
    /// plus a full buffer.
    fn max_span(&self) -> u64 {
        RESYNC_DISTANCE + self.cap() as u64
    }

    /// Slot number of the window's last entry, `None` when it is empty.
    fn back(&self) -> Option<u64> {
        (!self.slots.is_empty()).then(|| self.front + self.slots.len() as u64 - 1)
    }

    fn restart(&mut self) {
        self.slots.clear();
        self.front = 0;
        self.present = 0;
        self.base = None;
        self.highest = None;
        self.playing = false;
        self.waited = 0;
    }

    fn resync(&mut self) {
        self.stats.resyncs += 1;
        self.restart();
    }

    /// Add a received packet's decoded samples, sent at RTP `timestamp` (8 kHz units).
    ///
    /// Once playing, a packet more than `RESYNC_DISTANCE` slots from the playout point (ahead or
    /// behind) restarts the buffer on it. Before playout a map of slots could hold a packet however
    /// far ahead, but the window has to stay bounded: a packet that would leave the buffered audio
    /// (after overflow has dropped the oldest) spanning more than `RESYNC_DISTANCE + 3 × depth + 2`
    /// slots, over two seconds, restarts the buffer on it too, counted as a resync, as the same
    /// jump would once playing. That takes a jump that large within the first `depth` ticks of a
    /// stream (a sender restarting, a stray packet), or packets that far apart arriving together.
    /// The map played the few frames buffered before such a jump, then resynchronised on the
    /// jump's first packet after playout had begun, dropping those that had come before it; now
    /// the few older frames are dropped instead and the new stream plays from its first packet.
    pub(crate) fn push(&mut self, timestamp: u32, samples: &[i16]) -> PushOutcome {
        if samples.is_empty() {
            return PushOutcome::Duplicate;
        }
        let frame = FRAME_SAMPLES as u64;
        let reference = self.highest.unwrap_or(ORIGIN | u64::from(timestamp));
        let mut ext = extend_timestamp(reference, timestamp);
        let mut outcome = PushOutcome::Accepted;
        if let Some(base) = self.base
            && self.playing
        {
            let next = self.front;
            let slot = ext.saturating_sub(base) / frame;
            let playing_at = base + next * frame;
            if ext + RESYNC_DISTANCE * frame < playing_at || slot > next + RESYNC_DISTANCE {
                self.resync();
                outcome = PushOutcome::Resynchronised;
                ext = ORIGIN | u64::from(timestamp);
            }
        }
        let base = *self.base.get_or_insert(ext);
        let offset = if ext < base {
            if self.playing || base - ext >= RESYNC_DISTANCE * frame {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
            // Older than the stream's first packet, before playout: it just joins earlier.
            // Renumbering the slots is moving the window's first slot number along.
            let shift = (base - ext).div_ceil(frame);
            let new_base = base - shift * frame;
            self.front += shift;
            self.base = Some(new_base);
            ext - new_base
        } else {
            ext - base
        };
        let outcome = match self.place(offset, samples, outcome) {
            Ok(placed) => placed,
            Err(TooWide) => {
                self.resync();
                ext = ORIGIN | u64::from(timestamp);
                self.base = Some(ext);
                // Alone in the window a packet always fits (overflow keeps its newest slots).
                self.place(0, samples, PushOutcome::Resynchronised)
                    .unwrap_or(PushOutcome::Resynchronised)
            }
        };
        if outcome != PushOutcome::Late && outcome != PushOutcome::Duplicate {
            self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        }
        outcome
    }

    /// Write samples starting `offset` samples after the base into their slots. Before playout,
    /// a packet that would stretch the window too far is refused, with nothing changed.
    fn place(
        &mut self,
        offset: u64,
        samples: &[i16],
        outcome: PushOutcome,
    ) -> Result<PushOutcome, TooWide> {
        let frame = FRAME_SAMPLES as u64;
        let first = offset / frame;
        let last = (offset + samples.len() as u64 - 1) / frame;
        if self.playing && last < self.front {
            self.stats.late += 1;
            return Ok(PushOutcome::Late);
        }
        // The slots this packet writes: none before the playout point.
        let lo = if self.playing {
            first.max(self.front)
        } else {
            first
        };
        let (buffered, complete) = self.count_buffered(lo, last);
        let written = last - lo + 1;
        if complete == written {
            self.stats.duplicate += 1;
            return Ok(PushOutcome::Duplicate);
        }
        // Overflow: the sender runs faster than our clock, or a burst arrived; keep the newest.
        // The slots dropped are the oldest `excess` of those buffered and those written, worked
        // out before writing so that the window never holds what is dropped at once.
        let excess = (self.present as u64 + written - buffered).saturating_sub(self.cap() as u64);
        let dropped = (excess > 0).then(|| self.oldest(excess, lo, last));
        if !self.playing {
            let low = match dropped {
                Some((_, kept)) => kept,
                None => self.back().map_or(lo, |_| lo.min(self.front)),
            };
            let high = self.back().map_or(last, |back| back.max(last));
            if high - low + 1 > self.max_span() {
                return Err(TooWide);
            }
        }
        let mut lo = lo;
        if let Some((newest_dropped, kept)) = dropped {
            self.stats.overflow += excess;
            // Playing resumes after the newest slot dropped; before playout the window starts at
            // the oldest slot kept.
            let keep_from = if self.playing {
                newest_dropped + 1
            } else {
                kept
            };
            while self.front < keep_from {
                match self.slots.pop_front() {
                    Some(slot) => {
                        self.present -= usize::from(slot.is_some());
                        self.front += 1;
                    }
                    None => self.front = keep_from,
                }
            }
            lo = lo.max(newest_dropped + 1);
        }
        // Copy slot by slot: one index per 20 ms, not per sample.
        let mut i = (lo * frame).saturating_sub(offset) as usize;
        while i < samples.len() {
            let at = offset + i as u64;
            let start = (at % frame) as usize;
            let len = (FRAME_SAMPLES - start).min(samples.len() - i);
            let slot = self.slot_mut(at / frame);
            slot.frame[start..start + len].copy_from_slice(&samples[i..i + len]);
            slot.filled += len;
            i += len;
        }
        debug_assert!(self.slots.len() as u64 <= self.max_span());
        Ok(outcome)
    }

    /// Of the slots `lo..=last`, how many are present and how many complete.
    fn count_buffered(&self, lo: u64, last: u64) -> (u64, u64) {
        let Some(back) = self.back() else {
            return (0, 0);
        };
        let (from, to) = (lo.max(self.front), last.min(back));
        if from > to {
            return (0, 0);
        }
        let range = (from - self.front) as usize..=(to - self.front) as usize;
        self.slots
            .range(range)
            .flatten()
            .fold((0, 0), |(present, complete), slot| {
                (
                    present + 1,
                    complete + u64::from(slot.filled >= FRAME_SAMPLES),
                )
            })
    }

    /// Overflow: the slot numbers of the `excess` oldest of the present slots and the written
    /// slots `lo..=last` together: the newest of them, and the oldest of the rest (there is one:
    /// `excess` leaves `cap` slots).
    fn oldest(&self, mut excess: u64, lo: u64, last: u64) -> (u64, u64) {
        // The first present slot at or after window index `from`.
        let present_from = |from: usize| {
            self.slots
                .range(from..)
                .position(Option::is_some)
                .map(|i| self.front + (from + i) as u64)
        };
        let mut present = present_from(0);
        let mut written = lo;
        let mut dropped = lo;
        loop {
            let next = match present {
                Some(p) if written <= last => p.min(written),
                Some(p) => p,
                None => {
                    // Only written slots left: take the rest of the excess from them at once.
                    if excess > 0 {
                        written += excess;
                        dropped = written - 1;
                    }
                    return (dropped, written);
                }
            };
            if excess == 0 {
                return (dropped, next);
            }
            dropped = next;
            excess -= 1;
            if present == Some(next) {
                present = present_from((next - self.front) as usize + 1);
            }
            if written <= last && written == next {
                written += 1;
            }
        }
    }

    /// The slot `n`, created (as silence, nothing filled) if it is not buffered. Once playing,
    /// `n` is at or after the playout point.
    fn slot_mut(&mut self, n: u64) -> &mut Slot {
        if self.slots.is_empty() && !self.playing {
            self.front = n;
        }
        if n < self.front {
            // Before playout: a packet older than everything buffered.
            for _ in n..self.front {
                self.slots.push_front(None);
            }
            self.front = n;
        }
        let index = (n - self.front) as usize;
        while self.slots.len() <= index {
            self.slots.push_back(None);
        }
        let entry = &mut self.slots[index];
        if entry.is_none() {
            self.present += 1;
        }
        entry.get_or_insert_with(|| Slot {
            frame: SILENCE,
            filled: 0,
        })
    }

    /// One 20 ms playout tick. `None` until playout has started (nothing received yet, or still
    /// filling the reorder window); afterwards always a frame.
    pub(crate) fn pop(&mut self) -> Option<Playout> {
        if !self.playing {
            if self.present == 0 {
                return None;
            }
            self.waited += 1;
            if self.waited < self.depth {
                return None;
            }
            // The window starts at the oldest slot buffered.
            self.playing = true;
        }
        // The first slot is the one to play (nothing before the playout point is kept). Its frame
        // is copied once, to `last`, and the slot dropped where it lies.
        let received = match self.slots.front() {
            Some(Some(slot)) => {
                self.last = slot.frame;
                true
            }
            _ => false,
        };
        self.slots.pop_front();
        self.front += 1;
        let keep = self.cap() + 1;
        if self.slots.capacity() > 4 * keep && self.slots.len() < keep {
            // A jump stretched the window; it has played out, so give the memory back.
            self.slots.shrink_to(keep);
        }
        if received {
            self.present -= 1;
            self.repeats = 0;
            self.stats.played += 1;
            Some(Playout {
                frame: self.last,
                received: true,
            })
        } else {
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

    // The buffer as it was with a `BTreeMap` of slots, kept as the reference the window is
    // checked against (`window_matches_the_map_reference`).

    #[derive(Debug, Clone)]
    struct MapSlot {
        frame: Frame,
        filled: usize,
    }

    #[derive(Debug, Clone)]
    struct MapBuffer {
        depth: usize,
        slots: std::collections::BTreeMap<u64, MapSlot>,
        base: Option<u64>,
        highest: Option<u64>,
        next: Option<u64>,
        waited: usize,
        last: Frame,
        repeats: u32,
        stats: JitterStats,
    }

    impl MapBuffer {
        fn new(depth: usize) -> Self {
            Self {
                depth: depth.max(1),
                slots: std::collections::BTreeMap::new(),
                base: None,
                highest: None,
                next: None,
                waited: 0,
                last: SILENCE,
                repeats: MAX_REPEATS,
                stats: JitterStats::default(),
            }
        }

        fn restart(&mut self) {
            self.slots.clear();
            self.base = None;
            self.highest = None;
            self.next = None;
            self.waited = 0;
        }

        /// Slots from the oldest buffered to the newest, inclusive.
        fn span(&self) -> u64 {
            match (self.slots.keys().next(), self.slots.keys().next_back()) {
                (Some(first), Some(last)) => last - first + 1,
                _ => 0,
            }
        }

        fn push(&mut self, timestamp: u32, samples: &[i16]) -> PushOutcome {
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
            let mut i = 0usize;
            while i < samples.len() {
                let at = offset + i as u64;
                let n = at / frame;
                let start = (at % frame) as usize;
                let len = (FRAME_SAMPLES - start).min(samples.len() - i);
                if n >= playable_from {
                    let slot = self.slots.entry(n).or_insert_with(|| MapSlot {
                        frame: SILENCE,
                        filled: 0,
                    });
                    slot.frame[start..start + len].copy_from_slice(&samples[i..i + len]);
                    slot.filled += len;
                }
                i += len;
            }
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

        fn pop(&mut self) -> Option<Playout> {
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

    /// splitmix64: the property test's streams are reproducible from their seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, per_mille: u64) -> bool {
            self.below(1000) < per_mille
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push(u32, Vec<i16>),
        Pop,
    }

    /// A pseudo-random stream as a trunk might deliver it, ticks interleaved: 10, 20 or 30 ms
    /// packets (sometimes odd or very long ones, sometimes empty), a start anywhere including
    /// just before the 32-bit wrap, loss, reordering, duplicates, bursts held back and released,
    /// a sender clock running fast or slow, and jumps of the timestamp either way, from a few
    /// slots to millions of samples (some of them before playout has started).
    fn stream(seed: u64) -> (usize, Vec<Step>) {
        let mut r = Rng(seed);
        let depth = 1 + r.below(5) as usize;
        let mut ts = if r.chance(300) {
            u32::MAX - r.below(30_000) as u32
        } else {
            r.next() as u32
        };
        let ptimes = [80u64, 160, 240];
        let mut ptime = ptimes[r.below(3) as usize];
        let (loss, reorder, dup, jump) = (r.below(200), r.below(400), r.below(150), r.below(30));
        let early_jump = r.chance(200);
        let drift = r.below(5) as i64 - 2;
        let mut steps = Vec::new();
        let mut pending: Vec<(u64, u32, Vec<i16>)> = Vec::new();
        let mut owed = 0i64;
        let mut hold_until = 0u64;
        for tick in 0..(100 + r.below(300)) {
            owed += 160 + drift * 16;
            if r.chance(5) {
                // The sender stalls, then catches up in a burst.
                hold_until = tick + 1 + r.below(20);
            }
            if r.chance(5) {
                ptime = ptimes[r.below(3) as usize];
            }
            while owed >= ptime as i64 {
                let len = if r.chance(10) {
                    1 + r.below(479) as usize
                } else if r.chance(3) {
                    1_000 + r.below(25_000) as usize
                } else if r.chance(3) {
                    0
                } else {
                    ptime as usize
                };
                // An empty packet takes no time; the sender still spends its turn.
                let spent = if len == 0 { ptime as usize } else { len };
                let jumped = r.chance(jump) || (early_jump && tick < 8 && r.chance(300));
                if jumped {
                    let slots: i64 = match r.below(6) {
                        0 => r.below(60) as i64,
                        1 => 60 + r.below(120) as i64,
                        2 => 10_000 + r.below(1_000_000) as i64,
                        3 => -(r.below(60) as i64),
                        4 => -60 - r.below(120) as i64,
                        _ => -10_000 - r.below(1_000_000) as i64,
                    };
                    let samples = slots * 160 + r.below(160) as i64 - 80;
                    ts = ts.wrapping_add(samples as u32);
                }
                let samples: Vec<i16> = (0..len)
                    .map(|i| ts.wrapping_add(i as u32) as i16 | 1)
                    .collect();
                if !r.chance(loss) {
                    let delay = if r.chance(reorder) { r.below(7) } else { 0 };
                    if r.chance(dup) {
                        pending.push((tick + r.below(12), ts, samples.clone()));
                    }
                    pending.push((tick + delay, ts, samples));
                }
                ts = ts.wrapping_add(len as u32);
                owed -= spent as i64;
            }
            if tick >= hold_until {
                let due: Vec<_>;
                (due, pending) = pending.into_iter().partition(|p| p.0 <= tick);
                steps.extend(due.into_iter().map(|(_, ts, s)| Step::Push(ts, s)));
            }
            steps.push(Step::Pop);
        }
        (depth, steps)
    }

    /// The window holds exactly what the map held: the same slots, frames and fill counts.
    fn assert_same_state(window: &JitterBuffer, map: &MapBuffer, at: (u64, usize)) {
        let (seed, step) = at;
        let buffered = window
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (window.front + i as u64, s)));
        assert!(
            buffered
                .zip(map.slots.iter())
                .all(|((n, a), (&m, b))| n == m && a.filled == b.filled && a.frame == b.frame),
            "seed {seed} step {step}: slots differ"
        );
        assert_eq!(
            window.len(),
            map.slots.len(),
            "seed {seed} step {step}: slot count"
        );
        assert_eq!(window.stats(), map.stats, "seed {seed} step {step}: stats");
        assert_eq!(window.base, map.base, "seed {seed} step {step}: base");
        assert_eq!(
            window.highest, map.highest,
            "seed {seed} step {step}: highest"
        );
        assert_eq!(
            window.playing.then_some(window.front),
            map.next,
            "seed {seed} step {step}: next"
        );
        assert_eq!(
            (window.waited, window.repeats),
            (map.waited, map.repeats),
            "seed {seed} step {step}"
        );
        assert!(
            window.slots.len() as u64 <= window.max_span(),
            "seed {seed} step {step}: window of {} slots",
            window.slots.len()
        );
        if !window.playing {
            assert!(
                window.slots.front().is_none_or(Option::is_some),
                "seed {seed} step {step}: before playout the window starts at a buffered slot"
            );
        }
        assert!(
            window.slots.back().is_none_or(Option::is_some),
            "seed {seed} step {step}: the window ends at a buffered slot"
        );
    }

    #[test]
    fn window_matches_the_map_reference() {
        let mut outcomes = [0usize; 4];
        let (mut too_wide, mut popped) = (0, 0);
        let mut totals = JitterStats::default();
        for seed in 0..1500u64 {
            let (depth, steps) = stream(seed);
            let mut window = JitterBuffer::new(depth);
            let mut map = MapBuffer::new(depth);
            for (k, step) in steps.iter().enumerate() {
                let at = (seed, k);
                match step {
                    Step::Push(ts, samples) => {
                        // Before playout the window refuses what would stretch it too far,
                        // where the map took it: the one documented difference.
                        let wide = map.next.is_none() && {
                            let mut probe = map.clone();
                            probe.push(*ts, samples);
                            probe.span() > window.max_span()
                        };
                        let got = window.push(*ts, samples);
                        if wide {
                            too_wide += 1;
                            assert_eq!(got, PushOutcome::Resynchronised, "{at:?}");
                            map.stats.resyncs += 1;
                            map.restart();
                            assert_eq!(map.push(*ts, samples), PushOutcome::Accepted, "{at:?}");
                        } else {
                            assert_eq!(got, map.push(*ts, samples), "{at:?}");
                        }
                        outcomes[got as usize] += 1;
                    }
                    Step::Pop => {
                        let got = window.pop();
                        popped += usize::from(got.is_some());
                        assert_eq!(got, map.pop(), "{at:?}");
                    }
                }
                assert_same_state(&window, &map, at);
            }
            let s = window.stats();
            totals.played += s.played;
            totals.concealed += s.concealed;
            totals.late += s.late;
            totals.duplicate += s.duplicate;
            totals.overflow += s.overflow;
            totals.resyncs += s.resyncs;
        }
        // The streams do reach every case.
        assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
        assert!(too_wide > 10, "{too_wide}");
        assert!(popped > 100_000, "{popped}");
        let t = totals;
        assert!(
            [
                t.played,
                t.concealed,
                t.late,
                t.duplicate,
                t.overflow,
                t.resyncs
            ]
            .iter()
            .all(|&n| n > 100),
            "{t:?}"
        );
    }

    #[test]
    fn a_far_jump_before_playout_restarts_on_it() {
        let mut jb = JitterBuffer::new(3);
        assert_eq!(jb.push(ts(0), &frame_of(1)), PushOutcome::Accepted);
        assert_eq!(jb.push(ts(1), &frame_of(2)), PushOutcome::Accepted);
        // Five million samples ahead, before playout: a map could hold both; the window
        // restarts on the jump rather than spanning ten minutes.
        let jump = ts(0).wrapping_add(5_000_000);
        assert_eq!(jb.push(jump, &frame_of(9)), PushOutcome::Resynchronised);
        assert_eq!(jb.stats().resyncs, 1);
        assert_eq!(jb.len(), 1);
        assert!(jb.slots.capacity() <= 16, "{}", jb.slots.capacity());
        assert_eq!(
            jb.push(jump.wrapping_add(160), &frame_of(10)),
            PushOutcome::Accepted
        );
        assert_eq!(firsts(&mut jb, 4), vec![None, None, Some(9), Some(10)]);
        // Within the span the stream is kept as before: this one plays after a gap.
        let mut jb = JitterBuffer::new(2);
        jb.push(ts(0), &frame_of(1));
        assert_eq!(jb.push(ts(90), &frame_of(2)), PushOutcome::Accepted);
        let out = firsts(&mut jb, 92);
        assert_eq!((out[1], out[91]), (Some(1), Some(2)));
        assert_eq!(jb.stats().resyncs, 0);
    }

    #[test]
    fn the_window_stays_small_and_gives_back_a_stretch() {
        let mut jb = JitterBuffer::new(3);
        for n in 0..50u32 {
            jb.push(ts(n), &frame_of(1));
            jb.pop();
        }
        assert!(jb.slots.capacity() <= 8, "{}", jb.slots.capacity());
        // A packet 100 slots ahead while playing stretches the window across the gap ...
        jb.push(ts(147), &frame_of(2));
        assert!(jb.slots.len() > 90, "{}", jb.slots.len());
        // ... until it has played out.
        for _ in 0..100 {
            jb.pop();
        }
        assert!(jb.slots.capacity() <= 16, "{}", jb.slots.capacity());
        // A packet of ten seconds keeps only its newest slots, never holding all of them.
        let overflow = jb.stats().overflow;
        assert_eq!(jb.push(ts(200), &ramp(0, 80_000)), PushOutcome::Accepted);
        assert_eq!(jb.slots.len(), jb.cap());
        assert_eq!(jb.stats().overflow - overflow, 500 - jb.cap() as u64);
        assert_eq!(jb.stats().resyncs, 0);
    }
}
