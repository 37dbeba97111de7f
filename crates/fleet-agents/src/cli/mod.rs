//! One module per agent CLI.

mod aider;
mod amp;
mod claude;
mod codex;
mod command;
mod cursor;
mod gemini;
mod goose;
mod kiro;
mod opencode;
mod plain;
mod qwen;

pub use claude::ClaudeStream;

use crate::{Adapter, AttemptRequest, FileSpec};
use std::collections::BTreeMap;

/// Every adapter, in the order `fleet agents ls` shows them.
pub fn all() -> Vec<Box<dyn Adapter>> {
    vec![
        Box::new(claude::Claude),
        Box::new(codex::Codex),
        Box::new(gemini::Gemini),
        Box::new(qwen::Qwen),
        Box::new(opencode::Opencode),
        Box::new(cursor::Cursor),
        Box::new(amp::Amp),
        Box::new(kiro::Kiro),
        Box::new(aider::Aider),
        Box::new(goose::Goose),
        Box::new(command::CommandAgent),
    ]
}

/// The environment every CLI gets: its own HOME (so no login state, session store or trust
/// prompt leaks between attempts), the account's secrets, the profile's env, and no colors.
pub(crate) fn base_env(req: &AttemptRequest<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("HOME".into(), req.home.display().to_string());
    env.insert(
        "XDG_CONFIG_HOME".into(),
        req.home.join(".config").display().to_string(),
    );
    env.insert(
        "XDG_DATA_HOME".into(),
        req.home.join(".local/share").display().to_string(),
    );
    env.insert(
        "XDG_CACHE_HOME".into(),
        req.home.join(".cache").display().to_string(),
    );
    env.insert(
        "XDG_STATE_HOME".into(),
        req.home.join(".local/state").display().to_string(),
    );
    env.insert("TMPDIR".into(), req.home.join("tmp").display().to_string());
    env.insert("NO_COLOR".into(), "1".into());
    env.insert("TERM".into(), "dumb".into());
    env.insert("CI".into(), "1".into());
    for (k, v) in req.secrets {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in req.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// Sets `key` unless the profile already chose a value.
pub(crate) fn default_env(env: &mut BTreeMap<String, String>, key: &str, value: &str) {
    env.entry(key.to_string())
        .or_insert_with(|| value.to_string());
}

pub(crate) fn secret_names(req: &AttemptRequest<'_>) -> Vec<String> {
    req.secrets.keys().cloned().collect()
}

/// Adds a command hook on `event` for the tools `matcher` names to the `settings.json` the
/// launch writes at `path` (gemini's and qwen's hooks live in it). `false` if the launch
/// writes no such file.
pub(crate) fn add_settings_hook(
    launch: &mut crate::Launch,
    path: &std::path::Path,
    event: &str,
    matcher: &str,
    command: &str,
) -> bool {
    let Some(spec) = launch.files.iter_mut().find(|f| f.path == path) else {
        return false;
    };
    let Ok(mut settings) = serde_json::from_str::<serde_json::Value>(&spec.contents) else {
        return false;
    };
    settings["hooks"][event] = serde_json::json!([{
        "matcher": matcher,
        "hooks": [{"type": "command", "name": "fleet-policy", "command": command}]
    }]);
    spec.contents = settings.to_string();
    true
}

/// A private config file in the attempt's home.
pub(crate) fn file(path: std::path::PathBuf, contents: String, secret: bool) -> FileSpec {
    FileSpec {
        path,
        contents,
        mode: if secret { 0o600 } else { 0o644 },
        secret,
    }
}

/// The prompt with the extra system instructions in front, for CLIs that have no flag for them.
pub(crate) fn prompt_with_system(req: &AttemptRequest<'_>) -> String {
    match req.system {
        Some(sys) if !sys.trim().is_empty() => format!("{sys}\n\n---\n\n{}", req.prompt),
        _ => req.prompt.to_string(),
    }
}

/// The first secret value whose name is one of `names`.
pub(crate) fn secret<'a>(
    req: &'a AttemptRequest<'_>,
    names: &[&str],
) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|n| {
        req.secrets
            .get_key_value(*n)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

/// Parses a line as JSON, or `None` for anything else (banners, partial lines, garbage).
pub(crate) fn json_line(line: &str) -> Option<serde_json::Value> {
    let t = line.trim();
    if !t.starts_with('{') {
        return None;
    }
    serde_json::from_str(t).ok()
}

pub(crate) fn u64_at(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

pub(crate) fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::{Adapter, AttemptRequest, Launch};
    use std::collections::BTreeMap;
    use std::path::Path;

    pub fn launch_with(
        adapter: &dyn Adapter,
        base_url: Option<&str>,
        system: Option<&str>,
    ) -> Launch {
        launch_model(adapter, "some-model", base_url, system)
    }

    pub fn launch_model(
        adapter: &dyn Adapter,
        model: &str,
        base_url: Option<&str>,
        system: Option<&str>,
    ) -> Launch {
        let mut secrets = BTreeMap::new();
        for k in [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "CURSOR_API_KEY",
            "AMP_API_KEY",
            "KIRO_API_KEY",
        ] {
            secrets.insert(k.to_string(), "sk-secret-value".to_string());
        }
        let env = BTreeMap::new();
        let req = AttemptRequest {
            prompt: "create hello.txt",
            system,
            model: Some(model),
            workdir: Path::new("/work/tree"),
            home: Path::new("/tmp/home"),
            base_url,
            secrets: &secrets,
            env: &env,
            max_turns: Some(20),
            resume_session: None,
            mcp: None,
        };
        adapter.launch(&req).unwrap()
    }

    /// Secrets reach the CLI only through env or 0600 files; never through argv.
    pub fn assert_no_secret_in_argv(l: &Launch) {
        for a in &l.args {
            assert!(!a.contains("sk-secret-value"), "secret in argv: {a}");
        }
        for f in &l.files {
            if f.contents.contains("sk-secret-value") {
                assert!(
                    f.secret && f.mode == 0o600,
                    "secret in a non-private file {:?}",
                    f.path
                );
            }
        }
    }
}

#[cfg(test)]
mod post_edit_hooks {
    use super::testing::launch_with;
    use std::path::Path;

    /// The hook goes into the attempt's private settings (under its home), on each CLI's own
    /// file-editing tools; CLIs without headless hooks say so and change nothing.
    #[test]
    fn hooks_live_in_the_attempts_home_on_the_editing_tools() {
        let home = Path::new("/tmp/home");
        for (cli, file, event, matcher) in [
            (
                "claude",
                "fleet-policy-settings.json",
                "PostToolUse",
                "Write|Edit|MultiEdit|NotebookEdit",
            ),
            (
                "gemini",
                ".gemini/settings.json",
                "AfterTool",
                "write_file|replace",
            ),
            (
                "qwen",
                ".qwen/settings.json",
                "PostToolUse",
                "WriteFile|Edit|write_file|edit|replace",
            ),
        ] {
            let a = crate::adapter(cli).unwrap();
            let mut l = launch_with(&*a, None, None);
            assert!(a.add_post_edit_hook(&mut l, home, "sh /x/hook.sh"), "{cli}");
            let spec = l.files.iter().find(|f| f.path == home.join(file)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&spec.contents).unwrap();
            let hook = &v["hooks"][event][0];
            assert_eq!(hook["matcher"], matcher, "{cli}");
            assert!(
                hook["hooks"][0]["command"]
                    .as_str()
                    .unwrap()
                    .starts_with("sh /x/hook.sh"),
                "{cli}"
            );
        }
        let claude = crate::adapter("claude").unwrap();
        let mut l = launch_with(&*claude, None, None);
        claude.add_post_edit_hook(&mut l, home, "h");
        let at = l.args.iter().position(|a| a == "--settings").unwrap();
        assert_eq!(l.args[at + 1], "/tmp/home/fleet-policy-settings.json");
        for cli in ["codex", "cursor", "amp", "kiro", "aider", "goose"] {
            let Some(a) = crate::adapter(cli) else {
                continue;
            };
            let mut l = launch_with(&*a, None, None);
            let before = l.clone();
            assert!(!a.add_post_edit_hook(&mut l, home, "h"), "{cli}");
            assert_eq!(l, before, "{cli}");
        }
    }
}
