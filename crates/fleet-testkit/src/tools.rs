//! Vendor-neutral tool handling: which of the offered tools carries out an [`Action`], with which
//! argument names (read from the offered JSON schema), and where the working directory is.

use serde_json::{Map, Value, json};

use crate::scenario::Action;

/// A tool offered in a request, normalised across vendors.
#[derive(Debug, Clone)]
pub(crate) struct ToolSpec {
    pub name: String,
    /// JSON schema of the arguments (`Value::Null` when the tool has none, e.g. freeform tools).
    pub schema: Value,
    /// An OpenAI Responses "custom" (freeform) tool: called with a raw string, not JSON.
    pub custom: bool,
}

/// A tool call to send back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    Function { name: String, args: Value },
    Custom { name: String, input: String },
}

impl Call {
    pub fn name(&self) -> &str {
        match self {
            Call::Function { name, .. } | Call::Custom { name, .. } => name,
        }
    }
}

/// What a reply carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    Call(Call),
    Text(String),
}

impl Plan {
    pub fn describe(&self) -> String {
        match self {
            Plan::Call(c) => format!("tool_call {}", c.name()),
            Plan::Text(t) => {
                let short: String = t.chars().take(40).collect();
                format!("text {short:?}")
            }
        }
    }
}

const WRITE_TOOLS: &[&str] = &["Write", "write_file", "write", "create_file", "WriteFile"];
const EDIT_TOOLS: &[&str] = &[
    "Edit",
    "replace",
    "edit",
    "edit_file",
    "str_replace",
    "StrReplace",
];
const READ_TOOLS: &[&str] = &["Read", "read_file", "read", "ReadFile"];
const SHELL_TOOLS: &[&str] = &[
    "Bash",
    "run_shell_command",
    "exec_command",
    "bash",
    "shell",
    "shell_command",
    "local_shell",
    "run_terminal_cmd",
];
const PATH_KEYS: &[&str] = &[
    "file_path",
    "filePath",
    "path",
    "absolute_path",
    "filename",
    "file",
];
const CONTENT_KEYS: &[&str] = &["content", "contents", "text", "file_text"];
const OLD_KEYS: &[&str] = &["old_string", "oldString", "old_str", "old_text", "old"];
const NEW_KEYS: &[&str] = &["new_string", "newString", "new_str", "new_text", "new"];
const COMMAND_KEYS: &[&str] = &["command", "cmd", "script"];

fn find<'a>(tools: &'a [ToolSpec], names: &[&str]) -> Option<&'a ToolSpec> {
    names
        .iter()
        .find_map(|n| tools.iter().find(|t| t.name == *n))
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The first candidate key the schema declares; the first candidate if the schema declares none.
fn key(schema: &Value, candidates: &[&str]) -> String {
    match properties(schema) {
        Some(props) => candidates
            .iter()
            .find(|c| props.contains_key(**c))
            .unwrap_or(&candidates[0])
            .to_string(),
        None => candidates[0].to_string(),
    }
}

fn type_of(schema: &Value) -> String {
    match schema.get("type") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|s| *s != "null")
            .unwrap_or("string")
            .to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Fill required properties the action does not set, so strict validators accept the call.
fn fill_required(schema: &Value, args: &mut Map<String, Value>) {
    let Some(required) = schema.get("required").and_then(Value::as_array) else {
        return;
    };
    let props = properties(schema);
    for name in required.iter().filter_map(Value::as_str) {
        if args.contains_key(name) {
            continue;
        }
        let prop = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
        args.insert(name.to_string(), value_for_schema(prop, Some(name)));
    }
}

/// Make `path` absolute against `cwd` when it is relative and the cwd is known.
fn absolute(path: &str, cwd: Option<&str>) -> String {
    match cwd {
        Some(cwd) if !path.starts_with('/') => {
            format!("{}/{}", cwd.trim_end_matches('/'), path)
        }
        _ => path.to_string(),
    }
}

/// Quote for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn shell_call(tool: &ToolSpec, command: &str) -> Call {
    let key = key(&tool.schema, COMMAND_KEYS);
    let prop = properties(&tool.schema).and_then(|p| p.get(&key));
    let value = if prop.map(type_of).as_deref() == Some("array") {
        json!(["bash", "-lc", command])
    } else {
        json!(command)
    };
    let mut args = Map::new();
    args.insert(key, value);
    if tool.name == "Bash" {
        args.insert("description".into(), json!("Scripted step"));
    }
    fill_required(&tool.schema, &mut args);
    Call::Function {
        name: tool.name.clone(),
        args: Value::Object(args),
    }
}

fn patch_call(tool: &ToolSpec, patch: String) -> Call {
    if tool.custom {
        Call::Custom {
            name: tool.name.clone(),
            input: patch,
        }
    } else {
        let mut args = Map::new();
        args.insert(key(&tool.schema, &["input", "patch"]), json!(patch));
        fill_required(&tool.schema, &mut args);
        Call::Function {
            name: tool.name.clone(),
            args: Value::Object(args),
        }
    }
}

fn write_script(path: &str, content: &str) -> String {
    let mut script = String::new();
    if let Some((dir, _)) = path.rsplit_once('/')
        && !dir.is_empty()
    {
        script.push_str(&format!("mkdir -p {} && ", sh_quote(dir)));
    }
    script.push_str(&format!(
        "printf '%s' {} > {}",
        sh_quote(content),
        sh_quote(path)
    ));
    script
}

fn edit_script(path: &str, old: &str, new: &str) -> String {
    // Literal first-occurrence replacement in bash (quoted pattern and replacement are literal).
    let inner = format!(
        "f={}; old={}; new={}; c=$(cat -- \"$f\"; printf x); c=${{c%x}}; printf '%s' \"${{c/\"$old\"/\"$new\"}}\" > \"$f\"",
        sh_quote(path),
        sh_quote(old),
        sh_quote(new)
    );
    format!("bash -c {}", sh_quote(&inner))
}

fn plus_lines(text: &str) -> String {
    text.lines().map(|l| format!("+{l}\n")).collect()
}

fn minus_lines(text: &str) -> String {
    text.lines().map(|l| format!("-{l}\n")).collect()
}

/// Decide the reply for an action given the offered tools.
pub(crate) fn plan(action: &Action, tools: &[ToolSpec], cwd: Option<&str>) -> Plan {
    if let Action::Text(t) = action {
        return Plan::Text(t.clone());
    }
    if tools.is_empty() {
        // A side request (title, summary, …) that offers no tools: answer briefly.
        return Plan::Text("OK".to_string());
    }
    let apply_patch = tools.iter().find(|t| t.name == "apply_patch");
    let shell = find(tools, SHELL_TOOLS);
    let call = match action {
        Action::Text(_) => unreachable!(),
        Action::WriteFile { path, content } => {
            if let Some(tool) = find(tools, WRITE_TOOLS) {
                let mut args = Map::new();
                args.insert(key(&tool.schema, PATH_KEYS), json!(absolute(path, cwd)));
                args.insert(key(&tool.schema, CONTENT_KEYS), json!(content));
                fill_required(&tool.schema, &mut args);
                Some(Call::Function {
                    name: tool.name.clone(),
                    args: Value::Object(args),
                })
            } else if let Some(tool) = apply_patch {
                let patch = format!(
                    "*** Begin Patch\n*** Add File: {path}\n{}*** End Patch\n",
                    plus_lines(content)
                );
                Some(patch_call(tool, patch))
            } else {
                shell.map(|tool| shell_call(tool, &write_script(path, content)))
            }
        }
        Action::EditFile { path, old, new } => {
            if let Some(tool) = find(tools, EDIT_TOOLS) {
                let mut args = Map::new();
                args.insert(key(&tool.schema, PATH_KEYS), json!(absolute(path, cwd)));
                args.insert(key(&tool.schema, OLD_KEYS), json!(old));
                args.insert(key(&tool.schema, NEW_KEYS), json!(new));
                if properties(&tool.schema).is_some_and(|p| p.contains_key("instruction")) {
                    args.insert(
                        "instruction".into(),
                        json!(format!("Replace {old:?} with {new:?} in {path}.")),
                    );
                }
                fill_required(&tool.schema, &mut args);
                Some(Call::Function {
                    name: tool.name.clone(),
                    args: Value::Object(args),
                })
            } else if let Some(tool) = apply_patch {
                let patch = format!(
                    "*** Begin Patch\n*** Update File: {path}\n@@\n{}{}*** End Patch\n",
                    minus_lines(old),
                    plus_lines(new)
                );
                Some(patch_call(tool, patch))
            } else {
                shell.map(|tool| shell_call(tool, &edit_script(path, old, new)))
            }
        }
        Action::ReadFile { path } => {
            if let Some(tool) = find(tools, READ_TOOLS) {
                let mut args = Map::new();
                args.insert(key(&tool.schema, PATH_KEYS), json!(absolute(path, cwd)));
                fill_required(&tool.schema, &mut args);
                Some(Call::Function {
                    name: tool.name.clone(),
                    args: Value::Object(args),
                })
            } else {
                shell.map(|tool| shell_call(tool, &format!("cat -- {}", sh_quote(path))))
            }
        }
        Action::Shell { command } => shell.map(|tool| shell_call(tool, command)),
        Action::Tool { tool, args } => tools
            .iter()
            .find(|t| {
                t.name == *tool
                    || t.name.ends_with(&format!("_{tool}"))
                    || t.name.ends_with(&format!("::{tool}"))
            })
            .map(|t| Call::Function {
                name: t.name.clone(),
                args: serde_json::from_str(args).unwrap_or_else(|_| json!({})),
            }),
    };
    match call {
        Some(c) => Plan::Call(c),
        None => {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            Plan::Text(format!(
                "fleet-testkit: no offered tool can do {action:?}; offered: {names:?}"
            ))
        }
    }
}

/// A JSON value that satisfies `schema` (for structured side calls such as gemini-cli's router
/// and next-speaker check). Known property names get meaningful values.
pub(crate) fn value_for_schema(schema: &Value, name: Option<&str>) -> Value {
    match name {
        Some("next_speaker") => return json!("user"),
        Some("complexity_reasoning") => return json!("A simple, scripted task."),
        Some("complexity_score") => return json!(10),
        Some("reasoning") => return json!("Scripted reply from fleet-testkit."),
        _ => {}
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(combinator)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return value_for_schema(first, name);
        }
    }
    match type_of(schema).as_str() {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = properties(schema) {
                for (k, v) in props {
                    out.insert(k.clone(), value_for_schema(v, Some(k)));
                }
            }
            Value::Object(out)
        }
        "array" => json!([]),
        "boolean" => json!(false),
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "string" => json!(match name {
            Some("description") => "Scripted step",
            Some("instruction") => "Scripted edit.",
            _ => "ok",
        }),
        _ => Value::Null,
    }
}

/// Every string in a JSON value, in document order.
pub(crate) fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Find the agent's working directory in the request text.
pub(crate) fn find_cwd(body: &Value) -> Option<String> {
    let mut all = Vec::new();
    strings(body, &mut all);
    // Markers after which (past blanks, `-` and `*`) the rest of the line is the directory:
    // claude "Primary working directory: ", opencode "Working directory: ", qwen "I'm currently
    // working in the directory: ", gemini "**Workspace Directories:**\n  - ".
    const LINE_MARKERS: &[&str] = &[
        "Primary working directory:",
        "Working directory:",
        "Current working directory:",
        "current working directory is:",
        "working in the directory:",
        "Workspace Directories:",
        "Workspace root folder:",
    ];
    for s in &all {
        if let Some(start) = s.find("<cwd>") {
            let rest = &s[start + 5..];
            if let Some(end) = rest.find("</cwd>") {
                let dir = rest[..end].trim();
                if dir.starts_with('/') {
                    return Some(dir.to_string());
                }
            }
        }
    }
    for m in LINE_MARKERS {
        for s in &all {
            let mut from = 0;
            while let Some(pos) = s[from..].find(m) {
                let rest = s[from + pos + m.len()..]
                    .trim_start_matches(|c: char| c.is_whitespace() || c == '-' || c == '*');
                let line = rest.lines().next().unwrap_or("");
                let dir = line
                    .trim()
                    .trim_matches(|c| c == '`' || c == '"' || c == '\'');
                if dir.starts_with('/') {
                    return Some(dir.trim_end_matches('.').to_string());
                }
                from += pos + m.len();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, schema: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            schema,
            custom: false,
        }
    }

    #[test]
    fn write_prefers_write_tool_with_schema_keys() {
        let tools = vec![
            tool("bash", json!({"properties":{"command":{"type":"string"}}})),
            tool(
                "write",
                json!({"properties":{"filePath":{},"content":{}},"required":["filePath","content"]}),
            ),
        ];
        let p = plan(
            &Action::WriteFile {
                path: "a.txt".into(),
                content: "x".into(),
            },
            &tools,
            Some("/w"),
        );
        assert_eq!(
            p,
            Plan::Call(Call::Function {
                name: "write".into(),
                args: json!({"filePath":"/w/a.txt","content":"x"})
            })
        );
    }

    #[test]
    fn edit_fills_instruction_and_required() {
        let tools = vec![tool(
            "replace",
            json!({"properties":{"file_path":{},"instruction":{"type":"string"},"old_string":{},"new_string":{},"allow_multiple":{"type":"boolean"}},
                   "required":["file_path","instruction","old_string","new_string"]}),
        )];
        let Plan::Call(Call::Function { args, .. }) = plan(
            &Action::EditFile {
                path: "/abs/f".into(),
                old: "a".into(),
                new: "b".into(),
            },
            &tools,
            None,
        ) else {
            panic!()
        };
        assert_eq!(args["file_path"], "/abs/f");
        assert_eq!(args["old_string"], "a");
        assert!(args["instruction"].as_str().unwrap().contains("Replace"));
        assert!(args.get("allow_multiple").is_none());
    }

    #[test]
    fn shell_fallback_writes_and_edits_files() {
        let dir = tempfile::tempdir().unwrap();
        let tools = vec![tool(
            "exec_command",
            json!({"properties":{"cmd":{"type":"string"},"workdir":{}},"required":["cmd"]}),
        )];
        let run = |action: Action| {
            let Plan::Call(Call::Function { name, args }) = plan(&action, &tools, None) else {
                panic!()
            };
            assert_eq!(name, "exec_command");
            let cmd = args["cmd"].as_str().unwrap().to_string();
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "{cmd}");
        };
        run(Action::WriteFile {
            path: "sub/it's.txt".into(),
            content: "hello $HOME & 'quoted' \\n\nline2 from fleet\n".into(),
        });
        run(Action::EditFile {
            path: "sub/it's.txt".into(),
            old: "line2 from fleet".into(),
            new: "line2 & $edited *".into(),
        });
        let got = std::fs::read_to_string(dir.path().join("sub/it's.txt")).unwrap();
        assert_eq!(got, "hello $HOME & 'quoted' \\n\nline2 & $edited *\n");
    }

    #[test]
    fn apply_patch_custom_tool() {
        let tools = vec![ToolSpec {
            name: "apply_patch".into(),
            schema: Value::Null,
            custom: true,
        }];
        let p = plan(
            &Action::WriteFile {
                path: "h.txt".into(),
                content: "hi\n".into(),
            },
            &tools,
            Some("/w"),
        );
        assert_eq!(
            p,
            Plan::Call(Call::Custom {
                name: "apply_patch".into(),
                input: "*** Begin Patch\n*** Add File: h.txt\n+hi\n*** End Patch\n".into()
            })
        );
    }

    #[test]
    fn no_tools_means_side_request() {
        assert_eq!(
            plan(
                &Action::Shell {
                    command: "x".into()
                },
                &[],
                None
            ),
            Plan::Text("OK".into())
        );
    }

    #[test]
    fn cwd_markers() {
        assert_eq!(
            find_cwd(&json!({"system":[{"text":"a\nWorking directory: /tmp/x y\nb"}]})).as_deref(),
            Some("/tmp/x y")
        );
        assert_eq!(
            find_cwd(&json!({"input":[{"content":"<environment_context>\n  <cwd>/r/p</cwd>"}]}))
                .as_deref(),
            Some("/r/p")
        );
        assert_eq!(find_cwd(&json!({"a":"Working directory: relative"})), None);
        assert_eq!(
            find_cwd(&json!({"a":"- **Workspace Directories:**\n  - /g/w\n- **x"})).as_deref(),
            Some("/g/w")
        );
        assert_eq!(
            find_cwd(&json!({"a":"env: \n - Primary working directory: /c/w\n - I"})).as_deref(),
            Some("/c/w")
        );
        assert_eq!(
            find_cwd(&json!({"a":"I'm currently working in the directory: /q/w\nHere"})).as_deref(),
            Some("/q/w")
        );
    }

    #[test]
    fn schema_values() {
        let router = json!({"type":"object","properties":{"complexity_reasoning":{"type":"string"},"complexity_score":{"type":"integer","minimum":1,"maximum":100}}});
        assert_eq!(
            value_for_schema(&router, None),
            json!({"complexity_reasoning":"A simple, scripted task.","complexity_score":10})
        );
        let next = json!({"type":"OBJECT","properties":{"reasoning":{"type":"STRING"},"next_speaker":{"type":"STRING","enum":["user","model"]}}});
        assert_eq!(value_for_schema(&next, None)["next_speaker"], "user");
    }
}
