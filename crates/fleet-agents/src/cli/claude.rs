//! Claude Code (`claude -p --output-format stream-json --verbose`).
//!
//! Traps handled: an API error ends with `subtype: "success"` **and** `is_error: true`; the CLI
//! retries even a 401 (capped here with `CLAUDE_CODE_MAX_RETRIES`); bypass mode is refused as
//! root unless `IS_SANDBOX=1`; `--verbose` is mandatory with stream-json under `-p`.

use super::{base_env, default_env, json_line, secret_names, str_at, u64_at};
use crate::outcome::{Evidence, classify_text};
use crate::{
    Adapter, AdapterError, AgentEvent, AttemptRequest, ErrorClass, Launch, Outcome, Parser,
    ProcessEnd, Stdin, Usage, Verification,
};
use serde_json::Value;

pub struct Claude;

impl Adapter for Claude {
    fn name(&self) -> &'static str {
        "claude"
    }
    fn binary(&self) -> &'static str {
        "claude"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ]
    }
    fn verification(&self) -> Verification {
        Verification::RealBinary
    }
    fn can_resume(&self) -> bool {
        true
    }
    fn reports_cost(&self) -> bool {
        true
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        if let Some(sys) = req.system.filter(|s| !s.trim().is_empty()) {
            args.extend(["--append-system-prompt".into(), sys.into()]);
        }
        if let Some(n) = req.max_turns {
            args.extend(["--max-turns".into(), n.to_string()]);
        }
        if let Some(id) = req.resume_session {
            args.extend(["--resume".into(), id.into()]);
        }
        let mut files = Vec::new();
        if let Some(mcp) = req.mcp {
            let path = req.home.join("fleet-mcp.json");
            let (name, entry) = mcp.json_entry();
            let config = serde_json::json!({"mcpServers": {name: entry}});
            files.push(super::file(path.clone(), config.to_string(), false));
            args.extend(["--mcp-config".into(), path.display().to_string()]);
        }
        let mut env = base_env(req);
        env.insert(
            "CLAUDE_CONFIG_DIR".into(),
            req.home.join(".claude").display().to_string(),
        );
        // Fleet runs agents in disposable worktrees; as root, claude refuses bypass mode otherwise.
        env.insert("IS_SANDBOX".into(), "1".into());
        env.insert(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        );
        env.insert("DISABLE_AUTOUPDATER".into(), "1".into());
        env.insert("DISABLE_TELEMETRY".into(), "1".into());
        env.insert("DISABLE_ERROR_REPORTING".into(), "1".into());
        // Its default is 10 retries over ~3 minutes, even for a 401; fleet swaps agents instead.
        default_env(&mut env, "CLAUDE_CODE_MAX_RETRIES", "2");
        if let Some(url) = req.base_url {
            env.insert("ANTHROPIC_BASE_URL".into(), url.into());
        }
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: vec!["CLAUDECODE".into(), "CLAUDE_CODE_ENTRYPOINT".into()],
            files,
            stdin: Stdin::Text(req.prompt.to_string()),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(ClaudeStream::new(false))
    }

    /// A `PostToolUse` hook on the file-editing tools, in a settings file of the attempt's
    /// home given with `--settings` (so the repository's `.claude/` is never written). Claude
    /// shows a hook's stderr to the model when it exits 2.
    fn add_post_edit_hook(
        &self,
        launch: &mut Launch,
        home: &std::path::Path,
        command: &str,
    ) -> bool {
        let path = home.join("fleet-policy-settings.json");
        let settings = serde_json::json!({"hooks": {"PostToolUse": [{
            "matcher": "Write|Edit|MultiEdit|NotebookEdit",
            "hooks": [{"type": "command", "command": command}]
        }]}});
        launch
            .files
            .push(super::file(path.clone(), settings.to_string(), false));
        launch
            .args
            .extend(["--settings".into(), path.display().to_string()]);
        true
    }
}

/// Claude's stream-json, also spoken (with small differences) by qwen and amp.
pub struct ClaudeStream {
    ev: Evidence,
    /// Usage from assistant messages, used only if no `result` line reports the total.
    pending_usage: Usage,
    saw_result: bool,
    /// qwen reports API errors only as text like `[API Error: 401 …]`, with `is_error: false`.
    api_error_text: bool,
}

impl ClaudeStream {
    pub fn new(api_error_text: bool) -> ClaudeStream {
        ClaudeStream {
            ev: Evidence::default(),
            pending_usage: Usage::default(),
            saw_result: false,
            api_error_text,
        }
    }

    fn usage_of(u: &Value) -> Usage {
        Usage {
            input_tokens: u64_at(u, &["input_tokens"]),
            output_tokens: u64_at(u, &["output_tokens"]),
            cache_read_tokens: u64_at(u, &["cache_read_input_tokens"]),
            cache_write_tokens: u64_at(u, &["cache_creation_input_tokens"]),
        }
    }

    fn error_class(name: &str, status: Option<u64>) -> ErrorClass {
        match (name, status) {
            (_, Some(401 | 403)) => ErrorClass::AuthFailed,
            ("authentication_failed" | "oauth_org_not_allowed", _) => ErrorClass::AuthFailed,
            ("billing_error", _) | (_, Some(402)) => ErrorClass::QuotaExhausted,
            ("rate_limit", _) | (_, Some(429)) => ErrorClass::RateLimited,
            ("overloaded", _) | (_, Some(529)) => ErrorClass::Overloaded,
            ("server_error", _) | (_, Some(500..=599)) => ErrorClass::Upstream,
            ("unknown", None) => ErrorClass::Upstream,
            (other, _) => classify_text(other),
        }
    }

    /// `[API Error: …]`-style text in a message that claims to be fine.
    fn text_error(&mut self, text: &str) -> Option<AgentEvent> {
        let t = text.trim_start();
        let is_error = t.starts_with("[API Error") || t.starts_with("API Error");
        if !is_error {
            return None;
        }
        let class = classify_text(t);
        self.ev.error(class, t);
        Some(AgentEvent::Error {
            class,
            message: t.chars().take(500).collect(),
        })
    }
}

impl Parser for ClaudeStream {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Some(v) = json_line(line) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match (str_at(&v, &["type"]), str_at(&v, &["subtype"])) {
            (Some("system"), Some("init" | "session_start")) => {
                if let Some(id) = str_at(&v, &["session_id"]) {
                    out.push(AgentEvent::Session { id: id.into() });
                }
            }
            (Some("system"), Some("api_retry")) => {
                let name = str_at(&v, &["error"]).unwrap_or("unknown");
                let status = v.get("error_status").and_then(Value::as_u64);
                let class = Self::error_class(name, status);
                let detail = format!(
                    "{name}{}",
                    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
                );
                self.ev.error(class, detail.clone());
                out.push(AgentEvent::Retrying {
                    attempt: u64_at(&v, &["attempt"]) as u32,
                    class,
                    detail,
                });
            }
            (Some("assistant"), _) => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                if let Some(err) = str_at(&v, &["error"]) {
                    let text = first_text(msg).unwrap_or_default();
                    let class = Self::error_class(err, None);
                    self.ev.error(
                        class,
                        if text.is_empty() {
                            err.to_string()
                        } else {
                            text.clone()
                        },
                    );
                    out.push(AgentEvent::Error {
                        class,
                        message: if text.is_empty() { err.into() } else { text },
                    });
                    return out;
                }
                for block in msg
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match str_at(block, &["type"]) {
                        Some("text") => {
                            let text = str_at(block, &["text"]).unwrap_or("");
                            if self.api_error_text
                                && let Some(e) = self.text_error(text)
                            {
                                out.push(e);
                                continue;
                            }
                            if !text.trim().is_empty() {
                                out.push(AgentEvent::Message { text: text.into() });
                            }
                        }
                        Some("tool_use") => out.push(AgentEvent::ToolCall {
                            name: str_at(block, &["name"]).unwrap_or("?").into(),
                            input: block.get("input").cloned().unwrap_or(Value::Null),
                        }),
                        _ => {}
                    }
                }
                if let Some(u) = msg.get("usage") {
                    self.pending_usage.add(&Self::usage_of(u));
                }
            }
            (Some("user"), _) => {
                let content = v.pointer("/message/content").and_then(Value::as_array);
                for block in content.into_iter().flatten() {
                    if str_at(block, &["type"]) == Some("tool_result") {
                        let output = match block.get("content") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Array(parts)) => parts
                                .iter()
                                .filter_map(|p| str_at(p, &["text"]))
                                .collect::<Vec<_>>()
                                .join("\n"),
                            _ => String::new(),
                        };
                        let ok = !block
                            .get("is_error")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        out.push(AgentEvent::ToolResult {
                            name: None,
                            ok,
                            output,
                        });
                    }
                }
            }
            (Some("rate_limit_event"), _) => {
                let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
                if str_at(info, &["status"]) == Some("rejected") {
                    let resets_at = info.get("resetsAt").and_then(Value::as_i64);
                    let kind = str_at(info, &["rateLimitType"]).unwrap_or("limit");
                    let credits = str_at(info, &["errorCode"]) == Some("credits_required");
                    let class = if credits {
                        ErrorClass::QuotaExhausted
                    } else {
                        ErrorClass::RateLimited
                    };
                    self.ev.resets_at = resets_at.or(self.ev.resets_at);
                    self.ev
                        .error(class, format!("rate limit rejected ({kind})"));
                    out.push(AgentEvent::RateLimit {
                        resets_at,
                        detail: kind.into(),
                    });
                }
            }
            (Some("result"), subtype) => {
                self.saw_result = true;
                if let Some(id) = str_at(&v, &["session_id"]) {
                    out.push(AgentEvent::Session { id: id.into() });
                }
                let usage = match v.get("modelUsage").and_then(Value::as_object) {
                    Some(models) if !models.is_empty() => {
                        let mut u = Usage::default();
                        for m in models.values() {
                            u.add(&Usage {
                                input_tokens: u64_at(m, &["inputTokens"]),
                                output_tokens: u64_at(m, &["outputTokens"]),
                                cache_read_tokens: u64_at(m, &["cacheReadInputTokens"]),
                                cache_write_tokens: u64_at(m, &["cacheCreationInputTokens"]),
                            });
                        }
                        u
                    }
                    _ => v.get("usage").map(Self::usage_of).unwrap_or_default(),
                };
                // amp's result carries no usage: its assistant messages' counts are the total.
                let usage = if usage.is_zero() {
                    std::mem::take(&mut self.pending_usage)
                } else {
                    usage
                };
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
                if let Some(cost) = v
                    .get("total_cost_usd")
                    .and_then(Value::as_f64)
                    .filter(|c| c.is_finite() && *c >= 0.0)
                {
                    out.push(AgentEvent::Cost { usd: cost });
                }
                let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let text = str_at(&v, &["result"]).unwrap_or("").to_string();
                let text_err = if self.api_error_text && !is_error {
                    self.text_error(&text)
                } else {
                    None
                };
                if let Some(e) = text_err {
                    let (class, message) = match &e {
                        AgentEvent::Error { class, message } => (*class, message.clone()),
                        _ => unreachable!(),
                    };
                    out.push(e);
                    self.ev.terminal = Some(Err((class, message)));
                } else if !is_error && subtype == Some("success") {
                    self.ev.terminal = Some(Ok(()));
                } else {
                    let status = v.get("api_error_status").and_then(Value::as_u64);
                    let errors = v
                        .get("errors")
                        .and_then(Value::as_array)
                        .map(|e| {
                            e.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    let message = [text.as_str(), errors.as_str(), subtype.unwrap_or("")]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .unwrap_or("error")
                        .to_string();
                    let class = match (status, subtype) {
                        (Some(s), _) => Self::error_class("", Some(s)),
                        (None, Some("error_max_turns" | "error_max_budget_usd")) => {
                            ErrorClass::Agent
                        }
                        _ => classify_text(&message),
                    };
                    // A 429 whose words say "usage limit" is a quota, not a transient limit.
                    let class = if class == ErrorClass::RateLimited
                        && classify_text(&message) == ErrorClass::QuotaExhausted
                    {
                        ErrorClass::QuotaExhausted
                    } else {
                        class
                    };
                    out.push(AgentEvent::Error {
                        class,
                        message: message.clone(),
                    });
                    self.ev.terminal = Some(Err((class, message)));
                }
            }
            _ => {}
        }
        out
    }

    fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.ev.stderr(line);
        if self.api_error_text {
            // qwen: its debug log (tailed as side lines) is the only place it admits retrying.
            return self.ev.cli_retry_line(line).into_iter().collect();
        }
        Vec::new()
    }

    fn verdict(&self) -> Option<Outcome> {
        if self.api_error_text {
            self.ev.verdict()
        } else {
            None
        }
    }

    fn flush(&mut self) -> Vec<AgentEvent> {
        if self.saw_result || self.pending_usage.is_zero() {
            return Vec::new();
        }
        vec![AgentEvent::Usage(std::mem::take(&mut self.pending_usage))]
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        self.ev.classify(end)
    }
}

fn first_text(msg: &Value) -> Option<String> {
    msg.get("content")?.as_array()?.iter().find_map(|b| {
        (str_at(b, &["type"]) == Some("text"))
            .then(|| str_at(b, &["text"]).unwrap_or("").to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutcomeClass;
    use crate::cli::testing::*;

    #[test]
    fn launch_is_headless_and_keeps_secrets_out_of_argv() {
        let l = launch_with(&Claude, Some("http://127.0.0.1:9/s/ok"), Some("be brief"));
        assert_eq!(l.program, "claude");
        for flag in [
            "-p",
            "--verbose",
            "--dangerously-skip-permissions",
            "--append-system-prompt",
        ] {
            assert!(
                l.args.iter().any(|a| a == flag),
                "{flag} missing: {:?}",
                l.args
            );
        }
        assert_eq!(l.env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:9/s/ok");
        assert_eq!(l.env["IS_SANDBOX"], "1");
        assert_eq!(l.env["HOME"], "/tmp/home");
        assert_eq!(l.stdin, Stdin::Text("create hello.txt".into()));
        assert!(l.secret_env.contains(&"ANTHROPIC_API_KEY".to_string()));
        assert_no_secret_in_argv(&l);
    }

    fn run(lines: &[&str], code: i32) -> crate::Replay {
        crate::replay(
            &Claude,
            &lines.join("\n"),
            "",
            &ProcessEnd::from_exit_status(code),
        )
    }

    #[test]
    fn success_with_cost_usage_and_session() {
        let r = run(
            &[
                r#"{"type":"system","subtype":"init","session_id":"s-1","model":"m"}"#,
                r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/a","content":"x"}}],"usage":{"input_tokens":5,"output_tokens":2}}}"#,
                r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}"#,
                r#"{"type":"assistant","message":{"content":[{"type":"text","text":"DONE"}]}}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"result":"DONE","session_id":"s-1","total_cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":3}}"#,
            ],
            0,
        );
        assert_eq!(r.outcome.class, OutcomeClass::Succeeded);
        assert_eq!(r.session_id.as_deref(), Some("s-1"));
        assert_eq!(r.cost_usd, Some(0.25));
        assert_eq!(
            r.usage.input_tokens, 10,
            "result usage replaces per-message usage"
        );
        assert_eq!(r.usage.cache_read_tokens, 3);
        assert_eq!(r.final_text.as_deref(), Some("DONE"));
    }

    #[test]
    fn success_subtype_with_is_error_is_a_failure() {
        let r = run(
            &[
                r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"error_status":429,"error":"rate_limit"}"#,
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1774447200,"rateLimitType":"five_hour"}}"#,
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429) · slow down"}"#,
            ],
            1,
        );
        assert_eq!(r.outcome.class, OutcomeClass::RateLimited);
        assert_eq!(r.outcome.resets_at, Some(1774447200));
    }

    #[test]
    fn auth_and_overload_and_no_result() {
        let auth = run(
            &[
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key · Fix external API key"}"#,
            ],
            1,
        );
        assert_eq!(auth.outcome.class, OutcomeClass::AuthFailed);
        let over = run(
            &[
                r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 Overloaded."}"#,
            ],
            1,
        );
        assert_eq!(over.outcome.class, OutcomeClass::Overloaded);
        let killed = run(
            &[r#"{"type":"system","subtype":"init","session_id":"s"}"#],
            143,
        );
        assert_eq!(killed.outcome.class, OutcomeClass::Crashed);
        let quiet = run(
            &[r#"{"type":"system","subtype":"init","session_id":"s"}"#],
            0,
        );
        assert_eq!(quiet.outcome.class, OutcomeClass::NoResult);
    }
}
