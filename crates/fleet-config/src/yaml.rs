//! A small YAML tree where every node knows its position, built from `saphyr-parser` events.
//!
//! Mappings keep all their entries in source order, duplicates included, so the decoder can
//! report each duplicate key where it was written. Scalars are resolved with the YAML 1.2 core
//! schema (via `saphyr::Scalar`) but keep their text as written.

use crate::Location;
use saphyr::Scalar;
use saphyr_parser::{Event, Marker, Parser, ScanError};
use std::collections::HashMap;

/// Deepest nesting accepted; a runbook needs about five levels.
const MAX_DEPTH: usize = 128;
/// Most nodes a document may expand to (guards against alias bombs).
const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub loc: Location,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar { text: String, kind: ScalarKind },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// How the core schema resolved a scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarKind {
    Null,
    Bool,
    Int(i64),
    Float,
    Str,
}

impl Node {
    /// The text of a non-null scalar, as written (quotes removed).
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, kind } if *kind != ScalarKind::Null => Some(text),
            _ => None,
        }
    }

    /// The value of `key` in a mapping (the first one if repeated).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Scalar {
                kind: ScalarKind::Null,
                ..
            } => "nothing".to_string(),
            Value::Scalar {
                kind: ScalarKind::Bool,
                text,
            } => format!("`{text}`"),
            Value::Scalar {
                kind: ScalarKind::Int(_) | ScalarKind::Float,
                text,
            } => {
                format!("the number {text}")
            }
            Value::Scalar {
                kind: ScalarKind::Str,
                text,
            } => format!("the text {text:?}"),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::count).sum(),
            Value::Map(entries) => entries.iter().map(|(k, v)| k.count() + v.count()).sum(),
        }
    }
}

/// A YAML error that stops parsing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub loc: Location,
    pub message: String,
}

impl SyntaxError {
    fn new(loc: Location, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            loc,
            message: message.into(),
        }
    }
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> SyntaxError {
        SyntaxError::new(location(*e.marker()), format!("invalid YAML: {}", e.info()))
    }
}

fn location(mark: Marker) -> Location {
    Location {
        line: mark.line().max(1),
        col: mark.col() + 1,
    }
}

/// Parses a single YAML document. `Ok(None)` means the text holds no document at all.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, span) = event?;
        builder.on_event(event, location(span.start))?;
    }
    Ok(builder.root)
}

enum Open {
    Seq(Vec<Node>),
    /// Entries so far and a key waiting for its value.
    Map(Vec<(Node, Node)>, Option<Node>),
}

struct Frame {
    loc: Location,
    anchor: usize,
    open: Open,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, loc: Location) -> Result<(), SyntaxError> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError::new(
                        loc,
                        "a second YAML document; expected a runbook to be a single document",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let kind =
                    match Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref()) {
                        Some(Scalar::Null) => ScalarKind::Null,
                        Some(Scalar::Boolean(_)) => ScalarKind::Bool,
                        Some(Scalar::Integer(i)) => ScalarKind::Int(i),
                        Some(Scalar::FloatingPoint(_)) => ScalarKind::Float,
                        Some(Scalar::String(_)) => ScalarKind::Str,
                        None => {
                            let tag = tag
                                .map(|t| format!("{}{}", t.handle, t.suffix))
                                .unwrap_or_default();
                            return Err(SyntaxError::new(
                                loc,
                                format!("the value {text:?} does not match its tag `{tag}`"),
                            ));
                        }
                    };
                let node = Node {
                    loc,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        kind,
                    },
                };
                self.add(node, anchor, 1)?;
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(SyntaxError::new(loc, "alias to an unknown anchor"));
                };
                let node = Node {
                    loc,
                    value: anchored.value.clone(),
                };
                let cost = node.count();
                self.add(node, 0, cost)?;
            }
            Event::SequenceStart(anchor, _) => self.open(loc, anchor, Open::Seq(Vec::new()))?,
            Event::MappingStart(anchor, _) => {
                self.open(loc, anchor, Open::Map(Vec::new(), None))?
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self
                    .stack
                    .pop()
                    .expect("the parser balances start and end events");
                let value = match frame.open {
                    Open::Seq(items) => Value::Seq(items),
                    Open::Map(entries, _) => Value::Map(entries),
                };
                // The children were counted as they were added.
                self.add(
                    Node {
                        loc: frame.loc,
                        value,
                    },
                    frame.anchor,
                    1,
                )?;
            }
        }
        Ok(())
    }

    fn open(&mut self, loc: Location, anchor: usize, open: Open) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::new(
                loc,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(Frame { loc, anchor, open });
        Ok(())
    }

    /// Adds a finished node to the open container; `cost` is how many values it adds.
    fn add(&mut self, node: Node, anchor: usize, cost: usize) -> Result<(), SyntaxError> {
        self.nodes += cost;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::new(
                node.loc,
                format!("the document expands to more than {MAX_NODES} values (aliases?)"),
            ));
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame {
                open: Open::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                open: Open::Map(entries, pending),
                ..
            }) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, col: usize) -> Location {
        Location { line, col }
    }

    #[test]
    fn positions_are_one_based_and_point_at_the_value() {
        let root = parse("a: 1\nlist:\n  - x\n  - 'y'\nmap: { k: v }\n")
            .unwrap()
            .unwrap();
        assert_eq!(root.get("a").unwrap().loc, at(1, 4));
        let Value::Seq(items) = &root.get("list").unwrap().value else {
            panic!()
        };
        assert_eq!(items[0].loc, at(3, 5));
        assert_eq!(items[1].loc, at(4, 5));
        assert_eq!(items[1].scalar_text(), Some("y"));
        assert_eq!(root.get("map").unwrap().get("k").unwrap().loc, at(5, 11));
    }

    #[test]
    fn scalars_are_resolved_with_the_core_schema() {
        let root = parse("a: 1\nb: '1'\nc: true\nd: ~\ne:\nf: 1.5\ng: none\n")
            .unwrap()
            .unwrap();
        let kind = |k: &str| match root.get(k).unwrap().value {
            Value::Scalar { kind, .. } => kind,
            _ => panic!(),
        };
        assert_eq!(kind("a"), ScalarKind::Int(1));
        assert_eq!(kind("b"), ScalarKind::Str);
        assert_eq!(kind("c"), ScalarKind::Bool);
        assert_eq!(kind("d"), ScalarKind::Null);
        assert_eq!(kind("e"), ScalarKind::Null);
        assert_eq!(kind("f"), ScalarKind::Float);
        assert_eq!(kind("g"), ScalarKind::Str);
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let root = parse("a: 1\na: 2\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0.loc, at(2, 1));
    }

    #[test]
    fn aliases_are_expanded_at_the_alias() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let b = root.get("b").unwrap();
        assert_eq!(b.loc, at(2, 4));
        assert!(matches!(&b.value, Value::Seq(items) if items.len() == 2));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("more than"), "{err:?}");
    }

    #[test]
    fn empty_text_has_no_document() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }

    #[test]
    fn second_document_is_refused() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.loc.line, 2);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: "), "{err:?}");
        assert!(err.loc.line >= 1);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nesting"), "{err:?}");
    }
}
