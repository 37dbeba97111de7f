//! The memory's own SQLite file (`.fleet/memory.db`): lessons, injections and searchable
//! documents, with an FTS5 index ranked by BM25. The default, with the embedded store.
//!
//! Its own file, not tables in `fleet.db`: memory is meant to outlive and travel between
//! instances (copy one file, or export it), its writes never contend with the scheduler's
//! commits on the run log's WAL, and its schema versions move independently of the store's.

use crate::db::{
    Backend, Hit, MemoryError, RANK_WINDOW, Result, Tx, WriteFn, keep_terms, lesson_doc,
    lesson_title, parse_lesson, passage, query_terms,
};
use crate::lesson::{Lesson, Millis, Scope};
use fleet_secrets::Redactor;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "embeddings")]
#[path = "embed.rs"]
mod embed;

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

pub(crate) struct SqliteMemory {
    conn: Connection,
    /// For the embeddings' warnings (the endpoint's messages).
    #[cfg_attr(not(feature = "embeddings"), allow(dead_code))]
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

impl SqliteMemory {
    pub(crate) fn open(path: &Path, redactor: Redactor) -> Result<SqliteMemory> {
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
        Ok(SqliteMemory {
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

    /// After a committed write: documents without a vector get one (embeddings on only).
    fn embed_new(&self) {
        #[cfg(feature = "embeddings")]
        self.backfill();
    }

    /// Forgets the cached term frequencies: the documents changed.
    fn wrote(&self) {
        *self.frequencies.borrow_mut() = Default::default();
    }

    /// The BM25 ranking [`crate::MemoryDb::search`] describes, with each hit's document row
    /// id.
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
            counted.push((t, df));
        }
        drop(cache);
        let kept = keep_terms(counted, total);
        if kept.is_empty() {
            return Ok(Vec::new());
        }
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

    /// Each lesson's text score for a task (best 1), and whether its meaning is close (by
    /// embeddings). BM25 alone without embeddings; fused with them by reciprocal rank.
    fn ranking(&self, text: &str) -> Result<BTreeMap<String, (f64, bool)>> {
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
                    let close = near
                        .iter()
                        .any(|(n, c)| *n == k && *c >= crate::db::MIN_COSINE);
                    (k, (s / best, close))
                })
                .collect());
        }
        Ok(crate::db::scaled(bm25))
    }
}

impl Backend for SqliteMemory {
    fn write(&mut self, f: &mut WriteFn<'_>) -> Result<()> {
        self.wrote();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        f(&mut SqliteTx(&tx))?;
        tx.commit()?;
        self.embed_new();
        Ok(())
    }

    fn lesson(&self, id: &str) -> Result<Option<Lesson>> {
        get_lesson(&self.conn, id)
    }

    fn lessons(&self, archived: Option<bool>) -> Result<Vec<Lesson>> {
        let docs = match archived {
            Some(a) => self
                .conn
                .prepare("SELECT doc FROM lessons WHERE archived = ?1 ORDER BY created_at, id")?
                .query_map([a as i64], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => self
                .conn
                .prepare("SELECT doc FROM lessons ORDER BY id")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?,
        };
        docs.iter().map(|d| parse_lesson(d)).collect()
    }

    fn live_in_scope(&self, scope: &Scope) -> Result<Vec<Lesson>> {
        live_in_scope(&self.conn, scope)
    }

    fn record_injection(
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

    fn injections(
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

    fn document(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT title, body FROM documents WHERE kind = ?1 AND key = ?2",
                params![kind, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn search(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>> {
        #[cfg(feature = "embeddings")]
        let hits = self.fused(query, kinds, limit)?;
        #[cfg(not(feature = "embeddings"))]
        let hits = self.search_bm25(query, kinds, limit)?;
        Ok(hits.into_iter().map(|(_, h)| h).collect())
    }

    fn lesson_ranking(&self, text: &str) -> Result<BTreeMap<String, (f64, bool)>> {
        self.ranking(text)
    }

    /// Merges the search index's segments into one. Every write adds a segment and FTS5's
    /// automerge leaves several per level, each of which a query must look every term up in:
    /// over 100,000 entries loaded in batches, merging them cut a search's CPU time by a third
    /// to a half (docs/BENCHMARKS.md, M1).
    fn compact(&mut self) -> Result<()> {
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

    #[cfg(feature = "embeddings")]
    fn enable_embeddings(&mut self, cfg: &fleet_config::EmbeddingsConfig) -> Result<()> {
        self.with_embeddings(cfg)
    }

    #[cfg(feature = "embeddings")]
    fn embedding_warnings(&self) -> Vec<String> {
        self.embed_warnings.borrow().clone()
    }
}

/// A write transaction on the file (begun `IMMEDIATE`: other writers wait for it).
struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl Tx for SqliteTx<'_> {
    fn live(&mut self, scope: Option<&Scope>) -> Result<Vec<Lesson>> {
        match scope {
            Some(s) => live_in_scope(self.0, s),
            None => {
                let mut st = self
                    .0
                    .prepare("SELECT doc FROM lessons WHERE archived = 0 ORDER BY id")?;
                let docs = st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                docs.iter().map(|d| parse_lesson(d)).collect()
            }
        }
    }

    fn get(&mut self, id: &str) -> Result<Option<Lesson>> {
        get_lesson(self.0, id)
    }

    fn put(&mut self, l: &Lesson) -> Result<()> {
        put_lesson(self.0, l)
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.0.execute("DELETE FROM lessons WHERE id = ?1", [id])?;
        self.0.execute(
            "DELETE FROM documents WHERE kind = 'lesson' AND key = ?1",
            [id],
        )?;
        Ok(())
    }

    fn unsettled(&mut self, run_id: &str, task: &str, attempt: u32) -> Result<Vec<String>> {
        let mut st = self.0.prepare(
            "SELECT lesson FROM injections
             WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 AND passed IS NULL
             ORDER BY lesson",
        )?;
        let ids = st
            .query_map(params![run_id, task, attempt], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids)
    }

    fn settle(&mut self, run_id: &str, task: &str, attempt: u32, passed: bool) -> Result<()> {
        self.0.execute(
            "UPDATE injections SET passed = ?4
             WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 AND passed IS NULL",
            params![run_id, task, attempt, passed as i64],
        )?;
        Ok(())
    }

    fn put_doc(
        &mut self,
        kind: &str,
        key: &str,
        title: &str,
        body: &str,
        at: Millis,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO documents (kind, key, title, body, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, key) DO UPDATE SET title = ?3, body = ?4, at = ?5",
            params![kind, key, title, body, at],
        )?;
        Ok(())
    }

    fn trim_kind(&mut self, kind: &str, cap: i64) -> Result<Vec<String>> {
        trim_kind(self.0, kind, cap)
    }
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
    conn.execute(
        "INSERT INTO lessons (id, scope, archived, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET scope = ?2, archived = ?3, created_at = ?4, doc = ?5",
        params![
            l.id,
            l.scope.key(),
            l.is_archived() as i64,
            l.created_at,
            lesson_doc(l)
        ],
    )?;
    if l.is_archived() {
        conn.execute(
            "DELETE FROM documents WHERE kind = 'lesson' AND key = ?1",
            [&l.id],
        )?;
    } else {
        conn.execute(
            "INSERT INTO documents (kind, key, title, body, at) VALUES ('lesson', ?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET title = ?2, body = ?3, at = ?4",
            params![l.id, lesson_title(l), l.text, l.created_at],
        )?;
    }
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
