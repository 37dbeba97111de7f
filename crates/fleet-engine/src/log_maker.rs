//! Task logs made ahead of the attempts that write them.
//!
//! A task's start waits for its log to exist (the command's output goes there), and creating
//! a file is not always cheap: on ext4 without a journal, right after many files were deleted,
//! every creation scans past each recently freed inode (hundreds of microseconds apiece);
//! network and overlay file systems are slow at it too. So the log of a task that became ready
//! is created on a thread of its own while the task waits for a slot, and its attempt only
//! opens it, on the event loop. An attempt that finds no log creates it on the blocking pool
//! (`process::run_opening_log`); two creations of one path (`O_CREAT`, no `O_EXCL`) meet at the
//! same file, so the thread never decides anything.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::mpsc;

/// Logs handed to the thread at once. Each hand-off costs the coordinator a wake-up; a larger
/// batch waits longer to be sent, and a task that starts before its log is made creates it on
/// the blocking pool. Counted under strace in B1: 134 of 1000 tasks did with 32, 28 with 8.
const BATCH: usize = 8;

pub(crate) struct LogMaker {
    /// `None` if the thread could not be started: attempts then create their logs.
    tx: Option<mpsc::Sender<Vec<PathBuf>>>,
    wanted: Vec<PathBuf>,
}

impl LogMaker {
    pub(crate) fn start() -> LogMaker {
        let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
        let thread = std::thread::Builder::new()
            .name("fleet-logs".into())
            .spawn(move || {
                // Ends when the coordinator drops its sender.
                for paths in rx {
                    for path in paths {
                        let _ = OpenOptions::new().create(true).append(true).open(&path);
                    }
                }
            });
        LogMaker {
            tx: thread.is_ok().then_some(tx),
            wanted: Vec::new(),
        }
    }

    /// Notes a log to make with the next [`LogMaker::send`].
    pub(crate) fn want(&mut self, path: PathBuf) {
        if self.tx.is_some() {
            self.wanted.push(path);
        }
    }

    /// Hands the logs noted so far to the thread once there are [`BATCH`] of them: waking it
    /// costs the coordinator a system call, too much to pay per task. Logs still waiting when
    /// their task starts are made by the attempt.
    pub(crate) fn send(&mut self) {
        if let Some(tx) = &self.tx
            && self.wanted.len() >= BATCH
        {
            let _ = tx.send(std::mem::take(&mut self.wanted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn makes_the_logs_it_is_sent_and_leaves_existing_ones_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.log");
        std::fs::write(&kept, "attempt 1\n").unwrap();
        let fresh: Vec<PathBuf> = (0..BATCH)
            .map(|i| dir.path().join(format!("t{i}.log")))
            .collect();
        let mut maker = LogMaker::start();
        // The existing log goes first: once the fresh ones exist, the thread has been by it.
        for p in std::iter::once(&kept).chain(&fresh) {
            maker.want(p.clone());
        }
        maker.send();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fresh.iter().all(|p| p.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for p in &fresh {
            assert_eq!(std::fs::read(p).unwrap(), b"", "{}", p.display());
        }
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "attempt 1\n");
    }

    #[test]
    fn waits_for_a_whole_batch_before_waking_the_thread() {
        let mut maker = LogMaker::start();
        for i in 0..BATCH - 1 {
            maker.want(PathBuf::from(format!("/nonexistent/t{i}.log")));
        }
        maker.send();
        assert_eq!(
            maker.wanted.len(),
            BATCH - 1,
            "sent before the batch was full"
        );
        maker.want(PathBuf::from("/nonexistent/last.log"));
        maker.send();
        assert!(maker.wanted.is_empty());
    }
}
