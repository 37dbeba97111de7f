//! A lesson that kept helping is proposed as a skill, and only a person makes it one:
//! `fleet memory proposals | approve | dismiss`, the real binary over a real instance, the
//! helping recorded through the memory file's own API (as the engine records it).

mod support;
use support::git;

use fleet_memory::{MemoryDb, Policy};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(FLEET)
        .current_dir(dir)
        .args(args)
        .env_remove("FLEET_HOME")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = fleet(dir, args);
    assert!(
        out.status.success(),
        "fleet {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

fn instance() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "init"]);
    ok(repo, &["init", "."]);
    dir
}

fn db(home: &Path) -> MemoryDb {
    MemoryDb::open(
        &home.join(".fleet").join("memory.db"),
        fleet_secrets::Redactor::new(Vec::new()),
    )
    .unwrap()
}

/// Injects the lesson into `times` attempts that each passed.
fn helps(home: &Path, id: &str, times: u32, now: i64) {
    let mut db = db(home);
    for a in 1..=times {
        db.record_injection(&[id.to_string()], "run-1", "t", a, now)
            .unwrap();
        db.record_result("run-1", "t", a, true, now, &Policy::default())
            .unwrap();
    }
}

fn add(home: &Path, text: &str) -> String {
    let added = json(
        home,
        &[
            "memory",
            "add",
            text,
            "--role",
            "developer",
            "--word",
            "migration",
            "--json",
        ],
    );
    added["id"].as_str().unwrap().to_string()
}

#[test]
fn a_lesson_that_kept_helping_is_proposed_and_a_person_approves_or_dismisses_it() {
    let dir = instance();
    let home = dir.path();
    let k = Policy::default().promote_after;
    let keep = add(home, "Write every SQL migration so it can run twice.");
    let drop = add(home, "Name feature flags after the ticket they ship.");
    let now = 1_800_000_000_000;
    helps(home, &keep, k, now);
    helps(home, &drop, k, now);

    // Nothing is proposed before upkeep, and nothing becomes a skill without a person.
    assert_eq!(
        json(home, &["memory", "proposals", "--json"]),
        Value::Array(vec![])
    );
    let done = db(home).upkeep(now, &Policy::default()).unwrap();
    let mut proposed = done.propose.clone();
    proposed.sort();
    let mut both = vec![keep.clone(), drop.clone()];
    both.sort();
    assert_eq!(proposed, both);
    assert!(
        !home.join("skills").exists(),
        "upkeep wrote a skill by itself"
    );

    let listed = json(home, &["memory", "proposals", "--json"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == keep.as_str())
        .expect("the helpful lesson is listed");
    assert_eq!(row["helped"], k);
    assert!(ok(home, &["memory", "proposals"]).contains(&format!("helped {k} of {k}")));

    // Approved: the skill file is written, and the skill loader reads it.
    let out = ok(
        home,
        &["memory", "approve", &keep, "--name", "sql-migrations"],
    );
    let path = home.join("skills").join("sql-migrations.md");
    assert!(out.contains("sql-migrations.md"), "{out}");
    let lib = fleet_config::Library::load(Some(home)).unwrap();
    let skill = lib
        .skill("sql-migrations")
        .expect("the loader reads the approved skill");
    assert!(
        skill
            .body
            .contains("Write every SQL migration so it can run twice.")
    );
    assert_eq!(skill.roles, vec!["developer".to_string()]);
    assert!(skill.applies_to("developer") && !skill.applies_to("reviewer"));
    let shown = json(home, &["memory", "show", &keep, "--json"]);
    assert_eq!(shown["promoted_to"], "sql-migrations");
    assert!(
        shown["archived_at"].is_i64(),
        "a promoted lesson is not injected twice"
    );

    // A second approve refuses (exit 2) and leaves the file as it was.
    let before = std::fs::read_to_string(&path).unwrap();
    let again = fleet(
        home,
        &["memory", "approve", &keep, "--name", "sql-migrations"],
    );
    assert_eq!(again.status.code(), Some(2));
    // Nor does another proposal get written over an existing skill.
    let clash = fleet(
        home,
        &["memory", "approve", &drop, "--name", "sql-migrations"],
    );
    assert_eq!(clash.status.code(), Some(2));
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let bad = fleet(home, &["memory", "approve", &drop, "--name", "../escape"]);
    assert_eq!(bad.status.code(), Some(2));

    // Dismissed: gone from the proposals, still a lesson, never proposed again.
    ok(home, &["memory", "dismiss", &drop]);
    assert_eq!(
        json(home, &["memory", "proposals", "--json"]),
        Value::Array(vec![])
    );
    helps(home, &drop, 1, now + 1);
    let later = db(home).upkeep(now + 2, &Policy::default()).unwrap();
    assert!(later.propose.is_empty(), "{:?}", later.propose);
    assert_eq!(
        json(home, &["memory", "proposals", "--json"]),
        Value::Array(vec![])
    );
    let live = json(home, &["memory", "ls", "--json"]);
    assert!(
        live.as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == drop.as_str())
    );
    assert_eq!(
        fleet(home, &["memory", "dismiss", &drop]).status.code(),
        Some(2)
    );
    assert_eq!(
        std::fs::read_dir(home.join("skills")).unwrap().count(),
        1,
        "only the approved skill is in skills/"
    );
}
