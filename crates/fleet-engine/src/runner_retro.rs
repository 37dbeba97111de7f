//! Retrospectives of agent tasks played on a runner, after the claim ended and the task
//! landed.
//!
//! Inside the sub-run a retrospective would hold the claim, and the run's merge behind it,
//! while an agent reflects; so the sub-run runs without them and leaves its [`Pending`]
//! retrospective here. Once the runner ended the claim, [`Retros::start`] runs it in the
//! background with the engine's own code (`retrospective.rs`: the same evidence, the same
//! retrospector role, the lessons into the instance's memory), in the task's clone, which is
//! removed after. It holds no lease; it is bounded by [`LIMIT`]; a runner that stops does not
//! wait for the ones still going and says so on stderr.

use crate::engine::RunReport;
use crate::retrospective::Learner;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a task's retrospectives may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(15 * 60);

/// A sub-run's retrospective, waiting for its claim to end.
pub(crate) struct Pending {
    pub learner: Learner,
    pub report: RunReport,
}

/// The retrospectives of one runner: waiting for their claims, and running.
#[derive(Default)]
pub(crate) struct Retros {
    pending: Mutex<HashMap<String, Pending>>,
    running: Arc<AtomicUsize>,
}

fn key(run: &str, task: &str, n: u32) -> String {
    format!("{run}/{task}/{n}")
}

impl Retros {
    /// Keeps the retrospective of claim `n` of `run`'s `task` until [`Retros::start`].
    pub(crate) fn keep(&self, run: &str, task: &str, n: u32, p: Pending) {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key(run, task, n), p);
    }

    /// Whether a retrospective waits for `claim`'s end (its sub-run kept one).
    pub(crate) fn pending(&self, claim: &fleet_store::Claim) -> bool {
        let map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(&key(&claim.run_id, &claim.task_id, claim.n))
    }

    /// The claim ended: its retrospective runs in the background if the task `landed` (else
    /// it is dropped), and `dir`, the task's clone it reads, is removed after it. Without
    /// one, `dir` is removed now.
    pub(crate) async fn start(&self, claim: &fleet_store::Claim, landed: bool, dir: PathBuf) {
        let pending = {
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&key(&claim.run_id, &claim.task_id, claim.n))
        };
        let Some(p) = pending.filter(|_| landed) else {
            let _ = fleet_store::pg::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            return;
        };
        let running = self.running.clone();
        running.fetch_add(1, Ordering::SeqCst);
        let task = claim.task_id.clone();
        // A thread and a runtime of its own, as the sub-run had: the engine's run inside is
        // not the runner's slots' business.
        let spawned = std::thread::Builder::new()
            .name(format!("retro {task}"))
            .spawn({
                let running = running.clone();
                move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        let ran = rt.block_on(async {
                            tokio::time::timeout(LIMIT, p.learner.after(&p.report)).await
                        });
                        if ran.is_err() {
                            eprintln!(
                                "fleet runner: the retrospective of {task} took over {}s and was stopped",
                                LIMIT.as_secs()
                            );
                        }
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    running.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if spawned.is_err() {
            running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The runner stops: the retrospectives still running are not waited for.
    pub(crate) fn abandon(&self) {
        let n = self.running.load(Ordering::SeqCst);
        if n > 0 {
            eprintln!(
                "fleet runner: stopping without waiting for {n} retrospective{} still running (their lessons are skipped)",
                if n == 1 { "" } else { "s" }
            );
        }
    }
}
