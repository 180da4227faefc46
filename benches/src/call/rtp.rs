//! RTP for the generator: the outgoing stream of one call (20 ms G.711 silence with RFC 4733
//! digits spliced in) and the measurement of the incoming stream (lateness against the RTP
//! timestamps, loss from sequence gaps).

use std::collections::VecDeque;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: u32 = 160;
/// Header + one 20 ms G.711 frame.
pub const MAX_PACKET: usize = 12 + FRAME_SAMPLES as usize;

/// The fixed header fields we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

/// Parse an RTP header (RFC 3550 §5.1). `None` for anything else, RTCP included.
pub fn parse(buf: &[u8]) -> Option<Header> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let pt = buf[1] & 0x7f;
    // RTCP multiplexed on the port: packet types 200-204 read as marker + PT 72-76.
    if (72..=76).contains(&pt) && buf[1] & 0x80 != 0 {
        return None;
    }
    let csrc = usize::from(buf[0] & 0x0f);
    let mut len = 12 + 4 * csrc;
    if buf[0] & 0x10 != 0 {
        let ext = buf.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if len > buf.len() {
        return None;
    }
    Some(Header {
        marker: buf[1] & 0x80 != 0,
        pt,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        ts: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    })
}

fn write_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// RFC 4733 event code of a DTMF key.
pub fn event_code(digit: char) -> Option<u8> {
    Some(match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => digit as u8 - b'A' + 12,
        'a'..='d' => digit as u8 - b'a' + 12,
        _ => return None,
    })
}

/// A digit being sent.
#[derive(Debug, Clone, Copy)]
struct Event {
    code: u8,
    /// Timestamp of the event (the frame it started in), the same on all its packets.
    ts: u32,
    /// Packets sent so far, end packets included.
    sent: u32,
}

/// The outgoing stream of one call, one packet per 20 ms tick.
#[derive(Debug)]
pub struct Sender {
    ssrc: u32,
    seq: u16,
    /// Timestamp of the next frame.
    ts: u32,
    audio_pt: u8,
    silence: u8,
    event_pt: Option<u8>,
    digits: VecDeque<u8>,
    event: Option<Event>,
    /// Frames of audio still to send before the next digit may start.
    gap: u32,
    /// Event packets before the end packets (digit length / 20 ms).
    event_frames: u32,
    gap_frames: u32,
    marker_next: bool,
    pub packets: u64,
    pub digits_sent: u64,
}

impl Sender {
    /// `audio_pt` 0 sends PCMU silence, 8 PCMA silence. `digit_ms`: how long each digit lasts,
    /// `gap_ms`: the silence between digits.
    pub fn new(
        ssrc: u32,
        seq: u16,
        ts: u32,
        audio_pt: u8,
        event_pt: Option<u8>,
        digit_ms: u32,
        gap_ms: u32,
    ) -> Sender {
        Sender {
            ssrc,
            seq,
            ts,
            audio_pt,
            // G.711 encodings of a zero sample.
            silence: if audio_pt == 8 { 0xd5 } else { 0xff },
            event_pt,
            digits: VecDeque::new(),
            event: None,
            gap: 0,
            event_frames: (digit_ms / 20).max(1),
            gap_frames: (gap_ms / 20).max(1),
            marker_next: true,
            packets: 0,
            digits_sent: 0,
        }
    }

    /// Queue digits to send as RFC 4733 events; `false` when the answer had no telephone-event
    /// (nothing is queued) or a digit is not a DTMF key.
    pub fn queue_digits(&mut self, digits: &str) -> bool {
        if self.event_pt.is_none() {
            return false;
        }
        let codes: Option<Vec<u8>> = digits.chars().map(event_code).collect();
        match codes {
            Some(codes) => {
                self.digits.extend(codes);
                true
            }
            None => false,
        }
    }

    /// Whether digits are queued or being sent.
    pub fn dtmf_busy(&self) -> bool {
        self.event.is_some() || !self.digits.is_empty()
    }

    /// Write the next 20 ms packet into `buf` and return its length.
    pub fn next_packet(&mut self, buf: &mut [u8; MAX_PACKET]) -> usize {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let frame_ts = self.ts;
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES);
        self.packets += 1;
        if self.event.is_none()
            && self.gap == 0
            && let Some(code) = self.digits.pop_front()
        {
            self.event = Some(Event {
                code,
                ts: frame_ts,
                sent: 0,
            });
        }
        if let (Some(ev), Some(pt)) = (self.event.as_mut(), self.event_pt) {
            let first = ev.sent == 0;
            let ending = ev.sent >= self.event_frames;
            let frames = (ev.sent + 1).min(self.event_frames);
            let duration = (frames * FRAME_SAMPLES).min(u32::from(u16::MAX)) as u16;
            write_header(&mut buf[..], first, pt, seq, ev.ts, self.ssrc);
            buf[12] = ev.code;
            // E bit on the end packets, volume 10 (-10 dBm0).
            buf[13] = (u8::from(ending) << 7) | 10;
            buf[14..16].copy_from_slice(&duration.to_be_bytes());
            ev.sent += 1;
            // Three end packets, same timestamp and duration (RFC 4733 §2.5.1.4).
            if ev.sent >= self.event_frames + 3 {
                self.event = None;
                self.gap = self.gap_frames;
                self.digits_sent += 1;
                self.marker_next = true;
            }
            return 16;
        }
        self.gap = self.gap.saturating_sub(1);
        let marker = std::mem::take(&mut self.marker_next);
        write_header(
            &mut buf[..],
            marker,
            self.audio_pt,
            seq,
            frame_ts,
            self.ssrc,
        );
        buf[12..].fill(self.silence);
        MAX_PACKET
    }
}

/// What one received packet was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An audio packet, this many microseconds later than its timestamp says it should be.
    Audio { late_us: u64 },
    /// The first packet of a stream or of a talkspurt, or one after a timestamp jump: the
    /// reference point, not measured.
    Anchor,
    /// A telephone-event packet (all packets of an event share a timestamp: not measured).
    Event,
}

/// One SSRC's packets: sequence accounting and the timing anchor.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    base_seq: i64,
    max_seq: i64,
    last_seq: u16,
    received: u64,
    /// Unwrapped timestamp of the last packet, in samples.
    last_ts: i64,
    ts_raw: u32,
    /// Smallest `arrival - timestamp` seen since the last anchor, in microseconds.
    anchor_us: Option<i64>,
}

/// The incoming stream of one call.
///
/// Expected arrival of a packet = arrival of the stream's reference packet + (timestamp -
/// reference timestamp) / 8 kHz. The reference is the packet with the smallest
/// `arrival - timestamp` so far (a late first packet does not make the rest look early); a new
/// SSRC, a marker bit (a new talkspurt, e.g. a new prompt) or a jump of more than `reanchor_us`
/// starts a new reference.
#[derive(Debug)]
pub struct Receiver {
    event_pt: Option<u8>,
    reanchor_us: i64,
    stream: Option<Stream>,
    /// Lost and received packets of earlier SSRCs.
    lost_before: u64,
    received_before: u64,
    pub reanchors: u64,
}

impl Receiver {
    pub fn new(event_pt: Option<u8>, reanchor_us: i64) -> Receiver {
        Receiver {
            event_pt,
            reanchor_us,
            stream: None,
            lost_before: 0,
            received_before: 0,
            reanchors: 0,
        }
    }

    /// Account for one packet arriving at `arrival_us` (any clock that does not jump).
    pub fn on_packet(&mut self, h: &Header, arrival_us: i64) -> Seen {
        let s = match &mut self.stream {
            Some(s) if s.ssrc == h.ssrc => s,
            other => {
                if let Some(old) = other.take() {
                    self.lost_before += lost(&old);
                    self.received_before += old.received;
                }
                let seq = i64::from(h.seq);
                other.insert(Stream {
                    ssrc: h.ssrc,
                    base_seq: seq,
                    max_seq: seq - 1,
                    last_seq: h.seq.wrapping_sub(1),
                    received: 0,
                    last_ts: i64::from(h.ts),
                    ts_raw: h.ts,
                    anchor_us: None,
                })
            }
        };
        s.received += 1;
        let ahead = i64::from(h.seq.wrapping_sub(s.last_seq) as i16);
        if ahead > 0 {
            s.max_seq += ahead;
            s.last_seq = h.seq;
        }
        if Some(h.pt) == self.event_pt {
            return Seen::Event;
        }
        s.last_ts += i64::from(h.ts.wrapping_sub(s.ts_raw) as i32);
        s.ts_raw = h.ts;
        // 125 us per sample at 8 kHz.
        let offset = arrival_us - s.last_ts * 125;
        match s.anchor_us {
            Some(anchor) if !h.marker && (offset - anchor).abs() <= self.reanchor_us => {
                if offset < anchor {
                    s.anchor_us = Some(offset);
                    Seen::Audio { late_us: 0 }
                } else {
                    Seen::Audio {
                        late_us: (offset - anchor) as u64,
                    }
                }
            }
            Some(_) => {
                self.reanchors += 1;
                s.anchor_us = Some(offset);
                Seen::Anchor
            }
            None => {
                s.anchor_us = Some(offset);
                Seen::Anchor
            }
        }
    }

    /// Packets received (of every SSRC).
    pub fn packets(&self) -> u64 {
        self.received_before + self.stream.as_ref().map_or(0, |s| s.received)
    }

    /// Packets missing from sequence numbers so far (duplicates make up for losses, as in
    /// RFC 3550 A.3).
    pub fn lost(&self) -> u64 {
        self.lost_before + self.stream.as_ref().map_or(0, lost)
    }
}

fn lost(s: &Stream) -> u64 {
    let expected = s.max_seq - s.base_seq + 1;
    u64::try_from(expected - s.received as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u16, ts: u32) -> Header {
        Header {
            marker: false,
            pt: 0,
            seq,
            ts,
            ssrc: 1,
        }
    }

    #[test]
    fn silence_stream_headers() {
        let mut s = Sender::new(0xabcd, 65535, u32::MAX - 100, 0, Some(101), 100, 100);
        let mut buf = [0u8; MAX_PACKET];
        let n = s.next_packet(&mut buf);
        assert_eq!(n, 172);
        let p = parse(&buf[..n]).expect("rtp");
        assert_eq!((p.marker, p.pt, p.seq, p.ssrc), (true, 0, 65535, 0xabcd));
        assert!(buf[12..].iter().all(|b| *b == 0xff));
        let n = s.next_packet(&mut buf);
        let p = parse(&buf[..n]).expect("rtp");
        assert_eq!(
            (p.marker, p.seq, p.ts),
            (false, 0, (u32::MAX - 100).wrapping_add(160))
        );
    }

    #[test]
    fn a_digit_is_rfc4733_events_then_three_end_packets() {
        let mut s = Sender::new(7, 100, 1000, 8, Some(96), 100, 60);
        let mut buf = [0u8; MAX_PACKET];
        s.next_packet(&mut buf);
        assert!(s.queue_digits("5#"));
        let mut events = Vec::new();
        for _ in 0..20 {
            let n = s.next_packet(&mut buf);
            let p = parse(&buf[..n]).expect("rtp");
            if p.pt == 96 {
                assert_eq!(n, 16);
                let dur = u16::from_be_bytes([buf[14], buf[15]]);
                events.push((p.marker, p.seq, p.ts, buf[12], buf[13] >> 7, dur));
            } else {
                assert_eq!((p.pt, buf[12]), (8, 0xd5));
            }
        }
        // Digit 5 from the second frame: 5 packets growing, 3 end packets.
        let five: Vec<_> = events.iter().filter(|e| e.3 == 5).collect();
        assert_eq!(five.len(), 8);
        assert!(five.iter().all(|e| e.2 == 1160));
        assert!(five[0].0 && five[1..].iter().all(|e| !e.0));
        assert_eq!(
            five.iter().map(|e| e.5).collect::<Vec<_>>(),
            [160, 320, 480, 640, 800, 800, 800, 800]
        );
        assert_eq!(
            five.iter().map(|e| e.4).collect::<Vec<_>>(),
            [0, 0, 0, 0, 0, 1, 1, 1]
        );
        // '#' after 3 frames of silence, its own timestamp.
        let hash: Vec<_> = events.iter().filter(|e| e.3 == 11).collect();
        assert_eq!(hash[0].2, 1160 + 160 * (8 + 3));
        assert_eq!(s.digits_sent, 2);
        assert!(!s.queue_digits("x"));
        let mut none = Sender::new(7, 0, 0, 0, None, 100, 100);
        assert!(!none.queue_digits("1"));
    }

    #[test]
    fn lateness_is_measured_from_the_earliest_packet() {
        let mut r = Receiver::new(Some(101), 1_000_000);
        // First packet 3 ms late relative to the rest.
        assert_eq!(r.on_packet(&h(10, 0), 3_000), Seen::Anchor);
        assert_eq!(r.on_packet(&h(11, 160), 20_000), Seen::Audio { late_us: 0 });
        assert_eq!(
            r.on_packet(&h(12, 320), 46_000),
            Seen::Audio { late_us: 6_000 }
        );
        // Timestamp wrap.
        let mut r = Receiver::new(None, 1_000_000);
        r.on_packet(&h(1, u32::MAX - 159), 0);
        assert_eq!(r.on_packet(&h(2, 0), 20_500), Seen::Audio { late_us: 500 });
    }

    #[test]
    fn marker_ssrc_and_jumps_reanchor_and_loss_counts_gaps() {
        let mut r = Receiver::new(Some(101), 500_000);
        r.on_packet(&h(1, 0), 0);
        r.on_packet(&h(2, 160), 20_000);
        r.on_packet(&h(5, 640), 80_000); // 3, 4 lost
        assert_eq!(r.lost(), 2);
        // The prompt paused 2 s without advancing its timestamp: a jump, re-anchored.
        assert_eq!(r.on_packet(&h(6, 800), 2_100_000), Seen::Anchor);
        assert_eq!(
            r.on_packet(&h(7, 960), 2_120_000),
            Seen::Audio { late_us: 0 }
        );
        // A new talkspurt with the marker set.
        let mut m = h(8, 1120);
        m.marker = true;
        assert_eq!(r.on_packet(&m, 2_300_000), Seen::Anchor);
        // A new SSRC (a new prompt source): its own sequence space.
        let mut n = h(500, 9);
        n.ssrc = 2;
        assert_eq!(r.on_packet(&n, 3_000_000), Seen::Anchor);
        n.seq = 501;
        n.ts = 169;
        assert_eq!(r.on_packet(&n, 3_020_000), Seen::Audio { late_us: 0 });
        assert_eq!(r.lost(), 2);
        assert_eq!(r.reanchors, 2);
        assert_eq!(r.packets(), 8);
        // Events are counted for loss but not timed.
        let mut e = n;
        e.seq = 503;
        e.pt = 101;
        assert_eq!(r.on_packet(&e, 3_100_000), Seen::Event);
        assert_eq!(r.lost(), 3);
        // Duplicates and reordering.
        n.seq = 502;
        n.ts = 329;
        assert_eq!(r.on_packet(&n, 3_061_000), Seen::Audio { late_us: 21_000 });
        assert_eq!(r.lost(), 2);
    }

    #[test]
    fn parse_rejects_garbage_and_rtcp() {
        assert!(parse(&[0x80; 11]).is_none());
        assert!(parse(&[0x40; 20]).is_none());
        let mut rtcp = [0u8; 28];
        rtcp[0] = 0x80;
        rtcp[1] = 200;
        assert!(parse(&rtcp).is_none());
        // Extension header longer than the packet.
        let mut ext = [0u8; 16];
        ext[0] = 0x90;
        ext[14] = 0xff;
        assert!(parse(&ext).is_none());
        let mut csrc = [0u8; 12];
        csrc[0] = 0x8f;
        assert!(parse(&csrc).is_none());
    }
}
