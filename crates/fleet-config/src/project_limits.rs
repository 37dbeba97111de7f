//! `projects:` in fleet.yaml: the limits of each project's epics — review cycles, re-plans,
//! parallel tasks, and hard limits of money and time per epic. A project without an entry, and
//! every field left out, keeps the defaults ([`ProjectLimits::default`], which are Fleet's
//! built-in limits: 4 cycles, 1 re-plan, 1 re-architecture, 4 parallel tasks, no budget).
//!
//! ```yaml
//! projects:
//!   shop:
//!     max_cycles: 6
//!     concurrency: 2
//!     budget_usd: 5
//!     budget_tokens: 2000000
//!     max_time: 2h
//! ```

use crate::decode::Decoder;
use crate::yaml::Node;
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) const KEYS: &[&str] = &[
    "max_cycles",
    "max_replans",
    "max_rearchitects",
    "concurrency",
    "budget_usd",
    "budget_tokens",
    "max_time",
    "policies",
    "context_refresh_commits",
    "context_refresh_days",
    "memory_export",
];

/// Refresh a project's context after this many new commits on its default branch…
pub const CONTEXT_REFRESH_COMMITS: u32 = 50;
/// …or after this many days, whichever comes first.
pub const CONTEXT_REFRESH_DAYS: u32 = 30;

/// The most tasks of one stage run at once a project may ask for.
const MAX_CONCURRENCY: u32 = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectLimits {
    /// Plan -> result cycles (the first included) before the epic asks a person.
    pub max_cycles: u32,
    /// Re-plans of failed tasks within a cycle before re-planning the architecture.
    pub max_replans: u32,
    /// Re-plans of the architecture over the epic's life before asking a person.
    pub max_rearchitects: u32,
    /// Tasks of an epic's stage that run at once.
    pub concurrency: usize,
    /// Hard limits per epic: reached, the epic ends as `failed` with the reason.
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// Working time per epic (its stages' durations; waiting for a person is not counted).
    pub max_time: Option<Duration>,
    /// `policies:`: the project's own always-on rules (added to the instance's).
    pub policies: Vec<crate::PolicyRule>,
    /// New commits on the default branch after which the project's context is refreshed by a
    /// researcher at the next request (`None`: never on that measure).
    pub context_refresh_commits: Option<u32>,
    /// Days after which the context is refreshed (`None`: never on that measure).
    pub context_refresh_days: Option<u32>,
    /// Opt-in: the repository path at which `fleet memory export`'s JSONL is committed on the
    /// delivery branch at each delivery.
    pub memory_export: Option<String>,
}

impl Default for ProjectLimits {
    fn default() -> Self {
        ProjectLimits {
            max_cycles: 4,
            max_replans: 1,
            max_rearchitects: 1,
            concurrency: 4,
            budget_usd: None,
            budget_tokens: None,
            max_time: None,
            policies: Vec::new(),
            context_refresh_commits: Some(CONTEXT_REFRESH_COMMITS),
            context_refresh_days: Some(CONTEXT_REFRESH_DAYS),
            memory_export: None,
        }
    }
}

/// Decodes `projects:`, a mapping of project name to limits; errors go to `d`.
pub(crate) fn decode(d: &mut Decoder<'_>, node: &Node) -> BTreeMap<String, ProjectLimits> {
    let mut out = BTreeMap::new();
    let Some(entries) = d.entries(node, "in `projects`", "a mapping of projects by name") else {
        return out;
    };
    for e in entries.list {
        if let Err(err) = fleet_core::validate_id(e.key) {
            d.error(e.at, format!("invalid project name {:?}: {err}", e.key));
            continue;
        }
        let context = format!("in project `{}`", e.key);
        let Some(fields) = d.fields(e.value, KEYS, &context, "a mapping of limits") else {
            continue;
        };
        let mut l = ProjectLimits::default();
        for f in &fields.list {
            let v = f.value;
            match f.key {
                "max_cycles" => l.max_cycles = count(d, v, f.key, 1, 100).unwrap_or(l.max_cycles),
                "max_replans" => l.max_replans = count(d, v, f.key, 0, 20).unwrap_or(l.max_replans),
                "max_rearchitects" => {
                    l.max_rearchitects = count(d, v, f.key, 0, 20).unwrap_or(l.max_rearchitects)
                }
                "concurrency" => {
                    l.concurrency =
                        count(d, v, f.key, 1, MAX_CONCURRENCY).map_or(l.concurrency, |n| n as usize)
                }
                "budget_usd" => {
                    l.budget_usd = d.money(v, f.key);
                    if l.budget_usd == Some(0.0) {
                        d.error(
                            v.loc,
                            "`budget_usd` must be more than 0; leave it out for no budget",
                        );
                    }
                }
                "budget_tokens" => l.budget_tokens = count(d, v, f.key, 1, u32::MAX).map(u64::from),
                "policies" => l.policies = crate::policies::policies(d, v),
                "max_time" => {
                    l.max_time = d.duration(v, f.key);
                    if l.max_time.is_some_and(|t| t.is_zero()) {
                        d.error(
                            v.loc,
                            "`max_time` must be longer than zero; leave it out for no limit",
                        );
                    }
                }
                "context_refresh_commits" => {
                    l.context_refresh_commits = count(d, v, f.key, 0, 1_000_000)
                        .map_or(l.context_refresh_commits, |n| (n > 0).then_some(n))
                }
                "context_refresh_days" => {
                    l.context_refresh_days = count(d, v, f.key, 0, 36_500)
                        .map_or(l.context_refresh_days, |n| (n > 0).then_some(n))
                }
                "memory_export" => l.memory_export = repo_path(d, v, f.key),
                _ => unreachable!("fields() keeps known keys only"),
            }
        }
        out.insert(e.key.to_string(), l);
    }
    out
}

/// A relative path inside the repository: no `..`, not absolute, not in `.git`.
fn repo_path(d: &mut Decoder<'_>, node: &Node, key: &str) -> Option<String> {
    let text = d.text(node, key)?.value;
    let parts: Vec<&str> = text.split('/').collect();
    let bad = text.starts_with('/')
        || text.ends_with('/')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        || parts[0] == ".git"
        || text.contains('\\')
        || text.chars().any(char::is_control);
    if bad {
        d.error(
            node.loc,
            format!(
                "`{key}`: expected a relative file path inside the repository \
                 (like `.fleet/graph.jsonl`), found {text:?}"
            ),
        );
        return None;
    }
    Some(text)
}

/// An integer in `lo..=hi`, or an error naming the range.
fn count(d: &mut Decoder<'_>, node: &Node, key: &str, lo: u32, hi: u32) -> Option<u32> {
    let expected = format!("an integer from {lo} to {hi}");
    let n = d.integer(node, key, &expected)?;
    match u32::try_from(n) {
        Ok(n) if (lo..=hi).contains(&n) => Some(n),
        _ => {
            d.error(node.loc, format!("`{key}`: expected {expected}, found {n}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use std::path::Path;
    use std::time::Duration;

    fn errors(text: &str) -> Vec<String> {
        parse_instance(Path::new("fleet.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn limits_decode_and_default_to_the_built_in_ones() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "projects:\n  shop:\n    max_cycles: 6\n    concurrency: 2\n    budget_usd: 2.5\n    \
             budget_tokens: 100000\n    max_time: 90m\n  blog: {}\n",
        )
        .unwrap();
        let shop = cfg.project_limits("shop");
        assert_eq!((shop.max_cycles, shop.concurrency), (6, 2));
        assert_eq!((shop.max_replans, shop.max_rearchitects), (1, 1));
        assert_eq!(shop.budget_usd, Some(2.5));
        assert_eq!(shop.budget_tokens, Some(100_000));
        assert_eq!(shop.max_time, Some(Duration::from_secs(90 * 60)));
        for name in ["blog", "unlisted"] {
            assert_eq!(cfg.project_limits(name), super::ProjectLimits::default());
        }
        let d = super::ProjectLimits::default();
        let core = fleet_core::epic::Limits::default();
        assert_eq!(
            (
                d.max_cycles,
                d.max_replans,
                d.max_rearchitects,
                d.concurrency
            ),
            (core.max_cycles, core.max_replans, core.max_rearchitects, 4)
        );
    }

    #[test]
    fn memory_keys_decode_and_zero_turns_a_refresh_measure_off() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "projects:\n  shop:\n    context_refresh_commits: 3\n    context_refresh_days: 0\n    \
             memory_export: .fleet/graph.jsonl\n",
        )
        .unwrap();
        let shop = cfg.project_limits("shop");
        assert_eq!(shop.context_refresh_commits, Some(3));
        assert_eq!(shop.context_refresh_days, None);
        assert_eq!(shop.memory_export.as_deref(), Some(".fleet/graph.jsonl"));
        let d = cfg.project_limits("other");
        assert_eq!(
            (
                d.context_refresh_commits,
                d.context_refresh_days,
                d.memory_export
            ),
            (
                Some(super::CONTEXT_REFRESH_COMMITS),
                Some(super::CONTEXT_REFRESH_DAYS),
                None
            )
        );
        for bad in ["../x", "/etc/passwd", ".git/config", "a//b", "dir/"] {
            let all = errors(&format!("projects:\n  shop:\n    memory_export: {bad}\n"));
            assert!(
                all.len() == 1 && all[0].starts_with("fleet.yaml:3:20: `memory_export`"),
                "{bad}: {all:?}"
            );
        }
    }

    #[test]
    fn bad_limits_are_located() {
        let all = errors(
            "projects:\n  shop:\n    max_cycles: 0\n    concurrency: lots\n    budget_usd: -1\n    \
             max_time: soon\n    max_cylces: 3\n  Bad Name: {}\n",
        );
        let want = [
            "fleet.yaml:3:17: `max_cycles`: expected an integer from 1 to 100, found 0",
            "fleet.yaml:4:18: `concurrency`: expected an integer from 1 to 64, found",
            "fleet.yaml:5:17: `budget_usd`: expected an amount in USD",
            "fleet.yaml:6:15: `max_time`:",
            "fleet.yaml:7:5: unknown key `max_cylces` in project `shop`",
            "fleet.yaml:8:3: invalid project name \"Bad Name\"",
        ];
        assert_eq!(all.len(), want.len(), "{all:#?}");
        for (got, want) in all.iter().zip(want) {
            assert!(got.starts_with(want), "{got}\n  expected {want}");
        }
    }
}
