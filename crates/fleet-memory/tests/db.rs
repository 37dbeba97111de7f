//! The memory store on a real SQLite file: FTS5 search, redaction, merging, caps,
//! forgetting, injections and their outcomes.

use fleet_memory::rules::{Policy, TaskContext};
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
use fleet_secrets::Redactor;

const DAY: i64 = 24 * 60 * 60 * 1000;

fn open(dir: &tempfile::TempDir) -> MemoryDb {
    MemoryDb::open(&dir.path().join(".fleet/memory.db"), Redactor::new([])).unwrap()
}

fn lesson(scope: Scope, text: &str, task: &str, at: i64) -> Lesson {
    Lesson::new(
        scope,
        AppliesWhen::default(),
        text.into(),
        Provenance {
            source: "retrospective".into(),
            run: Some("run-1".into()),
            task: Some(task.into()),
            attempt: Some(2),
            at,
        },
    )
}

#[test]
fn search_ranks_by_bm25_and_reads_any_text_as_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    db.put_document(
        "report",
        "bug-1",
        "Timeout in the payment webhook",
        "The webhook retried forever because the timeout was never set.",
        0,
    )
    .unwrap();
    db.put_document("trace", "t-1", "Task t-1", "Added a README section.", 0)
        .unwrap();
    db.add_lesson(
        lesson(
            Scope::Instance,
            "Set a timeout on every webhook client.",
            "t",
            1,
        ),
        1,
        &Policy::default(),
    )
    .unwrap();
    let hits = db.search("webhook timeout", &[], 10).unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits[0].score >= hits[1].score);
    assert!(hits.iter().all(|h| h.snippet.contains('[')), "{hits:?}");
    let only = db.search("webhook", &["lesson".into()], 10).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].kind, "lesson");
    // FTS5 syntax in the query is text, not syntax; no word at all finds nothing.
    for hostile in [
        "\"",
        "NEAR(",
        "a* OR -",
        "webhook\" OR \"x",
        "'; DROP TABLE lessons; --",
    ] {
        db.search(hostile, &[], 10).unwrap();
    }
    assert!(db.search("  ** ", &[], 10).unwrap().is_empty());
}

#[test]
fn documents_and_lessons_pass_the_redactor() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-of-the-deploy-token";
    let mut db = MemoryDb::open(
        &dir.path().join("m.db"),
        Redactor::new([("DEPLOY_TOKEN".to_string(), secret.to_string())]),
    )
    .unwrap();
    db.put_document("trace", "t", "trace", &format!("curl -H {secret}"), 0)
        .unwrap();
    let added = db
        .add_lesson(
            lesson(Scope::Instance, &format!("use {secret} carefully"), "t", 0),
            0,
            &Policy::default(),
        )
        .unwrap();
    let (_, body) = db.document("trace", "t").unwrap().unwrap();
    assert!(!body.contains(secret), "{body}");
    assert!(!db.lesson(&added.id).unwrap().unwrap().text.contains(secret));
    drop(db);
    let raw = std::fs::read(dir.path().join("m.db")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(secret));
}

#[test]
fn a_near_duplicate_is_merged_keeping_both_provenances() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy::default();
    let first = db
        .add_lesson(
            lesson(
                Scope::Project("web".into()),
                "Run the migrations before the integration tests start.",
                "task-a",
                10,
            ),
            10,
            &p,
        )
        .unwrap();
    let second = db
        .add_lesson(
            lesson(
                Scope::Project("web".into()),
                "Run the migrations before the integration tests start!",
                "task-b",
                20,
            ),
            20,
            &p,
        )
        .unwrap();
    assert_eq!(second.merged_into.as_deref(), Some(first.id.as_str()));
    let kept = db.lesson(&first.id).unwrap().unwrap();
    let tasks: Vec<_> = kept
        .provenance
        .iter()
        .filter_map(|p| p.task.clone())
        .collect();
    assert_eq!(tasks, vec!["task-a", "task-b"]);
    assert_eq!(db.lessons(false).unwrap().len(), 1);
    // Another scope keeps its own copy.
    let other = db
        .add_lesson(
            lesson(
                Scope::Instance,
                "Run the migrations before the integration tests start.",
                "task-c",
                30,
            ),
            30,
            &p,
        )
        .unwrap();
    assert!(other.merged_into.is_none());
}

#[test]
fn a_scope_never_exceeds_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy {
        scope_cap: 3,
        ..Policy::default()
    };
    let topics = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    for (i, t) in topics.iter().enumerate() {
        db.add_lesson(
            lesson(
                Scope::Project("web".into()),
                &format!("{t} lesson number {i} about {t} things"),
                t,
                i as i64,
            ),
            i as i64,
            &p,
        )
        .unwrap();
        let live = db.lessons(false).unwrap();
        assert!(live.len() <= 3, "{}", live.len());
    }
    let archived = db.lessons(true).unwrap();
    assert_eq!(archived.len(), 3);
    assert!(
        archived
            .iter()
            .all(|l| l.archived_why.as_deref().unwrap().contains("cap"))
    );
    // Archived is not deleted, and not searchable.
    assert!(
        db.search("alpha", &["lesson".into()], 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn forgetting_with_an_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy {
        archive_after: 30 * DAY,
        ..Policy::default()
    };
    let t0 = 1_000_000;
    let never = db
        .add_lesson(
            lesson(Scope::Instance, "Never helps anyone at all.", "a", t0),
            t0,
            &p,
        )
        .unwrap()
        .id;
    let useful = db
        .add_lesson(
            lesson(
                Scope::Instance,
                "Quote shell variables in scripts.",
                "b",
                t0,
            ),
            t0,
            &p,
        )
        .unwrap()
        .id;
    // Both injected into attempts over the window; only the second's attempts pass.
    for k in 0..3u32 {
        let at = t0 + (k as i64 + 1) * DAY;
        db.record_injection(std::slice::from_ref(&never), "r", "x", k + 1, at)
            .unwrap();
        db.record_result("r", "x", k + 1, false, at, &p).unwrap();
        db.record_injection(std::slice::from_ref(&useful), "r", "y", k + 1, at)
            .unwrap();
        db.record_result("r", "y", k + 1, true, at, &p).unwrap();
    }
    // A repeated report of the same attempt counts once.
    db.record_result("r", "y", 3, true, t0 + 3 * DAY, &p)
        .unwrap();
    assert_eq!(db.lesson(&useful).unwrap().unwrap().helped, 3);
    assert_eq!(
        db.injections("r", "y", 1).unwrap(),
        vec![(useful.clone(), Some(true))]
    );

    let last = t0 + 3 * DAY;
    let early = db.upkeep(last + 30 * DAY - 1, &p).unwrap();
    assert!(early.archive.is_empty(), "{early:?}");
    // Helped 3 times: proposed to a person as a skill, not promoted.
    assert_eq!(early.propose, vec![useful.clone()]);
    let done = db.upkeep(last + 30 * DAY, &p).unwrap();
    assert_eq!(done.archive.len(), 1, "{done:?}");
    assert_eq!(done.archive[0].0, never);
    let archived = db.lessons(true).unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].id, never);
    assert!(db.lesson(&useful).unwrap().unwrap().archived_at.is_none());
    // A person forgets the other: archived too, still listed.
    db.forget(&useful, last + 31 * DAY).unwrap();
    assert_eq!(db.lessons(true).unwrap().len(), 2);
    assert!(db.lessons(false).unwrap().is_empty());
}

#[test]
fn recall_picks_relevant_lessons_under_the_token_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy::default();
    let mut api = lesson(
        Scope::Project("web".into()),
        "API handlers return errors as JSON objects with a code field.",
        "a",
        0,
    );
    api.applies_when.words = vec!["handler".into()];
    let api = db.add_lesson(api, 0, &p).unwrap().id;
    db.add_lesson(
        lesson(
            Scope::Project("other".into()),
            "API handlers in the other project.",
            "b",
            0,
        ),
        0,
        &p,
    )
    .unwrap();
    db.add_lesson(
        lesson(
            Scope::Project("web".into()),
            "CSS uses tabs for indentation.",
            "c",
            0,
        ),
        0,
        &p,
    )
    .unwrap();
    let ctx = TaskContext {
        text: "Add a handler for the /users API".into(),
        scopes: vec![Scope::Instance, Scope::Project("web".into())],
        role: Some("developer".into()),
        ..TaskContext::default()
    };
    let got = db.recall(&ctx, 0, &p).unwrap();
    assert_eq!(
        got.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![api]
    );
    let tight = Policy {
        inject_tokens: 5,
        ..Policy::default()
    };
    assert!(db.recall(&ctx, 0, &tight).unwrap().is_empty());
}

#[test]
fn each_kind_of_document_stays_under_its_cap_dropping_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let cap = fleet_memory::db::document_cap("trace") as usize;
    let keys: Vec<String> = (0..cap).map(|i| format!("r/t{i:06}")).collect();
    let dropped = db
        .put_documents(
            keys.iter().map(|k| ("trace", k.as_str(), "t", "a trace")),
            1,
        )
        .unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    db.put_document("decision", "e1", "log", "a decision", 1)
        .unwrap();
    // One more trace, newer: the oldest trace goes, nothing of another kind does.
    let dropped = db
        .put_document("trace", "r/new", "t", "the newest trace", 2)
        .unwrap();
    assert_eq!(dropped, vec!["r/t000000".to_string()]);
    assert!(db.document("trace", "r/t000000").unwrap().is_none());
    assert!(db.document("trace", "r/new").unwrap().is_some());
    assert!(db.document("decision", "e1").unwrap().is_some());
    let hits = db.search("newest", &["trace".into()], 5).unwrap();
    assert_eq!(hits.len(), 1);
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

#[test]
fn an_unrelated_task_gets_no_lesson_that_only_shares_a_common_word() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let p = Policy::default();
    let scope = Scope::Project("shop".into());
    let mut ids = std::collections::BTreeMap::new();
    for (area, line) in [
        ("billing", "// SPDX-License-Identifier: MIT"),
        ("api", "# owner: team-platform"),
        ("storage", "# reviewed-by: dba"),
        ("ui", "/* i18n: strings go through t() */"),
    ] {
        let mut l = lesson(
            scope.clone(),
            &format!("Every {area} module file must contain the line: {line}"),
            area,
            0,
        );
        l.applies_when.words = vec![area.into()];
        ids.insert(area, db.add_lesson(l, 0, &p).unwrap().id);
    }
    // No "applies when": only its words can relate it to a task.
    let migrations = db
        .add_lesson(
            lesson(
                scope.clone(),
                "Database migrations must be reversible: write the down step too.",
                "m",
                0,
            ),
            0,
            &p,
        )
        .unwrap()
        .id;
    let recall = |text: &str| -> Vec<String> {
        let ctx = TaskContext {
            text: text.into(),
            scopes: vec![Scope::Instance, scope.clone()],
            role: Some("developer".into()),
            ..TaskContext::default()
        };
        db.recall(&ctx, 0, &p)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    // Every area lesson says "module"; only the billing one is about billing.
    assert_eq!(
        recall("Add the billing module t04 in t04.txt."),
        vec![ids["billing"].clone()]
    );
    // A trigger counts whatever its length.
    assert_eq!(
        recall("Add the ui module t07 in t07.txt."),
        vec![ids["ui"].clone()]
    );
    // One shared word ("write") is not a relation; two distinctive ones are.
    assert_eq!(
        recall("Write the release notes for version 2"),
        Vec::<String>::new()
    );
    assert_eq!(
        recall("Add a reversible database migration for the users table"),
        vec![migrations]
    );
}

#[test]
fn a_store_kept_open_ranks_by_the_counts_after_another_process_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let fill = |db: &mut MemoryDb, from: usize, n: usize, with_zeta: usize| {
        let docs: Vec<(String, String)> = (from..from + n)
            .map(|i| {
                let zeta = if i - from < with_zeta { " zeta" } else { "" };
                (format!("d{i}"), format!("filler text{zeta}"))
            })
            .collect();
        db.put_documents(
            docs.iter()
                .map(|(k, b)| ("report", k.as_str(), "doc", b.as_str())),
            1,
        )
        .unwrap();
    };
    let mut kept = open(&dir);
    // 1,000 documents, 60 of them with "zeta" (6%: too common to count next to a rarer term).
    fill(&mut kept, 0, 999, 60);
    kept.put_document("report", "eta", "eta", "the eta document", 1)
        .unwrap();
    let hits = kept.search("eta zeta", &[], 10).unwrap();
    assert_eq!(hits.len(), 1, "zeta is common: only the eta document");
    // Another process doubles the store: zeta is now 3%, rare enough to count.
    let mut other = open(&dir);
    fill(&mut other, 1000, 1000, 0);
    drop(other);
    let hits = kept.search("eta zeta", &[], 10).unwrap();
    assert_eq!(
        hits.len(),
        10,
        "the kept store still counted 1,000 documents"
    );
    assert_eq!(hits[0].key, "eta");
}
