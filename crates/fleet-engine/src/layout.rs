//! Where a state directory keeps things.
//!
//! ```text
//! .fleet/
//!   fleet.db                      the store (SQLite, WAL)
//!   runs/<run>/events.jsonl       the run's events, one JSON object per line
//!   runs/<run>/summary.md         written when the run stops
//!   runs/<run>/logs/<task>.log    command and check output, attempt by attempt
//!   runs/<run>/transcripts/<task>-<n>.jsonl   an agent attempt's raw output (secrets redacted)
//!   runs/<run>/lock               held while a fleet process drives the run
//!   homes/<run>/<task>            an agent attempt's private HOME, removed when it ends (or,
//!                                 kept for the next attempt to resume, when the run ends)
//!   worktrees/<run>/<task>        a task's git worktree while it runs (kept if it fails)
//! ```
//!
//! Branches: `fleet/runs/<instance>/<run>`, `fleet/tasks/<instance>/<run>/<task>`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("fleet.db")
    }

    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }

    pub fn logs_dir(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("logs")
    }

    pub fn log(&self, run: &str, task: &str) -> PathBuf {
        self.logs_dir(run).join(format!("{task}.log"))
    }

    pub fn events(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("events.jsonl")
    }

    pub fn summary(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("summary.md")
    }

    /// The private home of a task's agent attempts, made afresh for each one. It holds secrets:
    /// removed when the attempt ends, unless the next attempt may continue the agent's session
    /// (then when that one starts afresh, when the task passes, or when the run ends).
    pub fn agent_home(&self, run: &str, task: &str) -> PathBuf {
        self.homes_dir(run).join(task)
    }

    /// Where a run's agent homes live; removed when the run ends.
    pub fn homes_dir(&self, run: &str) -> PathBuf {
        self.root.join("homes").join(run)
    }

    /// Everything an agent CLI printed in one attempt, secrets redacted.
    pub fn transcript(&self, run: &str, task: &str, attempt: u32) -> PathBuf {
        self.run_dir(run)
            .join("transcripts")
            .join(format!("{task}-{attempt}.jsonl"))
    }

    pub fn lock(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("lock")
    }

    pub fn worktrees(&self) -> PathBuf {
        self.root.join("worktrees")
    }

    pub fn worktree(&self, run: &str, task: &str) -> PathBuf {
        self.worktrees().join(run).join(task)
    }
}

/// The id of the instance whose store this is (made on the store's first open; see
/// `SqliteStore::INSTANCE_ID_KEY`). Branch names carry it: run ids are unique only within an
/// instance, and two instances may work on one repository.
pub fn instance_id(store: &dyn fleet_store::Store) -> Result<String, fleet_store::StoreError> {
    let key = fleet_store::SqliteStore::INSTANCE_ID_KEY;
    if let Some(id) = store.meta(key)? {
        return Ok(id);
    }
    // A store that does not make one on open: made here, once.
    let id = format!("{:08x}", rand_u32());
    store.set_meta(key, &id)?;
    Ok(store.meta(key)?.unwrap_or(id))
}

/// 32 random bits from the OS's hasher seeds (no generator crate needed for one id).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

/// Where the branches of a run's tasks live: `fleet/tasks/<instance>/<run>`.
pub fn task_branches(instance: &str, run: &str) -> String {
    format!("fleet/tasks/{instance}/{run}")
}

/// Where the branches of a run made before branch names carried the instance live.
pub fn legacy_task_branches(run: &str) -> String {
    format!("fleet/tasks/{run}")
}

/// A task's branch, under its run's [`task_branches`].
pub fn task_branch(task_branches: &str, task: &str) -> String {
    format!("{task_branches}/{task}")
}

/// A run's own integration branch: `fleet/runs/<instance>/<run>`.
pub fn integration_branch(instance: &str, run: &str) -> String {
    format!("fleet/runs/{instance}/{run}")
}
