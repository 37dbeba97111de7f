//! The public contract suite (`fleet_store::contract`) on SQLite, in memory and in a file,
//! and what only SQLite has (the file across reopens, WAL, its schema version).

use fleet_store::{Batch, Durability, NewEvent, SqliteStore, Store, StoreError, contract};
use serde_json::json;
use std::sync::Arc;

fn event(run: &str, kind: &str) -> NewEvent {
    NewEvent {
        at: 1,
        run_id: run.into(),
        task: None,
        attempt: None,
        kind: kind.into(),
        data: json!({"k": kind}),
    }
}

#[test]
fn sqlite_in_memory_passes_the_contract() {
    contract::basics(&SqliteStore::in_memory().unwrap());
}

#[test]
fn sqlite_file_passes_the_contract_and_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        contract::basics(&store);
    }
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    assert_eq!(
        store.runs().unwrap().len(),
        5,
        "r1, r2 and the three named runs"
    );
    assert_eq!(store.events(Some("r1"), 0, 100).unwrap().len(), 3);
    // Sequence numbers keep growing after a reopen.
    let last = store.events(None, 0, 100).unwrap().last().unwrap().seq;
    let new = store
        .commit(&Batch {
            events: vec![event("r1", "run.resumed")],
            ..Batch::default()
        })
        .unwrap();
    assert!(new[0] > last);
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn refuses_a_database_from_a_newer_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    drop(SqliteStore::open(&path, Durability::Process).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteStore::open(&path, Durability::Process) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

#[test]
fn sqlite_accounts_and_spend_since() {
    contract::accounts_and_spend_since(&SqliteStore::in_memory().unwrap());
}

#[test]
fn sqlite_leases() {
    contract::leases(&SqliteStore::in_memory().unwrap());
}

/// Two handles on one file stand for two processes.
fn two_handles() -> (tempfile::TempDir, Vec<Arc<dyn Store>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    let open =
        || -> Arc<dyn Store> { Arc::new(SqliteStore::open(&path, Durability::Process).unwrap()) };
    let stores = vec![open(), open()];
    (dir, stores)
}

#[test]
fn sqlite_concurrent_writers() {
    let (_dir, stores) = two_handles();
    contract::concurrent_writers(&stores);
}

#[test]
fn sqlite_wakes_waiters() {
    let (_dir, stores) = two_handles();
    contract::wakes_waiters(stores[0].clone(), stores[1].clone());
    // And a waiter on the writing handle itself.
    let (_dir, stores) = two_handles();
    contract::wakes_waiters(stores[0].clone(), stores[0].clone());
}

#[test]
fn open_picks_the_backend_by_url_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store =
        fleet_store::open(&format!("sqlite:{}", path.display()), Durability::Process).unwrap();
    store
        .commit(&Batch {
            events: vec![event("r", "k")],
            ..Batch::default()
        })
        .unwrap();
    assert!(path.exists(), "sqlite:PATH opens that file");
    for bad in ["mysql://h/db", "fleet.db", "sqlite:", "postgres:/nohost"] {
        match fleet_store::open(bad, Durability::Process) {
            Err(StoreError::UnknownScheme(u)) => assert_eq!(u, bad),
            Err(other) => panic!("{bad}: unexpected error {other}"),
            Ok(_) => panic!("{bad}: must be refused"),
        }
    }
    // Nothing listens on port 1: an error naming the server, not a fallback.
    match fleet_store::open("postgres://postgres@127.0.0.1:1/fleet", Durability::Process) {
        Err(StoreError::Unreachable(at, why)) => {
            assert_eq!(at, "postgres://postgres@127.0.0.1:1/fleet");
            assert!(!why.is_empty());
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("an unreachable server must be an error"),
    }
}

#[test]
fn sqlite_passes_the_summaries_contract() {
    contract::summaries(&SqliteStore::in_memory().unwrap());
}

#[test]
fn opening_a_database_from_before_the_summaries_summarizes_its_epics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    let epic = fleet_store::EpicRow {
        id: "e1".into(),
        project: "web".into(),
        state: "blocked".into(),
        created_at: 7,
        updated_at: 7,
        data: json!({"machine": {"blocked": {"question": "Which database?"}}}),
        ..Default::default()
    };
    {
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        store.save_epic(&epic, &[]).unwrap();
    }
    // Back to the schema before the summaries, as an older Fleet left it.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch("DROP TABLE epic_summaries").unwrap();
        conn.pragma_update(None, "user_version", version - 1)
            .unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let summaries = store.epic_summaries().unwrap();
    assert_eq!(summaries, [fleet_store::summarize(&epic)]);
    assert_eq!(
        summaries[0].blocked_question.as_deref(),
        Some("Which database?")
    );
}
