//! A local double of the Telegram Bot API over real HTTP on `127.0.0.1`, for one bot.
//!
//! `GET` or `POST` `/bot{token}/{method}`, parameters in the query string, a JSON body or a
//! form body, as Telegram takes them:
//! - `sendMessage` (`chat_id`, `text`): records the message and answers
//!   `{"ok":true,"result":{message}}`; 400 `Bad Request: chat_id is empty` /
//!   `message text is empty` / `message is too long` (over 4096 characters) like Telegram.
//! - `getUpdates` (`offset`, `timeout`, `limit`): **long polling** — answers at once with the
//!   updates whose id is at least `offset`, or waits up to `timeout` seconds for one to be
//!   pushed; an `offset` confirms (forgets) every update before it, as Telegram does.
//!
//! A wrong token is answered 401 `{"ok":false,"error_code":401,"description":"Unauthorized"}`,
//! an unknown method 404. [`TelegramDouble::fail_next`] makes `sendMessage` answer an error
//! such as 429 with `parameters.retry_after`; [`TelegramDouble::fail_next_polls`] does the same
//! for `getUpdates`.
//!
//! ```no_run
//! use fleet_testkit::telegram::TelegramDouble;
//! use std::time::Duration;
//! let tg = TelegramDouble::start("123:abc");
//! tg.push_message(42, "/start");
//! // … run the bot against tg.api_url() …
//! let sent = tg.wait_sent(1, Duration::from_secs(5));
//! assert_eq!(sent[0].0, 42);
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

/// Telegram's longest message.
const MAX_TEXT: usize = 4096;
/// The longest long poll the double holds, whatever `timeout` asks.
const MAX_POLL: Duration = Duration::from_secs(50);

struct Pending {
    update_id: i64,
    update: Value,
}

#[derive(Default)]
struct Book {
    next_update_id: i64,
    next_message_id: i64,
    /// Not yet confirmed by an `offset` past them.
    pending: VecDeque<Pending>,
    /// How many times each update was returned by `getUpdates`.
    deliveries: HashMap<i64, usize>,
    /// The `offset` of every `getUpdates` call, in order.
    polls: Vec<Option<i64>>,
    sent: Vec<(i64, String)>,
    /// `sendMessage` calls, failed ones included.
    send_calls: usize,
    /// Errors for the next `sendMessage` calls: status and `retry_after`.
    faults: VecDeque<(u16, Option<u64>)>,
    /// Errors for the next `getUpdates` calls.
    poll_faults: VecDeque<u16>,
}

struct Shared {
    token: String,
    book: Mutex<Book>,
    news: tokio::sync::Notify,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Telegram Bot API double. Dropping it stops it.
pub struct TelegramDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the server.
    _served: crate::background::Served,
}

impl TelegramDouble {
    /// Starts the double on a free port of `127.0.0.1` for the bot with `token`.
    pub fn start(token: &str) -> TelegramDouble {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            book: Mutex::new(Book {
                next_update_id: 700_000_001,
                next_message_id: 1,
                ..Book::default()
            }),
            news: tokio::sync::Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let served = crate::background::serve_local("fleet-telegram-double", app);
        TelegramDouble {
            addr: served.addr,
            shared,
            _served: served,
        }
    }

    /// `http://127.0.0.1:PORT`: in place of `https://api.telegram.org`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A person writes `text` in private chat `chat_id`; returns the update's id. A waiting
    /// `getUpdates` answers at once.
    pub fn push_message(&self, chat_id: i64, text: &str) -> i64 {
        let mut b = self.shared.book();
        let update_id = b.next_update_id;
        b.next_update_id += 1;
        let message_id = b.next_message_id;
        b.next_message_id += 1;
        let update = json!({
            "update_id": update_id,
            "message": {
                "message_id": message_id,
                "from": { "id": chat_id, "is_bot": false, "first_name": "Tester" },
                "chat": { "id": chat_id, "type": "private", "first_name": "Tester" },
                "date": now(),
                "text": text,
            }
        });
        b.pending.push_back(Pending { update_id, update });
        drop(b);
        self.shared.news.notify_waiters();
        update_id
    }

    /// Every message sent with `sendMessage`, as `(chat_id, text)`, in order.
    pub fn sent(&self) -> Vec<(i64, String)> {
        self.shared.book().sent.clone()
    }

    /// How many `sendMessage` calls were made, failed ones included.
    pub fn send_calls(&self) -> usize {
        self.shared.book().send_calls
    }

    /// Waits until `n` messages were sent and returns them all; panics after `timeout`.
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<(i64, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let sent = self.sent();
            if sent.len() >= n {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "telegram double: expected {n} sent messages within {timeout:?}, got {}: {sent:?}",
                sent.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `offset` of every `getUpdates` call so far, in order.
    pub fn polls(&self) -> Vec<Option<i64>> {
        self.shared.book().polls.clone()
    }

    /// How many times `getUpdates` returned update `update_id`.
    pub fn deliveries(&self, update_id: i64) -> usize {
        self.shared
            .book()
            .deliveries
            .get(&update_id)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until a `getUpdates` call confirms update `update_id` (its `offset` is past it),
    /// which a poller does once it has handled the update; panics after `timeout`.
    pub fn wait_confirmed(&self, update_id: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .polls()
                .iter()
                .any(|o| o.is_some_and(|o| o > update_id))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "telegram double: update {update_id} not confirmed within {timeout:?}; polls: {:?}",
                self.polls()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Answers the next `n` `getUpdates` calls with `status` (and no updates).
    pub fn fail_next_polls(&self, n: usize, status: u16) {
        self.shared
            .book()
            .poll_faults
            .extend(std::iter::repeat_n(status, n));
    }

    /// Answers the next `n` `sendMessage` calls with `status` (429: `Too Many Requests`), with
    /// `parameters.retry_after` when given.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.shared
            .book()
            .faults
            .extend(std::iter::repeat_n((status, retry_after), n));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reply(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a JSON response builds")
}

fn error(code: u16, description: &str) -> Response {
    reply(
        code,
        json!({ "ok": false, "error_code": code, "description": description }),
    )
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let uri = req.uri().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let Some((token, method)) = uri
        .path()
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(404, "Not Found");
    };
    if token != shared.token {
        return error(401, "Unauthorized");
    }
    let mut params: BTreeMap<String, Value> = parse_form(uri.query().unwrap_or(""))
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => params.extend(map),
            _ => return error(400, "Bad Request: can't parse JSON object"),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(
            parse_form(&String::from_utf8_lossy(&bytes))
                .into_iter()
                .map(|(k, v)| (k, Value::String(v))),
        );
    }
    match method {
        "sendMessage" => send_message(&shared, &params),
        "getUpdates" => get_updates(&shared, &params).await,
        _ => error(404, "Not Found"),
    }
}

/// An integer parameter given as a number or as text.
fn int(params: &BTreeMap<String, Value>, key: &str) -> Option<i64> {
    match params.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn send_message(shared: &Shared, params: &BTreeMap<String, Value>) -> Response {
    let mut b = shared.book();
    b.send_calls += 1;
    if let Some((status, retry_after)) = b.faults.pop_front() {
        let description = match (status, retry_after) {
            (429, Some(s)) => format!("Too Many Requests: retry after {s}"),
            (429, None) => "Too Many Requests".to_string(),
            (s, _) if s >= 500 => "Internal Server Error".to_string(),
            _ => "Bad Request".to_string(),
        };
        let mut body = json!({ "ok": false, "error_code": status, "description": description });
        if let Some(s) = retry_after {
            body["parameters"] = json!({ "retry_after": s });
        }
        return reply(status, body);
    }
    let Some(chat_id) = int(params, "chat_id") else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let text = match params.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        return error(400, "Bad Request: message text is empty");
    }
    if text.chars().count() > MAX_TEXT {
        return error(400, "Bad Request: message is too long");
    }
    let message_id = b.next_message_id;
    b.next_message_id += 1;
    b.sent.push((chat_id, text.clone()));
    reply(
        200,
        json!({
            "ok": true,
            "result": {
                "message_id": message_id,
                "from": { "id": 1, "is_bot": true, "first_name": "Fleet", "username": "fleet_bot" },
                "chat": { "id": chat_id, "type": "private" },
                "date": now(),
                "text": text,
            }
        }),
    )
}

async fn get_updates(shared: &Shared, params: &BTreeMap<String, Value>) -> Response {
    let offset = int(params, "offset");
    let timeout = int(params, "timeout").unwrap_or(0).max(0) as u64;
    let limit = int(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    {
        let mut b = shared.book();
        b.polls.push(offset);
        if let Some(status) = b.poll_faults.pop_front() {
            let description = if status >= 500 {
                "Bad Gateway"
            } else {
                "Bad Request"
            };
            return error(status, description);
        }
        if let Some(o) = offset.filter(|o| *o > 0) {
            b.pending.retain(|p| p.update_id >= o);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout).min(MAX_POLL);
    loop {
        // Registered before looking, so a push between the look and the wait is not missed.
        let news = shared.news.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        {
            let mut b = shared.book();
            let ready: Vec<(i64, Value)> = b
                .pending
                .iter()
                .take(limit)
                .map(|p| (p.update_id, p.update.clone()))
                .collect();
            if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                for (id, _) in &ready {
                    *b.deliveries.entry(*id).or_default() += 1;
                }
                let result: Vec<Value> = ready.into_iter().map(|(_, u)| u).collect();
                return reply(200, json!({ "ok": true, "result": result }));
            }
        }
        tokio::select! {
            _ = &mut news => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

use crate::codec::form_pairs as parse_form;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::form_decode as decode;
    use std::io::{Read, Write};

    /// One HTTP/1.1 request; the status and the body as JSON.
    fn http(port: u16, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        (status, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn speaks_the_bot_api() {
        let tg = TelegramDouble::start("1:t");
        let port = tg.addr.port();
        let (status, v) = http(port, "GET", "/bot1:x/getUpdates", "text/plain", "");
        assert_eq!(
            (status, v["description"].as_str()),
            (401, Some("Unauthorized"))
        );

        let a = tg.push_message(7, "/start");
        let b = tg.push_message(8, "hello");
        let (status, v) = http(
            port,
            "GET",
            "/bot1:t/getUpdates?timeout=0",
            "text/plain",
            "",
        );
        assert_eq!(status, 200);
        let ids: Vec<i64> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["update_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [a, b]);
        assert_eq!(v["result"][1]["message"]["chat"]["id"], 8);
        assert_eq!(v["result"][1]["message"]["text"], "hello");

        // An offset confirms what is before it.
        let body = format!("{{\"offset\":{b},\"timeout\":0}}");
        let (_, v) = http(
            port,
            "POST",
            "/bot1:t/getUpdates",
            "application/json",
            &body,
        );
        assert_eq!(v["result"].as_array().unwrap().len(), 1);
        assert_eq!(tg.deliveries(a), 1);
        assert_eq!(tg.deliveries(b), 2);

        // A long poll waits for the next push and answers it at once.
        let polls = tg.polls().len();
        let path = format!("/bot1:t/getUpdates?offset={}&timeout=15", b + 1);
        let waiting = std::thread::spawn(move || {
            let started = Instant::now();
            (
                http(port, "GET", &path, "text/plain", ""),
                started.elapsed(),
            )
        });
        while tg.polls().len() == polls {
            std::thread::sleep(Duration::from_millis(5));
        }
        let c = tg.push_message(7, "/status");
        let ((status, v), took) = waiting.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["result"][0]["update_id"], c);
        assert!(took < Duration::from_secs(10), "{took:?}");

        // sendMessage: form and JSON bodies, and Telegram's errors.
        let (status, v) = http(
            port,
            "POST",
            "/bot1:t/sendMessage",
            "application/x-www-form-urlencoded",
            "chat_id=42&text=hi+there%21",
        );
        assert_eq!((status, v["ok"].as_bool()), (200, Some(true)));
        assert_eq!(v["result"]["text"], "hi there!");
        let (status, v) = http(
            port,
            "POST",
            "/bot1:t/sendMessage",
            "application/json",
            r#"{"chat_id":42,"text":"  "}"#,
        );
        assert_eq!(
            (status, v["description"].as_str()),
            (400, Some("Bad Request: message text is empty"))
        );
        tg.fail_next(1, 429, Some(3));
        let (status, v) = http(
            port,
            "POST",
            "/bot1:t/sendMessage",
            "application/json",
            r#"{"chat_id":42,"text":"x"}"#,
        );
        assert_eq!(
            (status, v["parameters"]["retry_after"].as_u64()),
            (429, Some(3))
        );
        assert_eq!(tg.sent(), [(42, "hi there!".to_string())]);
        assert_eq!(tg.send_calls(), 3);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            parse_form("chat_id=42&text=a+b%21%C3%A9&x"),
            vec![
                ("chat_id".to_string(), "42".to_string()),
                ("text".to_string(), "a b!é".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%41"), "A");
    }
}
