//! Qwen Code (`qwen --output-format stream-json --yolo`), a gemini-cli fork that speaks
//! OpenAI Chat Completions and prints **claude-shaped** stream-json.
//!
//! Trap handled: a 401 exits 0 with `is_error: false`; the error is only the text
//! `[API Error: 401 …]`, so the parser reads assistant and result text for it.

use super::claude::ClaudeStream;
use super::codex::openai_base;
use super::{base_env, file, secret, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct Qwen;

impl Adapter for Qwen {
    fn name(&self) -> &'static str {
        "qwen"
    }
    fn binary(&self) -> &'static str {
        "qwen"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["OPENAI_API_KEY", "DASHSCOPE_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::RealBinary
    }
    // `--resume <session>` continues the conversation in the same home (verified with the real
    // binary: `crates/fleet/tests/real_agents.rs`).
    fn can_resume(&self) -> bool {
        true
    }
    // A resumed session's `result` reports the whole session's usage (seen with the real
    // binary: 2,000 input tokens fresh, 4,000 after one resumed run of the same size).
    fn usage_spans_resumed_session(&self) -> bool {
        true
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let (key_name, key) = secret(
            req,
            &["OPENAI_API_KEY", "DASHSCOPE_API_KEY", "QWEN_API_KEY"],
        )
        .ok_or_else(|| {
            AdapterError(
                "qwen needs OPENAI_API_KEY (or DASHSCOPE_API_KEY) among the account's secrets"
                    .into(),
            )
        })?;
        let mut args: Vec<String> = [
            "--output-format",
            "stream-json",
            "--yolo",
            "--auth-type",
            "openai",
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
        if let Some(id) = req.resume_session {
            args.extend(["--resume".into(), id.into()]);
        }
        // --debug writes ~/.qwen/debug/<session>.txt, where qwen logs the retries it makes.
        args.extend(["--debug".into(), "--prompt".into(), " ".into()]);
        let mut env = base_env(req);
        if key_name != "OPENAI_API_KEY" {
            env.insert("OPENAI_API_KEY".into(), key.into());
        }
        if let Some(url) = req.base_url {
            env.insert("OPENAI_BASE_URL".into(), openai_base(url));
        }
        if let Some(m) = req.model {
            env.insert("OPENAI_MODEL".into(), m.into());
        }
        let mut settings = serde_json::json!({
            "privacy": {"usageStatisticsEnabled": false},
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
            // Caps its inner retries; its outer 7-attempt loop has no knob (the stall timeout ends it).
            "model": {"generationConfig": {"timeout": 60_000, "maxRetries": 1}},
        });
        if let Some(mcp) = req.mcp {
            let (name, entry) = mcp.json_entry();
            settings["mcpServers"] = serde_json::json!({name: entry});
        }
        let mut secret_env = secret_names(req);
        secret_env.push("OPENAI_API_KEY".into());
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files: vec![file(
                req.home.join(".qwen/settings.json"),
                settings.to_string(),
                false,
            )],
            stdin: Stdin::Text(req.prompt.to_string()),
            secret_env,
            side_logs: Some(req.home.join(".qwen/debug")),
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(ClaudeStream::new(true))
    }

    /// A `PostToolUse` hook on its file-writing tools in the attempt's `~/.qwen/settings.json`:
    /// exit 2 passes the hook's stderr to the model as error feedback.
    fn add_post_edit_hook(
        &self,
        launch: &mut Launch,
        home: &std::path::Path,
        command: &str,
    ) -> bool {
        super::add_settings_hook(
            launch,
            &home.join(".qwen/settings.json"),
            "PostToolUse",
            "WriteFile|Edit|write_file|edit|replace",
            &format!("{command} json"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::*;
    use crate::{OutcomeClass, ProcessEnd};

    #[test]
    fn a_401_that_exits_0_is_auth_failed() {
        let r = crate::replay(
            &Qwen,
            "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"q1\"}\n\
             {\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"[API Error: 401 Incorrect API key provided]\"}]}}\n\
             {\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"[API Error: 401 Incorrect API key provided]\"}",
            "",
            &ProcessEnd::from_exit_status(0),
        );
        assert_eq!(r.outcome.class, OutcomeClass::AuthFailed);
    }

    #[test]
    fn launch_points_chat_completions_at_the_base_url() {
        let l = launch_with(&Qwen, Some("http://127.0.0.1:9/s/ok"), None);
        assert_eq!(l.env["OPENAI_BASE_URL"], "http://127.0.0.1:9/s/ok/v1");
        assert!(l.args.windows(2).any(|w| w == ["--auth-type", "openai"]));
        assert_no_secret_in_argv(&l);
    }
}
