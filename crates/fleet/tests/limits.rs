//! Input and output limits of the `fleet` binary: runbooks and fleet.yaml that are not
//! regular files or are too big are refused at once (exit 2, nothing created); a `report:`
//! that cannot be written is refused before anything runs; a closed stdout ends every read
//! command quietly; a relative `--home` works for agents that run in their worktrees.

mod support;
use support::git;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// A fresh repository with one commit and the given runbook as `runbook.yaml`.
fn repo_with(runbook: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    std::fs::write(repo.join("runbook.yaml"), runbook).unwrap();
    (dir, repo)
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(FLEET);
    cmd.current_dir(dir).args(args).env_remove("FLEET_HOME");
    cmd
}

/// Runs `cmd` with at most 1 GiB of address space (a runbook read without bound fails
/// instead of taking the machine's memory); kills it if it has not ended after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

const ONE_TASK: &str = "name: one\ntasks:\n  - id: a\n    command: \"echo hi > a.txt\"\n";

#[test]
fn runbooks_that_are_not_regular_files_or_too_big_are_refused_at_once() {
    let (_tmp, repo) = repo_with(ONE_TASK);
    mkfifo(&repo.join("fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", repo.join("zero.yaml")).unwrap();
    let big = std::fs::File::create(repo.join("big.yaml")).unwrap();
    big.set_len(5 << 20).unwrap();
    std::fs::create_dir(repo.join("dir.yaml")).unwrap();
    let cases = [
        ("fifo.yaml", "FIFO"),
        ("zero.yaml", "character device"),
        ("big.yaml", "larger than 4 MiB"),
        ("dir.yaml", "directory"),
    ];
    for (file, why) in cases {
        let out = run_bounded(command(&repo, &["run", file]), Duration::from_secs(60));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(&format!("{file}:1:1")), "{file}: {err}");
        assert!(err.contains(why), "{file}: expected {why:?} in {err}");
        assert!(
            !repo.join(".fleet").exists(),
            "{file}: nothing may be created"
        );
    }
}

/// The planner's acceptance check reads a file an agent wrote: a FIFO there fails the check
/// at once instead of hanging the attempt.
#[test]
fn an_artifact_that_is_not_a_regular_file_fails_its_check_at_once() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("plan.json"));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("review.json")).unwrap();
    for (kind, file, why) in [
        ("plan", "plan.json", "FIFO"),
        ("review", "review.json", "device"),
    ] {
        let out = run_bounded(
            command(dir.path(), &["artifact", "check", kind, file]),
            Duration::from_secs(60),
        );
        let said = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{said}{}", text(&out.stderr));
        assert!(said.contains(why), "{said}");
    }
}

#[test]
fn a_fleet_yaml_that_is_not_a_regular_file_is_refused_not_ignored() {
    let (tmp, repo) = repo_with(ONE_TASK);
    let home = tmp.path().join("inst");
    std::fs::create_dir(&home).unwrap();
    mkfifo(&home.join("fleet.yaml"));
    let mut cmd = command(&repo, &["run", "runbook.yaml"]);
    cmd.env("FLEET_HOME", &home);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("fleet.yaml:1:1") && err.contains("FIFO"),
        "{err}"
    );
    assert!(!home.join(".fleet").exists() && !repo.join(".fleet").exists());
}

#[test]
fn a_report_path_that_cannot_be_written_is_refused_before_anything_runs() {
    let cases = [
        ("/", "names a directory"),
        ("docs", "is a directory"),
        ("README.md/summary.md", "is not a directory"),
    ];
    for (report, why) in cases {
        let runbook =
            format!("name: one\nreport: {report}\ntasks:\n  - id: a\n    command: \"touch ran\"\n");
        let (_tmp, repo) = repo_with(&runbook);
        std::fs::create_dir(repo.join("docs")).unwrap();
        let out = command(&repo, &["run", "runbook.yaml"]).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{report}: {err}");
        assert!(err.contains("runbook.yaml:2:9"), "{report}: {err}");
        assert!(err.contains(why), "{report}: expected {why:?} in {err}");
        assert!(!repo.join(".fleet").exists(), "{report}: nothing may run");
        assert!(!repo.join("ran").exists());
    }
    // A report in directories still to be made is fine: they are created at the end.
    let (_tmp, repo) = repo_with(&format!("report: out/new/summary.md\n{ONE_TASK}"));
    let out = command(&repo, &["run", "runbook.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(repo.join("out/new/summary.md").is_file());
}

/// Runs fleet with a stdout whose reader has already gone, as after `| head` read enough.
fn with_closed_stdout(dir: &Path, home: Option<&Path>, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = command(dir, args);
    if let Some(home) = home {
        cmd.env("FLEET_HOME", home);
    }
    cmd.stdout(writer).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    drop(cmd);
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_read_commands_quietly() {
    let (tmp, repo) = repo_with(ONE_TASK);
    let out = command(&repo, &["run", "runbook.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reads: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["runs"],
        &["runs", "--json"],
        &["budget", "--json"],
        &["agents", "ls"],
        &["agents", "ls", "--json"],
    ];
    for args in reads {
        let out = with_closed_stdout(&repo, None, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "fleet {args:?}: {err}");
        assert!(err.is_empty(), "fleet {args:?} must end quietly: {err}");
    }
    // The instance's read commands too.
    let home = tmp.path().join("inst");
    let out = command(tmp.path(), &["init", home.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for args in [
        &["task", "ls"][..],
        &["project", "ls", "--json"],
        &["token", "ls"],
    ] {
        let out = with_closed_stdout(tmp.path(), Some(&home), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "fleet {args:?}: {err}");
        assert!(err.is_empty(), "fleet {args:?} must end quietly: {err}");
    }
    // A run still reports how it ended by its exit code, whoever reads its output.
    let (_tmp, repo) = repo_with("name: bad\ntasks:\n  - id: a\n    command: \"false\"\n");
    let out = with_closed_stdout(&repo, None, &["run", "runbook.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn a_relative_home_reaches_agents_in_their_worktrees() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    std::fs::create_dir(tmp.path().join("inst")).unwrap();
    // The agent reads its prompt through the path Fleet gives it, from its worktree.
    std::fs::write(
        tmp.path().join("inst/fleet.yaml"),
        "agents:\n  cmd:\n    cli: command\n    command: 'echo \"$FLEET_PROMPT_FILE\" > seen.txt && cat \"$FLEET_PROMPT_FILE\" > prompt.txt'\n    roles: [developer]\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("runbook.yaml"),
        "name: rel\ntasks:\n  - id: a\n    agent: cmd\n    prompt: say hi\n    max_attempts: 1\n    checks: [\"grep -q 'say hi' prompt.txt\"]\n",
    )
    .unwrap();
    for (how, args) in [
        ("--home", vec!["--home", "inst", "run", "repo/runbook.yaml"]),
        ("FLEET_HOME", vec!["run", "repo/runbook.yaml"]),
    ] {
        let mut cmd = command(tmp.path(), &args);
        if how == "FLEET_HOME" {
            cmd.env("FLEET_HOME", "inst");
        }
        let out = cmd.output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{how}: {}\n{err}",
            text(&out.stdout)
        );
        let branch = text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("branch:").map(|b| b.trim().to_string()))
            .unwrap();
        let seen = git(&repo, &["show", &format!("{branch}:seen.txt")]);
        assert!(seen.starts_with('/'), "{how}: the agent got {seen:?}");
    }
}
