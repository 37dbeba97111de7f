//! Goose (`goose run -i -`), fixture-verified. Plain text output; `GOOSE_MODE=auto` approves
//! tools; the prompt comes on stdin.

use super::plain::PlainText;
use super::{base_env, default_env, prompt_with_system, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct Goose;

impl Adapter for Goose {
    fn name(&self) -> &'static str {
        "goose"
    }
    fn binary(&self) -> &'static str {
        "goose"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::FixtureVerified
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = ["run", "-i", "-", "--no-session"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(n) = req.max_turns {
            args.extend(["--max-turns".into(), n.to_string()]);
        }
        let mut env = base_env(req);
        default_env(&mut env, "GOOSE_MODE", "auto");
        if let Some(m) = req.model {
            env.insert("GOOSE_MODEL".into(), m.into());
        }
        Ok(Launch {
            program: self.binary().into(),
            args,
            env,
            env_remove: Vec::new(),
            files: Vec::new(),
            stdin: Stdin::Text(prompt_with_system(req)),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(PlainText::default())
    }
}
