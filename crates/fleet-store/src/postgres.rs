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
use postgres::Row;
use postgres::types::ToSql;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod listen;
mod pages;
mod rows;
mod schema;
mod summary;

use listen::{Listener, Wake};
use rows::{
    ATTEMPT_COLUMNS, EVENT_COLUMNS, INSERT_TASK, RUN_COLUMNS, attempt_from_row, counts,
    epic_filter, event_from_row, from_doc, narrow, run_from_row, task_args, task_from_row, to_doc,
    token_from_row, upsert_account, upsert_attempt, upsert_task,
};
use schema::{ensure_instance_id, migrate};

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
    /// The URL as the client library reads it ([`crate::pg::split_url`]).
    client_url: String,
    /// Whether Fleet sets how connections plan (`fleet_planning`, [`crate::pg::PLANNING_PARAM`]).
    sets_planning: bool,
    /// The URL without its password, for messages.
    shown: String,
    pool: Mutex<Pool>,
    /// Signalled when a connection goes back to the pool or closes.
    freed: Condvar,
    wake: Arc<Wake>,
    /// Started by the first wait for events: one-shot commands never need it.
    listener: std::sync::OnceLock<Listener>,
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
        let (client_url, sets_planning) =
            crate::pg::split_url(url).map_err(StoreError::InvalidUrl)?;
        let shown = without_password(url);
        let url = url.to_string();
        let client = off_runtime(|| {
            let mut c = Conn::open(&client_url, sets_planning)
                .map_err(|e| StoreError::Unreachable(shown.clone(), reason(&e)))?;
            migrate(&mut c)?;
            summary::backfill(&mut c)?;
            ensure_instance_id(&mut c)?;
            Ok::<_, StoreError>(c)
        })?;
        Ok(PostgresStore {
            url,
            client_url,
            sets_planning,
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
                _ => match Conn::open(&self.client_url, self.sets_planning) {
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
            .get_or_init(|| Listener::start(self.client_url.clone(), self.wake.clone()));
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
        let mut watcher = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
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

    /// `fleet_planning=server`: Fleet never sets how statements are planned, the session keeps
    /// what the server says (here the database's setting, as `ALTER ROLE … SET` would give a
    /// pooler's server connections); by default Fleet sets it per call.
    #[test]
    fn planning_left_to_the_server_is_never_set() {
        let db = TestDb::create();
        let mut admin = crate::pg::connect(db.url()).unwrap();
        admin
            .batch_execute(
                "DO $$ BEGIN EXECUTE format(
                     'ALTER DATABASE %I SET plan_cache_mode = force_generic_plan',
                     current_database()); END $$",
            )
            .unwrap();
        drop(admin);
        let mode = |store: &PostgresStore, planning: Planning| -> String {
            store
                .with_planning(planning, |c| {
                    Ok(c.query_one("SHOW plan_cache_mode", &[])?.get(0))
                })
                .unwrap()
        };
        let server = PostgresStore::open(&format!("{}?fleet_planning=server", db.url())).unwrap();
        assert_eq!(mode(&server, Planning::PerRun), "force_generic_plan");
        assert_eq!(mode(&server, Planning::Cached), "force_generic_plan");
        // Reads and writes work as ever.
        assert!(server.runs().unwrap().is_empty());
        let fleet = PostgresStore::open(db.url()).unwrap();
        assert_eq!(mode(&fleet, Planning::PerRun), "force_custom_plan");
        assert_eq!(mode(&fleet, Planning::Cached), "auto");

        let bad = format!("{}?fleet_planning=sometimes", db.url());
        let err = PostgresStore::open(&bad)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("fleet_planning=sometimes: expected"), "{err}");
        let err = crate::open(&bad, crate::Durability::Process)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("invalid store URL"), "{err}");
    }

    #[test]
    fn fleet_planning_is_taken_out_of_the_url_the_client_reads() {
        let url = "postgres://u@h/db?application_name=x&fleet_planning=server&sslmode=disable";
        assert_eq!(
            crate::pg::split_url(url).unwrap(),
            (
                "postgres://u@h/db?application_name=x&sslmode=disable".to_string(),
                false
            )
        );
        assert_eq!(
            crate::pg::split_url("postgres://u@h/db?fleet_planning=fleet").unwrap(),
            ("postgres://u@h/db".to_string(), true)
        );
        assert_eq!(
            crate::pg::split_url("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".to_string(), true)
        );
        assert!(crate::pg::split_url("postgres://u@h/db?fleet_planning").is_err());
    }
}
