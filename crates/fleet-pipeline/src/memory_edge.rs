//! The pipeline's edge to memory (issue 20): it writes each ended task's trace and each
//! epic's decision log under `.fleet/` and indexes them for search, keeps the project context's
//! record of the commit it describes (and says when it is stale), shows earlier work to the
//! agents of an epic's later cycles, and commits the exported task graph on a delivery branch
//! when the project opted in. Rendering is `fleet_memory`'s (pure); this file reads rows,
//! redacts, writes files and the memory database.
//!
//! Memory is an aid: failing to write a trace or a log never fails a stage. (The export a
//! project opted into is different: a delivery without it is not what was asked, so that
//! error is the stage's.)

use crate::{EpicData, Pipeline, PipelineError, Result};
use fleet_engine::files::write_whole_making_dirs;
use fleet_memory::context::{self, ContextStamp, Refresh};
use fleet_memory::{MemoryDb, decisions, trace};
use fleet_store::{EpicRow, ProjectRow, RunRow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Events read per run for a trace or a decision log.
const MAX_EVENTS: usize = 200_000;
/// Earlier tasks' traces shown to an agent, and the most characters the section takes.
const SHOWN_TRACES: usize = 10;
const MAX_HISTORY_CHARS: usize = 4000;

/// Opens the instance's memory as `fleet.yaml`'s `memory:` says, where it lives: the
/// instance's PostgreSQL store when it has one (shared by every replica and runner), else
/// `memory.db` beside the SQLite store. The server's memory tools and API open it here too.
pub fn open_memory(p: &Pipeline) -> fleet_memory::db::Result<MemoryDb> {
    MemoryDb::open_configured(&memory_location(p), p.redactor(), &p.instance.memory)
}

/// Where the instance's memory lives (see [`open_memory`]).
pub fn memory_location(p: &Pipeline) -> fleet_memory::Location {
    fleet_memory::Location::of_open_store(p.layout.root(), &*p.store)
}

fn memory(p: &Pipeline) -> Option<MemoryDb> {
    match open_memory(p) {
        Ok(db) => Some(db),
        Err(e) => {
            eprintln!("fleet: memory: {e}");
            None
        }
    }
}

/// The prompt or command of each task of a stage run, from the runbook it ran (JSON: the
/// pipeline generates it).
fn asked(run: &RunRow) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rb) = serde_json::from_str::<serde_json::Value>(&run.runbook_source) else {
        return out;
    };
    for t in rb["tasks"].as_array().into_iter().flatten() {
        let id = t["id"].as_str().unwrap_or_default().to_string();
        let text = t["prompt"]
            .as_str()
            .or_else(|| t["command"].as_str())
            .unwrap_or_default()
            .to_string();
        out.insert(id, text);
    }
    out
}

/// Writes the trace of every ended task of `run` (`.fleet/traces/<run>/<task>.md`) and
/// indexes it for search (kind `trace`, key `<run>/<task>`). Idempotent. The engine already
/// wrote the trace of each task that landed or gave up, for its dependents in the run
/// (`fleet_engine`'s `task_traces.rs`), and waited for those writes before the run ended: this
/// write, from the same renderer over the complete rows, always comes last and overwrites.
pub(crate) fn traces_of_run(p: &Pipeline, run: &RunRow) {
    if let Err(e) = write_traces(p, run) {
        eprintln!("fleet: memory: traces of run {}: {e}", run.id);
    }
}

fn write_traces(p: &Pipeline, run: &RunRow) -> Result<()> {
    let tasks = p.store.tasks(&run.id)?;
    let attempts = p.store.attempts(&run.id)?;
    let events = p.store.events(Some(&run.id), 0, MAX_EVENTS)?;
    let asked = asked(run);
    let repo = fleet_git::Repo::open(Path::new(&run.repo)).ok();
    let redactor = p.redactor();
    let mut db = memory(p);
    for task in tasks.iter().filter(|t| trace::is_final(&t.state)) {
        let mine: Vec<_> = attempts
            .iter()
            .filter(|a| a.task_id == task.id)
            .cloned()
            .collect();
        let evs: Vec<_> = events
            .iter()
            .filter(|e| e.task.as_deref() == Some(task.id.as_str()))
            .cloned()
            .collect();
        let stat = repo.as_ref().and_then(|r| diff_stat(r, run, task));
        let t = trace::TaskTrace {
            run,
            task,
            asked: asked.get(&task.id).map(String::as_str).unwrap_or(""),
            attempts: &mine,
            events: &evs,
            diff_stat: stat.as_deref(),
        };
        let body = redactor.clean_string(trace::render(&t));
        let rel = trace::relative_path(&run.id, &task.id);
        write_whole_making_dirs(&p.layout.root().join(&rel), body.as_bytes())
            .map_err(|e| PipelineError::Other(e.to_string()))?;
        if let Some(db) = db.as_mut() {
            let title = format!("trace {} of {}: {}", task.id, run.name, trace::summary(&t));
            let dropped = db
                .put_document(
                    "trace",
                    &format!("{}/{}", run.id, task.id),
                    &title,
                    &body,
                    fleet_engine::now_ms(),
                )
                .map_err(|e| PipelineError::Other(e.to_string()))?;
            // Past the cap the oldest traces go, files with their index entries.
            for key in dropped {
                let _ = std::fs::remove_file(p.layout.root().join(format!("traces/{key}.md")));
            }
        }
    }
    Ok(())
}

/// `git diff --stat` of what the task landed (or committed, when it did not land).
fn diff_stat(repo: &fleet_git::Repo, run: &RunRow, task: &fleet_store::TaskRow) -> Option<String> {
    let (from, to) = match (&task.merge_sha, &task.commit_sha) {
        (Some(m), _) => (format!("{m}^1"), m.clone()),
        (None, Some(c)) => (run.base_sha.clone(), c.clone()),
        _ => return None,
    };
    let text = repo.diff(&from, &to, 0).ok()?;
    Some(
        text.split("\n…")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    )
}

/// Writes the epic's decision log (`.fleet/decisions/<epic>.md`) from its row and events and
/// its stage runs' swaps, and indexes it (kind `decision`, key the epic's id).
pub(crate) fn decision_log(p: &Pipeline, epic: &EpicRow) {
    if let Err(e) = write_decisions(p, epic) {
        eprintln!("fleet: memory: decision log of {}: {e}", epic.id);
    }
}

fn write_decisions(p: &Pipeline, epic: &EpicRow) -> Result<()> {
    let mut events = p.store.events(Some(&epic.id), 0, MAX_EVENTS)?;
    let mut seen = std::collections::BTreeSet::new();
    for run in epic.stages.iter().filter_map(|s| s.run_id.as_deref()) {
        if seen.insert(run) {
            events.extend(
                p.store
                    .events(Some(run), 0, MAX_EVENTS)?
                    .into_iter()
                    .filter(|e| e.kind == "attempt.swapped"),
            );
        }
    }
    let body = p.redactor().clean_string(decisions::render(epic, &events));
    let rel = decisions::relative_path(&epic.id);
    write_whole_making_dirs(&p.layout.root().join(&rel), body.as_bytes())
        .map_err(|e| PipelineError::Other(e.to_string()))?;
    if let Some(mut db) = memory(p) {
        let title = format!(
            "decision log of {} ({}): {}",
            epic.id,
            epic.project,
            epic.request.lines().next().unwrap_or_default()
        );
        let dropped = db
            .put_document("decision", &epic.id, &title, &body, fleet_engine::now_ms())
            .map_err(|e| PipelineError::Other(e.to_string()))?;
        for key in dropped {
            let _ = std::fs::remove_file(p.layout.root().join(decisions::relative_path(&key)));
        }
    }
    Ok(())
}

/// The first line of a trace that is not its heading: its one-line summary.
fn summary_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// What earlier work of this epic its next agents are shown, appended to the `context`
/// variable every role template uses: the decision log (from the second cycle on) and the
/// traces of tasks of earlier implementation runs (failed ones first), each as its path and a
/// one-line summary, under a cap. Empty when there is none.
pub(crate) fn history(p: &Pipeline, epic: &EpicRow, data: &EpicData) -> String {
    let root = p.layout.root();
    let mut lines = Vec::new();
    let log = root.join(decisions::relative_path(&epic.id));
    if epic.cycle >= 2 && log.is_file() {
        lines.push(format!(
            "- Decision log of this request (routing, plans, swaps, reviews, answers): `{}`",
            log.display()
        ));
    }
    let mut earlier: Vec<_> = data
        .tasks
        .iter()
        .filter(|t| t.state != "planned")
        .filter_map(|t| t.run_id.as_ref().map(|r| (t, r)))
        .collect();
    // Failed work first (what a fix is about), then the most recent.
    earlier.sort_by_key(|(t, _)| (t.state == "merged", std::cmp::Reverse(t.cycle)));
    for (t, run) in earlier.into_iter().take(SHOWN_TRACES) {
        let path: PathBuf = root.join(trace::relative_path(run, &t.id));
        if let Some(summary) = summary_of(&path) {
            lines.push(format!(
                "- Trace of task `{}` (cycle {}): `{}` — {summary}",
                t.id,
                t.cycle,
                path.display()
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n\n## Earlier work on this request\n\nFleet kept these records of earlier cycles and \
         tasks (read a file when its line matters to your task):\n\n",
    );
    for l in lines {
        if out.len() + l.len() + 1 > MAX_HISTORY_CHARS {
            out.push_str("- … (more in `fleet memory search`)\n");
            break;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn refresh_of(p: &Pipeline, project: &str) -> Refresh {
    let l = p.instance.project_limits(project);
    Refresh {
        commits: l.context_refresh_commits,
        days: l.context_refresh_days,
    }
}

/// Whether `project` has a context that still describes its repository at `base` (its
/// default branch's tip): not older than the project's refresh measures allow.
pub(crate) fn context_is_fresh(
    p: &Pipeline,
    project: &ProjectRow,
    repo: &fleet_git::Repo,
    base: &str,
) -> bool {
    if !p.context_file(&project.name).is_file() {
        return false;
    }
    let stamp: Option<ContextStamp> =
        std::fs::read_to_string(p.layout.root().join(context::stamp_path(&project.name)))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let since = match &stamp {
        Some(s) => repo.count_commits(&s.commit, base).unwrap_or(None),
        None => None,
    };
    !context::is_stale(
        stamp.as_ref(),
        since,
        fleet_engine::now_ms(),
        refresh_of(p, &project.name),
    )
}

/// Writes the researcher's context (redacted) with the record of the commit it describes,
/// and indexes it for search (kind `context`, key the project's name).
pub(crate) fn context_written(
    p: &Pipeline,
    project: &str,
    path: &Path,
    text: &str,
    commit: &str,
) -> Result<()> {
    let text = p.redactor().clean_string(text.to_string());
    write_whole_making_dirs(path, text.as_bytes())
        .map_err(|e| PipelineError::Other(e.to_string()))?;
    let now = fleet_engine::now_ms();
    let stamp = ContextStamp {
        commit: commit.to_string(),
        at: now,
    };
    let stamp_path = p.layout.root().join(context::stamp_path(project));
    write_whole_making_dirs(
        &stamp_path,
        serde_json::to_string(&stamp)
            .expect("stamps serialize")
            .as_bytes(),
    )
    .map_err(|e| PipelineError::Other(e.to_string()))?;
    if let Some(mut db) = memory(p) {
        let title = format!(
            "project context of {project} at {}",
            &commit[..commit.len().min(12)]
        );
        if let Err(e) = db.put_document("context", project, &title, &text, now) {
            eprintln!("fleet: memory: context of {project}: {e}");
        }
    }
    Ok(())
}

/// When the project opted in (`projects.NAME.memory_export`), commits `fleet memory export`'s
/// JSONL on the epic's branch at that path before it is delivered.
pub(crate) fn commit_export(p: &Pipeline, epic: &EpicRow, project: &ProjectRow) -> Result<()> {
    let Some(path) = p.instance.project_limits(&project.name).memory_export else {
        return Ok(());
    };
    let db = MemoryDb::open_at(&memory_location(p), p.redactor())
        .map_err(|e| PipelineError::Other(format!("memory export: {e}")))?;
    let lines = fleet_memory::graph::export(&*p.store, &db)
        .map_err(|e| PipelineError::Other(format!("memory export: {e}")))?;
    // Everything in the export already passed the redactor on its way into the store; once
    // more, since this goes into git.
    let text = p
        .redactor()
        .clean_string(fleet_memory::graph::to_jsonl(&lines));
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    repo.commit_file(
        &epic.branch,
        &path,
        text.as_bytes(),
        &format!("fleet: the task graph ({path}) as of {}", epic.id),
    )?;
    Ok(())
}
