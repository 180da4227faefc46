//! One call's media ports and its side of the [`super::media_engine::MediaEngine`]: an RTP/RTCP
//! port pair from the configured range, the [`RtpSession`] with the prompt player and in-band
//! DTMF detector around it ([`CallMedia`]), and the channels to the call task.
//!
//! All protocol logic is in the session; this only moves datagrams and time, and the engine's
//! pacer threads decide when. The call talks to its media with [`MediaCommand`]s (send frames,
//! play a [`Player`], barge-in, send a digit, apply a re-INVITE) and hears [`MediaEvent`]s
//! (played-out caller frames, digits, latching, media timeout, RTCP reports). Events are handed
//! over with `try_send`: a slow call task loses frames rather than stalling the 20 ms clock that
//! also paces what the caller hears. The in-band DTMF detector runs here on the played-out
//! frames when enabled, so digits from both RTP paths come out as [`MediaEvent::Digit`] with
//! their [`DigitSource`]; the call layer merges them with SIP INFO in a
//! [`media::dtmf::DtmfMerger`].
//!
//! Ports: RTP takes an even port and RTCP the odd one above (RFC 3550 §11); the pair is leased
//! from a [`PortAllocator`] and released when the call's media ends (the lease is dropped). The
//! sockets are plain non-blocking sockets that no reactor watches: the pacer reads them when it
//! visits the call.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use media::Frame;
use media::dtmf::{DigitSource, InbandDetector};
use media::prompt::Player;
use media::rtp_session::{Channel, Output, RtcpReport, RtpEvent, RtpSession, RtpStats};
use media::sdp::Negotiated;
use media::webrtc::{TransportOutput, WebRtcTransport};

use super::pacer_socket::Outbox;

/// Hands out even RTP ports (with the odd RTCP port above) from a range.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    state: Mutex<(u16, HashSet<u16>)>,
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> Arc<Self> {
        let first = range.start().saturating_add(range.start() % 2);
        Arc::new(Self {
            first,
            last: *range.end(),
            state: Mutex::new((first, HashSet::new())),
        })
    }

    /// Ports leased now.
    pub fn in_use(&self) -> usize {
        self.lock().1.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u16, HashSet<u16>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bind a free pair on `ip`, skipping ports other programs hold. The sockets are
    /// non-blocking and not registered with any reactor.
    pub fn bind(self: &Arc<Self>, ip: IpAddr) -> io::Result<BoundPorts> {
        let pairs = usize::from(self.last.saturating_sub(self.first)).div_ceil(2);
        for _ in 0..pairs.max(1) {
            let Some(port) = self.reserve() else { break };
            let lease = PortLease {
                allocator: Arc::clone(self),
                port,
            };
            let Ok(rtp) = bind_nonblocking(SocketAddr::new(ip, port)) else {
                continue;
            };
            let Ok(rtcp) = bind_nonblocking(SocketAddr::new(ip, port + 1)) else {
                continue;
            };
            let local_rtp = rtp.local_addr()?;
            return Ok(BoundPorts {
                local_rtp,
                kind: PortsKind::Own(OwnSockets { rtp, rtcp, lease }),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free RTP port pair in the configured range",
        ))
    }

    /// The next free even port (round robin, so a just-released port rests before reuse).
    fn reserve(&self) -> Option<u16> {
        let mut guard = self.lock();
        let (next, used) = &mut *guard;
        let mut port = *next;
        for _ in 0..=(self.last.saturating_sub(self.first) / 2) {
            if port < self.first || port.checked_add(1).is_none_or(|p| p > self.last) {
                port = self.first;
            }
            if port.checked_add(1).is_none_or(|p| p > self.last) {
                return None;
            }
            if used.insert(port) {
                *next = port.saturating_add(2);
                return Some(port);
            }
            port = port.saturating_add(2);
        }
        None
    }

    fn release(&self, port: u16) {
        self.lock().1.remove(&port);
    }
}

/// A non-blocking socket whose datagrams carry the kernel's arrival time (`SO_TIMESTAMPNS`,
/// read by [`CallMedia::receive`]).
fn bind_nonblocking(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    )?;
    Ok(socket)
}

/// Turns the kernel's arrival times (wall clock) into [`Instant`]s: one reading of both clocks
/// per batch of reads, and each datagram's age on the wall clock taken off the monotonic one.
/// The pacer reads on its grid, up to a few milliseconds after a datagram came; its arrival
/// time is what the jitter buffer and the RTCP jitter figure need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivalClock {
    now: Instant,
    wall: SystemTime,
}

/// A kernel timestamp further back than this is not believed (the wall clock was set in the
/// meantime): the datagram counts as arriving when read.
const MAX_AGE: Duration = Duration::from_secs(1);

impl ArrivalClock {
    pub(crate) fn now() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// When a datagram the kernel stamped `stamped` (wall clock) arrived; the reading itself
    /// without a stamp.
    pub(crate) fn arrival(&self, stamped: Option<SystemTime>) -> Instant {
        stamped
            .and_then(|t| self.wall.duration_since(t).ok())
            .filter(|age| *age <= MAX_AGE)
            .and_then(|age| self.now.checked_sub(age))
            .unwrap_or(self.now)
    }
}

/// Read one datagram into `buf` with its kernel arrival time: its length, source and stamp.
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    use nix::sys::socket::{MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = nix::sys::socket::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let from = msg
        .address
        .as_ref()
        .and_then(ip_source)
        .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    let stamped = msg
        .cmsgs()
        .ok()
        .and_then(|mut all| all.find_map(kernel_stamp));
    Ok((msg.bytes, from, stamped))
}

/// A datagram's IPv4 or IPv6 source address.
pub(crate) fn ip_source(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    use nix::sys::socket::{AddressFamily, SockaddrLike};
    match a.family() {
        Some(AddressFamily::Inet) => a
            .as_sockaddr_in()
            .map(|v4| SocketAddr::V4(std::net::SocketAddrV4::from(*v4))),
        Some(AddressFamily::Inet6) => a
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6))),
        _ => None,
    }
}

/// The kernel's arrival time (`SO_TIMESTAMPNS`) from a datagram's control message.
pub(crate) fn kernel_stamp(c: nix::sys::socket::ControlMessageOwned) -> Option<SystemTime> {
    match c {
        nix::sys::socket::ControlMessageOwned::ScmTimestampns(ts) => {
            let secs = u64::try_from(ts.tv_sec()).ok()?;
            let nanos = u32::try_from(ts.tv_nsec()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
        }
        _ => None,
    }
}

/// A leased port pair; released on drop.
#[derive(Debug)]
pub struct PortLease {
    allocator: Arc<PortAllocator>,
    port: u16,
}

impl PortLease {
    pub fn rtp_port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.allocator.release(self.port);
    }
}

/// Where one call's media is sent and received: a port pair of its own, or its pacer's shared
/// pair (`[media] rtp_sockets = "shared"`, see [`super::pacer_socket`]).
#[derive(Debug)]
pub struct BoundPorts {
    local_rtp: SocketAddr,
    kind: PortsKind,
}

#[derive(Debug)]
pub(crate) enum PortsKind {
    Own(OwnSockets),
    /// The shared sockets of this pacer of the engine.
    Shared {
        pacer: usize,
    },
}

/// A call's own RTP and RTCP sockets and their lease.
#[derive(Debug)]
pub(crate) struct OwnSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
}

impl BoundPorts {
    /// The address the SDP names for the call's RTP.
    pub fn local_rtp(&self) -> io::Result<SocketAddr> {
        Ok(self.local_rtp)
    }

    /// The shared ports of `pacer`, whose RTP is at `local_rtp`.
    pub(crate) fn shared(pacer: usize, local_rtp: SocketAddr) -> Self {
        Self {
            local_rtp,
            kind: PortsKind::Shared { pacer },
        }
    }

    /// The pacer these ports belong to, for shared ones.
    pub(crate) fn pacer(&self) -> Option<usize> {
        match self.kind {
            PortsKind::Own(_) => None,
            PortsKind::Shared { pacer } => Some(pacer),
        }
    }

    /// The sockets and lease of a pair of the call's own.
    pub(crate) fn into_own(self) -> Option<(UdpSocket, UdpSocket, PortLease)> {
        match self.kind {
            PortsKind::Own(o) => Some((o.rtp, o.rtcp, o.lease)),
            PortsKind::Shared { .. } => None,
        }
    }
}

/// From the call to its media.
#[derive(Debug)]
pub enum MediaCommand {
    /// Send one frame of PCM (queued behind what is already queued).
    Frame(Box<Frame>),
    /// Whether to hand the caller's frames to the call ([`MediaEvent::Frame`]); on at start.
    /// A call that is not recording, listening or bridging switches them off: at thousands of
    /// calls, 50 frames a second each through a channel to a task that drops them is most of
    /// the work. DTMF detection on the frames goes on either way. While off, the last
    /// [`CATCH_UP_FRAMES`] are kept and handed over first when frames are switched on again, so
    /// a caller who started answering before the step began listening is heard from the start.
    FrameEvents(bool),
    /// Hand the caller's frames over in batches of this many ([`MediaEvent::Frames`]); 1 (the
    /// default) hands each over as it plays out ([`MediaEvent::Frame`]). A step that only
    /// listens or records does not need each frame within 20 ms; batching four of them wakes
    /// the call task 12.5 times a second instead of 50. A bridge to an agent needs each.
    FrameBatch(usize),
    /// Play prompts; replaces what is playing.
    Play(Player),
    /// Barge-in: stop playback now (the next frame is silence).
    StopPlayback,
    /// Send a digit by RFC 4733.
    Digit(char, Duration),
    /// A re-INVITE changed the stream.
    Update(Negotiated),
    /// Hang up the media: the driver ends and returns its statistics.
    Close,
}

/// From the media to its call.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// 20 ms of caller audio at playout time.
    Frame {
        frame: Box<Frame>,
        received: bool,
    },
    /// Several frames of caller audio in playout order, the last one just played out (see
    /// [`MediaCommand::FrameBatch`]).
    Frames(Vec<Frame>),
    Digit {
        digit: char,
        source: DigitSource,
        at: Instant,
    },
    Latched(SocketAddr),
    MediaTimeout,
    /// The player with this [`Player::id`] played to its end (not sent when stopped or replaced).
    PlaybackFinished {
        id: u64,
    },
    Report {
        report: RtcpReport,
        round_trip: Option<Duration>,
    },
}

/// The call's side of its running media.
#[derive(Debug)]
pub struct MediaHandle {
    pub local_rtp: SocketAddr,
    pub commands: mpsc::Sender<MediaCommand>,
    pub events: mpsc::Receiver<MediaEvent>,
    done: oneshot::Receiver<RtpStats>,
}

impl MediaHandle {
    pub(crate) fn new(
        local_rtp: SocketAddr,
        commands: mpsc::Sender<MediaCommand>,
        events: mpsc::Receiver<MediaEvent>,
        done: oneshot::Receiver<RtpStats>,
    ) -> Self {
        Self {
            local_rtp,
            commands,
            events,
            done,
        }
    }

    /// Stop the media and get its final statistics.
    pub async fn close(self) -> RtpStats {
        let _ = self.commands.send(MediaCommand::Close).await;
        drop(self.events);
        self.done.await.unwrap_or_default()
    }
}

/// Options of the call's media that are not the session's.
#[derive(Debug, Clone, Copy)]
pub struct DriverOptions {
    pub inband_dtmf: bool,
    /// Frames kept queued in the session from a playing prompt (absorbs scheduling delays).
    pub prefill: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            inband_dtmf: true,
            prefill: 2,
        }
    }
}

/// One call's media as its pacer holds it: sockets, session, player, in-band detector and the
/// sending half of the event channel.
pub(crate) struct CallMedia {
    /// `None` on a pacer's shared sockets.
    own: Option<OwnSockets>,
    session: RtpSession,
    player: Option<Player>,
    inband: Option<InbandDetector>,
    events: mpsc::Sender<MediaEvent>,
    options: DriverOptions,
    dropped_events: u64,
    frame_events: bool,
    /// The latest frames while frame events are off (see [`MediaCommand::FrameEvents`]).
    recent: VecDeque<Frame>,
    /// Frames per [`MediaEvent::Frames`] (1: each as a [`MediaEvent::Frame`]).
    frame_batch: usize,
    batch: Vec<Frame>,
    /// A browser's or app's leg: ICE-lite, DTLS-SRTP and RTCP around the session (always on
    /// the call's own sockets).
    webrtc: Option<Box<WebRtcTransport>>,
}

/// Frames kept for catch-up while frame events are off: 1.5 s, enough for a short answer
/// ("武昌区", "投诉") spoken over the end of a prompt.
pub const CATCH_UP_FRAMES: usize = 75;

impl CallMedia {
    pub(crate) fn new(
        ports: BoundPorts,
        session: RtpSession,
        options: DriverOptions,
        events: mpsc::Sender<MediaEvent>,
    ) -> Self {
        let own = match ports.kind {
            PortsKind::Own(o) => Some(o),
            PortsKind::Shared { .. } => None,
        };
        Self {
            own,
            session,
            player: None,
            inband: options.inband_dtmf.then(InbandDetector::new),
            events,
            options,
            dropped_events: 0,
            frame_events: true,
            recent: VecDeque::new(),
            frame_batch: 1,
            batch: Vec::new(),
            webrtc: None,
        }
    }

    /// The call is a WebRTC leg: its datagrams go through `transport` (see
    /// [`media::webrtc`]). Needs the call's own sockets.
    pub(crate) fn with_webrtc(mut self, transport: WebRtcTransport) -> io::Result<Self> {
        if self.own.is_none() {
            return Err(io::Error::other("a WebRTC leg needs its own socket"));
        }
        self.webrtc = Some(Box::new(transport));
        Ok(self)
    }

    /// Send what the WebRTC transport has for the peer, hand the session the peer's RTP, and
    /// the call what the transport noticed. Returns the transport's next deadline.
    fn drain_webrtc(&mut self, now: Instant) -> Option<Instant> {
        loop {
            let out = self.webrtc.as_mut()?.poll_output();
            match out {
                TransportOutput::Timeout(t) => return Some(t),
                TransportOutput::Transmit { to, data } => {
                    if let Some(own) = self.own.as_ref()
                        && let Err(e) = own.rtp.send_to(&data, to)
                    {
                        tracing::debug!(error = %e, %to, "WebRTC send failed");
                    }
                }
                TransportOutput::Rtp { from, data } => self.session.handle_rtp(now, from, &data),
                TransportOutput::Connected => tracing::debug!("WebRTC connected"),
                TransportOutput::Gone => {
                    tracing::info!("the browser is gone (ICE consent lost or DTLS closed)");
                    self.emit(MediaEvent::MediaTimeout);
                }
            }
        }
    }

    /// The call's own RTP and RTCP sockets (for the pacer's readiness poll); `None` on shared
    /// ones.
    pub(crate) fn own_sockets(&self) -> Option<[&UdpSocket; 2]> {
        self.own.as_ref().map(|o| [&o.rtp, &o.rtcp])
    }

    /// The peer's signalled and latched addresses (for the shared sockets' [`super::pacer_socket::Demux`]).
    pub(crate) fn peer_addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.session.signalled(), self.session.latched())
    }

    /// Start the session's 20 ms clock at `at` (the pacer's grid point), before its first tick.
    pub(crate) fn start_ticks_at(&mut self, at: Instant) {
        self.session.start_ticks_at(at);
    }

    /// Read one datagram from the RTP (`rtcp` false) or RTCP socket, which the pacer's poll
    /// found readable, as arriving when the kernel says it did.
    pub(crate) fn receive(&mut self, clock: &ArrivalClock, rtcp: bool, buf: &mut [u8]) {
        let Some(own) = self.own.as_ref() else {
            return;
        };
        let socket = if rtcp { &own.rtcp } else { &own.rtp };
        match recv_stamped(socket, buf) {
            Ok((n, from, stamped)) => {
                self.datagram(clock.arrival(stamped), from, &buf[..n], rtcp);
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, rtcp, "media receive error");
                }
            }
        }
    }

    /// A datagram that arrived at `now` from `from` on the RTP (`rtcp` false) or RTCP port.
    pub(crate) fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], rtcp: bool) {
        if let Some(t) = self.webrtc.as_mut() {
            t.handle_datagram(now, from, data);
            self.drain_webrtc(now);
            return;
        }
        // RTP/RTCP mux (RFC 5761): RTCP packet types 200-204 on the RTP port.
        if rtcp || (data.len() > 1 && (200..=204).contains(&data[1])) {
            self.session.handle_rtcp(now, from, data);
        } else {
            self.session.handle_rtp(now, from, data);
        }
    }

    /// Advance the session to `now`: top up the prompt, then send what is due (on the call's
    /// own sockets, or into `outbox` for the pacer's shared ones) and hand over events (with
    /// what the datagrams read since the last visit caused), in the order the session gives
    /// them. Returns when the session next needs this call.
    pub(crate) fn advance(&mut self, now: Instant, outbox: &mut Outbox) -> Instant {
        self.top_up(self.options.prefill + self.session.ticks_due(now));
        self.session.handle_timeout(now);
        if let Some(t) = self.webrtc.as_mut() {
            t.handle_timeout(now);
        }
        loop {
            match self.session.poll_output() {
                Output::Transmit(t) if self.webrtc.is_some() => {
                    // The session's RTP goes out through the transport; its RTCP does not
                    // (str0m reports for the stream it carries).
                    if t.channel == Channel::Rtp
                        && let Some(w) = self.webrtc.as_mut()
                    {
                        w.send_rtp(now, &t.data);
                    }
                }
                Output::Transmit(t) => match self.own.as_ref() {
                    Some(own) => {
                        let socket = match t.channel {
                            Channel::Rtp => &own.rtp,
                            Channel::Rtcp => &own.rtcp,
                        };
                        if let Err(e) = socket.send_to(&t.data, t.destination) {
                            tracing::debug!(error = %e, to = %t.destination, "media send failed");
                        }
                    }
                    None => outbox.push(t),
                },
                Output::Event(ev) => self.on_event(now, ev),
                Output::Timeout(next) => {
                    self.finish_playback();
                    return match self.drain_webrtc(now) {
                        Some(t) => next.min(t.max(now)),
                        None => next,
                    };
                }
            }
        }
    }

    /// The media has ended: its statistics; the ports are released.
    pub(crate) fn finish(mut self) -> RtpStats {
        if let Some(t) = self.webrtc.as_mut() {
            t.close();
            self.drain_webrtc(Instant::now());
        }
        let stats = self.session.stats();
        let port = self.own.as_ref().map(|o| o.lease.rtp_port());
        tracing::debug!(?stats, ?port, "media closed");
        stats
    }

    fn emit(&mut self, ev: MediaEvent) {
        if self.events.try_send(ev).is_err() {
            self.dropped_events += 1;
            if self.dropped_events.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped_events,
                    "call task is not keeping up with media events"
                );
            }
        }
    }

    /// Keep `frames` of the playing prompt queued in the session.
    fn top_up(&mut self, frames: usize) {
        let Some(player) = self.player.as_mut() else {
            return;
        };
        while self.session.queued() < frames {
            match player.next_frame() {
                Some(f) => self.session.send_payload(f),
                None => return,
            }
        }
    }

    /// Tell the call that the prompt has played once its last frame has gone out, not when it
    /// was queued: the call may hang up on it, and the caller must hear the goodbye whole.
    fn finish_playback(&mut self) {
        if self.session.queued() > 0 || !self.player.as_ref().is_some_and(Player::is_finished) {
            return;
        }
        if let Some(player) = self.player.take()
            && !player.is_stopped()
        {
            self.emit(MediaEvent::PlaybackFinished { id: player.id() });
        }
    }

    /// Carry out a command from the call. Returns false when the media should end.
    pub(crate) fn command(&mut self, cmd: MediaCommand) -> bool {
        match cmd {
            MediaCommand::Frame(f) => self.session.send_frame(&f),
            MediaCommand::FrameEvents(on) => {
                if on && !self.frame_events {
                    while let Some(frame) = self.recent.pop_front() {
                        self.deliver(frame, true);
                    }
                }
                self.recent.clear();
                if !on {
                    self.batch.clear();
                }
                self.frame_events = on;
            }
            MediaCommand::FrameBatch(n) => {
                self.frame_batch = n.max(1);
                if self.batch.len() >= self.frame_batch {
                    let frames = std::mem::take(&mut self.batch);
                    self.emit(MediaEvent::Frames(frames));
                }
            }
            MediaCommand::Play(p) => {
                self.session.clear_queued();
                self.player = Some(p);
            }
            MediaCommand::StopPlayback => {
                if let Some(p) = self.player.as_mut() {
                    p.stop();
                }
                self.player = None;
                self.session.clear_queued();
            }
            MediaCommand::Digit(d, len) => {
                if !self.session.send_digit(d, len) {
                    tracing::debug!(digit = %d, "peer has no telephone-event: digit not sent");
                }
            }
            MediaCommand::Update(n) => self.session.update(&n),
            MediaCommand::Close => return false,
        }
        true
    }

    /// Hand one played-out frame to the call, alone or in a batch.
    fn deliver(&mut self, frame: Frame, received: bool) {
        if self.frame_batch <= 1 && self.batch.is_empty() {
            self.emit(MediaEvent::Frame {
                frame: Box::new(frame),
                received,
            });
            return;
        }
        self.batch.push(frame);
        if self.batch.len() >= self.frame_batch {
            let frames = std::mem::replace(&mut self.batch, Vec::with_capacity(self.frame_batch));
            self.emit(MediaEvent::Frames(frames));
        }
    }

    /// Hand one of the session's events to the call (frames through the in-band detector and
    /// the catch-up buffer while frame events are off).
    fn on_event(&mut self, now: Instant, ev: RtpEvent) {
        match ev {
            RtpEvent::Frame { frame, received } => {
                if let Some(det) = self.inband.as_mut() {
                    for d in det.process(&frame) {
                        self.emit(MediaEvent::Digit {
                            digit: d.digit,
                            source: DigitSource::Inband,
                            at: now,
                        });
                    }
                }
                if self.frame_events {
                    self.deliver(frame, received);
                } else {
                    if self.recent.len() == CATCH_UP_FRAMES {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(frame);
                }
            }
            RtpEvent::Digit { digit, .. } => self.emit(MediaEvent::Digit {
                digit,
                source: DigitSource::Rfc4733,
                at: now,
            }),
            RtpEvent::Latched(a) => self.emit(MediaEvent::Latched(a)),
            RtpEvent::MediaTimeout => self.emit(MediaEvent::MediaTimeout),
            RtpEvent::Report { report, round_trip } => {
                self.emit(MediaEvent::Report { report, round_trip })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::prompt::{EncodedPrompt, PlayItem};
    use media::rtp_session::RtpConfig;
    use media::sdp::{Direction, Negotiated};
    use media::{Codec, MediaSettings};
    use std::net::Ipv4Addr;

    /// A call on shared ports whose peer is at 127.0.0.1:40000, and the events it sends.
    fn call_media(start: Instant) -> (CallMedia, mpsc::Receiver<MediaEvent>) {
        let negotiated = Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 40000))),
            ptime: Some(20),
            remote_direction: Direction::SendRecv,
            local_direction: Direction::SendRecv,
            media_index: 0,
        };
        let session = RtpSession::new(
            RtpConfig::new(&MediaSettings::default(), &negotiated, &mut rand::rng()),
            start,
            SystemTime::now(),
        );
        let ports = BoundPorts::shared(0, SocketAddr::from((Ipv4Addr::LOCALHOST, 30000)));
        let (tx, rx) = mpsc::channel(1024);
        let media = CallMedia::new(ports, session, DriverOptions::default(), tx);
        (media, rx)
    }

    /// A pacer that wakes late plays the prompt's next frames at once, never silence between
    /// them: the prompt is topped up by as many ticks as are due, not only the prefill.
    #[test]
    fn a_late_wake_up_sends_the_prompts_frames_without_a_gap() {
        let start = Instant::now();
        let (mut media, mut events) = call_media(start);
        // 30 frames, each a different code (none of them mu-law silence, 0xFF).
        let frames: Vec<Vec<u8>> = (0..30u8).map(|i| vec![0x10 + i; 160]).collect();
        let prompt = EncodedPrompt {
            codec: Codec::Pcmu,
            frames: frames.clone(),
        };
        media.command(MediaCommand::Play(Player::new(
            Codec::Pcmu,
            [PlayItem::Clip(Arc::new(prompt))],
        )));
        let ms = Duration::from_millis;
        let mut outbox = Outbox::default();
        let mut sent = Vec::new();
        let mut finished_after = Vec::new();
        // On time, then 80 ms late, on time again, 140 ms late, and past the 200 ms skip.
        for at in [
            0, 20, 120, 140, 300, 320, 600, 620, 640, 660, 680, 700, 720, 740, 760, 780, 800, 820,
            840, 860,
        ] {
            media.advance(start + ms(at), &mut outbox);
            sent.extend(outbox.take_rtp());
            while let Ok(e) = events.try_recv() {
                if matches!(e, MediaEvent::PlaybackFinished { .. }) {
                    finished_after.push(sent.len());
                }
            }
        }
        let payloads: Vec<Vec<u8>> = sent
            .iter()
            .map(|(_, d)| rtp_rs::RtpReader::new(d).expect("rtp").payload().to_vec())
            .collect();
        let first_silence = payloads.iter().position(|p| p[0] == 0xFF);
        assert_eq!(
            first_silence,
            Some(frames.len()),
            "silence before the prompt's end"
        );
        assert_eq!(&payloads[..frames.len()], &frames[..]);
        // The end is told once, in the visit that sent the last frame (the tick at 840 ms).
        assert_eq!(finished_after, [frames.len()]);
    }

    #[test]
    fn allocates_even_pairs_and_releases_them() {
        let alloc = PortAllocator::new(41201..=41210);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = |p: &BoundPorts| p.local_rtp().expect("addr").port();
        let a = alloc.bind(ip).expect("a");
        let b = alloc.bind(ip).expect("b");
        assert_eq!(port(&a) % 2, 0);
        let (a_rtp, a_rtcp, a_lease) = alloc.bind(ip).expect("c").into_own().expect("own");
        assert_eq!(a_rtp.local_addr().expect("addr").port(), a_lease.rtp_port());
        assert_eq!(
            a_rtcp.local_addr().expect("addr").port(),
            a_lease.rtp_port() + 1
        );
        drop((a_rtp, a_rtcp, a_lease));
        assert_ne!(port(&a), port(&b));
        assert_eq!(alloc.in_use(), 2);
        drop(a);
        assert_eq!(alloc.in_use(), 1);
        let mut held = vec![b];
        while let Ok(p) = alloc.bind(ip) {
            held.push(p);
        }
        // 41202..=41210 holds 4 pairs (41210 has no odd partner in range).
        assert_eq!(held.len(), 4);
        assert!(held.iter().all(|p| (41202..=41208).contains(&port(p))));
        held.clear();
        assert_eq!(alloc.in_use(), 0);
    }
}
