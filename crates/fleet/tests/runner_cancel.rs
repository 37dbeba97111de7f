//! Cancelling an epic whose stage runs on `fleet runner` workers stops the work there: the
//! runner holding the stage's long task ends its process within the kill grace and a few
//! seconds (it learns it from the store's notifications, well before its next heartbeat),
//! lands nothing of it on the remote, never claims the stage's other task, and the stage's
//! run ends `cancelled` with `task.cancelled` once per task.

mod support;
use support::git;
use support::kill::wait_until;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
const KILL_GRACE: u64 = 2;

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two independent tasks: `slow`, whose acceptance check records its pid and sleeps, and
/// `later`, which the runner (one slot) can only claim after `slow`.
fn plan(marks: &Path) -> String {
    let pid = marks.join("slow.pid");
    let task = |id: &str, check: String| {
        serde_json::json!({
            "id": id, "title": id, "role": "developer",
            "description": format!("Create {id}.txt."),
            "depends_on": [],
            "acceptance": {"commands": [check], "statements": [format!("{id}.txt exists")]}
        })
    };
    serde_json::json!({"summary": "two files", "phases": [{"id": "build", "title": "build", "tasks": [
        task("slow", format!("echo $$ > {} && exec sleep 300", pid.display())),
        task("later", "test -s later.txt".into()),
    ]}]})
    .to_string()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn cancelling_an_epic_stops_its_task_on_a_runner_and_lands_nothing() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let server = support::epics::scripted_server();
    server.add_scenario(
        "planner",
        fleet_testkit::Scenario::new().write_file(".fleet-out/plan.json", plan(&marks)),
    );
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
    let home = root.join("home");
    let runner_home = root.join("runner-home");
    for h in [&home, &runner_home] {
        std::fs::create_dir_all(h).unwrap();
        std::fs::write(h.join("fleet.yaml"), &yaml).unwrap();
    }
    let fleet = |args: &[&str]| {
        let out = Command::new(FLEET)
            .args(args)
            .current_dir(&repo)
            .env("FLEET_HOME", &home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleet {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A lease of 30 s: its heartbeat (every 10 s) is not how the runner learns of the cancel.
    let runner = Command::new(FLEET)
        .args(["runner", "--lease-ttl", "30", "--concurrency", "1"])
        .args(["--kill-grace", &KILL_GRACE.to_string(), "--workspace"])
        .arg(root.join("runner"))
        .env("FLEET_HOME", &runner_home)
        .stdout(std::fs::File::create(root.join("runner.out")).unwrap())
        .stderr(std::fs::File::create(root.join("runner.err")).unwrap())
        .spawn()
        .unwrap();
    let mut procs = Killed(vec![runner]);
    let repo_arg = repo.display().to_string();
    fleet(&["project", "add", "shop", "--repo", &repo_arg]);
    let driver = Command::new(FLEET)
        .args([
            "task",
            "add",
            "Add the slow and later files",
            "--project",
            "shop",
        ])
        .current_dir(&repo)
        .env("FLEET_HOME", &home)
        .stdout(std::fs::File::create(root.join("driver.out")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(driver);
    let logs = || std::fs::read_to_string(root.join("runner.err")).unwrap_or_default();

    // The slow task's check is running on the runner.
    let pid_file = marks.join("slow.pid");
    let deadline = Instant::now() + Duration::from_secs(180);
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the slow task never ran: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(alive(pid));
    let store = PostgresStore::open(db.url()).unwrap();
    let run = store
        .runs_named("e1-implement-")
        .unwrap()
        .into_iter()
        .find(|r| !r.name.contains('.'))
        .expect("the implement stage's run");
    let queue = store.queue().unwrap();

    let cancelled_at = Instant::now();
    let out = fleet(&["task", "cancel", "e1"]);
    assert!(out.contains("epic e1 cancelled"), "{out}");
    while alive(pid) {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(KILL_GRACE + 5),
            "the slow task's process outlived the cancel: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the slow task's process ended {:?} after the cancel",
        cancelled_at.elapsed()
    );
    // The runner ends the claim as cancelled.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = queue.queued(&run.id).unwrap();
        if rows
            .iter()
            .all(|r| r.state == "cancelled" && r.holder.is_none())
        {
            let claims: Vec<(&str, u32)> = rows
                .iter()
                .map(|r| (r.task_id.as_str(), r.claims))
                .collect();
            assert_eq!(claims, [("later", 0), ("slow", 1)], "later never claimed");
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let row = store.run(&run.id).unwrap().unwrap();
    assert_eq!(row.state, "cancelled");
    let events = store.events(Some(&run.id), 0, 10_000).unwrap();
    for task in ["slow", "later"] {
        let n = events
            .iter()
            .filter(|e| e.kind == "task.cancelled" && e.task.as_deref() == Some(task))
            .count();
        assert_eq!(n, 1, "task.cancelled of {task}: {events:?}");
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind.as_str(), "task.merged" | "task.done")),
        "{events:?}"
    );

    // Nothing of it reached the remote: no task branch, no merge on the run's branch.
    let remote = root.join("origin.git");
    let refs = git(&remote, &["for-each-ref", "--format=%(refname)"]);
    assert!(!refs.contains("/slow"), "{refs}");
    let log = git(
        &remote,
        &["log", "--format=%B", &row.integration_branch, "--"],
    );
    assert!(!log.contains("Fleet-Task:"), "{log}");

    // A runner stopped now says so, and claimed nothing else meanwhile.
    let runner = &mut procs.0[0];
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
    assert!(wait_until(runner, Instant::now() + Duration::from_secs(30)).is_some());
    let said = std::fs::read_to_string(root.join("runner.out")).unwrap();
    assert!(said.contains("1 cancelled"), "{said}");
    let claimed_after: Vec<_> = store
        .runs()
        .unwrap()
        .into_iter()
        .filter(|r| r.created_at > row.finished_at.unwrap_or(i64::MAX))
        .collect();
    assert!(claimed_after.is_empty(), "{claimed_after:?}");
}
