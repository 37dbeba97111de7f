//! `review_runs: { after: failed|all }`: when `fleet run` ends, Fleet starts the framework
//! review of that run by itself — only after the run ended (the reviewer sees its final
//! event), only for the runs the key names — and the lessons the reviewer proposes
//! (`lessons.json`) land in `.fleet/memory.db` with the run as their provenance.

mod support;
use support::git;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The reviewer: notes whether the run's log it got has the run's end, writes the three
/// documents and one lesson.
const REVIEWER: &str = "mkdir -p .fleet-out; \
    if grep -q run.finished input/*/events.jsonl; then echo 'the run had ended' > .fleet-out/log-analysis.md; \
    else echo 'the run was live' > .fleet-out/log-analysis.md; fi; \
    echo 'No framework defects found.' > .fleet-out/bug-report.md; \
    echo 'Nothing to fix.' > .fleet-out/fix-plan.md; \
    printf '%s' '{\"lessons\": [{\"scope\": \"instance\", \"applies_when\": {\"words\": [\"flaky\"]}, \"lesson\": \"Retry a flaky network test once before failing the run.\"}]}' > .fleet-out/lessons.json";

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

fn setup(after: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# r\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let command = REVIEWER.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        home.join("fleet.yaml"),
        format!(
            "agents:\n  looker:\n    cli: command\n    command: \"{command}\"\n    roles: [framework-reviewer]\n\
             review_runs:\n  after: {after}\n"
        ),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        home,
        repo,
    }
}

impl Setup {
    fn output(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .output()
            .unwrap()
    }

    fn run_book(&self, name: &str, command: &str) -> (Output, String) {
        let path = self.repo.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("name: {name}\ntasks:\n  - {{ id: a, command: \"{command}\", retries: 0 }}\n"),
        )
        .unwrap();
        let out = self.output(&["run", path.to_str().unwrap(), "--quiet"]);
        let runs: serde_json::Value =
            serde_json::from_slice(&self.output(&["runs", "--json"]).stdout).unwrap();
        let run = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        (out, run)
    }

    fn lessons(&self) -> Vec<fleet_memory::Lesson> {
        fleet_memory::MemoryDb::open(
            &self.home.join(".fleet/memory.db"),
            fleet_secrets::Redactor::from_process_env(&[]),
        )
        .unwrap()
        .lessons(false)
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

#[test]
fn a_failed_run_is_reviewed_after_it_ended_and_its_lessons_go_to_memory() {
    let s = setup("failed");
    // A passing run is not reviewed under `after: failed`.
    let (out, passed) = s.run_book("fine", "true");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!s.home.join(".fleet/reviews").join(&passed).exists());

    let (out, failed) = s.run_book("broken", "false");
    // The run's own verdict stands, whatever the review does.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("framework review"), "{}", text(&out));
    let docs = s.home.join(".fleet/reviews").join(&failed);
    assert_eq!(
        std::fs::read_to_string(docs.join("log-analysis.md")).unwrap(),
        "the run had ended\n"
    );
    assert!(docs.join("fix-plan.md").is_file());
    let lessons = s.lessons();
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    let l = &lessons[0];
    assert_eq!(
        l.text,
        "Retry a flaky network test once before failing the run."
    );
    assert_eq!(l.provenance[0].source, "framework-review");
    assert_eq!(l.provenance[0].run.as_deref(), Some(failed.as_str()));
}

#[test]
fn after_all_reviews_a_passing_run_too() {
    let s = setup("all");
    let (out, run) = s.run_book("fine", "true");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        s.home
            .join(".fleet/reviews")
            .join(&run)
            .join("bug-report.md")
            .is_file(),
        "{}",
        text(&out)
    );
}
