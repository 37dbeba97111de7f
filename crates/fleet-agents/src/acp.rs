//! The Agent Client Protocol, client side: JSON-RPC 2.0 over a line-delimited stdio stream.
//!
//! [`AcpClient`] is a pure state machine: it is fed the agent's stdout lines and stderr lines,
//! and answers with the lines to write to the agent's stdin, the normalized [`AgentEvent`]s,
//! and the file-system calls the engine must carry out (`fs/read_text_file`,
//! `fs/write_text_file`: the only client capabilities advertised; no terminal). Permission
//! requests are answered here, by [`Policy`]. No IO, no clock: the engine's session runner
//! (`fleet_engine::acp_session`) owns the process, and transcripts replay through the same
//! machine (`fixtures/acp/`).
//!
//! One attempt = `initialize`, then `session/load` (when asked to continue a session and the
//! agent advertises `loadSession`) or `session/new` (with Fleet's MCP server), then one
//! `session/prompt`. The prompt's response ends the attempt.
//!
//! The SDK crate `agent-client-protocol` is not used: its connection type drives futures on a
//! local (non-`Send`) executor and brings its own async IO stack, while this engine supervises
//! processes on tokio with its own stall/kill rules; the handful of messages a client needs is
//! smaller than the glue.

use crate::outcome::{Evidence, classify_text};
use crate::{AgentEvent, ErrorClass, McpServer, Outcome, OutcomeClass, ProcessEnd, Usage};
use fleet_core::policy::ProtectedPaths;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The protocol version Fleet speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// One message from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The agent calls the client (permission, fs).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: Value,
        result: Result<Value, RpcError>,
    },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    /// Message and data in one line, for classification and events.
    pub fn text(&self) -> String {
        match &self.data {
            Some(d) if !d.is_null() => format!("{} ({}): {}", self.message, self.code, d),
            _ => format!("{} ({})", self.message, self.code),
        }
    }
}

/// Reads one line as a JSON-RPC message; anything else (a log line, a broken object) is `None`.
pub fn parse_line(line: &str) -> Option<Incoming> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let obj = v.as_object()?;
    let method = obj.get("method").and_then(Value::as_str);
    let id = obj.get("id").cloned().filter(|i| !i.is_null());
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    match (method, id) {
        (Some(m), Some(id)) => Some(Incoming::Request {
            id,
            method: m.to_string(),
            params,
        }),
        (Some(m), None) => Some(Incoming::Notification {
            method: m.to_string(),
            params,
        }),
        (None, Some(id)) => {
            let result = match obj.get("error") {
                Some(e) if !e.is_null() => Err(RpcError {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    data: e.get("data").cloned(),
                }),
                _ => Ok(obj.get("result").cloned().unwrap_or(Value::Null)),
            };
            Some(Incoming::Response { id, result })
        }
        (None, None) => None,
    }
}

pub fn request_line(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn notification_line(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

pub fn result_line(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

pub fn error_line(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// What Fleet offers the agent: the file system (through the engine, confined to the
/// worktree) where `fs`, no terminal.
pub fn initialize_params(fs: bool) -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {"fs": {"readTextFile": fs, "writeTextFile": fs}, "terminal": false},
        "clientInfo": {"name": "fleet", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// `mcpServers` of `session/new` and `session/load` (stdio servers; env as name/value pairs).
pub fn mcp_servers(mcp: Option<&McpServer>) -> Value {
    match mcp {
        None => json!([]),
        Some(m) => json!([{
            "name": m.name,
            "command": m.command,
            "args": m.args,
            "env": m.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        }]),
    }
}

/// What an agent said about itself in its `initialize` response (`fleet agents doctor`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Capabilities {
    pub protocol_version: Option<u64>,
    pub agent: Option<String>,
    pub load_session: bool,
    pub prompt: Vec<String>,
    pub mcp: Vec<String>,
    pub auth_methods: Vec<String>,
}

impl Capabilities {
    pub fn from_initialize(result: &Value) -> Capabilities {
        let caps = &result["agentCapabilities"];
        let flags = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let agent = result["agentInfo"].as_object().map(|i| {
            let name = i.get("name").and_then(Value::as_str).unwrap_or("?");
            match i.get("version").and_then(Value::as_str) {
                Some(v) => format!("{name} {v}"),
                None => name.to_string(),
            }
        });
        Capabilities {
            protocol_version: result["protocolVersion"].as_u64(),
            agent,
            load_session: caps["loadSession"].as_bool() == Some(true),
            prompt: flags(&caps["promptCapabilities"]),
            mcp: flags(&caps["mcpCapabilities"]),
            auth_methods: result["authMethods"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// One line for `fleet agents doctor`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "protocol {}",
            self.protocol_version
                .map(|v| v.to_string())
                .unwrap_or("?".into())
        )];
        if let Some(a) = &self.agent {
            parts.push(a.clone());
        }
        parts.push(format!(
            "loadSession {}",
            if self.load_session { "yes" } else { "no" }
        ));
        if !self.prompt.is_empty() {
            parts.push(format!("prompt: {}", self.prompt.join(",")));
        }
        if !self.mcp.is_empty() {
            parts.push(format!("mcp: {}", self.mcp.join(",")));
        }
        if !self.auth_methods.is_empty() {
            parts.push(format!("auth: {}", self.auth_methods.join(",")));
        }
        parts.join(" · ")
    }
}

/// Which permission requests Fleet grants: tools of an allowed kind whose paths all lie in the
/// task's worktree, and no change inside its `.git` (Fleet owns the history, the hooks and the
/// config: an agent that wrote a hook would run code at Fleet's next commit), and no `git push`
/// (delivery is Fleet's: a push would skip its checks and review).
///
/// Beside those fixed rules, the task's policies: paths protected by a rule (`policies:`
/// `protected_paths`) are never granted to a tool that changes files, and a task that declares
/// `allowed_paths` / `allowed_tools` is granted nothing else.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The worktree (as given and as resolved: both spellings of it count as inside).
    pub roots: Vec<PathBuf>,
    /// ACP tool kinds refused outright (`execute`, `fetch`, `delete`…); empty = none.
    pub deny_kinds: Vec<String>,
    /// Paths no tool may change, by rule.
    pub protected: Vec<ProtectedPaths>,
    /// The only paths a tool that changes files may touch; `None` = the whole worktree.
    pub allowed_paths: Option<ProtectedPaths>,
    /// The only tool kinds granted; empty = every kind not denied.
    pub allowed_kinds: Vec<String>,
}

/// Why a permission request was refused: the rule (a policy's name, `allowed_paths`,
/// `allowed_tools` or `worktree` for Fleet's fixed rules) and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub rule: String,
    pub reason: String,
}

impl Policy {
    pub fn for_worktree(workdir: &Path) -> Policy {
        let mut roots = vec![workdir.to_path_buf()];
        if let Ok(real) = workdir.canonicalize()
            && real != workdir
        {
            roots.push(real);
        }
        Policy {
            roots,
            deny_kinds: Vec::new(),
            protected: Vec::new(),
            allowed_paths: None,
            allowed_kinds: Vec::new(),
        }
    }

    /// `Ok(())` to allow, or why not.
    pub fn decide(&self, tool_call: &Value) -> Result<(), String> {
        self.judge(tool_call).map_err(|d| d.reason)
    }

    /// `Ok(())` to allow, or which rule refuses it and why.
    pub fn judge(&self, tool_call: &Value) -> Result<(), Denial> {
        let fixed = |reason: String| Denial {
            rule: "worktree".into(),
            reason,
        };
        self.fixed_rules(tool_call).map_err(fixed)?;
        let kind = tool_call["kind"].as_str().unwrap_or("other");
        if !self.allowed_kinds.is_empty() && !self.allowed_kinds.iter().any(|k| k == kind) {
            return Err(Denial {
                rule: "allowed_tools".into(),
                reason: format!(
                    "tools of kind {kind:?} are not among the task's allowed tools ({})",
                    self.allowed_kinds.join(", ")
                ),
            });
        }
        if matches!(kind, "read" | "search" | "think" | "fetch") {
            return Ok(());
        }
        let paths: Vec<String> = tool_paths(tool_call)
            .iter()
            .filter_map(|p| self.relative(p))
            .collect();
        if let Some(v) = fleet_core::policy::violations(&self.protected, &paths).first() {
            return Err(Denial {
                rule: v.rule.clone(),
                reason: format!(
                    "{:?} is protected by policy `{}` (pattern `{}`)",
                    v.path, v.rule, v.pattern
                ),
            });
        }
        if let Some(allowed) = &self.allowed_paths {
            let all = [allowed.clone()];
            for p in &paths {
                if fleet_core::policy::violations(&all, std::slice::from_ref(p)).is_empty() {
                    return Err(Denial {
                        rule: "allowed_paths".into(),
                        reason: format!(
                            "{p:?} is outside the task's allowed paths ({})",
                            allowed.patterns().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A path inside the worktree, relative to it (`None` outside).
    pub fn relative(&self, path: &str) -> Option<String> {
        let out = self.normalized(path)?;
        self.roots.iter().find_map(|r| {
            out.strip_prefix(r)
                .ok()
                .map(|rel| rel.to_string_lossy().into_owned())
        })
    }

    /// Fleet's fixed rules: inside the worktree, nothing in `.git`, no `git push`.
    fn fixed_rules(&self, tool_call: &Value) -> Result<(), String> {
        let kind = tool_call["kind"].as_str().unwrap_or("other");
        if self.deny_kinds.iter().any(|k| k == kind) {
            return Err(format!(
                "tools of kind {kind:?} are not allowed for this task"
            ));
        }
        if kind == "execute" {
            let command = tool_call["rawInput"]["command"]
                .as_str()
                .or(tool_call["title"].as_str())
                .unwrap_or("");
            let words: Vec<&str> = command.split_whitespace().collect();
            if words.windows(2).any(|w| w == ["git", "push"]) {
                return Err(format!(
                    "{command:?} pushes: delivery is Fleet's (after its checks and review)"
                ));
            }
        }
        let changes = !matches!(kind, "read" | "search" | "think" | "fetch");
        for p in tool_paths(tool_call) {
            if !self.inside(&p) {
                return Err(format!("{p:?} is outside the task's worktree"));
            }
            if changes && self.in_git_dir(&p) {
                return Err(format!(
                    "{p:?} is in the repository's .git: Fleet owns its history, hooks and config"
                ));
            }
        }
        Ok(())
    }

    /// Whether `path` (absolute, or relative to the worktree) stays inside it, by its words:
    /// the engine resolves symlinks again before it touches a file.
    pub fn inside(&self, path: &str) -> bool {
        let Some(out) = self.normalized(path) else {
            return false;
        };
        self.roots.iter().any(|r| out.starts_with(r))
    }

    fn in_git_dir(&self, path: &str) -> bool {
        let Some(out) = self.normalized(path) else {
            return false;
        };
        self.roots.iter().any(|r| out.starts_with(r.join(".git")))
    }

    fn normalized(&self, path: &str) -> Option<PathBuf> {
        let root = self.roots.first()?;
        let p = Path::new(path);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        let mut out = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other.as_os_str()),
            }
        }
        Some(out)
    }
}

/// The paths a tool call names: its `locations` and the usual path fields of its raw input.
fn tool_paths(tool_call: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    if let Some(locs) = tool_call["locations"].as_array() {
        paths.extend(
            locs.iter()
                .filter_map(|l| l["path"].as_str().map(str::to_string)),
        );
    }
    if let Some(input) = tool_call["rawInput"].as_object() {
        for key in [
            "path",
            "file_path",
            "filePath",
            "absolute_path",
            "notebook_path",
            "dir_path",
        ] {
            if let Some(p) = input.get(key).and_then(Value::as_str) {
                paths.push(p.to_string());
            }
        }
    }
    paths
}

/// Picks the option of a permission request: the first of the wanted kinds, in order.
fn pick_option(options: &Value, kinds: &[&str]) -> Option<String> {
    let options = options.as_array()?;
    kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o["kind"].as_str() == Some(k))
            .and_then(|o| o["optionId"].as_str().map(str::to_string))
    })
}

/// A file-system call of the agent, for the engine to carry out and answer with
/// [`AcpClient::answer`].
#[derive(Debug, Clone, PartialEq)]
pub enum FsCall {
    Read {
        id: Value,
        path: String,
        line: Option<u64>,
        limit: Option<u64>,
    },
    Write {
        id: Value,
        path: String,
        content: String,
    },
}

/// What the engine must do after a line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Step {
    /// Lines for the agent's stdin.
    pub send: Vec<String>,
    pub events: Vec<AgentEvent>,
    pub fs: Vec<FsCall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Initialize,
    NewSession,
    LoadSession,
    SetMode,
    Prompt,
}

/// Modes that cannot edit (codex-acp starts in `read-only`), and the editing modes Fleet
/// switches to, in order of preference; the permission policy still applies in them.
const READ_ONLY_MODES: &[&str] = &["read-only", "plan"];
const EDIT_MODES: &[&str] = &["auto", "default", "acceptEdits", "code"];

/// The mode to switch a new session to: `preferred` where offered, else an editing mode when
/// it starts in one that cannot edit.
fn editing_mode(modes: &Value, preferred: Option<&str>) -> Option<String> {
    let current = modes["currentModeId"].as_str()?;
    let available: Vec<&str> = modes["availableModes"]
        .as_array()?
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    if let Some(p) = preferred.filter(|p| available.contains(p)) {
        return (p != current).then(|| p.to_string());
    }
    if !READ_ONLY_MODES.contains(&current) {
        return None;
    }
    EDIT_MODES
        .iter()
        .find(|m| available.contains(m))
        .map(|m| m.to_string())
}

/// What a session needs to start.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cwd: PathBuf,
    pub prompt: String,
    pub mcp: Option<McpServer>,
    /// Continue this session where the agent offers `session/load`.
    pub resume_session: Option<String>,
    pub policy: Policy,
    /// Offer `fs/read_text_file` and `fs/write_text_file` (see [`offers_fs`]).
    pub fs: bool,
    /// The session mode to switch to where offered (see [`preferred_mode`]).
    pub mode: Option<String>,
}

/// Whether Fleet continues a CLI's sessions through `session/load`. Not gemini's: 0.61.0
/// loads a session with each earlier tool result twice (google-gemini/gemini-cli#29365, as its
/// `--resume`), which the Gemini API refuses with 400 "the number of function response parts
/// is equal to the number of function call parts"; or, when its session file was not yet
/// written, answers "No previous sessions found for this project". Not qwen's: 0.15.10 answers
/// `session/load` and replays the history to the client, but its next model request does not
/// continue that conversation (it redoes an earlier step, which its edit tool then refuses: "has
/// not been read in this session"). Seen with the real binaries.
pub fn loads_sessions(cli: &str) -> bool {
    !matches!(cli, "gemini" | "qwen")
}

/// The session mode Fleet picks for a CLI's ACP agent. codex-acp: `full-access`, as its
/// headless mode runs with `--dangerously-bypass-approvals-and-sandbox` — in the sandboxed
/// `auto` mode every command of codex 0.169 exits 101 with no output in this container (its
/// Linux sandbox cannot start), so no file is ever written.
pub fn preferred_mode(cli: &str) -> Option<String> {
    (cli == "codex").then(|| "full-access".to_string())
}

/// Whether Fleet offers its file system to a CLI's ACP agent. Not to gemini and qwen: their
/// ACP file service (gemini 0.61.0, qwen 0.15.10) recognises a missing file only by the text of
/// a thrown `Error`, but their SDK rejects with the plain JSON-RPC error object
/// (`String(err)` is "[object Object]"), so creating a new file through the client always
/// fails ("Error checking existing file"). They then use the worktree's disk directly.
pub fn offers_fs(cli: &str) -> bool {
    !matches!(cli, "gemini" | "qwen")
}

/// One attempt's client side. See the module docs.
pub struct AcpClient {
    cfg: SessionConfig,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    session_id: Option<String>,
    capabilities: Option<Capabilities>,
    loaded: bool,
    /// Text chunks of the message being streamed.
    message: String,
    /// Titles of tool calls by id, and which have reported their end.
    tools: BTreeMap<String, (String, bool)>,
    /// Cumulative session cost last reported (`usage_update`), to emit differences.
    cost_seen: f64,
    evidence: Evidence,
    done: bool,
    cancelled: bool,
    /// While a loaded session replays its history: those updates are not this attempt's.
    replaying: bool,
}

impl AcpClient {
    pub fn new(cfg: SessionConfig) -> AcpClient {
        AcpClient {
            cfg,
            next_id: 0,
            pending: BTreeMap::new(),
            session_id: None,
            capabilities: None,
            loaded: false,
            message: String::new(),
            tools: BTreeMap::new(),
            cost_seen: 0.0,
            evidence: Evidence::default(),
            done: false,
            cancelled: false,
            replaying: false,
        }
    }

    fn call(&mut self, what: Pending, method: &str, params: Value) -> String {
        self.next_id += 1;
        self.pending.insert(self.next_id, what);
        request_line(self.next_id, method, params)
    }

    /// The first line: `initialize`.
    pub fn start(&mut self) -> Step {
        let line = self.call(
            Pending::Initialize,
            "initialize",
            initialize_params(self.cfg.fs),
        );
        Step {
            send: vec![line],
            ..Step::default()
        }
    }

    /// The prompt has been answered (or the session failed): the attempt is over.
    pub fn done(&self) -> bool {
        self.done
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// This attempt continued an earlier session through `session/load`.
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// `session/cancel` for the running prompt (stall, stop, an early verdict).
    pub fn cancel(&mut self) -> Option<String> {
        let id = self.session_id.clone()?;
        if self.done || self.cancelled {
            return None;
        }
        self.cancelled = true;
        Some(notification_line(
            "session/cancel",
            json!({"sessionId": id}),
        ))
    }

    /// Answers a file-system call the engine carried out.
    pub fn answer(&mut self, id: &Value, result: Result<Value, String>) -> String {
        match result {
            Ok(v) => result_line(id, v),
            Err(e) => error_line(id, -32603, &e),
        }
    }

    /// One line of the agent's stdout.
    pub fn stdout_line(&mut self, line: &str) -> Step {
        let mut step = Step::default();
        match parse_line(line) {
            Some(Incoming::Response { id, result }) => self.on_response(&id, result, &mut step),
            Some(Incoming::Notification { method, params }) => {
                if method == "session/update" && !self.replaying {
                    self.on_update(&params["update"], &mut step.events);
                }
            }
            Some(Incoming::Request { id, method, params }) => {
                self.on_request(id, &method, params, &mut step)
            }
            None => {
                // Some agents log to stdout; it may say why they fail.
                self.evidence.stderr(line);
            }
        }
        step
    }

    /// One line of stderr: retries and errors some agents report only there.
    pub fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.evidence.stderr(line);
        self.evidence.cli_retry_line(line).into_iter().collect()
    }

    /// A stderr line read by someone else (a built-in CLI's own parser): kept for a crash's
    /// detail only.
    pub fn stderr_tail(&mut self, line: &str) {
        self.evidence.stderr(line);
    }

    /// The attempt has already failed though the agent goes on (it retries a rate limit on its
    /// own): the session is cancelled and this is the outcome.
    pub fn verdict(&self) -> Option<Outcome> {
        self.evidence.verdict()
    }

    /// Whatever is still buffered (a message without a following update).
    pub fn flush(&mut self) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        self.flush_message(&mut events);
        events
    }

    pub fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        self.evidence.classify(end)
    }

    fn flush_message(&mut self, events: &mut Vec<AgentEvent>) {
        let text = std::mem::take(&mut self.message);
        if !text.trim().is_empty() {
            events.push(AgentEvent::Message { text });
        }
    }

    fn session_params(&self) -> Value {
        json!({
            "cwd": self.cfg.cwd.display().to_string(),
            "mcpServers": mcp_servers(self.cfg.mcp.as_ref()),
        })
    }

    fn set_mode_then_prompt(&mut self, modes: &Value, step: &mut Step) {
        let sid = self.session_id.clone().unwrap_or_default();
        match editing_mode(modes, self.cfg.mode.as_deref()) {
            Some(mode) => {
                let params = json!({"sessionId": sid, "modeId": mode});
                let line = self.call(Pending::SetMode, "session/set_mode", params);
                step.send.push(line);
            }
            None => self.prompt(step),
        }
    }

    fn prompt(&mut self, step: &mut Step) {
        let Some(id) = self.session_id.clone() else {
            return;
        };
        let params =
            json!({"sessionId": id, "prompt": [{"type": "text", "text": self.cfg.prompt}]});
        let line = self.call(Pending::Prompt, "session/prompt", params);
        step.send.push(line);
    }

    fn fail(&mut self, class: ErrorClass, message: String, step: &mut Step) {
        step.events.push(AgentEvent::Error {
            class,
            message: message.clone(),
        });
        self.evidence.error(class, message.clone());
        self.evidence.terminal = Some(Err((class, message)));
        self.done = true;
    }

    fn on_response(&mut self, id: &Value, result: Result<Value, RpcError>, step: &mut Step) {
        let Some(what) = id.as_u64().and_then(|i| self.pending.remove(&i)) else {
            return;
        };
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                // A failed load is not fatal: start a new session (with Fleet's handoff note).
                if what == Pending::LoadSession {
                    step.events.push(AgentEvent::Error {
                        class: ErrorClass::Agent,
                        message: format!("session/load failed, starting afresh: {}", e.text()),
                    });
                    self.replaying = false;
                    let params = self.session_params();
                    let line = self.call(Pending::NewSession, "session/new", params);
                    step.send.push(line);
                    return;
                }
                if what == Pending::SetMode {
                    step.events.push(AgentEvent::Error {
                        class: ErrorClass::Agent,
                        message: format!("session/set_mode failed, prompting anyway: {}", e.text()),
                    });
                    self.prompt(step);
                    return;
                }
                let text = e.text();
                let class = match e.code {
                    // ACP's "auth_required".
                    -32000 => ErrorClass::AuthFailed,
                    _ => classify_text(&text),
                };
                self.flush_message(&mut step.events);
                let method = match what {
                    Pending::Initialize => "initialize",
                    Pending::NewSession => "session/new",
                    Pending::LoadSession => "session/load",
                    Pending::SetMode => "session/set_mode",
                    Pending::Prompt => "session/prompt",
                };
                self.fail(class, format!("{method}: {text}"), step);
                return;
            }
        };
        match what {
            Pending::Initialize => {
                let caps = Capabilities::from_initialize(&value);
                let load = caps.load_session;
                self.capabilities = Some(caps);
                match self.cfg.resume_session.clone().filter(|_| load) {
                    Some(sid) => {
                        let mut params = self.session_params();
                        params["sessionId"] = json!(sid);
                        self.session_id = Some(sid);
                        self.replaying = true;
                        let line = self.call(Pending::LoadSession, "session/load", params);
                        step.send.push(line);
                    }
                    None => {
                        let params = self.session_params();
                        let line = self.call(Pending::NewSession, "session/new", params);
                        step.send.push(line);
                    }
                }
            }
            Pending::NewSession => {
                let Some(sid) = value["sessionId"].as_str() else {
                    self.fail(
                        ErrorClass::Agent,
                        "session/new: the response has no sessionId".into(),
                        step,
                    );
                    return;
                };
                self.session_id = Some(sid.to_string());
                step.events.push(AgentEvent::Session { id: sid.into() });
                self.set_mode_then_prompt(&value["modes"], step);
            }
            Pending::SetMode => self.prompt(step),
            Pending::LoadSession => {
                self.replaying = false;
                self.loaded = true;
                if let Some(sid) = &self.session_id {
                    step.events.push(AgentEvent::Session { id: sid.clone() });
                }
                // A loaded session is back in the agent's default mode (codex: read-only).
                self.set_mode_then_prompt(&value["modes"], step);
            }
            Pending::Prompt => {
                self.flush_message(&mut step.events);
                let usage = usage_of(&value["usage"])
                    .or_else(|| meta_usage(&value["_meta"]["quota"]["token_count"]));
                if let Some(u) = usage {
                    step.events.push(AgentEvent::Usage(u));
                }
                let reason = value["stopReason"].as_str().unwrap_or("end_turn");
                self.evidence.terminal = Some(match reason {
                    "end_turn" => Ok(()),
                    "cancelled" => Err((ErrorClass::Agent, "the turn was cancelled".into())),
                    other => Err((ErrorClass::Agent, format!("the turn ended: {other}"))),
                });
                self.done = true;
            }
        }
    }

    fn on_request(&mut self, id: Value, method: &str, params: Value, step: &mut Step) {
        match method {
            "session/request_permission" => {
                let tool = &params["toolCall"];
                self.flush_message(&mut step.events);
                self.see_tool(tool, &mut step.events);
                let title = tool["title"]
                    .as_str()
                    .or(tool["kind"].as_str())
                    .unwrap_or("tool")
                    .to_string();
                match self.cfg.policy.judge(tool) {
                    Ok(()) => {
                        let outcome = match pick_option(&params["options"], &["allow_once", "allow_always"]) {
                            Some(o) => json!({"outcome": "selected", "optionId": o}),
                            None => json!({"outcome": "cancelled"}),
                        };
                        step.send.push(result_line(&id, json!({"outcome": outcome})));
                    }
                    Err(denial) => {
                        let outcome = match pick_option(&params["options"], &["reject_once", "reject_always"]) {
                            Some(o) => json!({"outcome": "selected", "optionId": o}),
                            None => json!({"outcome": "cancelled"}),
                        };
                        step.send.push(result_line(&id, json!({"outcome": outcome})));
                        step.events.push(AgentEvent::ToolResult {
                            name: Some(title.clone()),
                            ok: false,
                            output: format!("permission denied by Fleet's policy: {}", denial.reason),
                        });
                        step.events.push(AgentEvent::Policy {
                            kind: "denied".into(),
                            rule: denial.rule,
                            detail: format!("{title}: {}", denial.reason),
                        });
                    }
                }
            }
            "fs/read_text_file" => match params["path"].as_str() {
                Some(path) => step.fs.push(FsCall::Read {
                    id,
                    path: path.to_string(),
                    line: params["line"].as_u64(),
                    limit: params["limit"].as_u64(),
                }),
                None => step.send.push(error_line(&id, -32602, "`path` is missing")),
            },
            "fs/write_text_file" => {
                match (params["path"].as_str(), params["content"].as_str()) {
                    (Some(path), Some(content)) => step.fs.push(FsCall::Write {
                        id,
                        path: path.to_string(),
                        content: content.to_string(),
                    }),
                    _ => step
                        .send
                        .push(error_line(&id, -32602, "`path` and `content` are needed")),
                }
            }
            other => step.send.push(error_line(
                &id,
                -32601,
                &format!("method not found: {other} (Fleet offers fs/read_text_file and fs/write_text_file)"),
            )),
        }
    }

    fn on_update(&mut self, u: &Value, events: &mut Vec<AgentEvent>) {
        let kind = u["sessionUpdate"].as_str().unwrap_or("");
        // qwen: each model call's usage rides on an update's `_meta.usage`.
        if let Some(usage) = usage_of(&u["_meta"]["usage"]) {
            events.push(AgentEvent::Usage(usage));
        }
        if kind == "agent_message_chunk" {
            if let Some(t) = u["content"]["text"].as_str() {
                self.message.push_str(t);
            }
            return;
        }
        if kind == "agent_thought_chunk" || kind == "user_message_chunk" {
            return;
        }
        self.flush_message(events);
        match kind {
            "tool_call" | "tool_call_update" => {
                let id = u["toolCallId"].as_str().unwrap_or("").to_string();
                self.see_tool(u, events);
                if let Some(t) = u["title"].as_str()
                    && let Some(entry) = self.tools.get_mut(&id)
                {
                    entry.0 = t.to_string();
                }
                self.tool_status(&id, u, events);
            }
            "plan" => events.push(AgentEvent::ToolCall {
                name: "plan".into(),
                input: u["entries"].clone(),
            }),
            "usage_update" => {
                if let Some(amount) = u["cost"]["amount"].as_f64().filter(|a| a.is_finite()) {
                    let delta = amount - self.cost_seen;
                    if delta > 0.0 {
                        events.push(AgentEvent::Cost { usd: delta });
                        self.cost_seen = amount;
                    }
                }
            }
            _ => {}
        }
    }

    /// A tool call's first sight (a `tool_call` update, or — gemini, qwen — the permission
    /// request or an update of a call never announced) is its [`AgentEvent::ToolCall`].
    fn see_tool(&mut self, tc: &Value, events: &mut Vec<AgentEvent>) {
        let id = tc["toolCallId"].as_str().unwrap_or("").to_string();
        if self.tools.contains_key(&id) {
            return;
        }
        let title = tc["title"]
            .as_str()
            .or(tc["kind"].as_str())
            .unwrap_or("tool")
            .to_string();
        events.push(AgentEvent::ToolCall {
            name: title.clone(),
            input: json!({
                "id": id, "kind": tc["kind"], "status": tc["status"],
                "input": tc["rawInput"], "locations": tc["locations"],
            }),
        });
        self.tools.insert(id, (title, false));
    }

    fn tool_status(&mut self, id: &str, u: &Value, events: &mut Vec<AgentEvent>) {
        let status = u["status"].as_str().unwrap_or("");
        if status != "completed" && status != "failed" {
            return;
        }
        let entry = self
            .tools
            .entry(id.to_string())
            .or_insert_with(|| ("tool".into(), false));
        if entry.1 {
            return;
        }
        entry.1 = true;
        events.push(AgentEvent::ToolResult {
            name: Some(entry.0.clone()),
            ok: status == "completed",
            output: content_text(u),
        });
    }
}

/// The text of a tool call's content blocks, or its raw output.
fn content_text(u: &Value) -> String {
    let mut out = String::new();
    if let Some(blocks) = u["content"].as_array() {
        for b in blocks {
            let text = b["content"]["text"].as_str().or(b["text"].as_str());
            if let Some(t) = text {
                out.push_str(t);
            } else if b["type"] == "diff" {
                out.push_str(&format!("diff {}", b["path"].as_str().unwrap_or("?")));
            }
        }
    }
    if out.is_empty() && !u["rawOutput"].is_null() {
        out = match &u["rawOutput"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    out.chars().take(2000).collect()
}

/// ACP's token usage (a prompt response's `usage`): camelCase counts.
fn usage_of(v: &Value) -> Option<Usage> {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let u = Usage {
        input_tokens: n("inputTokens"),
        output_tokens: n("outputTokens").saturating_add(n("thoughtTokens")),
        cache_read_tokens: n("cachedReadTokens"),
        cache_write_tokens: n("cachedWriteTokens"),
    };
    (!u.is_zero()).then_some(u)
}

/// Feeds a recorded ACP transcript (the engine's: `> ` sent, `< ` received, `[stderr] `)
/// through a fresh client configured as the engine configures `cli`'s: what the agent said
/// replays into the same events and outcome. The sent lines are the client's own and skipped.
pub fn replay(cli: &str, transcript: &str, end: &ProcessEnd) -> crate::Replay {
    let mut client = AcpClient::new(SessionConfig {
        cwd: PathBuf::from("/replay"),
        prompt: String::new(),
        mcp: None,
        resume_session: None,
        policy: Policy::for_worktree(Path::new("/replay")),
        fs: offers_fs(cli),
        mode: preferred_mode(cli),
    });
    let mut events = Vec::new();
    client.start();
    for line in transcript.lines() {
        if let Some(l) = line.strip_prefix("< ") {
            events.extend(client.stdout_line(l).events);
        } else if let Some(l) = line.strip_prefix("[stderr] ") {
            events.extend(client.stderr_line(l));
        }
    }
    events.extend(client.flush());
    let end = ProcessEnd {
        signal: if client.done() { None } else { end.signal },
        ..*end
    };
    crate::Replay::new(client.finish(&end), events)
}

/// gemini's and qwen's `_meta.quota.token_count` of a prompt response (snake_case counts).
fn meta_usage(v: &Value) -> Option<Usage> {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let u = Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cached_input_tokens").max(n("cache_read_tokens")),
        cache_write_tokens: 0,
    };
    (!u.is_zero()).then_some(u)
}

/// The outcome of an agent that could not even be started (for the engine's error paths).
pub fn not_started(detail: impl Into<String>) -> Outcome {
    Outcome::new(OutcomeClass::Crashed).with_detail(detail)
}

mod launch;
pub use launch::{BUILTIN, builtin_command, launch};

#[cfg(test)]
mod tests;
