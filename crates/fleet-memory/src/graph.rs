//! The task graph as shareable JSONL: one object per line, stable ids, sorted, so a
//! committed export diffs small. `import` rebuilds an empty instance from it exactly.
//!
//! Lines, in this order, each sorted by id: `project`, `epic` (with its stages, plan,
//! acceptance criteria and reviews in `data`), `run` (with the runbook it ran), `task` (its
//! state, plus `depends_on` and `checks` read from the run's runbook), `attempt` (outcome,
//! who, tokens, cost) and `lesson`. Events are not exported: they are the log, not the graph.

use crate::db::MemoryDb;
use crate::lesson::Lesson;
use fleet_store::{AttemptRow, Batch, EpicRow, ProjectRow, RunRow, Store, TaskRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Store(#[from] fleet_store::StoreError),
    #[error(transparent)]
    Memory(#[from] crate::db::MemoryError),
    /// Bad input: the line and column (1-based; the column when known) and what is wrong
    /// with it. Shown as `LINE:COL: message`, so `FILE:` before it makes the usual position.
    #[error("{line}:{}{message}", column.map(|c| format!("{c}: ")).unwrap_or_else(|| " ".into()))]
    Line {
        line: usize,
        column: Option<usize>,
        message: String,
    },
    #[error("{0}")]
    NotEmpty(String),
}

/// A task with the edges and acceptance checks its runbook gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLine {
    #[serde(flatten)]
    pub row: TaskRow,
    pub depends_on: Vec<String>,
    pub checks: Vec<String>,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Project(ProjectRow),
    Epic(EpicRow),
    Run(RunRow),
    Task(TaskLine),
    Attempt(AttemptRow),
    Lesson(Lesson),
}

/// Every line of the instance's graph, in export order.
pub fn export(store: &dyn Store, memory: &MemoryDb) -> Result<Vec<Line>, GraphError> {
    let mut out: Vec<Line> = store.projects()?.into_iter().map(Line::Project).collect();
    let mut epics = store.epics()?;
    epics.sort_by(|a, b| a.id.cmp(&b.id));
    out.extend(epics.into_iter().map(Line::Epic));
    let mut runs = store.runs()?;
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    let mut tasks = Vec::new();
    let mut attempts = Vec::new();
    for run in &runs {
        let edges = runbook_edges(run);
        let mut ts = store.tasks(&run.id)?;
        ts.sort_by(|a, b| a.id.cmp(&b.id));
        for row in ts {
            let (depends_on, checks) = edges.get(&row.id).cloned().unwrap_or_default();
            tasks.push(Line::Task(TaskLine {
                row,
                depends_on,
                checks,
            }));
        }
        let mut at = store.attempts(&run.id)?;
        at.sort_by(|a, b| (&a.task_id, a.n).cmp(&(&b.task_id, b.n)));
        attempts.extend(at.into_iter().map(Line::Attempt));
    }
    out.extend(runs.into_iter().map(Line::Run));
    out.extend(tasks);
    out.extend(attempts);
    out.extend(memory.all_lessons()?.into_iter().map(Line::Lesson));
    Ok(out)
}

/// The export as text: one JSON object per line.
pub fn to_jsonl(lines: &[Line]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).expect("lines serialize"));
        s.push('\n');
    }
    s
}

/// Parses an export; a bad line is reported with its number and column, and an object that
/// appears twice (ids are unique in an export) with both lines.
pub fn parse_jsonl(text: &str) -> Result<Vec<Line>, GraphError> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, text) in text.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text).map_err(|e| GraphError::Line {
            line: i + 1,
            column: (e.column() > 0).then_some(e.column()),
            message: without_position(&e),
        })?;
        if let Some(first) = seen.insert(line.key(), i + 1) {
            return Err(GraphError::Line {
                line: i + 1,
                column: None,
                message: format!("{} is already on line {first}", line.key()),
            });
        }
        out.push(line);
    }
    Ok(out)
}

/// serde_json's message without its own " at line L column C" (the caller says where).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&tail).unwrap_or(&text).to_string()
}

impl Line {
    /// What the line is, by its stable id: `lesson L3`, `task run-1/a`, `attempt run-1/a#2`.
    fn key(&self) -> String {
        match self {
            Line::Project(p) => format!("project {}", p.name),
            Line::Epic(e) => format!("epic {}", e.id),
            Line::Run(r) => format!("run {}", r.id),
            Line::Task(t) => format!("task {}/{}", t.row.run_id, t.row.id),
            Line::Attempt(a) => format!("attempt {}/{}#{}", a.run_id, a.task_id, a.n),
            Line::Lesson(l) => format!("lesson {}", l.id),
        }
    }
}

/// Rebuilds the graph into an instance that has no project, epic, run or lesson yet. A task
/// or attempt of a run the file does not hold is refused before anything is written.
pub fn import(store: &dyn Store, memory: &mut MemoryDb, lines: &[Line]) -> Result<(), GraphError> {
    if !store.projects()?.is_empty()
        || !store.epics()?.is_empty()
        || !store.runs()?.is_empty()
        || !memory.all_lessons()?.is_empty()
    {
        return Err(GraphError::NotEmpty(
            "import needs an empty instance (it has projects, tasks, runs or lessons already)"
                .into(),
        ));
    }
    let mut runs: BTreeMap<&str, (&RunRow, Vec<TaskRow>, Vec<AttemptRow>)> = BTreeMap::new();
    for l in lines {
        if let Line::Run(r) = l {
            runs.insert(&r.id, (r, Vec::new(), Vec::new()));
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let (run_id, missing) = match l {
            Line::Task(t) => (&t.row.run_id, "task"),
            Line::Attempt(a) => (&a.run_id, "attempt"),
            _ => continue,
        };
        let Some(entry) = runs.get_mut(run_id.as_str()) else {
            return Err(GraphError::Line {
                line: i + 1,
                column: None,
                message: format!("{missing} of run {run_id:?}, which the file does not hold"),
            });
        };
        match l {
            Line::Task(t) => entry.1.push(t.row.clone()),
            Line::Attempt(a) => entry.2.push(a.clone()),
            _ => unreachable!(),
        }
    }
    for l in lines {
        match l {
            Line::Project(p) => store.add_project(p)?,
            Line::Epic(e) => {
                store.create_epic(e, &[])?;
            }
            Line::Lesson(lesson) => memory.restore_lesson(lesson)?,
            _ => {}
        }
    }
    for (run, mut tasks, attempts) in runs.into_values() {
        tasks.sort_by_key(|t| t.idx);
        store.create_run(run, &tasks, &[])?;
        store.commit(&Batch {
            attempts,
            ..Batch::default()
        })?;
    }
    Ok(())
}

/// Each task's `depends_on` and `checks`, from the runbook the run ran (empty when it no
/// longer parses: the rows are still exported).
fn runbook_edges(run: &RunRow) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    match fleet_config::parse_runbook(Path::new(&run.runbook_path), &run.runbook_source) {
        Ok(rb) => rb
            .tasks
            .into_iter()
            .map(|t| (t.id, (t.depends_on, t.checks)))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}
