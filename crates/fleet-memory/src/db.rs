//! The memory's own SQLite file (`.fleet/memory.db`): lessons, injections and searchable
//! documents, with an FTS5 index ranked by BM25.
//!
//! Its own file, not tables in `fleet.db`: memory is meant to outlive and travel between
//! instances (copy one file, or export it), its writes never contend with the scheduler's
//! commits on the run log's WAL, and its schema versions move independently of the store's.

use crate::lesson::{Lesson, Millis, Scope};
use crate::rules::{self, Policy, TaskContext, Upkeep};
use fleet_secrets::Redactor;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "embeddings")]
#[path = "embed.rs"]
mod embed;

/// Longest lesson text accepted: lessons are advice, not documents.
pub const MAX_LESSON_CHARS: usize = 2000;
/// Longer documents are cut here (with a note saying so) before they are stored.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE lessons (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    archived INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX lessons_live ON lessons(archived, scope);
CREATE TABLE injections (
    lesson TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    passed INTEGER,
    PRIMARY KEY (run_id, task, attempt, lesson)
) WITHOUT ROWID;
CREATE INDEX injections_by_lesson ON injections(lesson);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (kind, key)
);
CREATE VIRTUAL TABLE search USING fts5(
    title, body, kind, content='documents', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
-- Titles count twice: `ORDER BY rank` uses this, which FTS5 evaluates fastest.
-- The kind is indexed so that a search of some kinds is one more term, not a join; it
-- weighs nothing.
INSERT INTO search(search, rank) VALUES ('rank', 'bm25(2.0, 1.0, 0.0)');
-- How many documents hold each term: a query drops terms too common to rank by.
CREATE VIRTUAL TABLE search_terms USING fts5vocab(search, 'row');
CREATE TRIGGER documents_ai AFTER INSERT ON documents BEGIN
    INSERT INTO search(rowid, title, body, kind) VALUES (new.id, new.title, new.body, new.kind);
END;
CREATE TRIGGER documents_ad AFTER DELETE ON documents BEGIN
    INSERT INTO search(search, rowid, title, body, kind)
        VALUES ('delete', old.id, old.title, old.body, old.kind);
END;
CREATE TRIGGER documents_au AFTER UPDATE ON documents BEGIN
    INSERT INTO search(search, rowid, title, body, kind)
        VALUES ('delete', old.id, old.title, old.body, old.kind);
    INSERT INTO search(rowid, title, body, kind) VALUES (new.id, new.title, new.body, new.kind);
END;
"#,
    r#"
-- How many documents there are, kept by triggers: a search needs it (to tell common terms),
-- and counting 100,000 rows in every process that opens the file is a cold read of the
-- whole (kind, key) index.
CREATE TABLE document_count (n INTEGER NOT NULL);
INSERT INTO document_count SELECT count(*) FROM documents;
CREATE TRIGGER documents_count_ai AFTER INSERT ON documents BEGIN
    UPDATE document_count SET n = n + 1;
END;
CREATE TRIGGER documents_count_ad AFTER DELETE ON documents BEGIN
    UPDATE document_count SET n = n - 1;
END;
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored memory is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no lesson {0:?}")]
    NoLesson(String),
    #[error(
        "the memory database was written by a newer fleet (schema {found}, this build knows {known})"
    )]
    TooNew { found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, MemoryError>;

/// The share of documents above which a term only counts when the query has nothing rarer.
pub const COMMON_TERM: f64 = 0.05;

/// Below this many documents every term counts: ranking them all is cheap.
pub const SMALL_STORE: i64 = 1000;

/// How many of the newest matching documents a search ranks.
pub const RANK_WINDOW: i64 = 1000;

/// The most documents the terms of one search may hold between them (the rarest term is
/// always searched, however many hold it).
pub const POSTINGS_BUDGET: i64 = 2000;

/// The most documents of each kind kept: past it, the oldest (by when they were written) are
/// dropped, so memory stays small however long an instance runs. A trace is at most 24 KiB
/// and a decision log 32 KiB (their renderers), any document 64 KiB ([`MAX_DOCUMENT_BYTES`]);
/// lessons have their own cap per scope ([`Policy::scope_cap`]).
pub const DOCUMENT_CAPS: &[(&str, i64)] = &[
    ("skill", 5_000),
    ("trace", 20_000),
    ("decision", 5_000),
    ("context", 1_000),
    ("report", 20_000),
];

/// The cap of a kind of document.
pub fn document_cap(kind: &str) -> i64 {
    DOCUMENT_CAPS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(i64::MAX, |(_, n)| *n)
}

/// What is searchable besides lessons.
pub const KINDS: &[&str] = &["lesson", "skill", "trace", "decision", "context", "report"];

/// One search result, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub kind: String,
    pub key: String,
    pub title: String,
    /// The matching passage, matches in `[...]`.
    pub snippet: String,
    /// BM25, higher is better (SQLite's is negated so that lower is better; this is not).
    pub score: f64,
}

/// What adding a lesson did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub id: String,
    /// The existing lesson it was a near-duplicate of, which now carries its provenance too.
    pub merged_into: Option<String>,
    /// Lessons archived to keep the scope under its cap.
    pub archived: Vec<String>,
}

pub struct MemoryDb {
    conn: Connection,
    redactor: Redactor,
    /// Documents per term, and documents in all, as of the last write: searches outnumber
    /// writes by far, and counting a common term's documents costs as much as a search.
    frequencies: std::cell::RefCell<(Option<i64>, std::collections::HashMap<String, i64>)>,
    /// `PRAGMA data_version` when the frequencies were cached: it moves when another
    /// connection (another process) commits, so a connection kept open for many searches
    /// (the MCP server's) never ranks by counts from before someone else's write.
    seen_version: std::cell::Cell<i64>,
    #[cfg(feature = "embeddings")]
    embedder: Option<embed::Embedder>,
    #[cfg(feature = "embeddings")]
    embed_warnings: std::cell::RefCell<Vec<String>>,
}

impl MemoryDb {
    pub fn open(path: &Path, redactor: Redactor) -> Result<MemoryDb> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| MemoryError::Invalid(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Pages are read through a mapping of the file (the OS's page cache), not copied into
        // each connection's own cache with a system call per page: a process that opens the
        // file for one search (the CLI, the MCP tool) starts with that cache cold.
        let _mapped: i64 = conn.query_row("PRAGMA mmap_size = 268435456", [], |r| r.get(0))?;
        migrate(&conn)?;
        Ok(MemoryDb {
            conn,
            redactor,
            frequencies: Default::default(),
            seen_version: std::cell::Cell::new(-1),
            #[cfg(feature = "embeddings")]
            embedder: None,
            #[cfg(feature = "embeddings")]
            embed_warnings: Default::default(),
        })
    }

    /// Opens the store as `fleet.yaml`'s `memory:` section says: with `embeddings` set, search
    /// fuses them in (a build without the feature refuses the key; `fleet-config` already does
    /// at load).
    pub fn open_configured(
        path: &Path,
        redactor: Redactor,
        cfg: &fleet_config::MemoryConfig,
    ) -> Result<MemoryDb> {
        let db = MemoryDb::open(path, redactor)?;
        match &cfg.embeddings {
            None => Ok(db),
            #[cfg(feature = "embeddings")]
            Some(e) => db.with_embeddings(e),
            #[cfg(not(feature = "embeddings"))]
            Some(_) => Err(MemoryError::Invalid(
                "memory.embeddings: this fleet was built without the `embeddings` feature".into(),
            )),
        }
    }

    /// After a committed write: documents without a vector get one (embeddings on only).
    fn embed_new(&self) {
        #[cfg(feature = "embeddings")]
        self.backfill();
    }

    /// Adds a lesson (redacted, bounded). A near-duplicate of a live lesson of its scope is
    /// merged into it instead; then the scope is brought back under its cap.
    pub fn add_lesson(&mut self, mut lesson: Lesson, now: Millis, p: &Policy) -> Result<Added> {
        self.wrote();
        lesson.text = self.redactor.clean_string(lesson.text.trim().to_string());
        if lesson.text.is_empty() {
            return Err(MemoryError::Invalid("a lesson needs a text".into()));
        }
        if lesson.text.chars().count() > MAX_LESSON_CHARS {
            return Err(MemoryError::Invalid(format!(
                "a lesson is at most {MAX_LESSON_CHARS} characters; this one has {}",
                lesson.text.chars().count()
            )));
        }
        for t in lesson.applies_when.words.iter_mut() {
            *t = self.redactor.clean_string(std::mem::take(t));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let scope_lessons = live_in_scope(&tx, &lesson.scope)?;
        let twin = scope_lessons
            .iter()
            .filter(|l| rules::similarity(&l.text, &lesson.text) >= p.duplicate_at)
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut added = Added {
            id: lesson.id.clone(),
            merged_into: None,
            archived: Vec::new(),
        };
        if let Some(twin) = twin {
            let mut keep = twin.clone();
            rules::merge(&mut keep, &lesson);
            put_lesson(&tx, &keep)?;
            added.merged_into = Some(keep.id.clone());
        } else {
            if get_lesson(&tx, &lesson.id)?.is_some() {
                return Err(MemoryError::Invalid(format!(
                    "lesson {} already exists",
                    lesson.id
                )));
            }
            put_lesson(&tx, &lesson)?;
            let mut all = scope_lessons;
            all.push(lesson);
            for id in rules::over_cap(&all, now, p) {
                let mut l = all.iter().find(|l| l.id == id).cloned().expect("listed");
                l.archived_at = Some(now);
                l.archived_why = Some(format!(
                    "scope {} over its cap of {}",
                    l.scope.key(),
                    p.scope_cap
                ));
                put_lesson(&tx, &l)?;
                added.archived.push(id);
            }
        }
        tx.commit()?;
        self.embed_new();
        Ok(added)
    }

    /// Forgets the cached term frequencies: the documents changed.
    fn wrote(&self) {
        *self.frequencies.borrow_mut() = Default::default();
    }

    pub fn lesson(&self, id: &str) -> Result<Option<Lesson>> {
        get_lesson(&self.conn, id)
    }

    /// Live lessons (or archived ones), oldest first.
    pub fn lessons(&self, archived: bool) -> Result<Vec<Lesson>> {
        let mut st = self
            .conn
            .prepare("SELECT doc FROM lessons WHERE archived = ?1 ORDER BY created_at, id")?;
        let docs = st
            .query_map([archived as i64], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        docs.iter().map(|d| parse_lesson(d)).collect()
    }

    /// Every lesson, archived included, by id (export).
    pub fn all_lessons(&self) -> Result<Vec<Lesson>> {
        let mut st = self.conn.prepare("SELECT doc FROM lessons ORDER BY id")?;
        let docs = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        docs.iter().map(|d| parse_lesson(d)).collect()
    }

    /// Stores a lesson exactly as given (import): no merging, no caps.
    pub fn restore_lesson(&mut self, lesson: &Lesson) -> Result<()> {
        self.wrote();
        let tx = self.conn.transaction()?;
        put_lesson(&tx, lesson)?;
        tx.commit()?;
        self.embed_new();
        Ok(())
    }

    /// Archives a lesson at a person's word; it stays listed under `--archived`.
    pub fn forget(&mut self, id: &str, now: Millis) -> Result<Lesson> {
        self.wrote();
        let tx = self.conn.transaction()?;
        let mut l = get_lesson(&tx, id)?.ok_or_else(|| MemoryError::NoLesson(id.into()))?;
        if l.archived_at.is_none() {
            l.archived_at = Some(now);
            l.archived_why = Some("forgotten by a person".into());
            put_lesson(&tx, &l)?;
        }
        tx.commit()?;
        Ok(l)
    }

    /// Records that these lessons were put into an attempt's prompt.
    pub fn record_injection(
        &mut self,
        lessons: &[String],
        run_id: &str,
        task: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in lessons {
            tx.execute(
                "INSERT OR IGNORE INTO injections (lesson, run_id, task, attempt, at, passed)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                params![id, run_id, task, attempt, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The attempt ended: every lesson injected into it learns whether it passed (once: a
    /// second report of the same attempt changes nothing).
    pub fn record_result(
        &mut self,
        run_id: &str,
        task: &str,
        attempt: u32,
        passed: bool,
        now: Millis,
        p: &Policy,
    ) -> Result<Vec<String>> {
        self.wrote();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT lesson FROM injections
                 WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 AND passed IS NULL
                 ORDER BY lesson",
            )?;
            st.query_map(params![run_id, task, attempt], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?
        };
        for id in &ids {
            if let Some(mut l) = get_lesson(&tx, id)? {
                rules::record_outcome(&mut l, passed, now, p);
                put_lesson(&tx, &l)?;
            }
        }
        tx.execute(
            "UPDATE injections SET passed = ?4
             WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 AND passed IS NULL",
            params![run_id, task, attempt, passed as i64],
        )?;
        tx.commit()?;
        self.embed_new();
        Ok(ids)
    }

    /// Which lessons an attempt got, and whether it then passed (`None` while it runs).
    pub fn injections(
        &self,
        run_id: &str,
        task: &str,
        attempt: u32,
    ) -> Result<Vec<(String, Option<bool>)>> {
        let mut st = self.conn.prepare(
            "SELECT lesson, passed FROM injections
             WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 ORDER BY lesson",
        )?;
        let rows = st
            .query_map(params![run_id, task, attempt], |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|v| v != 0)))
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// The maintenance pass (merge, archive, cap, propose) over every live lesson, in one
    /// transaction.
    pub fn upkeep(&mut self, now: Millis, p: &Policy) -> Result<Upkeep> {
        self.wrote();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut live = {
            let mut st = tx.prepare("SELECT doc FROM lessons WHERE archived = 0 ORDER BY id")?;
            let docs = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            docs.iter()
                .map(|d| parse_lesson(d))
                .collect::<Result<Vec<_>>>()?
        };
        let before: BTreeMap<String, Lesson> =
            live.iter().map(|l| (l.id.clone(), l.clone())).collect();
        let done = rules::upkeep(&mut live, now, p);
        for m in &done.merges {
            delete_lesson(&tx, &m.dup)?;
        }
        for l in &live {
            if before.get(&l.id) != Some(l) {
                put_lesson(&tx, l)?;
            }
        }
        tx.commit()?;
        self.compact()?;
        self.embed_new();
        Ok(done)
    }

    /// Merges the search index's segments into one. Every write adds a segment and FTS5's
    /// automerge leaves several per level, each of which a query must look every term up in:
    /// over 100,000 entries loaded in batches, merging them cut a search's CPU time by a third
    /// to a half (docs/BENCHMARKS.md, M1).
    /// Part of [`MemoryDb::upkeep`]; seconds over 100,000 entries, so not on every write.
    pub fn compact(&mut self) -> Result<()> {
        self.conn
            .execute("INSERT INTO search(search) VALUES ('optimize')", [])?;
        // The merge rewrote the index into the WAL: copied back and emptied, readers find
        // every page in the file again instead of looking each up in the WAL's index first.
        // Busy (another process reading) is fine: its next checkpoint does it.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(())
    }

    /// Stores (or replaces) a searchable document: a skill, trace, decision log, project
    /// context or report. Redacted and bounded; the kind is kept under its cap
    /// ([`DOCUMENT_CAPS`]). Returns the keys of the documents dropped to keep it there (the
    /// caller removes files it keeps for them).
    pub fn put_document(
        &mut self,
        kind: &str,
        key: &str,
        title: &str,
        body: &str,
        at: Millis,
    ) -> Result<Vec<String>> {
        self.put_documents([(kind, key, title, body)], at)
    }

    /// Many documents in one transaction (benchmarks, imports), each kind then kept under its
    /// cap; the keys dropped, by kind, oldest first.
    pub fn put_documents<'a>(
        &mut self,
        docs: impl IntoIterator<Item = (&'a str, &'a str, &'a str, &'a str)>,
        at: Millis,
    ) -> Result<Vec<String>> {
        self.wrote();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut kinds = std::collections::BTreeSet::new();
        for (kind, key, title, body) in docs {
            if !KINDS.contains(&kind) || kind == "lesson" {
                return Err(MemoryError::Invalid(format!(
                    "unknown document kind {kind:?} (one of skill, trace, decision, context, report)"
                )));
            }
            kinds.insert(kind.to_string());
            put_doc(&tx, &self.redactor, kind, key, title, body, at)?;
        }
        let mut dropped = Vec::new();
        for kind in kinds {
            dropped.extend(trim_kind(&tx, &kind, document_cap(&kind))?);
        }
        tx.commit()?;
        self.embed_new();
        Ok(dropped)
    }

    pub fn document(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT title, body FROM documents WHERE kind = ?1 AND key = ?2",
                params![kind, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Ranked full-text search (BM25) over live lessons and documents, optionally of some
    /// kinds only. Any text is a valid query: it is split into words, each matched as a
    /// term, any of them matching. Terms held by more than [`COMMON_TERM`] of the documents
    /// are left out when the query has a rarer one (as Elasticsearch's common-terms query
    /// does): BM25 gives them little weight, and scoring every document that holds them is
    /// what would make a query slow. When every term is that common, the rarest is used.
    /// BM25 ranks the newest [`RANK_WINDOW`] matching documents (all of them when fewer
    /// match): the work per query is bounded whatever the store's size, and when a word is
    /// everywhere, what is recent is what matters.
    ///
    /// With embeddings on (feature `embeddings` and `memory.embeddings`), this ranking is
    /// fused by reciprocal rank with the documents' cosine similarity to the query, and
    /// [`Hit::score`] is the fused score.
    pub fn search(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>> {
        #[cfg(feature = "embeddings")]
        let hits = self.fused(query, kinds, limit)?;
        #[cfg(not(feature = "embeddings"))]
        let hits = self.search_bm25(query, kinds, limit)?;
        Ok(hits.into_iter().map(|(_, h)| h).collect())
    }

    /// The BM25 ranking [`Self::search`] describes, with each hit's document row id.
    fn search_bm25(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<(i64, Hit)>> {
        let terms = query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if version != self.seen_version.get() {
            self.wrote();
            self.seen_version.set(version);
        }
        let mut cache = self.frequencies.borrow_mut();
        let total = match cache.0 {
            Some(n) => n,
            None => {
                let n: i64 = self
                    .conn
                    .query_row("SELECT n FROM document_count", [], |r| r.get(0))?;
                cache.0 = Some(n);
                n
            }
        };
        let mut counted = Vec::with_capacity(terms.len());
        for t in terms {
            let df = match cache.1.get(&t) {
                Some(df) => *df,
                None => {
                    let mut st = self
                        .conn
                        .prepare_cached("SELECT doc FROM search_terms WHERE term = ?1")?;
                    // A term the index spells differently (diacritics) has no row: kept.
                    let df: i64 = st.query_row([&t], |r| r.get(0)).optional()?.unwrap_or(-1);
                    cache.1.insert(t.clone(), df);
                    df
                }
            };
            if df != 0 {
                counted.push((t, df.max(0)));
            }
        }
        drop(cache);
        let mut kept: Vec<&(String, i64)> = counted
            .iter()
            .filter(|(_, df)| total < SMALL_STORE || (*df as f64) <= total as f64 * COMMON_TERM)
            .collect();
        if kept.is_empty() {
            kept.extend(counted.iter().min_by_key(|(_, df)| *df));
        }
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        // The rarest terms first, while the documents they are in add up to the budget: BM25
        // counts every document of every term before it ranks the first, so this bounds a
        // query's work; the terms left out are the commonest, which weigh least.
        kept.sort_by_key(|(_, df)| *df);
        let mut postings = 0;
        kept.retain(|(_, df)| {
            let within = postings == 0 || postings + df <= POSTINGS_BUDGET;
            postings += df;
            within
        });
        let mut q = kept
            .iter()
            .map(|(t, _)| format!("\"{}\"", t.replace('"', "")))
            .collect::<Vec<_>>()
            .join(" OR ");
        // Words match titles and bodies, never the kind column.
        q = format!("{{title body}} : ({q})");
        if !kinds.is_empty() {
            let list: Vec<String> = kinds
                .iter()
                .map(|k| format!("\"{}\"", k.replace('"', "")))
                .collect();
            q = format!("{q} AND kind : ({})", list.join(" OR "));
        }
        let mut st = self.conn.prepare_cached(
            "SELECT rowid, -rank FROM (
                 SELECT rowid, rank FROM search WHERE search MATCH ?1
                 ORDER BY rowid DESC LIMIT ?3)
             ORDER BY rank LIMIT ?2",
        )?;
        let ranked: Vec<(i64, f64)> = st
            .query_map(params![q, limit as i64, RANK_WINDOW], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<std::result::Result<_, _>>()?;
        // The passage is cut here from the stored text, not by FTS5's `snippet()`: that reads
        // every query term's whole index list again for each hit.
        let words: Vec<&str> = kept.iter().map(|(t, _)| t.as_str()).collect();
        let mut st = self
            .conn
            .prepare_cached("SELECT kind, key, title, body FROM documents WHERE id = ?1")?;
        let mut hits = Vec::with_capacity(ranked.len());
        for (rowid, score) in ranked {
            let (kind, key, title, body): (String, String, String, String) = st
                .query_row([rowid], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            hits.push((
                rowid,
                Hit {
                    snippet: passage(&body, &words),
                    kind,
                    key,
                    title,
                    score,
                },
            ));
        }
        Ok(hits)
    }

    /// The lessons to put into an attempt's prompt, best first, under the policy's token cap.
    ///
    /// A lesson is a candidate when a trigger of its "applies when" fires (a path, a word), or
    /// when it is related to the task's text: it holds enough of the task's distinctive words
    /// ([`rules::words_match`]), or, with embeddings on, its meaning is close
    /// ([`MIN_COSINE`]). Related lessons are ranked by BM25, fused with the embeddings'
    /// ranking when they are on, scaled so the best is 1: a trigger (1 each) counts as much as
    /// the best text match.
    pub fn recall(&self, ctx: &TaskContext, now: Millis, p: &Policy) -> Result<Vec<Lesson>> {
        let mut candidates = Vec::new();
        for s in &ctx.scopes {
            candidates.extend(live_in_scope(&self.conn, s)?);
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let text = self.lesson_ranking(&ctx.text)?;
        let refs: Vec<&Lesson> = candidates.iter().collect();
        let distinctive = rules::distinctive_words(&ctx.text, &refs);
        let scored = candidates
            .iter()
            .map(|l| {
                let (score, close) = text.get(&l.id).copied().unwrap_or((0.0, false));
                let related = close || rules::words_match(l, ctx, &distinctive);
                let t = if related { score } else { 0.0 };
                (l, rules::relevance(l, ctx, t, now, p))
            })
            .collect();
        Ok(rules::select_for_injection(scored, p.inject_tokens)
            .into_iter()
            .cloned()
            .collect())
    }

    /// Each lesson's text score for a task (best 1), and whether its meaning is close (by
    /// embeddings). BM25 alone without embeddings; fused with them by reciprocal rank.
    fn lesson_ranking(&self, text: &str) -> Result<BTreeMap<String, (f64, bool)>> {
        let bm25: Vec<(String, f64)> = self
            .search_bm25(text, &["lesson".into()], 200)?
            .into_iter()
            .map(|(_, h)| (h.key, h.score))
            .collect();
        #[cfg(feature = "embeddings")]
        if let Some(near) = self.lesson_similarities(text) {
            let lists = vec![
                bm25.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                near.iter().map(|(k, _)| k.clone()).collect(),
            ];
            let fused = crate::fusion::reciprocal_rank_fusion(&lists, crate::fusion::RRF_K);
            let best = fused.first().map_or(1.0, |f| f.1);
            return Ok(fused
                .into_iter()
                .map(|(k, s)| {
                    let close = near.iter().any(|(n, c)| *n == k && *c >= MIN_COSINE);
                    (k, (s / best, close))
                })
                .collect());
        }
        let best = bm25.iter().map(|(_, s)| *s).fold(0.0, f64::max);
        Ok(bm25
            .into_iter()
            .map(|(k, s)| (k, (if best > 0.0 { s / best } else { 0.0 }, false)))
            .collect())
    }
}

/// Cosine similarity of a task's text to a lesson from which the lesson is related to it by
/// meaning (embeddings on), whatever words they share.
pub const MIN_COSINE: f32 = 0.45;

fn put_doc(
    conn: &Connection,
    redactor: &Redactor,
    kind: &str,
    key: &str,
    title: &str,
    body: &str,
    at: Millis,
) -> Result<()> {
    let mut body = redactor.clean(body).into_owned();
    if body.len() > MAX_DOCUMENT_BYTES {
        let mut cut = MAX_DOCUMENT_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push_str("\n\n[cut: longer than 64 KiB]");
    }
    let title = redactor.clean(title);
    conn.execute(
        "INSERT INTO documents (kind, key, title, body, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, key) DO UPDATE SET title = ?3, body = ?4, at = ?5",
        params![kind, key, title, body, at],
    )?;
    Ok(())
}

/// Drops the oldest documents of `kind` past `cap`; their keys.
fn trim_kind(conn: &Connection, kind: &str, cap: i64) -> Result<Vec<String>> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM documents WHERE kind = ?1",
        [kind],
        |r| r.get(0),
    )?;
    if n <= cap {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = {
        let mut st =
            conn.prepare("SELECT key FROM documents WHERE kind = ?1 ORDER BY at, id LIMIT ?2")?;
        st.query_map(params![kind, n - cap], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?
    };
    let mut del = conn.prepare_cached("DELETE FROM documents WHERE kind = ?1 AND key = ?2")?;
    for k in &keys {
        del.execute(params![kind, k])?;
    }
    Ok(keys)
}

/// Words too common to say anything about relevance.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "was", "with",
];

/// The query's words, lowercase, without stopwords and repeats, at most 32: each becomes a
/// quoted FTS5 term, so `"`, `NEAR(`, `*` and `-` in a query are text, never syntax.
pub fn query_terms(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut seen = std::collections::BTreeSet::new();
    lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w) && seen.insert(*w))
        .take(32)
        .map(str::to_string)
        .collect()
}

/// About 20 words of `body` around the first of `terms` it holds, each term found in `[...]`.
pub fn passage(body: &str, terms: &[&str]) -> String {
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let is_term = |w: &str| {
        let bare: String = w
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        terms.contains(&bare.as_str())
    };
    let first = tokens.iter().position(|w| is_term(w)).unwrap_or(0);
    let start = first.saturating_sub(6);
    let end = (start + 20).min(tokens.len());
    let mut out: Vec<String> = tokens[start..end]
        .iter()
        .map(|w| {
            if is_term(w) {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    if start > 0 {
        out.insert(0, "…".into());
    }
    if end < tokens.len() {
        out.push("…".into());
    }
    out.join(" ")
}

fn parse_lesson(doc: &str) -> Result<Lesson> {
    serde_json::from_str(doc).map_err(|e| MemoryError::Corrupt(format!("lesson: {e}")))
}

fn get_lesson(conn: &Connection, id: &str) -> Result<Option<Lesson>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM lessons WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    doc.map(|d| parse_lesson(&d)).transpose()
}

fn live_in_scope(conn: &Connection, scope: &Scope) -> Result<Vec<Lesson>> {
    let mut st = conn.prepare_cached(
        "SELECT doc FROM lessons WHERE archived = 0 AND scope = ?1 ORDER BY created_at, id",
    )?;
    let docs = st
        .query_map([scope.key()], |r| r.get::<_, String>(0))?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    docs.iter().map(|d| parse_lesson(d)).collect()
}

/// Writes a lesson's row and its searchable document (live lessons only are searchable).
fn put_lesson(conn: &Connection, l: &Lesson) -> Result<()> {
    let doc = serde_json::to_string(l).expect("lessons serialize");
    conn.execute(
        "INSERT INTO lessons (id, scope, archived, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET scope = ?2, archived = ?3, created_at = ?4, doc = ?5",
        params![
            l.id,
            l.scope.key(),
            l.is_archived() as i64,
            l.created_at,
            doc
        ],
    )?;
    if l.is_archived() {
        conn.execute(
            "DELETE FROM documents WHERE kind = 'lesson' AND key = ?1",
            [&l.id],
        )?;
    } else {
        let w = &l.applies_when;
        let title = [
            w.words.join(" "),
            w.paths.join(" "),
            w.roles.join(" "),
            w.kinds.join(" "),
        ]
        .join(" ");
        conn.execute(
            "INSERT INTO documents (kind, key, title, body, at) VALUES ('lesson', ?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET title = ?2, body = ?3, at = ?4",
            params![l.id, title.trim(), l.text, l.created_at],
        )?;
    }
    Ok(())
}

fn delete_lesson(conn: &Connection, id: &str) -> Result<()> {
    conn.execute("DELETE FROM lessons WHERE id = ?1", [id])?;
    conn.execute(
        "DELETE FROM documents WHERE kind = 'lesson' AND key = ?1",
        [id],
    )?;
    Ok(())
}

fn migrate(conn: &Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(MemoryError::TooNew { found, known });
    }
    if found == known {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for sql in &MIGRATIONS[found.min(known) as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}
