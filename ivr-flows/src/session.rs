//! The sans-IO interpreter: one `Session` per call, fed `Event`s, answering `Action`s.
//!
//! Rules that fix common IVR complaints:
//! * barge-in is honoured separately for speech and keys; keys pressed during a prompt that
//!   allows DTMF barge-in are kept as type-ahead for the next input step;
//! * the no-input timer starts only after the prompt ends, and is cancelled while the caller
//!   is speaking (`SpeechStarted`), so it never fires mid-utterance;
//! * every timer and prompt has a fresh id, so late `TimerFired`/`PromptFinished` are ignored;
//! * the session holds the `Arc<FlowSet>` it started with; reloads never touch it.

use crate::calendar::LocalTime;
use crate::expr::{self, Env, Name, Value};
use crate::flowset::{FlowSet, InputError};
use crate::io::{Action, DtmfListen, Event, SpeechListen};
use crate::model::*;
use crate::render::render;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Steps run without waiting for the caller before the engine assumes a runaway loop.
const MAX_STEPS_WITHOUT_INPUT: u32 = 1000;

#[derive(Debug, Clone)]
struct Frame {
    flow: String,
    step: String,
    return_to: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct InputState {
    playing: Option<u64>,
    timer: Option<u64>,
    digits: String,
    barge: Option<BargeIn>,
    confirming: bool,
    retry: bool,
}

#[derive(Debug, Clone)]
enum Wait {
    NotStarted,
    Prompt {
        play: u64,
    },
    Input(InputState),
    /// Saying what comes before `after`, which no input interrupts.
    Then {
        play: u64,
        after: After,
    },
    /// Waiting on a transfer; `callback_asked` while a `QueueCallback` awaits its answer.
    Transfer {
        callback_asked: bool,
    },
    Record,
    Submit,
    Lookup,
    Ended,
}

/// What a transfer, record or hang-up step does once its `say` has played.
#[derive(Debug, Clone)]
enum After {
    Transfer,
    Record,
    Hangup(String),
}

/// One call running through the flows.
#[derive(Debug)]
pub struct Session {
    set: Arc<FlowSet>,
    frames: Vec<Frame>,
    /// The flow the session was made for (whose `inputs:` [`Session::set_inputs`] checks).
    entry: String,
    vars: BTreeMap<String, Value>,
    language: Lang,
    rate: f32,
    caller: String,
    called: String,
    time: Option<LocalTime>,
    seq: u64,
    wait: Wait,
    typeahead: String,
    speaking: bool,
    no_input: u32,
    no_match: u32,
    started_ms: u64,
    last_ms: u64,
}

struct View<'a>(&'a Session);

impl Env for View<'_> {
    fn lookup(&self, name: &Name) -> Option<Value> {
        let s = self.0;
        let cal = s.set.calendar();
        Some(match name {
            Name::Caller => Value::Str(s.caller.clone()),
            Name::Called => Value::Str(s.called.clone()),
            Name::Var(v) => return s.vars.get(v).cloned(),
            Name::Hour => Value::Num(f64::from(s.time?.hour)),
            Name::Minute => Value::Num(f64::from(s.time?.minute)),
            Name::Weekday => Value::Num(f64::from(s.time?.date.weekday())),
            Name::WorkingDay => Value::Bool(cal.is_working_day(s.time?.date)),
            Name::Holiday => Value::Bool(cal.is_holiday(s.time?.date)),
            Name::Language => Value::Str(s.language.code().into()),
        })
    }
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Session {
    /// A session that will run `flow` of `set` once `CallStarted` arrives.
    /// Returns `None` if the set has no such flow.
    ///
    /// This gives the flow no inputs: a flow that lists `inputs:` (e.g. the survey of an
    /// outbound call) gets them with [`Session::set_inputs`] (or [`Session::with_inputs`]);
    /// started without them, its inputs read as empty text, like any variable not set yet, and
    /// a trace says so.
    pub fn new(set: Arc<FlowSet>, flow: &str) -> Option<Session> {
        let f = set.flow(flow)?;
        let (language, rate) = (f.settings.language, f.settings.rate);
        let frame = Frame {
            flow: f.name.clone(),
            step: f.start.step.clone(),
            return_to: None,
        };
        let entry = f.name.clone();
        Some(Session {
            set,
            frames: vec![frame],
            entry,
            vars: BTreeMap::new(),
            language,
            rate,
            caller: String::new(),
            called: String::new(),
            time: None,
            seq: 0,
            wait: Wait::NotStarted,
            typeahead: String::new(),
            speaking: false,
            no_input: 0,
            no_match: 0,
            started_ms: 0,
            last_ms: 0,
        })
    }

    /// A session that will run `flow` of `set` with `inputs` (an outbound call's `vars`) once
    /// `CallStarted` arrives: [`Session::new`] and [`Session::set_inputs`] in one, so no call
    /// can start before its inputs are in place. Refused as `set_inputs` refuses them, or with
    /// [`InputError::UnknownFlow`] if the set has no such flow.
    pub fn with_inputs(
        set: Arc<FlowSet>,
        flow: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<Session, InputError> {
        let mut s =
            Session::new(set, flow).ok_or_else(|| InputError::UnknownFlow(flow.to_string()))?;
        s.set_inputs(inputs)?;
        Ok(s)
    }

    /// Gives the flow this session was made for its inputs (an outbound call's `vars`): each is
    /// `vars.NAME` (text). Call it before `CallStarted`, which runs the first step.
    ///
    /// Refused, changing nothing, exactly as [`FlowSet::check_inputs`] refuses them (which an
    /// API can call before dialling): a name the flow does not list in `inputs:`, a listed
    /// input not given, or a value longer than [`crate::flowset::MAX_INPUT_CHARS`] characters
    /// or with control characters. A flow without `inputs:` takes only an empty map.
    pub fn set_inputs(&mut self, inputs: &BTreeMap<String, String>) -> Result<(), InputError> {
        self.set.check_inputs(&self.entry, inputs)?;
        self.vars.extend(
            inputs
                .iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone()))),
        );
        Ok(())
    }

    /// The flow set this session runs on (the one it started with).
    pub fn flow_set(&self) -> &Arc<FlowSet> {
        &self.set
    }

    /// True once the call has ended (hang-up, transfer done, or flow end).
    pub fn is_ended(&self) -> bool {
        matches!(self.wait, Wait::Ended)
    }

    /// Current `(flow, step)`.
    pub fn position(&self) -> Option<(&str, &str)> {
        self.frames
            .last()
            .map(|f| (f.flow.as_str(), f.step.as_str()))
    }

    /// Session variables.
    pub fn vars(&self) -> &BTreeMap<String, Value> {
        &self.vars
    }

    /// Current language.
    pub fn language(&self) -> Lang {
        self.language
    }

    /// Whether the flow the call is in wants the recording notice (see
    /// [`crate::model::Settings::recording_notice`]).
    pub fn recording_notice(&self) -> bool {
        self.flow().is_none_or(|f| f.settings.recording_notice)
    }

    /// Milliseconds since `CallStarted`, as last reported through `handle`.
    pub fn elapsed_ms(&self) -> u64 {
        self.last_ms.saturating_sub(self.started_ms)
    }

    /// Traces the inputs of the flow now running that no one has set (a flow with `inputs:`
    /// started by [`Session::new`], or reached by `call:` before the caller flow set them).
    fn trace_missing_inputs(&self, out: &mut Vec<Action>) {
        let Some(f) = self.flow() else { return };
        let missing: Vec<&str> = f
            .inputs
            .iter()
            .filter(|n| !self.vars.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            out.push(Action::Trace(format!(
                "flow {} runs without its inputs {} (they read as empty text)",
                f.name,
                missing.join(", ")
            )));
        }
    }

    fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn flow(&self) -> Option<&Flow> {
        self.frames.last().and_then(|f| self.set.flow(&f.flow))
    }

    fn step(&self) -> Option<&Step> {
        let f = self.frames.last()?;
        self.set.flow(&f.flow)?.step(&f.step)
    }

    /// Feeds one event; `now_ms` is a monotonic timestamp used only for traces and elapsed time.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.last_ms = now_ms;
        if matches!(self.wait, Wait::Ended) {
            return out;
        }
        match event {
            Event::CallStarted {
                caller,
                called,
                local_time,
            } => {
                if matches!(self.wait, Wait::NotStarted) {
                    self.caller = caller;
                    self.called = called;
                    self.time = Some(local_time);
                    self.started_ms = now_ms;
                    self.trace_missing_inputs(&mut out);
                    self.run(&mut out);
                }
            }
            Event::HangUp => {
                self.cancel_timer(&mut out);
                out.push(Action::Trace("caller hung up".into()));
                self.wait = Wait::Ended;
            }
            Event::PromptFinished { id } => self.on_prompt_finished(id, &mut out),
            Event::TimerFired { id } => self.on_timer(id, &mut out),
            Event::SpeechStarted => self.on_speech_started(&mut out),
            Event::Digit(d) => self.on_digit(d, &mut out),
            Event::SpeechResult {
                text,
                confidence,
                alternatives,
            } => {
                self.speaking = false;
                self.on_speech(&text, confidence, &alternatives, &mut out);
            }
            Event::SpeechNoMatch => {
                self.speaking = false;
                if self.accepting_speech() {
                    self.fail(false, &mut out);
                }
            }
            Event::SubmitResult { order_id } => {
                self.on_result(matches!(self.wait, Wait::Submit), Some(order_id), &mut out)
            }
            Event::SubmitFailed { reason } => {
                let ok = matches!(self.wait, Wait::Submit);
                self.on_failure(ok, &format!("submit failed: {reason}"), &mut out);
            }
            Event::LookupResult { status } => {
                self.on_result(matches!(self.wait, Wait::Lookup), Some(status), &mut out)
            }
            Event::LookupFailed { reason } => {
                let ok = matches!(self.wait, Wait::Lookup);
                self.on_failure(ok, &format!("lookup failed: {reason}"), &mut out);
            }
            Event::RecordingFinished {
                uri,
                duration_ms,
                transcript,
            } => {
                if matches!(self.wait, Wait::Record) {
                    if let Some(StepKind::Record { into, .. }) = self.step().map(|s| s.kind.clone())
                    {
                        self.vars.insert(
                            format!("{into}_text"),
                            Value::Str(transcript.unwrap_or_default()),
                        );
                        self.vars
                            .insert(format!("{into}_ms"), Value::Num(duration_ms as f64));
                    }
                    self.on_result(true, Some(uri), &mut out);
                }
            }
            Event::TransferFailed { reason } => {
                let ok = matches!(self.wait, Wait::Transfer { .. });
                self.on_failure(ok, &format!("transfer failed: {reason}"), &mut out);
            }
            Event::CallbackQueued => self.on_callback_queued(&mut out),
            Event::CallbackRefused { reason } => {
                if let Wait::Transfer { callback_asked } = &mut self.wait
                    && *callback_asked
                {
                    *callback_asked = false;
                    out.push(Action::Trace(format!(
                        "callback refused: {reason}; still waiting in the queue"
                    )));
                } else {
                    out.push(Action::Trace(format!(
                        "unexpected CallbackRefused ({reason}) ignored"
                    )));
                }
            }
        }
        out
    }

    // ---- step execution -------------------------------------------------------------------

    fn goto(&mut self, step: &str, out: &mut Vec<Action>) {
        if let Some(f) = self.frames.last_mut() {
            f.step = step.to_string();
        }
        self.no_input = 0;
        self.no_match = 0;
        self.run(out);
    }

    fn end(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        out.push(Action::HangUp {
            reason: reason.to_string(),
        });
        self.wait = Wait::Ended;
    }

    /// Plays what a transfer, record or hang-up step says first (no input interrupts it), then
    /// does `after`; without a `say`, does it at once.
    fn say_then(&mut self, say: Option<&Message>, after: After, out: &mut Vec<Action>) {
        match say {
            Some(msg) => {
                let barge = BargeIn {
                    speech: false,
                    dtmf: false,
                };
                let play = self.play(msg, barge, out);
                self.wait = Wait::Then { play, after };
            }
            None => self.run_after(after, out),
        }
    }

    fn run_after(&mut self, after: After, out: &mut Vec<Action>) {
        match after {
            After::Transfer => self.transfer(out),
            After::Record => self.record(out),
            After::Hangup(reason) => self.end(&reason, out),
        }
    }

    fn play(&mut self, msg: &Message, barge: BargeIn, out: &mut Vec<Action>) -> u64 {
        let id = self.next_id();
        let items = render(msg, self.language, &View(self));
        out.push(Action::Play {
            id,
            items,
            barge_in_speech: barge.speech,
            barge_in_dtmf: barge.dtmf,
            language: self.language,
            rate: self.rate,
        });
        id
    }

    fn play_all(&mut self, msgs: &[&Message], barge: BargeIn, out: &mut Vec<Action>) -> u64 {
        let merged = Message {
            parts: msgs.iter().flat_map(|m| m.parts.clone()).collect(),
            pos: crate::diagnostic::Pos::default(),
        };
        self.play(&merged, barge, out)
    }

    /// Runs steps until one waits for something.
    fn run(&mut self, out: &mut Vec<Action>) {
        for _ in 0..MAX_STEPS_WITHOUT_INPUT {
            let Some(step) = self.step().cloned() else {
                self.end("flow_error", out);
                return;
            };
            out.push(Action::Trace(format!("enter {}", step.name)));
            let settings = self.flow().map(|f| f.settings.clone()).unwrap_or_default();
            let nxt = |t: &Option<Target>| t.as_ref().map(|t| t.step.clone());
            let jump: Option<String>;
            match &step.kind {
                StepKind::Prompt { say, barge_in, .. } => {
                    let barge = barge_in.unwrap_or(settings.barge_in);
                    let play = self.play(say, barge, out);
                    self.listen_for_globals(barge, out);
                    self.wait = Wait::Prompt { play };
                    return;
                }
                StepKind::Menu { .. } | StepKind::Collect { .. } => {
                    self.enter_input(false, out);
                    return;
                }
                StepKind::Set {
                    vars,
                    language,
                    rate,
                    next,
                } => {
                    for (name, e, _) in vars {
                        let v = expr::eval(e, &View(self));
                        self.vars.insert(name.clone(), v);
                    }
                    if let Some(l) = language {
                        self.language = *l;
                    }
                    if let Some(r) = rate {
                        self.rate = *r;
                    }
                    jump = nxt(next);
                }
                StepKind::Branch { cases, otherwise } => {
                    jump = cases
                        .iter()
                        .find(|c| expr::truthy(&expr::eval(&c.cond, &View(self))))
                        .map(|c| c.goto.step.clone())
                        .or_else(|| nxt(otherwise));
                }
                StepKind::Goto { to } => jump = nxt(to),
                StepKind::Transfer { say, .. } => {
                    return self.say_then(say.as_ref(), After::Transfer, out);
                }
                StepKind::Record { say, .. } => {
                    return self.say_then(say.as_ref(), After::Record, out);
                }
                StepKind::Submit { fields, .. } => {
                    let mut slots: BTreeMap<String, String> = fields
                        .iter()
                        .map(|(k, e)| (k.clone(), expr::eval(e, &View(self)).to_string()))
                        .collect();
                    slots
                        .entry("caller".into())
                        .or_insert_with(|| self.caller.clone());
                    slots
                        .entry("language".into())
                        .or_insert_with(|| self.language.code().into());
                    out.push(Action::SubmitOrder { slots });
                    self.wait = Wait::Submit;
                    return;
                }
                StepKind::Lookup { order, .. } => {
                    let order_id = expr::eval(order, &View(self)).to_string();
                    out.push(Action::LookupOrder { order_id });
                    self.wait = Wait::Lookup;
                    return;
                }
                StepKind::Call { flow, next, .. } => {
                    let Some(start) = self.set.flow(flow).map(|f| f.start.step.clone()) else {
                        self.end("flow_error", out);
                        return;
                    };
                    if let Some(top) = self.frames.last_mut() {
                        top.return_to = nxt(next);
                    }
                    self.frames.push(Frame {
                        flow: flow.clone(),
                        step: start,
                        return_to: None,
                    });
                    self.trace_missing_inputs(out);
                    continue;
                }
                StepKind::Return => {
                    self.frames.pop();
                    match self.frames.last().and_then(|f| f.return_to.clone()) {
                        Some(r) => jump = Some(r),
                        None => {
                            self.end("flow_end", out);
                            return;
                        }
                    }
                }
                StepKind::Hangup { say, reason } => {
                    return self.say_then(say.as_ref(), After::Hangup(reason.clone()), out);
                }
            }
            match jump {
                Some(j) => {
                    if let Some(f) = self.frames.last_mut() {
                        f.step = j;
                    }
                    self.no_input = 0;
                    self.no_match = 0;
                }
                None => {
                    self.end("flow_error", out);
                    return;
                }
            }
        }
        out.push(Action::Trace("loop limit reached".into()));
        self.end("loop_limit", out);
    }

    fn transfer(&mut self, out: &mut Vec<Action>) {
        if let Some(StepKind::Transfer {
            target,
            context,
            priority,
            ..
        }) = self.step().map(|s| s.kind.clone())
        {
            let mut ctx: BTreeMap<String, String> = match context {
                Some(names) => names
                    .iter()
                    .filter_map(|n| self.vars.get(n).map(|v| (n.clone(), v.to_string())))
                    .collect(),
                None => self
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            };
            ctx.insert("caller".into(), self.caller.clone());
            ctx.insert("language".into(), self.language.code().into());
            out.push(Action::Transfer {
                target,
                context: ctx,
                priority,
            });
        }
        self.wait = Wait::Transfer {
            callback_asked: false,
        };
    }

    /// The gateway queued the callback the caller asked for: say so, then hang up.
    fn on_callback_queued(&mut self, out: &mut Vec<Action>) {
        let msg = match (&self.wait, self.step().map(|s| &s.kind)) {
            (
                Wait::Transfer {
                    callback_asked: true,
                },
                Some(StepKind::Transfer {
                    callback: Some(cb), ..
                }),
            ) => cb.message(),
            _ => {
                out.push(Action::Trace("unexpected CallbackQueued ignored".into()));
                return;
            }
        };
        out.push(Action::Trace("callback queued".into()));
        self.say_then(Some(&msg), After::Hangup("callback_queued".into()), out);
    }

    fn record(&mut self, out: &mut Vec<Action>) {
        if let Some(StepKind::Record {
            max_seconds, beep, ..
        }) = self.step().map(|s| s.kind.clone())
        {
            out.push(Action::Record { max_seconds, beep });
        }
        self.wait = Wait::Record;
    }

    fn on_result(&mut self, expected: bool, value: Option<String>, out: &mut Vec<Action>) {
        if !expected {
            out.push(Action::Trace("unexpected result ignored".into()));
            return;
        }
        let Some(step) = self.step().cloned() else {
            return;
        };
        let (into, next) = match &step.kind {
            StepKind::Submit { into, next, .. }
            | StepKind::Lookup { into, next, .. }
            | StepKind::Record { into, next, .. } => (into.clone(), next.clone()),
            _ => return,
        };
        if let Some(v) = value {
            self.vars.insert(into, Value::Str(v));
        }
        match next {
            Some(n) => self.goto(&n.step, out),
            None => self.end("flow_error", out),
        }
    }

    fn on_failure(&mut self, expected: bool, why: &str, out: &mut Vec<Action>) {
        if !expected {
            return;
        }
        out.push(Action::Trace(why.to_string()));
        let on_fail = match self.step().map(|s| &s.kind) {
            Some(
                StepKind::Submit { on_fail, .. }
                | StepKind::Lookup { on_fail, .. }
                | StepKind::Transfer { on_fail, .. },
            ) => on_fail.clone(),
            _ => None,
        };
        match on_fail {
            Some(t) => self.goto(&t.step, out),
            None => self.end("failed", out),
        }
    }

    // ---- input steps ------------------------------------------------------------------------

    fn input_parts(&self) -> Option<(Input, Option<Message>)> {
        match &self.step()?.kind {
            StepKind::Menu { input, .. } => Some((input.clone(), None)),
            StepKind::Collect { input, confirm, .. } => Some((input.clone(), confirm.clone())),
            _ => None,
        }
    }

    fn globals_on(&self) -> bool {
        self.input_parts().is_none_or(|(i, _)| i.globals)
    }

    fn speech_listen(&self, extra: Vec<String>) -> SpeechListen {
        let mut hints = extra;
        if self.globals_on()
            && let Some(f) = self.flow()
        {
            hints.extend(f.globals.iter().flat_map(|g| g.words.iter().cloned()));
        }
        SpeechListen {
            language: self.language,
            hints,
            max_seconds: 15,
            end_silence_ms: 800,
        }
    }

    fn listen_for_globals(&mut self, barge: BargeIn, out: &mut Vec<Action>) {
        let has_words = self
            .flow()
            .is_some_and(|f| f.globals.iter().any(|g| !g.words.is_empty()));
        let dtmf = barge.dtmf.then_some(DtmfListen {
            max_digits: 1,
            terminator: None,
        });
        let speech = (barge.speech && has_words).then(|| self.speech_listen(Vec::new()));
        if dtmf.is_some() || speech.is_some() {
            out.push(Action::Listen { dtmf, speech });
        }
    }

    /// Plays the current input step's prompt (fresh, retry or confirmation) and listens.
    fn enter_input(&mut self, retry: bool, out: &mut Vec<Action>) {
        self.enter_input_with(retry, None, out);
    }

    fn enter_input_with(&mut self, retry: bool, failure: Option<Message>, out: &mut Vec<Action>) {
        let Some(step) = self.step().cloned() else {
            return;
        };
        let settings = self.flow().map(|f| f.settings.clone()).unwrap_or_default();
        let (input, menu_words, mode) = match &step.kind {
            StepKind::Menu { input, options } => (
                input.clone(),
                options
                    .iter()
                    .flat_map(|o| o.words.clone())
                    .collect::<Vec<_>>(),
                None,
            ),
            StepKind::Collect { input, mode, .. } => {
                (input.clone(), Vec::new(), Some(mode.clone()))
            }
            _ => return,
        };
        let barge = input.barge_in.unwrap_or(settings.barge_in);
        let mut msgs: Vec<&Message> = Vec::new();
        if let Some(f) = &failure {
            msgs.push(f);
        }
        msgs.push(if retry {
            input.reprompt.as_ref().unwrap_or(&input.say)
        } else {
            &input.say
        });
        let play = self.play_all(&msgs, barge, out);
        let (dtmf, speech) = match &mode {
            None => {
                let max = match &step.kind {
                    StepKind::Menu { options, .. } => options
                        .iter()
                        .filter_map(|o| o.digits.as_ref().map(|d| d.len() as u32))
                        .max()
                        .unwrap_or(1),
                    _ => 1,
                };
                (
                    Some(DtmfListen {
                        max_digits: max,
                        terminator: None,
                    }),
                    Some(self.speech_listen(menu_words)),
                )
            }
            Some(CollectMode::Digits(d)) => {
                let has_words = input.globals
                    && self
                        .flow()
                        .is_some_and(|f| f.globals.iter().any(|g| !g.words.is_empty()));
                (
                    Some(DtmfListen {
                        max_digits: d.max,
                        terminator: d.terminator,
                    }),
                    has_words.then(|| self.speech_listen(Vec::new())),
                )
            }
            Some(CollectMode::Speech(s)) => {
                let mut l = self.speech_listen(s.hints.clone());
                l.max_seconds = s.max_seconds;
                l.end_silence_ms = s.end_silence_ms;
                (
                    Some(DtmfListen {
                        max_digits: 1,
                        terminator: None,
                    }),
                    Some(l),
                )
            }
        };
        out.push(Action::Listen { dtmf, speech });
        self.cancel_timer(out);
        self.wait = Wait::Input(InputState {
            playing: Some(play),
            timer: None,
            digits: String::new(),
            barge: Some(barge),
            confirming: false,
            retry,
        });
        // Keys pressed during an earlier prompt are type-ahead for this step.
        let ahead = std::mem::take(&mut self.typeahead);
        for d in ahead.chars() {
            if !matches!(self.wait, Wait::Input(_)) {
                break;
            }
            self.input_digit(d, out);
        }
    }

    fn enter_confirm(&mut self, msg: &Message, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        let barge = BargeIn {
            speech: true,
            dtmf: true,
        };
        let play = self.play(msg, barge, out);
        out.push(Action::Listen {
            dtmf: Some(DtmfListen {
                max_digits: 1,
                terminator: None,
            }),
            speech: Some(self.speech_listen(vec![
                "确认".into(),
                "重说".into(),
                "yes".into(),
                "no".into(),
            ])),
        });
        self.wait = Wait::Input(InputState {
            playing: Some(play),
            timer: None,
            digits: String::new(),
            barge: Some(barge),
            confirming: true,
            retry: false,
        });
    }

    fn cancel_timer(&mut self, out: &mut Vec<Action>) {
        if let Wait::Input(st) = &mut self.wait
            && let Some(id) = st.timer.take()
        {
            out.push(Action::CancelTimer { id });
        }
    }

    fn start_timer(&mut self, ms: u32, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        let id = self.next_id();
        if let Wait::Input(st) = &mut self.wait {
            st.timer = Some(id);
            out.push(Action::StartTimer { id, after_ms: ms });
        }
    }

    fn timeouts(&self) -> Timeouts {
        let base = self
            .flow()
            .map(|f| f.settings.timeouts)
            .unwrap_or(Settings::default().timeouts);
        self.input_parts()
            .and_then(|(i, _)| i.timeouts)
            .unwrap_or(base)
    }

    fn on_prompt_finished(&mut self, id: u64, out: &mut Vec<Action>) {
        match &mut self.wait {
            Wait::Prompt { play } if *play == id => {
                let next = match self.step().map(|s| &s.kind) {
                    Some(StepKind::Prompt { next: Some(n), .. }) => n.step.clone(),
                    _ => return self.end("flow_error", out),
                };
                self.goto(&next, out);
            }
            Wait::Then { play, after } if *play == id => {
                let after = after.clone();
                self.run_after(after, out);
            }
            Wait::Input(st) if st.playing == Some(id) => {
                st.playing = None;
                let waiting_for_more = !st.digits.is_empty();
                let retry = st.retry;
                if !self.speaking && !waiting_for_more {
                    let t = self.timeouts();
                    self.start_timer(if retry { t.no_input_ms } else { t.initial_ms }, out);
                }
            }
            _ => out.push(Action::Trace(format!("stale PromptFinished {id} ignored"))),
        }
    }

    fn on_timer(&mut self, id: u64, out: &mut Vec<Action>) {
        let Wait::Input(st) = &mut self.wait else {
            out.push(Action::Trace(format!("stale timer {id} ignored")));
            return;
        };
        if st.timer != Some(id) {
            out.push(Action::Trace(format!("stale timer {id} ignored")));
            return;
        }
        st.timer = None;
        if st.digits.is_empty() {
            self.fail(true, out);
        } else {
            self.digits_complete(true, out);
        }
    }

    fn on_speech_started(&mut self, out: &mut Vec<Action>) {
        self.speaking = true;
        match &mut self.wait {
            Wait::Input(st) => {
                let barge = st.barge.is_some_and(|b| b.speech);
                if st.playing.is_some() && barge {
                    st.playing = None;
                    out.push(Action::StopPlayback);
                }
                // The caller is talking: never time them out mid-utterance.
                self.cancel_timer(out);
            }
            Wait::Prompt { .. } => {
                let Some(barge) = self.prompt_barge_in() else {
                    return;
                };
                let has_words = self
                    .flow()
                    .is_some_and(|f| f.globals.iter().any(|g| !g.words.is_empty()));
                if barge.speech && has_words {
                    out.push(Action::Trace(
                        "speech during prompt; waiting for a keyword".into(),
                    ));
                }
            }
            _ => {}
        }
    }

    fn accepting_speech(&self) -> bool {
        match &self.wait {
            Wait::Input(st) => st.playing.is_none() || st.barge.is_some_and(|b| b.speech),
            Wait::Prompt { .. } => true,
            _ => false,
        }
    }

    fn global_for(
        &self,
        digit: Option<char>,
        text: Option<&str>,
        whole: bool,
    ) -> Option<GlobalAction> {
        if !self.globals_on() {
            return None;
        }
        let flow = self.flow()?;
        flow.globals
            .iter()
            .find(|g| match (digit, text) {
                (Some(d), _) => g.digit == Some(d),
                (None, Some(t)) => g.words.iter().any(|w| {
                    let w = normalize(w);
                    !w.is_empty() && if whole { t == w } else { t.contains(&w) }
                }),
                _ => false,
            })
            .map(|g| g.action.clone())
    }

    fn run_global(&mut self, action: GlobalAction, out: &mut Vec<Action>) {
        let playing = match &self.wait {
            Wait::Input(st) => st.playing.is_some(),
            Wait::Prompt { .. } => true,
            _ => false,
        };
        if playing {
            out.push(Action::StopPlayback);
        }
        self.cancel_timer(out);
        match action {
            GlobalAction::Goto(t) => {
                out.push(Action::Trace(format!("global handler -> {}", t.step)));
                self.goto(&t.step, out);
            }
            GlobalAction::Repeat => {
                out.push(Action::Trace("global handler: repeat".into()));
                if matches!(self.wait, Wait::Input(_)) {
                    self.enter_input(false, out);
                } else {
                    self.run(out);
                }
            }
        }
    }

    /// The barge-in of the prompt step being played: its own, else its flow's setting.
    fn prompt_barge_in(&self) -> Option<BargeIn> {
        match self.step().map(|s| &s.kind) {
            Some(StepKind::Prompt { barge_in, .. }) => Some(
                barge_in.unwrap_or(
                    self.flow()
                        .map(|f| f.settings.barge_in)
                        .unwrap_or(Settings::default().barge_in),
                ),
            ),
            _ => None,
        }
    }

    fn on_digit(&mut self, d: char, out: &mut Vec<Action>) {
        match &self.wait {
            Wait::Prompt { .. } => {
                let Some(barge) = self.prompt_barge_in() else {
                    return;
                };
                if !barge.dtmf {
                    out.push(Action::Trace(format!(
                        "key {d} ignored: prompt does not allow DTMF barge-in"
                    )));
                    return;
                }
                if let Some(g) = self.global_for(Some(d), None, false) {
                    return self.run_global(g, out);
                }
                // Skip the rest of the prompt; the key is type-ahead for the next input step.
                out.push(Action::StopPlayback);
                self.typeahead.push(d);
                let next = match self.step().map(|s| &s.kind) {
                    Some(StepKind::Prompt { next: Some(n), .. }) => n.step.clone(),
                    _ => return self.end("flow_error", out),
                };
                self.goto(&next, out);
            }
            Wait::Input(st) => {
                if st.playing.is_some() {
                    if !st.barge.is_some_and(|b| b.dtmf) {
                        out.push(Action::Trace(format!(
                            "key {d} ignored: prompt does not allow DTMF barge-in"
                        )));
                        return;
                    }
                    out.push(Action::StopPlayback);
                    if let Wait::Input(st) = &mut self.wait {
                        st.playing = None;
                    }
                }
                self.input_digit(d, out);
            }
            Wait::Transfer { callback_asked } => {
                let asked = *callback_asked;
                let (to, callback_key) = match self.step().map(|s| &s.kind) {
                    Some(StepKind::Transfer {
                        while_waiting,
                        callback,
                        ..
                    }) => (
                        while_waiting
                            .iter()
                            .find(|(k, _)| *k == d)
                            .map(|(_, t)| t.step.clone()),
                        callback.as_ref().map(|c| c.key),
                    ),
                    _ => (None, None),
                };
                if callback_key == Some(d) {
                    if asked {
                        out.push(Action::Trace(format!(
                            "key {d} ignored: the callback is already asked for"
                        )));
                    } else {
                        out.push(Action::Trace(format!("key {d}: callback asked for")));
                        out.push(Action::QueueCallback);
                        self.wait = Wait::Transfer {
                            callback_asked: true,
                        };
                    }
                    return;
                }
                match to {
                    Some(step) => {
                        out.push(Action::Trace(format!(
                            "key {d}: out of the queue to {step}"
                        )));
                        out.push(Action::CancelTransfer);
                        self.goto(&step, out);
                    }
                    None => out.push(Action::Trace(format!("key {d} ignored while waiting"))),
                }
            }
            _ => out.push(Action::Trace(format!("key {d} ignored"))),
        }
    }

    fn input_digit(&mut self, d: char, out: &mut Vec<Action>) {
        let Wait::Input(st) = &self.wait else { return };
        if st.confirming {
            return self.confirm_answer(d == '1', d == '2', out);
        }
        let Some(step) = self.step().cloned() else {
            return;
        };
        match &step.kind {
            StepKind::Menu { options, .. } => {
                let mut buf = st.digits.clone();
                buf.push(d);
                let exact = options
                    .iter()
                    .find(|o| o.digits.as_deref() == Some(buf.as_str()));
                let longer = options.iter().any(|o| {
                    o.digits
                        .as_ref()
                        .is_some_and(|k| k.len() > buf.len() && k.starts_with(&buf))
                });
                if let (Some(o), false) = (exact, longer) {
                    return self.choose(o.clone(), out);
                }
                if exact.is_some() || longer {
                    if let Wait::Input(st) = &mut self.wait {
                        st.digits = buf;
                    }
                    let ms = self.timeouts().inter_digit_ms;
                    return self.start_timer(ms, out);
                }
                if buf.len() == 1
                    && let Some(g) = self.global_for(Some(d), None, false)
                {
                    return self.run_global(g, out);
                }
                out.push(Action::Trace(format!("no option for key(s) {buf}")));
                self.fail(false, out);
            }
            StepKind::Collect {
                mode: CollectMode::Digits(spec),
                ..
            } => {
                let mut buf = st.digits.clone();
                if Some(d) == spec.clear {
                    buf.clear();
                } else if Some(d) == spec.terminator {
                    if let Wait::Input(st) = &mut self.wait {
                        st.digits = buf;
                    }
                    return self.digits_complete(false, out);
                } else if d.is_ascii_digit() {
                    buf.push(d);
                }
                let full = buf.len() as u32 >= spec.max;
                if let Wait::Input(st) = &mut self.wait {
                    st.digits = buf;
                }
                if full {
                    return self.digits_complete(false, out);
                }
                let ms = self.timeouts().inter_digit_ms;
                self.start_timer(ms, out);
            }
            StepKind::Collect {
                mode: CollectMode::Speech(_),
                ..
            } => {
                if let Some(g) = self.global_for(Some(d), None, false) {
                    return self.run_global(g, out);
                }
                out.push(Action::Trace(format!(
                    "key {d} ignored while waiting for speech"
                )));
            }
            _ => {}
        }
    }

    fn digits_complete(&mut self, by_timeout: bool, out: &mut Vec<Action>) {
        let Wait::Input(st) = &self.wait else { return };
        let buf = st.digits.clone();
        let Some(step) = self.step().cloned() else {
            return;
        };
        match &step.kind {
            StepKind::Menu { options, .. } => match options
                .iter()
                .find(|o| o.digits.as_deref() == Some(buf.as_str()))
            {
                Some(o) => self.choose(o.clone(), out),
                None => self.fail(false, out),
            },
            StepKind::Collect {
                mode: CollectMode::Digits(spec),
                ..
            } => {
                self.cancel_timer(out);
                let len = buf.len() as u32;
                let ok = len >= spec.min
                    && len <= spec.max
                    && spec.pattern.as_ref().is_none_or(|p| p.is_match(&buf))
                    && (!spec.order_number || crate::damm::is_valid_order_number(&buf));
                if ok {
                    self.accept_value(buf, out);
                } else {
                    out.push(Action::Trace(format!(
                        "input \"{buf}\" rejected{}",
                        if by_timeout {
                            " (inter-digit timeout)"
                        } else {
                            ""
                        }
                    )));
                    self.fail(false, out);
                }
            }
            _ => {}
        }
    }

    fn accept_value(&mut self, value: String, out: &mut Vec<Action>) {
        let Some((_, confirm)) = self.input_parts() else {
            return;
        };
        let Some(StepKind::Collect { into, next, .. }) = self.step().map(|s| s.kind.clone()) else {
            return;
        };
        self.vars.insert(into, Value::Str(value));
        self.cancel_timer(out);
        match confirm {
            Some(msg) => self.enter_confirm(&msg, out),
            None => match next {
                Some(n) => self.goto(&n.step, out),
                None => self.end("flow_error", out),
            },
        }
    }

    fn confirm_answer(&mut self, yes: bool, no: bool, out: &mut Vec<Action>) {
        let Some(StepKind::Collect { next, .. }) = self.step().map(|s| s.kind.clone()) else {
            return;
        };
        if yes {
            match next {
                Some(n) => self.goto(&n.step, out),
                None => self.end("flow_error", out),
            }
        } else if no {
            self.enter_input(true, out);
        } else {
            self.fail(false, out);
        }
    }

    fn choose(&mut self, o: MenuOption, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        for (k, v) in &o.set {
            self.vars.insert(k.clone(), Value::Str(v.clone()));
        }
        out.push(Action::Trace(format!(
            "chose {}",
            o.digits.clone().unwrap_or_else(|| o.words.join("/"))
        )));
        self.goto(&o.goto.step, out);
    }

    fn on_speech(
        &mut self,
        text: &str,
        confidence: f32,
        alternatives: &[String],
        out: &mut Vec<Action>,
    ) {
        if !self.accepting_speech() {
            out.push(Action::Trace(
                "speech ignored: prompt does not allow speech barge-in".into(),
            ));
            return;
        }
        let norm = normalize(text);
        let all: Vec<String> = std::iter::once(norm.clone())
            .chain(alternatives.iter().map(|a| normalize(a)))
            .collect();
        if let Wait::Prompt { .. } = self.wait {
            if let Some(g) = all
                .iter()
                .find_map(|t| self.global_for(None, Some(t), false))
            {
                self.run_global(g, out);
            }
            return;
        }
        let Wait::Input(st) = &self.wait else { return };
        if st.confirming {
            let yes = ["确认", "是", "对", "yes", "correct", "right", "一"]
                .iter()
                .any(|w| norm.contains(&normalize(w)));
            let no = ["重说", "不对", "不是", "no", "retry", "wrong", "二"]
                .iter()
                .any(|w| norm.contains(&normalize(w)));
            return self.confirm_answer(yes && !no, no, out);
        }
        let Some(step) = self.step().cloned() else {
            return;
        };
        match &step.kind {
            StepKind::Menu { options, .. } => {
                // The longest matching keyword wins: "不满意" must not choose "满意".
                let hit = all.iter().find_map(|t| {
                    options
                        .iter()
                        .filter_map(|o| {
                            o.words
                                .iter()
                                .map(|w| normalize(w))
                                .filter(|w| !w.is_empty() && t.contains(w.as_str()))
                                .map(|w| w.chars().count())
                                .max()
                                .map(|len| (len, o))
                        })
                        .max_by_key(|(len, _)| *len)
                        .map(|(_, o)| o)
                });
                if let Some(o) = hit {
                    return self.choose(o.clone(), out);
                }
                if let Some(g) = all
                    .iter()
                    .find_map(|t| self.global_for(None, Some(t), false))
                {
                    return self.run_global(g, out);
                }
                out.push(Action::Trace(format!("no option matches \"{text}\"")));
                self.fail(false, out);
            }
            StepKind::Collect { mode, .. } => {
                // A bare keyword ("人工") is a request, not an answer.
                if let Some(g) = self.global_for(None, Some(&norm), true) {
                    return self.run_global(g, out);
                }
                match mode {
                    CollectMode::Speech(spec)
                        if confidence >= spec.min_confidence && !norm.is_empty() =>
                    {
                        self.accept_value(text.trim().to_string(), out)
                    }
                    CollectMode::Speech(_) => {
                        out.push(Action::Trace(format!(
                            "low confidence {confidence:.2} for \"{text}\""
                        )));
                        self.fail(false, out);
                    }
                    CollectMode::Digits(_) => {
                        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                        if digits.is_empty() {
                            self.fail(false, out);
                        } else {
                            if let Wait::Input(st) = &mut self.wait {
                                st.digits = digits;
                            }
                            self.digits_complete(false, out);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A no-input (`no_input = true`) or no-match: count, re-prompt, or give up.
    fn fail(&mut self, no_input: bool, out: &mut Vec<Action>) {
        let Some((input, _)) = self.input_parts() else {
            return;
        };
        self.cancel_timer(out);
        let (count, rule) = if no_input {
            self.no_input += 1;
            (self.no_input, &input.no_input)
        } else {
            self.no_match += 1;
            (self.no_match, &input.no_match)
        };
        out.push(Action::Trace(format!(
            "{} {count}/{}",
            if no_input { "no-input" } else { "no-match" },
            rule.max
        )));
        if count >= rule.max {
            match &input.on_fail {
                Some(t) => {
                    let t = t.step.clone();
                    self.goto(&t, out);
                }
                None => self.end("max_failures", out),
            }
            return;
        }
        let confirming = matches!(&self.wait, Wait::Input(st) if st.confirming);
        if confirming && let Some((_, Some(msg))) = self.input_parts() {
            return self.enter_confirm(&msg, out);
        }
        self.enter_input_with(true, rule.say.clone(), out);
    }
}
