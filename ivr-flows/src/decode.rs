//! Turns a positioned YAML tree into the flow model, rejecting unknown fields with a
//! "did you mean" and collecting every problem rather than stopping at the first, so an
//! administrator fixes a file in one pass.

use crate::diagnostic::{Diagnostic, Pos, suggest};
use crate::expr::{self, Expr};
use crate::model::*;
use crate::yaml::{Node, NodeKind};
use std::collections::BTreeMap;

/// Step types and the fields each accepts (besides `type` and `note`).
const STEP_FIELDS: &[(&str, &[&str])] = &[
    ("prompt", &["say", "barge_in", "next"]),
    (
        "menu",
        &[
            "say", "reprompt", "barge_in", "timeouts", "no_input", "no_match", "on_fail",
            "globals", "options",
        ],
    ),
    (
        "collect",
        &[
            "say", "reprompt", "barge_in", "timeouts", "no_input", "no_match", "on_fail",
            "globals", "into", "digits", "speech", "confirm", "next",
        ],
    ),
    ("set", &["vars", "language", "rate", "next"]),
    ("branch", &["cases", "else"]),
    (
        "transfer",
        &[
            "say",
            "queue",
            "sip",
            "context",
            "priority",
            "while_waiting",
            "callback",
            "on_fail",
        ],
    ),
    ("record", &["say", "into", "max_seconds", "beep", "next"]),
    ("submit", &["order", "into", "next", "on_fail"]),
    ("lookup", &["order", "into", "next", "on_fail"]),
    ("goto", &["to"]),
    ("call", &["flow", "next"]),
    ("return", &[]),
    ("hangup", &["say", "reason"]),
];

/// Collects diagnostics for one file.
pub(crate) struct Decoder<'f> {
    pub file: &'f str,
    pub diags: Vec<Diagnostic>,
}

type Entries<'n> = &'n [(Node, Node)];

impl<'f> Decoder<'f> {
    pub fn new(file: &'f str) -> Self {
        Decoder {
            file,
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(self.file, pos, message, hint));
    }

    /// A mapping whose keys must come from `allowed`.
    fn map<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Entries<'n>> {
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!("{what} should be a mapping but is {}", node.describe()),
                format!(
                    "write `key: value` lines; allowed keys: {}",
                    allowed.join(", ")
                ),
            );
            return None;
        };
        for (k, _) in entries {
            let key = k.as_str().unwrap_or_default();
            if !allowed.contains(&key) {
                let hint = suggest(key, allowed.iter().copied(), || {
                    format!("allowed here: {}", allowed.join(", "))
                });
                self.error(k.pos, format!("unknown field \"{key}\" in {what}"), hint);
            }
        }
        Some(entries)
    }

    fn get<'n>(entries: Entries<'n>, key: &str) -> Option<&'n Node> {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_str() {
            Some(s) if !node.is_null() => Some(s.to_string()),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} should be text but is {}",
                        if node.is_null() {
                            "empty"
                        } else {
                            node.describe()
                        }
                    ),
                    "write a single value",
                );
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, node: &Node, what: &str) -> Option<T> {
        let s = self.string(node, what)?;
        match s.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    node.pos,
                    format!("{what} should be a number, not \"{s}\""),
                    "write digits, e.g. 5000",
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_str() {
            Some("true" | "yes" | "on") => Some(true),
            Some("false" | "no" | "off") => Some(false),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} should be true or false"),
                    "write true or false",
                );
                None
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|i| self.string(i, what)).collect(),
            _ => self.string(node, what).into_iter().collect(),
        }
    }

    fn target(&mut self, node: &Node, what: &str) -> Option<Target> {
        self.string(node, what).map(|step| Target {
            step,
            pos: node.pos,
        })
    }

    /// `while_waiting: { "0": voicemail, "1": callback }`: one key each, to a step.
    fn waiting_keys(&mut self, node: &Node) -> Vec<(char, Target)> {
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!(
                    "while_waiting should be a mapping but is {}",
                    node.describe()
                ),
                "write `\"0\": step` lines, a key to the step it leads to",
            );
            return Vec::new();
        };
        let mut out: Vec<(char, Target)> = Vec::new();
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            let mut chars = key.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                self.error(
                    k.pos,
                    format!("\"{key}\" in while_waiting is not one key"),
                    "use one of 0-9, * and #",
                );
                continue;
            };
            if !(c.is_ascii_digit() || c == '*' || c == '#') {
                self.error(
                    k.pos,
                    format!("\"{key}\" in while_waiting is not a phone key"),
                    "use one of 0-9, * and #",
                );
                continue;
            }
            if let Some(t) = self.target(v, "while_waiting") {
                out.push((c, t));
            }
        }
        out
    }

    /// `callback: { key: "1", say: ... }`: a key that asks for a callback keeping the caller's
    /// place in the queue, not one of the `while_waiting` keys.
    fn callback(&mut self, node: &Node, while_waiting: &[(char, Target)]) -> Option<Callback> {
        let e = self.map(node, "callback", &["key", "say"])?;
        let say = self.opt_message(e, "say");
        let Some(k) = Self::get(e, "key") else {
            self.error(
                node.pos,
                "callback has no `key:`",
                "add the key that asks for the callback, e.g. key: \"1\"",
            );
            return None;
        };
        let s = self.string(k, "callback key")?;
        let mut chars = s.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            self.error(
                k.pos,
                format!("callback key \"{s}\" is not one key"),
                "use one of 0-9, * and #",
            );
            return None;
        };
        if !(c.is_ascii_digit() || c == '*' || c == '#') {
            self.error(
                k.pos,
                format!("callback key \"{s}\" is not a phone key"),
                "use one of 0-9, * and #",
            );
            return None;
        }
        if let Some((_, t)) = while_waiting.iter().find(|(w, _)| *w == c) {
            self.error(
                k.pos,
                format!(
                    "callback key \"{c}\" is also a while_waiting key (to \"{}\")",
                    t.step
                ),
                "give the callback a key of its own",
            );
            return None;
        }
        Some(Callback {
            key: c,
            say,
            pos: node.pos,
        })
    }

    fn opt_target(&mut self, entries: Entries<'_>, key: &str) -> Option<Target> {
        Self::get(entries, key).and_then(|n| self.target(n, key))
    }

    pub fn expr(&mut self, node: &Node, what: &str) -> Option<Expr> {
        let src = self.string(node, what)?;
        match expr::parse(&src) {
            Ok(e) => Some(e),
            Err(e) => {
                let pos = Pos::new(node.pos.line, node.pos.col + e.offset);
                self.error(pos, format!("in {what} `{src}`: {}", e.message), e.hint);
                None
            }
        }
    }

    fn template(&mut self, node: &Node, text: &str) -> Vec<Seg> {
        let mut segs = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segs.push(Seg::Lit(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                self.error(
                    node.pos,
                    format!("unclosed `{{` in text \"{text}\""),
                    "close the placeholder with `}`, e.g. {vars.order_id}",
                );
                return segs;
            };
            let inner = &rest[open + 1..open + close];
            match expr::parse(inner) {
                Ok(e) => segs.push(Seg::Expr(e)),
                Err(e) => self.error(
                    node.pos,
                    format!("in placeholder {{{inner}}}: {}", e.message),
                    e.hint,
                ),
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        segs
    }

    fn clip(&mut self, node: &Node) -> Option<Clip> {
        if let Some(text) = node.as_str() {
            return Some(Clip {
                text: self.template(node, text),
                audio: None,
                pos: node.pos,
            });
        }
        let entries = self.map(node, "a prompt clip", &["text", "audio"])?;
        let text = match Self::get(entries, "text") {
            Some(n) => {
                let t = self.string(n, "text")?;
                self.template(n, &t)
            }
            None => Vec::new(),
        };
        let audio = Self::get(entries, "audio").and_then(|n| self.string(n, "audio"));
        if text.is_empty() && audio.is_none() {
            self.error(
                node.pos,
                "prompt clip has neither text nor audio",
                "add `text:` and/or `audio:`",
            );
        }
        Some(Clip {
            text,
            audio,
            pos: node.pos,
        })
    }

    fn part(&mut self, node: &Node, out: &mut Vec<Part>) {
        if let Some(text) = node.as_str() {
            let clip = Clip {
                text: self.template(node, text),
                audio: None,
                pos: node.pos,
            };
            out.push(Part::Clip(
                Lang::ALL.iter().map(|l| (*l, clip.clone())).collect(),
            ));
            return;
        }
        let Some(entries) = self.map(
            node,
            "a message part",
            &[
                "zh",
                "en",
                "say_digits",
                "say_number",
                "say_order_number",
                "pause_ms",
            ],
        ) else {
            return;
        };
        if let Some((k, v)) = entries.first().filter(|_| entries.len() == 1) {
            let pos = v.pos;
            match k.as_str() {
                Some("say_digits") => {
                    return self
                        .expr(v, "say_digits")
                        .into_iter()
                        .for_each(|e| out.push(Part::Digits(e, pos)));
                }
                Some("say_number") => {
                    return self
                        .expr(v, "say_number")
                        .into_iter()
                        .for_each(|e| out.push(Part::Number(e, pos)));
                }
                Some("say_order_number") => {
                    return self
                        .expr(v, "say_order_number")
                        .into_iter()
                        .for_each(|e| out.push(Part::OrderNumber(e, pos)));
                }
                Some("pause_ms") => {
                    return self
                        .number(v, "pause_ms")
                        .into_iter()
                        .for_each(|n| out.push(Part::Pause(n)));
                }
                _ => {}
            }
        }
        let mut clips = BTreeMap::new();
        for (k, v) in entries {
            match k.as_str().and_then(Lang::parse) {
                Some(lang) => {
                    if let Some(c) = self.clip(v) {
                        clips.insert(lang, c);
                    }
                }
                None => self.error(
                    k.pos,
                    format!(
                        "\"{}\" cannot be combined with other keys in one message part",
                        k.as_str().unwrap_or_default()
                    ),
                    "make it a separate list item",
                ),
            }
        }
        for lang in Lang::ALL {
            if !clips.contains_key(&lang) && !clips.is_empty() {
                self.error(
                    node.pos,
                    format!("message has no {} version", lang.code()),
                    format!("add `{}:` with text and/or audio", lang.code()),
                );
            }
        }
        out.push(Part::Clip(clips));
    }

    pub fn message(&mut self, node: &Node) -> Message {
        let mut parts = Vec::new();
        match &node.kind {
            NodeKind::Seq(items) => items.iter().for_each(|i| self.part(i, &mut parts)),
            _ => self.part(node, &mut parts),
        }
        Message {
            parts,
            pos: node.pos,
        }
    }

    fn opt_message(&mut self, entries: Entries<'_>, key: &str) -> Option<Message> {
        Self::get(entries, key).map(|n| self.message(n))
    }

    fn barge_in(&mut self, node: &Node, base: BargeIn) -> BargeIn {
        if let Some(b) = node.as_str().filter(|_| !node.is_null()) {
            let v = self
                .boolean(node, "barge_in")
                .unwrap_or(matches!(b, "true"));
            return BargeIn { speech: v, dtmf: v };
        }
        let Some(entries) = self.map(node, "barge_in", &["speech", "dtmf"]) else {
            return base;
        };
        BargeIn {
            speech: Self::get(entries, "speech")
                .and_then(|n| self.boolean(n, "barge_in.speech"))
                .unwrap_or(base.speech),
            dtmf: Self::get(entries, "dtmf")
                .and_then(|n| self.boolean(n, "barge_in.dtmf"))
                .unwrap_or(base.dtmf),
        }
    }

    fn timeouts(&mut self, node: &Node, base: Timeouts) -> Timeouts {
        let Some(entries) = self.map(
            node,
            "timeouts",
            &["initial_ms", "no_input_ms", "inter_digit_ms"],
        ) else {
            return base;
        };
        let mut get = |k: &str, d: u32| {
            Self::get(entries, k)
                .and_then(|n| self.number(n, k))
                .unwrap_or(d)
        };
        Timeouts {
            initial_ms: get("initial_ms", base.initial_ms),
            no_input_ms: get("no_input_ms", base.no_input_ms),
            inter_digit_ms: get("inter_digit_ms", base.inter_digit_ms),
        }
    }

    fn retry(&mut self, node: Option<&Node>, what: &str) -> Retry {
        let mut r = Retry { max: 3, say: None };
        let Some(node) = node else { return r };
        if let Some(entries) = self.map(node, what, &["max", "say"]) {
            if let Some(n) = Self::get(entries, "max") {
                r.max = self.number(n, "max").unwrap_or(3).max(1);
            }
            r.say = self.opt_message(entries, "say");
        }
        r
    }

    fn input(&mut self, entries: Entries<'_>, step: &Node, settings: &Settings) -> Input {
        let say = match Self::get(entries, "say") {
            Some(n) => self.message(n),
            None => {
                self.error(
                    step.pos,
                    "input step has no `say:` prompt",
                    "add `say:` with what the caller should do",
                );
                Message {
                    parts: Vec::new(),
                    pos: step.pos,
                }
            }
        };
        Input {
            say,
            reprompt: self.opt_message(entries, "reprompt"),
            barge_in: Self::get(entries, "barge_in").map(|n| self.barge_in(n, settings.barge_in)),
            timeouts: Self::get(entries, "timeouts").map(|n| self.timeouts(n, settings.timeouts)),
            no_input: self.retry(Self::get(entries, "no_input"), "no_input"),
            no_match: self.retry(Self::get(entries, "no_match"), "no_match"),
            on_fail: self.opt_target(entries, "on_fail"),
            globals: Self::get(entries, "globals")
                .and_then(|n| self.boolean(n, "globals"))
                .unwrap_or(true),
        }
    }

    fn options(&mut self, node: &Node) -> Vec<MenuOption> {
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                "options should be a list",
                "write each option as `- digit: 1` with `goto:`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(e) = self.map(item, "a menu option", &["digit", "say", "set", "goto"]) else {
                continue;
            };
            let digits = Self::get(e, "digit").and_then(|n| self.string(n, "digit"));
            if let Some(d) = &digits
                && (d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '*' || c == '#'))
            {
                self.error(
                    item.pos,
                    format!("option key \"{d}\" is not a phone key"),
                    "use 0-9, * or #",
                );
            }
            let words = Self::get(e, "say")
                .map(|n| self.strings(n, "say"))
                .unwrap_or_default();
            if digits.is_none() && words.is_empty() {
                self.error(
                    item.pos,
                    "menu option has neither `digit:` nor `say:`",
                    "add the key and/or spoken keywords that choose it",
                );
            }
            let mut set = Vec::new();
            if let Some(n) = Self::get(e, "set") {
                if let Some(entries) = n.as_map() {
                    for (k, v) in entries {
                        if let (Some(k), Some(v)) = (k.as_str(), self.string(v, "set value")) {
                            set.push((k.to_string(), v));
                        }
                    }
                } else {
                    self.error(
                        n.pos,
                        "option `set:` should map variable names to text",
                        "e.g. set: { district: 江岸区 }",
                    );
                }
            }
            let Some(goto) = Self::get(e, "goto").and_then(|n| self.target(n, "goto")) else {
                self.error(
                    item.pos,
                    "menu option has no `goto:`",
                    "say which step the option leads to",
                );
                continue;
            };
            out.push(MenuOption {
                digits,
                words,
                set,
                goto,
                pos: item.pos,
            });
        }
        out
    }

    fn key(&mut self, node: Option<&Node>, what: &str, default: Option<char>) -> Option<char> {
        let Some(node) = node else { return default };
        if node.is_null() || node.as_str() == Some("none") {
            return None;
        }
        let s = self.string(node, what)?;
        let mut cs = s.chars();
        match (cs.next(), cs.next()) {
            (Some(c @ ('0'..='9' | '*' | '#')), None) => Some(c),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} \"{s}\" is not a single phone key"),
                    "use one of 0-9, * or #, or `none`",
                );
                default
            }
        }
    }

    fn collect_mode(&mut self, entries: Entries<'_>, step: &Node) -> Option<CollectMode> {
        match (Self::get(entries, "digits"), Self::get(entries, "speech")) {
            (Some(d), None) => {
                let e = self.map(
                    d,
                    "digits",
                    &["min", "max", "terminator", "clear", "pattern", "check"],
                )?;
                let min = Self::get(e, "min")
                    .and_then(|n| self.number(n, "min"))
                    .unwrap_or(1);
                let max = Self::get(e, "max")
                    .and_then(|n| self.number(n, "max"))
                    .unwrap_or(20);
                if min > max || max == 0 {
                    self.error(
                        d.pos,
                        format!("digits min {min} is greater than max {max}"),
                        "make min <= max",
                    );
                }
                let pattern = Self::get(e, "pattern").and_then(|n| {
                    let p = self.string(n, "pattern")?;
                    match regex_lite::Regex::new(&format!("^(?:{p})$")) {
                        Ok(r) => Some(r),
                        Err(err) => {
                            self.error(
                                n.pos,
                                format!("bad pattern \"{p}\": {err}"),
                                "use a regular expression like [0-9]{6}",
                            );
                            None
                        }
                    }
                });
                let order_number = match Self::get(e, "check") {
                    None => false,
                    Some(n) => match n.as_str() {
                        Some("order_number") => true,
                        _ => {
                            self.error(
                                n.pos,
                                format!("unknown check \"{}\"", n.as_str().unwrap_or_default()),
                                "the only check is `order_number`",
                            );
                            false
                        }
                    },
                };
                Some(CollectMode::Digits(DigitSpec {
                    min,
                    max,
                    terminator: self.key(Self::get(e, "terminator"), "terminator", Some('#')),
                    clear: self.key(Self::get(e, "clear"), "clear", Some('*')),
                    pattern,
                    order_number,
                }))
            }
            (None, Some(s)) => {
                let e = self.map(
                    s,
                    "speech",
                    &["max_seconds", "end_silence_ms", "hints", "min_confidence"],
                )?;
                Some(CollectMode::Speech(SpeechSpec {
                    max_seconds: Self::get(e, "max_seconds")
                        .and_then(|n| self.number(n, "max_seconds"))
                        .unwrap_or(30),
                    end_silence_ms: Self::get(e, "end_silence_ms")
                        .and_then(|n| self.number(n, "end_silence_ms"))
                        .unwrap_or(1200),
                    hints: Self::get(e, "hints")
                        .map(|n| self.strings(n, "hints"))
                        .unwrap_or_default(),
                    min_confidence: Self::get(e, "min_confidence")
                        .and_then(|n| self.number(n, "min_confidence"))
                        .unwrap_or(0.3),
                }))
            }
            _ => {
                self.error(
                    step.pos,
                    "collect step needs exactly one of `digits:` or `speech:`",
                    "add `digits: {min: 1, max: 4}` or `speech: {max_seconds: 30}`",
                );
                None
            }
        }
    }

    /// Reports `name` (written at `node`) unless it is a variable name; true if it is.
    fn check_var_name(&mut self, node: &Node, name: &str) -> bool {
        let ok = expr::is_var_name(name);
        if !ok {
            self.error(
                node.pos,
                format!("\"{name}\" is not a variable name"),
                "use letters, digits and _ (no `vars.` prefix)",
            );
        }
        ok
    }

    fn var_name(&mut self, entries: Entries<'_>, step: &Node) -> Option<String> {
        match Self::get(entries, "into") {
            Some(n) => {
                let v = self.string(n, "into")?;
                self.check_var_name(n, &v);
                Some(v)
            }
            None => {
                self.error(
                    step.pos,
                    "step has no `into:` variable",
                    "add `into: NAME`; later steps read it as vars.NAME",
                );
                None
            }
        }
    }

    fn step(&mut self, name: &Node, node: &Node, settings: &Settings) -> Option<Step> {
        let step_name = name.as_str().unwrap_or_default().to_string();
        let what = format!("step \"{step_name}\"");
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!("{what} should be a mapping"),
                "start it with `type: prompt|menu|collect|...`",
            );
            return None;
        };
        let Some(tnode) = Self::get(entries, "type") else {
            self.error(
                name.pos,
                format!("{what} has no `type:`"),
                format!(
                    "add one of: {}",
                    STEP_FIELDS
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        };
        let tname = tnode.as_str().unwrap_or_default();
        let Some((_, fields)) = STEP_FIELDS.iter().find(|(t, _)| *t == tname) else {
            let hint = suggest(tname, STEP_FIELDS.iter().map(|(t, _)| *t), || {
                "see REFERENCE.md for step types".into()
            });
            self.error(
                tnode.pos,
                format!("{what} has unknown type \"{tname}\""),
                hint,
            );
            return None;
        };
        let mut allowed: Vec<&str> = vec!["type", "note"];
        allowed.extend_from_slice(fields);
        let e = self.map(node, &what, &allowed)?;
        let next = self.opt_target(e, "next");
        let kind = match tname {
            "prompt" => StepKind::Prompt {
                say: match Self::get(e, "say") {
                    Some(n) => self.message(n),
                    None => {
                        self.error(
                            name.pos,
                            format!("{what} has no `say:`"),
                            "add the message to play",
                        );
                        return None;
                    }
                },
                barge_in: Self::get(e, "barge_in").map(|n| self.barge_in(n, settings.barge_in)),
                next,
            },
            "menu" => {
                let input = self.input(e, name, settings);
                let options = match Self::get(e, "options") {
                    Some(n) => self.options(n),
                    None => {
                        self.error(
                            name.pos,
                            format!("{what} has no `options:`"),
                            "add a list of options",
                        );
                        Vec::new()
                    }
                };
                StepKind::Menu { input, options }
            }
            "collect" => {
                let input = self.input(e, name, settings);
                let mode = self.collect_mode(e, name)?;
                let into = self.var_name(e, name)?;
                let confirm = self.opt_message(e, "confirm");
                StepKind::Collect {
                    input,
                    into,
                    mode,
                    confirm,
                    next,
                }
            }
            "set" => {
                let mut vars = Vec::new();
                if let Some(n) = Self::get(e, "vars") {
                    match n.as_map() {
                        Some(m) => {
                            for (k, v) in m {
                                if let (Some(k), Some(x)) =
                                    (k.as_str(), self.expr(v, "a set value"))
                                {
                                    vars.push((k.to_string(), x, v.pos));
                                }
                            }
                        }
                        None => self.error(
                            n.pos,
                            "`vars:` should map names to expressions",
                            "e.g. vars: { kind: \"'noise'\" }",
                        ),
                    }
                }
                let language = Self::get(e, "language").and_then(|n| {
                    let s = self.string(n, "language")?;
                    let l = Lang::parse(&s);
                    if l.is_none() {
                        self.error(n.pos, format!("unknown language \"{s}\""), "use zh or en");
                    }
                    l
                });
                let rate = Self::get(e, "rate").and_then(|n| self.number::<f32>(n, "rate"));
                if let Some(r) = rate.filter(|r| !(0.5..=2.0).contains(r)) {
                    self.error(
                        name.pos,
                        format!("rate {r} is out of range"),
                        "use a factor between 0.5 and 2.0",
                    );
                }
                StepKind::Set {
                    vars,
                    language,
                    rate,
                    next,
                }
            }
            "branch" => {
                let mut cases = Vec::new();
                if let Some(NodeKind::Seq(items)) = Self::get(e, "cases").map(|n| &n.kind) {
                    for item in items {
                        let Some(c) = self.map(item, "a branch case", &["if", "goto"]) else {
                            continue;
                        };
                        let cond = Self::get(c, "if").and_then(|n| self.expr(n, "condition"));
                        let goto = Self::get(c, "goto").and_then(|n| self.target(n, "goto"));
                        match (cond, goto) {
                            (Some(cond), Some(goto)) => cases.push(Case {
                                cond,
                                goto,
                                pos: item.pos,
                            }),
                            _ => self.error(
                                item.pos,
                                "branch case needs `if:` and `goto:`",
                                "write `- if: CONDITION` and `goto: STEP`",
                            ),
                        }
                    }
                } else {
                    self.error(
                        name.pos,
                        format!("{what} has no `cases:` list"),
                        "add `cases:` with `- if: ...` items",
                    );
                }
                StepKind::Branch {
                    cases,
                    otherwise: self.opt_target(e, "else"),
                }
            }
            "transfer" => {
                let target = match (Self::get(e, "queue"), Self::get(e, "sip")) {
                    (Some(q), None) => TransferTarget::Queue(self.string(q, "queue")?),
                    (None, Some(s)) => {
                        let uri = self.string(s, "sip")?;
                        if !uri.starts_with("sip:") && !uri.starts_with("sips:") {
                            self.error(
                                s.pos,
                                format!("\"{uri}\" is not a SIP URI"),
                                "write it like sip:agent@pbx.example",
                            );
                        }
                        TransferTarget::Sip(uri)
                    }
                    _ => {
                        self.error(
                            name.pos,
                            format!("{what} needs exactly one of `queue:` or `sip:`"),
                            "name the agent queue or SIP URI",
                        );
                        return None;
                    }
                };
                let priority = match Self::get(e, "priority") {
                    Some(n) => match self.number::<u8>(n, "priority") {
                        Some(p) if p <= 9 => p,
                        Some(p) => {
                            self.error(
                                n.pos,
                                format!("priority {p} is out of range"),
                                "use 0 (normal) to 9 (first)",
                            );
                            0
                        }
                        None => 0,
                    },
                    None => 0,
                };
                let while_waiting = match Self::get(e, "while_waiting") {
                    Some(n) => self.waiting_keys(n),
                    None => Vec::new(),
                };
                if !while_waiting.is_empty() && !matches!(target, TransferTarget::Queue(_)) {
                    self.error(
                        name.pos,
                        format!("{what} has `while_waiting:` but no `queue:`"),
                        "only a caller waiting in a queue can press a key to leave it",
                    );
                }
                let callback =
                    Self::get(e, "callback").and_then(|n| self.callback(n, &while_waiting));
                if let Some(cb) = &callback
                    && !matches!(target, TransferTarget::Queue(_))
                {
                    self.error(
                        cb.pos,
                        "a callback keeps a place in a queue; this transfer rings a SIP URI",
                        "transfer to a `queue:`, or remove `callback:`",
                    );
                }
                StepKind::Transfer {
                    say: self.opt_message(e, "say"),
                    target,
                    context: Self::get(e, "context").map(|n| self.strings(n, "context")),
                    priority,
                    while_waiting,
                    callback,
                    on_fail: self.opt_target(e, "on_fail"),
                }
            }
            "record" => StepKind::Record {
                say: self.opt_message(e, "say"),
                into: self.var_name(e, name)?,
                max_seconds: Self::get(e, "max_seconds")
                    .and_then(|n| self.number(n, "max_seconds"))
                    .unwrap_or(60),
                beep: Self::get(e, "beep")
                    .and_then(|n| self.boolean(n, "beep"))
                    .unwrap_or(true),
                next,
            },
            "submit" => {
                let mut fields = Vec::new();
                if let Some(n) = Self::get(e, "order") {
                    if let Some(m) = self.map(
                        n,
                        "submit order",
                        &[
                            "kind",
                            "district",
                            "text",
                            "caller",
                            "recording",
                            "language",
                            "order_id",
                        ],
                    ) {
                        for (k, v) in m {
                            if let (Some(k), Some(x)) = (k.as_str(), self.expr(v, "an order field"))
                            {
                                fields.push((k.to_string(), x));
                            }
                        }
                    }
                } else {
                    self.error(
                        name.pos,
                        format!("{what} has no `order:` fields"),
                        "add order: { kind: vars.kind, text: vars.text, ... }",
                    );
                }
                StepKind::Submit {
                    fields,
                    into: self.var_name(e, name)?,
                    next,
                    on_fail: self.opt_target(e, "on_fail"),
                }
            }
            "lookup" => {
                let Some(order) = Self::get(e, "order").and_then(|n| self.expr(n, "order")) else {
                    self.error(
                        name.pos,
                        format!("{what} has no `order:`"),
                        "add order: vars.order_no",
                    );
                    return None;
                };
                StepKind::Lookup {
                    order,
                    into: self.var_name(e, name)?,
                    next,
                    on_fail: self.opt_target(e, "on_fail"),
                }
            }
            "goto" => StepKind::Goto {
                to: self.opt_target(e, "to"),
            },
            "call" => {
                let f = Self::get(e, "flow")?;
                StepKind::Call {
                    flow: self.string(f, "flow")?,
                    flow_pos: f.pos,
                    next,
                }
            }
            "return" => StepKind::Return,
            _ => StepKind::Hangup {
                say: self.opt_message(e, "say"),
                reason: Self::get(e, "reason")
                    .and_then(|n| self.string(n, "reason"))
                    .unwrap_or_else(|| "normal".into()),
            },
        };
        Some(Step {
            name: step_name,
            pos: name.pos,
            kind,
        })
    }

    fn settings(&mut self, node: Option<&Node>) -> Settings {
        let mut s = Settings::default();
        let Some(node) = node else { return s };
        let Some(e) = self.map(
            node,
            "settings",
            &[
                "language",
                "rate",
                "barge_in",
                "timeouts",
                "recording_notice",
            ],
        ) else {
            return s;
        };
        if let Some(n) = Self::get(e, "language") {
            match n.as_str().and_then(Lang::parse) {
                Some(l) => s.language = l,
                None => self.error(n.pos, "unknown language", "use zh or en"),
            }
        }
        if let Some(r) = Self::get(e, "rate").and_then(|n| self.number(n, "rate")) {
            s.rate = r;
        }
        if let Some(n) = Self::get(e, "barge_in") {
            s.barge_in = self.barge_in(n, s.barge_in);
        }
        if let Some(n) = Self::get(e, "timeouts") {
            s.timeouts = self.timeouts(n, s.timeouts);
        }
        if let Some(n) = Self::get(e, "recording_notice") {
            match n.as_str() {
                Some("true") => s.recording_notice = true,
                Some("false") => s.recording_notice = false,
                _ => self.error(
                    n.pos,
                    "recording_notice should be true or false",
                    "write true or false",
                ),
            }
        }
        s
    }

    fn globals(&mut self, node: Option<&Node>) -> Vec<Global> {
        let Some(node) = node else { return Vec::new() };
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                "globals should be a list",
                "write `- digit: 0` with `goto:` or `do: repeat`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(e) = self.map(item, "a global handler", &["digit", "say", "goto", "do"])
            else {
                continue;
            };
            let digit = self.key(Self::get(e, "digit"), "digit", None);
            let words = Self::get(e, "say")
                .map(|n| self.strings(n, "say"))
                .unwrap_or_default();
            let action = match (Self::get(e, "goto"), Self::get(e, "do")) {
                (Some(g), None) => match self.target(g, "goto") {
                    Some(t) => GlobalAction::Goto(t),
                    None => continue,
                },
                (None, Some(d)) if d.as_str() == Some("repeat") => GlobalAction::Repeat,
                _ => {
                    self.error(
                        item.pos,
                        "global handler needs `goto: STEP` or `do: repeat`",
                        "add one of them",
                    );
                    continue;
                }
            };
            out.push(Global {
                digit,
                words,
                action,
                pos: item.pos,
            });
        }
        out
    }

    /// `inputs: [order_id, name]`: the variables whoever starts the flow must give it (an
    /// outbound call's `vars`), in file order.
    fn inputs(&mut self, node: Option<&Node>) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "inputs should be a list of variable names but is {}",
                    if node.is_null() {
                        "empty"
                    } else {
                        node.describe()
                    }
                ),
                "write e.g. inputs: [order_id, name], or remove the line",
            );
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        let mut first: BTreeMap<String, Pos> = BTreeMap::new();
        for item in items {
            let Some(name) = self.string(item, "an input") else {
                continue;
            };
            if !self.check_var_name(item, &name) {
                continue;
            }
            if let Some(at) = first.get(&name) {
                self.error(
                    item.pos,
                    format!(
                        "input \"{name}\" is listed twice (first at line {})",
                        at.line
                    ),
                    "list each input once",
                );
                continue;
            }
            first.insert(name.clone(), item.pos);
            out.push(name);
        }
        out
    }

    /// Decodes a whole flow file.
    pub fn flow(&mut self, default_name: &str, root: &Node) -> Option<Flow> {
        let e = self.map(
            root,
            "the flow file",
            &[
                "flow",
                "description",
                "inputs",
                "start",
                "settings",
                "globals",
                "steps",
            ],
        )?;
        let name = Self::get(e, "flow")
            .and_then(|n| self.string(n, "flow"))
            .unwrap_or_else(|| default_name.to_string());
        let inputs = self.inputs(Self::get(e, "inputs"));
        let settings = self.settings(Self::get(e, "settings"));
        let globals = self.globals(Self::get(e, "globals"));
        let mut steps = Vec::new();
        let mut index = BTreeMap::new();
        match Self::get(e, "steps").map(|n| (n, n.as_map())) {
            Some((_, Some(m))) => {
                for (k, v) in m {
                    if let Some(s) = self.step(k, v, &settings) {
                        index.insert(s.name.clone(), steps.len());
                        steps.push(s);
                    }
                }
            }
            Some((n, None)) => self.error(
                n.pos,
                "`steps:` should map step names to steps",
                "write `step_name:` lines with `type:` under them",
            ),
            None => self.error(root.pos, "flow has no `steps:`", "add `steps:`"),
        }
        let start = match Self::get(e, "start") {
            Some(n) => self.target(n, "start")?,
            None => {
                self.error(
                    root.pos,
                    "flow has no `start:` step",
                    "add `start: FIRST_STEP`",
                );
                return None;
            }
        };
        Some(Flow {
            name,
            file: self.file.to_string(),
            inputs,
            start,
            settings,
            globals,
            steps,
            index,
        })
    }
}
