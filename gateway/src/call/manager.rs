//! Admits calls and routes SIP events to their call tasks.
//!
//! One task owns the table of live calls, so admission (capacity, shutdown) and routing need no
//! locks. A call task may own more than one SIP leg (a transfer's agent leg): it registers the
//! leg here, and events for a leg that arrive before its registration are held until it comes,
//! since the SIP driver may report the agent's first answer before the call task has heard back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Shared;
use super::events::{CallInput, Control, Incoming};
use super::session;
use super::webrtc::PlaceError;
use crate::runtime::sip_transport::Command;
use sip::{CallEvent, CallId};

/// Where the ids of WebRTC calls start (see [`Control::WebRtc`]).
const WEBRTC_IDS: u64 = 1 << 62;

fn call_of(ev: &CallEvent) -> Option<CallId> {
    Some(match ev {
        CallEvent::IncomingCall { call, .. }
        | CallEvent::CallAcked { call }
        | CallEvent::ReInvite { call, .. }
        | CallEvent::Info { call, .. }
        | CallEvent::Bye { call }
        | CallEvent::Cancelled { call }
        | CallEvent::CallTerminated { call, .. }
        | CallEvent::OutgoingProgress { call, .. }
        | CallEvent::OutgoingAnswered { call, .. }
        | CallEvent::OutgoingFailed { call, .. } => *call,
        CallEvent::AgentRegistered { .. } | CallEvent::AgentUnregistered { .. } => return None,
    })
}

pub(super) async fn run(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<CallEvent>,
    mut stop: watch::Receiver<bool>,
    control_tx: mpsc::UnboundedSender<Control>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<CallInput>> = HashMap::new();
    let mut orphans: HashMap<CallId, Vec<CallEvent>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut stopping = false;
    let mut missed = MissedCalls::default();
    // WebRTC calls' ids: far above the SIP endpoint's, which count up from 1.
    let mut next_webrtc: u64 = WEBRTC_IDS;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                // Agents' phones registering: news for the queues, not for a call.
                let ev = match ev {
                    CallEvent::AgentRegistered { user, contact, source, transport, .. } => {
                        let route = super::queues::nat_route(&contact, source, transport);
                        if route.is_some() {
                            tracing::info!(%user, %source, "agent registered from behind NAT: rung at the address it registered from");
                        }
                        shared.queues.registered(user, contact, route);
                        continue;
                    }
                    CallEvent::AgentUnregistered { user } => {
                        shared.queues.unregistered(user);
                        continue;
                    }
                    ev => ev,
                };
                let Some(id) = call_of(&ev) else { continue };
                if let CallEvent::IncomingCall { .. } = ev {
                    let live = live_calls(&mut tasks);
                    if stopping || live >= shared.settings.max_calls {
                        tracing::warn!(live, stopping, "call refused: 503");
                        metrics::counter!("gateway_calls_total", "outcome" => "refused").increment(1);
                        let _ = shared.sip.send(Command::Reject { call: id, status: 503 }).await;
                        if !stopping {
                            missed.record(&shared, &ev);
                        }
                        continue;
                    }
                    // An agent's feature code (`*21`, `*22`), authenticated by the endpoint.
                    let feature = match &ev {
                        CallEvent::IncomingCall { agent: Some(agent), request_uri, .. } => {
                            Some((agent.clone(), session::uri_user(request_uri)))
                        }
                        _ => None,
                    };
                    let Some(incoming) = Incoming::from_event(ev) else { continue };
                    let (tx, rx) = mpsc::unbounded_channel();
                    calls.insert(id, tx);
                    match feature {
                        Some((agent, code)) => {
                            tasks.spawn(super::feature::run(Arc::clone(&shared), incoming, agent, code, rx));
                        }
                        None => {
                            tasks.spawn(session::run(Arc::clone(&shared), incoming, rx, control_tx.clone()));
                        }
                    }
                    metrics::gauge!("gateway_calls_active").set(tasks.len() as f64);
                    continue;
                }
                let terminated = matches!(ev, CallEvent::CallTerminated { .. });
                match calls.get(&id) {
                    Some(tx) => {
                        let _ = tx.send(CallInput::Sip(ev));
                    }
                    None => {
                        // A leg whose registration is on its way (see the module doc); kept short.
                        let held = orphans.entry(id).or_default();
                        if held.len() < 16 {
                            held.push(ev);
                        }
                        if orphans.len() > 1024 {
                            orphans.clear();
                        }
                    }
                }
                if terminated {
                    calls.remove(&id);
                }
            }
            Some(c) = control.recv() => match c {
                Control::Register(id, tx) => {
                    for ev in orphans.remove(&id).unwrap_or_default() {
                        let _ = tx.send(CallInput::Sip(ev));
                    }
                    calls.insert(id, tx);
                }
                Control::Dial(dial) => {
                    // An outbound call takes a place like an incoming one.
                    let live = live_calls(&mut tasks);
                    if stopping || live >= shared.settings.max_calls {
                        let reason = if stopping { "shutting down" } else { "at calls.max_calls" };
                        let _ = dial.progress.send((
                            dial.job.id.clone(),
                            super::dialer::Progress::NotPlaced { reason: reason.into() },
                        ));
                        continue;
                    }
                    tasks.spawn(session::run_outbound(Arc::clone(&shared), *dial, control_tx.clone()));
                    metrics::gauge!("gateway_calls_active").set(tasks.len() as f64);
                }
                Control::WebRtc(offer) => {
                    // A browser's call takes a place like a phone's.
                    let live = live_calls(&mut tasks);
                    if stopping || live >= shared.settings.max_calls {
                        metrics::counter!("gateway_calls_total", "outcome" => "refused").increment(1);
                        let err = if stopping { PlaceError::Stopped } else { PlaceError::Busy };
                        let _ = offer.reply.send(Err(err));
                        continue;
                    }
                    next_webrtc += 1;
                    let id = CallId(next_webrtc);
                    let (tx, rx) = mpsc::unbounded_channel();
                    calls.insert(id, tx);
                    tasks.spawn(session::run_webrtc(Arc::clone(&shared), id, *offer, rx, control_tx.clone()));
                    metrics::gauge!("gateway_calls_active").set(tasks.len() as f64);
                }
                Control::EndWebRtc(id) => {
                    if let Some(tx) = calls.get(&id) {
                        let _ = tx.send(CallInput::Sip(CallEvent::CallTerminated {
                            call: id,
                            reason: sip::TerminationReason::RemoteBye,
                        }));
                    }
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                metrics::gauge!("gateway_calls_active").set(tasks.len() as f64);
                calls.retain(|_, tx| !tx.is_closed());
                if stopping && tasks.is_empty() {
                    break;
                }
            }
            r = stop.changed(), if !stopping => {
                stopping = true;
                let _ = r;
                tracing::info!(calls = tasks.len(), "shutting down: ending calls");
                for tx in calls.values() {
                    let _ = tx.send(CallInput::Shutdown);
                }
                if tasks.is_empty() {
                    break;
                }
            }
        }
    }
    // Calls still running when SIP went away: give them a moment to write what they hold.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Calls refused at capacity become callback orders (see [`super::order::missed`]), at most
/// [`MissedCalls::PER_SECOND`] a second: a flood of refused calls must not become a flood of
/// store writes on a hotline already full. Beyond it they are only counted.
#[derive(Debug, Default)]
struct MissedCalls {
    second: u64,
    this_second: u32,
}

impl MissedCalls {
    const PER_SECOND: u32 = 50;

    fn record(&mut self, shared: &Arc<Shared>, ev: &CallEvent) {
        let CallEvent::IncomingCall {
            from, sip_call_id, ..
        } = ev
        else {
            return;
        };
        let caller = super::session::uri_user(from);
        if adapters::submission::normalize_phone(&caller).is_none() {
            // Anonymous or not a number: nobody to call back.
            metrics::counter!("gateway_missed_calls_total", "outcome" => "no_number").increment(1);
            return;
        }
        let now = chrono::Utc::now();
        let second = now.timestamp() as u64;
        if second != self.second {
            self.second = second;
            self.this_second = 0;
        }
        self.this_second += 1;
        if self.this_second > Self::PER_SECOND {
            metrics::counter!("gateway_missed_calls_total", "outcome" => "not_recorded")
                .increment(1);
            return;
        }
        let hour = now
            .with_timezone(&shared.settings.utc_offset)
            .format("%Y%m%d%H")
            .to_string();
        let order = super::order::missed(&caller, sip_call_id, &hour);
        let store = shared.store.clone();
        let masked = adapters::normalize::mask::mask_phone(&caller);
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            use crate::intake::{self, Idempotency, Intake, Via};
            let intake = Intake::new(store);
            let via = Via::CallCallback {
                at: Some("refused at capacity"),
            };
            match intake::accept(
                &intake,
                via,
                order.submission,
                Idempotency::Redelivery(order.claim),
            )
            .await
            {
                Ok(accepted) => {
                    metrics::counter!("gateway_missed_calls_total", "outcome" => "recorded")
                        .increment(1);
                    tracing::info!(caller = %masked, order_id = %accepted.id(), "refused call: callback order");
                    if matches!(accepted, intake::Accepted::Created(_)) {
                        let id = accepted.id().to_string();
                        shared
                            .outbound
                            .call_back_missed(&shared.settings.outbound, &caller, &id)
                            .await;
                    }
                }
                Err(e) => {
                    tracing::error!(caller = %masked, error = %e, "refused call: callback order not stored")
                }
            }
        });
    }
}

/// Calls still running: a call whose task has just returned no longer holds a line, even if
/// the loop has not yet come round to `join_next` for it.
fn live_calls(tasks: &mut JoinSet<()>) -> usize {
    while tasks.try_join_next().is_some() {}
    tasks.len()
}
