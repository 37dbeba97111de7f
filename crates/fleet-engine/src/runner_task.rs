//! A shell task on a runner, with the protections the local engine gives one: its output in
//! the task log without secrets and capped (`log_clean`, as the engine's attempts), its
//! retries with the runbook's backoff and the engine's events (`task.checks_failed`,
//! `task.retrying`), the queueing instance's protected paths (`policy.protected`, as
//! `policy_enforce.rs`), and the secrets scan of the change before anything is committed (the
//! check "no secrets in the change", as `engine/finish.rs`).
//!
//! Retries happen inside the one claim, in the same workspace, as the engine's attempts reuse
//! the task's worktree: the claim's lease is renewed meanwhile, so a backoff is not a dead
//! runner. A claim that is lost or stopped ends the loop at once.

use crate::log_clean::clean_log_since;
use crate::process::{self, CommandSpec, Finished};
use crate::remote::TaskOrder;
use crate::{EngineError, now_ms};
use fleet_core::RetryPolicy;
use fleet_core::policy::{ProtectedPaths, violations};
use fleet_secrets::Redactor;
use fleet_store::{Batch, Claim, Finish, NewEvent, Store};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The check a change holding a secret fails (the engine's name for it).
const SECRETS_CHECK: &str = "no secrets in the change";

/// Everything a shell task needs from the runner's claim.
pub(crate) struct ShellTask<'a> {
    pub store: Arc<dyn Store>,
    pub claim: &'a Claim,
    pub order: &'a TaskOrder,
    /// The claim's workspace: a clone on the task branch, or an empty directory.
    pub dir: &'a Path,
    pub log_path: &'a Path,
    /// The commands' environment; `FLEET_ATTEMPT` is set per attempt ([`attempt_number`]).
    pub env: &'a BTreeMap<String, String>,
    pub redactor: &'a Redactor,
    /// This runner's name, in the events it writes.
    pub runner: &'a str,
    pub kill_grace: Duration,
    pub stop: watch::Receiver<bool>,
}

/// How the task's attempts ended.
pub(crate) enum ShellEnd {
    Passed,
    Failed(String),
    /// Its command was ended (drain grace over, or the claim was lost).
    Stopped,
}

/// How one attempt ended.
enum Tried {
    Passed,
    Failed(String),
    CheckFailed {
        check: String,
        finished: Finished,
        output: String,
    },
    Stopped,
}

/// The order's retry policy, as the engine builds it from the runbook (`plan.rs`).
pub(crate) fn retry_policy(order: &TaskOrder) -> RetryPolicy {
    RetryPolicy {
        retries: order.retries,
        backoff_base_ms: order.retry_backoff_ms,
        backoff_factor: 2,
        backoff_max_ms: order.retry_backoff_ms.saturating_mul(32).max(1),
    }
}

/// `FLEET_ATTEMPT` of try `k` of claim `n`: counted across claims, each claim having room for
/// every try, so it grows with each try as a local run's attempts do (and a redo's first try
/// follows the dead claim's).
pub(crate) fn attempt_number(n: u32, retries: u32, k: u32) -> u32 {
    n.saturating_sub(1)
        .saturating_mul(retries.saturating_add(1))
        .saturating_add(k)
}

/// Runs the task's attempts until one passes, the retries are spent, or it is stopped.
pub(crate) async fn run(t: ShellTask<'_>) -> Result<ShellEnd, EngineError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(t.log_path)?;
    let policy = retry_policy(t.order);
    let mut stop = t.stop.clone();
    for k in 1.. {
        let reason = match attempt(&t, &log, k).await? {
            Tried::Passed => return Ok(ShellEnd::Passed),
            Tried::Stopped => return Ok(ShellEnd::Stopped),
            Tried::Failed(reason) => reason,
            Tried::CheckFailed {
                check,
                finished,
                output,
            } => {
                let data = json!({"check": check, "exit_code": finished.code,
                                  "timed_out": finished.timed_out, "output_tail": output});
                note(&t, "task.checks_failed", data).await;
                format!("check `{check}` {}", finished.describe())
            }
        };
        let Some(delay) = policy.next_delay(k) else {
            return Ok(ShellEnd::Failed(reason));
        };
        let not_before = now_ms() + delay as i64;
        let _ = writeln!(
            &log,
            "── retrying at {}: {} ──",
            crate::rfc3339(not_before),
            t.redactor.clean(&reason)
        );
        let data =
            json!({"reason": reason, "not_before": crate::rfc3339(not_before), "try": k + 1});
        note(&t, "task.retrying", data).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            _ = stop.wait_for(|s| *s) => return Ok(ShellEnd::Stopped),
        }
        // As a local run's next attempt (the claim's own start was its first).
        note(
            &t,
            "task.started",
            json!({"runner": t.runner, "try": k + 1}),
        )
        .await;
    }
    unreachable!("the retry policy ends the loop")
}

/// One attempt: the command, its checks, and for a workspace that lands, the secrets scan.
async fn attempt(t: &ShellTask<'_>, log: &File, k: u32) -> Result<Tried, EngineError> {
    let header = format!(
        "── attempt {k} · {} · in {} ──\n$ {}\n",
        crate::rfc3339(now_ms()),
        t.dir.display(),
        t.order.run
    );
    let _ = (&*log).write_all(t.redactor.clean(&header).as_bytes());
    let mut env = t.env.clone();
    let n = attempt_number(t.claim.n, t.order.retries, k);
    env.insert("FLEET_ATTEMPT".into(), n.to_string());
    let ran = run_logged(t, log, &env, &t.order.run).await?;
    let _ = writeln!(
        &*log,
        "── command: {} after {} ──",
        ran.describe(),
        crate::fmt_duration(ran.elapsed)
    );
    if ran.stopped {
        return Ok(Tried::Stopped);
    }
    if !ran.success() {
        return Ok(Tried::Failed(ran.describe()));
    }
    if let Some(failed) = protected_paths(t, log).await? {
        return Ok(failed);
    }
    let total = t.order.checks.len();
    for (i, check) in t.order.checks.iter().enumerate() {
        let _ = writeln!(
            &*log,
            "{}",
            t.redactor
                .clean(&format!("── check {}/{total} ──\n$ {check}", i + 1))
        );
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let ran = run_logged(t, log, &env, check).await?;
        let _ = writeln!(
            &*log,
            "── check: {} after {} ──",
            ran.describe(),
            crate::fmt_duration(ran.elapsed)
        );
        if ran.stopped {
            return Ok(Tried::Stopped);
        }
        if !ran.success() {
            let output = crate::log_clean::tail_from(t.log_path, from, 60, 6000);
            return Ok(Tried::CheckFailed {
                check: check.clone(),
                finished: ran,
                output,
            });
        }
    }
    if t.order.workspace == "git" {
        return secrets_in_change(t, log).await;
    }
    Ok(Tried::Passed)
}

/// Runs `command` in the workspace, its output appended to the log, then cleaned.
async fn run_logged(
    t: &ShellTask<'_>,
    log: &File,
    env: &BTreeMap<String, String>,
    command: &str,
) -> Result<Finished, EngineError> {
    let from = log.metadata().map(|m| m.len()).unwrap_or(0);
    let spec = CommandSpec {
        command,
        cwd: t.dir,
        env,
        timeout: t.order.timeout_ms.map(Duration::from_millis),
        kill_grace: t.kill_grace,
    };
    let ran = process::run(spec, log, t.stop.clone(), |_| {}).await?;
    clean_log_since(t.log_path, log, from, t.redactor);
    Ok(ran)
}

/// A change touching a path the queueing instance's policies protect fails, its paths put
/// back as where the task forked (the engine's `policy_enforce::protected_paths`), so nothing
/// of it lands and a retry starts without it.
async fn protected_paths(t: &ShellTask<'_>, log: &File) -> Result<Option<Tried>, EngineError> {
    if t.order.protected_paths.is_empty() || t.order.workspace != "git" {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for (rule, patterns) in &t.order.protected_paths {
        match ProtectedPaths::new(rule, patterns) {
            Ok(r) => rules.push(r),
            Err(e) => return Ok(Some(Tried::Failed(format!("policy `{rule}`: {e}")))),
        }
    }
    let (dir, base) = (t.dir.to_path_buf(), t.order.integration.clone());
    let found = fleet_store::pg::spawn_blocking(move || {
        let repo = fleet_git::Repo::open(&dir)?;
        let found = violations(&rules, &repo.paths_changed(&dir, &base)?);
        if !found.is_empty() {
            let fork = repo.fork_point(&dir, &base)?;
            let paths: Vec<String> = found.iter().map(|v| v.path.clone()).collect();
            repo.restore_paths(&dir, &fork, &paths)?;
        }
        Ok::<_, fleet_git::GitError>(found)
    })
    .await
    .map_err(std::io::Error::other)?;
    let found = match found {
        Ok(found) if found.is_empty() => return Ok(None),
        Ok(found) => found,
        Err(e) => {
            let reason = format!("cannot check the change against protected paths: {e}");
            return Ok(Some(Tried::Failed(reason)));
        }
    };
    for v in &found {
        let detail = format!("{} (pattern `{}`): put back", v.path, v.pattern);
        note(
            t,
            "policy.protected",
            json!({"rule": v.rule, "detail": detail}),
        )
        .await;
    }
    let lines: Vec<String> = found
        .iter()
        .map(|v| {
            format!(
                "{} is protected by policy `{}` (pattern `{}`)",
                v.path, v.rule, v.pattern
            )
        })
        .collect();
    let output = format!(
        "the change touches protected paths, so it cannot land:\n{}\nFleet put them back as \
         they are on the integration branch; do the task without changing them.",
        lines.join("\n")
    );
    let _ = writeln!(&*log, "── {output} ──");
    let mut names: Vec<&str> = found.iter().map(|v| v.rule.as_str()).collect();
    names.dedup();
    Ok(Some(Tried::CheckFailed {
        check: format!("policy `{}`: protected paths", names.join("`, `")),
        finished: Finished::failed_check(),
        output,
    }))
}

/// What the task would commit, scanned for secrets (the engine's check of the same name): a
/// hit fails the attempt, saying where and never what, so nothing of it is pushed.
async fn secrets_in_change(t: &ShellTask<'_>, log: &File) -> Result<Tried, EngineError> {
    let (dir, base) = (t.dir.to_path_buf(), t.order.integration.clone());
    let added = fleet_store::pg::spawn_blocking(move || {
        fleet_git::Repo::open(&dir).and_then(|r| r.added_lines(&dir, &base))
    })
    .await
    .map_err(std::io::Error::other)?;
    let added = match added {
        Ok(lines) => lines,
        Err(e) => return Ok(Tried::Failed(format!("cannot inspect the change: {e}"))),
    };
    let mut found = Vec::new();
    for (file, line, text) in &added {
        for f in t.redactor.scan(text) {
            found.push(format!("{file}:{line}: {}", f.what));
        }
    }
    if found.is_empty() {
        return Ok(Tried::Passed);
    }
    found.truncate(20);
    let output = format!(
        "the change holds secrets, so it cannot be committed:\n{}\nRemove them; code reads \
         secrets from environment variables, never from files in the repository.",
        found.join("\n")
    );
    let _ = writeln!(&*log, "── {output} ──");
    Ok(Tried::CheckFailed {
        check: SECRETS_CHECK.into(),
        finished: Finished::failed_check(),
        output,
    })
}

/// How much of a task's log its end event carries: lines, bytes.
const LOG_TAIL: (usize, usize) = (100, 8000);

/// The events that end a claim (`task.merged` if it landed, then `task.done` or
/// `task.failed`), with `end`'s reason redacted: what the store keeps is read by people and
/// the API, as a local run's. The log stays on the runner; its redacted tail rides on the end
/// event, so `fleet logs` and the API show it from anywhere.
pub(crate) fn end_events(
    end: &mut Finish,
    runner: &str,
    log: &Path,
    redactor: &Redactor,
) -> Vec<NewEvent> {
    if let Some(d) = end.detail.take() {
        end.detail = Some(redactor.clean_string(d));
    }
    let mut events = Vec::new();
    if let Some(m) = &end.merge_sha {
        events.push(end_event("task.merged", json!({"merge": m})));
    }
    let done = end.state == "done";
    let mut data = match done {
        true => json!({"runner": runner}),
        false => json!({"reason": end.detail, "runner": runner}),
    };
    if let Some(tail) = crate::log_clean::tail_of(log, LOG_TAIL.0, LOG_TAIL.1) {
        data["log_path"] = json!(log);
        data["log_tail"] = json!(tail);
    }
    redactor.clean_json(&mut data);
    let kind = if done { "task.done" } else { "task.failed" };
    events.push(end_event(kind, data));
    events
}

/// An event the queue stamps with the claim's run, task and number.
fn end_event(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_ms(),
        run_id: String::new(),
        task: None,
        attempt: None,
        kind: kind.into(),
        data,
    }
}

/// An event of the claim's task, committed now (redacted). A lost note is not worth failing
/// the task for: the task's end says how it ended.
async fn note(t: &ShellTask<'_>, kind: &str, mut data: serde_json::Value) {
    t.redactor.clean_json(&mut data);
    let ev = NewEvent {
        at: now_ms(),
        run_id: t.claim.run_id.clone(),
        task: Some(t.claim.task_id.clone()),
        attempt: Some(t.claim.n),
        kind: kind.into(),
        data,
    };
    let store = t.store.clone();
    let _ = fleet_store::pg::spawn_blocking(move || {
        store.commit(&Batch {
            events: vec![ev],
            ..Batch::default()
        })
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row queued before the retry fields existed still parses: no retries.
    #[test]
    fn an_order_queued_before_retries_parses_with_none() {
        let old = json!({"run": "true", "workspace": "none", "checks": [], "timeout_ms": null,
                         "env": {}, "pass_env": [], "remote": "r", "integration": "i",
                         "task_branch": "t"});
        let order: TaskOrder = serde_json::from_value(old).unwrap();
        assert_eq!((order.retries, order.retry_backoff_ms), (0, 0));
        assert_eq!(retry_policy(&order).next_delay(1), None);
    }

    /// Tries count on across claims: claim 2 of a task with 2 retries starts at 4.
    #[test]
    fn attempt_numbers_grow_across_tries_and_claims() {
        let with_two: Vec<u32> = [(1, 1), (1, 3), (2, 1), (3, 2)]
            .iter()
            .map(|&(n, k)| attempt_number(n, 2, k))
            .collect();
        assert_eq!(with_two, [1, 3, 4, 8]);
        assert_eq!(
            attempt_number(2, 0, 1),
            2,
            "a redo without retries is attempt 2"
        );
    }
}
