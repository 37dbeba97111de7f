//! The memory contract (`fleet_memory::contract`) on both backends: the SQLite file in a
//! temporary directory, and PostgreSQL in a fresh database per test on the server
//! `FLEET_TEST_PG_URL` names (default 127.0.0.1:5432, trust auth).

use fleet_memory::MemoryDb;
use fleet_memory::contract::{self, Open};
use fleet_secrets::Redactor;
use fleet_store::contract::pg::TestDb;

/// Runs `check` with an opener on a fresh SQLite file, then on a fresh PostgreSQL database.
fn both(check: impl Fn(Open<'_>)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".fleet/memory.db");
    check(&|r: Redactor| MemoryDb::open(&path, r).unwrap());
    let db = TestDb::create();
    let url = db.url().to_string();
    check(&|r: Redactor| MemoryDb::open_postgres(&url, r).unwrap());
}

#[test]
fn search_ranks_filters_and_reads_any_text_as_words() {
    both(contract::search_ranks_filters_and_reads_any_text_as_words);
}

#[test]
fn a_near_duplicate_is_merged_keeping_both_provenances() {
    both(contract::a_near_duplicate_is_merged_keeping_both_provenances);
}

#[test]
fn a_scope_never_exceeds_its_cap() {
    both(contract::a_scope_never_exceeds_its_cap);
}

#[test]
fn forgetting_with_an_injected_clock() {
    both(contract::forgetting_with_an_injected_clock);
}

#[test]
fn recall_picks_relevant_lessons_under_the_token_cap() {
    both(contract::recall_picks_relevant_lessons_under_the_token_cap);
}

#[test]
fn an_unrelated_task_gets_no_lesson_that_only_shares_a_common_word() {
    both(contract::an_unrelated_task_gets_no_lesson_that_only_shares_a_common_word);
}

#[test]
fn each_kind_of_document_stays_under_its_cap_dropping_the_oldest() {
    both(contract::each_kind_of_document_stays_under_its_cap_dropping_the_oldest);
}

#[test]
fn common_terms_are_judged_on_what_every_writer_wrote() {
    both(contract::common_terms_are_judged_on_what_every_writer_wrote);
}

#[test]
fn a_common_term_only_in_older_documents_is_found() {
    both(contract::a_common_term_only_in_older_documents_is_found);
}

#[test]
fn concurrent_writers_lose_nothing_and_never_overflow_a_cap() {
    both(contract::concurrent_writers);
}

#[test]
fn export_import_round_trips_between_and_within_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (pa, pb) = (TestDb::create(), TestDb::create());
    let file = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |r: Redactor| MemoryDb::open(&p, r).unwrap()
    };
    let pg = |d: &TestDb| {
        let url = d.url().to_string();
        move |r: Redactor| MemoryDb::open_postgres(&url, r).unwrap()
    };
    // SQLite to PostgreSQL, and PostgreSQL to SQLite: moving an instance to a shared store.
    contract::export_import_round_trips(&file(&a), &pg(&pa));
    contract::export_import_round_trips(&pg(&pb), &file(&b));
}

#[test]
fn nothing_stored_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let secret =
        contract::documents_and_lessons_pass_the_redactor(&|r| MemoryDb::open(&path, r).unwrap());
    let raw = std::fs::read(&path).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(secret));

    let db = TestDb::create();
    let url = db.url().to_string();
    let secret = contract::documents_and_lessons_pass_the_redactor(&|r| {
        MemoryDb::open_postgres(&url, r).unwrap()
    });
    let url2 = url.clone();
    let dump: String = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url2, postgres::NoTls).unwrap();
        let row = c
            .query_one(
                "SELECT (SELECT coalesce(string_agg(doc, ' '), '') FROM memory_lessons) ||
                        (SELECT coalesce(string_agg(title || body || tsv::text, ' '), '')
                         FROM memory_documents)",
                &[],
            )
            .unwrap();
        row.get(0)
    })
    .join()
    .unwrap();
    assert!(
        dump.contains("REDACTED") || dump.contains("redacted"),
        "{dump}"
    );
    assert!(!dump.contains(secret), "{dump}");
}

#[test]
fn an_unreachable_server_is_an_error_naming_it_without_its_password() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let url = format!("postgres://fleet:hunter2@127.0.0.1:{port}/fleet");
    let err = MemoryDb::open_postgres(&url, Redactor::new([]))
        .err()
        .expect("unreachable")
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
