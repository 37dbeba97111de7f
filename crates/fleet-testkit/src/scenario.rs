//! What a scenario is: the script of replies, the fault to inject, the usage to report.
//!
//! Scenarios are plain data (serde), so the binary can load them from JSON or YAML files and a
//! test can build them with the helpers on [`Scenario`].

use serde::{Deserialize, Serialize};

/// One scripted reply. The step index of a request is the number of tool results already in its
/// conversation (on the Anthropic API, plus the final answers of a resumed session), so step `i`
/// is answered with `steps[i]`; past the end the reply is the text `"DONE"` with the vendor's
/// normal stop reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Create or overwrite a file through the CLI's own write tool (fallback: `apply_patch`, then
    /// a shell command).
    WriteFile { path: String, content: String },
    /// Replace the first occurrence of `old` by `new` through the CLI's edit tool (fallback:
    /// `apply_patch`, then a shell command).
    EditFile {
        path: String,
        old: String,
        new: String,
    },
    /// Read a file through the CLI's read tool (fallback: `cat` through the shell tool). Some
    /// CLIs (claude) refuse to edit a file they have not read or written in the same session.
    ReadFile { path: String },
    /// Run a command through the CLI's shell tool.
    Shell { command: String },
    /// Call the offered tool whose name ends with `tool` (an MCP tool appears as e.g.
    /// `mcp__fleet__report_progress`), with `args` (a JSON object, as text).
    Tool { tool: String, args: String },
    /// Final answer: plain text with the vendor's end-of-turn stop reason.
    Text(String),
}

/// A fault injected before (or instead of) the scripted reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Answer with an HTTP error status and the vendor's own error body and headers.
    Status {
        /// HTTP status, e.g. 429, 401, 500, 529.
        code: u16,
        /// Sent as `retry-after` (and as the vendor's own retry hint, e.g. Gemini `RetryInfo`).
        #[serde(default)]
        retry_after_secs: Option<u64>,
        /// Unix seconds at which the limit resets; sent in the vendor's rate-limit headers
        /// (`anthropic-ratelimit-unified-reset`, `x-ratelimit-reset-requests`, …).
        #[serde(default)]
        reset_at: Option<u64>,
        /// Overrides the vendor error type (Anthropic `error.type`, OpenAI `error.type`,
        /// Gemini `error.status`), e.g. `"usage_limit_reached"` for codex.
        #[serde(default)]
        error_type: Option<String>,
        /// Overrides the error message.
        #[serde(default)]
        message: Option<String>,
        /// `None`: every model request fails; `Some(n)`: the first `n` model requests fail,
        /// later ones behave.
        #[serde(default)]
        times: Option<u32>,
    },
    /// Accept the request and never send response headers.
    HangBeforeHeaders {
        #[serde(default)]
        times: Option<u32>,
    },
    /// Send `200` and the first SSE event, then stall forever.
    HangMidStream {
        #[serde(default)]
        times: Option<u32>,
    },
}

impl Fault {
    /// A status fault on every request, without retry hints.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after_secs: None,
            reset_at: None,
            error_type: None,
            message: None,
            times: None,
        }
    }

    /// Limit the fault to the first `n` model requests of the scenario.
    pub fn times(mut self, n: u32) -> Fault {
        match &mut self {
            Fault::Status { times, .. }
            | Fault::HangBeforeHeaders { times }
            | Fault::HangMidStream { times } => *times = Some(n),
        }
        self
    }

    /// Set `retry-after` (status faults only).
    pub fn retry_after(mut self, secs: u64) -> Fault {
        if let Fault::Status {
            retry_after_secs, ..
        } = &mut self
        {
            *retry_after_secs = Some(secs);
        }
        self
    }

    /// Set the reset time in unix seconds (status faults only).
    pub fn reset_at(mut self, unix_secs: u64) -> Fault {
        if let Fault::Status { reset_at, .. } = &mut self {
            *reset_at = Some(unix_secs);
        }
        self
    }

    /// Override the vendor error type (status faults only).
    pub fn error_type(mut self, ty: impl Into<String>) -> Fault {
        if let Fault::Status { error_type, .. } = &mut self {
            *error_type = Some(ty.into());
        }
        self
    }

    /// Override the error message (status faults only).
    pub fn message(mut self, msg: impl Into<String>) -> Fault {
        if let Fault::Status { message, .. } = &mut self {
            *message = Some(msg.into());
        }
        self
    }

    pub(crate) fn times_limit(&self) -> Option<u32> {
        match self {
            Fault::Status { times, .. }
            | Fault::HangBeforeHeaders { times }
            | Fault::HangMidStream { times } => *times,
        }
    }

    /// Whether the fault applies to the model request with this 0-based index.
    pub(crate) fn applies_to(&self, index: u64) -> bool {
        self.times_limit().is_none_or(|n| index < u64::from(n))
    }
}

/// Tokens reported with every reply, in Anthropic's terms: `input_tokens` excludes cached input.
/// OpenAI and Gemini replies report `input_tokens + cache_read + cache_creation` as the prompt
/// total, with `cache_read` as the cached part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    pub fn new(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    pub fn with_cache(mut self, read: u64, creation: u64) -> Usage {
        self.cache_read_input_tokens = read;
        self.cache_creation_input_tokens = creation;
        self
    }

    /// Prompt tokens as OpenAI/Gemini count them (cached included).
    pub fn prompt_total(&self) -> u64 {
        self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens
    }

    pub(crate) fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
    }
}

fn default_usage() -> Usage {
    Usage::new(100, 20)
}

fn default_model() -> String {
    "fleet-mock".to_string()
}

/// A scripted conversation: which reply each request gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// Replies by step index (number of tool results in the conversation).
    #[serde(default)]
    pub steps: Vec<Action>,
    /// Fault injected on model requests (see [`Fault`]).
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Tokens reported with every reply (side calls included).
    #[serde(default = "default_usage")]
    pub usage: Usage,
    /// Report `input_tokens` as the request's own size, ceil(characters of its JSON body / 4),
    /// instead of `usage.input_tokens`: what a longer prompt (injected lessons, a retry's
    /// handoff note) costs then shows in the spend a CLI reports.
    #[serde(default)]
    pub count_prompt: bool,
    /// Model name echoed in replies when the request names none.
    #[serde(default = "default_model")]
    pub model: String,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            steps: Vec::new(),
            fault: None,
            usage: default_usage(),
            count_prompt: false,
            model: default_model(),
        }
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// `hello.txt` = "hello from fleet", then edited to "hello from fleet, edited", then "DONE".
    pub fn hello() -> Scenario {
        Scenario::new()
            .write_file("hello.txt", "hello from fleet\n")
            .edit_file("hello.txt", "hello from fleet", "hello from fleet, edited")
            .text("DONE")
    }

    pub fn step(mut self, action: Action) -> Scenario {
        self.steps.push(action);
        self
    }

    pub fn write_file(self, path: impl Into<String>, content: impl Into<String>) -> Scenario {
        self.step(Action::WriteFile {
            path: path.into(),
            content: content.into(),
        })
    }

    pub fn edit_file(
        self,
        path: impl Into<String>,
        old: impl Into<String>,
        new: impl Into<String>,
    ) -> Scenario {
        self.step(Action::EditFile {
            path: path.into(),
            old: old.into(),
            new: new.into(),
        })
    }

    pub fn read_file(self, path: impl Into<String>) -> Scenario {
        self.step(Action::ReadFile { path: path.into() })
    }

    pub fn shell(self, command: impl Into<String>) -> Scenario {
        self.step(Action::Shell {
            command: command.into(),
        })
    }

    /// Calls an MCP (or any other) tool by the end of its name.
    pub fn tool(self, tool: impl Into<String>, args: serde_json::Value) -> Scenario {
        self.step(Action::Tool {
            tool: tool.into(),
            args: args.to_string(),
        })
    }

    pub fn text(self, text: impl Into<String>) -> Scenario {
        self.step(Action::Text(text.into()))
    }

    pub fn fault(mut self, fault: Fault) -> Scenario {
        self.fault = Some(fault);
        self
    }

    pub fn usage(mut self, usage: Usage) -> Scenario {
        self.usage = usage;
        self
    }

    /// Input tokens counted from each request's size (see [`Scenario::count_prompt`]).
    pub fn count_prompt(mut self) -> Scenario {
        self.count_prompt = true;
        self
    }

    /// The usage to report for a request whose JSON body is `body`.
    pub fn usage_for(&self, body: &serde_json::Value) -> Usage {
        let mut u = self.usage;
        if self.count_prompt {
            let chars = serde_json::to_string(body).map_or(0, |t| t.chars().count());
            u.input_tokens = chars.div_ceil(4) as u64;
        }
        u
    }

    pub fn model(mut self, model: impl Into<String>) -> Scenario {
        self.model = model.into();
        self
    }

    /// The action for a step index; past the end, `Text("DONE")`.
    pub fn action_at(&self, step: usize) -> Action {
        self.steps
            .get(step)
            .cloned()
            .unwrap_or_else(|| Action::Text("DONE".to_string()))
    }
}

/// Errors loading scenario files.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Parse a map `name -> Scenario` from JSON or YAML text (JSON is tried first).
pub fn parse_scenarios(text: &str) -> Result<Vec<(String, Scenario)>, LoadError> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => yaml_to_json(text).map_err(|yaml_err| {
            LoadError(format!("neither JSON ({json_err}) nor YAML ({yaml_err})"))
        })?,
    };
    let serde_json::Value::Object(map) = value else {
        return Err(LoadError(
            "a scenario file is a map from scenario name to scenario".into(),
        ));
    };
    map.into_iter()
        .map(|(name, v)| {
            serde_json::from_value::<Scenario>(v)
                .map(|s| (name.clone(), s))
                .map_err(|e| LoadError(format!("scenario {name:?}: {e}")))
        })
        .collect()
}

fn yaml_to_json(text: &str) -> Result<serde_json::Value, String> {
    use saphyr::{LoadableYamlNode, Yaml};
    let docs = Yaml::load_from_str(text).map_err(|e| e.to_string())?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(serde_json::Value::Object(Default::default()));
    };
    fn conv(y: &Yaml) -> Result<serde_json::Value, String> {
        use saphyr::Scalar;
        use serde_json::Value as J;
        Ok(match y {
            Yaml::Value(s) => match s {
                Scalar::Null => J::Null,
                Scalar::Boolean(b) => J::Bool(*b),
                Scalar::Integer(i) => J::from(*i),
                Scalar::FloatingPoint(f) => J::from(f.into_inner()),
                Scalar::String(s) => J::String(s.to_string()),
            },
            Yaml::Representation(raw, _, _) => J::String(raw.to_string()),
            Yaml::Sequence(seq) => J::Array(seq.iter().map(conv).collect::<Result<_, _>>()?),
            Yaml::Mapping(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m {
                    let key = match conv(k)? {
                        J::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, conv(v)?);
                }
                J::Object(out)
            }
            Yaml::Tagged(_, inner) => conv(inner)?,
            Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
            Yaml::BadValue => return Err("bad YAML value".into()),
        })
    }
    conv(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_scenarios_parse() {
        let json = r#"{"ok":{"steps":[{"WriteFile":{"path":"a","content":"b"}},{"Text":"bye"}],
            "fault":{"Status":{"code":429,"retry_after_secs":1,"times":2}},"usage":{"input_tokens":5}}}"#;
        let s = parse_scenarios(json).unwrap();
        assert_eq!(s[0].0, "ok");
        assert_eq!(s[0].1.steps.len(), 2);
        assert_eq!(
            s[0].1.fault,
            Some(Fault::status(429).retry_after(1).times(2))
        );
        assert_eq!(s[0].1.usage.input_tokens, 5);

        let yaml = "hang:\n  fault:\n    HangBeforeHeaders: {}\nedit:\n  steps:\n    - EditFile: {path: a, old: x, new: y}\n    - Text: done\n";
        let s = parse_scenarios(yaml).unwrap();
        let map: std::collections::HashMap<_, _> = s.into_iter().collect();
        assert_eq!(
            map["hang"].fault,
            Some(Fault::HangBeforeHeaders { times: None })
        );
        assert_eq!(map["edit"].steps[1], Action::Text("done".into()));
        assert_eq!(map["edit"].usage, Usage::new(100, 20));
    }

    #[test]
    fn fault_times() {
        let f = Fault::status(500).times(2);
        assert!(f.applies_to(0) && f.applies_to(1) && !f.applies_to(2));
        assert!(Fault::status(500).applies_to(1000));
    }
}
