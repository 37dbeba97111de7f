//! The engine: runs a task graph for real.
//!
//! Owns: the coordinator loop ([`engine`]), supervised processes ([`process`]), the run's
//! files (`events.jsonl`, task logs, `summary.md`) and the layout of a state directory.
//! It is the only place where the core's decisions meet IO: it persists each transition
//! through a [`fleet_store::Store`] before acting on it, and uses [`fleet_git`] for worktrees
//! and merges.
//!
//! Must not know: how the user typed the command (CLI), terminal rendering, YAML syntax.

pub mod acp_session;
pub mod agent;
mod capped;
pub mod engine;
pub mod files;
pub mod fix_loop;
pub mod http_agent;
pub mod journal;
pub mod layout;
pub mod lessons;
mod log_clean;
mod log_maker;
pub mod plan;
pub mod process;
pub mod remote;
mod retrospective;
pub mod runner;
mod runner_agent;
mod runner_ahead;
mod runner_cancel;
mod runner_land;
mod runner_retro;
mod runner_task;
pub mod runner_workspace;
pub mod signals;
mod spawn;
pub mod summary;
mod task_traces;

pub use engine::policy_enforce::AttemptPolicy;
pub use engine::{
    EngineOptions, Observer, RunEnd, RunReport, catch_up_journal, resume, start, start_in,
};
pub use layout::StateDir;
pub use plan::{
    AgentProfile, AgentTask, Plan, TaskAction, TaskDef, plan_from_runbook, runbook_dir,
};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("no run {0:?} in this state directory")]
    NoSuchRun(String),
    #[error("run {0:?} already ended ({1}); nothing to resume")]
    AlreadyFinished(String, String),
    #[error("run {0:?} is being driven by another fleet process (pid {1})")]
    Locked(String, String),
    #[error(transparent)]
    Git(#[from] fleet_git::GitError),
    #[error(transparent)]
    Store(#[from] fleet_store::StoreError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// An OpenAI-compatible base URL ends in `/v1`; a bare server address gets it.
pub fn http_agent_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") || url.ends_with("/api/v1") {
        url.to_string()
    } else {
        format!("{url}/v1")
    }
}

/// Wall-clock milliseconds since the Unix epoch (the core's one clock, shared with the crates
/// that do not depend on the engine).
pub use fleet_core::clock::now_ms;

/// `2026-11-21T06:45:00.123Z`
pub fn rfc3339(ms: impl TryInto<i64>) -> String {
    let ms: i64 = ms.try_into().unwrap_or(0);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}
