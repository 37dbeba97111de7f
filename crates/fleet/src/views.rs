//! Read commands: `fleet runs`, `fleet status`, and `fleet gc`.

use crate::{InvalidInput, exit};
use fleet_engine::{StateDir, fmt_duration, rfc3339};
use fleet_store::{RunRow, Store, TaskRow};
use serde_json::json;
use std::time::Duration;

fn counts(tasks: &[TaskRow]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for t in tasks {
        let n = m.entry(t.state.clone()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    serde_json::Value::Object(m)
}

fn run_json(r: &RunRow, tasks: &[TaskRow]) -> serde_json::Value {
    json!({
        "id": r.id,
        "name": r.name,
        "state": r.state,
        "repo": r.repo,
        "base": r.base_sha,
        "integration_branch": r.integration_branch,
        "runbook": r.runbook_path,
        "created_at": rfc3339(r.created_at),
        "finished_at": r.finished_at.map(rfc3339),
        "tasks": tasks.len(),
        "counts": counts(tasks),
    })
}

fn wall(r: &RunRow) -> String {
    let end = r.finished_at.unwrap_or(r.updated_at);
    fmt_duration(Duration::from_millis((end - r.created_at).max(0) as u64))
}

pub fn runs(store: &dyn Store, json: bool) -> anyhow::Result<()> {
    let runs = store.runs()?;
    if json {
        let out: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| Ok(run_json(r, &store.tasks(&r.id)?)))
            .collect::<anyhow::Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!(
        "{:<40} {:<12} {:>9} {:>9}  STARTED",
        "RUN", "STATE", "PASSED", "TIME"
    );
    for r in &runs {
        let tasks = store.tasks(&r.id)?;
        let passed = tasks
            .iter()
            .filter(|t| t.state == "merged" || t.state == "passed")
            .count();
        println!(
            "{:<40} {:<12} {:>9} {:>9}  {}",
            r.id,
            r.state,
            format!("{passed}/{}", tasks.len()),
            wall(r),
            chrono::DateTime::from_timestamp_millis(r.created_at)
                .map(|d| d
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string())
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn attempt_tokens(a: &fleet_store::AttemptRow) -> u64 {
    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens
}

/// `#2 dev-steady (http, scripted-steady): passed, 3900 tokens, $0.0000`.
fn attempt_line(a: &fleet_store::AttemptRow) -> String {
    let mut who = vec![a.cli.clone().unwrap_or_default()];
    if let Some(m) = &a.model {
        who.push(m.clone());
    }
    format!(
        "#{} {} ({}): {}, {} tokens, ${:.4}",
        a.n,
        a.profile.as_deref().unwrap_or("-"),
        who.join(", "),
        a.outcome.replace('_', " "),
        attempt_tokens(a),
        a.cost_usd
    )
}

pub fn status(
    layout: &StateDir,
    store: &dyn Store,
    run: Option<&str>,
    json: bool,
) -> anyhow::Result<u8> {
    let row = match run {
        Some(id) => store
            .run(id)?
            .ok_or_else(|| InvalidInput(format!("no run {id:?}")))?,
        None => store
            .runs()?
            .into_iter()
            .next()
            .ok_or_else(|| InvalidInput("no runs yet".into()))?,
    };
    // A journal a kill left one batch short is completed before anyone reads it.
    let _ = fleet_engine::catch_up_journal(layout, store, &row);
    let tasks = store.tasks(&row.id)?;
    let attempts = store.attempts(&row.id)?;
    // A run on runners has no summary or log files here: its logs are on the runners, their
    // ends in the store.
    let remote = match crate::remote_logs::on_runners(store, &row.id)? {
        true => Some(crate::remote_logs::remote_logs(store, &row.id)?),
        false => None,
    };
    let log_of = |task: &str| match &remote {
        None => json!({"path": layout.log(&row.id, task)}),
        Some(logs) => {
            let l = logs.get(task).cloned().unwrap_or_default();
            json!({"runner": l.runner, "claim": l.claim, "path_on_runner": l.path,
                   "tail_in_store": l.tail.is_some()})
        }
    };
    if json {
        let mut out = run_json(&row, &tasks);
        out["executor"] = json!(if remote.is_some() { "runners" } else { "local" });
        out["summary"] = match remote {
            Some(_) => serde_json::Value::Null,
            None => json!(layout.summary(&row.id)),
        };
        out["logs"] = match remote {
            Some(_) => serde_json::Value::Null,
            None => json!(layout.logs_dir(&row.id)),
        };
        out["task_list"] = json!(tasks
            .iter()
            .map(|t| json!({
                "id": t.id,
                "state": t.state,
                "attempts": t.attempts,
                "failures": t.failures,
                "reason": t.reason,
                "commit": t.commit_sha,
                "merge": t.merge_sha,
                "started_at": t.started_at.map(rfc3339),
                "finished_at": t.finished_at.map(rfc3339),
                "log": match remote {
                    Some(_) => serde_json::Value::Null,
                    None => json!(layout.log(&row.id, &t.id)),
                },
                "log_at": log_of(&t.id),
                "attempt_list": attempts.iter().filter(|a| a.task_id == t.id).map(|a| json!({
                    "n": a.n, "outcome": a.outcome, "exit_code": a.exit_code, "detail": a.detail,
                    "started_at": rfc3339(a.started_at), "finished_at": a.finished_at.map(rfc3339),
                    "agent": a.profile, "cli": a.cli, "model": a.model, "account": a.account,
                    "tokens": attempt_tokens(a), "cost_usd": a.cost_usd,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::PASSED);
    }
    println!("run      {} ({})", row.id, row.state);
    println!("branch   {}", row.integration_branch);
    println!("runbook  {}", row.runbook_path);
    println!("time     {}", wall(&row));
    match &remote {
        None => println!("summary  {}", layout.summary(&row.id).display()),
        Some(_) => println!(
            "logs     on the runners that played the tasks; `fleet logs {} TASK` shows a log's end from the store",
            row.id
        ),
    }
    println!();
    println!("{:<28} {:<10} {:>8}  NOTES", "TASK", "STATE", "ATTEMPTS");
    for t in &tasks {
        println!(
            "{:<28} {:<10} {:>8}  {}",
            t.id,
            t.state,
            t.attempts,
            t.reason.as_deref().unwrap_or("")
        );
        if let Some(l) = remote.as_ref().and_then(|r| r.get(&t.id))
            && l.runner.is_some()
        {
            println!("    log: {}", l.place());
        }
        // Who played each agent attempt, on what model, at what spend.
        for a in attempts
            .iter()
            .filter(|a| a.task_id == t.id && a.profile.is_some())
        {
            println!("    {}", attempt_line(a));
        }
    }
    Ok(exit::PASSED)
}

pub fn gc(
    layout: &StateDir,
    store: &dyn Store,
    interrupted: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let root = layout.worktrees();
    // First, what a dead Fleet or git left in the runs' repositories (half-made worktree
    // entries, stale locks): until that is repaired, every worktree command there fails.
    let mut repaired = Vec::new();
    let repo_paths: std::collections::BTreeSet<String> =
        store.runs()?.into_iter().map(|r| r.repo).collect();
    for path in repo_paths {
        if let Ok(repo) = fleet_git::Repo::open(std::path::Path::new(&path)) {
            repaired.extend(repo.repair(&root)?.describe());
        }
    }
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut repos = std::collections::BTreeSet::new();
    for run_dir in entries {
        let run_id = run_dir.file_name().to_string_lossy().to_string();
        let run = store.run(&run_id)?;
        let stale = match run.as_ref().map(|r| r.state.as_str()) {
            None => true,
            Some("running") => false,
            Some("interrupted") => interrupted,
            Some(_) => true,
        };
        if !stale {
            kept.push(run_id);
            continue;
        }
        let repo = run
            .as_ref()
            .and_then(|r| fleet_git::Repo::open(std::path::Path::new(&r.repo)).ok());
        for wt in std::fs::read_dir(run_dir.path())? {
            let path = wt?.path();
            match &repo {
                Some(repo) => repo.remove_worktree(&path)?,
                None => std::fs::remove_dir_all(&path)?,
            }
            removed.push(path);
        }
        std::fs::remove_dir_all(run_dir.path())?;
        if let Some(repo) = repo {
            repos.insert(repo.root().to_path_buf());
        }
    }
    for r in repos {
        fleet_git::Repo::open(&r)?.prune_worktrees()?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"removed": removed, "kept_runs": kept, "repaired": repaired})
            )?
        );
    } else {
        for r in &repaired {
            println!("repaired: {r}");
        }
        for p in &removed {
            println!("removed {}", p.display());
        }
        println!(
            "{} worktree(s) removed; {} run(s) still active or resumable kept",
            removed.len(),
            kept.len()
        );
    }
    Ok(())
}

fn money(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|x| format!("${x:.4}"))
        .unwrap_or_else(|| "-".into())
}

/// A number as plain text, so that `{:>N}` pads it (a JSON value ignores the width).
fn count(v: &serde_json::Value) -> String {
    v.as_u64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// An account's state in words: disabled, cooling down (until a local time), over budget (a
/// budget of money or tokens spent: nothing runs on it until its day restarts), or usable.
pub fn budget_state(a: &serde_json::Value) -> String {
    let spent = |used: &str, budget: &str| {
        a[budget]
            .as_f64()
            .is_some_and(|b| a[used].as_f64().unwrap_or(0.0) >= b)
    };
    if let Some(why) = a["disabled"].as_str() {
        format!("disabled: {why}")
    } else if let Some(until) = a["cooldown_until"].as_str() {
        format!("cooling down until {}", crate::local_time::clock(until))
    } else if spent("spent_usd", "budget_usd") || spent("spent_tokens", "budget_tokens") {
        let next_day = a["day_started"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| crate::local_time::clock_ms(t.timestamp_millis() + 86_400_000));
        match next_day {
            Some(at) => format!("over budget until {at}"),
            None => "over budget until its day restarts".into(),
        }
    } else {
        "usable".into()
    }
}

/// `fleet budget`: what each account, profile, role and task spent in the current budget day
/// (each account's own), against the daily budgets, with cooldowns and disabled accounts.
pub fn budget(
    instance: &fleet_config::InstanceConfig,
    store: &dyn Store,
    json_out: bool,
) -> anyhow::Result<()> {
    let report = fleet_server::report::budget(instance, store)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let accounts = report["accounts"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:>12} {:>12} {:>12} {:>12}  STATE\n",
        "ACCOUNT", "SPENT", "BUDGET", "LEFT", "TOKENS"
    ));
    for a in &accounts {
        out.push_str(&format!(
            "{:<20} {:>12} {:>12} {:>12} {:>12}  {}\n",
            a["account"].as_str().unwrap_or(""),
            money(&a["spent_usd"]),
            money(&a["budget_usd"]),
            money(&a["left_usd"]),
            count(&a["spent_tokens"]),
            budget_state(a)
        ));
    }
    for (title, key) in [
        ("PROFILE", "profiles"),
        ("ROLE", "roles"),
        ("TASK", "tasks"),
    ] {
        let Some(map) = report[key].as_object().filter(|m| !m.is_empty()) else {
            continue;
        };
        let width = map
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len());
        out.push_str(&format!(
            "\n{title:<width$} {:>12} {:>12} {:>8}\n",
            "SPENT", "TOKENS", "TRIES"
        ));
        for (k, s) in map {
            out.push_str(&format!(
                "{k:<width$} {:>12} {:>12} {:>8}\n",
                money(&s["usd"]),
                count(&s["tokens"]),
                count(&s["attempts"])
            ));
        }
    }
    print!("{out}");
    Ok(())
}
