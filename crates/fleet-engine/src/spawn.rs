//! Starting a supervised command: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` and `execve`,
//! the way glibc's `posix_spawn` does it, without two of its per-call costs that a fleet of
//! short commands pays thousands of times (B1 in docs/BENCHMARKS.md):
//!
//! - `posix_spawn` maps a fresh stack for the child and unmaps it afterwards; the unmap
//!   interrupts every other core running one of Fleet's threads. Here each spawning thread
//!   keeps one stack and reuses it.
//! - Its child asks about the handler of each of the 64 signals and resets those that have
//!   one. `execve` resets handlers itself; the reset only matters if a signal reaches the
//!   child between unblocking signals and `execve`. This child unblocks them last, in a new
//!   process group whose id nobody has yet; a signal sent to it there (`kill -1` by root) would
//!   run one of Fleet's handlers, which only note that a signal came. It resets `SIGPIPE`,
//!   which Rust's runtime ignores and an ignored signal would stay ignored across `execve`.
//!
//! The child gets a pidfd from `clone` itself: it is the wake-up for [`Child::wait`] (so this
//! needs Linux 5.3 or later, as `tokio::process` does to wait without a SIGCHLD handler).
//! The child inherits nothing of Fleet's environment: it gets exactly the one it is given.
//! Commands with pipes (agents) go through `tokio::process`; this is for output to a file.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;

/// The child's stack: a few pages of it are ever touched (a handful of system calls).
const STACK: usize = 64 << 10;

/// What to start. `program` is a path (with a `/`) or a name looked up on the PATH of `env`
/// (or of Fleet's own environment).
pub(crate) struct Spec<'a> {
    pub program: &'a str,
    pub args: &'a [&'a str],
    /// The child's whole environment: nothing of Fleet's own is inherited (its keys and
    /// tokens must not reach commands an agent may have written).
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// `None`: Fleet's own working directory.
    pub cwd: Option<&'a Path>,
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// A started command, leader of its own process group. Dropped before it was waited for, it
/// is reaped in the background (it never becomes a lasting zombie).
pub(crate) struct Child {
    pid: i32,
    /// `None` once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

/// What the child reads: everything is made before `clone`, because the child shares the
/// parent's memory and must not allocate (another thread may hold the allocator's lock).
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [RawFd; 3],
    /// The error that stopped the child before or at `execve` (0: it exec'd).
    errno: AtomicI32,
}

/// Starts `spec` in a new process group. Must run inside a tokio runtime (the pidfd is
/// registered with its reactor).
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Child> {
    let path = CString::new(resolve(spec.program, spec.env)?.into_os_string().into_vec())?;
    let args: Vec<CString> = std::iter::once(spec.program)
        .chain(spec.args.iter().copied())
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let set: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<*const libc::c_char> = set.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = spec
        .cwd
        .map(|dir| CString::new(dir.as_os_str().as_bytes()))
        .transpose()?;
    // A descriptor below 3 would be overwritten by an earlier `dup2` in the child.
    let low: Vec<OwnedFd> = [spec.stdin, spec.stdout, spec.stderr]
        .iter()
        .filter(|fd| fd.as_raw_fd() < 3)
        .map(|fd| fd.try_clone_to_owned())
        .collect::<io::Result<_>>()?;
    let mut low_fds = low.iter();
    let fds = [spec.stdin, spec.stdout, spec.stderr].map(|fd| {
        if fd.as_raw_fd() < 3 {
            low_fds
                .next()
                .expect("one copy per low descriptor")
                .as_raw_fd()
        } else {
            fd.as_raw_fd()
        }
    });
    let args = ChildArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        fds,
        errno: AtomicI32::new(0),
    };
    let (pid, pidfd) = STACK_MEMORY.with(|stack| {
        let mut stack = stack.borrow_mut();
        clone_child(&mut stack, &args)
    })?;
    // SAFETY: `clone` with CLONE_PIDFD handed us this new descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let failed = args.errno.load(Ordering::Acquire);
    if failed != 0 {
        reap(pid);
        return Err(io::Error::from_raw_os_error(failed));
    }
    // SAFETY: the AsyncFd owns the pidfd, which stays open as long as it does.
    match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
        Ok(pidfd) => Ok(Child {
            pid,
            pidfd: Some(pidfd),
            status: None,
        }),
        Err(e) => {
            let e = e.into_parts().1;
            // Not left running unwatched: nobody could wait for it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            reap(pid);
            Err(e)
        }
    }
}

thread_local! {
    static STACK_MEMORY: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Clones the child onto `stack` and returns once it has exec'd or given up (CLONE_VFORK).
fn clone_child(stack: &mut Vec<u128>, args: &ChildArgs) -> io::Result<(i32, RawFd)> {
    if stack.is_empty() {
        // u128: 16-byte alignment, which the x86-64 and aarch64 ABIs want of a stack.
        stack.resize(STACK / 16, 0);
    }
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let mut pidfd: libc::c_int = -1;
    // SAFETY: every signal is blocked while the child shares our memory, so none of our
    // handlers runs on its stack; the mask is restored before returning. `clone` runs
    // `child_main` on a stack nothing else uses (this thread is suspended until the child
    // exec's or exits, CLONE_VFORK), with arguments that outlive the call. The child only
    // makes system calls.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            std::ptr::from_ref(args).cast_mut().cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        Ok((pid, pidfd))
    }
}

/// The child, between `clone` and `execve`: system calls only (no allocation, no locks, no
/// panics), on the stack `clone_child` gave it.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `spawn` keeps alive until we exec or exit; the
    // calls below are async-signal-safe system call wrappers given valid pointers.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
        if libc::setpgid(0, 0) != 0 {
            fail(args);
        }
        for (target, &fd) in args.fds.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(args);
            }
        }
        if !args.cwd.is_null() && libc::chdir(args.cwd) != 0 {
            fail(args);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.path, args.argv, args.envp);
        fail(args)
    }
}

/// Tells the parent why the child could not exec, and ends it.
///
/// # Safety
/// Only for the child of `clone_child`, with its `args`.
unsafe fn fail(args: &ChildArgs) -> ! {
    // SAFETY: errno is this thread's; `_exit` ends the child without running anything else.
    unsafe {
        let errno = *libc::__errno_location();
        args.errno.store(errno.max(1), Ordering::Release);
        libc::_exit(127)
    }
}

impl Child {
    /// The process id, which is also its process group's id.
    pub(crate) fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the command to end and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(pidfd) = &self.pidfd {
            self.status = Some(reap_when_ended(self.pid, pidfd).await?);
            self.pidfd = None;
        }
        Ok(self.status.expect("reaped with a status"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let pid = self.pid;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = reap_when_ended(pid, &pidfd).await;
            });
        }
    }
}

/// Waits until the pidfd says the child ended, then reaps it.
async fn reap_when_ended(pid: i32, pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitStatus> {
    loop {
        let mut ready = pidfd.readable().await?;
        match try_reap(pid)? {
            Some(status) => return Ok(status),
            None => ready.clear_ready(),
        }
    }
}

/// The child's status if it has ended (and it is reaped), `None` if it still runs.
fn try_reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing to a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some(ExitStatus::from_raw(status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Reaps a child that has exited or is about to (it failed before `execve`, or was killed).
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: as in `try_reap`, blocking: the child is gone or going.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// The file `program` names: itself if it has a `/`, else the first executable of that name
/// on the PATH (the task's own, if it sets one). Not found: `NotFound`, like `execvp`.
pub(crate) fn resolve(
    program: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> io::Result<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    // Searching PATH costs a `stat` per directory; Fleet's own PATH does not change.
    static FOUND: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    if program.contains('/') {
        return Ok(program.into());
    }
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{program:?} is not on the PATH"),
        )
    };
    if program.is_empty() {
        return Err(not_found());
    }
    let search = |path: &OsStr| {
        std::env::split_paths(path)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    };
    static OWN_PATH: OnceLock<OsString> = OnceLock::new();
    let own = OWN_PATH.get_or_init(|| {
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
    });
    // Only lookups on Fleet's own PATH (which it never changes) are remembered.
    if let Some(path) = env.get("PATH").filter(|p| OsStr::new(p) != own) {
        return search(OsStr::new(path)).ok_or_else(not_found);
    }
    let found = FOUND.get_or_init(Default::default);
    if let Some(p) = found.lock().unwrap_or_else(|e| e.into_inner()).get(program) {
        return Ok(p.clone());
    }
    let p = search(own).ok_or_else(not_found)?;
    found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(program.to_string(), p.clone());
    Ok(p)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Runs `program args` with output to a file; returns (status, output, pid).
    async fn run(
        program: &str,
        args: &[&str],
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
    ) -> io::Result<(ExitStatus, String, i32)> {
        let out = tempfile::tempfile()?;
        let null = std::fs::File::open("/dev/null")?;
        let mut child = spawn(&Spec {
            program,
            args,
            env,
            cwd,
            stdin: null.as_fd(),
            stdout: out.as_fd(),
            stderr: out.as_fd(),
        })?;
        let pid = child.id();
        let status = child.wait().await?;
        let mut text = String::new();
        let mut out = out;
        use std::io::Seek;
        out.rewind()?;
        out.read_to_string(&mut text)?;
        Ok((status, text, pid))
    }

    use std::os::fd::AsFd;

    #[tokio::test]
    async fn the_child_gets_exactly_the_environment_it_is_given() {
        let env = BTreeMap::from([
            (
                "FLEET_SPAWN_TEST".to_string(),
                "set by the task".to_string(),
            ),
            ("HOME".to_string(), "/replaced".to_string()),
        ]);
        let (status, out, _) = run("env", &[], &env, None).await.unwrap();
        assert!(status.success());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"FLEET_SPAWN_TEST=set by the task"), "{out}");
        assert!(lines.contains(&"HOME=/replaced"), "{out}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("HOME=")).count(), 1);
        // Nothing of Fleet's own environment is inherited, PATH included.
        assert_eq!(lines.len(), 2, "{out}");
    }

    #[tokio::test]
    async fn the_child_runs_in_its_directory_and_group_with_default_signals() {
        let dir = tempfile::tempdir().unwrap();
        let (status, out, pid) = run(
            "/bin/sh",
            &[
                "-c",
                "pwd; cut -d' ' -f5 /proc/$$/stat; grep -E '^Sig(Blk|Ign)' /proc/self/status",
            ],
            &BTreeMap::new(),
            Some(dir.path()),
        )
        .await
        .unwrap();
        assert!(status.success(), "{out}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines[0],
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );
        assert_eq!(lines[1], pid.to_string(), "a group of its own");
        let mask = |line: &str, name: &str| {
            let hex = line.strip_prefix(name).expect(name).trim();
            u64::from_str_radix(hex, 16).unwrap()
        };
        assert_eq!(mask(lines[2], "SigBlk:"), 0, "nothing blocked: {out}");
        // This test binary ignores SIGPIPE (Rust's runtime does); the command must not.
        let sigpipe = 1 << (libc::SIGPIPE - 1);
        assert_eq!(mask(lines[3], "SigIgn:") & sigpipe, 0, "{out}");
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back() {
        let none = BTreeMap::new();
        let (status, _, _) = run("sh", &["-c", "exit 3"], &none, None).await.unwrap();
        assert_eq!(status.code(), Some(3));
        let (status, _, _) = run("sh", &["-c", "kill -TERM $$"], &none, None)
            .await
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_an_error_and_leaves_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let none = BTreeMap::new();
        let missing = run("no-such-program-for-fleet", &[], &none, None).await;
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let denied = run(script.to_str().unwrap(), &[], &none, None).await;
        assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        let gone = run("true", &[], &none, Some(&dir.path().join("gone"))).await;
        assert_eq!(gone.unwrap_err().kind(), io::ErrorKind::NotFound);
        // The failed children were reaped: none is left as a zombie.
        assert_eq!(zombies_of_this_thread(), 0);
    }

    #[tokio::test]
    async fn a_child_dropped_unwaited_is_reaped_when_it_ends() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let child = spawn(&Spec {
            program: "sleep",
            args: &["0.2"],
            env: &BTreeMap::new(),
            cwd: None,
            stdin: null.as_fd(),
            stdout: null.as_fd(),
            stderr: null.as_fd(),
        })
        .unwrap();
        let pid = child.id();
        drop(child);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < until, "{pid} was never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Children of this process that ended before `execve` and were not reaped: they still
    /// carry the name of the thread that started them (each test has its own).
    fn zombies_of_this_thread() -> usize {
        let me = std::process::id().to_string();
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid ...
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')'));
                fields.first() == Some(&"Z")
                    && fields.get(1) == Some(&me.as_str())
                    && name.is_some_and(|(n, _)| n == comm.trim_end())
            })
            .count()
    }
}
