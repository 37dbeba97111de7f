//! `fleet.yaml`'s `memory:` section: whether agents get lessons, and the knobs of forgetting.
//!
//! ```yaml
//! memory:
//!   enabled: true            # false: no lessons injected, no retrospectives
//!   inject_tokens: 800       # lessons in one prompt take at most this many tokens
//!   archive_after_days: 60   # a lesson that never helped is archived after this idle time
//!   scope_cap: 200           # live lessons per scope
//! ```

use crate::decode::Decoder;
use crate::yaml::{Node, ScalarKind, Value};

pub(crate) const MEMORY_KEYS: &[&str] = &[
    "enabled",
    "inject_tokens",
    "archive_after_days",
    "scope_cap",
];

/// The `memory:` section, or its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    pub enabled: bool,
    pub inject_tokens: usize,
    pub archive_after_days: u32,
    pub scope_cap: usize,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            enabled: true,
            inject_tokens: 800,
            archive_after_days: 60,
            scope_cap: 200,
        }
    }
}

pub(crate) fn memory(d: &mut Decoder<'_>, node: &Node) -> MemoryConfig {
    let mut m = MemoryConfig::default();
    let Some(fields) = d.fields(node, MEMORY_KEYS, "in `memory`", "a mapping") else {
        return m;
    };
    for f in &fields.list {
        let v = f.value;
        match f.key {
            "enabled" => match &v.value {
                Value::Scalar {
                    kind: ScalarKind::Bool,
                    text,
                } => m.enabled = text.eq_ignore_ascii_case("true"),
                _ => {
                    let found = v.describe();
                    d.error(
                        v.loc,
                        format!("`enabled`: expected true or false, found {found}"),
                    );
                }
            },
            "inject_tokens" => {
                if let Some(n) = range(d, v, f.key, 0, 100_000) {
                    m.inject_tokens = n as usize;
                }
            }
            "archive_after_days" => {
                if let Some(n) = range(d, v, f.key, 1, 36_500) {
                    m.archive_after_days = n as u32;
                }
            }
            "scope_cap" => {
                if let Some(n) = range(d, v, f.key, 1, 100_000) {
                    m.scope_cap = n as usize;
                }
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    m
}

/// An integer in `lo..=hi`, or an error naming the range.
fn range(d: &mut Decoder<'_>, node: &Node, key: &str, lo: i64, hi: i64) -> Option<i64> {
    let expected = format!("an integer from {lo} to {hi}");
    let n = d.integer(node, key, &expected)?;
    if !(lo..=hi).contains(&n) {
        d.error(node.loc, format!("`{key}`: expected {expected}, found {n}"));
        return None;
    }
    Some(n)
}
