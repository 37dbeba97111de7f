//! Benchmark helper (B2 in `bench/`): times per-task workspace setup.
//!
//! ```text
//! cargo run --release -p fleet-git --example worktree_bench -- REPO N MODE [WORKDIR]
//! ```
//!
//! Creates `N` worktrees of `REPO`'s `HEAD` one after the other, each on its own branch
//! `bench/<WORKDIR name>/<mode>/<i>`, and times each creation. `MODE` is
//!
//! * `fleet`: [`fleet_git::Repo::add_worktree`], exactly what the engine calls to create a
//!   task's workspace (the repository is opened once beforehand, as the engine does per run);
//! * `git`: a bare `git worktree add -B <branch> <path> <commit>` run as a process in `REPO`;
//! * `fleet,git` or `git,fleet`: `N` of each, alternating one by one in that order, so that
//!   on a machine whose load changes from second to second both modes see the same load.
//!
//! Both get the same commit sha as the start point. Afterwards (untimed) every worktree is
//! removed and its branch deleted, so consecutive invocations start from the same state.
//! (On a journal-less ext4, that mass deletion slows the next file creations for a minute or
//! more: the inode allocator skips recently deleted inodes one by one. The harness therefore
//! puts the worktrees on tmpfs.) Worktrees go under `WORKDIR` (default: a new directory in the temp dir), which must not
//! hold leftovers of a previous invocation.
//!
//! Prints one line of JSON per mode,
//! `{"mode":"fleet","n":20,"ms":[12.345,...],"cpu_ms":[10,...]}`:
//! `ms` is each creation's wall-clock time, `cpu_ms` the CPU time (user + system) it used in
//! this process and the git processes it waited for (from `/proc/self/stat`, so in steps of
//! the clock tick, usually 10 ms; empty where `/proc` is unavailable): a second view, less
//! disturbed than wall-clock time by other processes competing for the CPUs (but not by a
//! virtual machine's host taking its CPUs away, which the guest may charge as system time).

use fleet_git::Repo;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worktree_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        return Err("usage: worktree_bench REPO N fleet|git|fleet,git|git,fleet [WORKDIR]".into());
    }
    let repo_path = PathBuf::from(&args[0]);
    let n: usize = args[1]
        .parse()
        .map_err(|e| format!("N must be a number: {e}"))?;
    let modes: Vec<&str> = args[2].split(',').collect();
    let mut seen = Vec::new();
    for &m in &modes {
        if (m != "fleet" && m != "git") || seen.contains(&m) {
            return Err(format!(
                "MODE must be `fleet`, `git`, `fleet,git` or `git,fleet`, not {:?}",
                args[2]
            ));
        }
        seen.push(m);
    }
    let workdir = match args.get(3) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("fleet-worktree-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let workdir = std::path::absolute(&workdir).map_err(|e| e.to_string())?;

    // Untimed set-up, shared by both modes.
    let repo = Repo::open(&repo_path).map_err(|e| e.to_string())?;
    let sha = repo.resolve("HEAD").map_err(|e| e.to_string())?;
    // Branches are named after the work directory too, so that worktrees left by another
    // invocation (in another WORKDIR) do not hold the same branches.
    let tag: String = workdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Creation order: i = 0, every mode in turn, then i = 1, ...
    let jobs: Vec<(usize, PathBuf, String)> = (0..n)
        .flat_map(|i| modes.iter().enumerate().map(move |(k, m)| (k, i, *m)))
        .map(|(k, i, m)| {
            (
                k,
                workdir.join(format!("{m}-{i}")),
                format!("bench/{tag}/{m}/{i}"),
            )
        })
        .collect();

    clock_ticks_per_second(); // runs `getconf` now, not inside the first timed creation
    let mut times = vec![Vec::with_capacity(n); modes.len()];
    let mut cpu = vec![Vec::with_capacity(n); modes.len()];
    let mut failure = None;
    for (k, path, branch) in &jobs {
        let c0 = cpu_ms();
        let t0 = Instant::now();
        let result = if modes[*k] == "fleet" {
            repo.add_worktree(path, branch, &sha)
                .map_err(|e| e.to_string())
        } else {
            bare_git(repo.root(), path, branch, &sha)
        };
        let elapsed = t0.elapsed();
        let c1 = cpu_ms();
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
        times[*k].push(elapsed.as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (c0, c1) {
            cpu[*k].push(b - a);
        }
    }

    // Untimed clean-up, identical for both modes: delete the directories, let git forget
    // them, delete the branches (cheaper than `git worktree remove`, which first checks every
    // file for changes).
    for (_, path, _) in &jobs {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    repo.prune_worktrees().map_err(|e| e.to_string())?;
    for (_, _, branch) in &jobs {
        repo.delete_branch(branch).map_err(|e| e.to_string())?;
    }
    if let Some(e) = failure {
        return Err(e);
    }

    for (k, mode) in modes.iter().enumerate() {
        let ms: Vec<String> = times[k].iter().map(|t| format!("{t:.3}")).collect();
        let cpu: Vec<String> = if cpu[k].len() == times[k].len() {
            cpu[k].iter().map(|t| format!("{t:.1}")).collect()
        } else {
            Vec::new()
        };
        println!(
            "{{\"mode\":\"{mode}\",\"n\":{n},\"ms\":[{}],\"cpu_ms\":[{}]}}",
            ms.join(","),
            cpu.join(",")
        );
    }
    Ok(())
}

/// `git worktree add -B <branch> <path> <commit>`, run in the repository, nothing more.
fn bare_git(
    repo: &std::path::Path,
    path: &std::path::Path,
    branch: &str,
    sha: &str,
) -> Result<(), String> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["worktree", "add", "-B", branch])
        .arg(path)
        .arg(sha)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git worktree add failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// CPU time used so far by this process and its waited-for children, in ms:
/// utime + stime + cutime + cstime from `/proc/self/stat`.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime..cstime are fields 14..=17.
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    Some(ticks * 1000.0 / clock_ticks_per_second())
}

/// The kernel's USER_HZ, as `getconf CLK_TCK` reports it; 100 on Linux's usual builds.
fn clock_ticks_per_second() -> f64 {
    use std::sync::OnceLock;
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
