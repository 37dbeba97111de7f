//! The recorder: what the coordinator decides and observes becomes one pending batch, which is
//! committed to the store in one transaction (secrets taken out), then appended to the journal
//! and shown to the observer.

use super::Coordinator;
use crate::agent;
use crate::plan::Plan;
use crate::{EngineError, now_ms};
use fleet_core::{TaskRecord, TaskState, Transition};
use fleet_store::{Batch, Event, NewEvent, TaskRow};
use serde_json::json;
use std::collections::HashMap;

/// Messages and tool calls of one attempt kept as events (the store grows with them): far
/// above what a working agent says in one attempt (benchmark P4 keeps every event), so only an
/// endless stream is cut.
const MAX_OBSERVATIONS: u32 = 20_000;

impl Coordinator {
    pub(super) fn event(
        &mut self,
        task: Option<usize>,
        attempt: Option<u32>,
        kind: &str,
        data: serde_json::Value,
    ) {
        let task = task.map(|t| self.plan.tasks[t].id.clone());
        self.batch.events.push(NewEvent {
            at: now_ms(),
            run_id: self.ctx.run_id.clone(),
            task,
            attempt,
            kind: kind.to_string(),
            data,
        });
    }

    /// Folds transitions into the pending batch: task rows and their events.
    pub(super) fn record(&mut self, transitions: Vec<Transition>) {
        self.urgent = true;
        let now = now_ms();
        for t in transitions {
            let i = t.task;
            match (t.from.is_active(), t.to.is_active()) {
                (false, true) => self.active += 1,
                (true, false) => self.active -= 1,
                _ => {}
            }
            if (t.from, t.to) == (TaskState::Pending, TaskState::Ready) {
                let log = self
                    .ctx
                    .layout
                    .log(&self.ctx.run_id, &self.plan.tasks[i].id);
                self.logs.want(log);
            }
            let rec = self.run.task(i).clone();
            let mut row = task_row(
                &self.ctx.run_id,
                i,
                &self.plan.tasks[i].id,
                &rec,
                Some(&self.rows[i]),
            );
            if t.to == TaskState::Running && row.started_at.is_none() {
                row.started_at = Some(now);
            }
            let is_final = self.run.is_final(i);
            if is_final {
                row.finished_at = Some(now);
            }
            self.rows[i] = row.clone();
            self.batch.tasks.push(row);
            if matches!(t.to, TaskState::Merged | TaskState::Failed) {
                self.remember_end(&t);
            }
            let attempt = (t.attempt > 0).then_some(t.attempt);
            let (kind, data) = self.transition_event(&t, &rec);
            self.event(Some(i), attempt, kind, data);
            if is_final && self.run.is_satisfied(i) {
                self.event(
                    Some(i),
                    attempt,
                    "task.done",
                    json!({"attempts": rec.attempts}),
                );
            }
        }
    }

    /// A task merged or failed: its trace is kept for the tasks after it, and a failure is
    /// remembered as a lesson.
    fn remember_end(&mut self, t: &Transition) {
        let i = t.task;
        let (task, past) = (
            &self.plan.tasks[i],
            self.past.get(&i).map_or(&[][..], |v| v),
        );
        let (c, store) = (&self.ctx, &self.store);
        let src = crate::task_traces::Source {
            store,
            repo: &c.repo,
            redactor: &c.redactor,
            run_id: &c.run_id,
        };
        self.memory.traces.ended(src, &self.rows[i], task, past);
        if t.to == TaskState::Failed {
            self.memory.gave_up(task, t.reason.as_deref());
        }
    }

    /// The event that says transition `t` (`rec`: the task's record after it).
    fn transition_event(
        &self,
        t: &Transition,
        rec: &TaskRecord,
    ) -> (&'static str, serde_json::Value) {
        let i = t.task;
        match (t.from, t.to) {
            (TaskState::Pending, TaskState::Ready) => ("task.ready", json!({})),
            (_, TaskState::Running) => ("task.started", json!({})),
            (_, TaskState::Checking) => (
                "task.checks_started",
                json!({"checks": self.plan.tasks[i].checks}),
            ),
            (from, TaskState::Ready) if from.is_active() => (
                "task.retrying",
                json!({"reason": t.reason, "not_before": crate::rfc3339(rec.not_before as i64)}),
            ),
            (_, TaskState::Passed) => ("task.passed", json!({"commit": self.rows[i].commit_sha})),
            (_, TaskState::Merged) => ("task.merged", json!({"merge": self.rows[i].merge_sha})),
            (_, TaskState::Failed) => ("task.failed", json!({"reason": t.reason})),
            (_, TaskState::Skipped) => ("task.skipped", json!({"reason": t.reason})),
            (_, TaskState::Cancelled) => ("task.cancelled", json!({"reason": t.reason})),
            (from, to) => ("task.state", json!({"from": from, "to": to})),
        }
    }

    /// Commits the pending batch; then the journal and observer see its events.
    pub(super) fn flush(&mut self) -> Result<(), EngineError> {
        self.commit()?;
        self.publish()
    }

    /// Commits the pending batch. Its events wait in `committed` for [`Coordinator::publish`].
    pub(super) fn commit(&mut self) -> Result<(), EngineError> {
        self.logs.send();
        self.urgent = false;
        self.observed_since = None;
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        // A row changed twice in a turn is written once, as it ended.
        dedup_last(&mut batch.tasks, |t| t.idx);
        dedup_last(&mut batch.attempts, |a| (a.task_id.clone(), a.n));
        // The one door to the store, so the one place secrets are taken out of what it keeps
        // (and so of the journal, the API, the stream and every notification built from it).
        redact_batch(&self.ctx.redactor, &mut batch);
        let seqs = self.store.commit(&batch)?;
        let events: Vec<Event> = batch
            .events
            .into_iter()
            .zip(seqs)
            .map(|(e, seq)| Event {
                seq,
                at: e.at,
                run_id: e.run_id,
                task: e.task,
                attempt: e.attempt,
                kind: e.kind,
                data: e.data,
            })
            .collect();
        self.committed.extend(events);
        Ok(())
    }

    /// Appends the committed events to events.jsonl and shows them. A turn does this after
    /// its launches, off the path from a task's end to the next start: the store has the
    /// events already, and a journal left behind by a crash catches up from it.
    pub(super) fn publish(&mut self) -> Result<(), EngineError> {
        if self.committed.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.committed);
        self.journal.append(&events)?;
        if let Some(obs) = &self.observer {
            for e in &events {
                obs(e);
            }
        }
        Ok(())
    }

    /// Persists an agent's normalized events and folds usage and cost into its attempt.
    pub(super) fn agent_events(&mut self, task: usize, events: Vec<fleet_agents::AgentEvent>) {
        use fleet_agents::AgentEvent as E;
        let n = self.run.task(task).attempts;
        let model = self.attempts.get(&task).and_then(|a| a.model.clone());
        let price = model.as_deref().and_then(fleet_agents::price::lookup);
        for e in events {
            let (kind, data) = match &e {
                E::Message { text } => ("agent.message", json!({"text": text})),
                E::ToolCall { name, input } => {
                    ("attempt.tool_call", json!({"name": name, "input": input}))
                }
                E::ToolResult { name, ok, output } => {
                    let clipped: String = output.chars().take(2000).collect();
                    (
                        "attempt.tool_result",
                        json!({"name": name, "ok": ok, "output": clipped}),
                    )
                }
                E::Usage(reported) => self.fold_usage(task, reported, price.as_ref()),
                E::Cost { usd } => self.fold_cost(task, *usd),
                E::Session { id } => {
                    if let Some(a) = self.attempts.get_mut(&task) {
                        if a.session_id.as_deref() == Some(id.as_str()) {
                            continue;
                        }
                        a.session_id = Some(id.clone());
                    }
                    ("attempt.session", json!({"session_id": id}))
                }
                E::RateLimit { resets_at, detail } => {
                    // Cool the account down now, not when the attempt ends: no other task
                    // should start on it meanwhile.
                    if let Some(t) = resets_at {
                        self.cool_down_now(task, *t);
                    }
                    (
                        "attempt.rate_limited",
                        json!({"resets_at": resets_at.map(|t| crate::rfc3339(t * 1000)), "detail": detail}),
                    )
                }
                E::Retrying {
                    attempt,
                    class,
                    detail,
                } => (
                    "attempt.cli_retry",
                    json!({"cli_attempt": attempt, "class": class, "detail": detail}),
                ),
                E::Error { class, message } => {
                    ("attempt.error", json!({"class": class, "message": message}))
                }
                E::Policy { kind, rule, detail } => {
                    let kind = format!("policy.{kind}");
                    let data = json!({"rule": rule, "detail": detail});
                    self.event(Some(task), Some(n), &kind, data);
                    continue;
                }
            };
            let chatter = matches!(
                e,
                E::Message { .. } | E::ToolCall { .. } | E::ToolResult { .. }
            );
            if chatter && !self.keep_chatter(task, n) {
                continue;
            }
            self.event(Some(task), Some(n), kind, data);
        }
        if let Some(a) = self.attempts.get(&task) {
            self.batch.attempts.push(a.clone());
        }
    }

    /// Folds usage a running attempt's CLI reported into its attempt (tokens, and the cost
    /// priced from the table); the event that says it.
    fn fold_usage(
        &mut self,
        task: usize,
        reported: &fleet_agents::Usage,
        price: Option<&fleet_agents::price::Price>,
    ) -> (&'static str, serde_json::Value) {
        let mut u = *reported;
        if let Some((_, left)) = self.usage_base.get_mut(&task) {
            u.take_out(left);
        }
        let u = &u;
        // Priced from the table; a cost the CLI reports itself takes precedence.
        let cost = price.map(|p| fleet_agents::price::cost(p, u));
        let spend = self.spend.entry(task).or_default();
        spend.1 += cost.unwrap_or(0.0);
        let (reported, priced) = *spend;
        if let Some(a) = self.attempts.get_mut(&task) {
            a.cost_usd = if reported > 0.0 { reported } else { priced };
            a.input_tokens = a.input_tokens.saturating_add(u.input_tokens);
            a.output_tokens = a.output_tokens.saturating_add(u.output_tokens);
            a.cache_read_tokens = a.cache_read_tokens.saturating_add(u.cache_read_tokens);
            a.cache_write_tokens = a.cache_write_tokens.saturating_add(u.cache_write_tokens);
        }
        (
            "attempt.usage",
            json!({"usage": u, "cost_usd": cost, "priced": cost.is_some()}),
        )
    }

    /// Folds a cost the CLI reported itself into its attempt; the event that says it.
    fn fold_cost(&mut self, task: usize, usd: f64) -> (&'static str, serde_json::Value) {
        let spend = self.spend.entry(task).or_default();
        spend.0 += usd;
        let (reported, priced) = *spend;
        if let Some(a) = self.attempts.get_mut(&task) {
            a.cost_usd = if reported > 0.0 { reported } else { priced };
        }
        ("attempt.usage", json!({"cost_usd": usd, "reported": true}))
    }

    /// Counts one message or tool call of task `task`'s attempt `n`; `false` once it is past
    /// what is kept. What an agent says is kept up to a point; what decides (usage, limits,
    /// errors) always is. The transcript keeps the output's head and tail.
    fn keep_chatter(&mut self, task: usize, n: u32) -> bool {
        let said = {
            let said = self.chatter.entry(task).or_default();
            *said += 1;
            *said
        };
        if said == MAX_OBSERVATIONS + 1 {
            let data = json!({"kept": MAX_OBSERVATIONS, "why": "the agent said more than the store keeps per attempt; the transcript has its start and end"});
            self.event(Some(task), Some(n), "attempt.output_cut", data);
        }
        said <= MAX_OBSERVATIONS
    }
}

/// The caller's redactor plus the secrets of every agent profile the run may launch.
pub(super) fn run_redactor(
    mut redactor: fleet_secrets::Redactor,
    plan: &Plan,
) -> fleet_secrets::Redactor {
    for p in &plan.pool.profiles {
        redactor.add(agent::secret_values(&p.secrets));
    }
    redactor
}

/// Takes secrets out of every text a batch writes: event data, attempt details, task reasons.
fn redact_batch(redactor: &fleet_secrets::Redactor, batch: &mut Batch) {
    for e in &mut batch.events {
        redactor.clean_json(&mut e.data);
    }
    for a in &mut batch.attempts {
        if let Some(d) = a.detail.take() {
            a.detail = Some(redactor.clean_string(d));
        }
    }
    for t in &mut batch.tasks {
        if let Some(r) = t.reason.take() {
            t.reason = Some(redactor.clean_string(r));
        }
    }
}

/// Keeps the last element for each key, in the order of those last elements.
fn dedup_last<T, K: Eq + std::hash::Hash>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
    if rows.len() < 2 {
        return;
    }
    let mut last = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(key(r), i);
    }
    let mut i = 0;
    rows.retain(|r| {
        let keep = last.get(&key(r)) == Some(&i);
        i += 1;
        keep
    });
}
pub(super) fn task_row(
    run: &str,
    idx: usize,
    id: &str,
    rec: &TaskRecord,
    prev: Option<&TaskRow>,
) -> TaskRow {
    TaskRow {
        run_id: run.to_string(),
        idx: idx as u32,
        id: id.to_string(),
        state: rec.state.as_str().to_string(),
        attempts: rec.attempts,
        failures: rec.failures,
        not_before: rec.not_before as i64,
        reason: rec.reason.clone(),
        commit_sha: prev.and_then(|p| p.commit_sha.clone()),
        merge_sha: prev.and_then(|p| p.merge_sha.clone()),
        started_at: prev.and_then(|p| p.started_at),
        finished_at: prev.and_then(|p| p.finished_at),
    }
}

#[cfg(test)]
mod tests {
    use super::dedup_last;

    #[test]
    fn dedup_keeps_the_last_of_each_key_in_order() {
        let mut v = vec![(1, 'a'), (2, 'b'), (1, 'c'), (3, 'd'), (2, 'e')];
        dedup_last(&mut v, |x| x.0);
        assert_eq!(v, [(1, 'c'), (3, 'd'), (2, 'e')]);
    }
}
