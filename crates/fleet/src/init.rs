//! `fleet init`: an instance that works at once. It looks for the agent CLIs Fleet drives (on
//! PATH and in `$FLEET_AGENT_BIN`) and for the keys they read (by name: a value is never
//! read into the file or printed), writes a commented `fleet.yaml` with a profile per CLI and
//! every pipeline role played, and says what to run next.

use crate::{InvalidInput, exit};
use std::path::{Path, PathBuf};

/// The CLIs in the order they are preferred for the roles that plan and judge: verified
/// against their real binaries first.
const PREFERRED: [&str; 5] = ["claude", "codex", "gemini", "qwen", "opencode"];

/// One agent CLI found on this machine.
pub struct Found {
    pub cli: &'static str,
    pub path: PathBuf,
    /// Found only in `$FLEET_AGENT_BIN`: the profile needs that directory on its PATH.
    pub extra_dir: Option<PathBuf>,
    /// The env vars it reads its credentials from, and whether each is set.
    pub keys: Vec<(&'static str, bool)>,
}

fn in_dirs(binary: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(binary)).find(|p| p.is_file())
}

/// The agent CLIs installed here, preferred ones first.
pub fn detect() -> Vec<Found> {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let agent_bin: Vec<PathBuf> = std::env::var_os("FLEET_AGENT_BIN")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let mut found: Vec<Found> = fleet_agents::cli::all()
        .into_iter()
        // `command` is any program playing an agent: nothing to find.
        .filter(|a| a.name() != "command")
        .filter_map(|a| {
            let (path, extra_dir) = match in_dirs(a.binary(), &path) {
                Some(p) => (p, None),
                None => {
                    let p = in_dirs(a.binary(), &agent_bin)?;
                    let dir = p.parent().map(Path::to_path_buf);
                    (p, dir)
                }
            };
            let keys = a
                .default_secrets()
                .iter()
                .map(|k| (*k, std::env::var_os(k).is_some_and(|v| !v.is_empty())))
                .collect();
            Some(Found {
                cli: a.name(),
                path,
                extra_dir,
                keys,
            })
        })
        .collect();
    let rank = |cli: &str| {
        PREFERRED
            .iter()
            .position(|c| *c == cli)
            .unwrap_or(PREFERRED.len())
    };
    found.sort_by_key(|f| rank(f.cli));
    found
}

/// Who serves a CLI's model by default: one account per vendor.
fn vendor(cli: &str) -> &str {
    match cli {
        "claude" => "anthropic",
        "codex" => "openai",
        "gemini" => "google",
        "qwen" => "qwen",
        other => other,
    }
}

/// A model each CLI is known to work with, written into its profile so a run names what it
/// used; change it freely (docs/CONFIG.md, `model`).
fn model(cli: &str) -> Option<&'static str> {
    match cli {
        "claude" => Some("claude-sonnet-4-5"),
        "codex" => Some("gpt-5.1-codex"),
        "gemini" => Some("gemini-2.5-pro"),
        "qwen" => Some("qwen3-coder-plus"),
        _ => None,
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The `fleet.yaml` for what was found. The first CLI researches, plans and designs; the
/// second (another vendor, when there is one) reviews, so no agent judges its own work;
/// every CLI develops, the preferred ones first.
pub fn config(found: &[Found], base_url: Option<&str>) -> String {
    let mut y = String::from(
        "# Fleet instance configuration, written by `fleet init`. Every key: docs/CONFIG.md.\n\
         store: sqlite\n\
         server: { bind: \"127.0.0.1:7420\" }\n",
    );
    if found.is_empty() {
        y.push_str(
            "\n# No agent CLI was found (claude, codex, gemini, qwen, opencode, ...). Install one and\n\
             # run `fleet init` again, or use Fleet's own agent over any OpenAI-compatible endpoint:\n\
             # agents:\n\
             #   local-dev:\n\
             #     cli: http\n\
             #     base_url: \"http://localhost:11434/v1\"   # e.g. Ollama\n\
             #     model: qwen2.5-coder\n\
             #     roles: [researcher, planner, architect, developer, qa, db, devops, reviewer]\n",
        );
        return y;
    }
    let lead = found[0].cli;
    let reviewer = found
        .iter()
        .find(|f| vendor(f.cli) != vendor(lead))
        .unwrap_or(&found[0])
        .cli;
    y.push_str("\n# One profile per agent CLI found on this machine.\nagents:\n");
    for (i, f) in found.iter().enumerate() {
        let mut roles = vec!["developer", "qa", "db", "devops"];
        if f.cli == lead {
            roles.extend(["researcher", "planner", "architect"]);
        }
        if f.cli == reviewer {
            roles.push("reviewer");
        }
        y.push_str(&format!(
            "  {}-dev:\n    cli: {}   # {}\n{}    roles: [{}]\n    priority: {}\n    account: {}\n",
            f.cli,
            f.cli,
            f.path.display(),
            match model(f.cli) {
                Some(m) => format!("    model: {m}\n"),
                None => "    # model: (the CLI's default; name one to pin it)\n".into(),
            },
            roles.join(", "),
            10 * (found.len() - i),
            vendor(f.cli),
        ));
        if let Some(url) = base_url {
            y.push_str(&format!("    base_url: {}\n", yaml_str(url)));
        }
        if let Some(dir) = &f.extra_dir {
            y.push_str(&format!(
                "    env: {{ PATH: {} }}   # found in $FLEET_AGENT_BIN\n",
                yaml_str(&format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display()))
            ));
        }
    }
    y.push_str(
        "\n# An account per vendor: the keys its CLIs read (names only; values stay in the\n\
         # environment), and an optional daily budget.\naccounts:\n",
    );
    let mut seen = Vec::new();
    for f in found {
        let v = vendor(f.cli);
        if seen.contains(&v) {
            continue;
        }
        seen.push(v);
        let set: Vec<&str> = f.keys.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
        let names: Vec<&str> = if set.is_empty() {
            f.keys.iter().map(|(k, _)| *k).collect()
        } else {
            set.clone()
        };
        let note = if set.is_empty() {
            "none of these is set yet".to_string()
        } else {
            format!("set: {}", set.join(", "))
        };
        y.push_str(&format!(
            "  {v}:\n    secrets: [{}]   # {note}\n    # daily_budget_usd: 20\n",
            names.join(", ")
        ));
    }
    y
}

pub fn run(dir: &Path, base_url: Option<&str>) -> anyhow::Result<u8> {
    let config_path = dir.join("fleet.yaml");
    if config_path.exists() {
        return Err(InvalidInput(format!("{} already exists", config_path.display())).into());
    }
    let found = detect();
    std::fs::create_dir_all(dir)?;
    std::fs::write(&config_path, config(&found, base_url))?;
    std::fs::create_dir_all(dir.join(".fleet"))?;
    println!("created {}", config_path.display());
    if found.is_empty() {
        println!(
            "no agent CLI found on PATH or in $FLEET_AGENT_BIN; fleet.yaml says how to add one."
        );
        println!("See Fleet at work without one:  fleet demo");
        return Ok(exit::PASSED);
    }
    for f in &found {
        let set: Vec<&str> = f.keys.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
        let keys = if f.keys.is_empty() {
            "signs in by itself".to_string()
        } else if set.is_empty() {
            format!(
                "no key set (it reads {})",
                f.keys
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        } else {
            format!("key set: {}", set.join(", "))
        };
        println!("  {:<10} {}  ({keys})", f.cli, f.path.display());
    }
    println!("next:");
    println!("  fleet project add NAME --repo PATH --check \"make test\"");
    println!("  fleet task add \"what you want done\" --project NAME");
    Ok(exit::PASSED)
}
