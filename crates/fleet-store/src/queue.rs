//! The task queue `fleet runner` workers claim from: the store's side of running a run's
//! tasks on other machines.
//!
//! A coordinator [`TaskQueue::enqueue`]s a run's tasks with their dependencies; a runner
//! [`TaskQueue::claim`]s one whose dependencies are all done and whose needs it can meet,
//! holds it with a lease it renews ([`TaskQueue::heartbeat`]), and ends it with
//! [`TaskQueue::finish`] or gives it back ([`TaskQueue::hand_back`]). A claim whose lease ran
//! out is claimable again (a new claim number: the work is redone from a clean workspace), up
//! to a limit. Every change carries its events, written in the same transaction, so a stream
//! of the event log sees the queue's life.
//!
//! Only backends shared by several machines have a queue: PostgreSQL does
//! (`FOR UPDATE SKIP LOCKED`); SQLite says so by returning `None` from [`crate::Store::queue`].

use crate::{NewEvent, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Joins the alternatives of one need: a runner offering any of them meets it.
pub const ANY_OF: &str = "|";

/// Whether `offers` meet `needs` (see [`QueueItem::needs`]): what a backend's claim decides.
pub fn meets(offers: &[String], needs: &[String]) -> bool {
    needs
        .iter()
        .all(|n| n.split(ANY_OF).any(|alt| offers.iter().any(|o| o == alt)))
}

/// One task to be run by a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    pub run_id: String,
    pub task_id: String,
    /// Tasks of the same run that must be `done` before this one may be claimed.
    pub deps: Vec<String>,
    /// What a runner must offer to claim it (`sh`, `cli:claude`, `label:gpu`, …): every entry,
    /// and an entry of alternatives joined by [`ANY_OF`] (`role:dev|role:ops`) by any one of them.
    pub needs: Vec<String>,
    /// What to do, as the coordinator described it (opaque to the store).
    pub spec: serde_json::Value,
}

/// A runner as it advertises itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerAd {
    /// Unique per process (a [`crate::LeaseHolder`] name).
    pub name: String,
    /// What it can play: every `needs` entry of an item it claims is one of these (or has an
    /// alternative that is).
    pub offers: Vec<String>,
    pub concurrency: u32,
}

/// A task a runner holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    pub task_id: String,
    /// 1 for the first claim; more when an earlier holder's lease ran out or it handed back.
    pub n: u32,
    pub holder: String,
    pub spec: serde_json::Value,
}

/// How a claimed task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// `done` or `failed` (a failed task's dependents are skipped).
    pub state: String,
    pub detail: Option<String>,
    /// The integration branch commit that landed the task, if it landed one.
    pub merge_sha: Option<String>,
}

/// The claim [`TaskQueue::finish_and_claim`] makes after ending one: as [`TaskQueue::claim`]'s
/// arguments.
#[derive(Debug, Clone, Copy)]
pub struct NextClaim<'a> {
    pub runner: &'a RunnerAd,
    pub ttl: Duration,
    pub max_claims: u32,
    pub events: &'a [NewEvent],
}

/// A queue entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRow {
    pub run_id: String,
    pub task_id: String,
    /// `queued`, `claimed`, `done`, `failed`, `skipped`, `cancelled` (a cancelled entry that
    /// was claimed keeps its holder until the holder ends it: [`TaskQueue::end_cancelled`]).
    pub state: String,
    pub holder: Option<String>,
    /// Claims so far (a hand-back does not count).
    pub claims: u32,
    pub detail: Option<String>,
    pub merge_sha: Option<String>,
}

/// How a run on runners ended, by its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnded {
    /// `passed` or `failed`.
    pub state: String,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The queue's operations (see the module's note).
pub trait TaskQueue: Send + Sync {
    /// Adds a run's tasks (all of them, in one transaction) with their events.
    fn enqueue(&self, items: &[QueueItem], events: &[NewEvent]) -> Result<()>;
    /// Claims the oldest claimable task `runner` can play for `ttl`, skipping rows other
    /// claimers hold locked: queued with every dependency done, or claimed under a lease that
    /// ran out and claimed fewer than `max_claims` times. `events` are written with the claim
    /// (each gets the claim's run, task and number).
    fn claim(
        &self,
        runner: &RunnerAd,
        ttl: Duration,
        max_claims: u32,
        events: &[NewEvent],
    ) -> Result<Option<Claim>>;
    /// Extends the claim's lease; `false` when it is no longer this claim's (it ran out and
    /// another runner claimed the task, or it ended).
    fn heartbeat(&self, claim: &Claim, ttl: Duration) -> Result<bool>;
    /// Ends the claim with its outcome and events; `false`, and nothing written, when the
    /// claim is no longer this one's.
    fn finish(&self, claim: &Claim, end: &Finish, events: &[NewEvent]) -> Result<bool>;
    /// [`TaskQueue::finish`], then [`TaskQueue::claim`] of the next task for a runner whose
    /// slot the end frees: `(ended, claimed)`. A backend may do both in one transaction (one
    /// commit, one round trip, instead of two); then the task just ended counts as done for
    /// the claim's dependency check, as it would for a claim after the commit. The claim is
    /// made whether or not the end was still this claim's.
    fn finish_and_claim(
        &self,
        claim: &Claim,
        end: &Finish,
        events: &[NewEvent],
        next: NextClaim<'_>,
    ) -> Result<(bool, Option<Claim>)> {
        let ended = self.finish(claim, end, events)?;
        let claimed = self.claim(next.runner, next.ttl, next.max_claims, next.events)?;
        Ok((ended, claimed))
    }
    /// Gives the task back unfinished (a draining runner): claimable again at once, and the
    /// claim not counted; `false` when it was no longer this claim's.
    fn hand_back(&self, claim: &Claim, events: &[NewEvent]) -> Result<bool>;
    /// Fails the claimed tasks whose lease ran out after `max_claims` claims (nobody may
    /// claim them again), with a `task.failed` event each and their dependents skipped.
    /// Returns the runs they belong to (a run may appear more than once).
    fn fail_exhausted(&self, max_claims: u32, at: i64) -> Result<Vec<String>>;
    /// Whether run `run_id` has an entry that has not ended (queued or claimed), found
    /// without reading its ended ones: what a process waiting for a run asks a few times a
    /// second, however many tasks the run has.
    fn has_open_entries(&self, run_id: &str) -> Result<bool>;
    /// Ends run `run_id` if it is still `running` and every entry of it has ended: `passed`
    /// when all are done, else `failed`, with one `run.finished` event — exactly once whoever
    /// calls (the runner that ended its last task, the process waiting for it, a sweep).
    /// `None` when it did not end it now (entries still open, or already ended).
    fn close_run_if_ended(&self, run_id: &str, at: i64) -> Result<Option<RunEnded>>;
    /// Cancels a run's entries that have not ended: queued and claimed ones become `cancelled`
    /// (never claimable again; a claimed one keeps its holder, whose heartbeat and finish now
    /// fail, so it learns it), their `tasks` rows too, with a `task.cancelled` event each
    /// (`reason`, and the holder of a claimed one) and `events`; the run, if still running,
    /// ends `cancelled` (`run.finished`) in the same transaction. Returns the tasks cancelled:
    /// none when the run had ended (and nothing is written).
    fn cancel_run(
        &self,
        run_id: &str,
        reason: &str,
        at: i64,
        events: &[NewEvent],
    ) -> Result<Vec<String>>;
    /// The holder of a cancelled claim ends it (after stopping its work, landing nothing):
    /// `true`, with `events`, when `claim` was cancelled while held; `false` otherwise (it was
    /// lost to another runner, or is not cancelled).
    fn end_cancelled(&self, claim: &Claim, events: &[NewEvent]) -> Result<bool>;
    /// A run's queue entries, by task id.
    fn queued(&self, run_id: &str) -> Result<Vec<QueueRow>>;
    /// Records (or refreshes) a runner's advertisement until `ttl` from now.
    fn advertise(&self, runner: &RunnerAd, ttl: Duration) -> Result<()>;
    /// Removes a runner's advertisement (it exits).
    fn retire(&self, name: &str) -> Result<()>;
    /// Runners whose advertisement is live.
    fn runners(&self) -> Result<Vec<RunnerAd>>;
}
