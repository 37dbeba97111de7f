//! Amp (`amp -x --stream-json --dangerously-allow-all`), fixture-verified: its stream is
//! "Claude Code compatible", so the claude parser reads it; it reports no cost.

use super::claude::ClaudeStream;
use super::{base_env, prompt_with_system, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct Amp;

impl Adapter for Amp {
    fn name(&self) -> &'static str {
        "amp"
    }
    fn binary(&self) -> &'static str {
        "amp"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["AMP_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::FixtureVerified
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = ["-x", "--stream-json", "--dangerously-allow-all"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        let mut env = base_env(req);
        if let Some(url) = req.base_url {
            env.insert("AMP_URL".into(), url.into());
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
        Box::new(ClaudeStream::new(false))
    }
}
