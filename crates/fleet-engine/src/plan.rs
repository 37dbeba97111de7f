//! What the engine runs: a runbook turned into resolved paths and per-task definitions.

use fleet_config::{Action, ConfigError, Runbook, Workspace};
use fleet_core::{NodeSpec, RetryPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
pub struct TaskDef {
    pub id: String,
    /// `None` for a container, which groups tasks and runs nothing.
    pub command: Option<String>,
    pub checks: Vec<String>,
    pub timeout: Option<Duration>,
    /// Runs in its own worktree and lands on the integration branch.
    pub worktree: bool,
    pub env: BTreeMap<String, String>,
    pub retry: RetryPolicy,
}

/// Resolves a parsed runbook. Relative paths are relative to the runbook's directory.
pub fn plan_from_runbook(rb: &Runbook) -> Result<Plan, Vec<ConfigError>> {
    let runbook_path = absolute(&rb.path);
    let dir = runbook_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut errors = Vec::new();
    let mut tasks = Vec::with_capacity(rb.tasks.len());
    for t in &rb.tasks {
        let command = match &t.action {
            Action::Command(c) => Some(c.clone()),
            Action::Group => None,
            Action::Agent { .. } => {
                errors.push(ConfigError {
                    file: rb.path.clone(),
                    line: t.location.line,
                    col: t.location.col,
                    message: format!(
                        "task {:?} runs an agent, but this build of fleet has no agent adapters yet; \
                         expected `command:`",
                        t.id
                    ),
                });
                None
            }
        };
        tasks.push(TaskDef {
            id: t.id.clone(),
            command,
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
