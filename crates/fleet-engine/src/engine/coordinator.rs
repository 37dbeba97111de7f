//! The coordinator's loop: each turn starts what may start, commits, launches workers and the
//! merge queue, then waits for a worker's report, a wake-up, a signal or a cancel. One method
//! per kind of report; the run's end writes its state and summary.

use super::RunReport;
use super::attempt::{append_log, attempt_worker};
use super::finish::finish_worker;
use super::{
    AttemptEnd, AttemptJob, AttemptOutcome, Coordinator, FinishResult, Launch, Msg, RUN_TAG, RunEnd,
};
use crate::fix_loop;
use crate::plan::TaskAction;
use crate::process;
use crate::summary;
use crate::{EngineError, now_ms};
use fleet_core::TaskState;
use fleet_store::{AttemptRow, RunStateChange};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// How long agent observations (messages, tool calls, usage) may wait to be committed with
/// the ones after them. Decisions are never delayed.
const OBSERVATION_DELAY: Duration = Duration::from_millis(100);

/// How long after an attempt or its checks end Fleet looks for processes they left running
/// outside their process group. One look covers every attempt that ended meanwhile.
const LEFTOVER_SWEEP_DELAY: Duration = Duration::from_secs(1);

impl Coordinator {
    pub(super) fn run_id(&self) -> &str {
        &self.ctx.run_id
    }

    pub(super) async fn drive(mut self) -> Result<RunReport, EngineError> {
        let t = self.run.promote_all();
        self.record(t);
        self.flush()?;
        let mut signals = crate::signals::Listener::new()?;
        loop {
            // One commit per turn: what the workers reported and what starts next are
            // persisted together, and only then does anything new run. A batch holding only
            // what agents said (no decision to act on) may wait a moment for more of it, so a
            // chatty fleet commits a few times a second instead of once per line.
            self.start_ready();
            let observing_only = !self.urgent && self.launches.is_empty();
            let due = self
                .observed_since
                .is_some_and(|t| t.elapsed() >= OBSERVATION_DELAY);
            if !observing_only || due || self.stopping {
                self.commit()?;
            }
            self.launch();
            self.start_merge();
            self.publish()?;
            self.sweep_leftovers();
            if self.busy == 0 && !self.merging && (self.stopping || self.run.is_finished()) {
                break;
            }
            let wake = self.run.next_wakeup(now_ms() as u64);
            let observed = self
                .observed_since
                .map(|t| tokio::time::Instant::from_std(t + OBSERVATION_DELAY))
                .into_iter()
                .chain(self.sweep_at.map(tokio::time::Instant::from_std))
                .min();
            let sleep = async {
                let wake = match wake {
                    Some(at) if !self.stopping => Some(
                        tokio::time::Instant::now()
                            + Duration::from_millis(at.saturating_sub(now_ms() as u64)),
                    ),
                    _ => None,
                };
                match (wake, observed) {
                    (Some(a), Some(b)) => tokio::time::sleep_until(a.min(b)).await,
                    (Some(a), None) | (None, Some(a)) => tokio::time::sleep_until(a).await,
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = self.rx.recv() => {
                    let msg = msg.expect("the coordinator holds a sender");
                    self.handle(msg);
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(msg);
                    }
                }
                _ = sleep => {}
                why = signals.recv() => self.stop(why),
                _ = external_stop(&mut self.external_stop) => self.stop("stopped: the work was cancelled"),
            }
        }
        // Nothing an attempt started outlives the run, a `setsid` daemon included.
        let tag = self.ctx.tag.clone();
        fleet_store::pg::spawn_blocking(move || {
            process::kill_leftovers(RUN_TAG, &tag, |_, _| false)
        })
        .await
        .map_err(std::io::Error::other)?;
        // The run is not recorded as ended before its branch exists.
        if let Some(making) = self.branch.take() {
            making.await.map_err(std::io::Error::other)??;
        }
        self.memory.traces.settle().await;
        self.finish()
    }

    /// Once due, kills (on the blocking pool) the processes of attempts that have ended — what
    /// escaped their process group, like a `setsid` daemon. Attempts that run, and any later
    /// attempt of a task, are left alone: a task's attempt `n` is over once the task is in
    /// neither `running` nor `checking` with attempt `n`.
    pub(super) fn sweep_leftovers(&mut self) {
        if self
            .sweep_at
            .is_none_or(|at| std::time::Instant::now() < at)
        {
            return;
        }
        self.sweep_at = None;
        // Per task id: attempts below this number are over.
        let over_below: HashMap<String, u32> = (0..self.plan.tasks.len())
            .map(|i| {
                let rec = self.run.task(i);
                let below = match rec.state {
                    TaskState::Running | TaskState::Checking => rec.attempts,
                    _ => rec.attempts + 1,
                };
                (self.plan.tasks[i].id.clone(), below)
            })
            .collect();
        let tag = self.ctx.tag.clone();
        fleet_store::pg::spawn_blocking(move || {
            process::kill_leftovers(RUN_TAG, &tag, |task, attempt| {
                match (over_below.get(task), attempt.parse::<u32>()) {
                    (Some(below), Ok(n)) => n >= *below,
                    _ => true,
                }
            })
        });
    }

    pub(super) fn stop(&mut self, why: &str) {
        self.external_stop = None;
        if !self.stopping {
            self.stopping = true;
            self.event(None, None, "run.stopping", json!({"reason": why}));
            let _ = self.stop_tx.send(true);
        }
    }

    /// Starts as many ready tasks as there are free slots (recorded, not yet launched).
    fn start_ready(&mut self) {
        if self.stopping {
            return;
        }
        // The merge queue's head, if it may need a re-check, keeps a slot for it.
        let reserved = usize::from(
            !self.merging
                && self
                    .merge_queue
                    .front()
                    .is_some_and(|&i| !self.plan.tasks[i].checks.is_empty()),
        );
        let free = self.plan.concurrency.saturating_sub(self.active + reserved);
        if free == 0 {
            return;
        }
        let now = now_ms();
        let mut free = free;
        // A task the pool cannot serve yet is deferred, freeing its slot for the next one.
        while free > 0 {
            let next = self.run.next_to_start(now as u64, free);
            if next.is_empty() {
                break;
            }
            for i in next {
                let profile = match &self.plan.tasks[i].action {
                    TaskAction::Agent(_) => match self.choose_agent(i, now) {
                        Some(p) => Some(p),
                        None => continue,
                    },
                    _ => None,
                };
                free -= 1;
                self.start_attempt(i, profile, now);
            }
        }
    }

    /// Ready -> running for task `i`, played by `profile` for agent tasks.
    fn start_attempt(&mut self, i: usize, profile: Option<usize>, now: i64) {
        let t = self.run.start(i);
        let n = t.attempt;
        self.record(vec![t]);
        self.spend.remove(&i);
        self.chatter.remove(&i);
        self.first_start.entry(i).or_insert(now);
        let mut a = AttemptRow {
            run_id: self.ctx.run_id.clone(),
            task_id: self.plan.tasks[i].id.clone(),
            n,
            started_at: now,
            outcome: "running".into(),
            ..AttemptRow::default()
        };
        let mut data = json!({"command": self.plan.tasks[i].describe()});
        let mut prompt = None;
        let mut resume = None;
        let mut lessons = Vec::new();
        if let Some(pi) = profile {
            let p = &self.plan.pool.profiles[pi];
            a.profile = Some(p.name.clone());
            a.cli = Some(p.cli.clone());
            a.model = p.model.clone();
            a.account = p.account.clone();
            data = json!({"agent": p.name, "cli": p.cli, "model": p.model, "account": p.account});
            let (text, ids) =
                (self.memory).inject(&self.ctx.run_id, &self.plan.tasks[i], n, self.prompt_for(i));
            (prompt, lessons) = (Some(text), ids);
            resume = self.session_to_resume(i, pi);
            if let Some((session, _)) = &resume {
                data["resume_session"] = json!(session);
            }
        }
        self.batch.attempts.push(a.clone());
        self.attempts.insert(i, a.clone());
        self.past.entry(i).or_default().push(a);
        self.event(Some(i), Some(n), "attempt.started", data);
        if !lessons.is_empty() {
            self.event(
                Some(i),
                Some(n),
                "attempt.lessons",
                json!({ "lessons": lessons }),
            );
        }
        // A task's first attempt gets a fresh worktree, and so does every attempt of a command:
        // a command is not idempotent (`echo x >> f`), so it must start from a known state, not
        // on top of what an interrupted or failed run of it left. An agent's later attempts
        // continue in the worktree as left (its handoff names that partial change), unless it
        // is missing or not a real worktree (a crash mid-creation).
        let is_agent = matches!(self.plan.tasks[i].action, TaskAction::Agent(_));
        self.launches.push(Launch::Attempt {
            task: i,
            n,
            fresh: n == 1 || !is_agent,
            profile,
            prompt,
            resume,
        });
    }

    /// The CLI session task `i`'s next attempt, played by profile `pi`, continues, and the
    /// attempt that left it: the previous attempt's, when its profile is the same, its CLI
    /// can resume and its home is still there.
    fn session_to_resume(&mut self, i: usize, pi: usize) -> Option<(String, u32)> {
        let p = &self.plan.pool.profiles[pi];
        let previous = self.past.get(&i).and_then(|v| v.last());
        let adapter = fleet_agents::adapter(&p.cli);
        // The session lives in the task's kept home (gone after a crash of fleet itself).
        let home = self
            .ctx
            .layout
            .agent_home(&self.ctx.run_id, &self.plan.tasks[i].id);
        let mut resume = fix_loop::resume_from(previous, &p.name)
            // ACP: the home is kept only where the agent offered session/load.
            .filter(|_| {
                (p.acp || adapter.as_ref().is_some_and(|a| a.can_resume())) && home.is_dir()
            })
            .map(|(s, n)| (s.to_string(), n));
        let spans = adapter.is_some_and(|a| a.usage_spans_resumed_session());
        match (&resume, self.session_usage.get(&i)) {
            (Some(_), Some(total)) if spans => {
                self.usage_base.insert(i, (*total, *total));
            }
            // What the session reported before is unknown (fleet was restarted): a resume
            // would count it again, so start afresh.
            (Some(_), None) if spans => resume = None,
            _ => {}
        }
        resume
    }

    /// The prompt of an agent task's next attempt: the task, then the handoff note.
    fn prompt_for(&self, i: usize) -> String {
        let TaskAction::Agent(a) = &self.plan.tasks[i].action else {
            return String::new();
        };
        let done: Vec<(String, String, Option<String>)> = self
            .past
            .get(&i)
            .map(|v| {
                v.iter()
                    .filter(|a| a.outcome != "running")
                    .map(|a| {
                        (
                            a.profile.clone().unwrap_or_default(),
                            a.outcome.clone(),
                            a.detail.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let note =
            fix_loop::handoff_note(&self.plan.tasks[i].checks, &done, self.last_check.get(&i));
        let earlier = (self.memory.traces).section(&self.plan.nodes, &self.plan.tasks[i].id);
        let asked = crate::task_traces::with_section(&a.prompt, &earlier);
        if note.is_empty() {
            asked
        } else {
            format!("{}\n\n---\n\n{note}", asked.trim_end())
        }
    }

    /// Hands committed work to workers.
    pub(super) fn launch(&mut self) {
        for l in std::mem::take(&mut self.launches) {
            self.busy += 1;
            let ctx = self.ctx.clone();
            match l {
                Launch::Attempt {
                    task,
                    n,
                    fresh,
                    profile,
                    prompt,
                    resume,
                } => {
                    let job = AttemptJob {
                        task,
                        n,
                        fresh,
                        tip: self.integration_tip.clone(),
                        profile,
                        prompt,
                        resume,
                    };
                    tokio::spawn(attempt_worker(ctx, job));
                }
                Launch::Finish { task, n, recheck } => {
                    tokio::spawn(finish_worker(ctx, task, n, recheck));
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        if matches!(msg, Msg::Attempt { .. } | Msg::Finish { .. }) {
            // Processes or checks ended: look for what they left running, soon.
            self.sweep_at
                .get_or_insert_with(|| std::time::Instant::now() + LEFTOVER_SWEEP_DELAY);
        }
        match msg {
            Msg::Attempt { task, result } => self.attempt_ended(task, result),
            Msg::Agent { task, events } => {
                self.observed_since
                    .get_or_insert_with(std::time::Instant::now);
                self.agent_events(task, events)
            }
            Msg::Cleaned { task, result } => self.cleaned(task, result),
            Msg::Finish { task, result } => self.finish_ended(task, result),
            Msg::Merge { task, result } => self.merge_ended(task, result),
        }
    }

    /// An attempt worker reported: checks next, or the attempt failed or was stopped.
    pub(super) fn attempt_ended(&mut self, task: usize, result: Result<AttemptEnd, String>) {
        self.busy -= 1;
        match result {
            Err(err) => self.attempt_failed(task, AttemptOutcome::Failed, None, err),
            Ok(end) if end.finished.stopped => self.interrupted(task),
            Ok(end) if end.succeeded() => {
                let def = &self.plan.tasks[task];
                if def.checks.is_empty() && !def.worktree {
                    self.finish_attempt(task, AttemptOutcome::Passed, end.finished.code, None);
                    let t = self.run.attempt_passed(task);
                    self.record(t);
                } else {
                    // "checking" is committed before the checks run (see `launch`).
                    let t = self.run.begin_checks(task);
                    let n = t.attempt;
                    self.record(vec![t]);
                    self.launches.push(Launch::Finish {
                        task,
                        n,
                        recheck: false,
                    });
                }
            }
            Ok(end) => {
                let reason = end.describe();
                let outcome = match &end.agent {
                    Some(a) => AttemptOutcome::Agent(a.outcome.class),
                    None if end.finished.timed_out => AttemptOutcome::TimedOut,
                    None => AttemptOutcome::Failed,
                };
                if let Some(a) = &end.agent {
                    let n = self.run.task(task).attempts;
                    if a.stalled {
                        self.event(Some(task), Some(n), "attempt.stalled", json!({}));
                    }
                    if let Some(at) = a.outcome.resets_at {
                        self.resets.insert(task, at);
                        self.event(
                            Some(task),
                            Some(n),
                            "attempt.rate_limited",
                            json!({"resets_at": crate::rfc3339(at * 1000), "class": outcome.as_str()}),
                        );
                    }
                }
                self.attempt_failed(task, outcome, end.finished.code, reason);
            }
        }
    }

    /// A landed task's worktree was removed, or could not be.
    pub(super) fn cleaned(&mut self, task: usize, result: Result<(), String>) {
        self.busy -= 1;
        if let Err(e) = result {
            append_log(
                &self.ctx,
                task,
                &format!("── could not remove the worktree: {e} (`fleet gc` will) ──\n"),
            );
        }
    }

    /// A finish worker reported: the task passed (and queues to land), or its attempt failed.
    fn finish_ended(&mut self, task: usize, result: FinishResult) {
        self.busy -= 1;
        // A re-check after a rebase holds the merge queue until it ends; a pass lands
        // next, ahead of the tasks that passed after it.
        let was_rechecking = self.rechecking == Some(task);
        if was_rechecking {
            self.rechecking = None;
            self.merging = false;
        }
        match result {
            FinishResult::Passed { tip } => {
                if !self.plan.tasks[task].checks.is_empty() {
                    let n = self.run.task(task).attempts;
                    self.event(Some(task), Some(n), "task.checks_passed", json!({}));
                }
                self.rows[task].commit_sha = tip;
                self.finish_attempt(task, AttemptOutcome::Passed, Some(0), None);
                let t = self.run.attempt_passed(task);
                self.record(t);
                if self.run.plan(task).needs_merge {
                    if was_rechecking {
                        self.merge_queue.push_front(task);
                    } else {
                        self.merge_queue.push_back(task);
                    }
                }
            }
            FinishResult::CheckFailed {
                check,
                finished,
                output,
            } => {
                let reason = format!("check `{check}` {}", finished.describe());
                let n = self.run.task(task).attempts;
                self.event(
                    Some(task),
                    Some(n),
                    "task.checks_failed",
                    json!({"check": check, "exit_code": finished.code, "timed_out": finished.timed_out,
                           "output_tail": output}),
                );
                self.last_check.insert(task, (check, finished.code, output));
                self.attempt_failed(task, AttemptOutcome::ChecksFailed, finished.code, reason);
            }
            FinishResult::NoChange => {
                let reason = "the agent reported success but changed nothing".to_string();
                self.attempt_failed(task, AttemptOutcome::NoChange, None, reason);
            }
            FinishResult::Stopped => self.interrupted(task),
            FinishResult::Error(err) => {
                self.attempt_failed(task, AttemptOutcome::Failed, None, err)
            }
        }
    }

    pub(super) fn interrupted(&mut self, task: usize) {
        self.finish_attempt(
            task,
            AttemptOutcome::Interrupted,
            None,
            Some("fleet was stopped".into()),
        );
        append_log(
            &self.ctx,
            task,
            "── attempt interrupted: fleet was stopped; `fleet run --resume` continues ──\n",
        );
        let t = self.run.interrupt(task, "interrupted: fleet was stopped");
        self.record(vec![t]);
    }

    /// Removes a landed task's worktree off the loop; the run does not end before it is gone.
    pub(super) fn remove_worktree(&mut self, task: usize) {
        let ctx = self.ctx.clone();
        let path = ctx.layout.worktree(&ctx.run_id, &self.plan.tasks[task].id);
        self.busy += 1;
        fleet_store::pg::spawn_blocking(move || {
            let result = if path.exists() {
                ctx.repo.remove_worktree(&path).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            let _ = ctx.tx.send(Msg::Cleaned { task, result });
        });
    }

    pub(super) fn finish(mut self) -> Result<RunReport, EngineError> {
        let now = now_ms();
        let end = if self.stopping && !self.run.is_finished() {
            RunEnd::Interrupted
        } else if self.run.all_satisfied() {
            RunEnd::Passed
        } else {
            RunEnd::Failed
        };
        let state = end.as_str();
        let counts: serde_json::Map<String, serde_json::Value> = TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), json!(self.run.count(*s))))
            .filter(|(_, v)| v != &json!(0))
            .collect();
        self.event(
            None,
            None,
            if end == RunEnd::Interrupted {
                "run.interrupted"
            } else {
                "run.finished"
            },
            json!({"result": state, "tasks": counts}),
        );
        self.batch.run_state = Some(RunStateChange {
            run_id: self.ctx.run_id.clone(),
            state: state.into(),
            at: now,
            finished_at: (end != RunEnd::Interrupted).then_some(now),
        });
        self.flush()?;
        // Homes kept for a session that might have been continued hold credentials: none
        // outlives the run. (An interrupted run keeps them for `--resume`.)
        if end != RunEnd::Interrupted {
            let _ = std::fs::remove_dir_all(self.ctx.layout.homes_dir(&self.ctx.run_id));
        }
        self.row.state = state.into();
        let attempts = self.store.attempts(&self.ctx.run_id)?;
        let text = summary::render(&self.row, &self.rows, &attempts, &self.ctx.layout, now);
        let summary_path = self.ctx.layout.summary(&self.ctx.run_id);
        crate::files::write_whole(&summary_path, text.as_bytes())?;
        if let Some(report) = &self.plan.report {
            if let Some(dir) = report.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::files::write_whole(report, text.as_bytes())?;
        }
        Ok(RunReport {
            run_id: self.ctx.run_id.clone(),
            end,
            integration_branch: self.ctx.integration.clone(),
            summary: summary_path,
            logs: self.ctx.layout.logs_dir(self.run_id()),
            troubles: std::mem::take(&mut self.memory.troubles),
        })
    }
}

/// Resolves when an outside stop is raised; never when there is none (or it was dropped).
pub(super) async fn external_stop(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
        None => std::future::pending().await,
    }
}
