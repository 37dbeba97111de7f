//! The schema on PostgreSQL: its migrations, applied once by whichever process opens the
//! store first (the others wait on an advisory lock, then find them done).

use crate::{Result, StoreError};
use postgres::Client;

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
    super::summary::MIGRATION,
    crate::postgres_queue::MIGRATION,
    // Kept per-state counts of epics for the task list (`pages`).
    super::pages::MIGRATION,
    crate::postgres_queue::OPEN_BY_RUN,
];

pub(super) fn migrate(c: &mut Client) -> Result<()> {
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

pub(super) fn ensure_instance_id(c: &mut Client) -> Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ($1, substr(md5(random()::text), 1, 8))
         ON CONFLICT (key) DO NOTHING",
        &[&crate::SqliteStore::INSTANCE_ID_KEY],
    )?;
    Ok(())
}
