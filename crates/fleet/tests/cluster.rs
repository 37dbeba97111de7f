//! The cluster at full size (issue #19): one PostgreSQL, two API replicas (`fleet serve`),
//! three `fleet runner` processes with their own workspace roots and instances, and a bare
//! repository as the project's remote. A 60-task DAG is queued with `fleet run --on-runners`
//! while five requests, submitted to the replicas in turn, go through every stage on the
//! runners (`runners: true`: research, plan, implement, review and the review's fix cycle,
//! each agent task a sub-run played with the runners' own `http` profiles against the
//! scripted model). One runner is `kill -9`ed in the middle of a task (a supervisor starts a
//! fresh one, as `Restart=always` would) and another is sent SIGTERM in the middle of one.
//!
//! Every queued task of every run ends done exactly once and is merged exactly once (walked
//! on the remote's branches by its `Fleet-Task:` trailer); the killed runner's task is redone
//! within the lease's TTL + 5 s; the drained runner finishes its task and hands nothing back;
//! each replica's event stream carries every event once, in order.

mod support;
use support::epics::{Instance, scripted_server};
use support::git;
use support::kill::wait_until;
use support::runners::{Runners, pid_of, sigterm};
use support::server::{Http, Served, wait_for};

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
const TTL_SECS: u64 = 2;
const QUICK: usize = 57;
const REQUESTS: [&str; 5] = ["red", "green", "blue", "cyan", "gold"];

/// The runbook: `slow` and `drained` wait for marks, 57 quick tasks in layers, `last` after
/// all of them: 60 tasks, each landing its own file.
fn runbook(marks: &Path) -> String {
    let wait = |mark: &str| {
        format!(
            "while [ ! -e {}/{mark} ]; do sleep 0.05; done",
            marks.display()
        )
    };
    let mut y = String::from("name: cluster\ntasks:\n");
    let mut all = Vec::new();
    for (id, cmd) in [("slow", wait("go-slow")), ("drained", wait("go-drained"))] {
        y += &format!(
            "  - id: {id}\n    command: \"{cmd} && echo {id} $FLEET_ATTEMPT > {id}.txt\"\n"
        );
        all.push(id.to_string());
    }
    for i in 0..QUICK {
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
        "  - id: last\n    depends_on: [{}]\n    command: \"ls *.txt | wc -l > count\"\n    checks: [\"test $(cat count) -eq {}\"]\n",
        all.join(", "),
        QUICK + 2
    );
    y
}

fn fleet_yaml(db: &str, server: &fleet_testkit::ModelServer) -> String {
    let profile = |role: &str| {
        format!(
            "  {role}-http:\n    cli: http\n    model: scripted-{role}\n    roles: [{role}]\n    base_url: \"{}\"\n    stall_timeout: 30s\n",
            server.base_url(role)
        )
    };
    let roles = [
        "researcher",
        "planner",
        "developer",
        "reviewer",
        "architect",
    ];
    format!(
        "store: {db}\nrunners: true\nagents:\n{}",
        roles.map(profile).concat()
    )
}

fn home(dir: PathBuf, yaml: &str) -> PathBuf {
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    dir
}

/// A runner with its own home on the cluster's store (`yaml`) and its own workspace root.
fn spawn_runner(root: &Path, i: usize, yaml: &str) -> Child {
    let h = home(root.join(format!("runner{i}-home")), yaml);
    Command::new(FLEET)
        .args([
            "runner",
            "--lease-ttl",
            &TTL_SECS.to_string(),
            "--grace",
            "60",
        ])
        .arg("--workspace")
        .arg(root.join(format!("runner{i}")))
        .env("FLEET_HOME", &h)
        .stdout(std::fs::File::create(root.join(format!("runner{i}.out"))).unwrap())
        .stderr(std::fs::File::create(root.join(format!("runner{i}.err"))).unwrap())
        .spawn()
        .unwrap()
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
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.task.abort();
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
fn a_full_cluster_lands_every_task_once_through_kill_and_drain() {
    let started = Instant::now();
    let db = TestDb::create();
    let server = scripted_server();
    // The reviewer approves at once: five epics of one cycle each keep the test's wall time
    // within reach of a loaded machine (the fix cycle on runners is in runner_agents.rs).
    let approve = json!({"verdict": "approve", "summary": "all criteria hold"}).to_string();
    server.add_scenario(
        "reviewer",
        fleet_testkit::Scenario::new().shell(format!(
            "mkdir -p .fleet-out && printf '%s' '{approve}' > .fleet-out/review.json"
        )),
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let yaml = fleet_yaml(db.url(), &server);

    git(root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
    git(root, &["clone", "-q", "origin.git", "shop"]);
    let repo = root.join("shop");
    std::fs::write(repo.join("README.md"), "# shop\n").unwrap();
    std::fs::write(repo.join("runbook.yaml"), runbook(&marks)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    git(&repo, &["push", "-q", "origin", "main"]);
    let replica = |name: &str| Instance {
        _tmp: tempfile::tempdir().unwrap(),
        home: home(root.join(name), &yaml),
        repo: repo.clone(),
        remote: root.join("origin.git"),
    };
    let (ia, ib) = (replica("replica-a"), replica("replica-b"));
    let repo_arg = repo.display().to_string();
    ia.ok(&[
        "project",
        "add",
        "shop",
        "--repo",
        &repo_arg,
        "--check",
        "test -s README.md",
    ]);
    let token = ia
        .ok(&["token", "create", "--scope", "submit", "--name", "ci"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let ra = Served::start(&ia, "127.0.0.1", &["--epics", "3"]);
    let rb = Served::start(&ib, "127.0.0.1", &["--epics", "3"]);
    let http = Http::new();
    let sse_a = SseReader::open(&http, format!("{}/api/v1/events?after=0", ra.url));
    let sse_b = SseReader::open(&http, format!("{}/api/v1/events?after=0", rb.url));

    let mut runners = Runners::new(
        (0..3).map(|i| spawn_runner(root, i, &yaml)).collect(),
        &marks,
        &["go-slow", "go-drained"],
    );
    let coordinator = Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(repo.join("runbook.yaml"))
        .env("FLEET_HOME", &ia.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(PostgresStore::open(db.url()).unwrap());
    let run = wait_for(60, "the DAG to be queued", || {
        store
            .runs()
            .unwrap()
            .into_iter()
            .find(|r| r.name == "cluster")
            .map(|r| r.id)
    });
    // The five requests, to the replicas in turn.
    let mut epics = Vec::new();
    for (i, what) in REQUESTS.iter().enumerate() {
        let url = if i % 2 == 0 { &ra.url } else { &rb.url };
        let (s, created) = http.post(
            &format!("{url}/api/v1/tasks"),
            Some(&token),
            json!({"project": "shop", "request": format!("Add the {what} files to the shop")}),
        );
        assert_eq!(s, 201, "{created}");
        epics.push(created["task"]["id"].as_str().unwrap().to_string());
    }

    // Each runner plays one task at a time: `slow` and `drained` are held by two of them.
    let (_, _, slow_holder) = wait_for(60, "slow to be claimed", || {
        claim_of(&*store, &run, "slow").filter(|c| c.0 == "claimed")
    });
    let (_, _, drained_holder) = wait_for(60, "drained to be claimed", || {
        claim_of(&*store, &run, "drained").filter(|c| c.0 == "claimed")
    });
    let index =
        |runners: &Runners, pid: u32| runners.children.iter().position(|c| c.id() == pid).unwrap();
    let killed = index(&runners, pid_of(&slow_holder));
    let drained = index(&runners, pid_of(&drained_holder));
    assert_ne!(killed, drained);

    runners.children[killed].kill().unwrap();
    let killed_at = Instant::now();
    runners.children[killed].wait().unwrap();
    let next = runners.children.len();
    runners.children.push(spawn_runner(root, next, &yaml));
    let (_, _, redo_holder) = wait_for(TTL_SECS + 30, "slow to be claimed again", || {
        claim_of(&*store, &run, "slow").filter(|c| c.1 == 2 && c.0 == "claimed")
    });
    let redone_after = killed_at.elapsed();
    assert_ne!(pid_of(&redo_holder), pid_of(&slow_holder));
    assert!(
        redone_after <= Duration::from_secs(TTL_SECS + 5),
        "redone after {redone_after:?}"
    );

    let drained_pid = runners.children[drained].id();
    sigterm(drained_pid);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(marks.join("go-drained"), "").unwrap();
    let status = wait_until(
        &mut runners.children[drained],
        Instant::now() + Duration::from_secs(60),
    )
    .expect("the drained runner exits");
    assert!(status.success(), "drained runner: {status:?}");
    let out = std::fs::read_to_string(root.join(format!("runner{drained}.out"))).unwrap();
    assert!(out.contains("0 failed, 0 handed back"), "{out}");
    let next = runners.children.len();
    runners.children.push(spawn_runner(root, next, &yaml));
    std::fs::write(marks.join("go-slow"), "").unwrap();

    let out = coordinator.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("60 done, 0 failed, 0 skipped"), "{stdout}");
    for id in &epics {
        wait_for(400, &format!("{id} awaiting acceptance"), || {
            let (_, d) = http.get(&format!("{}/api/v1/tasks/{id}", ra.url), None);
            (d["task"]["state"] == "awaiting_acceptance").then_some(())
        });
    }

    // Every queued task of every run (the DAG and every stage run): done exactly once, and
    // each one that landed is on its run's branch on the remote exactly once.
    let remote = root.join("origin.git");
    let mut queued_runs = 0;
    for r in store.runs().unwrap() {
        let rows = store.queue().unwrap().queued(&r.id).unwrap();
        if rows.is_empty() {
            continue;
        }
        queued_runs += 1;
        assert!(rows.iter().all(|q| q.state == "done"), "{}: {rows:?}", r.id);
        let events = store.events(Some(&r.id), 0, 100_000).unwrap();
        let mut done: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e.kind == "task.done") {
            *done.entry(e.task.clone().unwrap()).or_default() += 1;
        }
        assert_eq!(done.len(), rows.len(), "{}: {done:?}", r.id);
        assert!(done.values().all(|&n| n == 1), "{}: {done:?}", r.id);
        let log = git(&remote, &["log", "--format=%B%x00", &r.integration_branch]);
        for q in rows.iter().filter(|q| q.merge_sha.is_some()) {
            let trailer = format!("Fleet-Task: {}/{}", r.id, q.task_id);
            let n = log.lines().filter(|l| *l == trailer).count();
            assert_eq!(n, 1, "{trailer} on {}", r.integration_branch);
        }
    }
    // The DAG, and research, plan, implement and review of each request at least.
    let expected = 1 + REQUESTS.len() * 4;
    assert!(queued_runs >= expected, "runs on runners: {queued_runs}");
    let int = store.run(&run).unwrap().unwrap().integration_branch;
    assert_eq!(
        git(&remote, &["show", &format!("{int}:slow.txt")]),
        "slow 2\n"
    );
    assert_eq!(claim_of(&*store, &run, "drained").unwrap().1, 1);

    // Every event, on both replicas' streams, once each and in order.
    let every: Vec<u64> = store
        .events(None, 0, 10_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let newest = *every.last().unwrap();
    assert_eq!(every, (1..=newest).collect::<Vec<_>>());
    for (name, sse) in [("a", &sse_a), ("b", &sse_b)] {
        let seen = wait_for(30, &format!("replica {name}'s stream at {newest}"), || {
            let seen = sse.seen.lock().unwrap().clone();
            (seen.last() >= Some(&newest)).then_some(seen)
        });
        assert_eq!(seen[..every.len()], every[..], "replica {name}");
    }
    ra.stop();
    rb.stop();
    for r in runners.children.iter_mut() {
        if r.try_wait().unwrap().is_none() {
            sigterm(r.id());
            let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
        }
    }
    eprintln!(
        "cluster: 60 tasks and requests {epics:?} in {:?}",
        started.elapsed()
    );
}
