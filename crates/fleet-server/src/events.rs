//! `GET /api/v1/events`: the instance's events as Server-Sent Events, the same records as the
//! store and `events.jsonl`. Each SSE `id` is the event's `seq`; a client reconnecting with
//! `Last-Event-ID: N` (or `?after=N`) gets exactly the events after N — read from the store,
//! so nothing is skipped or repeated across reconnects, whichever process wrote them.

use crate::api::{ApiError, Caller};
use crate::{Fleet, auth::Scope};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// Events written by other processes (a `fleet run`, an agent's `fleet mcp`) are found by
/// polling this often; this process's own wake the stream at once.
const POLL: Duration = Duration::from_millis(500);
const BATCH: usize = 500;
/// How often a stream's token is checked again.
const RECHECK: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EventsQuery {
    after: Option<u64>,
    /// Only one run's (or epic's) events.
    run: Option<String>,
    #[allow(dead_code)]
    access_token: Option<String>,
}

pub async fn stream(
    State(fleet): State<Fleet>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(&fleet, Scope::Read).await?;
    let last_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("Last-Event-ID {v:?} is not an event sequence number"),
            )
        })?),
        Some(Err(_)) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID is not text".into(),
            ));
        }
    };
    // A reconnect's Last-Event-ID wins over the URL's `after`, which the browser keeps.
    // A new client starts live: from the newest event now. So does one that claims to have
    // seen an event past the newest (another instance's id, or 2^63 and up, which the store
    // would read as negative and replay everything from): nothing to replay, live from now,
    // and no later event skipped. Text that is not a number is refused above (400).
    let newest = {
        let store = fleet.store().clone();
        fleet_store::pg::spawn_blocking(move || newest(&*store))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    let start = last_id.or(q.after).map_or(newest, |seen| seen.min(newest));
    struct Cursor {
        fleet: Fleet,
        after: u64,
        run: Option<String>,
        pending: std::collections::VecDeque<fleet_store::Event>,
        wake: tokio::sync::watch::Receiver<u64>,
        stop: tokio::sync::watch::Receiver<bool>,
        /// Checked again now and then: a revoked token ends its streams.
        caller: Caller,
        checked: std::time::Instant,
    }
    let cursor = Cursor {
        wake: fleet.events.subscribe(),
        stop: fleet.stop.subscribe(),
        caller: caller.clone(),
        checked: std::time::Instant::now(),
        fleet,
        after: start,
        run: q.run,
        pending: Default::default(),
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                let ev = SseEvent::default()
                    .id(e.seq.to_string())
                    .data(serde_json::to_string(&e).unwrap_or_default());
                return Some((Ok::<_, Infallible>(ev), c));
            }
            if c.checked.elapsed() >= RECHECK {
                if c.caller.require(&c.fleet, Scope::Read).await.is_err() {
                    return None;
                }
                c.checked = std::time::Instant::now();
            }
            // Marked seen before reading, so an event committed meanwhile wakes the wait below.
            c.wake.borrow_and_update();
            let store = c.fleet.store().clone();
            let (after, run) = (c.after, c.run.clone());
            let batch =
                fleet_store::pg::spawn_blocking(move || store.events(run.as_deref(), after, BATCH))
                    .await;
            match batch {
                Ok(Ok(batch)) if !batch.is_empty() => {
                    c.after = batch.last().map(|e| e.seq).unwrap_or(c.after);
                    c.pending.extend(batch);
                    continue;
                }
                // A failed read is retried on the next wake; the cursor has not moved.
                _ => {}
            }
            if *c.stop.borrow() {
                return None; // the server is stopping: end the stream so it can
            }
            tokio::select! {
                _ = tokio::time::timeout(POLL, c.wake.changed()) => {}
                _ = c.stop.changed() => {}
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn newest(store: &dyn fleet_store::Store) -> Result<u64, ApiError> {
    Ok(store.newest_seq()?)
}
