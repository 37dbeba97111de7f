//! The coordinator: one loop that owns a run's state.
//!
//! It asks the pure core what to do, commits the resulting transitions and events to the store
//! in one transaction, and only then acts — spawns a worker, starts a merge. Workers do the IO
//! (git worktree, the command, checks, the commit) and report back over a channel; every report
//! becomes the next transition. Merges are done one at a time, in the order tasks pass, which is
//! dependency order because a task only starts once everything it depends on has landed.

use crate::agent;
use crate::fix_loop::AccountBook;
use crate::journal::Journal;
use crate::layout::StateDir;
use crate::lessons::Memory;
use crate::log_maker::LogMaker;
use crate::plan::{AgentProfile, Plan, TaskDef};
use crate::process::Finished;
use fleet_core::Run;
use fleet_git::{MergeOutcome, Repo};
use fleet_store::{AttemptRow, Batch, Event, RunRow, Store, TaskRow};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Writes one line to a task log (see [`attempt::write_log_line`]).
macro_rules! log_line {
    ($log:expr, $($arg:tt)*) => {
        write_log_line(&$log, format_args!($($arg)*))
    };
}

mod agent_book;
mod attempt;
mod coordinator;
mod finish;
mod merge_queue;
#[path = "policy_enforce.rs"]
pub mod policy_enforce;
mod recorder;
mod run_start;

// What `policy_enforce` takes of the attempt's helpers.
use attempt::{open_log, read_from, redact_log_since, task_env, write_log_line};
pub(crate) use run_start::new_run_id;
pub use run_start::{catch_up_journal, resume, start, start_in};

/// Called with every event right after it is committed (progress display, tests).
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

pub struct EngineOptions {
    /// Time between SIGTERM and SIGKILL when a task's process group is ended.
    pub kill_grace: Duration,
    pub observer: Option<Observer>,
    /// Fleet's MCP server, put in the MCP config of the agents this run launches (each
    /// attempt's copy also names the run, task and attempt in its env).
    pub mcp: Option<fleet_agents::McpServer>,
    /// Raised from outside (a person cancelled the work): the run stops as on SIGTERM —
    /// running attempts end, state is kept, the run is `interrupted`.
    pub stop: Option<watch::Receiver<bool>>,
    /// Every secret the caller knows of (an instance's accounts, forges, bots); the run adds
    /// its agents' own. Everything the run stores, logs or hands an agent passes it.
    pub redactor: fleet_secrets::Redactor,
    /// Lessons injected into agent attempts, and the retrospectives after the run.
    pub memory: crate::lessons::MemorySettings,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            kill_grace: Duration::from_secs(5),
            observer: None,
            mcp: None,
            stop: None,
            redactor: fleet_secrets::Redactor::from_process_env(&[]),
            memory: Default::default(),
        }
    }
}

/// How a run ended this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task passed (and landed).
    Passed,
    /// Some task failed, was skipped or cancelled.
    Failed,
    /// Stopped by a signal before the end; `--resume` continues it.
    Interrupted,
}

impl RunEnd {
    /// The run's state as stored (`runs.state`) and said in `run.finished`.
    fn as_str(self) -> &'static str {
        match self {
            RunEnd::Passed => "passed",
            RunEnd::Failed => "failed",
            RunEnd::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub end: RunEnd,
    pub integration_branch: String,
    pub summary: PathBuf,
    pub logs: PathBuf,
    /// Tasks that failed and then passed: what the retrospectives after the run learn from.
    pub troubles: Vec<crate::lessons::Trouble>,
}

/// What a worker reports back to the coordinator.
enum Msg {
    Attempt {
        task: usize,
        result: Result<AttemptEnd, String>,
    },
    /// A landed task's worktree was removed (or could not be: it stays for `fleet gc`).
    Cleaned {
        task: usize,
        result: Result<(), String>,
    },
    /// Normalized events of a running agent attempt.
    Agent {
        task: usize,
        events: Vec<fleet_agents::AgentEvent>,
    },
    Finish {
        task: usize,
        result: FinishResult,
    },
    Merge {
        task: usize,
        result: Result<MergeStep, String>,
    },
}

/// What the merge queue did with the task at its head.
enum MergeStep {
    /// Landed (or found already landed).
    Landed(MergeOutcome),
    /// The integration branch moved since the task started: its branch was rebased onto the
    /// new tip (or, when replaying conflicts but merging does not, merged with it) and must
    /// pass its checks again before it may land.
    Rebased { tip: String, how: &'static str },
    /// Its work conflicts with what landed; the worktree holds the merge with conflict markers
    /// for a rework attempt to resolve.
    Rework { files: Vec<String>, onto: String },
}

/// How an attempt's command or agent ended.
struct AttemptEnd {
    finished: Finished,
    agent: Option<agent::AgentEnd>,
}

impl AttemptEnd {
    fn succeeded(&self) -> bool {
        match &self.agent {
            Some(a) => a.outcome.succeeded() && !self.finished.stopped,
            None => self.finished.success(),
        }
    }

    fn describe(&self) -> String {
        match &self.agent {
            Some(a) => format!(
                "the agent {}{}",
                a.outcome.class.in_words(),
                a.outcome
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            None => format!("command {}", self.finished.describe()),
        }
    }
}

/// How an attempt ended: what the coordinator's parts pass each other. Its text (stored in
/// `attempts.outcome`, said in events) is made only at that edge, by [`AttemptOutcome::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptOutcome {
    /// Its command (and checks) passed.
    Passed,
    /// Its command failed, or the attempt could not run or be checked.
    Failed,
    /// Its command ran out of time.
    TimedOut,
    ChecksFailed,
    /// The agent said it was done but the worktree holds no change.
    NoChange,
    /// Fleet was stopped while it ran.
    Interrupted,
    /// How the agent's CLI ended, as the agent's outcome classifies it.
    Agent(fleet_agents::OutcomeClass),
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Passed => "passed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::ChecksFailed => "checks_failed",
            AttemptOutcome::NoChange => "no_change",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Agent(class) => class.as_str(),
        }
    }

    /// The core's view of it (what the pool reasons with); `None` where the pool has none.
    fn ending(self) -> Option<fleet_core::pool::Ending> {
        crate::fix_loop::ending_of(self.as_str())
    }
}

enum Launch {
    Attempt {
        task: usize,
        n: u32,
        fresh: bool,
        /// The agent profile playing it (agent tasks).
        profile: Option<usize>,
        prompt: Option<String>,
        /// The CLI session to continue and the attempt that left it (see
        /// [`crate::fix_loop::resume_from`]).
        resume: Option<(String, u32)>,
    },
    Finish {
        task: usize,
        n: u32,
        /// Checking again after a rebase, not after an attempt of the agent.
        recheck: bool,
    },
}

/// What an attempt worker is given.
struct AttemptJob {
    task: usize,
    n: u32,
    fresh: bool,
    tip: String,
    profile: Option<usize>,
    prompt: Option<String>,
    resume: Option<(String, u32)>,
}

enum FinishResult {
    /// Checks passed; the branch tip holding the task's work (worktree tasks only).
    Passed {
        tip: Option<String>,
    },
    CheckFailed {
        check: String,
        finished: Finished,
        /// The end of what the check printed.
        output: String,
    },
    /// An agent said it was done but the worktree holds no change.
    NoChange,
    Stopped,
    Error(String),
}

/// The environment variable that tags every process of a run (tasks, agents, checks, git),
/// so a resumed fleet finds what a killed one left running (`process::kill_tagged`).
const RUN_TAG: &str = "FLEET_RUN_TAG";

/// What workers share.
struct Ctx {
    repo: Repo,
    layout: StateDir,
    run_id: String,
    tasks: Vec<TaskDef>,
    profiles: Vec<AgentProfile>,
    repo_root: PathBuf,
    /// The branch passed tasks land on.
    integration: String,
    /// Where the tasks' branches live (`layout::task_branches`).
    task_branches: String,
    /// `<instance>/<run>`: the value of [`RUN_TAG`] in every process of this run.
    tag: String,
    kill_grace: Duration,
    mcp: Option<fleet_agents::McpServer>,
    tx: mpsc::UnboundedSender<Msg>,
    stop: watch::Receiver<bool>,
    redactor: fleet_secrets::Redactor,
    /// What commands and checks see of Fleet's environment (`process::command_env`).
    command_env: std::collections::BTreeMap<String, String>,
    /// The run's `policies:`, compiled.
    policy: policy_enforce::Enforcer,
}

struct Coordinator {
    store: Arc<dyn Store>,
    ctx: Arc<Ctx>,
    plan: Plan,
    run: Run,
    row: RunRow,
    rows: Vec<TaskRow>,
    attempts: HashMap<usize, AttemptRow>,
    batch: Batch,
    journal: Journal,
    /// Events committed this turn, for `publish`.
    committed: Vec<Event>,
    rx: mpsc::UnboundedReceiver<Msg>,
    stop_tx: watch::Sender<bool>,
    /// [`EngineOptions::stop`].
    external_stop: Option<watch::Receiver<bool>>,
    /// Workers in flight (attempts, checks, merges).
    busy: usize,
    /// Tasks running or checking (what `concurrency` limits).
    active: usize,
    merge_queue: VecDeque<usize>,
    /// The merge queue is busy: a merge runs, or its head is being re-checked.
    merging: bool,
    /// The task at the head of the merge queue whose checks run again after a rebase; the
    /// queue waits for it, so nothing lands under it.
    rechecking: Option<usize>,
    /// Work to hand to workers once the batch that allows it is committed.
    launches: Vec<Launch>,
    /// Spend of each running agent attempt: (cost the CLI reported, cost priced from tokens).
    spend: HashMap<usize, (f64, f64)>,
    /// Per task: the usage its CLI session has reported in all, as of the end of its last
    /// attempt, and, while a resumed attempt runs, what of that is still to be taken out of
    /// the CLI's reports (see `Adapter::usage_spans_resumed_session`).
    session_usage: HashMap<usize, fleet_agents::Usage>,
    usage_base: HashMap<usize, (fleet_agents::Usage, fleet_agents::Usage)>,
    /// Every account's cooldown, disablement and spend today.
    book: AccountBook,
    /// All attempts of this run by task, finished ones included (agent history, spend).
    past: HashMap<usize, Vec<AttemptRow>>,
    /// The last failing check of each task: (command, exit code, output tail).
    last_check: HashMap<usize, (String, Option<i32>, String)>,
    /// When each agent task started its first attempt (its wall-time budget runs from there).
    first_start: HashMap<usize, i64>,
    /// Reset time (Unix s) a running attempt's vendor announced.
    resets: HashMap<usize, i64>,
    /// The pending batch holds a decision (a transition, a run or account change), so it
    /// must be committed before anything else happens.
    urgent: bool,
    /// Since when the pending batch holds agent observations not yet committed.
    observed_since: Option<std::time::Instant>,
    integration_tip: String,
    /// Making the integration branch, when the run's tasks do not need it until the end.
    branch: Option<tokio::task::JoinHandle<Result<(), fleet_git::GitError>>>,
    stopping: bool,
    /// When to look for processes that ended attempts left behind (see `sweep_leftovers`).
    sweep_at: Option<std::time::Instant>,
    /// Messages and tool calls of each task's running attempt stored so far.
    chatter: HashMap<usize, u32>,
    observer: Option<Observer>,
    /// Creates the logs of tasks that became ready, before they start.
    logs: LogMaker,
    /// Lessons in prompts, and what they led to.
    memory: Memory,
    _lock: File,
}
