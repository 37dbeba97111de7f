//! The optional embeddings (feature `embeddings`) against the scripted model server's
//! deterministic `/v1/embeddings` (a hashed bag of words that folds a few synonyms): a query
//! sharing no word with a lesson finds it only with embeddings on, and an unreachable endpoint
//! degrades search to BM25 without losing a write.
#![cfg(feature = "embeddings")]

use fleet_config::EmbeddingsConfig;
use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
use fleet_secrets::Redactor;
use fleet_testkit::ModelServer;

const LESSON: &str = "Database migrations must be reversible";
/// No word in common with [`LESSON`]; the test server maps schema→database,
/// changes→migrations and rollback→reversible.
const QUERY: &str = "schema changes need a rollback plan";

fn lesson(text: &str) -> Lesson {
    Lesson::new(
        Scope::Instance,
        AppliesWhen::default(),
        text.into(),
        Provenance {
            source: "person".into(),
            run: None,
            task: None,
            attempt: None,
            at: 1,
        },
    )
}

fn open(dir: &tempfile::TempDir) -> MemoryDb {
    MemoryDb::open(&dir.path().join("memory.db"), Redactor::new([])).unwrap()
}

fn config(base_url: String) -> EmbeddingsConfig {
    EmbeddingsConfig {
        base_url,
        model: "hashed-bag".into(),
        key_env: None,
    }
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

#[test]
fn a_query_sharing_no_word_with_a_lesson_finds_it_only_with_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy::default();
    let target = db.add_lesson(lesson(LESSON), 1, &p).unwrap().id;
    db.add_lesson(
        lesson("Format Rust code with rustfmt before committing"),
        2,
        &p,
    )
    .unwrap();
    assert_eq!(
        db.search(QUERY, &[], 10).unwrap(),
        vec![],
        "BM25 alone has no word to match"
    );
    drop(db);

    let server = ModelServer::start();
    let db = open(&dir)
        .with_embeddings(&config(format!("{}/v1", server.url())))
        .unwrap();
    let hits = db.search(QUERY, &[], 10).unwrap();
    assert_eq!(hits.first().map(|h| h.key.as_str()), Some(target.as_str()));
    assert_eq!(hits[0].kind, "lesson");
    assert!(
        db.embedding_warnings().is_empty(),
        "{:?}",
        db.embedding_warnings()
    );
    // Kinds still filter: no report matches.
    assert!(db.search(QUERY, &["report".into()], 10).unwrap().is_empty());
}

#[test]
fn an_unreachable_endpoint_keeps_writes_and_searches_by_bm25_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::default();
    let mut db = open(&dir)
        .with_embeddings(&config(closed_port_url()))
        .unwrap();
    let id = db.add_lesson(lesson(LESSON), 1, &p).unwrap().id;
    assert!(db.lesson(&id).unwrap().is_some(), "the write is kept");
    let warned = db.embedding_warnings();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("search uses BM25 only"), "{warned:?}");

    let hits = db.search("reversible migrations", &[], 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].key, id);
    assert_eq!(db.embedding_warnings().len(), 2, "the search warned too");
    assert!(db.search(QUERY, &[], 10).unwrap().is_empty());
    drop(db);

    // The endpoint is back: the lesson written during the outage gets its vector.
    let server = ModelServer::start();
    let db = open(&dir)
        .with_embeddings(&config(format!("{}/v1", server.url())))
        .unwrap();
    let hits = db.search(QUERY, &[], 10).unwrap();
    assert_eq!(hits.first().map(|h| h.key.as_str()), Some(id.as_str()));
    assert!(db.embedding_warnings().is_empty());
}

#[test]
fn a_missing_key_variable_is_a_warning_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    let mut cfg = config(format!("{}/v1", server.url()));
    cfg.key_env = Some("FLEET_TEST_EMBEDDINGS_KEY_NEVER_SET".into());
    let mut db = open(&dir).with_embeddings(&cfg).unwrap();
    let id = db
        .add_lesson(lesson(LESSON), 1, &Policy::default())
        .unwrap()
        .id;
    assert!(db.lesson(&id).unwrap().is_some());
    let warned = db.embedding_warnings();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("FLEET_TEST_EMBEDDINGS_KEY_NEVER_SET"),
        "{warned:?}"
    );
}

#[test]
fn injection_ranks_by_meaning_with_embeddings_and_keeps_unrelated_lessons_out() {
    use fleet_memory::TaskContext;
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::default();
    let server = ModelServer::start();
    let mut db = open(&dir)
        .with_embeddings(&config(format!("{}/v1", server.url())))
        .unwrap();
    let target = db.add_lesson(lesson(LESSON), 1, &p).unwrap().id;
    for (i, text) in [
        "Format Rust code with rustfmt before committing",
        "Release notes list every user visible change",
        "Screenshots in the docs are PNG files under docs/img",
    ]
    .iter()
    .enumerate()
    {
        db.add_lesson(lesson(text), 2 + i as i64, &p).unwrap();
    }
    let recall = |db: &MemoryDb, text: &str| -> Vec<String> {
        let ctx = TaskContext {
            text: text.into(),
            scopes: vec![Scope::Instance],
            ..TaskContext::default()
        };
        db.recall(&ctx, 10, &p)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    // No word in common: only the embeddings relate the task to the lesson.
    assert_eq!(recall(&db, QUERY), vec![target.clone()]);
    // Nothing close in meaning, nor two distinctive words shared: nothing injected.
    assert_eq!(
        recall(&db, "Translate the login page into German"),
        Vec::<String>::new()
    );
    assert!(db.embedding_warnings().is_empty());
    drop(db);
    // Without embeddings the same task finds nothing (BM25 has no word to match).
    assert_eq!(recall(&open(&dir), QUERY), Vec::<String>::new());
}
