//! An outbound call: dial the citizen through the trunk, and once they answer run the job's
//! flow exactly as an incoming call runs its own (the same [`super::Call`] task and core).
//!
//! Until the answer this task reports the attempt's progress to the outbound calls' task
//! ([`super::super::outbound`]): ringing, answered, or the final status of an unanswered try
//! (408 for our own ring timeout), so the dialer can class it (busy, no answer, failed) and
//! retry per policy. Every try leaves a call detail record, answered or not.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::super::Shared;
use super::super::bridge::AgentTarget;
use super::super::cdr::{self, CallFacts, CallRecord};
use super::super::core::Outcome;
use super::super::dialer::{CallResult, Origin, OutboundCall, Progress};
use super::super::events::{CallInput, Control, Incoming};
use super::super::outbound::Dial;
use super::{Answered, FlowStart, answer_offer, assemble, mask_phone};
use crate::runtime::rtp_socket::DriverOptions;
use crate::runtime::sip_transport::Command;
use media::Codec;
use media::rtp_session::{RtpConfig, RtpSession};
use media::sdp::{self, OriginVersioning};
use sip::{CallEvent, CallId, OutgoingCall};

/// What an answered outbound call keeps of its job.
pub(super) struct OutboundLink {
    pub(super) id: String,
    progress: mpsc::UnboundedSender<(String, Progress)>,
    cancel: watch::Receiver<bool>,
    /// The job is a queue callback: its transfer reclaims the kept place.
    queue_callback: bool,
}

impl OutboundLink {
    /// The job's id when it is a queue callback.
    pub(super) fn queue_callback(&self) -> Option<String> {
        self.queue_callback.then(|| self.id.clone())
    }

    /// Report how the answered call ended.
    pub(super) fn ended(self, outcome: &Outcome, duration_ms: u64) {
        let result = CallResult {
            ending: outcome.ending.as_str().into(),
            last_step: outcome.last_step.clone(),
            orders: outcome.orders.clone(),
            collected: outcome.collected.clone(),
            duration_ms,
        };
        let _ = self.progress.send((self.id, Progress::Ended(result)));
    }
}

/// Resolves when the job is cancelled (never for an inbound call).
pub(super) async fn cancelled(link: &mut Option<OutboundLink>) {
    match link.as_mut() {
        Some(l) => loop {
            if *l.cancel.borrow_and_update() {
                return;
            }
            if l.cancel.changed().await.is_err() {
                // The outbound task is gone: nobody can cancel any more.
                std::future::pending::<()>().await;
            }
        },
        None => std::future::pending().await,
    }
}

/// The task of one outbound attempt (spawned by the call manager).
pub async fn run_outbound(
    shared: Arc<Shared>,
    dial: Dial,
    control: mpsc::UnboundedSender<Control>,
) {
    let span = tracing::info_span!(
        "call",
        outbound = %dial.job.id,
        callee = %mask_phone(&dial.job.to),
    );
    async move {
        let Dial {
            job,
            progress,
            cancel,
        } = dial;
        let report = |p: Progress| {
            let _ = progress.send((job.id.clone(), p));
        };
        let started = Utc::now();
        match place(&shared, &job, cancel.clone(), &control).await {
            Placed::Not(reason) => report(Progress::NotPlaced { reason }),
            Placed::Unanswered { status, reason } => {
                tracing::info!(status, %reason, "outbound call not answered");
                attempt_record(&shared, &job, started, status);
                report(Progress::Failed { status, reason });
            }
            Placed::Answered(leg) => {
                let AnsweredLeg {
                    incoming,
                    answered,
                    rx,
                } = *leg;
                report(Progress::Answered);
                tracing::info!(
                    codec = answered.codec.name(),
                    "outbound call answered: the flow starts"
                );
                let start = FlowStart {
                    flow: job.flow.clone(),
                    inputs: job.vars.clone(),
                    called: shared.settings.outbound.caller_id.clone(),
                    ack_wait: std::time::Duration::ZERO,
                };
                let (mut call, backend_rx) = assemble(
                    Arc::clone(&shared),
                    incoming,
                    job.to.clone(),
                    control,
                    answered,
                    start,
                );
                call.outbound = Some(OutboundLink {
                    id: job.id.clone(),
                    progress: progress.clone(),
                    cancel,
                    queue_callback: matches!(job.origin, Origin::QueueCallback { .. }),
                });
                call.run(rx, backend_rx).await;
            }
        }
    }
    .instrument(span)
    .await;
}

enum Placed {
    /// Not a try at the number (no port, the SIP service gone).
    Not(String),
    Unanswered {
        status: u16,
        reason: String,
    },
    Answered(Box<AnsweredLeg>),
}

/// The answered leg, handed to the call task.
struct AnsweredLeg {
    incoming: Incoming,
    answered: Answered,
    rx: mpsc::UnboundedReceiver<CallInput>,
}

/// Dial and wait for the answer, the failure, the ring timeout or a cancel.
async fn place(
    shared: &Arc<Shared>,
    job: &OutboundCall,
    mut cancel: watch::Receiver<bool>,
    control: &mpsc::UnboundedSender<Control>,
) -> Placed {
    let settings = &shared.settings;
    let Some(trunk) = settings.outbound.trunk.as_deref() else {
        return Placed::Not("no trunk".into());
    };
    let trunk = match AgentTarget::parse(trunk) {
        Ok(t) => t,
        Err(why) => {
            return Placed::Unanswered {
                status: 500,
                reason: why,
            };
        }
    };
    let destination = match trunk.resolve().await {
        Ok(d) => d,
        Err(why) => {
            return Placed::Unanswered {
                status: 503,
                reason: why,
            };
        }
    };
    let ports = match shared.media.open(&shared.ports, settings.media.bind_ip) {
        Ok(p) => p,
        Err(e) => return Placed::Not(format!("no RTP port: {e}")),
    };
    let Ok(local) = ports.local_rtp() else {
        return Placed::Not("no RTP port".into());
    };
    let codecs = if settings.outbound.codecs.is_empty() {
        &settings.media.codecs
    } else {
        &settings.outbound.codecs
    };
    let mut offer = sdp::offer(
        codecs,
        settings.media.telephone_event_pt,
        local.ip(),
        local.port(),
    );
    let mut sdp_origin = OriginVersioning::new(rand::random::<u32>().into());
    sdp_origin.stamp(&mut offer);
    let transport = match trunk.transport {
        sip::Transport::Tcp => ";transport=tcp",
        _ => "",
    };
    let host = if trunk.host.contains(':') {
        format!("[{}]", trunk.host)
    } else {
        trunk.host.clone()
    };
    let target_uri = format!("sip:{}@{host}:{}{transport}", job.to, trunk.port);
    let from_uri = format!(
        "sip:{}@{}",
        settings.outbound.caller_id, settings.local_host
    );
    let call = OutgoingCall {
        target_uri: target_uri.clone(),
        from_uri: from_uri.clone(),
        from_display: None,
        to_uri: target_uri.clone(),
        destination,
        transport: trunk.transport,
        sdp_offer: offer.to_string().into_bytes(),
        extra_headers: Vec::new(),
    };
    let (cmd, reply) = Command::invite(call);
    if shared.sip.send(cmd).await.is_err() {
        return Placed::Not("the SIP service stopped".into());
    }
    let leg: CallId = match reply.await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            return Placed::Unanswered {
                status: 500,
                reason: format!("INVITE not sent: {e}"),
            };
        }
        Err(_) => return Placed::Not("the SIP service stopped".into()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = control.send(Control::Register(leg, tx));
    tracing::info!(%destination, "outbound call: dialing");
    let ring_timeout = tokio::time::sleep(settings.outbound.ring_timeout_s);
    tokio::pin!(ring_timeout);
    let mut ringing = false;
    // Set once we hang up ourselves; the answer is then the leg's end.
    let mut ours: Option<(u16, String)> = None;
    let ended = loop {
        tokio::select! {
            input = rx.recv() => match input {
                None => break (500, "the call's route went away".to_owned()),
                Some(CallInput::Shutdown) => {
                    let _ = shared.sip.send(Command::Hangup(leg)).await;
                    ours.get_or_insert((503, "the gateway is shutting down".into()));
                }
                Some(CallInput::Sip(ev)) => match ev {
                    CallEvent::OutgoingProgress { status, .. } if (status == 180 || status == 183) && !ringing => {
                        ringing = true;
                    }
                    CallEvent::OutgoingAnswered { sdp, .. } => {
                        if ours.is_some() {
                            // Answered as we hung up: the endpoint ends it (BYE).
                            continue;
                        }
                        let answer = sdp
                            .as_deref()
                            .ok_or(400u16)
                            .and_then(|body| answer_offer(body, codecs, local));
                        let Ok((_, negotiated)) = answer else {
                            let _ = shared.sip.send(Command::Hangup(leg)).await;
                            ours = Some((488, "the answer has no usable audio".into()));
                            continue;
                        };
                        let session = RtpSession::new(
                            RtpConfig::new(&settings.media, &negotiated, &mut rand::rng()),
                            Instant::now(),
                            std::time::SystemTime::now(),
                        );
                        let media = match shared.media.spawn(
                            ports,
                            session,
                            DriverOptions {
                                inband_dtmf: settings.media.inband_dtmf,
                                ..DriverOptions::default()
                            },
                        ) {
                            Ok(m) => m,
                            Err(e) => {
                                let _ = shared.sip.send(Command::Hangup(leg)).await;
                                return Placed::Unanswered {
                                    status: 500,
                                    reason: format!("media not started: {e}"),
                                };
                            }
                        };
                        let incoming = Incoming {
                            call: leg,
                            sip_call_id: job.attempt_call_id(),
                            from: from_uri,
                            to: target_uri,
                            sdp_offer: None,
                            source: destination,
                            transport: trunk.transport,
                        };
                        let codec: Codec = negotiated.codec;
                        return Placed::Answered(Box::new(AnsweredLeg {
                            incoming,
                            answered: Answered {
                                media,
                                codec,
                                sdp_origin,
                                local_rtp: local,
                            },
                            rx,
                        }));
                    }
                    CallEvent::OutgoingFailed { status, reason, .. } => {
                        ours.get_or_insert((status, reason));
                    }
                    CallEvent::CallTerminated { reason, .. } => {
                        break ours.take().unwrap_or((500, format!("the call ended ({reason:?})")));
                    }
                    _ => {}
                },
            },
            () = &mut ring_timeout, if ours.is_none() => {
                let _ = shared.sip.send(Command::Hangup(leg)).await;
                ours = Some((408, "not answered within ring_timeout_s".into()));
            }
            r = cancel.changed(), if ours.is_none() => {
                if r.is_err() || *cancel.borrow() {
                    let _ = shared.sip.send(Command::Hangup(leg)).await;
                    ours = Some((487, "cancelled".into()));
                }
            }
        }
    };
    Placed::Unanswered {
        status: ended.0,
        reason: ended.1,
    }
}

/// The call detail record of a try nobody answered.
fn attempt_record(
    shared: &Arc<Shared>,
    job: &OutboundCall,
    started: chrono::DateTime<Utc>,
    status: u16,
) {
    let ended = Utc::now();
    let record = CallRecord {
        outcome: super::super::dialer::classify(status).as_str().into(),
        last_step: None,
        orders: Vec::new(),
        facts: CallFacts {
            channel: cdr::channel(false),
            direction: cdr::direction(true),
            outbound_id: Some(job.id.clone()),
            sip_call_id: job.attempt_call_id(),
            caller: shared.settings.outbound.caller_id.clone(),
            called: job.to.clone(),
            started_at: started,
            ended_at: ended,
            duration_ms: (ended - started).num_milliseconds().max(0) as u64,
            callback_order: None,
            recordings: Vec::new(),
            transfer_to: None,
            bridge: None,
            codec: None,
            rtp: None,
        },
    };
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || shared.cdr.write(&record));
}
