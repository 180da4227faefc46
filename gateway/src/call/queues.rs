//! The agent queues' task: drives the sans-IO [`Acd`] with tokio and routes what it decides to
//! the calls concerned.
//!
//! One task owns the [`Acd`]; calls talk to it through a cloneable [`Queues`] handle. A call
//! that joins a queue hands over a channel for its [`QueueNews`] (an agent to ring, a position to
//! announce, being given up on) and reports back how an offer went and when its call with the
//! agent ended. A caller who asks for a callback leaves a *held* outbound call (stored, so it
//! survives a restart: [`super::outbound`] restores it here at start) and their ticket keeps its
//! place without a call; when its turn comes the agent is reserved and the outbound call
//! released, and once the citizen answers, that call reclaims the ticket and the agent rings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::acd::{Acd, AcdError, AcdOutput, QueueSettings, QueueStatus, Ticket};

/// What the queue tells a waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueNews {
    /// Ring this agent (their SIP URI) for the caller; report with [`Queues::answered`] or
    /// [`Queues::offer_failed`]. `via`: send the INVITE there instead of the URI's host (an
    /// agent's phone registered from behind NAT: its Contact names a private address).
    Offer {
        agent: String,
        via: Option<AgentRoute>,
    },
    /// Stop ringing this agent: the offer rang out (the queue has moved on already).
    Withdrawn { agent: String },
    /// Tell the caller where they stand.
    Announce {
        position: usize,
        estimated_wait: Duration,
    },
    /// The caller waited the queue's longest: they are out of it (the flow's `on_fail` runs).
    GaveUp,
}

/// Where a registered agent's phone is reached: the address its REGISTER came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRoute {
    pub addr: std::net::SocketAddr,
    pub transport: sip::Transport,
}

/// The registration's route when its phone is behind NAT: the Contact names a private address
/// (RFC 1918, shared 100.64/10, link-local, unique-local IPv6) other than the one the REGISTER
/// came from, reachable only through the NAT binding the REGISTER opened (the test Kamailio's
/// `nat_uac_test` makes before `fix_nated_register`). A public or same-host Contact, or a name,
/// is rung as registered.
pub fn nat_route(
    contact: &str,
    source: std::net::SocketAddr,
    transport: sip::Transport,
) -> Option<AgentRoute> {
    let target = super::bridge::AgentTarget::parse(contact).ok()?;
    let ip: std::net::IpAddr = target.host.parse().ok()?;
    let private = match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    (private && ip != source.ip()).then_some(AgentRoute {
        addr: source,
        transport,
    })
}

enum Request {
    Enqueue {
        queue: String,
        priority: u8,
        news: mpsc::UnboundedSender<QueueNews>,
        reply: oneshot::Sender<Result<Ticket, AcdError>>,
    },
    Left(Ticket),
    Answered(Ticket),
    OfferFailed(Ticket),
    Ended(Ticket),
    Status(oneshot::Sender<Vec<QueueStatus>>),
    Registered {
        user: String,
        contact: String,
        route: Option<AgentRoute>,
    },
    Unregistered {
        user: String,
    },
    SetLoggedIn {
        queue: String,
        agent: String,
        on: bool,
        reply: oneshot::Sender<Result<(), AcdError>>,
    },
    /// Log the agent in to or out of every queue that lists them (a feature code).
    SetAllLoggedIn {
        agent: String,
        on: bool,
        reply: oneshot::Sender<Result<Vec<String>, AcdError>>,
    },
    /// The waiting caller of `ticket` is to be called back by the held outbound call `job`.
    ToCallback {
        ticket: Ticket,
        job: String,
        reply: oneshot::Sender<bool>,
    },
    /// A held queue callback from the store (at start).
    Restore {
        job: String,
        queue: String,
        priority: u8,
    },
    /// The callback `job`'s citizen answered: the call takes its ticket back.
    Reclaim {
        job: String,
        news: mpsc::UnboundedSender<QueueNews>,
        reply: oneshot::Sender<Option<Ticket>>,
    },
    /// The callback `job` was not reached this time; its turn comes back after `retry`.
    CallbackFailed {
        job: String,
        retry: Duration,
    },
    /// The callback `job` ended (reached and served, or tried out): its ticket, if still
    /// waiting, leaves the queue.
    CallbackEnded {
        job: String,
    },
    Outbound(super::outbound::Outbound),
}

/// A handle on the queues' task (cheap to clone; every call holds one).
#[derive(Debug, Clone)]
pub struct Queues {
    tx: mpsc::UnboundedSender<Request>,
    names: std::sync::Arc<Vec<String>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Enqueue {
                queue, priority, ..
            } => write!(f, "Enqueue({queue}, {priority})"),
            Request::Left(t) => write!(f, "Left({t})"),
            Request::Answered(t) => write!(f, "Answered({t})"),
            Request::OfferFailed(t) => write!(f, "OfferFailed({t})"),
            Request::Ended(t) => write!(f, "Ended({t})"),
            Request::Status(_) => write!(f, "Status"),
            Request::Registered { user, .. } => write!(f, "Registered({user})"),
            Request::Unregistered { user } => write!(f, "Unregistered({user})"),
            Request::SetLoggedIn {
                queue, agent, on, ..
            } => write!(f, "SetLoggedIn({queue}, {agent}, {on})"),
            Request::ToCallback { ticket, job, .. } => write!(f, "ToCallback({ticket}, {job})"),
            Request::SetAllLoggedIn { agent, on, .. } => write!(f, "SetAllLoggedIn({agent}, {on})"),
            Request::Restore { job, queue, .. } => write!(f, "Restore({job}, {queue})"),
            Request::Reclaim { job, .. } => write!(f, "Reclaim({job})"),
            Request::CallbackFailed { job, .. } => write!(f, "CallbackFailed({job})"),
            Request::CallbackEnded { job } => write!(f, "CallbackEnded({job})"),
            Request::Outbound(_) => write!(f, "Outbound"),
        }
    }
}

impl Queues {
    /// Start the task with these queues; "today" for the counters is in `utc_offset`.
    pub fn start(queues: BTreeMap<String, QueueSettings>, utc_offset: chrono::FixedOffset) -> Self {
        let names = std::sync::Arc::new(queues.keys().cloned().collect());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Acd::new(Instant::now(), queues), rx, utc_offset));
        Self { tx, names }
    }

    /// Whether a queue of this name is configured.
    pub fn has(&self, queue: &str) -> bool {
        self.names.iter().any(|n| n == queue)
    }

    /// Join `queue`; news for the caller comes on the returned receiver.
    pub async fn enqueue(
        &self,
        queue: &str,
        priority: u8,
    ) -> Result<(Ticket, mpsc::UnboundedReceiver<QueueNews>), AcdError> {
        let (news, news_rx) = mpsc::unbounded_channel();
        let (reply, reply_rx) = oneshot::channel();
        let gone = || AcdError::UnknownQueue(queue.to_owned());
        self.tx
            .send(Request::Enqueue {
                queue: queue.to_owned(),
                priority,
                news,
                reply,
            })
            .map_err(|_| gone())?;
        let ticket = reply_rx.await.map_err(|_| gone())??;
        Ok((ticket, news_rx))
    }

    /// The caller left the queue unserved (hung up, or the flow took them out).
    pub fn left(&self, ticket: Ticket) {
        let _ = self.tx.send(Request::Left(ticket));
    }

    /// The offered agent answered: bridged.
    pub fn answered(&self, ticket: Ticket) {
        let _ = self.tx.send(Request::Answered(ticket));
    }

    /// The offered agent did not answer (busy, declined, unreachable).
    pub fn offer_failed(&self, ticket: Ticket) {
        let _ = self.tx.send(Request::OfferFailed(ticket));
    }

    /// The call with the agent ended (their wrap-up starts).
    pub fn ended(&self, ticket: Ticket) {
        let _ = self.tx.send(Request::Ended(ticket));
    }

    /// An agent's phone registered at `contact` (reached through `route` when behind NAT):
    /// they are logged in to their queues.
    pub fn registered(&self, user: String, contact: String, route: Option<AgentRoute>) {
        let _ = self.tx.send(Request::Registered {
            user,
            contact,
            route,
        });
    }

    /// An agent's registration ended: logged out of their queues (a call in progress goes on).
    pub fn unregistered(&self, user: String) {
        let _ = self.tx.send(Request::Unregistered { user });
    }

    /// Log `agent` in to or out of `queue` (the admin API: a break, the end of a shift).
    pub async fn set_logged_in(&self, queue: &str, agent: &str, on: bool) -> Result<(), AcdError> {
        let (reply, rx) = oneshot::channel();
        let gone = || AcdError::UnknownQueue(queue.to_owned());
        self.tx
            .send(Request::SetLoggedIn {
                queue: queue.to_owned(),
                agent: agent.to_owned(),
                on,
                reply,
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Log `agent` in to or out of every queue that lists them (`*21`, `*22`): those queues.
    pub async fn set_all_logged_in(&self, agent: &str, on: bool) -> Result<Vec<String>, AcdError> {
        let (reply, rx) = oneshot::channel();
        let gone = || AcdError::UnknownQueue(String::new());
        self.tx
            .send(Request::SetAllLoggedIn {
                agent: agent.to_owned(),
                on,
                reply,
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The outbound calls that carry out callbacks (set once both tasks run).
    pub fn attach_outbound(&self, outbound: super::outbound::Outbound) {
        let _ = self.tx.send(Request::Outbound(outbound));
    }

    /// The caller of `ticket` hangs up to be called back by the held outbound call `job`,
    /// keeping their place. `false`: the ticket is gone (served or given up meanwhile).
    pub async fn to_callback(&self, ticket: Ticket, job: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Request::ToCallback {
            ticket,
            job: job.to_owned(),
            reply,
        });
        sent.is_ok() && rx.await.unwrap_or(false)
    }

    /// A held queue callback found in the store at start takes a place in its queue.
    pub fn restore(&self, job: &str, queue: &str, priority: u8) {
        let _ = self.tx.send(Request::Restore {
            job: job.to_owned(),
            queue: queue.to_owned(),
            priority,
        });
    }

    /// The citizen of callback `job` answered: their ticket is this call's again.
    pub async fn reclaim(&self, job: &str) -> Option<(Ticket, mpsc::UnboundedReceiver<QueueNews>)> {
        let (news, news_rx) = mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Reclaim {
                job: job.to_owned(),
                news,
                reply,
            })
            .ok()?;
        let ticket = rx.await.ok()??;
        Some((ticket, news_rx))
    }

    /// Callback `job` was not reached; its turn comes back after `retry`.
    pub fn callback_failed(&self, job: &str, retry: Duration) {
        let _ = self.tx.send(Request::CallbackFailed {
            job: job.to_owned(),
            retry,
        });
    }

    /// Callback `job` is over (its ticket, if still waiting, leaves).
    pub fn callback_ended(&self, job: &str) {
        let _ = self.tx.send(Request::CallbackEnded {
            job: job.to_owned(),
        });
    }

    /// Every queue's figures now.
    pub async fn status(&self) -> Vec<QueueStatus> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Status(reply)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

async fn run(
    mut acd: Acd,
    mut rx: mpsc::UnboundedReceiver<Request>,
    utc_offset: chrono::FixedOffset,
) {
    let mut calls: BTreeMap<Ticket, mpsc::UnboundedSender<QueueNews>> = BTreeMap::new();
    // Tickets whose caller is to be called back: the held outbound call's id.
    let mut callbacks: BTreeMap<Ticket, String> = BTreeMap::new();
    let mut outbound: Option<super::outbound::Outbound> = None;
    let ticket_of = |callbacks: &BTreeMap<Ticket, String>, job: &str| {
        callbacks
            .iter()
            .find(|(_, j)| j.as_str() == job)
            .map(|(t, _)| *t)
    };
    // Registered agents' contacts: an offer to `1001` rings where 1001's phone registered.
    let mut contacts: BTreeMap<String, (String, Option<AgentRoute>)> = BTreeMap::new();
    let mut wake: Option<Instant> = None;
    let today = || chrono::Utc::now().with_timezone(&utc_offset).date_naive();
    let mut day = today();
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { return };
                let now = Instant::now();
                match req {
                    Request::Enqueue { queue, priority, news, reply } => {
                        let r = acd.handle_enqueue(now, &queue, priority);
                        if let Ok(ticket) = r {
                            calls.insert(ticket, news);
                            metrics::counter!("gateway_queue_callers_total", "queue" => queue.clone())
                                .increment(1);
                        }
                        let _ = reply.send(r);
                    }
                    Request::Left(t) => {
                        calls.remove(&t);
                        acd.handle_left(now, t);
                    }
                    Request::Answered(t) => {
                        calls.remove(&t);
                        acd.handle_answered(now, t);
                    }
                    Request::OfferFailed(t) => acd.handle_offer_failed(now, t),
                    Request::Ended(t) => acd.handle_call_ended(now, t),
                    Request::Status(reply) => {
                        let _ = reply.send(acd.status(now));
                    }
                    Request::Registered { user, contact, route } => {
                        // A refresh keeps the agent's login as it is (a `*22` break holds).
                        if contacts.insert(user.clone(), (contact, route)).is_some() {
                            continue;
                        }
                        for queue in acd.queues_of(&user) {
                            if let Err(e) = acd.handle_login(now, &user, &queue) {
                                tracing::warn!(%user, %queue, error = %e, "agent not logged in");
                            }
                        }
                    }
                    Request::SetLoggedIn { queue, agent, on, reply } => {
                        let r = if on {
                            acd.handle_login(now, &agent, &queue)
                        } else {
                            acd.handle_logout(now, &agent, &queue)
                        };
                        let _ = reply.send(r);
                    }
                    Request::Unregistered { user } => {
                        contacts.remove(&user);
                        for queue in acd.queues_of(&user) {
                            let _ = acd.handle_logout(now, &user, &queue);
                        }
                    }
                    Request::ToCallback { ticket, job, reply } => {
                        let ok = acd.handle_to_callback(now, ticket);
                        if ok {
                            calls.remove(&ticket);
                            callbacks.insert(ticket, job);
                        }
                        let _ = reply.send(ok);
                    }
                    Request::Restore { job, queue, priority } => {
                        match acd.handle_enqueue_callback(now, &queue, priority) {
                            Ok(ticket) => {
                                callbacks.insert(ticket, job);
                            }
                            Err(e) => tracing::warn!(%job, error = %e, "queue callback not restored"),
                        }
                    }
                    Request::Reclaim { job, news, reply } => {
                        let reclaimed = match ticket_of(&callbacks, &job) {
                            Some(t) => {
                                // The news must be in place before the ACD rings the agent.
                                calls.insert(t, news);
                                if acd.handle_reclaim(now, t) {
                                    callbacks.remove(&t);
                                    Some(t)
                                } else {
                                    calls.remove(&t);
                                    None
                                }
                            }
                            None => None,
                        };
                        let _ = reply.send(reclaimed);
                    }
                    Request::CallbackFailed { job, retry } => {
                        if let Some(t) = ticket_of(&callbacks, &job) {
                            acd.handle_callback_failed(now, t, retry);
                        }
                    }
                    Request::CallbackEnded { job } => {
                        if let Some(t) = ticket_of(&callbacks, &job) {
                            callbacks.remove(&t);
                            acd.handle_left(now, t);
                        }
                    }
                    Request::Outbound(o) => outbound = Some(o),
                    Request::SetAllLoggedIn { agent, on, reply } => {
                        let queues = acd.queues_of(&agent);
                        let r = queues
                            .iter()
                            .try_for_each(|q| {
                                if on {
                                    acd.handle_login(now, &agent, q)
                                } else {
                                    acd.handle_logout(now, &agent, q)
                                }
                            })
                            .map(|()| queues.clone());
                        let _ = reply.send(r);
                    }
                }
            }
            () = sleep => acd.handle_timeout(Instant::now()),
            _ = gauges.tick() => {
                if today() != day {
                    day = today();
                    acd.reset_counters();
                }
                publish(&acd.status(Instant::now()));
            }
        }
        wake = loop {
            let (ticket, news) = match acd.poll_output() {
                AcdOutput::Timeout(at) => break at,
                AcdOutput::Offer { ticket, agent } => {
                    // A registered agent is rung where their phone is.
                    let uri = if agent.contains(':') {
                        Some((agent.clone(), None))
                    } else {
                        contacts.get(&agent).cloned()
                    };
                    match uri {
                        Some((uri, via)) => (ticket, QueueNews::Offer { agent: uri, via }),
                        None => {
                            acd.handle_offer_failed(Instant::now(), ticket);
                            continue;
                        }
                    }
                }
                AcdOutput::OfferWithdrawn { ticket, agent } => {
                    (ticket, QueueNews::Withdrawn { agent })
                }
                AcdOutput::Announce {
                    ticket,
                    position,
                    estimated_wait,
                } => (
                    ticket,
                    QueueNews::Announce {
                        position,
                        estimated_wait,
                    },
                ),
                AcdOutput::CallBack { ticket, agent } => {
                    // The agent is held; the citizen is dialled (their answer reclaims).
                    match (callbacks.get(&ticket), &outbound) {
                        (Some(job), Some(o)) => {
                            tracing::info!(ticket, %agent, %job, "queue callback: its turn");
                            o.release(job);
                        }
                        _ => acd.handle_callback_failed(
                            Instant::now(),
                            ticket,
                            Duration::from_secs(30),
                        ),
                    }
                    continue;
                }
                AcdOutput::GaveUp { ticket } if callbacks.contains_key(&ticket) => {
                    if let (Some(job), Some(o)) = (callbacks.remove(&ticket), &outbound) {
                        let o = o.clone();
                        tokio::spawn(async move { o.cancel(&job).await });
                    }
                    continue;
                }
                AcdOutput::GaveUp { ticket } => (ticket, QueueNews::GaveUp),
            };
            let gone = match calls.get(&ticket) {
                Some(tx) => tx.send(news.clone()).is_err(),
                None => true,
            };
            if news == QueueNews::GaveUp || gone {
                calls.remove(&ticket);
            }
            // A call that vanished without saying so (its task ended) leaves the queue.
            if gone && news != QueueNews::GaveUp {
                tracing::debug!(ticket, "queue: the waiting call is gone");
                acd.handle_left(Instant::now(), ticket);
            }
        };
    }
}

/// The queues' figures as Prometheus gauges (`gateway_queue_*{queue}`), once a second.
fn publish(status: &[QueueStatus]) {
    for q in status {
        let name = q.name.clone();
        metrics::gauge!("gateway_queue_waiting", "queue" => name.clone()).set(q.waiting as f64);
        metrics::gauge!("gateway_queue_longest_wait_seconds", "queue" => name.clone())
            .set(q.longest_wait_s as f64);
        for (state, n) in [
            ("logged_in", q.agents_logged_in),
            ("busy", q.agents_busy),
            ("idle", q.agents_idle),
        ] {
            metrics::gauge!("gateway_queue_agents", "queue" => name.clone(), "state" => state)
                .set(n as f64);
        }
        for (outcome, n) in [
            ("answered", q.answered),
            ("abandoned", q.abandoned),
            ("gave_up", q.gave_up),
        ] {
            metrics::gauge!("gateway_queue_calls_today", "queue" => name.clone(), "outcome" => outcome)
                .set(n as f64);
        }
        metrics::gauge!("gateway_queue_average_wait_seconds", "queue" => name)
            .set(q.average_wait_s as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_contact_from_another_address_is_behind_nat() {
        let source: std::net::SocketAddr = "203.0.113.7:40412".parse().expect("addr");
        let udp = sip::Transport::Udp;
        let route = nat_route("sip:1001@192.168.1.20:5060;transport=udp", source, udp);
        assert_eq!(
            route,
            Some(AgentRoute {
                addr: source,
                transport: udp
            })
        );
        assert!(
            nat_route("sip:1001@100.72.0.9", source, udp).is_some(),
            "carrier-grade NAT"
        );
        assert!(nat_route("sip:1001@[fd00::20]:5060", source, udp).is_some());
        // Rung as registered: a public address, the source's own address (another port), a
        // name, nonsense.
        assert_eq!(nat_route("sip:1001@198.51.100.4:5060", source, udp), None);
        let local: std::net::SocketAddr = "10.0.0.5:5099".parse().expect("addr");
        assert_eq!(nat_route("sip:1001@10.0.0.5:5060", local, udp), None);
        assert_eq!(nat_route("sip:1001@phone.local", source, udp), None);
        assert_eq!(nat_route("not a uri", source, udp), None);
    }
}
