//! The memory store, whichever database holds it: the embedded SQLite file `memory.db` beside
//! the instance's state (`sqlite.rs`), or tables in the instance's PostgreSQL store
//! (`postgres.rs`) so that every runner and API replica shares one memory.
//!
//! What a write does (redact, bound, merge a near-duplicate, keep a scope under its cap, weigh
//! an outcome, the upkeep pass) is decided here once, inside one exclusive write transaction
//! that each backend provides ([`Backend::write`]); the backends only store, index and rank.

use crate::lesson::{Lesson, Millis, Scope};
use crate::rules::{self, Policy, TaskContext, Upkeep};
use fleet_secrets::Redactor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Longest lesson text accepted: lessons are advice, not documents.
pub const MAX_LESSON_CHARS: usize = 2000;
/// Longer documents are cut here (with a note saying so) before they are stored.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("memory database error (PostgreSQL): {0}")]
    Postgres(String),
    #[error("memory store {0} is unreachable: {1}")]
    Unreachable(String, String),
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

/// Cosine similarity of a task's text to a lesson from which the lesson is related to it by
/// meaning (embeddings on), whatever words they share.
pub const MIN_COSINE: f32 = 0.45;

/// One search result, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub kind: String,
    pub key: String,
    pub title: String,
    /// The matching passage, matches in `[...]`.
    pub snippet: String,
    /// Higher is better: BM25 on SQLite (negated from SQLite's lower-is-better),
    /// `ts_rank_cd` on PostgreSQL, the fused score with embeddings. Compare within one search.
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

/// Where an instance's memory lives: it follows the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded file (`memory.db` beside `fleet.db`).
    File(PathBuf),
    /// The instance's PostgreSQL store (`store: postgres://…`): shared by every process on it.
    Postgres(String),
}

impl Location {
    /// The memory of an instance whose state directory is `state_root` and whose store is
    /// `store`: that PostgreSQL database, or `memory.db` beside the SQLite store.
    pub fn of_store(state_root: &Path, store: &fleet_store::StoreUrl) -> Location {
        match store {
            fleet_store::StoreUrl::Sqlite(_) => Location::File(state_root.join("memory.db")),
            fleet_store::StoreUrl::Postgres(url) => Location::Postgres(url.clone()),
        }
    }

    /// As [`Location::of_store`], from an open store handle.
    pub fn of_open_store(state_root: &Path, store: &dyn fleet_store::Store) -> Location {
        match store.postgres_url() {
            Some(url) => Location::Postgres(url.to_string()),
            None => Location::File(state_root.join("memory.db")),
        }
    }

    /// For messages: the file, or the database URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Postgres(url) => fleet_store::pg::without_password(url),
        }
    }
}

/// The statements of one exclusive write transaction: a backend holds every other writer
/// off until it commits (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so what is
/// read here is still true when what is decided from it is written.
pub(crate) trait Tx {
    /// Live lessons of `scope` oldest first (`None`: every live lesson, by id).
    fn live(&mut self, scope: Option<&Scope>) -> Result<Vec<Lesson>>;
    fn get(&mut self, id: &str) -> Result<Option<Lesson>>;
    /// Writes a lesson's row and its searchable document (live lessons only are searchable).
    fn put(&mut self, l: &Lesson) -> Result<()>;
    fn delete(&mut self, id: &str) -> Result<()>;
    /// The lessons injected into an attempt whose outcome is not recorded yet, by id.
    fn unsettled(&mut self, run_id: &str, task: &str, attempt: u32) -> Result<Vec<String>>;
    fn settle(&mut self, run_id: &str, task: &str, attempt: u32, passed: bool) -> Result<()>;
    /// Stores (or replaces) a document already redacted and bounded.
    fn put_doc(&mut self, kind: &str, key: &str, title: &str, body: &str, at: Millis)
    -> Result<()>;
    /// Drops the oldest documents of `kind` past `cap`; their keys.
    fn trim_kind(&mut self, kind: &str, cap: i64) -> Result<Vec<String>>;
}

/// The write function a backend runs inside its transaction.
pub(crate) type WriteFn<'a> = dyn FnMut(&mut dyn Tx) -> Result<()> + Send + 'a;

/// What a database must do for memory: store, index, rank. `Send`: a store moves between
/// threads with the run that holds it.
pub(crate) trait Backend: Send {
    /// Runs `f` in one exclusive write transaction, committed when it succeeds.
    fn write(&mut self, f: &mut WriteFn<'_>) -> Result<()>;
    fn lesson(&self, id: &str) -> Result<Option<Lesson>>;
    /// Live or archived lessons oldest first; `None`: every lesson by id.
    fn lessons(&self, archived: Option<bool>) -> Result<Vec<Lesson>>;
    fn live_in_scope(&self, scope: &Scope) -> Result<Vec<Lesson>>;
    fn record_injection(
        &mut self,
        lessons: &[String],
        run_id: &str,
        task: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<()>;
    fn injections(
        &self,
        run_id: &str,
        task: &str,
        attempt: u32,
    ) -> Result<Vec<(String, Option<bool>)>>;
    fn document(&self, kind: &str, key: &str) -> Result<Option<(String, String)>>;
    /// Ranked search, as [`MemoryDb::search`] says.
    fn search(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>>;
    /// Each lesson's text score for a task (best 1), and whether its meaning is close.
    fn lesson_ranking(&self, text: &str) -> Result<BTreeMap<String, (f64, bool)>>;
    fn compact(&mut self) -> Result<()>;
    #[cfg(feature = "embeddings")]
    fn enable_embeddings(&mut self, cfg: &fleet_config::EmbeddingsConfig) -> Result<()>;
    #[cfg(feature = "embeddings")]
    fn embedding_warnings(&self) -> Vec<String>;
}

pub struct MemoryDb {
    backend: Box<dyn Backend>,
    redactor: Redactor,
}

impl MemoryDb {
    /// The embedded SQLite file at `path` (created with its directory when missing).
    pub fn open(path: &Path, redactor: Redactor) -> Result<MemoryDb> {
        let backend = crate::sqlite::SqliteMemory::open(path, redactor.clone())?;
        Ok(MemoryDb {
            backend: Box::new(backend),
            redactor,
        })
    }

    /// Memory in the PostgreSQL database at `url` (its tables created or upgraded). An
    /// unreachable server is [`MemoryError::Unreachable`], never a fallback to a file.
    pub fn open_postgres(url: &str, redactor: Redactor) -> Result<MemoryDb> {
        let backend = crate::postgres::PgMemory::open(url)?;
        Ok(MemoryDb {
            backend: Box::new(backend),
            redactor,
        })
    }

    pub fn open_at(at: &Location, redactor: Redactor) -> Result<MemoryDb> {
        match at {
            Location::File(path) => MemoryDb::open(path, redactor),
            Location::Postgres(url) => MemoryDb::open_postgres(url, redactor),
        }
    }

    /// Opens the store as `fleet.yaml`'s `memory:` section says: with `embeddings` set, search
    /// fuses them in (a build without the feature refuses the key; `fleet-config` already does
    /// at load).
    pub fn open_configured(
        at: &Location,
        redactor: Redactor,
        cfg: &fleet_config::MemoryConfig,
    ) -> Result<MemoryDb> {
        let db = MemoryDb::open_at(at, redactor)?;
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

    /// Turns the embeddings on (SQLite memory only) and embeds what has no vector yet, as far
    /// as the endpoint answers.
    #[cfg(feature = "embeddings")]
    pub fn with_embeddings(mut self, cfg: &fleet_config::EmbeddingsConfig) -> Result<MemoryDb> {
        self.backend.enable_embeddings(cfg)?;
        Ok(self)
    }

    /// Warnings given since the store was opened (each also printed on stderr).
    #[cfg(feature = "embeddings")]
    pub fn embedding_warnings(&self) -> Vec<String> {
        self.backend.embedding_warnings()
    }

    /// Adds a lesson (redacted, bounded). A near-duplicate of a live lesson of its scope is
    /// merged into it instead; then the scope is brought back under its cap.
    pub fn add_lesson(&mut self, lesson: Lesson, now: Millis, p: &Policy) -> Result<Added> {
        let lesson = clean_lesson(&self.redactor, lesson)?;
        let mut added = None;
        self.backend.write(&mut |tx| {
            added = Some(add_in(tx, &lesson, now, p)?);
            Ok(())
        })?;
        Ok(added.expect("the write ran"))
    }

    pub fn lesson(&self, id: &str) -> Result<Option<Lesson>> {
        self.backend.lesson(id)
    }

    /// Live lessons (or archived ones), oldest first.
    pub fn lessons(&self, archived: bool) -> Result<Vec<Lesson>> {
        self.backend.lessons(Some(archived))
    }

    /// Every lesson, archived included, by id (export).
    pub fn all_lessons(&self) -> Result<Vec<Lesson>> {
        self.backend.lessons(None)
    }

    /// Stores a lesson exactly as given (import): no merging, no caps.
    pub fn restore_lesson(&mut self, lesson: &Lesson) -> Result<()> {
        self.backend.write(&mut |tx| tx.put(lesson))
    }

    /// Archives a lesson at a person's word; it stays listed under `--archived`.
    pub fn forget(&mut self, id: &str, now: Millis) -> Result<Lesson> {
        let mut out = None;
        self.backend.write(&mut |tx| {
            let mut l = tx
                .get(id)?
                .ok_or_else(|| MemoryError::NoLesson(id.into()))?;
            if l.archived_at.is_none() {
                l.archived_at = Some(now);
                l.archived_why = Some("forgotten by a person".into());
                tx.put(&l)?;
            }
            out = Some(l);
            Ok(())
        })?;
        Ok(out.expect("the write ran"))
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
        self.backend
            .record_injection(lessons, run_id, task, attempt, now)
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
        let mut out = Vec::new();
        self.backend.write(&mut |tx| {
            let ids = tx.unsettled(run_id, task, attempt)?;
            for id in &ids {
                if let Some(mut l) = tx.get(id)? {
                    rules::record_outcome(&mut l, passed, now, p);
                    tx.put(&l)?;
                }
            }
            tx.settle(run_id, task, attempt, passed)?;
            out = ids;
            Ok(())
        })?;
        Ok(out)
    }

    /// Which lessons an attempt got, and whether it then passed (`None` while it runs).
    pub fn injections(
        &self,
        run_id: &str,
        task: &str,
        attempt: u32,
    ) -> Result<Vec<(String, Option<bool>)>> {
        self.backend.injections(run_id, task, attempt)
    }

    /// The maintenance pass (merge, archive, cap, propose) over every live lesson, in one
    /// transaction; then the index is compacted.
    pub fn upkeep(&mut self, now: Millis, p: &Policy) -> Result<Upkeep> {
        let mut out = None;
        self.backend.write(&mut |tx| {
            let mut live = tx.live(None)?;
            let before: BTreeMap<String, Lesson> =
                live.iter().map(|l| (l.id.clone(), l.clone())).collect();
            let done = rules::upkeep(&mut live, now, p);
            for m in &done.merges {
                tx.delete(&m.dup)?;
            }
            for l in &live {
                if before.get(&l.id) != Some(l) {
                    tx.put(l)?;
                }
            }
            out = Some(done);
            Ok(())
        })?;
        self.compact()?;
        Ok(out.expect("the write ran"))
    }

    /// Tidies the search index (SQLite: merges FTS5's segments, docs/BENCHMARKS.md M1;
    /// PostgreSQL: folds the GIN index's pending list in and refreshes the statistics).
    /// Part of [`MemoryDb::upkeep`]; seconds over 100,000 entries, so not on every write.
    pub fn compact(&mut self) -> Result<()> {
        self.backend.compact()
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
        let mut clean = Vec::new();
        let mut kinds = std::collections::BTreeSet::new();
        for (kind, key, title, body) in docs {
            if !KINDS.contains(&kind) || kind == "lesson" {
                return Err(MemoryError::Invalid(format!(
                    "unknown document kind {kind:?} (one of skill, trace, decision, context, report)"
                )));
            }
            kinds.insert(kind);
            let (title, body) = clean_document(&self.redactor, title, body);
            clean.push((kind, key, title, body));
        }
        let mut dropped = Vec::new();
        self.backend.write(&mut |tx| {
            dropped.clear();
            for (kind, key, title, body) in &clean {
                tx.put_doc(kind, key, title, body, at)?;
            }
            for kind in &kinds {
                dropped.extend(tx.trim_kind(kind, document_cap(kind))?);
            }
            Ok(())
        })?;
        Ok(dropped)
    }

    pub fn document(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        self.backend.document(kind, key)
    }

    /// Ranked full-text search over live lessons and documents, optionally of some kinds
    /// only. Any text is a valid query: it is split into words, each matched as a term, any
    /// of them matching. Terms held by more than [`COMMON_TERM`] of the documents are left
    /// out when the query has a rarer one (as Elasticsearch's common-terms query does): they
    /// weigh little, and scoring every document that holds them is what would make a query
    /// slow. When every term is that common, the rarest is used. The newest [`RANK_WINDOW`]
    /// matching documents are ranked (all of them when fewer match): the work per query is
    /// bounded whatever the store's size, and when a word is everywhere, what is recent is
    /// what matters. SQLite ranks by BM25 (FTS5), PostgreSQL by `ts_rank_cd` over a GIN-indexed
    /// `tsvector`; titles weigh more than bodies in both.
    ///
    /// With embeddings on (feature `embeddings` and `memory.embeddings`, SQLite), this ranking
    /// is fused by reciprocal rank with the documents' cosine similarity to the query, and
    /// [`Hit::score`] is the fused score.
    pub fn search(&self, query: &str, kinds: &[String], limit: usize) -> Result<Vec<Hit>> {
        self.backend.search(query, kinds, limit)
    }

    /// The lessons to put into an attempt's prompt, best first, under the policy's token cap.
    ///
    /// A lesson is a candidate when a trigger of its "applies when" fires (a path, a word), or
    /// when it is related to the task's text: it holds enough of the task's distinctive words
    /// ([`rules::words_match`]), or, with embeddings on, its meaning is close
    /// ([`MIN_COSINE`]). Related lessons are ranked by the text search, fused with the
    /// embeddings' ranking when they are on, scaled so the best is 1: a trigger (1 each)
    /// counts as much as the best text match.
    pub fn recall(&self, ctx: &TaskContext, now: Millis, p: &Policy) -> Result<Vec<Lesson>> {
        let mut candidates = Vec::new();
        for s in &ctx.scopes {
            candidates.extend(self.backend.live_in_scope(s)?);
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let text = self.backend.lesson_ranking(&ctx.text)?;
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
}

/// Adding a lesson inside a write transaction: merge into the oldest near-duplicate of its
/// scope, or insert it and archive what the scope's cap no longer holds.
fn add_in(tx: &mut dyn Tx, lesson: &Lesson, now: Millis, p: &Policy) -> Result<Added> {
    let scope_lessons = tx.live(Some(&lesson.scope))?;
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
        rules::merge(&mut keep, lesson);
        tx.put(&keep)?;
        added.merged_into = Some(keep.id.clone());
        return Ok(added);
    }
    if tx.get(&lesson.id)?.is_some() {
        return Err(MemoryError::Invalid(format!(
            "lesson {} already exists",
            lesson.id
        )));
    }
    tx.put(lesson)?;
    let mut all = scope_lessons;
    all.push(lesson.clone());
    for id in rules::over_cap(&all, now, p) {
        let mut l = all.iter().find(|l| l.id == id).cloned().expect("listed");
        l.archived_at = Some(now);
        l.archived_why = Some(format!(
            "scope {} over its cap of {}",
            l.scope.key(),
            p.scope_cap
        ));
        tx.put(&l)?;
        added.archived.push(id);
    }
    Ok(added)
}

/// A lesson as it may be stored: redacted, trimmed, not empty, not too long.
fn clean_lesson(redactor: &Redactor, mut lesson: Lesson) -> Result<Lesson> {
    lesson.text = redactor.clean_string(lesson.text.trim().to_string());
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
        *t = redactor.clean_string(std::mem::take(t));
    }
    Ok(lesson)
}

/// A document's title and body as they may be stored: redacted, the body cut at
/// [`MAX_DOCUMENT_BYTES`] with a note saying so.
fn clean_document(redactor: &Redactor, title: &str, body: &str) -> (String, String) {
    let mut body = redactor.clean(body).into_owned();
    if body.len() > MAX_DOCUMENT_BYTES {
        let mut cut = MAX_DOCUMENT_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push_str("\n\n[cut: longer than 64 KiB]");
    }
    (redactor.clean(title).into_owned(), body)
}

/// The searchable title of a lesson: its triggers (words, paths, roles, kinds).
pub(crate) fn lesson_title(l: &Lesson) -> String {
    let w = &l.applies_when;
    [
        w.words.join(" "),
        w.paths.join(" "),
        w.roles.join(" "),
        w.kinds.join(" "),
    ]
    .join(" ")
    .trim()
    .to_string()
}

/// The terms a search uses, rarest first, from the query's terms with how many documents
/// hold each (`-1`: unknown, kept) out of `total`: terms in no document go; terms too
/// common go when a rarer one is left (else the rarest stays); then the rarest while
/// the documents they hold add up to [`POSTINGS_BUDGET`].
pub(crate) fn keep_terms(counted: Vec<(String, i64)>, total: i64) -> Vec<(String, i64)> {
    let counted: Vec<(String, i64)> = counted
        .into_iter()
        .filter(|(_, df)| *df != 0)
        .map(|(t, df)| (t, df.max(0)))
        .collect();
    let mut kept: Vec<(String, i64)> = counted
        .iter()
        .filter(|(_, df)| total < SMALL_STORE || (*df as f64) <= total as f64 * COMMON_TERM)
        .cloned()
        .collect();
    if kept.is_empty() {
        kept.extend(counted.iter().min_by_key(|(_, df)| *df).cloned());
    }
    // The rarest terms first, while the documents they are in add up to the budget: ranking
    // counts every document of every term before it ranks the first, so this bounds a
    // query's work; the terms left out are the commonest, which weigh least.
    kept.sort_by_key(|(_, df)| *df);
    let mut postings = 0;
    kept.retain(|(_, df)| {
        let within = postings == 0 || postings + df <= POSTINGS_BUDGET;
        postings += df;
        within
    });
    kept
}

/// Text scores scaled so that the best is 1 (no lesson is close by meaning without
/// embeddings).
pub(crate) fn scaled(ranked: Vec<(String, f64)>) -> BTreeMap<String, (f64, bool)> {
    let best = ranked.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    ranked
        .into_iter()
        .map(|(k, s)| (k, (if best > 0.0 { s / best } else { 0.0 }, false)))
        .collect()
}

/// Words too common to say anything about relevance.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "was", "with",
];

/// The query's words, lowercase, without stopwords and repeats, at most 32: each becomes a
/// quoted term, so `"`, `NEAR(`, `*`, `-`, `|` and `!` in a query are text, never syntax.
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

pub(crate) fn parse_lesson(doc: &str) -> Result<Lesson> {
    serde_json::from_str(doc).map_err(|e| MemoryError::Corrupt(format!("lesson: {e}")))
}

pub(crate) fn lesson_doc(l: &Lesson) -> String {
    serde_json::to_string(l).expect("lessons serialize")
}
