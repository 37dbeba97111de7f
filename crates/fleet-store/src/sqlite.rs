//! The embedded default store: one SQLite file in WAL mode.

use crate::{
    AccountRow, AttemptRow, Batch, EpicRow, Event, NewEvent, ProjectRow, Result, RunRow, Store,
    StoreError, TaskRow,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use std::sync::Mutex;

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
];

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
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        Self::init(conn, durability)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?, Durability::Process)
    }

    fn init(conn: Connection, durability: Durability) -> Result<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Process => "NORMAL",
                Durability::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoint (copy the WAL back into the database, with an fsync) every ~16 MB of WAL
        // rather than SQLite's default 4 MB: fewer stalls of the coordinator in busy runs.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn upsert_task(tx: &rusqlite::Transaction<'_>, t: &TaskRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tasks (run_id, idx, id, state, attempts, failures, not_before, reason,
                            commit_sha, merge_sha, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (run_id, id) DO UPDATE SET
            idx = excluded.idx, state = excluded.state, attempts = excluded.attempts,
            failures = excluded.failures, not_before = excluded.not_before,
            reason = excluded.reason, commit_sha = excluded.commit_sha,
            merge_sha = excluded.merge_sha, started_at = excluded.started_at,
            finished_at = excluded.finished_at",
    )?
    .execute(params![
        t.run_id,
        t.idx,
        t.id,
        t.state,
        t.attempts,
        t.failures,
        t.not_before,
        t.reason,
        t.commit_sha,
        t.merge_sha,
        t.started_at,
        t.finished_at
    ])?;
    Ok(())
}

fn upsert_attempt(tx: &rusqlite::Transaction<'_>, a: &AttemptRow) -> Result<()> {
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

fn insert_events(tx: &rusqlite::Transaction<'_>, events: &[NewEvent]) -> Result<Vec<Event>> {
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

fn upsert_account(tx: &rusqlite::Transaction<'_>, a: &AccountRow) -> Result<()> {
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

impl Store for SqliteStore {
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
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO epics (id, project, state, created_at, updated_at, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET project = excluded.project,
                    state = excluded.state, updated_at = excluded.updated_at, doc = excluded.doc",
                params![
                    epic.id,
                    epic.project,
                    epic.state,
                    epic.created_at,
                    epic.updated_at,
                    to_doc(epic)
                ],
            )?;
            let out = insert_events(&tx, events)?;
            tx.commit()?;
            Ok(out.into_iter().map(|e| e.seq).collect())
        })
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

    fn create_run(
        &self,
        run: &RunRow,
        tasks: &[TaskRow],
        events: &[NewEvent],
    ) -> Result<Vec<Event>> {
        self.with(|conn| {
            let tx = conn.transaction()?;
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
                upsert_task(&tx, t)?;
            }
            let out = insert_events(&tx, events)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn commit(&self, batch: &Batch) -> Result<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|conn| {
            let tx = conn.transaction()?;
            if let Some(change) = &batch.run_state {
                tx.execute(
                    "UPDATE runs SET state = ?2, updated_at = ?3, finished_at = ?4 WHERE id = ?1",
                    params![change.run_id, change.state, change.at, change.finished_at],
                )?;
            }
            for t in &batch.tasks {
                upsert_task(&tx, t)?;
            }
            for a in &batch.attempts {
                upsert_attempt(&tx, a)?;
            }
            for a in &batch.accounts {
                upsert_account(&tx, a)?;
            }
            let mut seqs = Vec::with_capacity(batch.events.len());
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (at, run_id, task, attempt, kind, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in &batch.events {
                stmt.execute(params![e.at, e.run_id, e.task, e.attempt, e.kind, e.data.to_string()])?;
                seqs.push(tx.last_insert_rowid() as u64);
            }
            drop(stmt);
            tx.commit()?;
            Ok(seqs)
        })
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
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE started_at >= ?1 ORDER BY started_at"
            ))?;
            let rows = stmt
                .query_map([since], attempt_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn events(&self, run_id: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, run_id, task, attempt, kind, data FROM events
                 WHERE seq > ?1 AND (?2 IS NULL OR run_id = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![after as i64, run_id, limit as i64], |r| {
                    let data: String = r.get(6)?;
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
                        data,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(mut e, data)| {
                    e.data = serde_json::from_str(&data)
                        .map_err(|err| StoreError::Corrupt(format!("event {}: {err}", e.seq)))?;
                    Ok(e)
                })
                .collect()
        })
    }
}
