//! `fleet project …` and `fleet task …`: registering projects, submitting requests (epics),
//! watching them go through the pipeline, accepting or rejecting the result.

use crate::{InvalidInput, exit, open_store};
use fleet_engine::StateDir;
use fleet_pipeline::{Pipeline, PipelineError};
use fleet_store::Event;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fleet_pipeline::NewProject;

/// The instance a pipeline command works in: it must exist (`fleet init`).
pub fn instance_home(home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    crate::find_home(home, &cwd).ok_or_else(|| {
        InvalidInput(format!(
            "no fleet instance at or above {} (create one with `fleet init`, or pass --home)",
            cwd.display()
        ))
        .into()
    })
}

/// Errors in the user's files, one per line (exit 2).
fn invalid_files(errors: &[fleet_config::ConfigError]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    InvalidInput(lines.join("\n")).into()
}

/// The instance's roles, bibles and skills over the built-in ones.
fn load_library(home: &Path) -> anyhow::Result<fleet_config::Library> {
    fleet_config::Library::load(Some(home)).map_err(|e| invalid_files(&e))
}

/// The instance's store.
pub fn store(home: &Path) -> anyhow::Result<Arc<dyn fleet_store::Store>> {
    open_store(&StateDir::new(home.join(".fleet")), false)
}

pub fn pipeline(home: &Path, quiet: bool) -> anyhow::Result<Pipeline> {
    let mut instance = crate::load_instance(Some(home))?;
    let library = load_library(home)?;
    let mut errors = instance.routing.unknown_roles(&library);
    errors.extend(library.unknown_profiles(&instance));
    if !errors.is_empty() {
        return Err(invalid_files(&errors));
    }
    // A role file's `profiles:` lets those profiles play it, beside fleet.yaml's `roles:`.
    for role in library.roles.values() {
        for name in &role.profiles {
            if let Some(p) = instance.agents.iter_mut().find(|p| &p.name == name)
                && !p.roles.contains(&role.name)
            {
                p.roles.push(role.name.clone());
            }
        }
    }
    let layout = StateDir::new(home.join(".fleet"));
    let store = open_store(&layout, false)?;
    let observer: Option<fleet_pipeline::Observer> = if quiet {
        None
    } else {
        Some(Arc::new(|e: &Event| {
            if let Some(line) = heartbeat(e) {
                eprintln!("{} {line}", fleet_engine::rfc3339(e.at));
            }
        }))
    };
    Ok(Pipeline {
        layout,
        store,
        instance,
        library,
        fleet_exe: std::env::current_exe()?,
        limits: fleet_core::epic::Limits::default(),
        concurrency: 4,
        observer,
        shutdown: None,
    })
}

/// The live heartbeat: one readable line for the events a person follows.
fn heartbeat(e: &Event) -> Option<String> {
    let task = e.task.as_deref().unwrap_or("-");
    let d = &e.data;
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    Some(match e.kind.as_str() {
        "task.created" if d["kind"] == "epic" => format!("{task}: new epic for {}", s("project")),
        "epic.stage_started" => format!("{task}: {} started (cycle {})", s("stage"), d["cycle"]),
        "epic.stage_finished" => format!("{task}: {} -> {} ({})", s("stage"), s("next"), s("why")),
        "attempt.started" if d["agent"].is_string() => {
            format!("{}: agent {} started on {task}", e.run_id, s("agent"))
        }
        "task.checks_failed" => format!("{}: {task}: check `{}` failed", e.run_id, s("check")),
        "attempt.finished"
            if matches!(
                d["outcome"].as_str(),
                Some(
                    "rate_limited"
                        | "quota_exhausted"
                        | "auth_failed"
                        | "overloaded"
                        | "stalled"
                        | "timed_out"
                        | "crashed"
                )
            ) =>
        {
            format!(
                "{}: {task}: attempt {} {}: {}",
                e.run_id,
                e.attempt.unwrap_or(0),
                s("outcome").replace('_', " "),
                s("detail").lines().next().unwrap_or("")
            )
        }
        "task.waiting" => format!(
            "{}: {task}: waiting until {}: {}",
            e.run_id,
            d["until"]
                .as_str()
                .map(crate::local_time::clock)
                .unwrap_or_else(|| "it can go on".into()),
            s("reason")
        ),
        "attempt.swapped" => format!(
            "{}: {task}: moved from {} to {}: {}",
            e.run_id,
            s("from"),
            s("to"),
            s("reason")
        ),
        "account.cooldown" => format!(
            "account {} cooling down until {}: {}",
            s("account"),
            crate::local_time::clock(&s("until")),
            s("reason")
        ),
        "task.merged" => format!("{}: {task} landed", e.run_id),
        "task.merge_conflict" => format!("{}: {task}: merge conflict, reworking", e.run_id),
        "task.failed" => format!("{}: {task} failed: {}", e.run_id, s("reason")),
        "task.review_rejected" => format!("{task}: sent back"),
        "task.awaiting_acceptance" => format!("{task}: ready for acceptance"),
        "task.blocked" => format!("{task}: blocked, needs you: {}", s("question")),
        "epic.delivery_retried" => format!(
            "{task}: {} failed (try {} of {}), trying again: {}",
            s("step"),
            d["try"],
            d["of"],
            s("error").lines().next().unwrap_or("")
        ),
        _ => return None,
    })
}

fn pipeline_error(e: PipelineError) -> anyhow::Error {
    match e {
        PipelineError::Invalid(m) | PipelineError::NotNow(m) => InvalidInput(m).into(),
        PipelineError::NoSuchEpic(id) => InvalidInput(format!("no epic {id:?}")).into(),
        PipelineError::Forge(m, _) => crate::ForgeFailure(m).into(),
        other => other.into(),
    }
}

pub fn project_add(home: &Path, p: NewProject) -> anyhow::Result<u8> {
    let row = pipeline(home, true)?
        .add_project(p)
        .map_err(pipeline_error)?;
    println!(
        "project {} added ({} on {})",
        row.name, row.path, row.default_branch
    );
    Ok(exit::PASSED)
}

pub fn project_new(
    home: &Path,
    name: &str,
    bible: &str,
    dir: Option<std::path::PathBuf>,
) -> anyhow::Result<u8> {
    let row = pipeline(home, true)?
        .new_project(name, bible, dir)
        .map_err(pipeline_error)?;
    println!(
        "project {} created ({} on {}, bible {})",
        row.name,
        row.path,
        row.default_branch,
        row.bible.as_deref().unwrap_or("")
    );
    Ok(exit::PASSED)
}

pub fn project_ls(home: &Path, json_out: bool) -> anyhow::Result<u8> {
    let store = store(home)?;
    let projects = store.projects()?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&projects)?);
    } else {
        for p in projects {
            println!(
                "{:<16} {:<10} {:<14} {}",
                p.name,
                p.default_branch,
                p.delivery["kind"].as_str().unwrap_or("branch"),
                p.path
            );
        }
    }
    Ok(exit::PASSED)
}

/// The pipeline of a command that drives an epic: a stop signal (Ctrl-C, SIGTERM, SIGHUP)
/// stops its stage runs the ordinary way, whichever stage it comes in or between.
fn driving_pipeline(home: &Path, quiet: bool) -> anyhow::Result<Pipeline> {
    let mut p = pipeline(home, quiet)?;
    p.shutdown = Some(fleet_engine::signals::stop_watch());
    Ok(p)
}

/// Drives an epic until it needs a person; prints where it ended.
pub fn drive(p: &Pipeline, id: &str) -> anyhow::Result<u8> {
    drive_on(&crate::runtime()?, p, id)
}

fn drive_on(rt: &tokio::runtime::Runtime, p: &Pipeline, id: &str) -> anyhow::Result<u8> {
    let epic = rt.block_on(p.drive(id)).map_err(pipeline_error)?;
    let (_, data) = p.epic(&epic.id).map_err(pipeline_error)?;
    println!("epic {} {}", epic.id, epic.state);
    println!("branch:  {}", epic.branch);
    if let Some(url) = data.delivery.as_ref().and_then(|d| d.url.clone()) {
        println!("result:  {url}");
    }
    if let Some(r) = fleet_pipeline::reason(&epic, &data) {
        println!("reason:  {r}");
    }
    println!("details: fleet task show {}", epic.id);
    Ok(match epic.state.as_str() {
        "awaiting_acceptance" | "done" => exit::PASSED,
        _ => exit::FAILED,
    })
}

pub fn add(
    home: &Path,
    project: &str,
    request: &str,
    wait: bool,
    quiet: bool,
) -> anyhow::Result<u8> {
    add_as(
        home,
        project,
        request,
        fleet_core::epic::Mode::Standard,
        wait,
        quiet,
    )
}

/// `fleet task add --mode MODE`.
pub fn add_as(
    home: &Path,
    project: &str,
    request: &str,
    mode: fleet_core::epic::Mode,
    wait: bool,
    quiet: bool,
) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let epic = p
        .submit_as(project, request, mode)
        .map_err(pipeline_error)?;
    println!("epic {} created", epic.id);
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, &epic.id)
}

/// `fleet task ls`: every epic with its state and, for a blocked or failed one, why (the
/// read model `fleet_views::list_rows`, as the API's).
pub fn ls(home: &Path, json_out: bool) -> anyhow::Result<u8> {
    let store = store(home)?;
    let rows = fleet_views::list_rows(&*store)?;
    if json_out {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"id": r.id, "project": r.project, "state": r.state, "cycle": r.cycle,
                       "reason": r.reason, "request": r.request, "branch": r.branch,
                       "created_at": fleet_views::rfc3339(r.created_at)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::PASSED);
    }
    if rows.is_empty() {
        return Ok(exit::PASSED);
    }
    let first = |s: &str, n: usize| -> String {
        let line = s.lines().next().unwrap_or("");
        if line.chars().count() > n {
            format!("{}…", line.chars().take(n - 1).collect::<String>())
        } else {
            line.to_string()
        }
    };
    println!(
        "{:<6} {:<20} {:<12} {:>5}  {:<40} REASON",
        "EPIC", "STATE", "PROJECT", "CYCLE", "REQUEST"
    );
    for r in &rows {
        println!(
            "{:<6} {:<20} {:<12} {:>5}  {:<40} {}",
            r.id,
            r.state,
            first(&r.project, 12),
            r.cycle,
            first(&r.request, 40),
            first(r.reason.as_deref().unwrap_or(""), 100)
        );
    }
    Ok(exit::PASSED)
}

fn ms(ms: i64) -> String {
    fleet_engine::fmt_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

fn local_time(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn attempt_line(a: &fleet_views::AttemptView) -> String {
    let who = match (&a.agent, &a.model) {
        (Some(p), Some(m)) => format!("{p} ({m})"),
        (Some(p), None) => p.clone(),
        _ => "command".into(),
    };
    let mut line = format!(
        "{} #{} {who} {}  {} tokens ${:.4}  {}",
        a.task_id,
        a.n,
        a.outcome,
        a.tokens,
        a.cost_usd,
        ms(a.duration_ms.unwrap_or(0))
    );
    if let Some(w) = &a.why
        && a.n > 1
    {
        line.push_str(&format!("  (why: {})", w.lines().next().unwrap_or("")));
    }
    line
}

/// Everything about an epic (`fleet_views::EpicView`, the same the API gives): live while a
/// stage runs — its running attempts, who plays them, since when and what they did last —
/// then every attempt with its agent, model, tokens and cost, and why each retry and swap
/// happened.
pub fn show(home: &Path, id: &str, json_out: bool) -> anyhow::Result<u8> {
    let store = store(home)?;
    let view = fleet_views::epic_view(&*store, id, fleet_views::now_ms())?
        .ok_or_else(|| InvalidInput(format!("no epic {id:?}")))?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(exit::PASSED);
    }
    println!("epic     {} ({})", view.id, view.state);
    if let Some(b) = &view.blocked {
        println!("BLOCKED  at {}: {}", b.at, b.question);
        println!(
            "         answer: fleet task answer {} \"...\"   or fix, then: fleet task retry {}",
            view.id, view.id
        );
    } else if let Some(r) = &view.reason {
        println!("reason   {}", r.lines().next().unwrap_or(""));
    }
    println!("project  {}", view.project);
    println!("request  {}", view.request);
    if let Some(i) = &view.intent {
        println!("routed   {i} -> {}", view.roles.join(", "));
    }
    println!("branch   {}", view.branch);
    println!("cycles   {}", view.cycle);
    if let Some(d) = &view.delivery {
        println!("delivery {} {}", d.kind, d.url.as_deref().unwrap_or(""));
    }
    println!(
        "spent    ${:.4}, {} tokens, {} attempts",
        view.total.cost_usd, view.total.tokens, view.total.attempts
    );
    if let Some(c) = &view.current {
        let now = fleet_views::now_ms();
        println!(
            "\nnow: {} (cycle {}) running for {}, since {}",
            c.stage,
            c.cycle,
            ms(now - c.since),
            local_time(c.since)
        );
        if c.running.is_empty() {
            println!("  no attempt running at this moment");
        }
        for a in &c.running {
            let who = a.agent.as_deref().unwrap_or("command");
            let last = a
                .last_activity
                .as_ref()
                .map(|x| format!("; {} ago: {}", ms(now - x.at), x.text))
                .unwrap_or_default();
            println!(
                "  {} #{} {who}{} since {}{last}",
                a.task_id,
                a.n,
                a.model
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                local_time(a.started_at)
            );
        }
    }
    println!("\nstages:");
    for s in &view.stages {
        println!(
            "  c{} {:<10} {:<8} {:>8}  {}",
            s.cycle,
            s.stage,
            s.state,
            s.duration_ms.map(ms).unwrap_or_default(),
            s.detail
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
        for a in &s.attempts {
            println!("       {}", attempt_line(a));
        }
    }
    println!("\ntasks:");
    for t in &view.tasks {
        println!(
            "  c{} {:<20} {:<10} {:<10} {:>2} tries  {}",
            t.task.cycle, t.task.id, t.task.role, t.task.state, t.attempts, t.task.title
        );
    }
    let turns: Vec<_> = view
        .history
        .iter()
        .filter(|h| h.kind != "epic.stage_finished")
        .collect();
    if !turns.is_empty() {
        println!("\nwhy things happened:");
        for h in turns {
            println!(
                "  {} {:<14} {}",
                local_time(h.at),
                h.task.as_deref().unwrap_or("-"),
                h.why.lines().next().unwrap_or("")
            );
        }
    }
    if !view.reviews.is_empty() {
        println!("\nreviews:");
        for r in &view.reviews {
            println!(
                "  c{} {:<20} {}",
                r.cycle,
                r.verdict,
                r.summary.lines().next().unwrap_or("")
            );
            for b in &r.bugs {
                println!("       - {}", b.lines().next().unwrap_or(""));
            }
        }
    }
    if !view.qa.is_empty() {
        println!("\nqa of the deployed app:");
        for q in &view.qa {
            println!(
                "  c{} {:<6} {} {}",
                q.cycle,
                q.verdict,
                q.url,
                q.summary.lines().next().unwrap_or("")
            );
            for b in &q.bugs {
                println!("       - {}", b.lines().next().unwrap_or(""));
            }
        }
    }
    if !view.spend_by_role.is_empty() {
        println!("\ntime and spend by role:");
        for (r, v) in &view.spend_by_role {
            println!(
                "  {:<12} {:>10} tokens  ${:.4}  {}",
                r,
                v.tokens,
                v.cost_usd,
                ms(v.time_ms)
            );
        }
    }
    Ok(exit::PASSED)
}

/// Accepts the delivered result; in migration mode, approves the documents and (unless
/// `wait` is off) works on the implementation they plan until it awaits acceptance.
pub fn accept(home: &Path, id: &str, wait: bool, quiet: bool) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let e = p.accept(id).map_err(pipeline_error)?;
    let working = fleet_core::epic::Stage::parse(&e.state).is_some_and(|s| s.is_working());
    if !working {
        println!("epic {} {}", e.id, e.state);
        return Ok(exit::PASSED);
    }
    println!(
        "epic {} approved: cycle {} plans the implementation",
        e.id, e.cycle
    );
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, id)
}

pub fn reject(home: &Path, id: &str, comment: &str, wait: bool, quiet: bool) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let e = p.reject(id, comment).map_err(pipeline_error)?;
    println!("epic {} sent back: cycle {} plans the fixes", e.id, e.cycle);
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, id)
}

pub fn cancel(home: &Path, id: &str) -> anyhow::Result<u8> {
    let p = pipeline(home, true)?;
    let e = p.cancel(id).map_err(pipeline_error)?;
    println!("epic {} {}", e.id, e.state);
    Ok(exit::PASSED)
}

/// Answers a blocked epic's question; the epic continues where it stopped.
pub fn answer(home: &Path, id: &str, text: &str, wait: bool, quiet: bool) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let e = p.answer(id, text).map_err(pipeline_error)?;
    println!("epic {} answered: {} continues", e.id, e.state);
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, id)
}

/// Checks the config again for a blocked epic and continues it where it stopped.
pub fn retry(home: &Path, id: &str, wait: bool, quiet: bool) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let e = p.retry(id).map_err(pipeline_error)?;
    println!("epic {} unblocked: {} continues", e.id, e.state);
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, id)
}

pub fn resume(home: &Path, id: &str, quiet: bool) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    drive(&p, id)
}

/// Reads new review comments on the epic's pull request; new ones start a rework cycle. With
/// `every`, keeps polling while the epic awaits acceptance.
pub fn sync(
    home: &Path,
    id: &str,
    wait: bool,
    every: Option<u64>,
    quiet: bool,
) -> anyhow::Result<u8> {
    let p = driving_pipeline(home, quiet)?;
    let rt = crate::runtime()?;
    loop {
        let n = rt
            .block_on(p.poll_review_comments(id))
            .map_err(pipeline_error)?;
        println!("{n} new review comment(s)");
        let mut code = exit::PASSED;
        if n > 0 && wait {
            code = drive_on(&rt, &p, id)?;
        }
        let Some(secs) = every else {
            return Ok(code);
        };
        // Waits for the next poll, or for a stop signal (which ends the polling).
        let mut stop = p.shutdown.clone().expect("a driving pipeline has a stop");
        let stopped = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(secs.max(1)),
                stop.wait_for(|s| *s),
            )
            .await
            .is_ok()
        });
        if stopped {
            println!("stopped; `fleet task sync {id} --every {secs}` goes on");
            return Ok(exit::INTERRUPTED);
        }
        let (epic, _) = p.epic(id).map_err(pipeline_error)?;
        if epic.state != "awaiting_acceptance" {
            println!(
                "epic {} {}: no longer awaiting acceptance",
                epic.id, epic.state
            );
            return Ok(code);
        }
    }
}

/// `fleet artifact check KIND FILE`: exit 0 when valid, 1 with the errors otherwise.
pub fn artifact_check(kind: &str, file: &Path, roles: &str, existing: &str) -> anyhow::Result<u8> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    // An agent wrote it: a FIFO, a link to a device or a runaway file must not hang or
    // exhaust the check, so it is read like a runbook (regular, at most 4 MiB).
    let text = match fleet_config::read_text(file, "it") {
        Ok(t) => t,
        Err(e) => {
            println!(
                "{}: {}; write it there as the instructions say",
                file.display(),
                e.message
            );
            return Ok(exit::FAILED);
        }
    };
    match fleet_pipeline::artifact_check(kind, &text, &split(roles), &split(existing)) {
        Ok(()) => {
            println!("{}: valid {kind}", file.display());
            Ok(exit::PASSED)
        }
        Err(errors) => {
            println!(
                "{}: invalid {kind}; fix these and write it again:",
                file.display()
            );
            for e in errors {
                println!("  {e}");
            }
            Ok(exit::FAILED)
        }
    }
}
