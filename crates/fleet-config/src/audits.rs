//! `fleet.yaml`'s `audits:` section: recurring audits that find work by themselves.
//!
//! ```yaml
//! audits:
//!   - kind: security              # tests | code-health | security | dependencies | custom
//!     schedule: weekly mon 03:00  # daily HH:MM | weekly DAY HH:MM, the instance's local time
//!     project: shop               # default: every project
//!     name: nightly-security      # default: the kind
//!     role: auditor               # default: auditor
//!     max_findings: 5             # default: 5
//!     dedupe_days: 14             # a finding like a request rejected this recently is dropped
//!   - kind: custom
//!     prompt: "Find pages without a title tag"
//!     schedule: daily 02:00
//! ```

use crate::Location;
use crate::decode::Decoder;
use crate::yaml::{Node, Value};
use fleet_core::schedule::Schedule;

/// Every audit `kind:`.
pub const AUDIT_KINDS: &[&str] = &["tests", "code-health", "security", "dependencies", "custom"];
pub(crate) const AUDIT_KEYS: &[&str] = &[
    "kind",
    "schedule",
    "project",
    "name",
    "role",
    "prompt",
    "max_findings",
    "dedupe_days",
];
/// The role that plays audits unless `role:` says otherwise.
pub const DEFAULT_AUDIT_ROLE: &str = "auditor";
pub const DEFAULT_MAX_FINDINGS: u32 = 5;
pub const DEFAULT_DEDUPE_DAYS: u32 = 14;

/// One recurring audit.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSpec {
    pub name: String,
    pub kind: String,
    pub schedule: Schedule,
    /// `None`: every project.
    pub project: Option<String>,
    pub role: String,
    /// For `kind: custom`: what to look for.
    pub prompt: Option<String>,
    pub max_findings: u32,
    pub dedupe_days: u32,
    pub location: Location,
}

pub(crate) fn audits(d: &mut Decoder<'_>, node: &Node) -> Vec<AuditSpec> {
    let Value::Seq(items) = &node.value else {
        d.error(
            node.loc,
            format!(
                "`audits`: expected a list of audits (each with `kind` and `schedule`), found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let out: Vec<AuditSpec> = items.iter().filter_map(|item| audit(d, item)).collect();
    for (i, a) in out.iter().enumerate() {
        if let Some(first) = out[..i]
            .iter()
            .find(|b| b.name == a.name && b.project == a.project)
        {
            d.error(
                a.location,
                format!(
                    "audit `{}` is defined twice for the same projects; it is first defined at line {}",
                    a.name, first.location.line
                ),
            );
        }
    }
    out
}

fn audit(d: &mut Decoder<'_>, node: &Node) -> Option<AuditSpec> {
    let fields = d.fields(
        node,
        AUDIT_KEYS,
        "in an audit",
        "a mapping with `kind` and `schedule`",
    )?;
    let before = d.errors.len();
    let mut spec = AuditSpec {
        name: String::new(),
        kind: String::new(),
        schedule: Schedule::Daily { minute: 0 },
        project: None,
        role: DEFAULT_AUDIT_ROLE.to_string(),
        prompt: None,
        max_findings: DEFAULT_MAX_FINDINGS,
        dedupe_days: DEFAULT_DEDUPE_DAYS,
        location: fields.start,
    };
    let mut name = None;
    for f in &fields.list {
        let v = f.value;
        match f.key {
            "kind" => {
                if let Some(k) = d.text(v, "kind") {
                    if AUDIT_KINDS.contains(&k.value.as_str()) {
                        spec.kind = k.value;
                    } else {
                        d.error(
                            k.at,
                            format!(
                                "`kind`: unknown audit kind {:?}; expected one of: {}",
                                k.value,
                                AUDIT_KINDS.join(", ")
                            ),
                        );
                    }
                }
            }
            "schedule" => {
                if let Some(s) = d.text(v, "schedule") {
                    match Schedule::parse(&s.value) {
                        Ok(schedule) => spec.schedule = schedule,
                        Err(e) => d.error(s.at, format!("`schedule`: {e}")),
                    }
                }
            }
            "project" => spec.project = d.id(v, "project", "project name").map(|s| s.value),
            "name" => name = d.id(v, "name", "audit name").map(|s| s.value),
            "role" => {
                if let Some(r) = d.id(v, "role", "role name") {
                    spec.role = r.value;
                }
            }
            "prompt" => spec.prompt = d.text(v, "prompt").map(|s| s.value),
            "max_findings" => {
                spec.max_findings = d
                    .integer(v, "max_findings", "a positive integer")
                    .and_then(|n| u32::try_from(n).ok().filter(|n| (1..=50).contains(n)))
                    .unwrap_or_else(|| {
                        d.error(v.loc, "`max_findings`: expected an integer from 1 to 50");
                        DEFAULT_MAX_FINDINGS
                    })
            }
            "dedupe_days" => {
                spec.dedupe_days = d
                    .integer(v, "dedupe_days", "a number of days")
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(DEFAULT_DEDUPE_DAYS)
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    for required in ["kind", "schedule"] {
        if !fields.has(required) {
            d.error(fields.start, format!("an audit needs `{required}`"));
        }
    }
    if spec.kind == "custom" && spec.prompt.is_none() {
        d.error(
            fields.start,
            "a `custom` audit needs `prompt` (what the auditor looks for)",
        );
    }
    if d.errors.len() > before {
        return None;
    }
    spec.name = name.unwrap_or_else(|| spec.kind.clone());
    Some(spec)
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use fleet_core::schedule::{Schedule, Weekday};
    use std::path::Path;

    #[test]
    fn decodes_audits_with_defaults() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "audits:\n  - { kind: security, schedule: weekly mon 03:00, project: shop }\n  - kind: custom\n    name: titles\n    prompt: Find pages without a title\n    schedule: daily 02:00\n    max_findings: 3\n",
        )
        .unwrap();
        let a = &cfg.audits[0];
        assert_eq!((a.name.as_str(), a.role.as_str()), ("security", "auditor"));
        assert_eq!(
            a.schedule,
            Schedule::Weekly {
                day: Weekday::Mon,
                minute: 180
            }
        );
        assert_eq!(a.project.as_deref(), Some("shop"));
        assert_eq!((a.max_findings, a.dedupe_days), (5, 14));
        let b = &cfg.audits[1];
        assert_eq!((b.name.as_str(), b.max_findings), ("titles", 3));
        assert_eq!(b.prompt.as_deref(), Some("Find pages without a title"));
    }

    #[test]
    fn bad_audits_are_located() {
        let errors = parse_instance(
            Path::new("fleet.yaml"),
            "audits:\n  - kind: fuzzing\n    schedule: hourly\n  - kind: custom\n    schedule: daily 01:00\n  - { kind: tests, schedule: daily 01:00 }\n  - { kind: tests, schedule: daily 02:00 }\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let find = |needle: &str| text.iter().find(|e| e.contains(needle)).cloned();
        assert!(
            find("unknown audit kind")
                .unwrap()
                .starts_with("fleet.yaml:2:11"),
            "{text:?}"
        );
        assert!(
            find("expected a schedule")
                .unwrap()
                .starts_with("fleet.yaml:3:15"),
            "{text:?}"
        );
        assert!(
            find("needs `prompt`")
                .unwrap()
                .starts_with("fleet.yaml:4:5"),
            "{text:?}"
        );
        assert!(
            find("defined twice").unwrap().starts_with("fleet.yaml:7:7"),
            "{text:?}"
        );
    }
}
