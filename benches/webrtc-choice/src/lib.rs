//! Shared helpers for the two benchmark binaries: thread CPU time, a tiny PRNG for the
//! garbage-datagram test, and the in-memory "network" addresses.
//!
//! Everything runs on *virtual* time: both ends live in one process and a datagram written by one
//! side is handed to the other side's `handle_input`/`handle_read` by the driver loop. Nothing
//! sleeps, so wall time ~ CPU time; we still measure CPU time of the calling thread.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// 20 ms: one PCMU packet (160 bytes = 160 samples at 8 kHz) per tick.
pub const PTIME: Duration = Duration::from_millis(20);
/// PCMU payload length per packet.
pub const PCMU_LEN: usize = 160;

/// Address of the "browser" (offerer, full ICE) for call `i`.
pub fn offerer_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8),
        40_000,
    ))
}

/// Address of our gateway (answerer, ICE-lite) for call `i`: one port per call, like a gateway
/// that binds one UDP socket per call.
pub fn answerer_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 2, 0, 1),
        20_000 + i as u16,
    ))
}

/// CPU time consumed so far by the calling thread, from `CLOCK_THREAD_CPUTIME_ID`
/// (nanosecond resolution). `getrusage(RUSAGE_THREAD)` was tried first but on this machine it
/// only advances in scheduler ticks, which rounds the short sections we time to zero.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the struct we hand it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Same figure via `getrusage(RUSAGE_THREAD)` (user + system), reported once for the whole run
/// as a cross-check of the clock above.
pub fn thread_rusage() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A CPU-time stopwatch that can be started/stopped many times and accumulates.
///
/// Each start/stop costs two `clock_gettime` calls (vDSO-less for the thread clock: ~0.3 µs),
/// so callers meter coarse blocks (one per side per round), not single packets. Wall time from
/// the monotonic clock is kept alongside as a cross-check.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    pub cpu: Duration,
    pub wall: Duration,
}

impl CpuMeter {
    /// Run `f`, adding its thread CPU time and wall time to this meter.
    #[inline]
    pub fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let c0 = thread_cpu();
        let w0 = std::time::Instant::now();
        let r = f();
        self.wall += w0.elapsed();
        self.cpu += thread_cpu() - c0;
        r
    }
}

/// xorshift64* — enough randomness for fuzz-ish garbage, no extra dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Random byte string of random length in `0..=max_len`.
    ///
    /// A quarter of them get a first byte in the RTP/RTCP range (128..=191) and a quarter in the
    /// DTLS range (20..=63) or STUN (0..=3), so that the demultiplexers route the garbage into the
    /// deeper parsers (SRTP, DTLS, STUN) instead of dropping it at the first byte.
    pub fn garbage(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next_u64() % (max_len as u64 + 1)) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| self.next_u64() as u8).collect();
        if let Some(b0) = v.first_mut() {
            *b0 = match self.next_u64() % 4 {
                0 => 128 + (*b0 % 64), // RTP / RTCP
                1 => 20 + (*b0 % 44),  // DTLS
                2 => *b0 % 4,          // STUN
                _ => *b0,              // anything
            };
        }
        v
    }
}

/// Mean of durations in microseconds.
pub fn mean_us(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}
