//! A task's trace inside the run it belongs to (issue 20): when a task lands or gives up, its
//! trace (`fleet_memory::trace`, redacted) is written to `.fleet/traces/<run>/<task>.md` on the
//! blocking pool — never on the coordinator's loop — and the prompt of a later task that
//! depends on it gets a short "Earlier work" section naming the file and a one-line summary.
//!
//! The path is the pipeline's (`memory_edge::traces_of_run`), which writes every ended task's
//! trace again when its stage run ends, from the same renderer over the complete rows. The run
//! waits for its own writes before it ends ([`Traces::settle`]), so the pipeline's write is
//! always the last one: it overwrites, consistently, and indexes the trace for search.
//!
//! A trace is an aid: failing to write one is a line on stderr, never a failed task.

use crate::plan::{TaskAction, TaskDef};
use fleet_core::NodeSpec;
use fleet_memory::trace;
use fleet_store::{AttemptRow, RunRow, Store, TaskRow};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Events read for one trace: the run's, filtered to the task.
const MAX_EVENTS: usize = 100_000;
/// Dependencies named in one prompt, and the most characters the section takes.
const SHOWN: usize = 8;
const MAX_SECTION_CHARS: usize = 2000;

/// The run's written (or being written) traces.
pub(crate) struct Traces {
    state_root: PathBuf,
    /// Task id -> (absolute path of its trace, one-line summary).
    done: HashMap<String, (PathBuf, String)>,
    /// The run's row, read once (its name and base do not change).
    run: Option<Arc<RunRow>>,
    writing: Vec<tokio::task::JoinHandle<()>>,
}

/// What the blocking writer needs.
pub(crate) struct Source<'a> {
    pub store: &'a Arc<dyn Store>,
    pub repo: &'a fleet_git::Repo,
    pub redactor: &'a fleet_secrets::Redactor,
    pub run_id: &'a str,
}

impl Traces {
    pub(crate) fn new(state_root: &Path) -> Traces {
        Traces {
            state_root: state_root.to_path_buf(),
            done: HashMap::new(),
            run: None,
            writing: Vec::new(),
        }
    }

    /// `row` (merged or failed for good) ended: remember its summary for its dependents and
    /// write its trace off the loop. The summary is the renderer's, over the rows at hand
    /// (the events are read by the writer only), so a dependent's prompt never waits on IO.
    pub(crate) fn ended(
        &mut self,
        src: Source,
        row: &TaskRow,
        task: &TaskDef,
        past: &[AttemptRow],
    ) {
        let asked = match &task.action {
            TaskAction::Agent(a) => a.prompt.clone(),
            TaskAction::Shell(c) => c.clone(),
            TaskAction::Group => return,
        };
        if self.run.is_none() {
            self.run = src.store.run(src.run_id).ok().flatten().map(Arc::new);
        }
        let Some(run) = self.run.clone() else {
            return;
        };
        let attempts: Vec<AttemptRow> = past.to_vec();
        let brief = trace::TaskTrace {
            run: &run,
            task: row,
            asked: &asked,
            attempts: &attempts,
            events: &[],
            diff_stat: None,
        };
        let summary = src.redactor.clean_string(trace::summary(&brief));
        let path = self
            .state_root
            .join(trace::relative_path(src.run_id, &row.id));
        self.done.insert(row.id.clone(), (path.clone(), summary));
        let (store, repo, redactor, row) = (
            src.store.clone(),
            src.repo.clone(),
            src.redactor.clone(),
            row.clone(),
        );
        self.writing.push(fleet_store::pg::spawn_blocking(move || {
            let events: Vec<_> = match store.events(Some(&run.id), 0, MAX_EVENTS) {
                Ok(e) => e
                    .into_iter()
                    .filter(|e| e.task.as_deref() == Some(row.id.as_str()))
                    .collect(),
                Err(e) => return eprintln!("fleet: trace of {}: {e}", row.id),
            };
            let stat = diff_stat(&repo, &run.base_sha, &row);
            let t = trace::TaskTrace {
                run: &run,
                task: &row,
                asked: &asked,
                attempts: &attempts,
                events: &events,
                diff_stat: stat.as_deref(),
            };
            let body = redactor.clean_string(trace::render(&t));
            if let Err(e) = crate::files::write_whole_making_dirs(&path, body.as_bytes()) {
                eprintln!("fleet: trace of {}: {e}", row.id);
            }
        }));
    }

    /// Waits for the traces being written (the run's end: nothing outlives it).
    pub(crate) async fn settle(&mut self) {
        for h in std::mem::take(&mut self.writing) {
            let _ = h.await;
        }
    }

    /// The prompt section naming the traces of `task`'s dependencies; empty when none has one.
    pub(crate) fn section(&self, nodes: &[NodeSpec], task: &str) -> String {
        let Some(node) = nodes.iter().find(|n| n.id == task) else {
            return String::new();
        };
        let found: Vec<&(PathBuf, String)> = node
            .depends_on
            .iter()
            .filter_map(|d| self.done.get(d))
            .collect();
        earlier_section(&found)
    }
}

/// `prompt` followed by `section` (when there is one).
pub(crate) fn with_section(prompt: &str, section: &str) -> String {
    if section.is_empty() {
        prompt.to_string()
    } else {
        format!("{}\n\n{section}", prompt.trim_end())
    }
}

/// The section itself: one line per trace, at most [`SHOWN`], cut at [`MAX_SECTION_CHARS`].
fn earlier_section(found: &[&(PathBuf, String)]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## Earlier work this task builds on\n\nTraces of the tasks this one depends on \
         (read one when its work matters to yours):\n",
    );
    for (path, summary) in found.iter().take(SHOWN) {
        let line = format!("- `{}`: {summary}\n", path.display());
        if out.len() + line.len() > MAX_SECTION_CHARS {
            out.push_str("- … (more left out)\n");
            break;
        }
        out.push_str(&line);
    }
    if found.len() > SHOWN {
        out.push_str(&format!("- … and {} more\n", found.len() - SHOWN));
    }
    out
}

/// `git diff --stat` of what the task landed (or committed, when it did not land).
fn diff_stat(repo: &fleet_git::Repo, base: &str, task: &TaskRow) -> Option<String> {
    let (from, to) = match (&task.merge_sha, &task.commit_sha) {
        (Some(m), _) => (format!("{m}^1"), m.clone()),
        (None, Some(c)) => (base.to_string(), c.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_names_each_trace_and_stays_small() {
        assert_eq!(earlier_section(&[]), "");
        let many: Vec<(PathBuf, String)> = (0..20)
            .map(|i| {
                (
                    PathBuf::from(format!("/s/traces/r/t{i}.md")),
                    "x".repeat(300),
                )
            })
            .collect();
        let refs: Vec<&(PathBuf, String)> = many.iter().collect();
        let s = earlier_section(&refs);
        assert!(s.starts_with("## Earlier work this task builds on"));
        assert!(s.contains("`/s/traces/r/t0.md`: xxx"));
        assert!(s.len() <= MAX_SECTION_CHARS + 64, "{}", s.len());
        assert!(!s.contains("t19.md"));
    }
}
