//! What a dead git or Fleet leaves in a repository is repaired, not failed on: half-made
//! worktree entries, folders holding only `.git`, stale lock files; and two Fleets (two
//! `Repo`s, each with its own in-process lock) administering one repository do not collide.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use fleet_git::Repo;
use tempfile::TempDir;

fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@localhost")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@localhost")
        .output()
        .expect("run git");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Fixture {
    _tmp: TempDir,
    root: PathBuf,
    wts: PathBuf,
    repo: Repo,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("repo");
    let wts = base.join("worktrees");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&wts).unwrap();
    assert!(git(&root, &["init", "-q", "-b", "main"]).0);
    fs::write(root.join("f.txt"), "one\n").unwrap();
    assert!(git(&root, &["add", "-A"]).0);
    assert!(git(&root, &["commit", "-q", "-m", "initial"]).0);
    let repo = Repo::open(&root).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        wts,
        repo,
    }
}

/// Makes `path` look as if it was last written `secs` seconds ago (left by a dead process).
fn age(path: &Path, secs: u64) {
    let then = SystemTime::now() - Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

impl Fixture {
    /// What a `git worktree add` of `<wts>/<name>` killed early leaves: the entry locked as
    /// "initializing", its `gitdir` written, an empty `commondir`, and the folder holding only
    /// its `.git` file.
    fn half_made_entry(&self, name: &str) -> PathBuf {
        let entry = self.root.join(".git/worktrees").join(name);
        let folder = self.wts.join(name);
        fs::create_dir_all(&entry).unwrap();
        fs::create_dir_all(&folder).unwrap();
        fs::write(entry.join("locked"), "initializing\n").unwrap();
        fs::write(
            entry.join("gitdir"),
            format!("{}\n", folder.join(".git").display()),
        )
        .unwrap();
        fs::write(entry.join("commondir"), "").unwrap();
        fs::write(
            folder.join(".git"),
            format!("gitdir: {}\n", entry.display()),
        )
        .unwrap();
        entry
    }
}

#[test]
fn a_half_made_worktree_entry_is_repaired_when_a_worktree_is_added() {
    let f = fixture();
    let entry = f.half_made_entry("dead");
    // The repository as a killed `worktree add` left it: every worktree command fails.
    let (ok, why) = git(&f.root, &["worktree", "list"]);
    assert!(!ok && why.contains("commondir"), "{why}");

    let wt = f.wts.join("task");
    f.repo
        .add_worktree(&wt, "fleet/tasks/r/task", "main")
        .unwrap();
    assert!(f.repo.is_complete_worktree(&wt).unwrap());
    assert!(!entry.exists(), "the broken entry is gone");
    assert!(!f.wts.join("dead").exists(), "and so is its folder");
    let (ok, list) = git(&f.root, &["worktree", "list"]);
    assert!(ok, "{list}");
    assert_eq!(f.repo.list_worktrees().unwrap().len(), 2);
}

#[test]
fn a_folder_holding_only_dot_git_does_not_block_its_worktree() {
    let f = fixture();
    // A worktree whose checkout was cut short and whose entry is gone: only `.git` is left.
    let wt = f.wts.join("run").join("task");
    f.repo
        .add_worktree(&wt, "fleet/tasks/r/task", "main")
        .unwrap();
    let gitdir = fs::read_to_string(wt.join(".git")).unwrap();
    let gitdir = PathBuf::from(gitdir.trim().strip_prefix("gitdir: ").unwrap());
    fs::remove_dir_all(&gitdir).unwrap();
    for e in fs::read_dir(&wt).unwrap().flatten() {
        if e.file_name() != ".git" {
            fs::remove_file(e.path()).unwrap();
        }
    }
    f.repo
        .add_worktree(&wt, "fleet/tasks/r/task", "main")
        .unwrap();
    assert!(f.repo.is_complete_worktree(&wt).unwrap());
    assert_eq!(fs::read_to_string(wt.join("f.txt")).unwrap(), "one\n");
}

#[test]
fn repair_removes_stale_locks_and_orphans_but_not_live_ones() {
    let f = fixture();
    assert!(git(&f.root, &["branch", "fleet/epics/r/a"]).0);
    assert!(git(&f.root, &["branch", "keep"]).0);
    assert!(git(&f.root, &["pack-refs", "--all"]).0);
    let git_dir = f.root.join(".git");
    let packed = git_dir.join("packed-refs.lock");
    let ref_lock = git_dir.join("refs/heads/fleet/epics/r/a.lock");
    let fresh = git_dir.join("refs/heads/fleet/epics/r/fresh.lock");
    let held = git_dir.join("refs/heads/fleet/epics/r/held.lock");
    let users = git_dir.join("refs/heads/mine.lock");
    fs::create_dir_all(ref_lock.parent().unwrap()).unwrap();
    for lock in [&packed, &ref_lock, &held, &users] {
        fs::write(lock, "").unwrap();
    }
    for lock in [&packed, &ref_lock, &held, &users] {
        age(lock, 60);
    }
    // Some process still has this one open: a git at work, whatever its age.
    let _open = fs::File::open(&held).unwrap();
    // While the stale packed-refs lock is there, the user's own deletion fails.
    let (ok, why) = git(&f.root, &["branch", "-D", "keep"]);
    assert!(!ok && why.contains("packed-refs.lock"), "{why}");

    let kept = f.wts.join("run").join("kept");
    f.repo
        .add_worktree(&kept, "fleet/tasks/r/kept", "main")
        .unwrap();
    let entry = f.half_made_entry("dead");
    let orphan = f.wts.join("run").join("orphan");
    fs::create_dir_all(&orphan).unwrap();
    let nowhere = f.root.join(".git/worktrees/orphan");
    fs::write(
        orphan.join(".git"),
        format!("gitdir: {}\n", nowhere.display()),
    )
    .unwrap();
    // A folder linked to another repository is not this one's to remove.
    let foreign = f.wts.join("run").join("foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(
        foreign.join(".git"),
        "gitdir: /elsewhere/.git/worktrees/x\n",
    )
    .unwrap();

    // Just made: a git may be about to rename it.
    fs::write(&fresh, "").unwrap();
    let done = f.repo.repair(&f.wts).unwrap();
    assert_eq!(done.entries, vec!["dead".to_string()]);
    let mut folders = done.folders.clone();
    folders.sort();
    assert_eq!(folders, vec![f.wts.join("dead"), orphan.clone()]);
    let mut locks = done.locks.clone();
    locks.sort();
    assert_eq!(locks, vec![packed.clone(), ref_lock.clone()]);
    assert_eq!(done.describe().len(), 5);
    assert!(!entry.exists() && !orphan.exists());
    assert!(foreign.exists());
    assert!(fresh.exists() && held.exists(), "live locks stay");
    assert!(
        users.exists(),
        "the user's own refs are not Fleet's to touch"
    );
    assert!(
        f.repo.is_complete_worktree(&kept).unwrap(),
        "healthy worktrees stay"
    );
    assert!(git(&f.root, &["branch", "-D", "fleet/epics/r/a"]).0);
    assert!(f.repo.repair(&f.wts).unwrap().is_empty(), "nothing left");
}

#[test]
fn two_fleets_administering_one_repository_do_not_collide() {
    let f = fixture();
    let start = git(&f.root, &["rev-parse", "HEAD"]).1.trim().to_string();
    std::thread::scope(|s| {
        for fleet in 0..2 {
            // Each its own `Repo`, as in two processes: only the repository-wide lock is shared.
            let repo = Repo::open(&f.root).unwrap();
            for t in 0..3 {
                let (repo, wts, start) = (repo.clone(), f.wts.clone(), start.clone());
                s.spawn(move || {
                    for i in 0..6 {
                        let name = format!("f{fleet}-t{t}-{i}");
                        let path = wts.join(&name);
                        repo.add_worktree(&path, &format!("fleet/tasks/{name}"), &start)
                            .unwrap();
                        repo.list_worktrees().unwrap();
                        if i % 2 == 0 {
                            repo.remove_worktree(&path).unwrap();
                        }
                    }
                });
            }
        }
    });
    assert_eq!(f.repo.list_worktrees().unwrap().len(), 1 + 2 * 3 * 3);
    let (ok, out) = git(&f.root, &["fsck", "--no-progress"]);
    assert!(ok, "{out}");
}

#[test]
fn create_branch_never_moves_an_existing_branch() {
    let f = fixture();
    let first = git(&f.root, &["rev-parse", "HEAD"]).1.trim().to_string();
    fs::write(f.root.join("f.txt"), "two\n").unwrap();
    assert!(git(&f.root, &["commit", "-qam", "second"]).0);
    assert!(f.repo.create_branch("fleet/epics/x/e1", &first).unwrap());
    assert!(!f.repo.create_branch("fleet/epics/x/e1", "HEAD").unwrap());
    assert_eq!(
        f.repo.branch_tip("fleet/epics/x/e1").unwrap(),
        Some(first),
        "the branch stays where its maker put it"
    );
    assert!(f.repo.create_branch("bad..name", "HEAD").is_err());
}

#[test]
fn right_after_a_kill_a_fresh_lock_nobody_holds_is_waited_out_and_removed() {
    let f = fixture();
    let lock = f.root.join(".git/packed-refs.lock");
    fs::write(&lock, "").unwrap();
    // Too young to tell from a live git's: the ordinary repair leaves it.
    f.repo.repair(&f.wts).unwrap();
    assert!(lock.exists());
    // Right after killing a dead Fleet's gits, it waits until the lock would be stale.
    let done = f.repo.repair_after_kill(&f.wts).unwrap();
    assert!(!lock.exists(), "{done:?}");
    assert!(
        done.describe()
            .iter()
            .any(|d| d.contains("packed-refs.lock")),
        "{done:?}"
    );
}
