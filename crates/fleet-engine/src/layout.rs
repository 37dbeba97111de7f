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

pub fn task_branch(run: &str, task: &str) -> String {
    format!("fleet/tasks/{run}/{task}")
}

pub fn integration_branch(run: &str) -> String {
    format!("fleet/runs/{run}")
}
