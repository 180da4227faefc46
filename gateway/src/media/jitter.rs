//! Jitter buffer: puts received frames back in order and plays them out one per 20 ms tick.
//!
//! Phone networks deliver G.711 with little jitter but some reordering and loss; the IVR needs a
//! steady 20 ms frame clock (for DTMF detection, VAD and recording, which all assume continuous
//! audio). So this is a fixed-depth buffer with a short reorder window rather than an adaptive
//! one: playout starts once the first packet has waited `depth` ticks, then every tick emits the
//! next sequence number's frame, or a concealment frame when it is missing (the last frame repeated
//! at decreasing level for up to three ticks, then silence: long enough to hide a lost packet,
//! short enough not to buzz). Packets older than the playout point are late and dropped, copies are
//! dropped, and a jump far ahead (a sender restart) resynchronises rather than playing minutes of
//! concealment. Sequence numbers are extended to 64 bits so wrap-around at 65535 is seamless.
//! Keyed by sequence number, it assumes one 20 ms frame per packet, which is what
//! [`super::sdp::negotiate`] asks for with `a=ptime:20`; other payload sizes are cut or padded.

use std::collections::BTreeMap;

use super::{FRAME_SAMPLES, Frame, SILENCE};

/// How a pushed packet was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
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
pub struct JitterStats {
    pub played: u64,
    pub concealed: u64,
    pub late: u64,
    pub duplicate: u64,
    /// Frames dropped because the buffer overflowed (sender faster than our clock).
    pub overflow: u64,
    pub resyncs: u64,
}

/// A frame the buffer played and whether it was real audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playout {
    pub frame: Frame,
    /// `false` for concealment (repetition or silence).
    pub received: bool,
}

/// Distance beyond which a packet is treated as a new stream rather than reordering.
const RESYNC_DISTANCE: u64 = 100;
/// Concealment ticks with attenuated repetition before falling back to silence.
const MAX_REPEATS: u32 = 3;

/// A fixed-depth reordering jitter buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    depth: usize,
    packets: BTreeMap<u64, Frame>,
    /// Highest extended sequence number seen (the reference for extending new ones).
    highest: Option<u64>,
    /// Next sequence number to play; `None` until playout starts.
    next: Option<u64>,
    /// Ticks waited since the first packet, before playout starts.
    waited: usize,
    last: Frame,
    repeats: u32,
    stats: JitterStats,
}

/// Extend a 16-bit sequence number to 64 bits next to a reference (RFC 3550 A.1 idea).
pub fn extend_seq(reference: u64, seq: u16) -> u64 {
    let cycle = reference & !0xFFFF;
    let low = reference & 0xFFFF;
    let seq = u64::from(seq);
    let candidate = cycle | seq;
    if seq < low && low - seq > 0x8000 {
        candidate + 0x1_0000
    } else if seq > low && seq - low > 0x8000 && cycle > 0 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

impl JitterBuffer {
    /// A buffer holding `depth` frames (the reorder window) before playout.
    pub fn new(depth: usize) -> Self {
        Self {
            depth: depth.max(1),
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            waited: 0,
            last: SILENCE,
            repeats: MAX_REPEATS,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Add a received packet's decoded samples.
    pub fn push(&mut self, seq: u16, samples: &[i16]) -> PushOutcome {
        let mut frame = SILENCE;
        let n = samples.len().min(FRAME_SAMPLES);
        frame[..n].copy_from_slice(&samples[..n]);

        // Start the 64-bit space high enough that a first packet followed by an older one
        // never underflows.
        let reference = self.highest.unwrap_or(1 << 32 | u64::from(seq));
        let ext = extend_seq(reference, seq);
        let mut outcome = PushOutcome::Accepted;

        if let Some(next) = self.next {
            if ext + RESYNC_DISTANCE < next || ext > next + RESYNC_DISTANCE {
                self.stats.resyncs += 1;
                self.packets.clear();
                self.next = None;
                self.waited = 0;
                self.highest = None;
                outcome = PushOutcome::Resynchronised;
            } else if ext < next {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
        }
        let ext = if outcome == PushOutcome::Resynchronised {
            1 << 32 | u64::from(seq)
        } else {
            ext
        };
        if self.packets.contains_key(&ext) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        self.packets.insert(ext, frame);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));

        // Overflow: the sender runs faster than our clock, or a burst arrived; keep the newest.
        let cap = self.depth * 3 + 2;
        while self.packets.len() > cap {
            if let Some((&oldest, _)) = self.packets.iter().next() {
                self.packets.remove(&oldest);
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
    pub fn pop(&mut self) -> Option<Playout> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let (&first, _) = self.packets.iter().next()?;
                self.waited += 1;
                if self.waited < self.depth {
                    return None;
                }
                first
            }
        };
        // Anything older than `next` cannot be played any more.
        while let Some((&k, _)) = self.packets.iter().next() {
            if k >= next {
                break;
            }
            self.packets.remove(&k);
        }
        self.next = Some(next + 1);
        match self.packets.remove(&next) {
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

    /// Push packets by (seq, value) then play `ticks`, returning the first sample of each played
    /// frame (`None` for not-started).
    fn firsts(jb: &mut JitterBuffer, ticks: usize) -> Vec<Option<i16>> {
        (0..ticks).map(|_| jb.pop().map(|p| p.frame[0])).collect()
    }

    #[test]
    fn waits_for_the_window_then_plays_in_order() {
        let mut jb = JitterBuffer::new(3);
        assert_eq!(jb.pop(), None);
        // 1, 3, 2 arrive reordered within the window.
        assert_eq!(jb.push(1, &frame_of(10)), PushOutcome::Accepted);
        assert_eq!(jb.pop(), None);
        assert_eq!(jb.push(3, &frame_of(30)), PushOutcome::Accepted);
        assert_eq!(jb.pop(), None);
        assert_eq!(jb.push(2, &frame_of(20)), PushOutcome::Accepted);
        assert_eq!(jb.push(4, &frame_of(40)), PushOutcome::Accepted);
        assert_eq!(
            firsts(&mut jb, 4),
            vec![Some(10), Some(20), Some(30), Some(40)]
        );
        assert_eq!(jb.stats().played, 4);
    }

    #[test]
    fn conceals_loss_with_attenuated_repeats_then_silence() {
        let mut jb = JitterBuffer::new(1);
        jb.push(100, &frame_of(1000));
        jb.push(106, &frame_of(600));
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
        jb.push(10, &frame_of(1));
        assert_eq!(jb.push(10, &frame_of(1)), PushOutcome::Duplicate);
        jb.push(11, &frame_of(2));
        assert_eq!(firsts(&mut jb, 3), vec![None, Some(1), Some(2)]);
        assert_eq!(jb.push(10, &frame_of(1)), PushOutcome::Late);
        assert_eq!(jb.push(11, &frame_of(2)), PushOutcome::Late);
        assert_eq!(jb.stats().late, 2);
        assert_eq!(jb.stats().duplicate, 1);
    }

    #[test]
    fn sequence_wraps_around() {
        let mut jb = JitterBuffer::new(2);
        let seqs = [65533u16, 65535, 65534, 0, 2, 1, 3];
        let mut played = Vec::new();
        for (i, &s) in seqs.iter().enumerate() {
            jb.push(s, &frame_of(i as i16 + 1));
            if let Some(p) = jb.pop() {
                played.push(p.frame[0]);
            }
        }
        played.push(jb.pop().expect("playing").frame[0]);
        // Values by sequence: 65533->1, 65534->3, 65535->2, 0->4, 1->6, 2->5, 3->7.
        assert_eq!(played, vec![1, 3, 2, 4, 6, 5, 7]);
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn resynchronises_on_a_jump() {
        let mut jb = JitterBuffer::new(1);
        jb.push(5, &frame_of(1));
        assert_eq!(jb.pop().map(|p| p.frame[0]), Some(1));
        assert_eq!(jb.push(30000, &frame_of(9)), PushOutcome::Resynchronised);
        assert_eq!(jb.pop().map(|p| p.frame[0]), Some(9));
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn overflow_keeps_the_newest() {
        let mut jb = JitterBuffer::new(1);
        for s in 0..20u16 {
            jb.push(s, &frame_of(s as i16));
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
    fn short_and_long_payloads_are_cut_or_padded() {
        let mut jb = JitterBuffer::new(1);
        jb.push(1, &[7; 80]);
        let f = jb.pop().expect("playing").frame;
        assert_eq!(f[79], 7);
        assert_eq!(f[80], 0);
        jb.push(2, &[3; 400]);
        assert_eq!(jb.pop().expect("playing").frame[159], 3);
    }
}
