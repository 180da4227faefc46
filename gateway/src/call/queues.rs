//! The agent queues' task: drives the sans-IO [`Acd`] with tokio and routes what it decides to
//! the calls concerned.
//!
//! One task owns the [`Acd`]; calls talk to it through a cloneable [`Queues`] handle. A call
//! that joins a queue hands over a channel for its [`QueueNews`] (an agent to ring, a position to
//! announce, being given up on) and reports back how an offer went and when its call with the
//! agent ended. Everything is in memory on this node: callbacks that keep their place (stored,
//! surviving a restart) come with outbound calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::acd::{Acd, AcdError, AcdOutput, QueueSettings, QueueStatus, Ticket};

/// What the queue tells a waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueNews {
    /// Ring this agent (their SIP URI) for the caller; report with [`Queues::answered`] or
    /// [`Queues::offer_failed`].
    Offer { agent: String },
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

    /// An agent's phone registered at `contact`: they are logged in to their queues.
    pub fn registered(&self, user: String, contact: String) {
        let _ = self.tx.send(Request::Registered { user, contact });
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
    // Registered agents' contacts: an offer to `1001` rings where 1001's phone registered.
    let mut contacts: BTreeMap<String, String> = BTreeMap::new();
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
                    Request::Registered { user, contact } => {
                        contacts.insert(user.clone(), contact);
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
                        Some(agent.clone())
                    } else {
                        contacts.get(&agent).cloned()
                    };
                    match uri {
                        Some(uri) => (ticket, QueueNews::Offer { agent: uri }),
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
