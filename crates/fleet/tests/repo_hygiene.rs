//! A repository that a dead git or Fleet left in a bad state, or that two Fleets use at once,
//! still works: half-made worktree entries, folders holding only `.git` and stale locks are
//! repaired, two `fleet run` started together both pass, and two instances never build on
//! each other's branches. The real binary, real git, real SQLite.

mod support;
use support::{fleet_branch, git};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// A diamond of worktree tasks, each appending its line once: a task's effect applied twice
/// shows as a doubled line.
const RUNBOOK: &str = r#"
name: hygiene
concurrency: 3
tasks:
  - id: base
    command: "mkdir -p out && echo base >> out/base.txt"
  - id: left
    depends_on: [base]
    command: "echo left >> out/left.txt"
  - id: right
    depends_on: [base]
    command: "echo right >> out/right.txt"
  - id: join
    depends_on: [left, right]
    command: "cat out/left.txt out/right.txt >> out/join.txt"
"#;

fn repo_with(runbook: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().canonicalize().unwrap().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(repo.join("runbook.yaml"), runbook).unwrap();
    (dir, repo)
}

fn fleet_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(FLEET);
    c.current_dir(dir).args(args).env_remove("FLEET_HOME");
    c
}

fn fleet(dir: &Path, args: &[&str]) -> Output {
    fleet_cmd(dir, args).output().unwrap()
}

fn assert_code(out: &Output, code: i32) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A run's summary says why its tasks failed.
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|p| std::fs::read_to_string(p.trim()).ok())
        .unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}\n{summary}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs git and returns whether it succeeded, with its output.
fn try_git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn runs(repo: &Path) -> Vec<Value> {
    let out = fleet(repo, &["runs", "--json"]);
    assert_code(&out, 0);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn events(repo: &Path, run: &str) -> Vec<Value> {
    std::fs::read_to_string(repo.join(".fleet/runs").join(run).join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every task of `RUNBOOK` landed once on the run's branch; the repository is clean.
fn assert_landed_once(repo: &Path, run: &str) {
    let branch = fleet_branch(repo, "runs", run);
    let show = |f: &str| git(repo, &["show", &format!("{branch}:out/{f}")]);
    assert_eq!(show("base.txt"), "base\n");
    assert_eq!(show("left.txt"), "left\n");
    assert_eq!(show("right.txt"), "right\n");
    assert_eq!(show("join.txt"), "left\nright\n");
}

fn assert_repository_clean(repo: &Path) {
    let list = git(repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(list.matches("worktree ").count(), 1, "{list}");
    let (ok, fsck) = try_git(repo, &["fsck", "--no-progress"]);
    assert!(ok, "{fsck}");
    let mut locks = Vec::new();
    let mut stack = vec![repo.join(".git")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "lock") {
                locks.push(e.path());
            }
        }
    }
    assert!(locks.is_empty(), "git locks left: {locks:?}");
}

/// Makes `path` look as if a process that died a minute ago left it.
fn age(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// What a `git worktree add` killed with its Fleet leaves, for worktree `name`: the entry
/// locked as "initializing", an empty `commondir`, and the folder holding only `.git`.
fn half_made_entry(repo: &Path, name: &str) -> (PathBuf, PathBuf) {
    let entry = repo.join(".git/worktrees").join(name);
    let folder = repo.join(".fleet/worktrees/old-run").join(name);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(entry.join("locked"), "initializing\n").unwrap();
    std::fs::write(entry.join("commondir"), "").unwrap();
    let gitdir = format!("{}\n", folder.join(".git").display());
    std::fs::write(entry.join("gitdir"), gitdir).unwrap();
    std::fs::write(
        folder.join(".git"),
        format!("gitdir: {}\n", entry.display()),
    )
    .unwrap();
    (entry, folder)
}

#[test]
fn a_half_made_worktree_entry_left_by_a_dead_fleet_is_repaired_before_the_run() {
    let (_tmp, repo) = repo_with(RUNBOOK);
    // What a `git worktree add` killed with its Fleet leaves: the entry locked as
    // "initializing", an empty `commondir`, and the folder holding only `.git`.
    let (entry, folder) = half_made_entry(&repo, "t1");
    let (ok, why) = try_git(&repo, &["worktree", "list"]);
    assert!(
        !ok && why.contains("commondir"),
        "every worktree command fails: {why}"
    );

    let out = fleet(&repo, &["run", "runbook.yaml", "-q"]);
    assert_code(&out, 0);
    let run = runs(&repo)[0]["id"].as_str().unwrap().to_string();
    assert_landed_once(&repo, &run);
    assert_repository_clean(&repo);
    assert!(!entry.exists() && !folder.exists());
    let started = events(&repo, &run)
        .into_iter()
        .find(|e| e["kind"] == "run.started")
        .unwrap();
    let repaired = started["data"]["repaired_repository"].to_string();
    assert!(
        repaired.contains("worktree entry t1"),
        "the run says what it repaired: {started}"
    );
}

#[test]
fn a_worktree_folder_left_holding_only_dot_git_does_not_fail_its_task() {
    let (tmp, repo) = repo_with("");
    let mark = tmp.path().join("killed-once");
    // `left` kills its Fleet the first time: a crash in the middle of the run.
    // One task at a time: nothing else is half done when the kill comes.
    let runbook = RUNBOOK.replace("concurrency: 3", "concurrency: 1").replace(
        "command: \"echo left >> out/left.txt\"",
        &format!(
            "command: \"if [ ! -e {m} ]; then touch {m}; kill -9 $PPID; sleep 1; exit 1; fi; echo left >> out/left.txt\"",
            m = mark.display()
        ),
    );
    std::fs::write(repo.join("runbook.yaml"), runbook).unwrap();
    let out = fleet(&repo, &["run", "runbook.yaml", "-q"]);
    assert_eq!(out.status.code(), None, "killed: {out:?}");
    let run = runs(&repo)[0]["id"].as_str().unwrap().to_string();
    // As if the kill came while `git worktree add` made `left`'s worktree: its entry is gone
    // and its folder holds only `.git`.
    let folder = repo.join(".fleet/worktrees").join(&run).join("left");
    let gitdir = std::fs::read_to_string(folder.join(".git")).unwrap();
    let gitdir = PathBuf::from(gitdir.trim().strip_prefix("gitdir: ").unwrap());
    std::fs::remove_dir_all(&gitdir).unwrap();
    for e in std::fs::read_dir(&folder).unwrap().flatten() {
        if e.file_name() != ".git" {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    let out = fleet(&repo, &["run", "--resume", &run, "-q"]);
    assert_code(&out, 0);
    assert_landed_once(&repo, &run);
    assert_repository_clean(&repo);
}

#[test]
fn a_stale_packed_refs_lock_is_removed_and_the_users_git_works_again() {
    let (_tmp, repo) = repo_with(RUNBOOK);
    git(&repo, &["branch", "mine"]);
    git(&repo, &["pack-refs", "--all"]);
    // A git killed while rewriting packed-refs left its lock a minute ago.
    let lock = repo.join(".git/packed-refs.lock");
    std::fs::write(&lock, "").unwrap();
    age(&lock);
    let (ok, why) = try_git(&repo, &["branch", "-D", "mine"]);
    assert!(!ok && why.contains("packed-refs.lock"), "{why}");

    let out = fleet(&repo, &["run", "runbook.yaml", "-q"]);
    assert_code(&out, 0);
    assert!(!lock.exists(), "the stale lock is gone");
    let run = runs(&repo)[0]["id"].as_str().unwrap().to_string();
    assert_landed_once(&repo, &run);
    let (ok, why) = try_git(&repo, &["branch", "-D", "mine"]);
    assert!(ok, "the user's own git works again: {why}");
    assert_repository_clean(&repo);
}

#[test]
fn two_runs_started_at_once_on_one_repository_both_pass() {
    let (_tmp, repo) = repo_with(RUNBOOK);
    // Both in the same second, on the same state directory and repository.
    let children: Vec<_> = (0..2)
        .map(|_| {
            fleet_cmd(&repo, &["run", "runbook.yaml", "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert_code(&child.wait_with_output().unwrap(), 0);
    }
    let runs = runs(&repo);
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(r["state"], "passed", "{r}");
        assert_landed_once(&repo, r["id"].as_str().unwrap());
    }
    assert_repository_clean(&repo);
}

/// Plays every role of an epic: `$1` is the role, `$2` the instance's name, written into the
/// work so whose work a branch holds can be seen.
const AGENT: &str = r#"#!/bin/sh
set -e
mkdir -p .fleet-out
case "$1" in
  researcher) echo "context" > .fleet-out/context.md ;;
  architect) echo "architecture" > .fleet-out/architecture.md ;;
  planner) printf '%s' "$PLAN" > .fleet-out/plan.json ;;
  developer) echo "by $2" > w.txt; echo "by $2" > "work-$2.txt" ;;
  reviewer) printf '%s' '{"verdict": "approve", "summary": "fine"}' > .fleet-out/review.json ;;
esac
echo "done as $1"
"#;

/// An instance (its own state directory) of `name` whose agents are [`AGENT`].
fn instance(tmp: &Path, name: &str, repo: &Path) -> PathBuf {
    let home = tmp.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let agent = tmp.join("agent.sh");
    std::fs::write(&agent, AGENT).unwrap();
    let plan = support::epics::plan("build", &[("w", "Add w", &[])]);
    let mut yaml = String::from("agents:\n");
    for role in [
        "researcher",
        "architect",
        "planner",
        "developer",
        "reviewer",
    ] {
        yaml.push_str(&format!(
            "  {role}-sh:\n    cli: command\n    command: \"sh {} {role} {name}\"\n    roles: [{role}]\n    env: {{ PLAN: {} }}\n",
            agent.display(),
            serde_json::to_string(&plan).unwrap()
        ));
    }
    std::fs::write(home.join("fleet.yaml"), yaml).unwrap();
    let out = instance_cmd(&home, repo)
        .args(["project", "add", "shop", "--repo", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    home
}

fn instance_cmd(home: &Path, repo: &Path) -> Command {
    let mut c = Command::new(FLEET);
    c.current_dir(repo).env("FLEET_HOME", home);
    c
}

#[test]
fn two_instances_on_one_repository_never_build_on_each_others_epic_branch() {
    let (tmp, repo) = repo_with("");
    let a = instance(tmp.path(), "alpha", &repo);
    let b = instance(tmp.path(), "beta", &repo);
    for home in [&a, &b] {
        let out = instance_cmd(home, &repo)
            .args(["task", "add", "Add the w file", "--project", "shop"])
            .output()
            .unwrap();
        assert_code(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("epic e1 awaiting_acceptance"), "{text}");
    }
    let branches = git(
        &repo,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/fleet/epics/",
        ],
    );
    let branches: Vec<&str> = branches.lines().collect();
    assert_eq!(
        branches.len(),
        2,
        "one e1 branch per instance: {branches:?}"
    );
    for (mine, theirs) in [("alpha", "beta"), ("beta", "alpha")] {
        let home = if mine == "alpha" { &a } else { &b };
        let show = instance_cmd(home, &repo)
            .args(["task", "show", "e1", "--json"])
            .output()
            .unwrap();
        assert_code(&show, 0);
        let show: Value = serde_json::from_slice(&show.stdout).unwrap();
        let branch = show["branch"].as_str().unwrap().to_string();
        assert!(
            branch.starts_with("fleet/epics/") && branch.ends_with("/e1"),
            "{branch}"
        );
        assert_eq!(
            git(&repo, &["show", &format!("{branch}:w.txt")]),
            format!("by {mine}\n")
        );
        let files = git(&repo, &["ls-tree", "-r", "--name-only", &branch]);
        assert!(files.contains(&format!("work-{mine}.txt")), "{files}");
        assert!(
            !files.contains(&format!("work-{theirs}.txt")),
            "{mine}'s e1 holds {theirs}'s work: {files}"
        );
    }
    assert_repository_clean(&repo);
}

#[test]
fn an_epic_never_builds_on_a_branch_this_instance_did_not_make_for_it() {
    let (tmp, repo) = repo_with("");
    let home = instance(tmp.path(), "alpha", &repo);
    let db = home.join(".fleet/fleet.db");
    // A backup of the database before any epic (no fleet process has it open).
    let backup = tmp.path().join("fleet.db.bak");
    std::fs::copy(&db, &backup).unwrap();
    let add = |request: &str| {
        let out = instance_cmd(&home, &repo)
            .args(["task", "add", request, "--project", "shop"])
            .output()
            .unwrap();
        assert_code(&out, 0);
    };
    add("Add the w file");
    let store = || fleet_store::SqliteStore::open(&db, fleet_store::Durability::Process).unwrap();
    let first = fleet_store::Store::epic(&store(), "e1")
        .unwrap()
        .unwrap()
        .branch;
    // The backup is restored: the next request is `e1` again, of the same instance.
    for f in ["fleet.db-wal", "fleet.db-shm"] {
        let _ = std::fs::remove_file(home.join(".fleet").join(f));
    }
    std::fs::copy(&backup, &db).unwrap();
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "later"]);
    add("Add the w file again");
    let store = store();
    let second = fleet_store::Store::epic(&store, "e1")
        .unwrap()
        .unwrap()
        .branch;
    assert_eq!(second, format!("{first}-2"), "a fresh name");
    // The first e1's branch is as it was; the second holds nothing of it.
    let base = git(&repo, &["rev-parse", "main"]);
    assert_eq!(git(&repo, &["merge-base", &second, "main"]), base);
    assert!(
        !try_git(&repo, &["merge-base", "--is-ancestor", &first, &second]).0,
        "{second} builds on {first}"
    );
    let said = fleet_store::Store::events(&store, Some("e1"), 0, 1000)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "epic.branch_renamed")
        .expect("an epic.branch_renamed event says so");
    assert_eq!(said.data["wanted"], first.as_str());
    assert_eq!(said.data["branch"], second.as_str());
}

#[test]
fn fleet_gc_repairs_what_a_dead_fleet_left_in_the_repository() {
    let (_tmp, repo) = repo_with(RUNBOOK);
    assert_code(&fleet(&repo, &["run", "runbook.yaml", "-q"]), 0);
    let (entry, _) = half_made_entry(&repo, "t9");
    assert!(!try_git(&repo, &["worktree", "list"]).0);

    let out = fleet(&repo, &["gc"]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("repaired: removed the broken worktree entry t9"),
        "{out:?}"
    );
    let (ok, why) = try_git(&repo, &["worktree", "list"]);
    assert!(ok, "{why}");
    assert!(!entry.exists());
}
