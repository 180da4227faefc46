//! A tiny phone for tests: records every action and plays prompts to the end on demand.
#![allow(dead_code)]

use ivr_flows::calendar::LocalTime;
use ivr_flows::{Action, Event, FlowSet, PlayItem, Session};
use std::sync::Arc;

pub fn shipped() -> Arc<FlowSet> {
    Arc::new(
        ivr_flows::check_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/flows"))
            .expect("shipped flows load"),
    )
}

pub use ivr_flows::simulate::WORKDAY_10AM;

pub struct Call {
    pub s: Session,
    pub now: u64,
    pub log: Vec<Action>,
    pending: Vec<u64>,
    pub last: Vec<Action>,
    fired: Vec<u64>,
}

impl Call {
    pub fn start(set: Arc<FlowSet>, flow: &str, time: LocalTime) -> Call {
        Call::with_session(Session::new(set, flow).expect("flow exists"), time)
    }

    /// A call on a session made beforehand (e.g. with its inputs).
    pub fn with_session(s: Session, time: LocalTime) -> Call {
        let mut c = Call {
            s,
            now: 0,
            log: Vec::new(),
            pending: Vec::new(),
            last: Vec::new(),
            fired: Vec::new(),
        };
        c.send(Event::CallStarted {
            caller: "13912345678".into(),
            called: "12345".into(),
            local_time: time,
        });
        c
    }

    pub fn main() -> Call {
        Call::start(shipped(), "main", WORKDAY_10AM)
    }

    pub fn send(&mut self, ev: Event) -> Vec<Action> {
        self.now += 100;
        if let Event::TimerFired { id } = &ev {
            self.fired.push(*id);
        }
        let out = self.s.handle(self.now, ev);
        for a in &out {
            match a {
                Action::Play { id, .. } => self.pending.push(*id),
                Action::StopPlayback => self.pending.clear(),
                _ => {}
            }
        }
        self.log.extend(out.iter().cloned());
        self.last = out.clone();
        out
    }

    /// Lets every prompt play to the end (which may start more prompts).
    pub fn settle(&mut self) {
        while !self.pending.is_empty() {
            let id = self.pending.remove(0);
            self.send(Event::PromptFinished { id });
        }
    }

    /// Lets only the oldest pending prompt finish.
    pub fn settle_one(&mut self) {
        if !self.pending.is_empty() {
            let id = self.pending.remove(0);
            self.send(Event::PromptFinished { id });
        }
    }

    pub fn press(&mut self, keys: &str) {
        self.settle();
        for k in keys.chars() {
            self.send(Event::Digit(k));
        }
        self.settle();
    }

    /// Keys pressed while the prompt is still playing.
    pub fn barge(&mut self, keys: &str) {
        for k in keys.chars() {
            self.send(Event::Digit(k));
        }
    }

    pub fn say(&mut self, text: &str) {
        self.settle();
        self.send(Event::SpeechStarted);
        self.send(Event::SpeechResult {
            text: text.into(),
            confidence: 0.9,
            alternatives: vec![],
        });
        self.settle();
    }

    /// Fires the newest running timer.
    pub fn wait(&mut self) {
        self.settle();
        let id = self.running_timer().expect("a timer is running");
        self.send(Event::TimerFired { id });
        self.settle();
    }

    pub fn running_timer(&self) -> Option<u64> {
        let mut running: Vec<u64> = Vec::new();
        for a in &self.log {
            match a {
                Action::StartTimer { id, .. } => running.push(*id),
                Action::CancelTimer { id } => running.retain(|t| t != id),
                _ => {}
            }
        }
        // Timers that fired are consumed by the engine; it never restarts a fired id.
        running.into_iter().rfind(|id| !self.fired.contains(id))
    }

    pub fn heard(&self) -> String {
        let mut s = String::new();
        for a in &self.log {
            if let Action::Play { items, .. } = a {
                for it in items {
                    match it {
                        PlayItem::Audio { text, .. } | PlayItem::Tts { text } => s.push_str(text),
                        PlayItem::Silence { .. } => s.push(' '),
                    }
                }
                s.push('\n');
            }
        }
        s
    }

    pub fn last_play_text(&self) -> String {
        self.heard().lines().last().unwrap_or_default().to_string()
    }

    pub fn find<T>(&self, f: impl Fn(&Action) -> Option<T>) -> Option<T> {
        self.log.iter().rev().find_map(f)
    }

    pub fn hung_up(&self) -> Option<String> {
        self.find(|a| {
            if let Action::HangUp { reason } = a {
                Some(reason.clone())
            } else {
                None
            }
        })
    }
}
