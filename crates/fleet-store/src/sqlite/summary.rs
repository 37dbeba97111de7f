//! SQLite's summary reads (see `crate::summary`): the `epic_summaries` table, written with
//! each epic, made for older epics on open, and the attempt tallies.

use super::from_doc;
use crate::summary::{
    AttemptTallies, EpicSummary, PROFILE_TALLY_SQL, ProfileTally, RUN_TALLY_SQL, RunTally,
    SUMMARY_COLUMNS, summarize,
};
use crate::{EpicRow, Result};
use rusqlite::{Connection, params};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE epic_summaries (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    branch TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    delivered_at INTEGER,
    rejected INTEGER NOT NULL,
    blocked_question TEXT,
    last_stage_detail TEXT
);
CREATE INDEX epic_summaries_by_created ON epic_summaries(created_at, id);
"#;

/// Writes the epic's summary; called inside the transaction that writes the epic.
pub(super) fn write(conn: &Connection, e: &EpicRow) -> Result<()> {
    let s = summarize(e);
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO epic_summaries ({SUMMARY_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ),
        params![
            s.id,
            s.project,
            s.request,
            s.state,
            s.cycle,
            s.branch,
            s.created_at,
            s.updated_at,
            s.delivered_at,
            s.rejected,
            s.blocked_question,
            s.last_stage_detail
        ],
    )?;
    Ok(())
}

/// Summarizes the epics that have no summary (written before the table existed), in one
/// transaction; reads nothing else when there is none.
pub(super) fn backfill(conn: &Connection) -> Result<()> {
    const MISSING: &str = "SELECT doc FROM epics e
         WHERE NOT EXISTS (SELECT 1 FROM epic_summaries s WHERE s.id = e.id)";
    let any: bool = conn.query_row(&format!("SELECT EXISTS ({MISSING})"), [], |r| r.get(0))?;
    if !any {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let docs = {
        let mut st = tx.prepare(MISSING)?;
        st.query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    for doc in &docs {
        write(&tx, &from_doc("epic", doc)?)?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn read_all(conn: &Connection) -> Result<Vec<EpicSummary>> {
    let mut st = conn.prepare(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM epic_summaries ORDER BY created_at, id"
    ))?;
    let rows = st
        .query_map([], |r| {
            Ok(EpicSummary {
                id: r.get(0)?,
                project: r.get(1)?,
                request: r.get(2)?,
                state: r.get(3)?,
                cycle: r.get(4)?,
                branch: r.get(5)?,
                created_at: r.get(6)?,
                updated_at: r.get(7)?,
                delivered_at: r.get(8)?,
                rejected: r.get(9)?,
                blocked_question: r.get(10)?,
                last_stage_detail: r.get(11)?,
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn tallies(conn: &Connection) -> Result<AttemptTallies> {
    let mut st = conn.prepare(RUN_TALLY_SQL)?;
    let runs = st
        .query_map([], |r| {
            Ok(RunTally {
                run_id: r.get(0)?,
                tasks: r.get::<_, i64>(1)? as u64,
                attempts: r.get::<_, i64>(2)? as u64,
                cost_usd: r.get(3)?,
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut st = conn.prepare(PROFILE_TALLY_SQL)?;
    let profiles = st
        .query_map([], |r| {
            Ok(ProfileTally {
                profile: r.get(0)?,
                outcome: r.get(1)?,
                attempts: r.get::<_, i64>(2)? as u64,
                cost_usd: r.get(3)?,
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(AttemptTallies { runs, profiles })
}
