//! RFC 3261 section 17 transactions as plain state machines.
//!
//! Each transaction is fed events (a retransmitted request, a response, an ACK) and the current
//! time, and answers with [`TxOutput`]s; [`poll_timeout`](ServerInvite::poll_timeout) says when
//! it next needs [`handle_timeout`](ServerInvite::handle_timeout). No clock and no socket inside,
//! so the timer tables (A, B, D, E, F, G, H, I, J, K, L, M) are tested by adding durations to
//! an `Instant`.
//!
//! The timers are named once, in [`RfcTimer`]: each transaction arms them by name, and their
//! values (from T1, T2 and T4, and whether the transport is reliable) are computed there, as is
//! the doubling of the retransmission timers ([`Retx`]).
//!
//! Reliable transports (TCP) need no retransmission: timers A, E and G are not armed and the
//! wait states (D, I, J, K) are zero, per RFC 3261 17.1/17.2. The one exception is a 2xx to
//! INVITE: it is retransmitted end to end by the UAS core until the ACK arrives, whatever the
//! first hop (13.3.1.4), because a proxy beyond the trunk may use UDP. We keep that loop here, in
//! the server INVITE transaction's Accepted state (RFC 6026), so all retransmission lives in one
//! module. Timer L (64*T1) bounds Accepted; without an ACK by then the caller is told (no ACK).
//!
//! Timer B (64*T1, no final response to our INVITE) runs on every transport (17.1.1.2): TCP
//! spares us retransmissions, not a callee that never answers. The client INVITE transaction has
//! the RFC 6026 Accepted state too, so that each 2xx copy reaches the TU to be ACKed again.

use std::time::{Duration, Instant};

use super::message::{Headers, Method, Request, Response, split_list};

/// T1, T2, T4 of RFC 3261 17.1.1.1 (defaults 500 ms, 4 s, 5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1: the round-trip estimate; retransmissions start at T1 and 64*T1 bounds transactions.
    pub t1: Duration,
    /// T2: the cap on the retransmission interval of non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// T4: how long the network may hold a message; the wait of timers I and K on UDP.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: timers B, F, H, J (on UDP) and L.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxOutput {
    /// Send these bytes again to the transaction's peer.
    Retransmit(Vec<u8>),
    /// A response to pass up (client transactions); retransmissions are absorbed.
    Response(u16),
    /// The transaction gave up: B/F (no final response), H (no ACK for a non-2xx) or L without
    /// an ACK for a 2xx.
    Timeout,
}

/// The transaction timers of RFC 3261 (table 4) and RFC 6026, each computed in one place from
/// [`Timers`]. The transactions arm them by name; retransmission timers (A, E, G) run as a
/// [`Retx`] schedule, the others as a plain deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RfcTimer {
    /// Client INVITE retransmission (UDP): T1, doubling without a cap.
    A,
    /// Client INVITE timeout: 64*T1 on every transport.
    B,
    /// Client INVITE wait for response retransmissions after a non-2xx: 32 s on UDP, 0 on TCP.
    D,
    /// Client non-INVITE retransmission (UDP): T1, doubling up to T2; T2 once Proceeding.
    E,
    /// Client non-INVITE timeout: 64*T1.
    F,
    /// Server INVITE response retransmission: T1, doubling up to T2 (the 2xx schedule of
    /// 13.3.1.4 is the same).
    G,
    /// Server INVITE wait for the ACK of a non-2xx: 64*T1.
    H,
    /// Server INVITE wait for ACK retransmissions: T4 on UDP, 0 on TCP.
    I,
    /// Server non-INVITE wait for request retransmissions: 64*T1 on UDP, 0 on TCP.
    J,
    /// Client non-INVITE wait for response retransmissions: T4 on UDP, 0 on TCP.
    K,
    /// Server INVITE wait for the ACK of a 2xx (RFC 6026 Accepted): 64*T1.
    L,
    /// Client INVITE wait for more 2xx (RFC 6026 Accepted): 64*T1.
    M,
}

impl RfcTimer {
    /// The timer's duration; for A, E and G their first interval. The waits that only absorb
    /// retransmissions (D, I, J, K) are zero on a reliable transport.
    fn duration(self, timers: &Timers, reliable: bool) -> Duration {
        use RfcTimer::*;
        match self {
            A | E | G => timers.t1,
            B | F | H | L | M => timers.t1x64(),
            D | I | J | K if reliable => Duration::ZERO,
            D => Duration::from_secs(32),
            I | K => timers.t4,
            J => timers.t1x64(),
        }
    }

    /// When the timer fires if armed at `now`.
    fn deadline(self, now: Instant, timers: &Timers, reliable: bool) -> Instant {
        now + self.duration(timers, reliable)
    }

    /// The cap on a retransmission timer's doubling: T2 for E and G, none for A.
    fn cap(self, timers: &Timers) -> Option<Duration> {
        match self {
            RfcTimer::E | RfcTimer::G => Some(timers.t2),
            _ => None,
        }
    }
}

/// A retransmission schedule (timer A, E or G): next instant and current interval.
#[derive(Debug, Clone, Copy)]
struct Retx {
    timer: RfcTimer,
    at: Instant,
    interval: Duration,
}

impl Retx {
    fn start(timer: RfcTimer, now: Instant, timers: &Timers) -> Self {
        let interval = timer.duration(timers, false);
        Retx {
            timer,
            at: now + interval,
            interval,
        }
    }

    /// How many retransmissions are due by `now`, advancing the schedule past them: each
    /// interval doubles up to the timer's cap, or stays at the cap when `steady` (timer E once
    /// Proceeding).
    fn fire(&mut self, now: Instant, timers: &Timers, steady: bool) -> usize {
        let mut due = 0;
        while self.at <= now {
            due += 1;
            let doubled = self.interval * 2;
            self.interval = match self.timer.cap(timers) {
                Some(cap) if steady => cap,
                Some(cap) => doubled.min(cap),
                None => doubled,
            };
            self.at += self.interval;
        }
        due
    }
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

fn due(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| t <= now)
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerInviteState {
    Proceeding,
    /// Non-2xx final sent; waiting for the ACK (timers G, H).
    Completed,
    /// 2xx sent; retransmitting it until the ACK (RFC 6026 Accepted, timer L).
    Accepted,
    /// ACK for the non-2xx received; absorbing ACK retransmissions (timer I).
    Confirmed,
    Terminated,
}

/// Server INVITE transaction (RFC 3261 17.2.1 with RFC 6026).
#[derive(Debug)]
pub(crate) struct ServerInvite {
    state: ServerInviteState,
    reliable: bool,
    timers: Timers,
    last: Option<Vec<u8>>,
    retx: Option<Retx>,
    give_up: Option<Instant>,
    end: Option<Instant>,
    acked: bool,
}

impl ServerInvite {
    pub(crate) fn new(reliable: bool, timers: Timers) -> Self {
        ServerInvite {
            state: ServerInviteState::Proceeding,
            reliable,
            timers,
            last: None,
            retx: None,
            give_up: None,
            end: None,
            acked: false,
        }
    }

    pub(crate) fn state(&self) -> ServerInviteState {
        self.state
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    /// Record a response the TU sends (the owner transmits it the first time). Returns false
    /// (and records nothing) when a final response was already sent.
    pub(crate) fn respond(&mut self, now: Instant, status: u16, bytes: Vec<u8>) -> bool {
        if self.state != ServerInviteState::Proceeding {
            return false;
        }
        self.last = Some(bytes);
        if status < 200 {
            return true;
        }
        if status < 300 {
            self.state = ServerInviteState::Accepted;
            self.give_up = Some(RfcTimer::L.deadline(now, &self.timers, self.reliable));
            self.retx = Some(Retx::start(RfcTimer::G, now, &self.timers));
        } else {
            self.state = ServerInviteState::Completed;
            self.give_up = Some(RfcTimer::H.deadline(now, &self.timers, self.reliable));
            self.retx = (!self.reliable).then(|| Retx::start(RfcTimer::G, now, &self.timers));
        }
        true
    }

    /// The INVITE arrived again: the last response goes out again (none yet: nothing).
    pub(crate) fn on_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            ServerInviteState::Proceeding
            | ServerInviteState::Completed
            | ServerInviteState::Accepted => self.last.clone(),
            _ => None,
        }
    }

    /// An ACK for this transaction's final response. Returns true for the first one.
    pub(crate) fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerInviteState::Completed => {
                self.state = ServerInviteState::Confirmed;
                self.retx = None;
                self.give_up = None;
                self.end = Some(RfcTimer::I.deadline(now, &self.timers, self.reliable));
                true
            }
            ServerInviteState::Accepted if !self.acked => {
                self.acked = true;
                self.retx = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminated() {
            return None;
        }
        earliest(&[self.retx.map(|r| r.at), self.give_up, self.end])
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if due(self.give_up, now) {
            // H (non-2xx) or L (2xx)
            if !(self.state == ServerInviteState::Accepted && self.acked) {
                out.push(TxOutput::Timeout);
            }
            self.terminate();
            return out;
        }
        if due(self.end, now) {
            self.terminate();
            return out;
        }
        if let Some(r) = self.retx.as_mut() {
            // G for the non-2xx and for the 2xx alike
            for _ in 0..r.fire(now, &self.timers, false) {
                if let Some(b) = &self.last {
                    out.push(TxOutput::Retransmit(b.clone()));
                }
            }
        }
        out
    }

    fn terminate(&mut self) {
        self.state = ServerInviteState::Terminated;
        self.retx = None;
        self.give_up = None;
        self.end = None;
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Server non-INVITE transaction (RFC 3261 17.2.2): absorbs retransmitted requests by
/// repeating the last response; timer J keeps it around for 64*T1 on UDP.
#[derive(Debug)]
pub(crate) struct ServerNonInvite {
    state: ServerNonInviteState,
    reliable: bool,
    timers: Timers,
    last: Option<Vec<u8>>,
    end: Option<Instant>,
}

impl ServerNonInvite {
    pub(crate) fn new(reliable: bool, timers: Timers) -> Self {
        ServerNonInvite {
            state: ServerNonInviteState::Trying,
            reliable,
            timers,
            last: None,
            end: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    pub(crate) fn respond(&mut self, now: Instant, status: u16, bytes: Vec<u8>) -> bool {
        if matches!(
            self.state,
            ServerNonInviteState::Completed | ServerNonInviteState::Terminated
        ) {
            return false;
        }
        self.last = Some(bytes);
        if status < 200 {
            self.state = ServerNonInviteState::Proceeding;
        } else {
            self.state = ServerNonInviteState::Completed;
            self.end = Some(RfcTimer::J.deadline(now, &self.timers, self.reliable));
        }
        true
    }

    pub(crate) fn on_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed => self.last.clone(),
            _ => None,
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminated() { None } else { self.end }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<TxOutput> {
        if due(self.end, now) {
            self.state = ServerNonInviteState::Terminated;
            self.end = None;
        }
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// INVITE: Calling; non-INVITE: Trying.
    Calling,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx arrived; later 2xx are passed up for the TU to ACK (RFC 6026).
    Accepted,
    Terminated,
}

/// What both client transactions share (RFC 3261 17.1): the request and its retransmission
/// timer (A or E), the give-up timer (B or F, and for an INVITE the 64*T1 after a CANCEL) and
/// the end timer that absorbs late retransmissions (D, K or M). Written once so the two
/// machines differ only in how responses move them.
#[derive(Debug)]
struct ClientCore {
    state: ClientState,
    reliable: bool,
    timers: Timers,
    request: Vec<u8>,
    retx: Option<Retx>,
    give_up: Option<Instant>,
    end: Option<Instant>,
}

impl ClientCore {
    /// Start with the request the owner has just transmitted once: on an unreliable transport
    /// `retx` repeats it, and `give_up` bounds the wait for a final response.
    fn new(
        now: Instant,
        reliable: bool,
        timers: Timers,
        request: Vec<u8>,
        (retx, give_up): (RfcTimer, RfcTimer),
    ) -> Self {
        ClientCore {
            state: ClientState::Calling,
            reliable,
            timers,
            request,
            retx: (!reliable).then(|| Retx::start(retx, now, &timers)),
            give_up: Some(give_up.deadline(now, &timers, reliable)),
            end: None,
        }
    }

    fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// A final response moved the machine to `state`: stop retransmitting and waiting for one,
    /// and end at `end` (D, K or M).
    fn finish(&mut self, now: Instant, state: ClientState, end: RfcTimer) {
        self.state = state;
        self.retx = None;
        self.give_up = None;
        self.end = Some(end.deadline(now, &self.timers, self.reliable));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminated() {
            return None;
        }
        earliest(&[self.retx.map(|r| r.at), self.give_up, self.end])
    }

    /// Give up (a timeout for the TU), end quietly, or retransmit the request; `steady` keeps
    /// the interval at T2 (timer E once Proceeding) instead of doubling it.
    fn handle_timeout(&mut self, now: Instant, steady: bool) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if due(self.give_up, now) {
            self.state = ClientState::Terminated;
            self.retx = None;
            self.give_up = None;
            out.push(TxOutput::Timeout);
            return out;
        }
        if due(self.end, now) {
            self.state = ClientState::Terminated;
            self.end = None;
            return out;
        }
        if let Some(r) = self.retx.as_mut() {
            for _ in 0..r.fire(now, &self.timers, steady) {
                out.push(TxOutput::Retransmit(self.request.clone()));
            }
        }
        out
    }
}

/// Client non-INVITE transaction (RFC 3261 17.1.2), for the BYE and INFO we send: timers E
/// (doubling up to T2 while Trying, T2 once Proceeding), F and K.
#[derive(Debug)]
pub(crate) struct ClientNonInvite {
    core: ClientCore,
}

impl ClientNonInvite {
    /// Start with the request the owner has just transmitted once.
    pub(crate) fn new(now: Instant, reliable: bool, timers: Timers, request: Vec<u8>) -> Self {
        let core = ClientCore::new(now, reliable, timers, request, (RfcTimer::E, RfcTimer::F));
        ClientNonInvite { core }
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.core.is_terminated()
    }

    /// A response matched to this transaction. Returns it to pass up, or nothing when it is a
    /// retransmission to absorb.
    pub(crate) fn on_response(&mut self, now: Instant, status: u16) -> Option<TxOutput> {
        match self.core.state {
            ClientState::Calling | ClientState::Proceeding if status < 200 => {
                self.core.state = ClientState::Proceeding;
                Some(TxOutput::Response(status))
            }
            ClientState::Calling | ClientState::Proceeding => {
                self.core.finish(now, ClientState::Completed, RfcTimer::K);
                Some(TxOutput::Response(status))
            }
            _ => None,
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<TxOutput> {
        let proceeding = self.core.state == ClientState::Proceeding;
        self.core.handle_timeout(now, proceeding)
    }
}

/// Client INVITE transaction (RFC 3261 17.1.1 with RFC 6026): timers A (doubling, uncapped),
/// B, D and M.
///
/// For a non-2xx final response the owner builds the ACK with [`ack_for_non_2xx`] and hands it
/// over with [`ClientInvite::set_ack`]; it is repeated for every retransmitted final response
/// while Completed, so the TU never sees those. A 2xx moves the transaction to Accepted (RFC
/// 6026) instead of ending it: every 2xx that arrives within timer M (64*T1), retransmitted or
/// from another fork, is passed up, because the ACK for a 2xx is the TU's (13.2.2.4) and must be
/// sent again for each copy. Had the transaction ended at the first 2xx (as RFC 3261 alone
/// says), the retransmissions would match nothing and the callee would never learn that its
/// answer arrived.
#[derive(Debug)]
pub(crate) struct ClientInvite {
    core: ClientCore,
    ack: Option<Vec<u8>>,
}

impl ClientInvite {
    /// Start with the INVITE the owner has just transmitted once.
    pub(crate) fn new(now: Instant, reliable: bool, timers: Timers, request: Vec<u8>) -> Self {
        let core = ClientCore::new(now, reliable, timers, request, (RfcTimer::A, RfcTimer::B));
        ClientInvite { core, ack: None }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> ClientState {
        self.core.state
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.core.is_terminated()
    }

    /// Returns the response to pass up, or a retransmission of the ACK for a repeated non-2xx.
    pub(crate) fn on_response(&mut self, now: Instant, status: u16) -> Option<TxOutput> {
        match self.core.state {
            ClientState::Calling | ClientState::Proceeding => {
                if status < 200 {
                    self.core.state = ClientState::Proceeding;
                    self.core.retx = None;
                    self.core.give_up = None;
                } else if status < 300 {
                    // Timer M: absorb nothing, pass every 2xx up for its ACK (RFC 6026 8.4)
                    self.core.finish(now, ClientState::Accepted, RfcTimer::M);
                } else {
                    self.core.finish(now, ClientState::Completed, RfcTimer::D);
                }
                Some(TxOutput::Response(status))
            }
            ClientState::Accepted if (200..300).contains(&status) => {
                Some(TxOutput::Response(status))
            }
            ClientState::Completed if status >= 300 => self.ack.clone().map(TxOutput::Retransmit),
            _ => None,
        }
    }

    pub(crate) fn set_ack(&mut self, ack: Vec<u8>) {
        self.ack = Some(ack);
    }

    /// The TU sent CANCEL for this INVITE. A server that never answers the CANCEL's 487 must
    /// not keep the INVITE alive forever: with timer B already stopped by the provisional
    /// response, we give up 64*T1 after the CANCEL (RFC 3261 9.1) and report a timeout.
    pub(crate) fn cancelled(&mut self, now: Instant) {
        if self.core.state == ClientState::Proceeding {
            // not a named timer: RFC 3261 9.1 says 64*T1
            self.core.give_up = Some(now + self.core.timers.t1x64());
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Timer A never settles at T2 (17.1.1.2): it doubles until B or a response stops it.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<TxOutput> {
        self.core.handle_timeout(now, false)
    }
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's Request-URI, Call-ID,
/// From, CSeq number, top Via (same branch: it belongs to the INVITE's transaction) and Route,
/// with the response's To (its tag names the dialog the server meant).
pub(crate) fn ack_for_non_2xx(invite: &Request, response: &Response) -> Request {
    let to = response
        .headers
        .get("To")
        .or_else(|| invite.headers.get("To"));
    on_invite_branch(invite, Method::Ack, to)
}

/// The CANCEL for an INVITE (RFC 3261 9.1): the same recipe as the non-2xx ACK with the
/// INVITE's own To. Sharing the INVITE's branch is what lets the server find what to cancel.
pub(crate) fn cancel_for(invite: &Request) -> Request {
    on_invite_branch(invite, Method::Cancel, invite.headers.get("To"))
}

fn on_invite_branch(invite: &Request, method: Method, to: Option<&str>) -> Request {
    let inv = &invite.headers;
    let mut headers = Headers::default();
    let top_via = inv
        .get("Via")
        .and_then(|line| split_list(line).into_iter().next())
        .unwrap_or_default();
    headers.push("Via", top_via);
    headers.push("Max-Forwards", "70");
    headers.push("From", inv.get("From").unwrap_or_default().to_owned());
    headers.push("To", to.unwrap_or_default().to_owned());
    headers.push("Call-ID", inv.get("Call-ID").unwrap_or_default().to_owned());
    let seq = inv.cseq().map(|c| c.seq).unwrap_or_default();
    headers.push("CSeq", format!("{seq} {method}"));
    for r in inv.get_all("Route") {
        headers.push("Route", r.to_owned());
    }
    Request {
        method,
        uri: invite.uri.clone(),
        version: "SIP/2.0".into(),
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    trait Machine {
        fn poll(&self) -> Option<Instant>;
        fn fire(&mut self, now: Instant) -> Vec<TxOutput>;
    }
    macro_rules! machine {
        ($($t:ty),*) => {$(
            impl Machine for $t {
                fn poll(&self) -> Option<Instant> { self.poll_timeout() }
                fn fire(&mut self, now: Instant) -> Vec<TxOutput> { self.handle_timeout(now) }
            }
        )*};
    }
    machine!(ServerInvite, ClientNonInvite, ClientInvite);

    /// Drive a machine to `until`, recording when it retransmitted and timed out.
    fn drive(
        m: &mut impl Machine,
        start: Instant,
        until: Duration,
    ) -> (Vec<Duration>, Option<Duration>) {
        let mut sent = Vec::new();
        let mut timeout = None;
        while let Some(t) = m.poll() {
            if t > start + until {
                break;
            }
            for o in m.fire(t) {
                match o {
                    TxOutput::Retransmit(_) => sent.push(t - start),
                    TxOutput::Timeout => timeout = Some(t - start),
                    TxOutput::Response(_) => {}
                }
            }
        }
        (sent, timeout)
    }

    #[test]
    fn server_invite_2xx_retransmits_until_ack() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false, Timers::default());
        assert!(tx.respond(t0, 100, b"100".to_vec()));
        assert!(tx.respond(t0, 200, b"200".to_vec()));
        assert!(!tx.respond(t0, 486, b"486".to_vec()), "one final only");
        let mut sent = Vec::new();
        let mut now = t0;
        for _ in 0..5 {
            now = tx.poll_timeout().expect("armed");
            for o in tx.handle_timeout(now) {
                assert_eq!(o, TxOutput::Retransmit(b"200".to_vec()));
                sent.push(now - t0);
            }
        }
        // intervals 500 ms, 1 s, 2 s, 4 s, 4 s
        assert_eq!(sent, [ms(500), ms(1500), ms(3500), ms(7500), ms(11500)]);
        assert_eq!(tx.on_retransmission(), Some(b"200".to_vec()));
        assert!(tx.on_ack(now));
        assert!(!tx.on_ack(now), "second ACK is a retransmission");
        // no more retransmissions; timer L ends it quietly
        let l = tx.poll_timeout().expect("timer L");
        assert_eq!(l - t0, ms(32_000));
        assert!(tx.handle_timeout(l).is_empty());
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_invite_2xx_without_ack_times_out_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(true, Timers::default());
        tx.respond(t0, 200, b"200".to_vec());
        let (sent, timeout) = drive(&mut tx, t0, Duration::from_secs(60));
        // retransmitted even over TCP (13.3.1.4), every 4 s once capped
        assert_eq!(sent.first(), Some(&ms(500)));
        assert_eq!(sent.last(), Some(&ms(31_500)));
        assert_eq!(timeout, Some(ms(32_000)));
    }

    #[test]
    fn server_invite_non_2xx_udp_timer_g_h_i() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false, Timers::default());
        tx.respond(t0, 486, b"486".to_vec());
        assert_eq!(tx.state(), ServerInviteState::Completed);
        let (sent, _) = drive(&mut tx, t0, ms(8000));
        assert_eq!(sent, [ms(500), ms(1500), ms(3500), ms(7500)]);
        let now = t0 + ms(8000);
        assert!(tx.on_ack(now));
        assert_eq!(tx.state(), ServerInviteState::Confirmed);
        assert!(tx.on_retransmission().is_none(), "Confirmed absorbs");
        assert_eq!(tx.poll_timeout(), Some(now + ms(5000)), "timer I = T4");
        assert!(tx.handle_timeout(now + ms(5000)).is_empty());
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_invite_non_2xx_tcp_has_no_timer_g_and_zero_i() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(true, Timers::default());
        tx.respond(t0, 487, b"487".to_vec());
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "only timer H");
        assert!(tx.on_ack(t0 + ms(10)));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(10)));
        tx.handle_timeout(t0 + ms(10));
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_invite_timer_h_without_ack() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false, Timers::default());
        tx.respond(t0, 603, b"603".to_vec());
        let (sent, timeout) = drive(&mut tx, t0, ms(40_000));
        assert_eq!(timeout, Some(ms(32_000)));
        assert_eq!(sent.len(), 10, "{sent:?}");
        assert!(tx.is_terminated());
    }

    #[test]
    fn server_non_invite_timer_j() {
        let t0 = Instant::now();
        let mut udp = ServerNonInvite::new(false, Timers::default());
        assert!(udp.on_retransmission().is_none(), "nothing sent yet");
        udp.respond(t0, 200, b"200".to_vec());
        assert_eq!(udp.on_retransmission(), Some(b"200".to_vec()));
        assert!(!udp.respond(t0, 500, b"500".to_vec()));
        assert_eq!(udp.poll_timeout(), Some(t0 + ms(32_000)));
        udp.handle_timeout(t0 + ms(31_999));
        assert_eq!(udp.state(), ServerNonInviteState::Completed);
        udp.handle_timeout(t0 + ms(32_000));
        assert!(udp.is_terminated());
        let mut tcp = ServerNonInvite::new(true, Timers::default());
        tcp.respond(t0, 200, b"200".to_vec());
        assert_eq!(tcp.poll_timeout(), Some(t0));
    }

    #[test]
    fn client_non_invite_udp_timer_e_f() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, false, Timers::default(), b"BYE".to_vec());
        let (sent, timeout) = drive(&mut tx, t0, ms(40_000));
        assert_eq!(
            sent[..6],
            [
                ms(500),
                ms(1500),
                ms(3500),
                ms(7500),
                ms(11_500),
                ms(15_500)
            ]
        );
        assert_eq!(timeout, Some(ms(32_000)));
        assert!(tx.is_terminated());
    }

    #[test]
    fn client_non_invite_proceeding_uses_t2_and_timer_k() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, false, Timers::default(), b"BYE".to_vec());
        assert_eq!(
            tx.on_response(t0 + ms(100), 100),
            Some(TxOutput::Response(100))
        );
        let (sent, _) = drive(&mut tx, t0, ms(9000));
        assert_eq!(sent, [ms(500), ms(4500), ms(8500)]);
        let now = t0 + ms(9000);
        assert_eq!(tx.on_response(now, 200), Some(TxOutput::Response(200)));
        assert_eq!(tx.on_response(now, 200), None, "retransmitted 200 absorbed");
        assert_eq!(tx.poll_timeout(), Some(now + ms(5000)), "timer K = T4");
        tx.handle_timeout(now + ms(5000));
        assert!(tx.is_terminated());
    }

    #[test]
    fn client_non_invite_tcp_never_retransmits() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, true, Timers::default(), b"BYE".to_vec());
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        let (sent, timeout) = drive(&mut tx, t0, ms(40_000));
        assert!(sent.is_empty());
        assert_eq!(timeout, Some(ms(32_000)));
        let mut tx = ClientNonInvite::new(t0, true, Timers::default(), b"BYE".to_vec());
        tx.on_response(t0, 200);
        assert_eq!(tx.poll_timeout(), Some(t0), "timer K = 0 on TCP");
    }

    #[test]
    fn client_invite_timer_a_doubles_without_cap_then_b() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(t0, false, Timers::default(), b"INVITE".to_vec());
        let (sent, timeout) = drive(&mut tx, t0, ms(40_000));
        assert_eq!(
            sent,
            [
                ms(500),
                ms(1500),
                ms(3500),
                ms(7500),
                ms(15_500),
                ms(31_500)
            ]
        );
        assert_eq!(timeout, Some(ms(32_000)));
    }

    #[test]
    fn client_invite_non_2xx_acks_and_timer_d() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(t0, false, Timers::default(), b"INVITE".to_vec());
        assert_eq!(tx.on_response(t0, 180), Some(TxOutput::Response(180)));
        assert_eq!(tx.poll_timeout(), None, "proceeding: A and B stopped");
        assert_eq!(tx.on_response(t0, 486), Some(TxOutput::Response(486)));
        tx.set_ack(b"ACK".to_vec());
        assert_eq!(
            tx.on_response(t0, 486),
            Some(TxOutput::Retransmit(b"ACK".to_vec()))
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "timer D");
    }

    #[test]
    fn client_invite_2xx_accepted_passes_every_2xx_up_until_timer_m() {
        let t0 = Instant::now();
        let mut ok = ClientInvite::new(t0, true, Timers::default(), b"INVITE".to_vec());
        assert_eq!(ok.on_response(t0, 200), Some(TxOutput::Response(200)));
        assert_eq!(ok.state(), ClientState::Accepted);
        assert_eq!(
            ok.on_response(t0 + ms(500), 200),
            Some(TxOutput::Response(200)),
            "a retransmitted 2xx goes to the TU, which ACKs it again"
        );
        assert_eq!(
            ok.on_response(t0 + ms(600), 486),
            None,
            "late non-2xx absorbed"
        );
        assert_eq!(ok.poll_timeout(), Some(t0 + ms(32_000)), "timer M");
        assert!(ok.handle_timeout(t0 + ms(32_000)).is_empty());
        assert!(ok.is_terminated());
    }

    #[test]
    fn client_invite_cancel_bounds_proceeding() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(t0, false, Timers::default(), b"INVITE".to_vec());
        tx.cancelled(t0);
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + ms(500)),
            "Calling: timers A and B as before"
        );
        tx.on_response(t0 + ms(100), 180);
        assert_eq!(tx.poll_timeout(), None);
        tx.cancelled(t0 + ms(200));
        let (_, timeout) = drive(&mut tx, t0, ms(40_000));
        assert_eq!(timeout, Some(ms(32_200)));
    }

    #[test]
    fn ack_and_cancel_ride_on_the_invite_branch() {
        use crate::message::Message;
        use crate::parse::parse_datagram;
        let invite = "INVITE sip:agent@pbx SIP/2.0\r\n\
Via: SIP/2.0/UDP gw:5060;branch=z9hG4bKinv;rport\r\nMax-Forwards: 70\r\n\
Route: <sip:p1;lr>\r\nFrom: <sip:12345@gw>;tag=ours\r\nTo: <sip:agent@pbx>\r\n\
Call-ID: c1\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n";
        let resp = "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP gw:5060;branch=z9hG4bKinv;rport=5060\r\n\
From: <sip:12345@gw>;tag=ours\r\nTo: <sip:agent@pbx>;tag=theirs\r\n\
Call-ID: c1\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n";
        let (Ok(Message::Request(invite)), Ok(Message::Response(resp))) = (
            parse_datagram(invite.as_bytes()),
            parse_datagram(resp.as_bytes()),
        ) else {
            panic!("test messages parse");
        };
        let ack = ack_for_non_2xx(&invite, &resp);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, "sip:agent@pbx");
        let h = &ack.headers;
        assert_eq!(h.top_via().expect("via").branch(), Some("z9hG4bKinv"));
        assert_eq!(h.to().expect("to").tag(), Some("theirs"));
        assert_eq!(h.from().expect("from").tag(), Some("ours"));
        assert_eq!(h.cseq().expect("cseq").to_string(), "4 ACK");
        assert_eq!(h.route().expect("route").len(), 1);
        let cancel = cancel_for(&invite);
        assert_eq!(cancel.method, Method::Cancel);
        let h = &cancel.headers;
        assert_eq!(h.top_via().expect("via").branch(), Some("z9hG4bKinv"));
        assert_eq!(h.to().expect("to").tag(), None);
        assert_eq!(h.cseq().expect("cseq").to_string(), "4 CANCEL");
    }
}
