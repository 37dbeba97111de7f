//! The board's own routes: the outcomes (`GET /api/v1/outcomes`), the recent event history the
//! heartbeat starts from (`GET /api/v1/events/recent`), and an epic's change — the files and
//! hunks of its branch against its base (`GET /api/v1/tasks/{id}/diff`). Read scope.

use crate::Fleet;
use crate::api::{ApiError, Caller};
use crate::auth::Scope;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The most diff text read of one epic; a bigger change is cut, and says so.
const DIFF_MAX_BYTES: usize = 2 * 1024 * 1024;

pub fn routes() -> Router<Fleet> {
    Router::new()
        .route("/api/v1/outcomes", get(outcomes))
        .route("/api/v1/events/recent", get(recent_events))
        .route("/api/v1/tasks/{id}/diff", get(diff))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    fleet_store::pg::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn outcomes(State(fleet): State<Fleet>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let store = fleet.store().clone();
    let o = blocking(move || Ok(crate::report::outcomes(&*store)?)).await?;
    Ok(Json(&*o).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RecentQuery {
    limit: Option<usize>,
}

/// The newest events (oldest first), at most 500: what the heartbeat shows on page load.
async fn recent_events(
    State(fleet): State<Fleet>,
    caller: Caller,
    Query(q): Query<RecentQuery>,
) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let limit = q.limit.unwrap_or(100).min(500);
    let store = fleet.store().clone();
    let events = blocking(move || {
        let newest = store.newest_seq()?;
        Ok(store.events(None, newest.saturating_sub(limit as u64), limit)?)
    })
    .await?;
    Ok(Json(json!({"events": events})).into_response())
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FileDiff {
    pub path: String,
    pub added: u32,
    pub removed: u32,
    pub hunks: Vec<Hunk>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Hunk {
    pub header: String,
    pub lines: Vec<String>,
}

async fn diff(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = blocking(move || {
        let epic = p
            .store
            .epic(&id)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no task {id:?}")))?;
        let project = p.store.project(&epic.project)?.ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("task {id}: no project {:?}", epic.project),
            )
        })?;
        if epic.base_sha.is_empty() || epic.branch.is_empty() {
            return Ok(
                json!({"task": id, "base": epic.base_sha, "branch": epic.branch,
                             "files": [], "cut": false, "note": "no branch yet"}),
            );
        }
        let (text, cut) = git_diff(&project.path, &epic.base_sha, &epic.branch)?;
        let redactor = fleet_secrets::Redactor::from_process_env(&p.instance.secret_names());
        let files = parse_diff(&redactor.clean(&text));
        Ok(
            json!({"task": id, "base": epic.base_sha, "branch": epic.branch,
                  "files": files, "cut": cut}),
        )
    })
    .await?;
    Ok(Json(v).into_response())
}

/// `git diff BASE..BRANCH` in the project's repository, at most [`DIFF_MAX_BYTES`].
fn git_diff(repo: &str, base: &str, branch: &str) -> Result<(String, bool), ApiError> {
    let bad = |m: String| ApiError(StatusCode::CONFLICT, m);
    if branch.starts_with('-') || base.starts_with('-') {
        return Err(bad(format!(
            "{base:?}..{branch:?} is not a pair of revisions"
        )));
    }
    let out = std::process::Command::new("git")
        .env_clear()
        .envs(fleet_secrets::env::git_env())
        .args([
            "-C",
            repo,
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
        ])
        .arg(format!("{base}..{branch}"))
        .arg("--")
        .output()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("git: {e}")))?;
    if !out.status.success() {
        return Err(bad(format!(
            "git diff {base}..{branch}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let cut = out.stdout.len() > DIFF_MAX_BYTES;
    let bytes = &out.stdout[..out.stdout.len().min(DIFF_MAX_BYTES)];
    Ok((String::from_utf8_lossy(bytes).into_owned(), cut))
}

/// Files and hunks of a unified diff.
pub fn parse_diff(text: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let path = rest
                .rsplit_once(" b/")
                .map(|(_, b)| b.to_string())
                .unwrap_or_else(|| rest.to_string());
            files.push(FileDiff {
                path,
                added: 0,
                removed: 0,
                hunks: Vec::new(),
            });
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if line.starts_with("@@") {
            file.hunks.push(Hunk {
                header: line.to_string(),
                lines: Vec::new(),
            });
        } else if let Some(h) = file.hunks.last_mut() {
            if line.starts_with('+') {
                file.added += 1;
            } else if line.starts_with('-') {
                file.removed += 1;
            }
            h.lines.push(line.to_string());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::parse_diff;

    #[test]
    fn a_unified_diff_becomes_files_and_hunks() {
        let text = "diff --git a/a.txt b/a.txt\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1,2 @@\n+a is done\n+second\ndiff --git a/README.md b/README.md\nindex 1..2 100644\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# shop\n+# the shop\n";
        let files = parse_diff(text);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "a.txt");
        assert_eq!((files[0].added, files[0].removed), (2, 0));
        assert_eq!(files[0].hunks[0].header, "@@ -0,0 +1,2 @@");
        assert_eq!(files[0].hunks[0].lines, ["+a is done", "+second"]);
        assert_eq!(files[1].path, "README.md");
        assert_eq!((files[1].added, files[1].removed), (1, 1));
    }
}
