//! `fleet.yaml`'s `memory:` section: whether agents get lessons, and the knobs of forgetting.
//!
//! ```yaml
//! memory:
//!   enabled: true            # false: no lessons injected, no retrospectives
//!   inject_tokens: 800       # lessons in one prompt take at most this many tokens
//!   archive_after_days: 60   # a lesson that never helped is archived after this idle time
//!   scope_cap: 200           # live lessons per scope
//!   embeddings:              # optional; needs a fleet built with `--features embeddings`
//!     base_url: https://api.openai.com/v1
//!     model: text-embedding-3-small
//!     key_env: OPENAI_API_KEY
//! ```

use crate::decode::Decoder;
use crate::yaml::{Node, ScalarKind, Value};

pub(crate) const MEMORY_KEYS: &[&str] = &[
    "enabled",
    "inject_tokens",
    "archive_after_days",
    "scope_cap",
    "embeddings",
];

pub(crate) const EMBEDDINGS_KEYS: &[&str] = &["base_url", "model", "key_env"];

/// Where search gets embeddings from: an OpenAI-compatible `POST {base_url}/embeddings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsConfig {
    pub base_url: String,
    pub model: String,
    /// The variable holding the API key (never the key itself); none: no `Authorization`.
    pub key_env: Option<String>,
}

/// Whether this build can use `memory.embeddings` (the `embeddings` feature, which
/// `fleet-memory`'s feature of that name turns on).
pub const EMBEDDINGS_BUILT: bool = cfg!(feature = "embeddings");

/// The `memory:` section, or its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    pub enabled: bool,
    pub inject_tokens: usize,
    pub archive_after_days: u32,
    pub scope_cap: usize,
    /// Embeddings fused into search; none: BM25 alone.
    pub embeddings: Option<EmbeddingsConfig>,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            enabled: true,
            inject_tokens: 800,
            archive_after_days: 60,
            scope_cap: 200,
            embeddings: None,
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
            "embeddings" => m.embeddings = embeddings(d, v),
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    m
}

/// `memory.embeddings`. A build without the feature refuses it here, at load, rather than
/// searching without embeddings while the file says otherwise.
fn embeddings(d: &mut Decoder<'_>, node: &Node) -> Option<EmbeddingsConfig> {
    let fields = d.fields(node, EMBEDDINGS_KEYS, "in `memory.embeddings`", "a mapping")?;
    let (mut base_url, mut model, mut key_env) = (None, None, None);
    for f in &fields.list {
        let Some(t) = d.text(f.value, f.key) else {
            continue;
        };
        match f.key {
            "base_url" => {
                let u = t.value.trim_end_matches('/').to_string();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    d.error(
                        t.at,
                        format!("`base_url`: expected an http(s) URL, found {:?}", t.value),
                    );
                    continue;
                }
                base_url = Some(u);
            }
            "model" => model = Some(t.value),
            "key_env" => key_env = Some(t.value),
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    if !EMBEDDINGS_BUILT {
        d.error(
            node.loc,
            "`memory.embeddings`: this fleet was built without the `embeddings` feature \
             (cargo build --features embeddings); remove the key or use such a build",
        );
        return None;
    }
    let mut missing = Vec::new();
    if base_url.is_none() {
        missing.push("`base_url`");
    }
    if model.is_none() {
        missing.push("`model`");
    }
    if !missing.is_empty() {
        d.error(
            node.loc,
            format!("`memory.embeddings` needs {}", missing.join(" and ")),
        );
        return None;
    }
    Some(EmbeddingsConfig {
        base_url: base_url?,
        model: model?,
        key_env,
    })
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
