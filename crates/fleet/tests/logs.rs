//! `fleet logs RUN TASK [-f]`: a task's log, and with `-f` its lines as they are written,
//! ending when the task ends; a reader that goes away ends it quietly.

mod support;
use support::git;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fleet(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
    c.current_dir(dir).env_remove("FLEET_HOME");
    c
}

#[test]
fn logs_follow_a_running_task_and_end_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    let gate = repo.join("gate");
    std::fs::write(
        repo.join("runbook.yaml"),
        format!(
            "name: slow\ntasks:\n  - id: slow\n    workspace: none\n    command: \"echo first line; while [ ! -e {} ]; do sleep 0.05; done; echo last line\"\n",
            gate.display()
        ),
    )
    .unwrap();
    let mut run = fleet(repo)
        .args(["run", "runbook.yaml", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The run exists and its task has started writing.
    let started = Instant::now();
    let run_id = loop {
        let out = fleet(repo).args(["runs", "--json"]).output().unwrap();
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(id) = runs
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["id"].as_str())
        {
            let log = fleet(repo).args(["logs", id, "slow"]).output().unwrap();
            if String::from_utf8_lossy(&log.stdout).contains("first line") {
                break id.to_string();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut follow = fleet(repo)
        .args(["logs", &run_id, "slow", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let first = line.contains("first line");
        seen.push(line);
        if first {
            break;
        }
    }
    // Still following: the task goes on only now, and its next line arrives on the stream.
    assert!(
        follow.try_wait().unwrap().is_none(),
        "-f ended while the task ran: {seen:?}"
    );
    std::fs::write(&gate, "").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l.contains("last line")), "{rest:?}");
    assert!(follow.wait().unwrap().success());
    assert!(run.wait().unwrap().success());

    // An unknown task is named with the run's tasks (exit 2).
    let bad = fleet(repo)
        .args(["logs", &run_id, "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("its tasks: slow"));

    // A reader that goes away ends the command quietly.
    let mut closed = fleet(repo)
        .args(["logs", &run_id, "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(closed.stdout.take());
    let out = closed.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A task with no log (skipped before it ran) is not shown as an empty success: the command
/// says why, on stderr, and exits 1.
#[test]
fn logs_of_a_task_without_a_log_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    std::fs::write(
        repo.join("runbook.yaml"),
        "name: skip\ntasks:\n  - id: broken\n    workspace: none\n    command: \"echo no; exit 4\"\n  - id: after\n    depends_on: [broken]\n    workspace: none\n    command: \"true\"\n",
    )
    .unwrap();
    let run = fleet(repo)
        .args(["run", "runbook.yaml", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let runs = fleet(repo).args(["runs", "--json"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap();
    let out = fleet(repo).args(["logs", id, "after"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no log") && err.contains("skipped"), "{err}");
    let shown = fleet(repo).args(["logs", id, "broken"]).output().unwrap();
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    assert!(String::from_utf8_lossy(&shown.stdout).contains("no\n"));
}
