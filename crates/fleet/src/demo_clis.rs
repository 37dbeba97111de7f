//! The real agent CLIs in `fleet demo`.
//!
//! - Default demo: the installed CLIs (found as `fleet init` finds them) play beside Fleet's
//!   `http` agent against the same embedded scripted model on loopback. Each gets a dummy key
//!   in its profile's `env:`, and an account without secrets, so no key of the user's
//!   environment ever reaches them (Fleet clears a CLI's environment and passes only the
//!   account's secrets and the profile's `env:`).
//! - `fleet demo --real`: the CLIs whose keys are set play every role against their vendors, with
//!   the user's keys (names only in `fleet.yaml`; values stay in the environment).

use crate::init::{self, Found};
use fleet_testkit::{ModelServer, Scenario};

/// The key the loopback model is given. Shorter than any real key (and than
/// `fleet_secrets::MIN_SECRET_LEN`, so Fleet reads it as a placeholder, not a secret): no
/// vendor accepts it, the scripted model accepts any.
const LOOPBACK_KEY: &str = "demo";

/// The CLIs that may join the default demo, in the order one is chosen (fastest first: on a
/// loaded 2-core machine claude researched in ~5 s, gemini reviewed in ~15 s, opencode in ~40 s),
/// with the env var each reads its key from. One joins, as the researcher: the role played
/// once per request (the planner and the reviewer play twice in the story), so the demo stays
/// well under a minute. codex and qwen are left out: their adapters take the key only from the
/// account's secrets, whose values come from the user's environment — the user's real key
/// would be handed to the loopback model.
const LOOPBACK_CLIS: [(&str, &str); 3] = [
    ("claude", "ANTHROPIC_API_KEY"),
    ("gemini", "GEMINI_API_KEY"),
    ("opencode", "ANTHROPIC_API_KEY"),
];

fn loopback_rank(cli: &str) -> Option<usize> {
    LOOPBACK_CLIS.iter().position(|(c, _)| *c == cli)
}

fn loopback_key_var(cli: &str) -> Option<&'static str> {
    LOOPBACK_CLIS
        .iter()
        .find(|(c, _)| *c == cli)
        .map(|(_, k)| *k)
}

/// The model named in a CLI's profile. opencode names its provider too.
fn model(cli: &str) -> &'static str {
    match cli {
        "opencode" => "anthropic/claude-sonnet-4-5",
        "gemini" => "gemini-2.5-pro",
        _ => "claude-sonnet-4-5",
    }
}

/// The role a real CLI plays in the default demo. Fleet's `http` researcher plays it too, at
/// a lower priority, so a CLI that fails hands the task to it and the story still ends.
const LOOPBACK_ROLE: &str = "researcher";

/// A real CLI in the default demo: its profile (named after the CLI) and role.
pub struct LoopbackCli {
    pub cli: &'static str,
    pub role: &'static str,
    found: Found,
}

/// The installed CLI that joins the default demo, if any (a `Vec` so more can join once they
/// start fast enough).
pub fn loopback_clis() -> Vec<LoopbackCli> {
    let mut found: Vec<Found> = init::detect()
        .into_iter()
        .filter(|f| loopback_rank(f.cli).is_some())
        .collect();
    found.sort_by_key(|f| loopback_rank(f.cli));
    found
        .into_iter()
        .take(1)
        .map(|found| LoopbackCli {
            cli: found.cli,
            role: LOOPBACK_ROLE,
            found,
        })
        .collect()
}

fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `PATH` for a CLI's profile: its own directory first (it may be found only in
/// `$FLEET_AGENT_BIN`), then the caller's (node and the tools it runs).
fn path_env(found: &Found) -> String {
    let dir = found
        .path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    format!("{dir}:{rest}")
}

/// The default demo's profiles for the real CLIs, and the scenarios they play on `server`
/// (each CLI plays the same scenario as the `http` profile of its role).
pub fn loopback_profiles(
    clis: &[LoopbackCli],
    server: &ModelServer,
    scenario_of: impl Fn(&str) -> Scenario,
) -> String {
    let mut y = String::new();
    for c in clis {
        server.add_scenario(c.cli, scenario_of(c.role));
        let key = loopback_key_var(c.cli).unwrap_or("ANTHROPIC_API_KEY");
        y.push_str(&format!(
            "  {cli}:   # the real `{cli}` CLI ({path}), against the loopback model\n    cli: {cli}\n    model: {model}\n    roles: [{role}]\n    account: loopback\n    priority: 20\n    base_url: {url}\n    stall_timeout: 60s\n    env: {{ PATH: {path_env}, {key}: {LOOPBACK_KEY} }}\n",
            cli = c.cli,
            path = c.found.path.display(),
            model = model(c.cli),
            role = c.role,
            url = yaml_str(&server.base_url(c.cli)),
            path_env = yaml_str(&path_env(&c.found)),
        ));
    }
    y
}

/// The account of the real CLIs in the default demo: no secrets, so none of the user's keys is
/// read for them.
pub fn loopback_account(clis: &[LoopbackCli]) -> &'static str {
    if clis.is_empty() {
        ""
    } else {
        "  loopback: { secrets: [] }\n"
    }
}

/// The env var a CLI reads its vendor's address from. Fleet clears a CLI's environment, so a
/// base URL the user set (a proxy, a gateway) is written into the profile for `--real`.
fn base_url_var(cli: &str) -> Option<&'static str> {
    match cli {
        "claude" => Some("ANTHROPIC_BASE_URL"),
        "codex" | "qwen" => Some("OPENAI_BASE_URL"),
        "gemini" => Some("GOOGLE_GEMINI_BASE_URL"),
        _ => None,
    }
}

/// Why `fleet demo --real` cannot run here: what was looked for and what is missing.
fn missing(found: &[Found]) -> String {
    let mut why = String::from("fleet demo --real needs an agent CLI and its key; ");
    if found.is_empty() {
        why.push_str(
            "no agent CLI was found on PATH or in $FLEET_AGENT_BIN \
             (claude, codex, gemini, qwen, opencode, ...).",
        );
    } else {
        let each: Vec<String> = found
            .iter()
            .map(|f| {
                let names: Vec<&str> = f.keys.iter().map(|(k, _)| *k).collect();
                if names.is_empty() {
                    format!("{} (it names no key Fleet can check)", f.cli)
                } else {
                    format!("{} (none of {} is set)", f.cli, names.join(", "))
                }
            })
            .collect();
        why.push_str(&format!("found {}.", each.join("; ")));
    }
    why.push_str(" Set a key and try again, or run `fleet demo` (no key needed).");
    why
}

/// The CLIs `--real` can use (installed, with a key set), or why there is none.
pub fn usable(found: Vec<Found>) -> Result<Vec<Found>, String> {
    let (usable, unusable): (Vec<Found>, Vec<Found>) = found
        .into_iter()
        .partition(|f| f.keys.iter().any(|(_, set)| *set));
    if usable.is_empty() {
        Err(missing(&unusable))
    } else {
        Ok(usable)
    }
}

/// `fleet demo --real`'s `fleet.yaml`: what `fleet init` writes for the usable CLIs, with the
/// base URL each CLI's environment names, if any.
pub fn real_yaml(usable: &[Found]) -> String {
    let mut y = init::config(usable, None);
    for f in usable {
        let Some(url) = base_url_var(f.cli)
            .and_then(|v| std::env::var(v).ok())
            .filter(|u| !u.is_empty())
        else {
            continue;
        };
        // The profile `fleet init` wrote for this CLI starts with `  <cli>-dev:`; its base URL
        // goes right under it.
        let head = format!("  {}-dev:\n", f.cli);
        y = y.replacen(
            &head,
            &format!("{head}    base_url: {}\n", yaml_str(&url)),
            1,
        );
    }
    y
}
