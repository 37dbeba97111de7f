//! `cli: http` — Fleet's own small agent: a tool loop over an OpenAI-compatible Chat
//! Completions endpoint (OpenRouter, Ollama, vLLM, …). Tools read, write and edit files, list
//! a directory and run a command, all inside the task's worktree: paths that resolve outside it
//! are refused. (A command is a shell in the worktree with a scrubbed environment; containing
//! what a shell can reach is the job of containers, not of this loop.)

use crate::agent::{AgentEnd, Redactor};
use crate::process::{self, Finished};
use fleet_agents::{AgentEvent, ErrorClass, Outcome, OutcomeClass, Usage, classify_text};
use serde_json::{Value, json};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const DEFAULT_MAX_TURNS: u32 = 40;
const MAX_TOOL_OUTPUT: usize = 20_000;

pub struct HttpRun<'a> {
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
    pub model: &'a str,
    pub system: &'a str,
    pub prompt: &'a str,
    pub workdir: &'a Path,
    pub max_turns: Option<u32>,
    /// One request may take this long (the stall timeout of the profile).
    pub request_timeout: Duration,
    pub deadline: Option<Instant>,
    pub env: &'a std::collections::BTreeMap<String, String>,
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .build()
            .expect("a default reqwest client builds")
    })
}

fn tools() -> Value {
    let f = |name: &str, desc: &str, props: Value, required: &[&str]| {
        json!({"type": "function", "function": {"name": name, "description": desc,
            "parameters": {"type": "object", "properties": props, "required": required}}})
    };
    json!([
        f(
            "read_file",
            "Read a text file of the project.",
            json!({"path": {"type": "string"}}),
            &["path"]
        ),
        f(
            "write_file",
            "Create or overwrite a file with the given content.",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
            &["path", "content"]
        ),
        f(
            "edit_file",
            "Replace one exact occurrence of old_string with new_string in a file.",
            json!({"path": {"type": "string"}, "old_string": {"type": "string"}, "new_string": {"type": "string"}}),
            &["path", "old_string", "new_string"]
        ),
        f(
            "list_dir",
            "List a directory of the project.",
            json!({"path": {"type": "string"}}),
            &[]
        ),
        f(
            "run_shell_command",
            "Run a shell command in the project root; returns exit code and output.",
            json!({"command": {"type": "string"}}),
            &["command"]
        ),
    ])
}

/// Resolves `rel` inside `root`, refusing anything that would land outside it.
pub fn confine(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    let root_real = root.canonicalize().map_err(|e| e.to_string())?;
    // Follow symlinks of the deepest existing ancestor: a link must not lead outside either.
    let mut existing = out.clone();
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    let real = existing.canonicalize().map_err(|e| e.to_string())?;
    if !real.starts_with(&root_real) || !out.starts_with(root) && !out.starts_with(&root_real) {
        return Err(format!("{rel:?} is outside the task's worktree"));
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_TOOL_OUTPUT {
        return s.to_string();
    }
    let mut end = MAX_TOOL_OUTPUT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &s[..end], s.len() - end)
}

async fn call_tool(name: &str, args: &Value, r: &HttpRun<'_>) -> (bool, String) {
    let s = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("");
    let result: Result<String, String> = async {
        match name {
            "read_file" => {
                std::fs::read_to_string(confine(r.workdir, s("path"))?).map_err(|e| e.to_string())
            }
            "write_file" => {
                let path = confine(r.workdir, s("path"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                std::fs::write(&path, s("content")).map_err(|e| e.to_string())?;
                Ok(format!(
                    "wrote {} bytes to {}",
                    s("content").len(),
                    s("path")
                ))
            }
            "edit_file" => {
                let path = confine(r.workdir, s("path"))?;
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                let old = s("old_string");
                match text.matches(old).count() {
                    0 => Err("old_string was not found".into()),
                    1 if !old.is_empty() => {
                        std::fs::write(&path, text.replacen(old, s("new_string"), 1))
                            .map_err(|e| e.to_string())?;
                        Ok("edited".into())
                    }
                    n => Err(format!(
                        "old_string occurs {n} times; give more context so it is unique"
                    )),
                }
            }
            "list_dir" => {
                let path = confine(
                    r.workdir,
                    if s("path").is_empty() { "." } else { s("path") },
                )?;
                let mut names: Vec<String> = std::fs::read_dir(&path)
                    .map_err(|e| e.to_string())?
                    .flatten()
                    .filter(|e| e.file_name() != ".git")
                    .map(|e| {
                        let dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                        format!(
                            "{}{}",
                            e.file_name().to_string_lossy(),
                            if dir { "/" } else { "" }
                        )
                    })
                    .collect();
                names.sort();
                Ok(names.join("\n"))
            }
            "run_shell_command" => {
                let mut env = process::scrubbed_env();
                env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let out = tokio::time::timeout(
                    Duration::from_secs(300),
                    tokio::process::Command::new("/bin/sh")
                        .arg("-c")
                        .arg(s("command"))
                        .current_dir(r.workdir)
                        .env_clear()
                        .envs(&env)
                        .stdin(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .output(),
                )
                .await
                .map_err(|_| "the command timed out after 300 s".to_string())?
                .map_err(|e| e.to_string())?;
                Ok(format!(
                    "exit code {}\n{}{}",
                    out.status
                        .code()
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none (killed)".into()),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    }
    .await;
    match result {
        Ok(o) => (true, clip(&o)),
        Err(e) => (false, e),
    }
}

fn http_error_class(status: u16, body: &str) -> ErrorClass {
    match status {
        401 | 403 => ErrorClass::AuthFailed,
        402 => ErrorClass::QuotaExhausted,
        429 if classify_text(body) == ErrorClass::QuotaExhausted => ErrorClass::QuotaExhausted,
        429 => ErrorClass::RateLimited,
        529 => ErrorClass::Overloaded,
        500..=599 => ErrorClass::Upstream,
        _ => ErrorClass::Agent,
    }
}

/// When a rate limit resets, from `Retry-After` (seconds or a date) or `x-ratelimit-reset*`.
fn reset_time(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let now = chrono::Utc::now().timestamp();
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.trim().parse::<f64>() {
            return Some(now + secs.ceil() as i64);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc2822(&v) {
            return Some(t.timestamp());
        }
    }
    for k in [
        "x-ratelimit-reset",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    ] {
        if let Some(v) = get(k) {
            let v = v.trim();
            if let Ok(n) = v.parse::<i64>() {
                // Epoch seconds, epoch milliseconds, or seconds from now.
                return Some(if n > 1_000_000_000_000 {
                    n / 1000
                } else if n > 1_000_000_000 {
                    n
                } else {
                    now + n
                });
            }
            if let Some(secs) = v.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()) {
                return Some(now + secs.ceil() as i64);
            }
        }
    }
    None
}

/// Runs the loop until the model stops calling tools, a limit is hit, or an error ends it.
pub async fn run(
    r: HttpRun<'_>,
    mut stop: watch::Receiver<bool>,
    redactor: &Redactor,
    mut on_events: impl FnMut(Vec<AgentEvent>),
) -> (Finished, AgentEnd) {
    let started = Instant::now();
    let url = format!("{}/chat/completions", r.base_url.trim_end_matches('/'));
    let mut messages = vec![
        json!({"role": "system", "content": r.system}),
        json!({"role": "user", "content": r.prompt}),
    ];
    let max_turns = r.max_turns.unwrap_or(DEFAULT_MAX_TURNS);
    let done = |class: OutcomeClass,
                detail: Option<String>,
                resets_at: Option<i64>,
                stalled: bool,
                timed_out: bool,
                stopped: bool| {
        let finished = Finished {
            code: Some(if class == OutcomeClass::Succeeded {
                0
            } else {
                1
            }),
            signal: None,
            timed_out,
            stopped,
            elapsed: started.elapsed(),
        };
        (
            finished,
            AgentEnd {
                outcome: Outcome {
                    class,
                    resets_at,
                    detail,
                },
                stalled,
            },
        )
    };
    for _turn in 0..max_turns {
        let body = json!({"model": r.model, "messages": messages, "tools": tools(), "tool_choice": "auto", "stream": false});
        let mut req = client().post(&url).json(&body).timeout(r.request_timeout);
        if let Some(key) = r.api_key {
            req = req.bearer_auth(key);
        }
        let deadline = r.deadline.map(tokio::time::Instant::from_std);
        let sent = tokio::select! {
            res = req.send() => res,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                return done(OutcomeClass::TimedOut, None, None, false, true, false);
            }
            _ = async { while !*stop.borrow_and_update() { if stop.changed().await.is_err() { std::future::pending::<()>().await; } } } => {
                return done(OutcomeClass::Crashed, Some("stopped by fleet".into()), None, false, false, true);
            }
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => {
                return done(
                    OutcomeClass::Stalled,
                    Some(format!("no answer within {:?}", r.request_timeout)),
                    None,
                    true,
                    false,
                    false,
                );
            }
            Err(e) => {
                let msg = redactor.clean(&e.to_string()).into_owned();
                on_events(vec![AgentEvent::Error {
                    class: ErrorClass::Upstream,
                    message: msg.clone(),
                }]);
                return done(
                    OutcomeClass::UpstreamError,
                    Some(msg),
                    None,
                    false,
                    false,
                    false,
                );
            }
        };
        let status = resp.status().as_u16();
        let resets_at = reset_time(resp.headers());
        let text = match tokio::time::timeout(r.request_timeout, resp.text()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return done(
                    OutcomeClass::UpstreamError,
                    Some(e.to_string()),
                    None,
                    false,
                    false,
                    false,
                );
            }
            Err(_) => {
                return done(
                    OutcomeClass::Stalled,
                    Some("the response body stalled".into()),
                    None,
                    true,
                    false,
                    false,
                );
            }
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let api_error = v.get("error").filter(|e| !e.is_null());
        if status != 200 || api_error.is_some() {
            // OpenRouter reports errors raised mid-generation with HTTP 200 and an error body.
            let code = api_error
                .and_then(|e| e.get("code"))
                .and_then(Value::as_u64)
                .map(|c| c as u16)
                .unwrap_or(status);
            let message = redactor
                .clean(
                    api_error
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or(text.as_str()),
                )
                .into_owned();
            let class = http_error_class(if status == 200 { code } else { status }, &message);
            let mut events = vec![AgentEvent::Error {
                class,
                message: format!("HTTP {status}: {message}"),
            }];
            if matches!(class, ErrorClass::RateLimited | ErrorClass::QuotaExhausted) {
                events.push(AgentEvent::RateLimit {
                    resets_at,
                    detail: format!("HTTP {status}"),
                });
            }
            on_events(events);
            let oc = match class {
                ErrorClass::AuthFailed => OutcomeClass::AuthFailed,
                ErrorClass::QuotaExhausted => OutcomeClass::QuotaExhausted,
                ErrorClass::RateLimited => OutcomeClass::RateLimited,
                ErrorClass::Overloaded => OutcomeClass::Overloaded,
                ErrorClass::Upstream => OutcomeClass::UpstreamError,
                ErrorClass::Agent => OutcomeClass::AgentError,
            };
            return done(
                oc,
                Some(format!("HTTP {status}: {message}")),
                resets_at,
                false,
                false,
                false,
            );
        }
        let mut events = Vec::new();
        if let Some(u) = v.get("usage") {
            let cached = u
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let usage = Usage {
                input_tokens: u
                    .get("prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .saturating_sub(cached),
                output_tokens: u
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
            };
            events.push(AgentEvent::Usage(usage));
            if let Some(cost) = u
                .get("cost")
                .and_then(Value::as_f64)
                .filter(|c| c.is_finite() && *c >= 0.0)
            {
                events.push(AgentEvent::Cost { usd: cost });
            }
        }
        let Some(msg) = v.pointer("/choices/0/message").cloned() else {
            on_events(events);
            return done(
                OutcomeClass::NoResult,
                Some("the response has no choices".into()),
                None,
                false,
                false,
                false,
            );
        };
        if let Some(t) = msg
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        {
            events.push(AgentEvent::Message {
                text: redactor.clean(t).into_owned(),
            });
        }
        let calls = msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        messages.push(msg);
        if calls.is_empty() {
            on_events(events);
            return done(OutcomeClass::Succeeded, None, None, false, false, false);
        }
        for call in calls {
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("call")
                .to_string();
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let raw = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let args: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            events.push(AgentEvent::ToolCall {
                name: name.clone(),
                input: args.clone(),
            });
            let (ok, output) = if args.is_null() {
                (false, format!("the arguments are not valid JSON: {raw}"))
            } else {
                call_tool(&name, &args, &r).await
            };
            let output = redactor.clean(&output).into_owned();
            events.push(AgentEvent::ToolResult {
                name: Some(name),
                ok,
                output: output.clone(),
            });
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        on_events(events);
    }
    done(
        OutcomeClass::AgentError,
        Some(format!("no final answer within {max_turns} turns")),
        None,
        false,
        false,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_to_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("src")).unwrap();
        assert!(
            confine(&root, "src/a.rs")
                .unwrap()
                .ends_with("tree/src/a.rs")
        );
        assert!(confine(&root, "new/dir/file").is_ok());
        assert!(confine(&root, "../outside").is_err());
        assert!(confine(&root, "src/../../outside").is_err());
        assert!(confine(&root, "/etc/passwd").is_err());
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        assert!(
            confine(&root, "etc-link/passwd").is_err(),
            "a symlink must not lead outside"
        );
    }

    #[test]
    fn error_classes_and_reset_headers() {
        assert_eq!(http_error_class(401, ""), ErrorClass::AuthFailed);
        assert_eq!(http_error_class(402, ""), ErrorClass::QuotaExhausted);
        assert_eq!(http_error_class(429, "slow down"), ErrorClass::RateLimited);
        assert_eq!(http_error_class(503, ""), ErrorClass::Upstream);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        let now = chrono::Utc::now().timestamp();
        assert!((reset_time(&h).unwrap() - (now + 7)).abs() <= 1);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-reset", "1795248533000".parse().unwrap());
        assert_eq!(reset_time(&h), Some(1795248533));
    }
}
