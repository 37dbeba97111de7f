//! Kiro (`kiro-cli chat --no-interactive --trust-all-tools`), fixture-verified. Its output is
//! a plain-text transcript: lines become messages, the exit code and error words decide.

use super::plain::PlainText;
use super::{base_env, prompt_with_system, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct Kiro;

impl Adapter for Kiro {
    fn name(&self) -> &'static str {
        "kiro"
    }
    fn binary(&self) -> &'static str {
        "kiro-cli"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["KIRO_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::FixtureVerified
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = ["chat", "--no-interactive", "--trust-all-tools"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        Ok(Launch {
            program: self.binary().into(),
            args,
            env: base_env(req),
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
