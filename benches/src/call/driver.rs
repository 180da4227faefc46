//! The run: one signalling socket with one reader that hands each message to its call by
//! Call-ID; one pacer on a 1 ms tick that, for the calls in that millisecond's slot (calls are
//! spread over the 20 slots of a frame), sends the call's next 20 ms RTP frame and reads what the
//! peer sent since the last frame; one task per call for its SIP transactions and timers; and a
//! launcher that starts calls at the configured rate under the concurrency cap. All of it runs on
//! one thread (a `LocalSet`), so state is shared with `Rc`/`RefCell` and never locked.
//!
//! Reading RTP from the pacer rather than on readiness costs one `recvmsg` per packet plus one
//! that finds the socket empty, and no wake-up, epoll event or task poll per packet: at 2,000
//! calls that is 100,000 wake-ups a second saved. The read is up to 20 ms after arrival, which
//! does not touch the figures: arrival is the kernel's stamp (`SO_TIMESTAMPNS`), taken when the
//! packet reached the socket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdp};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};

use super::net;
use super::report::{self, Mark, Stats};
use super::rtp::{self, MAX_PACKET, Receiver, Seen, Sender};
use super::sdp;
use super::sip::{self, Dialog, Start};

/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Pacer slots: one per millisecond of a 20 ms frame.
const SLOTS: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where INVITEs go.
    pub target: SocketAddr,
    /// The Request-URI and To of every call.
    pub uri: String,
    /// Our address for SIP, SDP and RTP.
    pub local_ip: IpAddr,
    /// Our SIP port (0: any).
    pub sip_port: u16,
    pub calls: u64,
    pub concurrent: usize,
    /// New calls per second.
    pub rate: f64,
    /// How long a call stays up after the 200, before we send BYE.
    pub hold: Duration,
    /// When after the 200 the digits start.
    pub dtmf_after: Duration,
    pub digits: String,
    /// Only every this many-th call (calls 0, K, 2K, ...) sends `digits`; 0 and 1 mean all.
    pub digits_every: u64,
    pub digit_ms: u32,
    pub digit_gap_ms: u32,
    /// telephone-event payload type to use when the answer has none (`None`: send no digits).
    pub event_pt: Option<u8>,
    /// First of our even RTP ports (RTCP on the odd one above); 0 for any port, no RTCP socket.
    pub rtp_base: u16,
    /// Timer B / Timer F: how long an INVITE or BYE may go unanswered.
    pub timeout: Duration,
    /// A packet later than this is late.
    pub late_us: u64,
    /// `connect()` each RTP socket to the answer's address: the kernel then keeps the route
    /// (about a sixth less generator CPU), but RTP from any other address is not received.
    pub connect_rtp: bool,
    /// Read each call's RTP socket every this many frames (arrival is the kernel's stamp, so
    /// reading less often only saves system calls).
    pub read_every: u32,
    /// A timestamp/arrival jump bigger than this re-anchors the lateness reference.
    pub reanchor_us: i64,
    pub report_every: Duration,
    /// Hard stop for the whole run.
    pub max_time: Duration,
    /// Makes Call-IDs unique across runs.
    pub run_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Invite,
    Bye,
    Other,
}

impl Method {
    fn of(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "BYE" => Method::Bye,
            _ => Method::Other,
        }
    }
}

/// A response for one of our transactions.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// When it reached this host (the kernel's stamp), in ns of `CLOCK_REALTIME`.
    arrival_ns: i64,
    method: Method,
    to_tag: Option<String>,
    contact: Option<String>,
    /// The SDP of a 2xx to INVITE (empty otherwise).
    body: Vec<u8>,
}

#[derive(Debug)]
enum Event {
    Reply(Reply),
    /// The peer hung up (its BYE is already answered).
    Bye,
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::UnboundedSender<Event>,
    /// Our offer, to answer a re-INVITE with.
    sdp: Rc<str>,
}

/// What the pacer needs of a call.
#[derive(Debug)]
struct Media {
    sock: StdUdp,
    /// Where RTP goes; `None` when the socket is connected there.
    dest: Option<SocketAddr>,
    sender: Sender,
    receiver: Receiver,
    /// Frames sent since the socket was last read.
    unread: u32,
    active: bool,
}

#[derive(Debug)]
struct Shared {
    plan: Plan,
    sip: UdpSocket,
    local_hostport: String,
    calls: RefCell<HashMap<String, Entry>>,
    stats: RefCell<Stats>,
    slots: RefCell<Vec<Vec<Rc<RefCell<Media>>>>>,
    /// Free even RTP ports when `rtp_base` is set, taken from the end, given back at the front.
    ports: RefCell<Vec<u16>>,
    start: Instant,
    done: Cell<bool>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    pub stats: Stats,
    pub window: Duration,
    /// The run hit `max_time` with calls still open.
    pub cut_short: bool,
}

/// Bind the signalling socket (inside the runtime) and what calls share.
async fn shared(plan: Plan) -> io::Result<Rc<Shared>> {
    let sip = net::udp(SocketAddr::new(plan.local_ip, plan.sip_port), Some(8 << 20))?;
    let local = sip.local_addr()?;
    let ports = if plan.rtp_base == 0 {
        Vec::new()
    } else {
        // Twice the ports calls can hold at once (where they fit), so a port rests for a while
        // before a new call takes it: stray packets of the old call find it closed.
        (0..2 * plan.concurrent as u32)
            .rev()
            .filter_map(|k| u16::try_from(u32::from(plan.rtp_base) + 2 * k).ok())
            .filter(|p| *p < u16::MAX)
            .collect()
    };
    Ok(Rc::new(Shared {
        local_hostport: local.to_string(),
        sip,
        calls: RefCell::new(HashMap::with_capacity(plan.concurrent * 2)),
        stats: RefCell::new(Stats::default()),
        slots: RefCell::new(vec![Vec::new(); SLOTS]),
        ports: RefCell::new(ports),
        start: Instant::now(),
        done: Cell::new(false),
        plan,
    }))
}

/// Send an OPTIONS to the target and wait up to `within` for any answer (retransmitting every
/// 500 ms). The status, or `None` when nothing answered.
pub async fn probe(plan: &Plan, within: Duration) -> io::Result<Option<u16>> {
    let sock = net::udp(SocketAddr::new(plan.local_ip, 0), None)?;
    let hostport = sock.local_addr()?.to_string();
    let call_id = format!("probe-{}", plan.run_id);
    let req = sip::options(&plan.uri, &hostport, &call_id, "z9hG4bK-probe");
    let until = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        sock.send_to(&req, plan.target).await?;
        let wait = (Instant::now() + T1).min(until);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(wait, sock.recv_from(&mut buf)).await {
            if let Some(m) = sip::parse(&buf[..n])
                && m.call_id() == Some(call_id.as_str())
                && let Some(s) = m.status()
                && s >= 200
            {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

/// Run the plan. `sample_cpu` gives (gateway, generator) CPU times for the progress lines.
pub async fn run(
    plan: Plan,
    sample_cpu: impl Fn() -> (Option<Duration>, Option<Duration>),
) -> io::Result<Outcome> {
    let sh = shared(plan).await?;
    let p = &sh.plan;
    let hard_stop = sh.start + p.max_time;
    tokio::task::spawn_local(signalling(sh.clone()));
    tokio::task::spawn_local(pacer(sh.clone()));

    let mut mark = Mark::default();
    let (gw, own) = sample_cpu();
    mark.gateway_cpu = gw;
    mark.own_cpu = own;
    let mut next_report = sh.start + p.report_every;
    let report_now = |mark: Mark| {
        let (gw, own) = sample_cpu();
        let now = std::time::Instant::now();
        report::progress(&sh.stats.borrow(), sh.start.into_std(), now, mark, gw, own)
    };

    let sem = Arc::new(Semaphore::new(p.concurrent.max(1)));
    let period = Duration::from_secs_f64(1.0 / p.rate.max(1e-3));
    let mut next = sh.start;
    let mut launched = 0u64;
    let mut cut_short = false;
    while launched < p.calls {
        let permit = tokio::select! {
            permit = sem.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = sleep_until(next_report) => {
                mark = report_now(mark);
                next_report += p.report_every;
                continue;
            }
            () = sleep_until(hard_stop) => { cut_short = true; break; }
        };
        tokio::select! {
            () = sleep_until(next) => {}
            () = sleep_until(hard_stop) => { cut_short = true; break; }
        }
        if Instant::now() >= next_report {
            mark = report_now(mark);
            next_report += p.report_every;
        }
        let call_sh = sh.clone();
        let index = launched;
        tokio::task::spawn_local(async move {
            call(&call_sh, index).await;
            drop(permit);
        });
        launched += 1;
        next += period;
        // After a stall, do not burst to catch up by more than a second's worth of calls.
        let now = Instant::now();
        if next + Duration::from_secs(1) < now {
            next = now;
        }
    }
    // Wait for every call to end: all permits back.
    let all = u32::try_from(p.concurrent.max(1)).unwrap_or(u32::MAX);
    loop {
        tokio::select! {
            r = sem.acquire_many(all) => { let _ = r; break; }
            () = sleep_until(next_report) => {
                mark = report_now(mark);
                next_report += p.report_every;
            }
            () = sleep_until(hard_stop) => { cut_short = true; break; }
        }
    }
    sh.done.set(true);
    let window = sh.start.elapsed();
    let stats = std::mem::take(&mut *sh.stats.borrow_mut());
    Ok(Outcome {
        stats,
        window,
        cut_short,
    })
}

/// Whether call `index` (from 0) sends the plan's digits: every call when `every` is 0 or 1,
/// else calls 0, `every`, 2 `every`, ... (so K calls in a row have exactly one that keys).
pub fn keys_digits(index: u64, every: u64) -> bool {
    every <= 1 || index.is_multiple_of(every)
}

fn branch() -> String {
    format!("z9hG4bK-{:016x}", rand::rng().random::<u64>())
}

impl Shared {
    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        // Loss is what the retransmission timers are for.
        let _ = self.sip.send_to(bytes, to).await;
    }

    /// An RTP socket (and its RTCP neighbour, held so the peer's reports are not refused).
    fn bind_rtp(&self) -> Option<(StdUdp, Option<StdUdp>, u16)> {
        let p = &self.plan;
        if p.rtp_base == 0 {
            let s = net::polled_udp(SocketAddr::new(p.local_ip, 0), None, true).ok()?;
            let port = s.local_addr().ok()?.port();
            return Some((s, None, port));
        }
        loop {
            let port = self.ports.borrow_mut().pop()?;
            let rtp = net::polled_udp(SocketAddr::new(p.local_ip, port), None, true);
            let rtcp = net::polled_udp(SocketAddr::new(p.local_ip, port + 1), None, false);
            if let (Ok(rtp), Ok(rtcp)) = (rtp, rtcp) {
                return Some((rtp, Some(rtcp), port));
            }
            // Taken by someone else: leave it out of the pool.
        }
    }

    fn release_port(&self, port: u16) {
        if self.plan.rtp_base != 0 {
            self.ports.borrow_mut().insert(0, port);
        }
    }

    fn add_media(&self, m: Rc<RefCell<Media>>) {
        let mut slots = self.slots.borrow_mut();
        if let Some(slot) = slots.iter_mut().min_by_key(|s| s.len()) {
            slot.push(m);
        }
    }
}

/// The signalling reader: answers requests from the peer and hands responses to their calls.
async fn signalling(sh: Rc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut cmsg = net::stamp_buffer();
    loop {
        if sh.sip.readable().await.is_err() {
            continue;
        }
        let (n, from, stamp) = match net::try_recv_stamped_from(&sh.sip, &mut buf, &mut cmsg) {
            Ok((n, Some(from), stamp)) => (n, from, stamp),
            // WouldBlock (a spurious wake-up), an error, or no sender address: nothing to do.
            Ok((_, None, _)) | Err(_) => continue,
        };
        let arrival_ns = stamp.unwrap_or_else(net::now_ns);
        let Some(msg) = sip::parse(&buf[..n]) else {
            sh.stats.borrow_mut().sip_garbage += 1;
            continue;
        };
        let answer = match msg.start {
            Start::Response { status } => {
                let (Some(call_id), Some((_, method))) = (msg.call_id(), msg.cseq()) else {
                    sh.stats.borrow_mut().sip_garbage += 1;
                    continue;
                };
                let calls = sh.calls.borrow();
                let Some(entry) = calls.get(call_id) else {
                    sh.stats.borrow_mut().sip_unmatched += 1;
                    continue;
                };
                let method = Method::of(method);
                let body = if method == Method::Invite && (200..300).contains(&status) {
                    msg.body.to_vec()
                } else {
                    Vec::new()
                };
                let _ = entry.tx.send(Event::Reply(Reply {
                    status,
                    arrival_ns,
                    method,
                    to_tag: msg.to_tag().map(str::to_owned),
                    contact: msg.contact_uri().map(str::to_owned),
                    body,
                }));
                continue;
            }
            Start::Request { method, .. } => {
                *sh.stats
                    .borrow_mut()
                    .requests_in
                    .entry(method.to_owned())
                    .or_default() += 1;
                let calls = sh.calls.borrow();
                let entry = msg.call_id().and_then(|c| calls.get(c));
                match (method, entry) {
                    ("ACK", _) => None,
                    ("BYE", Some(e)) => {
                        let _ = e.tx.send(Event::Bye);
                        sip::response(&msg, 200, "OK", "call-load", None)
                    }
                    ("INVITE", Some(e)) => sip::response(
                        &msg,
                        200,
                        "OK",
                        "call-load",
                        Some(("application/sdp", &e.sdp)),
                    ),
                    ("OPTIONS" | "INFO" | "NOTIFY" | "UPDATE", _) => {
                        sip::response(&msg, 200, "OK", "call-load", None)
                    }
                    ("BYE" | "INVITE" | "CANCEL", None) => sip::response(
                        &msg,
                        481,
                        "Call/Transaction Does Not Exist",
                        "call-load",
                        None,
                    ),
                    _ => sip::response(&msg, 501, "Not Implemented", "call-load", None),
                }
            }
        };
        if let Some(bytes) = answer {
            sh.send(&bytes, from).await;
        }
    }
}

/// Every millisecond, send the next frame of the calls in that millisecond's slot and read
/// what their peers sent.
async fn pacer(sh: Rc<Shared>) {
    let mut buf = [0u8; MAX_PACKET];
    let mut rx_buf = vec![0u8; 2048];
    let mut cmsg = net::stamp_buffer();
    let late_us = sh.plan.late_us;
    let read_every = sh.plan.read_every.max(1);
    let mut next = Instant::now();
    let mut k = 0usize;
    while !sh.done.get() {
        next += Duration::from_millis(1);
        sleep_until(next).await;
        let lag = Instant::now().saturating_duration_since(next);
        let mut slots = sh.slots.borrow_mut();
        let slot = &mut slots[k % SLOTS];
        k += 1;
        if slot.is_empty() {
            continue;
        }
        let mut st = sh.stats.borrow_mut();
        st.send_lag(lag.as_micros() as u64);
        slot.retain(|m| {
            let mut m = m.borrow_mut();
            if !m.active {
                return false;
            }
            let n = m.sender.next_packet(&mut buf);
            let sent = match m.dest {
                Some(dest) => m.sock.send_to(&buf[..n], dest),
                None => m.sock.send(&buf[..n]),
            };
            match sent {
                Ok(_) => st.rtp_sent += 1,
                Err(_) => st.rtp_send_errors += 1,
            }
            m.unread += 1;
            if m.unread >= read_every {
                m.unread = 0;
                m.drain(&mut rx_buf, &mut cmsg, &mut st, late_us);
            }
            true
        });
    }
}

/// One call from INVITE to the end of its BYE.
async fn call(sh: &Rc<Shared>, index: u64) {
    sh.stats.borrow_mut().in_progress += 1;
    let p = &sh.plan;
    match sh.bind_rtp() {
        None => {
            let mut st = sh.stats.borrow_mut();
            st.attempted += 1;
            st.fail("rtp-bind");
        }
        Some((rtp, rtcp, port)) => {
            let call_id = format!("{}-{index}@{}", p.run_id, p.local_ip);
            let sdp: Rc<str> = sdp::offer(p.local_ip, port, index).into();
            let mut dialog = Dialog {
                call_id: call_id.clone(),
                local_tag: format!("{:x}", rand::rng().random::<u64>()),
                local_uri: format!("sip:caller-{index}@{}", p.local_ip),
                local_hostport: sh.local_hostport.clone(),
                remote_uri: p.uri.clone(),
                remote_tag: None,
                remote_target: p.uri.clone(),
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            sh.calls.borrow_mut().insert(
                call_id.clone(),
                Entry {
                    tx,
                    sdp: sdp.clone(),
                },
            );
            let keys = keys_digits(index, p.digits_every);
            place(sh, &mut dialog, rtp, &sdp, keys, &mut rx).await;
            sh.calls.borrow_mut().remove(&call_id);
            drop(rtcp);
            sh.release_port(port);
        }
    }
    sh.stats.borrow_mut().in_progress -= 1;
}

async fn place(
    sh: &Rc<Shared>,
    dialog: &mut Dialog,
    rtp: StdUdp,
    sdp: &str,
    keys: bool,
    rx: &mut mpsc::UnboundedReceiver<Event>,
) {
    let p = &sh.plan;
    let invite_branch = branch();
    let invite = dialog.invite(&invite_branch, sdp);
    let sent_at = Instant::now();
    let sent_ns = net::now_ns();
    {
        let mut st = sh.stats.borrow_mut();
        st.attempted += 1;
        st.first_invite.get_or_insert(sent_at.into_std());
    }
    sh.send(&invite, p.target).await;

    // The INVITE client transaction (RFC 3261 §17.1.1): Timer A until a provisional answer,
    // Timer B as the overall limit.
    let mut every = T1;
    let mut retransmit_at = sent_at + T1;
    let give_up = sent_at + p.timeout;
    let mut provisional = false;
    let reply = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Reply(r)) if r.method == Method::Invite => {
                    if r.status < 200 {
                        provisional = true;
                    } else if r.status < 300 {
                        break r;
                    } else {
                        let ack = dialog.ack_failure(&invite_branch, r.to_tag.as_deref());
                        sh.send(&ack, p.target).await;
                        sh.stats.borrow_mut().fail(r.status.to_string());
                        return;
                    }
                }
                Some(Event::Bye) => {
                    sh.stats.borrow_mut().fail("bye-before-answer");
                    return;
                }
                Some(Event::Reply(_)) => {}
                None => return,
            },
            () = sleep_until(retransmit_at), if !provisional => {
                sh.send(&invite, p.target).await;
                sh.stats.borrow_mut().invite_retransmits += 1;
                every *= 2;
                retransmit_at += every;
            }
            () = sleep_until(give_up) => {
                if provisional {
                    cancel(sh, dialog, &invite_branch, rx).await;
                }
                sh.stats.borrow_mut().fail("timeout");
                return;
            }
        }
    };

    let answered = Instant::now();
    dialog.remote_tag = reply.to_tag.clone();
    if let Some(contact) = &reply.contact {
        dialog.remote_target = contact.clone();
    }
    let peer = sip::uri_addr(&dialog.remote_target).unwrap_or(p.target);
    let ack = dialog.ack_2xx(&branch());
    sh.send(&ack, peer).await;
    let answer = match sdp::parse_answer(&reply.body) {
        Ok(a) => a,
        Err(e) => {
            sh.stats.borrow_mut().fail(e.as_str());
            hang_up(sh, dialog, peer, &ack, rx).await;
            return;
        }
    };
    sh.stats.borrow_mut().answered_at(
        sh.start.into_std(),
        answered.into_std(),
        // From sending the INVITE to the 200's arrival, whenever the generator read it.
        Duration::from_nanos(u64::try_from(reply.arrival_ns - sent_ns).unwrap_or(0)),
    );

    let event_pt = answer.event_pt.or(p.event_pt);
    let digits = if keys { p.digits.as_str() } else { "" };
    if answer.event_pt.is_none() && !digits.is_empty() {
        sh.stats.borrow_mut().dtmf_skipped += 1;
    }
    let sender = {
        let mut rng = rand::rng();
        Sender::new(
            rng.random(),
            rng.random(),
            rng.random(),
            answer.audio_pt,
            event_pt,
            p.digit_ms,
            p.digit_gap_ms,
        )
    };
    let media = Rc::new(RefCell::new(Media {
        dest: if p.connect_rtp && rtp.connect(answer.rtp).is_ok() {
            None
        } else {
            Some(answer.rtp)
        },
        sock: rtp,
        sender,
        receiver: Receiver::new(event_pt, p.reanchor_us),
        // Spread the reads of calls in the same slot over the frames.
        unread: rand::rng().random_range(0..p.read_every.max(1)),
        active: true,
    }));
    sh.add_media(media.clone());
    let dtmf_at = sleep_until(answered + p.dtmf_after);
    let hang_up_at = sleep_until(answered + p.hold);
    tokio::pin!(dtmf_at, hang_up_at);
    let mut dtmf_pending = !digits.is_empty() && event_pt.is_some();
    let mut peer_hung_up = false;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Bye) => {
                    peer_hung_up = true;
                    break;
                }
                Some(Event::Reply(r)) if r.method == Method::Invite && (200..300).contains(&r.status) => {
                    // The 200 again: our ACK was lost.
                    sh.send(&ack, peer).await;
                }
                Some(Event::Reply(_)) => {}
                None => break,
            },
            () = &mut dtmf_at, if dtmf_pending => {
                dtmf_pending = false;
                media.borrow_mut().sender.queue_digits(digits);
            }
            () = &mut hang_up_at => break,
        }
    }
    {
        let mut m = media.borrow_mut();
        let mut st = sh.stats.borrow_mut();
        // What is still queued counts before the stream stops.
        let mut buf = [0u8; 2048];
        let mut cmsg = net::stamp_buffer();
        m.drain(&mut buf, &mut cmsg, &mut st, p.late_us);
        m.active = false;
        st.held -= 1;
        st.digits_sent += m.sender.digits_sent;
        st.lost += m.receiver.lost();
        if m.receiver.packets() == 0 {
            st.silent_calls += 1;
        }
        st.reanchors += m.receiver.reanchors;
        if peer_hung_up {
            st.bye_by_gateway += 1;
        }
    }
    if !peer_hung_up {
        hang_up(sh, dialog, peer, &ack, rx).await;
    }
}

impl Media {
    /// Read every queued RTP datagram of the call and measure it.
    fn drain(&mut self, buf: &mut [u8], cmsg: &mut [u8], st: &mut Stats, late_us: u64) {
        let mut errors = 0;
        loop {
            let (n, stamp) = match net::recv_stamped(&self.sock, buf, cmsg) {
                Ok(r) => r,
                // WouldBlock: all read. Anything else (an ICMP error reported on the socket) is
                // not a packet; a socket that keeps failing is read again on the next frame.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    errors += 1;
                    if errors > 8 {
                        return;
                    }
                    continue;
                }
            };
            let now = net::now_ns();
            let arrival = match stamp {
                Some(s) => {
                    st.read_lag(u64::try_from((now - s) / 1000).unwrap_or(0));
                    s
                }
                None => {
                    st.unstamped += 1;
                    now
                }
            };
            let Some(h) = rtp::parse(&buf[..n.min(buf.len())]) else {
                st.not_rtp += 1;
                continue;
            };
            st.rtp_received += 1;
            match self.receiver.on_packet(&h, arrival / 1000) {
                Seen::Audio { late_us: late } => st.lateness(late, late_us),
                Seen::Anchor => st.anchors += 1,
                Seen::Event => st.events_received += 1,
            }
        }
    }
}

/// BYE with Timer E retransmissions until a final answer or Timer F.
async fn hang_up(
    sh: &Shared,
    dialog: &Dialog,
    peer: SocketAddr,
    ack: &[u8],
    rx: &mut mpsc::UnboundedReceiver<Event>,
) {
    let bye = dialog.bye(&branch(), 2);
    sh.stats.borrow_mut().bye_sent += 1;
    sh.send(&bye, peer).await;
    let sent = Instant::now();
    let mut every = T1;
    let mut retransmit_at = sent + T1;
    let give_up = sent + sh.plan.timeout;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Reply(r)) if r.method == Method::Bye && r.status >= 200 => {
                    let mut st = sh.stats.borrow_mut();
                    if r.status < 300 {
                        st.bye_ok += 1;
                    } else {
                        st.bye_failed += 1;
                    }
                    return;
                }
                Some(Event::Reply(r)) if r.method == Method::Invite && (200..300).contains(&r.status) => {
                    sh.send(ack, peer).await;
                }
                // A BYE crossing ours: answered by the reader; ours still wants its answer.
                Some(_) => {}
                None => return,
            },
            () = sleep_until(retransmit_at) => {
                sh.send(&bye, peer).await;
                every = (every * 2).min(T2);
                retransmit_at += every;
            }
            () = sleep_until(give_up) => {
                sh.stats.borrow_mut().bye_failed += 1;
                return;
            }
        }
    }
}

/// CANCEL an INVITE that got a provisional answer but no final one; ACK the 487 (or take the
/// call down if a 200 crossed the CANCEL).
async fn cancel(
    sh: &Shared,
    dialog: &Dialog,
    invite_branch: &str,
    rx: &mut mpsc::UnboundedReceiver<Event>,
) {
    let p = &sh.plan;
    sh.send(&dialog.cancel(invite_branch), p.target).await;
    let until = Instant::now() + 4 * T1;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Reply(r)) if r.method == Method::Invite && r.status >= 300 => {
                    let ack = dialog.ack_failure(invite_branch, r.to_tag.as_deref());
                    sh.send(&ack, p.target).await;
                    return;
                }
                Some(Event::Reply(r)) if r.method == Method::Invite && r.status >= 200 => {
                    let mut d = dialog.clone();
                    d.remote_tag = r.to_tag.clone();
                    if let Some(c) = &r.contact {
                        d.remote_target = c.clone();
                    }
                    let peer = sip::uri_addr(&d.remote_target).unwrap_or(p.target);
                    sh.send(&d.ack_2xx(&branch()), peer).await;
                    sh.send(&d.bye(&branch(), 2), peer).await;
                    return;
                }
                Some(_) => {}
                None => return,
            },
            () = sleep_until(until) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread::JoinHandle;

    use super::*;

    /// A minimal UAS on threads: answers INVITE with 100 and 200 (PCMA and telephone-event 96, a
    /// Contact) or with 486 when `busy`, echoes RTP, answers BYE; counts the ACKs it gets.
    struct FakeUas {
        addr: SocketAddr,
        acks: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl FakeUas {
        fn start(busy: bool) -> FakeUas {
            let sip = StdUdp::bind("127.0.0.1:0").expect("bind");
            let rtp = StdUdp::bind("127.0.0.1:0").expect("bind");
            for s in [&sip, &rtp] {
                s.set_read_timeout(Some(Duration::from_millis(20)))
                    .expect("timeout");
            }
            let addr = sip.local_addr().expect("addr");
            let rtp_port = rtp.local_addr().expect("addr").port();
            let acks = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (acks2, stop2, stop3) = (acks.clone(), stop.clone(), stop.clone());
            let signalling = std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop2.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sip.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(msg) = sip::parse(&buf[..n]) else {
                        continue;
                    };
                    let Start::Request { method, .. } = msg.start else {
                        continue;
                    };
                    let sdp = format!(
                        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio {rtp_port} RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\n\
                         a=rtpmap:96 telephone-event/8000\r\n"
                    );
                    let answers = match method {
                        "INVITE" if busy => {
                            vec![sip::response(&msg, 486, "Busy Here", "uas", None)]
                        }
                        "INVITE" => vec![
                            sip::response(&msg, 100, "Trying", "uas", None),
                            sip::response(&msg, 200, "OK", "uas", Some(("application/sdp", &sdp)))
                                .map(|r| {
                                    String::from_utf8_lossy(&r)
                                        .replacen(
                                            "\r\n",
                                            &format!("\r\nContact: <sip:ivr@{addr}>\r\n"),
                                            1,
                                        )
                                        .into_bytes()
                                }),
                        ],
                        "ACK" => {
                            acks2.fetch_add(1, Ordering::Relaxed);
                            vec![]
                        }
                        _ => vec![sip::response(&msg, 200, "OK", "uas", None)],
                    };
                    for a in answers.into_iter().flatten() {
                        let _ = sip.send_to(&a, from);
                    }
                }
            });
            let echo = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop3.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = rtp.recv_from(&mut buf) {
                        let _ = rtp.send_to(&buf[..n], from);
                    }
                }
            });
            FakeUas {
                addr,
                acks,
                stop,
                threads: vec![signalling, echo],
            }
        }

        /// Stop once `expected` ACKs have come (or 5 s have passed): the generator's last ACK
        /// can still be on its way when `run_plan` returns, and on a loaded machine stopping
        /// at once would miss it.
        fn stop_after(self, expected: u64) -> u64 {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.acks.load(Ordering::Relaxed) < expected
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads {
                let _ = t.join();
            }
            self.acks.load(Ordering::Relaxed)
        }
    }

    fn plan(target: SocketAddr) -> Plan {
        Plan {
            target,
            uri: format!("sip:12345@{target}"),
            local_ip: "127.0.0.1".parse().expect("ip"),
            sip_port: 0,
            calls: 6,
            concurrent: 3,
            rate: 50.0,
            hold: Duration::from_millis(1200),
            dtmf_after: Duration::from_millis(200),
            digits: "1#".into(),
            digits_every: 1,
            digit_ms: 60,
            digit_gap_ms: 40,
            event_pt: None,
            rtp_base: 0,
            timeout: Duration::from_secs(3),
            late_us: 5_000,
            read_every: 5,
            connect_rtp: true,
            reanchor_us: 1_000_000,
            report_every: Duration::from_secs(60),
            max_time: Duration::from_secs(30),
            run_id: "test".into(),
        }
    }

    fn run_plan(plan: Plan) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new()
            .block_on(&rt, run(plan, || (None, None)))
            .expect("run")
    }

    #[test]
    fn calls_are_answered_timed_sent_digits_and_hung_up() {
        let uas = FakeUas::start(false);
        let out = run_plan(plan(uas.addr));
        let acks = uas.stop_after(6);
        let s = out.stats;
        assert!(!out.cut_short);
        assert_eq!((s.attempted, s.answered, s.failures()), (6, 6, 0), "{s:?}");
        assert_eq!(acks, 6);
        assert_eq!(s.peak_held, 3);
        assert_eq!((s.bye_sent, s.bye_ok), (6, 6));
        assert_eq!(s.setup.len(), 6);
        // Two digits a call, 3 event packets (60 ms) and 3 end packets each, echoed back with
        // the answer's payload type 96 and told apart from the PCMA audio.
        assert_eq!(s.digits_sent, 12);
        assert_eq!(s.events_received, 12 * 6);
        assert_eq!(s.lost, 0);
        assert_eq!(s.silent_calls, 0);
        // 60 frames a call: 12 events, 3 (re)starts of the stream, about 45 audio frames timed
        // (the last ones may still be in flight at the BYE).
        assert!(s.measured >= 6 * 30, "{}", s.measured);
        assert_eq!(s.anchors, 6 * 3);
        assert_eq!(s.in_progress, 0);
    }

    #[test]
    fn digits_every_k_keys_one_call_in_k() {
        for every in [0, 1] {
            assert!((0..10).all(|i| keys_digits(i, every)));
        }
        let keyed: Vec<u64> = (0..10).filter(|&i| keys_digits(i, 3)).collect();
        assert_eq!(keyed, [0, 3, 6, 9]);
        // 1,500 calls, every third keys: 500 go one way, 1,000 the other.
        assert_eq!((0..1500).filter(|&i| keys_digits(i, 3)).count(), 500);
    }

    #[test]
    fn only_every_kth_call_sends_digits() {
        let uas = FakeUas::start(false);
        let out = run_plan(Plan {
            digits_every: 3,
            ..plan(uas.addr)
        });
        let acks = uas.stop_after(6);
        let s = out.stats;
        assert_eq!((s.attempted, s.answered, s.failures()), (6, 6, 0), "{s:?}");
        assert_eq!(acks, 6);
        // Calls 0 and 3 key "1#": 4 digits, each echoed as 6 event packets.
        assert_eq!(s.digits_sent, 4);
        assert_eq!(s.events_received, 4 * 6);
        assert_eq!(s.anchors, 2 * 3 + 4);
    }

    #[test]
    fn a_busy_answer_fails_the_call_and_is_acked() {
        let uas = FakeUas::start(true);
        let out = run_plan(Plan {
            calls: 3,
            ..plan(uas.addr)
        });
        let acks = uas.stop_after(3);
        let s = out.stats;
        assert_eq!((s.attempted, s.answered), (3, 0));
        assert_eq!(s.failed.get("486"), Some(&3));
        assert_eq!(acks, 3);
        assert_eq!((s.rtp_sent, s.bye_sent), (0, 0));
    }
}
