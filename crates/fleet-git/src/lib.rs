//! Git plumbing for task workspaces.
//!
//! This crate owns every git operation Fleet performs: opening the user's
//! repository, creating and removing the per-task worktrees, managing task
//! branches, committing a task's work, and merging finished tasks into a
//! target branch without touching any worktree (`git merge-tree` +
//! `git commit-tree` + a compare-and-swap `git update-ref`).
//!
//! It is implemented by running the `git` CLI synchronously, one invocation
//! per operation wherever possible. Every invocation runs with `-C <dir>`,
//! with `GIT_DIR`-like variables from the parent environment removed, with a
//! fixed `Fleet <fleet@localhost>` identity (so it works where no git user is
//! configured) and with commit signing disabled. User hooks are kept.
//!
//! It must not know about tasks, runs, agents or the store: callers pass
//! plain paths, branch names, revisions and messages, and get back shas,
//! file names and [`MergeOutcome`]s. Naming conventions such as
//! `fleet/tasks/<run>/<task>` belong to the engine, not here.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod commit_file;
mod policy;
mod repair;
pub use repair::{Repair, STALE_LOCK_AGE};

/// The file in the common git directory whose `flock` serializes Fleet's worktree and ref
/// administration across processes (see [`Repo::admin_lock`]).
const ADMIN_LOCK_FILE: &str = "fleet-admin.flock";

/// Errors from git operations.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The path is not inside a git repository with a working tree.
    #[error("not a git repository: {0}")]
    NotARepo(PathBuf),
    /// A git command failed; `cmd` is its command line, `stderr` its
    /// (trimmed) error output or a description of what went wrong.
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    /// Spawning git or accessing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, GitError>;

/// Identity used for every commit Fleet creates.
const IDENTITY_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "Fleet"),
    ("GIT_AUTHOR_EMAIL", "fleet@localhost"),
    ("GIT_COMMITTER_NAME", "Fleet"),
    ("GIT_COMMITTER_EMAIL", "fleet@localhost"),
];

/// How many times `merge_into` re-reads the target tip and retries when the
/// branch moved between reading it and updating it.
const MERGE_RETRIES: usize = 3;

/// `git -C dir` as Fleet runs every git command: from the environment of
/// [`fleet_secrets::env::git_env`] (git runs the repository's hooks, which must not see Fleet's
/// keys; and a `GIT_DIR` inherited from a parent git would point it at another repository),
/// committing as Fleet, never signing.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "commit.gpgsign=false"])
        .env_clear()
        .envs(fleet_secrets::env::git_env())
        .envs(IDENTITY_ENV.iter().copied());
    cmd
}

/// One git invocation being built.
struct Git {
    cmd: Command,
    display: String,
}

impl Git {
    fn new(dir: &Path) -> Git {
        Git {
            cmd: command(dir),
            display: format!("git -C {}", dir.display()),
        }
    }

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Git {
        let arg = arg.as_ref();
        self.display.push(' ');
        self.display.push_str(&arg.to_string_lossy());
        self.cmd.arg(arg);
        self
    }

    fn args<I, S>(mut self, args: I) -> Git
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Runs the command and returns its raw output, whatever the exit status.
    fn output(mut self) -> Result<(String, Output)> {
        match self.cmd.output() {
            Ok(out) => Ok((self.display, out)),
            Err(e) => Err(GitError::Io(io::Error::new(
                e.kind(),
                format!("running `{}`: {e}", self.display),
            ))),
        }
    }

    /// Runs the command, requires success and returns its stdout.
    fn run(self) -> Result<String> {
        let (display, out) = self.output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failure(display, &out))
        }
    }
}

/// The error for a git command that exited unsuccessfully.
fn failure(cmd: String, out: &Output) -> GitError {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stderr = if stderr.is_empty() {
        match out.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        }
    } else {
        stderr
    };
    GitError::Command { cmd, stderr }
}

/// An error about a git command that did not fail by itself but whose result
/// is unusable.
fn bad(cmd: impl Into<String>, msg: impl Into<String>) -> GitError {
    GitError::Command {
        cmd: cmd.into(),
        stderr: msg.into(),
    }
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_null_oid(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// Makes `path` absolute (relative to the process's current directory)
/// without touching the file system, so git, which runs with `-C <repo>`,
/// interprets it the way the caller meant.
fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// File in a worktree's private git dir that [`Repo::add_worktree`] writes once it is complete.
const COMPLETE_MARKER: &str = "fleet-complete";

/// The private git directory of a linked worktree (from its `.git` file).
fn worktree_gitdir(worktree: &Path) -> Result<PathBuf> {
    let text = fs::read_to_string(worktree.join(".git"))?;
    let dir = text.trim().strip_prefix("gitdir: ").ok_or_else(|| {
        bad(
            format!("{}/.git", worktree.display()),
            "not a linked worktree",
        )
    })?;
    let dir = Path::new(dir);
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        worktree.join(dir)
    })
}

/// Whether the folder holds nothing but a `.git` (or nothing at all): what a `worktree add`
/// killed before its checkout leaves.
fn holds_only_dot_git(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|list| list.flatten().all(|e| e.file_name() == ".git"))
}

/// Removes a file that may vanish concurrently; `true` if this call removed it.
fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The repository-wide admin lock while held (see `Repo::admin_lock`); the file's lock goes
/// with its descriptor, before the mutex (fields drop in order).
struct AdminGuard<'a> {
    _file: fs::File,
    _held: std::sync::MutexGuard<'a, ()>,
}

/// A worktree as reported by `git worktree list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// Absolute path of the worktree.
    pub path: PathBuf,
    /// Sha of its `HEAD`, `None` for a bare repository or an unborn branch.
    pub head: Option<String>,
    /// Short name of the checked-out branch (e.g. `fleet/tasks/r1/a`),
    /// `None` when detached or bare.
    pub branch: Option<String>,
}

/// The result of [`Repo::merge_into`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// A merge commit was created and the target branch now points to it.
    Merged { commit: String },
    /// The source was already contained in the target; nothing changed.
    AlreadyMerged,
    /// The merge has conflicts in these files (sorted, deduplicated); the
    /// target branch was left unchanged.
    Conflict { files: Vec<String> },
}

/// The result of [`Repo::rebase_onto`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebaseOutcome {
    /// The worktree's branch now sits on top of `onto`; its new tip.
    Rebased { tip: String },
    /// Replaying the branch conflicted in these files; the rebase was aborted and the
    /// worktree is as it was.
    Conflict { files: Vec<String> },
}

/// A git repository with a working tree.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Top level of the worktree the repository was opened from.
    root: PathBuf,
    /// The common git directory (shared by all worktrees), absolute.
    common_dir: PathBuf,
    /// Worktree administration (`worktree add/remove/prune/list`) is serialized: git reads
    /// other worktrees' half-written admin files when these run concurrently, and fails.
    /// Within the process by this mutex, across processes by a `flock` (see `admin_lock`).
    admin: std::sync::Arc<std::sync::Mutex<()>>,
    /// An environment variable set on every git process, so a supervisor can find them.
    tag: Option<(String, String)>,
    /// The directories [`Repo::repair`] was given (Fleet's own worktrees): a failing
    /// `add_worktree` repairs them again before its retry.
    owned: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl Repo {
    /// Opens the repository containing `path` (which may be a subdirectory).
    ///
    /// Fails with [`GitError::NotARepo`] if `path` is not inside a git
    /// working tree.
    /// Clones `url` (any URL or path git accepts) into `dest` and opens the clone.
    pub fn clone_from(url: &str, dest: &Path) -> Result<Repo> {
        let dest = absolute(dest)?;
        let parent = dest.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent)?;
        Git::new(parent)
            .args([
                "clone",
                "--quiet",
                "--no-hardlinks",
                "--end-of-options",
                url,
            ])
            .arg(&dest)
            .run()?;
        Repo::open(&dest)
    }

    pub fn open(path: &Path) -> Result<Repo> {
        let (_, out) = Git::new(path)
            .args([
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--git-common-dir",
            ])
            .output()?;
        if !out.status.success() {
            return Err(GitError::NotARepo(path.to_path_buf()));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        match (lines.next(), lines.next()) {
            (Some(root), Some(common)) if !root.is_empty() && !common.is_empty() => Ok(Repo {
                root: PathBuf::from(root),
                common_dir: PathBuf::from(common),
                admin: Default::default(),
                tag: None,
                owned: Default::default(),
            }),
            _ => Err(GitError::NotARepo(path.to_path_buf())),
        }
    }

    /// Top-level directory of the repository's worktree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn git(&self) -> Git {
        self.git_in(&self.root)
    }

    fn git_in(&self, dir: &Path) -> Git {
        let mut g = Git::new(dir);
        if let Some((k, v)) = &self.tag {
            g.cmd.env(k, v);
        }
        g
    }

    /// The same repository, with `key=value` in the environment of every git it runs.
    pub fn tagged(&self, key: &str, value: &str) -> Repo {
        Repo {
            tag: Some((key.to_string(), value.to_string())),
            ..self.clone()
        }
    }

    /// Takes the repository-wide admin lock: this process's mutex, then an exclusive `flock`
    /// on `<git common dir>/fleet-admin.flock` (not `*.lock`: it is no git lock and stays), which every Fleet process working on the
    /// repository takes too, so two of them never add, remove or prune worktrees, or update
    /// refs they share, at the same time (the mutex first: threads of one process queue on
    /// it rather than each holding a descriptor). Released when the guard drops.
    fn admin_lock(&self) -> Result<AdminGuard<'_>> {
        let held = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.common_dir.join(ADMIN_LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        file.lock()
            .map_err(|e| io::Error::new(e.kind(), format!("locking {}: {e}", path.display())))?;
        Ok(AdminGuard {
            _file: file,
            _held: held,
        })
    }

    /// Whether `path` is the top of a worktree of this repository (not just a directory
    /// inside some other worktree, where a commit would land on the wrong branch).
    pub fn is_worktree_root(&self, path: &Path) -> Result<bool> {
        let path = absolute(path)?;
        if !path.join(".git").exists() {
            return Ok(false);
        }
        let (_, out) = self
            .git_in(&path)
            .args([
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--git-common-dir",
            ])
            .output()?;
        if !out.status.success() {
            return Ok(false);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let top = lines.next().map(PathBuf::from);
        let common = lines.next().map(PathBuf::from);
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        Ok(top.is_some_and(|t| same(&t, &path))
            && common.is_some_and(|c| same(&c, &self.common_dir)))
    }

    /// Whether `folder` holds only a `.git` file linking it to this repository's worktree
    /// administration, and is no worktree of it: what a `worktree add` killed before its
    /// checkout (or whose entry was removed) leaves. `worktree add` refuses such a path.
    pub(crate) fn is_dead_worktree_folder(&self, folder: &Path) -> Result<bool> {
        if !folder.join(".git").is_file() || !holds_only_dot_git(folder) {
            return Ok(false);
        }
        let Ok(link) = worktree_gitdir(folder) else {
            return Ok(false);
        };
        let admin = self.common_dir.join("worktrees");
        let admin_real = admin.canonicalize().unwrap_or_else(|_| admin.clone());
        let parent = link.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent_real = parent.canonicalize().unwrap_or_else(|_| parent.clone());
        let ours = parent == admin || parent_real == admin_real;
        Ok(ours && !self.is_worktree_root(folder)?)
    }

    /// Whether `path` is a worktree that [`Repo::add_worktree`] finished creating.
    pub fn is_complete_worktree(&self, path: &Path) -> Result<bool> {
        let path = absolute(path)?;
        let complete = worktree_gitdir(&path)
            .map(|d| d.join(COMPLETE_MARKER).exists())
            .unwrap_or(false);
        Ok(complete && self.is_worktree_root(&path)?)
    }

    /// What a worktree holds beyond its last commit, for a person or an agent: `git status
    /// --short` and the diffstat of tracked changes.
    pub fn worktree_changes(&self, worktree: &Path) -> Result<String> {
        let status = self
            .git_in(worktree)
            .args(["status", "--short", "--untracked-files=all"])
            .run()?;
        let stat = self
            .git_in(worktree)
            .args(["diff", "--stat", "HEAD"])
            .run()?;
        Ok(format!("{status}{stat}"))
    }

    /// Every line the worktree adds to where it forked off `base` (committed or not, new files
    /// included), as `(path, line number in the new file, text)`: what would land. New files
    /// are only marked as to be added (`git add -N`): their content is read from the worktree,
    /// never written into the repository's objects, where a secret would outlive a refusal.
    pub fn added_lines(&self, worktree: &Path, base: &str) -> Result<Vec<(String, usize, String)>> {
        self.git_in(worktree)
            .args(["add", "--intent-to-add", "--all"])
            .run()?;
        let fork = self
            .git_in(worktree)
            .args(["merge-base", "--end-of-options", "HEAD", base])
            .run()?;
        let patch = self
            .git_in(worktree)
            .args([
                "diff",
                "--no-ext-diff",
                "--no-color",
                "--no-renames",
                "--text",
                "--unified=0",
                "--end-of-options",
                fork.trim(),
                "--",
            ])
            .run()?;
        Ok(added_lines_of(&patch))
    }

    /// Whether the worktree differs from where it forked off `base`: uncommitted changes, or
    /// commits of its own.
    pub fn has_changes(&self, worktree: &Path, base: &str) -> Result<bool> {
        let status = self
            .git_in(worktree)
            .args(["status", "--porcelain", "--untracked-files=all"])
            .run()?;
        if !status.trim().is_empty() {
            return Ok(true);
        }
        let own = self
            .git_in(worktree)
            .args([
                "rev-list",
                "--count",
                "--end-of-options",
                &format!("{base}..HEAD"),
                "--",
            ])
            .run()?;
        Ok(own.trim() != "0")
    }

    /// The merge commit on `target` whose second parent is `source`: how `source` landed.
    pub fn find_merge(&self, target: &str, source: &str) -> Result<Option<String>> {
        let source = self.resolve(source)?;
        let out = self
            .git()
            .args([
                "rev-list",
                "--merges",
                "--parents",
                "-n",
                "10000",
                "--end-of-options",
                target,
                "--",
            ])
            .run()?;
        Ok(out.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let commit = it.next()?;
            let _first = it.next()?;
            it.any(|p| p == source).then(|| commit.to_string())
        }))
    }

    /// Resolves `rev` to the full sha of the commit it names.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        let git = self.git().args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ]);
        let (cmd, out) = git.output()?;
        let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && is_oid(&sha) {
            Ok(sha)
        } else if out.status.code() == Some(1) {
            Err(bad(
                cmd,
                format!("unknown revision or not a commit: '{rev}'"),
            ))
        } else {
            Err(failure(cmd, &out))
        }
    }

    /// The sha `refs/heads/<branch>` points to, or `None` if there is no such
    /// branch.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<String>> {
        // `for-each-ref` matches exactly, without rev-parse's DWIM rules, and
        // reports a missing branch as an empty (successful) listing. Its
        // pattern also matches refs below `<branch>/`, hence the filter.
        let refname = format!("refs/heads/{branch}");
        let git = self.git().args([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            &refname,
        ]);
        let cmd = git.display.clone();
        let out = git.run()?;
        for line in out.lines() {
            if let Some((sha, name)) = line.split_once(' ')
                && name == refname
            {
                return if is_oid(sha) {
                    Ok(Some(sha.to_string()))
                } else {
                    Err(bad(cmd, format!("unexpected output: {line:?}")))
                };
            }
        }
        Ok(None)
    }

    /// Creates `refs/heads/<branch>` at `sha`, or moves it there.
    ///
    /// Refuses to move a branch that is checked out in a worktree (that
    /// would silently desynchronise the worktree from its branch).
    pub fn set_branch(&self, branch: &str, sha: &str) -> Result<()> {
        let _admin = self.admin_lock()?;
        self.git()
            .args(["branch", "--force", "--no-track", "--", branch, sha])
            .run()?;
        Ok(())
    }

    /// Creates `refs/heads/<branch>` at `sha` only if no such branch exists (a compare-and-swap
    /// against "absent", so of two processes creating it at once exactly one does). `false`,
    /// and nothing changed, if it existed.
    pub fn create_branch(&self, branch: &str, sha: &str) -> Result<bool> {
        let refname = format!("refs/heads/{branch}");
        let sha = self.resolve(sha)?;
        let _admin = self.admin_lock()?;
        let (cmd, out) = self
            .git()
            .args(["update-ref", "-m", "fleet: create", &refname, &sha, ""])
            .output()?;
        if out.status.success() {
            return Ok(true);
        }
        match self.branch_tip(branch)? {
            Some(_) => Ok(false),
            None => Err(failure(cmd, &out)),
        }
    }

    /// Deletes `refs/heads/<branch>`; succeeds if it does not exist.
    ///
    /// Refuses to delete a branch that is checked out in a worktree.
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        let _admin = self.admin_lock()?;
        let (cmd, out) = self
            .git()
            .args(["branch", "--delete", "--force", "--", branch])
            .output()?;
        if out.status.success() || self.branch_tip(branch)?.is_none() {
            Ok(())
        } else {
            Err(failure(cmd, &out))
        }
    }

    /// Appends `pattern` as a line of `<git common dir>/info/exclude` unless
    /// that line is already present.
    pub fn exclude(&self, pattern: &str) -> Result<()> {
        if pattern.contains(['\n', '\r']) {
            return Err(GitError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("exclude pattern contains a line break: {pattern:?}"),
            )));
        }
        let info = self.common_dir.join("info");
        let file = info.join("exclude");
        let existing = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        if existing
            .lines()
            .any(|line| line.trim_end_matches('\r') == pattern)
        {
            return Ok(());
        }
        fs::create_dir_all(&info)?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?;
        let sep = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        f.write_all(format!("{sep}{pattern}\n").as_bytes())?;
        Ok(())
    }

    /// Creates a worktree at `path` with `branch` checked out, (re)setting
    /// the branch to `start` (`git worktree add -B`).
    ///
    /// If `path` already exists as a worktree of this repository (left over
    /// by a crashed attempt), it is force-removed first; a folder there that holds only a
    /// `.git` no registered worktree owns (a killed `worktree add`) is removed too. If the
    /// addition fails, what a dead git or Fleet left beside `path` is repaired
    /// ([`Repo::repair`] with `path`'s parent as Fleet's directory), stale registrations are
    /// pruned, and the addition is retried once.
    pub fn add_worktree(&self, path: &Path, branch: &str, start: &str) -> Result<()> {
        let path = absolute(path)?;
        let _admin = self.admin_lock()?;
        if self.add_worktree_locked(&path, branch, start).is_ok() {
            return Ok(());
        }
        let mut scopes = self.owned.lock().unwrap_or_else(|e| e.into_inner()).clone();
        scopes.extend(path.parent().map(Path::to_path_buf));
        for scope in scopes {
            self.repair_locked(&scope)?;
        }
        self.git().args(["worktree", "prune"]).run()?;
        self.add_worktree_locked(&path, branch, start)
    }

    fn add_worktree_locked(&self, path: &Path, branch: &str, start: &str) -> Result<()> {
        if path.exists() {
            // Only the crash-recovery path pays for this extra call. If the
            // directory is not a worktree, the removal fails and `worktree
            // add` reports why the directory cannot be used.
            let _ = self
                .git()
                .args(["worktree", "remove", "--force", "--force"])
                .arg(path)
                .output()?;
            if path.exists() && self.is_dead_worktree_folder(path)? {
                fs::remove_dir_all(path)?;
            }
        }
        self.git()
            .args(["worktree", "add", "--quiet", "-B", branch, "--"])
            .arg(path)
            .arg(start)
            .run()?;
        // Written last: a worktree without it was cut short (a killed `worktree add` leaves a
        // half checkout behind that would otherwise be committed as if it were the task's work).
        let gitdir = worktree_gitdir(path)?;
        fs::write(gitdir.join(COMPLETE_MARKER), b"")?;
        Ok(())
    }

    /// Removes the worktree at `path`, discarding any changes in it. If the
    /// directory no longer exists, stale worktree registrations are pruned
    /// instead.
    /// (Twice forced: fleet owns its worktrees, including ones a killed `worktree add` left
    /// locked as "initializing".)
    pub fn remove_worktree(&self, path: &Path) -> Result<()> {
        let path = absolute(path)?;
        if !path.exists() {
            return self.prune_worktrees();
        }
        let _admin = self.admin_lock()?;
        self.git()
            .args(["worktree", "remove", "--force", "--force"])
            .arg(&path)
            .run()?;
        Ok(())
    }

    /// Removes lock files a killed git left behind: the index lock of `worktree` (if given)
    /// and ref locks under `refs/heads/<ref_prefix>`. Only call this while no other process
    /// can be using them (the caller holds its own lock on everything under the prefix).
    /// Returns the paths removed.
    pub fn clear_stale_locks(
        &self,
        worktree: Option<&Path>,
        ref_prefix: &str,
    ) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        if let Some(wt) = worktree {
            // A linked worktree's `.git` is a file naming its private git dir.
            if let Ok(dir) = worktree_gitdir(wt)
                && let Ok(entries) = fs::read_dir(&dir)
            {
                for entry in entries.flatten() {
                    let lock = entry.path();
                    if lock.extension().is_some_and(|e| e == "lock") && remove_if_present(&lock)? {
                        removed.push(lock);
                    }
                }
            }
        }
        let refs = self.common_dir.join("refs/heads").join(ref_prefix);
        let mut stack = vec![refs];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "lock") && remove_if_present(&path)?
                {
                    removed.push(path);
                }
            }
        }
        // The integration branch itself: refs/heads/<prefix-parent>/<name>.lock is a sibling file.
        let single = self
            .common_dir
            .join("refs/heads")
            .join(format!("{ref_prefix}.lock"));
        if remove_if_present(&single)? {
            removed.push(single);
        }
        Ok(removed)
    }

    /// Forgets worktrees whose directories have vanished.
    pub fn prune_worktrees(&self) -> Result<()> {
        let _admin = self.admin_lock()?;
        self.git().args(["worktree", "prune"]).run()?;
        Ok(())
    }

    /// All worktrees of the repository, the main one first.
    pub fn list_worktrees(&self) -> Result<Vec<Worktree>> {
        let _admin = self.admin_lock()?;
        let out = self
            .git()
            .args(["worktree", "list", "--porcelain", "-z"])
            .run()?;
        let mut worktrees = Vec::new();
        let mut current: Option<Worktree> = None;
        for field in out.split('\0') {
            if let Some(path) = field.strip_prefix("worktree ") {
                worktrees.extend(current.take());
                current = Some(Worktree {
                    path: PathBuf::from(path),
                    head: None,
                    branch: None,
                });
            } else if let Some(wt) = current.as_mut() {
                if let Some(head) = field.strip_prefix("HEAD ") {
                    wt.head = (!is_null_oid(head)).then(|| head.to_string());
                } else if let Some(branch) = field.strip_prefix("branch ") {
                    let short = branch.strip_prefix("refs/heads/").unwrap_or(branch);
                    wt.branch = Some(short.to_string());
                }
            }
        }
        worktrees.extend(current);
        Ok(worktrees)
    }

    /// Short names of the branches under `refs/heads/<prefix>`, sorted.
    ///
    /// The prefix matches whole path components: `fleet/tasks/r1` (or
    /// `fleet/tasks/r1/`) matches `fleet/tasks/r1/a` but not
    /// `fleet/tasks/r10/a`. An empty prefix lists all branches.
    pub fn list_branches(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .git()
            .args(["for-each-ref", "--format=%(refname)"])
            .arg(format!("refs/heads/{prefix}"))
            .run()?;
        Ok(out
            .lines()
            .filter_map(|r| r.strip_prefix("refs/heads/"))
            .map(str::to_string)
            .collect())
    }

    /// Stages everything in `worktree` (`git add -A`, honouring ignore
    /// rules) and commits it with `message`. Returns the new `HEAD` sha, or
    /// `None` if there was nothing to commit.
    pub fn commit_all(&self, worktree: &Path, message: &str) -> Result<Option<String>> {
        // A directory that is not a worktree's top would commit into whatever repository
        // contains it — possibly the user's own branch.
        if !self.is_worktree_root(worktree)? {
            return Err(bad(
                format!("git -C {} commit", worktree.display()),
                "not the top of a worktree of this repository; refusing to commit",
            ));
        }
        self.git_in(worktree).args(["add", "-A"]).run()?;
        let (cmd, out) = self
            .git_in(worktree)
            .args(["diff", "--cached", "--quiet", "--no-ext-diff"])
            .output()?;
        match out.status.code() {
            Some(0) => return Ok(None),
            Some(1) => {}
            _ => return Err(failure(cmd, &out)),
        }
        self.git_in(worktree)
            .args(["commit", "--quiet", "-m", message])
            .run()?;
        let git = self
            .git_in(worktree)
            .args(["rev-parse", "--verify", "HEAD"]);
        let cmd = git.display.clone();
        let sha = git.run()?.trim().to_string();
        if is_oid(&sha) {
            Ok(Some(sha))
        } else {
            Err(bad(cmd, format!("unexpected output: {sha:?}")))
        }
    }

    /// Whether `ancestor` is an ancestor of (or the same commit as)
    /// `descendant`.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool> {
        let (cmd, out) = self
            .git()
            .args([
                "merge-base",
                "--is-ancestor",
                "--end-of-options",
                ancestor,
                descendant,
            ])
            .output()?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failure(cmd, &out)),
        }
    }

    /// Merges `source` into `target_branch` without touching any worktree.
    ///
    /// * If `source` is already contained in the target: `AlreadyMerged`
    ///   (so re-running a merge after a crash never merges twice).
    /// * If the merge conflicts: `Conflict` with the conflicted files; the
    ///   target is unchanged.
    /// * Otherwise a merge commit (always two parents, even when a
    ///   fast-forward would be possible) is created and the branch is moved
    ///   to it with a compare-and-swap; if the branch moved meanwhile, the
    ///   merge is recomputed against the new tip (up to 3 times).
    ///
    /// Fails if the target branch does not exist, or if it is checked out in
    /// a worktree (moving it would desynchronise that worktree from its
    /// branch and risk the merged work being reverted by its next commit).
    pub fn merge_into(
        &self,
        target_branch: &str,
        source: &str,
        message: &str,
    ) -> Result<MergeOutcome> {
        let refname = format!("refs/heads/{target_branch}");
        let missing_target = || {
            bad(
                format!("git -C {} for-each-ref {refname}", self.root.display()),
                format!("target branch '{target_branch}' does not exist"),
            )
        };
        let mut tip = self.branch_tip(target_branch)?.ok_or_else(missing_target)?;
        if let Some(wt) = self
            .list_worktrees()?
            .into_iter()
            .find(|wt| wt.branch.as_deref() == Some(target_branch))
        {
            return Err(bad(
                format!("git -C {} worktree list", self.root.display()),
                format!(
                    "target branch '{target_branch}' is checked out in worktree {}; \
                     refusing to move it underneath that worktree",
                    wt.path.display()
                ),
            ));
        }
        let source = self.resolve(source)?;
        let mut attempt = 0;
        loop {
            if self.is_ancestor(&source, &tip)? {
                return Ok(MergeOutcome::AlreadyMerged);
            }
            let tree = match self.merge_tree(&tip, &source)? {
                Ok(tree) => tree,
                Err(files) => return Ok(MergeOutcome::Conflict { files }),
            };
            let git = self.git().args([
                "commit-tree",
                &tree,
                "-p",
                &tip,
                "-p",
                &source,
                "-m",
                message,
            ]);
            let cmd = git.display.clone();
            let commit = git.run()?.trim().to_string();
            if !is_oid(&commit) {
                return Err(bad(cmd, format!("unexpected output: {commit:?}")));
            }
            let reflog = format!("fleet: merge {source} into {target_branch}");
            let admin = self.admin_lock()?;
            let (cmd, out) = self
                .git()
                .args(["update-ref", "-m", &reflog, &refname, &commit, &tip])
                .output()?;
            drop(admin);
            if out.status.success() {
                return Ok(MergeOutcome::Merged { commit });
            }
            // The compare-and-swap failed: retry only if the branch moved.
            let now = self.branch_tip(target_branch)?.ok_or_else(missing_target)?;
            if now == tip || attempt == MERGE_RETRIES {
                return Err(failure(cmd, &out));
            }
            attempt += 1;
            tip = now;
        }
    }

    /// Runs `git merge-tree --write-tree` on two commits. Returns the merged
    /// tree, or the sorted, deduplicated conflicted files.
    fn merge_tree(
        &self,
        ours: &str,
        theirs: &str,
    ) -> Result<std::result::Result<String, Vec<String>>> {
        let (cmd, out) = self
            .git()
            .args([
                "merge-tree",
                "--write-tree",
                "-z",
                "--name-only",
                "--no-messages",
                ours,
                theirs,
            ])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut fields = stdout.split('\0');
        let tree = fields.next().unwrap_or_default().trim();
        match out.status.code() {
            Some(0) if is_oid(tree) => Ok(Ok(tree.to_string())),
            Some(1) if is_oid(tree) => {
                let mut files: Vec<String> = fields
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect();
                files.sort();
                files.dedup();
                Ok(Err(files))
            }
            _ => Err(failure(cmd, &out)),
        }
    }

    /// Ends a rebase or merge left in progress in `worktree` (by a killed fleet, say), putting
    /// the worktree back on its branch as it was committed.
    pub fn abort_in_progress(&self, worktree: &Path) -> Result<()> {
        let gitdir = worktree_gitdir(worktree)?;
        if gitdir.join("rebase-merge").exists() || gitdir.join("rebase-apply").exists() {
            self.git_in(worktree).args(["rebase", "--abort"]).run()?;
        }
        if gitdir.join("MERGE_HEAD").exists() {
            self.git_in(worktree).args(["merge", "--abort"]).run()?;
        }
        Ok(())
    }

    /// Rebases the branch checked out in `worktree` onto `onto`. On a conflict the rebase is
    /// aborted (nothing changes) and the conflicting files are reported.
    pub fn rebase_onto(&self, worktree: &Path, onto: &str) -> Result<RebaseOutcome> {
        self.abort_in_progress(worktree)?;
        let (cmd, out) = self
            .git_in(worktree)
            .args(["rebase", "--no-autostash", "--no-verify", "--quiet", onto])
            .output()?;
        if out.status.success() {
            let tip = self
                .git_in(worktree)
                .args(["rev-parse", "--verify", "HEAD"])
                .run()?
                .trim()
                .to_string();
            return Ok(RebaseOutcome::Rebased { tip });
        }
        let files = self.unmerged_files(worktree)?;
        let gitdir = worktree_gitdir(worktree)?;
        if gitdir.join("rebase-merge").exists() || gitdir.join("rebase-apply").exists() {
            self.git_in(worktree).args(["rebase", "--abort"]).run()?;
        }
        if files.is_empty() {
            return Err(failure(cmd, &out));
        }
        Ok(RebaseOutcome::Conflict { files })
    }

    /// Starts merging `onto` into the branch checked out in `worktree` and leaves the result
    /// uncommitted for someone to resolve: conflicting files hold git's conflict markers, and
    /// the next [`Repo::commit_all`] concludes the merge (both histories kept). Returns the
    /// conflicting files (empty: the merge went through cleanly and awaits only its commit).
    pub fn merge_for_resolution(&self, worktree: &Path, onto: &str) -> Result<Vec<String>> {
        self.abort_in_progress(worktree)?;
        let (cmd, out) = self
            .git_in(worktree)
            .args(["merge", "--no-ff", "--no-commit", "--no-verify", onto])
            .output()?;
        let files = self.unmerged_files(worktree)?;
        if !out.status.success() && files.is_empty() {
            return Err(failure(cmd, &out));
        }
        Ok(files)
    }

    /// Files in `worktree` that git considers unmerged, sorted.
    pub fn unmerged_files(&self, worktree: &Path) -> Result<Vec<String>> {
        let out = self
            .git_in(worktree)
            .args(["diff", "--name-only", "-z", "--diff-filter=U"])
            .run()?;
        let mut files: Vec<String> = out
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Of `files` in `worktree`, those that still hold a conflict marker line.
    pub fn files_with_conflict_markers(&self, worktree: &Path, files: &[String]) -> Vec<String> {
        files
            .iter()
            .filter(|f| {
                fs::read(worktree.join(f)).is_ok_and(|bytes| {
                    bytes
                        .split(|b| *b == b'\n')
                        .any(|line| line.starts_with(b"<<<<<<< ") || line.starts_with(b">>>>>>> "))
                })
            })
            .cloned()
            .collect()
    }

    /// Pushes `branch` to `remote` (a remote's name or URL), creating or fast-forwarding it
    /// there; never forced.
    pub fn push(&self, remote: &str, branch: &str) -> Result<()> {
        let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
        self.git()
            .args([
                "push",
                "--quiet",
                "--porcelain",
                "--end-of-options",
                remote,
                &spec,
            ])
            .run()?;
        Ok(())
    }

    /// The contents of `path` at commit `rev`, `None` if the commit has no such file.
    pub fn read_file(&self, rev: &str, path: &str) -> Result<Option<String>> {
        let (cmd, out) = self
            .git()
            .args(["cat-file", "-p", &format!("{rev}:{path}")])
            .output()?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        // A missing path is "not there"; a missing commit is an error.
        self.resolve(rev)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") || stderr.contains("exists on disk, but not in") {
            Ok(None)
        } else {
            Err(failure(cmd, &out))
        }
    }

    /// `git diff --stat` and the patch from `from` to `to`, the patch cut to `max` bytes.
    pub fn diff(&self, from: &str, to: &str, max: usize) -> Result<String> {
        let stat = self
            .git()
            .args([
                "diff",
                "--stat",
                "--no-ext-diff",
                "--end-of-options",
                from,
                to,
                "--",
            ])
            .run()?;
        let mut patch = self
            .git()
            .args([
                "diff",
                "--no-ext-diff",
                "--no-color",
                "--end-of-options",
                from,
                to,
                "--",
            ])
            .run()?;
        if patch.len() > max {
            let mut cut = max;
            while !patch.is_char_boundary(cut) {
                cut -= 1;
            }
            patch.truncate(cut);
            patch.push_str("\n… (diff cut here)\n");
        }
        Ok(format!("{stat}\n{patch}"))
    }

    /// `(sha, subject)` of the commits reachable from `rev`, newest first.
    pub fn log_subjects(&self, rev: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .git()
            .args([
                "log",
                "--no-show-signature",
                "--format=%H%x00%s",
                "--end-of-options",
                rev,
                "--",
            ])
            .run()?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once('\0'))
            .map(|(sha, subject)| (sha.to_string(), subject.to_string()))
            .collect())
    }

    /// Paths that differ between the trees of `from` and `to` (renames
    /// appear as a deletion and an addition), sorted.
    pub fn changed_files(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let out = self
            .git()
            .args([
                "diff",
                "--name-only",
                "-z",
                "--no-renames",
                "--no-ext-diff",
                "--no-textconv",
                "--end-of-options",
                from,
                to,
                "--",
            ])
            .run()?;
        Ok(out
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// The added lines of a `--unified=0` patch with their file and line number.
fn added_lines_of(patch: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut file = String::new();
    let mut line = 0usize;
    for l in patch.lines() {
        if let Some(path) = l.strip_prefix("+++ ") {
            file = path.strip_prefix("b/").unwrap_or(path).to_string();
        } else if let Some(hunk) = l.strip_prefix("@@ ") {
            // `@@ -a,b +c,d @@`: the new side starts at line c.
            line = hunk
                .split_whitespace()
                .find_map(|w| w.strip_prefix('+'))
                .and_then(|w| w.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(text) = l.strip_prefix('+') {
            out.push((file.clone(), line, text.to_string()));
            line += 1;
        }
    }
    out
}
