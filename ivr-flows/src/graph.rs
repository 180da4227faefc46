//! Mermaid flowchart of a flow, so administrators can review a change as a picture.

use crate::flowset::FlowSet;
use crate::model::{GlobalAction, StepKind};
use std::fmt::Write;

fn id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('"', "'")
}

/// A `flowchart TD` diagram of `flow`; empty string if there is no such flow.
pub fn mermaid(set: &FlowSet, flow: &str) -> String {
    let Some(f) = set.flow(flow) else {
        return String::new();
    };
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(out, "    start((start)) --> s_{}", id(&f.start.step));
    for s in &f.steps {
        let extra = match &s.kind {
            StepKind::Call { flow, .. } => format!(" {flow}"),
            StepKind::Transfer { target, .. } => format!(" {target:?}"),
            _ => String::new(),
        };
        let label = esc(&format!(
            "{}<br/><i>{}{}</i>",
            s.name,
            s.kind.type_name(),
            extra
        ));
        let shape = match &s.kind {
            StepKind::Branch { .. } => format!("{{\"{label}\"}}"),
            StepKind::Hangup { .. } | StepKind::Transfer { .. } | StepKind::Return => {
                format!("([\"{label}\"])")
            }
            _ => format!("[\"{label}\"]"),
        };
        let _ = writeln!(out, "    s_{}{shape}", id(&s.name));
        for (edge, t) in s.kind.edges() {
            let _ = writeln!(
                out,
                "    s_{} -->|\"{}\"| s_{}",
                id(&s.name),
                esc(&edge),
                id(&t.step)
            );
        }
    }
    for (i, g) in f.globals.iter().enumerate() {
        if let GlobalAction::Goto(t) = &g.action {
            let what = g
                .digit
                .map(String::from)
                .into_iter()
                .chain(g.words.iter().cloned())
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(
                out,
                "    g{i}>\"any step: {}\"] -.-> s_{}",
                esc(&what),
                id(&t.step)
            );
        }
    }
    out
}
