//! The embedded default store: one SQLite file in WAL mode.

use crate::{
    AccountRow, AttemptRow, Batch, EpicBrief, EpicPage, EpicQuery, EpicRow, Event, LeaseRow,
    NewEvent, ProjectRow, Result, RunRow, Store, StoreError, TaskRow, TokenRow, Totals,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod summary;

/// Migrations, applied in order; the index + 1 is the schema version. Never edit a released
/// one: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    runbook_path TEXT NOT NULL,
    runbook_source TEXT NOT NULL,
    repo TEXT NOT NULL,
    base_sha TEXT NOT NULL,
    integration_branch TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    reason TEXT,
    commit_sha TEXT,
    merge_sha TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE TABLE attempts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    task_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    pgid INTEGER,
    exit_code INTEGER,
    outcome TEXT NOT NULL,
    detail TEXT,
    profile TEXT,
    cli TEXT,
    model TEXT,
    account TEXT,
    session_id TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id, n)
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT,
    attempt INTEGER,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    cooldown_until INTEGER,
    backoff_level INTEGER NOT NULL DEFAULT 0,
    disabled TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX attempts_by_start ON attempts(started_at);
"#,
    r#"
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE epics (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX epics_by_created ON epics(created_at, id);
"#,
    r#"
CREATE INDEX epics_by_state ON epics(state, created_at, id);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // Lists and searches read these without parsing every epic's document.
    r#"
ALTER TABLE epics ADD COLUMN request TEXT NOT NULL DEFAULT '';
ALTER TABLE epics ADD COLUMN cycle INTEGER NOT NULL DEFAULT 0;
UPDATE epics SET request = coalesce(json_extract(doc, '$.request'), ''),
                 cycle = coalesce(json_extract(doc, '$.cycle'), 0);
-- Covers the board's counts, with or without a text search, without reading the documents.
CREATE INDEX epics_counts ON epics(state, project, id, request);
"#,
    // A run's (an epic's) latest events without scanning the whole log.
    r#"
CREATE INDEX events_by_run ON events(run_id, seq);
CREATE INDEX runs_by_name ON runs(name);
"#,
    // Fewer pages per commit (a scheduling turn commits once): no AUTOINCREMENT bookkeeping
    // row (events are never deleted, so max(seq) + 1 never hands out a seq twice), and no
    // index on attempts' start, which every attempt paid for; `attempts_since` finds recent
    // attempts through the runs that had not finished by then.
    r#"
CREATE TABLE events_v2 (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT,
    attempt INTEGER,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
INSERT INTO events_v2 (seq, at, run_id, task, attempt, kind, data)
    SELECT seq, at, run_id, task, attempt, kind, data FROM events ORDER BY seq;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_by_run ON events(run_id, seq);
DELETE FROM sqlite_sequence WHERE name = 'events';
DROP INDEX attempts_by_start;
"#,
    // Named leases (an epic's driver, a run's lock): in the store, so every process that
    // shares the database agrees on who holds what.
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // Epic summaries for lists and outcomes (`crate::summary`).
    summary::MIGRATION,
];

/// A driver error as the store's own: busy and locked stay recognisable (they may pass if
/// tried again); everything else keeps SQLite's message.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Busy(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// How often a waiter for events looks at the database itself: commits of this store wake it
/// at once, another process's commits only at this tick.
const EVENTS_POLL: Duration = Duration::from_millis(100);

/// The store's clock for leases (ms since the epoch).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: a commit survives the process being killed at any
    /// moment (the WAL is in the OS page cache); a power loss may drop the last commits.
    Process,
    /// `synchronous=FULL`: every commit is fsynced; survives power loss too.
    Full,
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Bumped by every commit of events through this store; wakes `wait_for_events`.
    committed: (Mutex<u64>, Condvar),
    /// Set for a database file (not for an in-memory one); held for its `Drop`, which stops
    /// the thread after `conn` closed, so the thread's connection is the last one and makes
    /// the final checkpoint.
    _checkpointer: Option<Checkpointer>,
}

/// How often the checkpointer looks for new commits to copy into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL pages at which a commit wakes the checkpointer before its tick. The WAL file only grows
/// until a commit finds all of it copied and starts it over, and a long one costs: each new
/// page of it is a new page of the file to allocate, and deleting it at close frees every
/// block (milliseconds for a few tens of megabytes).
const WAKE_AT_PAGES: i32 = 256;

/// Checkpoint passes the thread makes per wake-up to end between two commits (see `catch_up`).
const CATCH_UP_PASSES: usize = 8;

/// WAL pages at which the store's own commit copies what came after the thread's last pass:
/// under a writer that never pauses, the thread's passes never end between two commits, and
/// only a checkpoint on the writer's own connection lets its next commit start the WAL over.
/// Cheap there: the thread has just copied all but the last few commits.
const CATCH_UP_AT_PAGES: i32 = 4 * WAKE_AT_PAGES;

/// The least time between two checkpoints woken by commits: if a reader keeps a checkpoint
/// from finishing, the WAL stays long and every commit would wake the thread again.
const WAKE_GAP: Duration = Duration::from_millis(20);

/// WAL pages at which a commit checkpoints by itself, whatever the thread did: when the thread
/// falls behind (a loaded machine, a slow disk), this bounds the WAL file (8 MB). A checkpoint
/// the thread is making meanwhile, or readers, only put it off to a later commit.
const WAL_LIMIT_PAGES: i32 = 2 * CATCH_UP_AT_PAGES;

/// Copies the WAL back into the database file on its own thread and connection. SQLite's
/// automatic checkpoint runs inside the commit that crosses its threshold, with two fsyncs, so
/// every few thousand pages the coordinator's turn (and every task waiting on it) would stall
/// for tens of milliseconds; this one runs beside it (`PASSIVE`: it never blocks a writer).
/// It runs every [`CHECKPOINT_EVERY`] after commits, and sooner when the WAL grows past
/// [`WAKE_AT_PAGES`]; its passes (`catch_up`) let the next commit start the WAL over, and
/// [`CATCH_UP_AT_PAGES`] bounds it when they cannot.
struct Checkpointer {
    shared: Arc<CheckpointSignal>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the store's commits (through the WAL hook) tell the checkpointer thread.
#[derive(Default)]
struct CheckpointSignal {
    /// Commits so far; the thread checkpoints when this moved.
    commits: AtomicU64,
    /// A commit found the WAL long: checkpoint without waiting for the tick.
    long: AtomicBool,
    /// The thread finished a checkpoint since the store's connection last made one.
    caught_up: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl CheckpointSignal {
    /// Called after every commit of the store's connection, with the WAL's length in pages.
    fn committed(&self, wal_pages: i32) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if wal_pages >= WAKE_AT_PAGES && !self.long.swap(true, Ordering::AcqRel) {
            // Only a pass made from now on leaves the store's own catch-up little to copy.
            self.caught_up.store(false, Ordering::Release);
            let _held = self.stop.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
    }

    /// Sleeps until the tick (`every` from now), or a long WAL (no sooner than `earliest`);
    /// false once stopped.
    fn wait(&self, every: Duration, earliest: Instant) -> bool {
        let tick = Instant::now() + every;
        let mut stopped = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return false;
            }
            let now = Instant::now();
            let long = self.long.load(Ordering::Acquire);
            if now >= tick || (long && now >= earliest) {
                break;
            }
            let until = if long { earliest.min(tick) } else { tick };
            stopped = self
                .wake
                .wait_timeout(stopped, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.long.store(false, Ordering::Release);
        true
    }
}

impl Checkpointer {
    /// Starts the thread and hooks `store_conn`'s commits to it. `None` if no thread could be
    /// started: commits then checkpoint by themselves.
    fn start(
        path: &Path,
        store_conn: &mut Connection,
        every: Duration,
    ) -> Result<Option<Checkpointer>> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let shared = Arc::new(CheckpointSignal::default());
        let signal = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-checkpoint".into())
            .spawn(move || {
                // The first tick copies what opening wrote (migrations) too.
                let mut done = u64::MAX;
                let mut earliest = Instant::now();
                while signal.wait(every, earliest) {
                    let now = signal.commits.load(Ordering::Relaxed);
                    // A busy or failed checkpoint is tried again on the next tick; the data
                    // is safe in the WAL meanwhile.
                    if now != done && catch_up(&conn) {
                        done = now;
                        signal.caught_up.store(true, Ordering::Release);
                    }
                    earliest = Instant::now() + WAKE_GAP;
                }
            });
        let Ok(thread) = thread else {
            return Ok(None);
        };
        let signal = shared.clone();
        // Replaces SQLite's own automatic checkpoint (also a WAL hook); it stays the last resort.
        store_conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
            signal.committed(pages);
            let behind =
                pages >= CATCH_UP_AT_PAGES && signal.caught_up.swap(false, Ordering::AcqRel);
            if behind || pages >= WAL_LIMIT_PAGES {
                // The commit is done: a checkpoint that is busy (the thread's) or fails is
                // only tried again later, never reported as the commit's error.
                let _ = wal.checkpoint();
            }
            Ok(())
        }))?;
        Ok(Some(Checkpointer {
            shared,
            thread: Some(thread),
        }))
    }
}

/// Copies the WAL into the database file (`PASSIVE`: never blocks a writer). A commit starts
/// the WAL over only if it finds all of it copied, and commits keep coming while a checkpoint
/// copies; so after the first pass, shorter ones copy what came meanwhile until a pass finds
/// nothing new (it ended between two commits) or [`CATCH_UP_PASSES`] were made. False if a
/// checkpoint failed or was busy (another was running); frames that readers still need are
/// left for a later wake-up.
fn catch_up(conn: &Connection) -> bool {
    let mut seen = -1;
    for _ in 0..CATCH_UP_PASSES {
        let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match pass {
            Ok((0, frames, copied)) if frames == copied && frames == seen => break,
            Ok((0, frames, _)) => seen = frames,
            _ => return false,
        }
    }
    true
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// The `meta` key of the instance's id: a random name (8 hex digits) made on the
    /// database's first open and kept for its life, which tells this instance's git branches
    /// from another's on the same repository.
    pub const INSTANCE_ID_KEY: &str = "instance_id";

    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        Self::open_checkpointing(path, durability, CHECKPOINT_EVERY)
    }

    /// [`SqliteStore::open`] with the checkpointer's tick set (tests).
    fn open_checkpointing(
        path: &Path,
        durability: Durability,
        every: Duration,
    ) -> Result<SqliteStore> {
        let mut conn = Self::init(Connection::open(path)?, durability)?;
        let checkpointer = Checkpointer::start(path, &mut conn, every)?;
        if checkpointer.is_none() {
            conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            committed: Default::default(),
            _checkpointer: checkpointer,
        })
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<SqliteStore> {
        let conn = Self::init(Connection::open_in_memory()?, Durability::Process)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            committed: Default::default(),
            _checkpointer: None,
        })
    }

    fn init(conn: Connection, durability: Durability) -> Result<Connection> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Another process may be creating or upgrading the database this very moment: what
        // SQLite reports busy without waiting (switching to WAL, say) is tried again.
        let _mode: String =
            when_not_busy(|| Ok(conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?))?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Process => "NORMAL",
                Durability::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The `Checkpointer` copies the WAL back; a commit does only as a last resort.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_LIMIT_PAGES)?;
        when_not_busy(|| migrate(&conn))?;
        when_not_busy(|| summary::backfill(&conn))?;
        when_not_busy(|| ensure_instance_id(&conn))?;
        Ok(conn)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }

    /// Wakes the waiters for events after a commit that added some.
    fn announce(&self, events: usize) {
        if events > 0 {
            let (count, cv) = &self.committed;
            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            cv.notify_all();
        }
    }

    /// Runs one epic write (`sql` binds the epic's columns as ?1..?8 and `expected` as ?9)
    /// with its events in one transaction; `None`, and nothing written, when it changed no row.
    fn write_epic(
        &self,
        sql: &str,
        epic: &EpicRow,
        expected: Option<i64>,
        events: &[NewEvent],
    ) -> Result<Option<Vec<u64>>> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let doc = to_doc(epic);
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![
                &epic.id,
                &epic.project,
                &epic.state,
                &epic.created_at,
                &epic.updated_at,
                &doc,
                &epic.request,
                &epic.cycle,
            ];
            if let Some(v) = &expected {
                args.push(v);
            }
            if tx.execute(sql, args.as_slice())? == 0 {
                return Ok(None);
            }
            summary::write(&tx, epic)?;
            let out = insert_events(&tx, events)?;
            tx.commit()?;
            Ok(Some(out.into_iter().map(|e| e.seq).collect()))
        })
        .inspect(|_| self.announce(events.len()))
    }
}

/// How long a statement waits for another connection's (another process's) write to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` again while SQLite reports the database busy or locked, up to [`BUSY_TIMEOUT`]:
/// for the few places SQLite answers busy at once instead of calling the busy handler.
fn when_not_busy<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(StoreError::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let version = |c: &Connection| -> Result<i64> {
        Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    };
    let known = MIGRATIONS.len() as i64;
    let check = |found: i64| {
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        Ok(found == known)
    };
    if check(version(conn)?)? {
        return Ok(());
    }
    // All pending migrations in one transaction: a failed upgrade leaves the database as it
    // was, and a new one is made with one commit instead of one per migration. `IMMEDIATE`,
    // and the version read again inside: another process opening the database at the same
    // moment migrates first or waits, never both.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if check(found)? {
        return Ok(());
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

/// Makes the instance's id on the database's first open (see [`INSTANCE_ID_KEY`]); read
/// first, so later opens write nothing.
fn ensure_instance_id(conn: &Connection) -> Result<()> {
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [SqliteStore::INSTANCE_ID_KEY],
            |r| r.get(0),
        )
        .optional()?;
    if found.is_none() {
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, lower(hex(randomblob(4))))",
            [SqliteStore::INSTANCE_ID_KEY],
        )?;
    }
    Ok(())
}

/// Runs `f` in a transaction: committed if `f` succeeds, rolled back otherwise. `BEGIN` and
/// `COMMIT` are cached statements: the engine commits once per scheduling turn, and
/// `Connection::transaction` parses both again every time.
fn in_transaction<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // `IMMEDIATE`: the write lock is taken (waiting while another process holds it) before
    // anything is read. A deferred transaction that read first and then found another
    // process's commit newer than what it read fails at once with "database is locked".
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let done = f(conn).and_then(|value| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(value)
    });
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// A task row's columns, as `?1..?12` in the order of the `tasks` table.
macro_rules! task_params {
    ($t:expr) => {
        params![
            $t.run_id,
            $t.idx,
            $t.id,
            $t.state,
            $t.attempts,
            $t.failures,
            $t.not_before,
            $t.reason,
            $t.commit_sha,
            $t.merge_sha,
            $t.started_at,
            $t.finished_at
        ]
    };
}

fn insert_task(tx: &Connection, t: &TaskRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tasks (run_id, idx, id, state, attempts, failures, not_before, reason,
                            commit_sha, merge_sha, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(task_params!(t))?;
    Ok(())
}

/// Writes a task row, inserting it if it is new. A task's row exists from its run's creation
/// on and changes at every transition: an update finds it with one search, where an upsert
/// (`INSERT .. ON CONFLICT DO UPDATE`) searches to insert, then again to update.
fn upsert_task(tx: &Connection, t: &TaskRow) -> Result<()> {
    let updated = tx
        .prepare_cached(
            "UPDATE tasks SET idx = ?2, state = ?4, attempts = ?5, failures = ?6,
                not_before = ?7, reason = ?8, commit_sha = ?9, merge_sha = ?10,
                started_at = ?11, finished_at = ?12
             WHERE run_id = ?1 AND id = ?3",
        )?
        .execute(task_params!(t))?;
    if updated == 0 {
        insert_task(tx, t)?;
    }
    Ok(())
}

fn upsert_attempt(tx: &Connection, a: &AttemptRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO attempts (run_id, task_id, n, started_at, finished_at, pgid, exit_code,
                               outcome, detail, profile, cli, model, account, session_id,
                               input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                               cost_usd)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT (run_id, task_id, n) DO UPDATE SET
            started_at = excluded.started_at, finished_at = excluded.finished_at,
            pgid = excluded.pgid, exit_code = excluded.exit_code,
            outcome = excluded.outcome, detail = excluded.detail, profile = excluded.profile,
            cli = excluded.cli, model = excluded.model, account = excluded.account,
            session_id = excluded.session_id, input_tokens = excluded.input_tokens,
            output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens,
            cache_write_tokens = excluded.cache_write_tokens, cost_usd = excluded.cost_usd",
    )?
    .execute(params![
        a.run_id,
        a.task_id,
        a.n,
        a.started_at,
        a.finished_at,
        a.pgid,
        a.exit_code,
        a.outcome,
        a.detail,
        a.profile,
        a.cli,
        a.model,
        a.account,
        a.session_id,
        a.input_tokens.min(i64::MAX as u64) as i64,
        a.output_tokens.min(i64::MAX as u64) as i64,
        a.cache_read_tokens.min(i64::MAX as u64) as i64,
        a.cache_write_tokens.min(i64::MAX as u64) as i64,
        a.cost_usd
    ])?;
    Ok(())
}

fn insert_events(tx: &Connection, events: &[NewEvent]) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (at, run_id, task, attempt, kind, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in events {
        stmt.execute(params![
            e.at,
            e.run_id,
            e.task,
            e.attempt,
            e.kind,
            e.data.to_string()
        ])?;
        out.push(Event {
            seq: tx.last_insert_rowid() as u64,
            at: e.at,
            run_id: e.run_id.clone(),
            task: e.task.clone(),
            attempt: e.attempt,
            kind: e.kind.clone(),
            data: e.data.clone(),
        });
    }
    Ok(out)
}

fn upsert_account(tx: &Connection, a: &AccountRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO accounts (name, cooldown_until, backoff_level, disabled, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET cooldown_until = excluded.cooldown_until,
            backoff_level = excluded.backoff_level, disabled = excluded.disabled,
            updated_at = excluded.updated_at",
    )?
    .execute(params![
        a.name,
        a.cooldown_until,
        a.backoff_level,
        a.disabled,
        a.updated_at
    ])?;
    Ok(())
}

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        run_id: r.get(0)?,
        task_id: r.get(1)?,
        n: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        pgid: r.get(5)?,
        exit_code: r.get(6)?,
        outcome: r.get(7)?,
        detail: r.get(8)?,
        profile: r.get(9)?,
        cli: r.get(10)?,
        model: r.get(11)?,
        account: r.get(12)?,
        session_id: r.get(13)?,
        input_tokens: r.get::<_, i64>(14)? as u64,
        output_tokens: r.get::<_, i64>(15)? as u64,
        cache_read_tokens: r.get::<_, i64>(16)? as u64,
        cache_write_tokens: r.get::<_, i64>(17)? as u64,
        cost_usd: r.get(18)?,
    })
}

const ATTEMPT_COLUMNS: &str = "run_id, task_id, n, started_at, finished_at, pgid, exit_code, outcome, detail, \
                               profile, cli, model, account, session_id, input_tokens, output_tokens, \
                               cache_read_tokens, cache_write_tokens, cost_usd";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        name: r.get(1)?,
        runbook_path: r.get(2)?,
        runbook_source: r.get(3)?,
        repo: r.get(4)?,
        base_sha: r.get(5)?,
        integration_branch: r.get(6)?,
        state: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

const RUN_COLUMNS: &str = "id, name, runbook_path, runbook_source, repo, base_sha, \
                           integration_branch, state, created_at, updated_at, finished_at";

fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_doc<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("rows serialize")
}

fn params_of(args: &[Box<dyn rusqlite::ToSql>]) -> Vec<&dyn rusqlite::ToSql> {
    args.iter().map(|a| a.as_ref()).collect()
}

/// An event row, its data still text.
fn event_row(r: &Row<'_>) -> rusqlite::Result<(Event, String)> {
    Ok((
        Event {
            seq: r.get::<_, i64>(0)? as u64,
            at: r.get(1)?,
            run_id: r.get(2)?,
            task: r.get(3)?,
            attempt: r.get(4)?,
            kind: r.get(5)?,
            data: serde_json::Value::Null,
        },
        r.get(6)?,
    ))
}

fn event_data((mut e, data): (Event, String)) -> Result<Event> {
    e.data = serde_json::from_str(&data)
        .map_err(|err| StoreError::Corrupt(format!("event {}: {err}", e.seq)))?;
    Ok(e)
}

/// The WHERE clause shared by the page, its total and its counts.
fn epic_filter(q: &EpicQuery, with_states: bool) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(p) = &q.project {
        args.push(Box::new(p.clone()));
        clauses.push(format!("project = ?{}", args.len()));
    }
    if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Box::new(format!("%{escaped}%")));
        let n = args.len();
        clauses.push(format!(
            "(id LIKE ?{n} ESCAPE '\\' OR request LIKE ?{n} ESCAPE '\\')"
        ));
    }
    if with_states && !q.states.is_empty() {
        let mut marks = Vec::new();
        for st in &q.states {
            args.push(Box::new(st.clone()));
            marks.push(format!("?{}", args.len()));
        }
        clauses.push(format!("state IN ({})", marks.join(", ")));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0)?,
        scope: r.get(1)?,
        hash: r.get(2)?,
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

impl Store for SqliteStore {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        self.with(|conn| {
            let got: Option<String> = conn
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3 + ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                        expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3
                     RETURNING holder",
                )?
                .query_row(params![name, holder, now, ttl.as_millis() as i64], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(got.is_some())
        })
    }

    fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let until = now_ms() + ttl.as_millis() as i64;
        self.with(|conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2",
                )?
                .execute(params![name, holder, until])?;
            Ok(n == 1)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
    }

    fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        let now = now_ms();
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, holder, expires_at FROM leases WHERE name = ?1 AND expires_at > ?2",
                )?
                .query_row(params![name, now], |r| {
                    Ok(LeaseRow {
                        name: r.get(0)?,
                        holder: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    fn wait_for_events(&self, after: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the wake-up count before the database: a commit between the two is then
            // seen as a changed count rather than slept through.
            let (count, cv) = &self.committed;
            let seen = *count.lock().unwrap_or_else(|e| e.into_inner());
            let newest = self.newest_seq()?;
            let now = Instant::now();
            if newest > after || now >= deadline {
                return Ok(newest);
            }
            let guard = count.lock().unwrap_or_else(|e| e.into_inner());
            if *guard == seen {
                let wait = EVENTS_POLL.min(deadline - now);
                let _ = cv.wait_timeout(guard, wait);
            }
        }
    }

    fn epic_page(&self, q: &EpicQuery) -> Result<EpicPage> {
        self.with(|conn| {
            let (filter, args) = epic_filter(q, false);
            let mut counts = std::collections::BTreeMap::new();
            let mut st = conn.prepare_cached(&format!(
                "SELECT state, count(*) FROM epics {filter} GROUP BY state"
            ))?;
            let rows = st.query_map(params_of(&args).as_slice(), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (state, n) = row?;
                counts.insert(state, n as u64);
            }
            // The total is the counts of the selected states: one scan, not two.
            let total: u64 = counts
                .iter()
                .filter(|(s, _)| q.states.is_empty() || q.states.contains(s))
                .map(|(_, n)| *n)
                .sum();
            let (filter, mut args) = epic_filter(q, true);
            args.push(Box::new(q.limit as i64));
            args.push(Box::new(q.offset as i64));
            let n = args.len();
            let mut st = conn.prepare_cached(&format!(
                "SELECT id, project, request, state, cycle, created_at, updated_at
                 FROM epics {filter} ORDER BY created_at DESC, id DESC LIMIT ?{} OFFSET ?{n}",
                n - 1
            ))?;
            let epics = st
                .query_map(params_of(&args).as_slice(), |r| {
                    Ok(EpicBrief {
                        id: r.get(0)?,
                        project: r.get(1)?,
                        request: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        state: r.get(3)?,
                        cycle: r.get::<_, Option<u32>>(4)?.unwrap_or(0),
                        created_at: r.get(5)?,
                        updated_at: r.get(6)?,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(EpicPage {
                total,
                counts,
                epics,
            })
        })
    }

    fn add_token(&self, t: &TokenRow) -> Result<()> {
        self.with(|conn| {
            let n = conn.execute(
                "INSERT INTO tokens (name, scope, hash, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![t.name, t.scope, t.hash, t.created_at, t.revoked_at],
            )?;
            if n == 0 {
                return Err(StoreError::Exists("token", t.name.clone()));
            }
            Ok(())
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, scope, hash, created_at, revoked_at FROM tokens
                     WHERE hash = ?1 AND revoked_at IS NULL",
                )?
                .query_row([hash], token_row)
                .optional()?)
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.with(|conn| {
            let mut st = conn.prepare(
                "SELECT name, scope, hash, created_at, revoked_at FROM tokens ORDER BY created_at, name",
            )?;
            let rows = st
                .query_map([], token_row)?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn revoke_token(&self, name: &str, at: i64) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, at],
            )?;
            Ok(n > 0)
        })
    }

    fn newest_seq(&self) -> Result<u64> {
        self.with(|conn| {
            let n: i64 =
                conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    fn totals(&self) -> Result<Totals> {
        self.with(|conn| {
            let mut t = Totals::default();
            let count = |sql: &str| -> Result<std::collections::BTreeMap<String, u64>> {
                let mut st = conn.prepare_cached(sql)?;
                let rows =
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                let mut m = std::collections::BTreeMap::new();
                for row in rows {
                    let (k, n) = row?;
                    m.insert(k, n as u64);
                }
                Ok(m)
            };
            t.tasks_by_state = count("SELECT state, count(*) FROM tasks GROUP BY state")?;
            t.attempts_by_outcome =
                count("SELECT outcome, count(*) FROM attempts GROUP BY outcome")?;
            let mut st = conn.prepare_cached(
                "SELECT coalesce(account, ''), sum(cost_usd),
                        sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
                 FROM attempts WHERE profile IS NOT NULL GROUP BY 1",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (a, usd, tokens) = row?;
                t.spend_by_account.insert(a, (usd, tokens as u64));
            }
            Ok(t)
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn add_project(&self, project: &ProjectRow) -> Result<()> {
        self.with(|conn| {
            let n = conn.execute(
                "INSERT INTO projects (name, doc) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![project.name, to_doc(project)],
            )?;
            if n == 0 {
                return Err(StoreError::Exists("project", project.name.clone()));
            }
            Ok(())
        })
    }

    fn project(&self, name: &str) -> Result<Option<ProjectRow>> {
        self.with(|conn| {
            let doc: Option<String> = conn
                .query_row("SELECT doc FROM projects WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            doc.map(|d| from_doc("project", &d)).transpose()
        })
    }

    fn projects(&self) -> Result<Vec<ProjectRow>> {
        self.with(|conn| {
            let mut st = conn.prepare("SELECT doc FROM projects ORDER BY name")?;
            let docs = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_doc("project", d)).collect()
        })
    }

    fn save_epic(&self, epic: &EpicRow, events: &[NewEvent]) -> Result<Vec<u64>> {
        self.write_epic(
            "INSERT INTO epics (id, project, state, created_at, updated_at, doc, request, cycle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET project = excluded.project,
                state = excluded.state, updated_at = excluded.updated_at, doc = excluded.doc,
                request = excluded.request, cycle = excluded.cycle",
            epic,
            None,
            events,
        )?
        .ok_or_else(|| StoreError::Corrupt(format!("epic {:?} was not written", epic.id)))
    }

    fn create_epic(&self, epic: &EpicRow, events: &[NewEvent]) -> Result<Vec<u64>> {
        self.write_epic(
            "INSERT INTO epics (id, project, state, created_at, updated_at, doc, request, cycle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
            epic,
            None,
            events,
        )?
        .ok_or_else(|| StoreError::Exists("epic", epic.id.clone()))
    }

    fn update_epic(&self, epic: &EpicRow, expected: i64, events: &[NewEvent]) -> Result<Vec<u64>> {
        self.write_epic(
            "UPDATE epics SET project = ?2, state = ?3, created_at = ?4, updated_at = ?5,
                    doc = ?6, request = ?7, cycle = ?8
             WHERE id = ?1 AND updated_at = ?9",
            epic,
            Some(expected),
            events,
        )?
        .ok_or_else(|| StoreError::Conflict("epic", epic.id.clone()))
    }

    fn epic(&self, id: &str) -> Result<Option<EpicRow>> {
        self.with(|conn| {
            let doc: Option<String> = conn
                .query_row("SELECT doc FROM epics WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            doc.map(|d| from_doc("epic", &d)).transpose()
        })
    }

    fn epics(&self) -> Result<Vec<EpicRow>> {
        self.with(|conn| {
            let mut st = conn.prepare("SELECT doc FROM epics ORDER BY created_at, id")?;
            let docs = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_doc("epic", d)).collect()
        })
    }

    fn epic_summaries(&self) -> Result<Vec<crate::EpicSummary>> {
        self.with(|conn| summary::read_all(conn))
    }

    fn attempt_tallies(&self) -> Result<crate::AttemptTallies> {
        self.with(|conn| summary::tallies(conn))
    }

    fn create_run(
        &self,
        run: &RunRow,
        tasks: &[TaskRow],
        events: &[NewEvent],
    ) -> Result<Vec<Event>> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM runs WHERE id = ?1", [&run.id], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::RunExists(run.id.clone()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
                ),
                params![
                    run.id,
                    run.name,
                    run.runbook_path,
                    run.runbook_source,
                    run.repo,
                    run.base_sha,
                    run.integration_branch,
                    run.state,
                    run.created_at,
                    run.updated_at,
                    run.finished_at
                ],
            )?;
            for t in tasks {
                insert_task(&tx, t)?;
            }
            let out = insert_events(&tx, events)?;
            tx.commit()?;
            Ok(out)
        })
        .inspect(|_| self.announce(events.len()))
    }

    fn commit(&self, batch: &Batch) -> Result<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|conn| {
            in_transaction(conn, |tx| {
                if let Some(change) = &batch.run_state {
                    tx.execute(
                        "UPDATE runs SET state = ?2, updated_at = ?3, finished_at = ?4 WHERE id = ?1",
                        params![change.run_id, change.state, change.at, change.finished_at],
                    )?;
                }
                for t in &batch.tasks {
                    upsert_task(tx, t)?;
                }
                for a in &batch.attempts {
                    upsert_attempt(tx, a)?;
                }
                for a in &batch.accounts {
                    upsert_account(tx, a)?;
                }
                let mut seqs = Vec::with_capacity(batch.events.len());
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO events (at, run_id, task, attempt, kind, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for e in &batch.events {
                    stmt.execute(params![e.at, e.run_id, e.task, e.attempt, e.kind, e.data.to_string()])?;
                    seqs.push(tx.last_insert_rowid() as u64);
                }
                Ok(seqs)
            })
        })
        .inspect(|_| self.announce(batch.events.len()))
    }

    fn run(&self, id: &str) -> Result<Option<RunRow>> {
        self.with(|conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                    [id],
                    run_from_row,
                )
                .optional()?)
        })
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC"
            ))?;
            let rows = stmt
                .query_map([], run_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn runs_named(&self, prefix: &str) -> Result<Vec<RunRow>> {
        // A range on the name (not LIKE, whose wildcards a prefix could contain) uses the index.
        let end = format!("{prefix}\u{10FFFF}");
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE name >= ?1 AND name < ?2
                 ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map(params![prefix, end], run_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, idx, id, state, attempts, failures, not_before, reason,
                        commit_sha, merge_sha, started_at, finished_at
                 FROM tasks WHERE run_id = ?1 ORDER BY idx",
            )?;
            let rows = stmt
                .query_map([run_id], |r| {
                    Ok(TaskRow {
                        run_id: r.get(0)?,
                        idx: r.get(1)?,
                        id: r.get(2)?,
                        state: r.get(3)?,
                        attempts: r.get(4)?,
                        failures: r.get(5)?,
                        not_before: r.get(6)?,
                        reason: r.get(7)?,
                        commit_sha: r.get(8)?,
                        merge_sha: r.get(9)?,
                        started_at: r.get(10)?,
                        finished_at: r.get(11)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ?1 ORDER BY task_id, n"
            ))?;
            let rows = stmt
                .query_map([run_id], attempt_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn accounts(&self) -> Result<Vec<AccountRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, cooldown_until, backoff_level, disabled, updated_at FROM accounts ORDER BY name",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(AccountRow {
                        name: r.get(0)?,
                        cooldown_until: r.get(1)?,
                        backoff_level: r.get(2)?,
                        disabled: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn attempts_since(&self, since: i64) -> Result<Vec<AttemptRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id IN
                     (SELECT id FROM runs WHERE finished_at IS NULL OR finished_at >= ?1)
                   AND started_at >= ?1
                 ORDER BY started_at"
            ))?;
            let rows = stmt
                .query_map([since], attempt_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn events(&self, run_id: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.with(|conn| {
            // Two statements, so one run's events come from the `events_by_run` index.
            let rows = match run_id {
                Some(run) => conn
                    .prepare_cached(
                        "SELECT seq, at, run_id, task, attempt, kind, data FROM events
                         WHERE run_id = ?2 AND seq > ?1 ORDER BY seq LIMIT ?3",
                    )?
                    .query_map(params![after as i64, run, limit as i64], event_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                None => conn
                    .prepare_cached(
                        "SELECT seq, at, run_id, task, attempt, kind, data FROM events
                         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )?
                    .query_map(params![after as i64, limit as i64], event_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            rows.into_iter().map(event_data).collect()
        })
    }

    fn latest_events(&self, run_ids: &[String], limit: usize) -> Result<Vec<Event>> {
        self.with(|conn| {
            let mut rows = Vec::new();
            let mut st = conn.prepare_cached(
                "SELECT seq, at, run_id, task, attempt, kind, data FROM events
                 WHERE run_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            for run in run_ids {
                rows.extend(
                    st.query_map(params![run, limit as i64], event_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                );
            }
            rows.sort_by_key(|(e, _)| e.seq);
            rows.dedup_by_key(|(e, _)| e.seq);
            let skip = rows.len().saturating_sub(limit);
            rows.into_iter().skip(skip).map(event_data).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `n` events of about 200 bytes each in one batch; returns the database's
    /// logical size in bytes.
    fn commit_events(store: &SqliteStore, n: i64) -> u64 {
        let events: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent {
                at: i,
                run_id: "r".into(),
                task: Some(format!("task-{i}")),
                attempt: Some(1),
                kind: "agent.message".into(),
                data: serde_json::json!({"text": "x".repeat(200)}),
            })
            .collect();
        store
            .commit(&Batch {
                events,
                ..Batch::default()
            })
            .unwrap();
        store
            .with(|conn| {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                Ok((pages * size) as u64)
            })
            .unwrap()
    }

    /// A store in a fresh directory whose checkpointer ticks `every`.
    fn store_ticking(every: Duration) -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let store = SqliteStore::open_checkpointing(&path, Durability::Process, every).unwrap();
        (dir, path, store)
    }

    /// Pages in the WAL file next to the database at `path`.
    fn wal_pages(path: &Path) -> u64 {
        std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len()
            / 4096
    }

    /// Waits (at most 10 s) for the database file to hold `logical` bytes; returns its size.
    fn file_reaches(path: &Path, logical: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let file_len = || std::fs::metadata(path).unwrap().len();
        while file_len() < logical && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        file_len()
    }

    /// Commits land in the WAL; the checkpointer, not the commits, copies them into the
    /// database file at its tick (no commit here comes near `WAL_LIMIT_PAGES`, nor near
    /// `WAKE_AT_PAGES`).
    #[test]
    fn the_checkpointer_copies_commits_into_the_database_file_at_its_tick() {
        let (_dir, path, store) = store_ticking(Duration::from_millis(200));
        let logical = commit_events(&store, 100);
        let wal = wal_pages(&path);
        assert!(wal < WAKE_AT_PAGES as u64, "{wal} pages");
        assert_eq!(file_reaches(&path, logical), logical);
        assert_eq!(store.events(Some("r"), 90, 100).unwrap().len(), 10);
    }

    /// A commit that leaves the WAL long wakes the checkpointer at once (its tick here is an
    /// hour away), so the WAL file stays small.
    #[test]
    fn a_long_wal_wakes_the_checkpointer_before_its_tick() {
        let (_dir, path, store) = store_ticking(Duration::from_secs(3600));
        let logical = commit_events(&store, 5000);
        let wal = wal_pages(&path);
        assert!(wal > WAKE_AT_PAGES as u64, "{wal} pages");
        assert_eq!(
            file_reaches(&path, logical),
            logical,
            "the database file holds every page"
        );
        assert_eq!(store.events(Some("r"), 4990, 100).unwrap().len(), 10);
    }

    /// Under a writer that never pauses, the WAL still starts over (its header counts the
    /// restarts), and the file stays within `WAL_LIMIT_PAGES` and what comes while a
    /// checkpoint of the thread's holds one off, instead of growing with every commit (to
    /// over 10,000 pages here).
    #[test]
    fn the_wal_starts_over_under_a_writer_that_never_pauses() {
        let (_dir, path, store) = store_ticking(Duration::from_secs(3600));
        for i in 0..5000 {
            let event = |kind: &str| NewEvent {
                at: i,
                run_id: "r".into(),
                task: Some(format!("task-{i}")),
                attempt: Some(1),
                kind: kind.into(),
                data: serde_json::json!({"n": i}),
            };
            store
                .commit(&Batch {
                    events: vec![event("task.started"), event("task.done")],
                    ..Batch::default()
                })
                .unwrap();
        }
        let header = std::fs::read(path.with_extension("db-wal")).unwrap();
        let restarts = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let wal = wal_pages(&path);
        assert!(restarts >= 1, "the WAL never started over ({wal} pages)");
        assert!(wal <= 2 * WAL_LIMIT_PAGES as u64, "{wal} pages");
        assert_eq!(store.events(Some("r"), 0, 20_000).unwrap().len(), 10_000);
    }

    /// A database at schema `version`, as a release that knew only the first `version`
    /// migrations left it.
    fn database_at(path: &Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    /// An upgrade that fails part-way leaves the database at its old version: the migrations
    /// that went through before the failing one are undone with it.
    #[test]
    fn a_failed_upgrade_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        // The events rebuild creates this table: it fails after the one before it ran.
        let rebuild = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE events_v2"))
            .unwrap();
        let at = rebuild - 1;
        let conn = database_at(&path, at);
        conn.execute_batch("CREATE TABLE events_v2 (x)").unwrap();
        drop(conn);

        assert!(SqliteStore::open(&path, Durability::Process).is_err());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, at as i64);
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'runs_by_name'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0, "the migration before the failing one was kept");
    }

    /// A database written before events lost AUTOINCREMENT keeps its events and their seqs,
    /// and goes on numbering after the highest one.
    #[test]
    fn the_events_rebuild_keeps_every_event_and_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let conn = database_at(&path, MIGRATIONS.len() - 1);
        conn.execute_batch(
            "INSERT INTO runs VALUES ('r', 'demo', 'rb.yaml', '', '/repo', 'abc', 'fleet/runs/r',
                                      'running', 1, 1, NULL);
             INSERT INTO events (at, run_id, task, attempt, kind, data)
                 VALUES (1, 'r', NULL, NULL, 'run.started', '{}'),
                        (2, 'r', 'a', 1, 'task.started', '{\"x\":1}'),
                        (3, 'r', 'a', 1, 'task.passed', '{}');
             INSERT INTO attempts (run_id, task_id, n, started_at, outcome, account, cost_usd)
                 VALUES ('r', 'a', 1, 2, 'passed', 'team', 0.5);",
        )
        .unwrap();
        drop(conn);

        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        let events = store.events(None, 0, 10).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(events[1].data, serde_json::json!({"x": 1}));
        assert_eq!(store.events(Some("r"), 1, 10).unwrap().len(), 2);
        let next = store
            .commit(&Batch {
                events: vec![NewEvent {
                    at: 4,
                    run_id: "r".into(),
                    task: None,
                    attempt: None,
                    kind: "run.finished".into(),
                    data: serde_json::json!({}),
                }],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(next, [4]);
        assert_eq!(store.attempts_since(0).unwrap().len(), 1);
        store
            .with(|conn| {
                let left: i64 = conn.query_row(
                    "SELECT count(*) FROM sqlite_master
                     WHERE name IN ('attempts_by_start', 'events_v2')
                        OR sql LIKE '%AUTOINCREMENT%'",
                    [],
                    |r| r.get(0),
                )?;
                assert_eq!(left, 0, "old index, temporary table or AUTOINCREMENT left");
                Ok(())
            })
            .unwrap();
    }

    /// Processes started at the same moment open one new database and write to it at once
    /// (two `fleet run` in one repository): each waits for the others instead of failing with
    /// "database is locked", the schema is made once, and all share one instance id.
    #[test]
    fn stores_opened_at_once_wait_for_each_other() {
        writers_at_once(false);
    }

    /// The same on a database that exists: a run is created by reading, then writing, and a
    /// deferred transaction failed at once when another process committed in between.
    #[test]
    fn writers_of_an_existing_database_wait_for_each_other() {
        writers_at_once(true);
    }

    fn writers_at_once(existing: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        if existing {
            drop(SqliteStore::open(&path, Durability::Process).unwrap());
        }
        let n = 8;
        let start = std::sync::Barrier::new(n);
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (path, start) = (&path, &start);
                    s.spawn(move || {
                        start.wait();
                        let store = SqliteStore::open(path, Durability::Process).unwrap();
                        for k in 0..20 {
                            let id = format!("r{i}-{k}");
                            // Read, then write: as the engine picks a free run id.
                            assert!(store.run(&id).unwrap().is_none());
                            let row = RunRow {
                                id: id.clone(),
                                name: "demo".into(),
                                runbook_path: "rb.yaml".into(),
                                runbook_source: String::new(),
                                repo: "/repo".into(),
                                base_sha: "abc".into(),
                                integration_branch: format!("fleet/runs/{id}"),
                                state: "running".into(),
                                created_at: 0,
                                updated_at: 0,
                                finished_at: None,
                            };
                            store.create_run(&row, &[], &[]).unwrap();
                        }
                        store.meta(SqliteStore::INSTANCE_ID_KEY).unwrap().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        assert_eq!(store.runs().unwrap().len(), n * 20);
        let id = store.meta(SqliteStore::INSTANCE_ID_KEY).unwrap().unwrap();
        assert_eq!(id.len(), 8);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(ids.iter().all(|i| *i == id), "{ids:?} vs {id}");
    }
}
