//! A runner learning that a task it holds was cancelled (its run was: `remote::cancel`, as
//! when a person cancels the epic whose stage it is).
//!
//! The store marks the claim `cancelled` and writes `task.cancelled`; the claim's heartbeat
//! fails from then on, which stops the task at the next beat at the latest. To stop it within
//! moments instead, a [`Watcher`] follows the store's notifications (LISTEN/NOTIFY on
//! PostgreSQL) and reads the run's new events for its task's `task.cancelled`. The runner
//! then ends the task's processes (their kill grace), lands nothing, and ends the claim with
//! [`end`].

use crate::{EngineError, now_ms};
use fleet_store::{Claim, NewEvent, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events of the run read at once.
const PAGE: usize = 500;
/// The least time between two reads of the run's events: a busy store wakes every watcher
/// for every event anywhere, and a cancellation need not be seen faster than this.
const GAP: Duration = Duration::from_millis(500);
/// How long a task runs before its watcher first reads the store: a task over sooner (the
/// common case of a busy queue of quick tasks) costs the store no read for its cancellation,
/// and a cancel is seen at most this much later.
const FIRST_LOOK: Duration = Duration::from_millis(100);

/// Raised once the watched claim's task is cancelled; stops watching when dropped.
pub(crate) struct Watcher {
    rx: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Watches `claim`'s task, held under a lease of `ttl` (a third of it bounds each wait
    /// when no notification comes).
    pub(crate) fn start(store: Arc<dyn Store>, claim: &Claim, ttl: Duration) -> Watcher {
        let (tx, rx) = watch::channel(false);
        let (run, task, poll) = (claim.run_id.clone(), claim.task_id.clone(), ttl / 3);
        let claim = claim.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(FIRST_LOOK).await;
            // Where to read from: the newest event now, then one heartbeat, which fails if
            // the claim was cancelled (or lost) before this point.
            let first = {
                let (store, claim) = (store.clone(), claim.clone());
                fleet_store::pg::spawn_blocking(move || {
                    let seen = store.newest_seq()?;
                    let held = match store.queue() {
                        Some(q) => q.heartbeat(&claim, ttl)?,
                        None => true,
                    };
                    fleet_store::Result::Ok((seen, !held))
                })
                .await
            };
            let mut seen = match first {
                Ok(Ok((_, true))) => {
                    let _ = tx.send(true);
                    return;
                }
                Ok(Ok((seen, false))) => seen,
                // The heartbeat is the fallback.
                _ => return,
            };
            loop {
                let (store, run, task) = (store.clone(), run.clone(), task.clone());
                let looked =
                    fleet_store::pg::spawn_blocking(move || look(&*store, &run, &task, seen, poll))
                        .await;
                match looked {
                    Ok(Ok((_, true))) => {
                        let _ = tx.send(true);
                        return;
                    }
                    Ok(Ok((newest, false))) => seen = newest,
                    // The store away for a moment: tried again after the gap.
                    Ok(Err(_)) => {}
                    Err(_) => return,
                }
                tokio::time::sleep(GAP).await;
            }
        });
        Watcher { rx, task }
    }

    pub(crate) fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    pub(crate) fn raised(&self) -> bool {
        *self.rx.borrow()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for events after `seen` (up to `poll`), then reads the run's new ones: the newest
/// seq, and whether `task` was cancelled among them.
fn look(
    store: &dyn Store,
    run: &str,
    task: &str,
    seen: u64,
    poll: Duration,
) -> fleet_store::Result<(u64, bool)> {
    let newest = store.wait_for_events(seen, poll)?;
    let mut after = seen;
    while newest > after {
        let page = store.events(Some(run), after, PAGE)?;
        if page
            .iter()
            .any(|e| e.kind == "task.cancelled" && e.task.as_deref() == Some(task))
        {
            return Ok((newest, true));
        }
        match page.last() {
            Some(e) if page.len() == PAGE => after = e.seq,
            _ => break,
        }
    }
    Ok((newest, false))
}

/// Ends `claim` as cancelled once its work is stopped: `true` if it was cancelled (a
/// `task.stopped` event says which runner stopped it), `false` if it was not (lost to another
/// runner, or still this runner's).
pub(crate) async fn end(
    store: Arc<dyn Store>,
    claim: &Claim,
    runner: &str,
) -> Result<bool, EngineError> {
    let ev = NewEvent {
        at: now_ms(),
        run_id: String::new(),
        task: None,
        attempt: None,
        kind: "task.stopped".into(),
        data: json!({"runner": runner, "why": "its run was cancelled; nothing of it landed"}),
    };
    let claim = claim.clone();
    let ended = fleet_store::pg::spawn_blocking(move || match store.queue() {
        Some(q) => q.end_cancelled(&claim, &[ev]),
        None => Ok(false),
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(ended)
}
