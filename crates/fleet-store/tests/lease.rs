//! A held `Lease` whose renewals keep failing gives itself up while some of its TTL is left,
//! before another process may take it over: its holder can no longer tell whether it still
//! holds it. And one that another holder took says so at once when asked (`still_held`).

use fleet_store::{Durability, Lease, SqliteStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.join("fleet.db"), Durability::Process).unwrap())
}

#[test]
fn a_lease_whose_renewals_fail_is_lost_before_its_ttl_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let ttl = Duration::from_secs(3);
    let lease = Lease::try_take(store.clone(), "epic/e1", ttl)
        .unwrap()
        .expect("free");
    // Renewals that work keep it: several TTLs pass.
    std::thread::sleep(ttl * 2);
    assert!(!lease.is_lost());
    assert!(lease.watch().still_held());

    // From now on every renewal fails (the store cannot reach its lease table).
    let broke = Instant::now();
    let db = rusqlite::Connection::open(dir.path().join("fleet.db")).unwrap();
    db.execute_batch("ALTER TABLE leases RENAME TO leases_away")
        .unwrap();
    while !lease.is_lost() {
        assert!(
            broke.elapsed() < ttl,
            "still held after its renewals failed for the whole TTL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Lost for good, whatever the store says later.
    db.execute_batch("ALTER TABLE leases_away RENAME TO leases")
        .unwrap();
    std::thread::sleep(ttl / 2);
    assert!(lease.is_lost());
    assert!(!lease.watch().still_held());
}

#[test]
fn a_lease_another_holder_took_is_not_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let lease = Lease::try_take(store.clone(), "epic/e1", Duration::from_secs(30))
        .unwrap()
        .expect("free");
    let watch = lease.watch();
    assert!(watch.still_held());
    store
        .release_lease("epic/e1", lease.holder().as_str())
        .unwrap();
    assert!(
        store
            .acquire_lease("epic/e1", "replica-b:1:1:0", Duration::from_secs(30))
            .unwrap()
    );
    assert!(!watch.still_held());
    assert!(lease.is_lost());
    drop(lease);
    // Giving up a lost lease leaves the new holder's alone.
    assert_eq!(
        store.lease("epic/e1").unwrap().map(|l| l.holder).as_deref(),
        Some("replica-b:1:1:0")
    );
}
