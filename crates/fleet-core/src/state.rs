//! The task state machine.
//!
//! ```text
//! pending -> ready -> running -> checking -> passed -> merged
//!              ^         |           |   ^      |
//!              +---------+-----------+---|------+ (retry; rework after a merge conflict)
//!                        |           |   +------+ (re-check after rebasing onto what landed)
//!                        +-----------+-> failed <- passed (its work cannot land)
//! pending -> skipped (a dependency failed, was skipped or cancelled)
//! ready -> failed (the agent pool can never run it)
//! any non-terminal -> cancelled
//! ```
//! `passed` is terminal for a task that merges nothing (`workspace: none`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Ready,
    Running,
    Checking,
    Passed,
    Merged,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Checking,
        TaskState::Passed,
        TaskState::Merged,
        TaskState::Failed,
        TaskState::Skipped,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Checking => "checking",
            TaskState::Passed => "passed",
            TaskState::Merged => "merged",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A process of this task may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Running | TaskState::Checking)
    }

    /// No further transition except, for `passed`, the merge.
    pub fn is_final(self, needs_merge: bool) -> bool {
        match self {
            TaskState::Merged | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled => {
                true
            }
            TaskState::Passed => !needs_merge,
            _ => false,
        }
    }

    /// Whether the machine allows `self -> to`.
    pub fn can_become(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, Ready)
                | (Pending, Skipped)
                | (Ready, Running)
                | (Ready, Failed)
                | (Running, Checking)
                | (Running, Passed)
                | (Running, Ready)
                | (Running, Failed)
                | (Checking, Passed)
                | (Checking, Ready)
                | (Checking, Failed)
                | (Passed, Merged)
                | (Passed, Checking)
                | (Passed, Ready)
                | (Passed, Failed)
                | (Pending | Ready | Running | Checking | Passed, Cancelled)
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in TaskState::ALL {
            assert_eq!(TaskState::parse(st.as_str()), Some(st));
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in [
            TaskState::Merged,
            TaskState::Failed,
            TaskState::Skipped,
            TaskState::Cancelled,
        ] {
            for to in TaskState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn nothing_runs_without_being_ready() {
        for from in TaskState::ALL {
            assert_eq!(
                from.can_become(TaskState::Running),
                from == TaskState::Ready
            );
        }
    }
}
