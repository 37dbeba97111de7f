//! Integration tests for fleet-git against real repositories in tempdirs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fleet_git::{GitError, MergeOutcome, Repo};
use tempfile::TempDir;

/// Runs git in `dir` with a test identity; panics on failure.
fn git(dir: &Path, args: &[&str]) -> String {
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
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository on `main` with one commit containing `f.txt` and `g.txt`,
/// plus a directory next to it for worktrees.
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
    git(&root, &["init", "-q", "-b", "main"]);
    fs::write(root.join("f.txt"), "one\ntwo\nthree\n").unwrap();
    fs::write(root.join("g.txt"), "g\n").unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/h.txt"), "h\n").unwrap();
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "initial"]);
    let repo = Repo::open(&root).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        wts,
        repo,
    }
}

impl Fixture {
    fn head(&self) -> String {
        git(&self.root, &["rev-parse", "HEAD"])
    }

    /// Creates a task worktree on `branch` from `main`, writes `files` and
    /// commits them through `commit_all`. Returns the commit sha.
    fn task(&self, name: &str, branch: &str, files: &[(&str, &str)]) -> String {
        let wt = self.wts.join(name);
        self.repo.add_worktree(&wt, branch, "main").unwrap();
        for (path, content) in files {
            fs::write(wt.join(path), content).unwrap();
        }
        self.repo
            .commit_all(&wt, &format!("task {name}"))
            .unwrap()
            .expect("something to commit")
    }

    fn status(&self) -> String {
        git(&self.root, &["status", "--porcelain"])
    }
}

#[test]
fn open_from_subdir_finds_root() {
    let fx = fixture();
    let repo = Repo::open(&fx.root.join("sub")).unwrap();
    assert_eq!(repo.root(), fx.root);
    assert_eq!(fx.repo.root(), fx.root);
}

#[test]
fn open_outside_a_repo_is_not_a_repo() {
    let tmp = tempfile::tempdir().unwrap();
    match Repo::open(tmp.path()) {
        Err(GitError::NotARepo(p)) => assert_eq!(p, tmp.path()),
        other => panic!("expected NotARepo, got {other:?}"),
    }
}

#[test]
fn resolve_known_and_unknown() {
    let fx = fixture();
    assert_eq!(fx.repo.resolve("main").unwrap(), fx.head());
    assert_eq!(fx.repo.resolve("HEAD").unwrap(), fx.head());
    let err = fx.repo.resolve("no-such-rev").unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-rev"), "{err}");
    // A tree is not a commit.
    assert!(fx.repo.resolve("main^{tree}").is_err());
}

#[test]
fn branch_tip_set_and_delete() {
    let fx = fixture();
    assert_eq!(fx.repo.branch_tip("main").unwrap(), Some(fx.head()));
    assert_eq!(fx.repo.branch_tip("nope").unwrap(), None);
    assert_eq!(fx.repo.branch_tip("ma").unwrap(), None);

    fx.repo.set_branch("fleet/base", &fx.head()).unwrap();
    assert_eq!(fx.repo.branch_tip("fleet/base").unwrap(), Some(fx.head()));
    // `fleet` is a directory of refs, not a branch.
    assert_eq!(fx.repo.branch_tip("fleet").unwrap(), None);

    fs::write(fx.root.join("g.txt"), "g2\n").unwrap();
    git(&fx.root, &["commit", "-q", "-am", "second"]);
    let second = fx.head();
    fx.repo.set_branch("fleet/base", &second).unwrap();
    assert_eq!(fx.repo.branch_tip("fleet/base").unwrap(), Some(second));

    fx.repo.delete_branch("fleet/base").unwrap();
    assert_eq!(fx.repo.branch_tip("fleet/base").unwrap(), None);
    fx.repo.delete_branch("fleet/base").unwrap();
    // The checked-out branch is protected.
    assert!(fx.repo.delete_branch("main").is_err());
}

#[test]
fn add_worktree_creates_branch_at_start() {
    let fx = fixture();
    let first = fx.head();
    fs::write(fx.root.join("g.txt"), "g2\n").unwrap();
    git(&fx.root, &["commit", "-q", "-am", "second"]);

    let wt = fx.wts.join("a");
    fx.repo
        .add_worktree(&wt, "fleet/tasks/r1/a", &first)
        .unwrap();
    assert_eq!(
        fx.repo.branch_tip("fleet/tasks/r1/a").unwrap(),
        Some(first.clone())
    );
    assert_eq!(fs::read_to_string(wt.join("g.txt")).unwrap(), "g\n");
    assert_eq!(fs::read_to_string(wt.join("sub/h.txt")).unwrap(), "h\n");
    assert_eq!(
        git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "fleet/tasks/r1/a"
    );
}

#[test]
fn add_worktree_recovers_from_leftover_worktree() {
    let fx = fixture();
    let wt = fx.wts.join("a");
    fx.repo
        .add_worktree(&wt, "fleet/tasks/r1/a", "main")
        .unwrap();
    // A crashed attempt left work and a dirty tree behind.
    fs::write(wt.join("f.txt"), "half-done\n").unwrap();
    fs::write(wt.join("new.txt"), "junk\n").unwrap();
    git(&wt, &["add", "f.txt"]);
    git(&wt, &["commit", "-q", "-m", "partial"]);
    fs::write(wt.join("g.txt"), "dirty\n").unwrap();

    fx.repo
        .add_worktree(&wt, "fleet/tasks/r1/a", "main")
        .unwrap();
    assert_eq!(
        fx.repo.branch_tip("fleet/tasks/r1/a").unwrap(),
        Some(fx.head())
    );
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    assert!(!wt.join("new.txt").exists());
    assert_eq!(
        fs::read_to_string(wt.join("f.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert_eq!(fx.repo.list_worktrees().unwrap().len(), 2);
}

#[test]
fn add_worktree_recovers_from_vanished_worktree_dir() {
    let fx = fixture();
    let wt = fx.wts.join("a");
    fx.repo
        .add_worktree(&wt, "fleet/tasks/r1/a", "main")
        .unwrap();
    fs::remove_dir_all(&wt).unwrap();
    fx.repo
        .add_worktree(&wt, "fleet/tasks/r1/a", "main")
        .unwrap();
    assert!(wt.join("f.txt").exists());
}

#[test]
fn add_worktree_does_not_clobber_foreign_directory() {
    let fx = fixture();
    let dir = fx.wts.join("precious");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("keep.txt"), "keep\n").unwrap();
    assert!(fx.repo.add_worktree(&dir, "fleet/x", "main").is_err());
    assert_eq!(fs::read_to_string(dir.join("keep.txt")).unwrap(), "keep\n");
}

#[test]
fn add_worktree_unknown_start_errors() {
    let fx = fixture();
    let err = fx
        .repo
        .add_worktree(&fx.wts.join("a"), "fleet/a", "no-such-rev")
        .unwrap_err();
    assert!(err.to_string().contains("worktree add"), "{err}");
}

#[test]
fn commit_all_handles_clean_new_modified_and_deleted() {
    let fx = fixture();
    let wt = fx.wts.join("a");
    fx.repo.add_worktree(&wt, "fleet/a", "main").unwrap();
    assert_eq!(fx.repo.commit_all(&wt, "nothing").unwrap(), None);

    fs::write(wt.join("new.txt"), "new\n").unwrap();
    let c1 = fx.repo.commit_all(&wt, "add new").unwrap().unwrap();
    assert_eq!(c1, git(&wt, &["rev-parse", "HEAD"]));
    assert_eq!(fx.repo.branch_tip("fleet/a").unwrap(), Some(c1.clone()));

    fs::remove_file(wt.join("g.txt")).unwrap();
    fs::write(wt.join("f.txt"), "changed\n").unwrap();
    let c2 = fx
        .repo
        .commit_all(&wt, "delete and modify")
        .unwrap()
        .unwrap();
    assert_ne!(c1, c2);
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(
        fx.repo.changed_files(&c1, &c2).unwrap(),
        vec!["f.txt".to_string(), "g.txt".to_string()]
    );
    assert_eq!(
        git(&wt, &["log", "-1", "--format=%an <%ae>"]),
        "Fleet <fleet@localhost>"
    );
    assert_eq!(fx.repo.commit_all(&wt, "nothing again").unwrap(), None);
}

#[test]
fn merge_two_tasks_cleanly() {
    let fx = fixture();
    fx.repo.set_branch("fleet/target", "main").unwrap();
    let a = fx.task("a", "fleet/tasks/r1/a", &[("a.txt", "a\n")]);
    let b = fx.task("b", "fleet/tasks/r1/b", &[("b.txt", "b\n")]);

    let m1 = match fx
        .repo
        .merge_into("fleet/target", "fleet/tasks/r1/a", "land a")
        .unwrap()
    {
        MergeOutcome::Merged { commit } => commit,
        other => panic!("expected Merged, got {other:?}"),
    };
    // Always a merge commit, even though a fast-forward was possible.
    assert_eq!(
        git(&fx.root, &["rev-list", "--parents", "-n1", &m1]),
        format!("{m1} {} {a}", fx.head())
    );
    let m2 = match fx.repo.merge_into("fleet/target", &b, "land b").unwrap() {
        MergeOutcome::Merged { commit } => commit,
        other => panic!("expected Merged, got {other:?}"),
    };
    assert_eq!(
        fx.repo.branch_tip("fleet/target").unwrap(),
        Some(m2.clone())
    );
    assert_eq!(git(&fx.root, &["show", "fleet/target:a.txt"]), "a");
    assert_eq!(git(&fx.root, &["show", "fleet/target:b.txt"]), "b");
    assert_eq!(
        git(
            &fx.root,
            &["rev-list", "--merges", "--count", "fleet/target"]
        ),
        "2"
    );
    let subjects: Vec<String> = fx
        .repo
        .log_subjects("fleet/target")
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(subjects[..2], ["land b".to_string(), "land a".to_string()]);
    assert_eq!(fx.repo.log_subjects("fleet/target").unwrap()[0].0, m2);
    assert!(fx.repo.is_ancestor(&a, &m2).unwrap());
    assert!(!fx.repo.is_ancestor(&m2, &a).unwrap());
    let mut changed = fx.repo.changed_files("main", "fleet/target").unwrap();
    changed.sort();
    assert_eq!(changed, ["a.txt", "b.txt"]);
    assert_eq!(fx.status(), "");
}

#[test]
fn merging_twice_is_already_merged() {
    let fx = fixture();
    fx.repo.set_branch("fleet/target", "main").unwrap();
    fx.task("a", "fleet/tasks/r1/a", &[("a.txt", "a\n")]);
    assert!(matches!(
        fx.repo
            .merge_into("fleet/target", "fleet/tasks/r1/a", "land a")
            .unwrap(),
        MergeOutcome::Merged { .. }
    ));
    let tip = fx.repo.branch_tip("fleet/target").unwrap();
    assert_eq!(
        fx.repo
            .merge_into("fleet/target", "fleet/tasks/r1/a", "land a")
            .unwrap(),
        MergeOutcome::AlreadyMerged
    );
    assert_eq!(fx.repo.branch_tip("fleet/target").unwrap(), tip);
    // Merging the target's own base is also a no-op.
    assert_eq!(
        fx.repo.merge_into("fleet/target", "main", "noop").unwrap(),
        MergeOutcome::AlreadyMerged
    );
}

#[test]
fn conflicting_merge_changes_nothing() {
    let fx = fixture();
    fx.repo.set_branch("fleet/target", "main").unwrap();
    fx.task(
        "a",
        "fleet/tasks/r1/a",
        &[("f.txt", "one\nTWO-A\nthree\n"), ("a.txt", "a\n")],
    );
    fx.task(
        "b",
        "fleet/tasks/r1/b",
        &[("f.txt", "one\nTWO-B\nthree\n"), ("b.txt", "b\n")],
    );
    assert!(matches!(
        fx.repo
            .merge_into("fleet/target", "fleet/tasks/r1/a", "land a")
            .unwrap(),
        MergeOutcome::Merged { .. }
    ));
    let tip = fx.repo.branch_tip("fleet/target").unwrap();
    let wt_a = fx.wts.join("a");
    let wt_b = fx.wts.join("b");
    let before_b = git(&wt_b, &["rev-parse", "HEAD"]);

    assert_eq!(
        fx.repo
            .merge_into("fleet/target", "fleet/tasks/r1/b", "land b")
            .unwrap(),
        MergeOutcome::Conflict {
            files: vec!["f.txt".to_string()]
        }
    );
    assert_eq!(fx.repo.branch_tip("fleet/target").unwrap(), tip);
    assert_eq!(fx.status(), "");
    assert_eq!(git(&wt_a, &["status", "--porcelain"]), "");
    assert_eq!(git(&wt_b, &["status", "--porcelain"]), "");
    assert_eq!(git(&wt_b, &["rev-parse", "HEAD"]), before_b);
    assert_eq!(
        fs::read_to_string(wt_b.join("f.txt")).unwrap(),
        "one\nTWO-B\nthree\n"
    );
}

#[test]
fn merge_into_missing_target_errors() {
    let fx = fixture();
    let err = fx.repo.merge_into("fleet/none", "main", "x").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn merge_into_checked_out_branch_is_refused() {
    let fx = fixture();
    fx.task("a", "fleet/tasks/r1/a", &[("a.txt", "a\n")]);
    let before = fx.head();
    let err = fx
        .repo
        .merge_into("main", "fleet/tasks/r1/a", "land a")
        .unwrap_err();
    assert!(err.to_string().contains("checked out"), "{err}");
    assert_eq!(fx.head(), before);
    assert_eq!(fx.status(), "");
}

#[test]
fn exclude_is_idempotent() {
    let fx = fixture();
    let file = fx.root.join(".git/info/exclude");
    fs::remove_dir_all(fx.root.join(".git/info")).ok();
    fx.repo.exclude("/.fleet/").unwrap();
    fx.repo.exclude("/.fleet/").unwrap();
    fx.repo.exclude("*.log").unwrap();
    fx.repo.exclude("/.fleet/").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "/.fleet/\n*.log\n");

    // Appending to a file without a trailing newline keeps lines separate.
    fs::write(&file, "# comment").unwrap();
    fx.repo.exclude("/.fleet/").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "# comment\n/.fleet/\n");

    // It is effective, also from a linked worktree's Repo.
    fs::create_dir(fx.root.join(".fleet")).unwrap();
    fs::write(fx.root.join(".fleet/state"), "x").unwrap();
    assert_eq!(fx.status(), "");
    let wt = fx.wts.join("a");
    fx.repo.add_worktree(&wt, "fleet/a", "main").unwrap();
    Repo::open(&wt).unwrap().exclude("*.tmp").unwrap();
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "# comment\n/.fleet/\n*.tmp\n"
    );
}

#[test]
fn list_worktrees_and_branches() {
    let fx = fixture();
    fx.repo
        .add_worktree(&fx.wts.join("a"), "fleet/tasks/r1/a", "main")
        .unwrap();
    fx.repo
        .add_worktree(&fx.wts.join("b"), "fleet/tasks/r1/b", "main")
        .unwrap();
    fx.repo.set_branch("fleet/tasks/r10/c", "main").unwrap();
    fx.repo.set_branch("other", "main").unwrap();

    let wts = fx.repo.list_worktrees().unwrap();
    assert_eq!(wts.len(), 3);
    assert_eq!(wts[0].path, fx.root);
    assert_eq!(wts[0].branch.as_deref(), Some("main"));
    assert_eq!(wts[0].head, Some(fx.head()));
    let a = wts.iter().find(|w| w.path == fx.wts.join("a")).unwrap();
    assert_eq!(a.branch.as_deref(), Some("fleet/tasks/r1/a"));
    assert_eq!(a.head, Some(fx.head()));

    assert_eq!(
        fx.repo.list_branches("fleet/tasks/r1/").unwrap(),
        ["fleet/tasks/r1/a", "fleet/tasks/r1/b"]
    );
    assert_eq!(
        fx.repo.list_branches("fleet/tasks/r1").unwrap(),
        ["fleet/tasks/r1/a", "fleet/tasks/r1/b"]
    );
    assert_eq!(
        fx.repo.list_branches("fleet/").unwrap(),
        ["fleet/tasks/r1/a", "fleet/tasks/r1/b", "fleet/tasks/r10/c"]
    );
    assert_eq!(
        fx.repo.list_branches("").unwrap(),
        [
            "fleet/tasks/r1/a",
            "fleet/tasks/r1/b",
            "fleet/tasks/r10/c",
            "main",
            "other"
        ]
    );
    assert!(fx.repo.list_branches("nothing/").unwrap().is_empty());
}

#[test]
fn remove_worktree_present_and_missing() {
    let fx = fixture();
    let a = fx.wts.join("a");
    let b = fx.wts.join("b");
    fx.repo.add_worktree(&a, "fleet/a", "main").unwrap();
    fx.repo.add_worktree(&b, "fleet/b", "main").unwrap();
    fs::write(a.join("dirty.txt"), "x").unwrap();

    fx.repo.remove_worktree(&a).unwrap();
    assert!(!a.exists());
    // Already gone: fine.
    fx.repo.remove_worktree(&a).unwrap();
    fx.repo
        .remove_worktree(&fx.wts.join("never-existed"))
        .unwrap();
    // Vanished directory: the registration is pruned.
    fs::remove_dir_all(&b).unwrap();
    fx.repo.remove_worktree(&b).unwrap();
    assert_eq!(fx.repo.list_worktrees().unwrap().len(), 1);
    // Branches survive worktree removal.
    assert!(fx.repo.branch_tip("fleet/a").unwrap().is_some());
    fx.repo.prune_worktrees().unwrap();
}

#[test]
fn log_subjects_and_errors_carry_command() {
    let fx = fixture();
    let log = fx.repo.log_subjects("main").unwrap();
    assert_eq!(log, [(fx.head(), "initial".to_string())]);
    let err = fx.repo.log_subjects("no-such-rev").unwrap_err();
    match err {
        GitError::Command { cmd, stderr } => {
            assert!(cmd.starts_with("git -C "), "{cmd}");
            assert!(cmd.contains("log"), "{cmd}");
            assert!(!stderr.is_empty());
            assert_eq!(stderr, stderr.trim());
        }
        other => panic!("expected Command error, got {other:?}"),
    }
}

#[test]
fn commit_all_refuses_a_directory_that_is_not_a_worktree_top() {
    let f = fixture();
    // A leftover directory where a worktree should have been: inside the main worktree.
    let dir = f.root.join("not-a-worktree");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("x.txt"), "x\n").unwrap();
    let main_before = f.head();
    assert!(!f.repo.is_worktree_root(&dir).unwrap());
    assert!(f.repo.commit_all(&dir, "must not land").is_err());
    assert_eq!(f.head(), main_before, "nothing may be committed on main");
    let wt = f.wts.join("real");
    f.repo
        .add_worktree(&wt, "fleet/tasks/r/real", "main")
        .unwrap();
    assert!(f.repo.is_worktree_root(&wt).unwrap());
}

#[test]
fn find_merge_names_the_commit_that_landed_a_source() {
    let f = fixture();
    f.repo.set_branch("fleet/runs/r", &f.head()).unwrap();
    let a = f.task("a", "fleet/tasks/r/a", &[("a.txt", "a\n")]);
    let merged = match f.repo.merge_into("fleet/runs/r", &a, "merge a").unwrap() {
        MergeOutcome::Merged { commit } => commit,
        other => panic!("{other:?}"),
    };
    assert_eq!(f.repo.find_merge("fleet/runs/r", &a).unwrap(), Some(merged));
    let b = f.task("b", "fleet/tasks/r/b", &[("b.txt", "b\n")]);
    assert_eq!(f.repo.find_merge("fleet/runs/r", &b).unwrap(), None);
}

#[test]
fn concurrent_worktree_administration_does_not_race() {
    let f = fixture();
    let start = f.head();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (repo, wts, start) = (f.repo.clone(), f.wts.clone(), start.clone());
            s.spawn(move || {
                for i in 0..6 {
                    let path = wts.join(format!("t{t}-{i}"));
                    repo.add_worktree(&path, &format!("fleet/tasks/r/t{t}-{i}"), &start)
                        .unwrap();
                    repo.list_worktrees().unwrap();
                    if i % 2 == 0 {
                        repo.remove_worktree(&path).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(f.repo.list_worktrees().unwrap().len(), 1 + 4 * 3);
}

#[test]
fn a_worktree_cut_short_is_not_complete() {
    let f = fixture();
    let wt = f.wts.join("w");
    f.repo.add_worktree(&wt, "fleet/tasks/r/w", "main").unwrap();
    assert!(f.repo.is_complete_worktree(&wt).unwrap());
    // What a killed `worktree add` leaves: the registration and a partial checkout, no marker.
    let gitdir = fs::read_to_string(wt.join(".git")).unwrap();
    let gitdir = PathBuf::from(gitdir.trim().strip_prefix("gitdir: ").unwrap());
    fs::remove_file(gitdir.join("fleet-complete")).unwrap();
    assert!(!f.repo.is_complete_worktree(&wt).unwrap());
    assert!(
        !f.repo
            .is_complete_worktree(&f.wts.join("nothing-here"))
            .unwrap()
    );
    // Re-adding repairs it.
    f.repo.add_worktree(&wt, "fleet/tasks/r/w", "main").unwrap();
    assert!(f.repo.is_complete_worktree(&wt).unwrap());
}

#[test]
fn changes_are_seen_whether_committed_or_not() {
    let f = fixture();
    f.repo.set_branch("fleet/runs/r", &f.head()).unwrap();
    let wt = f.wts.join("c");
    f.repo
        .add_worktree(&wt, "fleet/tasks/r/c", "fleet/runs/r")
        .unwrap();
    assert!(!f.repo.has_changes(&wt, "fleet/runs/r").unwrap());
    fs::write(wt.join("new.txt"), "n\n").unwrap();
    assert!(f.repo.has_changes(&wt, "fleet/runs/r").unwrap());
    assert!(f.repo.worktree_changes(&wt).unwrap().contains("new.txt"));
    f.repo.commit_all(&wt, "c").unwrap();
    assert!(
        f.repo.has_changes(&wt, "fleet/runs/r").unwrap(),
        "a commit of its own counts"
    );
}

#[test]
fn rebase_onto_a_moved_branch_then_conflict_left_for_resolution() {
    let fx = fixture();
    let base = fx.head();
    fx.repo.set_branch("integ", &base).unwrap();
    // Two tasks from the same base: `a` edits line one, `b` edits line one differently and
    // also adds a file.
    let wa = fx.wts.join("a");
    fx.repo.add_worktree(&wa, "task/a", &base).unwrap();
    fs::write(wa.join("f.txt"), "ONE-A\ntwo\nthree\n").unwrap();
    let a = fx.repo.commit_all(&wa, "a").unwrap().unwrap();
    let wb = fx.wts.join("b");
    fx.repo.add_worktree(&wb, "task/b", &base).unwrap();
    fs::write(wb.join("f.txt"), "ONE-B\ntwo\nthree\n").unwrap();
    fs::write(wb.join("new.txt"), "b\n").unwrap();
    let b = fx.repo.commit_all(&wb, "b").unwrap().unwrap();
    // A third task that touches another file rebases cleanly.
    let wc = fx.wts.join("c");
    fx.repo.add_worktree(&wc, "task/c", &base).unwrap();
    fs::write(wc.join("g.txt"), "g-c\n").unwrap();
    fx.repo.commit_all(&wc, "c").unwrap().unwrap();

    assert!(matches!(
        fx.repo.merge_into("integ", &a, "land a").unwrap(),
        MergeOutcome::Merged { .. }
    ));
    let tip = fx.repo.branch_tip("integ").unwrap().unwrap();

    match fx.repo.rebase_onto(&wc, &tip).unwrap() {
        fleet_git::RebaseOutcome::Rebased { tip: c2 } => {
            assert!(fx.repo.is_ancestor(&tip, &c2).unwrap());
            assert_eq!(
                fs::read_to_string(wc.join("f.txt")).unwrap(),
                "ONE-A\ntwo\nthree\n"
            );
            assert_eq!(fs::read_to_string(wc.join("g.txt")).unwrap(), "g-c\n");
        }
        other => panic!("expected a clean rebase, got {other:?}"),
    }

    // `b` conflicts: the rebase is aborted and the worktree is untouched.
    match fx.repo.rebase_onto(&wb, &tip).unwrap() {
        fleet_git::RebaseOutcome::Conflict { files } => assert_eq!(files, vec!["f.txt"]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(fx.repo.branch_tip("task/b").unwrap().unwrap(), b);
    assert_eq!(git(&wb, &["status", "--porcelain"]), "");

    // Left for resolution: markers in the file, the merge concluded by the next commit.
    let files = fx.repo.merge_for_resolution(&wb, &tip).unwrap();
    assert_eq!(files, vec!["f.txt"]);
    assert_eq!(
        fx.repo.files_with_conflict_markers(&wb, &files),
        vec!["f.txt".to_string()]
    );
    fs::write(wb.join("f.txt"), "ONE-A and ONE-B\ntwo\nthree\n").unwrap();
    assert!(fx.repo.files_with_conflict_markers(&wb, &files).is_empty());
    let resolved = fx.repo.commit_all(&wb, "resolve").unwrap().unwrap();
    assert!(fx.repo.is_ancestor(&tip, &resolved).unwrap());
    assert!(fx.repo.is_ancestor(&b, &resolved).unwrap());
    assert!(matches!(
        fx.repo.merge_into("integ", &resolved, "land b").unwrap(),
        MergeOutcome::Merged { .. }
    ));
    // Both commits are on the branch, once each.
    let log = fx.repo.log_subjects("integ").unwrap();
    assert_eq!(log.iter().filter(|(_, s)| s == "a").count(), 1);
    assert_eq!(log.iter().filter(|(_, s)| s == "b").count(), 1);
}

#[test]
fn abort_in_progress_cleans_a_half_done_merge_and_push_creates_the_branch() {
    let fx = fixture();
    let base = fx.head();
    let w = fx.wts.join("t");
    fx.repo.add_worktree(&w, "task/t", &base).unwrap();
    fs::write(w.join("f.txt"), "mine\n").unwrap();
    let mine = fx.repo.commit_all(&w, "mine").unwrap().unwrap();
    fs::write(fx.root.join("f.txt"), "theirs\n").unwrap();
    git(&fx.root, &["commit", "-q", "-am", "theirs"]);
    assert_eq!(
        fx.repo.merge_for_resolution(&w, "main").unwrap(),
        vec!["f.txt"]
    );
    fx.repo.abort_in_progress(&w).unwrap();
    assert_eq!(git(&w, &["status", "--porcelain"]), "");
    assert_eq!(git(&w, &["rev-parse", "HEAD"]), mine);

    let remote = fx._tmp.path().join("remote.git");
    git(
        fx._tmp.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    fx.repo.push(remote.to_str().unwrap(), "task/t").unwrap();
    assert_eq!(git(&remote, &["rev-parse", "refs/heads/task/t"]), mine);
    // Never forced: a push that would drop remote commits fails.
    fx.repo.set_branch("other", &base).unwrap();
    git(&remote, &["branch", "other", &mine]);
    assert!(fx.repo.push(remote.to_str().unwrap(), "other").is_err());
    assert_eq!(git(&remote, &["rev-parse", "refs/heads/other"]), mine);
}

#[test]
fn read_file_and_diff_between_commits() {
    let fx = fixture();
    let base = fx.head();
    let tip = fx.task("t", "task/t", &[("new.txt", "hello\n")]);
    assert_eq!(
        fx.repo.read_file(&tip, "new.txt").unwrap().as_deref(),
        Some("hello\n")
    );
    assert_eq!(fx.repo.read_file(&base, "new.txt").unwrap(), None);
    assert!(fx.repo.read_file("no-such-rev", "new.txt").is_err());
    let d = fx.repo.diff(&base, &tip, 10_000).unwrap();
    assert!(d.contains("new.txt") && d.contains("+hello"), "{d}");
    let short = fx.repo.diff(&base, &tip, 5).unwrap();
    assert!(short.contains("diff cut here"), "{short}");
}
