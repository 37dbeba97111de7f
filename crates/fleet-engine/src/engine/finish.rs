//! The finish side of an attempt that succeeded: the guards on its change (something changed,
//! no conflict markers, the run's policies), its checks in order, the secrets scan, and the
//! commit of its work on the task's branch.

use super::attempt::{command_env, open_log, read_from, redact_log_since, workdir, write_log_line};
use super::{Ctx, FinishResult, Msg, policy_enforce};
use crate::fix_loop;
use crate::layout::task_branch;
use crate::plan::TaskAction;
use crate::process::{self, CommandSpec, Finished};
use std::fs::File;
use std::sync::Arc;

/// After a successful command: runs the checks in order, then commits the task's changes.
pub(super) async fn finish_worker(ctx: Arc<Ctx>, task: usize, n: u32, recheck: bool) {
    let result = run_finish(&ctx, task, n, recheck).await;
    let _ = ctx.tx.send(Msg::Finish { task, result });
}

async fn run_finish(ctx: &Arc<Ctx>, task: usize, n: u32, recheck: bool) -> FinishResult {
    let def = &ctx.tasks[task];
    let cwd = workdir(ctx, task);
    let log = match open_log(ctx, task) {
        Ok(l) => l,
        Err(e) => return FinishResult::Error(format!("cannot open the task log: {e}")),
    };
    let env = command_env(ctx, task, n, &cwd);
    if matches!(def.action, TaskAction::Agent(_))
        && def.worktree
        && !recheck
        && let Some(nothing) = changed_nothing(ctx, &cwd, &log).await
    {
        return nothing;
    }
    if def.worktree {
        if let Some(left) = conflict_markers_left(ctx, &cwd, &log).await {
            return left;
        }
        if !recheck
            && let Some(failed) = policy_enforce::check_change(ctx, task, &cwd, &log, &env).await
        {
            return failed;
        }
    }
    if let Some(failed) = run_checks(ctx, task, &cwd, &env, &log).await {
        return failed;
    }
    if matches!(def.action, TaskAction::Agent(_)) {
        // Checks passed: no later attempt continues this session; its home goes now.
        let _ = std::fs::remove_dir_all(ctx.layout.agent_home(&ctx.run_id, &def.id));
    }
    if !def.worktree {
        return FinishResult::Passed { tip: None };
    }
    if let Some(refused) = secrets_in_change(ctx, task, &log).await {
        return refused;
    }
    commit_work(ctx, task, n, &log).await
}

/// "Done" with nothing to show is not done: `Some` when the agent's worktree holds no change
/// (or cannot be read). After a rebase the branch may match what landed meanwhile — the same
/// change made twice: that lands as already merged, so a re-check does not ask this.
async fn changed_nothing(
    ctx: &Arc<Ctx>,
    cwd: &std::path::Path,
    log: &File,
) -> Option<FinishResult> {
    let c = ctx.clone();
    let path = cwd.to_path_buf();
    let base = ctx.integration.clone();
    match fleet_store::pg::spawn_blocking(move || c.repo.has_changes(&path, &base)).await {
        Ok(Ok(false)) => {
            log_line!(log, "── the agent changed nothing ──");
            Some(FinishResult::NoChange)
        }
        Ok(Err(e)) => Some(FinishResult::Error(format!(
            "cannot inspect the worktree: {e}"
        ))),
        _ => None,
    }
}

/// A merge conflict handed to the agent is resolved only when no marker is left.
async fn conflict_markers_left(
    ctx: &Arc<Ctx>,
    cwd: &std::path::Path,
    log: &File,
) -> Option<FinishResult> {
    let c = ctx.clone();
    let path = cwd.to_path_buf();
    let left = fleet_store::pg::spawn_blocking(move || {
        let files = c.repo.unmerged_files(&path)?;
        Ok::<_, fleet_git::GitError>(c.repo.files_with_conflict_markers(&path, &files))
    })
    .await;
    let Ok(Ok(files)) = left else {
        return None;
    };
    if files.is_empty() {
        return None;
    }
    let check = "no conflict markers left".to_string();
    let output = format!("conflict markers remain in: {}", files.join(", "));
    log_line!(log, "── {output} ──");
    Some(FinishResult::CheckFailed {
        check,
        finished: Finished::failed_check(),
        output,
    })
}

/// Runs the task's checks in order; `Some` at the first that fails (or is stopped).
async fn run_checks(
    ctx: &Arc<Ctx>,
    task: usize,
    cwd: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
    log: &File,
) -> Option<FinishResult> {
    let def = &ctx.tasks[task];
    let total = def.checks.len();
    for (k, check) in def.checks.iter().enumerate() {
        log_line!(log, "── check {}/{total} ──\n$ {check}", k + 1);
        // The check's output goes to the log; where it starts is kept to quote it back.
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let spec = CommandSpec {
            command: check,
            cwd,
            env,
            timeout: def.timeout,
            kill_grace: ctx.kill_grace,
        };
        let finished = match process::run(spec, log, ctx.stop.clone(), |_| {}).await {
            Ok(f) => f,
            Err(e) => {
                return Some(FinishResult::Error(format!(
                    "could not run check `{check}`: {e}"
                )));
            }
        };
        redact_log_since(ctx, task, log, from);
        log_line!(
            log,
            "── check: {} after {} ──",
            finished.describe(),
            crate::fmt_duration(finished.elapsed)
        );
        if finished.stopped {
            return Some(FinishResult::Stopped);
        }
        if !finished.success() {
            let output = read_from(&ctx.layout.log(&ctx.run_id, &def.id), from);
            return Some(FinishResult::CheckFailed {
                check: check.clone(),
                finished,
                output: fix_loop::tail(&output, 60, 6000),
            });
        }
    }
    None
}

/// Commits the task's worktree on its branch: the tip is what the merge queue lands.
async fn commit_work(ctx: &Arc<Ctx>, task: usize, n: u32, log: &File) -> FinishResult {
    let def = &ctx.tasks[task];
    let c = ctx.clone();
    // The command as written may hold a literal token; git history keeps what it is given.
    let message = ctx.redactor.clean_string(format!(
        "fleet: task {} (run {})\n\n$ {}\nattempt {n}",
        def.id,
        ctx.run_id,
        def.describe()
    ));
    let committed = fleet_store::pg::spawn_blocking(move || {
        let def = &c.tasks[task];
        let path = c.layout.worktree(&c.run_id, &def.id);
        c.repo.commit_all(&path, &message)?;
        c.repo.branch_tip(&task_branch(&c.task_branches, &def.id))
    })
    .await;
    match committed {
        Ok(Ok(tip)) => {
            log_line!(
                log,
                "── committed {} ──",
                tip.as_deref()
                    .map(|t| &t[..t.len().min(12)])
                    .unwrap_or("nothing")
            );
            FinishResult::Passed { tip }
        }
        Ok(Err(e)) => FinishResult::Error(format!("could not commit the task's changes: {e}")),
        Err(e) => FinishResult::Error(e.to_string()),
    }
}

/// Scans what task `task` would commit for secrets: the values Fleet knows and the shapes of
/// well-known credentials. A hit fails the attempt like a failing check (the agent is told
/// where, never what), so nothing of it lands.
async fn secrets_in_change(ctx: &Arc<Ctx>, task: usize, log: &File) -> Option<FinishResult> {
    let c = ctx.clone();
    let path = workdir(ctx, task);
    let added = fleet_store::pg::spawn_blocking(move || c.repo.added_lines(&path, &c.integration))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let added = match added {
        Ok(lines) => lines,
        Err(e) => {
            return Some(FinishResult::Error(format!(
                "cannot inspect the change: {e}"
            )));
        }
    };
    let mut found = Vec::new();
    for (file, line, text) in &added {
        for f in ctx.redactor.scan(text) {
            found.push(format!("{file}:{line}: {}", f.what));
        }
    }
    if found.is_empty() {
        return None;
    }
    found.truncate(20);
    let output = format!(
        "the change holds secrets, so it cannot be committed:\n{}\nRemove them; code reads \
         secrets from environment variables, never from files in the repository.",
        found.join("\n")
    );
    log_line!(log, "── {output} ──");
    Some(FinishResult::CheckFailed {
        check: "no secrets in the change".into(),
        finished: Finished::failed_check(),
        output,
    })
}
