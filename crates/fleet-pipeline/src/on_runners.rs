//! An epic's stage runs on `fleet runner` workers (`runners: true` in fleet.yaml).
//!
//! The stage's plan is queued as a run on runners (`fleet_engine::remote::submit`): the
//! runners clone the project's remote, play its tasks (agent tasks as one-task sub-runs of the
//! engine, with their own profiles) and land them on the run's integration branch on the
//! remote. The driver only waits for the run's end through the store's events, then fetches
//! the branch back into the project's repository, where the stage reads its artifact and the
//! next stage starts from it — as after a run in this process.
//!
//! A driver that dies loses nothing: the runners go on, and the next driver finds the run by
//! its name and waits again. Cancelling the epic stops the waiting and cancels the epic's runs
//! on runners ([`cancel_runs`]): their queued tasks are never claimed, and the runners holding
//! the others stop them, landing nothing.

use crate::{Pipeline, PipelineError, Result};
use fleet_engine::Plan;
use fleet_engine::remote;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// How often the wait looks at the queue when no event woke it (lease expiries).
const POLL: Duration = Duration::from_secs(1);

/// Whether stage runs of this instance go to runners.
pub(crate) fn enabled(p: &Pipeline) -> bool {
    p.instance.runners
}

/// Queues `plan` for runners and waits for its end; returns the run's id.
pub(crate) async fn start(
    p: &Pipeline,
    project: &str,
    plan: Plan,
    stop: Option<watch::Receiver<bool>>,
) -> Result<String> {
    let url = remote_url(p, project, &plan.repo)?;
    let repo = fleet_git::Repo::open(&plan.repo)?;
    let base = repo.resolve(plan.base.as_deref().unwrap_or("HEAD"))?;
    // A named integration branch (the epic's) is continued from its tip, as in this process.
    let base = match &plan.integration {
        Some(named) => repo.branch_tip(named)?.unwrap_or(base),
        None => base,
    };
    let store = p.store.clone();
    let (root, u) = (plan.repo.clone(), url.clone());
    let redactor = fleet_secrets::Redactor::from_process_env(&p.instance.secret_names());
    let sub = fleet_store::pg::spawn_blocking(move || {
        remote::submit(&*store, &plan, &root, &u, &base, &redactor)
    })
    .await
    .map_err(|e| PipelineError::Other(e.to_string()))??;
    wait(p, &sub.run_id, repo.root(), &url, stop).await?;
    Ok(sub.run_id)
}

/// Whether run `run_id` was queued for runners (it is waited for, not resumed here).
pub(crate) fn is_remote(p: &Pipeline, run_id: &str) -> bool {
    p.store
        .queue()
        .and_then(|q| q.queued(run_id).ok())
        .is_some_and(|rows| !rows.is_empty())
}

/// Cancels the epic's runs on runners that have not ended (from any process: the driver may
/// be elsewhere). Returns how many tasks were cancelled.
pub(crate) fn cancel_runs(p: &Pipeline, epic: &str) -> Result<usize> {
    if p.store.queue().is_none() {
        return Ok(0);
    }
    let mut n = 0;
    // Stage runs are named `<epic>-<stage>-…`; a sub-run of one has no queue entries.
    for run in p.store.runs_named(&format!("{epic}-"))? {
        if run.state == "running" && is_remote(p, &run.id) {
            n += remote::cancel(&*p.store, &run.id, &format!("epic {epic} was cancelled"))?.len();
        }
    }
    Ok(n)
}

/// Waits for a run on runners of the project to end, then brings its branch home.
pub(crate) async fn resume(
    p: &Pipeline,
    project: &str,
    repo: &Path,
    run_id: &str,
    stop: Option<watch::Receiver<bool>>,
) -> Result<()> {
    let url = remote_url(p, project, repo)?;
    wait(p, run_id, repo, &url, stop).await
}

async fn wait(
    p: &Pipeline,
    run_id: &str,
    repo: &Path,
    url: &str,
    stop: Option<watch::Receiver<bool>>,
) -> Result<()> {
    let store = p.store.clone();
    let id = run_id.to_string();
    let ended = fleet_store::pg::spawn_blocking(move || {
        remote::wait(&*store, &id, POLL, || {
            stop.as_ref().is_some_and(|s| *s.borrow())
        })
    })
    .await
    .map_err(|e| PipelineError::Other(e.to_string()))??;
    if ended.is_none() {
        return Err(PipelineError::Interrupted(run_id.to_string()));
    }
    let row = p
        .store
        .run(run_id)?
        .ok_or_else(|| PipelineError::Other(format!("run {run_id} vanished")))?;
    fetch_home(repo, url, run_id, &row.integration_branch)
}

/// Sets the local branch to the remote's: the stage reads its artifact there and the next
/// stage (or the delivery) starts from it.
fn fetch_home(repo: &Path, url: &str, run_id: &str, branch: &str) -> Result<()> {
    // Through a ref of this run's own, not FETCH_HEAD: drivers of other epics fetch into the
    // same repository at the same time, and FETCH_HEAD is one file for all of them. Not into
    // the branch directly either: it may be checked out in a worktree, and git refuses that.
    let own = format!("refs/fleet/fetched/{run_id}");
    git(
        repo,
        &[
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--end-of-options",
            url,
            &format!("+refs/heads/{branch}:{own}"),
        ],
    )?;
    git(repo, &["update-ref", &format!("refs/heads/{branch}"), &own])?;
    git(repo, &["update-ref", "-d", &own])?;
    Ok(())
}

/// The URL runners clone: the project's delivery remote (a name in its repository, or a URL),
/// else its `origin`.
fn remote_url(p: &Pipeline, project: &str, repo: &Path) -> Result<String> {
    let named = p
        .store
        .project(project)?
        .and_then(|row| crate::stages::delivery_spec(&row).ok())
        .and_then(|spec| spec.remote)
        .unwrap_or_else(|| "origin".into());
    if named.contains('/') || named.contains(':') {
        return Ok(named);
    }
    let url = git(repo, &["remote", "get-url", &named])?;
    let url = url.trim();
    if url.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "`runners: true`: the project's repository {} has no remote {named:?} for runners \
             to clone",
            repo.display()
        )));
    }
    Ok(url.to_string())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = fleet_git::command(dir)
        .args(args)
        .output()
        .map_err(|e| PipelineError::Other(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(PipelineError::Other(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
