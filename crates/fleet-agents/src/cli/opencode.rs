//! opencode (`opencode run --format json --auto`).
//!
//! Config goes into a private `opencode.json` under the attempt's XDG config home (not the
//! worktree): the model's provider gets the base URL; keys come from the provider's env var.
//! Without `--auto`, permission requests are auto-rejected in non-interactive runs.

use super::codex::openai_base;
use super::{base_env, file, json_line, secret_names, str_at, u64_at};
use crate::outcome::{Evidence, classify_text};
use crate::{
    Adapter, AdapterError, AgentEvent, AttemptRequest, Launch, Outcome, Parser, ProcessEnd, Stdin,
    Usage, Verification,
};
use serde_json::{Value, json};

pub struct Opencode;

impl Adapter for Opencode {
    fn name(&self) -> &'static str {
        "opencode"
    }
    fn binary(&self) -> &'static str {
        "opencode"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &[
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "OPENROUTER_API_KEY",
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
        let model = qualified_model(req.model.unwrap_or("anthropic/claude-sonnet-4-5"))?;
        let model = model.as_str();
        let (provider, _) = model.split_once('/').expect("qualified");
        let mut config = json!({
            "model": model,
            "autoupdate": false,
            "share": "disabled",
        });
        if let Some(url) = req.base_url {
            config["provider"] =
                json!({ provider: { "options": { "baseURL": openai_base(url) } } });
        }
        // Without these a server that never answers is waited on forever.
        config["provider"][provider]["options"]["headerTimeout"] = json!(60_000);
        config["provider"][provider]["options"]["chunkTimeout"] = json!(60_000);
        let mut files = Vec::new();
        if let Some(sys) = req.system.filter(|s| !s.trim().is_empty()) {
            let path = req.home.join("fleet-instructions.md");
            config["instructions"] = json!([path.display().to_string()]);
            files.push(file(path, sys.to_string(), false));
        }
        files.push(file(
            req.home.join(".config/opencode/opencode.json"),
            config.to_string(),
            false,
        ));
        // Its retries (honouring a server's Retry-After, even an hour) are silent on stdout;
        // with its logs on stderr, fleet sees them and stops waiting.
        let mut args: Vec<String> = [
            "run",
            "--format",
            "json",
            "--auto",
            "--print-logs",
            "--log-level",
            "WARN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--model".into(), model.into()]);
        args.extend(["--dir".into(), req.workdir.display().to_string()]);
        if let Some(id) = req.resume_session {
            args.extend(["--session".into(), id.into()]);
        }
        let mut env = base_env(req);
        env.insert("OPENCODE_DISABLE_MODELS_FETCH".into(), "1".into());
        env.insert("OPENCODE_DISABLE_AUTOUPDATE".into(), "1".into());
        env.insert("OPENCODE_DISABLE_SHARE".into(), "1".into());
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files,
            stdin: Stdin::Text(req.prompt.to_string()),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(OpencodeStream::default())
    }
}

/// opencode wants `provider/model`; a bare well-known model name gets its provider.
fn qualified_model(model: &str) -> Result<String, AdapterError> {
    if model.contains('/') {
        return Ok(model.to_string());
    }
    let provider = if model.starts_with("claude") {
        "anthropic"
    } else if model.starts_with("gpt") || model.starts_with("o3") || model.starts_with("o4") {
        "openai"
    } else if model.starts_with("gemini") {
        "google"
    } else {
        return Err(AdapterError(format!(
            "opencode models are `provider/model` (e.g. anthropic/claude-sonnet-4-5); got {model:?}"
        )));
    };
    Ok(format!("{provider}/{model}"))
}

#[derive(Default)]
struct OpencodeStream {
    ev: Evidence,
    stopped: bool,
    /// opencode's own words when the model is not one it knows: on stdout it says only
    /// "UnknownError Unexpected server error", the reason is in its stderr log.
    unknown_model: Option<String>,
}

/// `… error="ProviderModelNotFoundError: Model not found: anthropic/x. Did you mean: a, b?" …`
/// -> `Model not found: anthropic/x. Did you mean: a, b?`
fn model_not_found(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("ModelNotFoundError: ")?;
    let text: String = rest
        .split('"')
        .next()
        .unwrap_or(rest)
        .chars()
        .take(300)
        .collect();
    Some(text.trim().to_string())
}

impl Parser for OpencodeStream {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Some(v) = json_line(line) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(id) = str_at(&v, &["sessionID"])
            && str_at(&v, &["type"]) == Some("step_start")
        {
            out.push(AgentEvent::Session { id: id.into() });
        }
        let part = v.get("part").unwrap_or(&Value::Null);
        match str_at(&v, &["type"]).unwrap_or("") {
            "text" => {
                if let Some(t) = str_at(part, &["text"]).filter(|t| !t.trim().is_empty()) {
                    out.push(AgentEvent::Message { text: t.into() });
                }
            }
            "tool_use" => {
                let state = part.get("state").unwrap_or(&Value::Null);
                let name = str_at(part, &["tool"]).unwrap_or("?").to_string();
                out.push(AgentEvent::ToolCall {
                    name: name.clone(),
                    input: state.get("input").cloned().unwrap_or(Value::Null),
                });
                let ok = str_at(state, &["status"]) == Some("completed");
                let output = str_at(state, &["output"])
                    .or(str_at(state, &["error"]))
                    .unwrap_or("");
                out.push(AgentEvent::ToolResult {
                    name: Some(name),
                    ok,
                    output: output.into(),
                });
            }
            "step_finish" => {
                let t = part.get("tokens").unwrap_or(&Value::Null);
                let usage = Usage {
                    input_tokens: u64_at(t, &["input"]),
                    output_tokens: u64_at(t, &["output"]) + u64_at(t, &["reasoning"]),
                    cache_read_tokens: u64_at(t, &["cache", "read"]),
                    cache_write_tokens: u64_at(t, &["cache", "write"]),
                };
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
                if let Some(c) = part
                    .get("cost")
                    .and_then(Value::as_f64)
                    .filter(|c| c.is_finite() && *c > 0.0)
                {
                    out.push(AgentEvent::Cost { usd: c });
                }
                if str_at(part, &["reason"]) == Some("stop") {
                    self.stopped = true;
                }
            }
            "error" => {
                let e = v.get("error").unwrap_or(&Value::Null);
                let message = str_at(e, &["data", "message"])
                    .or(str_at(e, &["message"]))
                    .unwrap_or("error");
                let name = str_at(e, &["name"]).unwrap_or("");
                let status = e.pointer("/data/statusCode").and_then(Value::as_u64);
                let text = format!(
                    "{name} {}{message}",
                    status.map(|s| format!("{s} ")).unwrap_or_default()
                );
                let class = classify_text(&text);
                // The provider's response headers ride along: they say when a limit resets.
                if let Some(h) = e.pointer("/data/responseHeaders") {
                    let get = |k: &str| h.get(k).and_then(Value::as_str);
                    let epoch = ["anthropic-ratelimit-unified-reset", "x-ratelimit-reset"]
                        .iter()
                        .find_map(|k| get(k).and_then(|v| v.trim().parse::<i64>().ok()));
                    let stamp = [
                        "anthropic-ratelimit-requests-reset",
                        "anthropic-ratelimit-tokens-reset",
                    ]
                    .iter()
                    .find_map(|k| get(k).and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok()))
                    .map(|t| t.timestamp());
                    if let Some(t) = epoch.or(stamp) {
                        self.ev.resets_at = Some(t);
                    }
                }
                self.ev.error(class, text.trim());
                out.push(AgentEvent::Error {
                    class,
                    message: message.into(),
                });
            }
            _ => {}
        }
        out
    }

    fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.ev.stderr(line);
        if self.unknown_model.is_none() {
            self.unknown_model = model_not_found(line);
        }
        // `level=ERROR … message="stream error" … error.error="AI_APICallError: <message>"`
        if !line.contains("message=\"stream error\"") {
            return Vec::new();
        }
        let Some((_, err)) = line.split_once("error.error=\"") else {
            return Vec::new();
        };
        let detail: String = err
            .split('"')
            .next()
            .unwrap_or(err)
            .chars()
            .take(300)
            .collect();
        let class = classify_text(&detail);
        self.ev.error(class, detail.clone());
        self.ev.cli_retries.push(class);
        vec![AgentEvent::Retrying {
            attempt: self.ev.cli_retries.len() as u32,
            class,
            detail,
        }]
    }

    fn verdict(&self) -> Option<Outcome> {
        self.ev.verdict()
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        // opencode has no terminal event: a finished step and a clean exit mean success.
        if self.stopped && end.exit_code == Some(0) && self.ev.errors.is_empty() {
            self.ev.terminal = Some(Ok(()));
        }
        let mut outcome = self.ev.classify(end);
        // A profile naming a model opencode does not know: the agent's configuration is
        // wrong (not the vendor, whose account must not cool down for it), and the detail
        // says so instead of "Unexpected server error".
        if let Some(why) = self.unknown_model.as_ref().filter(|_| !outcome.succeeded()) {
            outcome.class = crate::OutcomeClass::AgentError;
            outcome.detail = Some(format!("opencode does not know the model: {why}"));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutcomeClass;
    use crate::cli::testing::*;

    /// Recorded from opencode (the pinned version) against the scripted model server with
    /// `model: anthropic/claude-no-such-model-9`.
    #[test]
    fn an_unknown_model_says_so() {
        let mut p = Opencode.parser();
        p.stderr_line(r#"timestamp=2026-12-06T09:06:44.899Z level=ERROR run=f169f6fe message=failed ref=err_2b21f1f0 error="ProviderModelNotFoundError: Model not found: anthropic/claude-no-such-model-9. Did you mean: claude-fable-5, claude-fable-5-1, claude-haiku-4-5?" cause="ProviderModelNotFoundError: Model not found""#);
        p.stdout_line(r#"{"type":"error","timestamp":1796548004977,"sessionID":"ses_db565107dffeGu9MxUCpHOy1kS","error":{"name":"UnknownError","data":{"message":"Unexpected server error. Check server logs for details.","ref":"err_2b21f1f0"}}}"#);
        let o = p.finish(&ProcessEnd {
            exit_code: Some(1),
            ..ProcessEnd::default()
        });
        assert_eq!(o.class, OutcomeClass::AgentError);
        let detail = o.detail.unwrap();
        assert!(
            detail.starts_with("opencode does not know the model: Model not found: anthropic/claude-no-such-model-9. Did you mean: claude-fable-5"),
            "{detail}"
        );
        assert!(!detail.contains("Unexpected server error"), "{detail}");
    }

    #[test]
    fn launch_keeps_config_out_of_the_worktree() {
        let l = launch_model(
            &Opencode,
            "claude-sonnet-4-5",
            Some("http://127.0.0.1:9/s/ok"),
            Some("rules"),
        );
        assert!(
            l.args
                .windows(2)
                .any(|w| w == ["--model", "anthropic/claude-sonnet-4-5"])
        );
        assert!(l.files.iter().all(|f| f.path.starts_with("/tmp/home")));
        let cfg = l
            .files
            .iter()
            .find(|f| f.path.ends_with("opencode.json"))
            .unwrap();
        assert!(
            cfg.contents.contains("http://127.0.0.1:9/s/ok/v1"),
            "{}",
            cfg.contents
        );
        assert!(l.args.contains(&"--auto".to_string()));
        assert_no_secret_in_argv(&l);
    }

    #[test]
    fn steps_cost_and_errors() {
        let r = crate::replay(
            &Opencode,
            "{\"type\":\"step_start\",\"sessionID\":\"ses_1\",\"part\":{}}\n\
             {\"type\":\"tool_use\",\"sessionID\":\"ses_1\",\"part\":{\"tool\":\"write\",\"state\":{\"status\":\"completed\",\"input\":{\"filePath\":\"/a\"},\"output\":\"ok\"}}}\n\
             {\"type\":\"step_finish\",\"sessionID\":\"ses_1\",\"part\":{\"reason\":\"tool-calls\",\"cost\":0.01,\"tokens\":{\"input\":10,\"output\":5,\"reasoning\":0,\"cache\":{\"read\":2,\"write\":0}}}}\n\
             {\"type\":\"text\",\"sessionID\":\"ses_1\",\"part\":{\"text\":\"DONE\"}}\n\
             {\"type\":\"step_finish\",\"sessionID\":\"ses_1\",\"part\":{\"reason\":\"stop\",\"cost\":0.02,\"tokens\":{\"input\":1,\"output\":1,\"reasoning\":0,\"cache\":{\"read\":0,\"write\":0}}}}",
            "",
            &ProcessEnd::from_exit_status(0),
        );
        assert_eq!(r.outcome.class, OutcomeClass::Succeeded);
        assert!((r.cost_usd.unwrap() - 0.03).abs() < 1e-9);
        assert_eq!(r.usage.input_tokens, 11);
        let e = crate::replay(
            &Opencode,
            "{\"type\":\"error\",\"error\":{\"name\":\"APIError\",\"data\":{\"message\":\"Too Many Requests\",\"statusCode\":429}}}",
            "",
            &ProcessEnd::from_exit_status(1),
        );
        assert_eq!(e.outcome.class, OutcomeClass::RateLimited);
    }
}
