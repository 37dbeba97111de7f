//! Agent tasks on `fleet runner` workers as agent tasks run here: a task any of several roles
//! may play is claimed by a runner that plays one of them (and never by one that plays none);
//! a task that failed then passed on a runner becomes a lesson in the instance's memory by a
//! retrospective run after the claim ended; and a real agent CLI launched by a runner gets
//! Fleet's MCP tools (`memory_search`) with results that reach the model.
//! Real runner processes, real git, real PostgreSQL; scripted `cli: command` agents, and the
//! pinned claude against the scripted model server.

mod support;
use support::git;
use support::kill::wait_until;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// Writes its task's file; `fixme` writes a wrong one the first time (its check fails).
const DEV: &str = r#"set -e
f="$FLEET_TASK.txt"
if [ "$FLEET_TASK" = fixme ] && [ ! -e "$MARKS/fixme.tried" ]; then touch "$MARKS/fixme.tried"; echo bad > "$f"; else echo good > "$f"; fi
"#;

/// Writes a lesson when handed the story of a task that failed then passed.
const RETRO: &str = r#"set -e
mkdir -p .fleet-out
if grep -q fixme "$FLEET_PROMPT_FILE"; then
  printf '%s' '{"lessons":[{"scope":"project","applies_when":{"words":["fixme"]},"lesson":"fixme.txt must say good on its only line"}]}' > .fleet-out/lessons.json
else
  printf '%s' '{"lessons":[]}' > .fleet-out/lessons.json
fi
"#;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    db: TestDb,
    remote: PathBuf,
    work: PathBuf,
}

impl World {
    fn new(runbook: &str) -> World {
        let db = TestDb::create();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("marks")).unwrap();
        std::fs::write(root.join("dev.sh"), DEV).unwrap();
        std::fs::write(root.join("retro.sh"), RETRO).unwrap();
        let remote = root.join("remote.git");
        git(&root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(&root, &["clone", "-q", remote.to_str().unwrap(), "proj"]);
        let work = root.join("proj");
        std::fs::write(work.join("README.md"), "learning on runners\n").unwrap();
        std::fs::write(work.join("runbook.yaml"), runbook).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "seed"]);
        git(&work, &["push", "-q", "origin", "main"]);
        World {
            _tmp: tmp,
            root,
            db,
            remote,
            work,
        }
    }

    /// A `cli: command` profile running `script` for `roles`.
    fn command(&self, name: &str, script: &str, roles: &str) -> String {
        let d = self.root.display();
        format!(
            "  {name}:\n    cli: command\n    command: \"sh {d}/{script}\"\n    roles: [{roles}]\n    env: {{ MARKS: \"{d}/marks\" }}\n"
        )
    }

    /// An instance home whose fleet.yaml has the store and `agents`.
    fn home(&self, name: &str, agents: &str) -> PathBuf {
        let home = self.root.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let yaml = format!("store: {}\nagents:\n{agents}", self.db.url());
        std::fs::write(home.join("fleet.yaml"), yaml).unwrap();
        home
    }

    fn runner(&self, name: &str, home: &Path, path: Option<&str>) -> Child {
        let mut c = Command::new(FLEET);
        c.args(["runner", "--lease-ttl", "10", "--workspace"])
            .arg(self.root.join(format!("{name}-ws")))
            .env("FLEET_HOME", home)
            .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-test-secret-0001")
            .stdout(std::fs::File::create(self.root.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(self.root.join(format!("{name}.err"))).unwrap());
        if let Some(p) = path {
            c.env("PATH", p);
        }
        c.spawn().unwrap()
    }

    fn logs(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| {
                std::fs::read_to_string(self.root.join(format!("{n}.err"))).unwrap_or_default()
            })
            .collect()
    }

    /// `fleet run runbook.yaml --on-runners` from `home`, within `limit`; its stdout.
    fn run_on_runners(&self, home: &Path, limit: Duration, runners: &[&str]) -> String {
        let out_file = self.root.join("run.out");
        let mut child = Command::new(FLEET)
            .args(["run", "--on-runners"])
            .arg(self.work.join("runbook.yaml"))
            .env("FLEET_HOME", home)
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_until(&mut child, Instant::now() + limit);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = std::fs::read_to_string(&out_file).unwrap();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{out}\nrunners:\n{}",
            self.logs(runners)
        );
        out
    }

    fn store(&self) -> PostgresStore {
        PostgresStore::open(self.db.url()).unwrap()
    }

    fn run_id(&self, name: &str) -> String {
        let runs = self.store().runs().unwrap();
        runs.into_iter().find(|r| r.name == name).unwrap().id
    }
}

fn sigterm(procs: &mut Procs) {
    for r in procs.0.iter_mut() {
        // SAFETY: kill(2) on a child of this test.
        unsafe { libc::kill(r.id() as i32, libc::SIGTERM) };
        let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
    }
}

/// `agent: lead` pins a profile playing developer and tester: profiles of either role may
/// play the task too (the engine's pool), so a runner whose only profile is a tester plays
/// it, and a runner with only a docs writer never claims it.
#[test]
fn a_task_open_to_several_roles_goes_to_runners_that_play_any_of_them() {
    let book = "name: roles\ntasks:\n  - { id: one, agent: lead, prompt: \"Write one.txt\", checks: [\"test -s one.txt\"] }\n  - { id: two, agent: lead, prompt: \"Write two.txt\", checks: [\"test -s two.txt\"] }\n  - { id: three, agent: lead, prompt: \"Write three.txt\", checks: [\"test -s three.txt\"] }\n";
    let w = World::new(book);
    let home = w.home("home", &w.command("lead", "dev.sh", "developer, tester"));
    let tester_home = w.home("tester-home", &w.command("qa", "dev.sh", "tester"));
    let docs_home = w.home("docs-home", &w.command("docs", "dev.sh", "docs"));
    let mut procs = Procs(vec![
        w.runner("docs", &docs_home, None),
        w.runner("tester", &tester_home, None),
    ]);
    let out = w.run_on_runners(&home, Duration::from_secs(120), &["docs", "tester"]);
    assert!(out.contains("3 done, 0 failed, 0 skipped"), "{out}");
    let store = w.store();
    let run = w.run_id("roles");
    let started: Vec<u32> = store
        .events(Some(&run), 0, 1000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "task.started")
        .map(|e| {
            let holder = e.data["runner"].as_str().unwrap();
            holder.split(':').nth(1).unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(started.len(), 3);
    let tester = procs.0[1].id();
    assert!(
        started.iter().all(|&p| p == tester),
        "{started:?} vs {tester}"
    );
    let int = store.run(&run).unwrap().unwrap().integration_branch;
    assert_eq!(
        git(&w.remote, &["show", &format!("{int}:two.txt")]),
        "good\n"
    );
    // The tester's own profile played them.
    for e in store.events(Some(&run), 0, 1000).unwrap() {
        if e.kind == "task.sub_run" {
            let sub = e.data["sub_run"].as_str().unwrap();
            let attempts = store.attempts(sub).unwrap();
            assert_eq!(attempts[0].profile.as_deref(), Some("qa"), "{attempts:?}");
        }
    }
    sigterm(&mut procs);
}

/// `fixme` fails its check on a runner, then passes: once the claim ended and the task
/// landed, the runner's retrospective writes a lesson to the instance's memory.
#[test]
fn a_task_that_failed_then_passed_on_a_runner_becomes_a_lesson() {
    let book = "name: learn\ntasks:\n  - id: fixme\n    role: developer\n    prompt: \"Write fixme.txt saying good\"\n    checks: [\"grep -qx good fixme.txt\"]\n";
    let w = World::new(book);
    let agents = format!(
        "{}{}",
        w.command("dev", "dev.sh", "developer"),
        w.command("retro", "retro.sh", "retrospector")
    );
    let home = w.home("home", &agents);
    let runner_home = w.home("runner-home", &agents);
    let mut procs = Procs(vec![w.runner("runner", &runner_home, None)]);
    let out = w.run_on_runners(&home, Duration::from_secs(120), &["runner"]);
    assert!(out.contains("1 done, 0 failed, 0 skipped"), "{out}");
    let run = w.run_id("learn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let lessons = loop {
        let out = Command::new(FLEET)
            .args(["memory", "ls", "--json"])
            .env("FLEET_HOME", &runner_home)
            .output()
            .unwrap();
        let lessons: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
        if lessons.as_array().is_some_and(|l| !l.is_empty()) {
            break lessons;
        }
        assert!(
            Instant::now() < deadline,
            "no lesson: {}",
            w.logs(&["runner"])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let lessons = lessons.as_array().unwrap();
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    assert!(lessons[0]["text"].as_str().unwrap().contains("say good"));
    // Its provenance is the task's sub-run, whose claim had ended before the lesson came.
    let origin = &lessons[0]["provenance"][0];
    assert_eq!(origin["task"], "fixme", "{origin}");
    assert!(
        origin["run"].as_str().unwrap().starts_with(&run),
        "{origin} vs {run}"
    );
    let store = w.store();
    let q = store.queue().unwrap().queued(&run).unwrap();
    assert_eq!(q[0].state, "done");
    assert!(
        w.logs(&["runner"])
            .contains("retrospective of fixme: 1 lesson written")
    );
    sigterm(&mut procs);
}

/// A real claude launched by a runner calls `memory_search` on Fleet's MCP server (the
/// runner instance's `fleet mcp`), and the lesson it finds reaches the model's next request.
#[test]
fn a_real_claude_on_a_runner_searches_memory_over_mcp() {
    let server = fleet_testkit::ModelServer::start();
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new()
            .tool("memory_search", json!({"query": "how are prices stored"}))
            .write_file("done.txt", "done\n"),
    );
    let book = "name: mcp\ntasks:\n  - id: work\n    role: developer\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n";
    let w = World::new(book);
    let bin = fleet_testkit::agent_bin_dir().display().to_string();
    let path = format!("{bin}:/usr/local/bin:/usr/bin:/bin");
    let agents = format!(
        "  dev-claude:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [developer]\n    account: anthropic\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\naccounts:\n  anthropic: {{ secrets: [CLAUDE_CODE_OAUTH_TOKEN], daily_budget_usd: 100 }}\n",
        server.base_url("developer")
    );
    let home = w.home("home", &agents);
    let runner_home = w.home("runner-home", &agents);
    let added = Command::new(FLEET)
        .args([
            "memory",
            "add",
            "Shop prices are integers in cents, never floats.",
            "--json",
        ])
        .env("FLEET_HOME", &runner_home)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let id = serde_json::from_slice::<Value>(&added.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut procs = Procs(vec![w.runner("runner", &runner_home, Some(&path))]);
    let offers = std::fs::read_to_string(w.root.join("runner.out")).unwrap_or_default();
    let out = w.run_on_runners(&home, Duration::from_secs(180), &["runner"]);
    assert!(
        out.contains("1 done, 0 failed, 0 skipped"),
        "{out}\n{offers}"
    );
    let requests = server.requests("developer");
    let with_lesson: Vec<_> = requests
        .iter()
        .filter(|r| r.contains("integers in cents"))
        .collect();
    assert!(
        !with_lesson.is_empty(),
        "the search result reached the model: {}",
        w.logs(&["runner"])
    );
    assert!(with_lesson[0].contains(&id));
    for r in &with_lesson {
        assert!(r.contains("tool_result"), "the lesson came another way");
    }
    sigterm(&mut procs);
}
