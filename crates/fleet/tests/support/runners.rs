//! What the runner tests share: a `fleet runner` started on a store, the processes a test
//! started (killed when it ends, however it ends, once the marks their held tasks wait on are
//! written, so no task outlives the test either), and a runner's pid in its lease holder name.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// A runner on the store `db` with its own workspace root, its standard output in `log`, a
/// lease of `ttl_secs` and a minute's drain grace, then the `extra` arguments.
pub fn spawn_runner(
    db: &str,
    workspace: &Path,
    log: &Path,
    ttl_secs: u64,
    extra: &[&str],
) -> Child {
    Command::new(FLEET)
        .args(["runner", "--store", db, "--workspace"])
        .arg(workspace)
        .args(["--lease-ttl", &ttl_secs.to_string(), "--grace", "60"])
        .args(extra)
        .env_remove("FLEET_HOME")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// `fleet run --on-runners RUNBOOK` for the instance at `home`, its output piped.
pub fn run_on_runners(runbook: &Path, home: &Path) -> Child {
    Command::new(FLEET)
        .args(["run", "--on-runners"])
        .arg(runbook)
        .env("FLEET_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The processes a test started; when dropped, `releases` are written in `marks` (the files
/// its held tasks wait for), then each process is killed and reaped.
pub struct Runners {
    pub children: Vec<Child>,
    marks: PathBuf,
    releases: &'static [&'static str],
}

impl Runners {
    pub fn new(children: Vec<Child>, marks: &Path, releases: &'static [&'static str]) -> Runners {
        Runners {
            children,
            marks: marks.to_path_buf(),
            releases,
        }
    }
}

impl Drop for Runners {
    fn drop(&mut self) {
        for mark in self.releases {
            let _ = std::fs::write(self.marks.join(mark), "");
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pid in a runner's lease holder name (`host:pid:start:n`).
pub fn pid_of(holder: &str) -> u32 {
    holder.split(':').nth(1).unwrap().parse().unwrap()
}

/// SIGTERM to a child of this test.
pub fn sigterm(pid: u32) {
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
}
