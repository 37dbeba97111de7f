//! Memory follows the store: two instances (two homes, two processes each time) configured
//! with the same `store: postgres://…` share their lessons, and neither makes a
//! `.fleet/memory.db`; an unreachable store is an error (exit 4), never a local file.

use fleet_store::contract::pg::TestDb;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

fn home(dir: &Path, name: &str, store: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {store}\n")).unwrap();
    home
}

fn fleet(home: &Path, args: &[&str]) -> Output {
    Command::new(FLEET)
        .current_dir(home)
        .args(["--home", home.to_str().unwrap()])
        .args(args)
        .env_remove("FLEET_HOME")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn two_instances_on_one_postgres_store_share_what_they_learn() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        home(dir.path(), "a", db.url()),
        home(dir.path(), "b", db.url()),
    );
    let added: serde_json::Value = serde_json::from_str(&ok(fleet(
        &a,
        &[
            "memory",
            "add",
            "Retry the payment webhook with backoff, never in a tight loop.",
            "--scope",
            "project:shop",
            "--json",
        ],
    )))
    .unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    // Found from the other instance: search ranks it, ls lists it.
    let hits: serde_json::Value = serde_json::from_str(&ok(fleet(
        &b,
        &["memory", "search", "webhook backoff", "--json"],
    )))
    .unwrap();
    assert_eq!(hits[0]["key"], id.as_str(), "{hits}");
    assert_eq!(hits[0]["kind"], "lesson");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(fleet(&b, &["memory", "ls", "--json"]))).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    // The other instance's near-duplicate merges into it, keeping both provenances.
    let merged: serde_json::Value = serde_json::from_str(&ok(fleet(
        &b,
        &[
            "memory",
            "add",
            "Retry the payment webhook with backoff, never in a tight loop!",
            "--scope",
            "project:shop",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(merged["merged_into"], id.as_str());
    // Forgotten in one, archived in both.
    ok(fleet(&b, &["memory", "forget", &id]));
    let archived: serde_json::Value =
        serde_json::from_str(&ok(fleet(&a, &["memory", "ls", "--archived", "--json"]))).unwrap();
    assert_eq!(archived[0]["id"], id.as_str());
    assert_eq!(archived[0]["provenance"].as_array().unwrap().len(), 2);
    for h in [&a, &b] {
        assert!(
            !h.join(".fleet/memory.db").exists(),
            "a local memory file was made"
        );
    }
}

#[test]
fn an_unreachable_store_fails_memory_with_exit_4_and_no_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = home(dir.path(), "a", "postgres://postgres:pw@127.0.0.1:1/fleet");
    let out = fleet(&a, &["memory", "search", "webhook"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && !err.contains(":pw@"),
        "{err}"
    );
    assert!(!a.join(".fleet/memory.db").exists());
}
