//! Landing a runner's task on its run's integration branch, on the remote: one runner at a
//! time per run (the store lease `merge/<run>`), the branch moved only compare-and-swap
//! (`push --force-with-lease=<ref>:<tip read>`; a push that lost a race fetches, merges again
//! and retries), every merge commit marked with a `Fleet-Task: <run>/<task>` trailer so that a
//! task already on the branch (its first runner merged, then died before saying so) is not
//! merged again.

use crate::EngineError;
use crate::remote::TaskOrder;
use crate::runner::queue_of;
use fleet_store::{Claim, Lease, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Runs git in `dir`; its stdout, or an error with its stderr.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String, EngineError> {
    let out = fleet_git::command(dir).args(args).output()?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Tries to push the integration branch this many times before giving up on a task.
const LAND_TRIES: u32 = 20;

/// Lands `commit` on the integration branch of the remote, under the run's merge lease:
/// `Ok(Some(merge))` once it is there (now or by an earlier claim), `Ok(None)` if the claim
/// was lost meanwhile (nothing pushed), `Err(reason)` if it cannot land (a conflict).
pub(crate) fn land(
    store: Arc<dyn Store>,
    claim: &Claim,
    order: &TaskOrder,
    dir: &Path,
    commit: &str,
    ttl: Duration,
) -> Result<Option<String>, String> {
    let lease = Lease::take(
        store.clone(),
        &format!("merge/{}", claim.run_id),
        ttl,
        Duration::from_millis(20),
    )
    .map_err(|e| e.to_string())?;
    let trailer = format!("Fleet-Task: {}/{}", claim.run_id, claim.task_id);
    let int = &order.integration;
    let remote_ref = format!("refs/remotes/origin/{int}");
    let repo = fleet_git::Repo::open(dir).map_err(|e| e.to_string())?;
    for _ in 0..LAND_TRIES {
        if lease.is_lost() || !queue_of(&*store).heartbeat(claim, ttl).unwrap_or(true) {
            return Ok(None);
        }
        git(
            dir,
            &[
                "fetch",
                "--quiet",
                "origin",
                &format!("+refs/heads/{int}:{remote_ref}"),
            ],
        )
        .map_err(|e| e.to_string())?;
        let tip = repo.resolve(&remote_ref).map_err(|e| e.to_string())?;
        if let Some(earlier) = merged_before(dir, &tip, &trailer)? {
            return Ok(Some(earlier));
        }
        repo.set_branch("fleet-landing", &tip)
            .map_err(|e| e.to_string())?;
        let message = format!("fleet: merge {}\n\n{trailer}\n", claim.task_id);
        let merge = match repo
            .merge_into("fleet-landing", commit, &message)
            .map_err(|e| e.to_string())?
        {
            fleet_git::MergeOutcome::Merged { commit } => commit,
            fleet_git::MergeOutcome::AlreadyMerged => return Ok(Some(tip)),
            fleet_git::MergeOutcome::Conflict { files } => {
                return Err(format!("merge conflict in {}", files.join(", ")));
            }
        };
        let cas = format!("--force-with-lease=refs/heads/{int}:{tip}");
        if git(
            dir,
            &[
                "push",
                "--quiet",
                &cas,
                "origin",
                &format!("{merge}:refs/heads/{int}"),
            ],
        )
        .is_ok()
        {
            return Ok(Some(merge));
        }
        // Lost the race (someone moved the branch since the fetch): fetch, merge again.
    }
    Err(format!(
        "could not update {int} on the remote in {LAND_TRIES} tries"
    ))
}

/// The merge commit of an earlier claim of this task on the branch at `tip`, if any.
fn merged_before(dir: &Path, tip: &str, trailer: &str) -> Result<Option<String>, String> {
    let pattern = format!("^{}$", trailer.replace('.', "\\."));
    let out = git(dir, &["log", "--format=%H", "--grep", &pattern, tip, "--"])
        .map_err(|e| e.to_string())?;
    Ok(out.lines().next().map(str::to_string))
}

/// Pushes the task's work as its branch on the remote. Forced: a redo replaces what a dead
/// runner may have pushed.
pub(crate) fn push_task_branch(dir: &Path, sha: &str, branch: &str) -> Result<(), EngineError> {
    git(
        dir,
        &[
            "push",
            "--quiet",
            "--force",
            "origin",
            &format!("{sha}:refs/heads/{branch}"),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner_workspace::prepare;
    use fleet_store::RunnerAd;
    use fleet_store::contract::pg::TestDb;
    use fleet_store::{PostgresStore, QueueItem};

    fn sh(dir: &Path, script: &str) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    }

    /// A runner that pushed the merge and died before recording it: the redo, with its own
    /// commit from its own clean clone, finds the task on the branch and does not merge again.
    #[test]
    fn a_redo_of_a_task_already_landed_does_not_land_twice() {
        let db = TestDb::create();
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(db.url()).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        sh(
            root,
            "git init -q --bare -b main remote.git && git clone -q remote.git seed && cd seed \
             && echo x > README && git add -A && git commit -qm seed \
             && git push -q origin main main:fleet/runs/i/r1",
        );
        let order = TaskOrder {
            run: "true".into(),
            workspace: "git".into(),
            checks: vec![],
            timeout_ms: None,
            env: Default::default(),
            pass_env: vec![],
            remote: root.join("remote.git").display().to_string(),
            integration: "fleet/runs/i/r1".into(),
            task_branch: "fleet/tasks/i/r1/a".into(),
            agent: None,
            retries: 0,
            retry_backoff_ms: 0,
            protected_paths: vec![],
        };
        let q = store.queue().unwrap();
        q.enqueue(
            &[QueueItem {
                run_id: "r1".into(),
                task_id: "a".into(),
                deps: vec![],
                needs: vec![],
                spec: serde_json::to_value(&order).unwrap(),
            }],
            &[],
        )
        .unwrap();
        let ad = RunnerAd {
            name: "r".into(),
            offers: vec![],
            concurrency: 1,
        };
        let ttl = Duration::from_secs(30);
        let claim = q.claim(&ad, ttl, 3, &[]).unwrap().unwrap();
        let mut merges = Vec::new();
        for (n, content) in [(1, "first"), (2, "second")] {
            let dir = root.join(format!("ws{n}"));
            prepare(&dir, &root.join("logs"), &order, true).unwrap();
            sh(&dir, &format!("echo {content} > a.txt"));
            let repo = fleet_git::Repo::open(&dir).unwrap();
            let commit = repo.commit_all(&dir, "task a").unwrap().unwrap();
            merges.push(land(store.clone(), &claim, &order, &dir, &commit, ttl).unwrap());
        }
        assert!(merges[0].is_some());
        assert_eq!(merges[0], merges[1], "the redo reports the first landing");
        let log = git(
            &root.join("remote.git"),
            &["log", "--format=%B", "fleet/runs/i/r1"],
        )
        .unwrap();
        assert_eq!(log.matches("Fleet-Task: r1/a").count(), 1, "{log}");
        let tree = git(&root.join("remote.git"), &["show", "fleet/runs/i/r1:a.txt"]).unwrap();
        assert_eq!(tree, "first\n");
    }
}
