//! Audits with an injected clock (`fleet audit --due-at`, the tick `fleet serve` runs every
//! 30 s): a weekly security audit fires once at its slot; its two new findings become two
//! requests, a finding like an open request and one like a request rejected last week are
//! dropped; downtime over two slots fires once; an auditor that edits code lands nothing.

mod support;
use support::git;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    findings: PathBuf,
}

fn finding(title: &str, path: &str) -> serde_json::Value {
    serde_json::json!({
        "title": title,
        "severity": "high",
        "evidence": [{"path": path, "detail": "see line 3"}],
        "acceptance": [format!("{title} no longer holds")],
    })
}

fn setup(auditor: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("shop");
    let findings = tmp.path().join("findings.json");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("src/db.rs"), "fn q(s: &str) {}\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let auditor = auditor.replace("FINDINGS", &findings.display().to_string());
    std::fs::write(
        home.join("fleet.yaml"),
        format!(
            "agents:\n  auditor: {{ cli: command, command: \"{auditor}\", roles: [auditor] }}\n  \
             team: {{ cli: command, command: \"true\", roles: [researcher, architect, planner, developer, reviewer, db] }}\n\
             audits:\n  - {{ kind: security, schedule: weekly mon 03:00, dedupe_days: 14 }}\n"
        ),
    )
    .unwrap();
    let s = Setup {
        _tmp: tmp,
        home,
        repo,
        findings,
    };
    let out = s.fleet(&[
        "project",
        "add",
        "shop",
        "--repo",
        s.repo.to_str().unwrap(),
        "--check",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    s
}

impl Setup {
    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.home)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .output()
            .unwrap()
    }

    fn findings(&self, list: &[serde_json::Value]) {
        std::fs::write(
            &self.findings,
            serde_json::json!({ "findings": list }).to_string(),
        )
        .unwrap();
    }

    /// `fleet audit ARGS --json`, checked for success, as JSON.
    fn audit(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.fleet(&all);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn epics(&self) -> Vec<fleet_store::EpicRow> {
        use fleet_store::Store;
        fleet_store::SqliteStore::open(
            &self.home.join(".fleet/fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap()
        .epics()
        .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dispositions(record: &serde_json::Value) -> Vec<(String, String)> {
    record["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["disposition"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const COPY: &str = "mkdir -p .fleet-out && cp FINDINGS .fleet-out/findings.json";

#[test]
fn a_weekly_audit_fires_once_per_slot_and_drops_what_the_fleet_already_knows() {
    let s = setup(COPY);
    // First seen on Saturday: the audit waits for Monday's slot.
    assert_eq!(
        s.audit(&["--due-at", "2026-12-05 12:00"]),
        serde_json::json!([])
    );

    // Earlier requests: one still open, one a person rejected (cancelled).
    s.findings(&[finding(
        "Hard-coded admin password in config loader",
        "src/config.rs",
    )]);
    let open = s.audit(&[]);
    assert_eq!(open[0]["findings"][0]["disposition"], "submitted");
    s.findings(&[finding(
        "Session cookie lacks the Secure flag",
        "src/session.rs",
    )]);
    let rejected = s.audit(&[]);
    let rejected_id = rejected[0]["findings"][0]["epic"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.fleet(&["task", "cancel", &rejected_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.epics().len(), 2);

    s.findings(&[
        finding("SQL injection in the query builder", "src/db.rs"),
        finding("Path traversal in the upload handler", "src/upload.rs"),
        finding(
            "Hard-coded admin password in the config loader",
            "src/config.rs",
        ),
        finding("Session cookie lacks Secure flag", "src/session.rs"),
    ]);
    // Monday 03:05: the slot of 03:00 is due, once.
    let ran = s.audit(&["--due-at", "2026-12-07 03:05"]);
    assert_eq!(ran.as_array().unwrap().len(), 1, "{ran}");
    assert_eq!(
        dispositions(&ran[0]),
        [
            (
                "SQL injection in the query builder".into(),
                "submitted".into()
            ),
            (
                "Path traversal in the upload handler".into(),
                "submitted".into()
            ),
            (
                "Hard-coded admin password in the config loader".into(),
                "like_open".into()
            ),
            (
                "Session cookie lacks Secure flag".into(),
                "recently_rejected".into()
            ),
        ]
    );
    let epics = s.epics();
    assert_eq!(epics.len(), 4);
    let new: Vec<&str> = epics[2..].iter().map(|e| e.request.as_str()).collect();
    assert!(
        new[0].starts_with("SQL injection in the query builder"),
        "{}",
        new[0]
    );
    assert!(new[0].contains("Source: audit security"), "{}", new[0]);
    assert!(new[1].contains("- src/upload.rs: see line 3"), "{}", new[1]);

    // Later that day: nothing more.
    assert_eq!(
        s.audit(&["--due-at", "2026-12-07 09:00"]),
        serde_json::json!([])
    );
    // Down over two Mondays (the 14th and the 21st): one audit, not two.
    let ran = s.audit(&["--due-at", "2026-12-22 04:00"]);
    assert_eq!(ran.as_array().unwrap().len(), 1, "{ran}");
    assert_eq!(
        s.audit(&["--due-at", "2026-12-22 05:00"]),
        serde_json::json!([])
    );
    assert_eq!(
        s.epics().len(),
        4,
        "the same findings again are like the open requests"
    );
    let history = s.audit(&["--history"]);
    assert_eq!(history.as_array().unwrap().len(), 4, "{history}");
}

#[test]
fn an_auditor_that_edits_code_lands_nothing_and_makes_no_request() {
    let s = setup(&format!("echo pwned >> src/db.rs && {COPY}"));
    s.findings(&[finding("SQL injection in the query builder", "src/db.rs")]);
    let out = s.fleet(&["audit", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ran: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(ran[0]["outcome"], "passed", "{ran}");
    assert!(s.epics().is_empty());
    assert_eq!(
        std::fs::read_to_string(s.repo.join("src/db.rs")).unwrap(),
        "fn q(s: &str) {}\n"
    );
    let branches = git(&s.repo, &["branch", "--list", "main", "--contains", "HEAD"]);
    assert!(branches.contains("main"));
    assert!(!Path::new(&s.repo.join(".fleet-out")).exists());
}

#[test]
fn bad_audit_config_and_unknown_filters_are_clear_refusals() {
    let s = setup(COPY);
    let out = s.fleet(&["audit", "--kind", "fuzzing"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no audit matches"), "{}", text(&out));
    let out = s.fleet(&["audit", "--due-at", "next monday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::write(
        s.home.join("fleet.yaml"),
        "audits:\n  - { kind: security, schedule: weekly someday 03:00 }\n",
    )
    .unwrap();
    let out = s.fleet(&["audit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("fleet.yaml:2:"), "{}", text(&out));
}
