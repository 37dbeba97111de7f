//! Memory in the instance's PostgreSQL store (`store: postgres://…`): the same lessons,
//! injections and documents as `memory.db`, in `memory_*` tables of that database, so that
//! every runner and API replica on it shares what one of them learnt.
//!
//! Search is PostgreSQL's own: a stored `tsvector` per document (title weighted `A`, body `B`)
//! with a GIN index, matched by a `tsquery` of the query's words and ranked by `ts_rank_cd`.
//! Writes that read before they decide (merging, caps, outcomes, upkeep, document caps) hold
//! one transaction-level advisory lock, so writers in many processes never lose an update or
//! overflow a cap.

use crate::db::{
    Backend, Hit, MemoryError, RANK_WINDOW, Result, Tx, WriteFn, keep_terms, lesson_doc,
    lesson_title, parse_lesson, passage, query_terms, scaled,
};
use crate::lesson::{Lesson, Millis, Scope};
use fleet_store::pg::{connect, off_runtime, without_password};
use postgres::{Client, GenericClient};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Held by every memory migration (the store's own is 7046873912).
const MIGRATION_LOCK: i64 = 7046873913;
/// Held by every memory write that reads before it writes: one writer at a time.
const WRITE_LOCK: i64 = 7046873914;

/// A write of at least this many documents refreshes the statistics search reads term
/// frequencies from (autovacuum would, later).
const ANALYZE_AFTER: usize = 500;

/// How many of the newest matches PostgreSQL ranks: fewer than SQLite's [`RANK_WINDOW`],
/// because ranking is what a search costs there (each match's `tsvector` is detoasted and
/// its positions walked: ~30 µs a row on the loaded benchmark machine, docs/BENCHMARKS.md M1).
const PG_RANK_WINDOW: i64 = if RANK_WINDOW < 200 { RANK_WINDOW } else { 200 };

/// How many times more recent documents a search reads than a window's worth of matches at
/// the terms' frequency would need: matches are not spread evenly.
const RECENT_SLACK: i64 = 2;

/// Ranks: a title match (`A`) counts twice a body match (`B`), as on SQLite.
const WEIGHTS: &str = "'{0.1, 0.2, 0.5, 1.0}'";

/// Words as the SQLite index sees them (unicode61 splits at anything not a letter or digit):
/// without this, PostgreSQL's parser keeps `src/api/x.rs` or `a.b.com` as one token that no
/// word of a query matches.
const WORDS_OF: &str = "regexp_replace($TEXT, '[^[:alnum:]]+', ' ', 'g')";

fn migrations() -> Vec<String> {
    let title = WORDS_OF.replace("$TEXT", "title");
    let body = WORDS_OF.replace("$TEXT", "body");
    vec![
        format!(
            r#"
CREATE TABLE memory_lessons (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    archived BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX memory_lessons_live ON memory_lessons (archived, scope);
CREATE TABLE memory_injections (
    lesson TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    passed BOOLEAN,
    PRIMARY KEY (run_id, task, attempt, lesson)
);
CREATE INDEX memory_injections_by_lesson ON memory_injections (lesson);
CREATE TABLE memory_documents (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    at BIGINT NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', {title}), 'A') ||
        setweight(to_tsvector('simple', {body}), 'B')
    ) STORED,
    UNIQUE (kind, key)
);
-- No pending list (fastupdate): every search would scan it whole until a vacuum folds it in.
CREATE INDEX memory_documents_search ON memory_documents USING GIN (tsv)
    WITH (fastupdate = off);
-- Document caps drop the oldest of a kind.
CREATE INDEX memory_documents_age ON memory_documents (kind, at, id);
-- How many documents there are, kept by a trigger: a search needs it (to tell common
-- terms), and counting 100,000 rows per search would cost more than the search.
CREATE TABLE memory_document_count (n BIGINT NOT NULL);
INSERT INTO memory_document_count SELECT count(*) FROM memory_documents;
CREATE FUNCTION memory_documents_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE memory_document_count SET n = n + 1;
    ELSE
        UPDATE memory_document_count SET n = n - 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER memory_documents_count AFTER INSERT OR DELETE ON memory_documents
    FOR EACH ROW EXECUTE FUNCTION memory_documents_count();
"#
        ),
        // A search restricted to one kind finds that kind's newest documents in order.
        "CREATE INDEX memory_documents_kind_id ON memory_documents (kind, id);".to_string(),
    ]
}

impl From<postgres::Error> for MemoryError {
    fn from(e: postgres::Error) -> MemoryError {
        match e.as_db_error() {
            Some(db) => MemoryError::Postgres(format!("{}: {}", db.code().code(), db.message())),
            None => MemoryError::Postgres(e.to_string()),
        }
    }
}

pub(crate) struct PgMemory {
    url: String,
    /// One connection per handle (a handle is one process's, or one request's, memory); a
    /// broken one is replaced at the next call.
    session: Mutex<Option<Session>>,
}

/// A connection (its statements prepared once), with the term statistics searches read.
struct Session {
    client: fleet_store::pg::Conn,
    stats: Option<TermStats>,
}

/// The planner's statistics of the `tsvector` column: its most common lexemes, each with the
/// share of documents holding it; read again only when the table was analyzed since (its
/// estimated row count moved). The count of documents itself is read at every search.
struct TermStats {
    analyzed_rows: f32,
    common: HashMap<String, f64>,
}

impl Drop for PgMemory {
    /// Closing a connection blocks on the client's own runtime: off any Tokio runtime, as
    /// every call (a sub-run drops its memory on its runtime's thread).
    fn drop(&mut self) {
        let session = self
            .session
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        off_runtime(move || drop(session));
    }
}

impl PgMemory {
    /// Connects, and creates or upgrades the memory tables.
    pub(crate) fn open(url: &str) -> Result<PgMemory> {
        let client = off_runtime(|| {
            let mut c = connect_memory(url)?;
            migrate(&mut c)?;
            Ok::<_, MemoryError>(c)
        })?;
        Ok(PgMemory {
            url: url.to_string(),
            session: Mutex::new(Some(Session::new(client))),
        })
    }

    /// Runs `f` on the connection, off any Tokio runtime, reconnecting first if it broke.
    fn with_session<T: Send>(&self, f: impl FnOnce(&mut Session) -> Result<T> + Send) -> Result<T> {
        let mut guard = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let slot: &mut Option<Session> = &mut guard;
        let url = &self.url;
        off_runtime(move || {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = Some(Session::new(connect_memory(url)?));
            }
            f(slot.as_mut().expect("connected"))
        })
    }

    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut fleet_store::pg::Conn) -> Result<T> + Send,
    ) -> Result<T> {
        self.with_session(|c| f(&mut c.client))
    }
}

impl Session {
    fn new(client: fleet_store::pg::Conn) -> Session {
        Session {
            client,
            stats: None,
        }
    }

    /// How many documents there are now, and the term statistics, read again when the
    /// table was analyzed since they were (reading them costs a few milliseconds: the most
    /// common lexemes are an array of up to 1,000).
    fn stats(&mut self) -> Result<(i64, &TermStats)> {
        let row = self.client.query_one(
            "SELECT (SELECT n FROM memory_document_count), c.reltuples
             FROM pg_class c WHERE c.oid = 'memory_documents'::regclass",
            &[],
        )?;
        let (total, analyzed_rows): (i64, f32) = (row.get(0), row.get(1));
        if self
            .stats
            .as_ref()
            .is_none_or(|s| s.analyzed_rows != analyzed_rows)
        {
            // No row before the first analysis; no arrays when no lexeme is common.
            let row = self.client.query_opt(
                "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats
                 WHERE schemaname = current_schema() AND tablename = 'memory_documents'
                   AND attname = 'tsv'",
                &[],
            )?;
            let elems: Option<Vec<String>> = row.as_ref().and_then(|r| r.get(0));
            let freqs: Option<Vec<f32>> = row.as_ref().and_then(|r| r.get(1));
            let common = elems
                .unwrap_or_default()
                .into_iter()
                .zip(freqs.unwrap_or_default().into_iter().map(f64::from))
                .collect();
            self.stats = Some(TermStats {
                analyzed_rows,
                common,
            });
        }
        Ok((total, self.stats.as_ref().expect("read")))
    }

    /// The terms the search uses (see [`keep_terms`]), each with how many documents hold it
    /// as the statistics tell (counting a common term's documents costs as much as the
    /// search), and how many documents there are. A term not among the most common is rarer
    /// than all of them (`-1`: kept). The statistics are refreshed by autovacuum, by
    /// `compact`, and after any large write ([`ANALYZE_AFTER`]).
    fn terms(&mut self, terms: Vec<String>) -> Result<(Vec<(String, i64)>, i64)> {
        let (total, stats) = self.stats()?;
        let counted = terms
            .into_iter()
            .map(|t| {
                let df = stats
                    .common
                    .get(&t)
                    .map_or(-1, |f| (f * total as f64).round() as i64);
                (t, df)
            })
            .collect();
        Ok((keep_terms(counted, total), total))
    }

    /// The newest [`PG_RANK_WINDOW`] documents matching any kept term, ranked by `ts_rank_cd`.
    fn ranked(&mut self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>> {
        let terms = query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let (kept, total) = self.terms(terms)?;
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        // Each term is letters and digits only (`query_terms`), quoted: never tsquery syntax.
        let q = kept
            .iter()
            .map(|(t, _)| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(" | ");
        let kinds: Vec<String> = kinds.to_vec();
        let recent = recent_span(&kept, &kinds, total);
        let mut rows = self.window(&q, &kinds, limit, recent)?;
        if recent.is_some() && rows.len() < limit {
            // Fewer matches among the recent documents than the estimate said: all of them.
            rows = self.window(&q, &kinds, limit, None)?;
        }
        let words: Vec<&str> = kept.iter().map(|(t, _)| t.as_str()).collect();
        Ok(rows
            .iter()
            .map(|r| Hit {
                kind: r.get(0),
                key: r.get(1),
                title: r.get(2),
                snippet: passage(r.get::<_, &str>(3), &words),
                score: r.get(4),
            })
            .collect())
    }

    /// The best `limit` of the newest [`PG_RANK_WINDOW`] matches among the newest `recent`
    /// documents of the kind searched (`None`: all), ranked in the window itself (no second
    /// lookup per match); only the best are read whole.
    fn window(
        &mut self,
        q: &str,
        kinds: &[String],
        limit: usize,
        recent: Option<i64>,
    ) -> Result<Vec<postgres::Row>> {
        // Planned for its parameters each time (`Conn::open`): with no kind, the first
        // index's newest ids; with one, the kind's own (`memory_documents_kind_id`).
        let (bound, span) = match recent {
            Some(n) => (
                "AND d.id >= COALESCE((SELECT k.id FROM memory_documents k
                     WHERE cardinality($2::text[]) = 0 OR k.kind = ($2::text[])[1]
                     ORDER BY k.id DESC OFFSET $5 LIMIT 1), 0)",
                n,
            ),
            // The same parameters either way; `$5` is then unused.
            None => ("AND $5::bigint IS NOT NULL", 0),
        };
        Ok(self.client.query(
            &format!(
                "WITH q AS (SELECT to_tsquery('simple', $1) AS q),
                 w AS (SELECT d.id, d.tsv FROM memory_documents d, q
                       WHERE d.tsv @@ q.q AND (cardinality($2::text[]) = 0 OR d.kind = ANY($2))
                         {bound}
                       ORDER BY d.id DESC LIMIT $4),
                 top AS (SELECT w.id, ts_rank_cd({WEIGHTS}, w.tsv, q.q)::float8 AS score
                         FROM w, q ORDER BY score DESC, w.id DESC LIMIT $3)
                 SELECT d.kind, d.key, d.title, d.body, top.score
                 FROM top JOIN memory_documents d ON d.id = top.id
                 ORDER BY top.score DESC, top.id DESC"
            ),
            &[&q, &kinds, &(limit as i64), &PG_RANK_WINDOW, &span],
        )?)
    }
}

/// How many of the newest documents (of the kind searched) likely hold the newest
/// [`PG_RANK_WINDOW`] matches, when that is worth saying (`None`: all of them). The index
/// yields matches in no order, so the window of the newest is sorted out of all of them:
/// for a term in a fifth of 100,000 documents, 20,000 rows read for 200 kept. Reading
/// only [`RECENT_SLACK`] times the span that holds a window's worth of matches at the
/// terms' frequency reads a few hundred. Several kinds: no bound (their newest ids are
/// not found in order by one index scan).
fn recent_span(kept: &[(String, i64)], kinds: &[String], total: i64) -> Option<i64> {
    let postings: i64 = kept.iter().map(|(_, df)| (*df).max(0)).sum();
    let wanted = PG_RANK_WINDOW * RECENT_SLACK;
    // Finding where the span starts reads the span's ids (an index, in order): past a
    // quarter of the documents, that costs more than reading every match.
    if kinds.len() > 1 || postings <= 4 * wanted || total <= 0 {
        return None;
    }
    let span = (wanted as f64 * total as f64 / postings as f64).ceil() as i64;
    (span < total).then_some(span)
}

fn connect_memory(url: &str) -> Result<fleet_store::pg::Conn> {
    connect(url).map_err(|e| match e {
        fleet_store::StoreError::Unreachable(shown, why) => MemoryError::Unreachable(shown, why),
        other => MemoryError::Unreachable(without_password(url), other.to_string()),
    })
}

fn migrate(c: &mut Client) -> Result<()> {
    let all = migrations();
    let known = all.len() as i64;
    let mut tx = c.transaction()?;
    // One migrator at a time across all processes; the others wait here, then find it done.
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS memory_schema_version (version BIGINT NOT NULL)"
    ))?;
    let found: i64 = match tx.query_opt("SELECT version FROM memory_schema_version", &[])? {
        Some(r) => r.get(0),
        None => {
            tx.execute(
                "INSERT INTO memory_schema_version (version) VALUES (0)",
                &[],
            )?;
            0
        }
    };
    if found > known {
        return Err(MemoryError::TooNew { found, known });
    }
    for sql in &all[found as usize..] {
        tx.batch_execute(sql)?;
    }
    tx.execute("UPDATE memory_schema_version SET version = $1", &[&known])?;
    tx.commit()?;
    Ok(())
}

fn lessons_of(rows: &[postgres::Row]) -> Result<Vec<Lesson>> {
    rows.iter().map(|r| parse_lesson(r.get(0))).collect()
}

fn get_lesson(c: &mut impl GenericClient, id: &str) -> Result<Option<Lesson>> {
    c.query_opt("SELECT doc FROM memory_lessons WHERE id = $1", &[&id])?
        .map(|r| parse_lesson(r.get(0)))
        .transpose()
}

/// Live lessons of a scope oldest first; ids compare bytewise, as on SQLite.
fn live_in_scope(c: &mut impl GenericClient, scope: &Scope) -> Result<Vec<Lesson>> {
    let rows = c.query(
        "SELECT doc FROM memory_lessons WHERE NOT archived AND scope = $1
         ORDER BY created_at, id COLLATE \"C\"",
        &[&scope.key()],
    )?;
    lessons_of(&rows)
}

impl Backend for PgMemory {
    fn write(&mut self, f: &mut WriteFn<'_>) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let mut t = PgTx(&mut tx, 0);
            f(&mut t)?;
            let written = t.1;
            tx.commit()?;
            if written >= ANALYZE_AFTER {
                c.batch_execute("ANALYZE memory_documents")?;
            }
            Ok(())
        })
    }

    fn lesson(&self, id: &str) -> Result<Option<Lesson>> {
        self.with(|c| get_lesson(&mut **c, id))
    }

    fn lessons(&self, archived: Option<bool>) -> Result<Vec<Lesson>> {
        self.with(|c| {
            let rows = match archived {
                Some(a) => c.query(
                    "SELECT doc FROM memory_lessons WHERE archived = $1
                     ORDER BY created_at, id COLLATE \"C\"",
                    &[&a],
                )?,
                None => c.query(
                    "SELECT doc FROM memory_lessons ORDER BY id COLLATE \"C\"",
                    &[],
                )?,
            };
            lessons_of(&rows)
        })
    }

    fn live_in_scope(&self, scope: &Scope) -> Result<Vec<Lesson>> {
        self.with(|c| live_in_scope(&mut **c, scope))
    }

    fn record_injection(
        &mut self,
        lessons: &[String],
        run_id: &str,
        task: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<()> {
        let attempt = i64::from(attempt);
        self.with(|c| {
            c.execute(
                "INSERT INTO memory_injections (lesson, run_id, task, attempt, at, passed)
                 SELECT l, $2, $3, $4, $5, NULL FROM unnest($1::text[]) AS l
                 ON CONFLICT DO NOTHING",
                &[&lessons, &run_id, &task, &attempt, &now],
            )?;
            Ok(())
        })
    }

    fn injections(
        &self,
        run_id: &str,
        task: &str,
        attempt: u32,
    ) -> Result<Vec<(String, Option<bool>)>> {
        let attempt = i64::from(attempt);
        self.with(|c| {
            let rows = c.query(
                "SELECT lesson, passed FROM memory_injections
                 WHERE run_id = $1 AND task = $2 AND attempt = $3 ORDER BY lesson COLLATE \"C\"",
                &[&run_id, &task, &attempt],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn document(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT title, body FROM memory_documents WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )?
            .map(|r| (r.get(0), r.get(1))))
        })
    }

    fn search(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>> {
        self.with_session(|c| c.ranked(query, kinds, limit))
    }

    fn lesson_ranking(&self, text: &str) -> Result<BTreeMap<String, (f64, bool)>> {
        let hits = self.search(text, &["lesson".into()], 200)?;
        Ok(scaled(hits.into_iter().map(|h| (h.key, h.score)).collect()))
    }

    /// Refreshes the planner's statistics (a search's plan depends on how many documents a
    /// term is in) and clears dead rows; outside any transaction, as `VACUUM` must be.
    fn compact(&mut self) -> Result<()> {
        self.with(|c| {
            c.batch_execute("VACUUM (ANALYZE) memory_documents, memory_lessons")?;
            Ok(())
        })
    }

    #[cfg(feature = "embeddings")]
    fn enable_embeddings(&mut self, _cfg: &fleet_config::EmbeddingsConfig) -> Result<()> {
        Err(MemoryError::Invalid(
            "memory.embeddings: not available with a PostgreSQL store (memory there ranks by \
             PostgreSQL's full-text search); remove the key or use the embedded store"
                .into(),
        ))
    }

    #[cfg(feature = "embeddings")]
    fn embedding_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A write transaction holding [`WRITE_LOCK`], and how many documents it wrote.
struct PgTx<'a, 'b>(&'a mut postgres::Transaction<'b>, usize);

impl Tx for PgTx<'_, '_> {
    fn live(&mut self, scope: Option<&Scope>) -> Result<Vec<Lesson>> {
        match scope {
            Some(s) => live_in_scope(self.0, s),
            None => {
                let rows = self.0.query(
                    "SELECT doc FROM memory_lessons WHERE NOT archived ORDER BY id COLLATE \"C\"",
                    &[],
                )?;
                lessons_of(&rows)
            }
        }
    }

    fn get(&mut self, id: &str) -> Result<Option<Lesson>> {
        get_lesson(self.0, id)
    }

    fn put(&mut self, l: &Lesson) -> Result<()> {
        self.0.execute(
            "INSERT INTO memory_lessons (id, scope, archived, created_at, doc)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, archived = excluded.archived,
                created_at = excluded.created_at, doc = excluded.doc",
            &[
                &l.id,
                &l.scope.key(),
                &l.is_archived(),
                &l.created_at,
                &lesson_doc(l),
            ],
        )?;
        if l.is_archived() {
            self.0.execute(
                "DELETE FROM memory_documents WHERE kind = 'lesson' AND key = $1",
                &[&l.id],
            )?;
        } else {
            self.put_doc("lesson", &l.id, &lesson_title(l), &l.text, l.created_at)?;
        }
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.0
            .execute("DELETE FROM memory_lessons WHERE id = $1", &[&id])?;
        self.0.execute(
            "DELETE FROM memory_documents WHERE kind = 'lesson' AND key = $1",
            &[&id],
        )?;
        Ok(())
    }

    fn unsettled(&mut self, run_id: &str, task: &str, attempt: u32) -> Result<Vec<String>> {
        let rows = self.0.query(
            "SELECT lesson FROM memory_injections
             WHERE run_id = $1 AND task = $2 AND attempt = $3 AND passed IS NULL
             ORDER BY lesson COLLATE \"C\"",
            &[&run_id, &task, &i64::from(attempt)],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn settle(&mut self, run_id: &str, task: &str, attempt: u32, passed: bool) -> Result<()> {
        self.0.execute(
            "UPDATE memory_injections SET passed = $4
             WHERE run_id = $1 AND task = $2 AND attempt = $3 AND passed IS NULL",
            &[&run_id, &task, &i64::from(attempt), &passed],
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
            "INSERT INTO memory_documents (kind, key, title, body, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, key) DO UPDATE SET title = excluded.title, body = excluded.body,
                at = excluded.at",
            &[&kind, &key, &title, &body, &at],
        )?;
        self.1 += 1;
        Ok(())
    }

    fn trim_kind(&mut self, kind: &str, cap: i64) -> Result<Vec<String>> {
        let n: i64 = self
            .0
            .query_one(
                "SELECT count(*) FROM memory_documents WHERE kind = $1",
                &[&kind],
            )?
            .get(0);
        if n <= cap {
            return Ok(Vec::new());
        }
        let rows = self.0.query(
            "DELETE FROM memory_documents WHERE id IN (
                 SELECT id FROM memory_documents WHERE kind = $1 ORDER BY at, id LIMIT $2)
             RETURNING key, at, id",
            &[&kind, &(n - cap)],
        )?;
        let mut dropped: Vec<(i64, i64, String)> = rows
            .iter()
            .map(|r| (r.get(1), r.get(2), r.get(0)))
            .collect();
        dropped.sort();
        Ok(dropped.into_iter().map(|(_, _, k)| k).collect())
    }
}
