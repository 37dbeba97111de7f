//! `command`: any program as an agent. The prompt arrives on stdin and in `$FLEET_PROMPT_FILE`;
//! exit 0 is success. The profile's `model` is passed as `$FLEET_MODEL`. The command line
//! itself comes from the profile (`command:`), given here as the model of the launch request's
//! `env["FLEET_AGENT_COMMAND"]`.

use super::plain::PlainText;
use super::{base_env, file, prompt_with_system, secret_names};
use crate::{Adapter, AdapterError, AttemptRequest, Launch, Parser, Stdin, Verification};

pub struct CommandAgent;

impl Adapter for CommandAgent {
    fn name(&self) -> &'static str {
        "command"
    }
    fn binary(&self) -> &'static str {
        "sh"
    }
    fn verification(&self) -> Verification {
        Verification::RealBinary
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let command = req
            .env
            .get("FLEET_AGENT_COMMAND")
            .ok_or_else(|| AdapterError("a `cli: command` profile needs `command:`".into()))?;
        let prompt_file = req.home.join("prompt.md");
        let mut env = base_env(req);
        env.insert(
            "FLEET_PROMPT_FILE".into(),
            prompt_file.display().to_string(),
        );
        if let Some(m) = req.model {
            env.insert("FLEET_MODEL".into(), m.into());
        }
        if let Some(url) = req.base_url {
            env.insert("FLEET_BASE_URL".into(), url.into());
        }
        let prompt = prompt_with_system(req);
        Ok(Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), command.clone()],
            env,
            env_remove: Vec::new(),
            files: vec![file(prompt_file, prompt.clone(), false)],
            stdin: Stdin::Text(prompt),
            secret_env: secret_names(req),
            side_logs: None,
        })
    }

    fn parser(&self) -> Box<dyn Parser> {
        Box::new(PlainText::default())
    }
}
