//! Committing one file onto a branch without a worktree (Fleet's own files on a delivery
//! branch, such as the exported task graph), and counting commits between two revisions.

use crate::{Repo, Result, bad, failure, is_oid};
use std::path::PathBuf;

/// A private folder for the blob and the index, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("fleet-commit-file-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Repo {
    /// Commits `contents` at `path` on `branch` (a new commit on its tip, through a private
    /// index: no worktree, no checkout, the branch moved by compare-and-swap). `None` when
    /// the branch already holds exactly these contents there. Refuses a branch checked out
    /// in a worktree, as `merge_into` does.
    pub fn commit_file(
        &self,
        branch: &str,
        path: &str,
        contents: &[u8],
        message: &str,
    ) -> Result<Option<String>> {
        let refname = format!("refs/heads/{branch}");
        let tip = self.branch_tip(branch)?.ok_or_else(|| {
            bad(
                format!("git -C {} for-each-ref {refname}", self.root().display()),
                format!("branch '{branch}' does not exist"),
            )
        })?;
        if let Some(wt) = self
            .list_worktrees()?
            .into_iter()
            .find(|wt| wt.branch.as_deref() == Some(branch))
        {
            return Err(bad(
                format!("git -C {} worktree list", self.root().display()),
                format!(
                    "branch '{branch}' is checked out in worktree {}; refusing to move it",
                    wt.path.display()
                ),
            ));
        }
        let scratch = Scratch::new()?;
        let file = scratch.0.join("blob");
        std::fs::write(&file, contents)?;
        let blob = self
            .git()
            .args(["hash-object", "-w", "--no-filters", "--"])
            .arg(&file)
            .run()?
            .trim()
            .to_string();
        let index = scratch.0.join("index");
        let with_index = |args: &[&str]| {
            let mut g = self.git().args(args);
            g.cmd.env("GIT_INDEX_FILE", &index);
            g
        };
        with_index(&["read-tree", &tip]).run()?;
        let info = format!("100644,{blob},{path}");
        with_index(&["update-index", "--add", "--cacheinfo", &info]).run()?;
        let tree = with_index(&["write-tree"]).run()?.trim().to_string();
        let old_tree = self
            .git()
            .args([
                "rev-parse",
                "--verify",
                "--end-of-options",
                &format!("{tip}^{{tree}}"),
            ])
            .run()?
            .trim()
            .to_string();
        if tree == old_tree {
            return Ok(None);
        }
        let git = self
            .git()
            .args(["commit-tree", &tree, "-p", &tip, "-m", message]);
        let cmd = git.display.clone();
        let commit = git.run()?.trim().to_string();
        if !is_oid(&commit) {
            return Err(bad(cmd, format!("unexpected output: {commit:?}")));
        }
        let _admin = self.admin_lock()?;
        let (cmd, out) = self
            .git()
            .args([
                "update-ref",
                "-m",
                &format!("fleet: commit {path}"),
                &refname,
                &commit,
                &tip,
            ])
            .output()?;
        if !out.status.success() {
            return Err(failure(cmd, &out));
        }
        Ok(Some(commit))
    }

    /// How many commits `to` has that `from` has not (`git rev-list --count from..to`);
    /// `None` when `from` is not a commit of this repository (history was rewritten).
    pub fn count_commits(&self, from: &str, to: &str) -> Result<Option<u64>> {
        let (_, out) = self
            .git()
            .args(["cat-file", "-e", &format!("{from}^{{commit}}")])
            .output()?;
        if !out.status.success() {
            return Ok(None);
        }
        let git = self
            .git()
            .args(["rev-list", "--count", &format!("{from}..{to}"), "--"]);
        let cmd = git.display.clone();
        let text = git.run()?;
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(cmd, format!("unexpected output: {text:?}")))
    }
}
