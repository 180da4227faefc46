//! Outbound calls, sans-IO: which job dials when, and what its end means.
//!
//! A job ([`OutboundCall`]) asks for one number to be called and a named flow run on the answer
//! (`POST /v1/calls`, a missed call's callback). [`Dialer`] decides: it dials a job once its
//! time has come, within the calling hours (in the node's time zone), with fewer than
//! `max_calls` outbound calls up and at most `calls_per_second` new ones a second; it classes
//! each attempt's end (busy, no answer, failed) and either finishes the job or queues it again
//! after the retry policy's delay.
//!
//! It follows the gateway's poll convention (see [`super::core`]): `handle_*(now, ...)` with the
//! wall-clock time as input (calling hours are wall-clock), then [`Dialer::poll_output`] until
//! [`DialerOutput::Timeout`]. Every change of a job comes out as [`DialerOutput::Save`] *before*
//! the [`DialerOutput::Dial`] it leads to: the driver stores it first, so a job is never dialled
//! unless the store knows it is being dialled, and a restart ([`Dialer::handle_resume`]) neither
//! loses a waiting job nor dials one twice.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// Where an outbound call is in its life. The first four are open; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A queue callback waiting for its turn in the queue (the queue releases it).
    Held,
    /// Waiting for its time, the calling hours, or a free line.
    Queued,
    /// INVITE sent.
    Dialing,
    /// The phone rings (180/183).
    Ringing,
    /// Answered: the flow runs.
    Answered,
    /// Answered and ended (the flow's end, or either side hung up).
    Completed,
    /// Not answered within the ring timeout (or 408/480) on every try allowed.
    NoAnswer,
    /// Busy (486/600/603) on every try allowed.
    Busy,
    /// Could not be placed (a SIP error, no media) on every try allowed.
    Failed,
    /// Cancelled by `DELETE /v1/calls/{id}` (or shutdown of a job in progress).
    Cancelled,
}

impl Status {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Queued => "queued",
            Status::Dialing => "dialing",
            Status::Ringing => "ringing",
            Status::Answered => "answered",
            Status::Completed => "completed",
            Status::NoAnswer => "no_answer",
            Status::Busy => "busy",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Nothing more happens to a job in this status.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Status::Held | Status::Queued | Status::Dialing | Status::Ringing | Status::Answered
        )
    }
}

/// Why the job exists (kept with it: the callback of a missed call reports to its order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// `POST /v1/calls`.
    Api,
    /// The callback of a call that did not reach service; its callback order.
    MissedCall { order_id: String },
    /// A caller who asked, waiting in `queue`, to be called back in their turn: held until the
    /// queue releases it; on answer the call rejoins the queue at the place kept.
    QueueCallback { queue: String, priority: u8 },
}

/// One try at the number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended: `completed`, `busy`, `no_answer`, `failed`, `cancelled`; `dialing` while
    /// under way.
    pub result: Status,
    /// The final SIP status of an unanswered try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the flow of an answered call came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// How the call ended (`flow_hangup`, `caller_hangup`, ...; the call record's `outcome`).
    pub ending: String,
    /// `flow/step` at the end.
    pub last_step: Option<String>,
    /// Orders the flow filed (a survey's answer, say).
    pub orders: Vec<String>,
    /// What the flow collected (`vars`).
    #[serde(default)]
    pub collected: BTreeMap<String, String>,
    pub duration_ms: u64,
}

/// One outbound call job, as the API shows it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundCall {
    pub id: String,
    /// The number to call (digits, optionally a leading `+`).
    pub to: String,
    pub flow: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    pub status: Status,
    pub origin: Origin,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Not dialled before this instant (a retry's delay; the calling hours' opening).
    pub not_before: DateTime<Utc>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CallResult>,
}

impl OutboundCall {
    /// A new job, queued to dial from `not_before` on.
    pub fn new(
        id: String,
        to: String,
        flow: String,
        vars: BTreeMap<String, String>,
        origin: Origin,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> OutboundCall {
        OutboundCall {
            id,
            to,
            flow,
            vars,
            status: Status::Queued,
            origin,
            created_at: now,
            updated_at: now,
            not_before,
            attempts: Vec::new(),
            result: None,
        }
    }

    /// A fresh job id, `c-<prefix>YYYYMMDD-<48 random bits>` (the prefix tells its origin).
    pub fn new_id(prefix: &str, now: DateTime<Utc>) -> String {
        format!(
            "c-{prefix}{}-{:012x}",
            now.format("%Y%m%d"),
            rand::random::<u64>() & 0xffff_ffff_ffff
        )
    }

    /// The SIP Call-ID stand-in of the job's current try, in call records.
    pub fn attempt_call_id(&self) -> String {
        format!("outbound-{}-{}", self.id, self.attempts.len())
    }

    fn tries_ending(&self, status: Status) -> u32 {
        self.attempts.iter().filter(|a| a.result == status).count() as u32
    }
}

/// The daily window in which calls may be placed, in local minutes of the day. `start > end`
/// is a window across midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingHours {
    start: u32,
    end: u32,
}

impl CallingHours {
    /// `"08:00-21:00"`.
    pub fn parse(s: &str) -> Result<CallingHours, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` should be HH:MM-HH:MM, e.g. 08:00-21:00"))?;
        let minute = |t: &str| -> Result<u32, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{t}` should be HH:MM"))?;
            let (h, m): (u32, u32) = (
                h.parse().map_err(|_| format!("`{t}`: bad hour"))?,
                m.parse().map_err(|_| format!("`{t}`: bad minute"))?,
            );
            if h > 24 || m > 59 || (h == 24 && m != 0) {
                return Err(format!("`{t}` is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minute(a)?, minute(b)?);
        if start == end {
            return Err(format!("`{s}` is an empty window"));
        }
        Ok(CallingHours { start, end })
    }

    fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// `now` when it is inside the window, else the window's next opening.
    pub fn next_open(&self, now: DateTime<Utc>, offset: FixedOffset) -> DateTime<Utc> {
        let local = now.with_timezone(&offset);
        let minute = local.hour() * 60 + local.minute();
        if self.contains(minute) {
            return now;
        }
        let wait_min = (self.start + 24 * 60 - minute) % (24 * 60);
        let into_minute = chrono::Duration::seconds(i64::from(local.second()))
            + chrono::Duration::nanoseconds(i64::from(local.nanosecond() % 1_000_000_000));
        now + chrono::Duration::minutes(i64::from(wait_min)) - into_minute
    }
}

/// How often an attempt that ended one way is tried again, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts ending this way before the job ends so (1: no retry).
    pub tries: u32,
    pub after: Duration,
}

/// What the dialer's decisions depend on (`[calls.outbound]`).
#[derive(Debug, Clone)]
pub struct DialerSettings {
    /// Outbound calls up at once.
    pub max_calls: usize,
    /// New calls a second at most.
    pub calls_per_second: u32,
    pub calling_hours: Option<CallingHours>,
    pub utc_offset: FixedOffset,
    pub busy: Retry,
    pub no_answer: Retry,
    pub failed: Retry,
}

/// How an attempt went, from the call that carried it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Ringing,
    Answered,
    /// The answered call ended.
    Ended(CallResult),
    /// Not answered: the final SIP status (408 for our ring timeout) and why.
    Failed {
        status: u16,
        reason: String,
    },
    /// Not placed for a reason of ours that is no try at the number (the gateway is at its
    /// call limit, shutting down): queued again without counting.
    NotPlaced {
        reason: String,
    },
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelError {
    NotFound,
    /// Already completed, failed or cancelled: nothing to cancel.
    Final(Status),
}

/// What the dialer asks of its driver, from [`Dialer::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum DialerOutput {
    /// Store the job as it now is (before carrying out what follows).
    Save(OutboundCall),
    /// Place the call; report with [`Dialer::handle_progress`].
    Dial(OutboundCall),
    /// End the job's call in progress (cancelled); its end is reported as usual.
    Hangup(String),
    /// A queue callback's try failed and it may be tried again: it is held again; tell its
    /// queue to give its turn back after `retry`.
    Returned { id: String, retry: Duration },
    /// Nothing else pending: call [`Dialer::handle_timeout`] then, or earlier with new input.
    Timeout(Option<DateTime<Utc>>),
}

/// The outbound call scheduler (see the module doc).
#[derive(Debug)]
pub struct Dialer {
    settings: DialerSettings,
    /// Open jobs by id.
    jobs: BTreeMap<String, OutboundCall>,
    out: VecDeque<DialerOutput>,
    /// The earliest the next call may be dialled: calls are paced `1 / calls_per_second` apart,
    /// so no second anywhere (nor any tenth of one) holds more than its share, as a carrier's
    /// policer counts.
    next_slot: Option<DateTime<Utc>>,
    next_wake: Option<DateTime<Utc>>,
}

impl Dialer {
    pub fn new(settings: DialerSettings) -> Dialer {
        Dialer {
            settings,
            jobs: BTreeMap::new(),
            out: VecDeque::new(),
            next_slot: None,
            next_wake: None,
        }
    }

    /// Outbound calls up now (dialing, ringing or answered).
    pub fn live(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| !matches!(j.status, Status::Queued | Status::Held))
            .count()
    }

    /// Jobs waiting to dial.
    pub fn queued(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| j.status == Status::Queued)
            .count()
    }

    /// Queue callbacks waiting for their turn (for the queues to restore at start).
    pub fn held(&self) -> impl Iterator<Item = &OutboundCall> {
        self.jobs.values().filter(|j| j.status == Status::Held)
    }

    /// A queue callback's turn came: dial it now. `false`: not a held job (gone, or a try of
    /// it is already under way).
    pub fn handle_release(&mut self, now: DateTime<Utc>, id: &str) -> bool {
        let Some(job) = self.jobs.get_mut(id).filter(|j| j.status == Status::Held) else {
            return false;
        };
        job.status = Status::Queued;
        job.not_before = now;
        self.schedule(now);
        true
    }

    /// An open job by id.
    pub fn job(&self, id: &str) -> Option<&OutboundCall> {
        self.jobs.get(id)
    }

    /// The open jobs the store had at start. A job that was being dialled or ringing when the
    /// gateway stopped counts that try as failed (and is retried per policy); one that was
    /// answered is not called again (the citizen was reached) and ends `failed`, "interrupted".
    pub fn handle_resume(&mut self, now: DateTime<Utc>, jobs: Vec<OutboundCall>) {
        for mut job in jobs {
            if job.status.is_final() || self.jobs.contains_key(&job.id) {
                continue;
            }
            match job.status {
                Status::Queued | Status::Held => {}
                Status::Answered => {
                    self.close_attempt(&mut job, now, Status::Completed, None, "interrupted");
                    job.status = Status::Failed;
                    job.updated_at = now;
                    self.out.push_back(DialerOutput::Save(job));
                    continue;
                }
                Status::Dialing | Status::Ringing => {
                    self.close_attempt(&mut job, now, Status::Failed, None, "interrupted");
                    if !self.retry(&mut job, now, Status::Failed) {
                        self.out.push_back(DialerOutput::Save(job));
                        continue;
                    }
                    self.out.push_back(DialerOutput::Save(job.clone()));
                }
                _ => continue,
            }
            self.jobs.insert(job.id.clone(), job);
        }
        self.schedule(now);
    }

    /// A new job (already stored by whoever made it).
    pub fn handle_submit(&mut self, now: DateTime<Utc>, job: OutboundCall) {
        if !job.status.is_final() {
            self.jobs.insert(job.id.clone(), job);
        }
        self.schedule(now);
    }

    /// Cancel a job: a queued one ends at once; one in progress is hung up.
    pub fn handle_cancel(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
    ) -> Result<OutboundCall, CancelError> {
        let mut job = self.jobs.remove(id).ok_or(CancelError::NotFound)?;
        if !matches!(job.status, Status::Queued | Status::Held) {
            self.out.push_back(DialerOutput::Hangup(job.id.clone()));
            self.close_attempt(&mut job, now, Status::Cancelled, None, "cancelled");
        }
        job.status = Status::Cancelled;
        job.updated_at = now;
        self.out.push_back(DialerOutput::Save(job.clone()));
        self.schedule(now);
        Ok(job)
    }

    /// News of a job's call.
    pub fn handle_progress(&mut self, now: DateTime<Utc>, id: &str, progress: Progress) {
        let Some(mut job) = self.jobs.remove(id) else {
            return; // cancelled meanwhile
        };
        job.updated_at = now;
        match progress {
            Progress::Ringing => {
                if job.status == Status::Dialing {
                    job.status = Status::Ringing;
                    self.out.push_back(DialerOutput::Save(job.clone()));
                }
                self.jobs.insert(job.id.clone(), job);
            }
            Progress::Answered => {
                job.status = Status::Answered;
                self.out.push_back(DialerOutput::Save(job.clone()));
                self.jobs.insert(job.id.clone(), job);
            }
            Progress::Ended(result) => {
                self.close_attempt(&mut job, now, Status::Completed, None, "");
                job.status = Status::Completed;
                job.result = Some(result);
                self.out.push_back(DialerOutput::Save(job));
            }
            Progress::Failed { status, reason } => {
                let class = classify(status);
                self.close_attempt(&mut job, now, class, Some(status), &reason);
                let again = self.retry(&mut job, now, class);
                self.out.push_back(DialerOutput::Save(job.clone()));
                if again {
                    if job.status == Status::Held {
                        let retry = self.policy(class).after;
                        self.out.push_back(DialerOutput::Returned {
                            id: job.id.clone(),
                            retry,
                        });
                    }
                    self.jobs.insert(job.id.clone(), job);
                }
            }
            Progress::NotPlaced { reason } => {
                // No try at the number: take the attempt back and wait a moment.
                if job.attempts.last().is_some_and(|a| a.ended_at.is_none()) {
                    job.attempts.pop();
                }
                job.status = Status::Queued;
                job.not_before = now + chrono::Duration::seconds(5);
                tracing::debug!(job = %job.id, %reason, "outbound call not placed: later");
                self.out.push_back(DialerOutput::Save(job.clone()));
                self.jobs.insert(job.id.clone(), job);
            }
        }
        self.schedule(now);
    }

    /// The time asked for has come.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        self.schedule(now);
    }

    /// The next thing to do (see the module doc).
    pub fn poll_output(&mut self) -> DialerOutput {
        self.out
            .pop_front()
            .unwrap_or(DialerOutput::Timeout(self.next_wake))
    }

    fn close_attempt(
        &self,
        job: &mut OutboundCall,
        now: DateTime<Utc>,
        result: Status,
        sip_status: Option<u16>,
        reason: &str,
    ) {
        if let Some(a) = job.attempts.last_mut().filter(|a| a.ended_at.is_none()) {
            a.ended_at = Some(now);
            a.result = result;
            a.sip_status = sip_status;
            a.reason = (!reason.is_empty()).then(|| reason.to_owned());
        }
    }

    fn policy(&self, class: Status) -> Retry {
        match class {
            Status::Busy => self.settings.busy,
            Status::NoAnswer => self.settings.no_answer,
            _ => self.settings.failed,
        }
    }

    /// Queue the job again if the policy for `class` allows another try; else end it so. A
    /// queue callback is held again instead: its queue decides when its turn comes back.
    fn retry(&self, job: &mut OutboundCall, now: DateTime<Utc>, class: Status) -> bool {
        let policy = self.policy(class);
        if job.tries_ending(class) < policy.tries.max(1) {
            if matches!(job.origin, Origin::QueueCallback { .. }) {
                job.status = Status::Held;
                return true;
            }
            job.status = Status::Queued;
            job.not_before = now + chrono::Duration::from_std(policy.after).unwrap_or_default();
            true
        } else {
            job.status = class;
            false
        }
    }

    /// Dial what may be dialled now; work out when to look again.
    fn schedule(&mut self, now: DateTime<Utc>) {
        let interval = chrono::Duration::microseconds(
            1_000_000 / i64::from(self.settings.calls_per_second.max(1)),
        );
        let mut live = self.live();
        let mut due: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = Vec::new();
        let mut wake: Option<DateTime<Utc>> = None;
        let open = self
            .settings
            .calling_hours
            .map_or(now, |h| h.next_open(now, self.settings.utc_offset));
        for job in self.jobs.values() {
            if job.status != Status::Queued {
                continue;
            }
            let at = job.not_before.max(open);
            let at = match self.settings.calling_hours {
                Some(h) => h.next_open(at, self.settings.utc_offset),
                None => at,
            };
            if at <= now {
                due.push((job.not_before, job.created_at, job.id.clone()));
            } else {
                wake = Some(wake.map_or(at, |w: DateTime<Utc>| w.min(at)));
            }
        }
        // Longest waiting first.
        due.sort();
        for (_, _, id) in due {
            if live >= self.settings.max_calls {
                // A call's end (progress) makes room; no timer needed.
                break;
            }
            if let Some(slot) = self.next_slot.filter(|slot| *slot > now) {
                wake = Some(wake.map_or(slot, |w| w.min(slot)));
                break;
            }
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.status = Status::Dialing;
            job.updated_at = now;
            job.attempts.push(Attempt {
                started_at: now,
                ended_at: None,
                result: Status::Dialing,
                sip_status: None,
                reason: None,
            });
            // A wake-up that came late may catch up one call, not a burst.
            let slot = self.next_slot.map_or(now, |s| s.max(now - interval));
            self.next_slot = Some(slot + interval);
            live += 1;
            self.out.push_back(DialerOutput::Save(job.clone()));
            self.out.push_back(DialerOutput::Dial(job.clone()));
        }
        self.next_wake = wake;
    }
}

/// The class of an unanswered attempt's final status (also the outcome in its call record).
pub fn classify(status: u16) -> Status {
    match status {
        486 | 600 | 603 => Status::Busy,
        408 | 480 | 487 => Status::NoAnswer,
        _ => Status::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        // 2026-12-07 in UTC+8, given as local time.
        FixedOffset::east_opt(8 * 3600)
            .and_then(|o| o.with_ymd_and_hms(2026, 12, 7, h, m, s).single())
            .map(|d| d.with_timezone(&Utc))
            .expect("a valid time")
    }

    fn settings() -> DialerSettings {
        DialerSettings {
            max_calls: 2,
            // No pacing but where a test sets it.
            calls_per_second: u32::MAX,
            calling_hours: Some(CallingHours::parse("08:00-21:00").expect("valid")),
            utc_offset: FixedOffset::east_opt(8 * 3600).expect("UTC+8"),
            busy: Retry {
                tries: 2,
                after: Duration::from_secs(60),
            },
            no_answer: Retry {
                tries: 3,
                after: Duration::from_secs(120),
            },
            failed: Retry {
                tries: 1,
                after: Duration::from_secs(30),
            },
        }
    }

    fn job(id: &str, now: DateTime<Utc>) -> OutboundCall {
        OutboundCall::new(
            id.into(),
            "13800138000".into(),
            "survey".into(),
            BTreeMap::new(),
            Origin::Api,
            now,
            now,
        )
    }

    /// What one drain handed out: saved statuses, dialled ids, hung up ids, the timeout.
    type Drained = (
        Vec<(String, Status)>,
        Vec<String>,
        Vec<String>,
        Option<DateTime<Utc>>,
    );

    fn drain(d: &mut Dialer) -> Drained {
        let (mut saved, mut dialled, mut hung) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match d.poll_output() {
                DialerOutput::Save(j) => saved.push((j.id, j.status)),
                DialerOutput::Dial(j) => {
                    assert!(
                        saved
                            .iter()
                            .any(|(id, s)| *id == j.id && *s == Status::Dialing),
                        "saved as dialing before it is dialled"
                    );
                    dialled.push(j.id)
                }
                DialerOutput::Hangup(id) => hung.push(id),
                DialerOutput::Returned { id, .. } => panic!("only queue callbacks return: {id}"),
                DialerOutput::Timeout(t) => return (saved, dialled, hung, t),
            }
        }
    }

    #[test]
    fn calling_hours_parse_and_find_the_next_opening() {
        let h = CallingHours::parse("08:00-21:00").expect("valid");
        let offset = settings().utc_offset;
        assert_eq!(h.next_open(t(9, 0, 0), offset), t(9, 0, 0));
        assert_eq!(h.next_open(t(7, 30, 15), offset), t(8, 0, 0));
        assert_eq!(
            h.next_open(t(21, 0, 0), offset),
            t(8, 0, 0) + chrono::Duration::days(1)
        );
        let night = CallingHours::parse("22:00-02:00").expect("valid");
        assert_eq!(night.next_open(t(23, 0, 0), offset), t(23, 0, 0));
        assert_eq!(night.next_open(t(1, 59, 0), offset), t(1, 59, 0));
        assert_eq!(night.next_open(t(2, 0, 0), offset), t(22, 0, 0));
        for bad in [
            "8-21",
            "08:00",
            "25:00-26:00",
            "08:00-08:00",
            "08:61-09:00",
            "",
        ] {
            assert!(CallingHours::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_dials_outside_calling_hours() {
        let mut d = Dialer::new(settings());
        let now = t(6, 0, 0);
        d.handle_submit(now, job("a", now));
        let (saved, dialled, _, wake) = drain(&mut d);
        assert!(saved.is_empty() && dialled.is_empty());
        assert_eq!(wake, Some(t(8, 0, 0)));
        d.handle_timeout(t(7, 59, 59));
        assert!(drain(&mut d).1.is_empty());
        d.handle_timeout(t(8, 0, 0));
        let (saved, dialled, _, _) = drain(&mut d);
        assert_eq!(dialled, ["a"]);
        assert_eq!(saved, [("a".to_string(), Status::Dialing)]);
    }

    #[test]
    fn at_most_max_calls_at_once_and_the_longest_waiting_first() {
        let mut d = Dialer::new(settings());
        let now = t(10, 0, 0);
        for (i, id) in ["c", "a", "b"].iter().enumerate() {
            let mut j = job(id, now);
            j.not_before = now - chrono::Duration::seconds(10 - i as i64);
            d.handle_submit(now, j);
        }
        let (_, dialled, _, _) = drain(&mut d);
        assert_eq!(dialled, ["c", "a"]);
        assert_eq!((d.live(), d.queued()), (2, 1));
        d.handle_progress(
            now,
            "c",
            Progress::Failed {
                status: 500,
                reason: "x".into(),
            },
        );
        let (saved, dialled, _, _) = drain(&mut d);
        assert_eq!(saved[0], ("c".to_string(), Status::Failed));
        assert_eq!(dialled, ["b"]);
    }

    #[test]
    fn busy_and_no_answer_are_retried_per_policy_then_end_so() {
        let mut d = Dialer::new(settings());
        let now = t(10, 0, 0);
        d.handle_submit(now, job("a", now));
        drain(&mut d);
        d.handle_progress(
            now,
            "a",
            Progress::Failed {
                status: 486,
                reason: "Busy Here".into(),
            },
        );
        let (saved, dialled, _, wake) = drain(&mut d);
        assert_eq!(saved, [("a".to_string(), Status::Queued)]);
        assert!(dialled.is_empty());
        assert_eq!(wake, Some(now + chrono::Duration::seconds(60)));
        let later = now + chrono::Duration::seconds(60);
        d.handle_timeout(later);
        assert_eq!(drain(&mut d).1, ["a"]);
        d.handle_progress(
            later,
            "a",
            Progress::Failed {
                status: 486,
                reason: "Busy Here".into(),
            },
        );
        let (saved, _, _, _) = drain(&mut d);
        assert_eq!(saved, [("a".to_string(), Status::Busy)]);
        assert!(d.job("a").is_none());

        // No answer: three tries.
        d.handle_submit(later, job("b", later));
        let mut at = later;
        for i in 0..3 {
            assert_eq!(drain(&mut d).1, ["b"], "try {i}");
            d.handle_progress(at, "b", Progress::Ringing);
            d.handle_progress(
                at,
                "b",
                Progress::Failed {
                    status: 408,
                    reason: "no answer".into(),
                },
            );
            at += chrono::Duration::seconds(120);
            d.handle_timeout(at);
        }
        let (saved, dialled, _, _) = drain(&mut d);
        assert!(dialled.is_empty());
        assert!(
            saved.contains(&("b".to_string(), Status::NoAnswer)),
            "{saved:?}"
        );
    }

    #[test]
    fn an_answered_call_completes_with_its_result() {
        let mut d = Dialer::new(settings());
        let now = t(10, 0, 0);
        d.handle_submit(now, job("a", now));
        drain(&mut d);
        d.handle_progress(now, "a", Progress::Ringing);
        d.handle_progress(now, "a", Progress::Answered);
        let result = CallResult {
            ending: "flow_hangup".into(),
            last_step: Some("survey/thanks".into()),
            orders: vec!["2612070100001".into()],
            collected: BTreeMap::new(),
            duration_ms: 9000,
        };
        d.handle_progress(now, "a", Progress::Ended(result.clone()));
        let mut last = None;
        while let DialerOutput::Save(j) = d.poll_output() {
            last = Some(j);
        }
        let j = last.expect("saved");
        assert_eq!(j.status, Status::Completed);
        assert_eq!(j.result, Some(result));
        assert_eq!(j.attempts.len(), 1);
        assert_eq!(j.attempts[0].result, Status::Completed);
    }

    #[test]
    fn cancel_ends_a_queued_job_and_hangs_up_a_live_one() {
        let mut d = Dialer::new(settings());
        let now = t(6, 0, 0);
        d.handle_submit(now, job("q", now));
        drain(&mut d);
        let j = d.handle_cancel(now, "q").expect("cancelled");
        assert_eq!(j.status, Status::Cancelled);
        let (saved, _, hung, _) = drain(&mut d);
        assert_eq!(saved, [("q".to_string(), Status::Cancelled)]);
        assert!(hung.is_empty());
        assert_eq!(d.handle_cancel(now, "q"), Err(CancelError::NotFound));

        let now = t(10, 0, 0);
        d.handle_submit(now, job("l", now));
        drain(&mut d);
        d.handle_cancel(now, "l").expect("cancelled");
        let (_, _, hung, _) = drain(&mut d);
        assert_eq!(hung, ["l"]);
        // Its end, reported later, changes nothing.
        d.handle_progress(
            now,
            "l",
            Progress::Failed {
                status: 487,
                reason: "".into(),
            },
        );
        assert!(drain(&mut d).0.is_empty());
    }

    #[test]
    fn not_placed_is_no_try_and_the_rate_limit_spreads_dials() {
        let mut s = settings();
        s.max_calls = 100;
        s.calls_per_second = 2;
        let mut d = Dialer::new(s);
        let now = t(10, 0, 0);
        for id in ["a", "b", "c"] {
            d.handle_submit(now, job(id, now));
        }
        // Two a second: half a second apart.
        let half = chrono::Duration::milliseconds(500);
        let (_, dialled, _, wake) = drain(&mut d);
        assert_eq!(dialled, ["a"]);
        assert_eq!(wake, Some(now + half));
        d.handle_timeout(now + half);
        let (_, dialled, _, wake) = drain(&mut d);
        assert_eq!(dialled, ["b"]);
        assert_eq!(wake, Some(now + half + half));
        d.handle_progress(
            now,
            "a",
            Progress::NotPlaced {
                reason: "at capacity".into(),
            },
        );
        let (saved, _, _, _) = drain(&mut d);
        assert_eq!(saved, [("a".to_string(), Status::Queued)]);
        assert!(d.job("a").is_some_and(|j| j.attempts.is_empty()));
        // "a" waits its 5 s; "c" is next, in the next slot.
        d.handle_timeout(now + chrono::Duration::seconds(1));
        assert_eq!(drain(&mut d).1, ["c"]);

        // A wake-up 2.5 s late catches up one call (the one due and one more), not five.
        for id in ["x", "y", "z"] {
            d.handle_submit(now + chrono::Duration::seconds(1), job(id, now));
        }
        assert!(drain(&mut d).1.is_empty(), "the next slot is at 1.5 s");
        let late = now + chrono::Duration::seconds(4);
        d.handle_timeout(late);
        let (_, dialled, _, wake) = drain(&mut d);
        assert_eq!(dialled, ["x", "y"]);
        assert_eq!(wake, Some(late + half));
    }

    #[test]
    fn a_restart_resumes_waiting_jobs_and_dials_none_twice() {
        let now = t(10, 0, 0);
        let waiting = job("w", now);
        let mut dialing = job("d", now);
        dialing.status = Status::Dialing;
        dialing.attempts.push(Attempt {
            started_at: now,
            ended_at: None,
            result: Status::Dialing,
            sip_status: None,
            reason: None,
        });
        let mut answered = dialing.clone();
        answered.id = "x".into();
        answered.status = Status::Answered;
        let mut d = Dialer::new(settings());
        d.handle_resume(now, vec![waiting, dialing, answered]);
        let (saved, dialled, _, _) = drain(&mut d);
        // The answered one is not called again; the one being dialled had its one `failed`
        // try (policy: 1) and ends; the waiting one dials.
        assert!(
            saved.contains(&("x".to_string(), Status::Failed)),
            "{saved:?}"
        );
        assert!(
            saved.contains(&("d".to_string(), Status::Failed)),
            "{saved:?}"
        );
        assert_eq!(dialled, ["w"]);
    }

    #[test]
    fn a_queue_callback_is_held_until_released_and_held_again_when_not_reached() {
        let mut d = Dialer::new(settings());
        let now = t(10, 0, 0);
        let mut j = job("q", now);
        j.origin = Origin::QueueCallback {
            queue: "general".into(),
            priority: 0,
        };
        j.status = Status::Held;
        d.handle_submit(now, j);
        let (_, dialled, _, _) = drain(&mut d);
        assert!(dialled.is_empty(), "held: not dialled");
        assert_eq!(d.held().count(), 1);
        assert!(d.handle_release(now, "q"));
        assert_eq!(drain(&mut d).1, ["q"]);
        assert!(!d.handle_release(now, "q"), "already under way");
        d.handle_progress(
            now,
            "q",
            Progress::Failed {
                status: 486,
                reason: "busy".into(),
            },
        );
        let mut returned = None;
        let mut saved = Vec::new();
        loop {
            match d.poll_output() {
                DialerOutput::Save(j) => saved.push(j.status),
                DialerOutput::Returned { id, retry } => returned = Some((id, retry)),
                DialerOutput::Timeout(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(saved, [Status::Held]);
        assert_eq!(returned, Some(("q".to_string(), Duration::from_secs(60))));
        // The second busy ends it (busy: 2 tries).
        assert!(d.handle_release(now, "q"));
        drain(&mut d);
        d.handle_progress(
            now,
            "q",
            Progress::Failed {
                status: 486,
                reason: "busy".into(),
            },
        );
        let (saved, _, _, _) = drain(&mut d);
        assert_eq!(saved, [("q".to_string(), Status::Busy)]);
    }
}
