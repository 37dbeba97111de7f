//! The launch of an ACP agent: `cli: acp` with its own `command:`, or a built-in CLI with
//! `transport: acp` — its adapter's home, config, credentials and base URL, run in ACP mode.

use crate::cli::{base_env, secret_names};
use crate::{AdapterError, AttemptRequest, Launch, Stdin};

/// The program and arguments that start a built-in CLI's ACP agent (`claude` and `codex`
/// through Zed's adapters, installed by `scripts/install-agent-clis.sh`).
pub fn builtin_command(cli: &str, model: Option<&str>) -> Option<(String, Vec<String>)> {
    let with_model = |mut args: Vec<String>| {
        if let Some(m) = model {
            args.extend(["--model".into(), m.into()]);
        }
        args
    };
    Some(match cli {
        "gemini" => ("gemini".into(), with_model(vec!["--acp".into()])),
        // --debug: qwen logs the retries it makes only in ~/.qwen/debug/ (tailed as side logs).
        "qwen" => (
            "qwen".into(),
            with_model(vec![
                "--acp".into(),
                "--auth-type".into(),
                "openai".into(),
                "--debug".into(),
            ]),
        ),
        // The model is in the opencode.json the adapter writes; `acp` takes no --model. Its
        // logs on stderr are its only sign of life while it starts (20 s and more on a busy
        // machine) and retries.
        "opencode" => (
            "opencode".into(),
            vec![
                "acp".into(),
                "--print-logs".into(),
                "--log-level".into(),
                "INFO".into(),
            ],
        ),
        // Model: ANTHROPIC_MODEL (set below) for claude; config.toml for codex.
        "claude" => ("claude-code-acp".into(), Vec::new()),
        "codex" => ("codex-acp".into(), Vec::new()),
        _ => return None,
    })
}

/// CLIs with a built-in ACP mode.
pub const BUILTIN: &[&str] = &["gemini", "qwen", "opencode", "claude", "codex"];

/// Builds the launch. `command` is `cli: acp`'s command line (split on whitespace), `args`
/// its extra arguments; for a built-in CLI both may be empty.
pub fn launch(
    cli: &str,
    command: Option<&str>,
    args: &[String],
    req: &AttemptRequest<'_>,
) -> Result<Launch, AdapterError> {
    let mut launch = if cli == "acp" {
        let command = command.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
            AdapterError("`cli: acp` needs `command:` (the ACP agent to run)".into())
        })?;
        let mut words = command.split_whitespace().map(str::to_string);
        let program = words.next().expect("not blank");
        Launch {
            program,
            args: words.collect(),
            env: base_env(req),
            env_remove: Vec::new(),
            files: Vec::new(),
            stdin: Stdin::Null,
            secret_env: secret_names(req),
            side_logs: None,
        }
    } else {
        let adapter = crate::adapter(cli)
            .ok_or_else(|| AdapterError(format!("no adapter for cli {cli:?}")))?;
        let (program, acp_args) = builtin_command(cli, req.model).ok_or_else(|| {
            AdapterError(format!(
                "{cli} has no ACP mode in Fleet (built in: {}); use `cli: acp` with `command:`",
                BUILTIN.join(", ")
            ))
        })?;
        // The adapter's home, config files, credentials and base URL; not its command line
        // (no resume flag: ACP continues sessions through session/load).
        let plain = AttemptRequest {
            resume_session: None,
            ..req.clone()
        };
        let mut l = adapter.launch(&plain)?;
        l.program = command
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .unwrap_or(program);
        l.args = acp_args;
        l.stdin = Stdin::Null;
        if cli == "claude"
            && let Some(m) = req.model
        {
            l.env.insert("ANTHROPIC_MODEL".into(), m.into());
        }
        l
    };
    launch.args.extend(args.iter().cloned());
    Ok(launch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn req<'a>(
        secrets: &'a BTreeMap<String, String>,
        env: &'a BTreeMap<String, String>,
    ) -> AttemptRequest<'a> {
        AttemptRequest {
            prompt: "p",
            system: None,
            model: Some("m1"),
            workdir: Path::new("/w"),
            home: Path::new("/h"),
            base_url: Some("http://127.0.0.1:9/x"),
            secrets,
            env,
            max_turns: None,
            resume_session: Some("old"),
            mcp: None,
        }
    }

    #[test]
    fn a_builtin_cli_keeps_its_adapters_home_and_credentials_in_acp_mode() {
        let secrets = BTreeMap::from([("GEMINI_API_KEY".to_string(), "k".to_string())]);
        let env = BTreeMap::new();
        let l = launch("gemini", None, &[], &req(&secrets, &env)).unwrap();
        assert_eq!(l.program, "gemini");
        assert_eq!(l.args, ["--acp", "--model", "m1"]);
        assert_eq!(l.env["GOOGLE_GEMINI_BASE_URL"], "http://127.0.0.1:9/x");
        assert_eq!(l.env["HOME"], "/h");
        assert!(
            l.files
                .iter()
                .any(|f| f.path.ends_with(".gemini/settings.json"))
        );
        assert_eq!(l.stdin, Stdin::Null);
        assert_eq!(l.secret_env, ["GEMINI_API_KEY"]);
    }

    #[test]
    fn cli_acp_runs_its_command_and_needs_one() {
        let secrets = BTreeMap::new();
        let env = BTreeMap::new();
        let l = launch(
            "acp",
            Some("goose acp"),
            &["--x".into()],
            &req(&secrets, &env),
        )
        .unwrap();
        assert_eq!(
            (l.program.as_str(), l.args.clone()),
            ("goose", vec!["acp".to_string(), "--x".to_string()])
        );
        assert!(launch("acp", None, &[], &req(&secrets, &env)).is_err());
        assert!(launch("aider", None, &[], &req(&secrets, &env)).is_err());
    }
}
