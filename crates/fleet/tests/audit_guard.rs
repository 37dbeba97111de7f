//! Guards around audits: two runs of one audit on one project never overlap (a manual
//! `fleet audit` and the scheduled one share a lease in the store), and when the engine's
//! secret scan refuses the auditor's findings the audit says so — where, never the value.

mod support;
use support::git;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    home: PathBuf,
}

const TOKEN: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

fn setup(auditor: &str, findings: serde_json::Value) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let home = dir.join("instance");
    let repo = dir.join("shop");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("src/db.rs"), "fn q(s: &str) {}\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(dir.join("findings.json"), findings.to_string()).unwrap();
    let auditor = auditor.replace("DIR", &dir.display().to_string());
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
        dir,
        home,
    };
    let out = s.fleet(&["project", "add", "shop", "--repo", repo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    s
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.current_dir(&self.home)
            .args(args)
            .env("FLEET_HOME", &self.home);
        c
    }

    fn fleet(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn finding(detail: &str) -> serde_json::Value {
    serde_json::json!({"findings": [{
        "title": "SQL built by string concatenation",
        "severity": "high",
        "evidence": [{"path": "src/db.rs", "detail": detail}],
        "acceptance": ["queries use bind parameters"],
    }]})
}

/// Waits (bounded) until `path` exists: the auditor has started.
fn await_file(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_secret_in_the_findings_is_reported_where_it_is_never_what_it_is() {
    let s = setup(
        "mkdir -p .fleet-out && cp DIR/findings.json .fleet-out/findings.json",
        finding(&format!("the token {TOKEN} is hard-coded")),
    );
    let out = s.fleet(&["audit", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains(TOKEN), "the value leaked: {all}");
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcome = records[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("secret scan refused")
            && outcome.contains(".fleet-out/findings.json:1 (a GitHub token)"),
        "{outcome}"
    );
    assert!(records[0]["findings"].as_array().unwrap().is_empty());
    // The history says the same.
    let history = s.fleet(&["audit", "--history", "--json"]);
    assert!(text(&history).contains("secret scan refused"));
    assert!(!text(&history).contains(TOKEN));
}

#[test]
fn a_manual_audit_and_the_scheduled_one_never_overlap() {
    // The auditor says it started, then waits until the test lets it finish.
    let s = setup(
        "touch DIR/started; while [ ! -f DIR/release ]; do sleep 0.05; done; \
         mkdir -p .fleet-out && cp DIR/findings.json .fleet-out/findings.json",
        finding("line 1 concatenates"),
    );
    // First seen on Saturday: the weekly slot is Monday 03:00.
    let out = s.fleet(&["audit", "--due-at", "2026-12-05 12:00", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let manual = s
        .command(&["audit", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    await_file(&s.dir.join("started"));
    // While it runs, neither another manual run nor the schedule starts it again.
    let again = s.fleet(&["audit"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("running already"), "{}", text(&again));
    let due = s.fleet(&["audit", "--due-at", "2026-12-07 03:00", "--json"]);
    assert!(due.status.success(), "{}", text(&due));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&due.stdout).unwrap(),
        serde_json::json!([]),
        "the scheduled run waits"
    );
    std::fs::write(s.dir.join("release"), "").unwrap();
    let out = manual.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first[0]["findings"][0]["disposition"], "submitted");
    // The slot is still due: the scheduled run comes after, and finds its request open.
    let due = s.fleet(&["audit", "--due-at", "2026-12-07 03:00", "--json"]);
    assert!(due.status.success(), "{}", text(&due));
    let second: serde_json::Value = serde_json::from_slice(&due.stdout).unwrap();
    assert_eq!(second[0]["findings"][0]["disposition"], "like_open");
}
