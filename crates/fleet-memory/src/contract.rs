//! The contract every memory backend passes, public so that SQLite and PostgreSQL (and any
//! new one) run the very same checks. Each function takes an opener: every call returns a
//! new handle (its own connection) on one fresh, empty database, with the redactor given.
//! Enabled by the `contract` feature.

use crate::graph;
use crate::rules::{Policy, TaskContext};
use crate::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
use fleet_secrets::Redactor;

/// A new handle on the test's database.
pub type Open<'a> = &'a (dyn Fn(Redactor) -> MemoryDb + Sync);

const DAY: i64 = 24 * 60 * 60 * 1000;

fn plain(open: Open<'_>) -> MemoryDb {
    open(Redactor::new([]))
}

pub fn lesson(scope: Scope, text: &str, task: &str, at: i64) -> Lesson {
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

/// Ranked, filtered by kind, with passages; any text is a query.
pub fn search_ranks_filters_and_reads_any_text_as_words(open: Open<'_>) {
    let mut db = plain(open);
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
    db.put_document(
        "decision",
        "d-1",
        "Retries",
        "Unrelated: retries are capped.",
        0,
    )
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
    assert!(hits[0].score >= hits[1].score && hits[1].score > 0.0);
    // Both words in the title and the body beat both in the body alone.
    assert_eq!(hits[0].key, "bug-1", "{hits:?}");
    assert!(hits.iter().all(|h| h.snippet.contains('[')), "{hits:?}");
    let only = db.search("webhook", &["lesson".into()], 10).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].kind, "lesson");
    let two = db
        .search("webhook readme", &["trace".into(), "report".into()], 10)
        .unwrap();
    let mut kinds: Vec<_> = two.iter().map(|h| h.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["report", "trace"]);
    // Words in paths and dotted names are words.
    db.put_document(
        "context",
        "c",
        "Layout",
        "Handlers live in src/api/users.rs",
        0,
    )
    .unwrap();
    assert_eq!(db.search("users", &[], 10).unwrap()[0].key, "c");
    // Query syntax of any engine is text; no word at all finds nothing.
    for hostile in [
        "\"",
        "NEAR(",
        "a* OR -",
        "webhook\" OR \"x",
        "'; DROP TABLE lessons; --",
        "!(a & b) | c:*",
        "webhook' | 'x",
    ] {
        db.search(hostile, &[], 10).unwrap();
    }
    assert!(db.search("  ** ", &[], 10).unwrap().is_empty());
    assert_eq!(db.search("webhook", &[], 10).unwrap().len(), 2);
}

/// What is stored never holds a secret the redactor knows. Returns the secret, for the
/// backend's test to look for in its raw storage.
pub fn documents_and_lessons_pass_the_redactor(open: Open<'_>) -> &'static str {
    let secret = "s3cr3t-value-of-the-deploy-token";
    let mut db = open(Redactor::new([(
        "DEPLOY_TOKEN".to_string(),
        secret.to_string(),
    )]));
    db.put_document(
        "trace",
        "t",
        &format!("trace {secret}"),
        &format!("curl -H {secret}"),
        0,
    )
    .unwrap();
    let mut l = lesson(Scope::Instance, &format!("use {secret} carefully"), "t", 0);
    l.applies_when.words = vec![secret.into()];
    let added = db.add_lesson(l, 0, &Policy::default()).unwrap();
    let (title, body) = db.document("trace", "t").unwrap().unwrap();
    assert!(
        !body.contains(secret) && !title.contains(secret),
        "{title} {body}"
    );
    let stored = db.lesson(&added.id).unwrap().unwrap();
    assert!(!stored.text.contains(secret));
    assert!(!stored.applies_when.words.concat().contains(secret));
    assert!(db.search("s3cr3t", &[], 10).unwrap().is_empty());
    secret
}

pub fn a_near_duplicate_is_merged_keeping_both_provenances(open: Open<'_>) {
    let mut db = plain(open);
    let p = Policy::default();
    let web = Scope::Project("web".into());
    let text = "Run the migrations before the integration tests start.";
    let first = db
        .add_lesson(lesson(web.clone(), text, "task-a", 10), 10, &p)
        .unwrap();
    let second = db
        .add_lesson(
            lesson(web.clone(), &text.replace('.', "!"), "task-b", 20),
            20,
            &p,
        )
        .unwrap();
    assert_eq!(second.merged_into.as_deref(), Some(first.id.as_str()));
    // Read through another handle: the merge is in the database, not in a cache.
    let other = plain(open);
    let kept = other.lesson(&first.id).unwrap().unwrap();
    let tasks: Vec<_> = kept
        .provenance
        .iter()
        .filter_map(|p| p.task.clone())
        .collect();
    assert_eq!(tasks, vec!["task-a", "task-b"]);
    assert_eq!(other.lessons(false).unwrap().len(), 1);
    // Another scope keeps its own copy; the same lesson twice is refused.
    let own = db
        .add_lesson(lesson(Scope::Instance, text, "task-c", 30), 30, &p)
        .unwrap();
    assert!(own.merged_into.is_none());
    let mut again = lesson(Scope::Instance, "Something else entirely here", "x", 30);
    again.id = own.id.clone();
    assert!(db.add_lesson(again, 30, &p).is_err());
}

pub fn a_scope_never_exceeds_its_cap(open: Open<'_>) {
    let mut db = plain(open);
    let p = Policy {
        scope_cap: 3,
        ..Policy::default()
    };
    let topics = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    for (i, t) in topics.iter().enumerate() {
        let text = format!("{t} lesson number {i} about {t} things");
        let at = i as i64;
        db.add_lesson(lesson(Scope::Project("web".into()), &text, t, at), at, &p)
            .unwrap();
        assert!(db.lessons(false).unwrap().len() <= 3);
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
    assert_eq!(db.all_lessons().unwrap().len(), 6);
}

/// Injections and their outcomes, decay and archiving by an injected clock, proposals, and
/// a person forgetting.
pub fn forgetting_with_an_injected_clock(open: Open<'_>) {
    let mut db = plain(open);
    let p = Policy {
        archive_after: 30 * DAY,
        ..Policy::default()
    };
    let t0 = 1_000_000;
    let add = |db: &mut MemoryDb, text: &str, task: &str| {
        db.add_lesson(lesson(Scope::Instance, text, task, t0), t0, &p)
            .unwrap()
            .id
    };
    let never = add(&mut db, "Never helps anyone at all.", "a");
    let useful = add(&mut db, "Quote shell variables in scripts.", "b");
    for k in 0..3u32 {
        let at = t0 + (k as i64 + 1) * DAY;
        db.record_injection(std::slice::from_ref(&never), "r", "x", k + 1, at)
            .unwrap();
        db.record_result("r", "x", k + 1, false, at, &p).unwrap();
        db.record_injection(std::slice::from_ref(&useful), "r", "y", k + 1, at)
            .unwrap();
        // Recorded twice (a retried report): one row.
        db.record_injection(std::slice::from_ref(&useful), "r", "y", k + 1, at)
            .unwrap();
        assert_eq!(
            db.injections("r", "y", k + 1).unwrap(),
            vec![(useful.clone(), None)]
        );
        db.record_result("r", "y", k + 1, true, at, &p).unwrap();
    }
    // A repeated report of the same attempt counts once.
    let again = db
        .record_result("r", "y", 3, true, t0 + 3 * DAY, &p)
        .unwrap();
    assert!(again.is_empty());
    let u = db.lesson(&useful).unwrap().unwrap();
    assert_eq!((u.used, u.helped), (3, 3));
    assert_eq!(
        db.injections("r", "y", 1).unwrap(),
        vec![(useful.clone(), Some(true))]
    );
    assert_eq!(
        db.injections("r", "x", 2).unwrap(),
        vec![(never.clone(), Some(false))]
    );

    let last = t0 + 3 * DAY;
    let early = db.upkeep(last + 30 * DAY - 1, &p).unwrap();
    assert!(early.archive.is_empty(), "{early:?}");
    assert_eq!(early.propose, vec![useful.clone()]);
    let done = db.upkeep(last + 30 * DAY, &p).unwrap();
    assert_eq!(done.archive.len(), 1, "{done:?}");
    assert_eq!(done.archive[0].0, never);
    let archived = db.lessons(true).unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].id, never);
    assert!(db.lesson(&useful).unwrap().unwrap().proposed_at.is_some());
    db.forget(&useful, last + 31 * DAY).unwrap();
    assert_eq!(db.lessons(true).unwrap().len(), 2);
    assert!(db.lessons(false).unwrap().is_empty());
    assert!(db.forget("L-nope", 0).is_err());
}

pub fn recall_picks_relevant_lessons_under_the_token_cap(open: Open<'_>) {
    let mut db = plain(open);
    let p = Policy::default();
    let web = Scope::Project("web".into());
    let mut api = lesson(
        web.clone(),
        "API handlers return errors as JSON objects with a code field.",
        "a",
        0,
    );
    api.applies_when.words = vec!["handler".into()];
    let api = db.add_lesson(api, 0, &p).unwrap().id;
    let other = Scope::Project("other".into());
    db.add_lesson(
        lesson(other, "API handlers in the other project.", "b", 0),
        0,
        &p,
    )
    .unwrap();
    db.add_lesson(
        lesson(web.clone(), "CSS uses tabs for indentation.", "c", 0),
        0,
        &p,
    )
    .unwrap();
    let migrations = db
        .add_lesson(
            lesson(
                web.clone(),
                "Database migrations must be reversible: write the down step too.",
                "m",
                0,
            ),
            0,
            &p,
        )
        .unwrap()
        .id;
    let recall = |text: &str, p: &Policy| -> Vec<String> {
        let ctx = TaskContext {
            text: text.into(),
            scopes: vec![Scope::Instance, web.clone()],
            role: Some("developer".into()),
            ..TaskContext::default()
        };
        db.recall(&ctx, 0, p)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    assert_eq!(recall("Add a handler for the /users API", &p), vec![api]);
    let tight = Policy {
        inject_tokens: 5,
        ..Policy::default()
    };
    assert!(recall("Add a handler for the /users API", &tight).is_empty());
    // Related by its words only (no trigger): two distinctive words, one is not enough.
    assert_eq!(
        recall(
            "Add a reversible database migration for the users table",
            &p
        ),
        vec![migrations]
    );
    assert!(recall("Write the release notes for version 2", &p).is_empty());
}

pub fn each_kind_of_document_stays_under_its_cap_dropping_the_oldest(open: Open<'_>) {
    let mut db = plain(open);
    let cap = crate::db::document_cap("context") as usize;
    let keys: Vec<String> = (0..cap).map(|i| format!("c{i:06}")).collect();
    let dropped = db
        .put_documents(
            keys.iter()
                .map(|k| ("context", k.as_str(), "c", "a context")),
            1,
        )
        .unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    db.put_document("decision", "e1", "log", "a decision", 1)
        .unwrap();
    let dropped = db
        .put_document("context", "new", "c", "the newest context", 2)
        .unwrap();
    assert_eq!(dropped, vec!["c000000".to_string()]);
    assert!(db.document("context", "c000000").unwrap().is_none());
    assert!(db.document("context", "new").unwrap().is_some());
    assert!(db.document("decision", "e1").unwrap().is_some());
    assert_eq!(
        db.search("newest", &["context".into()], 5).unwrap().len(),
        1
    );
    // Replacing a document keeps one of it.
    db.put_document("decision", "e1", "log", "a changed decision", 3)
        .unwrap();
    assert_eq!(
        db.document("decision", "e1").unwrap().unwrap().1,
        "a changed decision"
    );
    assert!(db.put_document("lesson", "x", "t", "b", 0).is_err());
}

/// A search ranks by how many documents hold each term now, whoever wrote them.
pub fn common_terms_are_judged_on_what_every_writer_wrote(open: Open<'_>) {
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
    let mut kept = plain(open);
    // 1,000 documents, 60 of them with "zeta" (6%: too common to count next to a rarer term).
    fill(&mut kept, 0, 999, 60);
    kept.put_document("report", "eta", "eta", "the eta document", 1)
        .unwrap();
    assert_eq!(kept.search("eta zeta", &[], 10).unwrap().len(), 1);
    // Another handle doubles the store: zeta is now 3%, rare enough to count.
    let mut other = plain(open);
    fill(&mut other, 1000, 1000, 0);
    drop(other);
    let hits = kept.search("eta zeta", &[], 10).unwrap();
    assert_eq!(
        hits.len(),
        10,
        "the kept handle still counted 1,000 documents"
    );
    assert_eq!(hits[0].key, "eta");
}

/// A term in many older documents and in none of the newest is still found: a search may
/// look among the newest documents first (PostgreSQL bounds its window there when a term is
/// common), never only there.
pub fn a_common_term_only_in_older_documents_is_found(open: Open<'_>) {
    let mut db = plain(open);
    // 1,800 older documents with "alpha", then 700 newer ones without it.
    let docs: Vec<(String, &str)> = (0..2500)
        .map(|i| {
            (
                format!("d{i:04}"),
                if i < 1800 {
                    "alpha filler"
                } else {
                    "beta filler"
                },
            )
        })
        .collect();
    db.put_documents(
        docs.iter().map(|(k, b)| ("report", k.as_str(), "doc", *b)),
        1,
    )
    .unwrap();
    db.compact().unwrap();
    let hits = db.search("alpha", &[], 10).unwrap();
    assert_eq!(hits.len(), 10, "{hits:?}");
    assert!(hits.iter().all(|h| h.key.as_str() < "d1800"), "{hits:?}");
    let hits = db.search("alpha", &["report".into()], 10).unwrap();
    assert_eq!(hits.len(), 10, "restricted to the kind: {hits:?}");
}

/// `fleet memory export` then `import` into an empty memory: the same lessons, archived
/// included, byte for byte.
pub fn export_import_round_trips(from: Open<'_>, into: Open<'_>) {
    let mut a = plain(from);
    let p = Policy::default();
    for (i, t) in ["alpha", "bravo", "charlie"].iter().enumerate() {
        let mut l = lesson(
            Scope::Bible("saas".into()),
            &format!("{t} lesson {i} about {t}"),
            t,
            i as i64,
        );
        l.applies_when.paths = vec![format!("src/{t}/")];
        a.add_lesson(l, i as i64, &p).unwrap();
    }
    let first = a.lessons(false).unwrap()[0].id.clone();
    a.forget(&first, 9).unwrap();
    let store = fleet_store::SqliteStore::in_memory().unwrap();
    let text = graph::to_jsonl(&graph::export(&store, &a).unwrap());
    let mut b = plain(into);
    let store2 = fleet_store::SqliteStore::in_memory().unwrap();
    graph::import(&store2, &mut b, &graph::parse_jsonl(&text).unwrap()).unwrap();
    assert_eq!(a.all_lessons().unwrap(), b.all_lessons().unwrap());
    assert_eq!(graph::to_jsonl(&graph::export(&store2, &b).unwrap()), text);
    assert_eq!(b.lessons(true).unwrap().len(), 1, "archived stays archived");
    // Imported lessons are searchable; into a non-empty memory, import is refused.
    assert_eq!(b.search("bravo", &["lesson".into()], 5).unwrap().len(), 1);
    let again = graph::import(&store2, &mut b, &graph::parse_jsonl(&text).unwrap());
    assert!(matches!(again, Err(graph::GraphError::NotEmpty(_))));
}

/// Many handles (connections, processes) writing at once: every lesson is kept (live, or
/// archived by the cap, or merged into a twin), no scope ever holds more than its cap, and
/// outcomes recorded at once are all counted.
pub fn concurrent_writers(open: Open<'_>) {
    const WRITERS: usize = 4;
    const EACH: usize = 8;
    let p = Policy {
        scope_cap: 10,
        ..Policy::default()
    };
    let shared = plain(open)
        .add_lesson(
            lesson(
                Scope::Instance,
                "Shared lesson every writer injects.",
                "s",
                0,
            ),
            0,
            &p,
        )
        .unwrap()
        .id;
    let words = [
        "amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "haze",
    ];
    let added: Vec<Vec<(String, Option<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (p, shared) = (&p, &shared);
                s.spawn(move || {
                    let mut db = plain(open);
                    let mut mine = Vec::new();
                    for i in 0..EACH {
                        // Writers 0 and 1 write the same texts (twins that must merge) in a
                        // scope under its cap; the others crowd one scope past it.
                        let (who, scope) = match w {
                            0 | 1 => (0, "twins"),
                            _ => (w, "crowd"),
                        };
                        let text = format!(
                            "{} {} written by wr{who:02} as item{i:03} among many",
                            words[i % words.len()],
                            words[(i + who) % words.len()]
                        );
                        let at = (w * 1000 + i) as i64;
                        let scope = Scope::Project(scope.into());
                        let a = db
                            .add_lesson(lesson(scope, &text, &format!("w{w}"), at), at, p)
                            .unwrap();
                        mine.push((a.id, a.merged_into));
                        let task = format!("w{w}-{i}");
                        db.record_injection(std::slice::from_ref(shared), "r", &task, 1, at)
                            .unwrap();
                        db.record_result("r", &task, 1, true, at, p).unwrap();
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let db = plain(open);
    let all: std::collections::BTreeMap<String, Lesson> = db
        .all_lessons()
        .unwrap()
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    for (id, merged) in added.iter().flatten() {
        let kept = merged.as_ref().unwrap_or(id);
        assert!(
            all.contains_key(kept),
            "lesson {id} (kept as {kept}) was lost"
        );
    }
    // Twins merged: each of writer 0's texts is one lesson with two provenances.
    let merged = added.iter().flatten().filter(|(_, m)| m.is_some()).count();
    assert_eq!(merged, EACH, "one of each pair of twins merged");
    let live = |scope: &str| {
        all.values()
            .filter(|l| l.scope.key() == scope && !l.is_archived())
            .count()
    };
    assert_eq!(live("project:twins"), EACH);
    assert_eq!(
        live("project:crowd"),
        p.scope_cap,
        "the cap holds, never more"
    );
    let total_distinct = (WRITERS - 1) * EACH + 1;
    assert_eq!(all.len(), total_distinct, "every distinct lesson is stored");
    let s = &all[&shared];
    assert_eq!(s.used as usize, WRITERS * EACH, "no outcome lost");
    assert_eq!(s.helped as usize, WRITERS * EACH);
}

pub fn an_unrelated_task_gets_no_lesson_that_only_shares_a_common_word(open: Open<'_>) {
    let mut db = plain(open);
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
