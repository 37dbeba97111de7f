//! Repairing what a dead git or Fleet left in a repository: half-made worktree entries,
//! orphan worktree folders and stale lock files.
//!
//! A killed `git worktree add` leaves `.git/worktrees/<name>` locked as "initializing",
//! possibly with an empty `commondir`, and from then on every worktree command of the
//! repository fails. A killed ref update leaves `<ref>.lock` or `packed-refs.lock`, and every
//! later update of that ref (or deletion of a packed branch) fails or waits for git's lock
//! timeout. None of it goes away by itself.
//!
//! Only Fleet's own things are removed: worktree entries whose `gitdir` points into the
//! directory Fleet keeps its worktrees in, lock files of `refs/heads/fleet/`, of
//! `packed-refs`, and of Fleet's worktrees. Callers hold the repository-wide admin lock, so no
//! other Fleet is making a worktree meanwhile; a git another program runs is protected by
//! the checks below (a live process naming the worktree, a lock file some process has open or
//! that is younger than [`STALE_LOCK_AGE`]).

use crate::{Repo, Result, remove_if_present};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How old a lock file no process has open must be to be stale. Git closes a ref's lock file
/// once it has written it and renames it when the transaction commits, so a live update holds
/// a closed lock for a moment (longer only while a `reference-transaction` hook runs).
pub const STALE_LOCK_AGE: Duration = Duration::from_secs(2);

/// What [`Repo::repair`] fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Worktree entries (`<git dir>/worktrees/<name>`) removed: half made or broken.
    pub entries: Vec<String>,
    /// Worktree folders removed: behind a removed entry, or orphaned (holding only `.git`).
    pub folders: Vec<PathBuf>,
    /// Lock files removed: left by a git that is gone.
    pub locks: Vec<PathBuf>,
}

impl Repair {
    /// Whether nothing needed repairing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.folders.is_empty() && self.locks.is_empty()
    }

    /// One line per thing repaired, for a log or an event.
    pub fn describe(&self) -> Vec<String> {
        let entries = self
            .entries
            .iter()
            .map(|e| format!("removed the broken worktree entry {e}"));
        let folders = self
            .folders
            .iter()
            .map(|f| format!("removed the orphan worktree folder {}", f.display()));
        let locks = self
            .locks
            .iter()
            .map(|l| format!("removed the stale lock {}", l.display()));
        entries.chain(folders).chain(locks).collect()
    }

    fn extend(&mut self, other: Repair) {
        self.entries.extend(other.entries);
        self.folders.extend(other.folders);
        self.locks.extend(other.locks);
    }
}

/// One `<git dir>/worktrees/<name>` entry as found on disk.
struct Entry {
    name: String,
    dir: PathBuf,
    /// The worktree's folder, from the entry's `gitdir` file (`<folder>/.git`).
    folder: Option<PathBuf>,
}

impl Entry {
    fn read(dir: PathBuf) -> Entry {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let folder = fs::read_to_string(dir.join("gitdir"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(|t| {
                let p = Path::new(&t);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                };
                p.parent().map(Path::to_path_buf).unwrap_or(p)
            });
        Entry { name, dir, folder }
    }

    /// Half made (git writes `locked` = "initializing" first and removes it last) or unusable
    /// (`commondir` or `HEAD` empty or missing: every worktree command of the repository then
    /// fails reading it).
    fn broken(&self) -> bool {
        let initializing =
            fs::read_to_string(self.dir.join("locked")).is_ok_and(|t| t.trim() == "initializing");
        let empty = |f: &str| fs::metadata(self.dir.join(f)).map_or(true, |m| m.len() == 0);
        initializing || empty("commondir") || empty("HEAD")
    }
}

/// Both spellings of a directory: as given and with symlinks resolved (git records real paths
/// in some versions, the path it was given in others).
fn spellings(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(real) = dir.canonicalize()
        && real != dir
    {
        out.push(real);
    }
    out
}

/// Whether `path` lies inside (strictly) one of `scopes`.
fn under(path: &Path, scopes: &[PathBuf]) -> bool {
    let inside = |p: &Path| scopes.iter().any(|s| p.starts_with(s) && p != s);
    inside(path) || path.canonicalize().is_ok_and(|p| inside(&p))
}

/// Live processes, read from `/proc` once per repair and only when something may need it.
#[derive(Default)]
struct Processes {
    scanned: bool,
    /// Each process's command line, arguments joined by NULs.
    cmdlines: Vec<Vec<u8>>,
    /// Every file some process has open.
    open: std::collections::HashSet<PathBuf>,
}

impl Processes {
    fn scan(&mut self) {
        if self.scanned {
            return;
        }
        self.scanned = true;
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let pid = p.path();
            if !p
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            if let Ok(cmdline) = fs::read(pid.join("cmdline")) {
                self.cmdlines.push(cmdline);
            }
            // Processes of other users cannot be read; only they could hold a lock unseen.
            let Ok(fds) = fs::read_dir(pid.join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = fs::read_link(fd.path()) {
                    self.open.insert(target);
                }
            }
        }
    }

    /// Whether a live process names `folder` on its command line (a `git worktree add` of
    /// it still running, say, left behind by a Fleet that died).
    fn names(&mut self, folder: &Path) -> bool {
        self.scan();
        let needle = folder.as_os_str().as_encoded_bytes();
        self.cmdlines
            .iter()
            .any(|c| c.windows(needle.len()).any(|w| w == needle))
    }

    fn has_open(&mut self, file: &Path) -> bool {
        self.scan();
        self.open.contains(file) || file.canonicalize().is_ok_and(|f| self.open.contains(&f))
    }
}

impl Repo {
    /// Repairs what a dead git or Fleet left in the repository (see the module docs):
    /// broken entries of worktrees under `worktrees_dir`, orphan folders there, and stale
    /// lock files. Takes the repository-wide admin lock. Returns what it removed.
    pub fn repair(&self, worktrees_dir: &Path) -> Result<Repair> {
        let _admin = self.admin_lock()?;
        let dir = crate::absolute(worktrees_dir)?;
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        if !owned.contains(&dir) {
            owned.push(dir.clone());
        }
        drop(owned);
        self.repair_locked(&dir)
    }

    /// [`Repo::repair`] for a caller that holds the admin lock.
    /// [`Repo::repair`] right after the processes of a dead Fleet were killed: the locks their
    /// gits left are too young to count as stale yet, so it first waits until they would be
    /// (once, at most [`STALE_LOCK_AGE`]) — else a `packed-refs.lock` stays and every later
    /// ref update waits out git's lock timeout.
    pub fn repair_after_kill(&self, worktrees_dir: &Path) -> Result<Repair> {
        if self.has_young_lock() {
            std::thread::sleep(STALE_LOCK_AGE);
        }
        self.repair(worktrees_dir)
    }

    /// Whether a lock file younger than [`STALE_LOCK_AGE`] is where Fleet's gits write: the
    /// repository's own files, its worktree entries, Fleet's refs.
    fn has_young_lock(&self) -> bool {
        let young = |p: &Path| {
            p.extension().is_some_and(|e| e == "lock")
                && age_of(p).is_some_and(|age| age < STALE_LOCK_AGE)
        };
        let files_in = |dir: &Path| -> Vec<PathBuf> {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        let mut places = files_in(&self.common_dir);
        for entry in files_in(&self.common_dir.join("worktrees")) {
            places.extend(files_in(&entry));
        }
        let mut stack = vec![self.common_dir.join("refs/heads/fleet")];
        while let Some(dir) = stack.pop() {
            for p in files_in(&dir) {
                if p.is_dir() {
                    stack.push(p);
                } else {
                    places.push(p);
                }
            }
        }
        places.iter().any(|p| young(p))
    }

    pub(crate) fn repair_locked(&self, worktrees_dir: &Path) -> Result<Repair> {
        let scopes = spellings(&crate::absolute(worktrees_dir)?);
        let mut procs = Processes::default();
        let mut done = Repair::default();
        let admin = self.common_dir.join("worktrees");
        let mut registered = Vec::new();
        let entries = match fs::read_dir(&admin) {
            Ok(list) => list.flatten().map(|e| Entry::read(e.path())).collect(),
            Err(_) => Vec::new(),
        };
        for entry in entries {
            let Some(folder) = entry.folder.clone() else {
                // No `gitdir`: git itself skips it, and `worktree prune` removes it.
                continue;
            };
            let ours = under(&folder, &scopes);
            if ours && entry.broken() && !procs.names(&folder) {
                fs::remove_dir_all(&entry.dir)?;
                done.entries.push(entry.name.clone());
                if folder.exists() {
                    fs::remove_dir_all(&folder)?;
                    done.folders.push(folder);
                }
                continue;
            }
            if ours {
                done.locks
                    .extend(remove_stale_locks(&entry.dir, None, &mut procs)?);
            }
            registered.extend(spellings(&folder));
        }
        done.extend(self.remove_orphans(&scopes, &registered, &mut procs)?);
        let packed = self.common_dir.join("packed-refs.lock");
        if is_stale_lock(&packed, &mut procs) && remove_if_present(&packed)? {
            done.locks.push(packed);
        }
        // Not `fleet/tasks/`: one ref per task of every run ever made (thousands of files to
        // list at every start), and a run's own are cleared when it resumes
        // (`clear_stale_locks`); the branches others build on are these.
        let fleet_refs = self.common_dir.join("refs/heads/fleet");
        let skip = fleet_refs.join("tasks");
        done.locks
            .extend(remove_stale_locks(&fleet_refs, Some(&skip), &mut procs)?);
        Ok(done)
    }

    /// Folders under Fleet's worktrees directory (two levels: `<run>/<task>`, or one) that
    /// hold only a `.git` into this repository that no registered worktree owns
    /// (`is_dead_worktree_folder`).
    fn remove_orphans(
        &self,
        scopes: &[PathBuf],
        registered: &[PathBuf],
        procs: &mut Processes,
    ) -> Result<Repair> {
        let mut done = Repair::default();
        let mut candidates = Vec::new();
        for top in fs::read_dir(&scopes[0]).into_iter().flatten().flatten() {
            let top = top.path();
            candidates.push(top.clone());
            if top.is_dir() && !top.join(".git").exists() {
                candidates.extend(
                    fs::read_dir(&top)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            }
        }
        for folder in candidates {
            if registered.contains(&folder) {
                continue;
            }
            let registered_real = folder.canonicalize().is_ok_and(|f| registered.contains(&f));
            if !registered_real && self.is_dead_worktree_folder(&folder)? && !procs.names(&folder) {
                fs::remove_dir_all(&folder)?;
                done.folders.push(folder);
            }
        }
        Ok(done)
    }
}

/// A lock file no process has open and older than [`STALE_LOCK_AGE`].
fn is_stale_lock(path: &Path, procs: &mut Processes) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    let old = age_of(path).is_some_and(|age| age >= STALE_LOCK_AGE);
    meta.is_file() && old && !procs.has_open(path)
}

/// How long ago `path` was last written.
fn age_of(path: &Path) -> Option<Duration> {
    let modified = fs::symlink_metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// Removes the stale `*.lock` files in `dir`, and below it if `deep` names a directory not to
/// descend into (`None`: `dir` alone).
fn remove_stale_locks(
    dir: &Path,
    deep: Option<&Path>,
    procs: &mut Processes,
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if deep.is_some_and(|skip| path != skip) {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "lock")
                && is_stale_lock(&path, procs)
                && remove_if_present(&path)?
            {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}
