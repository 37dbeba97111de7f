//! The merge queue: lands passed tasks on the integration branch one at a time, in the order
//! they passed. A task whose branch is behind is rebased (or merged) onto the new tip and
//! checked again first; a conflict becomes a rework attempt (agent tasks) or fails the task.

use super::attempt::append_log;
use super::{Coordinator, Ctx, Launch, MergeStep, Msg};
use crate::layout::task_branch;
use crate::plan::TaskAction;
use fleet_git::MergeOutcome;
use serde_json::json;
use std::path::PathBuf;

impl Coordinator {
    /// The merge queue: lands passed tasks one at a time, in the order they passed (FIFO).
    /// A task whose branch does not contain the integration tip is first rebased onto it and
    /// re-checked (tasks with checks), so what lands was checked as it lands; a conflict
    /// becomes a rework attempt for agent tasks (the conflict in its prompt) and fails a
    /// command task. Landing is a compare-and-swap merge that never lands a commit twice.
    pub(super) fn start_merge(&mut self) {
        if self.merging {
            return;
        }
        let Some(&i) = self.merge_queue.front() else {
            return;
        };
        // A task with checks may need them run again (after a rebase): that takes a slot, so
        // it waits for one like any task does.
        if !self.plan.tasks[i].checks.is_empty() && self.active >= self.plan.concurrency {
            return;
        }
        self.merge_queue.pop_front();
        self.merging = true;
        self.busy += 1;
        let ctx = self.ctx.clone();
        let tip = self.rows[i].commit_sha.clone();
        let id = self.plan.tasks[i].id.clone();
        let recheck = !self.plan.tasks[i].checks.is_empty();
        let rework = matches!(self.plan.tasks[i].action, TaskAction::Agent(_));
        fleet_store::pg::spawn_blocking(move || {
            let result = merge_step(&ctx, &id, tip.clone(), recheck, rework).or_else(|first| {
                // A git that died (with another Fleet, or killed as a ghost) may have left a
                // lock the merge met: once such a lock is stale, repair and try once more.
                std::thread::sleep(fleet_git::STALE_LOCK_AGE);
                ctx.repo
                    .repair(&ctx.layout.worktrees())
                    .map_err(|e| format!("{first}; then the repair failed: {e}"))?;
                merge_step(&ctx, &id, tip, recheck, rework)
                    .map_err(|e| format!("{e} (also before a repair: {first})"))
            });
            let _ = ctx.tx.send(Msg::Merge { task: i, result });
        });
    }

    /// The merge queue's head landed, was rebased (checked again), needs rework or failed.
    pub(super) fn merge_ended(&mut self, task: usize, result: Result<MergeStep, String>) {
        self.busy -= 1;
        self.merging = false;
        match result {
            Ok(MergeStep::Landed(MergeOutcome::Merged { commit })) => {
                self.integration_tip = commit.clone();
                self.rows[task].merge_sha = Some(commit);
                let t = self.run.merged(task);
                self.record(t);
                self.remove_worktree(task);
            }
            Ok(MergeStep::Landed(MergeOutcome::AlreadyMerged)) => self.already_landed(task),
            Ok(MergeStep::Rebased { tip, how }) => self.rebased(task, tip, how),
            Ok(MergeStep::Rework { files, onto }) => self.rework(task, files, onto),
            Ok(MergeStep::Landed(MergeOutcome::Conflict { files })) => {
                let reason = format!("merge conflict in {}", files.join(", "));
                append_log(
                    &self.ctx,
                    task,
                    &format!("── {reason}; the integration branch is unchanged ──\n"),
                );
                self.event(
                    Some(task),
                    None,
                    "task.merge_conflict",
                    json!({"files": files}),
                );
                let t = self.run.merge_failed(task, &reason);
                self.record(t);
            }
            Err(err) => {
                let reason = format!("merge failed: {err}");
                append_log(&self.ctx, task, &format!("── {reason} ──\n"));
                let t = self.run.merge_failed(task, &reason);
                self.record(t);
            }
        }
    }

    /// Landed before a crash (or changed nothing): records how it landed.
    fn already_landed(&mut self, task: usize) {
        let target = self.ctx.integration.clone();
        if let Ok(Some(tip)) = self.ctx.repo.branch_tip(&target) {
            self.integration_tip = tip;
        }
        if let Some(commit) = self.rows[task].commit_sha.clone() {
            self.rows[task].merge_sha = self.ctx.repo.find_merge(&target, &commit).ok().flatten();
        }
        if self.rows[task].merge_sha.is_none() {
            append_log(
                &self.ctx,
                task,
                &format!(
                    "── nothing to merge: {} already has all of this task's branch ──\n",
                    self.ctx.integration
                ),
            );
        }
        let t = self.run.merged(task);
        self.record(t);
        self.remove_worktree(task);
    }

    /// Brought up to date with the integration branch: its checks run again, holding the queue.
    fn rebased(&mut self, task: usize, tip: String, how: &'static str) {
        append_log(
            &self.ctx,
            task,
            &format!(
                "── brought up to date with {} by {how} (work landed meanwhile); checking again ──\n",
                self.ctx.integration
            ),
        );
        let n = self.run.task(task).attempts;
        self.event(
            Some(task),
            Some(n),
            "task.rebased",
            json!({"onto": self.ctx.integration, "tip": tip, "how": how}),
        );
        self.rows[task].commit_sha = Some(tip);
        self.merging = true;
        self.rechecking = Some(task);
        let t = self.run.recheck(task);
        self.record(vec![t]);
        self.launches.push(Launch::Finish {
            task,
            n,
            recheck: true,
        });
    }

    /// Conflicts with what landed: a rework attempt resolves it, told where and how.
    fn rework(&mut self, task: usize, files: Vec<String>, onto: String) {
        let reason = format!("merge conflict in {}", files.join(", "));
        append_log(
            &self.ctx,
            task,
            &format!("── {reason} with work landed meanwhile; a rework attempt resolves it ──\n"),
        );
        self.event(
            Some(task),
            None,
            "task.merge_conflict",
            json!({"files": files, "rework": true}),
        );
        let note = format!(
            "Work that landed on `{}` meanwhile conflicts with this task's work in: {}.\n\
             The worktree holds that merge in progress ({} merged in, not yet committed); \
             the conflicting files contain git's conflict markers \
             (`<<<<<<<`, `=======`, `>>>>>>>`). Resolve every conflict so that both \
             changes' intentions hold, remove the markers, and make the checks pass. \
             Do not commit; Fleet commits and concludes the merge.",
            self.ctx.integration,
            files.join(", "),
            &onto[..onto.len().min(12)]
        );
        self.last_check.insert(
            task,
            (format!("merge with {}", self.ctx.integration), None, note),
        );
        let t = self.run.rework(task, &reason);
        self.record(vec![t]);
    }
}

/// One turn of the merge queue for task `id` whose work is at `tip` (see
/// [`Coordinator::start_merge`]). Runs on the blocking pool.
fn merge_step(
    ctx: &Ctx,
    id: &str,
    tip: Option<String>,
    recheck: bool,
    rework: bool,
) -> Result<MergeStep, fleet_git::GitError> {
    let Some(tip) = tip else {
        return Ok(MergeStep::Landed(MergeOutcome::AlreadyMerged));
    };
    let target = &ctx.integration;
    let message = format!("fleet: merge task {id} (run {})", ctx.run_id);
    let head = ctx.repo.branch_tip(target)?.unwrap_or_default();
    let landed = ctx.repo.is_ancestor(&tip, &head)?;
    let up_to_date = head.is_empty() || ctx.repo.is_ancestor(&head, &tip)?;
    // Up to date, or nothing to re-check: a clean merge lands as is; a conflict goes back to
    // the agent (agent tasks) or fails the task.
    if landed || up_to_date || !recheck {
        let outcome = ctx.repo.merge_into(target, &tip, &message)?;
        return match outcome {
            MergeOutcome::Conflict { .. } if rework => conflict_for_rework(ctx, id, &head),
            other => Ok(MergeStep::Landed(other)),
        };
    }
    // The integration branch moved since this task started.
    let path = task_worktree(ctx, id, &tip)?;
    if let fleet_git::RebaseOutcome::Rebased { tip } = ctx.repo.rebase_onto(&path, &head)? {
        return Ok(MergeStep::Rebased { tip, how: "rebase" });
    }
    // Replaying the commits one by one conflicts — also when the branch holds an earlier
    // conflict's resolution, which a rebase would undo. Merging may still go through.
    let files = ctx.repo.merge_for_resolution(&path, &head)?;
    if files.is_empty() {
        let message = format!("fleet: bring task {id} up to date with {target}");
        ctx.repo.commit_all(&path, &message)?;
        let tip = ctx
            .repo
            .branch_tip(&task_branch(&ctx.task_branches, id))?
            .unwrap_or(tip);
        return Ok(MergeStep::Rebased { tip, how: "merge" });
    }
    if rework {
        return Ok(MergeStep::Rework {
            files,
            onto: head.clone(),
        });
    }
    ctx.repo.abort_in_progress(&path)?;
    Ok(MergeStep::Landed(MergeOutcome::Conflict { files }))
}

/// Task `id`'s worktree, made again on its branch (or at `fallback` if the branch is gone)
/// when a crash left it missing or half-made.
fn task_worktree(ctx: &Ctx, id: &str, fallback: &str) -> Result<PathBuf, fleet_git::GitError> {
    let path = ctx.layout.worktree(&ctx.run_id, id);
    if !ctx.repo.is_complete_worktree(&path)? {
        let branch = task_branch(&ctx.task_branches, id);
        let tip = ctx.repo.branch_tip(&branch)?;
        ctx.repo
            .add_worktree(&path, &branch, tip.as_deref().unwrap_or(fallback))?;
    }
    Ok(path)
}

/// Leaves the merge of `onto` into task `id`'s worktree in progress, conflict markers and all,
/// for a rework attempt.
fn conflict_for_rework(ctx: &Ctx, id: &str, onto: &str) -> Result<MergeStep, fleet_git::GitError> {
    let path = task_worktree(ctx, id, onto)?;
    let files = ctx.repo.merge_for_resolution(&path, onto)?;
    Ok(MergeStep::Rework {
        files,
        onto: onto.to_string(),
    })
}
