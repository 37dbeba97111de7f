//! `fleet agents ls | doctor | replay`: what agent CLIs are here, whether profiles can run, and
//! how a recorded transcript parses.

use crate::{InvalidInput, exit};
use fleet_agents::{ProcessEnd, Verification};
use fleet_config::InstanceConfig;
use fleet_engine::plan::AgentProfile;
use fleet_store::Store;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// `<binary> --version`, first line, or why not.
fn version(binary: &str) -> Result<String, String> {
    let out = std::process::Command::new("timeout")
        .args(["10", binary, "--version"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Some(127) => Err("not installed".into()),
        Some(124) => Err("`--version` timed out".into()),
        Some(code) => Err(format!("`--version` exited {code}")),
        None => Err("`--version` was killed by a signal".into()),
    }
}

pub(crate) fn on_path(binary: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Profiles of the instance plus the default profile of every CLI without one.
fn profiles(instance: &InstanceConfig) -> Vec<AgentProfile> {
    instance
        .agents
        .iter()
        .map(|p| AgentProfile::from_config(p, instance))
        .collect()
}

pub fn ls(
    instance: &InstanceConfig,
    store: Option<&dyn Store>,
    json_out: bool,
) -> anyhow::Result<u8> {
    let states = crate::accounts::states(instance, store)?;
    let mut clis = Vec::new();
    for a in fleet_agents::cli::all() {
        let installed = on_path(a.binary());
        let version = installed.as_ref().map(|_| version(a.binary()));
        clis.push(json!({
            "cli": a.name(),
            "binary": a.binary(),
            "path": installed,
            "version": version.as_ref().and_then(|v| v.as_ref().ok()),
            "problem": match &version { None => Some("not installed".to_string()), Some(Err(e)) => Some(e.clone()), _ => None },
            "verification": match a.verification() { Verification::RealBinary => "real-binary", Verification::FixtureVerified => "fixture-verified" },
            "can_resume": a.can_resume(),
        }));
    }
    clis.push(
        json!({"cli": "http", "binary": null, "path": null, "version": "built in", "problem": null,
        "verification": "real-binary", "can_resume": false}),
    );
    let profiles: Vec<serde_json::Value> = profiles(instance)
        .iter()
        .map(|p| {
            let cfg = instance.profile(&p.name);
            json!({
                "name": p.name, "cli": p.cli, "model": p.model, "account": p.account,
                "roles": cfg.map(|c| c.roles.clone()).unwrap_or_default(),
                "priority": cfg.map(|c| c.priority).unwrap_or(0),
                "tier": cfg.map(|c| c.tier).unwrap_or(0),
                "base_url": p.base_url,
            })
        })
        .collect();
    let accounts: Vec<serde_json::Value> = instance
        .accounts
        .iter()
        .map(|a| {
            let secrets: Vec<serde_json::Value> = a
                .secrets
                .iter()
                .map(|s| json!({"name": s, "present": std::env::var_os(s).is_some_and(|v| !v.is_empty())}))
                .collect();
            let state = states.iter().find(|s| s["name"] == a.name.as_str());
            json!({
                "name": a.name,
                "state": state.map(|s| s["state"].clone()),
                "state_text": state.map(crate::accounts::describe),
                "secrets": secrets,
                "daily_budget_usd": a.daily_budget_usd,
                "daily_budget_tokens": a.daily_budget_tokens,
                "window": a.window.map(|w| format!("{:02}:{:02}-{:02}:{:02}", w.start / 60, w.start % 60, w.end / 60, w.end % 60)),
            })
        })
        .collect();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"clis": clis, "profiles": profiles, "accounts": accounts})
            )?
        );
        return Ok(exit::PASSED);
    }
    println!(
        "{:<10} {:<14} {:<18} {:<36} NOTE",
        "CLI", "BINARY", "VERIFIED", "VERSION"
    );
    for c in &clis {
        println!(
            "{:<10} {:<14} {:<18} {:<36} {}",
            c["cli"].as_str().unwrap_or(""),
            c["binary"].as_str().unwrap_or("-"),
            c["verification"].as_str().unwrap_or(""),
            c["version"].as_str().unwrap_or("-"),
            c["problem"].as_str().unwrap_or("")
        );
    }
    if !profiles.is_empty() {
        println!(
            "\n{:<20} {:<9} {:<28} {:<16} {:>8}  ROLES",
            "PROFILE", "CLI", "MODEL", "ACCOUNT", "PRIORITY"
        );
        for p in &profiles {
            println!(
                "{:<20} {:<9} {:<28} {:<16} {:>8}  {}",
                p["name"].as_str().unwrap_or(""),
                p["cli"].as_str().unwrap_or(""),
                p["model"].as_str().unwrap_or("default"),
                p["account"].as_str().unwrap_or("-"),
                p["priority"],
                p["roles"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            );
        }
    }
    if !accounts.is_empty() {
        println!(
            "\n{:<20} {:<10} {:<12}  SECRETS / STATE",
            "ACCOUNT", "BUDGET", "WINDOW"
        );
        for a in &accounts {
            let secrets: Vec<String> = a["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s["name"].as_str().unwrap_or(""),
                        if s["present"] == true {
                            "set"
                        } else {
                            "MISSING"
                        }
                    )
                })
                .collect();
            println!(
                "{:<20} {:<10} {:<12}  {}",
                a["name"].as_str().unwrap_or(""),
                a["daily_budget_usd"]
                    .as_f64()
                    .map(|b| format!("${b}/day"))
                    .unwrap_or("-".into()),
                a["window"].as_str().unwrap_or("always"),
                secrets.join(", ")
            );
            println!(
                "{:<20} {}",
                "",
                a["state_text"].as_str().unwrap_or("usable")
            );
        }
    }
    Ok(exit::PASSED)
}

/// Checks every profile: CLI installed, secrets present, base URL reachable; with `smoke`, runs
/// one short real turn of that profile in a scratch repository.
pub fn doctor(
    instance: &InstanceConfig,
    store: Option<&dyn Store>,
    smoke: Option<&str>,
    json_out: bool,
) -> anyhow::Result<u8> {
    let states = crate::accounts::states(instance, store)?;
    let mut report = Vec::new();
    let mut healthy = true;
    let mut all = profiles(instance);
    if let Some(name) = smoke
        && !all.iter().any(|p| p.name == name)
    {
        if fleet_agents::adapter(name).is_some() {
            all.push(AgentProfile::bare(name));
        } else {
            return Err(InvalidInput(format!("no profile or CLI named {name:?}")).into());
        }
    }
    for p in &all {
        let mut problems = Vec::new();
        let mut acp = None;
        if p.acp {
            match acp_handshake(p) {
                Ok(caps) => acp = Some(caps),
                Err(e) => problems.push(format!("ACP: {e}")),
            }
        } else if p.cli != "http" && p.cli != "command" {
            let binary = fleet_agents::adapter(&p.cli)
                .map(|a| a.binary())
                .unwrap_or("?");
            if on_path(binary).is_none() {
                problems.push(format!("`{binary}` is not on PATH"));
            }
        }
        let missing: Vec<&String> = p
            .secrets
            .iter()
            .filter(|s| std::env::var_os(s).is_none_or(|v| v.is_empty()))
            .collect();
        if !p.secrets.is_empty() && missing.len() == p.secrets.len() {
            problems.push(format!(
                "none of its secret env vars is set ({})",
                p.secrets.join(", ")
            ));
        }
        if let Some(url) = &p.base_url
            && let Err(e) = reachable(url)
        {
            problems.push(format!("base_url {url} is not reachable: {e}"));
        }
        // A disabled account fails every attempt of the profile; a cooldown or a spent budget
        // only delays them.
        let mut notes = Vec::new();
        if let Some(st) = p
            .account
            .as_ref()
            .and_then(|a| states.iter().find(|s| s["name"] == a.as_str()))
        {
            let line = format!(
                "account {}: {}",
                st["name"].as_str().unwrap_or(""),
                crate::accounts::describe(st)
            );
            match st["state"].as_str() {
                Some("disabled") => problems.push(line),
                Some("usable") | None => {}
                _ => notes.push(line),
            }
        }
        let mut entry = json!({"profile": p.name, "cli": p.cli, "ok": problems.is_empty(), "problems": problems, "notes": notes});
        if let Some(caps) = &acp {
            entry["acp"] = json!(caps);
            entry["acp_summary"] = json!(caps.describe());
        }
        if smoke == Some(p.name.as_str()) {
            let result = smoke_test(p)?;
            if result["outcome"] != "succeeded" {
                healthy = false;
            }
            entry["smoke"] = result;
        }
        healthy &= entry["ok"] == true;
        report.push(entry);
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.is_empty() {
            println!(
                "no profiles in fleet.yaml; `fleet agents doctor --smoke <cli>` tries a bare CLI"
            );
        }
        for r in &report {
            let status = if r["ok"] == true { "ok" } else { "PROBLEM" };
            println!(
                "{:<20} {:<9} {status}",
                r["profile"].as_str().unwrap_or(""),
                r["cli"].as_str().unwrap_or("")
            );
            for p in r["problems"].as_array().into_iter().flatten() {
                println!("    - {}", p.as_str().unwrap_or(""));
            }
            for n in r["notes"].as_array().into_iter().flatten() {
                println!("    note: {}", n.as_str().unwrap_or(""));
            }
            if let Some(a) = r["acp_summary"].as_str() {
                println!("    acp: {a}");
            }
            if let Some(s) = r.get("smoke") {
                println!(
                    "    smoke test: {} in {} ms, {} tokens, ${:.6}{}",
                    s["outcome"].as_str().unwrap_or("?"),
                    s["duration_ms"],
                    s["tokens"],
                    s["cost_usd"].as_f64().unwrap_or(0.0),
                    s["detail"]
                        .as_str()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(if healthy { exit::PASSED } else { exit::FAILED })
}

/// An ACP profile's `initialize` handshake: the agent started as an attempt would start it (its
/// private home, credentials, scrubbed env), asked for its capabilities, then ended.
fn acp_handshake(p: &AgentProfile) -> Result<fleet_agents::acp::Capabilities, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("tmp")).map_err(|e| e.to_string())?;
    let secrets = fleet_engine::agent::secret_values(&p.secrets);
    let req = fleet_agents::AttemptRequest {
        prompt: "",
        system: None,
        model: p.model.as_deref(),
        workdir: dir.path(),
        home: &home,
        base_url: p.base_url.as_deref(),
        secrets: &secrets,
        env: &p.env,
        max_turns: None,
        resume_session: None,
        mcp: None,
    };
    let launch = fleet_agents::acp::launch(&p.cli, p.command.as_deref(), &p.args, &req)
        .map_err(|e| e.to_string())?;
    let rt = crate::runtime().map_err(|e| e.to_string())?;
    rt.block_on(fleet_engine::acp_session::handshake(
        &launch,
        dir.path(),
        // Node agents take 15-20 s to answer on a busy 2-core machine.
        Duration::from_secs(60),
    ))
}

fn reachable(url: &str) -> Result<(), String> {
    let rest = url.split("://").nth(1).ok_or("no scheme")?;
    let hostport = rest.split('/').next().unwrap_or("");
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else if url.starts_with("https") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    use std::net::ToSocketAddrs;
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One short real turn in a scratch repository.
fn smoke_test(p: &AgentProfile) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo)?;
    fleet_git::command(&repo).args(["init", "-q"]).status()?;
    let prompt = "Reply with the single word OK. Do not use any tools.";
    let log = std::fs::File::create(dir.path().join("log"))?;
    let env = std::collections::BTreeMap::new();
    let run = fleet_engine::agent::AgentRun {
        profile: p,
        prompt,
        workdir: &repo,
        home: &dir.path().join("home"),
        transcript: &dir.path().join("transcript"),
        log: &log,
        timeout: Some(Duration::from_secs(120)),
        kill_grace: Duration::from_secs(2),
        resume_session: None,
        mcp: None,
        extra_env: &env,
        secrets: &fleet_engine::agent::secret_values(&p.secrets),
        redactor: &fleet_secrets::Redactor::from_process_env(&[]),
        policy: None,
    };
    let started = std::time::Instant::now();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut usage = fleet_agents::Usage::default();
    let mut cost = 0.0;
    let rt = crate::runtime()?;
    let result = rt.block_on(fleet_engine::agent::run(run, rx, |events| {
        for e in events {
            match e {
                fleet_agents::AgentEvent::Usage(u) => usage.add(&u),
                fleet_agents::AgentEvent::Cost { usd } => cost += usd,
                _ => {}
            }
        }
    }));
    Ok(match result {
        Ok((_, end)) => json!({
            "outcome": end.outcome.class.as_str(),
            "detail": end.outcome.detail,
            "duration_ms": started.elapsed().as_millis() as u64,
            "tokens": usage.total(),
            "cost_usd": cost,
        }),
        Err(e) => {
            json!({"outcome": "crashed", "detail": e, "duration_ms": started.elapsed().as_millis() as u64, "tokens": 0, "cost_usd": 0.0})
        }
    })
}

/// Parses a recorded stdout transcript (and optional stderr) and prints one JSON object.
pub fn replay(
    cli: &str,
    file: &Path,
    stderr: Option<&Path>,
    exit_code: Option<i32>,
) -> anyhow::Result<u8> {
    let adapter = fleet_agents::adapter(cli).ok_or_else(|| {
        InvalidInput(format!(
            "unknown cli {cli:?}; expected one of: {}",
            fleet_agents::names().join(", ")
        ))
    })?;
    let read = |p: &Path| -> anyhow::Result<String> {
        let bytes = std::fs::read(p)
            .map_err(|e| InvalidInput(format!("cannot read {}: {e}", p.display())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let stdout = read(file)?;
    let stderr = match stderr {
        Some(p) => read(p)?,
        None => String::new(),
    };
    let mut end = exit_code
        .map(ProcessEnd::from_exit_status)
        .unwrap_or(ProcessEnd {
            exit_code: Some(0),
            ..ProcessEnd::default()
        });
    end.ended_at = Some(chrono::Utc::now().timestamp());
    end.utc_offset_secs = chrono::Local::now().offset().local_minus_utc();
    let replay = fleet_agents::replay(&*adapter, &stdout, &stderr, &end);
    println!("{}", serde_json::to_string(&replay)?);
    Ok(exit::PASSED)
}
