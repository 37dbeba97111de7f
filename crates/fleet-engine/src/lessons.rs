//! Memory in an attempt's life: the lessons put into its prompt (recorded with the attempt),
//! whether the attempt then passed (which weighs them, by `fleet_memory::rules`), and the
//! trouble a task went through, kept for the retrospective that runs after the run
//! (`retrospective.rs`).
//!
//! Memory never stops a run: a memory store that cannot be opened or written leaves the run
//! going without lessons, with a line in the task's log saying why. Where memory lives is
//! decided in one place, [`open_memory`]: it follows the store.

use crate::plan::{TaskAction, TaskDef};
use fleet_memory::{MemoryDb, Millis, Policy, Scope, TaskContext};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The clock memory's rules are handed (ms since the Unix epoch); tests inject their own.
pub type MemoryClock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// How a run uses memory (`fleet.yaml`'s `memory:`).
#[derive(Clone)]
pub struct MemorySettings {
    /// Off: no lessons injected, no injections recorded, no retrospectives.
    pub enabled: bool,
    pub policy: Policy,
    /// The name project-scoped lessons carry; the repository's directory name when `None`.
    pub project: Option<String>,
    pub bible: Option<String>,
    /// Retrospectives after the run (off for a retrospective's own run).
    pub retrospectives: bool,
    /// The words of a review, QA or person that rejected earlier work this run fixes: once
    /// the run passes, a retrospective learns from them and the run's change.
    pub rejection: Option<String>,
    pub clock: MemoryClock,
    /// `memory.embeddings`: injection ranks lessons by BM25 fused with them (a fleet built
    /// with the `embeddings` feature).
    pub embeddings: Option<fleet_config::EmbeddingsConfig>,
}

impl Default for MemorySettings {
    fn default() -> MemorySettings {
        MemorySettings::from_config(&fleet_config::MemoryConfig::default())
    }
}

impl MemorySettings {
    pub fn from_config(c: &fleet_config::MemoryConfig) -> MemorySettings {
        MemorySettings {
            enabled: c.enabled,
            policy: Policy::from_config(c),
            project: None,
            bible: None,
            retrospectives: c.enabled,
            rejection: None,
            clock: Arc::new(crate::now_ms),
            embeddings: c.embeddings.clone(),
        }
    }

    pub fn now(&self) -> Millis {
        (self.clock)()
    }

    /// The project name lessons of a run in `repo_root` are scoped to.
    pub fn project_of(&self, repo_root: &Path) -> String {
        self.project.clone().unwrap_or_else(|| {
            repo_root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "default".into())
        })
    }

    /// The scopes whose lessons apply to a run in `repo_root`.
    pub fn scopes(&self, repo_root: &Path) -> Vec<Scope> {
        let mut s = vec![Scope::Instance, Scope::Project(self.project_of(repo_root))];
        s.extend(self.bible.clone().map(Scope::Bible));
        s
    }
}

/// The failing output of all a given-up task's attempts handed over (the retrospective keeps
/// the last 6,000 characters of its evidence).
const RECURRING_EVIDENCE: usize = 5_600;

/// What a task went through that a retrospective may learn from.
#[derive(Debug, Clone)]
pub struct Trouble {
    pub task: String,
    /// The attempt that finally passed.
    pub attempt: u32,
    /// What happened, in one line (`failed its check, then passed`).
    pub what: String,
    /// The failing output (a check's tail) or the conflict note.
    pub evidence: String,
    /// The task's prompt.
    pub prompt: String,
    /// The commit of the passing attempt.
    pub commit: Option<String>,
}

/// The run's handle on the memory file.
pub(crate) struct Memory {
    db: Option<MemoryDb>,
    pub(crate) settings: MemorySettings,
    scopes: Vec<Scope>,
    /// Tasks that failed and then passed, or failed for good, in the order they ended.
    pub(crate) troubles: Vec<Trouble>,
    /// Each task's failed attempts so far: (attempt, outcome, failing output).
    failures: HashMap<String, Vec<(u32, String, String)>>,
    /// The run's task traces, shown to dependents (`task_traces.rs`).
    pub(crate) traces: crate::task_traces::Traces,
}

/// Where an instance's memory file lives, beside its SQLite store.
pub fn memory_file(state_root: &Path) -> std::path::PathBuf {
    state_root.join("memory.db")
}

/// Opens the memory of the instance whose state is in `state_root` and whose store is
/// `store`: the same PostgreSQL database when the store is one (every runner and replica
/// shares it), else `memory.db` beside the SQLite file. Every part of the engine that opens
/// memory does it here. An unreachable database is an error, never a fallback to a file.
pub fn open_memory(
    state_root: &Path,
    store: &dyn fleet_store::Store,
    settings: &MemorySettings,
    redactor: fleet_secrets::Redactor,
) -> Result<MemoryDb, fleet_memory::MemoryError> {
    let cfg = fleet_config::MemoryConfig {
        embeddings: settings.embeddings.clone(),
        ..fleet_config::MemoryConfig::default()
    };
    let at = fleet_memory::Location::of_open_store(state_root, store);
    MemoryDb::open_configured(&at, redactor, &cfg)
}

impl Memory {
    pub(crate) fn open(
        state_root: &Path,
        store: &dyn fleet_store::Store,
        repo_root: &Path,
        settings: MemorySettings,
        redactor: fleet_secrets::Redactor,
    ) -> Memory {
        let db = if settings.enabled {
            open_memory(state_root, store, &settings, redactor)
                .map_err(|e| eprintln!("fleet: memory is off for this run: {e}"))
                .ok()
        } else {
            None
        };
        Memory {
            db,
            scopes: settings.scopes(repo_root),
            settings,
            troubles: Vec::new(),
            failures: HashMap::new(),
            traces: crate::task_traces::Traces::new(state_root),
        }
    }

    /// The prompt with the lessons relevant to `task`'s attempt `n` appended, and their ids
    /// (recorded as injected into this attempt).
    pub(crate) fn inject(
        &mut self,
        run: &str,
        task: &TaskDef,
        n: u32,
        prompt: String,
    ) -> (String, Vec<String>) {
        let Some(db) = self.db.as_mut() else {
            return (prompt, Vec::new());
        };
        let TaskAction::Agent(a) = &task.action else {
            return (prompt, Vec::new());
        };
        let ctx = TaskContext {
            text: a.prompt.clone(),
            paths: Vec::new(),
            role: a.roles.first().cloned(),
            kind: None,
            scopes: self.scopes.clone(),
        };
        let now = self.settings.now();
        let lessons = match db.recall(&ctx, now, &self.settings.policy) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fleet: lessons not recalled: {e}");
                return (prompt, Vec::new());
            }
        };
        if lessons.is_empty() {
            return (prompt, Vec::new());
        }
        let ids: Vec<String> = lessons.iter().map(|l| l.id.clone()).collect();
        if let Err(e) = db.record_injection(&ids, run, &task.id, n, now) {
            eprintln!("fleet: injection of lessons not recorded: {e}");
        }
        let block = fleet_memory::inject::lessons_block(&lessons);
        (format!("{}\n\n---\n\n{block}", prompt.trim_end()), ids)
    }

    /// Attempt `n` of `task` ended with `outcome`: its lessons learn whether it passed, and a
    /// pass after a failure (`failure`: the last failing check or conflict) is kept for the
    /// retrospective. An interruption, or a vendor's or account's trouble (a rate limit, a
    /// spent quota, a refused login, an overloaded or failing upstream), is no verdict on the
    /// lessons and teaches nothing.
    pub(crate) fn attempt_ended(
        &mut self,
        run: &str,
        task: &TaskDef,
        n: u32,
        outcome: &str,
        failure: Option<&(String, Option<i32>, String)>,
        commit: Option<&String>,
    ) {
        const NO_VERDICT: &[&str] = &[
            "interrupted",
            "rate_limited",
            "quota_exhausted",
            "auth_failed",
            "overloaded",
            "upstream_error",
        ];
        if NO_VERDICT.contains(&outcome) {
            return;
        }
        let passed = outcome == "passed";
        if !passed {
            let output = failure.map(|f| f.2.clone()).unwrap_or_default();
            let seen = self.failures.entry(task.id.clone()).or_default();
            seen.push((n, outcome.to_string(), output));
        }
        let now = self.settings.now();
        if let Some(db) = self.db.as_mut()
            && let Err(e) = db.record_result(run, &task.id, n, passed, now, &self.settings.policy)
        {
            eprintln!("fleet: outcome of injected lessons not recorded: {e}");
        }
        if let (true, true, Some((check, code, output)), TaskAction::Agent(a)) =
            (passed, n > 1, failure, &task.action)
        {
            let what = match code {
                None if check.starts_with("merge with") => {
                    "its merge conflicted; a rework attempt resolved it".to_string()
                }
                _ => format!(
                    "its check `{check}` failed (exit {}), then attempt {n} passed",
                    code.map_or("-".into(), |c| c.to_string())
                ),
            };
            self.troubles.push(Trouble {
                task: task.id.clone(),
                attempt: n,
                what,
                evidence: output.clone(),
                prompt: a.prompt.clone(),
                commit: commit.cloned(),
            });
        }
    }

    /// `task` failed for good (it gave up after its attempts, `why`): a recurring failure the
    /// retrospective learns from, handed the failing output of each attempt. Nothing passed,
    /// so there is no fixing diff.
    pub(crate) fn gave_up(&mut self, task: &TaskDef, why: Option<&str>) {
        let (TaskAction::Agent(a), Some(seen)) = (&task.action, self.failures.remove(&task.id))
        else {
            return;
        };
        let Some(last) = seen.last().map(|f| f.0) else {
            return;
        };
        // Each attempt's share of the evidence, so the last one cannot crowd out the first.
        let share = RECURRING_EVIDENCE / seen.len();
        let mut evidence = String::new();
        for (n, outcome, output) in &seen {
            evidence.push_str(&format!("### Attempt {n}: {outcome}\n\n"));
            let tail = output.trim();
            let cut = tail
                .char_indices()
                .rev()
                .nth(share)
                .map_or(tail, |(i, _)| &tail[i..]);
            evidence.push_str(if cut.is_empty() { "(no output)" } else { cut });
            evidence.push_str("\n\n");
        }
        if let Some(why) = why {
            evidence.push_str(&format!("It gave up: {why}\n"));
        }
        self.troubles.push(Trouble {
            task: task.id.clone(),
            attempt: last,
            what: format!(
                "a recurring failure: it failed {} attempt{} and gave up; what should be done differently",
                seen.len(),
                if seen.len() == 1 { "" } else { "s" }
            ),
            evidence,
            prompt: a.prompt.clone(),
            commit: None,
        });
    }
}
