//! When a project's context (`.fleet/context/<project>.md`, written by a researcher) is stale
//! and must be written again: the rule, and the small record of what commit it describes
//! (`.fleet/context/<project>.json`). Pure: the caller counts commits and reads the clock.

use serde::{Deserialize, Serialize};

/// What the context file describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextStamp {
    /// The default branch's commit the researcher worked on.
    pub commit: String,
    /// When it was written (ms since the epoch).
    pub at: i64,
}

/// How far a repository may move on before its context is refreshed. `None` never refreshes
/// on that measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refresh {
    pub commits: Option<u32>,
    pub days: Option<u32>,
}

/// Where the stamp of `project`'s context lives under the state directory.
pub fn stamp_path(project: &str) -> String {
    format!("context/{project}.json")
}

/// Whether a context is stale. `stamp` is `None` for a context written before stamps were
/// kept (or by hand): it is refreshed once so that it gets one. `commits_since` is how many
/// commits the default branch has that the stamped commit has not (`None` when the stamped
/// commit is no longer known: history was rewritten, so the context is stale).
pub fn is_stale(
    stamp: Option<&ContextStamp>,
    commits_since: Option<u64>,
    now: i64,
    r: Refresh,
) -> bool {
    if r.commits.is_none() && r.days.is_none() {
        return false;
    }
    let Some(stamp) = stamp else {
        return true;
    };
    if let Some(n) = r.commits {
        match commits_since {
            Some(c) if c < u64::from(n) => {}
            _ => return true,
        }
    }
    if let Some(d) = r.days {
        let age_ms = now.saturating_sub(stamp.at);
        if age_ms >= i64::from(d) * 86_400_000 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> ContextStamp {
        ContextStamp {
            commit: "c".into(),
            at: 0,
        }
    }

    #[test]
    fn refreshes_after_n_commits_or_d_days_not_before() {
        let r = Refresh {
            commits: Some(3),
            days: Some(2),
        };
        assert!(!is_stale(Some(&stamp()), Some(2), 86_400_000, r));
        assert!(is_stale(Some(&stamp()), Some(3), 0, r));
        assert!(is_stale(Some(&stamp()), Some(0), 2 * 86_400_000, r));
        assert!(is_stale(Some(&stamp()), None, 0, r), "history rewritten");
        assert!(
            is_stale(None, Some(0), 0, r),
            "an unstamped context gets a stamp"
        );
        let never = Refresh {
            commits: None,
            days: None,
        };
        assert!(!is_stale(None, None, i64::MAX, never));
        let days_only = Refresh {
            commits: None,
            days: Some(1),
        };
        assert!(!is_stale(Some(&stamp()), Some(1000), 1, days_only));
    }
}
