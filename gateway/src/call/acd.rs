//! Agent queues (automatic call distribution), sans-IO: which callers wait in which queue, in
//! what order, which agent is rung for whom, and what a waiting caller is told.
//!
//! The model is Asterisk's `app_queue` and FreeSWITCH's `mod_callcenter` with what their users
//! complain of put right:
//!
//! - **Order.** Callers are served by priority (a flow raises it for an emergency or a repeat
//!   caller), then by arrival. A caller whose agent did not answer keeps their place: they are
//!   offered to the next agent, not sent to the back.
//! - **Agents.** Longest idle first. An agent who lets an offer ring out is skipped for
//!   [`QueueSettings::retry_after`] and the caller goes to the next one at once. After a call
//!   an agent has [`QueueSettings::wrap_up`] to finish their notes before the next offer. One
//!   agent may serve several queues; an agent is offered one caller at a time.
//! - **Being told.** A caller who has to wait hears their position and the estimated wait at
//!   once and then every [`QueueSettings::announce_every`]; a caller who is offered to an agent
//!   on arrival hears nothing of the kind (no "you are number one" before the agent answers).
//!   The estimate is the position times the queue's recent handle time (a moving average of
//!   answered calls' lengths) over the agents logged in.
//! - **A callback that keeps the place.** A waiting caller may ask to be called back
//!   ([`Acd::handle_to_callback`]) and hang up: their ticket stays where it was. When its turn
//!   comes an agent is reserved for it ([`AcdOutput::CallBack`]) while the gateway dials the
//!   citizen; once they answer ([`Acd::handle_reclaim`]) the reserved agent is rung for them at
//!   once. Not reached ([`Acd::handle_callback_failed`]): the agent is free again and the
//!   ticket waits `retry` before its next turn, still ahead of those who came later.
//! - **A way out.** A caller who has waited [`QueueSettings::max_wait`] is given up on
//!   ([`AcdOutput::GaveUp`]): the flow's `on_fail` runs (a voice message, a callback). A queue
//!   with no agent logged in refuses at once ([`AcdError::NoAgents`]) instead of holding the
//!   caller to the maximum wait for nobody.
//!
//! [`Acd`] follows the gateway's poll convention (see [`super::core`]): `handle_*(now, ..)`
//! inputs, then [`Acd::poll_output`] until [`AcdOutput::Timeout`]. A caller is known by the
//! [`Ticket`] [`Acd::handle_enqueue`] gives; an agent by their SIP URI. It has no tokio and no
//! clock: the driver carries out offers (rings the agent's phone) and reports how they went.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// A waiting caller, as [`Acd::handle_enqueue`] numbered them.
pub type Ticket = u64;

/// How one queue distributes its callers (`[calls.queues.<name>]`, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// The agents (SIP URIs) logged in to the queue at start.
    pub agents: Vec<String>,
    /// How long an agent's phone rings before the offer goes to the next agent.
    pub ring_timeout: Duration,
    /// An agent who let an offer ring out is not offered another for this long.
    pub retry_after: Duration,
    /// After a call, the agent's time to finish before the next offer.
    pub wrap_up: Duration,
    /// The longest a caller waits before the flow's `on_fail` runs.
    pub max_wait: Duration,
    /// How often a waiting caller hears their position; zero for never.
    pub announce_every: Duration,
    /// The handle time assumed before any call of the queue has ended.
    pub initial_handle_time: Duration,
    /// How long an agent is held for a callback whose turn came while the citizen is dialled.
    pub callback_hold: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            ring_timeout: Duration::from_secs(20),
            retry_after: Duration::from_secs(30),
            wrap_up: Duration::from_secs(10),
            max_wait: Duration::from_secs(600),
            announce_every: Duration::from_secs(45),
            initial_handle_time: Duration::from_secs(180),
            callback_hold: Duration::from_secs(60),
        }
    }
}

/// Why a caller could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("no queue named {0:?}")]
    UnknownQueue(String),
    #[error("no agent is logged in to queue {0:?}")]
    NoAgents(String),
    #[error("the agent {0:?} is not an agent of queue {1:?}")]
    NotAMember(String, String),
}

/// What the driver must do, or when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcdOutput {
    /// Ring `agent` for the caller holding `ticket`. The agent is reserved for them until the
    /// driver reports [`Acd::handle_answered`] or [`Acd::handle_offer_failed`], the caller
    /// leaves, or the ring timeout passes ([`AcdOutput::OfferWithdrawn`]).
    Offer { ticket: Ticket, agent: String },
    /// Stop ringing `agent` for `ticket`: the offer rang out, or the caller was given up on.
    OfferWithdrawn { ticket: Ticket, agent: String },
    /// A callback's turn: `agent` is reserved for `ticket` (until [`Acd::handle_reclaim`],
    /// [`Acd::handle_callback_failed`] or `callback_hold`); dial the citizen.
    CallBack { ticket: Ticket, agent: String },
    /// Tell the caller where they stand.
    Announce {
        ticket: Ticket,
        /// 1 for the next caller to be served.
        position: usize,
        estimated_wait: Duration,
    },
    /// The caller waited the queue's maximum: they have left the queue (run the flow's
    /// `on_fail`).
    GaveUp { ticket: Ticket },
    /// Nothing else to do until this instant (or the next input); `None`: only on input.
    Timeout(Option<Instant>),
}

/// One queue's figures, for the admin API, metrics and the console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    pub name: String,
    pub waiting: usize,
    pub longest_wait_s: u64,
    pub agents_logged_in: usize,
    pub agents_busy: usize,
    pub agents_idle: usize,
    /// Of `waiting`: callers not on the line, to be called back in their turn.
    pub callbacks: usize,
    /// Since the counters were last reset ([`Acd::reset_counters`], at midnight).
    pub answered: u64,
    pub abandoned: u64,
    pub gave_up: u64,
    /// Mean wait of the answered calls, seconds.
    pub average_wait_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    Idle,
    Offered {
        ticket: Ticket,
        until: Instant,
    },
    /// Held for a callback whose citizen is being dialled.
    Reserved {
        ticket: Ticket,
        until: Instant,
    },
    Busy {
        ticket: Ticket,
    },
    WrapUp {
        until: Instant,
    },
}

#[derive(Debug)]
struct Agent {
    state: AgentState,
    /// Since when the agent is idle (the longest idle is offered first).
    idle_since: Instant,
    /// Not offered before this (they let an offer ring out).
    skip_until: Option<Instant>,
    /// The queues the agent is logged in to.
    queues: BTreeSet<String>,
}

impl Agent {
    fn available(&self, now: Instant) -> bool {
        self.state == AgentState::Idle && self.skip_until.is_none_or(|t| t <= now)
    }
}

#[derive(Debug)]
struct Caller {
    queue: String,
    priority: u8,
    since: Instant,
    /// The agent being rung for them.
    offered: Option<String>,
    deadline: Instant,
    next_announce: Option<Instant>,
    /// Not on the line: to be called back in their turn.
    callback: Option<Callback>,
}

/// A callback ticket's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callback {
    /// Dialled when its turn comes.
    Due,
    /// Not reached last time: not dialled before this instant.
    After(Instant),
}

/// How long a callback keeps its place at most (the citizen is not on the line meanwhile).
const CALLBACK_MAX_WAIT: Duration = Duration::from_secs(8 * 3600);

#[derive(Debug)]
struct Queue {
    settings: QueueSettings,
    /// Moving average of answered calls' lengths.
    handle_time: Duration,
    answered: u64,
    abandoned: u64,
    gave_up: u64,
    total_wait: Duration,
}

/// The agent queues of one gateway node (see the module doc).
#[derive(Debug)]
pub struct Acd {
    queues: BTreeMap<String, Queue>,
    agents: BTreeMap<String, Agent>,
    callers: BTreeMap<Ticket, Caller>,
    /// Busy agents' answer times, for the handle time.
    answered_at: BTreeMap<Ticket, (String, Instant)>,
    next_ticket: Ticket,
    out: VecDeque<AcdOutput>,
}

/// Weight of the newest call in the handle-time average.
const HANDLE_TIME_WEIGHT: f64 = 0.2;

impl Acd {
    /// Queues by name; their agents are logged in and idle from `now`.
    pub fn new(now: Instant, queues: BTreeMap<String, QueueSettings>) -> Self {
        let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
        for (name, q) in &queues {
            // A SIP URI is logged in from the start; a bare name is an agent whose phone
            // registers, logged in when it does ([`Acd::handle_login`]).
            for uri in q.agents.iter().filter(|a| a.contains(':')) {
                agents
                    .entry(uri.clone())
                    .or_insert_with(|| Agent {
                        state: AgentState::Idle,
                        idle_since: now,
                        skip_until: None,
                        queues: BTreeSet::new(),
                    })
                    .queues
                    .insert(name.clone());
            }
        }
        let queues = queues
            .into_iter()
            .map(|(name, settings)| {
                let handle_time = settings.initial_handle_time;
                let q = Queue {
                    settings,
                    handle_time,
                    answered: 0,
                    abandoned: 0,
                    gave_up: 0,
                    total_wait: Duration::ZERO,
                };
                (name, q)
            })
            .collect();
        Self {
            queues,
            agents,
            callers: BTreeMap::new(),
            answered_at: BTreeMap::new(),
            next_ticket: 1,
            out: VecDeque::new(),
        }
    }

    /// A caller joins `queue` with `priority` (higher first; 0 is normal).
    pub fn handle_enqueue(
        &mut self,
        now: Instant,
        queue: &str,
        priority: u8,
    ) -> Result<Ticket, AcdError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| AcdError::UnknownQueue(queue.to_owned()))?;
        if !self.agents.values().any(|a| a.queues.contains(queue)) {
            return Err(AcdError::NoAgents(queue.to_owned()));
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let announce_every = q.settings.announce_every;
        self.callers.insert(
            ticket,
            Caller {
                queue: queue.to_owned(),
                priority,
                since: now,
                offered: None,
                deadline: now + q.settings.max_wait,
                next_announce: None,
                callback: None,
            },
        );
        self.dispatch(now);
        // Only a caller who has to wait hears where they stand.
        if let Some(c) = self.callers.get_mut(&ticket)
            && c.offered.is_none()
            && !announce_every.is_zero()
        {
            c.next_announce = Some(now);
            self.announce_due(now);
        }
        Ok(ticket)
    }

    /// A callback ticket (restored at start from the store): in line, not on the line. Unlike
    /// [`Acd::handle_enqueue`] it needs no agent logged in now.
    pub fn handle_enqueue_callback(
        &mut self,
        now: Instant,
        queue: &str,
        priority: u8,
    ) -> Result<Ticket, AcdError> {
        if !self.queues.contains_key(queue) {
            return Err(AcdError::UnknownQueue(queue.to_owned()));
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.callers.insert(
            ticket,
            Caller {
                queue: queue.to_owned(),
                priority,
                since: now,
                offered: None,
                deadline: now + CALLBACK_MAX_WAIT,
                next_announce: None,
                callback: Some(Callback::Due),
            },
        );
        self.dispatch(now);
        Ok(ticket)
    }

    /// The waiting caller asked to be called back and hangs up: the ticket keeps its place.
    /// An agent being rung for them is released. `false`: no such ticket (gone meanwhile).
    pub fn handle_to_callback(&mut self, now: Instant, ticket: Ticket) -> bool {
        let Some(c) = self.callers.get_mut(&ticket) else {
            return false;
        };
        c.callback = Some(Callback::Due);
        c.next_announce = None;
        c.deadline = c.since + CALLBACK_MAX_WAIT;
        if let Some(agent) = c.offered.take() {
            self.release(&agent);
        }
        self.dispatch(now);
        true
    }

    /// The citizen of a callback answered and is on the line again: the agent reserved for
    /// them is rung now; without one they wait at their place like any caller.
    pub fn handle_reclaim(&mut self, now: Instant, ticket: Ticket) -> bool {
        let Some(c) = self.callers.get_mut(&ticket) else {
            return false;
        };
        let Some(q) = self.queues.get(&c.queue) else {
            return false;
        };
        c.callback = None;
        c.deadline = now + q.settings.max_wait;
        let ring = q.settings.ring_timeout;
        let reserved = c.offered.clone().filter(|agent| {
            self.agents.get(agent).is_some_and(
                |a| matches!(a.state, AgentState::Reserved { ticket: t, .. } if t == ticket),
            )
        });
        match reserved {
            Some(agent) => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.state = AgentState::Offered {
                        ticket,
                        until: now + ring,
                    };
                }
                self.out.push_back(AcdOutput::Offer { ticket, agent });
            }
            None => {
                c.offered = None;
                self.dispatch(now);
            }
        }
        true
    }

    /// A callback's citizen was not reached this time: the reserved agent is free again and the
    /// ticket's next turn comes `retry` from now at the earliest (at its place).
    pub fn handle_callback_failed(&mut self, now: Instant, ticket: Ticket, retry: Duration) {
        let Some(c) = self.callers.get_mut(&ticket) else {
            return;
        };
        c.callback = Some(if retry.is_zero() {
            Callback::Due
        } else {
            Callback::After(now + retry)
        });
        if let Some(agent) = c.offered.take() {
            self.release(&agent);
        }
        self.dispatch(now);
    }

    /// The caller left the queue unserved: hung up, or chose a voice message or a callback.
    /// An agent being rung for them is released (the driver hangs up that leg itself).
    pub fn handle_left(&mut self, now: Instant, ticket: Ticket) {
        let Some(c) = self.callers.remove(&ticket) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.abandoned += 1;
        }
        if let Some(agent) = c.offered {
            self.release(&agent);
        }
        self.dispatch(now);
    }

    /// The agent rung for `ticket` answered: the caller leaves the queue, the agent is busy.
    pub fn handle_answered(&mut self, now: Instant, ticket: Ticket) {
        let Some(c) = self.callers.remove(&ticket) else {
            return;
        };
        let Some(agent) = c.offered else {
            return;
        };
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.answered += 1;
            q.total_wait += now.saturating_duration_since(c.since);
        }
        if let Some(a) = self.agents.get_mut(&agent) {
            a.state = AgentState::Busy { ticket };
        }
        self.answered_at.insert(ticket, (c.queue, now));
    }

    /// The agent rung for `ticket` did not answer (busy, declined, unreachable, rang out): they
    /// are skipped for a while and the caller, keeping their place, goes to the next agent.
    pub fn handle_offer_failed(&mut self, now: Instant, ticket: Ticket) {
        let Some(c) = self.callers.get_mut(&ticket) else {
            return;
        };
        let Some(agent) = c.offered.take() else {
            return;
        };
        let retry = self
            .queues
            .get(&c.queue)
            .map_or(Duration::ZERO, |q| q.settings.retry_after);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.state = AgentState::Idle;
            a.skip_until = Some(now + retry);
        }
        self.dispatch(now);
    }

    /// The call of `ticket` with its agent ended: the agent wraps up, then is idle.
    pub fn handle_call_ended(&mut self, now: Instant, ticket: Ticket) {
        let Some((queue, answered)) = self.answered_at.remove(&ticket) else {
            return;
        };
        let Some(q) = self.queues.get_mut(&queue) else {
            return;
        };
        let length = now.saturating_duration_since(answered).as_secs_f64();
        let avg = q.handle_time.as_secs_f64();
        q.handle_time =
            Duration::from_secs_f64(avg + HANDLE_TIME_WEIGHT * (length - avg)).max(Duration::ZERO);
        let wrap_up = q.settings.wrap_up;
        if let Some(a) = self
            .agents
            .values_mut()
            .find(|a| a.state == AgentState::Busy { ticket })
        {
            if wrap_up.is_zero() {
                a.state = AgentState::Idle;
                a.idle_since = now;
            } else {
                a.state = AgentState::WrapUp {
                    until: now + wrap_up,
                };
            }
        }
        self.dispatch(now);
    }

    /// An agent logs in to a queue they belong to (a feature code, the admin API).
    pub fn handle_login(&mut self, now: Instant, agent: &str, queue: &str) -> Result<(), AcdError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| AcdError::UnknownQueue(queue.to_owned()))?;
        if !q.settings.agents.iter().any(|a| a == agent) {
            return Err(AcdError::NotAMember(agent.to_owned(), queue.to_owned()));
        }
        let a = self
            .agents
            .entry(agent.to_owned())
            .or_insert_with(|| Agent {
                state: AgentState::Idle,
                idle_since: now,
                skip_until: None,
                queues: BTreeSet::new(),
            });
        if a.queues.is_empty() && a.state == AgentState::Idle {
            a.idle_since = now;
        }
        a.queues.insert(queue.to_owned());
        self.dispatch(now);
        Ok(())
    }

    /// The queues that list `agent`.
    pub fn queues_of(&self, agent: &str) -> Vec<String> {
        self.queues
            .iter()
            .filter(|(_, q)| q.settings.agents.iter().any(|a| a == agent))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// An agent logs out of a queue: no further offers from it (a call in progress goes on).
    pub fn handle_logout(
        &mut self,
        _now: Instant,
        agent: &str,
        queue: &str,
    ) -> Result<(), AcdError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| AcdError::UnknownQueue(queue.to_owned()))?;
        if !q.settings.agents.iter().any(|a| a == agent) {
            return Err(AcdError::NotAMember(agent.to_owned(), queue.to_owned()));
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.queues.remove(queue);
        }
        Ok(())
    }

    /// Advance time: offers that rang out, wrap-ups that ended, callers who waited too long,
    /// announcements due; then new offers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (agent, ticket) in self.holds_ended(now, false) {
            self.out.push_back(AcdOutput::OfferWithdrawn {
                ticket,
                agent: agent.clone(),
            });
            self.handle_offer_failed(now, ticket);
        }
        // A reservation whose citizen did not answer in time: the agent serves others; the
        // callback keeps its place (and its reclaim, should the citizen answer late, waits).
        for (agent, ticket) in self.holds_ended(now, true) {
            self.release(&agent);
            let hold = self
                .callers
                .get(&ticket)
                .and_then(|c| self.queues.get(&c.queue))
                .map_or(Duration::ZERO, |q| q.settings.callback_hold);
            if let Some(c) = self.callers.get_mut(&ticket) {
                c.offered = None;
                // Not dialled again while the last try may still ring.
                c.callback = Some(Callback::After(now + hold));
            }
        }
        for c in self.callers.values_mut() {
            if matches!(c.callback, Some(Callback::After(t)) if t <= now) {
                c.callback = Some(Callback::Due);
            }
        }
        for a in self.agents.values_mut() {
            if let AgentState::WrapUp { until } = a.state
                && until <= now
            {
                a.state = AgentState::Idle;
                a.idle_since = until;
            }
            if a.skip_until.is_some_and(|t| t <= now) {
                a.skip_until = None;
            }
        }
        let expired: Vec<Ticket> = self
            .callers
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for ticket in expired {
            if let Some(c) = self.callers.remove(&ticket) {
                if let Some(q) = self.queues.get_mut(&c.queue) {
                    q.gave_up += 1;
                }
                if let Some(agent) = c.offered {
                    self.release(&agent);
                    self.out
                        .push_back(AcdOutput::OfferWithdrawn { ticket, agent });
                }
                self.out.push_back(AcdOutput::GaveUp { ticket });
            }
        }
        self.dispatch(now);
        self.announce_due(now);
    }

    /// The next thing to do; [`AcdOutput::Timeout`] when there is none.
    pub fn poll_output(&mut self) -> AcdOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        AcdOutput::Timeout(self.next_deadline())
    }

    /// Start counting answered, abandoned and given-up calls afresh (a new day).
    pub fn reset_counters(&mut self) {
        for q in self.queues.values_mut() {
            q.answered = 0;
            q.abandoned = 0;
            q.gave_up = 0;
            q.total_wait = Duration::ZERO;
        }
    }

    /// Where the caller holding `ticket` stands: 1 for the next to be served.
    pub fn position(&self, ticket: Ticket) -> Option<usize> {
        let c = self.callers.get(&ticket)?;
        Some(
            self.callers
                .iter()
                .filter(|(t, o)| o.queue == c.queue && rank(o, **t) < rank(c, ticket))
                .count()
                + 1,
        )
    }

    /// Every queue's figures at `now`.
    pub fn status(&self, now: Instant) -> Vec<QueueStatus> {
        self.queues
            .iter()
            .map(|(name, q)| {
                let waiting: Vec<&Caller> =
                    self.callers.values().filter(|c| &c.queue == name).collect();
                let members: Vec<&Agent> = self
                    .agents
                    .values()
                    .filter(|a| a.queues.contains(name))
                    .collect();
                let idle = members
                    .iter()
                    .filter(|a| a.state == AgentState::Idle)
                    .count();
                let callbacks = waiting.iter().filter(|c| c.callback.is_some()).count();
                QueueStatus {
                    name: name.clone(),
                    waiting: waiting.len(),
                    longest_wait_s: waiting
                        .iter()
                        .map(|c| now.saturating_duration_since(c.since).as_secs())
                        .max()
                        .unwrap_or(0),
                    agents_logged_in: members.len(),
                    agents_busy: members.len() - idle,
                    agents_idle: idle,
                    callbacks,
                    answered: q.answered,
                    abandoned: q.abandoned,
                    gave_up: q.gave_up,
                    average_wait_s: q.total_wait.as_secs().checked_div(q.answered).unwrap_or(0),
                }
            })
            .collect()
    }

    /// Agents whose offer rang out (or, with `reserved`, whose callback reservation lapsed) by
    /// `now`, with the ticket they were held for.
    fn holds_ended(&self, now: Instant, reserved: bool) -> Vec<(String, Ticket)> {
        self.agents
            .iter()
            .filter_map(|(uri, a)| match a.state {
                AgentState::Offered { ticket, until } if !reserved && until <= now => {
                    Some((uri.clone(), ticket))
                }
                AgentState::Reserved { ticket, until } if reserved && until <= now => {
                    Some((uri.clone(), ticket))
                }
                _ => None,
            })
            .collect()
    }

    /// An agent reserved for a caller who is gone is idle again, as long idle as before.
    fn release(&mut self, agent: &str) {
        if let Some(a) = self.agents.get_mut(agent)
            && matches!(
                a.state,
                AgentState::Offered { .. } | AgentState::Reserved { .. }
            )
        {
            a.state = AgentState::Idle;
        }
    }

    /// Offer waiting callers to available agents: each available agent, longest idle first,
    /// gets the first caller (by priority, then arrival) of the queues they are logged in to.
    fn dispatch(&mut self, now: Instant) {
        let mut free: Vec<(Instant, String)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.available(now) && !a.queues.is_empty())
            .map(|(uri, a)| (a.idle_since, uri.clone()))
            .collect();
        if free.is_empty() {
            return;
        }
        free.sort();
        for (_, uri) in free {
            let Some(agent) = self.agents.get(&uri) else {
                continue;
            };
            let best = self
                .callers
                .iter()
                .filter(|(_, c)| {
                    c.offered.is_none()
                        && agent.queues.contains(&c.queue)
                        && !matches!(c.callback, Some(Callback::After(t)) if t > now)
                })
                .min_by_key(|(t, c)| rank(c, **t))
                .map(|(&t, c)| (t, c.queue.clone(), c.callback.is_some()));
            let Some((ticket, queue, callback)) = best else {
                continue;
            };
            let (ring, hold) = self
                .queues
                .get(&queue)
                .map_or((Duration::ZERO, Duration::ZERO), |q| {
                    (q.settings.ring_timeout, q.settings.callback_hold)
                });
            if let Some(c) = self.callers.get_mut(&ticket) {
                c.offered = Some(uri.clone());
            }
            if let Some(a) = self.agents.get_mut(&uri) {
                a.state = if callback {
                    AgentState::Reserved {
                        ticket,
                        until: now + hold,
                    }
                } else {
                    AgentState::Offered {
                        ticket,
                        until: now + ring,
                    }
                };
            }
            let out = if callback {
                AcdOutput::CallBack { ticket, agent: uri }
            } else {
                AcdOutput::Offer { ticket, agent: uri }
            };
            self.out.push_back(out);
        }
    }

    /// Announce to every waiting caller whose time has come (not while their agent rings).
    fn announce_due(&mut self, now: Instant) {
        let due: Vec<Ticket> = self
            .callers
            .iter()
            .filter(|(_, c)| c.offered.is_none() && c.next_announce.is_some_and(|t| t <= now))
            .map(|(&t, _)| t)
            .collect();
        for ticket in due {
            let Some(position) = self.position(ticket) else {
                continue;
            };
            let Some(c) = self.callers.get_mut(&ticket) else {
                continue;
            };
            let Some(q) = self.queues.get(&c.queue) else {
                continue;
            };
            c.next_announce = Some(now + q.settings.announce_every);
            let agents = self
                .agents
                .values()
                .filter(|a| a.queues.contains(&c.queue))
                .count()
                .max(1);
            let estimated_wait = q.handle_time.mul_f64(position as f64 / agents as f64);
            self.out.push_back(AcdOutput::Announce {
                ticket,
                position,
                estimated_wait,
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let agents = self.agents.values().flat_map(|a| {
            let state = match a.state {
                AgentState::Offered { until, .. }
                | AgentState::Reserved { until, .. }
                | AgentState::WrapUp { until } => Some(until),
                _ => None,
            };
            [state, a.skip_until]
        });
        // A caller whose agent rings hears no announcement until the offer has failed.
        let callers = self.callers.values().flat_map(|c| {
            let announce = c.next_announce.filter(|_| c.offered.is_none());
            // A callback waiting out its retry may be dialled then.
            let callback = match c.callback {
                Some(Callback::After(t)) => Some(t),
                _ => None,
            };
            [Some(c.deadline), announce.or(callback)]
        });
        agents.chain(callers).flatten().min()
    }
}

/// Serving order within a queue: higher priority first, then earlier arrival (tickets rise).
fn rank(c: &Caller, ticket: Ticket) -> (std::cmp::Reverse<u8>, Instant, Ticket) {
    (std::cmp::Reverse(c.priority), c.since, ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sip:a@agents";
    const B: &str = "sip:b@agents";

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn settings(agents: &[&str]) -> QueueSettings {
        QueueSettings {
            agents: agents.iter().map(|a| (*a).to_owned()).collect(),
            ring_timeout: s(15),
            retry_after: s(30),
            wrap_up: s(5),
            max_wait: s(300),
            announce_every: s(30),
            initial_handle_time: s(120),
            callback_hold: s(40),
        }
    }

    fn acd(now: Instant, queues: &[(&str, QueueSettings)]) -> Acd {
        Acd::new(
            now,
            queues
                .iter()
                .map(|(n, q)| ((*n).to_owned(), q.clone()))
                .collect(),
        )
    }

    /// Every output up to the timeout, and the timeout.
    fn drain(acd: &mut Acd) -> (Vec<AcdOutput>, Option<Instant>) {
        let mut out = Vec::new();
        loop {
            match acd.poll_output() {
                AcdOutput::Timeout(t) => return (out, t),
                o => out.push(o),
            }
        }
    }

    fn offer(ticket: Ticket, agent: &str) -> AcdOutput {
        AcdOutput::Offer {
            ticket,
            agent: agent.to_owned(),
        }
    }

    fn positions(out: &[AcdOutput]) -> Vec<(Ticket, usize)> {
        out.iter()
            .filter_map(|o| match o {
                AcdOutput::Announce {
                    ticket, position, ..
                } => Some((*ticket, *position)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn callers_are_served_in_arrival_order_and_their_positions_shrink() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A]))]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        let c2 = acd.handle_enqueue(t0 + s(1), "general", 0).expect("c2");
        let c3 = acd.handle_enqueue(t0 + s(2), "general", 0).expect("c3");
        let (out, _) = drain(&mut acd);
        // The first is offered at once and hears no position; the others hear theirs.
        assert_eq!(out[0], offer(c1, A));
        assert_eq!(positions(&out), [(c2, 2), (c3, 3)]);
        acd.handle_answered(t0 + s(5), c1);
        // The next announcements: one caller fewer ahead of each.
        acd.handle_timeout(t0 + s(31));
        acd.handle_timeout(t0 + s(32));
        let (out, _) = drain(&mut acd);
        assert_eq!(positions(&out), [(c2, 1), (c3, 2)]);
        // The call ends; after the wrap-up the agent is offered the second caller.
        acd.handle_call_ended(t0 + s(60), c1);
        assert_eq!(drain(&mut acd).0, []);
        let (_, wake) = drain(&mut acd);
        assert_eq!(wake, Some(t0 + s(61)), "c2's next announcement comes first");
        acd.handle_timeout(t0 + s(65));
        let (out, _) = drain(&mut acd);
        assert!(out.contains(&offer(c2, A)), "{out:?}");
        assert!(
            !out.contains(&offer(c3, A)),
            "one caller at a time: {out:?}"
        );
        let st = &acd.status(t0 + s(65))[0];
        assert_eq!((st.waiting, st.agents_busy, st.answered), (2, 1, 1));
        assert_eq!(st.average_wait_s, 5);
    }

    #[test]
    fn an_offer_that_rings_out_goes_to_the_next_agent_and_the_caller_keeps_their_place() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A, B]))]);
        // B has been idle longer (A just finished a call).
        acd.agents.get_mut(A).expect("A").idle_since = t0 + s(1);
        let c1 = acd.handle_enqueue(t0 + s(2), "general", 0).expect("c1");
        assert_eq!(drain(&mut acd).0, [offer(c1, B)], "longest idle first");
        let c2 = acd.handle_enqueue(t0 + s(3), "general", 0).expect("c2");
        assert_eq!(drain(&mut acd).0, [offer(c2, A)]);
        // B lets it ring out: withdrawn; c1 waits for A rather than going behind c2.
        acd.handle_timeout(t0 + s(17));
        let (out, _) = drain(&mut acd);
        assert_eq!(
            out[0],
            AcdOutput::OfferWithdrawn {
                ticket: c1,
                agent: B.into()
            }
        );
        assert_eq!(acd.position(c1), Some(1));
        assert_eq!(acd.position(c2), Some(2));
        // A answers c2 (already ringing); nobody is free for c1 while B is skipped.
        acd.handle_answered(t0 + s(18), c2);
        assert_eq!(drain(&mut acd).0, []);
        // B is offered c1 again once the retry time has passed.
        acd.handle_timeout(t0 + s(17 + 30));
        let (out, _) = drain(&mut acd);
        assert_eq!(out, [offer(c1, B)]);
    }

    #[test]
    fn priority_goes_first_and_a_caller_who_leaves_frees_the_agent() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A]))]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        let c2 = acd.handle_enqueue(t0 + s(1), "general", 0).expect("c2");
        let urgent = acd.handle_enqueue(t0 + s(2), "general", 5).expect("urgent");
        drain(&mut acd);
        assert_eq!(acd.position(urgent), Some(1), "ahead of the offered c1");
        assert_eq!(acd.position(c2), Some(3));
        // c1 hangs up while A rings: A is free again and the urgent caller is next.
        acd.handle_left(t0 + s(3), c1);
        assert_eq!(drain(&mut acd).0, [offer(urgent, A)]);
        assert_eq!(acd.status(t0 + s(3))[0].abandoned, 1);
    }

    #[test]
    fn a_caller_who_waits_too_long_is_given_up_on() {
        let t0 = Instant::now();
        let mut q = settings(&[A]);
        q.max_wait = s(60);
        let mut acd = acd(t0, &[("general", q)]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        acd.handle_answered(t0 + s(1), c1);
        let c2 = acd.handle_enqueue(t0 + s(2), "general", 0).expect("c2");
        drain(&mut acd);
        acd.handle_timeout(t0 + s(62));
        let (out, _) = drain(&mut acd);
        assert!(out.contains(&AcdOutput::GaveUp { ticket: c2 }), "{out:?}");
        assert_eq!(acd.position(c2), None);
        assert_eq!(acd.status(t0 + s(62))[0].gave_up, 1);
    }

    #[test]
    fn a_queue_with_nobody_logged_in_refuses_at_once() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A])), ("empty", settings(&[]))]);
        assert_eq!(
            acd.handle_enqueue(t0, "nowhere", 0),
            Err(AcdError::UnknownQueue("nowhere".into()))
        );
        assert_eq!(
            acd.handle_enqueue(t0, "empty", 0),
            Err(AcdError::NoAgents("empty".into()))
        );
        acd.handle_logout(t0, A, "general").expect("logout");
        assert_eq!(
            acd.handle_logout(t0, B, "general"),
            Err(AcdError::NotAMember(B.into(), "general".into()))
        );
        assert_eq!(
            acd.handle_enqueue(t0, "general", 0),
            Err(AcdError::NoAgents("general".into()))
        );
        assert_eq!(
            acd.handle_login(t0, B, "general"),
            Err(AcdError::NotAMember(B.into(), "general".into()))
        );
        acd.handle_login(t0, A, "general").expect("login");
        assert!(acd.handle_enqueue(t0, "general", 0).is_ok());
    }

    #[test]
    fn the_estimate_follows_the_handle_time_over_the_agents() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A, B]))]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        let c2 = acd.handle_enqueue(t0, "general", 0).expect("c2");
        acd.handle_answered(t0, c1);
        acd.handle_answered(t0, c2);
        // Two calls of 20 s: the average moves from 120 s towards 20 s.
        acd.handle_call_ended(t0 + s(20), c1);
        acd.handle_call_ended(t0 + s(20), c2);
        acd.agents
            .values_mut()
            .for_each(|a| a.state = AgentState::Busy { ticket: 99 });
        let c3 = acd.handle_enqueue(t0 + s(21), "general", 0).expect("c3");
        let (out, _) = drain(&mut acd);
        // 120 -> 100 -> 84 s; position 1 of two agents: 42 s.
        let wait = out.iter().find_map(|o| match o {
            AcdOutput::Announce {
                ticket,
                estimated_wait,
                ..
            } if *ticket == c3 => Some(*estimated_wait),
            _ => None,
        });
        assert_eq!(wait.map(|w| w.as_secs()), Some(42));
    }

    #[test]
    fn the_wake_up_is_never_in_the_past() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&[A]))]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        let _c2 = acd.handle_enqueue(t0, "general", 0).expect("c2");
        acd.handle_offer_failed(t0 + s(1), c1);
        // Steps through skips, ring-outs, announcements and the give-up.
        let mut now = t0 + s(1);
        for _ in 0..200 {
            acd.handle_timeout(now);
            let (_, wake) = drain(&mut acd);
            let Some(wake) = wake else { break };
            assert!(wake > now, "asked to wake at {wake:?}, now {now:?}");
            now = wake;
        }
        assert!(acd.callers.is_empty(), "both were given up on in the end");
    }

    #[test]
    fn an_agent_who_registers_is_logged_in_and_out_with_their_phone() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&["1001"]))]);
        assert_eq!(
            acd.handle_enqueue(t0, "general", 0),
            Err(AcdError::NoAgents("general".into())),
            "not registered yet"
        );
        assert_eq!(acd.queues_of("1001"), ["general"]);
        acd.handle_login(t0, "1001", "general").expect("login");
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        assert_eq!(drain(&mut acd).0, [offer(c1, "1001")]);
        acd.handle_logout(t0, "1001", "general").expect("logout");
        assert_eq!(
            acd.handle_enqueue(t0, "general", 0),
            Err(AcdError::NoAgents("general".into()))
        );
    }

    #[test]
    fn a_callback_keeps_its_place_and_gets_the_agent_reserved_for_it() {
        let t0 = Instant::now();
        let mut q = settings(&[A]);
        q.wrap_up = Duration::ZERO;
        let mut acd = acd(t0, &[("general", q)]);
        let c1 = acd.handle_enqueue(t0, "general", 0).expect("c1");
        let c2 = acd.handle_enqueue(t0 + s(1), "general", 0).expect("c2");
        let c3 = acd.handle_enqueue(t0 + s(2), "general", 0).expect("c3");
        acd.handle_answered(t0 + s(3), c1);
        drain(&mut acd);
        // c2 asks for a callback and hangs up: no more announcements, still ahead of c3.
        assert!(acd.handle_to_callback(t0 + s(10), c2));
        assert_eq!(acd.position(c3), Some(2));
        assert_eq!(acd.status(t0 + s(10))[0].callbacks, 1);
        acd.handle_timeout(t0 + s(40));
        let (out, _) = drain(&mut acd);
        assert!(positions(&out).iter().all(|(t, _)| *t != c2), "{out:?}");
        // The agent is free: c2's turn. The agent is reserved, nobody rung yet.
        acd.handle_call_ended(t0 + s(50), c1);
        let (out, _) = drain(&mut acd);
        assert_eq!(
            out,
            [AcdOutput::CallBack {
                ticket: c2,
                agent: A.into()
            }]
        );
        assert_eq!(acd.status(t0 + s(50))[0].agents_idle, 0);
        // Not reached: the agent takes c3; c2 keeps its place and waits out its retry.
        acd.handle_callback_failed(t0 + s(70), c2, s(60));
        let (out, _) = drain(&mut acd);
        assert_eq!(out, [offer(c3, A)]);
        assert_eq!(acd.position(c2), Some(1));
        acd.handle_answered(t0 + s(72), c3);
        acd.handle_call_ended(t0 + s(100), c3);
        assert_eq!(drain(&mut acd).0, [], "c2's retry has not passed");
        let (_, wake) = drain(&mut acd);
        assert_eq!(wake, Some(t0 + s(130)), "woken for the retry");
        acd.handle_timeout(t0 + s(130));
        let (out, _) = drain(&mut acd);
        assert_eq!(
            out,
            [AcdOutput::CallBack {
                ticket: c2,
                agent: A.into()
            }]
        );
        // The citizen answers: the reserved agent rings for them at once.
        assert!(acd.handle_reclaim(t0 + s(140), c2));
        assert_eq!(drain(&mut acd).0, [offer(c2, A)]);
        acd.handle_answered(t0 + s(142), c2);
        assert_eq!(acd.status(t0 + s(142))[0].waiting, 0);
    }

    #[test]
    fn a_reservation_lapses_and_a_restored_callback_needs_no_agent_now() {
        let t0 = Instant::now();
        let mut acd = acd(t0, &[("general", settings(&["1001"]))]);
        // Restored at start: nobody is logged in yet, the callback still takes its place.
        let c = acd
            .handle_enqueue_callback(t0, "general", 0)
            .expect("restored");
        assert_eq!(drain(&mut acd).0, []);
        acd.handle_login(t0 + s(1), "1001", "general")
            .expect("login");
        let (out, wake) = drain(&mut acd);
        assert_eq!(
            out,
            [AcdOutput::CallBack {
                ticket: c,
                agent: "1001".into()
            }]
        );
        assert_eq!(wake, Some(t0 + s(41)), "the hold ends");
        // Nobody answered within the hold: the agent is free again.
        acd.handle_timeout(t0 + s(41));
        let (out, wake) = drain(&mut acd);
        assert_eq!(out, [], "not dialled again while the last try may ring");
        assert_eq!(wake, Some(t0 + s(81)));
        acd.handle_timeout(t0 + s(81));
        let (out, _) = drain(&mut acd);
        assert_eq!(
            out,
            [AcdOutput::CallBack {
                ticket: c,
                agent: "1001".into()
            }],
            "its turn again"
        );
        assert!(acd.handle_reclaim(t0 + s(85), c));
        assert_eq!(drain(&mut acd).0, [offer(c, "1001")]);
        assert!(!acd.handle_reclaim(t0 + s(46), 999), "an unknown ticket");
    }
}
