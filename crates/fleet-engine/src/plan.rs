//! What the engine runs: a runbook turned into resolved paths and per-task definitions, with
//! each `agent:` resolved against the instance's profiles.

use fleet_config::{Action, ConfigError, InstanceConfig, Prompt, Runbook, Workspace};
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
    pub concurrency: usize,
    /// Absolute path of the extra summary copy.
    pub report: Option<PathBuf>,
    pub nodes: Vec<NodeSpec>,
    pub tasks: Vec<TaskDef>,
}

#[derive(Debug, Clone)]
pub enum TaskAction {
    /// A container groups tasks and runs nothing.
    Group,
    Shell(String),
    Agent(Box<AgentTask>),
}

#[derive(Debug, Clone)]
pub struct AgentTask {
    pub profile: AgentProfile,
    pub prompt: String,
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
    pub account: Option<String>,
    /// Names of the env vars holding its credentials (values are read at launch, never stored).
    pub secrets: Vec<String>,
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
            account: p.account.clone(),
            secrets,
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
            account: None,
            secrets: default_secrets(cli),
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
    pub retry: RetryPolicy,
}

impl TaskDef {
    /// What a person reads in logs and events as "what this task runs".
    pub fn describe(&self) -> String {
        match &self.action {
            TaskAction::Group => "(group)".into(),
            TaskAction::Shell(c) => c.clone(),
            TaskAction::Agent(a) => format!("agent {} ({})", a.profile.name, a.profile.cli),
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
    let dir = runbook_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut errors = Vec::new();
    let mut tasks = Vec::with_capacity(rb.tasks.len());
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
                let profile = match (agent, role) {
                    (Some(name), _) => match instance.profile(name) {
                        Some(p) => Some(AgentProfile::from_config(p, instance)),
                        None if fleet_agents::adapter(name).is_some() => {
                            Some(AgentProfile::bare(name))
                        }
                        None => {
                            let profiles: Vec<&str> =
                                instance.agents.iter().map(|p| p.name.as_str()).collect();
                            errors.push(error(format!(
                                "task {:?}: unknown agent {name:?}; expected a profile from fleet.yaml ({}) or a CLI name ({})",
                                t.id,
                                if profiles.is_empty() { "none defined".into() } else { profiles.join(", ") },
                                fleet_agents::names().join(", ")
                            )));
                            None
                        }
                    },
                    (None, Some(role)) => {
                        let best = instance
                            .agents
                            .iter()
                            .filter(|p| p.roles.iter().any(|r| r == role))
                            .max_by_key(|p| p.priority);
                        match best {
                            Some(p) => Some(AgentProfile::from_config(p, instance)),
                            None => {
                                errors.push(error(format!(
                                    "task {:?}: no profile in fleet.yaml plays role {role:?}",
                                    t.id
                                )));
                                None
                            }
                        }
                    }
                    (None, None) => unreachable!("the runbook parser requires agent or role"),
                };
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
                match (profile, text) {
                    (Some(profile), Some(prompt)) => {
                        TaskAction::Agent(Box::new(AgentTask { profile, prompt }))
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
            retry: RetryPolicy {
                retries: t.retries,
                backoff_base_ms: t.retry_backoff.as_millis() as u64,
                backoff_factor: 2,
                backoff_max_ms: (t.retry_backoff.as_millis() as u64)
                    .saturating_mul(32)
                    .max(1),
            },
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
        concurrency: rb.concurrency,
        report: rb.report.as_ref().map(|r| normalize(&dir.join(r))),
        nodes: rb.node_specs(),
        tasks,
    })
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
            .filter(|c| *c != "http")
            .collect();
        let mut adapters = fleet_agents::names();
        from_config.sort();
        adapters.sort();
        assert_eq!(from_config, adapters);
    }
}
