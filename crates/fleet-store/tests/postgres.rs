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

/// A store call from Tokio's blocking pool (`fleet_store::pg::spawn_blocking`) runs on the
/// pool's thread, with no OS thread started per call; under a runtime started on such a
/// thread, and on a runtime's own thread, on a thread of its own (the client's runtime cannot
/// start inside a running one). Every call really goes to the server.
#[test]
fn store_calls_on_the_blocking_pool_start_no_thread() {
    use fleet_store::pg::{off_runtime, spawn_blocking};
    use std::thread::{ThreadId, current};
    let db = TestDb::create();
    let store = store(&db);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = store.clone();
        let (pool, ran): (ThreadId, ThreadId) = spawn_blocking(move || {
            s.newest_seq().unwrap();
            (current().id(), off_runtime(|| current().id()))
        })
        .await
        .unwrap();
        assert_eq!(pool, ran, "on the blocking pool: no thread of its own");

        let s = store.clone();
        let (pool, ran) = spawn_blocking(move || {
            let inner = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let pool = current().id();
            inner.block_on(async {
                s.newest_seq().unwrap();
                (pool, off_runtime(|| current().id()))
            })
        })
        .await
        .unwrap();
        assert_ne!(
            pool, ran,
            "under a runtime started on a pool thread: a thread of its own"
        );

        store.newest_seq().unwrap();
        let worker = current().id();
        assert_ne!(
            worker,
            off_runtime(|| current().id()),
            "on a worker: a thread of its own"
        );
    });
}

/// A statement text is prepared once per connection and reused (the server parses it once:
/// its prepared statement counts every run), and its results are those of the text sent each
/// time; a connection opened by Fleet plans it for its parameters at every run.
#[test]
fn a_connection_prepares_each_statement_once() {
    let db = TestDb::create();
    let mut c = fleet_store::pg::Conn::open(db.url(), true).unwrap();
    for n in 1..=3i64 {
        let row = c.query_one("SELECT $1::bigint + 1", &[&n]).unwrap();
        assert_eq!(row.get::<_, i64>(0), n + 1);
    }
    let runs = |c: &mut fleet_store::pg::Conn| -> Vec<(i64, i64)> {
        c.query(
            "SELECT custom_plans, generic_plans FROM pg_prepared_statements
             WHERE NOT from_sql AND statement = 'SELECT $1::bigint + 1'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    assert_eq!(runs(&mut c), vec![(3, 0)], "one statement, run three times");
    for n in 4..=7i64 {
        c.query_one("SELECT $1::bigint + 1", &[&n]).unwrap();
    }
    // Past five runs PostgreSQL would settle on a generic plan; this connection never does.
    assert_eq!(runs(&mut c), vec![(7, 0)]);
}
