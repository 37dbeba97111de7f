//! A run on `fleet runner` workers gets the protections a local run gets: secrets never land,
//! never reach a log, an event or the store's readers; `retries:` is honoured; a task's log is
//! capped as locally, and its end reaches the store, so `fleet logs` and `fleet status` say
//! where it is and show it from any machine.

mod support;
use support::git;
use support::kill::wait_until;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
/// A GitHub token's shape, literally in a runbook and written into a file by a task.
const LITERAL: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
/// The value of the runner's `GITHUB_TOKEN` (not a known shape: only its name says secret).
const TOKEN_VALUE: &str = "s3cret-value-of-the-runner-0042";

/// A project with a bare remote, an instance on a fresh PostgreSQL database, and one runner.
struct Cluster {
    db: TestDb,
    tmp: tempfile::TempDir,
    work: PathBuf,
    remote: PathBuf,
    home: PathBuf,
    store: Arc<dyn Store>,
    runner: Child,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with_config("")
    }

    /// With `extra` appended to the queueing instance's fleet.yaml.
    fn with_config(extra: &str) -> Cluster {
        let db = TestDb::create();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (remote, work) = (root.join("remote.git"), root.join("proj"));
        git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(root, &["clone", "-q", remote.to_str().unwrap(), "proj"]);
        std::fs::write(work.join("README.md"), "safe\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "seed"]);
        git(&work, &["push", "-q", "origin", "main"]);
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("fleet.yaml"),
            format!("store: {}\n{extra}", db.url()),
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(db.url()).unwrap());
        let runner = Command::new(FLEET)
            .args(["runner", "--store", db.url(), "--workspace"])
            .arg(root.join("runner"))
            .args(["--lease-ttl", "2", "--grace", "5"])
            .env_remove("FLEET_HOME")
            .env("GITHUB_TOKEN", TOKEN_VALUE)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Cluster {
            db,
            tmp,
            work,
            remote,
            home,
            store,
            runner,
        }
    }

    /// `fleet run --on-runners` of `runbook`: its output and the run's id.
    fn run(&self, runbook: &str) -> (Output, String) {
        let file = self.work.join("runbook.yaml");
        std::fs::write(&file, runbook).unwrap();
        let out = self.fleet(&["run", "--on-runners", file.to_str().unwrap()]);
        let run = self.store.runs().unwrap()[0].id.clone();
        (out, run)
    }

    fn runbook(&self, runbook: &str) -> String {
        let file = self.work.join("runbook.yaml");
        std::fs::write(&file, runbook).unwrap();
        file.display().to_string()
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(FLEET)
            .args(args)
            .current_dir(&self.work)
            .env("FLEET_HOME", &self.home)
            .output()
            .unwrap()
    }

    fn runner_log(&self, run: &str, task: &str) -> PathBuf {
        self.tmp
            .path()
            .join("runner/logs")
            .join(run)
            .join(format!("{task}.1.log"))
    }

    fn events_text(&self, run: &str) -> String {
        serde_json::to_string(&self.store.events(Some(run), 0, 100_000).unwrap()).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.runner.id() as i32, libc::SIGTERM) };
        if wait_until(&mut self.runner, Instant::now() + Duration::from_secs(20)).is_none() {
            let _ = self.runner.kill();
            let _ = self.runner.wait();
        }
        let _ = &self.db;
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn secrets_are_scanned_and_redacted_on_runners_as_locally() {
    let c = Cluster::new();
    let (out, run) = c.run(&format!(
        "name: secrets\ntasks:
  - id: echo
    command: \"echo gh=$GITHUB_TOKEN\"
    pass_env: [GITHUB_TOKEN]
    workspace: none
  - id: leak
    command: \"printf 'token = \\\"%s\\\"\\\\n' {LITERAL} > config.py\"
  - id: literal
    command: \"echo {LITERAL} > /dev/null\"
    workspace: none
"
    ));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    // The change holding a token is refused before anything is committed or pushed.
    assert!(
        stdout.contains("failed leak: check `no secrets in the change` exit 1"),
        "{stdout}"
    );
    let pushed = git(&c.remote, &["log", "--all", "-p", "--format=%H"]);
    assert!(!pushed.contains(LITERAL), "pushed to the remote:\n{pushed}");
    assert!(!pushed.contains("config.py"), "{pushed}");
    let events = c.events_text(&run);
    assert!(events.contains("task.checks_failed"), "{events}");
    assert!(events.contains("a GitHub token"), "{events}");

    // The log has the value of the runner's GITHUB_TOKEN redacted, as a local log does.
    let log = std::fs::read_to_string(c.runner_log(&run, "echo")).unwrap();
    assert!(log.contains("gh=[redacted GITHUB_TOKEN]"), "{log}");
    assert!(!log.contains(TOKEN_VALUE), "{log}");

    // Nothing any reader sees holds the literal token or the value: events (what SSE and
    // /api/v1/events/recent serve), the task rows, the queue rows, the memory export.
    for secret in [LITERAL, TOKEN_VALUE] {
        assert!(!events.contains(secret), "events hold {secret}: {events}");
    }
    assert!(events.contains("[redacted GitHub token]"), "{events}");
    let rows = format!(
        "{:?}{:?}",
        c.store.tasks(&run).unwrap(),
        c.store.queue().unwrap().queued(&run).unwrap()
    );
    assert!(
        !rows.contains(LITERAL) && !rows.contains(TOKEN_VALUE),
        "{rows}"
    );
    let export = c.fleet(&["memory", "export"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let export = text(&export.stdout);
    assert!(export.contains(&run), "{export}");
    for secret in [LITERAL, TOKEN_VALUE] {
        assert!(
            !export.contains(secret),
            "the export holds {secret}: {export}"
        );
    }
}

#[test]
fn retries_are_honoured_on_runners_as_locally() {
    let c = Cluster::new();
    // Fails its first attempt, passes its second (as `cli.rs`'s local `flaky`); `gated`
    // passes its command and fails its check once.
    let (out, run) = c.run(
        "name: flaky\ntasks:
  - id: flaky
    retries: 2
    retry_backoff: 100ms
    command: \"test $FLEET_ATTEMPT -ge 2 && echo ok > ok.txt\"
  - id: gated
    retries: 1
    retry_backoff: 50ms
    workspace: none
    command: \"true\"
    checks: [\"test $FLEET_ATTEMPT -ge 2\"]
  - id: hopeless
    retries: 1
    retry_backoff: 50ms
    workspace: none
    command: \"echo hopeless; exit 3\"
",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("2 done, 1 failed"), "{stdout}");
    assert!(stdout.contains("failed hopeless: exit 3"), "{stdout}");
    let events = c.store.events(Some(&run), 0, 10_000).unwrap();
    let retried = |task: &str| {
        events
            .iter()
            .filter(|e| e.kind == "task.retrying" && e.task.as_deref() == Some(task))
            .count()
    };
    assert_eq!(
        (retried("flaky"), retried("gated"), retried("hopeless")),
        (1, 1, 1)
    );
    // Each try starts as a local attempt does; a failed check says which, as locally.
    let of = |kind: &str, task: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.task.as_deref() == Some(task))
            .count()
    };
    assert_eq!(of("task.started", "flaky"), 2);
    assert_eq!(of("task.checks_failed", "gated"), 1);
    let int = c.store.run(&run).unwrap().unwrap().integration_branch;
    assert_eq!(git(&c.remote, &["show", &format!("{int}:ok.txt")]), "ok\n");
}

#[test]
fn a_runner_log_is_capped_and_its_end_reaches_the_store() {
    let c = Cluster::new();
    // 400,000 lines: 2.7 MB of output, over the 2 MB a local log keeps.
    let (out, run) = c.run(
        "name: logs\ntasks:
  - id: big
    workspace: none
    command: \"seq 1 400000; echo the-last-line\"
  - id: broken
    workspace: none
    command: \"echo about to fail; exit 7\"
  - id: after
    depends_on: [broken]
    workspace: none
    command: \"true\"
",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let size = std::fs::metadata(c.runner_log(&run, "big")).unwrap().len();
    assert!(size <= 2 * (1 << 20) + 4096, "log of {size} bytes");

    // From the queueing machine (no runner files here): the log's end, from the store.
    let logs = c.fleet(&["logs", &run, "big"]);
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
    let shown = text(&logs.stdout);
    assert!(shown.contains("the-last-line"), "{shown}");
    assert!(shown.contains("runner "), "{shown}");
    let logs = c.fleet(&["logs", &run, "broken"]);
    assert!(text(&logs.stdout).contains("about to fail"), "{logs:?}");
    // A task with no log says why, and is not a success.
    let none = c.fleet(&["logs", &run, "after"]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    assert!(text(&none.stderr).contains("skipped"), "{none:?}");

    // `fleet status` points at no file that does not exist: it says where the logs are.
    let status = c.fleet(&["status", &run, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["executor"], "runners", "{v}");
    assert!(v["summary"].is_null() && v["logs"].is_null(), "{v}");
    let big = v["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "big")
        .unwrap();
    assert!(big["log"].is_null(), "{big}");
    assert!(big["log_at"]["runner"].is_string(), "{big}");
    assert_eq!(big["log_at"]["tail_in_store"], true, "{big}");
    let human = text(&c.fleet(&["status", &run]).stdout);
    assert!(!human.contains("summary.md"), "{human}");
    assert!(human.contains("fleet logs"), "{human}");
}

#[test]
fn policies_hold_on_runners_as_locally() {
    // A protected path: the change touching it fails and never reaches the remote.
    let c =
        Cluster::with_config("policies:\n  - name: keep-out\n    protected_paths: [migrations/]\n");
    let (out, run) = c.run(
        "name: guarded\ntasks:
  - id: touch
    command: \"mkdir -p migrations && echo x > migrations/1.sql && echo ok > ok.txt\"
",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed touch: check `policy `keep-out`: protected paths` exit 1"),
        "{stdout}"
    );
    let events = c.events_text(&run);
    assert!(events.contains("policy.protected"), "{events}");
    let pushed = git(&c.remote, &["log", "--all", "--name-only", "--format="]);
    assert!(!pushed.contains("migrations/1.sql"), "{pushed}");

    // A protected integration branch: refused before anything is queued, as a local run is.
    let c = Cluster::with_config(
        "policies:\n  - name: runs\n    protected_branches: [\"fleet/runs/*/*\"]\n",
    );
    let file = c.runbook("name: refused\ntasks:\n  - id: a\n    command: \"true\"\n");
    let out = c.fleet(&["run", "--on-runners", &file]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("protected by policy `runs`"),
        "{out:?}"
    );
    assert!(c.store.runs().unwrap().is_empty());
}
