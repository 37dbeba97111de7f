//! The task queue's contract (`fleet_store::contract::queue`) on each backend: PostgreSQL has
//! one (a fresh database per test), SQLite says it has none.

use fleet_store::contract::{pg::TestDb, queue};
use fleet_store::{PostgresStore, SqliteStore, Store};
use std::sync::Arc;

fn pg(db: &TestDb) -> Arc<dyn Store> {
    Arc::new(PostgresStore::open(db.url()).unwrap())
}

#[test]
fn postgres_queue() {
    let db = TestDb::create();
    queue::queue(&*pg(&db));
}

#[test]
fn postgres_finish_and_claim() {
    let db = TestDb::create();
    queue::finish_and_claim(&*pg(&db));
}

#[test]
fn postgres_concurrent_claims_take_each_task_once() {
    let db = TestDb::create();
    let stores: Vec<Arc<dyn Store>> = (0..4).map(|_| pg(&db)).collect();
    queue::concurrent_claims(&stores);
}

#[test]
fn sqlite_has_no_queue() {
    queue::has_no_queue(&SqliteStore::in_memory().unwrap());
}

#[test]
fn postgres_runs_close_once() {
    let db = TestDb::create();
    let stores: Vec<Arc<dyn Store>> = (0..4).map(|_| pg(&db)).collect();
    queue::runs_close_once(&stores);
}

#[test]
fn postgres_needs_of_alternatives_are_met_by_any() {
    let db = TestDb::create();
    queue::any_of_needs(&*pg(&db));
}

#[test]
fn postgres_cancelled_runs_are_not_claimed_and_their_holders_learn_it() {
    let db = TestDb::create();
    queue::cancel(&*pg(&db));
}
