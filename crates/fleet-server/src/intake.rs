//! Requests from trackers: `POST /api/v1/intake/github` takes GitHub's `issues` webhook (an
//! issue labelled for the fleet becomes a request), `POST /api/v1/intake/alert` an
//! error-tracker alert in a generic JSON shape.
//!
//! **Authenticated by signature, not by token**: a tracker cannot send Fleet's bearer token, so
//! the sender signs the raw body with the shared key of `intake.secret_env` (HMAC-SHA256, hex,
//! GitHub's `X-Hub-Signature-256: sha256=…`; alerts use `X-Fleet-Signature-256` in the same
//! form). A missing or wrong signature is 401, checked in constant time before the body is read
//! as JSON.
//!
//! **Never twice**: each source has a stable key (`github:OWNER/REPO#N`, `alert:PROJECT:FINGERPRINT`)
//! recorded in the store's meta with the request it became, so a redelivered or replayed
//! payload answers `200 {"duplicate": true}` with the first request instead of making another.
//! A source that reads like a request still open in the project joins that request the same
//! way (`fleet_core::audit`'s similarity). Check-then-submit holds the project's intake lease in
//! the store (`intake/<project>`), so two deliveries of one payload racing each other — on one
//! replica or on two sharing a PostgreSQL — still make one request.

use crate::Fleet;
use crate::api::{ApiError, ApiResult, blocking, brief};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use fleet_core::audit::{KnownRequest, SIMILAR, Standing, similarity};
use fleet_store::EpicRow;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How long a replica that died mid-intake keeps others of another machine waiting; a dead
/// holder of this machine is taken over at once (`fleet_store::Lease`).
const INTAKE_LEASE_TTL: Duration = Duration::from_secs(30);
const INTAKE_LEASE_POLL: Duration = Duration::from_millis(20);

/// What became of a delivery.
enum Taken {
    New(EpicRow),
    Duplicate { epic: EpicRow, why: String },
}

/// The shared key, or why intake is unavailable.
fn secret(fleet: &Fleet) -> Result<Vec<u8>, ApiError> {
    let Some(spec) = fleet.pipeline.instance.intake.as_ref() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "intake is not configured: add `intake: { secret_env: NAME }` to fleet.yaml".into(),
        ));
    };
    match std::env::var(&spec.secret_env) {
        Ok(key) if !key.is_empty() => Ok(key.into_bytes()),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "intake's signing key is missing: set {} in the environment of fleet serve",
                spec.secret_env
            ),
        )),
    }
}

/// Checks `header`'s `sha256=<hex>` against the body's HMAC under `key`.
fn verify(headers: &HeaderMap, header: &str, key: &[u8], body: &[u8]) -> Result<(), ApiError> {
    let unauthenticated = |why: &str| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            format!("{why}: sign the body with HMAC-SHA256 and send `{header}: sha256=<hex>`"),
        )
    };
    let given = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthenticated("no signature"))?;
    let hex = given
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthenticated("malformed signature"))?;
    let tag = decode_hex(hex).ok_or_else(|| unauthenticated("malformed signature"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&key, body, &tag).map_err(|_| unauthenticated("wrong signature"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Makes `request` a new epic of `project` unless `key` was taken before or an open request of
/// the project reads the same.
fn take(fleet: &Fleet, key: &str, project: &str, request: &str) -> Result<Taken, ApiError> {
    let p = &fleet.pipeline;
    // One check-then-submit per project at a time across every process sharing the store.
    let _one_at_a_time = fleet_store::Lease::take(
        p.store.clone(),
        &format!("intake/{project}"),
        INTAKE_LEASE_TTL,
        INTAKE_LEASE_POLL,
    )?;
    let meta_key = format!("intake.{key}");
    if let Some(id) = p.store.meta(&meta_key)?
        && let Some(epic) = p.store.epic(&id)?
    {
        return Ok(Taken::Duplicate {
            epic,
            why: format!("{key} was taken before as {id}"),
        });
    }
    let open = p
        .store
        .epics()?
        .into_iter()
        .filter(|e| e.project == project)
        .filter(|e| !matches!(e.state.as_str(), "done" | "failed" | "cancelled"))
        .map(|e| KnownRequest {
            id: e.id.clone(),
            text: e.request.clone(),
            standing: Standing::Open,
        })
        .max_by(|a, b| similarity(&a.text, request).total_cmp(&similarity(&b.text, request)));
    if let Some(like) = open.filter(|k| similarity(&k.text, request) >= SIMILAR)
        && let Some(epic) = p.store.epic(&like.id)?
    {
        p.store.set_meta(&meta_key, &epic.id)?;
        return Ok(Taken::Duplicate {
            why: format!("{key} reads like the open request {}", epic.id),
            epic,
        });
    }
    let epic = p.submit(project, request)?;
    p.store.set_meta(&meta_key, &epic.id)?;
    Ok(Taken::New(epic))
}

fn answer(fleet: &Fleet, taken: Taken) -> ApiResult {
    Ok(match taken {
        Taken::New(epic) => {
            fleet.work.notify_one();
            (
                StatusCode::CREATED,
                Json(
                    json!({"task": brief(&epic), "url": fleet.task_url(&epic.id),
                            "duplicate": false}),
                ),
            )
                .into_response()
        }
        Taken::Duplicate { epic, why } => Json(json!({"task": brief(&epic),
            "url": fleet.task_url(&epic.id), "duplicate": true, "why": why}))
        .into_response(),
    })
}

fn ignored(why: String) -> ApiResult {
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"ignored": true, "why": why})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct IssueEvent {
    action: String,
    issue: Issue,
    repository: Repository,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

/// The project delivering to `repo` on a forge (its `--forge-repo`).
fn project_of_repo(fleet: &Fleet, repo: &str) -> Result<Option<String>, ApiError> {
    Ok(fleet
        .pipeline
        .store
        .projects()?
        .into_iter()
        .find(|p| {
            p.delivery
                .get("repo")
                .and_then(Value::as_str)
                .is_some_and(|r| r.eq_ignore_ascii_case(repo))
        })
        .map(|p| p.name))
}

/// `POST /api/v1/intake/github`: GitHub's `issues` webhook.
pub(crate) async fn github(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let key = secret(&fleet)?;
    verify(&headers, "x-hub-signature-256", &key, &bytes)?;
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match event {
        "ping" => return Ok(Json(json!({"pong": true})).into_response()),
        "issues" => {}
        other => return ignored(format!("event {other:?} is not taken (only `issues`)")),
    }
    let payload: IssueEvent = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("not a GitHub issues event: {e}"),
        )
    })?;
    if !matches!(payload.action.as_str(), "opened" | "labeled" | "reopened") {
        return ignored(format!("action {:?} is not taken", payload.action));
    }
    let label = &fleet
        .pipeline
        .instance
        .intake
        .as_ref()
        .expect("checked")
        .label;
    if !payload
        .issue
        .labels
        .iter()
        .any(|l| l.name.eq_ignore_ascii_case(label))
    {
        return ignored(format!("the issue is not labelled {label:?}"));
    }
    let repo = payload.repository.full_name.clone();
    let f = fleet.clone();
    blocking(move || {
        let Some(project) = project_of_repo(&f, &repo)? else {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("no project delivers to {repo} (fleet project add … --forge-repo {repo})"),
            ));
        };
        let issue = &payload.issue;
        let mut request = format!("{}\n\n", issue.title.trim());
        if let Some(body) = issue.body.as_deref().filter(|b| !b.trim().is_empty()) {
            request.push_str(body.trim());
            request.push_str("\n\n");
        }
        request.push_str(&format!(
            "Source: GitHub issue {repo}#{}{}",
            issue.number,
            issue
                .html_url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ));
        let source = format!("github:{}#{}", repo.to_ascii_lowercase(), issue.number);
        let taken = take(&f, &source, &project, &request)?;
        answer(&f, taken)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alert {
    project: String,
    title: String,
    #[serde(default)]
    message: Option<String>,
    /// The tracker's grouping key; the title when absent.
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    severity: Option<String>,
}

/// `POST /api/v1/intake/alert`: an error-tracker alert.
pub(crate) async fn alert(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> ApiResult {
    let key = secret(&fleet)?;
    verify(&headers, "x-fleet-signature-256", &key, &bytes)?;
    let alert: Alert = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "not an alert (expected {{\"project\", \"title\", optional \"message\", \
                 \"fingerprint\", \"url\", \"severity\"}}): {e}"
            ),
        )
    })?;
    let f = fleet.clone();
    let store = Arc::clone(&fleet.pipeline.store);
    blocking(move || {
        if store.projects()?.iter().all(|p| p.name != alert.project) {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("no project {:?}", alert.project),
            ));
        }
        let mut request = format!("Fix: {}\n\n", alert.title.trim());
        if let Some(message) = alert.message.as_deref().filter(|m| !m.trim().is_empty()) {
            request.push_str(message.trim());
            request.push_str("\n\n");
        }
        request.push_str("Source: error-tracker alert");
        if let Some(severity) = &alert.severity {
            request.push_str(&format!(" ({severity})"));
        }
        if let Some(url) = &alert.url {
            request.push_str(&format!(" {url}"));
        }
        let fingerprint = alert.fingerprint.as_deref().unwrap_or(alert.title.trim());
        let source = format!("alert:{}:{fingerprint}", alert.project);
        let taken = take(&f, &source, &alert.project, &request)?;
        answer(&f, taken)
    })
    .await
}
