//! A tiny positioned YAML tree built from `saphyr-parser` events.
//!
//! Serde-based YAML loaders drop positions and silently keep the last of two duplicate keys;
//! flow files need both: every error points at a line and column, and a duplicated key is an
//! error (an administrator who writes `next:` twice meant something). Anchors and aliases are
//! rejected: flows should be readable top to bottom.

use crate::diagnostic::{Diagnostic, Pos};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Maximum nesting depth accepted; protects the recursive decoders from hostile input.
const MAX_DEPTH: usize = 64;

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it starts.
    pub pos: Pos,
}

/// The shape of a node. Scalars stay strings; decoders convert them.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted or block scalars.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in source order (keys are scalars, duplicates already rejected).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for a plain `~`, `null` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Mapping entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A short description of the node kind for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Parses one YAML document. Returns the root (None for an empty file) or every problem found.
pub fn parse(file: &str, text: &str) -> Result<Option<Node>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) => {
                let m = e.marker();
                diags.push(Diagnostic::new(
                    file,
                    Pos::new(m.line(), m.col() + 1),
                    format!("YAML syntax error: {}", e.info()),
                    "check indentation, quoting and that every `key:` is followed by a space",
                ));
                return Err(diags);
            }
        };
        let pos = pos_of(&span);
        let finished = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diags.push(Diagnostic::new(
                        file,
                        pos,
                        "more than one YAML document in this file",
                        "put each flow in its own file and remove the extra `---`",
                    ));
                    return Err(diags);
                }
                None
            }
            Event::Alias(_) => {
                diags.push(Diagnostic::new(
                    file,
                    pos,
                    "YAML aliases (`*name`) are not supported",
                    "write the value out in full so the flow reads top to bottom",
                ));
                return Err(diags);
            }
            Event::Scalar(text, style, anchor, _) => {
                if anchor != 0 {
                    diags.push(Diagnostic::new(
                        file,
                        pos,
                        "YAML anchors (`&name`) are not supported",
                        "remove the anchor",
                    ));
                }
                Some(Node {
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    pos,
                })
            }
            Event::SequenceStart(_, _) | Event::MappingStart(_, _) => {
                if stack.len() >= MAX_DEPTH {
                    diags.push(Diagnostic::new(
                        file,
                        pos,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        "flatten the structure",
                    ));
                    return Err(diags);
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq(pos, Vec::new()));
                } else {
                    stack.push(Frame::Map(pos, Vec::new(), None));
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Some(Node {
                    kind: NodeKind::Seq(items),
                    pos: p,
                }),
                Some(Frame::Map(p, entries, _)) => Some(Node {
                    kind: NodeKind::Map(entries),
                    pos: p,
                }),
                None => None,
            },
            _ => None,
        };
        let Some(node) = finished else { continue };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    if node.as_str().is_none() {
                        diags.push(Diagnostic::new(
                            file,
                            node.pos,
                            format!("mapping key is {}", node.describe()),
                            "keys must be plain names",
                        ));
                    } else if let Some((first, _)) =
                        entries.iter().find(|(k, _)| k.as_str() == node.as_str())
                    {
                        diags.push(Diagnostic::new(
                            file,
                            node.pos,
                            format!(
                                "duplicate key \"{}\" (first defined at line {})",
                                node.as_str().unwrap_or_default(),
                                first.pos.line
                            ),
                            "remove one of them; YAML would silently keep only the last",
                        ));
                    }
                    *pending = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
    if diags.is_empty() {
        Ok(root)
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a.yaml", "a:\n  b: 1\n")
            .expect("parses")
            .expect("root");
        let m = root.as_map().expect("map");
        let inner = m[0].1.as_map().expect("map");
        assert_eq!(inner[0].0.pos, Pos::new(2, 3));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a.yaml", "a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert!(
            err[0]
                .to_string()
                .starts_with("a.yaml:3:1: error: duplicate key \"a\"")
        );
    }

    #[test]
    fn syntax_errors_do_not_panic() {
        for src in [
            "a: [1, 2",
            "a: b: c",
            "- a\nb: 1",
            "{{{{",
            "*x",
            "a: &x 1\nb: *x",
        ] {
            assert!(parse("x.yaml", src).is_err(), "{src}");
        }
    }
}
