//! A line-oriented phone simulator so flows can be tried without a phone.
//!
//! Input lines: `1`, `123#` (keys, each character one key), `say: text` (speech),
//! `!1` / `!say: text` (barge in while the prompt is still playing), `wait` (let the newest
//! timer fire), `fail` (the pending submit/lookup/transfer fails), `hangup`, `# comment`.
//! Prompts otherwise play to the end before the next line is delivered. Submits and lookups
//! succeed automatically with a fake order number that has a valid Damm check digit. While
//! the caller waits in a queue, a key goes to the session (`while_waiting`, `callback`); a
//! callback asked for (`QueueCallback`) is always queued (`CallbackQueued`).

use crate::calendar::{Date, LocalTime};
use crate::flowset::FlowSet;
use crate::io::{Action, Event, PlayItem};
use crate::session::Session;
use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::sync::Arc;

/// Monday 2026-11-23 10:00, a working day: when a simulated call starts unless told otherwise
/// (the tests and benches of the flows start their calls then too).
pub const WORKDAY_10AM: LocalTime = LocalTime {
    date: Date {
        year: 2026,
        month: 11,
        day: 23,
    },
    hour: 10,
    minute: 0,
};

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Caller number.
    pub caller: String,
    /// Local time at call start.
    pub local_time: LocalTime,
    /// Print engine traces.
    pub trace: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            caller: "13800000000".into(),
            local_time: WORKDAY_10AM,
            trace: false,
        }
    }
}

/// A fake order number for the simulator: node 00, the call's date, sequence `seq`.
pub fn fake_order_id(date: Date, seq: u32) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(date.year, date.month, date.day).unwrap_or_default();
    adapters::OrderNumber::compose(day, 0, u64::from(seq)).to_string()
}

fn describe(items: &[PlayItem]) -> String {
    let mut out = String::new();
    for it in items {
        match it {
            PlayItem::Audio { text, .. } | PlayItem::Tts { text } => out.push_str(text),
            PlayItem::Silence { .. } => out.push(' '),
        }
    }
    out
}

#[derive(Default)]
struct Pending {
    held_prompt: Option<u64>,
    timers: Vec<u64>,
    backend: Option<&'static str>,
    recording: bool,
    transferred: bool,
}

/// Runs `flow` with the default options; see the module docs for the input syntax.
pub fn simulate(
    set: &FlowSet,
    flow: &str,
    input: impl BufRead,
    output: impl Write,
) -> io::Result<()> {
    simulate_with(
        Arc::new(set.clone()),
        flow,
        &SimOptions::default(),
        input,
        output,
    )
}

/// Runs `flow` of a shared set with explicit options.
pub fn simulate_with(
    set: Arc<FlowSet>,
    flow: &str,
    opts: &SimOptions,
    input: impl BufRead,
    mut out: impl Write,
) -> io::Result<()> {
    let Some(mut session) = Session::new(set, flow) else {
        writeln!(out, "error: no flow named \"{flow}\"")?;
        return Ok(());
    };
    let mut now = 0u64;
    let mut seq = 426u32;
    let mut p = Pending::default();
    let mut queue: VecDeque<Event> = VecDeque::new();
    queue.push_back(Event::CallStarted {
        caller: opts.caller.clone(),
        called: "12345".into(),
        local_time: opts.local_time,
    });
    let mut lines = input.lines();
    loop {
        while let Some(ev) = queue.pop_front() {
            now += 10;
            let actions = session.handle(now, ev);
            let listens = actions.iter().any(|a| matches!(a, Action::Listen { .. }));
            let last_play = actions.iter().rev().find_map(|a| {
                if let Action::Play { id, .. } = a {
                    Some(*id)
                } else {
                    None
                }
            });
            for a in actions {
                match a {
                    Action::Play {
                        id,
                        items,
                        language,
                        rate,
                        ..
                    } => {
                        let slow = if (rate - 1.0).abs() > f32::EPSILON {
                            format!(" x{rate}")
                        } else {
                            String::new()
                        };
                        writeln!(out, "[play {}{slow}] {}", language.code(), describe(&items))?;
                        if listens && Some(id) == last_play {
                            p.held_prompt = Some(id);
                        } else {
                            queue.push_back(Event::PromptFinished { id });
                        }
                    }
                    Action::StopPlayback => {
                        p.held_prompt = None;
                        writeln!(out, "[stop playback]")?;
                    }
                    Action::StartTimer { id, .. } => p.timers.push(id),
                    Action::CancelTimer { id } => p.timers.retain(|t| *t != id),
                    Action::Listen { .. } | Action::StopListening => {}
                    Action::Transfer {
                        target,
                        context,
                        priority,
                    } => {
                        let ctx: Vec<String> =
                            context.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        let prio = if priority > 0 {
                            format!(" priority {priority}")
                        } else {
                            String::new()
                        };
                        writeln!(out, "[transfer {target:?}{prio}] {}", ctx.join(" "))?;
                        p.backend = Some("transfer");
                        p.transferred = true;
                    }
                    Action::CancelTransfer => {
                        writeln!(out, "[out of the queue]")?;
                        p.backend = None;
                        p.transferred = false;
                    }
                    Action::QueueCallback => {
                        // The simulated gateway always keeps the place and calls back.
                        writeln!(out, "[callback queued]")?;
                        p.backend = None;
                        p.transferred = false;
                        queue.push_back(Event::CallbackQueued);
                    }
                    Action::Record { max_seconds, beep } => {
                        writeln!(
                            out,
                            "[record max {max_seconds}s{}]",
                            if beep { " beep" } else { "" }
                        )?;
                        p.recording = true;
                    }
                    Action::SubmitOrder { slots } => {
                        let s: Vec<String> =
                            slots.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        writeln!(out, "[submit] {}", s.join(" "))?;
                        p.backend = Some("submit");
                    }
                    Action::LookupOrder { order_id } => {
                        writeln!(out, "[lookup] {order_id}")?;
                        p.backend = Some("lookup");
                    }
                    Action::HangUp { reason } => writeln!(out, "[hangup {reason}]")?,
                    Action::Trace(t) => {
                        if opts.trace {
                            writeln!(out, "  # {t}")?;
                        }
                    }
                }
            }
        }
        if session.is_ended() {
            return Ok(());
        }
        // Backends answer without waiting for input unless the next line says `fail`.
        let line = match lines.next() {
            Some(l) => l?,
            None => {
                if p.transferred {
                    return Ok(());
                }
                writeln!(out, "[end of input: caller hangs up]")?;
                session.handle(now, Event::HangUp);
                return Ok(());
            }
        };
        let line = line.trim().to_string();
        if line.is_empty() || line.starts_with('#') {
            if let Some(kind) = p.backend.take() {
                succeed(kind, &mut queue, &mut seq, opts);
                p.transferred = false;
            }
            continue;
        }
        writeln!(out, "> {line}")?;
        if let Some(kind) = p.backend.take() {
            if line == "fail" {
                queue.push_back(match kind {
                    "submit" => Event::SubmitFailed {
                        reason: "simulated".into(),
                    },
                    "lookup" => Event::LookupFailed {
                        reason: "simulated".into(),
                    },
                    _ => Event::TransferFailed {
                        reason: "simulated".into(),
                    },
                });
                p.transferred = false;
                continue;
            }
            if kind == "transfer" {
                // A key while waiting in a queue: `while_waiting` may take the caller out, or
                // `callback` ask for a callback.
                if let Some(key) = line
                    .chars()
                    .next()
                    .filter(|c| line.len() == 1 && (c.is_ascii_digit() || *c == '*' || *c == '#'))
                {
                    p.backend = Some("transfer");
                    queue.push_back(Event::Digit(key));
                    continue;
                }
                writeln!(out, "[call left the IVR]")?;
                return Ok(());
            }
            succeed(kind, &mut queue, &mut seq, opts);
        }
        if p.recording {
            p.recording = false;
            let transcript = line.strip_prefix("say:").map(|t| t.trim().to_string());
            queue.push_back(Event::RecordingFinished {
                uri: "file:///tmp/voicemail.wav".into(),
                duration_ms: 15_000,
                transcript,
            });
            continue;
        }
        let (barge, body) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim().to_string()),
            None => (false, line.clone()),
        };
        if !barge && let Some(id) = p.held_prompt.take() {
            queue.push_back(Event::PromptFinished { id });
        }
        if body == "hangup" {
            queue.push_back(Event::HangUp);
        } else if body == "wait" {
            match p.timers.pop() {
                Some(id) => queue.push_back(Event::TimerFired { id }),
                None => writeln!(out, "(no timer running)")?,
            }
        } else if let Some(text) = body.strip_prefix("say:") {
            queue.push_back(Event::SpeechStarted);
            queue.push_back(Event::SpeechResult {
                text: text.trim().to_string(),
                confidence: 0.9,
                alternatives: Vec::new(),
            });
        } else {
            queue.extend(
                body.chars()
                    .filter(|c| !c.is_whitespace())
                    .map(Event::Digit),
            );
        }
    }
}

fn succeed(kind: &str, queue: &mut VecDeque<Event>, seq: &mut u32, opts: &SimOptions) {
    match kind {
        "submit" => {
            *seq += 1;
            queue.push_back(Event::SubmitResult {
                order_id: fake_order_id(opts.local_time.date, *seq),
            });
        }
        "lookup" => queue.push_back(Event::LookupResult {
            status: "已受理，正在办理".into(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damm;

    #[test]
    fn fake_ids_are_valid_order_numbers() {
        let d = WORKDAY_10AM.date;
        for n in [0, 427, 9_999_999] {
            assert!(damm::is_valid_order_number(&fake_order_id(d, n)));
        }
        assert_eq!(fake_order_id(d, 427).len(), 14);
    }
}
