//! `fleet.yaml`: the instance configuration — store, server, agent profiles and accounts,
//! notifications and the Telegram bot (those two in `notify.rs`).

use crate::decode::{Decoder, Field};
use crate::notify::{self, NotifyRetry, NotifySpec, TelegramSpec};
use crate::routing::{self, Routing};
use crate::yaml::{self, Node, ScalarKind, Value};
use crate::{ConfigError, Location};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every `cli:` a profile may name. (`fleet-agents` has one adapter per entry but `http`,
/// which the engine runs in-process; a test in the engine keeps the two lists equal.)
pub const CLIS: &[&str] = &[
    "claude", "codex", "gemini", "qwen", "opencode", "cursor", "amp", "kiro", "aider", "goose",
    "command", "http", "acp",
];

/// How Fleet talks to a profile's agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// The CLI's own headless mode and stream format.
    #[default]
    Native,
    /// The Agent Client Protocol over stdio (`cli: acp`, or a built-in CLI's ACP mode).
    Acp,
}

/// The CLIs that may choose `transport: acp` (`acp` itself always speaks it).
pub const ACP_CLIS: &[&str] = &["gemini", "qwen", "opencode", "claude", "codex", "acp"];

pub(crate) const TOP_KEYS: &[&str] = &[
    "store",
    "server",
    "agents",
    "accounts",
    "routing",
    "notifications",
    "notify_retry",
    "telegram",
    "intake",
    "audits",
    "projects",
    "policies",
    "forge",
    "memory",
    "review_runs",
    "runners",
];
pub(crate) const SERVER_KEYS: &[&str] = &["bind", "public_url"];
pub(crate) const PROFILE_KEYS: &[&str] = &[
    "cli",
    "model",
    "roles",
    "priority",
    "tier",
    "account",
    "base_url",
    "env",
    "max_turns",
    "timeout",
    "stall_timeout",
    "command",
    "transport",
    "args",
];
pub(crate) const ACCOUNT_KEYS: &[&str] = &[
    "secrets",
    "daily_budget_usd",
    "daily_budget_tokens",
    "window",
    "day_starts",
];

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    pub path: PathBuf,
    pub store: StoreConfig,
    pub bind: String,
    /// Agent profiles in the order written.
    pub agents: Vec<Profile>,
    pub accounts: Vec<Account>,
    /// IMR routing: the `routing:` section, or the built-in rules.
    pub routing: Routing,
    /// `server.public_url`: the base of links in notifications, without a trailing `/`
    /// (see [`InstanceConfig::link_base`] for the default).
    pub public_url: Option<String>,
    /// `notifications:`, in the order written.
    pub notifications: Vec<NotifySpec>,
    /// `notify_retry:`, or its defaults.
    pub notify_retry: NotifyRetry,
    /// `telegram:`: the bot that takes requests, when configured.
    pub telegram: Option<TelegramSpec>,
    /// `intake:`: the tracker webhooks, when configured.
    pub intake: Option<crate::intake::IntakeSpec>,
    /// `audits:`, in the order written.
    pub audits: Vec<crate::audits::AuditSpec>,
    /// `projects:`: limits of each project's epics, by project name.
    pub projects: BTreeMap<String, crate::ProjectLimits>,
    /// `policies:`: the instance's always-on rules, in the order written.
    pub policies: Vec<crate::PolicyRule>,
    /// `forge:`: where `fleet project new` creates repositories, when configured.
    pub forge: Option<crate::forge::ForgeSpec>,
    /// `memory:`: lessons injected into prompts and the knobs of forgetting, or the defaults.
    pub memory: crate::MemoryConfig,
    /// `review_runs:`: Fleet reviews its own runs when they end, when configured.
    pub review_runs: Option<crate::review_runs::ReviewRuns>,
    /// `runners:`: an epic's stage runs are queued for `fleet runner` workers (a shared
    /// store is needed) instead of run in the process that drives the epic.
    pub runners: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite,
    Postgres(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub cli: String,
    pub model: Option<String>,
    pub roles: Vec<String>,
    /// Higher is tried first.
    pub priority: i64,
    /// Escalation tier for the critic swap (higher = stronger); defaults to 0.
    pub tier: u32,
    pub account: Option<String>,
    pub base_url: Option<String>,
    pub env: BTreeMap<String, String>,
    pub max_turns: Option<u32>,
    pub timeout: Option<Duration>,
    /// No output for this long and the attempt is ended as stalled.
    pub stall_timeout: Option<Duration>,
    /// For `cli: command`: the command line that plays the agent (for `cli: acp`: the ACP
    /// agent; for a built-in CLI with `transport: acp`: a replacement for its ACP program).
    pub command: Option<String>,
    /// `transport:`: native (default) or acp.
    pub transport: Transport,
    /// `args:`: extra arguments of an ACP agent's command.
    pub args: Vec<String>,
    pub location: Location,
}

/// A local-time window `HH:MM-HH:MM`, possibly crossing midnight; minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        let (a, b) = s.split_once('-')?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a)?, minutes(b)?);
        (start != end).then_some(Window { start, end })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    /// Names of env vars holding the secrets; the values are never in files.
    pub secrets: Vec<String>,
    pub daily_budget_usd: Option<f64>,
    pub daily_budget_tokens: Option<u64>,
    pub window: Option<Window>,
    /// Local time the budget day starts (minutes after midnight); default 00:00.
    pub day_starts: u32,
    pub location: Location,
}

impl InstanceConfig {
    /// The names of every environment variable this configuration says holds a secret:
    /// accounts' `secrets`, notification channels' and the bot's tokens, URLs and passwords.
    /// Fleet's redactor takes their values out of everything it stores, sends or shows.
    pub fn secret_names(&self) -> Vec<String> {
        use crate::notify::{NotifyKind, UrlSource};
        let mut names: Vec<String> = self
            .accounts
            .iter()
            .flat_map(|a| a.secrets.iter().cloned())
            .collect();
        for n in &self.notifications {
            match &n.kind {
                NotifyKind::Webhook {
                    url: UrlSource::Env(v),
                }
                | NotifyKind::Slack { url_env: v }
                | NotifyKind::Telegram { token_env: v, .. } => names.push(v.clone()),
                NotifyKind::Email(e) => names.extend(e.password_env.clone()),
                NotifyKind::Webhook { .. } => {}
            }
        }
        names.extend(self.telegram.as_ref().map(|t| t.token_env.clone()));
        names.extend(self.intake.as_ref().map(|i| i.secret_env.clone()));
        names.extend(self.forge.as_ref().map(|f| f.token_env.clone()));
        names.sort();
        names.dedup();
        names
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.agents.iter().find(|p| p.name == name)
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The base of links to the web UI: `public_url`, or `http://{bind}`.
    pub fn link_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", self.bind),
        }
    }

    /// An instance with nothing configured (`fleet run` without a `fleet.yaml`).
    pub fn empty() -> InstanceConfig {
        InstanceConfig {
            path: PathBuf::new(),
            store: StoreConfig::Sqlite,
            bind: "127.0.0.1:7420".into(),
            agents: Vec::new(),
            accounts: Vec::new(),
            routing: Routing::builtin(),
            public_url: None,
            notifications: Vec::new(),
            notify_retry: NotifyRetry::default(),
            telegram: None,
            intake: None,
            audits: Vec::new(),
            projects: BTreeMap::new(),
            policies: Vec::new(),
            forge: None,
            memory: crate::MemoryConfig::default(),
            review_runs: None,
            runners: false,
        }
    }

    /// The limits of `project`'s epics: its `projects:` entry, or the defaults.
    pub fn project_limits(&self, project: &str) -> crate::ProjectLimits {
        self.projects.get(project).cloned().unwrap_or_default()
    }
}

pub fn load_instance(path: &Path) -> Result<InstanceConfig, Vec<ConfigError>> {
    let text = crate::read_text(path, "the instance configuration").map_err(|e| vec![e])?;
    parse_instance(path, &text)
}

pub fn parse_instance(path: &Path, text: &str) -> Result<InstanceConfig, Vec<ConfigError>> {
    let mut cfg = InstanceConfig {
        path: path.to_path_buf(),
        ..InstanceConfig::empty()
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(cfg),
        Err(e) => return Err(vec![ConfigError::new(path, e.loc, e.message)]),
    };
    let mut d = Decoder {
        file: path,
        base_dir: None,
        errors: Vec::new(),
    };
    if let Some(top) = d.fields(
        &root,
        TOP_KEYS,
        "at the top level of fleet.yaml",
        "a mapping",
    ) {
        for Field { key, value, .. } in &top.list {
            match *key {
                "store" => {
                    if let Some(s) = d.text(value, "store") {
                        match s.value.as_str() {
                            "sqlite" => cfg.store = StoreConfig::Sqlite,
                            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                                cfg.store = StoreConfig::Postgres(url.to_string())
                            }
                            other => d.error(
                                s.at,
                                format!("`store`: expected `sqlite` or a postgres://… URL, found {other:?}"),
                            ),
                        }
                    }
                }
                "server" => {
                    if let Some(f) =
                        d.fields(value, SERVER_KEYS, "in `server`", "a mapping with `bind`")
                    {
                        for field in &f.list {
                            match field.key {
                                "bind" => {
                                    if let Some(b) = d.text(field.value, "bind") {
                                        cfg.bind = b.value;
                                    }
                                }
                                "public_url" => {
                                    cfg.public_url = notify::public_url(&mut d, field.value)
                                }
                                _ => unreachable!("fields() keeps known keys only"),
                            }
                        }
                    }
                }
                "agents" => cfg.agents = profiles(&mut d, value),
                "accounts" => cfg.accounts = accounts(&mut d, value),
                "routing" => cfg.routing = routing::decode(&mut d, value),
                "notifications" => cfg.notifications = notify::notifications(&mut d, value),
                "notify_retry" => {
                    cfg.notify_retry = notify::retry(&mut d, value).unwrap_or_default()
                }
                "telegram" => cfg.telegram = notify::telegram(&mut d, value),
                "intake" => cfg.intake = crate::intake::intake(&mut d, value),
                "audits" => cfg.audits = crate::audits::audits(&mut d, value),
                "projects" => cfg.projects = crate::project_limits::decode(&mut d, value),
                "policies" => cfg.policies = crate::policies::policies(&mut d, value),
                "forge" => cfg.forge = crate::forge::forge(&mut d, value),
                "memory" => cfg.memory = crate::memory::memory(&mut d, value),
                "review_runs" => cfg.review_runs = crate::review_runs::decode(&mut d, value),
                "runners" => {
                    if let Some(on) = crate::policies::boolean(&mut d, value, "runners") {
                        if on && !postgres_named(&root) {
                            d.error(
                                value.loc,
                                "`runners: true` needs `store: postgres://…`: runners share no \
                                 file with this instance, only the store",
                            );
                        }
                        cfg.runners = on;
                    }
                }
                _ => unreachable!("fields() keeps known keys only"),
            }
        }
    }
    for p in &cfg.agents {
        if let Some(a) = &p.account
            && cfg.account(a).is_none()
        {
            let known: Vec<&str> = cfg.accounts.iter().map(|a| a.name.as_str()).collect();
            d.error(
                p.location,
                format!(
                    "profile `{}` uses account `{a}`, which is not defined under `accounts` (defined: {})",
                    p.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            );
        }
    }
    if let Some(classifier) = &cfg.routing.classifier
        && cfg.profile(classifier).is_none()
        && !CLIS.contains(&classifier.as_str())
    {
        let at = routing_classifier_at(&root).unwrap_or(Location { line: 1, col: 1 });
        d.error(
            at,
            format!(
                "`classifier`: `{classifier}` is neither a profile under `agents` nor an agent CLI ({})",
                CLIS.join(", ")
            ),
        );
    }
    if d.errors.is_empty() {
        Ok(cfg)
    } else {
        d.errors.sort_by_key(ConfigError::location);
        Err(d.errors)
    }
}

/// Whether `store:` names PostgreSQL (whatever order the keys are written in).
fn postgres_named(root: &Node) -> bool {
    root.get("store").is_some_and(|n| match &n.value {
        Value::Scalar { text, .. } => text.starts_with("postgres"),
        _ => false,
    })
}

fn routing_classifier_at(root: &Node) -> Option<Location> {
    root.get("routing")?.get("classifier").map(|n| n.loc)
}

fn named_entries<'n>(
    d: &mut Decoder<'_>,
    node: &'n Node,
    what: &str,
) -> Vec<(String, Location, &'n Node)> {
    let Some(fields) = d.entries(
        node,
        &format!("in `{what}`"),
        &format!("a mapping of {what} by name"),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in fields.list {
        if let Err(e) = fleet_core::validate_id(f.key) {
            d.error(f.at, format!("invalid {what} name {:?}: {e}", f.key));
            continue;
        }
        out.push((f.key.to_string(), f.at, f.value));
    }
    out
}

fn profiles(d: &mut Decoder<'_>, node: &Node) -> Vec<Profile> {
    let mut out = Vec::new();
    for (name, at, body) in named_entries(d, node, "agents") {
        let context = format!("in profile `{name}`");
        let Some(fields) = d.fields(
            body,
            PROFILE_KEYS,
            &context,
            "a mapping with at least `cli`",
        ) else {
            continue;
        };
        let mut p = Profile {
            name: name.clone(),
            cli: String::new(),
            model: None,
            roles: Vec::new(),
            priority: 0,
            tier: 0,
            account: None,
            base_url: None,
            env: BTreeMap::new(),
            max_turns: None,
            timeout: None,
            stall_timeout: None,
            command: None,
            transport: Transport::Native,
            args: Vec::new(),
            location: at,
        };
        for f in &fields.list {
            let v = f.value;
            match f.key {
                "cli" => {
                    if let Some(c) = d.text(v, "cli") {
                        if CLIS.contains(&c.value.as_str()) {
                            p.cli = c.value;
                        } else {
                            d.error(
                                c.at,
                                format!(
                                    "`cli`: unknown agent CLI {:?}; expected one of: {}",
                                    c.value,
                                    CLIS.join(", ")
                                ),
                            );
                        }
                    }
                }
                "model" => p.model = d.text(v, "model").map(|s| s.value),
                "roles" => p.roles = string_list(d, v, "roles", true),
                "priority" => {
                    p.priority = d
                        .integer(v, "priority", "an integer (higher is tried first)")
                        .unwrap_or(0)
                }
                "tier" => {
                    p.tier = d
                        .integer(v, "tier", "a non-negative integer")
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0)
                }
                "account" => p.account = d.id(v, "account", "account name").map(|s| s.value),
                "base_url" => {
                    if let Some(u) = d.text(v, "base_url") {
                        if u.value.starts_with("http://") || u.value.starts_with("https://") {
                            p.base_url = Some(u.value);
                        } else {
                            d.error(
                                u.at,
                                format!(
                                    "`base_url`: expected an http:// or https:// URL, found {:?}",
                                    u.value
                                ),
                            );
                        }
                    }
                }
                "env" => p.env = d.env(v),
                "max_turns" => {
                    p.max_turns = d
                        .integer(v, "max_turns", "a positive integer")
                        .and_then(|n| u32::try_from(n).ok().filter(|n| *n > 0))
                }
                "timeout" => p.timeout = d.timeout(v),
                "stall_timeout" => p.stall_timeout = d.timeout(v),
                "command" => p.command = d.text(v, "command").map(|s| s.value),
                "transport" => {
                    if let Some(t) = d.text(v, "transport") {
                        match t.value.as_str() {
                            "native" => p.transport = Transport::Native,
                            "acp" => p.transport = Transport::Acp,
                            other => d.error(
                                t.at,
                                format!("`transport`: expected `native` or `acp`, found {other:?}"),
                            ),
                        }
                    }
                }
                "args" => p.args = string_list(d, v, "args", false),
                _ => unreachable!(),
            }
        }
        if !fields.has("cli") {
            d.error(
                at,
                format!("profile `{name}` needs `cli` (one of: {})", CLIS.join(", ")),
            );
        }
        if p.cli == "acp" {
            p.transport = Transport::Acp;
            if p.command.is_none() {
                d.error(
                    at,
                    format!(
                        "profile `{name}` has `cli: acp` but no `command:` (the ACP agent to run)"
                    ),
                );
            }
        } else if p.transport == Transport::Acp && !ACP_CLIS.contains(&p.cli.as_str()) {
            d.error(
                at,
                format!(
                    "profile `{name}`: `transport: acp` is built in for {} only; run another ACP agent with `cli: acp` and `command:`",
                    ACP_CLIS[..5].join(", ")
                ),
            );
        }
        if p.cli == "command" && p.command.is_none() {
            d.error(
                at,
                format!("profile `{name}` has `cli: command` but no `command:` to run"),
            );
        }
        out.push(p);
    }
    out
}

fn accounts(d: &mut Decoder<'_>, node: &Node) -> Vec<Account> {
    let mut out = Vec::new();
    for (name, at, body) in named_entries(d, node, "accounts") {
        let context = format!("in account `{name}`");
        let Some(fields) = d.fields(body, ACCOUNT_KEYS, &context, "a mapping") else {
            continue;
        };
        let mut a = Account {
            name,
            secrets: Vec::new(),
            daily_budget_usd: None,
            daily_budget_tokens: None,
            window: None,
            day_starts: 0,
            location: at,
        };
        for f in &fields.list {
            let v = f.value;
            match f.key {
                "secrets" => {
                    for s in string_list_spanned(d, v, "secrets") {
                        let looks_like_value = s.0.len() > 24
                            || s.0.starts_with("sk-")
                            || s.0.contains(['-', '.', '/', ':']);
                        if looks_like_value
                            || !s.0.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            // Never echo what may be a secret value back.
                            d.error(
                                s.1,
                                "`secrets` lists the NAMES of environment variables that hold secrets \
                                 (like ANTHROPIC_API_KEY); this entry is not a variable name",
                            );
                        } else {
                            a.secrets.push(s.0);
                        }
                    }
                }
                "daily_budget_usd" => match &v.value {
                    Value::Scalar {
                        kind: ScalarKind::Int(n),
                        ..
                    } if *n >= 0 => a.daily_budget_usd = Some(*n as f64),
                    Value::Scalar {
                        kind: ScalarKind::Float,
                        text,
                    } if text.parse::<f64>().is_ok_and(|x| x >= 0.0) => {
                        a.daily_budget_usd = text.parse().ok()
                    }
                    _ => d.error(
                        v.loc,
                        format!(
                            "`daily_budget_usd`: expected a non-negative number, found {}",
                            v.describe()
                        ),
                    ),
                },
                "daily_budget_tokens" => {
                    a.daily_budget_tokens = d
                        .integer(v, "daily_budget_tokens", "a non-negative integer")
                        .and_then(|n| u64::try_from(n).ok())
                }
                "window" => {
                    if let Some(w) = d.text(v, "window") {
                        match Window::parse(&w.value) {
                            Some(win) => a.window = Some(win),
                            None => d.error(w.at, format!("`window`: expected local times like \"00:00-08:00\" (may cross midnight), found {:?}", w.value)),
                        }
                    }
                }
                "day_starts" => {
                    if let Some(t) = d.text(v, "day_starts") {
                        match Window::parse(&format!("{}-24:00", t.value)).or_else(|| (t.value == "00:00").then_some(Window { start: 0, end: 1440 })) {
                            Some(w) => a.day_starts = w.start,
                            None => d.error(t.at, format!("`day_starts`: expected a local time like \"06:00\", found {:?}", t.value)),
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        out.push(a);
    }
    out
}

pub(crate) fn string_list(d: &mut Decoder<'_>, node: &Node, key: &str, ids: bool) -> Vec<String> {
    string_list_spanned(d, node, key)
        .into_iter()
        .filter(|(s, at)| {
            if ids && let Err(e) = fleet_core::validate_id(s) {
                d.error(*at, format!("`{key}`: invalid name {s:?}: {e}"));
                return false;
            }
            true
        })
        .map(|(s, _)| s)
        .collect()
}

pub(crate) fn string_list_spanned(
    d: &mut Decoder<'_>,
    node: &Node,
    key: &str,
) -> Vec<(String, Location)> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| d.text(i, key).map(|s| (s.value, s.at)))
            .collect(),
        Value::Scalar { kind, .. } if *kind != ScalarKind::Null => d
            .text(node, key)
            .map(|s| vec![(s.value, s.at)])
            .unwrap_or_default(),
        _ => {
            d.error(
                node.loc,
                format!("`{key}`: expected a list, found {}", node.describe()),
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"store: sqlite
server: { bind: "127.0.0.1:7420" }
agents:
  claude-dev:
    cli: claude
    model: claude-sonnet-4-5
    roles: [developer, reviewer]
    priority: 10
    account: team-anthropic
    base_url: "http://127.0.0.1:8080"
    env: { CLAUDE_CODE_MAX_RETRIES: "2" }
    max_turns: 50
    timeout: 20m
  codex-dev:
    cli: codex
    roles: [developer]
    priority: 5
    account: bob-openai
accounts:
  team-anthropic:
    secrets: [ANTHROPIC_API_KEY]
    daily_budget_usd: 50
  bob-openai:
    secrets: [OPENAI_API_KEY]
    window: "22:00-08:00"
    daily_budget_usd: 10.5
"#;

    #[test]
    fn decodes_the_product_example() {
        let cfg = parse_instance(Path::new("fleet.yaml"), GOOD).unwrap();
        assert_eq!(cfg.agents.len(), 2);
        let c = cfg.profile("claude-dev").unwrap();
        assert_eq!(
            (c.cli.as_str(), c.priority, c.max_turns),
            ("claude", 10, Some(50))
        );
        assert_eq!(c.timeout, Some(Duration::from_secs(1200)));
        assert_eq!(c.env["CLAUDE_CODE_MAX_RETRIES"], "2");
        let bob = cfg.account("bob-openai").unwrap();
        assert_eq!(
            bob.window,
            Some(Window {
                start: 22 * 60,
                end: 8 * 60
            })
        );
        assert_eq!(bob.daily_budget_usd, Some(10.5));
        assert_eq!(cfg.bind, "127.0.0.1:7420");
    }

    #[test]
    fn runners_need_a_shared_store() {
        let p = Path::new("fleet.yaml");
        assert!(!parse_instance(p, "store: sqlite\n").unwrap().runners);
        let on = "runners: true\nstore: postgres://fleet@db/fleet\n";
        assert!(parse_instance(p, on).unwrap().runners);
        let errs = parse_instance(p, "runners: true\n").unwrap_err();
        assert!(errs[0].message.contains("postgres://"), "{errs:?}");
        let errs = parse_instance(p, "runners: yes please\n").unwrap_err();
        assert!(errs[0].message.contains("true or false"), "{errs:?}");
    }

    #[test]
    fn errors_are_located_and_secret_values_are_refused_without_echo() {
        let text = "agents:\n  a:\n    cli: clod\n    acount: x\naccounts:\n  x:\n    secrets: [sk-ant-abcdefghijklmnopqrstuvwxyz]\n    window: \"8-9\"\n";
        let errs = parse_instance(Path::new("fleet.yaml"), text).unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter()
                .any(|e| e.starts_with("fleet.yaml:3:10: `cli`: unknown agent CLI \"clod\"")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("fleet.yaml:4:5: unknown key `acount`")
                    && e.contains("did you mean `account`")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("fleet.yaml:7:15:") && e.contains("NAMES")),
            "{all:?}"
        );
        assert!(
            all.iter().all(|e| !e.contains("sk-ant-abc")),
            "a secret value was echoed: {all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("fleet.yaml:8:13: `window`")),
            "{all:?}"
        );
    }

    #[test]
    fn unknown_account_is_an_error() {
        let errs = parse_instance(
            Path::new("f.yaml"),
            "agents:\n  a:\n    cli: claude\n    account: nope\n",
        )
        .unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("account `nope`, which is not defined"),
            "{errs:?}"
        );
    }

    const NOTIFY: &str = r#"server:
  bind: 127.0.0.1:7420
  public_url: http://fleet.example:7420/
notifications:
  - kind: webhook
    url: https://example.com/hook
    on: [awaiting_acceptance, failed]
  - kind: slack
    url_env: FLEET_SLACK_WEBHOOK
  - kind: telegram
    token_env: FLEET_TELEGRAM_TOKEN
    chat_id: -100123
    api_url: http://127.0.0.1:9999
  - kind: email
    host: smtp.example
    tls: tls
    username: fleet
    password_env: SMTP_PASSWORD
    from: Fleet <fleet@example.com>
    to: [a@example.com, b@example.com]
notify_retry: { tries: 3, backoff_ms: 50 }
telegram:
  token_env: FLEET_TELEGRAM_TOKEN
  allowed_chats: [12345, -100123]
  default_project: shop
"#;

    #[test]
    fn decodes_notifications_and_the_bot() {
        let cfg = parse_instance(Path::new("fleet.yaml"), NOTIFY).unwrap();
        assert_eq!(cfg.public_url.as_deref(), Some("http://fleet.example:7420"));
        assert_eq!(cfg.link_base(), "http://fleet.example:7420");
        assert_eq!(cfg.notifications.len(), 4);
        let n = &cfg.notifications;
        assert_eq!(
            n[0].kind,
            crate::NotifyKind::Webhook {
                url: crate::UrlSource::Url("https://example.com/hook".into())
            }
        );
        assert_eq!(n[0].on, ["awaiting_acceptance", "failed"]);
        assert!(n[0].wants("failed") && !n[0].wants("auth_failed"));
        assert_eq!(n[0].location, Location { line: 5, col: 5 });
        assert_eq!(
            n[1].kind,
            crate::NotifyKind::Slack {
                url_env: "FLEET_SLACK_WEBHOOK".into()
            }
        );
        assert_eq!(
            n[1].on,
            crate::NOTIFY_EVENTS,
            "`on` defaults to every event"
        );
        assert_eq!(
            n[2].kind,
            crate::NotifyKind::Telegram {
                token_env: "FLEET_TELEGRAM_TOKEN".into(),
                chat_id: -100123,
                api_url: "http://127.0.0.1:9999".into()
            }
        );
        assert_eq!(
            n[3].kind,
            crate::NotifyKind::Email(crate::EmailSpec {
                host: "smtp.example".into(),
                port: 465,
                tls: crate::EmailTls::Tls,
                username: Some("fleet".into()),
                password_env: Some("SMTP_PASSWORD".into()),
                from: "Fleet <fleet@example.com>".into(),
                to: vec!["a@example.com".into(), "b@example.com".into()],
            })
        );
        assert_eq!(
            cfg.notify_retry,
            NotifyRetry {
                tries: 3,
                backoff_ms: 50
            }
        );
        let bot = cfg.telegram.unwrap();
        assert_eq!(bot.token_env, "FLEET_TELEGRAM_TOKEN");
        assert_eq!(bot.api_url, crate::DEFAULT_TELEGRAM_API);
        assert_eq!(bot.allowed_chats, [12345, -100123]);
        assert_eq!(bot.default_project.as_deref(), Some("shop"));
    }

    #[test]
    fn notification_defaults() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "server: { bind: \"0.0.0.0:80\" }\nnotifications:\n  - kind: email\n    host: h\n    from: f@x\n    to: t@x\n",
        )
        .unwrap();
        assert_eq!(cfg.link_base(), "http://0.0.0.0:80");
        assert_eq!(cfg.notify_retry, NotifyRetry::default());
        let crate::NotifyKind::Email(e) = &cfg.notifications[0].kind else {
            panic!("{:?}", cfg.notifications)
        };
        assert_eq!((e.port, e.tls), (587, crate::EmailTls::StartTls));
        assert_eq!(e.to, ["t@x"]);
        assert!(cfg.telegram.is_none());
        assert!(InstanceConfig::empty().notifications.is_empty());
    }

    fn errors(text: &str) -> Vec<String> {
        parse_instance(Path::new("fleet.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn has(all: &[String], prefix: &str, part: &str) -> bool {
        all.iter()
            .any(|e| e.starts_with(prefix) && e.contains(part))
    }

    #[test]
    fn notification_errors_are_located() {
        let all = errors(
            "notifications:\n  - kind: pager\n    url: x\n  - kind: webhook\n    url: https://h/x\n    on: [failed, exploded]\n  - kind: email\n    host: smtp\n    from: a@b\n  - kind: telegram\n    token_env: T\n    chat_id: twelve\n    colour: red\n",
        );
        assert!(
            has(
                &all,
                "fleet.yaml:2:11: `kind`: unknown notification kind \"pager\"",
                "webhook, slack, telegram, email"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:6:18: `on`: unknown event \"exploded\"",
                "awaiting_acceptance"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:7:5: an `email` notification needs `to`",
                "recipients"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:12:14: `chat_id`: expected a numeric Telegram chat id",
                "twelve"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:13:5: unknown key `colour` in a `telegram` notification",
                "chat_id"
            ),
            "{all:?}"
        );
        assert_eq!(all.len(), 5, "{all:?}");
    }

    #[test]
    fn secrets_are_named_not_written() {
        let token = "123456789:AAFakeTelegramTokenValue_xyz";
        let hook = "https://hooks.slack.com/services/T000/B000/SecretPart";
        let text = format!(
            "notifications:\n  - kind: slack\n    url: {hook}\n  - kind: telegram\n    token_env: \"{token}\"\n    chat_id: 1\n  - kind: webhook\n    on: []\ntelegram:\n  token_env: TOKEN\n  allowed_chats: []\nnotify_retry: {{ tries: 0 }}\nserver: {{ public_url: \"ftp://x\" }}\n"
        );
        let all = errors(&text);
        assert!(
            has(
                &all,
                "fleet.yaml:3:5: a Slack webhook URL is a secret",
                "url_env"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:5:16: `token_env` names the environment variable",
                "not a variable name"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:7:5: a `webhook` notification needs `url`",
                "url_env"
            ),
            "{all:?}"
        );
        assert!(
            has(&all, "fleet.yaml:8:9: `on` is empty", "failed"),
            "{all:?}"
        );
        assert!(
            has(&all, "fleet.yaml:11:18: `allowed_chats` is empty", "only"),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:12:24: `tries`: expected a number of tries from 1 to 20",
                "found 0"
            ),
            "{all:?}"
        );
        assert!(
            has(
                &all,
                "fleet.yaml:13:23: `public_url`: expected an http:// or https:// URL",
                ""
            ),
            "{all:?}"
        );
        assert!(
            all.iter()
                .all(|e| !e.contains("AAFake") && !e.contains("SecretPart")),
            "a secret was echoed: {all:?}"
        );
    }

    #[test]
    fn the_bot_needs_a_token_and_chats() {
        let all = errors("telegram:\n  default_project: shop\n");
        assert!(
            has(&all, "fleet.yaml:2:3: `telegram` needs `token_env`", ""),
            "{all:?}"
        );
        assert!(
            has(&all, "fleet.yaml:2:3: `telegram` needs `allowed_chats`", ""),
            "{all:?}"
        );
    }

    #[test]
    fn windows() {
        assert_eq!(
            Window::parse("00:00-08:00"),
            Some(Window { start: 0, end: 480 })
        );
        assert_eq!(
            Window::parse("22:30-06:15"),
            Some(Window {
                start: 1350,
                end: 375
            })
        );
        assert_eq!(Window::parse("09:00-09:00"), None);
        assert_eq!(Window::parse("25:00-01:00"), None);
        assert_eq!(Window::parse("9-10"), None);
    }
}
