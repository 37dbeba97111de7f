//! An agent task on a runner: the whole Do -> Check -> Fix loop, agent swaps included, done by
//! the engine itself as a one-task sub-run in the runner's fresh clone.
//!
//! The sub-run is an ordinary run of the shared store (its attempts, events and the accounts'
//! cooldowns and budgets are rows every runner and API replica reads), so a rate limit one
//! runner met moves the next task of any runner off that account, and `fleet status` shows
//! the attempts. The profiles and accounts are the runner's own (`fleet.yaml` of its
//! instance); the order names a profile or a role, and the runner only claimed it because it
//! offers that (`agent:<profile>`, `role:<role>`).
//!
//! The sub-run lands the task in the clone, on its own integration branch; the runner then
//! pushes that tip as the task's branch and lands it on the remote like a shell task's commit
//! (merge lease, compare-and-swap push, `Fleet-Task:` trailer). The outer task gets a
//! `task.sub_run` event naming the sub-run.
//!
//! Its agents get the instance's MCP server (`fleet mcp` of the runner's home, against the
//! same store), and its retrospectives run once the claim ended (`runner_retro.rs`).

use crate::layout::StateDir;
use crate::plan::{AgentPool, AgentTask, Plan, TaskAction, TaskDef};
use crate::remote::{AgentOrder, TaskOrder};
use crate::retrospective::Learner;
use crate::runner_retro::{Pending, Retros};
use crate::{EngineError, EngineOptions, RunEnd, now_ms};
use fleet_config::InstanceConfig;
use fleet_core::pool::Limits;
use fleet_core::{NodeSpec, RetryPolicy};
use fleet_store::{Batch, Claim, NewEvent, Store};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// What a runner plays agents with: its instance's profiles, accounts, policies and memory.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub instance: Arc<InstanceConfig>,
    /// Profiles whose CLI is installed here (or needs none: `http`, `command`).
    pub playable: Vec<String>,
    /// Fleet's MCP server of the instance (`fleet mcp`), given to the agents of sub-runs as
    /// to those of a run in this process; none, no Fleet tools.
    pub mcp: Option<fleet_agents::McpServer>,
    /// The instance's state directory (`.fleet` of its home), whose memory retrospectives
    /// write lessons to; none: the runner's own state directory.
    pub memory_state: Option<std::path::PathBuf>,
}

impl AgentSetup {
    /// The profiles of `instance` this machine can launch, given the CLIs installed on it.
    pub fn new(instance: InstanceConfig, clis: &[String]) -> AgentSetup {
        let playable = instance
            .agents
            .iter()
            .filter(|p| {
                matches!(p.cli.as_str(), "http" | "command" | "acp") || clis.contains(&p.cli)
            })
            .map(|p| p.name.clone())
            .collect();
        AgentSetup {
            instance: Arc::new(instance),
            playable,
            mcp: None,
            memory_state: None,
        }
    }

    /// Whether a playable profile has one of `roles`.
    fn plays_a_role(&self, roles: &[String]) -> bool {
        self.instance
            .agents
            .iter()
            .any(|p| self.playable.contains(&p.name) && p.roles.iter().any(|r| roles.contains(r)))
    }

    /// `agent:<profile>` and `role:<role>` of every playable profile, `agent:<cli>` of every
    /// installed CLI (a runbook's bare `agent: claude`) and `agent:http`.
    pub fn offers(&self, clis: &[String]) -> Vec<String> {
        let mut o = Vec::new();
        for p in &self.instance.agents {
            if !self.playable.contains(&p.name) {
                continue;
            }
            o.push(format!("agent:{}", p.name));
            o.extend(p.roles.iter().map(|r| format!("role:{r}")));
        }
        o.extend(clis.iter().map(|c| format!("agent:{c}")));
        o.push("agent:http".into());
        o.sort();
        o.dedup();
        o
    }
}

/// How the sub-run ended, for the runner.
pub(crate) enum SubRunEnd {
    /// Passed; the commit holding the task's work (none if it changed nothing).
    Passed(Option<String>),
    Failed(String),
    Stopped,
}

/// Everything [`play`] needs from the runner's claim.
pub(crate) struct SubRun<'a> {
    pub store: Arc<dyn Store>,
    pub setup: &'a AgentSetup,
    pub claim: &'a Claim,
    pub order: &'a TaskOrder,
    pub agent: &'a AgentOrder,
    /// The runner's fresh clone, on the task branch at the integration tip.
    pub dir: &'a Path,
    /// The runner's state directory for sub-runs (logs, worktrees, journals).
    pub state: &'a Path,
    pub runner: &'a str,
    pub kill_grace: Duration,
    pub stop: watch::Receiver<bool>,
    /// Where a retrospective of the task waits for the claim to end.
    pub retros: &'a Retros,
}

/// Runs the task as a one-task run of the engine in the clone; see the module's note.
pub(crate) async fn play(s: SubRun<'_>) -> Result<SubRunEnd, EngineError> {
    let plan = one_task_plan(&s)?;
    if s.claim.n > 1 {
        let (store, claim, runner) = (s.store.clone(), s.claim.clone(), s.runner.to_string());
        fleet_store::pg::spawn_blocking(move || close_abandoned(&*store, &claim, &runner))
            .await
            .map_err(std::io::Error::other)??;
    }
    // The outer task names its sub-run as soon as the sub-run's first event is committed.
    let named = Arc::new(OnceLock::new());
    let observer: crate::Observer = Box::new({
        let (store, named) = (s.store.clone(), named.clone());
        let (run, task, n, runner) = (
            s.claim.run_id.clone(),
            s.claim.task_id.clone(),
            s.claim.n,
            s.runner.to_string(),
        );
        move |e: &fleet_store::Event| {
            if named.set(e.run_id.clone()).is_ok() {
                let ev = NewEvent {
                    at: now_ms(),
                    run_id: run.clone(),
                    task: Some(task.clone()),
                    attempt: None,
                    kind: "task.sub_run".into(),
                    data: json!({"sub_run": e.run_id, "claim": n, "runner": runner}),
                };
                // A lost note is not worth failing the task for; the sub-run's own rows stay.
                let _ = store.commit(&Batch {
                    events: vec![ev],
                    ..Batch::default()
                });
            }
        }
    });
    let instance = &s.setup.instance;
    let memory = crate::lessons::MemorySettings::from_config(&instance.memory);
    let opts = EngineOptions {
        kill_grace: s.kill_grace,
        observer: Some(observer),
        // The instance's `fleet mcp`, as for a run in this process.
        mcp: s.setup.mcp.clone(),
        stop: Some(s.stop.clone()),
        redactor: fleet_secrets::Redactor::from_process_env(&instance.secret_names()),
        memory,
    };
    let layout = StateDir::new(s.state);
    // Lessons go where the instance keeps its memory, as after a run in this process.
    let learning = s
        .setup
        .memory_state
        .clone()
        .map_or(layout.clone(), StateDir::new);
    let (store, dir, task) = (
        s.store.clone(),
        s.dir.to_path_buf(),
        s.claim.task_id.clone(),
    );
    // The engine's loop, and every git and store call around it, get a thread and a runtime
    // of their own: the runner's slots and claim heartbeats share one thread, which must not
    // wait on them (a missed heartbeat loses the claim), and the coordinator's future is not
    // required to be `Send`.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("sub-run {task}"))
        .spawn(move || {
            let mut opts = opts;
            let ended = (|| -> Result<(SubRunEnd, Option<Pending>), EngineError> {
                let repo = fleet_git::Repo::open(&dir)?;
                let base = repo.resolve("HEAD")?;
                let learner = Learner::new(&repo, &base, &learning, &store, &plan, &opts);
                // A retrospective inside would hold the claim (and the merge behind it) while
                // an agent reflects: it runs after the claim ended (`runner_retro.rs`).
                opts.memory.retrospectives = false;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let report = rt.block_on(crate::start_in(
                    repo.clone(),
                    base.clone(),
                    layout,
                    store.clone(),
                    plan,
                    opts,
                ))?;
                Ok(match report.end {
                    RunEnd::Interrupted => (SubRunEnd::Stopped, None),
                    RunEnd::Failed => (
                        SubRunEnd::Failed(failure(&*store, &report.run_id, &task)),
                        None,
                    ),
                    RunEnd::Passed => {
                        let tip = repo.branch_tip(&report.integration_branch)?;
                        let learn =
                            (!report.troubles.is_empty()).then_some(Pending { learner, report });
                        (SubRunEnd::Passed(tip.filter(|t| *t != base)), learn)
                    }
                })
            })();
            let _ = tx.send(ended);
        })?;
    let (end, learn) = rx.await.map_err(std::io::Error::other)??;
    if let Some(p) = learn {
        s.retros
            .keep(&s.claim.run_id, &s.claim.task_id, s.claim.n, p);
    }
    Ok(end)
}

/// The name of the sub-run claim `n` of `claim`'s task plays.
fn sub_run_name(claim: &Claim, n: u32) -> String {
    format!("{}.{}-c{}", claim.run_id, claim.task_id, n)
}

/// Closes the sub-runs of this task's earlier claims that still say `running`: their runner
/// stopped beating (the claim expired, which is why this one exists), so nothing will ever end
/// them, and `fleet status` would show a run working for ever. They end `interrupted`, with a
/// `run.interrupted` event saying which claim redoes the task.
fn close_abandoned(store: &dyn Store, claim: &Claim, runner: &str) -> Result<(), EngineError> {
    for n in 1..claim.n {
        let name = sub_run_name(claim, n);
        for run in store.runs_named(&name)? {
            if run.name != name || run.state != "running" {
                continue;
            }
            let at = now_ms();
            store.commit(&Batch {
                run_state: Some(fleet_store::RunStateChange {
                    run_id: run.id.clone(),
                    state: "interrupted".into(),
                    at,
                    finished_at: None,
                }),
                events: vec![NewEvent {
                    at,
                    run_id: run.id.clone(),
                    task: None,
                    attempt: None,
                    kind: "run.interrupted".into(),
                    data: json!({
                        "result": "interrupted",
                        "reason": format!(
                            "its runner stopped renewing claim {n}; claim {} on runner {runner} redoes the task",
                            claim.n
                        ),
                    }),
                }],
                ..Batch::default()
            })?;
        }
    }
    Ok(())
}

/// Why the sub-run's task failed, as its row says.
fn failure(store: &dyn Store, sub: &str, task: &str) -> String {
    let reason = store
        .tasks(sub)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.id == task))
        .and_then(|r| r.reason);
    format!(
        "sub-run {sub} failed: {}",
        reason.unwrap_or_else(|| "see its events".into())
    )
}

/// The plan of the sub-run: the one task, with the runner's profiles.
fn one_task_plan(s: &SubRun<'_>) -> Result<Plan, EngineError> {
    let a = s.agent;
    let mut pool = AgentPool::from_instance(&s.setup.instance);
    // The runner claimed the task because it offers the named profile or one of the roles
    // (any of them, as the engine's pool picks): without the profile, its roles' profiles
    // play it.
    let pinned = match &a.agent {
        Some(name) => match pool.resolve(name) {
            Some(i) => Some(i),
            None if s.setup.plays_a_role(&a.roles) => None,
            None => {
                return Err(EngineError::Invalid(format!(
                    "this runner has no agent {name:?} nor one of the roles {:?} (its fleet.yaml changed since it claimed)",
                    a.roles
                )));
            }
        },
        None => None,
    };
    let task = TaskDef {
        id: s.claim.task_id.clone(),
        action: TaskAction::Agent(Box::new(AgentTask {
            pinned,
            roles: a.roles.clone(),
            prompt: a.prompt.clone(),
            limits: Limits {
                max_attempts: a.max_attempts,
                escalate_after: a.escalate_after,
                budget_usd: a.budget_usd,
                deadline: None,
            },
        })),
        checks: s.order.checks.clone(),
        timeout: s.order.timeout_ms.map(Duration::from_millis),
        worktree: true,
        env: s.order.env.clone(),
        pass_env: s.order.pass_env.clone(),
        retry: RetryPolicy {
            retries: a.retries,
            backoff_base_ms: a.retry_backoff_ms,
            backoff_factor: 2,
            backoff_max_ms: a.retry_backoff_ms.saturating_mul(32).max(1),
        },
        max_time: a.max_time_ms.map(Duration::from_millis),
        allowed_paths: a.allowed_paths.clone(),
        allowed_tools: a.allowed_tools.clone(),
    };
    Ok(Plan {
        // Named after the outer run: an epic's views and budgets find a stage run's attempts
        // by the `<epic>-` prefix of run names, and the stage by the run id's second part.
        name: sub_run_name(s.claim, s.claim.n),
        runbook_path: s.dir.join(".fleet-runner-order"),
        // Kept as the run's runbook text: a sub-run is not resumed from it (a dead runner's
        // task is claimed and redone as a new sub-run).
        source: format!(
            "# task {} of run {}, claim {}, played by runner {}\n",
            s.claim.task_id, s.claim.run_id, s.claim.n, s.runner
        ),
        repo: s.dir.to_path_buf(),
        base: None,
        integration: None,
        concurrency: 1,
        report: None,
        nodes: vec![NodeSpec::leaf(s.claim.task_id.clone(), &[])],
        tasks: vec![task],
        pool: Arc::new(pool),
        policies: s.setup.instance.policies.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(agents: &str) -> AgentSetup {
        let yaml = format!("agents:\n{agents}");
        let instance = fleet_config::parse_instance(Path::new("fleet.yaml"), &yaml).unwrap();
        AgentSetup::new(instance, &[])
    }

    fn order(agent: Option<&str>, roles: &[&str]) -> AgentOrder {
        AgentOrder {
            agent: agent.map(str::to_string),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            prompt: "p".into(),
            max_attempts: 1,
            escalate_after: 1,
            budget_usd: None,
            retries: 0,
            retry_backoff_ms: 0,
            max_time_ms: None,
            allowed_paths: vec![],
            allowed_tools: vec![],
        }
    }

    /// As the engine's pool: the pinned profile, or a profile with any of the roles.
    #[test]
    fn a_runner_claims_a_task_it_can_play_by_any_of_its_roles() {
        let offers = |s: &AgentSetup| crate::runner::offers(&[], &[], Some(s));
        let tester = setup("  qa:\n    cli: http\n    roles: [tester]\n");
        let docs = setup("  docs:\n    cli: http\n    roles: [docs]\n");
        let lead = setup("  lead:\n    cli: http\n    roles: [docs-lead]\n");
        let pinned = order(Some("lead"), &["developer", "tester"]).needs();
        assert!(fleet_store::meets(&offers(&tester), &pinned));
        assert!(fleet_store::meets(&offers(&lead), &pinned));
        assert!(!fleet_store::meets(&offers(&docs), &pinned));
        let by_role = order(None, &["reviewer", "docs"]).needs();
        assert!(fleet_store::meets(&offers(&docs), &by_role));
        assert!(!fleet_store::meets(&offers(&tester), &by_role));
        // A runner without the pinned profile plays it by a role; with neither, it cannot.
        assert!(tester.plays_a_role(&["developer".into(), "tester".into()]));
        assert!(!docs.plays_a_role(&["developer".into(), "tester".into()]));
    }
}
