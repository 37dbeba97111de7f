//! The shared store: PostgreSQL, for several processes (API replicas, CLIs) on several
//! machines at once.
//!
//! The rest of Fleet calls the store synchronously (the engine from its event-loop thread, the
//! server from `spawn_blocking`), so this is a blocking facade over the `postgres` client. That
//! client runs each connection on a private current-thread runtime, which must not be entered
//! from a thread that is already inside a Tokio runtime: such calls hop onto a scoped thread
//! (one thread spawn, tens of microseconds, on top of the network round trip).
//!
//! Event seqs come from one counter row updated in the writing transaction: its row lock is
//! held until commit, so events are committed in seq order with no gaps, and a tail reading
//! `seq > last` never skips an event another writer commits later (a `SEQUENCE` would hand out
//! numbers that commit out of order). The cost: transactions that append events serialize on
//! that row from the append to their commit, so the append is one statement and every
//! writer's last before `COMMIT` (`insert_events`): the row is held for that statement and
//! the commit (its WAL flush), while the rest of each transaction runs in parallel.

use crate::pg::{Conn, Planning, off_runtime, without_password};
use crate::{
    AccountRow, AttemptRow, Batch, EpicBrief, EpicPage, EpicQuery, EpicRow, Event, LeaseRow,
    NewEvent, ProjectRow, Result, RunRow, Store, StoreError, TaskRow, TokenRow, Totals,
};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod pages;
mod summary;

/// Migrations, applied in order; the index + 1 is the schema version (table `schema_version`).
/// Never edit a released one: append a new one.
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
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX runs_by_name ON runs(name text_pattern_ops);
CREATE TABLE tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx BIGINT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    reason TEXT,
    commit_sha TEXT,
    merge_sha TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE attempts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    task_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    pgid BIGINT,
    exit_code BIGINT,
    outcome TEXT NOT NULL,
    detail TEXT,
    profile TEXT,
    cli TEXT,
    model TEXT,
    account TEXT,
    session_id TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id, n)
);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    task TEXT,
    attempt BIGINT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_run ON events(run_id, seq);
CREATE TABLE event_seq (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO event_seq (one, last) VALUES (TRUE, 0);
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    cooldown_until BIGINT,
    backoff_level BIGINT NOT NULL DEFAULT 0,
    disabled TEXT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE epics (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    request TEXT NOT NULL DEFAULT '',
    cycle BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX epics_by_created ON epics(created_at, id);
CREATE INDEX epics_by_state ON epics(state, created_at, id);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    // Epic summaries for lists and outcomes (`crate::summary`).
    summary::MIGRATION,
    crate::postgres_queue::MIGRATION,
    // Kept per-state counts of epics for the task list (`pages`).
    pages::MIGRATION,
    crate::postgres_queue::OPEN_BY_RUN,
];

/// The channel commits of events notify (payload: the newest seq).
pub(crate) const CHANNEL: &str = "fleet_events";

/// How often a waiter for events reads the database itself, while the listener is connected
/// (a fallback: a notification wakes it at once) and while it is not.
const POLL_LISTENING: Duration = Duration::from_secs(1);
const POLL_DEAF: Duration = Duration::from_millis(100);

/// Idle connections kept for reuse; more are opened when needed and closed after use.
const POOL_IDLE: usize = 8;

/// Connections one handle has open at most: a call that finds them all in use waits for one.
/// Unbounded, an overloaded server (every request on its own blocking thread) opened a new
/// backend per request beyond the idle ones, and the forks and logins made it slower still.
const POOL_MAX: usize = 16;

/// The pooled connections and how many are open (idle or in use).
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// The server's clock in ms since the epoch: every holder of a lease is judged by one clock.
pub(crate) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

pub struct PostgresStore {
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    pool: Mutex<Pool>,
    /// Signalled when a connection goes back to the pool or closes.
    freed: Condvar,
    wake: Arc<Wake>,
    /// Started by the first wait for events: one-shot commands never need it.
    listener: std::sync::OnceLock<Listener>,
}

/// What the listener tells waiters: a count bumped at every notification, and whether it is
/// connected (else waiters poll faster).
#[derive(Default)]
struct Wake {
    count: Mutex<u64>,
    cv: Condvar,
    listening: AtomicBool,
}

impl Wake {
    fn bump(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }
}

/// The thread that LISTENs on its own connection; stopped when dropped.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Listener {
    fn start(url: String, wake: Arc<Wake>) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-pg-listen".into())
            .spawn(move || listen(&url, &wake, &flag))
            .expect("spawn the listener thread");
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

/// LISTENs until stopped, reconnecting after a lost connection; every notification (and every
/// reconnection, which may have missed some) wakes the waiters.
fn listen(url: &str, wake: &Wake, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match Client::connect(url, NoTls)
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c))
        {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(POLL_LISTENING);
                continue;
            }
        };
        wake.listening.store(true, Ordering::Relaxed);
        wake.bump();
        'connected: while !stop.load(Ordering::Relaxed) {
            {
                let mut notes = client.notifications();
                let mut iter = notes.timeout_iter(Duration::from_millis(200));
                loop {
                    match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                        Ok(Some(_)) => wake.bump(),
                        Ok(None) => break,
                        Err(_) => break 'connected,
                    }
                }
            }
            if client.is_closed() {
                break;
            }
        }
        wake.listening.store(false, Ordering::Relaxed);
    }
}

fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(reason(&e))
}

/// What went wrong, in the server's words when it answered (`database "x" does not exist`)
/// and with the cause when it did not (`connection refused`): the client's own `Display`
/// says only "db error" or "error connecting to server".
pub(crate) fn reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        backend(e)
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(args: &Params) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), creates or upgrades the schema, and
    /// starts listening for other processes' commits. Unreachable: [`StoreError::Unreachable`].
    pub fn open(url: &str) -> Result<PostgresStore> {
        let shown = without_password(url);
        let url = url.to_string();
        let client = off_runtime(|| {
            let mut c =
                Conn::open(&url).map_err(|e| StoreError::Unreachable(shown.clone(), reason(&e)))?;
            migrate(&mut c)?;
            summary::backfill(&mut c)?;
            ensure_instance_id(&mut c)?;
            Ok::<_, StoreError>(c)
        })?;
        Ok(PostgresStore {
            url,
            shown,
            pool: Mutex::new(Pool {
                idle: vec![client],
                open: 1,
            }),
            freed: Condvar::new(),
            wake: Arc::new(Wake::default()),
            listener: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` on a pooled connection (a new one when none is idle and fewer than
    /// [`POOL_MAX`] are open; else it waits for one); a connection that broke is dropped
    /// rather than pooled.
    pub(crate) fn with<T: Send>(&self, f: impl FnOnce(&mut Conn) -> Result<T> + Send) -> Result<T> {
        self.with_planning(Planning::PerRun, f)
    }

    /// [`PostgresStore::with`] on a connection planning as `planning` says: an idle one that
    /// already does if there is one, else one switched to it.
    pub(crate) fn with_planning<T: Send>(
        &self,
        planning: Planning,
        f: impl FnOnce(&mut Conn) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let pooled = {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let same = (pool.idle.iter()).rposition(|c| c.planning() == Some(planning));
                    if let Some(c) = same
                        .map(|i| pool.idle.remove(i))
                        .or_else(|| pool.idle.pop())
                    {
                        break Some(c);
                    }
                    if pool.open < POOL_MAX {
                        pool.open += 1;
                        break None;
                    }
                    pool = self.freed.wait(pool).unwrap_or_else(|e| e.into_inner());
                }
            };
            let mut client = match pooled {
                Some(c) if !c.is_closed() => c,
                _ => match Conn::open(&self.url) {
                    Ok(c) => c,
                    Err(e) => {
                        self.give_back(None);
                        return Err(StoreError::Unreachable(self.shown.clone(), reason(&e)));
                    }
                },
            };
            let out = client
                .plan(planning)
                .map_err(StoreError::from)
                .and_then(|()| f(&mut client));
            self.give_back(Some(client).filter(|c| !c.is_closed()));
            out
        })
    }

    /// Returns a connection to the pool (kept if fewer than [`POOL_IDLE`] are idle), or
    /// counts one closed (`None`: it broke or never opened).
    fn give_back(&self, client: Option<Conn>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match client {
            Some(c) if pool.idle.len() < POOL_IDLE => pool.idle.push(c),
            closing => {
                pool.open -= 1;
                drop(pool);
                drop(closing);
            }
        }
        self.freed.notify_one();
    }

    /// Runs `f` in a transaction: committed if it succeeds, rolled back (by dropping) if not.
    pub(crate) fn in_transaction<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn query_rows<T: Send>(
        &self,
        sql: &str,
        args: Params,
        map: impl Fn(&Row) -> Result<T> + Send + Sync,
    ) -> Result<Vec<T>> {
        self.with(|c| {
            let rows = c.query(sql, &refs(&args))?;
            rows.iter().map(&map).collect()
        })
    }

    /// One epic write (`sql` binds the epic's columns as $1..$8 and `expected` as $9) with its
    /// events in one transaction; `None`, and nothing written, when it changed no row.
    fn write_epic(
        &self,
        sql: &str,
        epic: &EpicRow,
        expected: Option<i64>,
        events: &[NewEvent],
    ) -> Result<Option<Vec<u64>>> {
        let doc = to_doc(epic);
        self.in_transaction(|tx| {
            let cycle = i64::from(epic.cycle);
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![
                &epic.id,
                &epic.project,
                &epic.state,
                &epic.created_at,
                &epic.updated_at,
                &doc,
                &epic.request,
                &cycle,
            ];
            if let Some(v) = &expected {
                args.push(v);
            }
            if tx.execute(sql, &args)? == 0 {
                return Ok(None);
            }
            summary::write(tx, epic)?;
            Ok(Some(insert_events(tx, events)?))
        })
    }
}

impl Drop for PostgresStore {
    /// Closing a connection blocks on its runtime too: off any Tokio runtime, as every call.
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|e| e.into_inner());
        let idle = std::mem::take(&mut pool.idle);
        off_runtime(move || drop(idle));
    }
}

fn migrate(c: &mut Client) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let mut tx = c.transaction()?;
    // One migrator at a time across all processes; the others wait here, then find it done.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7046873912);
         CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    )?;
    let found: i64 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.batch_execute(sql)?;
    }
    tx.execute("UPDATE schema_version SET version = $1", &[&known])?;
    tx.commit()?;
    Ok(())
}

fn ensure_instance_id(c: &mut Client) -> Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ($1, substr(md5(random()::text), 1, 8))
         ON CONFLICT (key) DO NOTHING",
        &[&crate::SqliteStore::INSTANCE_ID_KEY],
    )?;
    Ok(())
}

/// Appends events, numbered from the counter row (see the module's note), and notifies
/// listeners at commit. Callers make this their transaction's last statement: the counter
/// row stays locked from here to the commit, and every other writer waits that long.
///
/// One statement (the counter, the rows and the notification) so the lock is held for one
/// round trip plus the commit, not one per event: `query_one` with SQL text prepares it
/// first, before the lock is taken.
pub(crate) fn insert_events(
    tx: &mut postgres::Transaction<'_>,
    events: &[NewEvent],
) -> Result<Vec<u64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len() as i64;
    let at: Vec<i64> = events.iter().map(|e| e.at).collect();
    let run: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
    let task: Vec<Option<&str>> = events.iter().map(|e| e.task.as_deref()).collect();
    let attempt: Vec<Option<i64>> = events.iter().map(|e| e.attempt.map(i64::from)).collect();
    let kind: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    let last: i64 = tx
        .query_one(
            "WITH counter AS (
                 UPDATE event_seq SET last = last + $1 RETURNING last
             ), added AS (
                 INSERT INTO events (seq, at, run_id, task, attempt, kind, data)
                 SELECT counter.last - $1 + e.ord, e.at, e.run_id, e.task, e.attempt, e.kind,
                        e.data
                 FROM counter,
                      unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                             $7::text[]) WITH ORDINALITY
                          AS e(at, run_id, task, attempt, kind, data, ord)
             )
             SELECT last, pg_notify($8, last::text) FROM counter",
            &[&n, &at, &run, &task, &attempt, &kind, &data, &CHANNEL],
        )?
        .get(0);
    Ok((last - n + 1..=last).map(|s| s as u64).collect())
}

/// An event batch as arrays, for [`events_ctes`]: the count, then `at`, `kind`, `data`.
pub(crate) fn event_arrays(events: &[NewEvent]) -> (i64, Vec<i64>, Vec<String>, Vec<String>) {
    (
        events.len() as i64,
        events.iter().map(|e| e.at).collect(),
        events.iter().map(|e| e.kind.clone()).collect(),
        events.iter().map(|e| e.data.to_string()).collect(),
    )
}

/// For a write made in one statement (so in one round trip, committed on its own): CTEs that
/// append its events, numbered from the counter row as [`insert_events`] does, and notify.
/// `owner` names a CTE of zero or one row whose `run_id`, `task` and `attempt` stamp the
/// events: with no row (the write changed nothing) the counter is not even locked. Binds
/// `$p` to `$p + 3` to [`event_arrays`]; the statement must read `notified` (e.g.
/// `(SELECT count(*) FROM notified)`) for the notification to be sent.
pub(crate) fn events_ctes(owner: &str, p: usize) -> String {
    let (at, kind, data) = (p + 1, p + 2, p + 3);
    format!(
        "counter AS (
             UPDATE event_seq SET last = last + ${p}::bigint FROM {owner}
             WHERE ${p}::bigint > 0 RETURNING last
         ), added AS (
             INSERT INTO events (seq, at, run_id, task, attempt, kind, data)
             SELECT counter.last - ${p}::bigint + e.ord, e.at, o.run_id, o.task, o.attempt, e.kind,
                    e.data
             FROM counter, {owner} o,
                  unnest(${at}::bigint[], ${kind}::text[], ${data}::text[]) WITH ORDINALITY
                      AS e(at, kind, data, ord)
         ), notified AS (
             SELECT pg_notify('{CHANNEL}', last::text) FROM counter
         )"
    )
}

fn task_args(t: &TaskRow) -> Params {
    vec![
        Box::new(t.run_id.clone()),
        Box::new(i64::from(t.idx)),
        Box::new(t.id.clone()),
        Box::new(t.state.clone()),
        Box::new(i64::from(t.attempts)),
        Box::new(i64::from(t.failures)),
        Box::new(t.not_before),
        Box::new(t.reason.clone()),
        Box::new(t.commit_sha.clone()),
        Box::new(t.merge_sha.clone()),
        Box::new(t.started_at),
        Box::new(t.finished_at),
    ]
}

const INSERT_TASK: &str =
    "INSERT INTO tasks (run_id, idx, id, state, attempts, failures, not_before, reason,
                        commit_sha, merge_sha, started_at, finished_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

fn upsert_task(tx: &mut postgres::Transaction<'_>, t: &TaskRow) -> Result<()> {
    let args = task_args(t);
    tx.execute(
        &format!(
            "{INSERT_TASK} ON CONFLICT (run_id, id) DO UPDATE SET idx = excluded.idx,
                state = excluded.state, attempts = excluded.attempts,
                failures = excluded.failures, not_before = excluded.not_before,
                reason = excluded.reason, commit_sha = excluded.commit_sha,
                merge_sha = excluded.merge_sha, started_at = excluded.started_at,
                finished_at = excluded.finished_at"
        ),
        &refs(&args),
    )?;
    Ok(())
}

fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

fn upsert_attempt(tx: &mut postgres::Transaction<'_>, a: &AttemptRow) -> Result<()> {
    let args: Params = vec![
        Box::new(a.run_id.clone()),
        Box::new(a.task_id.clone()),
        Box::new(i64::from(a.n)),
        Box::new(a.started_at),
        Box::new(a.finished_at),
        Box::new(a.pgid.map(i64::from)),
        Box::new(a.exit_code.map(i64::from)),
        Box::new(a.outcome.clone()),
        Box::new(a.detail.clone()),
        Box::new(a.profile.clone()),
        Box::new(a.cli.clone()),
        Box::new(a.model.clone()),
        Box::new(a.account.clone()),
        Box::new(a.session_id.clone()),
        Box::new(clamp(a.input_tokens)),
        Box::new(clamp(a.output_tokens)),
        Box::new(clamp(a.cache_read_tokens)),
        Box::new(clamp(a.cache_write_tokens)),
        Box::new(a.cost_usd),
    ];
    tx.execute(
        "INSERT INTO attempts (run_id, task_id, n, started_at, finished_at, pgid, exit_code,
                               outcome, detail, profile, cli, model, account, session_id,
                               input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                               cost_usd)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (run_id, task_id, n) DO UPDATE SET
            started_at = excluded.started_at, finished_at = excluded.finished_at,
            pgid = excluded.pgid, exit_code = excluded.exit_code,
            outcome = excluded.outcome, detail = excluded.detail, profile = excluded.profile,
            cli = excluded.cli, model = excluded.model, account = excluded.account,
            session_id = excluded.session_id, input_tokens = excluded.input_tokens,
            output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens,
            cache_write_tokens = excluded.cache_write_tokens, cost_usd = excluded.cost_usd",
        &refs(&args),
    )?;
    Ok(())
}

fn upsert_account(tx: &mut postgres::Transaction<'_>, a: &AccountRow) -> Result<()> {
    tx.execute(
        "INSERT INTO accounts (name, cooldown_until, backoff_level, disabled, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET cooldown_until = excluded.cooldown_until,
            backoff_level = excluded.backoff_level, disabled = excluded.disabled,
            updated_at = excluded.updated_at",
        &[
            &a.name,
            &a.cooldown_until,
            &i64::from(a.backoff_level),
            &a.disabled,
            &a.updated_at,
        ],
    )?;
    Ok(())
}

/// A BIGINT column as a `u32`/`i32` field: out of range is corrupt data, not a panic.
fn narrow<T: TryFrom<i64>>(r: &Row, i: usize) -> Result<T> {
    let v: i64 = r.try_get(i)?;
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

fn narrow_opt<T: TryFrom<i64>>(r: &Row, i: usize) -> Result<Option<T>> {
    let v: Option<i64> = r.try_get(i)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range"))))
        .transpose()
}

const ATTEMPT_COLUMNS: &str = "run_id, task_id, n, started_at, finished_at, pgid, exit_code, outcome, detail, \
                               profile, cli, model, account, session_id, input_tokens, output_tokens, \
                               cache_read_tokens, cache_write_tokens, cost_usd";

fn attempt_from_row(r: &Row) -> Result<AttemptRow> {
    Ok(AttemptRow {
        run_id: r.try_get(0)?,
        task_id: r.try_get(1)?,
        n: narrow(r, 2)?,
        started_at: r.try_get(3)?,
        finished_at: r.try_get(4)?,
        pgid: narrow_opt(r, 5)?,
        exit_code: narrow_opt(r, 6)?,
        outcome: r.try_get(7)?,
        detail: r.try_get(8)?,
        profile: r.try_get(9)?,
        cli: r.try_get(10)?,
        model: r.try_get(11)?,
        account: r.try_get(12)?,
        session_id: r.try_get(13)?,
        input_tokens: narrow(r, 14)?,
        output_tokens: narrow(r, 15)?,
        cache_read_tokens: narrow(r, 16)?,
        cache_write_tokens: narrow(r, 17)?,
        cost_usd: r.try_get(18)?,
    })
}

const RUN_COLUMNS: &str = "id, name, runbook_path, runbook_source, repo, base_sha, \
                           integration_branch, state, created_at, updated_at, finished_at";

fn run_from_row(r: &Row) -> Result<RunRow> {
    Ok(RunRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        runbook_path: r.try_get(2)?,
        runbook_source: r.try_get(3)?,
        repo: r.try_get(4)?,
        base_sha: r.try_get(5)?,
        integration_branch: r.try_get(6)?,
        state: r.try_get(7)?,
        created_at: r.try_get(8)?,
        updated_at: r.try_get(9)?,
        finished_at: r.try_get(10)?,
    })
}

fn task_from_row(r: &Row) -> Result<TaskRow> {
    Ok(TaskRow {
        run_id: r.try_get(0)?,
        idx: narrow(r, 1)?,
        id: r.try_get(2)?,
        state: r.try_get(3)?,
        attempts: narrow(r, 4)?,
        failures: narrow(r, 5)?,
        not_before: r.try_get(6)?,
        reason: r.try_get(7)?,
        commit_sha: r.try_get(8)?,
        merge_sha: r.try_get(9)?,
        started_at: r.try_get(10)?,
        finished_at: r.try_get(11)?,
    })
}

const EVENT_COLUMNS: &str = "seq, at, run_id, task, attempt, kind, data";

fn event_from_row(r: &Row) -> Result<Event> {
    let seq: i64 = r.try_get(0)?;
    let data: String = r.try_get(6)?;
    Ok(Event {
        seq: seq as u64,
        at: r.try_get(1)?,
        run_id: r.try_get(2)?,
        task: r.try_get(3)?,
        attempt: narrow_opt(r, 4)?,
        kind: r.try_get(5)?,
        data: serde_json::from_str(&data)
            .map_err(|err| StoreError::Corrupt(format!("event {seq}: {err}")))?,
    })
}

fn token_from_row(r: &Row) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get(0)?,
        scope: r.try_get(1)?,
        hash: r.try_get(2)?,
        created_at: r.try_get(3)?,
        revoked_at: r.try_get(4)?,
    })
}

fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_doc<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("rows serialize")
}

/// The WHERE clause shared by the page, its total and its counts.
fn epic_filter(q: &EpicQuery, with_states: bool) -> (String, Params) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Params = Vec::new();
    if let Some(p) = &q.project {
        args.push(Box::new(p.clone()));
        clauses.push(format!("project = ${}", args.len()));
    }
    if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Box::new(format!("%{escaped}%")));
        let n = args.len();
        clauses.push(format!(
            "(id ILIKE ${n} ESCAPE '\\' OR request ILIKE ${n} ESCAPE '\\')"
        ));
    }
    if with_states && !q.states.is_empty() {
        args.push(Box::new(q.states.clone()));
        clauses.push(format!("state = ANY(${})", args.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn counts(rows: &[Row]) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut m = std::collections::BTreeMap::new();
    for r in rows {
        let n: i64 = r.try_get(1)?;
        m.insert(r.try_get::<_, String>(0)?, n as u64);
    }
    Ok(m)
}

impl Store for PostgresStore {
    fn queue(&self) -> Option<&dyn crate::TaskQueue> {
        Some(self)
    }

    fn postgres_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let ttl = ttl.as_millis() as i64;
        self.with(|c| {
            let got = c.query_opt(
                &format!(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {NOW_MS} + $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                        expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at <= {NOW_MS}
                     RETURNING holder"
                ),
                &[&name, &holder, &ttl],
            )?;
            Ok(got.is_some())
        })
    }

    fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let ttl = ttl.as_millis() as i64;
        self.with(|c| {
            let n = c.execute(
                &format!(
                    "UPDATE leases SET expires_at = {NOW_MS} + $3 WHERE name = $1 AND holder = $2"
                ),
                &[&name, &holder, &ttl],
            )?;
            Ok(n == 1)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )?;
            Ok(())
        })
    }

    fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        self.with(|c| {
            let row = c.query_opt(
                &format!(
                    "SELECT name, holder, expires_at FROM leases
                     WHERE name = $1 AND expires_at > {NOW_MS}"
                ),
                &[&name],
            )?;
            row.map(|r| {
                Ok(LeaseRow {
                    name: r.try_get(0)?,
                    holder: r.try_get(1)?,
                    expires_at: r.try_get(2)?,
                })
            })
            .transpose()
        })
    }

    fn wait_for_events(&self, after: u64, timeout: Duration) -> Result<u64> {
        self.listener
            .get_or_init(|| Listener::start(self.url.clone(), self.wake.clone()));
        let deadline = Instant::now() + timeout;
        loop {
            // The count before the database: a notification between the two shows as a
            // changed count instead of being slept through.
            let seen = *self.wake.count.lock().unwrap_or_else(|e| e.into_inner());
            let newest = self.newest_seq()?;
            let now = Instant::now();
            if newest > after || now >= deadline {
                return Ok(newest);
            }
            let poll = if self.wake.listening.load(Ordering::Relaxed) {
                POLL_LISTENING
            } else {
                POLL_DEAF
            };
            let guard = self.wake.count.lock().unwrap_or_else(|e| e.into_inner());
            if *guard == seen {
                let _ = self.wake.cv.wait_timeout(guard, poll.min(deadline - now));
            }
        }
    }

    fn create_run(
        &self,
        run: &RunRow,
        tasks: &[TaskRow],
        events: &[NewEvent],
    ) -> Result<Vec<Event>> {
        let seqs = self.in_transaction(|tx| {
            let n = tx.execute(
                &format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &run.id,
                    &run.name,
                    &run.runbook_path,
                    &run.runbook_source,
                    &run.repo,
                    &run.base_sha,
                    &run.integration_branch,
                    &run.state,
                    &run.created_at,
                    &run.updated_at,
                    &run.finished_at,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::RunExists(run.id.clone()));
            }
            for t in tasks {
                tx.execute(INSERT_TASK, &refs(&task_args(t)))?;
            }
            insert_events(tx, events)
        })?;
        Ok(seqs
            .into_iter()
            .zip(events)
            .map(|(seq, e)| Event {
                seq,
                at: e.at,
                run_id: e.run_id.clone(),
                task: e.task.clone(),
                attempt: e.attempt,
                kind: e.kind.clone(),
                data: e.data.clone(),
            })
            .collect())
    }

    fn commit(&self, batch: &Batch) -> Result<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.in_transaction(|tx| {
            if let Some(change) = &batch.run_state {
                tx.execute(
                    "UPDATE runs SET state = $2, updated_at = $3, finished_at = $4 WHERE id = $1",
                    &[
                        &change.run_id,
                        &change.state,
                        &change.at,
                        &change.finished_at,
                    ],
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
            insert_events(tx, &batch.events)
        })
    }

    fn run(&self, id: &str) -> Result<Option<RunRow>> {
        let id = id.to_string();
        Ok(self
            .query_rows(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                vec![Box::new(id)],
                run_from_row,
            )?
            .pop())
    }

    fn runs(&self) -> Result<Vec<RunRow>> {
        self.query_rows(
            &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC"),
            vec![],
            run_from_row,
        )
    }

    fn runs_named(&self, prefix: &str) -> Result<Vec<RunRow>> {
        // `starts_with`, not LIKE, whose wildcards a prefix could contain.
        self.query_rows(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE starts_with(name, $1)
                 ORDER BY created_at, id"
            ),
            vec![Box::new(prefix.to_string())],
            run_from_row,
        )
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        self.query_rows(
            "SELECT run_id, idx, id, state, attempts, failures, not_before, reason,
                    commit_sha, merge_sha, started_at, finished_at
             FROM tasks WHERE run_id = $1 ORDER BY idx",
            vec![Box::new(run_id.to_string())],
            task_from_row,
        )
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        self.query_rows(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY task_id, n"
            ),
            vec![Box::new(run_id.to_string())],
            attempt_from_row,
        )
    }

    fn accounts(&self) -> Result<Vec<AccountRow>> {
        self.query_rows(
            "SELECT name, cooldown_until, backoff_level, disabled, updated_at
             FROM accounts ORDER BY name",
            vec![],
            |r| {
                Ok(AccountRow {
                    name: r.try_get(0)?,
                    cooldown_until: r.try_get(1)?,
                    backoff_level: narrow(r, 2)?,
                    disabled: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            },
        )
    }

    fn attempts_since(&self, since: i64) -> Result<Vec<AttemptRow>> {
        self.query_rows(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id IN
                     (SELECT id FROM runs WHERE finished_at IS NULL OR finished_at >= $1)
                   AND started_at >= $1
                 ORDER BY started_at"
            ),
            vec![Box::new(since)],
            attempt_from_row,
        )
    }

    fn events(&self, run_id: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>> {
        let after = after.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        match run_id {
            Some(run) => self.query_rows(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE run_id = $2 AND seq > $1
                     ORDER BY seq LIMIT $3"
                ),
                vec![Box::new(after), Box::new(run.to_string()), Box::new(limit)],
                event_from_row,
            ),
            None => self.query_rows(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                vec![Box::new(after), Box::new(limit)],
                event_from_row,
            ),
        }
    }

    fn latest_events(&self, run_ids: &[String], limit: usize) -> Result<Vec<Event>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut rows = self.query_rows(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ANY($1)
                 ORDER BY seq DESC LIMIT $2"
            ),
            vec![Box::new(run_ids.to_vec()), Box::new(limit)],
            event_from_row,
        )?;
        rows.reverse();
        Ok(rows)
    }

    fn add_project(&self, project: &ProjectRow) -> Result<()> {
        let doc = to_doc(project);
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO projects (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&project.name, &doc],
            )?;
            if n == 0 {
                return Err(StoreError::Exists("project", project.name.clone()));
            }
            Ok(())
        })
    }

    fn project(&self, name: &str) -> Result<Option<ProjectRow>> {
        let docs = self.query_rows(
            "SELECT doc FROM projects WHERE name = $1",
            vec![Box::new(name.to_string())],
            |r| Ok(r.try_get::<_, String>(0)?),
        )?;
        docs.first().map(|d| from_doc("project", d)).transpose()
    }

    fn projects(&self) -> Result<Vec<ProjectRow>> {
        let docs = self.query_rows("SELECT doc FROM projects ORDER BY name", vec![], |r| {
            Ok(r.try_get::<_, String>(0)?)
        })?;
        docs.iter().map(|d| from_doc("project", d)).collect()
    }

    fn save_epic(&self, epic: &EpicRow, events: &[NewEvent]) -> Result<Vec<u64>> {
        self.write_epic(
            "INSERT INTO epics (id, project, state, created_at, updated_at, doc, request, cycle)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            epic,
            None,
            events,
        )?
        .ok_or_else(|| StoreError::Exists("epic", epic.id.clone()))
    }

    fn update_epic(&self, epic: &EpicRow, expected: i64, events: &[NewEvent]) -> Result<Vec<u64>> {
        self.write_epic(
            "UPDATE epics SET project = $2, state = $3, created_at = $4, updated_at = $5,
                    doc = $6, request = $7, cycle = $8
             WHERE id = $1 AND updated_at = $9",
            epic,
            Some(expected),
            events,
        )?
        .ok_or_else(|| StoreError::Conflict("epic", epic.id.clone()))
    }

    fn epic(&self, id: &str) -> Result<Option<EpicRow>> {
        let docs = self.query_rows(
            "SELECT doc FROM epics WHERE id = $1",
            vec![Box::new(id.to_string())],
            |r| Ok(r.try_get::<_, String>(0)?),
        )?;
        docs.first().map(|d| from_doc("epic", d)).transpose()
    }

    fn epic_summaries(&self) -> Result<Vec<crate::EpicSummary>> {
        self.with(|c| summary::read_all(c))
    }

    fn attempt_tallies(&self) -> Result<crate::AttemptTallies> {
        self.with(|c| summary::tallies(c))
    }

    fn epics(&self) -> Result<Vec<EpicRow>> {
        let docs = self.query_rows(
            "SELECT doc FROM epics ORDER BY created_at, id",
            vec![],
            |r| Ok(r.try_get::<_, String>(0)?),
        )?;
        docs.iter().map(|d| from_doc("epic", d)).collect()
    }

    fn epic_page(&self, q: &EpicQuery) -> Result<EpicPage> {
        self.with(|c| pages::epic_page(c, q))
    }

    fn add_token(&self, t: &TokenRow) -> Result<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO tokens (name, scope, hash, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&t.name, &t.scope, &t.hash, &t.created_at, &t.revoked_at],
            )?;
            if n == 0 {
                return Err(StoreError::Exists("token", t.name.clone()));
            }
            Ok(())
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .query_rows(
                "SELECT name, scope, hash, created_at, revoked_at FROM tokens
                 WHERE hash = $1 AND revoked_at IS NULL",
                vec![Box::new(hash.to_string())],
                token_from_row,
            )?
            .pop())
    }

    fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.query_rows(
            "SELECT name, scope, hash, created_at, revoked_at FROM tokens ORDER BY created_at, name",
            vec![],
            token_from_row,
        )
    }

    fn revoke_token(&self, name: &str, at: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &at],
            )?;
            Ok(n > 0)
        })
    }

    fn newest_seq(&self) -> Result<u64> {
        self.with(|c| {
            // The counter, not max(seq): it is the same number (seqs are dense) without a scan.
            let n: i64 = c.query_one("SELECT last FROM event_seq", &[])?.try_get(0)?;
            Ok(n as u64)
        })
    }

    fn totals(&self) -> Result<Totals> {
        self.with(|c| {
            let mut t = Totals {
                tasks_by_state: counts(
                    &c.query("SELECT state, count(*) FROM tasks GROUP BY state", &[])?,
                )?,
                attempts_by_outcome: counts(&c.query(
                    "SELECT outcome, count(*) FROM attempts GROUP BY outcome",
                    &[],
                )?)?,
                ..Totals::default()
            };
            for r in c.query(
                "SELECT coalesce(account, ''), sum(cost_usd),
                        sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)::bigint
                 FROM attempts WHERE profile IS NOT NULL GROUP BY 1",
                &[],
            )? {
                let tokens: i64 = r.try_get(2)?;
                t.spend_by_account
                    .insert(r.try_get(0)?, (r.try_get(1)?, tokens as u64));
            }
            Ok(t)
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .query_rows(
                "SELECT value FROM meta WHERE key = $1",
                vec![Box::new(key.to_string())],
                |r| Ok(r.try_get::<_, String>(0)?),
            )?
            .pop())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }
}

#[cfg(all(test, feature = "contract"))]
mod tests {
    use super::*;
    use crate::contract::pg::TestDb;

    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The generic and custom plans PostgreSQL made for the prepared statement containing
    /// `text`, on the pooled connection planning as `planning` says.
    fn plans(store: &PostgresStore, planning: Planning, text: &str) -> (i64, i64) {
        store
            .with_planning(planning, |c| {
                let row = c.query_one(
                    "SELECT coalesce(sum(generic_plans), 0)::bigint,
                            coalesce(sum(custom_plans), 0)::bigint
                     FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
                    &[&text],
                )?;
                Ok((row.get(0), row.get(1)))
            })
            .unwrap()
    }

    /// The queue's hot statements (a done task's end with the next claim, here) settle on one
    /// plan for any parameters: planned for each run they cost more to plan than to run. A
    /// statement whose plan depends on its parameters is still planned for each run.
    #[test]
    fn the_queues_statements_are_planned_once_the_rest_per_run() {
        use crate::queue::{Finish, NextClaim, QueueItem, RunnerAd};
        let db = TestDb::create();
        let store = PostgresStore::open(db.url()).unwrap();
        let q = store.queue().unwrap();
        store
            .create_run(&crate::contract::run_row("r", 1), &[], &[])
            .unwrap();
        let items: Vec<QueueItem> = (0..12)
            .map(|i| QueueItem {
                run_id: "r".into(),
                task_id: format!("t{i:02}"),
                deps: vec![],
                needs: vec!["sh".into()],
                spec: serde_json::json!({}),
            })
            .collect();
        q.enqueue(&items, &[]).unwrap();
        let runner = RunnerAd {
            name: "r1".into(),
            offers: vec!["sh".into()],
            concurrency: 1,
        };
        let ttl = Duration::from_secs(30);
        let done = Finish {
            state: "done".into(),
            detail: None,
            merge_sha: None,
        };
        let mut held = q.claim(&runner, ttl, 3, &[]).unwrap();
        let mut ends = 0;
        while let Some(c) = held {
            let next = NextClaim {
                runner: &runner,
                ttl,
                max_claims: 3,
                events: &[],
            };
            let (ended, claimed) = q.finish_and_claim(&c, &done, &[], next).unwrap();
            assert!(ended);
            ends += 1;
            held = claimed;
        }
        assert_eq!(ends, 12);
        let (generic, custom) = plans(&store, Planning::Cached, "WITH ended AS");
        assert_eq!(generic + custom, 12, "one plan per end");
        assert!(
            generic > 0,
            "ends planned once: {generic} generic, {custom} custom"
        );
        for _ in 0..12 {
            store.run("r").unwrap();
        }
        let (generic, custom) = plans(&store, Planning::PerRun, "FROM runs WHERE id");
        assert!(custom >= 12, "the run read planned per run: {custom}");
        assert_eq!(generic, 0, "never one plan for any run id");
    }

    /// Another handle's commit reaches this one as a notification (polling never bumps the
    /// count): LISTEN/NOTIFY is what wakes waiters, polling only the fallback.
    #[test]
    fn another_handles_commit_is_notified_to_the_listener() {
        let db = TestDb::create();
        let (a, b) = (
            PostgresStore::open(db.url()).unwrap(),
            PostgresStore::open(db.url()).unwrap(),
        );
        assert!(
            a.listener.get().is_none(),
            "no listener before the first wait"
        );
        a.wait_for_events(0, Duration::ZERO).unwrap();
        until("the listener connects", || {
            a.wake.listening.load(Ordering::Relaxed)
        });
        let before = *a.wake.count.lock().unwrap();
        b.commit(&Batch {
            events: vec![NewEvent {
                at: 1,
                run_id: "r".into(),
                task: None,
                attempt: None,
                kind: "k".into(),
                data: serde_json::json!({}),
            }],
            ..Batch::default()
        })
        .unwrap();
        until("the notification arrives", || {
            *a.wake.count.lock().unwrap() > before
        });
    }

    fn one_event(kind: &str) -> NewEvent {
        NewEvent {
            at: 1,
            run_id: "r".into(),
            task: None,
            attempt: None,
            kind: kind.into(),
            data: serde_json::json!({}),
        }
    }

    /// A writer has appended its event but not committed; another commits meanwhile. A reader
    /// tailing `seq > last` must never be shown a seq while a smaller one is still to commit:
    /// it would resume past it and never see it. What it saw mid-way must be a prefix of what
    /// is there once both committed (fails with seqs from a `SEQUENCE`: the second writer's
    /// larger seq is visible first).
    #[test]
    fn a_reader_never_sees_past_a_seq_still_to_commit() {
        let db = TestDb::create();
        let open = || Arc::new(PostgresStore::open(db.url()).unwrap());
        let (slow, fast, reader) = (open(), open(), open());
        let base = reader.newest_seq().unwrap();
        let (appended_tx, appended) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let held = std::thread::spawn(move || {
            slow.in_transaction(move |tx| {
                let seqs = insert_events(tx, &[one_event("slow")])?;
                appended_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Ok(seqs)
            })
            .unwrap()
        });
        appended.recv().unwrap();
        let other = std::thread::spawn(move || {
            fast.commit(&Batch {
                events: vec![one_event("fast")],
                ..Batch::default()
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        let midway: Vec<u64> = reader
            .events(None, base, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        go.send(()).unwrap();
        let mut written = held.join().unwrap();
        written.extend(other.join().unwrap());
        written.sort();
        let after: Vec<u64> = reader
            .events(None, base, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(after, written, "both events are there once both committed");
        assert_eq!(
            midway,
            after[..midway.len()],
            "the reader saw {midway:?} mid-way, not a prefix of {after:?}: resuming after it \
             misses the rest"
        );
    }

    /// Many calls at once share at most `POOL_MAX` connections (the others wait) instead of
    /// each opening its own.
    #[test]
    fn calls_at_once_share_a_bounded_pool() {
        let db = TestDb::create();
        let store = Arc::new(PostgresStore::open(db.url()).unwrap());
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store
                        .with(|c| Ok(c.execute("SELECT pg_sleep(0.1)", &[])?))
                        .unwrap()
                })
            })
            .collect();
        let mut watcher = Client::connect(db.url(), NoTls).unwrap();
        let mut most = 0;
        for _ in 0..20 {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            most = most.max(n);
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in calls {
            c.join().unwrap();
        }
        assert!(most > 1, "the calls ran at once ({most} connections)");
        assert!(most <= POOL_MAX as i64, "{most} connections open at once");
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            without_password("postgres://fleet:s3cret@db:5432/fleet"),
            "postgres://fleet@db:5432/fleet"
        );
        assert_eq!(
            without_password("postgres://fleet@db/fleet"),
            "postgres://fleet@db/fleet"
        );
    }
}
