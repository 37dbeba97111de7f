//! `/api/v1/memory/proposals`: lessons proposed as skills, and a person's word on them.
//! Reading needs `read`; approving (which writes `skills/<name>.md` in the instance home) and
//! dismissing need `admin`, as every change to the instance's own files does.

use crate::Fleet;
use crate::api::{ApiError, Caller};
use crate::auth::Scope;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleet_memory::{MemoryDb, MemoryError};
use fleet_pipeline::Pipeline;
use serde_json::{Value, json};

pub fn routes() -> Router<Fleet> {
    Router::new()
        .route("/api/v1/memory/proposals", get(list))
        .route("/api/v1/memory/proposals/{id}/approve", post(approve))
        .route("/api/v1/memory/proposals/{id}/dismiss", post(dismiss))
}

/// Runs `f` on the server's one memory handle (kept between requests, shared with the MCP
/// tools): memory follows the store, so on PostgreSQL every replica reads the same lessons.
fn with_db<T>(
    p: &Pipeline,
    f: impl FnOnce(&mut MemoryDb) -> Result<T, MemoryError>,
) -> Result<T, ApiError> {
    crate::memory_tools::with_memory(p, error, |db| f(db).map_err(error))
}

fn error(e: MemoryError) -> ApiError {
    match e {
        MemoryError::NoLesson(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        // Not pending, a bad name, or a skill of that name already there.
        MemoryError::Invalid(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
        other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn on_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    fleet_store::pg::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn list(State(fleet): State<Fleet>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let proposals = on_pool(move || with_db(&p, |db| db.proposals())).await?;
    Ok(Json(json!({"proposals": proposals})).into_response())
}

/// Optional body `{"name": "…"}`: the skill's name (default `lesson-<id>`).
async fn approve(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Admin).await?;
    let name = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
        match v.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "body: `name` is a string".into(),
                ));
            }
        }
    };
    let p = fleet.pipeline.clone();
    let path = on_pool(move || {
        let home = p.layout.root().parent().unwrap_or(p.layout.root());
        with_db(&p, |db| {
            db.approve(home, &id, name.as_deref(), fleet_core::clock::now_ms())
        })
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        // Relative to the instance home: the API does not hand out the server's paths.
        Json(json!({"skill": format!(
            "skills/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        )})),
    )
        .into_response())
}

async fn dismiss(
    State(fleet): State<Fleet>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Admin).await?;
    let p = fleet.pipeline.clone();
    let l = on_pool(move || with_db(&p, |db| db.dismiss(&id, fleet_core::clock::now_ms()))).await?;
    Ok(Json(json!({"dismissed": l.id})).into_response())
}
