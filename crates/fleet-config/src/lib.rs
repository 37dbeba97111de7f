//! Fleet's user-written files: parsing and validation into typed data.
//!
//! This crate owns the formats of the runbook (see `PRODUCT.md`, "Runbook"), the instance
//! configuration `fleet.yaml` (with its IMR `routing:`, [`routing`](crate::route), and who is
//! notified of what, [`NotifySpec`], with the Telegram bot's [`TelegramSpec`]), and the
//! knowledge files — roles, bibles and skills, Markdown with YAML front matter ([`Library`]) —
//! with the prompt templates of the built-in roles ([`render`]). Errors name `file:line:col`
//! and say what was expected. Every error is collected, not just the first, except YAML syntax
//! errors, which stop parsing.
//!
//! It must not know how a runbook is run: no processes, no git, no database. Its only IO is
//! reading the files it is given (or the `*.md` of the directories it is pointed to) and
//! checking that each `prompt_file` exists. Task graph rules (ids, parents, dependencies,
//! cycles) belong to `fleet_core`; this crate only places their errors in the file.

mod audits;
mod decode;
mod duration;
mod forge;
mod instance;
mod intake;
pub mod keys;
mod knowledge;
mod memory;
mod notify;
mod output;
mod policies;
mod project_limits;
mod read;
mod review_runs;
mod routing;
mod template;
mod yaml;

pub use audits::{AUDIT_KINDS, AuditSpec, DEFAULT_AUDIT_ROLE};
pub use duration::parse_duration;
pub use forge::ForgeSpec;
pub use instance::{
    ACP_CLIS, Account, CLIS, InstanceConfig, Profile, StoreConfig, Transport, Window,
    load_instance, parse_instance,
};
pub use intake::{DEFAULT_INTAKE_LABEL, IntakeSpec};
pub use knowledge::{
    BUILTIN_ROLES, Bible, Library, Role, Skill, parse_bible, parse_role, parse_skill, skills_text,
};
pub use memory::{EMBEDDINGS_BUILT, EmbeddingsConfig, MemoryConfig};
pub use notify::{
    DEFAULT_TELEGRAM_API, EmailSpec, EmailTls, NOTIFY_EVENTS, NOTIFY_KINDS, NotifyKind,
    NotifyRetry, NotifySpec, TelegramSpec, UrlSource,
};
pub use policies::PolicyRule;
pub use project_limits::ProjectLimits;
pub use read::{MAX_FILE_BYTES, read_text};
pub use review_runs::{ReviewAfter, ReviewRuns};
pub use routing::{Route, RouteSource, Routing, Rule, route};
pub use template::{TEMPLATE_VARS, render};

use fleet_core::{NodeSpec, TaskKind};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A position in the runbook, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in a runbook, at the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: at.line,
            col: at.col,
            message: message.into(),
        }
    }

    pub fn location(&self) -> Location {
        Location {
            line: self.line,
            col: self.col,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// A valid runbook, with defaults applied to every task.
#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    /// The path as given to [`load_runbook`] or [`parse_runbook`].
    pub path: PathBuf,
    /// The full text.
    pub source: String,
    pub name: String,
    /// As written; a relative path is relative to the runbook's directory.
    pub repo: Option<PathBuf>,
    /// A git revision.
    pub base: Option<String>,
    /// How many tasks run at once, 1 to 1024 (default 4).
    pub concurrency: usize,
    /// As written; a relative path is relative to the runbook's directory.
    pub report: Option<PathBuf>,
    /// Never empty, in the order written.
    pub tasks: Vec<TaskSpec>,
}

impl Runbook {
    /// The tasks as graph nodes, in the same order as [`Runbook::tasks`].
    pub fn node_specs(&self) -> Vec<NodeSpec> {
        self.tasks.iter().map(TaskSpec::node_spec).collect()
    }
}

/// One task, with the runbook's `defaults` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub id: String,
    pub kind: TaskKind,
    pub parent: Option<String>,
    pub depends_on: Vec<String>,
    pub action: Action,
    /// Shell commands run after the task; the task's own list replaces the default one.
    pub checks: Vec<String>,
    /// `None`: no timeout.
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub workspace: Workspace,
    /// The default environment merged with the task's own (the task wins).
    pub env: BTreeMap<String, String>,
    /// Names of variables of Fleet's own environment the task's command and checks see
    /// (defaults' and the task's together); nothing else of it passes but a fixed allow-list.
    pub pass_env: Vec<String>,
    /// Agent tasks: most attempts in the fail-until-done loop (default 8).
    pub max_attempts: Option<u32>,
    /// Agent tasks: consecutive failures on one tier before escalating (default 2).
    pub escalate_after: Option<u32>,
    /// Agent tasks: most the task may spend, in USD.
    pub budget_usd: Option<f64>,
    /// Agent tasks: wall time for the whole loop.
    pub max_time: Option<Duration>,
    /// Agent tasks: the only paths (globs) an agent may change through a tool it asks
    /// permission for (ACP agents); empty = anywhere in the worktree.
    pub allowed_paths: Vec<String>,
    /// Agent tasks: the only ACP tool kinds (`read`, `edit`, `execute`…) granted; empty = all.
    pub allowed_tools: Vec<String>,
    /// Where the task's mapping starts (its first key).
    pub location: Location,
}

impl TaskSpec {
    pub fn node_spec(&self) -> NodeSpec {
        NodeSpec {
            id: self.id.clone(),
            kind: self.kind,
            parent: self.parent.clone(),
            depends_on: self.depends_on.clone(),
        }
    }
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workspace {
    /// Its own git worktree and branch, merged when it passes.
    #[default]
    Worktree,
    /// The repository root; nothing is merged.
    None,
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A shell command; exit 0 is success.
    Command(String),
    /// An agent run: a named `agent`, a `role` for the pool to fill, or both.
    Agent {
        agent: Option<String>,
        role: Option<String>,
        prompt: Prompt,
    },
    /// A container (the `parent` of other tasks); it runs nothing itself.
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Inline(String),
    /// As written; a relative path is relative to the runbook's directory.
    File(PathBuf),
}

/// Reads and parses the runbook at `path`: a regular file of at most [`MAX_FILE_BYTES`].
pub fn load_runbook(path: &Path) -> Result<Runbook, Vec<ConfigError>> {
    let text = read_text(path, "the runbook").map_err(|e| vec![e])?;
    parse_runbook(path, &text)
}

/// Parses runbook text read from `path`. `path` names the file in errors, and its directory
/// is where each `prompt_file` is looked for.
pub fn parse_runbook(path: &Path, text: &str) -> Result<Runbook, Vec<ConfigError>> {
    decode::decode(path, text)
}
