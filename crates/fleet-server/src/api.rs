//! The REST API (`/api/v1/…`), `/healthz`, `/metrics`, `/openapi.json` and the dashboard.
//! Handlers check the caller's scope first, then call the pipeline or a read model; blocking
//! work (SQLite, git) runs on the blocking pool.

use crate::auth::{self, Denied, Scope};
use crate::{Fleet, events, mcp, report};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleet_pipeline::PipelineError;
use fleet_store::{EpicQuery, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;

const DASHBOARD: &str = include_str!("../assets/dashboard.html");
const OPENAPI: &str = include_str!("../assets/openapi.json");

/// An error answer: a status and a message, as `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            PipelineError::NoSuchEpic(id) => {
                ApiError(StatusCode::NOT_FOUND, format!("no task {id:?}"))
            }
            PipelineError::NotNow(m) => ApiError(StatusCode::CONFLICT, m),
            e @ PipelineError::Conflict(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
            // A name the forge says is taken is the caller's to change; anything else the
            // forge refused is the instance's forge (its token) failing, not the caller.
            PipelineError::Forge(m, fleet_pipeline::ForgeError::Validation { .. }) => {
                ApiError(StatusCode::CONFLICT, m)
            }
            PipelineError::Forge(m, _) => ApiError(StatusCode::BAD_GATEWAY, m),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => ApiError(StatusCode::UNAUTHORIZED, m.into()),
            Denied::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, m),
        }
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The caller: whether it is on this machine, and the token it presented (the header; for
/// the event stream also `access_token`, since a browser's EventSource cannot set headers).
#[derive(Clone)]
pub struct Caller {
    local: bool,
    token: Option<String>,
}

impl Caller {
    pub fn of(
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Caller {
        let from_header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_string());
        let from_query = (path == "/api/v1/events")
            .then(|| {
                query.and_then(|q| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == "access_token")
                        .map(|(_, v)| v.to_string())
                })
            })
            .flatten();
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|h| headers.contains_key(*h));
        Caller {
            local: auth::is_local(peer, host, forwarded),
            token: from_header.or(from_query),
        }
    }

    /// Checks the caller may do what needs `need` (the token lookup runs off the async
    /// threads: the store may be busy).
    pub async fn require(&self, fleet: &Fleet, need: Scope) -> Result<(), ApiError> {
        let store = fleet.store().clone();
        let (token, local) = (self.token.clone(), self.local);
        blocking(move || {
            auth::check(&*store, token.as_deref(), local, need)?;
            Ok(())
        })
        .await
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Caller::of(
            &parts.headers,
            parts.uri.path(),
            parts.uri.query(),
            peer,
        ))
    }
}

/// Runs blocking work (SQLite, git) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    fleet_store::pg::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

pub fn router(fleet: Fleet) -> Router {
    let mcp = mcp::http_service(fleet.clone());
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(prometheus))
        .route("/api/v1/tasks", get(list_tasks).post(submit_task))
        .route("/api/v1/tasks/{id}", get(task_detail))
        .route("/api/v1/tasks/{id}/accept", post(accept_task))
        .route("/api/v1/tasks/{id}/reject", post(reject_task))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/api/v1/tasks/{id}/answer", post(answer_task))
        .route("/api/v1/tasks/{id}/retry", post(retry_task))
        .route("/api/v1/projects", get(list_projects).post(add_project))
        .route("/api/v1/projects/new", post(new_project))
        .route("/api/v1/projects/{name}", get(project_detail))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/budgets", get(budgets))
        .route("/api/v1/metrics", get(metrics))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/intake/github", post(crate::intake::github))
        .route("/api/v1/intake/alert", post(crate::intake::alert))
        .merge(crate::board::routes())
        .merge(crate::audits::routes())
        .merge(crate::memory_api::routes())
        .merge(crate::runners_api::routes())
        .merge(
            Router::new()
                .nest_service("/mcp", mcp)
                // route_layer: only /mcp itself is guarded. A layer would also wrap the
                // fallback, and every unknown route would answer 401 instead of 404.
                .route_layer(axum::middleware::from_fn_with_state(
                    fleet.clone(),
                    guard_mcp,
                )),
        )
        .fallback(not_found)
        .with_state(fleet)
}

/// A route that does not exist is 404 for everyone: no credentials are asked for it.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such route: {method} {}", uri.path()),
    )
}

/// `/mcp` is a tower service of rmcp's, so its scope is checked here: MCP tools change state
/// (tasks, progress reports), so they need a `submit` token.
async fn guard_mcp(
    State(fleet): State<Fleet>,
    caller: Caller,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Err(e) = caller.require(&fleet, Scope::Submit).await {
        return e.into_response();
    }
    next.run(req).await
}

/// The page holds a token and acts in one click: it may not be framed by another site.
async fn dashboard() -> Response {
    (
        [
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        Html(DASHBOARD),
    )
        .into_response()
}

async fn healthz(State(fleet): State<Fleet>) -> ApiResult {
    let store = fleet.store().clone();
    // The store answering is what "healthy" means: everything else is driven from it.
    let ok = blocking(move || Ok(store.meta("healthz").is_ok())).await?;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({"ok": ok, "version": env!("CARGO_PKG_VERSION"),
                     "up_secs": (fleet_core::clock::now_ms() - fleet.started_at) / 1000})),
    )
        .into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn prometheus(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let text = blocking(move || Ok(report::prometheus(&p)?)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    /// Comma-separated states.
    state: Option<String>,
    project: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    #[allow(dead_code)]
    access_token: Option<String>,
}

async fn list_tasks(
    State(fleet): State<Fleet>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let limit = q.limit.unwrap_or(50);
    if limit > 1000 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} is too large (at most 1000)"),
        ));
    }
    let query = EpicQuery {
        states: q
            .state
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        project: q.project.filter(|p| !p.is_empty()),
        text: q.q.filter(|t| !t.is_empty()),
        limit,
        offset: q.offset.unwrap_or(0),
    };
    let store = fleet.store().clone();
    let page = blocking(move || Ok(store.epic_page(&query)?)).await?;
    Ok(
        Json(json!({"total": page.total, "counts": page.counts, "tasks": page.epics}))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    project: String,
    request: String,
    /// `standard` (the default) or `migrate` (the read-only legacy contour).
    #[serde(default)]
    mode: Option<String>,
}

/// Reads a JSON body, answering 400 with serde's message (which names the field) when it is
/// not what the route expects.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

pub(crate) fn brief(e: &fleet_store::EpicRow) -> Value {
    json!({"id": e.id, "project": e.project, "request": e.request, "state": e.state,
           "cycle": e.cycle, "created_at": e.created_at, "updated_at": e.updated_at,
           "branch": e.branch})
}

async fn submit_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    bytes: axum::body::Bytes,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let t: NewTask = body(&bytes)?;
    let mode = match t.mode.as_deref() {
        None => fleet_core::epic::Mode::Standard,
        Some(m) => fleet_core::epic::Mode::parse(m).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("mode {m:?}: expected standard or migrate"),
            )
        })?,
    };
    let p = fleet.pipeline.clone();
    let epic = blocking(move || Ok(p.submit_as(&t.project, &t.request, mode)?)).await?;
    fleet.work.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(json!({"task": brief(&epic), "url": fleet.task_url(&epic.id)})),
    )
        .into_response())
}

async fn task_detail(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let id2 = id.clone();
    match blocking(move || Ok(report::epic_detail(&p, &id2)?)).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no task {id:?}"))),
    }
}

async fn accept_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let p = fleet.pipeline.clone();
    let epic = blocking(move || p.accept(&id).map_err(ApiError::from)).await?;
    // Approved migration documents: the driver plans the implementation now.
    fleet.work.notify_one();
    Ok(Json(json!({"task": brief(&epic)})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejection {
    comment: String,
}

async fn reject_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let r: Rejection = body(&bytes)?;
    let p = fleet.pipeline.clone();
    let epic = blocking(move || p.reject(&id, &r.comment).map_err(ApiError::from)).await?;
    fleet.work.notify_one();
    Ok(Json(json!({"task": brief(&epic)})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    answer: String,
}

/// A person answers a blocked task's question; the driver continues it.
async fn answer_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let r: Reply = body(&bytes)?;
    let p = fleet.pipeline.clone();
    let epic = blocking(move || p.answer(&id, &r.answer).map_err(ApiError::from)).await?;
    fleet.work.notify_one();
    Ok(Json(json!({"task": brief(&epic)})).into_response())
}

/// A person fixed what a blocked task asked about; checked again, the driver continues it.
async fn retry_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let p = fleet.pipeline.clone();
    let epic = blocking(move || p.retry(&id).map_err(ApiError::from)).await?;
    fleet.work.notify_one();
    Ok(Json(json!({"task": brief(&epic)})).into_response())
}

async fn cancel_task(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(&fleet, Scope::Submit).await?;
    let p = fleet.pipeline.clone();
    let epic = blocking(move || p.cancel(&id).map_err(ApiError::from)).await?;
    Ok(Json(json!({"task": brief(&epic)})).into_response())
}

fn project_json(p: &fleet_store::ProjectRow) -> Value {
    json!({"name": p.name, "repo": p.repo, "path": p.path, "default_branch": p.default_branch,
           "checks": p.checks, "delivery": p.delivery, "bible": p.bible, "created_at": p.created_at})
}

async fn list_projects(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let store = fleet.store().clone();
    let projects = blocking(move || Ok(store.projects()?)).await?;
    let list: Vec<Value> = projects.iter().map(project_json).collect();
    Ok(Json(json!({"projects": list})).into_response())
}

/// Registering a project (it names a directory or URL Fleet will work in) needs `admin`.
async fn add_project(
    State(fleet): State<Fleet>,
    caller: Caller,
    bytes: axum::body::Bytes,
) -> ApiResult {
    caller.require(&fleet, Scope::Admin).await?;
    let new: fleet_pipeline::NewProject = body(&bytes)?;
    let p = fleet.pipeline.clone();
    let row = blocking(move || Ok(p.add_project(new)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"project": project_json(&row)})),
    )
        .into_response())
}

/// `{name, bible}`: a project from nothing (`fleet project new`), in `.fleet/repos/<name>`
/// and on the instance's forge when one is configured. Needs `admin`, as registering does.
async fn new_project(
    State(fleet): State<Fleet>,
    caller: Caller,
    bytes: axum::body::Bytes,
) -> ApiResult {
    caller.require(&fleet, Scope::Admin).await?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct New {
        name: String,
        bible: String,
    }
    let new: New = body(&bytes)?;
    let p = fleet.pipeline.clone();
    let row = blocking(move || Ok(p.new_project(&new.name, &new.bible, None)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"project": project_json(&row)})),
    )
        .into_response())
}

async fn project_detail(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let store = fleet.store().clone();
    let n = name.clone();
    match blocking(move || Ok(store.project(&n)?)).await? {
        Some(p) => Ok(Json(json!({"project": project_json(&p)})).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no project {name:?}"),
        )),
    }
}

async fn list_runs(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let store = fleet.store().clone();
    let runs = blocking(move || Ok(store.runs()?)).await?;
    let list: Vec<Value> = runs
        .iter()
        .take(500)
        .map(|r| {
            json!({"id": r.id, "name": r.name, "state": r.state, "repo": r.repo,
                   "branch": r.integration_branch, "created_at": r.created_at,
                   "finished_at": r.finished_at})
        })
        .collect();
    Ok(Json(json!({"runs": list})).into_response())
}

async fn agents(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = blocking(move || {
        let day = p
            .store
            .attempts_since(fleet_core::clock::now_ms() - 24 * 3_600_000)?;
        // Profiles say which CLI and model play which roles; never their env (secrets).
        let profiles: Vec<Value> = p
            .instance
            .agents
            .iter()
            .map(|a| {
                json!({"name": a.name, "cli": a.cli, "model": a.model, "roles": a.roles,
                       "tier": a.tier, "priority": a.priority, "account": a.account})
            })
            .collect();
        Ok(json!({"profiles": profiles, "running": report::agents_running(&day)}))
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn accounts(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = blocking(move || Ok(report::budget(&p.instance, &*p.store)?)).await?;
    Ok(Json(json!({"accounts": v["accounts"]})).into_response())
}

async fn budgets(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = blocking(move || Ok(report::budget(&p.instance, &*p.store)?)).await?;
    Ok(Json(v).into_response())
}

async fn metrics(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = blocking(move || Ok(report::metrics(&p)?)).await?;
    Ok(Json(v).into_response())
}
