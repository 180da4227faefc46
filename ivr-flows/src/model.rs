//! The in-memory form of a flow after decoding: what the checker inspects and the interpreter
//! runs. Every reference keeps its source position so later passes can still point at the line.

use crate::diagnostic::Pos;
use crate::expr::Expr;
use std::collections::BTreeMap;

/// A prompt language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lang {
    /// Mandarin.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// All supported languages.
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    /// The code used in flow files and prompt paths.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// Parses `zh` / `en`.
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// Text with `{expr}` placeholders, e.g. `您的工单号是{vars.order_id}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    /// Literal text.
    Lit(String),
    /// A placeholder.
    Expr(Expr),
}

/// One language's version of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Text for TTS or for TTS-less logs (with placeholders).
    pub text: Vec<Seg>,
    /// Recorded audio, relative to the flows directory.
    pub audio: Option<String>,
    /// Where it is written.
    pub pos: Pos,
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// A clip per language.
    Clip(BTreeMap<Lang, Clip>),
    /// Digits spoken one by one from per-language digit clips.
    Digits(Expr, Pos),
    /// A whole number spoken from per-language number clips.
    Number(Expr, Pos),
    /// An order number: digits in groups of four with short pauses.
    OrderNumber(Expr, Pos),
    /// Silence.
    Pause(u32),
}

/// Something the caller hears.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Parts played in order.
    pub parts: Vec<Part>,
    /// Where it is written.
    pub pos: Pos,
}

/// A reference to a step in the same flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Step name.
    pub step: String,
    /// Where the reference is written.
    pub pos: Pos,
}

/// Whether caller input interrupts a prompt, separately for speech and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BargeIn {
    /// Speech stops the prompt.
    pub speech: bool,
    /// A key press stops the prompt.
    pub dtmf: bool,
}

/// Timers of input steps, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Silence allowed after the first prompt ends.
    pub initial_ms: u32,
    /// Silence allowed after a re-prompt.
    pub no_input_ms: u32,
    /// Gap allowed between two key presses.
    pub inter_digit_ms: u32,
}

/// What happens on a no-input or no-match.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Failures allowed before `on_fail`.
    pub max: u32,
    /// Played before the re-prompt.
    pub say: Option<Message>,
}

/// Settings shared by menu and collect steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The first prompt.
    pub say: Message,
    /// The shorter prompt on retries (default: `say`).
    pub reprompt: Option<Message>,
    /// Barge-in; `None` inherits the flow settings.
    pub barge_in: Option<BargeIn>,
    /// Timers; partially overridden fields are merged at decode time.
    pub timeouts: Option<Timeouts>,
    /// No-input handling.
    pub no_input: Retry,
    /// No-match handling.
    pub no_match: Retry,
    /// Where to go after the last failure (default: hang up).
    pub on_fail: Option<Target>,
    /// Whether flow-level global handlers are active here.
    pub globals: bool,
}

/// One menu choice.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuOption {
    /// Keys that choose it (usually one digit).
    pub digits: Option<String>,
    /// Spoken keywords and synonyms (substring match).
    pub words: Vec<String>,
    /// Variables to set (literal text) when chosen.
    pub set: Vec<(String, String)>,
    /// Where to go.
    pub goto: Target,
    /// Where the option is written.
    pub pos: Pos,
}

/// Digit collection rules.
#[derive(Debug, Clone)]
pub struct DigitSpec {
    /// Minimum length.
    pub min: u32,
    /// Maximum length (input ends automatically when reached).
    pub max: u32,
    /// Ends input early (default `#`).
    pub terminator: Option<char>,
    /// Clears what was keyed so far (default `*`).
    pub clear: Option<char>,
    /// Whole-input pattern.
    pub pattern: Option<regex_lite::Regex>,
    /// `check: order_number`: Damm check digit over 14–20 digits.
    pub order_number: bool,
}

/// Free speech collection rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechSpec {
    /// Longest utterance.
    pub max_seconds: u32,
    /// Silence that ends the utterance.
    pub end_silence_ms: u32,
    /// Phrases that bias recognition.
    pub hints: Vec<String>,
    /// Results below this confidence count as no-match.
    pub min_confidence: f32,
}

/// What a collect step gathers.
#[derive(Debug, Clone)]
pub enum CollectMode {
    /// Keys.
    Digits(DigitSpec),
    /// Speech.
    Speech(SpeechSpec),
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// An agent queue name.
    Queue(String),
    /// A SIP URI.
    Sip(String),
}

/// `callback:` of a transfer to a queue: a key that asks the gateway to call the caller back
/// when their turn comes, keeping their place in line, instead of holding on.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The key that asks for the callback (0-9, `*` or `#`), not a `while_waiting` key.
    pub key: char,
    /// Played once the gateway has queued the callback, before the session hangs up
    /// (`None`: [`Callback::message`] gives a built-in text, spoken by TTS).
    pub say: Option<Message>,
    /// Where `callback:` is written.
    pub pos: Pos,
}

impl Callback {
    /// The built-in confirmation of a queued callback in `lang` (TTS, no recording).
    pub fn default_text(lang: Lang) -> &'static str {
        match lang {
            Lang::Zh => "好的，我们会为您保留排队位置，轮到您时给您回电。现在您可以挂机了。",
            Lang::En => {
                "We will keep your place in line and call you back when it is your turn. \
                 You may hang up now."
            }
        }
    }

    /// What the caller hears once the callback is queued: `say`, else the built-in text in
    /// every language.
    pub fn message(&self) -> Message {
        if let Some(m) = &self.say {
            return m.clone();
        }
        let clips = Lang::ALL
            .iter()
            .map(|l| {
                let clip = Clip {
                    text: vec![Seg::Lit(Callback::default_text(*l).to_string())],
                    audio: None,
                    pos: self.pos,
                };
                (*l, clip)
            })
            .collect();
        Message {
            parts: vec![Part::Clip(clips)],
            pos: self.pos,
        }
    }
}

/// A conditional edge of a branch step.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The condition (type-checked to be true/false).
    pub cond: Expr,
    /// Where to go when it holds.
    pub goto: Target,
    /// Where the condition is written.
    pub pos: Pos,
}

/// The behaviour of a step.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Play a message, then go on.
    Prompt {
        say: Message,
        barge_in: Option<BargeIn>,
        next: Option<Target>,
    },
    /// Choose by key or keyword.
    Menu {
        input: Input,
        options: Vec<MenuOption>,
    },
    /// Gather digits or speech into a variable.
    Collect {
        input: Input,
        into: String,
        mode: CollectMode,
        confirm: Option<Message>,
        next: Option<Target>,
    },
    /// Assign variables and session settings.
    Set {
        vars: Vec<(String, Expr, Pos)>,
        language: Option<Lang>,
        rate: Option<f32>,
        next: Option<Target>,
    },
    /// Choose by condition.
    Branch {
        cases: Vec<Case>,
        otherwise: Option<Target>,
    },
    /// Hand the call to an agent.
    Transfer {
        say: Option<Message>,
        target: TransferTarget,
        context: Option<Vec<String>>,
        /// Place in a queue: higher is served first (0 normal, up to 9).
        priority: u8,
        /// Keys that take a caller waiting in a queue out of it, to these steps.
        while_waiting: Vec<(char, Target)>,
        /// A key that asks for a callback that keeps the caller's place in the queue.
        callback: Option<Callback>,
        on_fail: Option<Target>,
    },
    /// Record a voice message.
    Record {
        say: Option<Message>,
        into: String,
        max_seconds: u32,
        beep: bool,
        next: Option<Target>,
    },
    /// Create a work order.
    Submit {
        fields: Vec<(String, Expr)>,
        into: String,
        next: Option<Target>,
        on_fail: Option<Target>,
    },
    /// Look up an order's status.
    Lookup {
        order: Expr,
        into: String,
        next: Option<Target>,
        on_fail: Option<Target>,
    },
    /// Jump.
    Goto { to: Option<Target> },
    /// Run another flow, then continue at `next`.
    Call {
        flow: String,
        flow_pos: Pos,
        next: Option<Target>,
    },
    /// Return from a sub-flow.
    Return,
    /// End the call.
    Hangup {
        say: Option<Message>,
        reason: String,
    },
}

/// A named step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// Where its name is written.
    pub pos: Pos,
    /// What it does.
    pub kind: StepKind,
}

/// What a global handler does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalAction {
    /// Jump to a step of this flow.
    Goto(Target),
    /// Replay the current step's prompt.
    Repeat,
}

/// A key or keyword active in every input step of a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// The key.
    pub digit: Option<char>,
    /// Keywords.
    pub words: Vec<String>,
    /// What to do.
    pub action: GlobalAction,
    /// Where it is written.
    pub pos: Pos,
}

/// Session settings inherited by steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Initial language.
    pub language: Lang,
    /// Speech rate factor (1.0 normal, 0.8 slower).
    pub rate: f32,
    /// Default barge-in.
    pub barge_in: BargeIn,
    /// Default timers.
    pub timeouts: Timeouts,
    /// Where the gateway records calls (`calls.record_calls`), the caller hears that the call
    /// is recorded before the flow's first prompt; `false` leaves it to the flow's own words.
    pub recording_notice: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            language: Lang::Zh,
            rate: 1.0,
            barge_in: BargeIn {
                speech: true,
                dtmf: true,
            },
            timeouts: Timeouts {
                initial_ms: 6000,
                no_input_ms: 5000,
                inter_digit_ms: 3000,
            },
            recording_notice: true,
        }
    }
}

/// One flow file.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Name (file stem unless `flow:` says otherwise).
    pub name: String,
    /// File name relative to the flows directory.
    pub file: String,
    /// Variables the flow takes from whoever starts it (`inputs:`, in file order), e.g. an
    /// outbound call's `vars`; the session reads them as `vars.NAME` (text).
    pub inputs: Vec<String>,
    /// First step.
    pub start: Target,
    /// Session settings.
    pub settings: Settings,
    /// Global handlers.
    pub globals: Vec<Global>,
    /// Steps in source order.
    pub steps: Vec<Step>,
    /// Step name -> index into `steps`.
    pub index: BTreeMap<String, usize>,
}

impl Flow {
    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.index.get(name).and_then(|i| self.steps.get(*i))
    }
}

impl StepKind {
    /// The type name used in flow files.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Prompt { .. } => "prompt",
            StepKind::Menu { .. } => "menu",
            StepKind::Collect { .. } => "collect",
            StepKind::Set { .. } => "set",
            StepKind::Branch { .. } => "branch",
            StepKind::Transfer { .. } => "transfer",
            StepKind::Record { .. } => "record",
            StepKind::Submit { .. } => "submit",
            StepKind::Lookup { .. } => "lookup",
            StepKind::Goto { .. } => "goto",
            StepKind::Call { .. } => "call",
            StepKind::Return => "return",
            StepKind::Hangup { .. } => "hangup",
        }
    }

    /// True for steps that wait for the caller (they break loops).
    pub fn waits_for_caller(&self) -> bool {
        matches!(
            self,
            StepKind::Menu { .. } | StepKind::Collect { .. } | StepKind::Record { .. }
        )
    }

    /// Outgoing edges, labelled (for the checker and the graph).
    pub fn edges(&self) -> Vec<(String, &Target)> {
        fn push<'a>(out: &mut Vec<(String, &'a Target)>, label: &str, t: &'a Option<Target>) {
            if let Some(t) = t {
                out.push((label.to_string(), t));
            }
        }
        let mut out: Vec<(String, &Target)> = Vec::new();
        match self {
            StepKind::Prompt { next, .. }
            | StepKind::Set { next, .. }
            | StepKind::Record { next, .. }
            | StepKind::Call { next, .. } => push(&mut out, "next", next),
            StepKind::Goto { to } => push(&mut out, "to", to),
            StepKind::Collect { input, next, .. } => {
                push(&mut out, "next", next);
                push(&mut out, "on_fail", &input.on_fail);
            }
            StepKind::Submit { next, on_fail, .. } | StepKind::Lookup { next, on_fail, .. } => {
                push(&mut out, "next", next);
                push(&mut out, "on_fail", on_fail);
            }
            StepKind::Transfer {
                on_fail,
                while_waiting,
                ..
            } => {
                for (key, target) in while_waiting {
                    out.push((key.to_string(), target));
                }
                push(&mut out, "on_fail", on_fail);
            }
            StepKind::Menu { input, options } => {
                for o in options {
                    let label = o
                        .digits
                        .clone()
                        .unwrap_or_else(|| o.words.first().cloned().unwrap_or_default());
                    out.push((label, &o.goto));
                }
                push(&mut out, "on_fail", &input.on_fail);
            }
            StepKind::Branch { cases, otherwise } => {
                for (i, c) in cases.iter().enumerate() {
                    out.push((format!("case {}", i + 1), &c.goto));
                }
                push(&mut out, "else", otherwise);
            }
            StepKind::Return | StepKind::Hangup { .. } => {}
        }
        out
    }
}
