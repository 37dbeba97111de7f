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

#[test]
fn postgres_summaries() {
    let db = TestDb::create();
    contract::summaries(&*store(&db));
}

#[test]
fn postgres_opening_a_database_from_before_the_summaries_summarizes_its_epics() {
    let db = TestDb::create();
    let epic = fleet_store::EpicRow {
        id: "e1".into(),
        project: "web".into(),
        state: "done".into(),
        created_at: 7,
        updated_at: 7,
        stages: vec![fleet_store::StageRow {
            stage: "deliver".into(),
            state: "passed".into(),
            finished_at: Some(9),
            ..Default::default()
        }],
        ..Default::default()
    };
    store(&db).save_epic(&epic, &[]).unwrap();
    // Back to the schema before the summaries (version 1; the runners' queue, version 3,
    // and the kept epic counts, version 4, came after them), as an older Fleet left it.
    let mut c = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    c.batch_execute(
        "DROP TABLE epic_summaries; DROP TABLE task_queue; DROP TABLE runners; \
         DROP FUNCTION epic_counts_follow() CASCADE; DROP TABLE epic_counts; \
         UPDATE schema_version SET version = 1",
    )
    .unwrap();
    let summaries = store(&db).epic_summaries().unwrap();
    assert_eq!(summaries, [fleet_store::summarize(&epic)]);
    assert_eq!(summaries[0].delivered_at, Some(9));
}
