//! Chaos: a 150-task layered DAG whose commands are not idempotent — each appends its line to
//! its own file, then pauses — is hit at 30 random moments (10 ms to 1 s after each start) and
//! resumed with `fleet run --resume` until it ends. The fault is either `kill -9` of the `fleet`
//! process alone (as in a real crash, its children live on and the resume must deal with them)
//! or SIGTERM (what systemd, Kubernetes and `docker stop` send).
//!
//! What must hold at the end: the run `passed`; on the integration branch every task's file holds
//! its line exactly once (a task applied twice shows as a second line); `git worktree list`
//! lists the repository alone and no worktree folder is left; `git fsck` is clean; no `*.lock`
//! is left under `.git`; no process tagged `FLEET_RUN=<run>` is alive. After each SIGTERM, fleet
//! must exit by itself with 130 (interrupted), print the resume hint, leave the run
//! `interrupted` and no process of it running.
//!
//! The moments come from a seeded PRNG; the seed is printed at the start and in every failure:
//! replay with `FLEET_CHAOS_SEED=<seed> cargo test -p fleet --test chaos`. Everything a failing
//! run left is kept for inspection (the path is in the message).

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::kill::{Rng, seed, status_code, tagged_after, wait_until};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
const LAYERS: usize = 15;
const WIDTH: usize = 10;
/// Each task past the first layer depends on this many tasks of the layer before.
const FAN_IN: usize = 2;
const CONCURRENCY: usize = 8;
const FAULTS: usize = 30;
/// When a fault lands, in ms after the process started.
const FAULT_MS: (u64, u64) = (10, 1000);
/// The graph is the same in every run; only the moments of the faults vary with the seed.
const DAG_SEED: u64 = 17;
/// How long fleet may take to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);
/// Undisturbed resumes tried after the faults, and how long each may take.
const FINISHERS: usize = 2;
/// An undisturbed debug build runs the whole design in under a minute on a loaded 2-core machine.
const FINISH_PATIENCE: Duration = Duration::from_secs(180);
/// A process SIGKILLed a moment ago may still be on its way out; a leaked one sleeps longer.
const EXIT_GRACE: Duration = Duration::from_millis(100);

// ── the design ─────────────────────────────────────────────────────────────────────────────

struct Task {
    id: String,
    deps: Vec<String>,
    pause_ms: u64,
    checked: bool,
}

/// `LAYERS` x `WIDTH` tasks; one task in three has a check.
fn design() -> Vec<Task> {
    let mut rng = Rng(DAG_SEED);
    let mut tasks = Vec::new();
    for layer in 0..LAYERS {
        for i in 0..WIDTH {
            let mut deps = Vec::new();
            while layer > 0 && deps.len() < FAN_IN {
                let j = rng.range(0, WIDTH as u64 - 1);
                let d = format!("l{:02}-t{j:02}", layer - 1);
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            deps.sort();
            let n = tasks.len() as u64;
            tasks.push(Task {
                id: format!("l{layer:02}-t{i:02}"),
                deps,
                pause_ms: 400 + (n % 4) * 100,
                checked: n.is_multiple_of(3),
            });
        }
    }
    tasks
}

fn file_of(id: &str) -> String {
    format!("f_{id}.txt")
}

fn runbook(name: &str, tasks: &[Task]) -> String {
    let mut y = format!(
        "name: {name}\nconcurrency: {CONCURRENCY}\ndefaults:\n  timeout: 120s\n  retries: 0\ntasks:\n"
    );
    for t in tasks {
        let (id, f) = (&t.id, file_of(&t.id));
        let _ = writeln!(y, "  - id: {id}");
        if !t.deps.is_empty() {
            let _ = writeln!(y, "    depends_on: [{}]", t.deps.join(", "));
        }
        // The line lands first and the pause follows: a fault in the pause finds it written.
        let pause = format!("{}.{}", t.pause_ms / 1000, t.pause_ms % 1000 / 100);
        let _ = writeln!(y, "    command: 'echo {id} >> {f} && sleep {pause}'");
        if t.checked {
            let _ = writeln!(y, "    checks: ['grep -qx {id} {f}']");
        }
    }
    y
}

// ── the harness ────────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill9,
    Term,
}

struct Chaos {
    fault: Fault,
    seed: u64,
    tmp: Option<tempfile::TempDir>,
    repo: PathBuf,
    outputs: PathBuf,
    run: Option<String>,
    history: Vec<String>,
    /// Processes started so far (process `n` writes `outputs/<n>.log`).
    started: usize,
    /// Everything found wrong, reported together at the end.
    problems: Vec<String>,
}

impl Chaos {
    fn describe(&self) -> String {
        format!(
            "seed {seed} (replay: FLEET_CHAOS_SEED={seed}), run {run}\nprocesses: {hist}",
            seed = self.seed,
            run = self.run.as_deref().unwrap_or("<none yet>"),
            hist = self.history.join(", "),
        )
    }

    /// Keeps the temporary directory for inspection and fails the test.
    fn fail(&mut self, msg: impl std::fmt::Display) -> ! {
        let kept = self.tmp.take().map(|t| t.keep());
        let kept = kept
            .map(|p| format!("\nstate kept in {}", p.display()))
            .unwrap_or_default();
        panic!("{msg}\n{}{kept}", self.describe());
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.repo)
            .env_remove("FLEET_HOME")
            .env("HOME", self.repo.parent().unwrap())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Chaos Test")
            .env("GIT_AUTHOR_EMAIL", "chaos@example.invalid")
            .env("GIT_COMMITTER_NAME", "Chaos Test")
            .env("GIT_COMMITTER_EMAIL", "chaos@example.invalid")
            .stdin(Stdio::null());
        cmd
    }

    fn git_out(&self, args: &[&str]) -> Output {
        self.command("git").args(args).output().expect("git runs")
    }

    /// git's stdout, or a recorded problem (and `None`) when it fails.
    fn git(&mut self, args: &[&str]) -> Option<String> {
        let out = self.git_out(args);
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        self.problems.push(format!(
            "git {} failed ({}): {}",
            args.join(" "),
            status_code(&out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        None
    }

    fn fleet_json(&mut self, args: &[&str]) -> Value {
        let out = self.command(FLEET).args(args).output().expect("fleet runs");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            self.fail(format!(
                "fleet {args:?} ended {}: {err}",
                status_code(&out.status)
            ));
        }
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| self.fail(format!("fleet {args:?} printed bad JSON: {e}")))
    }

    /// Learns the run's id once the store has it; exactly one run may ever be made.
    fn learn_run(&mut self) {
        if self.run.is_some() || !self.repo.join(".fleet/fleet.db").exists() {
            return;
        }
        let runs = self.fleet_json(&["runs", "--json"]);
        let runs = runs.as_array().cloned().unwrap_or_default();
        if runs.len() > 1 {
            self.fail(format!("more than one run was created: {runs:?}"));
        }
        self.run = runs
            .first()
            .and_then(|r| r["id"].as_str())
            .map(str::to_string);
    }

    /// The run's state in the store: `running`, `interrupted`, `passed`, `failed`.
    fn run_state(&mut self) -> Option<String> {
        let run = self.run.clone()?;
        let runs = self.fleet_json(&["runs", "--json"]);
        runs.as_array()?
            .iter()
            .find(|r| r["id"] == run.as_str())
            .and_then(|r| r["state"].as_str().map(str::to_string))
    }

    fn finished(&mut self) -> bool {
        matches!(self.run_state().as_deref(), Some("passed" | "failed"))
    }

    /// Starts the next process: the new run, or a resume of it. Returns its number.
    fn spawn(&mut self) -> (Child, &'static str, usize) {
        let n = self.started;
        self.started += 1;
        let out = std::fs::File::create(self.outputs.join(format!("{n}.log"))).unwrap();
        let mut cmd = self.command(FLEET);
        cmd.args(["run", "--kill-grace", "1"]);
        let what = match &self.run {
            None => {
                cmd.arg("runbook.yaml");
                "new"
            }
            Some(run) => {
                cmd.args(["--resume", run]);
                "resume"
            }
        };
        cmd.stdout(out.try_clone().unwrap()).stderr(out);
        (cmd.spawn().expect("fleet starts"), what, n)
    }

    /// The last lines of process `n`'s output.
    fn output_tail(&self, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.outputs.join(format!("{n}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return "(none)".into();
        }
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

// ── faults ─────────────────────────────────────────────────────────────────────────────────

/// Starts fleet and hits it at `FAULTS` random moments. Returns how many faults landed (fewer
/// only when the run ended first, or fleet ended on its own with an error, both recorded).
fn storm(cx: &mut Chaos, rng: &mut Rng) -> usize {
    let mut faults = 0;
    while faults < FAULTS {
        let (mut child, what, n) = cx.spawn();
        let delay = rng.range(FAULT_MS.0, FAULT_MS.1);
        if let Some(status) = wait_until(&mut child, Instant::now() + Duration::from_millis(delay))
        {
            cx.history
                .push(format!("#{n} {what} -> {}", status_code(&status)));
            cx.learn_run();
            if !matches!(status.code(), Some(0 | 1)) {
                cx.problems.push(format!(
                    "process #{n} (fleet run {what}) ended with {} on its own; output:\n{}",
                    status_code(&status),
                    cx.output_tail(n)
                ));
            }
            return faults;
        }
        faults += 1;
        match cx.fault {
            Fault::Kill9 => {
                // SIGKILL to fleet alone: its task processes, in their own groups, live on.
                child.kill().expect("SIGKILL");
                child.wait().expect("reaped");
                cx.history.push(format!("#{n} {what} kill@{delay}ms"));
                cx.learn_run();
            }
            Fault::Term => terminate(cx, n, what, child, delay),
        }
        if cx.run.is_some() && cx.finished() {
            cx.history
                .push("(the run had ended before that fault)".into());
            return faults;
        }
    }
    faults
}

/// SIGTERM to fleet; then it must exit by itself with 130 and the resume hint, the run must be
/// `interrupted`, and nothing of it may be left running.
fn terminate(cx: &mut Chaos, n: usize, what: &str, mut child: Child, delay: u64) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill -TERM {}", child.id());
    let Some(status) = wait_until(&mut child, Instant::now() + PATIENCE) else {
        let _ = child.kill();
        let _ = child.wait();
        cx.history
            .push(format!("#{n} {what} term@{delay}ms -> hung, SIGKILLed"));
        cx.problems.push(format!(
            "process #{n}: fleet did not exit within {PATIENCE:?} of SIGTERM (sent {delay} ms after start); output:\n{}",
            cx.output_tail(n)
        ));
        return;
    };
    cx.history.push(format!(
        "#{n} {what} term@{delay}ms -> {}",
        status_code(&status)
    ));
    cx.learn_run();
    let state = cx.run_state();
    if matches!(state.as_deref(), Some("passed" | "failed")) && matches!(status.code(), Some(0 | 1))
    {
        return; // it ended before the signal could stop it
    }
    let mut wrong = Vec::new();
    // 130 is the CLI's "interrupted"; 143 (128 + SIGTERM) only as an exit code fleet chose.
    if !matches!(status.code(), Some(130 | 143)) {
        wrong.push(format!(
            "ended with {}, expected exit 130",
            status_code(&status)
        ));
    }
    if let Some(run) = cx.run.clone() {
        if state.as_deref() != Some("interrupted") {
            wrong.push(format!("left the run {state:?}, expected \"interrupted\""));
        }
        let output =
            std::fs::read_to_string(cx.outputs.join(format!("{n}.log"))).unwrap_or_default();
        if !output.contains(&format!("fleet run --resume {run}")) {
            wrong.push("printed no resume hint (`fleet run --resume RUN`)".into());
        }
        for p in tagged_after(&run, EXIT_GRACE) {
            wrong.push(format!("left a process of the run alive: {p}"));
        }
    }
    if !wrong.is_empty() {
        cx.problems.push(format!(
            "process #{n}: after SIGTERM {delay} ms after its start, fleet {}; output:\n{}",
            wrong.join("; "),
            cx.output_tail(n)
        ));
    }
}

/// Resumes, undisturbed, until a process ends the run; its exit code.
fn finish(cx: &mut Chaos) -> Option<i32> {
    for _ in 0..FINISHERS {
        if cx.run.is_some() && cx.finished() {
            return Some(if cx.run_state().as_deref() == Some("passed") {
                0
            } else {
                1
            });
        }
        let (mut child, what, n) = cx.spawn();
        let Some(status) = wait_until(&mut child, Instant::now() + FINISH_PATIENCE) else {
            // What slows git down (a stale packed-refs.lock makes every ref update wait).
            let mut locks = Vec::new();
            find_locks(&cx.repo.join(".git"), &mut locks);
            let _ = child.kill();
            let _ = child.wait();
            cx.history.push(format!("#{n} {what} -> hung, SIGKILLed"));
            cx.problems.push(format!(
                "process #{n} (fleet run {what}, undisturbed) did not end within {FINISH_PATIENCE:?}; lock files under .git then: {locks:?}; output:\n{}",
                cx.output_tail(n)
            ));
            continue;
        };
        cx.history
            .push(format!("#{n} {what} -> {}", status_code(&status)));
        cx.learn_run();
        if matches!(status.code(), Some(0 | 1)) {
            return status.code();
        }
        cx.problems.push(format!(
            "process #{n} (fleet run {what}, undisturbed) ended with {}; output:\n{}",
            status_code(&status),
            cx.output_tail(n)
        ));
    }
    None
}

// ── what must hold at the end ──────────────────────────────────────────────────────────────

/// The run passed and every task was merged. Returns each task's row of `fleet status`.
fn verify_run(cx: &mut Chaos, final_code: Option<i32>) -> BTreeMap<String, Value> {
    let run = cx.run.clone().expect("the run exists");
    if final_code != Some(0) {
        cx.problems.push(format!(
            "the last fleet run exited {final_code:?}, expected 0"
        ));
    }
    let status = cx.fleet_json(&["status", &run, "--json"]);
    if status["state"] != "passed" {
        cx.problems.push(format!(
            "the run is {}, expected \"passed\"",
            status["state"]
        ));
    }
    let tasks: BTreeMap<String, Value> = status["task_list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t["id"].as_str().unwrap_or("").to_string(), t))
        .collect();
    let not_merged: Vec<String> = tasks
        .iter()
        .filter(|(_, t)| t["state"] != "merged")
        .map(|(id, t)| format!("{id} {} ({})", t["state"], t["reason"]))
        .collect();
    if !not_merged.is_empty() {
        cx.problems.push(format!(
            "{} of {} tasks not merged: {}",
            not_merged.len(),
            tasks.len(),
            not_merged.join("; ")
        ));
    }
    tasks
}

/// The outcomes of a task's attempts, e.g. `[interrupted, passed]`.
fn attempts_of(t: Option<&Value>) -> String {
    let list = t
        .and_then(|t| t["attempt_list"].as_array().cloned())
        .unwrap_or_default();
    // Runs of one outcome shortened: `[interrupted x10, passed]`.
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for a in &list {
        let o = a["outcome"].as_str().unwrap_or("?");
        match runs.last_mut() {
            Some((last, n)) if *last == o => *n += 1,
            _ => runs.push((o, 1)),
        }
    }
    let runs: Vec<String> = runs
        .iter()
        .map(|(o, n)| {
            if *n == 1 {
                o.to_string()
            } else {
                format!("{o} x{n}")
            }
        })
        .collect();
    format!("[{}]", runs.join(", "))
}

/// Every task's file on the integration branch holds its line exactly once. Returns how many
/// tasks were applied more than once.
fn verify_files(cx: &mut Chaos, design: &[Task], tasks: &BTreeMap<String, Value>) -> usize {
    let run = cx.run.clone().expect("the run exists");
    // The run's own integration branch (its name carries the instance): as the store says.
    let runs = cx.fleet_json(&["runs", "--json"]);
    let branch = runs
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == run.as_str()))
        .and_then(|r| r["integration_branch"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| cx.fail("the run has no integration branch"));
    let Some(log) = cx.git(&["log", "--format=%s", &branch]) else {
        return 0;
    };
    let (mut doubled, mut missing, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for t in design {
        let out = cx.git_out(&["show", &format!("{branch}:{}", file_of(&t.id))]);
        let subject = format!("fleet: task {} (run {run})", t.id);
        let commits = log.lines().filter(|l| *l == subject).count();
        let why = format!(
            "attempts {}, {commits} task commit(s) on {branch}",
            attempts_of(tasks.get(&t.id))
        );
        if !out.status.success() {
            missing.push(format!("{} ({why})", t.id));
            continue;
        }
        let content = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines = content.lines().count();
        if content == format!("{}\n", t.id) {
            continue;
        }
        if content.lines().all(|l| l == t.id) {
            doubled.push(format!("{} x{lines} ({why})", t.id));
        } else {
            other.push(format!("{} holds {content:?} ({why})", t.id));
        }
    }
    let n = design.len();
    for (list, what) in [
        (
            &doubled,
            "hold their line more than once (applied more than once)",
        ),
        (&missing, "are missing"),
        (&other, "hold something else than their line"),
    ] {
        if !list.is_empty() {
            cx.problems.push(format!(
                "{} of {n} task files on {branch} {what}:\n      {}",
                list.len(),
                list.join("\n      ")
            ));
        }
    }
    doubled.len()
}

/// `git worktree list` lists the repository alone, no worktree folder is left, `git fsck` is
/// clean and no `*.lock` is left under `.git`.
fn verify_git(cx: &mut Chaos) {
    let run = cx.run.clone().expect("the run exists");
    if let Some(list) = cx.git(&["worktree", "list", "--porcelain"]) {
        let repo = format!("worktree {}", cx.repo.display());
        let stale: Vec<String> = list
            .split("\n\n")
            .map(str::trim)
            .filter(|b| !b.is_empty() && b.lines().next() != Some(repo.as_str()))
            .map(|b| b.replace('\n', " | "))
            .collect();
        if !stale.is_empty() {
            cx.problems.push(format!(
                "git worktree list has {} stale entries:\n      {}",
                stale.len(),
                stale.join("\n      ")
            ));
        }
    }
    let folders = cx.repo.join(".fleet/worktrees").join(&run);
    let left: Vec<String> = std::fs::read_dir(&folders)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        cx.problems.push(format!(
            "{} worktree folder(s) left in {}: {}",
            left.len(),
            folders.display(),
            left.join(", ")
        ));
    }
    let fsck = cx.git_out(&["fsck", "--no-dangling", "--no-progress"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    if !fsck.status.success() || !said.trim().is_empty() {
        let head: Vec<&str> = said.lines().take(20).collect();
        cx.problems.push(format!(
            "git fsck ended {}: {}",
            status_code(&fsck.status),
            head.join(" | ")
        ));
    }
    let mut locks = Vec::new();
    find_locks(&cx.repo.join(".git"), &mut locks);
    if !locks.is_empty() {
        cx.problems.push(format!(
            "{} lock file(s) left under .git:\n      {}",
            locks.len(),
            locks.join("\n      ")
        ));
    }
}

/// `*.lock` files under `dir`, each with its age.
fn find_locks(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            find_locks(&path, found);
        } else if path.extension().is_some_and(|x| x == "lock") {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .map_or("?".into(), |a| format!("{} ms", a.as_millis()));
            found.push(format!(
                "{} ({} bytes, {age} old)",
                path.display(),
                meta.len()
            ));
        }
    }
}

// ── the tests ──────────────────────────────────────────────────────────────────────────────

/// A repository with one commit on `main` and the design's runbook, untracked, in its root.
fn setup(fault: Fault, tag: &str, design: &[Task]) -> Chaos {
    // The printed seed replays either test as it is (without the variable, each draws its own).
    let seed = seed("FLEET_CHAOS_SEED");
    eprintln!("chaos ({tag}) seed: {seed} (replay with FLEET_CHAOS_SEED={seed})");
    let tmp = tempfile::Builder::new()
        .prefix(&format!("fleet-chaos-{tag}-"))
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let mut cx = Chaos {
        fault,
        seed,
        tmp: Some(tmp),
        repo: root.join("repo"),
        outputs: root.join("outputs"),
        run: None,
        history: Vec::new(),
        started: 0,
        problems: Vec::new(),
    };
    std::fs::create_dir_all(&cx.repo).unwrap();
    std::fs::create_dir_all(&cx.outputs).unwrap();
    cx.git(&["init", "-q", "-b", "main"]);
    std::fs::write(cx.repo.join("README.md"), "chaos-test repository\n").unwrap();
    cx.git(&["add", "README.md"]);
    cx.git(&["commit", "-q", "-m", "initial"]);
    if !cx.problems.is_empty() {
        cx.fail(cx.problems.join("\n"));
    }
    // The two tests of this file run at once: a run's id is its name and the second it
    // started, and its processes are found by that id, so the names differ.
    let name = format!("chaos-{tag}-{}", std::process::id());
    std::fs::write(cx.repo.join("runbook.yaml"), runbook(&name, design)).unwrap();
    cx
}

fn chaos(fault: Fault) {
    let started = Instant::now();
    let tag = match fault {
        Fault::Kill9 => "kill9",
        Fault::Term => "term",
    };
    let design = design();
    assert!(design.len() >= 150, "the design has {} tasks", design.len());
    let mut cx = setup(fault, tag, &design);
    let mut rng = Rng(cx.seed);

    let faults = storm(&mut cx, &mut rng);
    if faults < FAULTS {
        cx.problems.push(format!(
            "only {faults} of {FAULTS} faults landed before the run ended (the design's work must outlast them)"
        ));
    }
    // How far the run got under the faults: the margin the design has over `FAULTS`.
    let merged_under_faults = match cx.run.clone() {
        Some(run) => cx.fleet_json(&["status", &run, "--json"])["task_list"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|t| t["state"] == "merged").count()),
        None => 0,
    };
    let final_code = finish(&mut cx);
    if cx.run.is_none() {
        cx.fail(format!(
            "no run was ever created; problems:\n  - {}",
            cx.problems.join("\n  - ")
        ));
    }
    let tasks = verify_run(&mut cx, final_code);
    let doubled = verify_files(&mut cx, &design, &tasks);
    verify_git(&mut cx);
    let run = cx.run.clone().unwrap();
    for p in tagged_after(&run, EXIT_GRACE) {
        cx.problems
            .push(format!("a process of the run is alive after its end: {p}"));
    }
    eprintln!(
        "chaos ({tag}): {faults} faults ({merged_under_faults} of {} tasks merged by then), {} processes, {doubled} doubled, {} problem(s), {:.1}s",
        design.len(),
        cx.started,
        cx.problems.len(),
        started.elapsed().as_secs_f64()
    );
    if !cx.problems.is_empty() {
        let msg = format!(
            "{} problem(s) after {faults} faults ({tag}):\n  - {}",
            cx.problems.len(),
            cx.problems.join("\n  - ")
        );
        cx.fail(msg);
    }
}

#[test]
fn kill_9_at_30_random_moments_then_resume_applies_every_task_once() {
    chaos(Fault::Kill9);
}

#[test]
fn sigterm_at_30_random_moments_stops_cleanly_and_applies_every_task_once() {
    chaos(Fault::Term);
}
