//! `store: postgres://…` in fleet.yaml is honoured: the real binary writes to PostgreSQL (a
//! fresh database per test) and makes no `.fleet/fleet.db`; an unreachable store is an error
//! with its reason and exit 4, never a quiet fallback to the file.

mod support;
use support::git;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// An instance whose fleet.yaml is only `store: <url>`, holding a repository with a runbook.
fn instance(store: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let repo = home.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {store}\n")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(
        repo.join("runbook.yaml"),
        "name: pg\ntasks:\n  - id: a\n    command: echo a > a.txt\n  - id: b\n    depends_on: [a]\n    command: echo b > b.txt\n",
    )
    .unwrap();
    (dir, home, repo)
}

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(FLEET)
        .current_dir(dir)
        .args(args)
        .env_remove("FLEET_HOME")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_postgres_store_in_fleet_yaml_gets_the_writes_and_no_sqlite_file_is_made() {
    let db = TestDb::create();
    let (_dir, home, repo) = instance(db.url());
    let out = fleet(&repo, &["run", "runbook.yaml", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !home.join(".fleet/fleet.db").exists(),
        "the SQLite file was written instead of PostgreSQL"
    );
    let store = PostgresStore::open(db.url()).unwrap();
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].state, "passed");
    let states: Vec<String> = store
        .tasks(&runs[0].id)
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, ["merged", "merged"]);
    assert!(!store.events(Some(&runs[0].id), 0, 1000).unwrap().is_empty());
    // Readers use the same store.
    let out = fleet(&repo, &["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], runs[0].id.as_str());
}

#[test]
fn an_unreachable_store_is_an_error_with_exit_4_and_no_fallback() {
    // Nothing listens on port 1.
    let (_dir, home, repo) = instance("postgres://postgres@127.0.0.1:1/fleet");
    let out = fleet(&repo, &["run", "runbook.yaml", "--quiet"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("cannot reach the store at postgres://postgres@127.0.0.1:1/fleet"),
        "{err}"
    );
    // The cause, not only the client's "error connecting to server".
    assert!(err.contains("refused"), "{err}");
    assert!(
        !home.join(".fleet/fleet.db").exists(),
        "fell back to SQLite"
    );
    let out = fleet(&repo, &["runs"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn a_database_that_does_not_exist_is_named_in_the_error() {
    let db = TestDb::create();
    let url = db
        .url()
        .replace(db.name(), &format!("{}_missing", db.name()));
    let (_dir, _home, repo) = instance(&url);
    let out = fleet(&repo, &["runs"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    // The server's own words, not the client's bare "db error".
    assert!(
        err.contains(&format!(
            "database \"{}_missing\" does not exist",
            db.name()
        )),
        "{err}"
    );
}
