//! Whole-set checks that need every flow at once: references, reachability, dead ends, loops
//! that never wait for the caller, duplicate menu keys, audio files and condition types.
//! A flow set goes live only if this finds nothing.

use crate::diagnostic::{Diagnostic, Pos, suggest};
use crate::expr::{self, Expr, Type, VarTypes};
use crate::model::*;
use std::collections::{BTreeMap, BTreeSet};

/// Per-language clip names used by `say_digits`, `say_number` and `say_order_number`
/// (files `prompts/<lang>/digits/<name>.wav`).
pub fn number_clips(lang: Lang) -> Vec<String> {
    let mut v: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    match lang {
        Lang::Zh => v.extend(["10", "hundred", "thousand", "wan"].map(String::from)),
        Lang::En => {
            v.extend((10..20).map(|d| d.to_string()));
            v.extend((2..10).map(|d| (d * 10).to_string()));
            v.extend(["hundred", "thousand"].map(String::from));
        }
    }
    v
}

/// The path of a number clip, relative to the flows directory.
pub fn number_clip_path(lang: Lang, name: &str) -> String {
    format!("prompts/{}/digits/{name}.wav", lang.code())
}

struct Checker<'a> {
    flows: &'a BTreeMap<String, Flow>,
    audio_exists: &'a dyn Fn(&str) -> bool,
    diags: Vec<Diagnostic>,
    vars: VarTypes,
    checked_number_clips: bool,
}

impl Checker<'_> {
    fn err(&mut self, flow: &Flow, pos: Pos, message: String, hint: String) {
        self.diags
            .push(Diagnostic::new(flow.file.clone(), pos, message, hint));
    }

    fn target(&mut self, flow: &Flow, from: &str, label: &str, t: &Target) {
        if flow.index.contains_key(&t.step) {
            return;
        }
        let hint = suggest(&t.step, flow.index.keys().map(String::as_str), || {
            format!("add a step \"{}\" or fix the name", t.step)
        });
        self.err(
            flow,
            t.pos,
            format!("{from} {label} goes to \"{}\" which does not exist", t.step),
            hint,
        );
    }

    fn infer_vars(&mut self) {
        let mut types = VarTypes::new();
        let assign = |types: &mut VarTypes, name: &str, t: Type| {
            let e = types.entry(name.to_string()).or_insert(t);
            if *e != t {
                *e = Type::Any;
            }
        };
        for flow in self.flows.values() {
            // Inputs arrive as text (an outbound call's `vars`).
            for name in &flow.inputs {
                assign(&mut types, name, Type::Str);
            }
            for s in &flow.steps {
                match &s.kind {
                    StepKind::Collect { into, .. }
                    | StepKind::Submit { into, .. }
                    | StepKind::Lookup { into, .. } => assign(&mut types, into, Type::Str),
                    StepKind::Record { into, .. } => {
                        assign(&mut types, into, Type::Str);
                        assign(&mut types, &format!("{into}_text"), Type::Str);
                        assign(&mut types, &format!("{into}_ms"), Type::Num);
                    }
                    StepKind::Menu { options, .. } => options
                        .iter()
                        .flat_map(|o| &o.set)
                        .for_each(|(k, _)| assign(&mut types, k, Type::Str)),
                    _ => {}
                }
            }
        }
        // `set` steps may read each other; a few passes reach a fixpoint for realistic flows.
        for _ in 0..4 {
            for flow in self.flows.values() {
                for s in &flow.steps {
                    if let StepKind::Set { vars, .. } = &s.kind {
                        for (name, e, _) in vars {
                            if let Ok(t) = expr::type_of(e, &types)
                                && types.get(name).is_none_or(|old| *old != t)
                            {
                                let merged = if types.contains_key(name) {
                                    Type::Any
                                } else {
                                    t
                                };
                                types.insert(name.clone(), merged);
                            }
                        }
                    }
                }
            }
        }
        self.vars = types;
    }

    fn expr(&mut self, flow: &Flow, pos: Pos, what: &str, e: &Expr, want: Option<Type>) {
        match expr::type_of(e, &self.vars) {
            Err(err) => self.err(
                flow,
                pos,
                format!("type error in {what}: {}", err.message),
                err.hint,
            ),
            Ok(t) => {
                if let Some(w) = want.filter(|w| *w != t && t != Type::Any) {
                    self.err(
                        flow,
                        pos,
                        format!("{what} is {t} but must be {w}"),
                        "write a comparison, e.g. time.hour < 9".into(),
                    );
                }
            }
        }
    }

    fn message(&mut self, flow: &Flow, m: &Message) {
        for part in &m.parts {
            match part {
                Part::Clip(clips) => {
                    for (lang, clip) in clips {
                        if let Some(a) = &clip.audio
                            && !(self.audio_exists)(a)
                        {
                            self.err(flow, clip.pos, format!("{} audio file \"{a}\" does not exist", lang.code()), "record it under the flows directory (see prompts.sh) or fix the path".into());
                        }
                        for seg in &clip.text {
                            if let Seg::Expr(e) = seg {
                                self.expr(flow, clip.pos, "a text placeholder", e, None);
                            }
                        }
                    }
                }
                Part::Digits(e, pos) | Part::Number(e, pos) | Part::OrderNumber(e, pos) => {
                    self.expr(flow, *pos, "a spoken number", e, None);
                    if !self.checked_number_clips {
                        self.checked_number_clips = true;
                        for lang in Lang::ALL {
                            let missing: Vec<String> = number_clips(lang)
                                .into_iter()
                                .filter(|n| !(self.audio_exists)(&number_clip_path(lang, n)))
                                .collect();
                            if !missing.is_empty() {
                                self.err(
                                    flow,
                                    *pos,
                                    format!(
                                        "number clips missing for {}: {}",
                                        lang.code(),
                                        missing.join(", ")
                                    ),
                                    format!(
                                        "add {} (see prompts.sh)",
                                        number_clip_path(lang, "NAME")
                                    ),
                                );
                            }
                        }
                    }
                }
                Part::Pause(_) => {}
            }
        }
    }

    fn flow(&mut self, flow: &Flow) {
        if !flow.index.contains_key(&flow.start.step) {
            let hint = suggest(
                &flow.start.step,
                flow.index.keys().map(String::as_str),
                || "name an existing step".into(),
            );
            self.err(
                flow,
                flow.start.pos,
                format!("start step \"{}\" does not exist", flow.start.step),
                hint,
            );
        }
        for g in &flow.globals {
            if let GlobalAction::Goto(t) = &g.action {
                self.target(flow, "global handler", "", t);
            }
        }
        for s in &flow.steps {
            let from = format!("step \"{}\"", s.name);
            for (label, t) in s.kind.edges() {
                let label = match &s.kind {
                    StepKind::Menu { .. } if label != "on_fail" => format!("option {label}"),
                    _ => label,
                };
                self.target(flow, &from, &label, t);
            }
            self.step_details(flow, s, &from);
        }
        self.reachability(flow);
        self.loops(flow);
    }

    fn step_details(&mut self, flow: &Flow, s: &Step, from: &str) {
        let dead = |kind: &StepKind| -> Option<&'static str> {
            match kind {
                StepKind::Prompt { next: None, .. }
                | StepKind::Set { next: None, .. }
                | StepKind::Record { next: None, .. }
                | StepKind::Call { next: None, .. }
                | StepKind::Collect { next: None, .. } => Some("next"),
                StepKind::Submit { next: None, .. } | StepKind::Lookup { next: None, .. } => {
                    Some("next")
                }
                StepKind::Submit { on_fail: None, .. } | StepKind::Lookup { on_fail: None, .. } => {
                    Some("on_fail")
                }
                StepKind::Goto { to: None } => Some("to"),
                StepKind::Branch {
                    otherwise: None, ..
                } => Some("else"),
                _ => None,
            }
        };
        if let Some(field) = dead(&s.kind) {
            self.err(
                flow,
                s.pos,
                format!("{from} ends nowhere: it has no `{field}:`"),
                format!("add `{field}: STEP` (use a hangup step to end the call)"),
            );
        }
        match &s.kind {
            StepKind::Prompt { say, .. } => self.message(flow, say),
            StepKind::Menu { input, options } => {
                self.input(flow, input);
                if options.is_empty() {
                    self.err(
                        flow,
                        s.pos,
                        format!("{from} has no options"),
                        "add at least one option".into(),
                    );
                }
                let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
                for o in options {
                    if let Some(d) = &o.digits
                        && let Some(first) = seen.insert(d, o.pos)
                    {
                        self.err(
                            flow,
                            o.pos,
                            format!("{from} uses key {d} twice (first at line {})", first.line),
                            "give each option its own key".into(),
                        );
                    }
                }
            }
            StepKind::Collect { input, confirm, .. } => {
                self.input(flow, input);
                if let Some(c) = confirm {
                    self.message(flow, c);
                }
            }
            StepKind::Set { vars, .. } => {
                for (name, e, pos) in vars {
                    self.expr(flow, *pos, &format!("vars.{name}"), e, None);
                }
            }
            StepKind::Branch { cases, .. } => {
                for c in cases {
                    self.expr(flow, c.pos, "the condition", &c.cond, Some(Type::Bool));
                }
            }
            StepKind::Transfer {
                say,
                context,
                callback,
                ..
            } => {
                if let Some(m) = say {
                    self.message(flow, m);
                }
                if let Some(m) = callback.as_ref().and_then(|c| c.say.as_ref()) {
                    self.message(flow, m);
                }
                for v in context.iter().flatten() {
                    if !self.vars.contains_key(v) {
                        let hint = suggest(v, self.vars.keys().map(String::as_str), || {
                            "name a variable that some step sets".into()
                        });
                        self.err(
                            flow,
                            s.pos,
                            format!("{from} passes \"{v}\" which no step sets"),
                            hint,
                        );
                    }
                }
            }
            StepKind::Record { say: Some(m), .. } | StepKind::Hangup { say: Some(m), .. } => {
                self.message(flow, m)
            }
            StepKind::Submit { fields, .. } => {
                for (k, e) in fields {
                    self.expr(flow, s.pos, &format!("order field {k}"), e, None);
                }
            }
            StepKind::Lookup { order, .. } => {
                self.expr(flow, s.pos, "the order number", order, None)
            }
            StepKind::Call {
                flow: callee,
                flow_pos,
                ..
            } if !self.flows.contains_key(callee) => {
                let hint = suggest(callee, self.flows.keys().map(String::as_str), || {
                    "add that flow file or fix the name".into()
                });
                self.err(
                    flow,
                    *flow_pos,
                    format!("{from} calls flow \"{callee}\" which does not exist"),
                    hint,
                );
            }
            _ => {}
        }
    }

    fn input(&mut self, flow: &Flow, input: &Input) {
        self.message(flow, &input.say);
        for m in [&input.reprompt, &input.no_input.say, &input.no_match.say]
            .into_iter()
            .flatten()
        {
            self.message(flow, m);
        }
    }

    fn reachability(&mut self, flow: &Flow) {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = vec![flow.start.step.as_str()];
        for g in &flow.globals {
            if let GlobalAction::Goto(t) = &g.action {
                todo.push(&t.step);
            }
        }
        while let Some(n) = todo.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(s) = flow.step(n) {
                todo.extend(s.kind.edges().into_iter().map(|(_, t)| t.step.as_str()));
            }
        }
        for s in &flow.steps {
            if !seen.contains(s.name.as_str()) {
                self.err(flow, s.pos, format!("step \"{}\" is unreachable", s.name), format!("no step, option or global handler goes to it from start \"{}\"; link it or delete it", flow.start.step));
            }
        }
    }

    /// Tarjan's strongly connected components; a cyclic component with no step that waits for
    /// the caller and no edge out of it would spin forever.
    fn loops(&mut self, flow: &Flow) {
        let n = flow.steps.len();
        let adj: Vec<Vec<usize>> = flow
            .steps
            .iter()
            .map(|s| {
                s.kind
                    .edges()
                    .iter()
                    .filter_map(|(_, t)| flow.index.get(&t.step).copied())
                    .collect()
            })
            .collect();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut counter = 0;
        let mut comps: Vec<Vec<usize>> = Vec::new();
        // Iterative Tarjan to stay safe on huge generated flows.
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            let mut work: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some((v, i)) = work.pop() {
                if i == 0 {
                    index[v] = counter;
                    low[v] = counter;
                    counter += 1;
                    stack.push(v);
                    on_stack[v] = true;
                }
                if let Some(&w) = adj[v].get(i) {
                    work.push((v, i + 1));
                    if index[w] == usize::MAX {
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    comps.push(comp);
                }
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
            }
        }
        for comp in comps {
            let cyclic = comp.len() > 1 || adj[comp[0]].contains(&comp[0]);
            if !cyclic {
                continue;
            }
            let set: BTreeSet<usize> = comp.iter().copied().collect();
            let waits = comp.iter().any(|&i| flow.steps[i].kind.waits_for_caller());
            let exits = comp.iter().any(|&i| {
                adj[i].iter().any(|w| !set.contains(w))
                    || matches!(
                        flow.steps[i].kind,
                        StepKind::Transfer { .. } | StepKind::Hangup { .. } | StepKind::Return
                    )
            });
            if !waits && !exits {
                let mut names: Vec<&str> =
                    comp.iter().map(|&i| flow.steps[i].name.as_str()).collect();
                names.sort_unstable();
                let first = comp
                    .iter()
                    .map(|&i| &flow.steps[i])
                    .min_by_key(|s| s.pos)
                    .map_or(Pos::default(), |s| s.pos);
                self.err(flow, first, format!("loop without exit: steps {} go round forever without waiting for the caller", names.join(" -> ")), "add a menu/collect step to the loop or a branch that leaves it".into());
            }
        }
    }
}

/// Checks a decoded set of flows. `audio_exists` answers for paths relative to the flows dir.
pub fn check(
    flows: &BTreeMap<String, Flow>,
    audio_exists: &dyn Fn(&str) -> bool,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        flows,
        audio_exists,
        diags: Vec::new(),
        vars: VarTypes::new(),
        checked_number_clips: false,
    };
    c.infer_vars();
    for f in flows.values() {
        c.flow(f);
    }
    c.diags
        .sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    c.diags
}
