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
//! Here every call is an entry on one pacer thread (the least loaded of the engine's
//! `media.pacer_threads`). The pacer keeps a grid of [`GRID`] steps (the pacers' grids
//! staggered across one step), and every call's 20 ms clock starts on a grid point
//! ([`RtpSession::start_ticks_at`]), so each call is due at the same grid points for its whole
//! life, and a pacer carrying hundreds of calls wakes [`GRID`] apart, not once for each call's
//! own phase: a wakeup of a thread costs tens of microseconds on a virtual machine (the
//! scheduler, the timer programming, the VM exit), which was a fifth of the engine's CPU when
//! the pacers woke every millisecond. Deadlines that
//! are not frames (RTCP reports, the media timeout) are rounded up to the grid too.
//!
//! The thread sleeps until the earliest deadline of its calls, or until a call is handed over
//! (a condition variable, so a new call is answered at once and an idle pacer never wakes).
//! On each wakeup it takes the calls handed over meanwhile, asks its epoll set without
//! waiting which of its calls' RTP and RTCP sockets hold datagrams and reads those
//! (level-triggered; see [`read_ready`]) with the kernel's arrival time of each
//! (`SO_TIMESTAMPNS`), so that the jitter the session measures is the network's, not the
//! grid's. Then it visits every call due: takes the call's commands, advances the call's
//! sans-IO [`RtpSession`], sends what is due and hands events to the call task. A call is
//! visited at least every 20 ms (its next frame), so a command waits at most one frame, which
//! is also the soonest it could be heard. Packets go out on their call's grid point, never
//! because a timer of their own was late; the calls of one grid point go out together, in the
//! same order every time, so the burst adds no jitter.
//!
//! The pacers run SCHED_FIFO when the configuration asks and the system allows (see
//! [`Scheduling`]): on a host that is busy with other work (signalling, HTTP intake, or a load
//! generator on the same cores) that is what keeps every packet within 5 ms of its time.
//! Nothing a pacer waits on may spin: see [`Intake`].
//!
//! With `[media] rtp_sockets = "shared"` each pacer has one RTP/RTCP port pair for all its
//! calls instead of a pair per call: it reads them with `recvmmsg` and sends with `sendmmsg`,
//! [`super::pacer_socket::BATCH`] datagrams per system call, and tells the calls' datagrams
//! apart by address and SSRC ([`super::pacer_socket`] says when that cannot work). A pacer
//! carries calls of both kinds.
//!
//! Hand-written: the crates that pace media (str0m, webrtc-rs) each drive one peer connection
//! from its own task; none multiplexes thousands of plain RTP sessions on a thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::sync::{mpsc, oneshot};

use media::rtp_session::{RtpSession, RtpStats};
use media::webrtc::WebRtcTransport;

use super::pacer_socket::{self, Demux, Outbox, PacerSockets, ReceiveBuffers, Registered};
use super::rtp_socket::{
    ArrivalClock, BoundPorts, CallMedia, DriverOptions, MediaCommand, MediaHandle, PortAllocator,
};

/// The pacer's grid: every deadline of its calls is a multiple of this from the pacer's epoch.
/// A divisor of the 20 ms frame, so a call stays on its grid point. 5 ms: a pacer wakes at
/// most 200 times a second however many calls it carries, a new call's first frame waits at
/// most this long, and an RTCP report or a media timeout fires at most this late.
pub const GRID: Duration = Duration::from_millis(5);

/// The first grid point at or after `t`, on the grid that starts at `epoch`.
fn grid_ceil(epoch: Instant, t: Instant) -> Instant {
    let step = GRID.as_nanos();
    let steps = t.saturating_duration_since(epoch).as_nanos().div_ceil(step);
    epoch + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX))
}

/// Pacer threads carrying the media of every call. Cheap to share; the threads end when the
/// engine is dropped and their last call has closed.
#[derive(Debug)]
pub struct MediaEngine {
    pacers: Vec<Pacer>,
    /// Round robin over the pacers for calls on shared sockets.
    next_shared: AtomicUsize,
}

#[derive(Debug)]
struct Pacer {
    intake: Arc<Intake>,
    calls: Arc<AtomicUsize>,
    /// The RTP address of the pacer's shared sockets, when it has them.
    shared_rtp: Option<SocketAddr>,
}

/// A call's media with its two channels, handed to a pacer and carried there.
struct NewCall {
    media: CallMedia,
    commands: mpsc::Receiver<MediaCommand>,
    done: oneshot::Sender<RtpStats>,
}

impl MediaEngine {
    /// Start `threads` pacer threads (0: one per core), SCHED_FIFO at `priority` when it is
    /// not 0 and the process may.
    pub fn new(threads: usize, priority: u8) -> io::Result<Arc<Self>> {
        Self::start(threads, priority, None)
    }

    /// [`Self::new`] with one shared RTP/RTCP port pair per pacer, leased from `ports` on `ip`
    /// for the engine's life: [`Self::open`] then gives calls those.
    pub fn with_shared_sockets(
        threads: usize,
        priority: u8,
        ports: &Arc<PortAllocator>,
        ip: IpAddr,
    ) -> io::Result<Arc<Self>> {
        Self::start(threads, priority, Some((ports, ip)))
    }

    fn start(
        threads: usize,
        priority: u8,
        shared: Option<(&Arc<PortAllocator>, IpAddr)>,
    ) -> io::Result<Arc<Self>> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let mut pacers = Vec::with_capacity(threads);
        // The pacers' grids are staggered across one step, so their bursts of packets (and of
        // work) do not fall on the same instant.
        let start = Instant::now();
        let stagger = GRID / u32::try_from(threads).unwrap_or(u32::MAX).max(1);
        for i in 0..threads {
            let epoch = start + stagger * u32::try_from(i).unwrap_or(0);
            let intake = Arc::new(Intake::default());
            let rx = Arc::clone(&intake);
            let calls = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&calls);
            let poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
            let sockets = shared
                .map(|(ports, ip)| PacerSockets::bind(ports, ip))
                .transpose()?;
            let shared_rtp = sockets.as_ref().map(PacerSockets::local_rtp);
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    let scheduling = Scheduling::new(priority, i == 0);
                    run(rx, count, poll, sockets, epoch, scheduling)
                })?;
            pacers.push(Pacer {
                intake,
                calls,
                shared_rtp,
            });
        }
        Ok(Arc::new(Self {
            pacers,
            next_shared: AtomicUsize::new(0),
        }))
    }

    /// Calls carried now.
    pub fn calls(&self) -> usize {
        self.pacers
            .iter()
            .map(|p| p.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Ports for a new call's media: the next pacer's shared pair when the engine has them,
    /// else a pair of the call's own from `ports` on `ip`.
    pub fn open(&self, ports: &Arc<PortAllocator>, ip: IpAddr) -> io::Result<BoundPorts> {
        let shared: Vec<(usize, SocketAddr)> = self
            .pacers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.shared_rtp.map(|a| (i, a)))
            .collect();
        if shared.is_empty() {
            return ports.bind(ip);
        }
        let turn = self.next_shared.fetch_add(1, Ordering::Relaxed) % shared.len();
        let (pacer, local_rtp) = shared[turn];
        Ok(BoundPorts::shared(pacer, local_rtp))
    }

    /// Start carrying one call's media: `session` on `ports`, on the pacer whose shared
    /// sockets they are, else on the least loaded pacer.
    pub fn spawn(
        &self,
        ports: BoundPorts,
        session: RtpSession,
        options: DriverOptions,
    ) -> io::Result<MediaHandle> {
        self.spawn_leg(ports, session, options, None)
    }

    /// [`Self::spawn`] for a browser's or app's leg: the call's datagrams go through
    /// `transport` (ICE, DTLS-SRTP). `ports` must be the call's own (from
    /// [`PortAllocator::bind`]), not a pacer's shared pair.
    pub fn spawn_webrtc(
        &self,
        ports: BoundPorts,
        session: RtpSession,
        options: DriverOptions,
        transport: WebRtcTransport,
    ) -> io::Result<MediaHandle> {
        self.spawn_leg(ports, session, options, Some(transport))
    }

    fn spawn_leg(
        &self,
        ports: BoundPorts,
        session: RtpSession,
        options: DriverOptions,
        transport: Option<WebRtcTransport>,
    ) -> io::Result<MediaHandle> {
        let local_rtp = ports.local_rtp()?;
        let pacer = match ports.pacer() {
            Some(i) => self.pacers.get(i),
            None => self
                .pacers
                .iter()
                .min_by_key(|p| p.calls.load(Ordering::Relaxed)),
        }
        .ok_or_else(|| io::Error::other("the media engine has no such pacer thread"))?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(512);
        let (done_tx, done_rx) = oneshot::channel();
        let mut media = CallMedia::new(ports, session, options, ev_tx);
        if let Some(t) = transport {
            media = media.with_webrtc(t)?;
        }
        let new = NewCall {
            media,
            commands: cmd_rx,
            done: done_tx,
        };
        pacer.calls.fetch_add(1, Ordering::Relaxed);
        if !pacer.intake.push(new) {
            pacer.calls.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("the media pacer thread has ended"));
        }
        Ok(MediaHandle::new(local_rtp, cmd_tx, ev_rx, done_rx))
    }
}

/// How often a pacer looks at the CPU time it used.
const WINDOW: Duration = Duration::from_millis(250);
/// A pacer that used more than this share of a core over a [`WINDOW`] gives up real-time
/// priority...
const DEMOTE_ABOVE: f64 = 0.6;
/// ... and takes it back after [`CALM_WINDOWS`] windows in a row below this share.
const PROMOTE_BELOW: f64 = 0.4;
const CALM_WINDOWS: u32 = 40;

/// A pacer's scheduling: SCHED_FIFO at the configured priority while it has headroom, with a
/// safety valve. A real-time thread that needs all of its core would leave signalling, HTTP
/// intake and the store (normal threads) 5 % of it (the kernel's RT throttling), so calls could
/// not even be hung up; a pacer whose own CPU time over a [`WINDOW`] exceeds [`DEMOTE_ABOVE`]
/// of it drops back to normal scheduling (late packets are then shared fairly with the rest)
/// and returns to real time once calm again.
struct Scheduling {
    priority: u8,
    /// Whether the thread runs SCHED_FIFO now.
    realtime: bool,
    /// False once the kernel refused (no CAP_SYS_NICE): never asked again.
    permitted: bool,
    window_start: Instant,
    busy: Duration,
    calm: u32,
    /// The thread's CPU time at the last look.
    last_cpu: Duration,
}

impl Scheduling {
    fn new(priority: u8, report: bool) -> Self {
        let realtime = priority > 0 && set_realtime(Some(priority), report);
        Self {
            priority,
            realtime,
            permitted: realtime,
            window_start: Instant::now(),
            busy: Duration::ZERO,
            calm: 0,
            last_cpu: thread_cpu_time(),
        }
    }

    /// On every wakeup: once a [`WINDOW`], account the CPU time the thread used since the last
    /// look (what it took from the others, wherever it was spent).
    fn tick(&mut self, now: Instant) {
        if !self.permitted || now.saturating_duration_since(self.window_start) < WINDOW {
            return;
        }
        let cpu = thread_cpu_time();
        self.account(cpu.saturating_sub(self.last_cpu), now);
        self.last_cpu = cpu;
    }

    /// Account `busy` (CPU) time of the pacer, and move between real time and normal per
    /// window.
    fn account(&mut self, busy: Duration, now: Instant) {
        if !self.permitted {
            return;
        }
        self.busy += busy;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        let share = self.busy.as_secs_f64() / elapsed.as_secs_f64();
        self.window_start = now;
        self.busy = Duration::ZERO;
        if self.realtime && share > DEMOTE_ABOVE {
            tracing::warn!(
                busy = format!("{:.0} %", share * 100.0),
                "media pacer overloaded: back to normal scheduling so signalling is not starved"
            );
            self.realtime = !set_realtime(None, false);
            self.calm = 0;
        } else if !self.realtime && share < PROMOTE_BELOW {
            self.calm += 1;
            if self.calm >= CALM_WINDOWS {
                self.realtime = set_realtime(Some(self.priority), false);
                self.calm = 0;
            }
        } else {
            self.calm = 0;
        }
    }
}

/// CPU time (user and system) the calling thread has used.
fn thread_cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(
                u64::try_from(tv.tv_sec()).unwrap_or(0),
                u32::try_from(tv.tv_usec()).unwrap_or(0) * 1000,
            )
        };
        t(u.user_time()) + t(u.system_time())
    })
}

/// The `thread-priority` crate's cross-platform value that it maps, under the normal policy,
/// onto nice 0 (it sets a nice value from 0-99: `(39 × (1 − p/99)) − 20`, truncated, is 0 for
/// 48), so going back to normal scheduling leaves the thread as it started.
const NORMAL_AT_NICE_ZERO: u8 = 48;

/// Run the calling thread SCHED_FIFO at `priority` (clamped to 1-99), or back to normal
/// scheduling (SCHED_OTHER at nice 0) with `None`.
fn set_thread_scheduling(priority: Option<u8>) -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, RealtimeThreadSchedulePolicy, ThreadPriority,
        ThreadPriorityValue, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let (value, policy) = match priority {
        Some(p) => (
            p.clamp(1, 99),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        ),
        None => (
            NORMAL_AT_NICE_ZERO,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        ),
    };
    let value = ThreadPriorityValue::try_from(value).map_err(|e| format!("{e:?}"))?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        policy,
    )
    .map_err(|e| format!("{e:?}"))
}

/// [`set_thread_scheduling`] for a pacer. Returns whether it worked; with `report`, says so in
/// the log.
fn set_realtime(priority: Option<u8>, report: bool) -> bool {
    let result = set_thread_scheduling(priority);
    match (&result, report) {
        (Ok(()), true) => tracing::info!(?priority, "media pacers run SCHED_FIFO"),
        (Err(e), true) => tracing::warn!(
            error = %e,
            ?priority,
            "media pacers keep normal scheduling (SCHED_FIFO needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of at least media.pacer_priority)"
        ),
        _ => {}
    }
    result.is_ok()
}

/// New calls on their way to a pacer.
///
/// A mutex and a condition variable rather than a channel: the lock-free channels (std's mpsc,
/// crossbeam) make a receiver that finds a message half written spin until the sender finishes
/// it, and a SCHED_FIFO receiver spinning on the core where the (normal) sender was preempted
/// keeps it from ever finishing: the pacer burns its core until the kernel's RT throttling
/// stops it. A futex-based mutex puts the waiter to sleep instead.
#[derive(Default)]
struct Intake {
    state: Mutex<IntakeState>,
    arrived: Condvar,
}

#[derive(Default)]
struct IntakeState {
    calls: Vec<NewCall>,
    /// The engine is gone: no more calls will come.
    closed: bool,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    fn lock(&self) -> MutexGuard<'_, IntakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand a call over; false when the pacer has ended.
    fn push(&self, call: NewCall) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.calls.push(call);
        drop(state);
        self.arrived.notify_one();
        true
    }

    fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_one();
    }

    /// Take what has arrived into `into`, first waiting for something until `until` (for
    /// ever with `None`; not at all when it has passed). Returns false once the engine is gone.
    fn take(&self, into: &mut Vec<NewCall>, until: Option<Instant>) -> bool {
        let mut state = self.lock();
        while state.calls.is_empty() && !state.closed {
            state = match until {
                None => self.arrived.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.arrived
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        into.append(&mut state.calls);
        !state.closed
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for p in &self.pacers {
            p.intake.close();
        }
    }
}

/// One call on a pacer.
struct Entry {
    call: NewCall,
    /// Tells this call's readiness events from those of the slot's earlier calls.
    generation: u32,
    /// What the shared sockets' [`Demux`] holds for it; `None` for a call on its own sockets.
    registered: Option<Registered>,
}

impl NewCall {
    /// The media has ended: its statistics go to the call's handle; the ports are released.
    fn finish(self) {
        let _ = self.done.send(self.media.finish());
    }

    /// Visit the call at `now` for its deadline `due`. Returns the call's next deadline, or
    /// `None` when its media has ended.
    fn visit(&mut self, now: Instant, due: Instant, outbox: &mut Outbox) -> Option<Instant> {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => {
                    if !self.media.command(cmd) {
                        return None;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
        Some(self.media.advance(now.max(due), outbox))
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

/// Polls of the epoll set per wakeup at most (see [`read_ready`]).
const MAX_PASSES: usize = 64;

/// Read what arrived: each pass asks the epoll set which sockets are readable and reads one
/// datagram from each, until none is (or [`MAX_PASSES`], so a flood on one port cannot stall
/// the pacer; the rest waits for the next wakeup). Usually every socket holds one packet, and
/// the second poll finds nothing: one `epoll_wait` for all of them instead of a `recvfrom` per
/// socket that comes back empty.
fn read_ready(poll: &Epoll, calls: &mut [Option<Entry>], ready: &mut [EpollEvent], buf: &mut [u8]) {
    let mut passes = 0;
    while passes < MAX_PASSES {
        let n = match poll.wait(ready, PollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "media readiness poll failed");
                return;
            }
        };
        if n == 0 {
            return;
        }
        passes += 1;
        let clock = ArrivalClock::now();
        for ev in &ready[..n] {
            let (slot, generation, rtcp) = untoken(ev.data());
            if let Some(entry) = calls.get_mut(slot).and_then(Option::as_mut)
                && entry.generation == generation
            {
                entry.call.media.receive(&clock, rtcp, buf);
            }
        }
    }
}

/// Read what arrived on a pacer's shared sockets and hand each datagram to its call (see
/// [`Demux`]); the table learns the call's new latched address and SSRC.
fn read_shared(
    sockets: &PacerSockets,
    bufs: &mut ReceiveBuffers,
    demux: &mut Demux,
    calls: &mut [Option<Entry>],
) {
    let clock = ArrivalClock::now();
    sockets.receive(bufs, |rtcp, from, data, stamped| {
        let Some((slot, how)) = demux.route(from, data, rtcp) else {
            return;
        };
        let Some(entry) = calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(reg) = entry.registered.as_mut() else {
            return;
        };
        let media = &mut entry.call.media;
        media.datagram(clock.arrival(stamped), from, data, rtcp);
        demux.heard(slot, reg, data, rtcp, how);
        let (signalled, latched) = media.peer_addresses();
        demux.update(slot, reg, signalled, latched);
    });
}

/// The pacer loop: sleep until the earliest deadline (or a new call), read what arrived,
/// visit every call due.
fn run(
    intake: Arc<Intake>,
    count: Arc<AtomicUsize>,
    poll: Epoll,
    shared: Option<PacerSockets>,
    epoch: Instant,
    mut scheduling: Scheduling,
) {
    let mut ready = vec![EpollEvent::empty(); READY_BATCH];
    let mut generation = 0u32;
    let mut calls: Vec<Option<Entry>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut buf = vec![0u8; 2048];
    let mut demux = Demux::default();
    let mut outbox = Outbox::default();
    let mut shared_bufs = shared.as_ref().map(|_| ReceiveBuffers::default());
    let mut unmatched_reported = 0u64;
    let mut intake_open = true;
    loop {
        // Sleep until the next deadline or a new call, whichever comes first.
        let next = due.peek().map(|Reverse((t, _))| *t);
        if next.is_none() && !intake_open {
            // The engine is gone and no call is left.
            return;
        }
        let mut arrived = Vec::new();
        if intake_open {
            intake_open = intake.take(&mut arrived, next);
        } else if let Some(t) = next {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
        let woke = Instant::now();
        for mut call in arrived {
            generation = generation.wrapping_add(1);
            let slot = free.pop().unwrap_or(calls.len());
            let registered = match call.media.own_sockets() {
                Some(own) => {
                    let watched =
                        own.into_iter()
                            .zip([false, true])
                            .try_for_each(|(socket, rtcp)| {
                                poll.add(
                                    socket,
                                    EpollEvent::new(
                                        EpollFlags::EPOLLIN,
                                        token(slot, generation, rtcp),
                                    ),
                                )
                            });
                    if let Err(e) = watched {
                        // Cannot happen short of running out of kernel memory; the call ends
                        // at once and its task hears so.
                        tracing::warn!(error = %e, "cannot watch the call's media sockets");
                        call.finish();
                        if slot < calls.len() {
                            free.push(slot);
                        }
                        count.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    None
                }
                None => {
                    let (signalled, latched) = call.media.peer_addresses();
                    Some(demux.add(slot, signalled, latched))
                }
            };
            let first = grid_ceil(epoch, woke);
            call.media.start_ticks_at(first);
            let entry = Entry {
                call,
                generation,
                registered,
            };
            if slot == calls.len() {
                calls.push(Some(entry));
            } else {
                calls[slot] = Some(entry);
            }
            due.push(Reverse((first, slot)));
        }
        read_ready(&poll, &mut calls, &mut ready, &mut buf);
        if let (Some(sockets), Some(bufs)) = (shared.as_ref(), shared_bufs.as_mut()) {
            read_shared(sockets, bufs, &mut demux, &mut calls);
            if demux.unmatched > unmatched_reported && demux.unmatched.is_power_of_two() {
                unmatched_reported = demux.unmatched;
                tracing::debug!(
                    dropped = demux.unmatched,
                    "shared RTP socket: datagrams that matched no call"
                );
            }
        }
        // Visit the calls due by now.
        let now = Instant::now();
        while let Some(&Reverse((t, slot))) = due.peek() {
            if t > now {
                break;
            }
            due.pop();
            let Some(entry) = calls.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(next) = entry.call.visit(now, t, &mut outbox) {
                if let Some(reg) = entry.registered.as_mut() {
                    // A re-INVITE may have moved the peer.
                    let (signalled, latched) = entry.call.media.peer_addresses();
                    demux.update(slot, reg, signalled, latched);
                }
                due.push(Reverse((grid_ceil(epoch, next), slot)));
            } else if let Some(ended) = calls.get_mut(slot).and_then(Option::take) {
                if let Some(reg) = ended.registered.as_ref() {
                    demux.remove(slot, reg);
                }
                ended.call.finish();
                free.push(slot);
                count.fetch_sub(1, Ordering::Relaxed);
            }
            if outbox.len() >= pacer_socket::BATCH
                && let Some(sockets) = shared.as_ref()
            {
                sockets.send(&mut outbox);
            }
        }
        if !outbox.is_empty()
            && let Some(sockets) = shared.as_ref()
        {
            sockets.send(&mut outbox);
        }
        scheduling.tick(woke);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rtp_socket::{MediaEvent, PortAllocator};
    use media::rtp_session::RtpConfig;
    use media::sdp::{Direction, Negotiated};
    use media::{Codec, MediaSettings};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::SystemTime;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn session_to(remote: SocketAddr) -> RtpSession {
        let negotiated = Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote: Some(remote),
            ptime: Some(20),
            remote_direction: Direction::SendRecv,
            local_direction: Direction::SendRecv,
            media_index: 0,
        };
        RtpSession::new(
            RtpConfig::new(&MediaSettings::default(), &negotiated, &mut rand::rng()),
            Instant::now(),
            SystemTime::now(),
        )
    }

    /// An RTP packet of PCMU silence with sequence number and timestamp.
    fn rtp(seq: u16, ts: u32) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .sequence(rtp_rs::Seq::from(seq))
            .ssrc(0x1234_5678)
            .timestamp(ts)
            .payload(&[0xFF; 160])
            .build()
            .expect("packet")
    }

    #[test]
    fn tokens_name_slot_generation_and_socket() {
        for (slot, generation, rtcp) in [(0, 0, false), (1, 7, true), (70_000, u32::MAX, true)] {
            assert_eq!(
                untoken(token(slot, generation, rtcp)),
                (slot, generation, rtcp)
            );
        }
    }

    #[test]
    fn deadlines_round_up_to_the_pacers_grid() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(grid_ceil(epoch, epoch), epoch);
        assert_eq!(grid_ceil(epoch, epoch + ms(1)), epoch + GRID);
        assert_eq!(grid_ceil(epoch, epoch + GRID), epoch + GRID);
        assert_eq!(
            grid_ceil(epoch, epoch + GRID + Duration::from_nanos(1)),
            epoch + GRID * 2
        );
        // Before the grid's start: its first point.
        if let Some(before) = epoch.checked_sub(ms(3)) {
            assert_eq!(grid_ceil(epoch, before), epoch);
        }
        // A call started on the grid stays on it: 20 ms is a whole number of steps.
        assert_eq!(20 % GRID.as_millis(), 0);
        let start = grid_ceil(epoch, epoch + ms(7));
        for k in 1..100u32 {
            let tick = start + ms(20) * k;
            assert_eq!(grid_ceil(epoch, tick), tick);
        }
    }

    /// Forty calls on one pacer: each peer hears a steady 20 ms stream from its own call's
    /// port, each call hears its peer's packets, a dropped handle ends its call like a close,
    /// and the ports all come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_pacer_carries_many_calls_each_on_its_own_clock() {
        let engine = MediaEngine::new(1, 0).expect("engine");
        let alloc = PortAllocator::new(43000..=43200);
        many_calls_on_one_pacer(&engine, &alloc, 0).await;
    }

    /// The same on the pacer's shared sockets: every call's packets go to its own peer only
    /// and each call hears only its own peer, all through one port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_pacers_shared_sockets_carry_many_calls_apart() {
        let engine_ports = PortAllocator::new(43300..=43310);
        let engine = MediaEngine::with_shared_sockets(1, 0, &engine_ports, LOCAL).expect("engine");
        let alloc = PortAllocator::new(43400..=43600);
        many_calls_on_one_pacer(&engine, &alloc, 1).await;
        assert_eq!(
            engine_ports.in_use(),
            1,
            "the pacer's own pair, for its life"
        );
    }

    /// Forty calls on `engine`'s one pacer (`shared_ports`: how many local RTP addresses they
    /// use; 0 for one each).
    async fn many_calls_on_one_pacer(
        engine: &MediaEngine,
        alloc: &Arc<PortAllocator>,
        shared_ports: usize,
    ) {
        let mut calls = Vec::new();
        for _ in 0..40 {
            let peer = tokio::net::UdpSocket::bind((LOCAL, 0)).await.expect("peer");
            let ports = engine.open(alloc, LOCAL).expect("ports");
            let session = session_to(peer.local_addr().expect("addr"));
            let handle = engine
                .spawn(ports, session, DriverOptions::default())
                .expect("spawn");
            calls.push((peer, handle));
        }
        assert_eq!(engine.calls(), 40);
        let locals: std::collections::HashSet<SocketAddr> =
            calls.iter().map(|(_, h)| h.local_rtp).collect();
        assert_eq!(
            locals.len(),
            if shared_ports == 0 { 40 } else { shared_ports }
        );

        // Each peer sends 25 packets (0.5 s) to its call and counts what comes back.
        let started = Instant::now();
        let mut seq = 0u16;
        let mut arrivals: Vec<Vec<Instant>> = vec![Vec::new(); calls.len()];
        let mut ssrcs: Vec<std::collections::HashSet<u32>> = vec![Default::default(); calls.len()];
        let mut buf = [0u8; 2048];
        while started.elapsed() < Duration::from_millis(1000) {
            if started.elapsed() < Duration::from_millis(500) {
                for (peer, handle) in &calls {
                    peer.send_to(&rtp(seq, u32::from(seq) * 160), handle.local_rtp)
                        .await
                        .expect("send");
                }
                seq += 1;
            }
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                for (i, (peer, _)) in calls.iter().enumerate() {
                    while let Ok((n, from)) = peer.try_recv_from(&mut buf) {
                        assert_eq!(from, calls[i].1.local_rtp, "RTP from the call's own port");
                        assert!(n >= 12);
                        arrivals[i].push(Instant::now());
                        ssrcs[i].insert(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // Each peer heard one call, and no two peers the same one.
        assert!(ssrcs.iter().all(|s| s.len() == 1), "{ssrcs:?}");
        let distinct: std::collections::HashSet<u32> = ssrcs.iter().flatten().copied().collect();
        assert_eq!(distinct.len(), calls.len());
        for (i, a) in arrivals.iter().enumerate() {
            // 1 s of 20 ms frames, give or take the start and this loop's own scheduling.
            assert!(
                (40..=55).contains(&a.len()),
                "call {i}: {} packets",
                a.len()
            );
        }

        // Half are closed, half dropped; all end and give their ports back.
        let mut stats = Vec::new();
        for (i, (_, mut handle)) in calls.into_iter().enumerate() {
            let mut frames = 0;
            while let Ok(ev) = handle.events.try_recv() {
                if matches!(ev, MediaEvent::Frame { .. }) {
                    frames += 1;
                }
            }
            assert!(frames >= 20, "call {i} played out {frames} frames");
            if i % 2 == 0 {
                stats.push(handle.close().await);
            } else {
                drop(handle);
            }
        }
        for s in &stats {
            // Its own peer's 25 packets, none of another's.
            assert!((20..=25).contains(&s.packets_received), "{s:?}");
            assert!(s.packets_sent >= 40, "{s:?}");
        }
        let gone = async {
            while engine.calls() > 0 || alloc.in_use() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), gone)
            .await
            .expect("every call ended and released its ports");
    }

    /// The calling thread's scheduling policy and nice value, from /proc.
    fn policy_and_nice() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name (which is in parentheses): state is field 3.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let nice = fields[19 - 3].parse().expect("nice");
        let policy = fields[41 - 3].parse().expect("policy");
        (policy, nice)
    }

    #[test]
    fn an_overloaded_pacer_gives_up_real_time_and_takes_it_back_when_calm() {
        std::thread::spawn(|| {
            let mut s = Scheduling::new(10, false);
            if !s.realtime {
                // Not permitted here: nothing is tried again, the thread stays normal.
                assert_eq!(policy_and_nice(), (0, 0));
                s.account(
                    Duration::from_millis(990),
                    Instant::now() + Duration::from_secs(1),
                );
                assert!(!s.realtime && !s.permitted);
                return;
            }
            assert_eq!(policy_and_nice().0, 1, "SCHED_FIFO");
            // Busy 90 % of a second: back to normal, at nice 0.
            let t0 = s.window_start;
            s.account(Duration::from_millis(900), t0 + Duration::from_secs(1));
            assert!(!s.realtime);
            assert_eq!(policy_and_nice(), (0, 0));
            // One window short of CALM_WINDOWS calm ones is not enough, the next is.
            for i in 2..=u64::from(CALM_WINDOWS) {
                s.account(Duration::from_millis(100), t0 + Duration::from_secs(i));
                assert!(!s.realtime, "second {i}");
            }
            s.account(
                Duration::from_millis(100),
                t0 + Duration::from_secs(u64::from(CALM_WINDOWS) + 1),
            );
            assert!(s.realtime);
            assert_eq!(policy_and_nice().0, 1, "SCHED_FIFO again");
        })
        .join()
        .expect("thread");
    }
}
