//! What the engine needs of git to enforce a run's policies: the paths a task's change
//! touches, putting paths (or the whole worktree) back, and the branch refs an agent must not
//! move. Nothing here writes a blob of the worktree into the object database: a change that
//! breaks a policy (and may hold a secret) leaves no trace in the repository.

use crate::{Repo, Result, bad};
use std::path::Path;

impl Repo {
    /// Every path the worktree changes against where it forked off `base`: its own commits,
    /// uncommitted changes and new files (not ignored ones), sorted, without duplicates.
    pub fn paths_changed(&self, worktree: &Path, base: &str) -> Result<Vec<String>> {
        let fork = self.fork_point(worktree, base)?;
        let tracked = self
            .git_in(worktree)
            .args(["diff", "--name-only", "-z", "--no-renames", "--no-ext-diff"])
            .args(["--no-textconv", "--end-of-options", fork.as_str(), "--"])
            .run()?;
        let untracked = self
            .git_in(worktree)
            .args(["ls-files", "-z", "--others", "--exclude-standard"])
            .run()?;
        let mut paths: Vec<String> = tracked
            .split('\0')
            .chain(untracked.split('\0'))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Where the worktree's `HEAD` forked off `base`.
    pub fn fork_point(&self, worktree: &Path, base: &str) -> Result<String> {
        let fork = self
            .git_in(worktree)
            .args(["merge-base", "--end-of-options", "HEAD", base])
            .run()?;
        Ok(fork.trim().to_string())
    }

    /// Puts each of `paths` (relative to the worktree) back as it is at `rev`; a path `rev`
    /// lacks is removed. The index follows.
    pub fn restore_paths(&self, worktree: &Path, rev: &str, paths: &[String]) -> Result<()> {
        for path in paths {
            if path.split('/').any(|c| c == "..") || path.starts_with('/') {
                return Err(bad(
                    "restore",
                    format!("{path:?} is not inside the worktree"),
                ));
            }
            let (_, out) = self
                .git_in(worktree)
                .args(["cat-file", "-e", &format!("{rev}:{path}")])
                .output()?;
            if out.status.success() {
                self.git_in(worktree)
                    .args(["checkout", "--no-overlay", rev, "--", path])
                    .run()?;
            } else {
                self.git_in(worktree)
                    .args(["rm", "-q", "--cached", "--ignore-unmatch", "--", path])
                    .run()?;
                let full = worktree.join(path);
                if full.is_dir() {
                    std::fs::remove_dir_all(&full)?;
                } else if full.symlink_metadata().is_ok() {
                    std::fs::remove_file(&full)?;
                }
            }
        }
        Ok(())
    }

    /// Undoes every uncommitted change of the worktree: tracked files as at `HEAD`, new files
    /// (not ignored ones) removed.
    pub fn discard_changes(&self, worktree: &Path) -> Result<()> {
        self.git_in(worktree)
            .args(["reset", "-q", "--hard", "HEAD"])
            .run()?;
        self.git_in(worktree).args(["clean", "-fdq"]).run()?;
        Ok(())
    }

    /// Every local branch and its tip.
    pub fn branch_tips(&self) -> Result<Vec<(String, String)>> {
        let out = self
            .git()
            .args([
                "for-each-ref",
                "--format=%(objectname) %(refname:strip=2)",
                "refs/heads/",
            ])
            .run()?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(sha, name)| (name.to_string(), sha.to_string()))
            .collect())
    }

    /// Puts branch `branch` back at `old` (deletes it when `old` is `None`), provided it is
    /// still at `now` (compare-and-swap: a branch moved again meanwhile is left alone).
    pub fn put_branch_back(
        &self,
        branch: &str,
        old: Option<&str>,
        now: Option<&str>,
    ) -> Result<()> {
        let refname = format!("refs/heads/{branch}");
        let _admin = self.admin_lock()?;
        let g = self.git().args(["update-ref", "-m", "fleet: policy"]);
        match (old, now) {
            (Some(old), now) => g.args([refname.as_str(), old, now.unwrap_or("")]).run()?,
            (None, Some(now)) => g.args(["-d", refname.as_str(), now]).run()?,
            (None, None) => return Ok(()),
        };
        Ok(())
    }
}
