//! The coordinator's side of running a run on `fleet runner` workers: starting a task is
//! enqueueing it, and a runner's report is a store event the coordinator waits for.
//!
//! [`submit`] makes the run's integration branch on the project's remote (at the base), the
//! run and task rows, and one queue entry per leaf task with its dependencies (containers
//! expanded to their leaves). Runners resolve readiness themselves (a task is claimable once
//! its dependencies are done), so the coordinator holds no state a runner waits on: [`wait`]
//! only watches the queue until every task ended, fails the tasks whose runners kept dying,
//! and records how the run ended. A coordinator that dies loses nothing; the runners go on.
//!
//! An agent task travels as an [`AgentOrder`]: which profile or role plays it and what it is
//! asked. Its queue entry needs `agent:<profile>` or `role:<role>`, so only runners whose own
//! `fleet.yaml` offers that claim it; the runner does the whole Do -> Check -> Fix loop as a
//! one-task sub-run of the engine against the shared store (see `runner_agent.rs`).

use crate::plan::{AgentTask, Plan, TaskAction, TaskDef};
use crate::{EngineError, layout, now_ms};
use fleet_store::{NewEvent, QueueItem, RunRow, Store, TaskRow};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Claims of one task before it fails because its runners keep vanishing (the first run and
/// one redo, then one more chance).
pub const MAX_CLAIMS: u32 = 3;

/// The least time between two looks at a run's queue by [`wait`].
const SCAN_GAP: Duration = Duration::from_millis(250);

/// What a runner is told to do for one task (the queue entry's `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOrder {
    pub run: String,
    /// `git`: a fresh clone of `remote` on a task branch from the integration branch, merged
    /// back when it passes; `none`: an empty directory, nothing merged.
    pub workspace: String,
    pub checks: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub env: std::collections::BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub remote: String,
    pub integration: String,
    pub task_branch: String,
    /// An agent task: `run` is empty and this says who plays it and what they are asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentOrder>,
    /// A shell task's `retries:`: attempts after the first that fails, done within the claim
    /// (an agent task's are in its [`AgentOrder`]). Absent in rows queued before it: none.
    #[serde(default)]
    pub retries: u32,
    /// The first retry's wait (`retry_backoff:`), doubling per retry up to 32 times it.
    #[serde(default)]
    pub retry_backoff_ms: u64,
    /// The `protected_paths` of the queueing instance's `policies:`, as (rule, patterns): a
    /// shell task's change touching one fails and is put back, as locally. Older rows: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_paths: Vec<(String, Vec<String>)>,
}

/// What a runner needs to play an agent task with its own profiles and accounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOrder {
    /// The profile (or bare CLI) the runbook named, resolved in the runner's `fleet.yaml`.
    pub agent: Option<String>,
    /// Profiles with any of these roles may play it too.
    pub roles: Vec<String>,
    pub prompt: String,
    pub max_attempts: u32,
    pub escalate_after: u32,
    pub budget_usd: Option<f64>,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub max_time_ms: Option<u64>,
    pub allowed_paths: Vec<String>,
    pub allowed_tools: Vec<String>,
}

impl AgentOrder {
    fn of(t: &TaskDef, a: &AgentTask, pool: &crate::plan::AgentPool) -> AgentOrder {
        AgentOrder {
            agent: a.pinned.map(|i| pool.profiles[i].name.clone()),
            roles: a.roles.clone(),
            prompt: a.prompt.clone(),
            max_attempts: a.limits.max_attempts,
            escalate_after: a.limits.escalate_after,
            budget_usd: a.limits.budget_usd,
            retries: t.retry.retries,
            retry_backoff_ms: t.retry.backoff_base_ms,
            max_time_ms: t.max_time.map(|d| d.as_millis() as u64),
            allowed_paths: t.allowed_paths.clone(),
            allowed_tools: t.allowed_tools.clone(),
        }
    }

    /// What a runner must offer to claim it: one need whose alternatives (`|`) are the named
    /// profile and each of the roles. As in the engine's pool (`fleet_core::pool::choose`), a
    /// profile plays the task if it is the pinned one or has any of the roles, so a runner may
    /// claim it if it offers any of them.
    pub fn needs(&self) -> Vec<String> {
        let mut any: Vec<String> = self.agent.iter().map(|a| format!("agent:{a}")).collect();
        any.extend(self.roles.iter().map(|r| format!("role:{r}")));
        if any.is_empty() {
            any.push("agent:?".into());
        }
        vec![any.join(fleet_store::ANY_OF)]
    }
}

/// A run handed to runners.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub run_id: String,
    pub integration: String,
    pub tasks: usize,
    /// What each queued task needs of a runner, by task id.
    pub needs: Vec<(String, Vec<String>)>,
}

/// The queued tasks no live runner can play, each with what it needs: they wait (silently,
/// were nobody told) until a runner that offers it starts.
pub fn unplayable(
    store: &dyn Store,
    needs: &[(String, Vec<String>)],
) -> Result<Vec<(String, Vec<String>)>, EngineError> {
    let queue = store
        .queue()
        .ok_or_else(|| EngineError::Invalid(NO_QUEUE.into()))?;
    let live = queue.runners()?;
    Ok(needs
        .iter()
        .filter(|(_, n)| !live.iter().any(|r| fleet_store::meets(&r.offers, n)))
        .cloned()
        .collect())
}

/// Why a store cannot take a run for runners: it has no queue (SQLite).
pub const NO_QUEUE: &str = "runners need a store shared by several machines: set `store: postgres://…` in fleet.yaml (this instance's store is the SQLite file, which has no task queue)";

/// Enqueues `plan` for runners that clone `remote`; `base_sha` must be a commit the local
/// repository `repo` has (it is pushed to the remote as the integration branch).
///
/// `redactor` takes secrets out of the run's events, as the engine's does for a local run.
/// The queue entries keep the commands as written: runners run them, and only runners read
/// an entry's order (no event, API answer or export shows it), as only `--resume` reads the
/// runbook a run row keeps.
pub fn submit(
    store: &dyn Store,
    plan: &Plan,
    repo: &Path,
    remote: &str,
    base_sha: &str,
    redactor: &fleet_secrets::Redactor,
) -> Result<Submitted, EngineError> {
    let queue = store
        .queue()
        .ok_or_else(|| EngineError::Invalid(NO_QUEUE.into()))?;
    let graph = fleet_core::graph::validate(&plan.nodes)
        .map_err(|e| EngineError::Invalid(format!("the task graph is invalid: {e:?}")))?;
    let instance = layout::instance_id(store)?;
    let run_id = crate::engine::new_run_id(store, &plan.name)?;
    let integration = plan
        .integration
        .clone()
        .unwrap_or_else(|| layout::integration_branch(&instance, &run_id));
    let branches = layout::task_branches(&instance, &run_id);
    // As a local run: Fleet never writes a branch a policy protects.
    crate::engine::policy_enforce::refuse_protected_branch(plan, &integration)?;
    let protected_paths: Vec<(String, Vec<String>)> = plan
        .policies
        .iter()
        .filter(|r| !r.protected_paths.is_empty())
        .map(|r| (r.name.clone(), r.protected_paths.clone()))
        .collect();
    push_branch(repo, remote, base_sha, &integration)?;

    let now = now_ms();
    let leaves: Vec<usize> = (0..graph.len())
        .filter(|&n| graph.is_leaf(n) && plan.tasks[n].runs_something())
        .collect();
    let row = RunRow {
        id: run_id.clone(),
        name: plan.name.clone(),
        runbook_path: plan.runbook_path.display().to_string(),
        runbook_source: plan.source.clone(),
        repo: without_password(remote),
        base_sha: base_sha.to_string(),
        integration_branch: integration.clone(),
        state: "running".into(),
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut events = vec![event(
        &run_id,
        None,
        "run.started",
        json!({"name": plan.name, "base": base_sha, "integration_branch": integration,
               "tasks": leaves.len(), "executor": "runners", "remote": without_password(remote)}),
    )];
    for (idx, &n) in leaves.iter().enumerate() {
        let t = &plan.tasks[n];
        let (command, agent) = match &t.action {
            TaskAction::Shell(c) => (c.clone(), None),
            TaskAction::Agent(a) => (String::new(), Some(AgentOrder::of(t, a, &plan.pool))),
            TaskAction::Group => continue,
        };
        let needs = match &agent {
            Some(a) => a.needs(),
            None => vec!["sh".into()],
        };
        let mut deps: Vec<String> = Vec::new();
        for &d in graph.deps(n) {
            for leaf in graph.leaves_under(d) {
                deps.push(graph.id(leaf).to_string());
            }
        }
        deps.sort();
        deps.dedup();
        let order = TaskOrder {
            run: command.clone(),
            // An agent works in a clone of the repository whatever its workspace says.
            workspace: if t.worktree || agent.is_some() {
                "git"
            } else {
                "none"
            }
            .into(),
            checks: t.checks.clone(),
            timeout_ms: t.timeout.map(|d| d.as_millis() as u64),
            env: t.env.clone(),
            pass_env: t.pass_env.clone(),
            remote: remote.to_string(),
            integration: integration.clone(),
            task_branch: layout::task_branch(&branches, &t.id),
            agent,
            retries: t.retry.retries,
            retry_backoff_ms: t.retry.backoff_base_ms,
            protected_paths: protected_paths.clone(),
        };
        rows.push(TaskRow {
            run_id: run_id.clone(),
            idx: idx as u32,
            id: t.id.clone(),
            state: if deps.is_empty() { "ready" } else { "pending" }.into(),
            attempts: 0,
            failures: 0,
            not_before: 0,
            reason: None,
            commit_sha: None,
            merge_sha: None,
            started_at: None,
            finished_at: None,
        });
        events.push(event(
            &run_id,
            Some(&t.id),
            "task.created",
            json!({"runs": t.describe(), "checks": t.checks, "worktree": t.worktree, "deps": deps,
                   "needs": needs}),
        ));
        items.push(QueueItem {
            run_id: run_id.clone(),
            task_id: t.id.clone(),
            deps,
            needs,
            spec: serde_json::to_value(&order).map_err(std::io::Error::other)?,
        });
    }
    // The same door as a local run's records (`run_start.rs`): what people read is redacted.
    for e in &mut events {
        redactor.clean_json(&mut e.data);
    }
    store.create_run(&row, &rows, &events)?;
    queue.enqueue(
        &items,
        &[event(
            &run_id,
            None,
            "run.queued",
            json!({"tasks": items.len()}),
        )],
    )?;
    Ok(Submitted {
        run_id,
        integration,
        tasks: items.len(),
        needs: items
            .iter()
            .map(|i| (i.task_id.clone(), i.needs.clone()))
            .collect(),
    })
}

/// How a run on runners ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEnd {
    pub done: usize,
    pub failed: Vec<(String, String)>,
    pub skipped: usize,
    /// Tasks ended by [`cancel`] (the run was cancelled; [`cancel`] recorded its end).
    pub cancelled: usize,
}

impl RemoteEnd {
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.skipped == 0 && self.cancelled == 0
    }
}

/// Cancels a run on runners: its queued tasks are never claimed, the runners holding its
/// claimed ones stop them (their processes ended, nothing landed) when they learn it, and the
/// run ends `cancelled`. Returns the tasks cancelled; none (and nothing written) when the run
/// had ended.
pub fn cancel(store: &dyn Store, run_id: &str, reason: &str) -> Result<Vec<String>, EngineError> {
    let queue = store
        .queue()
        .ok_or_else(|| EngineError::Invalid(NO_QUEUE.into()))?;
    Ok(queue.cancel_run(run_id, reason, now_ms(), &[])?)
}

/// Waits until every task of the run ended (woken by the runners' events; the lease expiries
/// that no event announces are looked at every `poll`), then records the run's end.
/// `stopped` is asked between waits: the coordinator may go away at any time (the run goes
/// on; a later `wait` picks it up).
pub fn wait(
    store: &dyn Store,
    run_id: &str,
    poll: Duration,
    stopped: impl Fn() -> bool,
) -> Result<Option<RemoteEnd>, EngineError> {
    let queue = store
        .queue()
        .ok_or_else(|| EngineError::Invalid(NO_QUEUE.into()))?;
    let mut seen = store.newest_seq()?;
    loop {
        let scanned = std::time::Instant::now();
        queue.fail_exhausted(MAX_CLAIMS, now_ms())?;
        // The entries themselves only once none is open: reading them all at every look
        // would cost a run of many tasks more than its runners' claims do.
        let rows = match queue.has_open_entries(run_id)? {
            true => None,
            false => Some(queue.queued(run_id)?),
        };
        if let Some(rows) = rows.filter(|rows| {
            rows.iter().all(|r| {
                matches!(
                    r.state.as_str(),
                    "done" | "failed" | "skipped" | "cancelled"
                )
            })
        }) {
            let end = RemoteEnd {
                done: rows.iter().filter(|r| r.state == "done").count(),
                failed: rows
                    .iter()
                    .filter(|r| r.state == "failed")
                    .map(|r| (r.task_id.clone(), r.detail.clone().unwrap_or_default()))
                    .collect(),
                skipped: rows.iter().filter(|r| r.state == "skipped").count(),
                cancelled: rows.iter().filter(|r| r.state == "cancelled").count(),
            };
            // Ended here, or already by the runner that ended its last task: once either
            // way. A cancelled run's end was recorded by whoever cancelled it.
            if end.cancelled == 0 {
                queue.close_run_if_ended(run_id, now_ms())?;
            }
            return Ok(Some(end));
        }
        if stopped() {
            return Ok(None);
        }
        seen = store.wait_for_events(seen, poll)?;
        // Runners commit events for every task they claim and end: looking at the whole
        // queue at each of them would cost the database more than the runners do. A few
        // looks a second are enough for a run's end.
        if let Some(rest) = SCAN_GAP.checked_sub(scanned.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Ends the runs that ended while nobody waited for them: tasks whose runners died too often
/// are failed (their dependents skipped), and every run whose entries all ended gets its end
/// once. Runners call it when idle, so a run whose `fleet run --on-runners` went away still
/// ends.
pub fn sweep(store: &dyn Store) -> Result<(), EngineError> {
    let queue = store
        .queue()
        .ok_or_else(|| EngineError::Invalid(NO_QUEUE.into()))?;
    let mut runs = queue.fail_exhausted(MAX_CLAIMS, now_ms())?;
    runs.sort();
    runs.dedup();
    for run in runs {
        queue.close_run_if_ended(&run, now_ms())?;
    }
    Ok(())
}

fn event(run: &str, task: Option<&str>, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_ms(),
        run_id: run.to_string(),
        task: task.map(str::to_string),
        attempt: None,
        kind: kind.into(),
        data,
    }
}

/// `https://user:token@host/x.git` as `https://user@host/x.git`: events and rows are read by
/// people and the API; the queue entry (read by runners only) keeps the URL as given.
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Creates `branch` on `remote` at `sha`; refused (not forced) if it exists elsewhere.
fn push_branch(repo: &Path, remote: &str, sha: &str, branch: &str) -> Result<(), EngineError> {
    let out = fleet_git::command(repo)
        .args(["push", "--quiet", "--end-of-options", remote])
        .arg(format!("{sha}:refs/heads/{branch}"))
        .output()?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "cannot create {branch} on {remote}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
