//! Stop signals (SIGTERM from systemd, Kubernetes or `docker stop`; SIGINT from a terminal;
//! SIGHUP from a closed session) hold from a run's first instant to its last.
//!
//! Their default action ends Fleet wherever it is: after the run row exists but before its
//! loop listens, that leaves a run shown `running` and its commands orphaned. So a caller that
//! is about to start or resume a run first [`hold`]s them: they are blocked, and one that
//! comes while the run is being set up waits. The run's loop listens ([`Listener`]) and only
//! then releases them, so the pending one arrives there and stops the run the ordinary way
//! (attempts ended, recorded as interrupted, the resume hint). Once the loop has ended, the
//! listener stays installed and a late signal no longer kills Fleet mid-write.
//!
//! Children never inherit the block: `spawn.rs` and the standard library's `Command` empty the
//! signal mask of every child.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

const STOP: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

fn stop_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in STOP {
        set.add(s);
    }
    set
}

/// Blocks the stop signals on the calling thread (and on the threads it starts from now on)
/// until a run's loop listens for them.
pub fn hold() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_set()), None);
}

/// Holds the stop signals and hands them to a thread of their own, which raises the returned
/// watch when one comes: for a caller that drives several runs in turn (an epic's stages), so
/// a signal between two runs, or in one, stops the whole drive rather than being lost.
pub fn stop_watch() -> tokio::sync::watch::Receiver<bool> {
    hold();
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Started after `hold`: it inherits the block, which `sigwait` needs.
    std::thread::spawn(move || {
        if stop_set().wait().is_ok() {
            let _ = tx.send(true);
        }
    });
    rx
}

/// Undoes [`hold`] on the calling thread, for a command that will not listen: a signal then
/// acts as usual (one that came meanwhile, at once).
pub fn release() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_set()), None);
}

/// The stop signals, listened for; creating it releases a [`hold`] on this thread.
pub struct Listener {
    term: Stream,
    int: Stream,
    hup: Stream,
}

impl Listener {
    pub fn new() -> std::io::Result<Listener> {
        let listener = Listener {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        };
        // Listening now: a signal held back during set-up is delivered, and caught.
        release();
        Ok(listener)
    }

    /// The next stop signal, as the reason a run stops.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "terminated (SIGTERM)",
            _ = self.int.recv() => "interrupted (SIGINT)",
            _ = self.hup.recv() => "hung up (SIGHUP)",
        }
    }
}
