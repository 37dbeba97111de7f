//! Rows to and from the store's types: the columns each table is read by, the upserts a
//! batch writes, and the epic list's filter.

use super::{Params, refs};
use crate::{
    AccountRow, AttemptRow, EpicQuery, Event, Result, RunRow, StoreError, TaskRow, TokenRow,
};
use postgres::Row;

pub(super) fn task_args(t: &TaskRow) -> Params {
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

pub(super) const INSERT_TASK: &str =
    "INSERT INTO tasks (run_id, idx, id, state, attempts, failures, not_before, reason,
                        commit_sha, merge_sha, started_at, finished_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

pub(super) fn upsert_task(tx: &mut postgres::Transaction<'_>, t: &TaskRow) -> Result<()> {
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

pub(super) fn upsert_attempt(tx: &mut postgres::Transaction<'_>, a: &AttemptRow) -> Result<()> {
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

pub(super) fn upsert_account(tx: &mut postgres::Transaction<'_>, a: &AccountRow) -> Result<()> {
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
pub(super) fn narrow<T: TryFrom<i64>>(r: &Row, i: usize) -> Result<T> {
    let v: i64 = r.try_get(i)?;
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

pub(super) fn narrow_opt<T: TryFrom<i64>>(r: &Row, i: usize) -> Result<Option<T>> {
    let v: Option<i64> = r.try_get(i)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range"))))
        .transpose()
}

pub(super) const ATTEMPT_COLUMNS: &str = "run_id, task_id, n, started_at, finished_at, pgid, exit_code, outcome, detail, \
                               profile, cli, model, account, session_id, input_tokens, output_tokens, \
                               cache_read_tokens, cache_write_tokens, cost_usd";

pub(super) fn attempt_from_row(r: &Row) -> Result<AttemptRow> {
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

pub(super) const RUN_COLUMNS: &str = "id, name, runbook_path, runbook_source, repo, base_sha, \
                           integration_branch, state, created_at, updated_at, finished_at";

pub(super) fn run_from_row(r: &Row) -> Result<RunRow> {
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

pub(super) fn task_from_row(r: &Row) -> Result<TaskRow> {
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

pub(super) const EVENT_COLUMNS: &str = "seq, at, run_id, task, attempt, kind, data";

pub(super) fn event_from_row(r: &Row) -> Result<Event> {
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

pub(super) fn token_from_row(r: &Row) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get(0)?,
        scope: r.try_get(1)?,
        hash: r.try_get(2)?,
        created_at: r.try_get(3)?,
        revoked_at: r.try_get(4)?,
    })
}

pub(super) fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn to_doc<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("rows serialize")
}

/// The WHERE clause shared by the page, its total and its counts.
pub(super) fn epic_filter(q: &EpicQuery, with_states: bool) -> (String, Params) {
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

pub(super) fn counts(rows: &[Row]) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut m = std::collections::BTreeMap::new();
    for r in rows {
        let n: i64 = r.try_get(1)?;
        m.insert(r.try_get::<_, String>(0)?, n as u64);
    }
    Ok(m)
}
