//! The public contract suite (`fleet_store::contract`) on PostgreSQL: a fresh database per
//! test on the server `FLEET_TEST_PG_URL` names (default 127.0.0.1:5432, trust auth).

use fleet_store::contract::{self, pg::TestDb};
use fleet_store::{PostgresStore, Store, StoreError};
use std::sync::Arc;

fn store(db: &TestDb) -> Arc<dyn Store> {
    Arc::new(PostgresStore::open(db.url()).unwrap())
}

#[test]
fn postgres_passes_the_contract() {
    let db = TestDb::create();
    contract::basics(&*store(&db));
    // The data is in the server, not in the handle: a new one sees it, and seqs go on.
    let again = store(&db);
    assert_eq!(
        again.runs().unwrap().len(),
        5,
        "r1, r2 and the three named runs"
    );
    assert_eq!(again.events(Some("r1"), 0, 100).unwrap().len(), 3);
}

#[test]
fn postgres_accounts_and_spend_since() {
    let db = TestDb::create();
    contract::accounts_and_spend_since(&*store(&db));
}

#[test]
fn postgres_leases() {
    let db = TestDb::create();
    contract::leases(&*store(&db));
}

#[test]
fn postgres_concurrent_writers() {
    let db = TestDb::create();
    let stores: Vec<Arc<dyn Store>> = (0..3).map(|_| store(&db)).collect();
    contract::concurrent_writers(&stores);
}

#[test]
fn postgres_wakes_waiters() {
    let db = TestDb::create();
    contract::wakes_waiters(store(&db), store(&db));
}

#[test]
fn handles_opened_at_once_migrate_once() {
    let db = TestDb::create();
    let url = db.url().to_string();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    let s = store(&db);
    assert!(s.meta("instance_id").unwrap().is_some());
}

#[test]
fn refuses_a_database_from_a_newer_fleet() {
    let db = TestDb::create();
    drop(store(&db));
    let mut c = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    c.batch_execute("UPDATE schema_version SET version = 99")
        .unwrap();
    match PostgresStore::open(db.url()) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}
