//! The sans-IO call core: what a call decides, apart from how the decisions are carried out.
//!
//! [`CallCore`] follows the model of `quinn-proto` and `str0m`: all time is external input. It
//! owns the IVR interpreter, its timers, the DTMF merger and the call's phase ([`State`]); the
//! driver (the tokio task in [`super::session`], or the in-process simulation in `call/sim.rs`)
//! feeds it what happened with the current `Instant` (`handle_*`), carries out the commands it
//! hands out ([`CallCore::poll_output`]) and wakes it when that says. It has no tokio, no files
//! and no clock, so whole calls run in tests on virtual time.
//!
//! # The poll convention
//! Every sans-IO core of the gateway (`sip::Endpoint`, `media::rtp_session::RtpSession` and the
//! gateway's `call::core::CallCore`) is driven the same way, as str0m's `Rtc` is:
//!
//! 1. **Input.** Tell the core what happened, with the current time: `handle_*(now, input)` for a
//!    datagram, a command or an event, and `handle_timeout(now)` once the instant it asked for has
//!    come. Inputs hand out no output: they return `()`, a `Result` when the core may refuse a
//!    command, or a value the caller needs at once (such as a new call's id).
//! 2. **Output.** Call `poll_output()` until it returns `Output::Timeout` (the call core's is
//!    `poll_output(now)`: it runs its flow interpreter as its commands are taken). Before that it
//!    hands out, in the order it arose, everything the inputs caused: `Output::Transmit` (a
//!    datagram to send) and `Output::Event` (news for the layer above), or, from the call core,
//!    `Output::Command` (work for its driver). Output not drained waits for the next
//!    `poll_output`: nothing is lost, but nothing is sent either, so drain after every input.
//! 3. **Wait.** `Output::Timeout(when)` says nothing else is pending and when to call
//!    `handle_timeout` next. Wait for that instant or the next input, whichever comes first, and
//!    start again at 1. A core with no timer running says `Timeout(None)`: come back only with
//!    new input. (The RTP session always has its next 20 ms tick, so its `Timeout` holds a plain
//!    `Instant`.)
//!
//! Here: the inputs are the `handle_*` methods, all `(now, ...)` and all returning `()`.
//! [`CallCore::poll_output`] hands out [`Output::Command`] (a [`CallCommand`]), then
//! [`Output::Timeout`] with the earliest of the flow's timers, the ACK wait, the end of a
//! recording and a transfer's deadline, `None` when none runs.
//!
//! It takes `now` because commands are handed out one at a time and the interpreter is driven
//! lazily: the next pending event reaches the interpreter only once every command of the
//! previous one has been taken, and the interpreter needs the time of that moment. A driver
//! that carries out each command before polling the next keeps the order the call always had:
//! a result that carrying out a command produced at once (a transfer that could not be placed,
//! an order the slots could not make, a recording that could not start) is heard by the flow
//! before anything that happened later.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ivr_flows::{Action, Event, Session};
use media::dtmf::{DigitSource, DtmfMerger};
use sip::{CallEvent, TerminationReason};

/// How long the flow waits for the caller's ACK before it starts anyway (the ACK may be lost;
/// our 200 is retransmitted at 0.5 s and 1 s).
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// Why the call ended, for the record and the callback decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    CallerHangup,
    FlowHangup,
    MediaTimeout,
    /// The agent a transfer reached hung up (or their media stopped).
    AgentHangup,
    Shutdown,
    Failed,
}

impl Ending {
    /// The name in call records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::CallerHangup => "caller_hangup",
            Ending::FlowHangup => "flow_hangup",
            Ending::MediaTimeout => "media_timeout",
            Ending::AgentHangup => "agent_hangup",
            Ending::Shutdown => "shutdown",
            Ending::Failed => "failed",
        }
    }
}

/// The call's phase. Ending is orthogonal ([`CallCore::ending`]): a call hangs up from any
/// phase and its agent leg, if bridged, stays bridged until the driver closes it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Answered; the flow starts on the caller's ACK, or at `start_at` without one.
    Answering { start_at: Instant },
    /// The flow talks with the caller.
    InFlow,
    /// An agent leg is placed: dialing, then ringing; given up at `deadline`.
    Transferring {
        ringing: bool,
        started: Instant,
        deadline: Instant,
    },
    /// Waiting in an agent queue (hold music, announcements) for an agent to answer; the
    /// queue decides whom to ring and when to give up ([`super::acd`]).
    Queued { since: Instant },
    /// The agent answered: audio is relayed, keys go to the agent.
    Bridged,
}

/// One thing the core asks of its driver, from [`CallCore::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Carry this out (before polling again: see the module doc).
    Command(CallCommand),
    /// Nothing else is pending: call [`CallCore::handle_timeout`] at this instant, or earlier
    /// with new input; `None` when no timer runs (come back only with new input).
    Timeout(Option<Instant>),
}

/// What the core asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    /// Play these items to the caller (prompt files and speech synthesis are the driver's).
    Play {
        id: u64,
        items: Vec<ivr_flows::PlayItem>,
        language: ivr_flows::model::Lang,
        rate: f32,
    },
    StopPlayback,
    /// A step collects input: spoken answers with these settings, or keys only (`None`).
    Listen(Option<ivr_flows::io::SpeechListen>),
    StopListening,
    /// Record a voice message of at most `max_seconds`, after a beep if asked; report the end
    /// with [`CallCore::handle_recording_finished`].
    StartRecording {
        max_seconds: u32,
        beep: bool,
    },
    /// End the voice message being recorded; report it as above.
    StopRecording,
    /// Make and store the `seq`-th order of the call from the flow's slots; report with
    /// [`CallCore::handle_store`].
    Submit {
        seq: u32,
        slots: BTreeMap<String, String>,
    },
    /// Look an order up; report with [`CallCore::handle_store`].
    Lookup {
        order_id: String,
    },
    /// Place an agent leg; report with [`CallCore::handle_agent_dialing`] or
    /// [`CallCore::handle_transfer_failed`].
    Transfer {
        target: ivr_flows::model::TransferTarget,
        context: BTreeMap<String, String>,
        /// Place in a queue (0 normal, up to 9 first).
        priority: u8,
    },
    /// Leave the agent queue unserved (the caller chose another step while waiting).
    LeaveQueue,
    /// The caller waiting in a queue asked to be called back in their turn: keep their place
    /// without the call; report with [`CallCore::handle_callback_result`].
    QueueCallback,
    /// Play the ringback tone for this long while the agent's phone rings.
    Ringback(Duration),
    /// Play hold music while the caller waits in a queue (until the next `Play` or
    /// `StopPlayback`).
    HoldMusic,
    /// Hang the agent leg up (if any) and keep its figures.
    CloseAgentLeg,
    /// A key the caller pressed while bridged: for the agent's system.
    DigitToAgent(char),
    /// A re-INVITE's offer (or none: send ours) to answer or refuse.
    Renegotiate(Option<Vec<u8>>),
    /// Hang the caller up.
    Hangup,
}

/// Results of the store work a [`CallCommand::Submit`] or [`CallCommand::Lookup`] asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreResult {
    /// A new order was stored: it counts as one of the call's orders.
    Created {
        order_id: String,
    },
    /// The order had been stored before (a redelivery): the flow hears its number again.
    Replayed {
        order_id: String,
    },
    SubmitFailed {
        reason: String,
    },
    LookupResult {
        status: String,
    },
    LookupFailed {
        reason: String,
    },
}

/// What the call leaves behind, for the call record and the callback order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ending: Ending,
    /// `flow/step` the caller was in at the end.
    pub last_step: Option<String>,
    /// What the flow had collected.
    pub collected: BTreeMap<String, String>,
    pub orders: Vec<String>,
    /// Submits started (some may still be in flight).
    pub submits: u32,
    /// The caller left before the flow ended and nothing was filed: a callback order is due
    /// (unless they reached an agent, which the driver knows).
    pub abandoned: bool,
}

/// The settings the core's decisions depend on.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub ack_wait: Duration,
    pub transfer_timeout: Duration,
    pub dtmf_merge_window: Duration,
    /// The call is recorded (`calls.record_calls`): unless its flow says
    /// `recording_notice: false`, the caller hears so before the flow's first prompt.
    pub recording_notice: bool,
}

/// The [`CallCommand::Play`] id of the recording notice (flows number their prompts from 1).
pub const RECORDING_NOTICE_ID: u64 = u64::MAX - 1;
/// The flow starts at the latest this long after the notice began, played out or not.
const RECORDING_NOTICE_MAX: Duration = Duration::from_secs(8);

/// Where the recording notice is (see [`CoreSettings::recording_notice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    None,
    Due,
    Playing { until: Instant },
}

/// One call's decisions (see the module doc).
pub struct CallCore {
    state: State,
    notice: Notice,
    ivr: Option<Session>,
    started: Instant,
    settings: CoreSettings,
    /// The flow's start, held in [`State::Answering`].
    held_start: Option<Event>,
    timers: HashMap<u64, Instant>,
    merger: DtmfMerger,
    /// A voice message is being recorded until this instant.
    recording_until: Option<Instant>,
    pending: VecDeque<Event>,
    commands: VecDeque<CallCommand>,
    ending: Option<Ending>,
    sip_gone: bool,
    flow_ended: bool,
    orders: Vec<String>,
    submits: u32,
}

impl std::fmt::Debug for CallCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCore")
            .field("state", &self.state)
            .field("ending", &self.ending)
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl CallCore {
    /// A call answered at `now`. `start` is the flow's [`Event::CallStarted`]; without a flow
    /// (`ivr` is `None`: the entry flow is missing) the call is hung up at once.
    pub fn new(now: Instant, ivr: Option<Session>, start: Event, settings: CoreSettings) -> Self {
        let notice =
            if settings.recording_notice && ivr.as_ref().is_some_and(Session::recording_notice) {
                Notice::Due
            } else {
                Notice::None
            };
        let mut core = CallCore {
            state: State::Answering {
                start_at: now + settings.ack_wait,
            },
            notice,
            merger: DtmfMerger::new(settings.dtmf_merge_window),
            held_start: None,
            settings,
            started: now,
            timers: HashMap::new(),
            recording_until: None,
            pending: VecDeque::new(),
            commands: VecDeque::new(),
            ending: None,
            sip_gone: false,
            flow_ended: false,
            orders: Vec::new(),
            submits: 0,
            ivr,
        };
        if core.ivr.is_some() {
            // The flow (and its greeting) starts on the caller's ACK: a phone that is slow to
            // open its audio path after our 200 would otherwise miss the greeting's first words.
            core.held_start = Some(start);
        } else {
            core.state = State::InFlow;
            core.end(Ending::Failed);
        }
        core
    }

    /// The call's phase.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Why the call ends, once it does.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// SIP reported the caller's dialog over: the driver stops and calls [`CallCore::outcome`].
    pub fn sip_gone(&self) -> bool {
        self.sip_gone
    }

    /// The orders the call produced so far.
    pub fn orders(&self) -> &[String] {
        &self.orders
    }

    /// The interpreter's language (for lookups' status labels and orders), Chinese without one.
    pub fn language(&self) -> ivr_flows::model::Lang {
        self.ivr
            .as_ref()
            .map_or(ivr_flows::model::Lang::Zh, |s| s.language())
    }

    /// Whether the call has a flow at all.
    pub fn has_flow(&self) -> bool {
        self.ivr.is_some()
    }

    /// `flow/step` the caller is in.
    pub fn position(&self) -> Option<String> {
        self.ivr
            .as_ref()
            .and_then(|s| s.position().map(|(f, st)| format!("{f}/{st}")))
    }

    /// The next thing to do: the next command to carry out, driving the interpreter with the
    /// next pending event when no command is left (see the module doc), and once there is none,
    /// [`Output::Timeout`] with the next deadline. Drain it after every input until it says
    /// `Timeout`.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if self.commands.is_empty() {
            self.drive(now);
        }
        match self.commands.pop_front() {
            Some(cmd) => Output::Command(cmd),
            None => Output::Timeout(self.next_deadline()),
        }
    }

    /// The earliest instant [`CallCore::handle_timeout`] has work to do.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.timers.values().copied().min();
        let mut take = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        if let State::Answering { start_at } = self.state {
            take(start_at);
        }
        if let Some(at) = self.recording_until {
            take(at);
        }
        if let Notice::Playing { until } = self.notice {
            take(until);
        }
        if let State::Transferring { deadline, .. } = self.state {
            take(deadline);
        }
        next
    }

    /// The time has come for whatever the last [`Output::Timeout`] named.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.notice, Notice::Playing { until } if until <= now) {
            tracing::debug!("recording notice not finished in time: the flow starts");
            self.notice_done(now);
        }
        if matches!(self.state, State::Answering { start_at } if start_at <= now) {
            tracing::debug!("no ACK yet: the flow starts anyway");
            self.start_flow(now);
        }
        if let State::Transferring {
            started, deadline, ..
        } = self.state
            && deadline <= now
        {
            let reason = format!(
                "no answer from the agent within {} s",
                deadline.duration_since(started).as_secs()
            );
            self.handle_transfer_failed(now, reason);
        }
        let mut due: Vec<u64> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            self.timers.remove(&id);
            self.pending.push_back(Event::TimerFired { id });
        }
        if self.recording_until.is_some_and(|at| at <= now) {
            self.stop_recording();
        }
    }

    /// A SIP event of the caller's dialog.
    pub fn handle_sip(&mut self, now: Instant, ev: CallEvent) {
        match ev {
            CallEvent::CallAcked { .. } => {
                tracing::debug!("ACK: call confirmed");
                self.start_flow(now);
            }
            CallEvent::Info { dtmf, .. } => {
                if let Some(d) = dtmf {
                    self.handle_digit(now, d.digit, DigitSource::SipInfo);
                }
            }
            CallEvent::ReInvite { sdp, .. } => {
                self.commands.push_back(CallCommand::Renegotiate(sdp));
            }
            CallEvent::Bye { .. } | CallEvent::Cancelled { .. } => {
                tracing::info!("caller hung up");
                if self.ending.is_none() {
                    self.ending = Some(Ending::CallerHangup);
                }
                self.pending.push_back(Event::HangUp);
            }
            CallEvent::CallTerminated { reason, .. } => {
                if self.ending.is_none() {
                    self.ending = Some(match reason {
                        TerminationReason::RemoteBye | TerminationReason::Cancelled => {
                            Ending::CallerHangup
                        }
                        TerminationReason::NoAck | TerminationReason::ByeTimeout => Ending::Failed,
                        _ => Ending::FlowHangup,
                    });
                    self.pending.push_back(Event::HangUp);
                }
                self.sip_gone = true;
            }
            CallEvent::IncomingCall { .. }
            | CallEvent::AgentRegistered { .. }
            | CallEvent::AgentUnregistered { .. }
            | CallEvent::OutgoingProgress { .. }
            | CallEvent::OutgoingAnswered { .. }
            | CallEvent::OutgoingFailed { .. } => {}
        }
    }

    /// A key from any of the three paths (RFC 4733, in-band, SIP INFO); `now` is when it was
    /// heard. The merger keeps a key sent two ways from counting twice.
    pub fn handle_digit(&mut self, now: Instant, digit: char, source: DigitSource) {
        let Some(d) = self.merger.push(digit, now, source) else {
            return;
        };
        tracing::debug!(digit = %d, ?source, "key press");
        if self.state == State::Bridged {
            // Keys pressed while talking to an agent are for the agent's system.
            self.commands.push_back(CallCommand::DigitToAgent(d));
            return;
        }
        if self.recording_until.is_some() {
            // Any key ends a voice message ("press any key when you are done").
            self.stop_recording();
            return;
        }
        self.pending.push_back(Event::Digit(d));
    }

    /// A `Play` finished playing out.
    pub fn handle_prompt_finished(&mut self, now: Instant, id: u64) {
        if id == RECORDING_NOTICE_ID {
            self.notice_done(now);
            return;
        }
        self.pending.push_back(Event::PromptFinished { id });
    }

    /// What the speech listener heard (speech started, a result, no match): for the flow.
    pub fn handle_heard(&mut self, _now: Instant, ev: Event) {
        self.pending.push_back(ev);
    }

    /// No media from the caller for too long.
    pub fn handle_media_timeout(&mut self, _now: Instant) {
        tracing::info!("no media from the caller: hanging up");
        self.end(Ending::MediaTimeout);
    }

    /// The caller's media driver is gone.
    pub fn handle_media_failed(&mut self, _now: Instant) {
        self.end(Ending::Failed);
    }

    /// The gateway is stopping.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        self.end(Ending::Shutdown);
    }

    /// A voice message ended (a key, its length, the recorder's end, or it never started).
    pub fn handle_recording_finished(&mut self, _now: Instant, uri: String, duration_ms: u64) {
        self.recording_until = None;
        self.pending.push_back(Event::RecordingFinished {
            uri,
            duration_ms,
            transcript: None,
        });
    }

    /// The store answered a submit or a lookup.
    pub fn handle_store(&mut self, _now: Instant, result: StoreResult) {
        let ev = match result {
            StoreResult::Created { order_id } => {
                self.orders.push(order_id.clone());
                Event::SubmitResult { order_id }
            }
            StoreResult::Replayed { order_id } => Event::SubmitResult { order_id },
            StoreResult::SubmitFailed { reason } => Event::SubmitFailed { reason },
            StoreResult::LookupResult { status } => Event::LookupResult { status },
            StoreResult::LookupFailed { reason } => Event::LookupFailed { reason },
        };
        self.pending.push_back(ev);
    }

    /// The agent leg of a [`CallCommand::Transfer`] is placed: it rings until the timeout.
    pub fn handle_agent_dialing(&mut self, now: Instant) {
        self.state = State::Transferring {
            ringing: false,
            started: now,
            deadline: now + self.settings.transfer_timeout,
        };
    }

    /// The agent's phone rings (180/183): the caller hears ringback for the time left.
    pub fn handle_agent_ringing(&mut self, now: Instant) {
        if let State::Transferring {
            ringing: ringing @ false,
            deadline,
            ..
        } = &mut self.state
        {
            *ringing = true;
            let left = deadline.saturating_duration_since(now);
            self.commands.push_back(CallCommand::Ringback(left));
        }
    }

    /// The caller joined an agent queue (after a [`CallCommand::Transfer`] to one): they hear
    /// hold music while the queue rings its agents.
    pub fn handle_queued(&mut self, now: Instant) {
        if matches!(self.state, State::InFlow | State::Answering { .. }) {
            tracing::info!("waiting in the agent queue");
            self.state = State::Queued { since: now };
            self.commands.push_back(CallCommand::HoldMusic);
        }
    }

    /// The queue took the callback (the caller's place is kept without the call; the flow
    /// confirms and hangs up), or refused it (the caller keeps waiting on the line).
    pub fn handle_callback_result(&mut self, _now: Instant, result: Result<(), String>) {
        match result {
            Ok(()) if matches!(self.state, State::Queued { .. }) => {
                tracing::info!("queue callback: the place is kept, the caller may hang up");
                self.state = State::InFlow;
                self.commands.push_back(CallCommand::CloseAgentLeg);
                self.commands.push_back(CallCommand::StopPlayback);
                self.pending.push_back(Event::CallbackQueued);
            }
            Ok(()) => {}
            Err(reason) => {
                tracing::info!(%reason, "queue callback refused: still waiting");
                self.pending.push_back(Event::CallbackRefused { reason });
            }
        }
    }

    /// Whether the caller waits in an agent queue.
    pub fn in_queue(&self) -> bool {
        matches!(self.state, State::Queued { .. })
    }

    /// The agent answered and their media runs: bridged.
    pub fn handle_agent_answered(&mut self, _now: Instant) {
        if matches!(
            self.state,
            State::Transferring { .. } | State::Queued { .. }
        ) {
            self.state = State::Bridged;
            self.commands.push_back(CallCommand::StopPlayback);
        }
    }

    /// The transfer did not connect: hang the leg up, stop the ringback, tell the flow.
    pub fn handle_transfer_failed(&mut self, now: Instant, reason: String) {
        match self.state {
            State::Transferring { ringing, .. } => {
                tracing::info!(%reason, "transfer failed");
                metrics::counter!("gateway_transfers_total", "outcome" => "failed").increment(1);
                self.state = State::InFlow;
                self.commands.push_back(CallCommand::CloseAgentLeg);
                if ringing {
                    self.commands.push_back(CallCommand::StopPlayback);
                }
                self.pending.push_back(Event::TransferFailed { reason });
            }
            State::Queued { since } => {
                tracing::info!(%reason, waited_s = now.saturating_duration_since(since).as_secs(), "left the agent queue unserved");
                metrics::counter!("gateway_transfers_total", "outcome" => "failed").increment(1);
                self.state = State::InFlow;
                self.commands.push_back(CallCommand::CloseAgentLeg);
                self.commands.push_back(CallCommand::StopPlayback);
                self.pending.push_back(Event::TransferFailed { reason });
            }
            // Not placed at all (no agent configured, no port, no address).
            State::InFlow | State::Answering { .. } => {
                self.pending.push_back(Event::TransferFailed { reason });
            }
            State::Bridged => {}
        }
    }

    /// The bridged agent hung up (or their media stopped).
    pub fn handle_agent_hangup(&mut self, _now: Instant) {
        self.end(Ending::AgentHangup);
    }

    /// What the call leaves behind. Call once [`CallCore::sip_gone`] and its last commands
    /// have been carried out.
    pub fn outcome(&self) -> Outcome {
        let ending = self.ending.unwrap_or(Ending::CallerHangup);
        let collected = self
            .ivr
            .as_ref()
            .map(|s| {
                s.vars()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Outcome {
            ending,
            last_step: self.position(),
            collected,
            orders: self.orders.clone(),
            submits: self.submits,
            abandoned: matches!(ending, Ending::CallerHangup | Ending::MediaTimeout)
                && !self.flow_ended
                && self.orders.is_empty()
                && self.submits == 0,
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Start the flow: on the ACK, or after [`CoreSettings::ack_wait`] without one.
    fn start_flow(&mut self, now: Instant) {
        if let State::Answering { .. } = self.state {
            self.state = State::InFlow;
        }
        if self.notice == Notice::Due {
            // The flow waits for the notice: two prompts at once would cut the first.
            self.notice = Notice::Playing {
                until: now + RECORDING_NOTICE_MAX,
            };
            let language = self
                .ivr
                .as_ref()
                .map_or(ivr_flows::model::Lang::Zh, Session::language);
            let text = match language {
                ivr_flows::model::Lang::Zh => "您的通话将被录音。",
                ivr_flows::model::Lang::En => "This call is recorded.",
            };
            tracing::debug!("recording notice");
            self.commands.push_back(CallCommand::Play {
                id: RECORDING_NOTICE_ID,
                items: vec![ivr_flows::PlayItem::Tts { text: text.into() }],
                language,
                rate: 1.0,
            });
            return;
        }
        if matches!(self.notice, Notice::Playing { .. }) {
            return;
        }
        if let Some(started) = self.held_start.take() {
            self.pending.push_front(started);
        }
    }

    /// The recording notice played out (or took too long): the flow starts.
    fn notice_done(&mut self, now: Instant) {
        if matches!(self.notice, Notice::Playing { .. }) {
            self.notice = Notice::None;
            self.start_flow(now);
        }
    }

    fn stop_recording(&mut self) {
        if self.recording_until.take().is_some() {
            self.commands.push_back(CallCommand::StopRecording);
        }
    }

    /// Hang up from our side (or note that the caller already did).
    fn end(&mut self, why: Ending) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(why);
        self.stop_recording();
        if !self.sip_gone {
            self.commands.push_back(CallCommand::Hangup);
        }
        self.pending.push_back(Event::HangUp);
    }

    /// Feed the next pending event to the interpreter, while no command waits.
    fn drive(&mut self, now: Instant) {
        while self.commands.is_empty() {
            let Some(ev) = self.pending.pop_front() else {
                return;
            };
            if self.ending.is_some() && !matches!(ev, Event::HangUp) {
                continue;
            }
            let now_ms = self.now_ms(now);
            let Some(ivr) = self.ivr.as_mut() else { return };
            if ivr.is_ended() {
                return;
            }
            let actions = ivr.handle(now_ms, ev);
            for a in actions {
                self.act(now, a);
            }
        }
    }

    fn act(&mut self, now: Instant, action: Action) {
        match action {
            Action::Play {
                id,
                items,
                language,
                rate,
                ..
            } => self.commands.push_back(CallCommand::Play {
                id,
                items,
                language,
                rate,
            }),
            Action::StopPlayback => self.commands.push_back(CallCommand::StopPlayback),
            // Digits always reach the interpreter, which knows what it is collecting; speech
            // is heard only while a step asks for it.
            Action::Listen { speech, .. } => self.commands.push_back(CallCommand::Listen(speech)),
            Action::StopListening => self.commands.push_back(CallCommand::StopListening),
            Action::StartTimer { id, after_ms } => {
                self.timers
                    .insert(id, now + Duration::from_millis(u64::from(after_ms)));
            }
            Action::CancelTimer { id } => {
                self.timers.remove(&id);
            }
            Action::Transfer {
                target,
                context,
                priority,
            } => {
                if matches!(
                    self.state,
                    State::Transferring { .. } | State::Queued { .. } | State::Bridged
                ) {
                    self.pending.push_back(Event::TransferFailed {
                        reason: "a transfer is already under way".into(),
                    });
                } else {
                    self.commands.push_back(CallCommand::Transfer {
                        target,
                        context,
                        priority,
                    });
                }
            }
            Action::CancelTransfer => {
                if matches!(
                    self.state,
                    State::Transferring { .. } | State::Queued { .. }
                ) {
                    tracing::info!("the caller left the transfer for another step");
                    if matches!(self.state, State::Queued { .. }) {
                        self.commands.push_back(CallCommand::LeaveQueue);
                    }
                    self.state = State::InFlow;
                    self.commands.push_back(CallCommand::CloseAgentLeg);
                    self.commands.push_back(CallCommand::StopPlayback);
                }
            }
            Action::QueueCallback => {
                if matches!(self.state, State::Queued { .. }) {
                    self.commands.push_back(CallCommand::QueueCallback);
                } else {
                    self.pending.push_back(Event::CallbackRefused {
                        reason: "not waiting in a queue".into(),
                    });
                }
            }
            Action::Record { max_seconds, beep } => {
                let max = Duration::from_secs(u64::from(max_seconds.max(1)));
                self.recording_until = Some(now + max);
                self.commands
                    .push_back(CallCommand::StartRecording { max_seconds, beep });
            }
            Action::SubmitOrder { slots } => {
                self.submits += 1;
                self.commands.push_back(CallCommand::Submit {
                    seq: self.submits,
                    slots,
                });
            }
            Action::LookupOrder { order_id } => {
                self.commands.push_back(CallCommand::Lookup { order_id })
            }
            Action::HangUp { reason } => {
                tracing::info!(%reason, "flow hung up");
                self.flow_ended = true;
                self.end(Ending::FlowHangup);
            }
            Action::Trace(t) => tracing::debug!(trace = %t, "ivr"),
        }
        if self.ivr.as_ref().is_some_and(Session::is_ended) && self.ending.is_none() {
            // A flow that returned from its entry flow has nothing more to say.
            self.flow_ended = true;
            self.end(Ending::FlowHangup);
        }
    }
}
