//! Cursor CLI (`cursor-agent -p --output-format stream-json --force`), fixture-verified.
//! Failures exit non-zero with the message on stderr and may end without a `result` event.

use super::{base_env, json_line, prompt_with_system, secret_names, str_at};
use crate::outcome::{Evidence, classify_text};
use crate::{
    Adapter, AdapterError, AgentEvent, AttemptRequest, Launch, Outcome, Parser, ProcessEnd, Stdin,
    Verification,
};
use serde_json::Value;

pub struct Cursor;

impl Adapter for Cursor {
    fn name(&self) -> &'static str {
        "cursor"
    }
    fn binary(&self) -> &'static str {
        "cursor-agent"
    }
    fn default_secrets(&self) -> &'static [&'static str] {
        &["CURSOR_API_KEY"]
    }
    fn verification(&self) -> Verification {
        Verification::FixtureVerified
    }
    // The CLI has a resume flag (built in `launch`), but resuming it is not verified against
    // the real binary yet (session store, usage after a resume): fleet starts it afresh.
    fn can_resume(&self) -> bool {
        false
    }

    fn launch(&self, req: &AttemptRequest<'_>) -> Result<Launch, AdapterError> {
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--force"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(m) = req.model {
            args.extend(["--model".into(), m.into()]);
        }
        if let Some(id) = req.resume_session {
            args.extend(["--resume".into(), id.into()]);
        }
        args.extend(["--workspace".into(), req.workdir.display().to_string()]);
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
        Box::new(CursorStream::default())
    }
}

#[derive(Default)]
struct CursorStream {
    ev: Evidence,
}

impl Parser for CursorStream {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Some(v) = json_line(line) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match (
            str_at(&v, &["type"]).unwrap_or(""),
            str_at(&v, &["subtype"]),
        ) {
            ("system", Some("init")) => {
                if let Some(id) = str_at(&v, &["session_id"]) {
                    out.push(AgentEvent::Session { id: id.into() });
                }
            }
            ("assistant", _) => {
                for b in v
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = str_at(b, &["text"]).filter(|t| !t.trim().is_empty()) {
                        out.push(AgentEvent::Message { text: t.into() });
                    }
                }
            }
            ("tool_call", Some(sub)) => {
                let call = v.get("tool_call").and_then(Value::as_object);
                if let Some((kind, body)) = call.and_then(|c| c.iter().next()) {
                    let name = kind.trim_end_matches("ToolCall").to_string();
                    if sub == "started" {
                        out.push(AgentEvent::ToolCall {
                            name,
                            input: body.get("args").cloned().unwrap_or(Value::Null),
                        });
                    } else {
                        let result = body.get("result").cloned().unwrap_or(Value::Null);
                        let ok = result.get("error").is_none() && result.get("failure").is_none();
                        out.push(AgentEvent::ToolResult {
                            name: Some(name),
                            ok,
                            output: result.to_string(),
                        });
                    }
                }
            }
            ("result", _) => {
                if v.get("is_error").and_then(Value::as_bool).unwrap_or(false) {
                    let m = str_at(&v, &["result"]).unwrap_or("error").to_string();
                    self.ev.terminal = Some(Err((classify_text(&m), m)));
                } else {
                    self.ev.terminal = Some(Ok(()));
                }
            }
            _ => {}
        }
        out
    }

    fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.ev.stderr(line);
        let l = line.to_ascii_lowercase();
        if l.contains("authentication required") || l.contains("error") || l.contains("limit") {
            let class = classify_text(line);
            self.ev.error(class, line.trim());
            return vec![AgentEvent::Error {
                class,
                message: line.trim().into(),
            }];
        }
        Vec::new()
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        self.ev.classify(end)
    }
}
