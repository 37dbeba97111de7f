//! Read models: what `fleet task show|ls`, `fleet stats`, `fleet budget`, the API, the
//! dashboard and `/metrics` show, computed from the store. One implementation below both the
//! CLI and the server, so the two never disagree. Pure queries: nothing here changes state.

pub mod budget;
pub mod epic;
pub mod eta;
pub mod outcomes;

pub use budget::budget;
pub use epic::{AttemptView, EpicView, HistoryItem, ListRow, epic_view, list_rows};
pub use outcomes::{Outcomes, outcomes};

pub use fleet_core::clock::now_ms;

/// Why the epic stands where it does, for lists and details: the question of a blocked epic,
/// the detail of the stage that failed it.
pub fn reason(
    epic: &fleet_store::EpicRow,
    data: &fleet_core::epic_data::EpicData,
) -> Option<String> {
    let last_detail = epic.stages.last().and_then(|s| s.detail.as_deref());
    fleet_core::epic_data::reason(&epic.state, data.blocked_question(), last_detail)
}

/// `2026-11-21T06:45:00.123Z`
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// All tokens an attempt used.
pub fn tokens(a: &fleet_store::AttemptRow) -> u64 {
    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens
}

/// The stage a run belongs to: a stage run's id is `<epic>-<stage>-c…`.
pub fn stage_of_run(run_id: &str) -> &str {
    run_id.split('-').nth(1).unwrap_or("")
}

/// The epic a stage run belongs to.
pub fn epic_of_run(run_id: &str) -> &str {
    run_id.split('-').next().unwrap_or("")
}

/// The stage whose tasks are real work (implementation), not planning, review or verify.
pub const WORK_STAGE: &str = "implement";

/// Whether an attempt did real work (an implementation task), not planning, review or verify.
pub fn is_work(a: &fleet_store::AttemptRow) -> bool {
    stage_of_run(&a.run_id) == WORK_STAGE
}
