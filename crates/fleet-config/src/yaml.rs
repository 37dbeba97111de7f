//! A small YAML tree where every node knows its position, built from `saphyr-parser` events.
//!
//! Mappings keep all their entries in source order, duplicates included, so the decoder can
//! report each duplicate key where it was written. Scalars are resolved with the YAML 1.2 core
//! schema (via `saphyr::Scalar`) but keep their text as written.

use crate::Location;
use saphyr::Scalar;
use saphyr_parser::{Event, Marker, Parser, ScanError};
use std::collections::HashMap;

/// Deepest nesting accepted, aliases expanded included; a runbook needs about five levels.
/// Also what keeps the recursive walks over the tree (decoding, dropping) off the stack's end.
const MAX_DEPTH: usize = 128;
/// Most nodes a document may expand to (guards against alias bombs).
const MAX_NODES: usize = 100_000;
/// Most scalar bytes a document may expand to, anchored copies included: an alias of a long
/// scalar costs its length, not one node, or a 1 MiB text aliased 100,000 times would need
/// 100 GB. Four times the largest file read, so expansion can at most quadruple a document.
const MAX_BYTES: usize = 4 * crate::MAX_FILE_BYTES as usize;

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

    /// What the node holds: its values, scalar bytes and levels of containers.
    fn size(&self) -> Size {
        let mut size = Size {
            nodes: 1,
            bytes: 0,
            depth: usize::from(!matches!(self.value, Value::Scalar { .. })),
        };
        let mut add = |child: &Node| {
            let c = child.size();
            size.nodes += c.nodes;
            size.bytes += c.bytes;
            size.depth = size.depth.max(c.depth + 1);
        };
        match &self.value {
            Value::Scalar { text, .. } => size.bytes = text.len(),
            Value::Seq(items) => items.iter().for_each(add),
            Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                add(k);
                add(v)
            }),
        }
        size
    }
}

/// What a node costs to hold; see [`Node::size`].
#[derive(Debug, Clone, Copy)]
struct Size {
    nodes: usize,
    bytes: usize,
    depth: usize,
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
    bytes: usize,
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
                let bytes = text.len();
                let node = Node {
                    loc,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        kind,
                    },
                };
                self.add(node, anchor, (1, bytes))?;
            }
            Event::Alias(id) => {
                // Measured before it is copied: the copy is what an alias bomb would explode.
                let Some(size) = self.anchors.get(&id).map(Node::size) else {
                    return Err(SyntaxError::new(loc, "alias to an unknown anchor"));
                };
                self.charge(loc, size.nodes, size.bytes)?;
                if self.stack.len() + size.depth > MAX_DEPTH {
                    return Err(SyntaxError::new(
                        loc,
                        format!("the alias nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let node = Node {
                    loc,
                    value: self.anchors[&id].value.clone(),
                };
                self.add(node, 0, (0, 0))?;
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
                    (1, 0),
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

    /// Counts `nodes` values and `bytes` scalar bytes more against the document's limits.
    fn charge(&mut self, loc: Location, nodes: usize, bytes: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::new(
                loc,
                format!("the document expands to more than {MAX_NODES} values (aliases?)"),
            ));
        }
        if self.bytes > MAX_BYTES {
            let mib = MAX_BYTES / (1024 * 1024);
            return Err(SyntaxError::new(
                loc,
                format!("the document expands to more than {mib} MiB of text (aliases?)"),
            ));
        }
        Ok(())
    }

    /// Adds a finished node to the open container; `cost` is how many values and scalar
    /// bytes it adds that were not counted yet.
    fn add(&mut self, node: Node, anchor: usize, cost: (usize, usize)) -> Result<(), SyntaxError> {
        self.charge(node.loc, cost.0, cost.1)?;
        if anchor > 0 {
            // The anchor keeps a copy of its own: it is paid for like one more alias.
            let size = node.size();
            self.charge(node.loc, size.nodes, size.bytes)?;
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
