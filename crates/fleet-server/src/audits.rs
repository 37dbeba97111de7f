//! `GET /api/v1/audits` (read scope): the configured audits and the audit history, newest
//! first — what each run found and what became of each finding (a new request, or dropped as
//! like an open or a recently rejected one) — for the dashboard's audits section and scripts.

use crate::Fleet;
use crate::api::{ApiError, Caller};
use crate::auth::Scope;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The most audit runs one answer lists.
const HISTORY_MAX: usize = 200;

pub fn routes() -> Router<Fleet> {
    Router::new().route("/api/v1/audits", get(list))
}

async fn list(State(fleet): State<Fleet>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let p = fleet.pipeline.clone();
    let v = fleet_store::pg::spawn_blocking(move || -> Result<Value, ApiError> {
        let mut history = fleet_pipeline::audit::history(&p)?;
        history.reverse();
        history.truncate(HISTORY_MAX);
        let configured: Vec<Value> = p
            .instance
            .audits
            .iter()
            .map(|a| {
                json!({"name": a.name, "kind": a.kind, "schedule": a.schedule.to_string(),
                       "project": a.project, "role": a.role})
            })
            .collect();
        let mut v = json!({"configured": configured, "history": history});
        // Findings quote what an agent wrote: the one redactor runs over them.
        fleet_secrets::Redactor::from_process_env(&p.instance.secret_names()).clean_json(&mut v);
        Ok(v)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(v).into_response())
}
