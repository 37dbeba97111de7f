//! Audits: an agent in an auditor role studies a project without changing it and returns
//! findings; each finding becomes a submitted request unless the fleet already knows it
//! (`fleet_core::audit::dispose`). `fleet audit` runs one now; `fleet serve` calls [`tick`] on
//! a timer and runs each audit once per due slot (`fleet_core::schedule::due`).
//!
//! **Read-only**: the audit's acceptance checks require `.fleet-out/findings.json` to be valid
//! and nothing else in the workspace to have changed, so an auditor that edits code is sent back
//! by the fix loop and its edit never lands anywhere but the audit's own run branch.
//!
//! **Once per slot**: the last slot an audit ran for is kept in the store's meta
//! (`audit.slot.<name>.<project>`), written when the audit has submitted its findings, and an
//! audit first seen after its slot waits for the next one (`audit.seen.…`).

use crate::{Pipeline, PipelineError, Result};
use fleet_config::AuditSpec;
use fleet_core::audit::{Disposition, Evidence, Finding, KnownRequest, Severity, Standing};
use fleet_core::schedule::{LocalMinute, due};
use fleet_store::ProjectRow;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

const OUT: &str = ".fleet-out";
const DAY_MS: u64 = 24 * 3600 * 1000;

/// What an auditor writes to `.fleet-out/findings.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsFile {
    pub findings: Vec<FindingJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingJson {
    pub title: String,
    pub severity: String,
    pub evidence: Vec<EvidenceJson>,
    pub acceptance: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceJson {
    pub path: String,
    #[serde(default)]
    pub detail: String,
}

/// Reads and checks a findings file: every error, so the auditor can fix them all at once.
pub fn parse_findings(text: &str) -> std::result::Result<Vec<Finding>, Vec<String>> {
    let file: FindingsFile =
        serde_json::from_str(text).map_err(|e| vec![format!("findings.json is not valid: {e}")])?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, f) in file.findings.into_iter().enumerate() {
        let at = format!("findings[{i}]");
        if f.title.trim().is_empty() {
            errors.push(format!("{at}.title is empty"));
        }
        let Some(severity) = Severity::parse(f.severity.trim()) else {
            errors.push(format!(
                "{at}.severity {:?} is not one of low, medium, high, critical",
                f.severity
            ));
            continue;
        };
        if f.evidence.is_empty() || f.evidence.iter().any(|e| e.path.trim().is_empty()) {
            errors.push(format!(
                "{at}.evidence needs at least one entry, each with a path"
            ));
        }
        if f.acceptance.iter().all(|a| a.trim().is_empty()) {
            errors.push(format!("{at}.acceptance needs at least one criterion"));
        }
        out.push(Finding {
            title: f.title.trim().to_string(),
            severity,
            evidence: f
                .evidence
                .into_iter()
                .map(|e| Evidence {
                    path: e.path.trim().to_string(),
                    detail: e.detail.trim().to_string(),
                })
                .collect(),
            acceptance: f.acceptance,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What an audit did: stored in the meta as `audit.record.<run>` and listed as the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub audit: String,
    pub kind: String,
    pub project: String,
    pub run_id: String,
    /// The schedule slot it ran for (local minutes), or `None` when run by hand.
    pub slot: Option<LocalMinute>,
    pub at: i64,
    /// `passed` (findings read), or why not.
    pub outcome: String,
    pub findings: Vec<FindingRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingRecord {
    pub title: String,
    pub severity: String,
    /// `submitted`, `refused`, `like_open`, `recently_rejected`, `repeats`, or `over_limit`.
    pub disposition: String,
    /// The request it became, or the one it is like.
    pub epic: Option<String>,
    /// Why a finding was refused as a request (`refused`): it is found again at the next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn instructions(spec: &AuditSpec) -> String {
    let what = match spec.kind.as_str() {
        "tests" => {
            "**Tests**: run the project's test suite and read the tests. Find failing or \
                    flaky tests, important behaviour with no test, and tests that cannot fail."
        }
        "code-health" => {
            "**Code health**: find dead code, duplicated logic, functions and files \
                          too large to follow, misleading names, missing error handling, and \
                          TODOs that hide bugs."
        }
        "security" => {
            "**Security**: find injection (SQL, shell, path), secrets in the code or \
                       history, missing authentication or authorization checks, unsafe \
                       deserialization, and weak cryptography."
        }
        "dependencies" => {
            "**Dependencies**: find outdated, unmaintained, duplicated or \
                           vulnerable dependencies and unpinned versions."
        }
        _ => spec.prompt.as_deref().unwrap_or("Audit the project."),
    };
    let mut text = what.to_string();
    if let Some(extra) = spec.prompt.as_deref().filter(|_| spec.kind != "custom") {
        text.push_str(&format!("\n\n{extra}"));
    }
    text.push_str(&format!(
        "\n\nReport at most {} findings, the most serious first.",
        spec.max_findings
    ));
    text
}

/// The request a finding becomes.
fn request_of(spec: &AuditSpec, run_id: &str, f: &Finding) -> String {
    let mut text = format!(
        "{}\n\nFound by the {} audit ({}).\n",
        f.title,
        spec.name,
        f.severity.as_str()
    );
    text.push_str("\nEvidence:\n");
    for e in &f.evidence {
        if e.detail.is_empty() {
            text.push_str(&format!("- {}\n", e.path));
        } else {
            text.push_str(&format!("- {}: {}\n", e.path, e.detail));
        }
    }
    text.push_str("\nAcceptance criteria:\n");
    for a in f.acceptance.iter().filter(|a| !a.trim().is_empty()) {
        text.push_str(&format!("- {}\n", a.trim()));
    }
    text.push_str(&format!("\nSource: audit {} (run {run_id})", spec.name));
    text
}

/// How a known request reads to the dedupe: its first line and the paths it names (the same
/// shape as a finding's summary: its title and evidence paths).
fn known_text(request: &str) -> String {
    let mut text = request
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    for line in request.lines() {
        if let Some(path) = line.strip_prefix("- ").and_then(|l| l.split(':').next())
            && path.contains('/')
        {
            text.push(' ');
            text.push_str(path.trim());
        }
    }
    text
}

fn known_requests(p: &Pipeline, project: &str) -> Result<Vec<KnownRequest>> {
    Ok(p.store
        .epics()?
        .into_iter()
        .filter(|e| e.project == project)
        .map(|e| KnownRequest {
            text: known_text(&e.request),
            standing: match e.state.as_str() {
                "cancelled" => Standing::Rejected {
                    at: e.updated_at.max(0) as u64,
                },
                "done" | "failed" => Standing::Closed,
                _ => Standing::Open,
            },
            id: e.id,
        })
        .collect())
}

/// Runs `spec` on `project` now: the auditor's run, then its findings submitted or dropped.
pub async fn run(
    p: &Pipeline,
    spec: &AuditSpec,
    project: &ProjectRow,
    slot: Option<LocalMinute>,
) -> Result<AuditRecord> {
    if !p.playable(&spec.role) {
        return Err(PipelineError::Invalid(format!(
            "no agent profile plays role {} (audit {}); add one to fleet.yaml, e.g.\n  agents:\n    \
             auditor:\n      cli: claude\n      roles: [{}]",
            spec.role, spec.name, spec.role
        )));
    }
    // Two runs of one audit on one project never overlap, whoever started them (`fleet
    // audit`, the schedule of this or another `fleet serve`): a lease in the store.
    let lease_name = format!("audit/{}/{}", spec.name, project.name);
    let store = p.store.clone();
    let lease = fleet_store::pg::spawn_blocking(move || {
        fleet_store::Lease::try_take(store, &lease_name, AUDIT_LEASE_TTL)
    })
    .await
    .map_err(|e| PipelineError::Other(e.to_string()))??;
    let Some(_lease) = lease else {
        return Err(PipelineError::NotNow(format!(
            "audit {} of project {} is running already (another `fleet audit` or its schedule); \
             it was not started again",
            spec.name, project.name
        )));
    };
    // A role without a template of its own plays the built-in auditor's.
    let role = if p.library.role(&spec.role).is_some() {
        spec.role.as_str()
    } else {
        fleet_config::DEFAULT_AUDIT_ROLE
    };
    let mut vars: BTreeMap<&'static str, String> = fleet_config::TEMPLATE_VARS
        .iter()
        .map(|k| (*k, String::new()))
        .collect();
    vars.insert("request", instructions(spec));
    vars.insert("project", project.name.clone());
    vars.insert(
        "context",
        std::fs::read_to_string(p.context_file(&project.name)).unwrap_or_default(),
    );
    let bible = project.bible.as_deref().and_then(|b| p.library.bible(b));
    vars.insert("bible", bible.map(|b| b.prompt_text()).unwrap_or_default());
    let prompt = crate::stages::render(p, role, &vars, project.bible.as_deref())?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let name = format!("audit-{}-{}-{stamp}", spec.name, project.name);
    let checks = vec![
        format!(
            "{} artifact check findings {OUT}/findings.json",
            crate::stages::shell_quote(&p.fleet_exe.display().to_string())
        ),
        format!("test -z \"$(git status --porcelain -- . ':(exclude){OUT}')\""),
    ];
    let runbook = json!({
        "name": name,
        "repo": project.path,
        "base": project.default_branch,
        "concurrency": 1,
        "tasks": [{"id": "audit", "role": spec.role, "prompt": prompt, "checks": checks}],
    });
    let source = serde_json::to_string_pretty(&runbook).expect("runbooks serialize");
    let dir = p.layout.root().join("audits");
    std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Other(e.to_string()))?;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, &source).map_err(|e| PipelineError::Other(e.to_string()))?;
    let rb = fleet_config::parse_runbook(&path, &source).map_err(|e| {
        PipelineError::Other(
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let plan = fleet_engine::plan_from_runbook(&rb, &p.instance).map_err(|e| {
        PipelineError::Invalid(
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let mut opts = p.engine_options_base();
    opts.stop = p.shutdown.clone();
    let report = fleet_engine::start(p.layout.clone(), p.store.clone(), plan, opts).await?;
    let mut record = AuditRecord {
        audit: spec.name.clone(),
        kind: spec.kind.clone(),
        project: project.name.clone(),
        run_id: report.run_id.clone(),
        slot,
        at: fleet_engine::now_ms(),
        outcome: String::new(),
        findings: Vec::new(),
    };
    let text = if report.end == fleet_engine::RunEnd::Passed {
        let repo = fleet_git::Repo::open(Path::new(&project.path))?;
        repo.read_file(&report.integration_branch, &format!("{OUT}/findings.json"))?
    } else {
        None
    };
    let Some(findings) = text.and_then(|t| parse_findings(&t).ok()) else {
        let secrets = secrets_refused(p, &report.run_id)?;
        record.outcome = if secrets.is_empty() {
            format!(
                "the auditor returned no valid findings (run {})",
                report.run_id
            )
        } else {
            format!(
                "the secret scan refused the auditor's findings: a secret was found at {} (the \
                 value is not shown); nothing was submitted — the auditor must cite where a \
                 secret is, never copy it (run {})",
                secrets.join(", "),
                report.run_id
            )
        };
        save(p, &record)?;
        return Ok(record);
    };
    record.outcome = "passed".into();
    // Two audits of one project finishing together must not both submit one finding: the
    // known requests are read and the new ones submitted under one lease per project.
    let store = p.store.clone();
    let submit_lease = format!("audit-submit/{}", project.name);
    let _submitting = fleet_store::pg::spawn_blocking(move || {
        fleet_store::Lease::take(store, &submit_lease, AUDIT_LEASE_TTL, SUBMIT_POLL)
    })
    .await
    .map_err(|e| PipelineError::Other(e.to_string()))??;
    let now = fleet_engine::now_ms().max(0) as u64;
    let known = known_requests(p, &project.name)?;
    let window = u64::from(spec.dedupe_days) * DAY_MS;
    let verdicts = fleet_core::audit::dispose(&findings, &known, now, window);
    for (i, (finding, verdict)) in findings.iter().zip(verdicts).enumerate() {
        let mut reason = None;
        let (disposition, epic) = if i >= spec.max_findings as usize {
            ("over_limit", None)
        } else {
            match verdict {
                Disposition::Submit => {
                    match p.submit(&project.name, &request_of(spec, &report.run_id, finding)) {
                        Ok(epic) => ("submitted", Some(epic.id)),
                        // A request the fleet cannot take now (no profile for its role) is
                        // recorded with the reason, and found again at the next slot.
                        Err(PipelineError::Invalid(why) | PipelineError::NotNow(why)) => {
                            reason = Some(why);
                            ("refused", None)
                        }
                        Err(other) => return Err(other),
                    }
                }
                Disposition::LikeOpen { id } => ("like_open", Some(id)),
                Disposition::RecentlyRejected { id } => ("recently_rejected", Some(id)),
                Disposition::Repeats { index } => (
                    "repeats",
                    record.findings.get(index).and_then(|f| f.epic.clone()),
                ),
            }
        };
        record.findings.push(FindingRecord {
            title: finding.title.clone(),
            severity: finding.severity.as_str().into(),
            disposition: disposition.into(),
            epic,
            reason,
        });
    }
    save(p, &record)?;
    Ok(record)
}

/// How long an audit's lease lasts without renewal (its heartbeat renews it while it runs;
/// a dead holder of this machine loses it at once, of another machine after this).
const AUDIT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
const SUBMIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the engine's secret scan refused the auditor's change, as `file:line (what kind)`,
/// never the value: read from the run's failed checks (the scan says where, never what).
fn secrets_refused(p: &Pipeline, run_id: &str) -> Result<Vec<String>> {
    let mut places: Vec<String> = Vec::new();
    for e in p.store.events(Some(run_id), 0, 100_000)? {
        if e.kind != "task.checks_failed" || e.data["check"] != "no secrets in the change" {
            continue;
        }
        for line in e.data["output_tail"].as_str().unwrap_or("").lines() {
            // `FILE:LINE: what`, as the engine writes them.
            let Some((place, what)) = line.split_once(": ") else {
                continue;
            };
            let Some((file, n)) = place.rsplit_once(':') else {
                continue;
            };
            if file.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let found = format!("{place} ({})", what.trim());
            if !places.contains(&found) {
                places.push(found);
            }
        }
    }
    Ok(places)
}

fn save(p: &Pipeline, record: &AuditRecord) -> Result<()> {
    let text = serde_json::to_string(record).expect("records serialize");
    p.store
        .set_meta(&format!("audit.record.{}", record.run_id), &text)?;
    Ok(())
}

/// Every audit that ran, oldest first.
pub fn history(p: &Pipeline) -> Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    for run in p.store.runs_named("audit-")? {
        if let Some(text) = p.store.meta(&format!("audit.record.{}", run.id))?
            && let Ok(record) = serde_json::from_str::<AuditRecord>(&text)
        {
            out.push(record);
        }
    }
    Ok(out)
}

/// The audits of the configuration that apply to `project`.
pub fn audits_for<'a>(p: &'a Pipeline, project: &str) -> Vec<&'a AuditSpec> {
    p.instance
        .audits
        .iter()
        .filter(|a| a.project.as_deref().is_none_or(|name| name == project))
        .collect()
}

/// Runs every audit that is due at `now` (the instance's local wall clock), once per slot
/// however long Fleet was down; returns what ran.
pub async fn tick(p: &Pipeline, now: LocalMinute) -> Result<Vec<AuditRecord>> {
    let mut ran = Vec::new();
    for project in p.store.projects()? {
        for spec in audits_for(p, &project.name) {
            let key = format!("{}.{}", spec.name, project.name);
            let since = match p.store.meta(&format!("audit.slot.{key}"))? {
                Some(slot) => slot.parse().unwrap_or(now),
                None => match p.store.meta(&format!("audit.seen.{key}"))? {
                    Some(seen) => seen.parse().unwrap_or(now),
                    None => {
                        p.store
                            .set_meta(&format!("audit.seen.{key}"), &now.to_string())?;
                        now
                    }
                },
            };
            let Some(slot) = due(spec.schedule, since, now) else {
                continue;
            };
            let record = match run(p, spec, &project, Some(slot)).await {
                Ok(record) => record,
                // The same audit runs now (started by hand, or by another server): this slot
                // stays due and is run by a later tick, never alongside.
                Err(PipelineError::NotNow(_)) => continue,
                Err(e) => return Err(e),
            };
            p.store
                .set_meta(&format!("audit.slot.{key}"), &slot.to_string())?;
            ran.push(record);
        }
    }
    Ok(ran)
}

/// The instance's local wall clock now, as the schedules read it.
pub fn local_now() -> LocalMinute {
    chrono::Local::now()
        .naive_local()
        .and_utc()
        .timestamp()
        .div_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_checked_with_every_error() {
        let good = r#"{"findings": [{"title": "SQL injection", "severity": "high",
            "evidence": [{"path": "src/db.rs", "detail": "line 4"}], "acceptance": ["uses binds"]}]}"#;
        assert_eq!(parse_findings(good).unwrap().len(), 1);
        let bad = r#"{"findings": [{"title": " ", "severity": "urgent", "evidence": [], "acceptance": []},
            {"title": "x", "severity": "low", "evidence": [], "acceptance": [""]}]}"#;
        let errors = parse_findings(bad).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(parse_findings("{}").is_err());
        assert!(parse_findings(r#"{"findings": [], "extra": 1}"#).is_err());
    }

    #[test]
    fn a_request_made_from_a_finding_reads_like_it_to_the_dedupe() {
        let spec = AuditSpec {
            name: "security".into(),
            kind: "security".into(),
            schedule: fleet_core::schedule::Schedule::Daily { minute: 0 },
            project: None,
            role: "auditor".into(),
            prompt: None,
            max_findings: 5,
            dedupe_days: 14,
            location: fleet_config::Location { line: 1, col: 1 },
        };
        let finding = Finding {
            title: "Hard-coded password in the config loader".into(),
            severity: Severity::High,
            evidence: vec![Evidence {
                path: "src/config.rs".into(),
                detail: "line 12: let password = \"hunter2\"".into(),
            }],
            acceptance: vec!["No password literal remains".into()],
        };
        let request = request_of(&spec, "r1", &finding);
        let sim = fleet_core::audit::similarity(&known_text(&request), &finding.summary());
        assert!(
            sim >= fleet_core::audit::SIMILAR,
            "{sim}: {}",
            known_text(&request)
        );
    }
}
