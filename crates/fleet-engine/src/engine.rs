//! The coordinator: one loop that owns a run's state.
//!
//! It asks the pure core what to do, commits the resulting transitions and events to the store
//! in one transaction, and only then acts — spawns a worker, starts a merge. Workers do the IO
//! (git worktree, the command, checks, the commit) and report back over a channel; every report
//! becomes the next transition. Merges are done one at a time, in the order tasks pass, which is
//! dependency order because a task only starts once everything it depends on has landed.

use crate::agent;
use crate::fix_loop::{self, AccountBook};
use crate::journal::Journal;
use crate::layout::{self, StateDir, integration_branch};
use crate::lessons::Memory;
use crate::log_maker::LogMaker;
use crate::plan::{AgentProfile, Plan, TaskAction, TaskDef};
use crate::process::{self, Finished};
use crate::retrospective::Learner;
use crate::summary;
use crate::{EngineError, now_ms};
use fleet_core::graph::validate;
use fleet_core::pool::Clock;
use fleet_core::{Run, TaskPlan, TaskRecord, TaskState};
use fleet_git::{MergeOutcome, Repo};
use fleet_store::{AttemptRow, Batch, Event, NewEvent, RunRow, RunStateChange, Store, TaskRow};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
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
mod finish;
mod merge_queue;
#[path = "policy_enforce.rs"]
pub mod policy_enforce;
mod recorder;

use attempt::{
    append_log, attempt_worker, command_env, open_log, read_from, redact_log_since, task_env,
    workdir, write_log_line,
};
use finish::finish_worker;
use recorder::run_redactor;

/// How long agent observations (messages, tool calls, usage) may wait to be committed with
/// the ones after them. Decisions are never delayed.
const OBSERVATION_DELAY: Duration = Duration::from_millis(100);

/// How long after an attempt or its checks end Fleet looks for processes they left running
/// outside their process group. One look covers every attempt that ended meanwhile.
const LEFTOVER_SWEEP_DELAY: Duration = Duration::from_secs(1);

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

enum Launch {
    Attempt {
        task: usize,
        n: u32,
        fresh: bool,
        /// The agent profile playing it (agent tasks).
        profile: Option<usize>,
        prompt: Option<String>,
        /// The CLI session to continue and the attempt that left it (see
        /// [`fix_loop::resume_from`]).
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

/// Resolves when an outside stop is raised; never when there is none (or it was dropped).
async fn external_stop(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
        None => std::future::pending().await,
    }
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

/// Starts a new run of `plan`. The run id is `<name>-<yyyymmdd>-<hhmmss>` (plus `-N` if taken).
pub async fn start(
    layout: StateDir,
    store: Arc<dyn Store>,
    plan: Plan,
    opts: EngineOptions,
) -> Result<RunReport, EngineError> {
    let repo = Repo::open(&plan.repo)?;
    let base = repo.resolve(plan.base.as_deref().unwrap_or("HEAD"))?;
    start_in(repo, base, layout, store, plan, opts).await
}

/// [`start`] for a caller that has already opened `plan.repo` and resolved the run's base
/// (`plan.base`, else `HEAD`) to the commit `base`: no git process is run twice.
pub async fn start_in(
    repo: Repo,
    base: String,
    layout: StateDir,
    store: Arc<dyn Store>,
    plan: Plan,
    opts: EngineOptions,
) -> Result<RunReport, EngineError> {
    let graph = validate(&plan.nodes).map_err(|e| {
        EngineError::Invalid(
            e.iter()
                .map(|e| e.describe(&plan.nodes))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    // What a dead git or Fleet left in the repository is repaired before anything uses it.
    let repaired = repo.repair(&layout.worktrees())?.describe();
    let instance = layout::instance_id(&*store)?;
    // A named integration branch that exists already is continued: the run builds on it.
    // (A run's own `fleet/runs/<instance>/<run>` is new, or a leftover of a forgotten run of
    // this instance: it is reset.)
    let base = match &plan.integration {
        Some(named) => repo.branch_tip(named)?.unwrap_or(base),
        None => base,
    };
    if layout.root().starts_with(repo.root()) {
        repo.exclude("/.fleet/")?;
    }
    let mut run_id = new_run_id(&*store, &plan.name)?;
    let named = plan.integration.clone();
    policy_enforce::refuse_protected_branch(
        &plan,
        &named.unwrap_or_else(|| integration_branch(&instance, &run_id)),
    )?;
    let (row, tasks, integration) = loop {
        let integration = plan
            .integration
            .clone()
            .unwrap_or_else(|| integration_branch(&instance, &run_id));
        let (row, tasks, mut created) =
            run_records(&plan, &repo, &run_id, &base, &integration, &repaired);
        for e in &mut created {
            opts.redactor.clean_json(&mut e.data);
        }
        // The run exists in the store before anything happens in git. Another process may
        // take the id first (the same runbook started in the same second): then the next one.
        match store.create_run(&row, &tasks, &created) {
            Ok(_) => break (row, tasks, integration),
            Err(fleet_store::StoreError::RunExists(_)) => {
                run_id = new_run_id(&*store, &plan.name)?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Tasks with worktrees start from the branch and land on it: it is made before them. A
    // run without any only needs it when it ends, so git makes it while the tasks run (a
    // process killed before it exists leaves nothing landed: `resume` makes it again). A
    // named branch may be refused (checked out somewhere): that is found out before any task.
    let branch = if plan.integration.is_some() || plan.tasks.iter().any(|t| t.worktree) {
        repo.set_branch(&integration, &base)?;
        None
    } else {
        let (repo, base) = (repo.clone(), base.clone());
        Some(tokio::task::spawn_blocking(move || {
            repo.set_branch(&integration, &base)
        }))
    };
    let run = Run::new(graph, task_plans(&plan));
    let branches = layout::task_branches(&instance, &run_id);
    let learner = Learner::new(&repo, &base, &layout, &store, &plan, &opts);
    let mut coord = Coordinator::new(
        layout, store, repo, plan, run_id, row, tasks, run, branches, opts,
    )?;
    coord.integration_tip = base;
    coord.branch = branch;
    let report = coord.drive().await?;
    learner.after(&report).await;
    Ok(report)
}

/// The rows and events that create run `run_id` of `plan`.
fn run_records(
    plan: &Plan,
    repo: &Repo,
    run_id: &str,
    base: &str,
    integration: &str,
    repaired: &[String],
) -> (RunRow, Vec<TaskRow>, Vec<NewEvent>) {
    let now = now_ms();
    let row = RunRow {
        id: run_id.to_string(),
        name: plan.name.clone(),
        runbook_path: plan.runbook_path.display().to_string(),
        // Kept verbatim: `resume` runs it again (config refuses literal secrets in `env:`).
        runbook_source: plan.source.clone(),
        repo: repo.root().display().to_string(),
        base_sha: base.to_string(),
        integration_branch: integration.to_string(),
        state: "running".into(),
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let tasks: Vec<TaskRow> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| task_row(run_id, i, &t.id, &TaskRecord::pending(), None))
        .collect();
    let mut data = json!({"name": plan.name, "base": base, "integration_branch": integration,
                     "tasks": plan.tasks.len(), "concurrency": plan.concurrency});
    if !repaired.is_empty() {
        data["repaired_repository"] = json!(repaired);
    }
    let mut created = vec![NewEvent {
        at: now,
        run_id: run_id.to_string(),
        task: None,
        attempt: None,
        kind: "run.started".into(),
        data,
    }];
    for t in &plan.tasks {
        created.push(NewEvent {
            at: now,
            run_id: run_id.to_string(),
            task: Some(t.id.clone()),
            attempt: None,
            kind: "task.created".into(),
            data: json!({"runs": t.describe(), "checks": t.checks, "worktree": t.worktree}),
        });
    }
    (row, tasks, created)
}

/// Continues a run that was interrupted or killed.
pub async fn resume(
    layout: StateDir,
    store: Arc<dyn Store>,
    run_id: &str,
    instance: &fleet_config::InstanceConfig,
    opts: EngineOptions,
) -> Result<RunReport, EngineError> {
    let row = store
        .run(run_id)?
        .ok_or_else(|| EngineError::NoSuchRun(run_id.to_string()))?;
    if matches!(row.state.as_str(), "passed" | "failed" | "cancelled") {
        return Err(EngineError::AlreadyFinished(
            run_id.to_string(),
            row.state.clone(),
        ));
    }
    let rb =
        fleet_config::parse_runbook(std::path::Path::new(&row.runbook_path), &row.runbook_source)
            .map_err(|e| EngineError::Invalid(join_errors(&e)))?;
    let mut plan = crate::plan::plan_from_runbook(&rb, instance)
        .map_err(|e| EngineError::Invalid(join_errors(&e)))?;
    plan.repo = PathBuf::from(&row.repo);
    let graph = validate(&plan.nodes).map_err(|_| EngineError::Invalid("stored graph".into()))?;
    let repo = Repo::open(&plan.repo)?;
    let tasks = store.tasks(run_id)?;
    if tasks.len() != plan.tasks.len() {
        return Err(EngineError::Invalid(format!(
            "run {run_id} has {} stored tasks but its runbook has {}",
            tasks.len(),
            plan.tasks.len()
        )));
    }
    let records = tasks
        .iter()
        .map(|t| {
            Ok(TaskRecord {
                state: TaskState::parse(&t.state)
                    .ok_or_else(|| EngineError::Invalid(format!("unknown state {:?}", t.state)))?,
                attempts: t.attempts,
                failures: t.failures,
                not_before: t.not_before.max(0) as u64,
                reason: t.reason.clone(),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let run = Run::restore(graph, task_plans(&plan), records);
    let integration = row.integration_branch.clone();
    let tip = match repo.branch_tip(&integration)? {
        Some(tip) => tip,
        // Killed before the branch was made (see `start_in`), or it was deleted before
        // anything landed on it: made again where it started, nothing is lost.
        None if tasks.iter().all(|t| t.merge_sha.is_none()) => {
            repo.set_branch(&integration, &row.base_sha)?;
            row.base_sha.clone()
        }
        None => {
            return Err(EngineError::Invalid(format!(
                "integration branch {integration} is gone, with the work of the tasks that landed on it"
            )));
        }
    };
    // A run made before branch names carried the instance keeps its tasks' branches.
    let legacy = layout::legacy_task_branches(run_id);
    let branches = if repo.list_branches(&legacy)?.is_empty() {
        layout::task_branches(&layout::instance_id(&*store)?, run_id)
    } else {
        legacy
    };
    let learner = Learner::new(&repo, &row.base_sha, &layout, &store, &plan, &opts);
    let mut coord = Coordinator::new(
        layout,
        store,
        repo,
        plan,
        run_id.to_string(),
        row,
        tasks,
        run,
        branches,
        opts,
    )?;
    coord.integration_tip = tip;
    coord.recover()?;
    let report = coord.drive().await?;
    learner.after(&report).await;
    Ok(report)
}

fn join_errors(errors: &[fleet_config::ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Now, with the local time zone (for accounts' windows and budget days).
fn clock() -> Clock {
    Clock {
        now: now_ms() as u64,
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    }
}

fn task_plans(plan: &Plan) -> Vec<TaskPlan> {
    plan.tasks
        .iter()
        .map(|t| TaskPlan {
            retry: t.retry,
            needs_merge: t.worktree && t.runs_something(),
        })
        .collect()
}

fn new_run_id(store: &dyn Store, name: &str) -> Result<String, EngineError> {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let base = format!("{name}-{stamp}");
    let mut id = base.clone();
    let mut n = 2;
    while store.run(&id)?.is_some() {
        id = format!("{base}-{n}");
        n += 1;
    }
    Ok(id)
}

fn task_row(run: &str, idx: usize, id: &str, rec: &TaskRecord, prev: Option<&TaskRow>) -> TaskRow {
    TaskRow {
        run_id: run.to_string(),
        idx: idx as u32,
        id: id.to_string(),
        state: rec.state.as_str().to_string(),
        attempts: rec.attempts,
        failures: rec.failures,
        not_before: rec.not_before as i64,
        reason: rec.reason.clone(),
        commit_sha: prev.and_then(|p| p.commit_sha.clone()),
        merge_sha: prev.and_then(|p| p.merge_sha.clone()),
        started_at: prev.and_then(|p| p.started_at),
        finished_at: prev.and_then(|p| p.finished_at),
    }
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

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    fn new(
        layout: StateDir,
        store: Arc<dyn Store>,
        repo: Repo,
        plan: Plan,
        run_id: String,
        row: RunRow,
        rows: Vec<TaskRow>,
        run: Run,
        task_branches: String,
        opts: EngineOptions,
    ) -> Result<Coordinator, EngineError> {
        std::fs::create_dir_all(layout.logs_dir(&run_id))?;
        let lock = lock_run(&layout, &run_id)?;
        let layout_root = &layout.root().to_path_buf();
        let journal = Journal::open(&layout.events(&run_id), &*store, &run_id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Run ids are unique only within an instance: the tag that finds a dead fleet's
        // leftovers carries the instance too, so no other instance's processes are killed.
        let tag = format!("{}/{run_id}", layout::instance_id(&*store)?);
        let policy = policy_enforce::Enforcer::new(&plan.policies).map_err(EngineError::Invalid)?;
        let ctx = Arc::new(Ctx {
            repo_root: repo.root().to_path_buf(),
            integration: row.integration_branch.clone(),
            task_branches,
            // Every git fleet starts for this run carries the run's tag, like its tasks, so a
            // resumed fleet can find what a killed one left running.
            repo: repo.tagged(RUN_TAG, &tag),
            tag,
            layout,
            run_id,
            tasks: plan.tasks.clone(),
            profiles: plan.pool.profiles.clone(),
            kill_grace: opts.kill_grace,
            mcp: opts.mcp.clone(),
            tx,
            stop: stop_rx,
            redactor: run_redactor(opts.redactor.clone(), &plan),
            command_env: process::command_env(&[]),
            policy,
        });
        let memory = Memory::open(
            layout_root,
            &ctx.repo_root,
            opts.memory.clone(),
            ctx.redactor.clone(),
        );
        let active = run.count(TaskState::Running) + run.count(TaskState::Checking);
        let book = AccountBook::load(&plan.pool, &*store, &clock())?;
        let mut past: HashMap<usize, Vec<AttemptRow>> = HashMap::new();
        for a in store.attempts(&ctx.run_id)? {
            if let Some(i) = plan.tasks.iter().position(|t| t.id == a.task_id) {
                past.entry(i).or_default().push(a);
            }
        }
        let first_start = past
            .iter()
            .filter_map(|(i, v)| v.iter().map(|a| a.started_at).min().map(|t| (*i, t)))
            .collect();
        Ok(Coordinator {
            store,
            ctx,
            plan,
            run,
            row,
            rows,
            attempts: HashMap::new(),
            batch: Batch::default(),
            journal,
            committed: Vec::new(),
            rx,
            stop_tx,
            external_stop: opts.stop.clone(),
            busy: 0,
            active,
            merge_queue: VecDeque::new(),
            merging: false,
            rechecking: None,
            launches: Vec::new(),
            spend: HashMap::new(),
            session_usage: HashMap::new(),
            usage_base: HashMap::new(),
            book,
            past,
            last_check: HashMap::new(),
            first_start,
            resets: HashMap::new(),
            urgent: false,
            observed_since: None,
            integration_tip: String::new(),
            branch: None,
            stopping: false,
            sweep_at: None,
            chatter: HashMap::new(),
            observer: opts.observer,
            logs: LogMaker::start(),
            memory,
            _lock: lock,
        })
    }

    fn run_id(&self) -> &str {
        &self.ctx.run_id
    }

    /// After a restart: ends leftover processes, closes interrupted attempts, puts their tasks
    /// back to ready and queues merges that had not been confirmed.
    fn recover(&mut self) -> Result<(), EngineError> {
        let now = now_ms();
        let mut ghosts = process::kill_tagged(RUN_TAG, &self.ctx.tag);
        if self.ctx.task_branches == layout::legacy_task_branches(&self.ctx.run_id) {
            // A fleet from before the instance tag tagged its processes by the run alone.
            ghosts += process::kill_tagged("FLEET_RUN", &self.ctx.run_id);
        }
        // Then what they, or a git of theirs cut short, left in the repository is repaired
        // (their locks, once old enough to be told from a live git's).
        let worktrees = self.ctx.layout.worktrees();
        let repaired = if ghosts > 0 {
            self.ctx.repo.repair_after_kill(&worktrees)?
        } else {
            self.ctx.repo.repair(&worktrees)?
        }
        .describe();
        // A git command killed with us may have left its locks; we hold the run lock, so
        // anything under this run's refs and worktrees is ours to clean.
        let mut stale = Vec::new();
        // Passed tasks count too: their merge (a rebase in their worktree) may have been cut.
        for (i, def) in self.plan.tasks.iter().enumerate() {
            if def.worktree && !self.run.is_final(i) {
                let wt = self.ctx.layout.worktree(&self.ctx.run_id, &def.id);
                stale.extend(
                    self.ctx
                        .repo
                        .clear_stale_locks(Some(&wt), &self.ctx.task_branches)?,
                );
            }
        }
        stale.extend(
            self.ctx
                .repo
                .clear_stale_locks(None, &self.ctx.integration)?,
        );
        for mut a in self.store.attempts(&self.ctx.run_id)? {
            if a.outcome != "running" {
                continue;
            }
            a.outcome = "interrupted".into();
            a.finished_at = Some(now);
            a.detail = Some("fleet stopped while the attempt ran".into());
            if let Some(i) = self.plan.tasks.iter().position(|t| t.id == a.task_id) {
                append_log(
                    &self.ctx,
                    i,
                    &format!(
                        "── attempt {} interrupted: fleet stopped while it ran ──\n",
                        a.n
                    ),
                );
                self.event(
                    Some(i),
                    Some(a.n),
                    "attempt.finished",
                    json!({"outcome": "interrupted"}),
                );
            }
            self.batch.attempts.push(a);
        }
        let stale: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        self.event(
            None,
            None,
            "run.resumed",
            json!({"killed_leftover_processes": ghosts, "removed_stale_git_locks": stale,
                   "repaired_repository": repaired}),
        );
        self.batch.run_state = Some(RunStateChange {
            run_id: self.ctx.run_id.clone(),
            state: "running".into(),
            at: now,
            finished_at: None,
        });
        // Worktrees of tasks that landed are removed (a crash may have come first).
        for (i, def) in self.plan.tasks.iter().enumerate() {
            let wt = self.ctx.layout.worktree(&self.ctx.run_id, &def.id);
            if def.worktree && self.run.is_satisfied(i) && wt.exists() {
                self.ctx.repo.remove_worktree(&wt)?;
            }
        }
        let transitions = self
            .run
            .recover("interrupted: fleet stopped while the task ran");
        self.record(transitions);
        for &i in self.run.graph().topo_order() {
            if self.run.state(i) == TaskState::Passed && self.run.plan(i).needs_merge {
                self.merge_queue.push_back(i);
            }
        }
        self.flush()
    }

    async fn drive(mut self) -> Result<RunReport, EngineError> {
        let t = self.run.promote_all();
        self.record(t);
        self.flush()?;
        let mut signals = crate::signals::Listener::new()?;
        loop {
            // One commit per turn: what the workers reported and what starts next are
            // persisted together, and only then does anything new run. A batch holding only
            // what agents said (no decision to act on) may wait a moment for more of it, so a
            // chatty fleet commits a few times a second instead of once per line.
            self.start_ready();
            let observing_only = !self.urgent && self.launches.is_empty();
            let due = self
                .observed_since
                .is_some_and(|t| t.elapsed() >= OBSERVATION_DELAY);
            if !observing_only || due || self.stopping {
                self.commit()?;
            }
            self.launch();
            self.start_merge();
            self.publish()?;
            self.sweep_leftovers();
            if self.busy == 0 && !self.merging && (self.stopping || self.run.is_finished()) {
                break;
            }
            let wake = self.run.next_wakeup(now_ms() as u64);
            let observed = self
                .observed_since
                .map(|t| tokio::time::Instant::from_std(t + OBSERVATION_DELAY))
                .into_iter()
                .chain(self.sweep_at.map(tokio::time::Instant::from_std))
                .min();
            let sleep = async {
                let wake = match wake {
                    Some(at) if !self.stopping => Some(
                        tokio::time::Instant::now()
                            + Duration::from_millis(at.saturating_sub(now_ms() as u64)),
                    ),
                    _ => None,
                };
                match (wake, observed) {
                    (Some(a), Some(b)) => tokio::time::sleep_until(a.min(b)).await,
                    (Some(a), None) | (None, Some(a)) => tokio::time::sleep_until(a).await,
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = self.rx.recv() => {
                    let msg = msg.expect("the coordinator holds a sender");
                    self.handle(msg);
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(msg);
                    }
                }
                _ = sleep => {}
                why = signals.recv() => self.stop(why),
                _ = external_stop(&mut self.external_stop) => self.stop("stopped: the work was cancelled"),
            }
        }
        // Nothing an attempt started outlives the run, a `setsid` daemon included.
        let tag = self.ctx.tag.clone();
        tokio::task::spawn_blocking(move || process::kill_leftovers(RUN_TAG, &tag, |_, _| false))
            .await
            .map_err(std::io::Error::other)?;
        // The run is not recorded as ended before its branch exists.
        if let Some(making) = self.branch.take() {
            making.await.map_err(std::io::Error::other)??;
        }
        self.memory.traces.settle().await;
        self.finish()
    }

    /// Once due, kills (on the blocking pool) the processes of attempts that have ended — what
    /// escaped their process group, like a `setsid` daemon. Attempts that run, and any later
    /// attempt of a task, are left alone: a task's attempt `n` is over once the task is in
    /// neither `running` nor `checking` with attempt `n`.
    fn sweep_leftovers(&mut self) {
        if self
            .sweep_at
            .is_none_or(|at| std::time::Instant::now() < at)
        {
            return;
        }
        self.sweep_at = None;
        // Per task id: attempts below this number are over.
        let over_below: HashMap<String, u32> = (0..self.plan.tasks.len())
            .map(|i| {
                let rec = self.run.task(i);
                let below = match rec.state {
                    TaskState::Running | TaskState::Checking => rec.attempts,
                    _ => rec.attempts + 1,
                };
                (self.plan.tasks[i].id.clone(), below)
            })
            .collect();
        let tag = self.ctx.tag.clone();
        tokio::task::spawn_blocking(move || {
            process::kill_leftovers(RUN_TAG, &tag, |task, attempt| {
                match (over_below.get(task), attempt.parse::<u32>()) {
                    (Some(below), Ok(n)) => n >= *below,
                    _ => true,
                }
            })
        });
    }

    fn stop(&mut self, why: &str) {
        self.external_stop = None;
        if !self.stopping {
            self.stopping = true;
            self.event(None, None, "run.stopping", json!({"reason": why}));
            let _ = self.stop_tx.send(true);
        }
    }

    /// Starts as many ready tasks as there are free slots (recorded, not yet launched).
    fn start_ready(&mut self) {
        if self.stopping {
            return;
        }
        // The merge queue's head, if it may need a re-check, keeps a slot for it.
        let reserved = usize::from(
            !self.merging
                && self
                    .merge_queue
                    .front()
                    .is_some_and(|&i| !self.plan.tasks[i].checks.is_empty()),
        );
        let free = self.plan.concurrency.saturating_sub(self.active + reserved);
        if free == 0 {
            return;
        }
        let now = now_ms();
        let mut free = free;
        // A task the pool cannot serve yet is deferred, freeing its slot for the next one.
        while free > 0 {
            let next = self.run.next_to_start(now as u64, free);
            if next.is_empty() {
                break;
            }
            for i in next {
                let profile = match &self.plan.tasks[i].action {
                    TaskAction::Agent(_) => match self.choose_agent(i, now) {
                        Some(p) => Some(p),
                        None => continue,
                    },
                    _ => None,
                };
                free -= 1;
                self.start_attempt(i, profile, now);
            }
        }
    }

    /// Ready -> running for task `i`, played by `profile` for agent tasks.
    fn start_attempt(&mut self, i: usize, profile: Option<usize>, now: i64) {
        let t = self.run.start(i);
        let n = t.attempt;
        self.record(vec![t]);
        self.spend.remove(&i);
        self.chatter.remove(&i);
        self.first_start.entry(i).or_insert(now);
        let mut a = AttemptRow {
            run_id: self.ctx.run_id.clone(),
            task_id: self.plan.tasks[i].id.clone(),
            n,
            started_at: now,
            outcome: "running".into(),
            ..AttemptRow::default()
        };
        let mut data = json!({"command": self.plan.tasks[i].describe()});
        let mut prompt = None;
        let mut resume = None;
        let mut lessons = Vec::new();
        if let Some(pi) = profile {
            let p = &self.plan.pool.profiles[pi];
            a.profile = Some(p.name.clone());
            a.cli = Some(p.cli.clone());
            a.model = p.model.clone();
            a.account = p.account.clone();
            data = json!({"agent": p.name, "cli": p.cli, "model": p.model, "account": p.account});
            let (text, ids) =
                (self.memory).inject(&self.ctx.run_id, &self.plan.tasks[i], n, self.prompt_for(i));
            (prompt, lessons) = (Some(text), ids);
            let previous = self.past.get(&i).and_then(|v| v.last());
            let adapter = fleet_agents::adapter(&p.cli);
            // The session lives in the task's kept home (gone after a crash of fleet itself).
            let home = self
                .ctx
                .layout
                .agent_home(&self.ctx.run_id, &self.plan.tasks[i].id);
            resume = fix_loop::resume_from(previous, &p.name)
                // ACP: the home is kept only where the agent offered session/load.
                .filter(|_| {
                    (p.acp || adapter.as_ref().is_some_and(|a| a.can_resume())) && home.is_dir()
                })
                .map(|(s, n)| (s.to_string(), n));
            let spans = adapter.is_some_and(|a| a.usage_spans_resumed_session());
            match (&resume, self.session_usage.get(&i)) {
                (Some(_), Some(total)) if spans => {
                    self.usage_base.insert(i, (*total, *total));
                }
                // What the session reported before is unknown (fleet was restarted): a resume
                // would count it again, so start afresh.
                (Some(_), None) if spans => resume = None,
                _ => {}
            }
            if let Some((session, _)) = &resume {
                data["resume_session"] = json!(session);
            }
        }
        self.batch.attempts.push(a.clone());
        self.attempts.insert(i, a.clone());
        self.past.entry(i).or_default().push(a);
        self.event(Some(i), Some(n), "attempt.started", data);
        if !lessons.is_empty() {
            self.event(
                Some(i),
                Some(n),
                "attempt.lessons",
                json!({ "lessons": lessons }),
            );
        }
        // A task's first attempt gets a fresh worktree, and so does every attempt of a command:
        // a command is not idempotent (`echo x >> f`), so it must start from a known state, not
        // on top of what an interrupted or failed run of it left. An agent's later attempts
        // continue in the worktree as left (its handoff names that partial change), unless it
        // is missing or not a real worktree (a crash mid-creation).
        let is_agent = matches!(self.plan.tasks[i].action, TaskAction::Agent(_));
        self.launches.push(Launch::Attempt {
            task: i,
            n,
            fresh: n == 1 || !is_agent,
            profile,
            prompt,
            resume,
        });
    }

    /// The prompt of an agent task's next attempt: the task, then the handoff note.
    fn prompt_for(&self, i: usize) -> String {
        let TaskAction::Agent(a) = &self.plan.tasks[i].action else {
            return String::new();
        };
        let done: Vec<(String, String, Option<String>)> = self
            .past
            .get(&i)
            .map(|v| {
                v.iter()
                    .filter(|a| a.outcome != "running")
                    .map(|a| {
                        (
                            a.profile.clone().unwrap_or_default(),
                            a.outcome.clone(),
                            a.detail.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let note =
            fix_loop::handoff_note(&self.plan.tasks[i].checks, &done, self.last_check.get(&i));
        let earlier = (self.memory.traces).section(&self.plan.nodes, &self.plan.tasks[i].id);
        let asked = crate::task_traces::with_section(&a.prompt, &earlier);
        if note.is_empty() {
            asked
        } else {
            format!("{}\n\n---\n\n{note}", asked.trim_end())
        }
    }

    /// Hands committed work to workers.
    fn launch(&mut self) {
        for l in std::mem::take(&mut self.launches) {
            self.busy += 1;
            let ctx = self.ctx.clone();
            match l {
                Launch::Attempt {
                    task,
                    n,
                    fresh,
                    profile,
                    prompt,
                    resume,
                } => {
                    let job = AttemptJob {
                        task,
                        n,
                        fresh,
                        tip: self.integration_tip.clone(),
                        profile,
                        prompt,
                        resume,
                    };
                    tokio::spawn(attempt_worker(ctx, job));
                }
                Launch::Finish { task, n, recheck } => {
                    tokio::spawn(finish_worker(ctx, task, n, recheck));
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        if matches!(msg, Msg::Attempt { .. } | Msg::Finish { .. }) {
            // Processes or checks ended: look for what they left running, soon.
            self.sweep_at
                .get_or_insert_with(|| std::time::Instant::now() + LEFTOVER_SWEEP_DELAY);
        }
        match msg {
            Msg::Attempt { task, result } => self.attempt_ended(task, result),
            Msg::Agent { task, events } => {
                self.observed_since
                    .get_or_insert_with(std::time::Instant::now);
                self.agent_events(task, events)
            }
            Msg::Cleaned { task, result } => self.cleaned(task, result),
            Msg::Finish { task, result } => self.finish_ended(task, result),
            Msg::Merge { task, result } => self.merge_ended(task, result),
        }
    }

    /// An attempt worker reported: checks next, or the attempt failed or was stopped.
    fn attempt_ended(&mut self, task: usize, result: Result<AttemptEnd, String>) {
        self.busy -= 1;
        match result {
            Err(err) => self.attempt_failed(task, "failed", None, err),
            Ok(end) if end.finished.stopped => self.interrupted(task),
            Ok(end) if end.succeeded() => {
                let def = &self.plan.tasks[task];
                if def.checks.is_empty() && !def.worktree {
                    self.finish_attempt(task, "passed", end.finished.code, None);
                    let t = self.run.attempt_passed(task);
                    self.record(t);
                } else {
                    // "checking" is committed before the checks run (see `launch`).
                    let t = self.run.begin_checks(task);
                    let n = t.attempt;
                    self.record(vec![t]);
                    self.launches.push(Launch::Finish {
                        task,
                        n,
                        recheck: false,
                    });
                }
            }
            Ok(end) => {
                let reason = end.describe();
                let outcome = match &end.agent {
                    Some(a) => a.outcome.class.as_str(),
                    None if end.finished.timed_out => "timed_out",
                    None => "failed",
                };
                if let Some(a) = &end.agent {
                    let n = self.run.task(task).attempts;
                    if a.stalled {
                        self.event(Some(task), Some(n), "attempt.stalled", json!({}));
                    }
                    if let Some(at) = a.outcome.resets_at {
                        self.resets.insert(task, at);
                        self.event(
                            Some(task),
                            Some(n),
                            "attempt.rate_limited",
                            json!({"resets_at": crate::rfc3339(at * 1000), "class": outcome}),
                        );
                    }
                }
                self.attempt_failed(task, outcome, end.finished.code, reason);
            }
        }
    }

    /// A landed task's worktree was removed, or could not be.
    fn cleaned(&mut self, task: usize, result: Result<(), String>) {
        self.busy -= 1;
        if let Err(e) = result {
            append_log(
                &self.ctx,
                task,
                &format!("── could not remove the worktree: {e} (`fleet gc` will) ──\n"),
            );
        }
    }

    /// A finish worker reported: the task passed (and queues to land), or its attempt failed.
    fn finish_ended(&mut self, task: usize, result: FinishResult) {
        self.busy -= 1;
        // A re-check after a rebase holds the merge queue until it ends; a pass lands
        // next, ahead of the tasks that passed after it.
        let was_rechecking = self.rechecking == Some(task);
        if was_rechecking {
            self.rechecking = None;
            self.merging = false;
        }
        match result {
            FinishResult::Passed { tip } => {
                if !self.plan.tasks[task].checks.is_empty() {
                    let n = self.run.task(task).attempts;
                    self.event(Some(task), Some(n), "task.checks_passed", json!({}));
                }
                self.rows[task].commit_sha = tip;
                self.finish_attempt(task, "passed", Some(0), None);
                let t = self.run.attempt_passed(task);
                self.record(t);
                if self.run.plan(task).needs_merge {
                    if was_rechecking {
                        self.merge_queue.push_front(task);
                    } else {
                        self.merge_queue.push_back(task);
                    }
                }
            }
            FinishResult::CheckFailed {
                check,
                finished,
                output,
            } => {
                let reason = format!("check `{check}` {}", finished.describe());
                let n = self.run.task(task).attempts;
                self.event(
                    Some(task),
                    Some(n),
                    "task.checks_failed",
                    json!({"check": check, "exit_code": finished.code, "timed_out": finished.timed_out,
                           "output_tail": output}),
                );
                self.last_check.insert(task, (check, finished.code, output));
                self.attempt_failed(task, "checks_failed", finished.code, reason);
            }
            FinishResult::NoChange => {
                let reason = "the agent reported success but changed nothing".to_string();
                self.attempt_failed(task, "no_change", None, reason);
            }
            FinishResult::Stopped => self.interrupted(task),
            FinishResult::Error(err) => self.attempt_failed(task, "failed", None, err),
        }
    }

    fn interrupted(&mut self, task: usize) {
        self.finish_attempt(task, "interrupted", None, Some("fleet was stopped".into()));
        append_log(
            &self.ctx,
            task,
            "── attempt interrupted: fleet was stopped; `fleet run --resume` continues ──\n",
        );
        let t = self.run.interrupt(task, "interrupted: fleet was stopped");
        self.record(vec![t]);
    }

    /// Removes a landed task's worktree off the loop; the run does not end before it is gone.
    fn remove_worktree(&mut self, task: usize) {
        let ctx = self.ctx.clone();
        let path = ctx.layout.worktree(&ctx.run_id, &self.plan.tasks[task].id);
        self.busy += 1;
        tokio::task::spawn_blocking(move || {
            let result = if path.exists() {
                ctx.repo.remove_worktree(&path).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            let _ = ctx.tx.send(Msg::Cleaned { task, result });
        });
    }

    fn finish(mut self) -> Result<RunReport, EngineError> {
        let now = now_ms();
        let end = if self.stopping && !self.run.is_finished() {
            RunEnd::Interrupted
        } else if self.run.all_satisfied() {
            RunEnd::Passed
        } else {
            RunEnd::Failed
        };
        let state = match end {
            RunEnd::Passed => "passed",
            RunEnd::Failed => "failed",
            RunEnd::Interrupted => "interrupted",
        };
        let counts: serde_json::Map<String, serde_json::Value> = TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), json!(self.run.count(*s))))
            .filter(|(_, v)| v != &json!(0))
            .collect();
        self.event(
            None,
            None,
            if end == RunEnd::Interrupted {
                "run.interrupted"
            } else {
                "run.finished"
            },
            json!({"result": state, "tasks": counts}),
        );
        self.batch.run_state = Some(RunStateChange {
            run_id: self.ctx.run_id.clone(),
            state: state.into(),
            at: now,
            finished_at: (end != RunEnd::Interrupted).then_some(now),
        });
        self.flush()?;
        // Homes kept for a session that might have been continued hold credentials: none
        // outlives the run. (An interrupted run keeps them for `--resume`.)
        if end != RunEnd::Interrupted {
            let _ = std::fs::remove_dir_all(self.ctx.layout.homes_dir(&self.ctx.run_id));
        }
        self.row.state = state.into();
        let attempts = self.store.attempts(&self.ctx.run_id)?;
        let text = summary::render(&self.row, &self.rows, &attempts, &self.ctx.layout, now);
        let summary_path = self.ctx.layout.summary(&self.ctx.run_id);
        write_atomic(&summary_path, &text)?;
        if let Some(report) = &self.plan.report {
            if let Some(dir) = report.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_atomic(report, &text)?;
        }
        Ok(RunReport {
            run_id: self.ctx.run_id.clone(),
            end,
            integration_branch: self.ctx.integration.clone(),
            summary: summary_path,
            logs: self.ctx.layout.logs_dir(self.run_id()),
            troubles: std::mem::take(&mut self.memory.troubles),
        })
    }
}

/// Writes via a temporary file and rename, so a reader never sees half a file.
fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Holds an exclusive lock on the run for as long as the file is open.
/// Brings an ended run's `events.jsonl` up to the store. A process killed between committing
/// the run's last events and appending them left the journal short, and an ended run is never
/// opened by a resume again. It takes the run's lock meanwhile; a run that has not ended is
/// left to the process that drives it.
pub fn catch_up_journal(
    layout: &StateDir,
    store: &dyn Store,
    run: &RunRow,
) -> Result<(), EngineError> {
    if run.finished_at.is_none() {
        return Ok(());
    }
    let _lock = lock_run(layout, &run.id)?;
    Journal::open(&layout.events(&run.id), store, &run.id)?;
    Ok(())
}

fn lock_run(layout: &StateDir, run_id: &str) -> Result<File, EngineError> {
    use std::os::fd::AsRawFd;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(layout.lock(run_id))?;
    // A fleet killed a moment ago may still be exiting; its lock goes with it.
    let mut tries = 0;
    let rc = loop {
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 || tries == 60 {
            break rc;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if rc != 0 {
        let holder = std::fs::read_to_string(layout.lock(run_id)).unwrap_or_default();
        return Err(EngineError::Locked(
            run_id.to_string(),
            holder.trim().to_string(),
        ));
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}
