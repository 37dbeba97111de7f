//! A runner's workspace root is its own for as long as it runs: it holds `<root>/.runner.lock`
//! (an exclusive `flock`, released by the kernel however the runner ends). Holding it, it
//! knows that everything under `<root>/tasks/` was left by a runner that is gone — the clones
//! of tasks it was doing when it was killed, its slots' empty directories — and removes it
//! before claiming. Task logs (`<root>/logs/`) are kept, as after every task.
//!
//! Under it, each claim gets a fresh directory of its own: a clone of the remote on the task's
//! branch, or for a shell task without a workspace its slot's one directory, emptied.

use crate::EngineError;
use crate::files::{PidLock, lock_with_pid};
use crate::remote::TaskOrder;
use crate::runner_land::git;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The lock file's name under the root; it holds the holder's pid, for the message to a
/// second runner.
const LOCK: &str = ".runner.lock";

/// Held while this runner uses its workspace root; dropping it lets another runner take it.
#[derive(Debug)]
pub struct WorkspaceHold {
    _lock: File,
    /// How many task directories under `tasks/` an earlier runner left, removed when the root
    /// was taken.
    pub leftovers: usize,
    /// What of it could not be removed, and why (a process of the dead runner's task that
    /// still writes there): tried again when the next runner takes the root.
    pub not_removed: Vec<String>,
    /// Why the root could not be locked (a file system without `flock`, some network ones):
    /// then nothing was removed and a second runner there would not be refused.
    pub unlocked: Option<String>,
}

/// Takes `root` (made if missing) for this process, or says which process has it.
pub fn hold(root: &Path) -> Result<WorkspaceHold, EngineError> {
    std::fs::create_dir_all(root)?;
    let path = root.join(LOCK);
    // A second: a runner stopped a moment ago may still be exiting.
    let lock = match lock_with_pid(&path, std::time::Duration::from_secs(1)) {
        Ok(PidLock::Held(file)) => file,
        Ok(PidLock::HeldBy(holder)) => {
            return Err(EngineError::Invalid(format!(
                "--workspace {} is in use by another runner (pid {holder}); give each runner \
                 its own",
                root.display()
            )));
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(libc::ENOLCK) =>
        {
            let file = File::open(&path)?;
            return Ok(WorkspaceHold {
                _lock: file,
                leftovers: 0,
                not_removed: Vec::new(),
                unlocked: Some(format!("{}: {e}", path.display())),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let (leftovers, not_removed) = remove_leftovers(&root.join("tasks"));
    Ok(WorkspaceHold {
        _lock: lock,
        leftovers,
        not_removed,
        unlocked: None,
    })
}

/// Removes every entry of `tasks`: how many task directories there were (a claim's clone
/// under its run's directory, or a slot's empty directory), and what could not be removed.
/// Best effort: a leftover that resists must not keep the runner from starting.
fn remove_leftovers(tasks: &Path) -> (usize, Vec<String>) {
    let (mut removed, mut failed) = (0, Vec::new());
    let entries = match std::fs::read_dir(tasks) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, failed),
        Err(e) => return (0, vec![format!("{}: {e}", tasks.display())]),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = path.is_dir() && !path.is_symlink();
        let gone = match is_dir {
            true => {
                let slot_dir = entry.file_name().to_string_lossy().starts_with(".empty-");
                removed += match slot_dir {
                    true => 1,
                    false => std::fs::read_dir(&path).map_or(1, |d| d.count()),
                };
                std::fs::remove_dir_all(&path)
            }
            false => std::fs::remove_file(&path),
        };
        if let Err(e) = gone {
            failed.push(format!("{}: {e}", path.display()));
        }
    }
    (removed, failed)
}

/// Whether a task works in its slot's one empty directory ([`empty_dir`]): a shell task
/// without a workspace. A directory made and removed for each such task cost a file system
/// without a journal more at every later file creation (it skips inodes freed in the last
/// seconds, one by one; docs/BENCHMARKS.md, issue 19).
pub(crate) fn works_in_empty_dir(order: &TaskOrder) -> bool {
    order.workspace != "git" && order.agent.is_none()
}

/// A slot's directory for tasks without a workspace, named for the runner process and slot:
/// never another's, even under a workspace root two runners were wrongly given.
pub(crate) fn empty_dir(workspace: &Path, runner: &str, index: u32) -> PathBuf {
    workspace
        .join("tasks")
        .join(format!(".empty-{runner}-{index}"))
}

/// `dir`, existing and empty: what an earlier task left in it is removed.
pub(crate) fn emptied(dir: &Path) -> std::io::Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => return Ok(()),
        Ok(false) => std::fs::remove_dir_all(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

/// A clean workspace: whatever an earlier claim of this runner left is removed first.
pub(crate) fn prepare(
    dir: &Path,
    logs: &Path,
    order: &TaskOrder,
    git_ws: bool,
) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::fs::create_dir_all(logs)?;
    if !git_ws {
        std::fs::create_dir_all(dir)?;
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    let dest = dir.display().to_string();
    git(
        parent,
        &[
            "clone",
            "--quiet",
            // A remote on this machine is read through git's transport, not by copying its
            // objects directory: that copy races pushes to it (a push's quarantine directory,
            // copied half-way, vanishes when the push ends: "failed to copy file").
            "--no-local",
            "--branch",
            &order.integration,
            "--end-of-options",
            &order.remote,
            &dest,
        ],
    )?;
    git(dir, &["checkout", "--quiet", "-B", &order.task_branch])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_with_the_holders_pid_and_the_first_ones_leftovers_go() {
        let root = tempfile::tempdir().unwrap();
        let clone = root.path().join("tasks/run-1/build.1");
        std::fs::create_dir_all(clone.join(".git")).unwrap();
        std::fs::write(clone.join("main.rs"), "fn main() {}").unwrap();
        std::fs::create_dir_all(root.path().join("tasks/run-1/test.2")).unwrap();
        std::fs::create_dir_all(root.path().join("tasks/.empty-h:1:2:0-0")).unwrap();
        std::fs::create_dir_all(root.path().join("logs/run-1")).unwrap();
        std::fs::write(root.path().join("logs/run-1/build.1.log"), "ok").unwrap();

        let first = hold(root.path()).unwrap();
        assert_eq!(first.leftovers, 3);
        assert_eq!(
            std::fs::read_dir(root.path().join("tasks"))
                .unwrap()
                .count(),
            0
        );
        assert!(root.path().join("logs/run-1/build.1.log").exists());

        // Another open file description is what another process would have.
        let err = hold(root.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another runner"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );

        drop(first);
        let again = hold(root.path()).unwrap();
        assert_eq!(again.leftovers, 0);
        assert!(again.not_removed.is_empty());
    }

    /// A leftover that cannot be removed is named, and the root is still taken.
    #[test]
    fn a_leftover_that_resists_does_not_keep_the_runner_from_starting() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("tasks/run-1");
        std::fs::create_dir_all(run.join("build.1")).unwrap();
        let stuck = run.join("build.1/out");
        std::fs::write(&stuck, "x").unwrap();
        let _undo = Resisting::make(&stuck);
        assert!(
            std::fs::remove_file(&stuck).is_err(),
            "the file could be removed"
        );
        let held = hold(root.path()).unwrap();
        assert_eq!(held.not_removed.len(), 1, "{:?}", held.not_removed);
        assert!(
            held.not_removed[0].contains("run-1"),
            "{:?}",
            held.not_removed
        );
    }

    /// A file that cannot be unlinked while this lives: immutable for root (`chattr +i`, which
    /// root's privileges do not override), in a read-only directory for anyone else.
    struct Resisting(std::path::PathBuf);

    impl Resisting {
        fn make(file: &Path) -> Resisting {
            use std::os::unix::fs::PermissionsExt;
            if unsafe { libc::geteuid() } == 0 {
                let ok = std::process::Command::new("chattr")
                    .arg("+i")
                    .arg(file)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chattr +i {}", file.display());
            } else {
                let dir = file.parent().unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            }
            Resisting(file.to_path_buf())
        }
    }

    impl Drop for Resisting {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
        }
    }
}
