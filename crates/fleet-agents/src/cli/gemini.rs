//! Gemini CLI (`gemini --output-format stream-json --yolo`).
//!
//! Needs a settings file selecting API-key auth (with `GOOGLE_GEMINI_BASE_URL` set it would
//! otherwise pick "gateway" auth and exit 41). It has no flag to append to the system prompt, so
//! the extra instructions go in front of the prompt (a `GEMINI.md` would land in the worktree).
//! A 401 exits 145 with `result.status == "error"`; other API errors are retried for minutes
//! with no output on stdout — only the supervisor's stall timeout ends those.

use super::{base_env, file, json_line, prompt_with_system, secret_names, str_at, u64_at};
use crate::outcome::{Evidence, classify_text};
use crate::{
    Adapter, AdapterError, AgentEvent, AttemptRequest, ErrorClass, Launch, Outcome, Parser,
    ProcessEnd, Stdin, Usage, Verification,
};
use serde_json::Value;

pub struct Gemini;

impl Adapter for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }
    fn binary(&self) -> &'static str {
        "gemini"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["GEMINI_API_KEY", "GOOGLE_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::RealBinary
    }
    // The CLI has a resume flag (built in `launch`), but the pinned release (and the newest,
    // 0.61.0) replays each earlier tool result twice in a resumed history
    // (google-gemini/gemini-cli#29365), which the Gemini API refuses with 400: fleet starts it
    // afresh, with the handoff note. `gemini_resume_still_replays_tool_results_twice` in
    // `crates/fleet/tests/real_agents.rs` fails once a release fixes it.
    fn can_resume(&self) -> bool {
        false
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = ["--output-format", "stream-json", "--yolo", "--skip-trust"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        if let Some(id) = req.resume_session {
            args.extend(["--resume".into(), id.into()]);
        }
        // `-p` turns on headless mode; the prompt itself comes on stdin (argv is size-limited).
        args.extend(["--prompt".into(), " ".into()]);
        let mut env = base_env(req);
        env.insert("GEMINI_CLI_TRUST_WORKSPACE".into(), "true".into());
        if let Some(url) = req.base_url {
            env.insert(
                "GOOGLE_GEMINI_BASE_URL".into(),
                url.trim_end_matches('/').into(),
            );
        }
        let mut settings = serde_json::json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": false},
            // Its default retries API errors for minutes; fleet swaps agents instead.
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true, "maxAttempts": 2},
        });
        if let Some(mcp) = req.mcp {
            let (name, entry) = mcp.json_entry();
            settings["mcpServers"] = serde_json::json!({name: entry});
        }
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files: vec![file(
                req.home.join(".gemini/settings.json"),
                settings.to_string(),
                false,
            )],
            stdin: Stdin::Text(prompt_with_system(req)),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(GeminiStream::default())
    }

    /// An `AfterTool` hook on its file-writing tools in the attempt's `~/.gemini/settings.json`:
    /// exit 2 replaces the tool's result with the hook's stderr and the turn goes on.
    fn add_post_edit_hook(
        &self,
        launch: &mut Launch,
        home: &std::path::Path,
        command: &str,
    ) -> bool {
        super::add_settings_hook(
            launch,
            &home.join(".gemini/settings.json"),
            "AfterTool",
            "write_file|replace",
            command,
        )
    }
}

/// Gemini's stream-json (qwen's JSON is claude-shaped, not this).
#[derive(Default)]
pub(crate) struct GeminiStream {
    ev: Evidence,
    /// Assistant text arrives in deltas; it is emitted as one message when something else comes.
    text: String,
}

impl GeminiStream {
    fn flush_text(&mut self, out: &mut Vec<AgentEvent>) {
        if !self.text.trim().is_empty() {
            out.push(AgentEvent::Message {
                text: std::mem::take(&mut self.text),
            });
        }
        self.text.clear();
    }
}

impl Parser for GeminiStream {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Some(v) = json_line(line) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let kind = str_at(&v, &["type"]).unwrap_or("");
        if kind != "message" {
            self.flush_text(&mut out);
        }
        match kind {
            "init" => {
                if let Some(id) = str_at(&v, &["session_id"]) {
                    out.push(AgentEvent::Session { id: id.into() });
                }
            }
            "message" if str_at(&v, &["role"]) == Some("assistant") => {
                if let Some(t) = str_at(&v, &["content"]) {
                    self.text.push_str(t);
                }
            }
            "tool_use" => out.push(AgentEvent::ToolCall {
                name: str_at(&v, &["tool_name"]).unwrap_or("?").into(),
                input: v.get("parameters").cloned().unwrap_or(Value::Null),
            }),
            "tool_result" => out.push(AgentEvent::ToolResult {
                name: None,
                ok: str_at(&v, &["status"]) == Some("success"),
                output: str_at(&v, &["output"])
                    .or(str_at(&v, &["error", "message"]))
                    .unwrap_or("")
                    .into(),
            }),
            "error" => {
                let message = str_at(&v, &["message"]).unwrap_or("").to_string();
                if str_at(&v, &["severity"]) == Some("error") {
                    let class = classify_text(&message);
                    self.ev.error(class, message.clone());
                    out.push(AgentEvent::Error { class, message });
                }
            }
            "result" => {
                let stats = v.get("stats").unwrap_or(&Value::Null);
                let cached = u64_at(stats, &["cached"]);
                let usage = Usage {
                    input_tokens: u64_at(stats, &["input_tokens"]).saturating_sub(cached),
                    output_tokens: u64_at(stats, &["output_tokens"]),
                    cache_read_tokens: cached,
                    cache_write_tokens: 0,
                };
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
                if str_at(&v, &["status"]) == Some("success") {
                    self.ev.terminal = Some(Ok(()));
                } else {
                    let kind = str_at(&v, &["error", "type"]).unwrap_or("");
                    let message = str_at(&v, &["error", "message"])
                        .unwrap_or("error")
                        .to_string();
                    let class = match kind {
                        "TerminalQuotaError" => ErrorClass::QuotaExhausted,
                        "RetryableQuotaError" => ErrorClass::RateLimited,
                        "FatalAuthenticationError" => ErrorClass::AuthFailed,
                        _ => classify_text(&format!("{kind} {message}")),
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
        // "Attempt 2 failed with status 429. Retrying with backoff..." — only stderr says so.
        self.ev.cli_retry_line(line).into_iter().collect()
    }

    fn verdict(&self) -> Option<Outcome> {
        self.ev.verdict()
    }

    fn flush(&mut self) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        self.flush_text(&mut out);
        out
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        if self.ev.terminal.is_none() && end.exit_code == Some(41) {
            return Outcome::new(crate::OutcomeClass::AuthFailed)
                .with_detail("gemini exit 41 (authentication)");
        }
        self.ev.classify(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutcomeClass;
    use crate::cli::testing::*;

    #[test]
    fn launch_selects_api_key_auth_and_prepends_system_text() {
        let l = launch_with(&Gemini, Some("http://127.0.0.1:9/s/ok/"), Some("RULES"));
        assert_eq!(l.env["GOOGLE_GEMINI_BASE_URL"], "http://127.0.0.1:9/s/ok");
        assert!(l.files[0].contents.contains("gemini-api-key"));
        match &l.stdin {
            Stdin::Text(t) => assert!(t.starts_with("RULES") && t.ends_with("create hello.txt")),
            other => panic!("{other:?}"),
        }
        assert_no_secret_in_argv(&l);
    }

    #[test]
    fn deltas_join_and_401_exits_145() {
        let r = crate::replay(
            &Gemini,
            "{\"type\":\"init\",\"session_id\":\"g1\",\"model\":\"auto\"}\n\
             {\"type\":\"message\",\"role\":\"assistant\",\"content\":\"Hel\",\"delta\":true}\n\
             {\"type\":\"message\",\"role\":\"assistant\",\"content\":\"lo\",\"delta\":true}\n\
             {\"type\":\"result\",\"status\":\"success\",\"stats\":{\"total_tokens\":12,\"input_tokens\":10,\"output_tokens\":2,\"cached\":0}}",
            "",
            &ProcessEnd::from_exit_status(0),
        );
        assert_eq!(r.outcome.class, OutcomeClass::Succeeded);
        assert_eq!(r.final_text.as_deref(), Some("Hello"));
        let auth = crate::replay(
            &Gemini,
            "{\"type\":\"result\",\"status\":\"error\",\"error\":{\"type\":\"unknown\",\"message\":\"[API Error: {\\\"error\\\":{\\\"code\\\":401,\\\"status\\\":\\\"UNAUTHENTICATED\\\"}}]\"}}",
            "",
            &ProcessEnd::from_exit_status(145),
        );
        assert_eq!(auth.outcome.class, OutcomeClass::AuthFailed);
    }
}
