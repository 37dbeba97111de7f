//! Agent adapters: how to drive each coding-agent CLI headless, and how to read it.
//!
//! Owns, per CLI (one module in [`cli`] each): the autonomous command line, the files and
//! environment of a fresh per-attempt home (credentials injected into the CLI's own auth file or
//! env, telemetry and update checks off, its own retry budget capped, `base_url` mapped to its
//! own mechanism), and a [`Parser`] that turns its stdout into normalized [`AgentEvent`]s and
//! classifies how the attempt ended ([`Outcome`]).
//!
//! Must not know: processes, time, the file system, the store. Adapters describe a launch
//! ([`Launch`]) and read lines; the engine spawns, supervises and persists. That keeps every
//! parser testable from recorded transcripts (`fixtures/`).
//!
//! Adding a CLI = one module in `src/cli/` implementing [`Adapter`], one line in [`adapter`],
//! and its recorded transcripts under `fixtures/<cli>/`.

pub mod acp;
pub mod cli;
mod event;
mod outcome;
pub mod price;

pub use event::{AgentEvent, ErrorClass, Usage};
pub use outcome::{Evidence, Outcome, OutcomeClass, ProcessEnd, classify_text, reset_from_text};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything an adapter needs to build one attempt's launch.
#[derive(Debug, Clone)]
pub struct AttemptRequest<'a> {
    pub prompt: &'a str,
    /// Extra system instructions (appended to the CLI's own where it allows that).
    pub system: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The task's worktree; the process's working directory.
    pub workdir: &'a Path,
    /// A fresh, empty, private directory for this attempt: HOME and the CLI's config live here.
    pub home: &'a Path,
    /// A gateway, proxy or local model server, mapped to the CLI's own mechanism.
    pub base_url: Option<&'a str>,
    /// Secret values by env var name, from the account. Never logged.
    pub secrets: &'a BTreeMap<String, String>,
    /// Extra non-secret env of the profile.
    pub env: &'a BTreeMap<String, String>,
    pub max_turns: Option<u32>,
    /// Continue this CLI session instead of starting a new one (where the CLI supports it).
    pub resume_session: Option<&'a str>,
    /// Fleet's MCP server (`fleet mcp`), given to CLIs that take MCP servers in their config.
    pub mcp: Option<&'a McpServer>,
}

/// A stdio MCP server an agent should have (Fleet's own: `report_progress`, `read_context`…).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpServer {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    /// Not secret (which run, task and attempt; where the instance is).
    pub env: BTreeMap<String, String>,
}

impl McpServer {
    /// `{"mcpServers": {name: {command, args, env}}}`: claude's `--mcp-config` file, and the
    /// `mcpServers` entry of gemini's and qwen's settings.
    pub fn json_entry(&self) -> (String, serde_json::Value) {
        (
            self.name.clone(),
            serde_json::json!({"command": self.command, "args": self.args, "env": self.env}),
        )
    }
}

/// How the prompt reaches the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stdin {
    /// Written to stdin, which is then closed.
    Text(String),
    /// `/dev/null`: the prompt went on the command line or into a file.
    Null,
}

/// A file the adapter needs before the launch (config, auth). Written with `mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
    /// Contains a secret: never shown in logs or events.
    pub secret: bool,
}

/// What to run, fully described. The engine adds nothing but supervision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// Environment added to (a scrubbed copy of) fleet's own.
    pub env: BTreeMap<String, String>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<String>,
    pub files: Vec<FileSpec>,
    pub stdin: Stdin,
    /// Names of `env` entries whose values are secrets (redacted wherever shown).
    pub secret_env: Vec<String>,
    /// A directory the CLI writes log files to; the supervisor tails them into
    /// [`Parser::stderr_line`] (qwen reports its retries only there).
    pub side_logs: Option<PathBuf>,
}

impl Launch {
    /// The command line for logs, without secrets (secrets never travel in argv anyway).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
                && !a.is_empty()
            {
                s.push_str(a);
            } else {
                let short: String = a.chars().take(60).collect();
                let more = if a.chars().count() > 60 { "…" } else { "" };
                s.push_str(&format!("{:?}", format!("{short}{more}")));
            }
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterError(pub String);

impl std::fmt::Display for AdapterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AdapterError {}

/// How well an adapter is known to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Driven against the real binary in this repository's tests.
    RealBinary,
    /// Built from the CLI's documented formats and tested on transcripts only.
    FixtureVerified,
}

/// One coding-agent CLI.
pub trait Adapter: Send + Sync {
    /// The name used in `fleet.yaml` (`cli: claude`).
    fn name(&self) -> &'static str;
    /// The executable looked up on PATH.
    fn binary(&self) -> &'static str;
    fn verification(&self) -> Verification;
    /// Builds the headless, autonomous launch of one attempt.
    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError>;
    /// A fresh parser for one attempt's output.
    fn parser(&self) -> Box<dyn Parser>;

    /// Makes `command` run after every file edit of the agent, its failure (exit 2, stderr)
    /// fed back to the agent at once, through the CLI's own hooks, in the attempt's private
    /// config under `home` (never the repository). `false`: this CLI has no such hook that
    /// works headless, and Fleet runs the policy after the attempt instead.
    fn add_post_edit_hook(&self, _launch: &mut Launch, _home: &Path, _command: &str) -> bool {
        false
    }
    /// The CLI can continue an earlier session (see [`AttemptRequest::resume_session`]).
    fn can_resume(&self) -> bool {
        false
    }
    /// After a resume, the CLI's usage reports count the whole session, earlier runs included
    /// (codex's `turn.completed` on a resumed thread); fleet then subtracts what it recorded.
    fn usage_spans_resumed_session(&self) -> bool {
        false
    }
    /// The CLI reports its own cost; otherwise fleet computes it from [`price`].
    fn reports_cost(&self) -> bool {
        false
    }
    /// Env vars a bare `agent: <cli>` (no account in fleet.yaml) takes its credentials from.
    fn default_secrets(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Reads one attempt's output, line by line, and decides how it ended.
pub trait Parser: Send {
    /// One line of stdout (without the newline). Never panics, whatever the bytes.
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent>;
    /// One line of stderr; most CLIs put only noise there, some put their errors.
    fn stderr_line(&mut self, _line: &str) -> Vec<AgentEvent> {
        Vec::new()
    }
    /// Events held back until the end (e.g. usage of a run that never reported its total).
    fn flush(&mut self) -> Vec<AgentEvent> {
        Vec::new()
    }
    /// The attempt has already failed, though the CLI goes on (it retries a rate limit or an
    /// outage on its own for minutes): the supervisor ends it and takes this outcome.
    fn verdict(&self) -> Option<Outcome> {
        None
    }
    /// Classifies the attempt once the process has ended.
    fn finish(&mut self, end: &ProcessEnd) -> Outcome;
}

/// Every adapter, by `cli:` name.
pub fn adapter(name: &str) -> Option<Box<dyn Adapter>> {
    cli::all().into_iter().find(|a| a.name() == name)
}

/// Names of all adapters, in a stable order.
pub fn names() -> Vec<&'static str> {
    cli::all().iter().map(|a| a.name()).collect()
}

/// Feeds a recorded transcript through a parser: what `fleet agents replay` prints.
pub fn replay(adapter: &dyn Adapter, stdout: &str, stderr: &str, end: &ProcessEnd) -> Replay {
    let mut parser = adapter.parser();
    let mut events = Vec::new();
    for line in stdout.lines() {
        events.extend(parser.stdout_line(line));
    }
    for line in stderr.lines() {
        events.extend(parser.stderr_line(line));
    }
    events.extend(parser.flush());
    let outcome = parser.finish(end);
    Replay::new(outcome, events)
}

/// A parsed attempt: its outcome, events and totals.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Replay {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub events: Vec<AgentEvent>,
    pub session_id: Option<String>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub final_text: Option<String>,
}

impl Replay {
    pub fn new(outcome: Outcome, events: Vec<AgentEvent>) -> Replay {
        let mut usage = Usage::default();
        let mut cost: Option<f64> = None;
        let mut session_id = None;
        let mut final_text = None;
        for e in &events {
            match e {
                AgentEvent::Usage(u) => usage.add(u),
                AgentEvent::Cost { usd } => *cost.get_or_insert(0.0) += usd,
                AgentEvent::Session { id } => session_id = Some(id.clone()),
                AgentEvent::Message { text } => final_text = Some(text.clone()),
                _ => {}
            }
        }
        Replay {
            outcome,
            events,
            session_id,
            usage,
            cost_usd: cost,
            final_text,
        }
    }
}
