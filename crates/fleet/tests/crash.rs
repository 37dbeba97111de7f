//! Crash safety, end to end: a 50-task run is killed with SIGKILL at random moments (and once
//! stopped gracefully with SIGINT), resumed with `fleet run --resume` until a process ends on
//! its own, and then everything a run leaves behind is checked against what its design implies:
//! task states, events.jsonl against the store, the integration branch, the task logs, the
//! worktrees, and leftover processes.
//!
//! The moments of the kills come from a seeded PRNG. The seed is printed at the start and in
//! every failure; replay with `FLEET_CRASH_SEED=<seed> cargo test -p fleet --test crash`.
//! (What the run was doing at each kill still depends on the machine's speed.)

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::kill::{Rng, status_code, tagged_processes, wait_until};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
/// Processes started (new run or resume) before the test gives up on the run ever ending.
const MAX_PROCESSES: usize = 60;
/// How long one process may take to end after SIGINT, or to show it is driving the run.
const PATIENCE: Duration = Duration::from_secs(30);

// ── the design ─────────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Writes `out/<id>.txt` in its worktree and passes.
    Plain,
    /// Like `Plain`, with checks that pass.
    Checked,
    /// Writes its file, then a check fails; `retries: 0`.
    BadCheck,
    /// Fails while `FLEET_ATTEMPT` < 2; `retries: 2`, short backoff.
    Flaky,
    /// `workspace: none`; only reads the repository.
    ReadOnly,
}

struct Spec {
    id: &'static str,
    deps: Vec<&'static str>,
    kind: Kind,
}

fn spec(id: &'static str, deps: &[&'static str], kind: Kind) -> Spec {
    Spec {
        id,
        deps: deps.to_vec(),
        kind,
    }
}

/// 50 tasks in dependency order: layers, fan-out, fan-in, a diamond, two failures with
/// transitive dependents, two flaky tasks and two read-only tasks.
fn design() -> Vec<Spec> {
    use Kind::*;
    vec![
        // roots
        spec("r0", &[], Plain),
        spec("r1", &[], Plain),
        spec("r2", &[], Checked),
        spec("r3", &[], Plain),
        // fan-out from r0 (a2 is flaky)
        spec("a0", &["r0"], Plain),
        spec("a1", &["r0"], Plain),
        spec("a2", &["r0"], Flaky),
        spec("a3", &["r0"], Plain),
        spec("a4", &["r0"], Checked),
        spec("a5", &["r0"], Plain),
        // fan-out from r1 (b1 fails its check)
        spec("b0", &["r1"], Plain),
        spec("b1", &["r1"], BadCheck),
        spec("b2", &["r1"], Plain),
        spec("b3", &["r1"], Plain),
        // r2's children
        spec("c0", &["r2"], Plain),
        spec("c1", &["r2"], Checked),
        spec("c2", &["r2", "r3"], Plain),
        // a diamond under r3 (its right side is flaky)
        spec("d-top", &["r3"], Plain),
        spec("d-left", &["d-top"], Plain),
        spec("d-right", &["d-top"], Flaky),
        spec("d-bottom", &["d-left", "d-right"], Plain),
        // fan-in
        spec("m0", &["a0", "a1", "a2", "a3"], Plain),
        spec("m1", &["a4", "a5", "c0"], Plain),
        spec("m2", &["b0", "b1"], Plain),
        spec("m3", &["b2", "b3", "c1"], Plain),
        spec("m4", &["c2", "d-bottom"], Checked),
        // read-only tasks in the repository root
        spec("ro-0", &["m0"], ReadOnly),
        spec("ro-1", &["m3", "d-bottom"], ReadOnly),
        // the next layer
        spec("n0", &["m0", "m1"], Checked),
        spec("n1", &["m2"], Plain),
        spec("n2", &["m3", "ro-1"], Plain),
        spec("n3", &["m1", "m4"], Plain),
        spec("n4", &["ro-0"], Plain),
        // the second failure and what hangs on it
        spec("f0", &["n0"], BadCheck),
        spec("g0", &["f0", "n2"], Plain),
        spec("g1", &["g0"], Plain),
        spec("g2", &["n3", "f0"], Plain),
        // what survives
        spec("h0", &["n2", "n3"], Plain),
        spec("h2", &["h0", "n4"], Checked),
        spec("p0", &["h2"], Plain),
        spec("p1", &["p0"], Plain),
        spec("p2", &["p1"], Plain),
        spec("p3", &["p2"], Plain),
        spec("p4", &["p3"], Plain),
        spec("q0", &["p4"], Plain),
        spec("q1", &["p4"], Plain),
        spec("q2", &["p4"], Plain),
        spec("q3", &["p4"], Plain),
        spec("z-ok", &["q0", "q1", "q2", "q3"], Plain),
        spec("z-skip", &["q0", "g1"], Plain),
    ]
}

/// The final state every task must reach: `merged`, `passed`, `failed` or `skipped`.
fn expected_states(specs: &[Spec]) -> BTreeMap<&'static str, &'static str> {
    let mut out: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    for s in specs {
        let blocked = s
            .deps
            .iter()
            .any(|d| matches!(out[d], "failed" | "skipped"));
        let state = if blocked {
            "skipped"
        } else {
            match s.kind {
                Kind::BadCheck => "failed",
                Kind::ReadOnly => "passed",
                _ => "merged",
            }
        };
        out.insert(s.id, state);
    }
    out
}

/// Single-quoted YAML scalar.
fn yq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn runbook(specs: &[Spec]) -> String {
    let mut y = String::from(
        "name: crash\nconcurrency: 4\ndefaults:\n  timeout: 60s\n  retries: 0\n  retry_backoff: 50ms\ntasks:\n",
    );
    for (i, s) in specs.iter().enumerate() {
        let id = s.id;
        let pause = format!("sleep 0.0{}", 1 + i % 6);
        let write = format!("mkdir -p out && {pause} && echo {id} > out/{id}.txt");
        let (command, checks, extra): (String, Vec<String>, &str) = match s.kind {
            Kind::Plain => (write, vec![], ""),
            Kind::Checked => (
                write,
                vec![format!("grep -qx {id} out/{id}.txt"), "test -d out".into()],
                "",
            ),
            Kind::BadCheck => (write, vec![format!("grep -qx never-{id} out/{id}.txt")], ""),
            Kind::Flaky => (
                format!(
                    "mkdir -p out && {pause} && [ \"$FLEET_ATTEMPT\" -ge 2 ] && echo {id} > out/{id}.txt"
                ),
                vec![],
                "    retries: 2\n    retry_backoff: 30ms\n",
            ),
            Kind::ReadOnly => (
                format!("{pause} && grep -q crash-test README.md && git log --oneline -1"),
                vec![],
                "    workspace: none\n",
            ),
        };
        let _ = writeln!(y, "  - id: {id}");
        if !s.deps.is_empty() {
            let _ = writeln!(y, "    depends_on: [{}]", s.deps.join(", "));
        }
        let _ = writeln!(y, "    command: {}", yq(&command));
        if !checks.is_empty() {
            let list: Vec<String> = checks.iter().map(|c| yq(c)).collect();
            let _ = writeln!(y, "    checks: [{}]", list.join(", "));
        }
        y.push_str(extra);
    }
    y
}

// ── small tools ────────────────────────────────────────────────────────────────────────────

/// What the test knows so far; every failure message carries it.
struct Ctx {
    seed: u64,
    tmp: Option<tempfile::TempDir>,
    repo: PathBuf,
    outputs: PathBuf,
    run: Option<String>,
    history: Vec<String>,
}

impl Ctx {
    fn describe(&self) -> String {
        format!(
            "seed {seed} (replay: FLEET_CRASH_SEED={seed}), run {run}\nprocesses: {hist}",
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

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(msg());
        }
    }

    fn env(&self, cmd: &mut Command) {
        cmd.current_dir(&self.repo)
            .env_remove("FLEET_HOME")
            .env("HOME", self.repo.parent().unwrap())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Crash Test")
            .env("GIT_AUTHOR_EMAIL", "crash@example.invalid")
            .env("GIT_COMMITTER_NAME", "Crash Test")
            .env("GIT_COMMITTER_EMAIL", "crash@example.invalid")
            .stdin(Stdio::null());
    }

    fn git_out(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("git");
        self.env(&mut cmd);
        cmd.args(args).output().expect("git runs")
    }

    fn git(&mut self, args: &[&str]) -> String {
        let out = self.git_out(args);
        if !out.status.success() {
            self.fail(format!(
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A read command of fleet (`runs`, `status`): its exit code and stdout.
    fn fleet_read(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut cmd = Command::new(FLEET);
        self.env(&mut cmd);
        let out = cmd.args(args).output().expect("fleet runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn fleet_json(&mut self, args: &[&str]) -> Value {
        let (code, out, err) = self.fleet_read(args);
        if code != Some(0) {
            self.fail(format!("fleet {args:?} exited {code:?}: {err}"));
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| self.fail(format!("fleet {args:?} printed bad JSON ({e}): {out}")))
    }

    /// `fleet runs --json`, or an empty list when no store exists yet.
    fn runs(&mut self) -> Vec<Value> {
        if !self.repo.join(".fleet/fleet.db").exists() {
            return Vec::new();
        }
        match self.fleet_json(&["runs", "--json"]) {
            Value::Array(a) => a,
            other => self.fail(format!("fleet runs --json is not a list: {other}")),
        }
    }

    fn run_id(&self) -> &str {
        self.run.as_deref().expect("the run exists")
    }

    fn run_dir(&self) -> PathBuf {
        self.repo.join(".fleet/runs").join(self.run_id())
    }

    fn output_of(&self, n: usize) -> String {
        std::fs::read_to_string(self.outputs.join(format!("{n}.log"))).unwrap_or_default()
    }
}

/// The complete lines of events.jsonl that parse (the file may be mid-write).
fn read_events_loose(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn kind(e: &Value) -> &str {
    e["kind"].as_str().unwrap_or("")
}

/// Waits until the process started after `resumed_before` `run.resumed` events is in its main
/// loop (it committed an `attempt.started` after its own `run.resumed`), so its signal handlers
/// are installed. `false` if the process ended first.
fn wait_driving(ctx: &mut Ctx, child: &mut Child, resumed_before: usize) -> bool {
    let events = ctx.run_dir().join("events.jsonl");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        let evs = read_events_loose(&events);
        let resumed: Vec<usize> = evs
            .iter()
            .enumerate()
            .filter(|(_, e)| kind(e) == "run.resumed")
            .map(|(i, _)| i)
            .collect();
        if resumed.len() > resumed_before {
            let last = *resumed.last().unwrap();
            if evs[last..].iter().any(|e| kind(e) == "attempt.started") {
                return true;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            ctx.fail("a resumed fleet did not start any task within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes with `path` open: `(pid, command line)`.
fn holding_open(path: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        {
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// The run's state in the store (`running`, `interrupted`, `passed`, `failed`).
fn run_state(ctx: &mut Ctx) -> Option<String> {
    let run = ctx.run_id().to_string();
    ctx.runs()
        .iter()
        .find(|r| r["id"] == run.as_str())
        .and_then(|r| r["state"].as_str().map(str::to_string))
}

/// Whether the store says the run ended (passed or failed).
fn run_finished(ctx: &mut Ctx) -> bool {
    matches!(run_state(ctx).as_deref(), Some("passed" | "failed"))
}

// ── the test ───────────────────────────────────────────────────────────────────────────────

#[test]
fn kill_9_at_random_moments_then_resume_until_done() {
    let started = Instant::now();
    let seed = support::kill::seed("FLEET_CRASH_SEED");
    eprintln!("crash test seed: {seed} (replay with FLEET_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let tmp = tempfile::Builder::new()
        .prefix("fleet-crash-")
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let repo = root.join("repo");
    let outputs = root.join("outputs");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&outputs).unwrap();
    let mut ctx = Ctx {
        seed,
        tmp: Some(tmp),
        repo: repo.clone(),
        outputs: outputs.clone(),
        run: None,
        history: Vec::new(),
    };

    // The repository: one commit on main. The runbook stays untracked in its root.
    ctx.git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "crash-test repository\n").unwrap();
    ctx.git(&["add", "README.md"]);
    ctx.git(&["commit", "-q", "-m", "initial"]);
    let base = ctx.git(&["rev-parse", "HEAD"]).trim().to_string();

    let specs = design();
    assert_eq!(specs.len(), 50, "the design has 50 tasks");
    let expected = expected_states(&specs);
    std::fs::write(repo.join("runbook.yaml"), runbook(&specs)).unwrap();

    // ── kill, resume, repeat ──
    // The first resume is the one stopped with SIGINT, soon after it starts driving: the run
    // is then far from its end, so the stop really interrupts it.
    let mut sigint: Option<String> = None;
    let mut final_code = None;
    // Kills land 20-600 ms after a start. When the machine is so slow that a task cannot get
    // from start to end in that time (creating a worktree can take seconds on a loaded disk),
    // every kill would interrupt the same task again and the run never ends: after each process
    // that brought no task to its end, the window doubles (up to 64x). Progress is what the test needs, not
    // a particular pace.
    let mut done_before = 0;
    let mut slow = 0u32;
    for n in 0..MAX_PROCESSES {
        if ctx.run.is_some() {
            let done = read_events_loose(&ctx.run_dir().join("events.jsonl"))
                .iter()
                .filter(|e| matches!(kind(e), "task.done" | "task.failed" | "task.skipped"))
                .count();
            slow = if done > done_before {
                0
            } else {
                (slow + 1).min(6)
            };
            done_before = done;
        }
        let out = std::fs::File::create(outputs.join(format!("{n}.log"))).unwrap();
        let mut cmd = Command::new(FLEET);
        ctx.env(&mut cmd);
        cmd.arg("run").args(["--kill-grace", "1"]);
        let what = match &ctx.run {
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
        let resumed_before = match ctx.run {
            Some(_) => read_events_loose(&ctx.run_dir().join("events.jsonl"))
                .iter()
                .filter(|e| kind(e) == "run.resumed")
                .count(),
            None => 0,
        };
        let delay = Duration::from_millis(rng.range(20, 600) << slow);
        let graceful = what == "resume" && sigint.is_none();
        let mut child = cmd.spawn().expect("fleet starts");

        let mut ended = None;
        if graceful && wait_driving(&mut ctx, &mut child, resumed_before) {
            let after = Duration::from_millis(rng.range(0, 100));
            if let Some(status) = wait_until(&mut child, Instant::now() + after) {
                ended = Some(status);
            } else {
                let pid = child.id().to_string();
                let sent = Command::new("kill")
                    .args(["-INT", &pid])
                    .status()
                    .expect("kill runs");
                assert!(sent.success(), "kill -INT {pid} failed");
                let Some(status) = wait_until(&mut child, Instant::now() + PATIENCE) else {
                    let _ = child.kill();
                    let _ = child.wait();
                    ctx.fail("fleet did not stop within 30 s of SIGINT");
                };
                let line = format!(
                    "#{n} {what} SIGINT +{}ms -> {}",
                    after.as_millis(),
                    status_code(&status)
                );
                ctx.history.push(line.clone());
                if status.code() == Some(130) || !run_finished(&mut ctx) {
                    check_graceful_stop(&mut ctx, n, &status);
                    sigint = Some(line);
                    continue;
                }
                // The run reached its end before the signal could stop it.
                final_code = status.code();
                break;
            }
        } else if let Some(status) = wait_until(&mut child, Instant::now() + delay) {
            ended = Some(status);
        }

        match ended {
            None => {
                child.kill().expect("SIGKILL");
                child.wait().expect("reaped");
                ctx.history
                    .push(format!("#{n} {what} kill@{}ms", delay.as_millis()));
            }
            Some(status) => {
                ctx.history
                    .push(format!("#{n} {what} -> {}", status_code(&status)));
                if !matches!(status.code(), Some(0 | 1)) {
                    let output = ctx.output_of(n);
                    let holders = match &ctx.run {
                        Some(_) => holding_open(&ctx.run_dir().join("lock")),
                        None => Vec::new(),
                    };
                    ctx.fail(format!(
                        "fleet run ({what}) ended with {} on its own; output:\n{output}\n\
                         processes holding the run's lock file open: {holders:?}",
                        status_code(&status)
                    ));
                }
                final_code = status.code();
            }
        }
        if ctx.run.is_none() {
            let runs = ctx.runs();
            ctx.check(runs.len() <= 1, || {
                format!("more than one run was created: {runs:?}")
            });
            ctx.run = runs
                .first()
                .and_then(|r| r["id"].as_str())
                .map(str::to_string);
        }
        if final_code.is_none() && ctx.run.is_some() && run_finished(&mut ctx) {
            // Killed after the run's end was committed: a resume would rightly refuse it.
            ctx.history
                .push("(the run had ended before that kill)".into());
            final_code = Some(if run_state(&mut ctx).as_deref() == Some("passed") {
                0
            } else {
                1
            });
        }
        if final_code.is_some() {
            break;
        }
    }
    let Some(final_code) = final_code else {
        ctx.fail(format!(
            "the run never ended on its own within {MAX_PROCESSES} processes"
        ));
    };
    let kills = ctx.history.iter().filter(|h| h.contains("kill@")).count();
    eprintln!(
        "run ended after {} processes ({kills} SIGKILLs) in {:.1}s",
        ctx.history.len(),
        started.elapsed().as_secs_f64()
    );

    verify(
        &mut ctx,
        &specs,
        &expected,
        &base,
        final_code,
        sigint.is_some(),
    );
    eprintln!(
        "crash test passed in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        ctx.history.join(", ")
    );
}

/// After the SIGINT: exit 130, the run is `interrupted`, nothing is left running, and the
/// output says how to resume.
fn check_graceful_stop(ctx: &mut Ctx, n: usize, status: &ExitStatus) {
    let output = ctx.output_of(n);
    let run = ctx.run_id().to_string();
    ctx.check(status.code() == Some(130), || {
        format!(
            "after SIGINT fleet ended with {}, expected exit 130; output:\n{output}",
            status_code(status)
        )
    });
    ctx.check(
        output.contains(&format!("resume:  fleet run --resume {run}")),
        || format!("the interrupted run's output does not say how to resume:\n{output}"),
    );
    let state = run_state(ctx);
    ctx.check(state.as_deref() == Some("interrupted"), || {
        format!("after SIGINT the run's state is {state:?}, expected \"interrupted\"")
    });
    let status = ctx.fleet_json(&["status", &run, "--json"]);
    let tasks = status["task_list"].as_array().cloned().unwrap_or_default();
    let active: Vec<String> = tasks
        .iter()
        .filter(|t| matches!(t["state"].as_str(), Some("running" | "checking")))
        .map(|t| format!("{} {}", t["id"], t["state"]))
        .collect();
    ctx.check(active.is_empty(), || {
        format!("after a graceful stop tasks are still active: {active:?}")
    });
    let open: Vec<String> = tasks
        .iter()
        .flat_map(|t| {
            let id = t["id"].to_string();
            t["attempt_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["outcome"] == "running")
                .map(move |a| format!("{id} attempt {}", a["n"]))
        })
        .collect();
    ctx.check(open.is_empty(), || {
        format!("after a graceful stop attempts are still open: {open:?}")
    });
    let left = tagged_processes(&run);
    ctx.check(left.is_empty(), || {
        format!("after a graceful stop processes of the run are still alive: {left:?}")
    });
}

fn verify(
    ctx: &mut Ctx,
    specs: &[Spec],
    expected: &BTreeMap<&'static str, &'static str>,
    base: &str,
    final_code: i32,
    sigint_checked: bool,
) {
    let run = ctx.run_id().to_string();
    let by_id: BTreeMap<&str, &Spec> = specs.iter().map(|s| (s.id, s)).collect();
    let mut problems: Vec<String> = Vec::new();
    if final_code != 1 {
        problems.push(format!(
            "the last fleet run exited {final_code}, expected 1 (two tasks fail by design)"
        ));
    }
    if !sigint_checked {
        problems.push("the run ended before the graceful SIGINT stop could be tried".into());
    }

    // 1. final states
    let status = ctx.fleet_json(&["status", &run, "--json"]);
    if status["state"] != "failed" {
        problems.push(format!(
            "run state is {}, expected \"failed\"",
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
    if tasks.len() != specs.len() {
        problems.push(format!(
            "fleet status lists {} tasks, expected {}",
            tasks.len(),
            specs.len()
        ));
    }
    let state_of = |id: &str| -> String {
        tasks
            .get(id)
            .and_then(|t| t["state"].as_str())
            .unwrap_or("<missing>")
            .to_string()
    };
    // Tasks whose final state is wrong: reported once, left out of the checks below.
    let mut wrong: BTreeSet<&str> = BTreeSet::new();
    for s in specs {
        let want = expected[s.id];
        let got = state_of(s.id);
        if got != want {
            let reason = tasks.get(s.id).map(|t| t["reason"].clone());
            problems.push(format!(
                "task {} ended {got}, expected {want} (reason {reason:?})",
                s.id
            ));
        }
        if got != want {
            // Reported; the checks that follow would only restate it.
            wrong.insert(s.id);
            continue;
        }
        let Some(t) = tasks.get(s.id) else { continue };
        let attempts = t["attempt_list"].as_array().cloned().unwrap_or_default();
        let n_attempts = t["attempts"].as_u64().unwrap_or(u64::MAX);
        if n_attempts != attempts.len() as u64 {
            problems.push(format!(
                "task {}: attempts = {n_attempts} but {} attempt rows",
                s.id,
                attempts.len()
            ));
        }
        let ns: Vec<u64> = attempts.iter().filter_map(|a| a["n"].as_u64()).collect();
        if ns != (1..=attempts.len() as u64).collect::<Vec<_>>() {
            problems.push(format!("task {}: attempt numbers {ns:?}", s.id));
        }
        for a in &attempts {
            if a["outcome"] == "running" || a["finished_at"].is_null() {
                problems.push(format!(
                    "task {}: attempt {} never closed: {a}",
                    s.id, a["n"]
                ));
            }
        }
        let last_outcome = attempts.last().map(|a| a["outcome"].clone());
        match want {
            "skipped" => {
                let reason = t["reason"].as_str().unwrap_or("");
                let named = s.deps.iter().find(|d| {
                    reason.contains(&format!("`{d}`"))
                        && matches!(state_of(d).as_str(), "failed" | "skipped")
                });
                if named.is_none() {
                    let deps: Vec<String> = s
                        .deps
                        .iter()
                        .map(|d| format!("{d} ({})", state_of(d)))
                        .collect();
                    problems.push(format!(
                        "skipped task {} has reason {reason:?}, which names none of its failed/skipped dependencies {deps:?}",
                        s.id
                    ));
                }
                if !attempts.is_empty() {
                    problems.push(format!("skipped task {} ran: {attempts:?}", s.id));
                }
            }
            "failed" => {
                if last_outcome != Some(Value::from("checks_failed")) || t["failures"] != 1 {
                    problems.push(format!(
                        "failed task {} should have failed exactly once, on its check: {t}",
                        s.id
                    ));
                }
            }
            _ => {
                if last_outcome != Some(Value::from("passed")) {
                    problems.push(format!(
                        "task {} is {want} but its last attempt is {last_outcome:?}",
                        s.id
                    ));
                }
                if s.kind == Kind::Flaky && attempts.len() < 2 {
                    problems.push(format!(
                        "flaky task {} passed on attempt {}, but it cannot pass before attempt 2",
                        s.id,
                        attempts.len()
                    ));
                }
            }
        }
    }

    // 2. events.jsonl against the store
    let events_path = ctx.run_dir().join("events.jsonl");
    let text = std::fs::read_to_string(&events_path).unwrap_or_default();
    if !text.ends_with('\n') {
        problems.push("events.jsonl does not end with a newline".into());
    }
    let mut events: Vec<Value> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => events.push(v),
            Err(e) => problems.push(format!("events.jsonl line {}: {e}: {line}", i + 1)),
        }
    }
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    if seqs.len() != events.len() {
        problems.push("events.jsonl has events without a numeric seq".into());
    }
    if let Some(w) = seqs.windows(2).find(|w| w[1] <= w[0]) {
        problems.push(format!(
            "events.jsonl seq not strictly increasing: {} then {}",
            w[0], w[1]
        ));
    }
    if seqs.first() != Some(&1) || seqs.windows(2).any(|w| w[1] != w[0] + 1) {
        let gaps: Vec<String> = seqs
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .map(|w| format!("{}->{}", w[0], w[1]))
            .take(10)
            .collect();
        problems.push(format!(
            "events.jsonl seqs are not 1..={} without gaps (first {:?}, jumps {gaps:?})",
            seqs.len(),
            seqs.first()
        ));
    }
    if events.iter().any(|e| e["run"] != run.as_str()) {
        problems.push("events.jsonl has events of another run".into());
    }
    let file_events: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["seq"],
                kind(e),
                e["task"].as_str().unwrap_or("-")
            )
        })
        .collect();
    let sqlite = Path::new("/usr/bin/sqlite3");
    if sqlite.exists() {
        let db = ctx.repo.join(".fleet/fleet.db");
        let query = format!(
            "SELECT seq || ' ' || kind || ' ' || coalesce(task, '-') FROM events \
             WHERE run_id = '{run}' ORDER BY seq"
        );
        let out = Command::new(sqlite)
            .arg(&db)
            .arg(&query)
            .output()
            .expect("sqlite3 runs");
        if !out.status.success() {
            problems.push(format!(
                "sqlite3 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        } else {
            let stored: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if stored != file_events {
                let a: BTreeSet<&String> = stored.iter().collect();
                let b: BTreeSet<&String> = file_events.iter().collect();
                let missing: Vec<_> = a.difference(&b).take(10).collect();
                let extra: Vec<_> = b.difference(&a).take(10).collect();
                problems.push(format!(
                    "events.jsonl ({} events) differs from the store ({} events): missing {missing:?}, not in the store {extra:?}",
                    file_events.len(),
                    stored.len()
                ));
            }
        }
    }
    let count = |pred: &dyn Fn(&Value) -> bool| events.iter().filter(|e| pred(e)).count();
    if count(&|e| kind(e) == "run.started") != 1 || events.first().map(kind) != Some("run.started")
    {
        problems.push("events.jsonl must start with the one run.started".into());
    }
    match events.last() {
        Some(e) if kind(e) == "run.finished" && e["data"]["result"] == "failed" => {}
        other => problems.push(format!(
            "the last event should be run.finished with result failed, found {other:?}"
        )),
    }
    let interrupted = count(&|e| kind(e) == "run.interrupted");
    if interrupted != 1 {
        problems.push(format!(
            "expected exactly one run.interrupted (the SIGINT), found {interrupted}"
        ));
    }
    let resumed = count(&|e| kind(e) == "run.resumed");
    let resume_processes = ctx.history.iter().filter(|h| h.contains(" resume")).count();
    if resumed == 0 || resumed > resume_processes {
        problems.push(format!(
            "{resumed} run.resumed events for {resume_processes} resuming processes"
        ));
    }
    for s in specs.iter().filter(|s| !wrong.contains(s.id)) {
        let id = s.id;
        let of_task = |k: &str| count(&|e| e["task"] == id && kind(e) == k);
        let terminal: Vec<&str> = events
            .iter()
            .filter(|e| e["task"] == id)
            .map(kind)
            .filter(|k| matches!(*k, "task.done" | "task.failed" | "task.skipped"))
            .collect();
        let want_terminal = match expected[id] {
            "failed" => "task.failed",
            "skipped" => "task.skipped",
            _ => "task.done",
        };
        if terminal != [want_terminal] {
            problems.push(format!(
                "task {id}: terminal events {terminal:?}, expected exactly [{want_terminal}]"
            ));
        }
        // Once, plus once more for each time the merge queue rebased it onto work that landed
        // meanwhile and checked it again (a re-check cut short by a kill passes no more).
        let (passes, rebases) = (of_task("task.passed"), of_task("task.rebased"));
        if matches!(expected[id], "merged" | "passed") && !(1..=1 + rebases).contains(&passes) {
            problems.push(format!(
                "task {id}: {passes} task.passed events, expected 1 (+ up to {rebases} re-checks)"
            ));
        }
        let merged_events = of_task("task.merged");
        let want_merged = usize::from(expected[id] == "merged");
        if merged_events != want_merged {
            problems.push(format!(
                "task {id}: {merged_events} task.merged events, expected {want_merged}"
            ));
        }
        // Each attempt opened once and closed once.
        let n_attempts = tasks
            .get(id)
            .and_then(|t| t["attempt_list"].as_array().map(Vec::len))
            .unwrap_or(0) as u64;
        for n in 1..=n_attempts {
            for k in ["attempt.started", "attempt.finished"] {
                let c = count(&|e| e["task"] == id && e["attempt"] == n && kind(e) == k);
                if c != 1 {
                    problems.push(format!("task {id}: attempt {n} has {c} {k} events"));
                }
            }
        }
        let stray = count(&|e| {
            e["task"] == id
                && kind(e) == "attempt.started"
                && e["attempt"].as_u64().is_none_or(|a| a > n_attempts)
        });
        if stray != 0 {
            problems.push(format!(
                "task {id}: {stray} attempt.started events beyond its {n_attempts} attempts"
            ));
        }
    }

    // 3. the integration branch
    let branch = ctx.git(&[
        "for-each-ref",
        "--format=%(refname:short)",
        &format!("refs/heads/fleet/runs/*/{run}"),
    ]);
    let branch = branch.trim().to_string();
    let log = ctx.git(&["log", "--format=%H %s", &branch]);
    // subject -> the commits with it
    let mut by_subject: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in log.lines() {
        let (sha, subject) = line.split_once(' ').unwrap_or((line, ""));
        by_subject.entry(subject).or_default().push(sha);
    }
    let subjects: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').map_or("", |(_, s)| s))
        .collect();
    let files = ctx.git(&["ls-tree", "-r", "--name-only", &branch, "--", "out"]);
    let files: BTreeSet<String> = files.lines().map(str::to_string).collect();
    // (A task whose state is wrong is reported above; its file may be there or not.)
    let files: BTreeSet<String> = files
        .into_iter()
        .filter(|f| !wrong.iter().any(|id| *f == format!("out/{id}.txt")))
        .collect();
    let want_files: BTreeSet<String> = specs
        .iter()
        .filter(|s| expected[s.id] == "merged" && !wrong.contains(s.id))
        .map(|s| format!("out/{}.txt", s.id))
        .collect();
    if files != want_files {
        problems.push(format!(
            "out/ on {branch}: missing {:?}, unexpected {:?}",
            want_files.difference(&files).collect::<Vec<_>>(),
            files.difference(&want_files).collect::<Vec<_>>()
        ));
    }
    for s in specs.iter().filter(|s| !wrong.contains(s.id)) {
        let id = s.id;
        let merge_subject = format!("fleet: merge task {id} (run {run})");
        let task_subject = format!("fleet: task {id} (run {run})");
        let merges = subjects.iter().filter(|l| **l == merge_subject).count();
        let commits = subjects.iter().filter(|l| **l == task_subject).count();
        let want = usize::from(expected[id] == "merged");
        if merges != want || commits != want {
            problems.push(format!(
                "task {id} ({}): {merges}× {merge_subject:?} and {commits}× {task_subject:?} on {branch}, expected {want} of each",
                expected[id]
            ));
        }
        if expected[id] == "merged" && files.contains(&format!("out/{id}.txt")) {
            let content = ctx.git(&["show", &format!("{branch}:out/{id}.txt")]);
            if content != format!("{id}\n") {
                problems.push(format!("out/{id}.txt on {branch} holds {content:?}"));
            }
        }
    }
    // Every merged task started from an integration tip holding its dependencies' work.
    let sha = |id: &str, field: &str| -> Option<String> {
        tasks
            .get(id)
            .and_then(|t| t[field].as_str())
            .map(str::to_string)
    };
    for s in specs
        .iter()
        .filter(|s| expected[s.id] == "merged" && !wrong.contains(s.id))
    {
        let on_branch = |subject: String| by_subject.get(subject.as_str()).cloned();
        let task_commit = on_branch(format!("fleet: task {} (run {run})", s.id));
        let merge_commit = on_branch(format!("fleet: merge task {} (run {run})", s.id));
        let Some(commit) = sha(s.id, "commit") else {
            problems.push(format!(
                "merged task {}: `commit` is null in fleet status (on the branch: {task_commit:?})",
                s.id
            ));
            continue;
        };
        if task_commit
            .as_ref()
            .is_some_and(|c| c != &[commit.as_str()])
        {
            problems.push(format!(
                "merged task {}: `commit` {commit} is not its task commit on the branch {task_commit:?}",
                s.id
            ));
        }
        match sha(s.id, "merge") {
            None => problems.push(format!(
                "merged task {}: `merge` is null in fleet status, though its merge commit {merge_commit:?} is on the branch (the merge sha was lost)",
                s.id
            )),
            Some(m) if merge_commit.as_ref().is_some_and(|c| c != &[m.as_str()]) => {
                problems.push(format!(
                    "merged task {}: `merge` {m} is not its merge commit on the branch {merge_commit:?}",
                    s.id
                ))
            }
            Some(_) => {}
        }
        for d in &s.deps {
            if by_id[d].kind == Kind::ReadOnly {
                continue;
            }
            let Some(dep_merge) = sha(d, "merge") else {
                continue;
            };
            let ok = ctx
                .git_out(&["merge-base", "--is-ancestor", &dep_merge, &commit])
                .status
                .success();
            if !ok {
                problems.push(format!(
                    "task {}'s commit {commit} does not contain its dependency {d}'s merge {dep_merge}",
                    s.id
                ));
            }
        }
    }
    // The user's branch and working tree are untouched.
    let main = ctx.git(&["rev-parse", "main"]);
    if main.trim() != base {
        problems.push(format!("main moved from {base} to {}", main.trim()));
    }
    let dirty = ctx.git(&["status", "--porcelain"]);
    if dirty.trim() != "?? runbook.yaml" {
        problems.push(format!("the repository's working tree changed: {dirty:?}"));
    }

    // The summary names the run and its branch.
    let summary = std::fs::read_to_string(ctx.run_dir().join("summary.md")).unwrap_or_default();
    if !summary.contains(&run) || !summary.contains(&branch) {
        problems.push(format!(
            "summary.md does not name the run and {branch}:\n{summary}"
        ));
    }

    // 4. logs: every attempt has its header
    let logs = ctx.run_dir().join("logs");
    for s in specs {
        let attempts: Vec<u64> = tasks
            .get(s.id)
            .and_then(|t| t["attempt_list"].as_array())
            .map(|a| a.iter().filter_map(|a| a["n"].as_u64()).collect())
            .unwrap_or_default();
        if attempts.is_empty() {
            continue;
        }
        let path = logs.join(format!("{}.log", s.id));
        let Ok(log) = std::fs::read_to_string(&path) else {
            problems.push(format!(
                "task {} ran {} attempt(s) but has no log at {}",
                s.id,
                attempts.len(),
                path.display()
            ));
            continue;
        };
        for n in attempts {
            if !log.contains(&format!("── attempt {n} ")) {
                problems.push(format!(
                    "log of task {} has no \"── attempt {n} \" header:\n{log}",
                    s.id
                ));
            }
        }
    }

    // 5. no worktree of a passed task, no process of the run
    let listed = ctx.git(&["worktree", "list", "--porcelain"]);
    let listed: BTreeSet<PathBuf> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(PathBuf::from)
        .collect();
    let wt_root = ctx.repo.join(".fleet/worktrees").join(&run);
    for s in specs {
        let state = state_of(s.id);
        if !matches!(state.as_str(), "merged" | "passed") {
            continue;
        }
        let path = wt_root.join(s.id);
        if listed.contains(&path) || path.exists() {
            problems.push(format!(
                "task {} ({}) left its worktree behind: {} (registered: {}, on disk: {})",
                s.id,
                state,
                path.display(),
                listed.contains(&path),
                path.exists()
            ));
        }
    }
    let left = tagged_processes(&run);
    if !left.is_empty() {
        problems.push(format!(
            "processes tagged FLEET_RUN={run} are still alive: {left:?}"
        ));
    }

    if !problems.is_empty() {
        let n = problems.len();
        ctx.fail(format!(
            "{n} problem(s) after the crash/resume loop:\n  - {}",
            problems.join("\n  - ")
        ));
    }
}
