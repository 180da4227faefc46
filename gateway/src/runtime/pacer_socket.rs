//! One RTP/RTCP port pair shared by every call of a pacer (`[media] rtp_sockets = "shared"`):
//! read with `recvmmsg`, written with `sendmmsg`, and the table ([`Demux`]) that tells whose
//! call each datagram is.
//!
//! Why: with a port pair per call (the default), a pacer pays one `recvmsg` per packet it
//! receives, one `sendto` per packet it sends and an `epoll_wait` over thousands of sockets per
//! wakeup. In the profile at 1,000 calls the system calls' own costs (entry, the file lookup,
//! copying each message header, the readiness poll of every socket) were about a fifth of the
//! gateway's CPU, beside the UDP work the kernel does per datagram anyway. On one socket the
//! pacer reads up to [`BATCH`] datagrams per system call and sends the packets of a grid point
//! [`BATCH`] at a time.
//!
//! The price is demultiplexing. A datagram belongs to the call whose signalled (SDP) or latched
//! address it comes from; from any other address, to the call that last heard its SSRC from a
//! known address (a NAT that rebound the caller's port: the session's latching then decides as
//! it does on a port of its own). Anything else is dropped and counted. So a caller whose SDP
//! names an address its media does not come from (a phone behind NAT, a late offer) is not
//! heard: shared sockets are for a gateway whose media comes from where the SDP says (a carrier
//! trunk, an SBC, rtpengine in front of several nodes). Ports of its own per call latch onto
//! any caller. (Guessing, e.g. giving a stranger's datagram to the one call not yet heard, was
//! tried and dropped: a call's first packets can arrive before its pacer has taken the call,
//! and were then given to another call, which latched onto them: two callers crossed.)
//!
//! Hand-written: `quinn-udp` batches datagrams for one peer (GSO/GRO), not for thousands of
//! peers; `nix` gives the two system calls.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::SystemTime;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};
use rustc_hash::FxHashMap;

use media::rtp_session::{Channel, Transmit};

use super::rtp_socket::{PortAllocator, PortLease, ip_source, kernel_stamp};

/// Datagrams per `recvmmsg` or `sendmmsg`.
pub const BATCH: usize = 64;

/// `recvmmsg` calls per wakeup at most, so a flood cannot hold the pacer (the rest waits for the
/// next wakeup, in the socket's buffer).
const MAX_READS: usize = 64;

/// Receive buffer asked for each shared socket. One pacer's RTP socket takes the packets of all
/// its calls between two wakeups (1,000 calls: 250 packets every 5 ms, more when the pacer is
/// held up), and a small datagram costs the socket about a kilobyte of buffer: the kernel's
/// default (about 208 KiB) would drop packets at a few hundred calls.
const RECEIVE_BUFFER: usize = 8 << 20;

/// The largest datagram read; RTP and RTCP of a G.711 call are far below.
const MAX_DATAGRAM: usize = 2048;

/// A pacer's shared RTP and RTCP sockets, non-blocking, no reactor.
#[derive(Debug)]
pub struct PacerSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    local_rtp: SocketAddr,
    _lease: PortLease,
}

impl PacerSockets {
    /// Lease a port pair on `ip` for the pacer's life and size its receive buffers.
    pub fn bind(ports: &Arc<PortAllocator>, ip: IpAddr) -> io::Result<Self> {
        let bound = ports.bind(ip)?;
        let local_rtp = bound.local_rtp()?;
        let (rtp, rtcp, lease) = bound
            .into_own()
            .ok_or_else(|| io::Error::other("the port allocator gave no sockets"))?;
        for socket in [&rtp, &rtcp] {
            grow_receive_buffer(socket);
        }
        Ok(Self {
            rtp,
            rtcp,
            local_rtp,
            _lease: lease,
        })
    }

    pub fn local_rtp(&self) -> SocketAddr {
        self.local_rtp
    }

    /// Read what has arrived on both sockets, [`BATCH`] datagrams per system call, and hand
    /// each to `each` (RTCP socket or not, source, bytes, the kernel's arrival time).
    pub fn receive(
        &self,
        bufs: &mut ReceiveBuffers,
        mut each: impl FnMut(bool, SocketAddr, &[u8], Option<SystemTime>),
    ) {
        for (socket, rtcp) in [(&self.rtp, false), (&self.rtcp, true)] {
            for _ in 0..MAX_READS {
                let got = bufs.read(socket, |from, data, stamped| {
                    each(rtcp, from, data, stamped)
                });
                if got < BATCH {
                    break;
                }
            }
        }
    }

    /// Send what `out` holds and empty it. A datagram the kernel refuses is dropped (and
    /// logged), as a `sendto` that fails is on a port of the call's own.
    pub fn send(&self, out: &mut Outbox) {
        send_all(&self.rtp, &mut out.rtp);
        send_all(&self.rtcp, &mut out.rtcp);
    }
}

/// Ask for [`RECEIVE_BUFFER`]; as root past `net.core.rmem_max` (`SO_RCVBUFFORCE`). Says so
/// in the log when the kernel gives less.
fn grow_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
    }
    // Linux reports twice what was granted (its bookkeeping overhead).
    let granted = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0) / 2;
    if granted < RECEIVE_BUFFER {
        tracing::warn!(
            granted,
            wanted = RECEIVE_BUFFER,
            "shared RTP socket: smaller receive buffer than asked (raise net.core.rmem_max); packets may be dropped at many calls"
        );
    }
}

fn send_all(socket: &UdpSocket, queue: &mut Vec<(SocketAddr, Vec<u8>)>) {
    let mut sent = 0;
    while sent < queue.len() {
        let chunk = &queue[sent..queue.len().min(sent + BATCH)];
        match send_batch(socket, chunk) {
            Ok(n) if n > 0 => sent += n,
            Ok(_) => sent += 1,
            Err(e) => {
                // The first of the chunk was refused: drop it, go on with the rest.
                tracing::debug!(error = %e, to = %chunk[0].0, "media send failed");
                sent += 1;
            }
        }
    }
    queue.clear();
}

/// One `sendmmsg` of `chunk` (at most [`BATCH`]): how many went.
fn send_batch(socket: &UdpSocket, chunk: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(a, _)| Some(SockaddrStorage::from(*a)))
        .collect();
    let sent = nix::sys::socket::sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &iovs,
        &addrs,
        [],
        MsgFlags::empty(),
    )?;
    Ok(sent.count())
}

/// Where the datagrams of one `recvmmsg` land.
pub struct ReceiveBuffers {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
}

impl std::fmt::Debug for ReceiveBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveBuffers")
            .field("buffers", &self.bufs.len())
            .finish()
    }
}

impl Default for ReceiveBuffers {
    fn default() -> Self {
        Self {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
        }
    }
}

impl ReceiveBuffers {
    /// One `recvmmsg` on `socket`: hands each datagram to `each`; returns how many came.
    fn read(
        &mut self,
        socket: &UdpSocket,
        mut each: impl FnMut(SocketAddr, &[u8], Option<SystemTime>),
    ) -> usize {
        // Fresh headers each time: the kernel shortens a header's address and control lengths
        // to what it wrote, and a reused header would cut the next datagram's.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
            BATCH,
            Some(nix::cmsg_space!(nix::sys::time::TimeSpec)),
        );
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let received = match nix::sys::socket::recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return 0,
            Err(e) => {
                tracing::debug!(error = %e, "shared media socket: receive failed");
                return 0;
            }
        };
        let mut got = 0;
        for msg in received {
            got += 1;
            let from = msg.address.as_ref().and_then(ip_source);
            let stamped = msg
                .cmsgs()
                .ok()
                .and_then(|mut all| all.find_map(kernel_stamp));
            if let (Some(from), Some(data)) = (from, msg.iovs().next()) {
                each(from, data, stamped);
            }
        }
        got
    }
}

/// Packets the calls of a pacer produced, to go out on its shared sockets.
#[derive(Debug, Default)]
pub struct Outbox {
    rtp: Vec<(SocketAddr, Vec<u8>)>,
    rtcp: Vec<(SocketAddr, Vec<u8>)>,
}

impl Outbox {
    pub fn push(&mut self, t: Transmit) {
        match t.channel {
            Channel::Rtp => self.rtp.push((t.destination, t.data)),
            Channel::Rtcp => self.rtcp.push((t.destination, t.data)),
        }
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.rtp.len() + self.rtcp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The RTP datagrams waiting, taken out (for tests of what a call sends).
    #[cfg(test)]
    pub fn take_rtp(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.rtp)
    }
}

/// What the [`Demux`] holds for one call; kept with the call on its pacer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The signalled (SDP) address and the latched one.
    addrs: [Option<SocketAddr>; 2],
    /// The peer's SSRC last heard from a known address.
    ssrc: Option<u32>,
}

/// Whose call a datagram on a pacer's shared sockets is (see the module doc).
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: FxHashMap<SocketAddr, usize>,
    by_ssrc: FxHashMap<u32, usize>,
    /// Datagrams that matched no call.
    pub unmatched: u64,
}

/// How a datagram was matched to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// From the call's signalled or latched address.
    Address,
    /// By its SSRC, from an address the call has not used.
    Ssrc,
}

impl Demux {
    /// A call joins with its signalled and latched addresses (either may be unknown).
    pub fn add(
        &mut self,
        slot: usize,
        signalled: Option<SocketAddr>,
        latched: Option<SocketAddr>,
    ) -> Registered {
        let mut reg = Registered::default();
        self.update(slot, &mut reg, signalled, latched);
        reg
    }

    /// The call's addresses now (after a re-INVITE or a latch); changes the table only where
    /// they changed.
    pub fn update(
        &mut self,
        slot: usize,
        reg: &mut Registered,
        signalled: Option<SocketAddr>,
        latched: Option<SocketAddr>,
    ) {
        for (i, now) in [signalled, latched].into_iter().enumerate() {
            if reg.addrs[i] == now {
                continue;
            }
            if let Some(old) = reg.addrs[i]
                && reg.addrs[1 - i] != Some(old)
                && self.by_addr.get(&old) == Some(&slot)
            {
                self.by_addr.remove(&old);
            }
            if let Some(new) = now {
                self.by_addr.insert(new, slot);
            }
            reg.addrs[i] = now;
        }
    }

    /// The call has ended: its entries go.
    pub fn remove(&mut self, slot: usize, reg: &Registered) {
        for a in reg.addrs.iter().flatten() {
            if self.by_addr.get(a) == Some(&slot) {
                self.by_addr.remove(a);
            }
        }
        if let Some(s) = reg.ssrc
            && self.by_ssrc.get(&s) == Some(&slot)
        {
            self.by_ssrc.remove(&s);
        }
    }

    /// The call a datagram from `from` belongs to, and how it was found. `rtcp`: it came on the
    /// RTCP socket (whose peer sends from its RTP port + 1).
    pub fn route(&mut self, from: SocketAddr, data: &[u8], rtcp: bool) -> Option<(usize, Matched)> {
        let rtp_source = if rtcp {
            SocketAddr::new(from.ip(), from.port().wrapping_sub(1))
        } else {
            from
        };
        if let Some(&slot) = self.by_addr.get(&rtp_source) {
            return Some((slot, Matched::Address));
        }
        if let Some(slot) = ssrc_of(data, rtcp).and_then(|s| self.by_ssrc.get(&s)) {
            return Some((*slot, Matched::Ssrc));
        }
        self.unmatched += 1;
        None
    }

    /// A datagram matched `how` reached the call in `slot`: an RTP packet from a known address
    /// teaches the table its SSRC.
    pub fn heard(
        &mut self,
        slot: usize,
        reg: &mut Registered,
        data: &[u8],
        rtcp: bool,
        how: Matched,
    ) {
        if how == Matched::Ssrc || rtcp || is_rtcp_on_rtp(data) {
            return;
        }
        let Some(ssrc) = ssrc_of(data, false) else {
            return;
        };
        if reg.ssrc == Some(ssrc) {
            return;
        }
        if let Some(old) = reg.ssrc
            && self.by_ssrc.get(&old) == Some(&slot)
        {
            self.by_ssrc.remove(&old);
        }
        self.by_ssrc.insert(ssrc, slot);
        reg.ssrc = Some(ssrc);
    }
}

/// RTCP multiplexed on the RTP port (RFC 5761): packet types 200-204.
fn is_rtcp_on_rtp(data: &[u8]) -> bool {
    data.len() > 1 && (200..=204).contains(&data[1])
}

/// The sender's SSRC of an RTP packet (bytes 8-11) or of an RTCP packet, also one multiplexed
/// on the RTP port (bytes 4-7); `None` for what is neither (version 2).
fn ssrc_of(data: &[u8], rtcp: bool) -> Option<u32> {
    if data.first().is_none_or(|b| b >> 6 != 2) {
        return None;
    }
    let at = if rtcp || is_rtcp_on_rtp(data) { 4 } else { 8 };
    let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), port)
    }

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    fn rtcp_rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn routes_by_signalled_then_latched_address() {
        let mut d = Demux::default();
        let mut a = d.add(0, Some(addr(4000)), None);
        let b = d.add(1, Some(addr(5000)), None);
        assert_eq!(
            d.route(addr(4000), &rtp(1), false),
            Some((0, Matched::Address))
        );
        assert_eq!(
            d.route(addr(5000), &rtp(2), false),
            Some((1, Matched::Address))
        );
        // RTCP comes from the RTP port + 1.
        assert_eq!(
            d.route(addr(5001), &rtcp_rr(2), true),
            Some((1, Matched::Address))
        );
        // Latched elsewhere: both addresses lead to the call.
        d.update(0, &mut a, Some(addr(4000)), Some(addr(4100)));
        assert_eq!(
            d.route(addr(4100), &rtp(1), false),
            Some((0, Matched::Address))
        );
        assert_eq!(
            d.route(addr(4000), &rtp(1), false),
            Some((0, Matched::Address))
        );
        // Gone: nothing leads to it any more.
        d.remove(0, &a);
        d.remove(1, &b);
        assert_eq!(d.route(addr(4100), &rtp(1), false), None);
        assert_eq!(d.route(addr(5000), &rtp(2), false), None);
        assert_eq!(d.unmatched, 2);
    }

    #[test]
    fn a_rebound_source_is_found_by_its_ssrc_and_strays_are_dropped() {
        let mut d = Demux::default();
        let mut a = d.add(0, Some(addr(4000)), None);
        let mut b = d.add(1, Some(addr(5000)), None);
        let (slot, how) = d.route(addr(4000), &rtp(0xaaaa), false).expect("a");
        d.heard(slot, &mut a, &rtp(0xaaaa), false, how);
        let (slot, how) = d.route(addr(5000), &rtp(0xbbbb), false).expect("b");
        d.heard(slot, &mut b, &rtp(0xbbbb), false, how);
        // The caller's NAT moved it to another port: same SSRC.
        assert_eq!(
            d.route(addr(4002), &rtp(0xaaaa), false),
            Some((0, Matched::Ssrc))
        );
        // RTCP of the moved source, by its sender SSRC.
        assert_eq!(
            d.route(addr(4003), &rtcp_rr(0xaaaa), true),
            Some((0, Matched::Ssrc))
        );
        // Unknown address and SSRC with every call heard: dropped.
        assert_eq!(d.route(addr(6000), &rtp(0xcccc), false), None);
        // Not RTP at all.
        assert_eq!(d.route(addr(6000), b"hello", false), None);
        assert_eq!(d.route(addr(6000), &[], false), None);
        assert_eq!(d.unmatched, 3);
    }

    #[test]
    fn a_source_no_sdp_named_is_not_guessed_at() {
        let mut d = Demux::default();
        // The SDP names a private address the media never comes from (a phone behind NAT),
        // and the call has heard nothing: a stranger is still not given to it, nor is the
        // first packet of a call the pacer has not taken yet.
        let private = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 4000);
        let _a = d.add(0, Some(private), None);
        assert_eq!(d.route(addr(7000), &rtp(9), false), None);
        assert_eq!(d.route(addr(7002), &rtp(10), false), None);
        assert_eq!(d.unmatched, 2);
    }

    #[test]
    fn ssrc_is_read_from_rtp_and_rtcp() {
        assert_eq!(ssrc_of(&rtp(0x0102_0304), false), Some(0x0102_0304));
        assert_eq!(ssrc_of(&rtcp_rr(0x0506_0708), true), Some(0x0506_0708));
        // RTCP multiplexed on the RTP port.
        assert_eq!(ssrc_of(&rtcp_rr(0x0506_0708), false), Some(0x0506_0708));
        assert_eq!(ssrc_of(&[0x80, 0, 0], false), None);
        assert_eq!(ssrc_of(&[0x00; 12], false), None);
    }

    #[test]
    fn sockets_carry_datagrams_both_ways_in_batches() {
        let alloc = PortAllocator::new(44000..=44010);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let sockets = PacerSockets::bind(&alloc, ip).expect("bind");
        let peers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("peer"))
            .collect();
        // 100 datagrams in: more than one recvmmsg.
        for i in 0..100u32 {
            let peer = &peers[(i % 3) as usize];
            peer.send_to(&rtp(i), sockets.local_rtp()).expect("send");
        }
        let mut bufs = ReceiveBuffers::default();
        let mut got = Vec::new();
        sockets.receive(&mut bufs, |rtcp, from, data, stamped| {
            assert!(!rtcp);
            assert!(stamped.is_some(), "the kernel's arrival time");
            got.push((from, ssrc_of(data, false)));
        });
        assert_eq!(got.len(), 100);
        for (i, (from, ssrc)) in got.iter().enumerate() {
            let i = u32::try_from(i).expect("small");
            assert_eq!(*ssrc, Some(i));
            assert_eq!(
                *from,
                peers[(i % 3) as usize].local_addr().expect("peer addr")
            );
        }
        // 70 datagrams out, to the three peers.
        let mut out = Outbox::default();
        for i in 0..70u32 {
            out.push(Transmit {
                channel: Channel::Rtp,
                destination: peers[(i % 3) as usize].local_addr().expect("addr"),
                data: rtp(i),
            });
        }
        assert_eq!(out.len(), 70);
        sockets.send(&mut out);
        assert!(out.is_empty());
        let mut buf = [0u8; 2048];
        for (k, peer) in peers.iter().enumerate() {
            peer.set_nonblocking(true).expect("nonblocking");
            let mut n = 0;
            while let Ok((len, from)) = peer.recv_from(&mut buf) {
                assert_eq!(from, sockets.local_rtp());
                assert_eq!(ssrc_of(&buf[..len], false).map(|s| s % 3), Some(k as u32));
                n += 1;
            }
            assert_eq!(n, if k == 0 { 24 } else { 23 });
        }
    }
}
