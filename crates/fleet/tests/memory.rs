//! `fleet memory`: the real binary over real instances (a real git repository, a real run,
//! real SQLite files).

mod support;
use support::git;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(FLEET)
        .current_dir(dir)
        .args(args)
        .env_remove("FLEET_HOME")
        .env("DEPLOY_API_TOKEN", "tok-4f9c2e7a1b3d5f60")
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

/// An instance in a fresh repository that ran a three-task runbook.
fn instance_with_a_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "init"]);
    ok(repo, &["init", "."]);
    std::fs::write(
        repo.join("runbook.yaml"),
        "name: three\ntasks:\n  - id: a\n    command: echo a > a.txt\n    checks: [test -f a.txt]\n  - id: b\n    command: echo b > b.txt\n    depends_on: [a]\n  - id: c\n    command: echo c > c.txt\n    depends_on: [a, b]\n",
    )
    .unwrap();
    ok(repo, &["run", "runbook.yaml", "--quiet"]);
    dir
}

#[test]
fn lessons_are_added_merged_searched_forgotten_and_listed() {
    let dir = instance_with_a_run();
    let home = dir.path();
    let added = json(
        home,
        &[
            "memory",
            "add",
            "Run make fmt before committing Rust code.",
            "--scope",
            "project:web",
            "--path",
            "src/",
            "--role",
            "developer",
            "--json",
        ],
    );
    let id = added["id"].as_str().unwrap().to_string();
    assert!(added["merged_into"].is_null());
    let twin = json(
        home,
        &[
            "memory",
            "add",
            "Run make fmt before committing Rust code!",
            "--scope",
            "project:web",
            "--json",
        ],
    );
    assert_eq!(twin["merged_into"], Value::String(id.clone()));

    let hits = json(home, &["memory", "search", "fmt committing", "--json"]);
    assert_eq!(hits[0]["kind"], "lesson");
    assert_eq!(hits[0]["key"], Value::String(id.clone()));
    let shown = json(home, &["memory", "show", &id, "--json"]);
    assert_eq!(shown["provenance"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["applies_when"]["paths"], serde_json::json!(["src/"]));

    // A secret never reaches the memory file.
    let secret = json(
        home,
        &[
            "memory",
            "add",
            "Deploys use tok-4f9c2e7a1b3d5f60 as the token.",
            "--json",
        ],
    );
    let text = ok(home, &["memory", "show", secret["id"].as_str().unwrap()]);
    assert!(!text.contains("tok-4f9c2e7a1b3d5f60"), "{text}");

    ok(home, &["memory", "forget", &id]);
    let live = json(home, &["memory", "ls", "--json"]);
    assert_eq!(live.as_array().unwrap().len(), 1);
    let archived = json(home, &["memory", "ls", "--archived", "--json"]);
    assert_eq!(archived[0]["id"], Value::String(id.clone()));
    assert_eq!(archived[0]["archived_why"], "forgotten by a person");
    assert!(
        json(
            home,
            &["memory", "search", "fmt", "--json", "--kind", "lesson"]
        )
        .as_array()
        .unwrap()
        .is_empty()
    );

    // Bad input: exit 2 with a clear message, nothing written.
    for args in [
        &["memory", "add", "x", "--scope", "team"][..],
        &["memory", "search", "x", "--kind", "emails"],
        &["memory", "show", "L-000000000000"],
        &["memory", "forget", "L-000000000000"],
        &["memory", "add", "   "],
    ] {
        let out = fleet(home, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        json(home, &["memory", "ls", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// In a memory of two lessons, SQLite's BM25 gives every word that is in one of them a weight
/// of ~0: the hits are shown relative to the best one, not as 0.00.
#[test]
fn search_shows_each_hit_relative_to_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    git(home, &["init", "--quiet"]);
    ok(home, &["init", "."]);
    ok(
        home,
        &["memory", "add", "Quote shell variables in deploy scripts."],
    );
    ok(
        home,
        &[
            "memory",
            "add",
            "Run database migrations before the deploy.",
        ],
    );
    let text = ok(home, &["memory", "search", "database migrations"]);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("lesson") && first.contains(" 1.00"),
        "{text}"
    );
}

#[test]
fn export_then_import_rebuilds_the_graph_into_an_empty_instance() {
    let dir = instance_with_a_run();
    let home = dir.path();
    ok(home, &["memory", "add", "Quote shell variables.", "--json"]);
    let file = home.join("graph.jsonl");
    // Into a directory that does not exist: exit 2, the path named, nothing made.
    let nowhere = home.join("no-such-dir").join("graph.jsonl");
    let out = fleet(home, &["memory", "export", "-o", nowhere.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--out {}: ", nowhere.display())),
        "{err}"
    );
    assert!(!home.join("no-such-dir").exists());
    ok(home, &["memory", "export", "-o", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = lines
        .iter()
        .find(|l| l["type"] == "task" && l["id"] == "c")
        .expect("task c exported");
    assert_eq!(c["depends_on"], serde_json::json!(["a", "b"]));
    assert_eq!(c["state"], "merged");
    assert!(lines.iter().any(|l| l["type"] == "attempt"));
    assert!(lines.iter().any(|l| l["type"] == "lesson"));

    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["init", "."]);
    ok(other.path(), &["memory", "import", file.to_str().unwrap()]);
    let again = ok(other.path(), &["memory", "export"]);
    assert!(
        again == text,
        "the re-export differs:\n{again}\n---\n{text}"
    );
    // Into an instance that is not empty: refused (exit 2), nothing doubled.
    let out = fleet(other.path(), &["memory", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty instance"));
    assert_eq!(ok(other.path(), &["memory", "export"]), text);
    // A broken file: its line named.
    std::fs::write(home.join("bad.jsonl"), "{\"type\":\"lesson\"}\n").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    ok(fresh.path(), &["init", "."]);
    let out = fleet(
        fresh.path(),
        &["memory", "import", home.join("bad.jsonl").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:1: missing field `id`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An object twice: refused with both lines, nothing imported.
    let lesson = text
        .lines()
        .find(|l| l.contains("\"type\":\"lesson\""))
        .unwrap();
    std::fs::write(home.join("twice.jsonl"), format!("{lesson}\n{lesson}\n")).unwrap();
    let out = fleet(
        fresh.path(),
        &[
            "memory",
            "import",
            home.join("twice.jsonl").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("twice.jsonl:2: lesson ") && err.contains("is already on line 1"),
        "{err}"
    );
    // A token in a file from elsewhere is redacted like any other write.
    let token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let with_token = lesson.replace("Quote shell variables.", &format!("Push with {token}."));
    assert_ne!(with_token, lesson);
    std::fs::write(home.join("token.jsonl"), format!("{with_token}\n")).unwrap();
    ok(
        fresh.path(),
        &[
            "memory",
            "import",
            home.join("token.jsonl").to_str().unwrap(),
        ],
    );
    let listed = ok(fresh.path(), &["memory", "ls", "--json"]);
    assert!(!listed.contains(token), "{listed}");
    assert!(listed.contains("Push with [redacted"), "{listed}");
}
