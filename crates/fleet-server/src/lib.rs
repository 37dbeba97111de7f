//! `fleet serve`: one port for people and tools — the REST API, the live event stream (SSE),
//! the dashboard, MCP over streamable HTTP, `/metrics` — plus the background services of a
//! running fleet: driving epics, watching pull requests, notifications, the Telegram bot.
//!
//! Owns: HTTP routing and auth (bearer tokens with scopes, stored hashed), the read models the
//! API and dashboard show (`report`), the MCP tools (`mcp`, also served on stdio by
//! `fleet mcp`), and the supervisor loop (`services`).
//!
//! Must not know: how a stage runs or what an agent is (it calls [`fleet_pipeline::Pipeline`]),
//! SQL (it calls [`fleet_store::Store`]), how a notification is delivered (`fleet-notify`).
//! Every state change goes through the pipeline or the store first, so the server holds no
//! state a crash could lose: the event cursor of a client is the event's `seq`.

pub mod alerts;
mod api;
mod audits;
pub mod auth;
mod board;
mod events;
mod intake;
pub mod mcp;
mod memory_api;
mod memory_tools;
pub mod report;
mod runners_api;
pub mod services;
mod store_watch;

use fleet_pipeline::Pipeline;
use fleet_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

pub use auth::{Scope, create_token};

/// What every handler and service shares.
#[derive(Clone)]
pub struct Fleet {
    pub pipeline: Arc<Pipeline>,
    /// Raised (with the newest `seq`) whenever this process commits events: wakes the SSE
    /// streams and the services. Events written by other processes raise it too, through
    /// `store_watch` (LISTEN/NOTIFY on PostgreSQL; polling as the fallback).
    pub events: watch::Sender<u64>,
    /// Raised when an epic needs driving (submitted, rejected, polled back to work).
    pub work: Arc<tokio::sync::Notify>,
    /// Base URL for links sent to people (notifications, bot replies).
    pub public_url: String,
    pub started_at: i64,
    /// Raised once when the server is stopping: services and event streams end.
    pub stop: watch::Sender<bool>,
}

/// The wake-up channel of a server, and the pipeline observer that raises it: build the
/// pipeline with the observer, then [`Fleet::new`] with the channel.
pub fn event_channel() -> (watch::Sender<u64>, fleet_pipeline::Observer) {
    let (tx, _) = watch::channel(0u64);
    let raise = tx.clone();
    let observer: fleet_pipeline::Observer = Arc::new(move |e: &fleet_store::Event| {
        raise.send_if_modified(|cur| {
            let newer = e.seq > *cur;
            if newer {
                *cur = e.seq;
            }
            newer
        });
    });
    (tx, observer)
}

impl Fleet {
    pub fn new(pipeline: Arc<Pipeline>, events: watch::Sender<u64>, public_url: String) -> Fleet {
        Fleet {
            pipeline,
            events,
            work: Arc::new(tokio::sync::Notify::new()),
            public_url: public_url.trim_end_matches('/').to_string(),
            started_at: fleet_core::clock::now_ms(),
            stop: watch::channel(false).0,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.pipeline.store
    }

    /// The page of a task on the dashboard.
    pub fn task_url(&self, id: &str) -> String {
        format!("{}/#/tasks/{id}", self.public_url)
    }

    /// Tells the streams and services that events up to `seq` are committed.
    pub fn published(&self, seq: u64) {
        self.events.send_if_modified(|cur| {
            if seq > *cur {
                *cur = seq;
                true
            } else {
                false
            }
        });
    }
}

/// The whole HTTP surface.
pub fn router(fleet: Fleet) -> axum::Router {
    api::router(fleet)
}

/// How long open requests get to finish once the server is stopping.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client may take to send a request's head (request line and headers). A client
/// that sends half a head and waits (slowloris) would otherwise hold its connection, and a
/// task, forever; a real client sends its head at once, so a few seconds are plenty even on
/// a slow link.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until [`Fleet::stop`] is raised; then event streams end, open requests get a few
/// seconds, and the services stop. Every connection must send each request head within
/// [`HEADER_READ_TIMEOUT`].
pub async fn serve(fleet: Fleet, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = router(fleet.clone());
    // Each connection holds a receiver: when all are gone, every connection has ended.
    let (open_tx, open_rx) = watch::channel(());
    let stopping = stopped(fleet.stop.subscribe());
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        tokio::spawn(connection(
            app.clone(),
            stream,
            peer,
            fleet.stop.subscribe(),
            open_rx.clone(),
        ));
    }
    drop(listener);
    drop(open_rx);
    let _ = tokio::time::timeout(GRACE, open_tx.closed()).await;
    Ok(())
}

/// One HTTP/1 connection, ended gracefully (the request in flight finishes) on stop.
async fn connection(
    app: axum::Router,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    use tower::ServiceExt;
    // Handlers learn the peer (loopback reads need no token) as axum's ConnectInfo.
    let service = app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A failed accept: a client that gave up is nothing; anything else (out of file
/// descriptors) is waited out briefly rather than spun on, as axum::serve does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Resolves once `stop` is raised (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
