//! The fail-until-done loop's bookkeeping around the pure pool policy: what each account has
//! spent today and whether it cools down, the task's agent history, and the handoff note that
//! tells the next agent what happened so far.
//!
//! An account disabled because its key was rejected keeps a salted fingerprint of the rejected
//! secret values in `meta` (key [`REJECTED_PREFIX`]`<account>`: when, and the fingerprint;
//! never a value). When the secrets set now fingerprint differently, the pool's
//! [`fleet_core::pool::reprobe`] enables it again for the next attempt.

use crate::plan::AgentPool;
use fleet_core::Millis;
use fleet_core::pool::{
    AccountEffect, AccountState, Clock, Ending, PastAttempt, day_start, over_budget, reprobe,
};
use fleet_store::{AccountRow, AttemptRow, Store, StoreError};
use std::collections::BTreeMap;

/// `meta` key prefix of an account's rejected credentials: `{"since": ms, "secrets": fp}`.
pub const REJECTED_PREFIX: &str = "account.rejected.";

/// Names of the env vars holding an account's secrets (those of the profiles drawing on it).
pub fn account_secrets(pool: &AgentPool, account: usize) -> Vec<String> {
    let name = &pool.accounts[account].name;
    let mut names: Vec<String> = pool
        .profiles
        .iter()
        .filter(|p| p.account.as_ref() == Some(name))
        .flat_map(|p| p.secrets.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A fingerprint of secret values: `v1:<salt>:<HMAC-SHA256 keyed by the salt over every name
/// and value>`, hex. The salt is random per fingerprint, so equal keys of two accounts or two
/// disablements look unrelated and no precomputed table helps; a vendor's key has far too
/// much entropy to be searched for from its fingerprint. With `salt` `None` a fresh one is
/// drawn; to compare with a stored fingerprint, pass that one's salt ([`salt_of`]).
pub fn fingerprint(values: &BTreeMap<String, String>, salt: Option<&[u8]>) -> Option<String> {
    use ring::rand::SecureRandom;
    let mut fresh = [0u8; 16];
    let salt = match salt {
        Some(s) => s,
        None => {
            ring::rand::SystemRandom::new().fill(&mut fresh).ok()?;
            &fresh
        }
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for (name, value) in values {
        // Lengths first: no two different sets of names and values hash the same bytes.
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(value.len() as u64).to_be_bytes());
        ctx.update(value.as_bytes());
    }
    Some(format!("v1:{}:{}", hex(salt), hex(ctx.sign().as_ref())))
}

/// The salt of a stored fingerprint.
pub fn salt_of(fingerprint: &str) -> Option<Vec<u8>> {
    let salt = fingerprint.strip_prefix("v1:")?.split(':').next()?;
    (0..salt.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(salt.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of the account's secrets as set now, salted like `stored`; `None` when
/// none of them is set (nothing new to try) or `stored` is not a fingerprint.
pub fn secrets_now_like(pool: &AgentPool, account: usize, stored: &str) -> Option<String> {
    let values = crate::agent::secret_values(&account_secrets(pool, account));
    if values.is_empty() {
        return None;
    }
    fingerprint(&values, Some(&salt_of(stored)?))
}

/// What `meta` says about an account's rejected credentials: since when, and the fingerprint.
pub fn rejection(store: &dyn Store, account: &str) -> Result<Option<(i64, String)>, StoreError> {
    let Some(text) = store.meta(&format!("{REJECTED_PREFIX}{account}"))? else {
        return Ok(None);
    };
    // Unreadable, it says nothing either way: an error, not "no rejection" (that would keep a
    // fixed account disabled without a word).
    let corrupt = || StoreError::Corrupt(format!("meta {REJECTED_PREFIX}{account}: {text:?}"));
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| corrupt())?;
    match (v["since"].as_i64(), v["secrets"].as_str()) {
        (Some(since), Some(fp)) => Ok(Some((since, fp.to_string()))),
        _ => Err(corrupt()),
    }
}

/// Records the fingerprint of rejected credentials. Written before the disablement is
/// committed: a crash in between leaves a fingerprint nothing refers to, never a disabled
/// account whose key change would go unnoticed.
pub fn save_rejection(
    store: &dyn Store,
    account: &str,
    since: i64,
    fingerprint: &str,
) -> Result<(), StoreError> {
    store.set_meta(
        &format!("{REJECTED_PREFIX}{account}"),
        &serde_json::json!({"since": since, "secrets": fingerprint}).to_string(),
    )
}

/// The outcome string an attempt row records, as the pool's [`Ending`]. `None` for attempts
/// the pool ignores (interrupted by fleet itself, or still running).
pub fn ending_of(outcome: &str) -> Option<Ending> {
    Some(match outcome {
        "passed" => Ending::Passed,
        "checks_failed" => Ending::ChecksFailed,
        "no_change" => Ending::NoChange,
        "agent_error" => Ending::AgentError,
        "rate_limited" => Ending::RateLimited,
        "quota_exhausted" => Ending::QuotaExhausted,
        "auth_failed" => Ending::AuthFailed,
        "overloaded" => Ending::Overloaded,
        "upstream_error" => Ending::Upstream,
        "stalled" => Ending::Stalled,
        "timed_out" => Ending::TimedOut,
        "crashed" | "failed" => Ending::Crashed,
        "no_result" => Ending::NoResult,
        _ => return None,
    })
}

/// A task's agent attempts as the pool reasons about them.
pub fn history(pool: &AgentPool, attempts: &[&AttemptRow]) -> Vec<PastAttempt> {
    attempts
        .iter()
        .filter_map(|a| {
            let profile = pool.find(a.profile.as_deref()?)?;
            Some(PastAttempt {
                profile,
                ending: ending_of(&a.outcome)?,
            })
        })
        .collect()
}

/// The live state of every account of the pool, with today's spend.
pub struct AccountBook {
    pub states: Vec<AccountState>,
    /// The budget day each account's spend was summed for.
    day: Vec<Millis>,
    dirty: Vec<bool>,
    /// When each account's row was last written as this book knows it (`updated_at`): a row
    /// in the store that is newer was written by another process.
    changed_at: Vec<i64>,
}

impl AccountBook {
    pub fn load(
        pool: &AgentPool,
        store: &dyn Store,
        clock: &Clock,
    ) -> Result<AccountBook, StoreError> {
        let rows = store.accounts()?;
        let mut book = AccountBook {
            states: vec![AccountState::default(); pool.accounts.len()],
            day: vec![0; pool.accounts.len()],
            dirty: vec![false; pool.accounts.len()],
            changed_at: vec![0; pool.accounts.len()],
        };
        for (i, acc) in pool.accounts.iter().enumerate() {
            if let Some(r) = rows.iter().find(|r| r.name == acc.name) {
                book.states[i].cooldown_until = r.cooldown_until.map(|t| t.max(0) as Millis);
                book.states[i].backoff_level = r.backoff_level;
                book.states[i].disabled = r.disabled.clone();
                book.changed_at[i] = r.updated_at;
                if r.disabled.is_some() {
                    book.states[i].rejected_secrets = rejection(store, &acc.name)?.map(|r| r.1);
                }
            }
        }
        book.refresh(pool, store, clock)?;
        Ok(book)
    }

    /// Sums spend again for accounts whose budget day has turned since it was last summed.
    pub fn refresh(
        &mut self,
        pool: &AgentPool,
        store: &dyn Store,
        clock: &Clock,
    ) -> Result<(), StoreError> {
        let days: Vec<Millis> = pool
            .accounts
            .iter()
            .map(|a| day_start(clock, a.day_starts))
            .collect();
        let stale: Vec<usize> = (0..days.len())
            .filter(|&i| days[i] != self.day[i])
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let since = stale.iter().map(|&i| days[i]).min().unwrap_or(0);
        let attempts = store.attempts_since(since as i64)?;
        for i in stale {
            let name = &pool.accounts[i].name;
            let mine = attempts
                .iter()
                .filter(|a| a.account.as_deref() == Some(name) && a.started_at >= days[i] as i64);
            self.states[i].spent_usd = mine.clone().map(|a| a.cost_usd).sum();
            self.states[i].spent_tokens = mine
                .map(|a| {
                    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens
                })
                .sum();
            self.day[i] = days[i];
        }
        Ok(())
    }

    /// Adds an attempt's spend; says whether that took the account over its budget.
    pub fn spend(&mut self, pool: &AgentPool, account: usize, usd: f64, tokens: u64) -> bool {
        let before = over_budget(&pool.accounts[account], &self.states[account]);
        self.states[account].spent_usd += usd;
        self.states[account].spent_tokens += tokens;
        !before && over_budget(&pool.accounts[account], &self.states[account])
    }

    /// Applies what an attempt's ending does to its account. Returns the event to record, if
    /// anything changed that a person should see.
    pub fn apply(
        &mut self,
        account: usize,
        effect: AccountEffect,
    ) -> Option<(&'static str, serde_json::Value)> {
        let st = &mut self.states[account];
        let event = match effect {
            AccountEffect::Nothing => None,
            AccountEffect::Healthy => {
                if st.backoff_level == 0 {
                    return None;
                }
                st.backoff_level = 0;
                None
            }
            AccountEffect::Cooldown {
                until,
                backoff_level,
                why,
            } => {
                st.backoff_level = backoff_level;
                if st.cooldown_until.is_some_and(|u| u >= until) {
                    // Already cooling down that long (the stream reported it first).
                    None
                } else {
                    st.cooldown_until = Some(until);
                    Some((
                        "account.cooldown",
                        serde_json::json!({"until": crate::rfc3339(until as i64), "reason": why}),
                    ))
                }
            }
            AccountEffect::Disable {
                reason,
                rejected_secrets,
            } => {
                st.disabled = Some(reason.clone());
                st.rejected_secrets = rejected_secrets;
                Some(("account.disabled", serde_json::json!({"reason": reason})))
            }
            AccountEffect::Enable { why } => {
                let was = st.disabled.take();
                st.rejected_secrets = None;
                st.cooldown_until = None;
                st.backoff_level = 0;
                Some((
                    "account.enabled",
                    serde_json::json!({"reason": why, "was_disabled": was}),
                ))
            }
        };
        self.dirty[account] = true;
        event
    }

    /// Enables again every disabled account whose rejected secrets were replaced since (the
    /// decision is [`reprobe`]'s). Reads the environment only for such accounts. Returns the
    /// events to record.
    pub fn reprobe_changed(&mut self, pool: &AgentPool) -> Vec<(usize, serde_json::Value)> {
        let mut events = Vec::new();
        for i in 0..self.states.len() {
            let Some(stored) = self.states[i]
                .rejected_secrets
                .clone()
                .filter(|_| self.states[i].disabled.is_some())
            else {
                continue;
            };
            let now = secrets_now_like(pool, i, &stored);
            if let Some(effect) = reprobe(&self.states[i], now.as_deref())
                && let Some((_, mut data)) = self.apply(i, effect)
            {
                data["account"] = serde_json::json!(pool.accounts[i].name);
                events.push((i, data));
            }
        }
        events
    }

    /// Takes in enablements made by another process (`fleet accounts enable`) while this one
    /// holds the account disabled. Reads the store only while some account is disabled.
    pub fn sync_enabled(&mut self, pool: &AgentPool, store: &dyn Store) -> Result<(), StoreError> {
        if self.states.iter().all(|s| s.disabled.is_none()) {
            return Ok(());
        }
        let rows = store.accounts()?;
        for (i, acc) in pool.accounts.iter().enumerate() {
            // Only a newer row: ours may still wait in the batch of this turn.
            let enabled_since = rows.iter().any(|r| {
                r.name == acc.name && r.disabled.is_none() && r.updated_at > self.changed_at[i]
            });
            if self.states[i].disabled.is_some() && enabled_since {
                self.changed_at[i] = rows
                    .iter()
                    .find(|r| r.name == acc.name)
                    .map_or(0, |r| r.updated_at);
                let st = &mut self.states[i];
                st.disabled = None;
                st.rejected_secrets = None;
                st.cooldown_until = None;
                st.backoff_level = 0;
            }
        }
        Ok(())
    }

    /// Rows of accounts whose state changed since the last call.
    pub fn take_dirty(&mut self, pool: &AgentPool, now: i64) -> Vec<AccountRow> {
        let mut rows = Vec::new();
        for i in 0..self.dirty.len() {
            if std::mem::take(&mut self.dirty[i]) {
                self.changed_at[i] = now;
                rows.push(AccountRow {
                    name: pool.accounts[i].name.clone(),
                    cooldown_until: self.states[i].cooldown_until.map(|t| t as i64),
                    backoff_level: self.states[i].backoff_level,
                    disabled: self.states[i].disabled.clone(),
                    updated_at: now,
                });
            }
        }
        rows
    }
}

/// What the next agent is told beyond the task itself: the acceptance criteria, every earlier
/// attempt and how it ended, and the failing check's output (so it fixes error X instead of
/// starting blind). The current diff is added by the worker, which can see the worktree.
/// The CLI session the next attempt of a task continues, if any: when the previous attempt was
/// played by the same profile, the agent finished normally (its work only failed the checks or
/// changed nothing) and the CLI reported a session. Then the agent keeps its whole conversation
/// instead of reading the handoff note cold. Anything else (a limit, a crash, a stall, another
/// profile) starts fresh.
pub fn resume_from<'a>(previous: Option<&'a AttemptRow>, profile: &str) -> Option<(&'a str, u32)> {
    let prev = previous?;
    let same_profile = prev.profile.as_deref() == Some(profile);
    let finished_normally = matches!(
        ending_of(&prev.outcome),
        Some(Ending::ChecksFailed | Ending::NoChange)
    );
    match (&prev.session_id, same_profile && finished_normally) {
        (Some(id), true) => Some((id.as_str(), prev.n)),
        _ => None,
    }
}

pub fn handoff_note(
    checks: &[String],
    attempts: &[(String, String, Option<String>)],
    last_check: Option<&(String, Option<i32>, String)>,
) -> String {
    let mut s = String::new();
    if !checks.is_empty() {
        s.push_str(
            "## Acceptance criteria (fleet runs these after you finish; all must exit 0)\n\n",
        );
        for c in checks {
            s.push_str(&format!("- `{c}`\n"));
        }
        s.push('\n');
    }
    if attempts.is_empty() {
        return s;
    }
    s.push_str("## Attempts so far\n\nYou continue in the same working tree as the last attempt left it.\n\n");
    for (i, (profile, outcome, detail)) in attempts.iter().enumerate() {
        s.push_str(&format!(
            "{}. {profile}: {outcome}{}\n",
            i + 1,
            detail
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        ));
    }
    if let Some((cmd, code, output)) = last_check {
        s.push_str(&format!(
            "\n## The failing check\n\n`{cmd}` exited with {}. Its output (last lines):\n\n```\n{}\n```\n\nFix this error; do not start over.\n",
            code.map(|c| c.to_string()).unwrap_or_else(|| "no exit code (killed)".into()),
            output.trim_end()
        ));
    }
    s
}

/// The last `max_lines` lines (at most `max_bytes`) of a text, for prompts and events.
pub fn tail(text: &str, max_lines: usize, max_bytes: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(max_lines)..].join("\n");
    if out.len() > max_bytes {
        let mut cut = out.len() - max_bytes;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_continued_only_by_its_profile_after_a_normal_end() {
        let row = |outcome: &str, session: Option<&str>| AttemptRow {
            n: 3,
            outcome: outcome.into(),
            profile: Some("claude-dev".into()),
            session_id: session.map(String::from),
            ..AttemptRow::default()
        };
        let checks_failed = row("checks_failed", Some("s-1"));
        assert_eq!(
            resume_from(Some(&checks_failed), "claude-dev"),
            Some(("s-1", 3))
        );
        assert_eq!(
            resume_from(Some(&row("no_change", Some("s-1"))), "claude-dev"),
            Some(("s-1", 3))
        );
        // Another profile, no session, a first attempt, or an abnormal end: start fresh.
        assert_eq!(resume_from(Some(&checks_failed), "codex-dev"), None);
        assert_eq!(
            resume_from(Some(&row("checks_failed", None)), "claude-dev"),
            None
        );
        assert_eq!(resume_from(None, "claude-dev"), None);
        for outcome in [
            "rate_limited",
            "crashed",
            "stalled",
            "timed_out",
            "interrupted",
            "passed",
        ] {
            assert_eq!(
                resume_from(Some(&row(outcome, Some("s-1"))), "claude-dev"),
                None,
                "{outcome}"
            );
        }
    }

    #[test]
    fn handoff_carries_criteria_history_and_the_failing_output() {
        let note = handoff_note(
            &["cargo test -q".into()],
            &[(
                "claude-dev".into(),
                "checks_failed".into(),
                Some("check `cargo test -q` exit 101".into()),
            )],
            Some(&(
                "cargo test -q".into(),
                Some(101),
                "thread 'x' panicked at src/lib.rs:3".into(),
            )),
        );
        assert!(note.contains("- `cargo test -q`"));
        assert!(note.contains("1. claude-dev: checks_failed — check `cargo test -q` exit 101"));
        assert!(note.contains("exited with 101"));
        assert!(note.contains("panicked at src/lib.rs:3"));
    }

    #[test]
    fn a_fingerprint_tells_keys_apart_without_holding_them() {
        let keys = |v: &str| BTreeMap::from([("ACME_KEY".to_string(), v.to_string())]);
        let fp = fingerprint(&keys("sk-secret-value-1"), None).unwrap();
        assert!(!fp.contains("sk-secret") && fp.starts_with("v1:"), "{fp}");
        let salt = salt_of(&fp).unwrap();
        assert_eq!(salt.len(), 16);
        // Same salt, same key: equal; another key, or the value under another name: not.
        assert_eq!(
            fingerprint(&keys("sk-secret-value-1"), Some(&salt)),
            Some(fp.clone())
        );
        assert_ne!(
            fingerprint(&keys("sk-secret-value-2"), Some(&salt)),
            Some(fp.clone())
        );
        let renamed = BTreeMap::from([("OTHER".to_string(), "sk-secret-value-1".to_string())]);
        assert_ne!(fingerprint(&renamed, Some(&salt)), Some(fp.clone()));
        // A fresh salt each time: two fingerprints of one key do not match.
        assert_ne!(fingerprint(&keys("sk-secret-value-1"), None), Some(fp));
        assert_eq!(salt_of("not a fingerprint"), None);
        assert_eq!(salt_of("v1:zz:00"), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&text, 2, 1000), "line 99\nline 100");
        assert!(
            tail(&text, 100, 20).starts_with('…') && tail(&text, 100, 20).ends_with("line 100")
        );
        assert_eq!(ending_of("rate_limited"), Some(Ending::RateLimited));
        assert_eq!(ending_of("interrupted"), None);
    }
}
