//! `fleet runner`: a worker that claims tasks from the store's queue and does them on its own
//! machine, sharing nothing with other runners but the store and the projects' remotes.
//!
//! A claimed task runs in a fresh directory under the runner's workspace root (a clone of the
//! remote on the task's branch, or an empty directory for `workspace: none`), with the
//! engine's supervised processes ([`crate::process::run`]: own process group, timeout, log).
//! The claim's lease is renewed every third of its TTL; a runner that dies stops renewing,
//! and another claims the task again after the TTL and redoes it from scratch.
//!
//! A task's work lands on its run's integration branch on the remote one runner at a time,
//! compare-and-swap, and never twice (`runner_land.rs`).
//!
//! A stop signal drains: no new claims; running tasks get `grace` to finish, then their
//! commands are ended and the tasks handed back (claimable at once by another runner).
//! A task whose run is cancelled is stopped the same way, lands nothing, and its claim ends
//! cancelled (`runner_cancel.rs`).
//!
//! A runner's workspace root is its own while it runs; what a killed runner left there is
//! removed by the next one to take it (`runner_workspace.rs`).

use crate::process;
use crate::remote::{MAX_CLAIMS, NO_QUEUE, TaskOrder};
pub use crate::runner_agent::AgentSetup;
use crate::runner_agent::{SubRun, SubRunEnd};
use crate::runner_ahead::{self, Ahead, Allowance, Held};
use crate::runner_land::{land, push_task_branch};
use crate::runner_task::{ShellEnd, ShellTask};
use crate::runner_workspace::{emptied, empty_dir, prepare, works_in_empty_dir};
use crate::{EngineError, now_ms};
use fleet_secrets::Redactor;
use fleet_store::{Claim, Finish, LeaseHolder, NewEvent, NextClaim, RunnerAd, Store};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// This runner's own directory: task workspaces and logs go under it.
    pub workspace: PathBuf,
    /// Tasks at once.
    pub concurrency: u32,
    /// Advertised as `label:<l>`; a task that needs a label only goes to runners with it.
    pub labels: Vec<String>,
    /// Agent CLIs installed here, advertised as `cli:<name>`.
    pub clis: Vec<String>,
    /// A claim's lease: a dead runner's task is claimed again this long after its last beat.
    pub lease_ttl: Duration,
    /// How long a draining runner lets its running tasks finish before handing them back.
    pub grace: Duration,
    /// Between SIGTERM and SIGKILL when a task's processes are ended.
    pub kill_grace: Duration,
    /// How often an idle runner looks at the queue when no event woke it (lease expiries
    /// announce themselves with no event).
    pub idle_poll: Duration,
    /// The profiles and accounts agent tasks are played with; none: shell tasks only.
    pub agents: Option<AgentSetup>,
    /// How long a task claimed ahead may wait behind the current one before it is handed
    /// back (see `runner_ahead.rs`); zero: never claim ahead.
    pub claim_ahead: Duration,
}

/// What a runner did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerTally {
    pub done: u32,
    pub failed: u32,
    pub handed_back: u32,
    /// Claims that ran out while this runner worked (another runner redoes them).
    pub lost: u32,
    /// Claims whose run was cancelled while this runner held them (stopped, nothing landed).
    pub cancelled: u32,
}

impl RunnerTally {
    pub(crate) fn add(&mut self, o: &RunnerTally) {
        self.done += o.done;
        self.failed += o.failed;
        self.handed_back += o.handed_back;
        self.lost += o.lost;
        self.cancelled += o.cancelled;
    }
}

/// What this runner offers: `sh` (every runner runs shell commands), its CLIs and labels,
/// and with agents the profiles and roles it can play ([`AgentSetup::offers`]).
pub fn offers(clis: &[String], labels: &[String], agents: Option<&AgentSetup>) -> Vec<String> {
    let mut o = vec!["sh".to_string()];
    o.extend(clis.iter().map(|c| format!("cli:{c}")));
    o.extend(labels.iter().map(|l| format!("label:{l}")));
    o.extend(agents.map(|a| a.offers(clis)).unwrap_or_default());
    o
}

/// Claims and does tasks until `stop` is raised, then drains (see the module's note).
pub async fn serve(
    store: Arc<dyn Store>,
    opts: RunnerOptions,
    stop: watch::Receiver<bool>,
) -> Result<RunnerTally, EngineError> {
    if store.queue().is_none() {
        return Err(EngineError::Invalid(NO_QUEUE.into()));
    }
    let ad = RunnerAd {
        name: LeaseHolder::this_process().as_str().to_string(),
        offers: offers(&opts.clis, &opts.labels, opts.agents.as_ref()),
        concurrency: opts.concurrency.max(1),
    };
    blocking({
        let (store, ad, ttl) = (store.clone(), ad.clone(), opts.lease_ttl);
        move || queue_of(&*store).advertise(&ad, ttl)
    })
    .await?;
    let (kill_tx, kill_rx) = watch::channel(false);
    let drain = tokio::spawn({
        let (mut stop, grace) = (stop.clone(), opts.grace);
        async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(grace).await;
            let _ = kill_tx.send(true);
        }
    });
    let beat = tokio::spawn({
        let (store, ad, ttl) = (store.clone(), ad.clone(), opts.lease_ttl);
        async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let (store, ad) = (store.clone(), ad.clone());
                let _ = blocking(move || queue_of(&*store).advertise(&ad, ttl)).await;
            }
        }
    });
    let allowance = Allowance::default();
    let retros = Arc::new(crate::runner_retro::Retros::default());
    let secret_names = (opts.agents.as_ref())
        .map(|a| a.instance.secret_names())
        .unwrap_or_default();
    let redactor = Arc::new(Redactor::from_process_env(&secret_names));
    let slots: Vec<_> = (0..ad.concurrency)
        .map(|index| {
            let slot = Arc::new(Slot {
                index,
                store: store.clone(),
                ad: ad.clone(),
                opts: opts.clone(),
                kill: kill_rx.clone(),
                allowance: allowance.clone(),
                retros: retros.clone(),
                redactor: redactor.clone(),
            });
            tokio::spawn(slot.run(stop.clone()))
        })
        .collect();
    let mut tally = RunnerTally::default();
    let mut first_error = None;
    for s in slots {
        match s.await {
            Ok(Ok(t)) => tally.add(&t),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(EngineError::Io(std::io::Error::other(e)))),
        }
    }
    drain.abort();
    beat.abort();
    retros.abandon();
    for index in 0..ad.concurrency {
        let _ = std::fs::remove_dir_all(empty_dir(&opts.workspace, &ad.name, index));
    }
    let name = ad.name.clone();
    let _ = blocking(move || queue_of(&*store).retire(&name)).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}

pub(crate) fn queue_of(store: &dyn Store) -> &dyn fleet_store::TaskQueue {
    store.queue().expect("checked when the runner started")
}

/// The store is blocking: its calls go to the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> fleet_store::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    fleet_store::pg::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
        .map_err(EngineError::from)
}

/// One task at a time (and at most one claimed ahead, see `runner_ahead.rs`); a runner has
/// `concurrency` of these.
struct Slot {
    /// Which of the runner's slots (0 to its concurrency).
    index: u32,
    store: Arc<dyn Store>,
    ad: RunnerAd,
    opts: RunnerOptions,
    kill: watch::Receiver<bool>,
    allowance: Allowance,
    retros: Arc<crate::runner_retro::Retros>,
    /// Secrets this runner knows: its instance's configured ones and every variable of its
    /// environment whose name says it holds one (what the engine's redactor knows locally).
    redactor: Arc<Redactor>,
}

/// A finished task's end being written on the blocking pool ([`Slot::write_end`]): whether
/// it ended (the claim was still this runner's) and the next task claimed with it.
struct EndWrite {
    job: tokio::task::JoinHandle<fleet_store::Result<(bool, Option<Claim>)>>,
    is_done: bool,
}

/// How a task's work ended on this runner.
enum Worked {
    Passed {
        commit: Option<String>,
    },
    Failed(String),
    /// Its command was ended (drain grace over, or the claim was lost).
    Stopped,
}

/// What is left to write of a task once its work is over.
enum Ending {
    Finish(Finish),
    /// Its command was stopped: give it back.
    HandBack,
    /// The claim ran out meanwhile: another runner has it, nothing to write.
    Lost,
    /// Its run was cancelled: stopped, nothing landed, the claim already ended cancelled.
    Cancelled,
}

impl Slot {
    /// Claims and works until `stop`. A task's end and the slot's next claim are one store
    /// write; after a quick task ([`runner_ahead::QUICK_SHARE`]) the next task is claimed while the
    /// current one runs, and starts as soon as it ends, its predecessor's end written
    /// meanwhile together with the claim of the one after.
    async fn run(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunnerTally, EngineError> {
        let mut tally = RunnerTally::default();
        let store = self.store.clone();
        let mut seen = blocking(move || store.newest_seq()).await?;
        let mut ahead = Ahead::new(self.allowance.clone());
        let mut next: Option<Held> = None;
        let mut quick = false;
        loop {
            if *stop.borrow_and_update() {
                if let Some(h) = next.take() {
                    self.give_back(h).await;
                }
                self.give_back_ahead(&mut ahead, &mut tally).await?;
                break;
            }
            let current = match next.take() {
                Some(h) => h,
                None => match self.clone().claim().await?.1 {
                    Some(h) => h,
                    None => {
                        // Idle: end what ended with nobody waiting for it. A failed sweep is
                        // tried at the next idle turn.
                        let store = self.store.clone();
                        let _ =
                            fleet_store::pg::spawn_blocking(move || crate::remote::sweep(&*store))
                                .await;
                        let (store, poll) = (self.store.clone(), self.opts.idle_poll);
                        tokio::select! {
                            newest = blocking(move || store.wait_for_events(seen, poll)) => seen = newest?,
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                },
            };
            if quick && ahead.may_claim() {
                ahead.fly(tokio::spawn(self.clone().claim()), true);
            }
            let began = std::time::Instant::now();
            let ending = self
                .work_watching(&current, &mut stop, &mut ahead, &mut tally)
                .await?;
            quick = began.elapsed() < self.opts.claim_ahead / runner_ahead::QUICK_SHARE;
            let stopping = *stop.borrow();
            match ahead.settle(&mut tally).await? {
                Some(ready) => {
                    // The next task starts now; this one's end is written meanwhile.
                    let more = quick && !stopping;
                    let write = self.clone().record(current, ending, more);
                    ahead.fly(tokio::spawn(write), more);
                    next = Some(ready);
                }
                None => {
                    let (t, claimed) = self.clone().record(current, ending, !stopping).await?;
                    tally.add(&t);
                    next = claimed;
                }
            }
        }
        Ok(tally)
    }

    /// Claims a task for this slot (in the shape of a write in flight: nothing to tally).
    async fn claim(self: Arc<Self>) -> Result<(RunnerTally, Option<Held>), EngineError> {
        let started = self.started_event();
        let (store, ad, ttl) = (self.store.clone(), self.ad.clone(), self.opts.lease_ttl);
        let claim = blocking(move || {
            queue_of(&*store).claim(&ad, ttl, MAX_CLAIMS, std::slice::from_ref(&started))
        })
        .await?;
        Ok((RunnerTally::default(), claim.map(|c| self.hold(c))))
    }

    fn hold(&self, claim: Claim) -> Held {
        Held::new(self.store.clone(), claim, self.opts.lease_ttl)
    }

    fn started_event(&self) -> NewEvent {
        event("task.started", json!({"runner": self.ad.name}))
    }

    /// [`Slot::work`], giving back what is claimed ahead as soon as the runner is told to stop
    /// or the current task outlives [`RunnerOptions::claim_ahead`].
    async fn work_watching(
        &self,
        held: &Held,
        stop: &mut watch::Receiver<bool>,
        ahead: &mut Ahead,
        tally: &mut RunnerTally,
    ) -> Result<Ending, EngineError> {
        let work = self.work(held);
        tokio::pin!(work);
        let hold_until = tokio::time::Instant::now() + self.opts.claim_ahead;
        let mut stop_seen = *stop.borrow();
        loop {
            tokio::select! {
                ending = &mut work => return ending,
                changed = stop.changed(), if !stop_seen => {
                    stop_seen = changed.is_err() || *stop.borrow();
                    if stop_seen {
                        self.give_back_ahead(ahead, tally).await?;
                    }
                }
                _ = tokio::time::sleep_until(hold_until), if ahead.holds_claim() => {
                    self.give_back_ahead(ahead, tally).await?;
                }
            }
        }
    }

    /// Gives back the task claimed ahead, if any (once the write in flight is over).
    async fn give_back_ahead(
        &self,
        ahead: &mut Ahead,
        tally: &mut RunnerTally,
    ) -> Result<(), EngineError> {
        if let Some(h) = ahead.settle(tally).await? {
            self.give_back(h).await;
        }
        ahead.release();
        Ok(())
    }

    /// Hands back a claim that never started: claimable at once, and counted nowhere (not a
    /// claim of the task, not in the tally). A failure leaves it to run out.
    async fn give_back(&self, held: Held) {
        let ev = event("task.handed_back", json!({"runner": self.ad.name}));
        let (store, c) = (self.store.clone(), held.claim.clone());
        let _ = blocking(move || queue_of(&*store).hand_back(&c, &[ev])).await;
    }

    async fn work(&self, held: &Held) -> Result<Ending, EngineError> {
        let claim = &held.claim;
        let order: TaskOrder = match serde_json::from_value(claim.spec.clone()) {
            Ok(o) => o,
            Err(e) => {
                let reason = format!("the queued order is not one this runner reads: {e}");
                return Ok(Ending::Finish(failed(&reason)));
            }
        };
        let lost_rx = held.lost.clone();
        let cancel =
            crate::runner_cancel::Watcher::start(self.store.clone(), claim, self.opts.lease_ttl);
        let cmd_stop = either(
            either(self.kill.clone(), lost_rx.clone()),
            cancel.receiver(),
        );
        let in_empty_dir = works_in_empty_dir(&order);
        let dir = match in_empty_dir {
            true => empty_dir(&self.opts.workspace, &self.ad.name, self.index),
            false => self.task_dir(claim),
        };
        let worked = self.execute(claim, &order, &dir, cmd_stop).await;
        let lost = *lost_rx.borrow();
        // Cancelled: its processes were ended (or it finished meanwhile); nothing lands.
        if (lost || cancel.raised())
            && crate::runner_cancel::end(self.store.clone(), claim, &self.ad.name).await?
        {
            // Its workspace goes the way of every other (after a pending retrospective's
            // drop, in `record`).
            if !in_empty_dir && !self.retros.pending(claim) {
                let _ =
                    fleet_store::pg::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            }
            return Ok(Ending::Cancelled);
        }
        let outcome = match worked {
            _ if lost => return Ok(Ending::Lost),
            Err(e) => Worked::Failed(format!("the runner could not do it: {e}")),
            Ok(w) => w,
        };
        let ending = match outcome {
            Worked::Stopped => Ending::HandBack,
            Worked::Failed(reason) => Ending::Finish(failed(&reason)),
            Worked::Passed { commit: None } => Ending::Finish(Finish {
                state: "done".into(),
                detail: None,
                merge_sha: None,
            }),
            Worked::Passed {
                commit: Some(commit),
            } => {
                let (store, c, o, d, ttl) = (
                    self.store.clone(),
                    claim.clone(),
                    order.clone(),
                    dir.clone(),
                    self.opts.lease_ttl,
                );
                let landed =
                    fleet_store::pg::spawn_blocking(move || land(store, &c, &o, &d, &commit, ttl))
                        .await
                        .map_err(std::io::Error::other)?;
                match landed {
                    Ok(Some(merge)) => Ending::Finish(Finish {
                        state: "done".into(),
                        detail: None,
                        merge_sha: Some(merge),
                    }),
                    Ok(None) => Ending::Lost,
                    Err(reason) => Ending::Finish(failed(&reason)),
                }
            }
        };
        // The workspace was this claim's alone; the log stays. An empty one (a task without
        // a workspace) goes at once, without a trip to the blocking pool; the slot's empty
        // directory stays, emptied before its next task. One a retrospective will read goes
        // after it (`record`).
        let read_later = self.retros.pending(claim);
        if read_later || in_empty_dir {
            // Left for the retrospective, or for the slot's next task.
        } else if order.workspace == "git" {
            let _ = fleet_store::pg::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        } else if std::fs::remove_dir(&dir).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(ending)
    }

    /// Writes `ending` of `held`; with `claim_next`, claims the slot's next task too (with a
    /// done task's end, in the same statement). The tally of what was written and the claim.
    ///
    /// A task's end starts on its way to the store now, on the blocking pool, not when the
    /// returned future is first polled: on the runtime's one thread that would wait until the
    /// next task's command was started, and the write is what that task's successor waits for.
    fn record(
        self: Arc<Self>,
        held: Held,
        ending: Ending,
        claim_next: bool,
    ) -> impl Future<Output = Result<(RunnerTally, Option<Held>), EngineError>> + Send + 'static
    {
        let writing = match ending {
            Ending::Finish(end) => Ok(self.write_end(&held.claim, end, claim_next)),
            other => Err(other),
        };
        self.recorded(held, writing, claim_next)
    }

    /// Starts writing a finished task's end (and claiming the next with it) on the blocking
    /// pool, at once: the events, the statement, and the run's end if it was its last task.
    fn write_end(&self, claim: &Claim, mut end: Finish, claim_next: bool) -> EndWrite {
        let is_done = end.state == "done";
        let started = self.started_event();
        let (store, c, ad, ttl) = (
            self.store.clone(),
            claim.clone(),
            self.ad.clone(),
            self.opts.lease_ttl,
        );
        let (redactor, log) = (self.redactor.clone(), self.log_path(claim));
        let job = fleet_store::pg::spawn_blocking(move || {
            let events = crate::runner_task::end_events(&mut end, &ad.name, &log, &redactor);
            let q = queue_of(&*store);
            let (ended, claimed) = if claim_next {
                let next = NextClaim {
                    runner: &ad,
                    ttl,
                    max_claims: MAX_CLAIMS,
                    events: std::slice::from_ref(&started),
                };
                q.finish_and_claim(&c, &end, &events, next)?
            } else {
                (q.finish(&c, &end, &events)?, None)
            };
            // Its last task ended: the run ends now, whether or not anyone waits for it. A
            // task of the same run claimed with the end is open: this was not the last (its
            // own end asks again), and the store need not be asked.
            let next_in_run = claimed.as_ref().is_some_and(|n| n.run_id == c.run_id);
            if ended && !next_in_run {
                q.close_run_if_ended(&c.run_id, now_ms())?;
            }
            Ok((ended, claimed))
        });
        EndWrite { job, is_done }
    }

    /// [`Slot::record`] once its write, if any, is under way.
    async fn recorded(
        self: Arc<Self>,
        held: Held,
        writing: Result<EndWrite, Ending>,
        claim_next: bool,
    ) -> Result<(RunnerTally, Option<Held>), EngineError> {
        let mut tally = RunnerTally::default();
        let write = match writing {
            Ok(write) => write,
            Err(ending) => {
                match ending {
                    Ending::Lost => tally.lost += 1,
                    Ending::Cancelled => tally.cancelled += 1,
                    Ending::HandBack => {
                        let ev = event("task.handed_back", json!({"runner": self.ad.name}));
                        let (store, c) = (self.store.clone(), held.claim.clone());
                        if blocking(move || queue_of(&*store).hand_back(&c, &[ev])).await? {
                            tally.handed_back += 1;
                        } else {
                            tally.lost += 1;
                        }
                    }
                    Ending::Finish(_) => unreachable!("a finish is written by `write_end`"),
                }
                self.after_end(&held.claim, false).await;
                drop(held);
                if !claim_next {
                    return Ok((tally, None));
                }
                let (_, claimed) = self.clone().claim().await?;
                return Ok((tally, claimed));
            }
        };
        let (ended, claimed) = write
            .job
            .await
            .map_err(std::io::Error::other)?
            .map_err(EngineError::from)?;
        self.after_end(&held.claim, ended && write.is_done).await;
        drop(held);
        match (ended, write.is_done) {
            (true, true) => tally.done += 1,
            (true, false) => tally.failed += 1,
            (false, _) => tally.lost += 1,
        }
        Ok((tally, claimed.map(|c| self.hold(c))))
    }

    /// A claim's clone (or empty directory) under the runner's workspace.
    fn task_dir(&self, claim: &Claim) -> PathBuf {
        self.opts
            .workspace
            .join("tasks")
            .join(&claim.run_id)
            .join(format!("{}.{}", claim.task_id, claim.n))
    }

    /// Once a claim's end is written: a retrospective of its task (an agent task that failed
    /// then passed) runs in the background if it `landed`, then its clone goes.
    async fn after_end(&self, claim: &Claim, landed: bool) {
        if self.retros.pending(claim) {
            self.retros.start(claim, landed, self.task_dir(claim)).await;
        }
    }

    /// A shell task's log on this runner: one per claim, its attempts appended.
    fn log_path(&self, claim: &Claim) -> PathBuf {
        self.opts
            .workspace
            .join("logs")
            .join(&claim.run_id)
            .join(format!("{}.{}.log", claim.task_id, claim.n))
    }

    /// Prepares a clean workspace, runs the command and its checks, commits and pushes the
    /// task branch.
    async fn execute(
        &self,
        claim: &Claim,
        order: &TaskOrder,
        dir: &Path,
        stop: watch::Receiver<bool>,
    ) -> Result<Worked, EngineError> {
        let logs = self.opts.workspace.join("logs").join(&claim.run_id);
        let git_ws = order.workspace == "git";
        if git_ws {
            let (dir, logs, order) = (dir.to_path_buf(), logs.clone(), order.clone());
            fleet_store::pg::spawn_blocking(move || prepare(&dir, &logs, &order, git_ws))
                .await
                .map_err(std::io::Error::other)??;
        } else if works_in_empty_dir(order) {
            std::fs::create_dir_all(&logs)?;
            emptied(dir)?;
        } else {
            // Two directories: not worth a trip to the blocking pool and back.
            prepare(dir, &logs, order, false)?;
        }
        if let Some(agent) = &order.agent {
            return self.play_agent(claim, order, agent, dir, stop).await;
        }
        let mut env = process::command_env(&order.pass_env);
        env.extend(order.env.clone());
        env.insert("FLEET_RUN".into(), claim.run_id.clone());
        env.insert("FLEET_TASK".into(), claim.task_id.clone());
        let redactor = &*self.redactor;
        let ended = crate::runner_task::run(ShellTask {
            store: self.store.clone(),
            claim,
            order,
            dir,
            log_path: &self.log_path(claim),
            env: &env,
            redactor,
            runner: &self.ad.name,
            kill_grace: self.opts.kill_grace,
            stop,
        })
        .await?;
        match ended {
            ShellEnd::Passed => {}
            ShellEnd::Stopped => return Ok(Worked::Stopped),
            ShellEnd::Failed(reason) => return Ok(Worked::Failed(reason)),
        }
        if !git_ws {
            return Ok(Worked::Passed { commit: None });
        }
        let (dir, order, claim) = (dir.to_path_buf(), order.clone(), claim.clone());
        let commit = fleet_store::pg::spawn_blocking(move || -> Result<_, EngineError> {
            let repo = fleet_git::Repo::open(&dir)?;
            let msg = format!("fleet: task {} (claim {})", claim.task_id, claim.n);
            let Some(sha) = repo.commit_all(&dir, &msg)? else {
                return Ok(None);
            };
            push_task_branch(&dir, &sha, &order.task_branch)?;
            Ok(Some(sha))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Worked::Passed { commit })
    }

    /// An agent task: a one-task sub-run of the engine in the clone (`runner_agent.rs`).
    async fn play_agent(
        &self,
        claim: &Claim,
        order: &TaskOrder,
        agent: &crate::remote::AgentOrder,
        dir: &Path,
        stop: watch::Receiver<bool>,
    ) -> Result<Worked, EngineError> {
        let Some(setup) = &self.opts.agents else {
            return Ok(Worked::Failed(
                "this runner has no agents (it was started without an instance)".into(),
            ));
        };
        let state = self.opts.workspace.join("state");
        let end = crate::runner_agent::play(SubRun {
            store: self.store.clone(),
            setup,
            claim,
            order,
            agent,
            dir,
            state: &state,
            runner: &self.ad.name,
            kill_grace: self.opts.kill_grace,
            stop,
            retros: &self.retros,
        })
        .await?;
        match end {
            SubRunEnd::Stopped => Ok(Worked::Stopped),
            SubRunEnd::Failed(reason) => Ok(Worked::Failed(reason)),
            SubRunEnd::Passed(None) => Ok(Worked::Passed { commit: None }),
            SubRunEnd::Passed(Some(tip)) => {
                let (dir, branch) = (dir.to_path_buf(), order.task_branch.clone());
                let t = tip.clone();
                fleet_store::pg::spawn_blocking(move || push_task_branch(&dir, &t, &branch))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok(Worked::Passed { commit: Some(tip) })
            }
        }
    }
}

fn failed(reason: &str) -> Finish {
    Finish {
        state: "failed".into(),
        detail: Some(reason.to_string()),
        merge_sha: None,
    }
}

fn event(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_ms(),
        run_id: String::new(),
        task: None,
        attempt: None,
        kind: kind.into(),
        data,
    }
}

/// A watch raised when either is.
fn either(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    tokio::spawn(async move {
        loop {
            if *a.borrow_and_update() || *b.borrow_and_update() {
                let _ = tx.send(true);
                return;
            }
            tokio::select! {
                r = a.changed() => if r.is_err() { return },
                r = b.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
