//! Machinery for tests that kill `fleet` at random moments: a seedable PRNG, the seed (from
//! an environment variable, printed so a failure can be replayed), waiting on a child with a
//! deadline, and finding the processes a run left behind by their `FLEET_RUN` tag.
#![allow(dead_code)]

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// SplitMix64: tiny, seedable, good enough to pick moments.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The seed in the environment variable `var`, else one made from the clock and the pid.
pub fn seed(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_secs() ^ u64::from(t.subsec_nanos()) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// The child's exit status once it ended, or `None` at `deadline`.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
    }
}

/// `exit N` or `signal N`.
pub fn status_code(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "?".into(),
    }
}

/// A live process found in `/proc`.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    /// `R`, `S`, `Z`, … from `/proc/<pid>/stat`.
    pub state: String,
    pub cmdline: String,
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} [{}] {}", self.pid, self.state, self.cmdline)
    }
}

/// Live processes whose environment carries `FLEET_RUN=<run>` (Fleet tags every process it
/// starts for a run so). A zombie has no readable environment and is not listed.
pub fn tagged_processes(run: &str) -> Vec<Proc> {
    let needle = format!("FLEET_RUN={run}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default();
        // The state follows the parenthesised command name, which may hold spaces.
        let state = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
            })
            .unwrap_or_else(|| "?".into());
        found.push(Proc {
            pid,
            state,
            cmdline,
        });
    }
    found
}

/// Tagged processes of `run` still alive after up to `grace` (a process SIGKILLed a moment
/// ago may still be on its way out).
pub fn tagged_after(run: &str, grace: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + grace;
    loop {
        let left = tagged_processes(run);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
