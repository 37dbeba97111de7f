//! Fleet's pure domain core.
//!
//! Owns: task ids, the task graph and its validation, the task state machine, retry policy,
//! the scheduler's choice of what runs next, the agent pool's policy (`pool`), the plan a
//! planner returns and its validation (`work_plan`), the QA agent's bug report (`qa`), an
//! epic's life (`epic`) and the document the pipeline keeps of it (`epic_data`), when
//! recurring audits are due (`schedule`) and which of their findings become requests
//! (`audit`), and the always-on rules over what an attempt may change (`policy`). Everything
//! here is a plain function over data: no IO, no clock (time is passed in as [`Millis`];
//! `clock` is the one reading of the wall clock the crates above share, and nothing in the core
//! calls it), no async runtime. The engine (`fleet-engine`) feeds it what happened and
//! persists the transitions it returns before acting on them.
//!
//! Must not know: SQLite, git, processes, tokio, the file system, YAML.

pub mod audit;
pub mod budget;
pub mod clock;
pub mod epic;
pub mod epic_data;
pub mod graph;
pub mod id;
pub mod migration;
pub mod policy;
pub mod pool;
pub mod qa;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod state;
pub mod triage;
pub mod work_plan;

pub use graph::{Graph, GraphError, NodeSpec, TaskKind};
pub use id::{IdError, validate_id};
pub use retry::RetryPolicy;
pub use run::{Run, TaskPlan, TaskRecord, Transition};
pub use state::TaskState;
pub use work_plan::{
    PlanContext, PlanError, Review, ValidPlan, WorkPlan, validate_plan, validate_review,
};

/// Milliseconds since the Unix epoch. The core never reads a clock; callers pass `now`.
pub type Millis = u64;
