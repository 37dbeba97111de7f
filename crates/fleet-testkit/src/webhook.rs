//! A webhook receiver (a generic JSON webhook or a Slack incoming webhook) over real HTTP on
//! `127.0.0.1`: it records every request and answers `200 ok`, or an error status when told.
//!
//! ```no_run
//! use fleet_testkit::webhook::WebhookDouble;
//! let hook = WebhookDouble::start();
//! hook.fail_next(2, 503); // the next two requests are answered 503
//! // … POST to format!("{}/hook", hook.url()) …
//! assert_eq!(hook.received().len(), 3);
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

/// One request the double received.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// What the double answered.
    pub status: u16,
}

impl WebhookRequest {
    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Book {
    requests: Vec<WebhookRequest>,
    /// Statuses (and `Retry-After` seconds) for the next requests.
    faults: VecDeque<(u16, Option<u64>)>,
}

struct Shared {
    state: Mutex<Book>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, Book> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running webhook receiver. Dropping it stops it.
pub struct WebhookDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the server.
    _served: crate::background::Served,
}

impl WebhookDouble {
    /// Starts the receiver on a free port of `127.0.0.1`. It accepts any path and method.
    pub fn start() -> WebhookDouble {
        let shared = Arc::new(Shared {
            state: Mutex::new(Book::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let served = crate::background::serve_local("fleet-webhook-double", app);
        WebhookDouble {
            addr: served.addr,
            shared,
            _served: served,
        }
    }

    /// `http://127.0.0.1:PORT` (append any path).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `n` requests with `status` (and a short text body).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self.shared.state();
        s.faults.extend(std::iter::repeat_n((status, None), n));
    }

    /// Answers the next `n` requests with `status` and `Retry-After: {secs}`.
    pub fn fail_next_retry_after(&self, n: usize, status: u16, secs: u64) {
        let mut s = self.shared.state();
        s.faults
            .extend(std::iter::repeat_n((status, Some(secs)), n));
    }

    /// Every request so far, in order, failed ones included.
    pub fn received(&self) -> Vec<WebhookRequest> {
        self.shared.state().requests.clone()
    }

    /// The requests that were answered 2xx.
    pub fn accepted(&self) -> Vec<WebhookRequest> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `n` requests have arrived and returns them all; panics after `timeout`.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> Vec<WebhookRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "webhook double: expected {n} requests within {timeout:?}, got {}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).ok();
    let mut s = shared.state();
    let (status, retry_after) = s.faults.pop_front().unwrap_or((200, None));
    s.requests.push(WebhookRequest {
        method,
        path,
        headers,
        body,
        json,
        status,
    });
    drop(s);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8");
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    let text = if status < 300 {
        "ok".to_string()
    } else {
        code.canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    };
    response
        .body(Body::from(text))
        .expect("a plain response builds")
}
