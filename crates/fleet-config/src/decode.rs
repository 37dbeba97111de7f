//! From the YAML tree to a [`Runbook`], collecting every error at the place it was written.

use crate::duration::{DURATION_FORMS, parse_duration};
use crate::yaml::{self, Node, ScalarKind, Value};
use crate::{Action, ConfigError, Location, Prompt, Runbook, TaskSpec, Workspace};
use fleet_core::graph::{self, GraphError};
use fleet_core::{NodeSpec, TaskKind, validate_id};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const TOP_KEYS: &[&str] = &[
    "name",
    "repo",
    "base",
    "concurrency",
    "report",
    "defaults",
    "tasks",
];
pub(crate) const DEFAULTS_KEYS: &[&str] = &[
    "timeout",
    "retries",
    "retry_backoff",
    "workspace",
    "checks",
    "env",
    "pass_env",
    "max_attempts",
    "escalate_after",
    "budget_usd",
    "max_time",
];
pub(crate) const TASK_KEYS: &[&str] = &[
    "id",
    "kind",
    "parent",
    "depends_on",
    "command",
    "agent",
    "role",
    "prompt",
    "prompt_file",
    "checks",
    "timeout",
    "retries",
    "retry_backoff",
    "workspace",
    "env",
    "pass_env",
    "max_attempts",
    "escalate_after",
    "budget_usd",
    "max_time",
    "allowed_paths",
    "allowed_tools",
];

/// The ACP tool kinds a task's `allowed_tools` may name.
pub const TOOL_KINDS: &[&str] = &[
    "read", "edit", "delete", "move", "search", "execute", "think", "fetch", "other",
];

const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: usize = 1024;
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) fn decode(path: &Path, text: &str) -> Result<Runbook, Vec<ConfigError>> {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            let start = Location { line: 1, col: 1 };
            let message = "the runbook is empty; expected a mapping with `name` and `tasks`";
            return Err(vec![ConfigError::new(path, start, message)]);
        }
        Err(e) => return Err(vec![ConfigError::new(path, e.loc, e.message)]),
    };
    // `prompt_file` is relative to the runbook's directory; "" is the current one.
    let base_dir = path.parent().map(|dir| {
        if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }
        .to_path_buf()
    });
    let mut decoder = Decoder {
        file: path,
        base_dir,
        errors: Vec::new(),
    };
    let runbook = decoder.runbook(&root, text);
    let mut errors = decoder.errors;
    if errors.is_empty() {
        Ok(runbook)
    } else {
        errors.sort_by_key(ConfigError::location);
        Err(errors)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) at: Location,
}

/// A string-valued key that decides what a task does, with both positions.
#[derive(Debug, Clone)]
struct Given {
    key_at: Location,
    value: String,
    value_at: Location,
}

/// One entry of a mapping whose key is known and given once.
pub(crate) struct Field<'n> {
    pub(crate) key: &'n str,
    pub(crate) at: Location,
    pub(crate) value: &'n Node,
}

pub(crate) struct Fields<'n> {
    /// Where the mapping starts: its first key, or the mapping itself when empty.
    pub(crate) start: Location,
    pub(crate) list: Vec<Field<'n>>,
    /// How many unknown keys were reported and dropped.
    unknown: usize,
}

impl Fields<'_> {
    pub(crate) fn has(&self, key: &str) -> bool {
        self.list.iter().any(|f| f.key == key)
    }
}

/// Settings a task takes from `defaults` unless it gives its own.
#[derive(Debug, Default)]
struct Settings {
    max_attempts: Option<u32>,
    escalate_after: Option<u32>,
    budget_usd: Option<f64>,
    max_time: Option<Duration>,
    timeout: Option<Duration>,
    retries: Option<u32>,
    retry_backoff: Option<Duration>,
    workspace: Option<Workspace>,
    checks: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    pass_env: Vec<String>,
    allowed_paths: Vec<String>,
    allowed_tools: Vec<String>,
}

/// A task as decoded, before defaults and before knowing whether it is a container.
struct RawTask {
    /// `task "id"`, or `task #n` when it has no readable id.
    label: String,
    at: Location,
    id: Option<Spanned<String>>,
    /// The id and parent as written, valid or not, to tell containers from leaves.
    id_text: Option<String>,
    parent_text: Option<String>,
    kind: TaskKind,
    kind_invalid: bool,
    parent: Option<Spanned<String>>,
    depends_on: Vec<Spanned<String>>,
    command: Option<Given>,
    agent: Option<Given>,
    role: Option<Given>,
    prompt: Option<Given>,
    prompt_file: Option<Given>,
    /// One of the action keys above was given but could not be read, or the task has an
    /// unknown key (likely a misspelt action key): no more errors about its action.
    action_invalid: bool,
    settings: Settings,
}

impl RawTask {
    fn node_spec(&self) -> NodeSpec {
        NodeSpec {
            id: self
                .id
                .as_ref()
                .map(|id| id.value.clone())
                .unwrap_or_default(),
            kind: self.kind,
            parent: self.parent.as_ref().map(|p| p.value.clone()),
            depends_on: self.depends_on.iter().map(|d| d.value.clone()).collect(),
        }
    }

    fn into_spec(self, action: Action, defaults: &Settings) -> Option<TaskSpec> {
        let node = self.node_spec();
        let own = self.settings;
        let mut env = defaults.env.clone();
        env.extend(own.env);
        let mut pass_env = defaults.pass_env.clone();
        pass_env.extend(own.pass_env);
        pass_env.sort();
        pass_env.dedup();
        Some(TaskSpec {
            id: self.id?.value,
            kind: node.kind,
            parent: node.parent,
            depends_on: node.depends_on,
            action,
            checks: own
                .checks
                .or_else(|| defaults.checks.clone())
                .unwrap_or_default(),
            timeout: own.timeout.or(defaults.timeout),
            retries: own.retries.or(defaults.retries).unwrap_or(0),
            retry_backoff: own
                .retry_backoff
                .or(defaults.retry_backoff)
                .unwrap_or(DEFAULT_RETRY_BACKOFF),
            workspace: own.workspace.or(defaults.workspace).unwrap_or_default(),
            env,
            pass_env,
            max_attempts: own.max_attempts.or(defaults.max_attempts),
            escalate_after: own.escalate_after.or(defaults.escalate_after),
            budget_usd: own.budget_usd.or(defaults.budget_usd),
            max_time: own.max_time.or(defaults.max_time),
            allowed_paths: own.allowed_paths,
            allowed_tools: own.allowed_tools,
            location: self.at,
        })
    }
}

pub(crate) struct Decoder<'p> {
    pub(crate) file: &'p Path,
    /// Where `prompt_file`s are looked for; `None` skips the check.
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) errors: Vec<ConfigError>,
}

impl Decoder<'_> {
    pub(crate) fn error(&mut self, at: Location, message: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, at, message));
    }

    fn runbook(&mut self, root: &Node, text: &str) -> Runbook {
        let mut runbook = Runbook {
            path: self.file.to_path_buf(),
            source: text.to_string(),
            name: String::new(),
            repo: None,
            base: None,
            concurrency: DEFAULT_CONCURRENCY,
            report: None,
            tasks: Vec::new(),
        };
        let expected = "a mapping with `name` and `tasks`";
        let Some(top) = self.fields(root, TOP_KEYS, "at the top level", expected) else {
            return runbook;
        };
        let mut defaults = Settings::default();
        let mut tasks = None;
        for Field { key, value, .. } in &top.list {
            match *key {
                "name" => {
                    if let Some(name) = self.id(value, "name", "runbook name") {
                        runbook.name = name.value;
                    }
                }
                "repo" => runbook.repo = self.text(value, "repo").map(|s| s.value.into()),
                "base" => runbook.base = self.text(value, "base").map(|s| s.value),
                "concurrency" => {
                    if let Some(n) = self.concurrency(value) {
                        runbook.concurrency = n;
                    }
                }
                "report" => runbook.report = self.report(value),
                "defaults" => defaults = self.defaults(value),
                "tasks" => tasks = Some(*value),
                _ => unreachable!("fields() keeps known keys only"),
            }
        }
        if !top.has("name") {
            self.error(
                top.start,
                "missing required key `name` (the runbook's name, like `add-auth`)",
            );
        }
        match tasks {
            Some(tasks) => runbook.tasks = self.tasks(tasks, &defaults),
            None => self.error(
                top.start,
                "missing required key `tasks` (the list of tasks to run)",
            ),
        }
        runbook
    }

    fn defaults(&mut self, node: &Node) -> Settings {
        let mut settings = Settings::default();
        let expected = "a mapping of task settings";
        if let Some(fields) = self.fields(node, DEFAULTS_KEYS, "in `defaults`", expected) {
            for field in &fields.list {
                let handled = self.setting(&mut settings, field);
                debug_assert!(handled, "every defaults key is a setting");
            }
        }
        settings
    }

    /// Decodes `field` into `settings` if it is one of the keys `defaults` can hold.
    fn setting(&mut self, settings: &mut Settings, field: &Field<'_>) -> bool {
        let value = field.value;
        match field.key {
            "timeout" => settings.timeout = self.timeout(value),
            "retries" => settings.retries = self.retries(value),
            "retry_backoff" => settings.retry_backoff = self.duration(value, "retry_backoff"),
            "max_attempts" => settings.max_attempts = self.positive(value, "max_attempts"),
            "escalate_after" => settings.escalate_after = self.positive(value, "escalate_after"),
            "budget_usd" => settings.budget_usd = self.money(value, "budget_usd"),
            "max_time" => settings.max_time = self.timeout_named(value, "max_time"),
            "workspace" => settings.workspace = self.workspace(value),
            "checks" => settings.checks = self.checks(value),
            "env" => settings.env = self.env(value),
            "pass_env" => settings.pass_env = self.env_names(value),
            "allowed_paths" => {
                settings.allowed_paths = crate::policies::patterns(self, value, "allowed_paths");
                if let Err(e) = fleet_core::policy::ProtectedPaths::new("", &settings.allowed_paths)
                {
                    self.error(value.loc, format!("`allowed_paths`: {e}"));
                }
            }
            "allowed_tools" => {
                let tools = crate::policies::patterns(self, value, "allowed_tools");
                for t in &tools {
                    if !TOOL_KINDS.contains(&t.as_str()) {
                        self.error(
                            value.loc,
                            format!(
                                "`allowed_tools`: unknown tool kind {t:?}; expected some of: {}",
                                TOOL_KINDS.join(", ")
                            ),
                        );
                    }
                }
                settings.allowed_tools = tools;
            }
            _ => return false,
        }
        true
    }

    fn tasks(&mut self, node: &Node, defaults: &Settings) -> Vec<TaskSpec> {
        let Value::Seq(items) = &node.value else {
            let found = node.describe();
            self.error(
                node.loc,
                format!("`tasks`: expected a list of tasks, found {found}"),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.loc, "`tasks` is empty; expected at least one task");
            return Vec::new();
        }
        let mut raw: Vec<RawTask> = Vec::with_capacity(items.len());
        raw.extend(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.task(item, i)),
        );
        let broken_parent = self.check_graph(&raw);

        // A task named as another's `parent` is a container. When that `parent` is in error,
        // whether the task is a container is unknown, and so is what it should run.
        let mut first_child: HashMap<&str, &str> = HashMap::new();
        let mut maybe_container: HashSet<&str> = HashSet::new();
        for (i, task) in raw.iter().enumerate() {
            let Some(parent) = &task.parent_text else {
                continue;
            };
            if task.parent.is_some() && !broken_parent.contains(&i) {
                first_child.entry(parent).or_insert(&task.label);
            } else {
                maybe_container.insert(parent);
            }
        }
        let actions: Vec<Option<Action>> = raw
            .iter()
            .map(|task| {
                let id = task.id_text.as_deref();
                match id.and_then(|id| first_child.get(id)) {
                    Some(child) => self.container_action(task, child),
                    None if id.is_some_and(|id| maybe_container.contains(id)) => None,
                    None => self.leaf_action(task),
                }
            })
            .collect();
        let specs: Vec<TaskSpec> = raw
            .into_iter()
            .zip(actions)
            .filter_map(|(task, action)| task.into_spec(action?, defaults))
            .collect();
        debug_assert!(
            specs.len() == items.len() || !self.errors.is_empty(),
            "a task is only dropped with an error"
        );
        specs
    }

    fn task(&mut self, node: &Node, index: usize) -> Option<RawTask> {
        let id_text = node
            .get("id")
            .and_then(Node::scalar_text)
            .map(str::to_string);
        let label = match &id_text {
            Some(id) => format!("task {id:?}"),
            None => format!("task #{}", index + 1),
        };
        let context = format!("in {label}");
        let expected = "a mapping (a task with an `id`)";
        let fields = self.fields(node, TASK_KEYS, &context, expected)?;
        let parent_text = node
            .get("parent")
            .and_then(Node::scalar_text)
            .map(str::to_string);
        let mut task = RawTask {
            label,
            at: fields.start,
            id: None,
            id_text,
            parent_text,
            kind: TaskKind::Atomic,
            kind_invalid: false,
            parent: None,
            depends_on: Vec::new(),
            command: None,
            agent: None,
            role: None,
            prompt: None,
            prompt_file: None,
            action_invalid: fields.unknown > 0,
            settings: Settings::default(),
        };
        for field in &fields.list {
            let value = field.value;
            match field.key {
                "id" => task.id = self.id(value, "id", "task id"),
                "kind" => match self.kind(value) {
                    Some(kind) => task.kind = kind,
                    None => task.kind_invalid = true,
                },
                "parent" => task.parent = self.id(value, "parent", "parent id"),
                "depends_on" => task.depends_on = self.depends_on(value),
                key @ ("command" | "agent" | "role" | "prompt" | "prompt_file") => {
                    let given = self.text(value, key).map(|s| Given {
                        key_at: field.at,
                        value: s.value,
                        value_at: s.at,
                    });
                    task.action_invalid |= given.is_none();
                    *match key {
                        "command" => &mut task.command,
                        "agent" => &mut task.agent,
                        "role" => &mut task.role,
                        "prompt" => &mut task.prompt,
                        _ => &mut task.prompt_file,
                    } = given;
                }
                _ => {
                    let handled = self.setting(&mut task.settings, field);
                    debug_assert!(handled, "every other task key is a setting");
                }
            }
        }
        if !fields.has("id") {
            self.error(
                task.at,
                format!("missing required key `id` in {}", task.label),
            );
        }
        Some(task)
    }

    /// A container runs nothing itself; `child` is one of its children (its label).
    /// `None` when the task's action keys are in error (reported here or while decoding).
    fn container_action(&mut self, task: &RawTask, child: &str) -> Option<Action> {
        if task.action_invalid {
            return None;
        }
        let given = [
            ("command", &task.command),
            ("agent", &task.agent),
            ("role", &task.role),
            ("prompt", &task.prompt),
            ("prompt_file", &task.prompt_file),
        ];
        let mut ok = true;
        for (key, given) in given {
            if let Some(given) = given {
                self.error(
                    given.key_at,
                    format!(
                        "{} is a container ({child} names it as its `parent`), so it cannot have \
                         `{key}`; move the work into a child task",
                        task.label
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(Action::Group)
    }

    /// What a leaf task does: a command or an agent with a prompt.
    /// `None` when the task's action keys are in error (reported here or while decoding).
    fn leaf_action(&mut self, task: &RawTask) -> Option<Action> {
        if task.action_invalid {
            return None;
        }
        let label = &task.label;
        let prompts = [("prompt", &task.prompt), ("prompt_file", &task.prompt_file)];
        let runner = task.agent.as_ref().or(task.role.as_ref());
        match (&task.command, runner) {
            (Some(_), Some(_)) => {
                for (key, given) in [("agent", &task.agent), ("role", &task.role)] {
                    if let Some(given) = given {
                        self.error(
                            given.key_at,
                            format!(
                                "{label} has both `command` and `{key}`; expected either a \
                                 `command` or an agent (`agent`/`role` with a prompt)"
                            ),
                        );
                    }
                }
                None
            }
            (Some(command), None) => {
                let mut ok = true;
                for (key, given) in prompts {
                    if let Some(given) = given {
                        self.error(
                            given.key_at,
                            format!(
                                "`{key}` is for agent tasks, but {label} runs a `command`; \
                                 remove it, or use `agent` or `role` instead of `command`"
                            ),
                        );
                        ok = false;
                    }
                }
                ok.then(|| Action::Command(command.value.clone()))
            }
            (None, Some(runner)) => {
                let prompt = match (&task.prompt, &task.prompt_file) {
                    (Some(prompt), None) => Prompt::Inline(prompt.value.clone()),
                    (None, Some(file)) => {
                        self.check_prompt_file(file)?;
                        Prompt::File(PathBuf::from(&file.value))
                    }
                    (Some(_), Some(file)) => {
                        let message = format!(
                            "{label} has both `prompt` and `prompt_file`; expected one of them"
                        );
                        self.error(file.key_at, message);
                        return None;
                    }
                    (None, None) => {
                        let message = format!("agent {label} needs a `prompt` or a `prompt_file`");
                        self.error(runner.key_at, message);
                        return None;
                    }
                };
                Some(Action::Agent {
                    agent: task.agent.as_ref().map(|g| g.value.clone()),
                    role: task.role.as_ref().map(|g| g.value.clone()),
                    prompt,
                })
            }
            (None, None) => {
                let mut any = false;
                for (key, given) in prompts {
                    if let Some(given) = given {
                        let message = format!(
                            "`{key}` needs `agent` or `role` in {label}, to say who runs the prompt"
                        );
                        self.error(given.key_at, message);
                        any = true;
                    }
                }
                if !any {
                    let message = format!(
                        "{label} has nothing to run; expected `command`, or `agent`/`role` with \
                         `prompt` or `prompt_file` (or make it the `parent` of other tasks)"
                    );
                    self.error(task.at, message);
                }
                None
            }
        }
    }

    /// `report:`, refused at once if the summary could not be written there at the end.
    fn report(&mut self, node: &Node) -> Option<PathBuf> {
        let report = self.text(node, "report")?;
        if let Some(dir) = &self.base_dir
            && let Some(problem) = crate::output::report_problem(&dir.join(&report.value))
        {
            let message = format!("`report: {}`: {problem}", report.value);
            self.error(report.at, message);
            return None;
        }
        Some(report.value.into())
    }

    /// `None` (and an error) if the prompt file is missing.
    fn check_prompt_file(&mut self, file: &Given) -> Option<()> {
        let Some(dir) = &self.base_dir else {
            return Some(());
        };
        let full = dir.join(&file.value);
        let problem = match std::fs::metadata(&full) {
            Ok(meta) if meta.is_file() => return Some(()),
            Ok(_) => "is not a file".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
            Err(e) => format!("cannot be read ({e})"),
        };
        let message = format!(
            "prompt file {:?} {problem} (looked for {})",
            file.value,
            full.display()
        );
        self.error(file.value_at, message);
        None
    }

    /// Runs the graph rules of `fleet_core` and reports each error where it was written.
    /// Returns the tasks (indices in `raw`) whose `parent` is in error.
    fn check_graph(&mut self, raw: &[RawTask]) -> HashSet<usize> {
        let mut broken_parent = HashSet::new();
        let indices: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].id.is_some()).collect();
        let specs: Vec<NodeSpec> = indices.iter().map(|&i| raw[i].node_spec()).collect();
        let Err(errors) = graph::validate(&specs) else {
            return broken_parent;
        };
        let nodes: Vec<&RawTask> = indices.iter().map(|&i| &raw[i]).collect();
        for error in errors {
            let task = nodes[error.node()];
            if let GraphError::UnknownParent { node, .. } | GraphError::BadParentKind { node, .. } =
                error
            {
                broken_parent.insert(indices[node]);
            }
            let id_at = |t: &RawTask| t.id.as_ref().map_or(t.at, |id| id.at);
            let parent_at = task.parent.as_ref().map_or(task.at, |p| p.at);
            let (at, message) = match &error {
                GraphError::UnknownDependency { position, .. }
                | GraphError::SelfDependency { position, .. }
                | GraphError::DuplicateDependency { position, .. }
                | GraphError::DependsOnAncestor { position, .. } => {
                    (task.depends_on[*position].at, error.describe(&specs))
                }
                GraphError::UnknownParent { .. } => (parent_at, error.describe(&specs)),
                GraphError::BadParentKind { parent, .. } => {
                    // A kind that could not be read was reported already; its stand-in proves nothing.
                    if task.kind_invalid || nodes[*parent].kind_invalid {
                        continue;
                    }
                    (parent_at, error.describe(&specs))
                }
                GraphError::DuplicateId { first, id, .. } => (
                    id_at(task),
                    format!(
                        "duplicate task id {id:?}; it is first used at {}",
                        id_at(nodes[*first])
                    ),
                ),
                GraphError::InvalidId { .. } => (id_at(task), error.describe(&specs)),
                GraphError::Cycle { .. } => (task.at, error.describe(&specs)),
            };
            self.error(at, message);
        }
        broken_parent
    }

    /// The entries of a mapping, each key once and a scalar; reports anything else.
    pub(crate) fn entries<'n>(
        &mut self,
        node: &'n Node,
        context: &str,
        expected: &str,
    ) -> Option<Fields<'n>> {
        let Value::Map(pairs) = &node.value else {
            self.error(
                node.loc,
                format!("expected {expected}, found {}", node.describe()),
            );
            return None;
        };
        let mut list: Vec<Field<'n>> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let Some(name) = key.scalar_text() else {
                let found = key.describe();
                self.error(
                    key.loc,
                    format!("expected a key name {context}, found {found}"),
                );
                continue;
            };
            if let Some(first) = list.iter().find(|f| f.key == name) {
                let message = format!(
                    "duplicate key `{name}` {context}; it is first given at {}",
                    first.at
                );
                self.error(key.loc, message);
                continue;
            }
            list.push(Field {
                key: name,
                at: key.loc,
                value,
            });
        }
        let start = pairs.first().map_or(node.loc, |(key, _)| key.loc);
        Some(Fields {
            start,
            list,
            unknown: 0,
        })
    }

    /// Like [`Self::entries`], keeping only the `known` keys and reporting the others.
    pub(crate) fn fields<'n>(
        &mut self,
        node: &'n Node,
        known: &[&str],
        context: &str,
        expected: &str,
    ) -> Option<Fields<'n>> {
        let mut fields = self.entries(node, context, expected)?;
        let mut unknown = Vec::new();
        fields.list.retain(|f| {
            let is_known = known.contains(&f.key);
            if !is_known {
                unknown.push((f.key, f.at));
            }
            is_known
        });
        fields.unknown = unknown.len();
        for (key, at) in unknown {
            let mut message = format!(
                "unknown key `{key}` {context}; expected one of: {}",
                known.join(", ")
            );
            if let Some(close) = closest(key, known) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            self.error(at, message);
        }
        Some(fields)
    }

    /// A non-empty scalar, as written (numbers and booleans as their text).
    pub(crate) fn text(&mut self, node: &Node, key: &str) -> Option<Spanned<String>> {
        let Some(text) = node.scalar_text() else {
            self.error(
                node.loc,
                format!("`{key}`: expected a string, found {}", node.describe()),
            );
            return None;
        };
        if text.trim().is_empty() {
            self.error(node.loc, format!("`{key}` is empty; expected a string"));
            return None;
        }
        Some(Spanned {
            value: text.to_string(),
            at: node.loc,
        })
    }

    /// An id checked with [`validate_id`]; `what` names it in the error.
    pub(crate) fn id(&mut self, node: &Node, key: &str, what: &str) -> Option<Spanned<String>> {
        let Some(id) = node.scalar_text() else {
            let found = node.describe();
            self.error(
                node.loc,
                format!("`{key}`: expected a {what}, found {found}"),
            );
            return None;
        };
        if let Err(e) = validate_id(id) {
            self.error(node.loc, format!("invalid {what} {id:?}: {e}"));
            return None;
        }
        Some(Spanned {
            value: id.to_string(),
            at: node.loc,
        })
    }

    pub(crate) fn integer(&mut self, node: &Node, key: &str, expected: &str) -> Option<i64> {
        match node.value {
            Value::Scalar {
                kind: ScalarKind::Int(n),
                ..
            } => Some(n),
            _ => {
                let found = node.describe();
                self.error(
                    node.loc,
                    format!("`{key}`: expected {expected}, found {found}"),
                );
                None
            }
        }
    }

    fn concurrency(&mut self, node: &Node) -> Option<usize> {
        let expected = format!("a positive integer (1 to {MAX_CONCURRENCY})");
        let n = self.integer(node, "concurrency", &expected)?;
        match usize::try_from(n) {
            Ok(n @ 1..=MAX_CONCURRENCY) => Some(n),
            _ => {
                self.error(
                    node.loc,
                    format!("`concurrency`: expected {expected}, found {n}"),
                );
                None
            }
        }
    }

    fn retries(&mut self, node: &Node) -> Option<u32> {
        let expected = "a non-negative integer (0 or more)";
        let n = self.integer(node, "retries", expected)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) if n < 0 => {
                self.error(
                    node.loc,
                    format!("`retries`: expected {expected}, found {n}"),
                );
                None
            }
            Err(_) => {
                self.error(
                    node.loc,
                    format!("`retries`: at most {} are allowed, found {n}", u32::MAX),
                );
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let parsed = match &node.value {
            Value::Scalar {
                kind: ScalarKind::Int(n),
                ..
            } => u64::try_from(*n).ok().map(Duration::from_secs),
            Value::Scalar {
                kind: ScalarKind::Str,
                text,
            } => parse_duration(text).ok(),
            _ => None,
        };
        if parsed.is_none() {
            let found = node.describe();
            self.error(
                node.loc,
                format!("`{key}`: {DURATION_FORMS}, found {found}"),
            );
        }
        parsed
    }

    fn positive(&mut self, node: &Node, key: &str) -> Option<u32> {
        let n = self.integer(node, key, "a positive integer")?;
        match u32::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.error(
                    node.loc,
                    format!("`{key}`: expected a positive integer, found {n}"),
                );
                None
            }
        }
    }

    pub(crate) fn money(&mut self, node: &Node, key: &str) -> Option<f64> {
        let value = match &node.value {
            Value::Scalar {
                kind: ScalarKind::Int(n),
                ..
            } if *n >= 0 => Some(*n as f64),
            Value::Scalar {
                kind: ScalarKind::Float,
                text,
            } => text
                .parse::<f64>()
                .ok()
                .filter(|x| *x >= 0.0 && x.is_finite()),
            _ => None,
        };
        if value.is_none() {
            let found = node.describe();
            self.error(
                node.loc,
                format!("`{key}`: expected an amount in USD like 2.5, found {found}"),
            );
        }
        value
    }

    fn timeout_named(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let d = self.duration(node, key)?;
        if d.is_zero() {
            self.error(node.loc, format!("`{key}` must be longer than zero"));
            return None;
        }
        Some(d)
    }

    pub(crate) fn timeout(&mut self, node: &Node) -> Option<Duration> {
        let timeout = self.duration(node, "timeout")?;
        if timeout.is_zero() {
            self.error(
                node.loc,
                "`timeout` must be longer than zero; leave it out for no timeout",
            );
            return None;
        }
        Some(timeout)
    }

    fn workspace(&mut self, node: &Node) -> Option<Workspace> {
        match node.scalar_text() {
            Some("worktree") => Some(Workspace::Worktree),
            Some("none") => Some(Workspace::None),
            _ => {
                let found = node.describe();
                self.error(
                    node.loc,
                    format!("`workspace`: expected `worktree` or `none`, found {found}"),
                );
                None
            }
        }
    }

    fn kind(&mut self, node: &Node) -> Option<TaskKind> {
        let kind = node.scalar_text().and_then(TaskKind::parse);
        if kind.is_none() {
            let found = node.describe();
            let message =
                format!("`kind`: expected one of epic, phase, task, atomic, found {found}");
            self.error(node.loc, message);
        }
        kind
    }

    fn depends_on(&mut self, node: &Node) -> Vec<Spanned<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|item| self.id(item, "depends_on", "task id"))
                .collect(),
            Value::Scalar { kind, .. } if *kind != ScalarKind::Null => {
                self.id(node, "depends_on", "task id").into_iter().collect()
            }
            _ => {
                let found = node.describe();
                self.error(
                    node.loc,
                    format!("`depends_on`: expected a list of task ids, found {found}"),
                );
                Vec::new()
            }
        }
    }

    pub(crate) fn checks(&mut self, node: &Node) -> Option<Vec<String>> {
        match &node.value {
            Value::Seq(items) => {
                let checks: Vec<String> = items
                    .iter()
                    .filter_map(|item| self.text(item, "checks").map(|s| s.value))
                    .collect();
                (checks.len() == items.len()).then_some(checks)
            }
            Value::Scalar { kind, .. } if *kind != ScalarKind::Null => {
                self.text(node, "checks").map(|s| vec![s.value])
            }
            _ => {
                let found = node.describe();
                let message = format!(
                    "`checks`: expected a shell command or a list of shell commands, found {found}"
                );
                self.error(node.loc, message);
                None
            }
        }
    }

    /// A list of environment variable names (`pass_env`).
    fn env_names(&mut self, node: &Node) -> Vec<String> {
        let expected = "a list of environment variable names";
        let Value::Seq(items) = &node.value else {
            let found = node.describe();
            self.error(
                node.loc,
                format!("`pass_env`: expected {expected}, found {found}"),
            );
            return Vec::new();
        };
        let mut names = Vec::new();
        for item in items {
            match item.scalar_text() {
                Some(name) if is_env_name(name) => names.push(name.to_string()),
                Some(name) => self.error(
                    item.loc,
                    format!(
                        "`pass_env`: invalid environment variable name {name:?}; expected letters, \
                         digits and `_`, not starting with a digit"
                    ),
                ),
                None => {
                    let found = item.describe();
                    self.error(
                        item.loc,
                        format!("`pass_env`: expected a name, found {found}"),
                    );
                }
            }
        }
        names
    }

    pub(crate) fn env(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let expected = "a mapping of environment variable names to values";
        let Some(fields) = self.entries(node, "in `env`", expected) else {
            return env;
        };
        for Field { key, at, value } in fields.list {
            if !is_env_name(key) {
                let message = format!(
                    "invalid environment variable name {key:?}; expected letters, digits and `_`, \
                     not starting with a digit"
                );
                self.error(at, message);
                continue;
            }
            match value.scalar_text() {
                Some(text) if let Some(what) = literal_secret(key, text) => {
                    // Never echo the value: it may be a real key.
                    self.error(
                        value.loc,
                        format!(
                            "`env.{key}` holds {what}; a secret never goes in a file (it would reach logs, \
                             events and git): keep it in Fleet's environment and name the variable in \
                             `pass_env:` (runbooks) or in its account's `secrets:` (agent profiles)"
                        ),
                    );
                }
                Some(text) => {
                    env.insert(key.to_string(), text.to_string());
                }
                None => {
                    let found = value.describe();
                    self.error(
                        value.loc,
                        format!("`env.{key}`: expected a string, found {found}"),
                    );
                }
            }
        }
        env
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The known key closest to `key`, if it is a likely typo (at most two edits away).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, _)| d <= 2 && d < key.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// What a literal `env:` entry would leak, if it looks like a secret: a value of the shape of
/// a known credential, or a long value under a name that says it is secret (`*_TOKEN`,
/// `*_API_KEY`, …). Short values under such names are test placeholders, not secrets.
fn literal_secret(name: &str, value: &str) -> Option<String> {
    if let Some(kind) = fleet_secrets::token_shape(value) {
        return Some(format!("what looks like a {kind}"));
    }
    (fleet_secrets::looks_like_secret_name(name)
        && value.trim().len() >= fleet_secrets::MIN_SECRET_LEN)
        .then(|| "a literal value under a secret's name".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("depends", "depends_on"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn closest_suggests_only_near_keys() {
        assert_eq!(closest("comand", TASK_KEYS), Some("command"));
        assert_eq!(closest("dependson", TASK_KEYS), Some("depends_on"));
        assert_eq!(closest("timout", DEFAULTS_KEYS), Some("timeout"));
        assert_eq!(closest("banana", TASK_KEYS), None);
        assert_eq!(closest("x", TASK_KEYS), None);
    }

    #[test]
    fn env_names() {
        for ok in ["PATH", "_x", "A1_B"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
}
