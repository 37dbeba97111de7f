//! Summary reads: what lists, counts and outcomes need of many epics and attempts, without
//! decoding each epic's whole document or every attempt row. An epic's summary is kept in
//! `epic_summaries`, written in the same transaction as the epic (so it is never stale), and
//! made for epics written before the table existed when the store is opened.

use crate::EpicRow;
use serde::{Deserialize, Serialize};

/// An epic as lists and outcomes see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpicSummary {
    pub id: String,
    pub project: String,
    pub request: String,
    pub state: String,
    pub cycle: u32,
    pub branch: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// When a `deliver` stage of it first passed (that stage's end), if one did.
    pub delivered_at: Option<i64>,
    /// A person or a pull request comment sent it back at least once (a review record with
    /// the verdict `rejected_by_person` or `pull_request_comments`).
    pub rejected: bool,
    /// The question it is blocked on (the pipeline's `machine.blocked.question`).
    pub blocked_question: Option<String>,
    /// The detail of its last stage (why it failed, when it did).
    pub last_stage_detail: Option<String>,
}

/// The summary of an epic. Pure: both backends call it when they write the epic.
pub fn summarize(e: &EpicRow) -> EpicSummary {
    let delivered_at = e
        .stages
        .iter()
        .filter(|s| s.stage == "deliver" && s.state == "passed")
        .filter_map(|s| s.finished_at)
        .min();
    let rejected = e.data["reviews"].as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            matches!(
                r["verdict"].as_str(),
                Some("rejected_by_person" | "pull_request_comments")
            )
        })
    });
    EpicSummary {
        id: e.id.clone(),
        project: e.project.clone(),
        request: e.request.clone(),
        state: e.state.clone(),
        cycle: e.cycle,
        branch: e.branch.clone(),
        created_at: e.created_at,
        updated_at: e.updated_at,
        delivered_at,
        rejected,
        blocked_question: e.data["machine"]["blocked"]["question"]
            .as_str()
            .map(str::to_string),
        last_stage_detail: e.stages.last().and_then(|s| s.detail.clone()),
    }
}

/// A run's attempts, counted: how many distinct tasks had one, how many there were, and what
/// they cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTally {
    pub run_id: String,
    pub tasks: u64,
    pub attempts: u64,
    pub cost_usd: f64,
}

/// A profile's attempts ending in one outcome (`running` ones included), counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileTally {
    pub profile: String,
    pub outcome: String,
    pub attempts: u64,
    pub cost_usd: f64,
}

/// Every attempt of the store, counted per run and per profile and outcome (attempts without a
/// profile count only in their run). Runs and profiles in name order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptTallies {
    pub runs: Vec<RunTally>,
    pub profiles: Vec<ProfileTally>,
}

/// The SQL that counts attempts, the same on both backends.
pub(crate) const RUN_TALLY_SQL: &str = "SELECT run_id, COUNT(DISTINCT task_id), COUNT(*), \
     COALESCE(SUM(cost_usd), 0) FROM attempts GROUP BY run_id ORDER BY run_id";
pub(crate) const PROFILE_TALLY_SQL: &str = "SELECT profile, outcome, COUNT(*), \
     COALESCE(SUM(cost_usd), 0) FROM attempts WHERE profile IS NOT NULL \
     GROUP BY profile, outcome ORDER BY profile, outcome";

/// The summary table's columns, in the order both backends bind them.
pub(crate) const SUMMARY_COLUMNS: &str = "id, project, request, state, cycle, branch, created_at, \
     updated_at, delivered_at, rejected, blocked_question, last_stage_detail";
