//! `policies:`: always-on rules every agent attempt obeys, at instance scope (`fleet.yaml`),
//! project scope (`projects.NAME.policies`) and bible scope (a bible's front matter). A run
//! obeys the rules of every scope that applies to it, together.
//!
//! ```yaml
//! policies:
//!   - name: lint                     # required; named in every event of its enforcement
//!     after_edit: npm run -s lint    # run after every file change (or attempt); must pass
//!     revert: true                   # undo the change that broke it (default false)
//!   - name: keep-out
//!     protected_paths: [migrations/, .env, "/Cargo.lock"]
//!   - name: branches
//!     protected_branches: [main, "release/*"]
//! ```
//!
//! Patterns are checked here (through `fleet_core::policy`), so a rule that would not compile
//! is refused with its location, not at the first attempt.

use crate::Location;
use crate::decode::Decoder;
use crate::yaml::{Node, ScalarKind, Value};

pub(crate) const POLICY_KEYS: &[&str] = &[
    "name",
    "after_edit",
    "revert",
    "protected_paths",
    "protected_branches",
];

/// One named rule. A rule may combine an `after_edit` command with protected paths and
/// branches; it needs at least one of the three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub name: String,
    /// A shell command run in the worktree after every agent file change (or attempt).
    pub after_edit: Option<String>,
    /// Undo the change when `after_edit` fails.
    pub revert: bool,
    /// Globs of paths no attempt may change (gitignore-like anchoring).
    pub protected_paths: Vec<String>,
    /// Globs of branch names Fleet never writes and agents may not create or move.
    pub protected_branches: Vec<String>,
    pub location: Location,
}

/// Decodes a `policies:` list; errors go to `d`.
pub(crate) fn policies(d: &mut Decoder<'_>, node: &Node) -> Vec<PolicyRule> {
    let Value::Seq(items) = &node.value else {
        d.error(
            node.loc,
            format!(
                "`policies`: expected a list of rules (each with `name`), found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let out: Vec<PolicyRule> = items.iter().filter_map(|item| rule(d, item)).collect();
    for (i, r) in out.iter().enumerate() {
        if let Some(first) = out[..i].iter().find(|b| b.name == r.name) {
            d.error(
                r.location,
                format!(
                    "policy `{}` is defined twice; it is first defined at line {}",
                    r.name, first.location.line
                ),
            );
        }
    }
    out
}

fn rule(d: &mut Decoder<'_>, node: &Node) -> Option<PolicyRule> {
    let fields = d.fields(node, POLICY_KEYS, "in a policy", "a mapping with `name`")?;
    let before = d.errors.len();
    let mut rule = PolicyRule {
        name: String::new(),
        after_edit: None,
        revert: false,
        protected_paths: Vec::new(),
        protected_branches: Vec::new(),
        location: fields.start,
    };
    let mut revert_at = None;
    for f in &fields.list {
        let v = f.value;
        match f.key {
            "name" => {
                if let Some(n) = d.id(v, "name", "policy name") {
                    rule.name = n.value;
                }
            }
            "after_edit" => rule.after_edit = d.text(v, "after_edit").map(|s| s.value),
            "revert" => {
                revert_at = Some(v.loc);
                rule.revert = boolean(d, v, "revert").unwrap_or(false);
            }
            "protected_paths" => {
                rule.protected_paths = patterns(d, v, "protected_paths");
                if let Err(e) = fleet_core::policy::ProtectedPaths::new("", &rule.protected_paths) {
                    d.error(v.loc, format!("`protected_paths`: {e}"));
                }
            }
            "protected_branches" => {
                rule.protected_branches = patterns(d, v, "protected_branches");
                if let Err(e) =
                    fleet_core::policy::branch_protected(&rule.protected_branches, "main")
                {
                    d.error(v.loc, format!("`protected_branches`: {e}"));
                }
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    if !fields.has("name") {
        d.error(fields.start, "a policy needs `name`");
    }
    if rule.after_edit.is_none()
        && rule.protected_paths.is_empty()
        && rule.protected_branches.is_empty()
    {
        d.error(
            fields.start,
            "a policy needs `after_edit`, `protected_paths` or `protected_branches`",
        );
    }
    if let Some(at) = revert_at
        && rule.revert
        && rule.after_edit.is_none()
    {
        d.error(at, "`revert`: only a policy with `after_edit` can revert");
    }
    (d.errors.len() == before).then_some(rule)
}

pub(crate) fn boolean(d: &mut Decoder<'_>, node: &Node, key: &str) -> Option<bool> {
    match &node.value {
        Value::Scalar {
            text,
            kind: ScalarKind::Bool,
        } => Some(matches!(text.as_str(), "true" | "True" | "TRUE")),
        _ => {
            d.error(
                node.loc,
                format!("`{key}`: expected true or false, found {}", node.describe()),
            );
            None
        }
    }
}

/// A list of glob patterns (or one pattern).
pub(crate) fn patterns(d: &mut Decoder<'_>, node: &Node, key: &str) -> Vec<String> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Scalar { kind, .. } if *kind != ScalarKind::Null => vec![node],
        _ => {
            d.error(
                node.loc,
                format!(
                    "`{key}`: expected a list of patterns, found {}",
                    node.describe()
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items {
        match item.scalar_text() {
            Some(p) if !p.trim().is_empty() => out.push(p.trim().to_string()),
            _ => d.error(
                item.loc,
                format!("`{key}`: expected a pattern, found {}", item.describe()),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use std::path::Path;

    #[test]
    fn decodes_rules_of_every_kind() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "policies:\n  - name: lint\n    after_edit: make lint\n    revert: true\n  - { name: keep-out, protected_paths: [migrations/, .env] }\n  - { name: branches, protected_branches: main }\nprojects:\n  shop:\n    policies:\n      - { name: no-lock, protected_paths: /Cargo.lock }\n",
        )
        .unwrap();
        let p = &cfg.policies;
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].name.as_str(), p[0].after_edit.as_deref(), p[0].revert),
            ("lint", Some("make lint"), true)
        );
        assert_eq!(p[1].protected_paths, ["migrations/", ".env"]);
        assert_eq!(p[2].protected_branches, ["main"]);
        let shop = &cfg.projects["shop"].policies;
        assert_eq!(shop[0].protected_paths, ["/Cargo.lock"]);
    }

    #[test]
    fn a_bible_carries_policies_for_its_projects() {
        let bible = crate::parse_bible(
            Path::new("bibles/internal.md"),
            "---\nname: internal\npolicies:\n  - { name: lint, after_edit: make lint, revert: true }\n---\nShip small.\n",
        )
        .unwrap();
        assert_eq!(bible.policies.len(), 1);
        assert_eq!(bible.policies[0].after_edit.as_deref(), Some("make lint"));
        let errors = crate::parse_bible(
            Path::new("bibles/internal.md"),
            "---\nname: internal\npolicies:\n  - { name: x }\n---\n",
        )
        .unwrap_err();
        assert!(
            errors[0].to_string().contains("needs `after_edit`"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_rules_are_located() {
        let errors = parse_instance(
            Path::new("fleet.yaml"),
            "policies:\n  - name: a\n  - name: b\n    protected_paths: [\"src/[\"]\n  - name: c\n    revert: yes-please\n    after_edit: x\n  - { name: d, revert: true, protected_branches: [main] }\n  - { name: e, after_edit: x, color: red }\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let find = |needle: &str| text.iter().find(|e| e.contains(needle)).cloned();
        assert!(
            find("needs `after_edit`")
                .unwrap()
                .starts_with("fleet.yaml:2:5"),
            "{text:?}"
        );
        assert!(
            find("not a valid path pattern")
                .unwrap()
                .starts_with("fleet.yaml:4:22"),
            "{text:?}"
        );
        assert!(
            find("expected true or false")
                .unwrap()
                .starts_with("fleet.yaml:6:13"),
            "{text:?}"
        );
        assert!(
            find("only a policy with `after_edit`")
                .unwrap()
                .starts_with("fleet.yaml:8:24"),
            "{text:?}"
        );
        assert!(
            find("color").unwrap().starts_with("fleet.yaml:9"),
            "{text:?}"
        );
    }
}
