//! The tokio edge: a UDP socket and a TCP listener feeding one [`Endpoint`].
//!
//! One driver task owns the endpoint, so the sans-IO core needs no locks: it waits on the UDP
//! socket, on messages framed by per-connection TCP reader tasks, on commands from the call
//! layer, and on the endpoint's next timer (the `Output::Timeout` that ends each drain of
//! `poll_output`), whichever comes first. TCP streams
//! are cut into messages by Content-Length ([`parse::frame`]); a stream that cannot be framed
//! is closed, since nothing after the fault can be trusted. Responses and in-dialog requests
//! over TCP reuse the connection the peer opened; if it is gone, the driver connects anew.
//!
//! Events go out on an unbounded channel: dropping an IncomingCall or a Bye because the call
//! layer was busy would be worse than the memory of a queue of small structs.
//!
//! Outgoing legs ([`Command::Invite`]) use the same sockets: over UDP the INVITE leaves from our
//! bound port (the one in Via), over TCP the driver connects to the destination and reads the
//! responses from that connection. The new leg's [`CallId`] comes back on a oneshot channel,
//! answered before the driver reads anything else, so the call layer knows the id before any
//! event about the leg can reach it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use sip::parse;
use sip::{
    CallEvent, CallId, CommandError, Endpoint, OutgoingCall, Output, SipSettings, Transmit,
    Transport,
};

/// Commands from the call layer, applied by the driver task.
#[derive(Debug)]
pub enum Command {
    Ring(CallId),
    Answer {
        call: CallId,
        sdp: Vec<u8>,
    },
    Reject {
        call: CallId,
        status: u16,
    },
    Hangup(CallId),
    Info {
        call: CallId,
        content_type: String,
        body: Vec<u8>,
    },
    /// Place an outgoing leg ([`Endpoint::invite`]). `reply` gets its id, or why the call was
    /// refused. If `reply` is dropped before the answer, the leg is hung up at once: without its
    /// id nobody could ever end it.
    Invite {
        call: OutgoingCall,
        reply: oneshot::Sender<Result<CallId, CommandError>>,
    },
}

impl Command {
    /// A [`Command::Invite`] with the receiver for its reply.
    pub fn invite(
        call: OutgoingCall,
    ) -> (Command, oneshot::Receiver<Result<CallId, CommandError>>) {
        let (reply, rx) = oneshot::channel();
        (Command::Invite { call, reply }, rx)
    }
}

/// A running SIP service. Dropping `commands` (or the whole service) stops the driver.
#[derive(Debug)]
pub struct SipService {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
    pub task: tokio::task::JoinHandle<()>,
}

enum TcpIn {
    Message(SocketAddr, Vec<u8>),
    Connected(SocketAddr, mpsc::Sender<Vec<u8>>),
    Closed(SocketAddr),
}

impl SipService {
    /// Bind UDP and TCP (port 0 picks free ports; Via and Contact carry the real ones) and
    /// start the driver task.
    pub async fn start(mut settings: SipSettings) -> io::Result<SipService> {
        let udp = UdpSocket::bind(settings.udp).await?;
        let listener = TcpListener::bind(settings.tcp).await?;
        settings.udp = udp.local_addr()?;
        settings.tcp = listener.local_addr()?;
        let (udp_addr, tcp_addr) = (settings.udp, settings.tcp);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tracing::info!(%udp_addr, %tcp_addr, "SIP listening");
        let task = tokio::spawn(drive(Endpoint::new(settings), udp, listener, cmd_rx, ev_tx));
        Ok(SipService {
            udp_addr,
            tcp_addr,
            commands: cmd_tx,
            events: ev_rx,
            task,
        })
    }
}

async fn drive(
    mut endpoint: Endpoint,
    udp: UdpSocket,
    listener: TcpListener,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<CallEvent>,
) {
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpIn>(1024);
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(listener, tcp_tx.clone()));
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        // Everything the last input caused, then when the endpoint wants to be woken.
        let deadline = loop {
            match endpoint.poll_output() {
                Output::Event(e) => {
                    if events.send(e).is_err() {
                        tracing::debug!("call layer gone; SIP event dropped");
                    }
                }
                Output::Transmit(t) => send(&udp, &mut conns, &tcp_tx, &mut tasks, t).await,
                Output::Timeout(deadline) => break deadline,
            }
        };
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = r {
                tracing::warn!(error = %e, "SIP connection task failed");
            }
        }
        let now = || tokio::time::Instant::now().into_std();
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, from)) => endpoint.handle_datagram(now(), from, Transport::Udp, buf.get(..n).unwrap_or_default()),
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            },
            Some(msg) = tcp_rx.recv() => match msg {
                TcpIn::Message(from, bytes) => endpoint.handle_datagram(now(), from, Transport::Tcp, &bytes),
                TcpIn::Connected(peer, tx) => {
                    conns.insert(peer, tx);
                }
                TcpIn::Closed(peer) => {
                    conns.remove(&peer);
                }
            },
            cmd = commands.recv() => match cmd {
                None => break,
                Some(cmd) => apply(&mut endpoint, now(), cmd),
            },
            () = sleep_until(deadline) => endpoint.handle_timeout(now()),
        }
    }
    tasks.abort_all();
    tracing::info!("SIP driver stopped");
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Carry out a command of the call layer; its output waits in the endpoint for the next drain.
fn apply(endpoint: &mut Endpoint, now: std::time::Instant, cmd: Command) {
    let r = match cmd {
        Command::Ring(call) => endpoint.ring(now, call),
        Command::Answer { call, sdp } => endpoint.answer(now, call, sdp),
        Command::Reject { call, status } => endpoint.reject(now, call, status),
        Command::Hangup(call) => endpoint.hangup(now, call),
        Command::Info {
            call,
            content_type,
            body,
        } => endpoint.send_info(now, call, &content_type, body),
        Command::Invite { call, reply } => match endpoint.invite(now, call) {
            Ok(id) => {
                if reply.send(Ok(id)).is_err() {
                    tracing::warn!(
                        call = id.0,
                        "nobody waits for the outgoing call's id: hanging it up"
                    );
                    // A leg just placed is Dialing, which hangup always accepts.
                    let _ = endpoint.hangup(now, id);
                }
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                Err(e)
            }
        },
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "SIP command refused");
    }
}

async fn send(
    udp: &UdpSocket,
    conns: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    tcp_tx: &mpsc::Sender<TcpIn>,
    tasks: &mut JoinSet<()>,
    t: Transmit,
) {
    match t.transport {
        Transport::Udp => {
            if let Err(e) = udp.send_to(&t.bytes, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "UDP send failed");
            }
        }
        Transport::Tcp => {
            if let Some(tx) = conns.get(&t.to)
                && tx.try_send(t.bytes.clone()).is_ok()
            {
                return;
            }
            conns.remove(&t.to);
            let tcp_tx = tcp_tx.clone();
            tasks.spawn(async move {
                match TcpStream::connect(t.to).await {
                    Ok(stream) => serve_conn(stream, t.to, tcp_tx, Some(t.bytes)).await,
                    Err(e) => tracing::debug!(to = %t.to, error = %e, "TCP connect failed"),
                }
            });
        }
    }
}

async fn accept_loop(listener: TcpListener, tcp_tx: mpsc::Sender<TcpIn>) {
    let mut conns = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                conns.spawn(serve_conn(stream, peer, tcp_tx.clone(), None));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

/// One TCP connection: a writer fed by the driver and a reader that frames messages.
async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    tcp_tx: mpsc::Sender<TcpIn>,
    first: Option<Vec<u8>>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if let Some(bytes) = first {
        let _ = out_tx.try_send(bytes);
    }
    if tcp_tx.send(TcpIn::Connected(peer, out_tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    'read: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match parse::frame(&buf) {
                Ok(Some(n)) => {
                    let msg = buf.split_to(n).to_vec();
                    if tcp_tx.send(TcpIn::Message(peer, msg)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, problem = e.problem, "closing a TCP stream that cannot be framed");
                    break 'read;
                }
            }
        }
    }
    let _ = tcp_tx.send(TcpIn::Closed(peer)).await;
    writer.abort();
}
