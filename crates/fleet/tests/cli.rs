//! End-to-end tests of `fleet run` and friends: the real binary, real git repositories in
//! temp dirs, real processes, the real SQLite store.

mod support;
use support::git;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// A fresh repository with one commit and the given runbook as `runbook.yaml`.
fn repo_with(runbook: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(repo.join("runbook.yaml"), runbook).unwrap();
    (dir, repo)
}

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(FLEET)
        .current_dir(dir)
        .args(args)
        .env_remove("FLEET_HOME")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_json(repo: &Path, run: &str) -> Value {
    let out = fleet(repo, &["status", run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn only_run(repo: &Path) -> String {
    let out = fleet(repo, &["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    runs[0]["id"].as_str().unwrap().to_string()
}

fn states(status: &Value) -> Vec<(String, String)> {
    status["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn events(repo: &Path, run: &str) -> Vec<Value> {
    std::fs::read_to_string(repo.join(".fleet/runs").join(run).join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn invalid_runbooks_exit_2_and_create_nothing() {
    let cases = [
        (
            "name: x\ntasks:\n  - id: a\n    comand: true\n",
            "runbook.yaml:4:5",
            "unknown key `comand`",
        ),
        (
            "name: x\ntasks:\n  - id: ../x\n    command: true\n",
            "runbook.yaml:3:9",
            "invalid task id",
        ),
        (
            "name: x\ntasks:\n  - id: a b\n    command: true\n",
            "runbook.yaml:3:9",
            "invalid task id",
        ),
        (
            "name: x\ntasks:\n  - id: x;rm\n    command: true\n",
            "runbook.yaml:3:9",
            "invalid task id",
        ),
        (
            "name: x\ntasks:\n  - id: a\n    depends_on: [b]\n    command: true\n  - id: b\n    depends_on: [a]\n    command: true\n",
            "runbook.yaml:3:",
            "dependency cycle: a -> b -> a",
        ),
        (
            "name: x\ntasks:\n  - id: a\n    depends_on: [nope]\n    command: true\n",
            "runbook.yaml:4:18",
            "\"nope\"",
        ),
        (
            "name: x\ntasks:\n  - id: a\n    command: [1\n",
            "runbook.yaml:",
            "",
        ),
    ];
    for (runbook, location, message) in cases {
        let (_tmp, repo) = repo_with(runbook);
        let out = fleet(&repo, &["run", "runbook.yaml"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{runbook}\n{err}");
        assert!(err.contains(location), "expected {location} in:\n{err}");
        assert!(err.contains(message), "expected {message:?} in:\n{err}");
        assert!(
            !repo.join(".fleet").exists(),
            "invalid input must create nothing"
        );
        assert!(
            !git(&repo, &["branch", "--list", "fleet/*"]).contains("fleet"),
            "no branch may be created"
        );
    }
    // A base that does not exist is bad input too.
    let (_tmp, repo) = repo_with("name: x\nbase: nope\ntasks:\n  - id: a\n    command: true\n");
    let out = fleet(&repo, &["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("base \"nope\""),
        "{}",
        text(&out.stderr)
    );
    assert!(!repo.join(".fleet").exists());
    // And so is a missing file.
    let out = fleet(&repo, &["run", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

const DIAMOND: &str = r#"name: diamond
concurrency: 3
report: reports/summary.md
tasks:
  - id: base
    command: "mkdir -p out && echo base > out/base.txt"
    checks: ["test -f out/base.txt"]
  - id: left
    depends_on: [base]
    command: "cat out/base.txt > out/left.txt && echo left >> out/left.txt"
  - id: right
    depends_on: [base]
    command: "echo right > out/right.txt"
    checks: ["grep -q right out/right.txt", "test -f out/base.txt"]
  - id: join
    depends_on: [left, right]
    command: "cat out/left.txt out/right.txt > out/join.txt"
  - id: count
    depends_on: [join]
    workspace: none
    command: "git show $FLEET_BRANCH:out/join.txt | wc -l"
  - id: noop
    command: "true"
"#;

#[test]
fn a_diamond_lands_on_the_integration_branch_in_dependency_order() {
    let (_tmp, repo) = repo_with(DIAMOND);
    let main_before = git(&repo, &["rev-parse", "main"]);
    let out = fleet(&repo, &["run", "runbook.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let run = only_run(&repo);
    assert!(run.starts_with("diamond-"), "{run}");
    let branch = support::fleet_branch(&repo, "runs", &run);

    // What the tasks wrote is on the integration branch, built on each other's work.
    let join = git(&repo, &["show", &format!("{branch}:out/join.txt")]);
    assert_eq!(join, "base\nleft\nright\n");
    // The user's branch and working tree are untouched.
    assert_eq!(git(&repo, &["rev-parse", "main"]), main_before);
    assert!(!repo.join("out").exists());

    // One merge commit per worktree task, in dependency order; `noop` changed nothing.
    let subjects: Vec<String> = git(&repo, &["log", "--reverse", "--format=%s", &branch])
        .lines()
        .filter(|s| s.starts_with("fleet: merge task"))
        .map(|s| s.split_whitespace().nth(3).unwrap().to_string())
        .collect();
    let pos = |id: &str| {
        subjects
            .iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("{id} not merged: {subjects:?}"))
    };
    assert_eq!(subjects.len(), 4, "{subjects:?}");
    assert!(pos("base") < pos("left") && pos("base") < pos("right"));
    assert!(pos("left") < pos("join") && pos("right") < pos("join"));

    let status = status_json(&repo, &run);
    assert_eq!(status["state"], "passed");
    let expected = [
        ("base", "merged"),
        ("left", "merged"),
        ("right", "merged"),
        ("join", "merged"),
        ("count", "passed"),
        ("noop", "merged"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(states(&status), expected);

    // Worktrees of passed tasks are gone; logs, events and the summaries are there.
    let worktrees = git(&repo, &["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "{worktrees}");
    let count_log =
        std::fs::read_to_string(repo.join(".fleet/runs").join(&run).join("logs/count.log"))
            .unwrap();
    assert!(
        count_log.contains("── attempt 1 ") && count_log.contains("\n3\n"),
        "{count_log}"
    );
    let right_log =
        std::fs::read_to_string(repo.join(".fleet/runs").join(&run).join("logs/right.log"))
            .unwrap();
    assert!(right_log.contains("── check 2/2 ──"), "{right_log}");
    let summary =
        std::fs::read_to_string(repo.join(".fleet/runs").join(&run).join("summary.md")).unwrap();
    let head: Vec<&str> = summary.lines().take(4).collect();
    assert!(head.iter().any(|l| l.contains(&run)), "{summary}");
    assert!(head.iter().any(|l| l.contains(&branch)), "{summary}");
    assert_eq!(
        std::fs::read_to_string(repo.join("reports/summary.md")).unwrap(),
        summary
    );

    let evs = events(&repo, &run);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let done: Vec<&str> = evs
        .iter()
        .filter(|e| e["kind"] == "task.done")
        .map(|e| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(done.len(), 6, "{done:?}");
    assert_eq!(evs.last().unwrap()["kind"], "run.finished");
    assert!(evs.iter().all(|e| e["at"].as_str().unwrap().ends_with('Z')));
}

#[test]
fn a_failed_check_skips_dependents_keeps_the_worktree_and_exits_1() {
    let (_tmp, repo) = repo_with(
        "name: fails\ntasks:\n  - id: good\n    command: \"echo ok > good.txt\"\n  - id: bad\n    command: \"echo 1 > bad.txt\"\n    checks: [\"grep -q 2 bad.txt\"]\n  - id: after-bad\n    depends_on: [bad]\n    command: \"true\"\n  - id: after-after\n    depends_on: [after-bad, good]\n    command: \"true\"\n",
    );
    let out = fleet(&repo, &["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run = only_run(&repo);
    let status = status_json(&repo, &run);
    assert_eq!(status["state"], "failed");
    let tasks = status["task_list"].as_array().unwrap();
    let by_id = |id: &str| tasks.iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(by_id("good")["state"], "merged");
    assert_eq!(by_id("bad")["state"], "failed");
    assert_eq!(by_id("bad")["reason"], "check `grep -q 2 bad.txt` exit 1");
    assert_eq!(by_id("after-bad")["state"], "skipped");
    assert_eq!(by_id("after-bad")["reason"], "dependency `bad` failed");
    assert_eq!(
        by_id("after-after")["reason"],
        "dependency `after-bad` was skipped"
    );
    assert_eq!(by_id("after-bad")["attempts"], 0);
    // The failed task's worktree is kept for inspection, with its work in it.
    let wt = repo.join(".fleet/worktrees").join(&run).join("bad");
    assert_eq!(std::fs::read_to_string(wt.join("bad.txt")).unwrap(), "1\n");
    let summary =
        std::fs::read_to_string(repo.join(".fleet/runs").join(&run).join("summary.md")).unwrap();
    assert!(
        summary.contains("## Failed") && summary.contains("check `grep -q 2 bad.txt` exit 1"),
        "{summary}"
    );
    assert!(
        summary.contains("`after-bad`: dependency `bad` failed"),
        "{summary}"
    );
    // `fleet gc` removes it once the run has ended.
    let out = fleet(&repo, &["gc"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!wt.exists());
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn a_merge_conflict_fails_the_task_with_its_files_and_loses_nothing() {
    let (_tmp, repo) = repo_with(
        "name: conflict\nconcurrency: 1\ntasks:\n  - id: first\n    command: \"echo first > shared.txt && echo a > a.txt\"\n  - id: second\n    command: \"echo second > shared.txt && echo b > b.txt\"\n  - id: after-first\n    depends_on: [first]\n    command: \"true\"\n  - id: after-second\n    depends_on: [second]\n    command: \"true\"\n",
    );
    let out = fleet(&repo, &["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run = only_run(&repo);
    let branch = support::fleet_branch(&repo, "runs", &run);
    let status = status_json(&repo, &run);
    let tasks = status["task_list"].as_array().unwrap();
    assert_eq!(tasks[0]["state"], "merged");
    assert_eq!(tasks[1]["state"], "failed");
    assert_eq!(tasks[1]["reason"], "merge conflict in shared.txt");
    assert_eq!(tasks[2]["state"], "merged");
    assert_eq!(tasks[3]["state"], "skipped");
    // What landed first stays; the conflicting task's work is kept on its own branch.
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:shared.txt")]),
        "first\n"
    );
    assert_eq!(git(&repo, &["show", &format!("{branch}:a.txt")]), "a\n");
    let b_on_branch = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["cat-file", "-e", &format!("{branch}:b.txt")])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !b_on_branch.success(),
        "the conflicting task's files must not land"
    );
    let task_branch = support::fleet_branch(&repo, "tasks", &format!("{run}/second"));
    assert_eq!(
        git(&repo, &["show", &format!("{task_branch}:shared.txt")]),
        "second\n"
    );
    let events = events(&repo, &run);
    let conflict = events
        .iter()
        .find(|e| e["kind"] == "task.merge_conflict")
        .unwrap();
    assert_eq!(conflict["data"]["files"], serde_json::json!(["shared.txt"]));
}

#[test]
fn a_timeout_ends_the_whole_process_group() {
    let (_tmp, repo) = repo_with(
        "name: slow\ntasks:\n  - id: hang\n    timeout: 1s\n    command: \"sleep 60 & sleep 60; echo never\"\n",
    );
    let started = Instant::now();
    let out = fleet(&repo, &["run", "runbook.yaml", "--kill-grace", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let run = only_run(&repo);
    let status = status_json(&repo, &run);
    let reason = status["task_list"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("command timed out after 1"), "{reason}");
    assert_eq!(
        status["task_list"][0]["attempt_list"][0]["outcome"],
        "timed_out"
    );
    // No `sleep 60` of this run survives.
    let tag = format!("FLEET_RUN={run}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            assert!(
                !env.split(|&b| b == 0).any(|v| v == tag.as_bytes()),
                "process {:?} survived",
                entry.path()
            );
        }
    }
}

#[test]
fn a_flaky_task_passes_on_its_retry_after_the_backoff() {
    let (_tmp, repo) = repo_with(
        "name: flaky\ntasks:\n  - id: flaky\n    retries: 2\n    retry_backoff: 300ms\n    command: \"test $FLEET_ATTEMPT -ge 2 && echo ok > ok.txt\"\n",
    );
    let out = fleet(&repo, &["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = only_run(&repo);
    let status = status_json(&repo, &run);
    let attempts = status["task_list"][0]["attempt_list"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[1]["outcome"], "passed");
    let evs = events(&repo, &run);
    let retry = evs.iter().find(|e| e["kind"] == "task.retrying").unwrap();
    let first_end = evs
        .iter()
        .find(|e| e["kind"] == "attempt.finished")
        .unwrap();
    let second_start = evs
        .iter()
        .filter(|e| e["kind"] == "attempt.started")
        .nth(1)
        .unwrap();
    let ms = |e: &Value| chrono_ms(e["at"].as_str().unwrap());
    assert!(
        ms(second_start) - ms(first_end) >= 290,
        "backoff not respected: {retry}"
    );
    let log = std::fs::read_to_string(repo.join(".fleet/runs").join(&run).join("logs/flaky.log"))
        .unwrap();
    assert!(
        log.contains("── attempt 1 ") && log.contains("── attempt 2 "),
        "{log}"
    );
}

/// Milliseconds of an RFC 3339 `...THH:MM:SS.mmmZ` timestamp within its day (enough here).
fn chrono_ms(at: &str) -> i64 {
    let t = &at[11..23];
    let h: i64 = t[0..2].parse().unwrap();
    let m: i64 = t[3..5].parse().unwrap();
    let s: i64 = t[6..8].parse().unwrap();
    let ms: i64 = t[9..12].parse().unwrap();
    ((h * 60 + m) * 60 + s) * 1000 + ms
}

/// Starts `fleet run runbook.yaml` in `repo` and stops it with SIGINT once task `task` runs
/// (its log shows `$ sleep`); the run is left interrupted. Returns fleet's output.
fn interrupt_once_running(repo: &Path, task: &str) -> Output {
    let child = Command::new(FLEET)
        .current_dir(repo)
        .args(["run", "runbook.yaml"])
        .env_remove("FLEET_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = repo.join(".fleet/runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::fs::read_dir(&log)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|r| {
                std::fs::read_to_string(r.unwrap().path().join(format!("logs/{task}.log"))).ok()
            })
            .is_some_and(|l| l.contains("$ sleep "));
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "task {task} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let stopped_at = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    out
}

#[test]
fn ctrl_c_stops_gracefully_and_resume_finishes_the_run() {
    let (_tmp, repo) = repo_with(
        "name: stop\ntasks:\n  - id: long\n    command: \"sleep ${LONG_TASK_SECS:-30}\"\n  - id: after\n    depends_on: [long]\n    command: \"echo after > after.txt\"\n",
    );
    let out = interrupt_once_running(&repo, "long");
    assert!(
        text(&out.stdout).contains("fleet run --resume"),
        "{}",
        text(&out.stdout)
    );
    let run = only_run(&repo);
    let status = status_json(&repo, &run);
    assert_eq!(status["state"], "interrupted");
    assert_eq!(status["task_list"][0]["state"], "ready");
    assert_eq!(
        status["task_list"][0]["failures"], 0,
        "an interruption is not a failure"
    );

    // The resumed run does the rest; the interrupted task runs again (quickly this time).
    let out = Command::new(FLEET)
        .current_dir(&repo)
        .args(["run", "--resume", &run, "-q"])
        .env("LONG_TASK_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = status_json(&repo, &run);
    assert_eq!(status["state"], "passed");
    assert_eq!(status["task_list"][0]["attempts"], 2);
    assert_eq!(
        git(
            &repo,
            &[
                "show",
                &format!("{}:after.txt", support::fleet_branch(&repo, "runs", &run))
            ]
        ),
        "after\n"
    );
    // A finished run cannot be resumed again.
    let out = fleet(&repo, &["run", "--resume", &run]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn resume_makes_a_missing_integration_branch_again_unless_work_had_landed_on_it() {
    // A run without worktrees makes its branch while its tasks run: a fleet killed before
    // that leaves a run without one. Deleting the branch stands in for that kill.
    let (_tmp, repo) = repo_with(
        "name: nobranch\ndefaults:\n  workspace: none\ntasks:\n  - id: long\n    command: \"sleep ${LONG_TASK_SECS:-30}\"\n",
    );
    interrupt_once_running(&repo, "long");
    let run = only_run(&repo);
    let branch = support::fleet_branch(&repo, "runs", &run);
    git(&repo, &["branch", "-D", &branch]);
    let out = Command::new(FLEET)
        .current_dir(&repo)
        .args(["run", "--resume", &run, "-q"])
        .env_remove("FLEET_HOME")
        .env("LONG_TASK_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(status_json(&repo, &run)["state"], "passed");
    assert_eq!(
        git(&repo, &["rev-parse", &branch]),
        git(&repo, &["rev-parse", "main"]),
        "made again at the run's base"
    );

    // Once a task's work has landed on it, a missing branch would lose that work: refused.
    let (_tmp, repo) = repo_with(
        "name: landed\ntasks:\n  - id: first\n    command: \"echo one > one.txt\"\n  - id: long\n    depends_on: [first]\n    command: \"sleep ${LONG_TASK_SECS:-30}\"\n",
    );
    interrupt_once_running(&repo, "long");
    let run = only_run(&repo);
    let branch = support::fleet_branch(&repo, "runs", &run);
    git(&repo, &["show", &format!("{branch}:one.txt")]);
    git(&repo, &["branch", "-D", &branch]);
    let out = fleet(&repo, &["run", "--resume", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("integration branch {branch} is gone")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_json(&repo, &run)["state"], "interrupted");
}

#[test]
fn the_demo_runs_as_designed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let started = Instant::now();
    let out = Command::new(FLEET)
        .args(["demo", "runbook", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let run = only_run(&dir);
    let status = status_json(&dir, &run);
    let s: std::collections::BTreeMap<String, String> = states(&status).into_iter().collect();
    assert_eq!(s["div"], "failed");
    assert_eq!(s["div-docs"], "skipped");
    assert_eq!(s["inventory"], "passed");
    assert_eq!(s.values().filter(|v| *v == "merged").count(), 7, "{s:?}");
    let flaky = status["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "fetch-rates")
        .unwrap();
    assert_eq!(flaky["attempts"], 2);
    let calc = git(
        &dir,
        &[
            "show",
            &format!("{}:bin/calc", support::fleet_branch(&dir, "runs", &run)),
        ],
    );
    assert!(calc.contains("mul.sh"), "{calc}");
    assert!(text(&out.stdout).contains("summary.md"));
}
