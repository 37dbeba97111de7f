//! The plan contract: the JSON a planner agent returns, the verdict a reviewer agent returns,
//! and their validation.
//!
//! Owns: the shapes of a plan (`summary`, `phases[].tasks[]` with role, description,
//! dependencies and acceptance criteria) and of a review (`verdict`, `summary`, `bugs[]`), and
//! every rule a plan must satisfy before anything is scheduled from it. [`validate_plan`] turns a
//! [`WorkPlan`] into a [`ValidPlan`]: atomic tasks in dependency order with phase dependencies
//! expanded. Every error names the place it was found as a JSON path
//! (`phases[1].tasks[0].depends_on[2]`) and says what was expected, so the errors can be sent
//! back to the planner verbatim.
//!
//! Must not know: JSON parsing (serde derives only; the caller picks the format), prompts,
//! agents, the store, or how the plan's tasks are then run. `docs/plan.schema.json` and
//! `docs/review.schema.json` describe the same shapes; `tests/work_plan.rs` keeps them in step.

use crate::graph::{self, GraphError, NodeSpec, TaskKind};
use crate::id::{IdError, validate_id};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A plan as the planner wrote it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkPlan {
    /// One paragraph: what the plan does and why it is cut this way.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub phases: Vec<PlanPhase>,
    /// The planner's answer to a rework cycle when nothing needs to change (a comment that
    /// asked a question, or asked for what is already there): why. Then `phases` is empty,
    /// no task runs, and the reason is posted on the pull request. Only in a rework cycle
    /// (the epic already has tasks): a first plan must plan something.
    #[serde(default)]
    pub no_change: Option<String>,
    /// The planner's questions when the request is too vague to plan (the seed: "the fleet's
    /// agents brief the person first"). Then there are no phases: the epic waits for a person,
    /// whose answers join the request, and planning runs again.
    #[serde(default)]
    pub questions: Vec<String>,
}

/// Most questions one clarification may ask: a person answers a few, not a questionnaire.
pub const MAX_QUESTIONS: usize = 10;

/// A group of tasks. Depending on a phase means depending on every task in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPhase {
    pub id: String,
    pub title: String,
    pub tasks: Vec<PlanTask>,
}

/// One unit of work for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTask {
    pub id: String,
    pub title: String,
    /// Which kind of agent plays it (`developer`, ...); must be one of [`PlanContext::known_roles`].
    pub role: String,
    /// What to do and which files are concerned.
    pub description: String,
    /// Ids of tasks or phases of this plan, or of tasks already in the epic.
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub acceptance: Acceptance,
}

/// How to tell the task is done: commands that must exit 0, and statements a reviewer checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub statements: Vec<String>,
}

/// A reviewer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub verdict: Verdict,
    pub summary: String,
    #[serde(default)]
    pub bugs: Vec<Bug>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
}

/// One problem a reviewer found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bug {
    pub title: String,
    pub details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What a plan is validated against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanContext {
    /// Roles the pool can play; a task naming another role is refused.
    pub known_roles: Vec<String>,
    /// Ids of tasks already in the epic from earlier cycles: new ids must not reuse them, but
    /// `depends_on` may name them.
    pub existing: Vec<String>,
    /// Most tasks one plan may hold.
    pub max_tasks: usize,
}

/// A plan that passed [`validate_plan`]. Only that function builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPlan {
    summary: String,
    no_change: Option<String>,
    questions: Vec<String>,
    phases: Vec<ValidPhase>,
    tasks: Vec<PlannedTask>,
}

impl ValidPlan {
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// Why nothing needs to change, when the planner said so (then there are no tasks).
    pub fn no_change(&self) -> Option<&str> {
        self.no_change.as_deref()
    }

    /// What the planner needs a person to answer before it can plan (then there are no
    /// tasks); trimmed, in the order written.
    pub fn questions(&self) -> &[String] {
        &self.questions
    }

    /// Phases in the order the planner wrote them.
    pub fn phases(&self) -> &[ValidPhase] {
        &self.phases
    }

    /// Atomic tasks in dependency order: every task comes after all of its dependencies that
    /// are in this plan. Among tasks free to go, the one written first comes first.
    pub fn tasks(&self) -> &[PlannedTask] {
        &self.tasks
    }

    pub fn into_tasks(self) -> Vec<PlannedTask> {
        self.tasks
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPhase {
    pub id: String,
    pub title: String,
}

/// One atomic task of a [`ValidPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    pub id: String,
    pub phase: String,
    pub role: String,
    pub title: String,
    pub description: String,
    /// Leaf dependencies: tasks of this plan (phases expanded to their tasks) in plan order,
    /// then ids of earlier tasks of the epic as written.
    pub depends_on: Vec<String>,
    pub commands: Vec<String>,
    pub statements: Vec<String>,
}

/// One thing wrong with a plan or a review, located by a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Where, e.g. `phases[1].tasks[0].depends_on[2]`.
    pub path: String,
    pub kind: PlanErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// A list that must hold at least one item is empty (`phases`, a phase's `tasks`).
    EmptyList {
        what: &'static str,
    },
    /// A text field is empty or only whitespace.
    EmptyText,
    InvalidId {
        id: String,
        error: IdError,
    },
    /// The id is already used in this plan; `first` is the path where.
    DuplicateId {
        id: String,
        first: String,
    },
    /// The id belongs to a task of the epic from an earlier cycle.
    ReusesExisting {
        id: String,
    },
    UnknownDependency {
        dep: String,
    },
    SelfDependency,
    DependsOnOwnPhase {
        phase: String,
    },
    DuplicateDependency {
        dep: String,
    },
    /// Task ids along a dependency cycle, closed (the first id repeated at the end).
    Cycle {
        path: Vec<String>,
    },
    /// Neither a command nor a statement.
    NoAcceptance,
    UnknownRole {
        role: String,
        known: Vec<String>,
    },
    TooManyTasks {
        count: usize,
        max: usize,
    },
    /// A command holding a NUL byte, which no shell can receive.
    NulInCommand,
    /// A reject verdict must come with at least one bug.
    RejectWithoutBugs,
    /// `no_change` together with phases: the plan must be one or the other.
    NoChangeWithPhases,
    /// `no_change` in the first plan of an epic, which has nothing delivered yet.
    NoChangeInFirstPlan,
    /// `questions` together with phases or `no_change`: a plan asks, or plans, not both.
    QuestionsWithPlan,
    TooManyQuestions {
        count: usize,
    },
    /// A graph error the checks above should already have caught; kept so that validation
    /// never panics.
    Graph {
        message: String,
    },
}

impl PlanError {
    fn new(path: impl Into<String>, kind: PlanErrorKind) -> PlanError {
        PlanError {
            path: path.into(),
            kind,
        }
    }

    /// What is wrong and what was expected, without the path.
    pub fn message(&self) -> String {
        use PlanErrorKind::*;
        match &self.kind {
            EmptyList { what } => format!("expected at least one {what}, found none"),
            EmptyText => "expected a non-empty text, found an empty or blank one".into(),
            InvalidId { id, error } => format!(
                "invalid id {id:?}: {error}; expected [a-z0-9][a-z0-9_-]*, at most {} characters",
                crate::id::MAX_ID_LEN
            ),
            DuplicateId { id, first } => {
                format!("duplicate id {id:?}: {first} already uses it; expected a unique id")
            }
            ReusesExisting { id } => format!(
                "id {id:?} is already a task of this epic from an earlier plan; expected a new id \
                 (depending on it is fine)"
            ),
            UnknownDependency { dep } => format!(
                "depends on {dep:?}, which is neither a task or phase of this plan nor an existing \
                 task; expected one of those ids"
            ),
            SelfDependency => "a task cannot depend on itself".into(),
            DependsOnOwnPhase { phase } => format!(
                "depends on {phase:?}, its own phase; a task cannot wait for the phase that \
                 contains it (depend on the sibling tasks instead)"
            ),
            DuplicateDependency { dep } => {
                format!("lists dependency {dep:?} twice; expected each dependency once")
            }
            Cycle { path } => format!(
                "dependency cycle: {}; expected the dependencies to form no cycle",
                path.join(" -> ")
            ),
            NoAcceptance => "no acceptance criteria; expected at least one command in \
                             acceptance.commands or one statement in acceptance.statements"
                .into(),
            UnknownRole { role, known } => format!(
                "unknown role {role:?}; expected one of: {}",
                if known.is_empty() {
                    "(no roles are configured)".to_string()
                } else {
                    known.join(", ")
                }
            ),
            TooManyTasks { count, max } => {
                format!("{count} tasks; expected at most {max} in one plan")
            }
            NulInCommand => "command contains a NUL byte; expected shell text".into(),
            NoChangeWithPhases => "no_change together with phases; expected either phases of \
                                   tasks or only no_change with the reason nothing needs to change"
                .into(),
            NoChangeInFirstPlan => "no_change in the first plan of a request; expected phases of \
                                    tasks (no_change is only an answer to a rework cycle)"
                .into(),
            QuestionsWithPlan => "questions together with phases or no_change; expected either \
                                  only questions (the request is too vague to plan) or a plan"
                .into(),
            TooManyQuestions { count } => format!(
                "{count} questions; expected at most {MAX_QUESTIONS}: ask only what the plan \
                 cannot do without"
            ),
            RejectWithoutBugs => {
                "verdict is reject but no bug is listed; expected at least one bug with a title"
                    .into()
            }
            Graph { message } => message.clone(),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

impl std::error::Error for PlanError {}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn task_path(p: usize, t: usize) -> String {
    format!("phases[{p}].tasks[{t}]")
}

/// Where an id of the plan was first defined.
#[derive(Clone, Copy)]
enum Def {
    Phase(usize),
    Task(usize, usize),
}

impl Def {
    fn path(self) -> String {
        match self {
            Def::Phase(p) => format!("phases[{p}]"),
            Def::Task(p, t) => task_path(p, t),
        }
    }
}

/// A plan answering "no change needed": a reason, no phases, and an epic with earlier tasks.
fn validate_no_change(
    plan: &WorkPlan,
    why: &str,
    ctx: &PlanContext,
) -> Result<ValidPlan, Vec<PlanError>> {
    let mut errors = Vec::new();
    if is_blank(why) {
        errors.push(PlanError::new("no_change", PlanErrorKind::EmptyText));
    }
    if !plan.phases.is_empty() {
        errors.push(PlanError::new("phases", PlanErrorKind::NoChangeWithPhases));
    }
    if ctx.existing.is_empty() {
        errors.push(PlanError::new(
            "no_change",
            PlanErrorKind::NoChangeInFirstPlan,
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let summary = if is_blank(&plan.summary) {
        format!("No change needed: {}", why.trim())
    } else {
        plan.summary.clone()
    };
    Ok(ValidPlan {
        summary,
        questions: Vec::new(),
        no_change: Some(why.trim().to_string()),
        phases: Vec::new(),
        tasks: Vec::new(),
    })
}

/// A plan asking the person questions: at least one, each non-blank, nothing planned.
fn validate_questions(plan: &WorkPlan) -> Result<ValidPlan, Vec<PlanError>> {
    let mut errors = Vec::new();
    if plan.questions.len() > MAX_QUESTIONS {
        errors.push(PlanError::new(
            "questions",
            PlanErrorKind::TooManyQuestions {
                count: plan.questions.len(),
            },
        ));
    }
    for (i, q) in plan.questions.iter().enumerate() {
        if is_blank(q) {
            errors.push(PlanError::new(
                format!("questions[{i}]"),
                PlanErrorKind::EmptyText,
            ));
        }
    }
    if !plan.phases.is_empty() || plan.no_change.is_some() {
        errors.push(PlanError::new(
            "questions",
            PlanErrorKind::QuestionsWithPlan,
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidPlan {
        summary: plan.summary.trim().to_string(),
        no_change: None,
        questions: plan
            .questions
            .iter()
            .map(|q| q.trim().to_string())
            .collect(),
        phases: Vec::new(),
        tasks: Vec::new(),
    })
}

/// The one question a blocked epic asks when its planner needs `questions` answered: every
/// question, numbered, and how to answer them (`epic` is the epic's id).
pub fn clarify_question(epic: &str, questions: &[String]) -> String {
    let mut text = String::from("The request is too vague to plan; the planner asks you:");
    for (i, q) in questions.iter().enumerate() {
        text.push_str(&format!("\n{}. {}", i + 1, q.trim()));
    }
    text.push_str(&format!(
        "\nAnswer them in one `fleet task answer {epic} \"...\"` (your answers join the request \
         and planning starts again), or `fleet task cancel {epic}`."
    ));
    text
}

/// Validates a plan and flattens it into atomic tasks in dependency order.
///
/// Every error found is returned, not just the first; a cycle is only looked for once ids and
/// dependencies are otherwise sound.
pub fn validate_plan(plan: &WorkPlan, ctx: &PlanContext) -> Result<ValidPlan, Vec<PlanError>> {
    use PlanErrorKind::*;
    let mut errors = Vec::new();
    // Errors in ids or dependencies make the graph meaningless; the rest do not.
    let mut graph_ok = true;

    if !plan.questions.is_empty() {
        return validate_questions(plan);
    }
    if let Some(why) = &plan.no_change {
        return validate_no_change(plan, why, ctx);
    }
    if is_blank(&plan.summary) {
        errors.push(PlanError::new("summary", EmptyText));
    }
    if plan.phases.is_empty() {
        errors.push(PlanError::new("phases", EmptyList { what: "phase" }));
        graph_ok = false;
    }
    let count: usize = plan.phases.iter().map(|p| p.tasks.len()).sum();
    if count > ctx.max_tasks {
        errors.push(PlanError::new(
            "phases",
            TooManyTasks {
                count,
                max: ctx.max_tasks,
            },
        ));
    }

    let existing: HashSet<&str> = ctx.existing.iter().map(String::as_str).collect();
    let mut defs: HashMap<&str, Def> = HashMap::new();
    for (p, phase) in plan.phases.iter().enumerate() {
        if is_blank(&phase.title) {
            errors.push(PlanError::new(format!("phases[{p}].title"), EmptyText));
        }
        if phase.tasks.is_empty() {
            errors.push(PlanError::new(
                format!("phases[{p}].tasks"),
                EmptyList { what: "task" },
            ));
            graph_ok = false;
        }
        let ids = std::iter::once((phase.id.as_str(), Def::Phase(p))).chain(
            (phase.tasks.iter().enumerate()).map(|(t, task)| (task.id.as_str(), Def::Task(p, t))),
        );
        for (id, def) in ids {
            let path = format!("{}.id", def.path());
            let kind = if let Err(error) = validate_id(id) {
                InvalidId {
                    id: id.to_string(),
                    error,
                }
            } else if existing.contains(id) {
                ReusesExisting { id: id.to_string() }
            } else if let Some(first) = defs.get(id) {
                DuplicateId {
                    id: id.to_string(),
                    first: first.path(),
                }
            } else {
                defs.insert(id, def);
                continue;
            };
            errors.push(PlanError::new(path, kind));
            graph_ok = false;
        }
    }

    for (p, phase) in plan.phases.iter().enumerate() {
        for (t, task) in phase.tasks.iter().enumerate() {
            let at = task_path(p, t);
            for (field, text) in [("title", &task.title), ("description", &task.description)] {
                if is_blank(text) {
                    errors.push(PlanError::new(format!("{at}.{field}"), EmptyText));
                }
            }
            if !ctx.known_roles.contains(&task.role) {
                errors.push(PlanError::new(
                    format!("{at}.role"),
                    UnknownRole {
                        role: task.role.clone(),
                        known: ctx.known_roles.clone(),
                    },
                ));
            }
            for (i, dep) in task.depends_on.iter().enumerate() {
                let path = format!("{at}.depends_on[{i}]");
                let kind = if task.depends_on[..i].contains(dep) {
                    Some(DuplicateDependency { dep: dep.clone() })
                } else if *dep == task.id {
                    Some(SelfDependency)
                } else if *dep == phase.id {
                    Some(DependsOnOwnPhase { phase: dep.clone() })
                } else if defs.contains_key(dep.as_str()) || existing.contains(dep.as_str()) {
                    None
                } else {
                    Some(UnknownDependency { dep: dep.clone() })
                };
                if let Some(kind) = kind {
                    errors.push(PlanError::new(path, kind));
                    graph_ok = false;
                }
            }
            let acceptance = &task.acceptance;
            if acceptance.commands.is_empty() && acceptance.statements.is_empty() {
                errors.push(PlanError::new(format!("{at}.acceptance"), NoAcceptance));
            }
            for (i, command) in acceptance.commands.iter().enumerate() {
                let path = format!("{at}.acceptance.commands[{i}]");
                if is_blank(command) {
                    errors.push(PlanError::new(path, EmptyText));
                } else if command.contains('\0') {
                    errors.push(PlanError::new(path, NulInCommand));
                }
            }
            for (i, statement) in acceptance.statements.iter().enumerate() {
                if is_blank(statement) {
                    errors.push(PlanError::new(
                        format!("{at}.acceptance.statements[{i}]"),
                        EmptyText,
                    ));
                }
            }
        }
    }

    if !graph_ok {
        return Err(errors);
    }
    match order(plan, &existing) {
        Ok(tasks) if errors.is_empty() => Ok(ValidPlan {
            summary: plan.summary.clone(),
            no_change: None,
            questions: Vec::new(),
            phases: plan
                .phases
                .iter()
                .map(|p| ValidPhase {
                    id: p.id.clone(),
                    title: p.title.clone(),
                })
                .collect(),
            tasks,
        }),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Builds the graph (phases as containers, tasks as leaves; dependencies on earlier tasks of
/// the epic left out, they are already there) and returns the tasks in its topological order.
/// Assumes ids and dependencies were checked.
fn order(plan: &WorkPlan, existing: &HashSet<&str>) -> Result<Vec<PlannedTask>, Vec<PlanError>> {
    let mut specs: Vec<NodeSpec> = plan
        .phases
        .iter()
        .map(|p| NodeSpec {
            id: p.id.clone(),
            kind: TaskKind::Phase,
            parent: None,
            depends_on: Vec::new(),
        })
        .collect();
    // specs index -> (phase, task) for tasks.
    let mut located: Vec<Option<(usize, usize)>> = vec![None; specs.len()];
    for (p, phase) in plan.phases.iter().enumerate() {
        for (t, task) in phase.tasks.iter().enumerate() {
            specs.push(NodeSpec {
                id: task.id.clone(),
                kind: TaskKind::Atomic,
                parent: Some(phase.id.clone()),
                depends_on: task
                    .depends_on
                    .iter()
                    .filter(|d| !existing.contains(d.as_str()))
                    .cloned()
                    .collect(),
            });
            located.push(Some((p, t)));
        }
    }
    let task_at = |node: usize| located[node].map(|(p, t)| &plan.phases[p].tasks[t]);

    let graph = graph::validate(&specs).map_err(|errs| {
        errs.iter()
            .map(|e| graph_error(e, &specs, &located, plan))
            .collect::<Vec<_>>()
    })?;

    Ok(graph
        .topo_order()
        .iter()
        .filter_map(|&node| {
            let (p, _) = located[node]?;
            let task = task_at(node)?;
            let mut depends_on: Vec<String> = graph
                .deps(node)
                .iter()
                .map(|&d| graph.id(d).to_string())
                .collect();
            depends_on.extend(
                task.depends_on
                    .iter()
                    .filter(|d| existing.contains(d.as_str()))
                    .cloned(),
            );
            Some(PlannedTask {
                id: task.id.clone(),
                phase: plan.phases[p].id.clone(),
                role: task.role.clone(),
                title: task.title.clone(),
                description: task.description.clone(),
                depends_on,
                commands: task.acceptance.commands.clone(),
                statements: task.acceptance.statements.clone(),
            })
        })
        .collect())
}

/// Maps a graph error back to the plan. A cycle is reported at the dependency entry of its
/// first task that leads to the next task on the cycle (naming it or its phase).
fn graph_error(
    error: &GraphError,
    specs: &[NodeSpec],
    located: &[Option<(usize, usize)>],
    plan: &WorkPlan,
) -> PlanError {
    let node_path = |node: usize| match located.get(node).copied().flatten() {
        Some((p, t)) => task_path(p, t),
        None => format!("phases[{node}]"),
    };
    match error {
        GraphError::Cycle { path } => {
            let names: Vec<String> = path.iter().map(|&i| specs[i].id.clone()).collect();
            let mut at = node_path(path[0]);
            if let (Some((p, t)), Some(&next)) = (located[path[0]], path.get(1)) {
                let next_phase = specs[next].parent.as_deref();
                let deps = &plan.phases[p].tasks[t].depends_on;
                if let Some(i) = deps
                    .iter()
                    .position(|d| *d == specs[next].id || Some(d.as_str()) == next_phase)
                {
                    at = format!("{at}.depends_on[{i}]");
                }
            }
            PlanError::new(at, PlanErrorKind::Cycle { path: names })
        }
        // Checked before the graph is built; kept total rather than panicking.
        other => PlanError::new(
            node_path(other.node()),
            PlanErrorKind::Graph {
                message: other.describe(specs),
            },
        ),
    }
}

/// Validates a reviewer's answer: a reject must list at least one bug, every bug needs a
/// title, and the summary must not be blank.
pub fn validate_review(review: &Review) -> Result<(), Vec<PlanError>> {
    let mut errors = Vec::new();
    if is_blank(&review.summary) {
        errors.push(PlanError::new("summary", PlanErrorKind::EmptyText));
    }
    if review.verdict == Verdict::Reject && review.bugs.is_empty() {
        errors.push(PlanError::new("bugs", PlanErrorKind::RejectWithoutBugs));
    }
    for (i, bug) in review.bugs.iter().enumerate() {
        if is_blank(&bug.title) {
            errors.push(PlanError::new(
                format!("bugs[{i}].title"),
                PlanErrorKind::EmptyText,
            ));
        }
        if bug.file.as_deref().is_some_and(is_blank) {
            errors.push(PlanError::new(
                format!("bugs[{i}].file"),
                PlanErrorKind::EmptyText,
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
