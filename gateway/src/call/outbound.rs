//! The outbound calls' task: drives the [`Dialer`] with the clock, the store and the calls.
//!
//! Jobs come from the API (`POST /v1/calls`) and from missed calls; each is stored before the
//! dialer hears of it, and every change the dialer makes is stored before the call it leads to
//! is placed, so the store is the truth `GET /v1/calls/{id}` reads and a restart resumes from.
//! Dialling itself is the call manager's (it owns capacity and routing): the task hands it a
//! [`Dial`], and the call task reports back [`Progress`] until the attempt ends.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::OutboundConfig;
use super::dialer::{
    CancelError, Dialer, DialerOutput, DialerSettings, Origin, OutboundCall, Progress, Status,
};
use super::events::Control;
use super::queues::Queues;
use crate::store::{Store, StoreError, StoredCall};

/// One attempt for the call manager to place.
#[derive(Debug)]
pub struct Dial {
    pub job: OutboundCall,
    /// Where the call reports how the attempt goes.
    pub progress: mpsc::UnboundedSender<(String, Progress)>,
    /// Becomes `true` when the job is cancelled: hang up.
    pub cancel: watch::Receiver<bool>,
}

type CancelReply = (
    oneshot::Sender<Result<OutboundCall, CancelError>>,
    Result<OutboundCall, CancelError>,
);

enum Request {
    Submit(Box<OutboundCall>),
    Release(String),
    Cancel(String, oneshot::Sender<Result<OutboundCall, CancelError>>),
}

/// Why a job was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("outbound calls are off: [calls.outbound] has no trunk")]
    Off,
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the outbound calls' task has stopped")]
    Stopped,
}

/// The handle the API and the missed calls use.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: Option<mpsc::UnboundedSender<Request>>,
    store: Store,
}

impl Outbound {
    /// Start the task (none without a trunk: every submit is then [`OutboundError::Off`]),
    /// resuming the open jobs the store holds.
    pub fn start(
        settings: Option<DialerSettings>,
        store: Store,
        control: mpsc::UnboundedSender<Control>,
        queues: Queues,
    ) -> Outbound {
        let Some(settings) = settings else {
            return Outbound { tx: None, store };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let links = Links { control, queues };
        tokio::spawn(run(Dialer::new(settings), store.clone(), rx, links));
        Outbound {
            tx: Some(tx),
            store,
        }
    }

    /// Whether calls can be placed at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Store a new job and queue it.
    pub async fn submit(&self, job: OutboundCall) -> Result<OutboundCall, OutboundError> {
        let tx = self.tx.as_ref().ok_or(OutboundError::Off)?;
        self.store.call_save(stored(&job)?).await?;
        tx.send(Request::Submit(Box::new(job.clone())))
            .map_err(|_| OutboundError::Stopped)?;
        Ok(job)
    }

    /// A job as stored (any node's, any status).
    pub async fn get(&self, id: &str) -> Result<Option<OutboundCall>, StoreError> {
        Ok(self
            .store
            .call_get(id.to_owned())
            .await?
            .and_then(|c| parse(&c)))
    }

    /// The newest jobs.
    pub async fn recent(&self, limit: u32) -> Result<Vec<OutboundCall>, StoreError> {
        Ok(self
            .store
            .calls_recent(limit)
            .await?
            .iter()
            .filter_map(parse)
            .collect())
    }

    /// Queue the callback of a missed call (漏话回拨) whose callback order is `order_id`, when
    /// `missed_call_flow` is set: dialled `missed_call_delay_s` later at the earliest, within
    /// the calling hours and as capacity allows. One job per order (its id comes from the
    /// order's), so a redelivered order cannot make two.
    pub async fn call_back_missed(&self, config: &OutboundConfig, caller: &str, order_id: &str) {
        let Some(flow) = config.missed_call_flow.clone() else {
            return;
        };
        let Some(to) = adapters::submission::normalize_phone(caller) else {
            return;
        };
        let now = Utc::now();
        let job = OutboundCall::new(
            format!("c-missed-{order_id}"),
            to,
            flow,
            missed_call_vars(order_id),
            Origin::MissedCall {
                order_id: order_id.to_owned(),
            },
            now,
            now + chrono::Duration::from_std(config.missed_call_delay_s).unwrap_or_default(),
        );
        match self.submit(job).await {
            Ok(job) => tracing::info!(job = %job.id, order_id, "missed call: callback queued"),
            Err(OutboundError::Off) => {}
            Err(e) => tracing::error!(order_id, error = %e, "missed call: callback not queued"),
        }
    }

    /// A held queue callback's turn came: dial it.
    pub fn release(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request::Release(id.to_owned()));
        }
    }

    /// Cancel an open job.
    pub async fn cancel(
        &self,
        id: &str,
    ) -> Result<Result<OutboundCall, CancelError>, OutboundError> {
        let tx = self.tx.as_ref().ok_or(OutboundError::Off)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request::Cancel(id.to_owned(), reply))
            .map_err(|_| OutboundError::Stopped)?;
        rx.await.map_err(|_| OutboundError::Stopped)
    }
}

fn stored(job: &OutboundCall) -> Result<StoredCall, StoreError> {
    Ok(StoredCall {
        id: job.id.clone(),
        open: !job.status.is_final(),
        doc: serde_json::to_string(job)?,
        created_at: job.created_at,
        updated_at: job.updated_at,
    })
}

fn parse(c: &StoredCall) -> Option<OutboundCall> {
    serde_json::from_str(&c.doc)
        .map_err(|e| tracing::warn!(job = %c.id, error = %e, "stored outbound call unreadable"))
        .ok()
}

/// The tasks the outbound calls' task talks to.
struct Links {
    /// The call manager: it places the calls.
    control: mpsc::UnboundedSender<Control>,
    /// The agent queues: held callbacks' turns.
    queues: Queues,
}

async fn run(
    mut dialer: Dialer,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Request>,
    links: Links,
) {
    let Links { control, queues } = links;
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<(String, Progress)>();
    // Cancel switches of the jobs whose call is up.
    let mut cancels: HashMap<String, watch::Sender<bool>> = HashMap::new();
    // Jobs whose last save failed: not dialled (the store must know first).
    let mut unsaved: HashSet<String> = HashSet::new();
    // A cancel's answer, given once the cancelled job is stored (a GET right after sees it).
    let mut cancelled: Option<CancelReply> = None;
    match store.calls_open().await {
        Ok(open) => {
            let jobs: Vec<OutboundCall> = open.iter().filter_map(parse).collect();
            if !jobs.is_empty() {
                tracing::info!(jobs = jobs.len(), "outbound calls: resuming the open jobs");
            }
            dialer.handle_resume(Utc::now(), jobs);
            // Callbacks waiting for their turn take their places in line again (in the order
            // they were asked for).
            let mut held: Vec<&OutboundCall> = dialer.held().collect();
            held.sort_by_key(|j| (j.created_at, j.id.clone()));
            for job in held {
                if let Origin::QueueCallback { queue, priority } = &job.origin {
                    queues.restore(&job.id, queue, *priority);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "outbound calls: open jobs not read; not resumed"),
    }
    loop {
        let wake = loop {
            match dialer.poll_output() {
                DialerOutput::Save(job) => {
                    let saved = match stored(&job) {
                        Ok(s) => store.call_save(s).await,
                        Err(e) => Err(e),
                    };
                    match saved {
                        Ok(()) => {
                            unsaved.remove(&job.id);
                            if job.status.is_final() {
                                metrics::counter!("gateway_outbound_calls_total", "status" => job.status.as_str()).increment(1);
                                tracing::info!(job = %job.id, status = job.status.as_str(), tries = job.attempts.len(), "outbound call ended");
                                report_to_order(&store, &job);
                                if matches!(job.origin, Origin::QueueCallback { .. }) {
                                    queues.callback_ended(&job.id);
                                    if job.status != Status::Completed {
                                        not_reached_order(&store, &job);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(job = %job.id, error = %e, "outbound call not stored");
                            unsaved.insert(job.id.clone());
                        }
                    }
                }
                DialerOutput::Dial(job) => {
                    if unsaved.contains(&job.id) {
                        let _ = progress_tx.send((
                            job.id.clone(),
                            Progress::NotPlaced {
                                reason: "not stored".into(),
                            },
                        ));
                        continue;
                    }
                    let (cancel, cancel_rx) = watch::channel(false);
                    cancels.insert(job.id.clone(), cancel);
                    let id = job.id.clone();
                    let dial = Dial {
                        job,
                        progress: progress_tx.clone(),
                        cancel: cancel_rx,
                    };
                    if control.send(Control::Dial(Box::new(dial))).is_err() {
                        let _ = progress_tx.send((
                            id,
                            Progress::NotPlaced {
                                reason: "calls are stopping".into(),
                            },
                        ));
                    }
                }
                DialerOutput::Returned { id, retry } => queues.callback_failed(&id, retry),
                DialerOutput::Hangup(id) => {
                    if let Some(c) = cancels.get(&id) {
                        let _ = c.send(true);
                    }
                }
                DialerOutput::Timeout(t) => {
                    publish(&dialer);
                    break t;
                }
            }
        };
        if let Some((reply, result)) = cancelled.take() {
            let _ = reply.send(result);
        }
        let sleep = match wake {
            Some(t) => (t - Utc::now()).to_std().unwrap_or_default(),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            req = rx.recv() => match req {
                None => break,
                Some(Request::Submit(job)) => dialer.handle_submit(Utc::now(), *job),
                Some(Request::Release(id)) => {
                    if !dialer.handle_release(Utc::now(), &id) {
                        tracing::debug!(job = %id, "queue callback released but not held");
                    }
                }
                Some(Request::Cancel(id, reply)) => {
                    cancelled = Some((reply, dialer.handle_cancel(Utc::now(), &id)));
                }
            },
            Some((id, p)) = progress.recv() => {
                let ended = matches!(p, Progress::Ended(_) | Progress::Failed { .. } | Progress::NotPlaced { .. });
                if ended {
                    cancels.remove(&id);
                }
                dialer.handle_progress(Utc::now(), &id, p);
            }
            () = tokio::time::sleep(sleep) => dialer.handle_timeout(Utc::now()),
        }
    }
}

/// A missed call's callback ended: say how in its callback order's history.
fn report_to_order(store: &Store, job: &OutboundCall) {
    let Origin::MissedCall { order_id } = &job.origin else {
        return;
    };
    let Ok(id) = order_id.parse::<adapters::OrderNumber>() else {
        return;
    };
    let tries = job.attempts.len();
    let note = match job.status {
        Status::Completed => format!("已回拨接通（第{tries}次）"),
        Status::NoAnswer => format!("回拨{tries}次无人接听"),
        Status::Busy => format!("回拨{tries}次均占线"),
        Status::Cancelled => "回拨已取消".to_owned(),
        _ => format!("回拨{tries}次未能接通"),
    };
    let store = store.clone();
    tokio::spawn(async move {
        let addition = crate::store::Addition::Note(note);
        if let Err(e) = store.attach(&id, addition, "outbound", Utc::now()).await {
            tracing::warn!(order_id = %id, error = %e, "callback result not added to the order");
        }
    });
}

/// A queue callback not reached after every try: a callback order keeps the task.
fn not_reached_order(store: &Store, job: &OutboundCall) {
    let order = super::order::callback_not_reached(&job.to, &job.id, job.status.as_str());
    let store = store.clone();
    let id = job.id.clone();
    tokio::spawn(async move {
        use crate::intake::{self, Idempotency, Intake, Via};
        let via = Via::CallCallback {
            at: Some("queue callback not reached"),
        };
        let claim = Idempotency::Redelivery(order.claim);
        match intake::accept(&Intake::new(store), via, order.submission, claim).await {
            Ok(a) => {
                tracing::info!(job = %id, order_id = %a.id(), "queue callback not reached: callback order")
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "queue callback not reached: no order")
            }
        }
    });
}

fn publish(dialer: &Dialer) {
    metrics::gauge!("gateway_outbound_calls", "state" => "queued").set(dialer.queued() as f64);
    metrics::gauge!("gateway_outbound_calls", "state" => "live").set(dialer.live() as f64);
}

/// The variables a missed call's callback flow gets.
pub fn missed_call_vars(order_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("order_id".to_owned(), order_id.to_owned())])
}
