//! The events a call session feeds into the interpreter and the actions it gets back.
//!
//! This is the whole contract between the engine and the telephony side: the engine never
//! touches audio, sockets or clocks, so a test can run a complete call in microseconds.

use crate::calendar::LocalTime;
use crate::model::Lang;
use std::collections::BTreeMap;

/// Something that happened on the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The call was answered. `local_time` is the wall clock in the hotline's time zone.
    CallStarted {
        caller: String,
        called: String,
        local_time: LocalTime,
    },
    /// A key press.
    Digit(char),
    /// The recognizer heard the caller start speaking (pauses the no-input timer).
    SpeechStarted,
    /// Final recognition result.
    SpeechResult {
        text: String,
        confidence: f32,
        alternatives: Vec<String>,
    },
    /// The caller spoke but nothing usable was recognized.
    SpeechNoMatch,
    /// A `Play` with this id finished (not sent after `StopPlayback`).
    PromptFinished { id: u64 },
    /// A `StartTimer` with this id expired.
    TimerFired { id: u64 },
    /// The work order was created.
    SubmitResult { order_id: String },
    /// The work order could not be created.
    SubmitFailed { reason: String },
    /// Status of a looked-up order.
    LookupResult { status: String },
    /// The order was not found or the lookup failed.
    LookupFailed { reason: String },
    /// A `Record` ended; `transcript` if the gateway transcribed it.
    RecordingFinished {
        uri: String,
        duration_ms: u64,
        transcript: Option<String>,
    },
    /// A `Transfer` did not connect.
    TransferFailed { reason: String },
    /// The answer to `QueueCallback`: the gateway will call the caller back when their turn in
    /// the queue comes (it keeps their place); the session says so, then hangs up with
    /// reason `callback_queued`.
    CallbackQueued,
    /// The answer to `QueueCallback`: no callback (e.g. the queue does not offer them). The
    /// caller is still in line; the transfer goes on as before.
    CallbackRefused { reason: String },
    /// The caller hung up.
    HangUp,
}

/// One thing to play.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayItem {
    /// A recorded file (path relative to the flows directory) with its text for logs/fallback.
    Audio { path: String, text: String },
    /// Text to synthesize (no recording exists).
    Tts { text: String },
    /// Silence.
    Silence { ms: u32 },
}

/// DTMF collection settings for `Listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfListen {
    /// Most keys expected.
    pub max_digits: u32,
    /// Key that ends input.
    pub terminator: Option<char>,
}

/// Speech recognition settings for `Listen`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechListen {
    /// Recognition language.
    pub language: Lang,
    /// Phrases that bias recognition (menu keywords, global keywords, configured hints).
    pub hints: Vec<String>,
    /// Longest utterance.
    pub max_seconds: u32,
    /// Silence that ends an utterance.
    pub end_silence_ms: u32,
}

/// Something the call session must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Play items in order; the session answers `PromptFinished{id}`.
    Play {
        id: u64,
        items: Vec<PlayItem>,
        barge_in_speech: bool,
        barge_in_dtmf: bool,
        language: Lang,
        rate: f32,
    },
    /// Stop what is playing (barge-in); no `PromptFinished` is expected afterwards.
    StopPlayback,
    /// Start or replace input collection.
    Listen {
        dtmf: Option<DtmfListen>,
        speech: Option<SpeechListen>,
    },
    /// Stop input collection.
    StopListening,
    /// Start a one-shot timer; answer `TimerFired{id}`.
    StartTimer { id: u64, after_ms: u32 },
    /// Cancel a timer (a late `TimerFired` for it is ignored anyway).
    CancelTimer { id: u64 },
    /// Hand the call over; the slots give the agent context.
    Transfer {
        target: crate::model::TransferTarget,
        context: BTreeMap<String, String>,
        /// Place in a queue (0 normal, up to 9 first).
        priority: u8,
    },
    /// Give up the transfer under way: the caller, waiting in a queue, pressed a key that
    /// leads elsewhere. No `TransferFailed` follows.
    CancelTransfer,
    /// The caller, waiting in a queue, pressed the transfer step's `callback` key: keep their
    /// place and call them back when their turn comes instead of holding the line. Answer
    /// `CallbackQueued` or `CallbackRefused`; until then the transfer goes on as before (a
    /// `TransferFailed` or an answering agent still apply, and a `CancelTransfer` withdraws
    /// the request with the caller's place).
    QueueCallback,
    /// Record a voice message (after a beep if asked); answer `RecordingFinished`.
    Record { max_seconds: u32, beep: bool },
    /// Create a work order; answer `SubmitResult` or `SubmitFailed`.
    SubmitOrder { slots: BTreeMap<String, String> },
    /// Look up an order; answer `LookupResult` or `LookupFailed`.
    LookupOrder { order_id: String },
    /// End the call.
    HangUp { reason: String },
    /// Diagnostic trace (step entered, input ignored, ...); safe to log or drop.
    Trace(String),
}
