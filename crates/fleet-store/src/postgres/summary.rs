//! PostgreSQL's summary reads (see `crate::summary`): the `epic_summaries` table, written with
//! each epic, made for older epics on open, and the attempt tallies.

use super::from_doc;
use crate::summary::{
    AttemptTallies, EpicSummary, PROFILE_TALLY_SQL, ProfileTally, RUN_TALLY_SQL, RunTally,
    SUMMARY_COLUMNS, summarize,
};
use crate::{EpicRow, Result};
use postgres::GenericClient;

pub(super) const MIGRATION: &str = r#"
CREATE TABLE epic_summaries (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    cycle BIGINT NOT NULL,
    branch TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    rejected BOOLEAN NOT NULL,
    blocked_question TEXT,
    last_stage_detail TEXT
);
CREATE INDEX epic_summaries_by_created ON epic_summaries(created_at, id);
"#;

/// Writes the epic's summary; called inside the transaction that writes the epic.
pub(super) fn write(c: &mut impl GenericClient, e: &EpicRow) -> Result<()> {
    let s = summarize(e);
    let cycle = i64::from(s.cycle);
    c.execute(
        &format!(
            "INSERT INTO epic_summaries ({SUMMARY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET project = excluded.project,
                request = excluded.request, state = excluded.state, cycle = excluded.cycle,
                branch = excluded.branch, created_at = excluded.created_at,
                updated_at = excluded.updated_at, delivered_at = excluded.delivered_at,
                rejected = excluded.rejected, blocked_question = excluded.blocked_question,
                last_stage_detail = excluded.last_stage_detail"
        ),
        &[
            &s.id,
            &s.project,
            &s.request,
            &s.state,
            &cycle,
            &s.branch,
            &s.created_at,
            &s.updated_at,
            &s.delivered_at,
            &s.rejected,
            &s.blocked_question,
            &s.last_stage_detail,
        ],
    )?;
    Ok(())
}

/// Summarizes the epics that have no summary (written before the table existed), in one
/// transaction under the migration lock; reads nothing else when there is none.
pub(super) fn backfill(c: &mut postgres::Client) -> Result<()> {
    const MISSING: &str = "SELECT doc FROM epics e
         WHERE NOT EXISTS (SELECT 1 FROM epic_summaries s WHERE s.id = e.id)";
    let any: bool = c
        .query_one(&format!("SELECT EXISTS ({MISSING})"), &[])?
        .get(0);
    if !any {
        return Ok(());
    }
    let mut tx = c.transaction()?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(7046873912)")?;
    let docs: Vec<String> = tx.query(MISSING, &[])?.iter().map(|r| r.get(0)).collect();
    for doc in &docs {
        write(&mut tx, &from_doc("epic", doc)?)?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn read_all(c: &mut postgres::Client) -> Result<Vec<EpicSummary>> {
    let rows = c.query(
        &format!("SELECT {SUMMARY_COLUMNS} FROM epic_summaries ORDER BY created_at, id"),
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(EpicSummary {
                id: r.try_get(0)?,
                project: r.try_get(1)?,
                request: r.try_get(2)?,
                state: r.try_get(3)?,
                cycle: r.try_get::<_, i64>(4)? as u32,
                branch: r.try_get(5)?,
                created_at: r.try_get(6)?,
                updated_at: r.try_get(7)?,
                delivered_at: r.try_get(8)?,
                rejected: r.try_get(9)?,
                blocked_question: r.try_get(10)?,
                last_stage_detail: r.try_get(11)?,
            })
        })
        .collect()
}

pub(super) fn tallies(c: &mut postgres::Client) -> Result<AttemptTallies> {
    let runs = c
        .query(RUN_TALLY_SQL, &[])?
        .iter()
        .map(|r| {
            Ok(RunTally {
                run_id: r.try_get(0)?,
                tasks: r.try_get::<_, i64>(1)? as u64,
                attempts: r.try_get::<_, i64>(2)? as u64,
                cost_usd: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let profiles = c
        .query(PROFILE_TALLY_SQL, &[])?
        .iter()
        .map(|r| {
            Ok(ProfileTally {
                profile: r.try_get(0)?,
                outcome: r.try_get(1)?,
                attempts: r.try_get::<_, i64>(2)? as u64,
                cost_usd: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AttemptTallies { runs, profiles })
}
