//! The agent book: who plays an agent task's next attempt (the pool's choice, a wait, or
//! giving up with the whole story), how an ended attempt is closed, and what it does to its
//! account (spend, budget, cooldown, disablement).

use super::attempt::append_log;
use super::recorder::task_row;
use super::{AttemptOutcome, Coordinator};
use crate::fix_loop;
use crate::now_ms;
use crate::plan::TaskAction;
use fleet_core::pool::{self, Choice, Clock, Next, Want};
use fleet_store::AttemptRow;
use serde_json::json;

impl Coordinator {
    /// Asks the pool who plays task `i`'s next attempt. `None`: the task waits (deferred) or
    /// failed (nothing will ever be usable); both are recorded with their reason.
    pub(super) fn choose_agent(&mut self, i: usize, now: i64) -> Option<usize> {
        let TaskAction::Agent(a) = &self.plan.tasks[i].action else {
            return None;
        };
        let (pinned, roles, limits) = (a.pinned, a.roles.clone(), a.limits);
        let clock = clock();
        if let Err(e) = self.book.refresh(&self.plan.pool, &*self.store, &clock) {
            self.event(
                Some(i),
                None,
                "task.waiting",
                json!({"reason": format!("cannot read spend: {e}")}),
            );
        }
        self.reprobe_accounts(i);
        let base = Want {
            pinned,
            roles,
            ..Want::default()
        };
        let want = match self.next_for(i, &base, &limits, now) {
            Next::Retry { want, .. } => want,
            Next::GiveUp { why } => {
                let t = self.run.give_up(i, &self.give_up_report(i, &why));
                self.record(t);
                return None;
            }
        };
        let pool = &self.plan.pool;
        match pool::choose(
            &pool.policy,
            &pool.accounts,
            &self.book.states,
            &clock,
            &want,
        ) {
            Choice::Run { profile, why } => self.chosen(i, profile, why),
            Choice::Wait { until, why } => self.wait_for_pool(i, until, why),
            Choice::Nothing { why } => {
                let t = self.run.give_up(i, &self.give_up_report(i, &why));
                self.record(t);
                None
            }
        }
    }

    /// The pool chose `profile` for task `i`: said in its events (a swap too) and its log.
    fn chosen(&mut self, i: usize, profile: usize, why: String) -> Option<usize> {
        let previous = self
            .past
            .get(&i)
            .and_then(|v| v.last())
            .and_then(|a| a.profile.clone());
        let name = self.plan.pool.profiles[profile].name.clone();
        if let Some(prev) = previous.filter(|p| *p != name) {
            self.event(
                Some(i),
                None,
                "attempt.swapped",
                json!({"from": prev, "to": name, "reason": why}),
            );
        }
        self.event(
            Some(i),
            None,
            "agent.selected",
            json!({"profile": name, "reason": why}),
        );
        append_log(&self.ctx, i, &format!("── fleet chose {name}: {why} ──\n"));
        Some(profile)
    }

    /// No profile may play task `i` before `until`: the task is deferred until then.
    fn wait_for_pool(&mut self, i: usize, until: u64, why: String) -> Option<usize> {
        if self.run.task(i).not_before != until {
            self.run.defer(i, until);
            let rec = self.run.task(i).clone();
            self.rows[i] = task_row(
                &self.ctx.run_id,
                i,
                &self.plan.tasks[i].id,
                &rec,
                Some(&self.rows[i]),
            );
            self.batch.tasks.push(self.rows[i].clone());
            self.event(
                Some(i),
                None,
                "task.waiting",
                json!({"until": crate::rfc3339(until as i64), "reason": why}),
            );
            // A decision, not chatter: committed (and shown) now, not when the wait
            // ends hours later.
            self.urgent = true;
            append_log(
                &self.ctx,
                i,
                &format!(
                    "── waiting until {}: {why} ──\n",
                    crate::rfc3339(until as i64)
                ),
            );
        }
        None
    }

    /// What the task's attempts so far say about its next one.
    fn next_for(&self, i: usize, base: &Want, limits: &pool::Limits, now: i64) -> Next {
        let attempts: Vec<&AttemptRow> = self
            .past
            .get(&i)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let history = fix_loop::history(&self.plan.pool, &attempts);
        let spent: f64 = attempts.iter().map(|a| a.cost_usd).sum();
        let mut limits = *limits;
        if let (Some(max), Some(first)) = (self.plan.tasks[i].max_time, self.first_start.get(&i)) {
            limits.deadline = Some((*first as u64).saturating_add(max.as_millis() as u64));
        }
        pool::next_attempt(
            &self.plan.pool.policy,
            base,
            &history,
            &limits,
            spent,
            now as u64,
        )
    }

    /// The reason a task fails with after its agents: the cause and every attempt.
    fn give_up_report(&self, i: usize, why: &str) -> String {
        let attempts = self.past.get(&i).map(|v| v.as_slice()).unwrap_or(&[]);
        let list: Vec<String> = attempts
            .iter()
            .map(|a| {
                format!(
                    "#{} {}: {}",
                    a.n,
                    a.profile.as_deref().unwrap_or("?"),
                    a.detail.as_deref().unwrap_or(&a.outcome)
                )
            })
            .collect();
        if list.is_empty() {
            why.to_string()
        } else {
            format!("{why}; attempts: {}", list.join("; "))
        }
    }

    pub(super) fn finish_attempt(
        &mut self,
        i: usize,
        outcome: AttemptOutcome,
        code: Option<i32>,
        detail: Option<String>,
    ) {
        if let Some(mut a) = self.attempts.remove(&i) {
            let mut total = self
                .usage_base
                .remove(&i)
                .map(|(start, _)| start)
                .unwrap_or_default();
            total.add(&fleet_agents::Usage {
                input_tokens: a.input_tokens,
                output_tokens: a.output_tokens,
                cache_read_tokens: a.cache_read_tokens,
                cache_write_tokens: a.cache_write_tokens,
            });
            self.session_usage.insert(i, total);
            a.finished_at = Some(now_ms());
            a.outcome = outcome.as_str().to_string();
            a.exit_code = code;
            a.detail = detail.clone();
            let n = a.n;
            let ms = a.finished_at.unwrap_or(a.started_at) - a.started_at;
            self.batch.attempts.push(a.clone());
            self.event(
                Some(i),
                Some(n),
                "attempt.finished",
                json!({"outcome": outcome.as_str(), "exit_code": code, "detail": detail, "duration_ms": ms,
                       "cost_usd": a.cost_usd, "tokens": a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens}),
            );
            self.account_after(i, &a);
            let (task, failure) = (&self.plan.tasks[i], self.last_check.get(&i));
            let commit = self.rows[i].commit_sha.as_ref();
            let outcome = outcome.as_str();
            (self.memory).attempt_ended(&self.ctx.run_id, task, n, outcome, failure, commit);
            if let Some(last) = self
                .past
                .get_mut(&i)
                .and_then(|v| v.iter_mut().rev().find(|p| p.n == a.n))
            {
                *last = a;
            }
        }
    }

    /// The running attempt of task `i` reported a rate limit that resets at `resets_at` (Unix s).
    pub(super) fn cool_down_now(&mut self, i: usize, resets_at: i64) {
        let pool = self.plan.pool.clone();
        let Some(acc) = self
            .attempts
            .get(&i)
            .and_then(|a| a.account.clone())
            .and_then(|name| pool.accounts.iter().position(|x| x.name == name))
        else {
            return;
        };
        let until = (resets_at.max(0) as u64).saturating_mul(1000);
        if self.book.states[acc]
            .cooldown_until
            .is_some_and(|u| u >= until)
            || until <= now_ms() as u64
        {
            return;
        }
        let effect = pool::AccountEffect::Cooldown {
            until,
            backoff_level: 0,
            why: "the vendor announced when the limit resets".into(),
        };
        if let Some((kind, mut data)) = self.book.apply(acc, effect) {
            data["account"] = json!(pool.accounts[acc].name);
            let n = self.run.task(i).attempts;
            self.event(Some(i), Some(n), kind, data);
        }
        let rows = self.book.take_dirty(&pool, now_ms());
        self.batch.accounts.extend(rows);
        self.urgent = true;
    }

    /// Disabled accounts that come back before task `i` chooses: enabled by another process,
    /// or their rejected key was replaced (`fix_loop::AccountBook::reprobe_changed`).
    fn reprobe_accounts(&mut self, i: usize) {
        let pool = self.plan.pool.clone();
        if let Err(e) = self.book.sync_enabled(&pool, &*self.store) {
            self.event(
                Some(i),
                None,
                "task.waiting",
                json!({"reason": format!("cannot read the accounts: {e}")}),
            );
        }
        for (_, data) in self.book.reprobe_changed(&pool) {
            self.event(None, None, "account.enabled", data);
        }
        let rows = self.book.take_dirty(&pool, now_ms());
        self.batch.accounts.extend(rows);
    }

    /// An ended agent attempt's effect on its account: spend, budget, cooldown, disablement.
    fn account_after(&mut self, i: usize, a: &AttemptRow) {
        let pool = self.plan.pool.clone();
        let pool = &*pool;
        let Some(acc) = a
            .account
            .as_ref()
            .and_then(|name| pool.accounts.iter().position(|x| &x.name == name))
        else {
            return;
        };
        let name = pool.accounts[acc].name.clone();
        let tokens = a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens;
        if self.book.spend(pool, acc, a.cost_usd, tokens) {
            let st = &self.book.states[acc];
            let data = json!({"account": name, "spent_usd": st.spent_usd, "spent_tokens": st.spent_tokens,
                "budget_usd": pool.accounts[acc].budget_usd, "budget_tokens": pool.accounts[acc].budget_tokens});
            self.event(Some(i), Some(a.n), "budget.exhausted", data.clone());
            self.event(None, None, "alert", json!({"level": "warning", "message": format!("account {name} spent its daily budget"), "details": data}));
        }
        let Some(ending) = fix_loop::ending_of(&a.outcome) else {
            return;
        };
        let resets_at = self.resets.remove(&i).map(|t| t as u64 * 1000);
        // Only a rejected key is fingerprinted: then a replaced key is noticed.
        let secrets = (ending == pool::Ending::AuthFailed)
            .then(|| {
                let names = fix_loop::account_secrets(pool, acc);
                fix_loop::fingerprint(&crate::agent::secret_values(&names), None)
            })
            .flatten();
        let effect = pool::account_effect(
            ending,
            resets_at,
            &self.book.states[acc],
            now_ms() as u64,
            secrets.as_deref(),
        );
        if let (pool::AccountEffect::Disable { .. }, Some(fp)) = (&effect, &secrets)
            && let Err(e) = fix_loop::save_rejection(&*self.store, &name, now_ms(), fp)
        {
            let message = format!(
                "cannot keep the fingerprint of {name}'s rejected key ({e}); `fleet accounts enable {name}` brings it back"
            );
            self.event(
                None,
                None,
                "alert",
                json!({"level": "warning", "message": message}),
            );
        }
        if let Some((kind, mut data)) = self.book.apply(acc, effect) {
            data["account"] = json!(name);
            self.event(Some(i), Some(a.n), kind, data.clone());
            if kind == "account.disabled" {
                self.event(None, None, "alert", json!({"level": "error",
                    "message": format!("account {name} was disabled: its credentials were rejected"), "details": data}));
            }
        }
        let rows = self.book.take_dirty(pool, now_ms());
        self.batch.accounts.extend(rows);
    }

    /// An attempt did not pass. Agent tasks ask the pool (swap, escalate, or give up with the
    /// whole story); command tasks follow their retry policy.
    pub(super) fn attempt_failed(
        &mut self,
        i: usize,
        outcome: AttemptOutcome,
        code: Option<i32>,
        reason: String,
    ) {
        self.finish_attempt(i, outcome, code, Some(reason.clone()));
        let now = now_ms();
        let TaskAction::Agent(a) = &self.plan.tasks[i].action else {
            let t = self.run.attempt_failed(i, now as u64, &reason);
            self.record(t);
            return;
        };
        let base = Want {
            pinned: a.pinned,
            roles: a.roles.clone(),
            ..Want::default()
        };
        let limits = a.limits;
        let counted = outcome.ending().is_none_or(|e| e.is_agent_failure());
        match self.next_for(i, &base, &limits, now) {
            Next::Retry { why, .. } => {
                let t = self
                    .run
                    .retry_at(i, now as u64, &format!("{reason}; {why}"), counted);
                self.record(vec![t]);
            }
            Next::GiveUp { why } => {
                let report = self.give_up_report(i, &why);
                let t = self.run.give_up(i, &report);
                self.record(t);
            }
        }
    }
}

/// Now, with the local time zone (for accounts' windows and budget days).
pub(super) fn clock() -> Clock {
    Clock {
        now: now_ms() as u64,
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    }
}
