//! The media engine: a few pacer threads, each driving the RTP of many calls from one clock.
//!
//! Why not a tokio task per call: a call's media has two deadlines every 20 ms (our frame goes
//! out, the caller's frame plays out of the jitter buffer) and a packet arriving every 20 ms.
//! As a task per call that is two wakeups per call per frame, each through tokio's timer wheel,
//! epoll and the task queue; at 2,000 calls that is 200,000 wakeups a second, the scheduler's
//! work dwarfs the media's, and the timers that pace our frames fire late (23 % of packets more
//! than 5 ms late at 2,000 calls on two cores). The telephony servers that carry thousands of
//! calls (FreeSWITCH's timer threads, the generator in `benches/`) pace from one clock instead.
//!
//! Here every call is an entry on one pacer thread (the least loaded of
//! [`MediaSettings::pacer_threads`](super::MediaSettings)). The thread sleeps until the
//! earliest deadline of its calls (at most [`EARLY`] before it). On each wakeup it asks its epoll
//! set, without waiting, which of its calls' RTP and RTCP sockets hold datagrams and reads
//! those (level-triggered: what a flood leaves is reported again next time), so an arriving
//! packet wakes nobody and is read at the next wakeup, at most [`MAX_SLEEP`] later. Then it
//! visits
//! every call due within the next millisecond: takes the call's commands, advances the call's
//! sans-IO [`RtpSession`], sends what is due and hands events to the call task. A call is
//! visited at least every 20 ms (its next frame), so a command waits at most one frame, which
//! is also the soonest it could be heard. Packets go out at most [`EARLY`] before their time,
//! never because a timer of their own was late.
//!
//! Hand-written: the crates that pace media (str0m, webrtc-rs) each drive one peer connection
//! from its own task; none multiplexes thousands of plain RTP sessions on a thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::sync::{mpsc, oneshot};

use super::rtp_session::{RtpSession, RtpStats};
use super::udp::{BoundPorts, CallMedia, DriverOptions, MediaCommand, MediaHandle};

/// How far ahead of its deadline a call may be visited, so that calls due within the same
/// millisecond share one wakeup of the pacer. Their packets leave up to this much early.
pub const EARLY: Duration = Duration::from_millis(1);

/// Longest a pacer with calls sleeps, so arriving packets are read (and their arrival time
/// taken for the jitter figures) within about this long even when it carries few calls.
pub const MAX_SLEEP: Duration = Duration::from_millis(2);

/// Pacer threads carrying the media of every call. Cheap to share; the threads end when the
/// engine is dropped and their last call has closed.
#[derive(Debug)]
pub struct MediaEngine {
    pacers: Vec<Pacer>,
}

#[derive(Debug)]
struct Pacer {
    intake: std_mpsc::Sender<NewCall>,
    calls: Arc<AtomicUsize>,
}

struct NewCall {
    media: CallMedia,
    commands: mpsc::Receiver<MediaCommand>,
    done: oneshot::Sender<RtpStats>,
}

impl MediaEngine {
    /// Start `threads` pacer threads (0: one per core).
    pub fn new(threads: usize) -> io::Result<Arc<Self>> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let mut pacers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (intake, rx) = std_mpsc::channel();
            let calls = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&calls);
            let poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || run(rx, count, poll))?;
            pacers.push(Pacer { intake, calls });
        }
        Ok(Arc::new(Self { pacers }))
    }

    /// Calls carried now.
    pub fn calls(&self) -> usize {
        self.pacers
            .iter()
            .map(|p| p.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Start carrying one call's media: `session` on `ports`, on the least loaded pacer.
    pub fn spawn(
        &self,
        ports: BoundPorts,
        session: RtpSession,
        options: DriverOptions,
    ) -> io::Result<MediaHandle> {
        let local_rtp = ports.local_rtp()?;
        let pacer = self
            .pacers
            .iter()
            .min_by_key(|p| p.calls.load(Ordering::Relaxed))
            .ok_or_else(|| io::Error::other("the media engine has no pacer threads"))?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(512);
        let (done_tx, done_rx) = oneshot::channel();
        let new = NewCall {
            media: CallMedia::new(ports, session, options, ev_tx),
            commands: cmd_rx,
            done: done_tx,
        };
        pacer.calls.fetch_add(1, Ordering::Relaxed);
        if pacer.intake.send(new).is_err() {
            pacer.calls.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("the media pacer thread has ended"));
        }
        Ok(MediaHandle::new(local_rtp, cmd_tx, ev_rx, done_rx))
    }
}

/// One call on a pacer.
struct Entry {
    media: CallMedia,
    commands: mpsc::Receiver<MediaCommand>,
    done: oneshot::Sender<RtpStats>,
    /// Tells this call's readiness events from those of the slot's earlier calls.
    generation: u32,
}

impl Entry {
    /// Visit the call at `now` for its deadline `due` (at most [`EARLY`] ahead). Returns false
    /// when the call's media has ended.
    fn visit(&mut self, now: Instant, due: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => {
                    if !self.media.command(cmd) {
                        return false;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        self.media.advance(now.max(due));
        true
    }
}

/// Readiness events taken from the epoll set per call to `epoll_wait`.
const READY_BATCH: usize = 256;

/// The epoll token of a call's socket: its slot, the slot's generation (a stale event for a
/// slot's earlier call is ignored) and which socket.
fn token(slot: usize, generation: u32, rtcp: bool) -> u64 {
    (u64::from(generation) << 32) | ((slot as u64) << 1) | u64::from(rtcp)
}

fn untoken(token: u64) -> (usize, u32, bool) {
    (
        ((token & 0xffff_ffff) >> 1) as usize,
        (token >> 32) as u32,
        token & 1 == 1,
    )
}

/// Read the datagrams of every socket the epoll set reports readable.
fn read_ready(poll: &Epoll, calls: &mut [Option<Entry>], ready: &mut [EpollEvent], buf: &mut [u8]) {
    loop {
        let n = match poll.wait(ready, PollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "media readiness poll failed");
                return;
            }
        };
        let now = Instant::now();
        for ev in &ready[..n] {
            let (slot, generation, rtcp) = untoken(ev.data());
            if let Some(entry) = calls.get_mut(slot).and_then(Option::as_mut)
                && entry.generation == generation
            {
                entry.media.receive(now, rtcp, buf);
            }
        }
        if n < ready.len() {
            return;
        }
    }
}

/// The pacer loop: sleep until the earliest deadline (or a new call), read what arrived,
/// visit every call due.
fn run(intake: std_mpsc::Receiver<NewCall>, count: Arc<AtomicUsize>, poll: Epoll) {
    let mut ready = vec![EpollEvent::empty(); READY_BATCH];
    let mut generation = 0u32;
    let mut calls: Vec<Option<Entry>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut buf = vec![0u8; 2048];
    let mut intake_open = true;
    loop {
        // Wait for the next deadline, taking new calls meanwhile.
        let next = due.peek().map(|Reverse((t, _))| *t);
        let first = match (next, intake_open) {
            (None, false) => return,
            (None, true) => intake.recv().ok(),
            (Some(t), true) => {
                let wait = t
                    .saturating_duration_since(Instant::now() + EARLY)
                    .min(MAX_SLEEP);
                if wait.is_zero() {
                    intake.try_recv().ok()
                } else {
                    match intake.recv_timeout(wait) {
                        Ok(c) => Some(c),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                            intake_open = false;
                            None
                        }
                    }
                }
            }
            (Some(t), false) => {
                std::thread::sleep(
                    t.saturating_duration_since(Instant::now() + EARLY)
                        .min(MAX_SLEEP),
                );
                None
            }
        };
        if first.is_none() && next.is_none() {
            // `recv` failed: the engine is gone and no call is left.
            return;
        }
        let now = Instant::now();
        for new in first.into_iter().chain(std::iter::from_fn(|| {
            intake_open.then(|| intake.try_recv().ok()).flatten()
        })) {
            generation = generation.wrapping_add(1);
            let slot = free.pop().unwrap_or(calls.len());
            let watched = [
                (new.media.rtp_socket(), false),
                (new.media.rtcp_socket(), true),
            ]
            .into_iter()
            .try_for_each(|(socket, rtcp)| {
                poll.add(
                    socket,
                    EpollEvent::new(EpollFlags::EPOLLIN, token(slot, generation, rtcp)),
                )
            });
            if let Err(e) = watched {
                // Cannot happen short of running out of kernel memory; the call ends at once
                // and its task hears so.
                tracing::warn!(error = %e, "cannot watch the call's media sockets");
                let _ = new.done.send(new.media.finish());
                if slot < calls.len() {
                    free.push(slot);
                }
                count.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let entry = Entry {
                media: new.media,
                commands: new.commands,
                done: new.done,
                generation,
            };
            if slot == calls.len() {
                calls.push(Some(entry));
            } else {
                calls[slot] = Some(entry);
            }
            due.push(Reverse((now, slot)));
        }
        read_ready(&poll, &mut calls, &mut ready, &mut buf);
        // Visit the calls due now or within EARLY.
        let now = Instant::now();
        let horizon = now + EARLY;
        while let Some(&Reverse((t, slot))) = due.peek() {
            if t > horizon {
                break;
            }
            due.pop();
            let Some(entry) = calls.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if entry.visit(now, t) {
                due.push(Reverse((entry.media.poll_timeout(), slot)));
            } else if let Some(ended) = calls.get_mut(slot).and_then(Option::take) {
                let _ = ended.done.send(ended.media.finish());
                free.push(slot);
                count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
