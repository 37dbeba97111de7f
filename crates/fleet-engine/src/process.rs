//! Running one shell command under supervision: its own process group, output appended to
//! the task log, a wall-clock timeout that ends the whole group (SIGTERM, then SIGKILL), and
//! a stop signal for graceful shutdown.

use crate::spawn;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::watch;

/// How a supervised command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Ended because Fleet was asked to stop.
    pub stopped: bool,
    pub elapsed: Duration,
}

impl Finished {
    /// A check Fleet made itself (not a process) that failed.
    pub fn failed_check() -> Finished {
        Finished {
            code: Some(1),
            signal: None,
            timed_out: false,
            stopped: false,
            elapsed: Duration::ZERO,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.stopped
    }

    /// Short description for logs and reasons: "exit 1", "killed by signal 9", "timed out after 2s".
    pub fn describe(&self) -> String {
        if self.timed_out {
            format!("timed out after {}", crate::fmt_duration(self.elapsed))
        } else if self.stopped {
            "stopped by fleet".to_string()
        } else if let Some(code) = self.code {
            format!("exit {code}")
        } else if let Some(sig) = self.signal {
            format!("killed by signal {sig}")
        } else {
            "ended".to_string()
        }
    }
}

/// A command to run; its stdout and stderr go to a log file given beside it.
pub struct CommandSpec<'a> {
    pub command: &'a str,
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
}

/// Characters that need a shell. Without them the command is split on whitespace and executed
/// directly, as make does, which saves a shell start per task.
fn needs_shell(command: &str) -> bool {
    !command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "-_./=:,+@%".contains(c))
        || command.split_whitespace().next().is_none()
}

/// Empty standard input: `/dev/null`, opened once rather than once per spawn.
fn null_input() -> std::io::Result<BorrowedFd<'static>> {
    static DEV_NULL: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .map(|f| f.as_fd())
        .ok_or_else(|| std::io::Error::other("cannot open /dev/null"))
}

/// Starts `spec` in its own process group, its output going to `log`, on the calling thread:
/// spawning blocks only until the child has exec'd (vfork), and handing it to the blocking
/// pool cost more than that (a thread wake-up each way; B1 in docs/BENCHMARKS.md).
fn spawn_into(spec: &CommandSpec<'_>, log: &File) -> std::io::Result<spawn::Child> {
    let shell = ["-c", spec.command];
    let words: Vec<&str>;
    let (program, args): (&str, &[&str]) = if needs_shell(spec.command) {
        ("/bin/sh", &shell)
    } else {
        words = spec.command.split_whitespace().collect();
        (words[0], &words[1..])
    };
    spawn::spawn(&spawn::Spec {
        program,
        args,
        env: spec.env,
        cwd: Some(spec.cwd),
        stdin: null_input()?,
        stdout: log.as_fd(),
        stderr: log.as_fd(),
    })
}

/// Kills every process whose environment carries `key=value` (with its process group), and
/// returns how many it found. Fleet tags the processes of a run with `FLEET_RUN_TAG=<instance>/<run>`; after
/// fleet itself was killed, this finds what its tasks left running — grandchildren included,
/// whatever process group they moved to — so a resumed run never races a ghost of itself.
pub fn kill_tagged(key: &str, value: &str) -> usize {
    let needle = format!("{key}={value}");
    kill_where(|vars| vars.contains(&needle.as_bytes()))
}

/// Kills what the attempts of a run left behind: every process tagged `key=value` (the run's
/// tag) and with a task attempt (`FLEET_TASK`, `FLEET_ATTEMPT`) for which `live(task,
/// attempt)` is false — a daemon that left its attempt's process group (`setsid`) included.
/// Fleet's own git processes carry no task tag and are never touched.
pub fn kill_leftovers(key: &str, value: &str, live: impl Fn(&str, &str) -> bool) -> usize {
    let run_tag = format!("{key}={value}");
    kill_where(|vars| {
        if !vars.contains(&run_tag.as_bytes()) {
            return false;
        }
        let value = |key: &[u8]| {
            vars.iter()
                .find_map(|v| v.strip_prefix(key))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        match (value(b"FLEET_TASK="), value(b"FLEET_ATTEMPT=")) {
            (Some(task), Some(attempt)) => !live(&task, &attempt),
            _ => false,
        }
    })
}

/// Kills (SIGKILL, with its process group unless that is Fleet's) every other process whose
/// environment `doomed` picks; returns how many.
fn kill_where(doomed: impl Fn(&[&[u8]]) -> bool) -> usize {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if doomed(&vars) {
            let pid = Pid::from_raw(pid as i32);
            if let Ok(pgid) = nix::unistd::getpgid(Some(pid))
                && pgid != nix::unistd::getpgrp()
            {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            found += 1;
        }
    }
    found
}

/// Sends `signal` to a process group, ignoring a group that is already gone.
pub fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Runs the command to its end, its output appended to `log`. `on_spawn` gets the process
/// group id as soon as it exists. A command that cannot be started (missing program) ends as
/// exit 127 with the reason in the log, like a shell would.
pub async fn run(
    spec: CommandSpec<'_>,
    log: &File,
    stop: watch::Receiver<bool>,
    on_spawn: impl FnOnce(i32),
) -> std::io::Result<Finished> {
    let started = Instant::now();
    let spawned = spawn_into(&spec, log);
    supervise(&spec, log, started, spawned, stop, on_spawn).await
}

/// [`run`] for a command whose log is not open yet: opens the log at `log_path`, appends
/// `header` and runs the command. Returns the log, where the command's output in it starts,
/// and the outcome; the outer error means the log could not be opened and nothing ran.
///
/// A log that exists (made ahead, see `log_maker`) is opened on the event loop. One that does
/// not is created on the blocking pool: creating a file can take a while on some file systems
/// (see `log_maker`).
pub async fn run_opening_log(
    spec: CommandSpec<'_>,
    log_path: std::path::PathBuf,
    header: String,
    stop: watch::Receiver<bool>,
    on_spawn: impl FnOnce(i32),
) -> std::io::Result<(File, u64, std::io::Result<Finished>)> {
    let started = Instant::now();
    let log = match open_with_header(&log_path, &header, false) {
        Ok(log) => log,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fleet_store::pg::spawn_blocking(move || open_with_header(&log_path, &header, true))
                .await
                .map_err(std::io::Error::other)??
        }
        Err(e) => return Err(e),
    };
    let from = log.metadata()?.len();
    let spawned = spawn_into(&spec, &log);
    let finished = supervise(&spec, &log, started, spawned, stop, on_spawn).await;
    Ok((log, from, finished))
}

/// Opens a log for appending (creating it if `create`) and appends `header`.
fn open_with_header(path: &Path, header: &str, create: bool) -> std::io::Result<File> {
    use std::io::Write;
    let log = std::fs::OpenOptions::new()
        .create(create)
        .append(true)
        .open(path)?;
    (&log).write_all(header.as_bytes())?;
    Ok(log)
}

/// Waits for a spawned command to end, within its timeout and until `stop`.
async fn supervise(
    spec: &CommandSpec<'_>,
    log: &File,
    started: Instant,
    spawned: std::io::Result<spawn::Child>,
    mut stop: watch::Receiver<bool>,
    on_spawn: impl FnOnce(i32),
) -> std::io::Result<Finished> {
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            let mut log = log;
            writeln!(log, "fleet: cannot run {:?}: {err}", spec.command)?;
            return Ok(Finished {
                code: Some(127),
                signal: None,
                timed_out: false,
                stopped: false,
                elapsed: started.elapsed(),
            });
        }
        Err(err) => return Err(err),
    };
    let pgid = child.id();
    on_spawn(pgid);

    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => {
            timed_out = true;
            end_group(&mut child, pgid, spec.kill_grace).await?
        }
        _ = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        } => {
            stopped = true;
            end_group(&mut child, pgid, spec.kill_grace).await?
        }
    };
    // Nothing a task started may outlive it (it would hold the log and the worktree).
    signal_group(pgid, Signal::SIGKILL);
    Ok(Finished {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stopped,
        elapsed: started.elapsed(),
    })
}

/// A started process that can be waited for: one of ours, or a `tokio::process` one.
trait Wait {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus>;
}

impl Wait for spawn::Child {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        spawn::Child::wait(self).await
    }
}

impl Wait for tokio::process::Child {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        tokio::process::Child::wait(self).await
    }
}

async fn end_group(
    child: &mut impl Wait,
    pgid: i32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_is_used_only_when_needed() {
        assert!(!needs_shell("true"));
        assert!(!needs_shell("cargo test -q --lib"));
        assert!(needs_shell("echo hi > f"));
        assert!(needs_shell("a && b"));
        assert!(needs_shell("echo 'x'"));
        assert!(needs_shell("echo $HOME"));
        assert!(needs_shell("   "));
    }

    async fn run_cmd(command: &str, timeout: Option<Duration>) -> (Finished, String) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let env = BTreeMap::new();
        let (_tx, rx) = watch::channel(false);
        let spec = CommandSpec {
            command,
            cwd: dir.path(),
            env: &env,
            timeout,
            kill_grace: Duration::from_millis(300),
        };
        let f = run(spec, &log, rx, |_| {}).await.unwrap();
        (f, std::fs::read_to_string(log_path).unwrap())
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let (f, log) = run_cmd("echo out; echo err >&2; exit 3", None).await;
        assert_eq!(f.code, Some(3));
        assert_eq!(log, "out\nerr\n");
        let (f, log) = run_cmd("no-such-program-xyz --flag", None).await;
        assert_eq!(f.code, Some(127));
        assert!(log.contains("cannot run"), "{log}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survivor");
        // The grandchild ignores nothing special; it must die with the group before it writes.
        let cmd = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let (f, _) = run_cmd(&cmd, Some(Duration::from_millis(300))).await;
        assert!(f.timed_out);
        assert!(f.elapsed < Duration::from_secs(5), "{:?}", f.elapsed);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a grandchild survived the timeout");
    }

    #[tokio::test]
    async fn a_log_made_ahead_is_appended_to_and_a_missing_one_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let env = BTreeMap::new();
        let (_tx, rx) = watch::channel(false);
        let made = dir.path().join("made.log");
        std::fs::write(&made, "attempt 1\n").unwrap();
        let missing = dir.path().join("missing.log");
        for path in [&made, &missing] {
            let spec = CommandSpec {
                command: "echo out; echo err >&2",
                cwd: dir.path(),
                env: &env,
                timeout: None,
                kill_grace: Duration::from_millis(300),
            };
            let (_, _, finished) =
                run_opening_log(spec, path.clone(), "$ cmd\n".into(), rx.clone(), |_| {})
                    .await
                    .unwrap();
            assert_eq!(finished.unwrap().code, Some(0));
        }
        assert_eq!(
            std::fs::read_to_string(&made).unwrap(),
            "attempt 1\n$ cmd\nout\nerr\n"
        );
        assert_eq!(
            std::fs::read_to_string(&missing).unwrap(),
            "$ cmd\nout\nerr\n"
        );
        // A log that cannot be made is the outer error: nothing runs.
        let spec = CommandSpec {
            command: "touch ran",
            cwd: dir.path(),
            env: &env,
            timeout: None,
            kill_grace: Duration::from_millis(300),
        };
        let no_dir = dir.path().join("no-such-dir").join("x.log");
        assert!(
            run_opening_log(spec, no_dir, String::new(), rx, |_| {})
                .await
                .is_err()
        );
        assert!(!dir.path().join("ran").exists());
    }

    #[tokio::test]
    async fn sigterm_ignorers_get_sigkill_after_the_grace() {
        let (f, _) = run_cmd("trap '' TERM; sleep 30", Some(Duration::from_millis(200))).await;
        assert!(f.timed_out);
        assert_eq!(f.signal, Some(9));
    }
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A log file the CLI writes on the side (see [`StreamSpec::side_logs`]).
    Side,
}

/// A program run with its output read line by line (agent CLIs).
pub struct StreamSpec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub cwd: &'a Path,
    /// The complete environment: nothing is inherited.
    pub env: &'a BTreeMap<String, String>,
    pub stdin: Option<&'a str>,
    pub timeout: Option<Duration>,
    /// No line on stdout or stderr for this long ends the process as stalled.
    pub stall_timeout: Option<Duration>,
    pub kill_grace: Duration,
    /// A directory whose files the CLI appends log lines to (qwen's debug log): tailed and
    /// delivered as [`Stream::Side`] lines, because some CLIs say only there that they are
    /// retrying a rate limit.
    pub side_logs: Option<&'a Path>,
}

/// How a streamed process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    pub finished: Finished,
    pub stalled: bool,
    /// The line handler decided the attempt had already failed and it was ended early.
    pub gave_up: bool,
}

/// New complete lines appended to the files of a directory since the last look.
#[derive(Default)]
struct Tail {
    offsets: HashMap<std::path::PathBuf, u64>,
}

impl Tail {
    fn read(&mut self, dir: &Path) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut lines = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return lines;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let offset = self.offsets.entry(path.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.take(1 << 20).read_to_end(&mut buf).is_err() {
                continue;
            }
            // Only whole lines; a partial last line is read again next time.
            let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            *offset += end as u64 + 1;
            lines.extend(
                String::from_utf8_lossy(&buf[..end])
                    .lines()
                    .map(str::to_string),
            );
        }
        lines
    }
}

/// Longest line kept; a CLI printing megabytes without a newline is cut, not buffered forever.
const MAX_LINE: usize = 4 << 20;

/// How often streamed output is read.
const TICK_MS: u64 = 50;

/// Time to the next multiple of [`TICK_MS`] of the wall clock: every stream of the process
/// wakes at the same instants.
fn until_next_tick() -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(TICK_MS - now % TICK_MS)
}

/// The read end of a child's pipe, read without blocking.
struct Pipe {
    file: std::fs::File,
    pending: Vec<u8>,
    buf: Vec<u8>,
    eof: bool,
}

impl Pipe {
    fn new(fd: std::os::fd::OwnedFd) -> std::io::Result<Pipe> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Pipe {
            file: std::fs::File::from(fd),
            pending: Vec::new(),
            buf: vec![0; 32 << 10],
            eof: false,
        })
    }

    /// The complete lines available now (and, at end of file, the unterminated rest).
    fn read_lines(&mut self) -> Vec<String> {
        use std::io::Read;
        while !self.eof {
            match self.file.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.eof = true,
            }
        }
        let mut lines = Vec::new();
        if self.pending.is_empty() {
            return lines;
        }
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &self.pending[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            lines.push(String::from_utf8_lossy(line).into_owned());
            start = end + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE || (self.eof && !self.pending.is_empty()) {
            lines.push(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
        lines
    }
}

/// How long the pipes of an agent that has exited are still read: what was in flight when it
/// ended arrives well within this.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Runs `spec`, calling `on_line` for every line of stdout and stderr as it arrives.
pub async fn run_streaming(
    spec: StreamSpec<'_>,
    mut stop: watch::Receiver<bool>,
    mut on_line: impl FnMut(Stream, &str) -> bool,
) -> std::io::Result<StreamEnd> {
    use tokio::io::AsyncWriteExt;
    let started = Instant::now();
    // A program that is not found is left to the spawn, which says so.
    let program = spawn::resolve(spec.program, spec.env).unwrap_or_else(|_| spec.program.into());
    let mut cmd = Command::new(program);
    cmd.args(spec.args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            on_line(
                Stream::Stderr,
                &format!("fleet: cannot run {:?}: {err}", spec.program),
            );
            let finished = Finished {
                code: Some(127),
                signal: None,
                timed_out: false,
                stopped: false,
                elapsed: started.elapsed(),
            };
            return Ok(StreamEnd {
                finished,
                stalled: false,
                gave_up: false,
            });
        }
        Err(err) => return Err(err),
    };
    let pgid = child.id().expect("just spawned") as i32;
    if let (Some(text), Some(mut stdin)) = (spec.stdin, child.stdin.take()) {
        let text = text.to_string();
        // Written off the read loop: a CLI may not read stdin before it fills its stdout pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let mut out = Pipe::new(child.stdout.take().expect("piped").into_owned_fd()?)?;
    let mut err = Pipe::new(child.stderr.take().expect("piped").into_owned_fd()?)?;
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut last_output = Instant::now();
    let mut timed_out = false;
    let mut stalled = false;
    let mut stopped = false;
    let mut gave_up = false;
    let mut tail = Tail::default();
    let mut ticks = 0u64;
    // When the agent itself ended, while something it started may still hold its pipes open.
    let mut exited: Option<(Instant, std::process::ExitStatus)> = None;
    // The pipes are read on a shared clock rather than on every line's arrival: a fleet of
    // chatty agents then costs a few wake-ups per tick instead of one per line.
    while !(out.eof && err.eof) {
        tokio::select! {
            _ = tokio::time::sleep(until_next_tick()) => {}
            _ = wait_stop(&mut stop) => { stopped = true; break; }
        }
        ticks += 1;
        let mut got = false;
        for (pipe, stream) in [(&mut out, Stream::Stdout), (&mut err, Stream::Stderr)] {
            for line in pipe.read_lines() {
                got = true;
                if !gave_up {
                    gave_up |= on_line(stream, &line);
                }
            }
        }
        if let Some(dir) = spec.side_logs.filter(|_| ticks.is_multiple_of(5)) {
            for line in tail.read(dir) {
                got = true;
                if !gave_up {
                    gave_up |= on_line(Stream::Side, &line);
                }
            }
        }
        let now = Instant::now();
        if got {
            last_output = now;
        }
        if gave_up {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            timed_out = true;
            break;
        }
        if spec.stall_timeout.is_some_and(|s| now >= last_output + s) {
            stalled = true;
            break;
        }
        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some((now, status));
        }
        // A background process it left (`sleep 1000 &`) holds the pipes open: what it still
        // prints is not the agent's; the attempt is over once the rest has been read.
        if exited.is_some_and(|(at, _)| now >= at + DRAIN_AFTER_EXIT) {
            break;
        }
    }
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let status = if let Some((_, status)) = exited {
        status
    } else if timed_out || stalled || stopped || gave_up {
        end_group(&mut child, pgid, spec.kill_grace).await?
    } else {
        // Output closed: the process is ending (or detached its streams); give it the timeout.
        tokio::select! {
            s = child.wait() => s?,
            _ = sleep_until_opt(deadline) => { timed_out = true; end_group(&mut child, pgid, spec.kill_grace).await? }
            _ = wait_stop(&mut stop) => { stopped = true; end_group(&mut child, pgid, spec.kill_grace).await? }
        }
    };
    signal_group(pgid, Signal::SIGKILL);
    let finished = Finished {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stopped,
        elapsed: started.elapsed(),
    };
    Ok(StreamEnd {
        finished,
        stalled,
        gave_up,
    })
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

// What a child may see of Fleet's environment is decided with the secrets (`fleet-secrets`),
// so crates that start a process without the engine (the server's board) share it.
pub use fleet_secrets::env::{command_env, scrubbed_env};

#[cfg(test)]
mod stream_tests {
    use super::*;

    async fn stream(script: &str, stall: Option<Duration>) -> (StreamEnd, Vec<(Stream, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let mut env = scrubbed_env();
        env.insert("SECRET_X".into(), "1".into());
        let args = vec!["-c".to_string(), script.to_string()];
        let (_tx, rx) = watch::channel(false);
        let mut lines = Vec::new();
        let spec = StreamSpec {
            program: "sh",
            args: &args,
            cwd: dir.path(),
            env: &env,
            stdin: Some("from stdin\n"),
            timeout: Some(Duration::from_secs(10)),
            stall_timeout: stall,
            kill_grace: Duration::from_millis(200),
            side_logs: None,
        };
        let end = run_streaming(spec, rx, |s, l| {
            lines.push((s, l.to_string()));
            false
        })
        .await
        .unwrap();
        (end, lines)
    }

    #[tokio::test]
    async fn lines_arrive_from_both_streams_and_stdin_is_delivered_and_closed() {
        let (end, lines) = stream(
            "read x; echo \"got $x\"; echo oops >&2; cat; echo \"env=${HOME:-none}\"; printf tail",
            None,
        )
        .await;
        assert_eq!(end.finished.code, Some(0));
        // The two pipes are read concurrently: order holds within a stream, not across them.
        let of = |which: Stream| -> Vec<&str> {
            lines
                .iter()
                .filter(|(s, _)| *s == which)
                .map(|(_, l)| l.as_str())
                .collect()
        };
        // stdin was delivered then closed (cat ends), env is not inherited, a last line
        // without a newline is kept.
        assert_eq!(of(Stream::Stdout), ["got from stdin", "env=none", "tail"]);
        assert_eq!(of(Stream::Stderr), ["oops"]);
    }

    #[tokio::test]
    async fn silence_is_a_stall() {
        let started = Instant::now();
        let (end, _) = stream("echo start; sleep 30", Some(Duration::from_millis(400))).await;
        assert!(end.stalled);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
