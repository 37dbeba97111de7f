//! How a run begins: a new run (its records, its integration branch) or a resumed one (its
//! state restored from the store, what a killed fleet left behind cleaned up), and the
//! coordinator built for it.

use super::agent_book::clock;
use super::attempt::append_log;
use super::recorder::{run_redactor, task_row};
use super::{AttemptOutcome, Coordinator, Ctx, EngineOptions, RUN_TAG, RunReport, policy_enforce};
use crate::fix_loop::AccountBook;
use crate::journal::Journal;
use crate::layout::{self, StateDir, integration_branch};
use crate::lessons::Memory;
use crate::log_maker::LogMaker;
use crate::plan::Plan;
use crate::process;
use crate::retrospective::Learner;
use crate::{EngineError, now_ms};
use fleet_core::graph::validate;
use fleet_core::{Run, TaskPlan, TaskRecord, TaskState};
use fleet_git::Repo;
use fleet_store::{AttemptRow, Batch, NewEvent, RunRow, RunStateChange, Store, TaskRow};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

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
        Some(fleet_store::pg::spawn_blocking(move || {
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
    let records = restore_records(&tasks)?;
    let run = Run::restore(graph, task_plans(&plan), records);
    let tip = integration_tip(&repo, &row, &tasks)?;
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

/// The stored tasks' records, as the core restores a run from.
fn restore_records(tasks: &[TaskRow]) -> Result<Vec<TaskRecord>, EngineError> {
    tasks
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
        .collect::<Result<Vec<_>, EngineError>>()
}

/// Where a resumed run's integration branch is now: made again where it started when it is
/// missing and nothing had landed on it yet.
fn integration_tip(repo: &Repo, row: &RunRow, tasks: &[TaskRow]) -> Result<String, EngineError> {
    let integration = &row.integration_branch;
    Ok(match repo.branch_tip(integration)? {
        Some(tip) => tip,
        // Killed before the branch was made (see `start_in`), or it was deleted before
        // anything landed on it: made again where it started, nothing is lost.
        None if tasks.iter().all(|t| t.merge_sha.is_none()) => {
            repo.set_branch(integration, &row.base_sha)?;
            row.base_sha.clone()
        }
        None => {
            return Err(EngineError::Invalid(format!(
                "integration branch {integration} is gone, with the work of the tasks that landed on it"
            )));
        }
    })
}

fn join_errors(errors: &[fleet_config::ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
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

/// A new run's id: its name and the local time, made unique in the store.
pub(crate) fn new_run_id(store: &dyn Store, name: &str) -> Result<String, EngineError> {
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

/// Holds an exclusive lock on the run for as long as the file is open.
fn lock_run(layout: &StateDir, run_id: &str) -> Result<File, EngineError> {
    // A fleet killed a moment ago may still be exiting; its lock goes with it.
    let patience = std::time::Duration::from_secs(3);
    match crate::files::lock_with_pid(&layout.lock(run_id), patience)? {
        crate::files::PidLock::Held(file) => Ok(file),
        crate::files::PidLock::HeldBy(holder) => {
            Err(EngineError::Locked(run_id.to_string(), holder))
        }
    }
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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
            &*store,
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
        let stale = self.clear_stale_locks()?;
        self.close_interrupted_attempts(now)?;
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

    /// Clears the locks a git command killed with the last fleet left: we hold the run lock,
    /// so anything under this run's refs and worktrees is ours to clean.
    fn clear_stale_locks(&self) -> Result<Vec<PathBuf>, EngineError> {
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
        Ok(stale)
    }

    /// Closes the attempts that were running when the last fleet died: interrupted.
    fn close_interrupted_attempts(&mut self, now: i64) -> Result<(), EngineError> {
        for mut a in self.store.attempts(&self.ctx.run_id)? {
            if a.outcome != "running" {
                continue;
            }
            a.outcome = AttemptOutcome::Interrupted.as_str().into();
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
                    json!({"outcome": AttemptOutcome::Interrupted.as_str()}),
                );
            }
            self.batch.attempts.push(a);
        }
        Ok(())
    }
}
