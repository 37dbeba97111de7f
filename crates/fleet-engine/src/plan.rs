//! What the engine runs: a runbook turned into resolved paths and per-task definitions, with
//! each `agent:` resolved against the instance's profiles.

use fleet_config::{Action, ConfigError, InstanceConfig, Prompt, Runbook, Workspace};
use fleet_core::pool::{Limits, PoolAccount, PoolProfile, Window};
use fleet_core::{NodeSpec, RetryPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Silence after which an agent attempt counts as stalled, unless its profile says otherwise.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// Absolute path of the runbook; resumes re-read the stored copy of its text, not the file.
    pub runbook_path: PathBuf,
    pub source: String,
    /// Absolute path of the repository the tasks work in.
    pub repo: PathBuf,
    pub base: Option<String>,
    /// Where passed tasks land: `fleet/runs/<run>` unless the caller (the epic pipeline) names
    /// a branch that outlives the run; an existing branch is continued from its tip.
    pub integration: Option<String>,
    pub concurrency: usize,
    /// Absolute path of the extra summary copy.
    pub report: Option<PathBuf>,
    pub nodes: Vec<NodeSpec>,
    pub tasks: Vec<TaskDef>,
    /// The agent profiles tasks may draw on, and their accounts.
    pub pool: std::sync::Arc<AgentPool>,
    /// The always-on rules every attempt obeys (`policies:` of the instance; a caller adds
    /// the project's and its bible's).
    pub policies: Vec<fleet_config::PolicyRule>,
}

/// Profiles (from fleet.yaml, plus the default profile of every bare CLI a task names) and
/// accounts, in the shapes the engine launches and the pure pool policy reasons about.
#[derive(Debug, Clone, Default)]
pub struct AgentPool {
    pub profiles: Vec<AgentProfile>,
    pub policy: Vec<PoolProfile>,
    pub accounts: Vec<PoolAccount>,
}

impl AgentPool {
    pub fn from_instance(instance: &InstanceConfig) -> AgentPool {
        let accounts: Vec<PoolAccount> = instance
            .accounts
            .iter()
            .map(|a| PoolAccount {
                name: a.name.clone(),
                window: a.window.map(|w| Window {
                    start: w.start,
                    end: w.end % (24 * 60),
                }),
                budget_usd: a.daily_budget_usd,
                budget_tokens: a.daily_budget_tokens,
                day_starts: a.day_starts,
            })
            .collect();
        let mut pool = AgentPool {
            profiles: Vec::new(),
            policy: Vec::new(),
            accounts,
        };
        for p in &instance.agents {
            pool.push(AgentProfile::from_config(p, instance));
        }
        pool
    }

    fn push(&mut self, p: AgentProfile) -> usize {
        let account = p
            .account
            .as_ref()
            .and_then(|a| self.accounts.iter().position(|x| &x.name == a));
        self.policy.push(PoolProfile {
            name: p.name.clone(),
            vendor: vendor_of(&p),
            roles: p.roles.clone(),
            priority: p.priority,
            tier: p.tier,
            account,
        });
        self.profiles.push(p);
        self.profiles.len() - 1
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The profile `name`, adding the default profile of a bare CLI name on first use.
    pub fn resolve(&mut self, name: &str) -> Option<usize> {
        self.find(name)
            .or_else(|| {
                fleet_agents::adapter(name)
                    .is_some()
                    .then(|| self.push(AgentProfile::bare(name)))
            })
            .or_else(|| (name == "http").then(|| self.push(AgentProfile::bare("http"))))
    }
}

/// Who serves a profile's model: a rate-limited task prefers another vendor next.
pub fn vendor_of(p: &AgentProfile) -> String {
    let by_model = |m: &str| {
        let m = m.rsplit('/').next().unwrap_or(m);
        if m.starts_with("claude") {
            Some("anthropic")
        } else if m.starts_with("gpt")
            || m.starts_with("o3")
            || m.starts_with("o4")
            || m.starts_with("codex")
        {
            Some("openai")
        } else if m.starts_with("gemini") {
            Some("google")
        } else if m.starts_with("qwen") {
            Some("alibaba")
        } else {
            None
        }
    };
    match p.cli.as_str() {
        "claude" => "anthropic".into(),
        "codex" => "openai".into(),
        "gemini" => "google".into(),
        "qwen" => "alibaba".into(),
        "opencode" => p
            .model
            .as_deref()
            .and_then(|m| m.split_once('/'))
            .map(|(v, _)| v.to_string())
            .unwrap_or("anthropic".into()),
        "http" => p
            .base_url
            .as_deref()
            .and_then(|u| u.split("://").nth(1))
            .and_then(|h| h.split(['/', ':']).next())
            .unwrap_or("http")
            .to_string(),
        "command" => format!("command:{}", p.name),
        other => p
            .model
            .as_deref()
            .and_then(by_model)
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    }
}

#[derive(Debug, Clone)]
pub enum TaskAction {
    /// A container groups tasks and runs nothing.
    Group,
    Shell(String),
    Agent(Box<AgentTask>),
}

/// An agent task: which profiles may play it, and what they are asked.
#[derive(Debug, Clone)]
pub struct AgentTask {
    /// The profile the task names (`agent:`), tried first; index into [`AgentPool::profiles`].
    pub pinned: Option<usize>,
    /// Profiles with any of these roles may play it too (`role:`, or the pinned profile's roles).
    pub roles: Vec<String>,
    pub prompt: String,
    pub limits: Limits,
}

/// A profile from `fleet.yaml`, or the default profile of a bare CLI name.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentProfile {
    pub name: String,
    pub cli: String,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub env: BTreeMap<String, String>,
    pub max_turns: Option<u32>,
    pub timeout: Option<Duration>,
    pub stall_timeout: Duration,
    pub command: Option<String>,
    /// Spoken to over the Agent Client Protocol (`cli: acp`, or `transport: acp`).
    pub acp: bool,
    /// Extra arguments of an ACP agent's command.
    pub args: Vec<String>,
    pub account: Option<String>,
    /// Names of the env vars holding its credentials (values are read at launch, never stored).
    pub secrets: Vec<String>,
    pub roles: Vec<String>,
    pub priority: i64,
    pub tier: u32,
}

impl AgentProfile {
    pub fn from_config(p: &fleet_config::Profile, instance: &InstanceConfig) -> AgentProfile {
        let account = p.account.as_ref().and_then(|a| instance.account(a));
        let secrets = match account {
            Some(a) => a.secrets.clone(),
            None => default_secrets(&p.cli),
        };
        AgentProfile {
            name: p.name.clone(),
            cli: p.cli.clone(),
            model: p.model.clone(),
            base_url: p.base_url.clone(),
            env: p.env.clone(),
            max_turns: p.max_turns,
            timeout: p.timeout,
            stall_timeout: p.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT),
            command: p.command.clone(),
            acp: p.transport == fleet_config::Transport::Acp,
            args: p.args.clone(),
            account: p.account.clone(),
            secrets,
            roles: p.roles.clone(),
            priority: p.priority,
            tier: p.tier,
        }
    }

    /// `agent: claude` with no profile of that name: the CLI's defaults, no account limits.
    pub fn bare(cli: &str) -> AgentProfile {
        AgentProfile {
            name: cli.to_string(),
            cli: cli.to_string(),
            model: None,
            base_url: None,
            env: BTreeMap::new(),
            max_turns: None,
            timeout: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            command: None,
            acp: cli == "acp",
            args: Vec::new(),
            account: None,
            secrets: default_secrets(cli),
            roles: Vec::new(),
            priority: 0,
            tier: 0,
        }
    }
}

fn default_secrets(cli: &str) -> Vec<String> {
    fleet_agents::adapter(cli)
        .map(|a| a.default_secrets().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct TaskDef {
    pub id: String,
    pub action: TaskAction,
    pub checks: Vec<String>,
    pub timeout: Option<Duration>,
    /// Runs in its own worktree and lands on the integration branch.
    pub worktree: bool,
    pub env: BTreeMap<String, String>,
    /// Variables of Fleet's environment its command and checks see (see
    /// [`crate::process::command_env`]).
    pub pass_env: Vec<String>,
    pub retry: RetryPolicy,
    /// Wall time for the whole task (all attempts).
    pub max_time: Option<Duration>,
    /// `allowed_paths` / `allowed_tools`: what an ACP agent is granted permission for.
    pub allowed_paths: Vec<String>,
    pub allowed_tools: Vec<String>,
}

impl TaskDef {
    /// What a person reads in logs and events as "what this task runs".
    pub fn describe(&self) -> String {
        match &self.action {
            TaskAction::Group => "(group)".into(),
            TaskAction::Shell(c) => c.clone(),
            TaskAction::Agent(a) => match &a.pinned {
                Some(_) => "agent".to_string(),
                None => format!("agent for role {}", a.roles.join("/")),
            },
        }
    }

    pub fn runs_something(&self) -> bool {
        !matches!(self.action, TaskAction::Group)
    }
}

/// Resolves a parsed runbook. Relative paths are relative to the runbook's directory; agents
/// are looked up in `instance` (a profile name, or a bare CLI name for its default profile).
pub fn plan_from_runbook(
    rb: &Runbook,
    instance: &InstanceConfig,
) -> Result<Plan, Vec<ConfigError>> {
    let runbook_path = absolute(&rb.path);
    let dir = runbook_dir(&rb.path);
    let mut errors = Vec::new();
    let mut tasks = Vec::with_capacity(rb.tasks.len());
    let mut pool = AgentPool::from_instance(instance);
    for t in &rb.tasks {
        let error = |message: String| ConfigError {
            file: rb.path.clone(),
            line: t.location.line,
            col: t.location.col,
            message,
        };
        let action = match &t.action {
            Action::Command(c) => TaskAction::Shell(c.clone()),
            Action::Group => TaskAction::Group,
            Action::Agent {
                agent,
                role,
                prompt,
            } => {
                let pinned = match agent {
                    Some(name) => match pool.resolve(name) {
                        Some(i) => Some(i),
                        None => {
                            let profiles: Vec<&str> =
                                instance.agents.iter().map(|p| p.name.as_str()).collect();
                            errors.push(error(format!(
                                "task {:?}: unknown agent {name:?}; expected a profile from fleet.yaml ({}) or a CLI name ({}, http)",
                                t.id,
                                if profiles.is_empty() { "none defined".into() } else { profiles.join(", ") },
                                fleet_agents::names().join(", ")
                            )));
                            None
                        }
                    },
                    None => None,
                };
                let roles: Vec<String> = match (role, pinned) {
                    (Some(r), _) => vec![r.clone()],
                    (None, Some(i)) => pool.profiles[i].roles.clone(),
                    (None, None) => Vec::new(),
                };
                if let (Some(r), None) = (role, agent)
                    && !pool.profiles.iter().any(|p| p.roles.contains(r))
                {
                    errors.push(error(format!(
                        "task {:?}: no profile in fleet.yaml plays role {r:?}",
                        t.id
                    )));
                }
                let text = match prompt {
                    Prompt::Inline(s) => Some(s.clone()),
                    Prompt::File(f) => match std::fs::read_to_string(dir.join(f)) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            errors.push(error(format!(
                                "task {:?}: cannot read prompt_file {}: {e}",
                                t.id,
                                f.display()
                            )));
                            None
                        }
                    },
                };
                let defaults = Limits::default();
                let limits = Limits {
                    max_attempts: t.max_attempts.unwrap_or(defaults.max_attempts),
                    escalate_after: t.escalate_after.unwrap_or(defaults.escalate_after),
                    budget_usd: t.budget_usd,
                    deadline: None,
                };
                match text {
                    Some(prompt) if pinned.is_some() || role.is_some() => {
                        TaskAction::Agent(Box::new(AgentTask {
                            pinned,
                            roles,
                            prompt,
                            limits,
                        }))
                    }
                    _ => TaskAction::Group,
                }
            }
        };
        tasks.push(TaskDef {
            id: t.id.clone(),
            action,
            checks: t.checks.clone(),
            timeout: t.timeout,
            worktree: t.workspace == Workspace::Worktree,
            env: t.env.clone(),
            pass_env: t.pass_env.clone(),
            retry: RetryPolicy {
                retries: t.retries,
                backoff_base_ms: t.retry_backoff.as_millis() as u64,
                backoff_factor: 2,
                backoff_max_ms: (t.retry_backoff.as_millis() as u64)
                    .saturating_mul(32)
                    .max(1),
            },
            max_time: t.max_time,
            allowed_paths: t.allowed_paths.clone(),
            allowed_tools: t.allowed_tools.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        name: rb.name.clone(),
        runbook_path: runbook_path.clone(),
        source: rb.source.clone(),
        repo: rb
            .repo
            .as_ref()
            .map(|r| normalize(&dir.join(r)))
            .unwrap_or_else(|| dir.clone()),
        base: rb.base.clone(),
        integration: None,
        concurrency: rb.concurrency,
        report: rb.report.as_ref().map(|r| normalize(&dir.join(r))),
        nodes: rb.node_specs(),
        tasks,
        pool: std::sync::Arc::new(pool),
        policies: instance.policies.clone(),
    })
}

/// The directory a runbook's relative paths are resolved from; its repository unless the
/// runbook names another (`repo:`).
pub fn runbook_dir(runbook: &Path) -> PathBuf {
    absolute(runbook)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        normalize(p)
    } else {
        normalize(
            &std::env::current_dir()
                .unwrap_or_else(|_| PathBuf::from("/"))
                .join(p),
        )
    }
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// Every CLI a profile may name has an adapter, except `http` (run in-process).
    #[test]
    fn config_and_adapters_agree_on_the_clis() {
        let mut from_config: Vec<&str> = fleet_config::CLIS
            .iter()
            .copied()
            .filter(|c| *c != "http" && *c != "acp")
            .collect();
        let mut adapters = fleet_agents::names();
        from_config.sort();
        adapters.sort();
        assert_eq!(from_config, adapters);
    }
}
