//! `fleet audit`: run the configured audits now (or those due at a given time), or show what
//! audits found before.

use crate::epics::{instance_home, pipeline};
use crate::{InvalidInput, exit};
use fleet_pipeline::audit::{self, AuditRecord};
use std::path::PathBuf;

pub struct AuditArgs {
    pub project: Option<String>,
    pub kind: Option<String>,
    /// Run only what is due at this local time (`YYYY-MM-DD HH:MM`), as `fleet serve` does.
    pub due_at: Option<String>,
    pub history: bool,
    pub json: bool,
}

pub fn run(home: Option<PathBuf>, args: AuditArgs) -> anyhow::Result<u8> {
    let home = instance_home(home)?;
    let p = pipeline(&home, args.json)?;
    if args.history {
        let records: Vec<AuditRecord> = audit::history(&p)?
            .into_iter()
            .filter(|r| args.project.as_ref().is_none_or(|p| &r.project == p))
            .filter(|r| args.kind.as_ref().is_none_or(|k| &r.kind == k))
            .collect();
        return print(&records, args.json);
    }
    let rt = crate::runtime()?;
    if let Some(at) = &args.due_at {
        let now = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M").map_err(|e| {
            InvalidInput(format!("--due-at {at:?}: expected YYYY-MM-DD HH:MM ({e})"))
        })?;
        let minute = now.and_utc().timestamp().div_euclid(60);
        let ran = rt.block_on(audit::tick(&p, minute))?;
        return print(&ran, args.json);
    }
    let projects = p.store.projects()?;
    let mut ran = Vec::new();
    let mut matched = false;
    for project in &projects {
        if args
            .project
            .as_ref()
            .is_some_and(|name| name != &project.name)
        {
            continue;
        }
        for spec in audit::audits_for(&p, &project.name) {
            if args
                .kind
                .as_ref()
                .is_some_and(|k| k != &spec.kind && k != &spec.name)
            {
                continue;
            }
            matched = true;
            match rt.block_on(audit::run(&p, spec, project, None)) {
                Ok(record) => ran.push(record),
                // The same audit is running (by hand or on its schedule): not started twice.
                Err(fleet_pipeline::PipelineError::NotNow(why)) => {
                    return Err(InvalidInput(why).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !matched {
        return Err(InvalidInput(format!(
            "no audit matches{}{} (audits are configured under `audits:` in fleet.yaml)",
            args.project
                .map(|p| format!(" project {p}"))
                .unwrap_or_default(),
            args.kind.map(|k| format!(" kind {k}")).unwrap_or_default()
        ))
        .into());
    }
    let failed = ran.iter().any(|r| r.outcome != "passed");
    print(&ran, args.json)?;
    Ok(if failed { exit::FAILED } else { exit::PASSED })
}

fn print(records: &[AuditRecord], json: bool) -> anyhow::Result<u8> {
    let text = if json {
        serde_json::to_string_pretty(records)? + "\n"
    } else if records.is_empty() {
        "no audits ran\n".to_string()
    } else {
        let mut text = String::new();
        for r in records {
            text.push_str(&format!(
                "audit {} on {} (run {}): {}\n",
                r.audit, r.project, r.run_id, r.outcome
            ));
            for f in &r.findings {
                let what = match (f.disposition.as_str(), &f.epic) {
                    ("submitted", Some(id)) => format!("new request {id}"),
                    ("like_open", Some(id)) => format!("dropped: like open request {id}"),
                    ("recently_rejected", Some(id)) => {
                        format!("dropped: like request {id}, rejected recently")
                    }
                    ("repeats", _) => "dropped: repeats an earlier finding".to_string(),
                    ("over_limit", _) => "dropped: over the audit's max_findings".to_string(),
                    ("refused", _) => format!(
                        "refused: {}",
                        f.reason
                            .as_deref()
                            .unwrap_or("")
                            .lines()
                            .next()
                            .unwrap_or("")
                    ),
                    (other, _) => other.to_string(),
                };
                text.push_str(&format!("  [{}] {} -> {what}\n", f.severity, f.title));
            }
        }
        text
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(exit::PASSED)
}
