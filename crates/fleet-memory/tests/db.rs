//! What only the SQLite memory file has (its FTS5 segments, reopening the file); the
//! behaviour both backends share is the contract (`tests/contract.rs`).

use fleet_memory::MemoryDb;
use fleet_secrets::Redactor;

fn open(dir: &tempfile::TempDir) -> MemoryDb {
    MemoryDb::open(&dir.path().join(".fleet/memory.db"), Redactor::new([])).unwrap()
}

#[test]
fn compacting_the_index_changes_no_result_and_the_count_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    // Many small transactions: many index segments, as single writes leave them.
    for i in 0..1200 {
        let body = format!("entry {i} about {}", ["webhook", "payment", "login"][i % 3]);
        db.put_document("report", &format!("r{i}"), "r", &body, i as i64)
            .unwrap();
    }
    let before = db.search("webhook login", &[], 20).unwrap();
    db.compact().unwrap();
    assert_eq!(db.search("webhook login", &[], 20).unwrap(), before);
    drop(db);
    // A fresh process counts 1,200 documents (past SMALL_STORE, the common-terms rule
    // applies): every term is in a third of them, so only the rarest is searched.
    let db = open(&dir);
    let hits = db.search("webhook payment", &[], 2000).unwrap();
    assert_eq!(hits.len(), 400, "{}", hits.len());
}
