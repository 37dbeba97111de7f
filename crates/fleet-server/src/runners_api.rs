//! `/api/v1/runners`: the live `fleet runner` workers of the shared store and what each
//! offers, so a person (or the dashboard) can see why a queued task waits.

use crate::Fleet;
use crate::api::{ApiResult, Caller, blocking};
use crate::auth::Scope;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn routes() -> Router<Fleet> {
    Router::new().route("/api/v1/runners", get(list))
}

/// `{"queue": false, "runners": []}` on a store without a task queue (SQLite): nothing is
/// run on runners there, which is not an error to read.
async fn list(State(fleet): State<Fleet>, caller: Caller) -> ApiResult {
    caller.require(&fleet, Scope::Read).await?;
    let store = fleet.store().clone();
    let body = blocking(move || {
        Ok(match store.queue() {
            None => json!({"queue": false, "runners": []}),
            Some(q) => json!({"queue": true, "runners": q.runners()?}),
        })
    })
    .await?;
    Ok(Json(body).into_response())
}
