//! The HTTP plumbing shared by both forges: one client, URL encoding, sending a request and
//! turning an error answer into a [`ForgeError`].

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::{ForgeError, ForgeKind, Token};

pub(crate) const USER_AGENT: &str = concat!("fleet/", env!("CARGO_PKG_VERSION"));

/// How many pages of comments are read at most (100 each).
pub(crate) const MAX_PAGES: u32 = 100;

pub(crate) fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            // A pooled connection belongs to the runtime that opened it; a caller that moves to
            // another runtime (one per CLI command step) would wait on it forever. Forge calls
            // are few: a connection per call costs nothing that matters.
            .pool_max_idle_per_host(0)
            .build()
            .expect("a default reqwest client builds")
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the result is safe as
/// one path segment or one query value (`group/name` → `group%2Fname`).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer as received.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// One call: which forge, with which token, described as `METHOD /path` for messages.
pub(crate) struct Call<'a> {
    pub forge: ForgeKind,
    pub token: &'a Token,
    /// `POST /repos/o/r/pulls`: used in error messages (never holds a secret).
    pub request: String,
}

impl Call<'_> {
    /// The header value carrying the token (`value` is the whole value, e.g. `Bearer …`),
    /// marked sensitive so it is never logged.
    pub(crate) fn credential(&self, value: &str) -> Result<HeaderValue, ForgeError> {
        let mut header = HeaderValue::from_str(value).map_err(|_| ForgeError::Auth {
            forge: self.forge,
            status: 0,
            token_name: self.token.name().map(str::to_string),
            message: "the token contains characters not allowed in an HTTP header".into(),
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// Sends `req` (already carrying its headers) and reads the whole answer.
    pub async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<Reply, ForgeError> {
        let transport = |e: reqwest::Error| ForgeError::Transport {
            forge: self.forge,
            url: self.token.redact(url),
            message: self.token.redact(&error_chain(&e)),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(transport)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A successful answer's JSON, or [`ForgeError::InvalidResponse`].
    pub fn json(&self, reply: &Reply) -> Result<Value, ForgeError> {
        reply
            .json()
            .ok_or_else(|| self.invalid("the answer is not JSON"))
    }

    pub fn invalid(&self, message: &str) -> ForgeError {
        ForgeError::InvalidResponse {
            forge: self.forge,
            request: self.request.clone(),
            message: message.to_string(),
        }
    }

    /// The error for a non-2xx answer. `what` names the thing a 404 means is missing.
    pub fn error(&self, reply: &Reply, what: &str) -> ForgeError {
        let forge = self.forge;
        let json = reply.json();
        let message = json
            .as_ref()
            .map(|j| messages(j).join("; "))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| clip(reply.body.trim(), 300));
        let message = self.token.redact(&message);
        let rate_limited = reply.status == 429
            || (reply.status == 403
                && (header(&reply.headers, "x-ratelimit-remaining") == Some("0")
                    || message.to_ascii_lowercase().contains("rate limit")));
        match reply.status {
            _ if rate_limited => ForgeError::RateLimited {
                forge,
                status: reply.status,
                retry_after_secs: retry_after(&reply.headers),
                message,
            },
            401 | 403 => ForgeError::Auth {
                forge,
                status: reply.status,
                token_name: self.token.name().map(str::to_string),
                message,
            },
            404 => ForgeError::NotFound {
                forge,
                what: what.to_string(),
            },
            400 | 409 | 422 => ForgeError::Validation {
                forge,
                status: reply.status,
                messages: json
                    .as_ref()
                    .map(messages)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| vec![clip(reply.body.trim(), 300)])
                    .iter()
                    .map(|m| self.token.redact(m))
                    .collect(),
            },
            status => ForgeError::UnexpectedStatus {
                forge,
                status,
                request: self.request.clone(),
                // Redact before clipping, so no prefix of the token survives the cut.
                body: clip(&self.token.redact(reply.body.trim()), 300),
            },
        }
    }
}

/// The messages of an error body, in both forges' shapes: GitHub's `errors` (objects with a
/// `message`, or `resource`/`field`/`code`) falling back to its `message`; GitLab's `message`
/// (a string, a list, or a map of field → messages) or `error`.
pub(crate) fn messages(j: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(errors) = j.get("errors").and_then(Value::as_array) {
        for e in errors {
            match e {
                Value::String(s) => out.push(s.clone()),
                Value::Object(o) => {
                    if let Some(m) = o.get("message").and_then(Value::as_str) {
                        out.push(m.to_string());
                    } else {
                        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
                        let field = [s("resource"), s("field")]
                            .into_iter()
                            .filter(|x| !x.is_empty())
                            .collect::<Vec<_>>()
                            .join(".");
                        out.push(format!("{field} {}", s("code")).trim().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if !out.is_empty() {
        return out;
    }
    match j.get("message") {
        Some(Value::String(s)) => out.push(s.clone()),
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(String::from)),
        Some(Value::Object(o)) => {
            for (field, v) in o {
                match v {
                    Value::Array(a) => out.extend(
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|m| format!("{field} {m}")),
                    ),
                    Value::String(m) => out.push(format!("{field} {m}")),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if out.is_empty()
        && let Some(e) = j.get("error").and_then(Value::as_str)
    {
        out.push(e.to_string());
    }
    out
}

pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn retry_after(h: &HeaderMap) -> Option<u64> {
    if let Some(s) = header(h, "retry-after").and_then(|v| v.trim().parse().ok()) {
        return Some(s);
    }
    let reset: u64 = header(h, "x-ratelimit-reset")?.trim().parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(reset.saturating_sub(now))
}

/// The first `max` characters of `s`, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// An error and its sources, joined (reqwest's own `Display` hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// A JSON field as a string (`""` when absent).
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
