//! Aider (`aider --message-file … --yes-always`), fixture-verified. Plain text output; the
//! prompt goes through a file in the attempt's home, extra instructions through `--read`.

use super::plain::PlainText;
use super::{base_env, file, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct Aider;

impl Adapter for Aider {
    fn name(&self) -> &'static str {
        "aider"
    }
    fn binary(&self) -> &'static str {
        "aider"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::FixtureVerified
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let prompt = req.home.join("prompt.md");
        let mut files = vec![file(prompt.clone(), req.prompt.to_string(), false)];
        let mut args: Vec<String> = vec!["--message-file".into(), prompt.display().to_string()];
        args.extend(
            [
                "--yes-always",
                "--no-auto-commits",
                "--no-check-update",
                "--no-analytics",
                "--no-pretty",
                "--no-stream",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        if let Some(sys) = req.system.filter(|s| !s.trim().is_empty()) {
            let conv = req.home.join("CONVENTIONS.md");
            files.push(file(conv.clone(), sys.to_string(), false));
            args.extend(["--read".into(), conv.display().to_string()]);
        }
        let mut env = base_env(req);
        if let Some(url) = req.base_url {
            env.insert("OPENAI_API_BASE".into(), super::codex::openai_base(url));
            env.insert("ANTHROPIC_API_BASE".into(), url.into());
        }
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files,
            stdin: Stdin::Null,
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(PlainText::default())
    }
}
