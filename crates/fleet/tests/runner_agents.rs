//! Agent tasks on `fleet runner` workers: three runner processes, each with its own instance
//! (`fleet.yaml` with two `http` developer profiles on two accounts) and workspace root, play
//! the agent tasks of a run queued with `fleet run --on-runners`, against a scripted model
//! server. The first developer's first request is refused with 429: the task swaps to the
//! other account's developer, and the account's cooldown, written to the shared PostgreSQL
//! store, keeps every later task on every runner off it. One task's first attempt fails its
//! check and the next attempt fixes it. Every task ends done once and is merged once on the
//! remote, and each agent task's sub-run (its attempts) is in the store.

mod support;
use support::git;
use support::kill::wait_until;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use fleet_testkit::{Fault, ModelServer, Scenario, Usage};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// The instance every process shares the settings of: two developers over two accounts.
fn fleet_yaml(db: &str, server: &ModelServer) -> String {
    let profile = |name: &str, account: &str, priority: u32| {
        format!(
            "  {name}:\n    cli: http\n    model: scripted-{name}\n    roles: [developer]\n    account: {account}\n    priority: {priority}\n    base_url: \"{}\"\n    stall_timeout: 30s\n",
            server.base_url(name)
        )
    };
    format!(
        "store: {db}\nagents:\n{}{}accounts:\n  account-a: {{ daily_budget_tokens: 1000000 }}\n  account-b: {{ daily_budget_tokens: 1000000 }}\n",
        profile("dev-fast", "account-a", 10),
        profile("dev-steady", "account-b", 5),
    )
}

/// The developers' script: each task writes its file; `fixme` writes a wrong one the first
/// time (its check fails) and the right one after (the mark lives outside every clone).
fn developers(server: &ModelServer, marks: &Path) {
    let m = marks.display();
    let developer = format!(
        "case \"$FLEET_TASK\" in \
         fixme) if [ -e {m}/fixme.tried ]; then echo good > fixme.txt; else touch {m}/fixme.tried; echo bad > fixme.txt; fi ;; \
         *) echo \"$FLEET_TASK\" > \"$FLEET_TASK.txt\" ;; \
         esac; git status --short"
    );
    let dev = || {
        Scenario::new()
            .shell(developer.clone())
            .text("Done: the task's file is written.")
            .usage(Usage::new(1000, 100))
    };
    server.add_scenario(
        "dev-fast",
        dev().fault(Fault::status(429).retry_after(3600).times(1)),
    );
    server.add_scenario("dev-steady", dev());
}

/// `first`, then three in parallel (`fixme` among them), then a shell task that counts.
const RUNBOOK: &str = r#"name: agents-on-runners
tasks:
  - id: first
    role: developer
    prompt: "Write first.txt"
    checks: ["test -s first.txt"]
  - id: alpha
    depends_on: [first]
    role: developer
    prompt: "Write alpha.txt"
    checks: ["test -s alpha.txt"]
  - id: beta
    depends_on: [first]
    role: developer
    prompt: "Write beta.txt"
    checks: ["test -s beta.txt"]
  - id: fixme
    depends_on: [first]
    role: developer
    prompt: "Write fixme.txt saying good"
    checks: ["grep -qx good fixme.txt"]
  - id: last
    depends_on: [alpha, beta, fixme]
    command: "ls *.txt | wc -l > count"
    checks: ["test $(cat count) -eq 4"]
"#;

struct Runners(Vec<Child>);

impl Drop for Runners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn instance(dir: &Path, yaml: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    dir.to_path_buf()
}

#[test]
fn runners_play_agent_tasks_with_fixes_and_swaps_sharing_cooldowns() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let server = ModelServer::start();
    developers(&server, &marks);
    let yaml = fleet_yaml(db.url(), &server);

    let remote = root.join("remote.git");
    git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(root, &["clone", "-q", remote.to_str().unwrap(), "proj"]);
    let work = root.join("proj");
    std::fs::write(work.join("README.md"), "agents on runners\n").unwrap();
    std::fs::write(work.join("runbook.yaml"), RUNBOOK).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "seed"]);
    git(&work, &["push", "-q", "origin", "main"]);

    let mut runners = Runners(
        (0..3)
            .map(|i| {
                let home = instance(&root.join(format!("runner{i}-home")), &yaml);
                Command::new(FLEET)
                    .args(["runner", "--store", db.url(), "--lease-ttl", "5"])
                    .arg("--workspace")
                    .arg(root.join(format!("runner{i}")))
                    .env("FLEET_HOME", &home)
                    .stdout(std::fs::File::create(root.join(format!("runner{i}.out"))).unwrap())
                    .stderr(std::fs::File::create(root.join(format!("runner{i}.err"))).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let home = instance(&root.join("home"), &yaml);
    let out = Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(work.join("runbook.yaml"))
        .env("FLEET_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(root.join(format!("runner{i}.err"))).unwrap_or_default())
        .collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}\nrunners:\n{logs}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 done, 0 failed, 0 skipped"), "{stdout}");

    let store = PostgresStore::open(db.url()).unwrap();
    let run = store
        .runs()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "agents-on-runners")
        .unwrap()
        .id;
    // Every task done exactly once.
    let events = store.events(Some(&run), 0, 10_000).unwrap();
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "task.done") {
        *done.entry(e.task.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(done.len(), 5, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "{done:?}");

    // Merged exactly once each, on the remote's integration branch; `fixme` as fixed.
    let int = store.run(&run).unwrap().unwrap().integration_branch;
    let log = git(&remote, &["log", "--format=%B%x00", &int]);
    let mut merges: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        if let Some(t) = line.strip_prefix(&format!("Fleet-Task: {run}/")) {
            *merges.entry(t.to_string()).or_default() += 1;
        }
    }
    assert_eq!(merges.len(), 5, "{merges:?}");
    assert!(merges.values().all(|&n| n == 1), "{merges:?}");
    assert_eq!(
        git(&remote, &["show", &format!("{int}:fixme.txt")]),
        "good\n"
    );
    assert_eq!(git(&remote, &["show", &format!("{int}:count")]), "4\n");

    // Each agent task names its sub-run, whose attempts are in the shared store.
    let mut subs: BTreeMap<String, String> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "task.sub_run") {
        let sub = e.data["sub_run"].as_str().unwrap().to_string();
        assert!(
            subs.insert(e.task.clone().unwrap(), sub).is_none(),
            "one sub-run per task: {e:?}"
        );
    }
    assert_eq!(
        subs.keys().collect::<Vec<_>>(),
        ["alpha", "beta", "first", "fixme"]
    );
    let attempts = |task: &str| {
        let sub = &subs[task];
        assert_eq!(store.run(sub).unwrap().unwrap().state, "passed", "{sub}");
        store.attempts(sub).unwrap()
    };
    // `first`: dev-fast was rate-limited, dev-steady (the other account) passed.
    let first = attempts("first");
    let who: Vec<(&str, &str)> = first
        .iter()
        .map(|a| (a.profile.as_deref().unwrap(), a.outcome.as_str()))
        .collect();
    assert_eq!(who.len(), 2, "{first:?}");
    assert_eq!(who[0].0, "dev-fast", "{first:?}");
    assert_ne!(who[0].1, "passed", "{first:?}");
    assert_eq!(who[1], ("dev-steady", "passed"), "{first:?}");
    // `fixme`: the first attempt failed its check, the next one passed.
    let fixme = attempts("fixme");
    assert_eq!(fixme.len(), 2, "{fixme:?}");
    assert_eq!(fixme[0].outcome, "checks_failed", "{fixme:?}");
    assert_eq!(fixme[1].outcome, "passed", "{fixme:?}");
    // After the 429, no runner sent a task to the limited account: its cooldown is shared.
    for task in ["alpha", "beta", "fixme"] {
        for a in attempts(task) {
            assert_eq!(a.profile.as_deref(), Some("dev-steady"), "{task}: {a:?}");
        }
    }
    assert_eq!(server.model_calls("dev-fast"), 1);

    // `fleet status` on the coordinator's instance shows a sub-run's attempts.
    let status = Command::new(FLEET)
        .args(["status", &subs["first"]])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("dev-steady"), "{text}");

    for r in runners.0.iter_mut() {
        // SAFETY: kill(2) on a child of this test.
        unsafe { libc::kill(r.id() as i32, libc::SIGTERM) };
        let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
    }
}

/// `runners: true`: an epic's stages (research, plan, implement, review and its fix cycle)
/// are queued for two runners instead of run by the process driving the epic; the driver
/// waits through the store and brings each run's branch home, and the epic reaches
/// acceptance with every planned file on its branch.
#[test]
fn an_epic_runs_its_stages_on_runners_when_the_instance_says_so() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = support::epics::scripted_server();
    let profile = |name: &str, role: &str| {
        format!(
            "  {name}:\n    cli: http\n    model: scripted-{role}\n    roles: [{role}]\n    base_url: \"{}\"\n    stall_timeout: 30s\n",
            server.base_url(role)
        )
    };
    let yaml = format!(
        "store: {}\nrunners: true\nagents:\n{}{}{}{}{}",
        db.url(),
        profile("researcher-http", "researcher"),
        profile("planner-http", "planner"),
        profile("dev-http", "developer"),
        profile("reviewer-http", "reviewer"),
        profile("architect-http", "architect"),
    );
    git(root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
    git(root, &["clone", "-q", "origin.git", "shop"]);
    let repo = root.join("shop");
    std::fs::write(repo.join("README.md"), "# shop\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    git(&repo, &["push", "-q", "origin", "main"]);
    let mut runners = Runners(
        (0..2)
            .map(|i| {
                let home = instance(&root.join(format!("runner{i}-home")), &yaml);
                Command::new(FLEET)
                    .args(["runner", "--lease-ttl", "5", "--workspace"])
                    .arg(root.join(format!("runner{i}")))
                    .env("FLEET_HOME", &home)
                    .stdout(std::fs::File::create(root.join(format!("runner{i}.out"))).unwrap())
                    .stderr(std::fs::File::create(root.join(format!("runner{i}.err"))).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let home = instance(&root.join("home"), &yaml);
    let fleet = |args: &[&str]| {
        let out = Command::new(FLEET)
            .args(args)
            .current_dir(&repo)
            .env("FLEET_HOME", &home)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let logs: String = (0..2)
            .map(|i| {
                std::fs::read_to_string(root.join(format!("runner{i}.err"))).unwrap_or_default()
            })
            .collect();
        assert!(
            out.status.success(),
            "fleet {args:?}: {text}\n{}\nrunners:\n{logs}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let repo_arg = repo.display().to_string();
    fleet(&[
        "project",
        "add",
        "shop",
        "--repo",
        &repo_arg,
        "--check",
        "test -s README.md",
    ]);
    let out = fleet(&[
        "task",
        "add",
        "Add the a, b and c files to the shop",
        "--project",
        "shop",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");

    // Every stage run of the epic went through the queue, and each agent task was a sub-run
    // played on a runner.
    let store = PostgresStore::open(db.url()).unwrap();
    let runs = store.runs().unwrap();
    // (A sub-run is named `<outer run id>.<task>-c<claim>`.)
    let stage_runs: Vec<_> = runs
        .iter()
        .filter(|r| r.name.starts_with("e1-") && !r.name.contains('.'))
        .collect();
    assert!(stage_runs.len() >= 6, "{runs:?}");
    for r in &stage_runs {
        let queued = store.queue().unwrap().queued(&r.id).unwrap();
        assert!(!queued.is_empty(), "stage run {} ran on runners", r.id);
        assert_eq!(r.state, "passed", "{r:?}");
    }
    let subs: Vec<_> = runs.iter().filter(|r| r.name.ends_with("-c1")).collect();
    assert!(subs.len() >= 8, "sub-runs: {runs:?}");
    // Sub-runs are named after their stage run, so the epic's view counts their attempts.
    assert!(subs.iter().all(|r| r.name.starts_with("e1-")), "{subs:?}");
    let show: serde_json::Value =
        serde_json::from_str(&fleet(&["task", "show", "e1", "--json"])).unwrap();
    let attempts = show["attempts"].as_array().unwrap();
    assert!(attempts.len() >= subs.len(), "{show}");
    assert!(
        attempts.iter().any(|a| a["profile"] == "dev-http"),
        "{attempts:?}"
    );
    assert!(show["total"]["tokens"].as_u64().unwrap() > 0, "{show}");
    // The epic's branch holds what the plan and the review's fix asked for.
    let branch = support::fleet_branch(&repo, "epics", "e1");
    for f in ["a.txt", "b.txt", "c.txt", "fix-review.txt"] {
        git(&repo, &["cat-file", "-e", &format!("{branch}:{f}")]);
    }
    for r in runners.0.iter_mut() {
        // SAFETY: kill(2) on a child of this test.
        unsafe { libc::kill(r.id() as i32, libc::SIGTERM) };
        let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
    }
}

/// A runner `kill -9`ed while it plays an agent task: another runner claims the task after the
/// lease expires and redoes it as a new sub-run; the dead runner's sub-run, which nothing else
/// would ever end, is closed as `interrupted` with the reason, and the task lands once.
#[test]
fn a_dead_runners_sub_run_is_closed_when_another_runner_redoes_its_task() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let server = ModelServer::start();
    // The first claim's agent works for a long while (its runner dies meanwhile); the redo's
    // agent writes the file at once.
    let m = marks.display();
    server.add_scenario(
        "dev-fast",
        Scenario::new()
            .shell(format!(
                "if [ -e {m}/slow.tried ]; then echo done > slow.txt; \
                 else touch {m}/slow.tried; sleep 20; echo done > slow.txt; fi"
            ))
            .text("Done.")
            .usage(Usage::new(1000, 100)),
    );
    let yaml = fleet_yaml(db.url(), &server);
    let remote = root.join("remote.git");
    git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(root, &["clone", "-q", remote.to_str().unwrap(), "proj"]);
    let work = root.join("proj");
    std::fs::write(work.join("README.md"), "a dead runner\n").unwrap();
    std::fs::write(
        work.join("runbook.yaml"),
        "name: dead-runner\ntasks:\n  - id: slow\n    agent: dev-fast\n    prompt: \"Write slow.txt\"\n    checks: [\"test -s slow.txt\"]\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "seed"]);
    git(&work, &["push", "-q", "origin", "main"]);

    let runner = |i: usize| {
        let home = instance(&root.join(format!("runner{i}-home")), &yaml);
        Command::new(FLEET)
            .args(["runner", "--store", db.url(), "--lease-ttl", "2"])
            .arg("--workspace")
            .arg(root.join(format!("runner{i}")))
            .env("FLEET_HOME", &home)
            .stdout(std::fs::File::create(root.join(format!("runner{i}.out"))).unwrap())
            .stderr(std::fs::File::create(root.join(format!("runner{i}.err"))).unwrap())
            .spawn()
            .unwrap()
    };
    let mut runners = Runners(vec![runner(0)]);
    let home = instance(&root.join("home"), &yaml);
    let coordinator = Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(work.join("runbook.yaml"))
        .env("FLEET_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The first sub-run is working: its agent is in its long shell call.
    let store = PostgresStore::open(db.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let running = store.runs().unwrap().into_iter().find(|r| {
            r.name.starts_with("dead-runner-")
                && r.name.ends_with(".slow-c1")
                && r.state == "running"
        });
        if let Some(r) = running
            && marks.join("slow.tried").exists()
        {
            break r.id;
        }
        assert!(Instant::now() < deadline, "the first sub-run never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    runners.0[0].kill().unwrap();
    runners.0[0].wait().unwrap();
    runners.0.push(runner(1));

    let out = coordinator.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 done, 0 failed"), "{stdout}");

    // The dead runner's sub-run is closed, saying why; the redo's sub-run passed.
    let closed = store.run(&first).unwrap().unwrap();
    assert_eq!(closed.state, "interrupted", "{closed:?}");
    let why: Vec<_> = store
        .events(Some(&first), 0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "run.interrupted")
        .collect();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("claim 2 on runner"),
        "{why:?}"
    );
    let redo: Vec<_> = store
        .runs()
        .unwrap()
        .into_iter()
        .filter(|r| r.name.ends_with(".slow-c2"))
        .collect();
    assert_eq!(redo.len(), 1, "{redo:?}");
    assert_eq!(redo[0].state, "passed", "{redo:?}");
    // Landed once on the remote.
    let run = store
        .runs()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "dead-runner")
        .unwrap();
    let log = git(
        &remote,
        &["log", "--format=%B%x00", &run.integration_branch],
    );
    assert_eq!(
        log.matches(&format!("Fleet-Task: {}/slow", run.id)).count(),
        1,
        "{log}"
    );
}
