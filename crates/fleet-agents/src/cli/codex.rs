//! OpenAI Codex (`codex exec --json`).
//!
//! Codex speaks only the Responses API. Fleet writes a `config.toml` into a private
//! `CODEX_HOME` with its own provider block, which is where the base URL, the key's env var and
//! the retry caps go (its defaults retry a 401 five times and wait 300 s on a silent stream).
//! Exit codes are only 0/1, so the outcome comes from `turn.failed` and `error` events.

use super::{base_env, file, json_line, secret, secret_names, str_at, u64_at};
use crate::outcome::{Evidence, classify_text};
use crate::{
    Adapter, AdapterError, AgentEvent, AttemptRequest, ErrorClass, Launch, Outcome, Parser,
    ProcessEnd, Stdin, Usage, Verification,
};
use serde_json::Value;

pub struct Codex;

/// A TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// OpenAI-style base URLs end in `/v1`; a bare server address gets it appended.
pub(crate) fn openai_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_string()
    } else {
        format!("{url}/v1")
    }
}

impl Adapter for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }
    fn binary(&self) -> &'static str {
        "codex"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["OPENAI_API_KEY", "CODEX_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::RealBinary
    }
    fn can_resume(&self) -> bool {
        true
    }
    fn usage_spans_resumed_session(&self) -> bool {
        true
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let codex_home = req.home.join(".codex");
        let (key_name, _) = secret(req, &["OPENAI_API_KEY", "CODEX_API_KEY"]).ok_or_else(|| {
            AdapterError(
                "codex needs OPENAI_API_KEY (or CODEX_API_KEY) among the account's secrets".into(),
            )
        })?;
        let base = openai_base(req.base_url.unwrap_or("https://api.openai.com/v1"));
        let mut config = String::new();
        if let Some(m) = req.model {
            config.push_str(&format!("model = {}\n", toml_str(m)));
        }
        config.push_str("model_provider = \"fleet\"\n");
        if let Some(sys) = req.system.filter(|s| !s.trim().is_empty()) {
            config.push_str(&format!("developer_instructions = {}\n", toml_str(sys)));
        }
        config.push_str(&format!(
            "\n[model_providers.fleet]\nname = \"fleet\"\nbase_url = {}\nenv_key = {}\nwire_api = \"responses\"\n\
             request_max_retries = 1\nstream_max_retries = 1\nstream_idle_timeout_ms = 60000\n",
            toml_str(&base),
            toml_str(key_name)
        ));
        if let Some(mcp) = req.mcp {
            let env: Vec<String> = mcp
                .env
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            let args: Vec<String> = mcp.args.iter().map(|a| toml_str(a)).collect();
            config.push_str(&format!(
                "\n[mcp_servers.{}]\ncommand = {}\nargs = [{}]\nenv = {{ {} }}\n",
                mcp.name,
                toml_str(&mcp.command),
                args.join(", "),
                env.join(", ")
            ));
        }
        let mut args: Vec<String> = vec![
            "exec".into(),
            "--json".into(),
            "--skip-git-repo-check".into(),
        ];
        args.extend(["-C".into(), req.workdir.display().to_string()]);
        args.push("--dangerously-bypass-approvals-and-sandbox".into());
        if let Some(id) = req.resume_session {
            args.extend(["resume".into(), id.into()]);
        }
        args.push("-".into());
        let mut env = base_env(req);
        env.insert("CODEX_HOME".into(), codex_home.display().to_string());
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files: vec![file(codex_home.join("config.toml"), config, false)],
            stdin: Stdin::Text(req.prompt.to_string()),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(CodexStream::default())
    }
}

#[derive(Default)]
struct CodexStream {
    ev: Evidence,
}

impl Parser for CodexStream {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Some(v) = json_line(line) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match str_at(&v, &["type"]).unwrap_or("") {
            "thread.started" => {
                if let Some(id) = str_at(&v, &["thread_id"]) {
                    out.push(AgentEvent::Session { id: id.into() });
                }
            }
            "item.started" | "item.completed" => {
                let done = str_at(&v, &["type"]) == Some("item.completed");
                let item = v.get("item").unwrap_or(&Value::Null);
                match (str_at(item, &["type"]).unwrap_or(""), done) {
                    ("agent_message", true) => {
                        if let Some(t) = str_at(item, &["text"]) {
                            out.push(AgentEvent::Message { text: t.into() });
                        }
                    }
                    ("command_execution", false) => out.push(AgentEvent::ToolCall {
                        name: "shell".into(),
                        input: serde_json::json!({"command": str_at(item, &["command"]).unwrap_or("")}),
                    }),
                    ("command_execution", true) => out.push(AgentEvent::ToolResult {
                        name: Some("shell".into()),
                        ok: item.get("exit_code").and_then(Value::as_i64) == Some(0),
                        output: str_at(item, &["aggregated_output"]).unwrap_or("").into(),
                    }),
                    ("file_change", true) => out.push(AgentEvent::ToolCall {
                        name: "file_change".into(),
                        input: item.get("changes").cloned().unwrap_or(Value::Null),
                    }),
                    ("mcp_tool_call", true) => out.push(AgentEvent::ToolCall {
                        name: format!(
                            "{}.{}",
                            str_at(item, &["server"]).unwrap_or("mcp"),
                            str_at(item, &["tool"]).unwrap_or("?")
                        ),
                        input: item.get("arguments").cloned().unwrap_or(Value::Null),
                    }),
                    _ => {}
                }
            }
            "turn.completed" => {
                let u = v.get("usage").unwrap_or(&Value::Null);
                let input = u64_at(u, &["input_tokens"]);
                let cached = u64_at(u, &["cached_input_tokens"]);
                out.push(AgentEvent::Usage(Usage {
                    input_tokens: input.saturating_sub(cached),
                    output_tokens: u64_at(u, &["output_tokens"]),
                    cache_read_tokens: cached,
                    cache_write_tokens: 0,
                }));
                self.ev.terminal = Some(Ok(()));
            }
            "turn.failed" => {
                let message = str_at(&v, &["error", "message"])
                    .unwrap_or("turn failed")
                    .to_string();
                let class = classify_text(&message);
                out.push(AgentEvent::Error {
                    class,
                    message: message.clone(),
                });
                self.ev.terminal = Some(Err((class, message)));
            }
            "error" => {
                let message = str_at(&v, &["message"]).unwrap_or("").to_string();
                let class = classify_text(&message);
                self.ev.error(class, message.clone());
                if let Some(n) = message
                    .strip_prefix("Reconnecting... ")
                    .and_then(|r| r.split('/').next())
                {
                    out.push(AgentEvent::Retrying {
                        attempt: n.trim().parse().unwrap_or(0),
                        class,
                        detail: message,
                    });
                } else {
                    out.push(AgentEvent::Error { class, message });
                }
            }
            _ => {}
        }
        out
    }

    fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.ev.stderr(line);
        Vec::new()
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        // Codex may print `turn.completed` and still exit 1 on a late fatal error.
        if end.exit_code == Some(1)
            && matches!(self.ev.terminal, Some(Ok(())))
            && !self.ev.errors.is_empty()
        {
            let (c, m) = self
                .ev
                .errors
                .last()
                .cloned()
                .unwrap_or((ErrorClass::Agent, "exit 1".into()));
            self.ev.terminal = Some(Err((c, m)));
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
    fn launch_writes_a_private_provider_block() {
        let l = launch_with(&Codex, Some("http://127.0.0.1:9/s/ok"), Some("say \"hi\""));
        assert_eq!(&l.args[..3], ["exec", "--json", "--skip-git-repo-check"]);
        assert_eq!(l.args.last().unwrap(), "-");
        let cfg = &l.files[0];
        assert!(cfg.path.ends_with(".codex/config.toml"));
        assert!(
            cfg.contents
                .contains("base_url = \"http://127.0.0.1:9/s/ok/v1\""),
            "{}",
            cfg.contents
        );
        assert!(cfg.contents.contains("env_key = \"OPENAI_API_KEY\""));
        assert!(cfg.contents.contains("request_max_retries = 1"));
        assert!(
            cfg.contents
                .contains("developer_instructions = \"say \\\"hi\\\"\"")
        );
        assert_eq!(l.env["CODEX_HOME"], "/tmp/home/.codex");
        assert_no_secret_in_argv(&l);
    }

    #[test]
    fn parses_a_run_and_its_failures() {
        let ok = crate::replay(
            &Codex,
            "{\"type\":\"thread.started\",\"thread_id\":\"th-1\"}\n{\"type\":\"turn.started\"}\n\
             {\"type\":\"item.started\",\"item\":{\"id\":\"i1\",\"type\":\"command_execution\",\"command\":\"echo hi > a\",\"status\":\"in_progress\"}}\n\
             {\"type\":\"item.completed\",\"item\":{\"id\":\"i1\",\"type\":\"command_execution\",\"command\":\"echo hi > a\",\"aggregated_output\":\"\",\"exit_code\":0,\"status\":\"completed\"}}\n\
             {\"type\":\"item.completed\",\"item\":{\"id\":\"i2\",\"type\":\"agent_message\",\"text\":\"done\"}}\n\
             {\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":100,\"cached_input_tokens\":40,\"output_tokens\":7}}",
            "",
            &ProcessEnd::from_exit_status(0),
        );
        assert_eq!(ok.outcome.class, OutcomeClass::Succeeded);
        assert_eq!(ok.session_id.as_deref(), Some("th-1"));
        assert_eq!(
            (
                ok.usage.input_tokens,
                ok.usage.cache_read_tokens,
                ok.usage.output_tokens
            ),
            (60, 40, 7)
        );
        let limited = crate::replay(
            &Codex,
            "{\"type\":\"error\",\"message\":\"Reconnecting... 1/1 (exceeded retry limit, last status: 429 Too Many Requests)\"}\n\
             {\"type\":\"turn.failed\",\"error\":{\"message\":\"exceeded retry limit, last status: 429 Too Many Requests\"}}",
            "",
            &ProcessEnd::from_exit_status(1),
        );
        assert_eq!(limited.outcome.class, OutcomeClass::RateLimited);
        let auth = crate::replay(
            &Codex,
            "{\"type\":\"turn.failed\",\"error\":{\"message\":\"unexpected status 401 Unauthorized: bad key\"}}",
            "",
            &ProcessEnd::from_exit_status(1),
        );
        assert_eq!(auth.outcome.class, OutcomeClass::AuthFailed);
    }
}
