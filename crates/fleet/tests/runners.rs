//! `fleet runner` workers on PostgreSQL: three runner processes with their own workspace roots
//! (no shared filesystem between them but the bare repository they clone and push to, as a
//! project's remote) run a run queued with `fleet run --on-runners`. One runner is `kill -9`ed
//! in the middle of a task and another is sent SIGTERM in the middle of one: every task ends
//! done once and is merged once (walked on the remote's integration branch), the killed
//! runner's task is redone within the lease's TTL + 5 s, and the drained runner finishes its
//! task before it exits. Two `fleet serve` replicas on the same PostgreSQL stream the run's
//! events, written by five processes, each exactly once and in order.

mod support;
use support::epics::Instance;
use support::git;
use support::kill::wait_until;
use support::runners::{Runners, pid_of, run_on_runners, sigterm, spawn_runner};
use support::server::{Http, Served, wait_for};

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
const TTL_SECS: u64 = 2;
/// The marks the runbooks' held tasks wait for, written when a test ends however it ends.
const RELEASES: &[&str] = &["go-slow", "go-drained"];

/// A project: a bare repository as its remote, and a clone with the runbook whose `origin`
/// is that remote.
fn project(root: &Path, marks: &Path) -> (PathBuf, PathBuf) {
    let remote = root.join("remote.git");
    let work = root.join("proj");
    git(
        root,
        &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
    );
    git(
        root,
        &["clone", "--quiet", remote.to_str().unwrap(), "proj"],
    );
    std::fs::write(work.join("README.md"), "runners\n").unwrap();
    // Tasks: `slow` and `drained` wait for a mark the test makes; twelve quick ones in layers;
    // `last` after all of them. Every task writes its own file, so each lands a commit.
    let wait = |mark: &str| {
        format!(
            "while [ ! -e {}/{mark} ]; do sleep 0.05; done",
            marks.display()
        )
    };
    let mut y = String::from("name: fleet-on-runners\ntasks:\n");
    let mut all = Vec::new();
    for (id, cmd) in [("slow", wait("go-slow")), ("drained", wait("go-drained"))] {
        y += &format!(
            "  - id: {id}\n    command: \"{cmd} && echo {id} $FLEET_ATTEMPT > {id}.txt\"\n"
        );
        all.push(id.to_string());
    }
    for i in 0..12 {
        let id = format!("t{i:02}");
        let deps = if i >= 4 {
            format!("\n    depends_on: [t{:02}, t{:02}]", i - 4, i - 3)
        } else {
            String::new()
        };
        y += &format!("  - id: {id}{deps}\n    command: \"echo {id} > {id}.txt\"\n");
        all.push(id);
    }
    y += &format!(
        "  - id: last\n    depends_on: [{}]\n    command: \"ls *.txt | wc -l > count\"\n    checks: [\"test $(cat count) -eq 14\"]\n",
        all.join(", ")
    );
    std::fs::write(work.join("runbook.yaml"), y).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "seed"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    (remote, work)
}

/// Reads an SSE stream in the background: the seq of every event, until dropped.
struct SseReader {
    seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseReader {
    fn open(http: &Http, url: String) -> SseReader {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = http.rt.spawn(async move {
            let mut resp = reqwest::Client::new().get(url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            out.lock().unwrap().push(v.trim().parse::<u64>().unwrap());
                        }
                    }
                }
            }
        });
        SseReader { seen, task }
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An API replica's instance: its own home, naming the shared store.
fn replica(db: &str, work: &Path, remote: &Path) -> Instance {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {db}\n")).unwrap();
    Instance {
        _tmp: tmp,
        home,
        repo: work.to_path_buf(),
        remote: remote.to_path_buf(),
    }
}

fn claim_of(store: &dyn Store, run: &str, task: &str) -> Option<(String, u32, String)> {
    store
        .queue()
        .unwrap()
        .queued(run)
        .unwrap()
        .into_iter()
        .find(|r| r.task_id == task)
        .map(|r| (r.state, r.claims, r.holder.unwrap_or_default()))
}

#[test]
fn runners_survive_kill_and_drain_and_land_every_task_once() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let (remote, work) = project(tmp.path(), &marks);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {}\n", db.url())).unwrap();
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(PostgresStore::open(db.url()).unwrap());
    let (ia, ib) = (
        replica(db.url(), &work, &remote),
        replica(db.url(), &work, &remote),
    );
    let ra = Served::start(&ia, "127.0.0.1", &["--epics", "0"]);
    let rb = Served::start(&ib, "127.0.0.1", &["--epics", "0"]);
    let http = Http::new();
    let sse_a = SseReader::open(&http, format!("{}/api/v1/events?after=0", ra.url));
    let sse_b = SseReader::open(&http, format!("{}/api/v1/events?after=0", rb.url));

    let mut guard = Runners::new(
        (0..3)
            .map(|i| {
                let ws = tmp.path().join(format!("runner{i}"));
                let log = tmp.path().join(format!("runner{i}.out"));
                spawn_runner(db.url(), &ws, &log, TTL_SECS, &[])
            })
            .collect(),
        &marks,
        RELEASES,
    );
    let runners = &mut guard.children;
    let coordinator = run_on_runners(&work.join("runbook.yaml"), &home);

    let run = wait_for(30, "the run to be queued", || {
        store.runs().unwrap().first().map(|r| r.id.clone())
    });
    // Each runner plays one task at a time: `slow` and `drained` are held by two of them.
    let (_, _, slow_holder) = wait_for(30, "slow to be claimed", || {
        claim_of(&*store, &run, "slow").filter(|c| c.0 == "claimed")
    });
    let (_, _, drained_holder) = wait_for(30, "drained to be claimed", || {
        claim_of(&*store, &run, "drained").filter(|c| c.0 == "claimed")
    });
    let index = |pid: u32| runners.iter().position(|c| c.id() == pid).unwrap();
    let (killed, drained) = (index(pid_of(&slow_holder)), index(pid_of(&drained_holder)));
    assert_ne!(killed, drained);

    // kill -9 the runner in the middle of `slow`.
    runners[killed].kill().unwrap();
    let killed_at = Instant::now();
    runners[killed].wait().unwrap();
    let killed_root = tmp.path().join(format!("runner{killed}"));
    let left_clone = killed_root.join("tasks").join(&run).join("slow.1");
    assert!(left_clone.join(".git").exists(), "{}", left_clone.display());
    // Its task is claimed again by another runner once the lease ran out: claim 2.
    let (_, _, redo_holder) = wait_for(TTL_SECS + 20, "slow to be claimed again", || {
        claim_of(&*store, &run, "slow").filter(|c| c.1 == 2 && c.0 == "claimed")
    });
    let redone_after = killed_at.elapsed();
    assert_ne!(pid_of(&redo_holder), pid_of(&slow_holder));
    assert!(
        redone_after <= Duration::from_secs(TTL_SECS + 5),
        "redone after {redone_after:?}"
    );

    // SIGTERM the runner in the middle of `drained`: it claims nothing more, and the task,
    // let go on within the grace period, is finished and landed by that runner.
    let drained_pid = runners[drained].id();
    sigterm(drained_pid);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(marks.join("go-drained"), "").unwrap();
    let status = wait_until(
        &mut runners[drained],
        Instant::now() + Duration::from_secs(60),
    )
    .expect("the drained runner exits");
    assert!(status.success(), "drained runner: {status:?}");
    let out = std::fs::read_to_string(tmp.path().join(format!("runner{drained}.out"))).unwrap();
    assert!(
        out.contains("stopped: 1 done, 0 failed, 0 handed back"),
        "{out}"
    );
    std::fs::write(marks.join("go-slow"), "").unwrap();

    let out = coordinator.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("15 done, 0 failed, 0 skipped"), "{stdout}");

    // Every task done exactly once.
    let rows = store.queue().unwrap().queued(&run).unwrap();
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:?}");
    let events = store.events(Some(&run), 0, 10_000).unwrap();
    let mut done: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "task.done") {
        done.entry(e.task.clone().unwrap())
            .or_default()
            .push(e.data.clone());
    }
    assert_eq!(done.len(), 15);
    assert!(done.values().all(|v| v.len() == 1), "{done:?}");
    let drained_name = &done["drained"][0]["runner"];
    assert_eq!(pid_of(drained_name.as_str().unwrap()), drained_pid);
    assert_eq!(claim_of(&*store, &run, "drained").unwrap().1, 1);

    // Merged exactly once: one merge commit per task on the remote's integration branch,
    // each task's file there, and `slow` from its redo (claim 2).
    let int = store.run(&run).unwrap().unwrap().integration_branch;
    let log = git(&remote, &["log", "--format=%B%x00", &int]);
    let mut merges: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        if let Some(t) = line.strip_prefix(&format!("Fleet-Task: {run}/")) {
            *merges.entry(t.to_string()).or_default() += 1;
        }
    }
    assert_eq!(merges.len(), 15, "{merges:?}");
    assert!(merges.values().all(|&n| n == 1), "{merges:?}");
    assert_eq!(
        git(&remote, &["show", &format!("{int}:slow.txt")]),
        "slow 2\n"
    );
    assert_eq!(git(&remote, &["show", &format!("{int}:count")]), "14\n");

    // Every event of the store, on both replicas' streams, once each and in order.
    let newest = store.newest_seq().unwrap();
    let every: Vec<u64> = store
        .events(None, 0, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(every, (1..=newest).collect::<Vec<_>>());
    for (name, sse) in [("a", &sse_a), ("b", &sse_b)] {
        let seen = wait_for(30, &format!("replica {name}'s stream at {newest}"), || {
            let seen = sse.seen();
            (seen.last() >= Some(&newest)).then_some(seen)
        });
        assert_eq!(seen, every, "replica {name}: every event once, in order");
    }
    ra.stop();
    rb.stop();

    // A runner on a live runner's root is refused; one on the killed runner's root removes
    // the clone it left.
    let live = (0..3).find(|&i| i != killed && i != drained).unwrap();
    let mut second = Command::new(FLEET)
        .args(["runner", "--store", db.url(), "--workspace"])
        .arg(tmp.path().join(format!("runner{live}")))
        .env_remove("FLEET_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until(&mut second, Instant::now() + Duration::from_secs(30));
    if status.is_none() {
        let _ = second.kill();
        panic!("a second runner on a live runner's workspace was not refused");
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let live_pid = runners[live].id();
    assert!(
        err.contains(&format!("in use by another runner (pid {live_pid})")),
        "{err}"
    );
    let mut again = spawn_runner(
        db.url(),
        &killed_root,
        &tmp.path().join("again.out"),
        TTL_SECS,
        &[],
    );
    wait_for(30, "the killed runner's clone to be removed", || {
        (!left_clone.exists()).then_some(())
    });
    sigterm(again.id());
    assert!(wait_until(&mut again, Instant::now() + Duration::from_secs(30)).is_some());
    let said = std::fs::read_to_string(tmp.path().join("again.out")).unwrap();
    assert!(
        said.contains("removed 1 task directory a runner that died left in"),
        "{said}"
    );

    for r in runners.iter_mut() {
        if r.try_wait().unwrap().is_some() {
            continue;
        }
        sigterm(r.id());
        let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
    }
}

#[test]
fn a_runner_on_sqlite_refuses_with_exit_5() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("fleet.yaml"), "").unwrap();
    let out = Command::new(FLEET)
        .args(["runner", "--workspace"])
        .arg(tmp.path().join("ws"))
        .env("FLEET_HOME", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres://"), "{err}");
    assert!(err.contains("SQLite"), "{err}");
}

#[test]
fn a_sqlite_store_url_is_refused_with_exit_5_before_any_file_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("x.db");
    let out = Command::new(FLEET)
        .args(["runner", "--store", &format!("sqlite://{}", db.display())])
        .arg("--workspace")
        .arg(tmp.path().join("ws"))
        .env_remove("FLEET_HOME")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("--store sqlite://"), "{err}");
    assert!(!db.exists(), "refusing made {}", db.display());
}

/// A run on runners whose `fleet run --on-runners` went away (killed) still ends: the runner
/// that ends its last task ends the run, once; `fleet run --resume RUN` then reports it.
#[test]
fn a_run_whose_waiter_died_still_ends_and_resume_reports_it() {
    let pg = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let (_remote, work) = project(tmp.path(), &marks);
    std::fs::write(
        work.join("small.yaml"),
        format!(
            "name: orphan\ntasks:\n  - id: a\n    command: \"while [ ! -e {}/go ]; do sleep 0.05; done; echo a > a.txt\"\n  - id: b\n    depends_on: [a]\n    command: \"echo b > b.txt\"\n",
            marks.display()
        ),
    )
    .unwrap();
    let store = PostgresStore::open(pg.url()).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {}\n", pg.url())).unwrap();
    let mut waiter = Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(work.join("small.yaml"))
        .env("FLEET_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runners = Runners::new(
        vec![spawn_runner(
            pg.url(),
            &tmp.path().join("ws"),
            &tmp.path().join("runner.log"),
            TTL_SECS,
            &[],
        )],
        &marks,
        RELEASES,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs = store.runs().unwrap();
        if let Some(r) = runs.first()
            && claim_of(&store, &r.id, "a").is_some()
        {
            break r.id.clone();
        }
        assert!(Instant::now() < deadline, "task a was never claimed");
        std::thread::sleep(Duration::from_millis(50));
    };
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    std::fs::write(marks.join("go"), "").unwrap();
    let ended = Instant::now() + Duration::from_secs(30);
    while store.run(&run).unwrap().unwrap().state == "running" {
        assert!(
            Instant::now() < ended,
            "the run never ended without its waiter"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.run(&run).unwrap().unwrap().state, "passed");
    let resumed = Command::new(FLEET)
        .args(["run", "--resume", &run])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&resumed.stdout);
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(out.contains(&format!("run {run} passed: 2 done")), "{out}");
    let finished = store
        .events(Some(&run), 0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "run.finished")
        .count();
    assert_eq!(finished, 1, "the run ended once, whoever saw it end");
    drop(runners);
}

/// `fleet runners` lists the live runners and what each offers; a run with a task no live
/// runner can play says so at once, instead of waiting without a word.
#[test]
fn runners_are_listed_and_a_task_nobody_can_play_is_named() {
    let pg = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let (_remote, work) = project(tmp.path(), &marks);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {}\n", pg.url())).unwrap();
    let listed = || -> serde_json::Value {
        let out = Command::new(FLEET)
            .args(["runners", "--json"])
            .env("FLEET_HOME", &home)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(listed(), serde_json::json!([]), "no runner yet");
    let _runners = Runners::new(
        vec![spawn_runner(
            pg.url(),
            &tmp.path().join("ws"),
            &tmp.path().join("runner.log"),
            TTL_SECS,
            &[],
        )],
        &marks,
        RELEASES,
    );
    let runner = wait_for(30, "the runner to advertise", || {
        listed().as_array().and_then(|a| a.first().cloned())
    });
    assert!(
        runner["offers"].as_array().unwrap().contains(&"sh".into()),
        "{runner}"
    );
    std::fs::write(
        work.join("agent.yaml"),
        "name: nobody\ntasks:\n  - id: ask\n    agent: claude\n    prompt: \"Say hello.\"\n",
    )
    .unwrap();
    let mut waiter = Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(work.join("agent.yaml"))
        .env("FLEET_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = waiter.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let said = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the run said nothing about its task nobody can play");
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    assert!(
        said.contains("task ask needs agent:claude, which no live runner offers"),
        "{said}"
    );
}

/// Tasks without a workspace share their slot's one directory (not one made and removed per
/// task), and each still starts in an empty one: what an earlier task left there, files and
/// directories, is gone before the next starts. A runner that stops removes its directory.
#[test]
fn tasks_without_a_workspace_each_start_in_an_empty_directory() {
    let pg = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let (_remote, work) = project(tmp.path(), &marks);
    // Each task fails unless its directory is empty, then leaves a file and a tree in it.
    let step = "[ -z \\\"$(ls -A)\\\" ] && pwd >> PWDS && touch left-$FLEET_TASK && mkdir -p sub/deeper && touch sub/deeper/x";
    let mut runbook = String::from("name: empty\ntasks:\n");
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        runbook.push_str(&format!(
            "  - id: {id}\n    workspace: none\n    command: \"{}\"\n",
            step.replace("PWDS", &marks.join("pwds").display().to_string())
        ));
        if i > 0 {
            runbook.push_str(&format!("    depends_on: [{}]\n", ["a", "b", "c"][i - 1]));
        }
    }
    std::fs::write(work.join("empty.yaml"), runbook).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {}\n", pg.url())).unwrap();
    let ws = tmp.path().join("ws");
    let mut runners = Runners::new(
        vec![spawn_runner(
            pg.url(),
            &ws,
            &tmp.path().join("runner.log"),
            TTL_SECS,
            &["--concurrency", "1"],
        )],
        &marks,
        RELEASES,
    );
    let out = run_on_runners(&work.join("empty.yaml"), &home)
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed: 4 done"), "{text}");
    let pwds = std::fs::read_to_string(marks.join("pwds")).unwrap();
    let dirs: std::collections::BTreeSet<&str> = pwds.lines().collect();
    assert_eq!(pwds.lines().count(), 4, "{pwds}");
    assert_eq!(dirs.len(), 1, "one directory for the slot's tasks: {pwds}");
    let slot_dir = PathBuf::from(*dirs.first().unwrap());
    assert!(slot_dir.starts_with(&ws), "{}", slot_dir.display());
    assert!(
        slot_dir.join("left-d").exists(),
        "the last task's files stay"
    );
    assert!(
        !slot_dir.join("left-c").exists(),
        "removed before d started"
    );
    let runner = &mut runners.children[0];
    sigterm(runner.id());
    assert!(runner.wait().unwrap().success());
    assert!(!slot_dir.exists(), "a stopped runner removes its directory");
}
