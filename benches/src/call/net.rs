//! Sockets for the generator: UDP with kernel receive timestamps, bigger buffers, and a higher
//! open-files limit (2,000 calls hold 4,000 RTP/RTCP sockets).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::net::UdpSocket;

/// Raise the soft open-files limit to the hard limit. Returns the limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// A non-blocking UDP socket on `addr` registered with the runtime (for signalling), with
/// arrival stamps. Must be called inside the runtime.
///
/// Besides timing answers, its stamps matter to RTP: the kernel switches arrival stamping on
/// shortly after the first socket asks (packets before that are stamped when read) and off when
/// the last one closes, so the signalling socket, opened before any call, keeps it on for the
/// whole run.
pub fn udp(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<UdpSocket> {
    UdpSocket::from_std(polled_udp(addr, rcvbuf, true)?)
}

/// A non-blocking UDP socket on `addr` that the runtime does not watch: RTP sockets are polled
/// once a frame, so a packet's arrival should not wake the generator. With `timestamps` the
/// kernel stamps every datagram on arrival (`SO_TIMESTAMPNS`), so lateness is measured from when
/// a packet reached this host, not from when the generator got round to reading it.
pub fn polled_udp(
    addr: SocketAddr,
    rcvbuf: Option<usize>,
    timestamps: bool,
) -> io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    if timestamps {
        // Without stamps the read time is used, and counted as `unstamped` in the report.
        let _ = setsockopt(&sock, sockopt::ReceiveTimestampns, &true);
    }
    if let Some(n) = rcvbuf {
        // The kernel caps this at net.core.rmem_max; a smaller buffer is not an error.
        let _ = setsockopt(&sock, sockopt::RcvBuf, &n);
    }
    Ok(sock)
}

/// Control-message buffer for one `SO_TIMESTAMPNS` stamp.
pub fn stamp_buffer() -> Vec<u8> {
    nix::cmsg_space!(TimeSpec)
}

/// Now on the clock the kernel stamps with (`CLOCK_REALTIME`), in nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One datagram read from a non-blocking socket: its length (at most `buf.len()`), and its
/// kernel arrival stamp in ns when the socket has stamps on. `WouldBlock` when nothing is queued.
pub fn recv_stamped(
    sock: &std::net::UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, Option<i64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let stamp = msg.cmsgs().ok().and_then(stamp_of);
    Ok((msg.bytes, stamp))
}

/// Like [`recv_stamped`], with the sender's address, for a socket of the runtime (signalling):
/// `WouldBlock` clears its readiness.
pub fn try_recv_stamped_from(
    sock: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<i64>)> {
    let fd = sock.as_raw_fd();
    sock.try_io(tokio::io::Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let stamp = msg.cmsgs().ok().and_then(stamp_of);
        let from = msg.address.and_then(|a| socket_addr(&a));
        Ok((msg.bytes, from, stamp))
    })
}

fn stamp_of(cmsgs: nix::sys::socket::CmsgIterator<'_>) -> Option<i64> {
    let mut stamp = None;
    for c in cmsgs {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            stamp = Some(ts.tv_sec() * 1_000_000_000 + ts.tv_nsec());
        }
    }
    stamp
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_kernel_stamps() {
        let any = "127.0.0.1:0".parse().expect("addr");
        let a = polled_udp(any, Some(1 << 20), true).expect("bind");
        let b = polled_udp(any, None, false).expect("bind");
        let to = a.local_addr().expect("addr");
        let mut buf = [0u8; 64];
        let mut cmsg = stamp_buffer();
        // The kernel turns arrival stamping on shortly after the first socket asks for it
        // (until then it stamps at read time): let a first datagram through.
        b.send_to(b"warm", to).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(50));
        recv_stamped(&a, &mut buf, &mut cmsg).expect("recv");
        let before = now_ns();
        b.send_to(b"hello", to).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (n, stamp) = recv_stamped(&a, &mut buf, &mut cmsg).expect("recv");
        assert_eq!(&buf[..n], b"hello");
        // Stamped on arrival, not when read 5 ms later.
        let stamp = stamp.expect("a kernel stamp");
        assert!(stamp >= before - 1_000_000 && stamp <= now_ns() - 4_000_000);
        let again = recv_stamped(&a, &mut buf, &mut cmsg);
        assert_eq!(again.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(raise_nofile().expect("getrlimit") >= 1024);
    }

    #[tokio::test]
    async fn signalling_reads_carry_the_sender_and_a_stamp() {
        let any = "127.0.0.1:0".parse().expect("addr");
        let a = udp(any, None).expect("bind");
        let b = polled_udp(any, None, false).expect("bind");
        b.send_to(b"OPTIONS", a.local_addr().expect("addr"))
            .expect("send");
        let mut buf = [0u8; 64];
        let mut cmsg = stamp_buffer();
        loop {
            a.readable().await.expect("readable");
            match try_recv_stamped_from(&a, &mut buf, &mut cmsg) {
                Ok((n, from, stamp)) => {
                    assert_eq!(&buf[..n], b"OPTIONS");
                    assert_eq!(from, b.local_addr().ok());
                    assert!(stamp.is_some());
                    break;
                }
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
    }
}
