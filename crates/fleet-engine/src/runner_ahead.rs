//! A runner slot's claims: each held with its lease renewed from the moment it is claimed,
//! and at most one claimed ahead per runner (the next task, claimed while the current one
//! runs, so a runner of short tasks does not sit idle through a claim between two of them).
//!
//! A claim ahead is a claim like any other: its lease runs out if the runner dies (another
//! runner redoes it), and it counts toward the task's claim limit. A draining runner hands it
//! back at once (not counted as a claim, nor in the runner's tally), and so does a runner whose
//! current task outlives [`HOLD_AHEAD`]: a task claimed ahead must not wait long behind another
//! while a free runner could do it.

use crate::EngineError;
use crate::runner::RunnerTally;
use fleet_store::{Claim, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A slot claims ahead only after a task that took (its command, checks and landing) less
/// than this share of how long a claim ahead may wait: for longer tasks the claim's own time is
/// a small part, and holding a second task that long would keep it from idle runners.
pub(crate) const QUICK_SHARE: u32 = 5;

/// Claims held ahead per runner, whatever its concurrency.
const AHEAD_MAX: u32 = 1;

/// A claim this slot holds, its lease renewed every third of the TTL until dropped.
pub(crate) struct Held {
    pub claim: Claim,
    /// Raised when a renewal finds the claim is no longer this one's.
    pub lost: watch::Receiver<bool>,
    beat: JoinHandle<()>,
}

impl Held {
    pub(crate) fn new(store: Arc<dyn Store>, claim: Claim, ttl: Duration) -> Held {
        let (lost_tx, lost) = watch::channel(false);
        let beat = tokio::spawn({
            let claim = claim.clone();
            async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let (store, claim) = (store.clone(), claim.clone());
                    // An error (the store away for a moment) is tried at the next beat.
                    if let Ok(false) = crate::runner::blocking(move || {
                        crate::runner::queue_of(&*store).heartbeat(&claim, ttl)
                    })
                    .await
                    {
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            }
        });
        Held { claim, lost, beat }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.beat.abort();
    }
}

/// What a store write in flight for a slot will give: the tally of the end it wrote and the
/// task it claimed.
pub(crate) type Flight = JoinHandle<Result<(RunnerTally, Option<Held>), EngineError>>;

/// The runner's allowance of claims ahead, shared by its slots.
#[derive(Clone, Default)]
pub(crate) struct Allowance(Arc<AtomicU32>);

impl Allowance {
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < AHEAD_MAX).then_some(n + 1)
            })
            .is_ok()
    }

    fn give(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot's write in flight, and whether it may claim a task ahead (then it holds one of the
/// runner's allowance until that task starts or is given back).
pub(crate) struct Ahead {
    allowance: Allowance,
    flight: Option<Flight>,
    claims: bool,
}

impl Ahead {
    pub(crate) fn new(allowance: Allowance) -> Ahead {
        Ahead {
            allowance,
            flight: None,
            claims: false,
        }
    }

    /// Whether a task may be claimed ahead now (none is, and the runner's allowance has room);
    /// if so, the allowance is taken until [`Ahead::settle`] gives it back or the claim starts.
    pub(crate) fn may_claim(&mut self) -> bool {
        if self.flight.is_some() || self.claims {
            return false;
        }
        self.claims = self.allowance.take();
        self.claims
    }

    /// Puts a write in flight; `claims`: it claims a task ahead ([`Ahead::may_claim`] said so).
    pub(crate) fn fly(&mut self, flight: Flight, claims: bool) {
        debug_assert!(self.flight.is_none());
        if self.claims && !claims {
            self.allowance.give();
        }
        self.claims = claims;
        self.flight = Some(flight);
    }

    /// Whether a task is, or may be about to be, claimed ahead.
    pub(crate) fn holds_claim(&self) -> bool {
        self.claims && self.flight.is_some()
    }

    /// Waits for the write in flight: its tally goes into `tally`, and the task it claimed
    /// ahead, if any, is returned. The allowance stays taken while that task is handed over
    /// to start (it is then this slot's current task, no longer ahead): see [`Ahead::fly`].
    pub(crate) async fn settle(
        &mut self,
        tally: &mut RunnerTally,
    ) -> Result<Option<Held>, EngineError> {
        let Some(flight) = self.flight.take() else {
            self.release();
            return Ok(None);
        };
        let (t, claimed) = flight.await.map_err(std::io::Error::other)??;
        tally.add(&t);
        if claimed.is_none() {
            self.release();
        }
        Ok(claimed)
    }

    /// Gives the allowance back (nothing is claimed ahead any more).
    pub(crate) fn release(&mut self) {
        if self.claims {
            self.claims = false;
            self.allowance.give();
        }
    }
}
