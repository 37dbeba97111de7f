//! Trust under faults, one fault at a time: a command killed mid-run and resumed lands its
//! effect once; a failed attempt's leftovers never meet the next attempt; a stop signal at any
//! moment of a run's life leaves no run shown running and no process behind; a background
//! process holding an agent's output does not hold its attempt; a daemon that left its
//! process group does not outlive its task.

mod support;
use support::{fleet_branch, git};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "init"]);
        Repo { _tmp: tmp, dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(FLEET)
            .current_dir(&self.dir)
            .args(args)
            .env_remove("FLEET_HOME")
            .output()
            .unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new(FLEET)
            .current_dir(&self.dir)
            .args(args)
            .env_remove("FLEET_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The runs in `.fleet/runs`, by id.
    fn runs(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.join(".fleet/runs")) {
            Ok(d) => d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn status(&self, run: &str) -> serde_json::Value {
        let out = self.fleet(&["status", run, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// Pids of live processes whose environment holds `mark` (`KEY=VALUE`).
fn marked(mark: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|&b| b == 0).any(|v| v == mark.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("fleet did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The file `path` on the run's integration branch.
fn landed(repo: &Repo, run: &str, path: &str) -> String {
    let branch = fleet_branch(&repo.dir, "runs", run);
    git(&repo.dir, &["show", &format!("{branch}:{path}")])
}

#[test]
fn a_command_killed_mid_run_and_resumed_lands_its_effect_once() {
    let repo = Repo::new();
    let mark = "TRUST_MARK=killed-mid-run";
    repo.write(
        "runbook.yaml",
        "name: append\ntasks:\n  - id: a\n    command: \"echo line >> f.txt; sleep 2\"\n    env: { TRUST_MARK: killed-mid-run }\n",
    );
    let mut fleet = repo.spawn(&["run", "runbook.yaml"]);
    // Killed (as by the OOM killer) while the command runs: it wrote its line already.
    wait_until("the command to run", Duration::from_secs(30), || {
        !marked(mark).is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    fleet.kill().unwrap();
    let _ = fleet.wait();
    let run = repo.runs().pop().expect("the run exists");
    let out = repo.fleet(&["run", "--resume", &run]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        landed(&repo, &run, "f.txt"),
        "line\n",
        "the effect landed twice"
    );
}

#[test]
fn a_retried_command_starts_from_a_clean_worktree() {
    let repo = Repo::new();
    repo.write(
        "runbook.yaml",
        "name: retry\ntasks:\n  - id: a\n    command: \"echo line >> f.txt; echo junk > junk-$FLEET_ATTEMPT.txt\"\n    checks: [\"test $FLEET_ATTEMPT -ge 2\"]\n    retries: 1\n    retry_backoff: 10ms\n",
    );
    let out = repo.fleet(&["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let run = repo.runs().pop().unwrap();
    assert_eq!(
        landed(&repo, &run, "f.txt"),
        "line\n",
        "attempt 2 ran on attempt 1's work"
    );
    let files = git(
        &repo.dir,
        &[
            "ls-tree",
            "--name-only",
            &fleet_branch(&repo.dir, "runs", &run),
        ],
    );
    assert_eq!(
        files, "f.txt\njunk-2.txt\n",
        "a failed attempt's junk landed"
    );
}

/// Sends `signal` to a fresh `fleet run` `after` its start; checks what is left.
fn stop_at(repo: &Repo, signal: &str, after: Duration, n: usize) {
    let mark = format!("TRUST_MARK=stop-{signal}-{n}");
    repo.write(
        "runbook.yaml",
        &format!(
            "name: stop\ntasks:\n  - id: long\n    command: \"sleep 20\"\n    env: {{ TRUST_MARK: stop-{signal}-{n} }}\n"
        ),
    );
    let before = repo.runs();
    let mut fleet = repo.spawn(&["run", "runbook.yaml"]);
    std::thread::sleep(after);
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &fleet.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut fleet, Duration::from_secs(30));
    let what = format!("{signal} after {after:?}: {status:?}");
    let new: Vec<String> = repo
        .runs()
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    match status.code() {
        // Stopped the ordinary way: the run is interrupted, to be resumed.
        Some(130) => {
            assert_eq!(new.len(), 1, "{what}");
            let s = repo.status(&new[0]);
            assert_eq!(s["state"], "interrupted", "{what}: {s:#}");
        }
        // Only before anything exists may a signal end fleet by its default action.
        None => assert!(new.is_empty(), "{what}: killed after run {new:?} existed"),
        other => panic!("{what}: exit {other:?}"),
    }
    // Whatever happened, nothing of the run is left running.
    wait_until(
        &format!("{what}: the task's processes to end"),
        Duration::from_secs(5),
        || marked(&mark).is_empty(),
    );
}

#[test]
fn a_stop_signal_at_any_moment_leaves_no_run_running_and_no_process() {
    let repo = Repo::new();
    let mut n = 0;
    for signal in ["TERM", "HUP", "INT"] {
        for ms in [0, 3, 8, 15, 30, 60, 120, 250, 500] {
            n += 1;
            stop_at(&repo, signal, Duration::from_millis(ms), n);
        }
    }
}

/// An instance whose only developer is `cli: command` running `command`.
fn instance_with_agent(command: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    std::fs::write(
        home.join("fleet.yaml"),
        format!(
            "agents:\n  dev:\n    cli: command\n    command: {command:?}\n    roles: [developer]\n    stall_timeout: 60s\n    env: {{ TRUST_MARK: agent }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("runbook.yaml"),
        "name: bg\ntasks:\n  - id: a\n    role: developer\n    prompt: \"Write out.txt.\"\n",
    )
    .unwrap();
    (tmp, home, repo)
}

fn run_in(home: &Path, repo: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(FLEET)
        .current_dir(repo)
        .args(["run", "runbook.yaml"])
        .env("FLEET_HOME", home)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn a_background_process_holding_the_agents_output_does_not_hold_the_attempt() {
    let (_tmp, home, repo) = instance_with_agent("echo done > out.txt; sleep 300 & echo started");
    let (out, took) = run_in(&home, &repo);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The stall timeout is 60 s: the attempt ended when the agent did, not then.
    assert!(
        took < Duration::from_secs(30),
        "the attempt waited for its background child: {took:?}"
    );
    wait_until(
        "the background child to be gone",
        Duration::from_secs(5),
        || marked("TRUST_MARK=agent").is_empty(),
    );
}

#[test]
fn a_daemon_that_left_its_process_group_does_not_outlive_its_task() {
    let repo = Repo::new();
    let mark = "TRUST_MARK=daemon";
    repo.write(
        "runbook.yaml",
        "name: daemon\ntasks:\n  - id: a\n    command: \"setsid sleep 300 > /dev/null 2>&1 < /dev/null & sleep 1\"\n    env: { TRUST_MARK: daemon }\n  - id: b\n    depends_on: [a]\n    command: \"sleep 8\"\n",
    );
    let mut fleet = repo.spawn(&["run", "runbook.yaml"]);
    // Task a ended at once; its daemon is gone while b still runs, not only when the run ends.
    wait_until("task b to run", Duration::from_secs(30), || {
        repo.runs().pop().is_some_and(|run| {
            std::fs::read_to_string(repo.dir.join(format!(".fleet/runs/{run}/events.jsonl")))
                .is_ok_and(|e| {
                    e.lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .any(|v| v["task"] == "b" && v["kind"] == "task.started")
                })
        })
    });
    wait_until("the daemon to be gone", Duration::from_secs(6), || {
        marked(mark).is_empty()
    });
    let status = wait_exit(&mut fleet, Duration::from_secs(30));
    assert!(status.success());
    assert!(marked(mark).is_empty());
}

#[test]
fn an_endless_agent_output_is_kept_as_its_head_and_tail() {
    // 24 MB of output: more than the transcript keeps (its head and its tail).
    let (_tmp, home, repo) = instance_with_agent(
        "echo first-line; yes 0123456789012345678901234567890123456789 | head -c 24000000; echo last-line; echo done > out.txt",
    );
    let (out, _) = run_in(&home, &repo);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let runs = home.join(".fleet/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let transcript = std::fs::read(run.join("transcripts/a-1.jsonl")).unwrap();
    let text = String::from_utf8_lossy(&transcript);
    assert!(
        transcript.len() < 12_000_000,
        "the transcript grew with the output: {} bytes",
        transcript.len()
    );
    assert!(text.starts_with("first-line"), "{}", &text[..100]);
    assert!(text.contains("bytes cut here"));
    assert!(
        text.trim_end().ends_with("last-line"),
        "{}",
        &text[text.len() - 200..]
    );
    let log = std::fs::read(run.join("logs/a.log")).unwrap();
    assert!(
        log.len() < 3_000_000,
        "the task log grew with the output: {}",
        log.len()
    );
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let said = events
        .lines()
        .filter(|l| l.contains("\"agent.message\""))
        .count();
    assert!(said <= 20_000, "{said} messages stored");
    assert!(events.contains("\"attempt.output_cut\""));
}

/// `fleet serve` on an empty instance, stopped by `signal` `after` its start: it drains and
/// exits 0 whenever the signal comes, never dying by it.
fn serve_stopped_by(signal: &str, after: Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let init = Command::new(FLEET)
        .args(["init", home.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut serve = Command::new(FLEET)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("FLEET_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut serve, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "{signal} after {after:?}: {status:?}"
    );
}

#[test]
fn fleet_serve_drains_on_any_stop_signal_from_its_first_moment() {
    for signal in ["HUP", "TERM", "INT"] {
        for ms in [30, 400] {
            serve_stopped_by(signal, Duration::from_millis(ms));
        }
    }
}

#[test]
fn a_stop_signal_stops_an_epic_being_driven_whatever_stage_it_is_in() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("shop");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    let init = Command::new(FLEET)
        .args(["init", home.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    // Every role is played by an agent that takes its time.
    std::fs::write(
        home.join("fleet.yaml"),
        "agents:\n  slow:\n    cli: command\n    command: \"sleep 30\"\n    roles: [researcher, architect, planner, developer, reviewer, devops, qa, db]\n    env: { TRUST_MARK: epic }\n",
    )
    .unwrap();
    let fleet = |args: &[&str]| {
        let mut c = Command::new(FLEET);
        c.args(args).env("FLEET_HOME", &home);
        c
    };
    let added = fleet(&[
        "project",
        "add",
        "shop",
        "--repo",
        repo.to_str().unwrap(),
        "--check",
        "true",
    ])
    .output()
    .unwrap();
    assert!(added.status.success(), "{added:?}");
    for (signal, ms) in [("TERM", 1500), ("INT", 1500), ("HUP", 1500), ("TERM", 40)] {
        let mut child = fleet(&["task", "add", "Add a health endpoint", "--project", "shop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        // It stops within its grace, not after its agents' 30 s — and is not killed by it.
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert!(
            status.code().is_some(),
            "{signal} after {ms} ms killed fleet task add: {status:?}"
        );
        wait_until(
            "the epic's agents to be gone",
            Duration::from_secs(5),
            || marked("TRUST_MARK=epic").is_empty(),
        );
    }
    let ls = fleet(&["task", "ls", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        !text.contains("\"failed\""),
        "a stop failed an epic: {text}"
    );
}

#[test]
fn a_journal_a_kill_left_short_is_completed_before_it_is_read() {
    let repo = Repo::new();
    repo.write(
        "runbook.yaml",
        "name: short\ntasks:\n  - id: a\n    command: \"true\"\n",
    );
    assert_eq!(repo.fleet(&["run", "runbook.yaml"]).status.code(), Some(0));
    let run = repo.runs().pop().unwrap();
    let path = repo.dir.join(format!(".fleet/runs/{run}/events.jsonl"));
    let whole = std::fs::read_to_string(&path).unwrap();
    // Killed after the run's end was committed, before it reached the journal.
    let cut = whole.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(&path, &whole[..cut]).unwrap();
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("run.finished")
    );
    assert!(repo.fleet(&["status", &run, "--json"]).status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
}
