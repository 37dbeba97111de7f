//! `fleet project …` and `fleet task …`: registering projects, submitting requests (epics),
//! watching them go through the pipeline, accepting or rejecting the result.

use crate::{InvalidInput, exit, open_store};
use fleet_engine::StateDir;
use fleet_pipeline::{EpicData, Pipeline, PipelineError};
use fleet_store::{EpicRow, Event};
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
    let p = driving_pipeline(home, quiet)?;
    let epic = p.submit(project, request).map_err(pipeline_error)?;
    println!("epic {} created", epic.id);
    if !wait {
        return Ok(exit::PASSED);
    }
    drive(&p, &epic.id)
}

pub fn ls(home: &Path, json_out: bool) -> anyhow::Result<u8> {
    let store = store(home)?;
    let epics = store.epics()?;
    if json_out {
        let list: Vec<_> = epics.iter().map(epic_json_brief).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for e in &epics {
            println!(
                "{:<6} {:<20} {:<10} cycle {} {:<40} {}",
                e.id,
                e.state,
                e.project,
                e.cycle,
                e.request.lines().next().unwrap_or(""),
                epic_reason(e).lines().next().unwrap_or("")
            );
        }
    }
    Ok(exit::PASSED)
}

/// The reason column: why the epic is blocked or failed ("?" when its data cannot be read).
fn epic_reason(e: &EpicRow) -> String {
    match fleet_pipeline::decode_data(e) {
        Ok(d) => fleet_pipeline::reason(e, &d).unwrap_or_default(),
        Err(err) => format!("? {err}"),
    }
}

fn epic_json_brief(e: &EpicRow) -> serde_json::Value {
    json!({"id": e.id, "project": e.project, "state": e.state, "cycle": e.cycle,
           "reason": Some(epic_reason(e)).filter(|r| !r.is_empty()),
           "request": e.request, "branch": e.branch, "created_at": fleet_engine::rfc3339(e.created_at)})
}

/// Everything about an epic: stages, cycles, agents per stage, tasks, reviews, spend.
pub fn show(home: &Path, id: &str, json_out: bool) -> anyhow::Result<u8> {
    let store = store(home)?;
    let epic = store
        .epic(id)?
        .ok_or_else(|| InvalidInput(format!("no epic {id:?}")))?;
    let data: EpicData = fleet_pipeline::decode_data(&epic).map_err(pipeline_error)?;
    let mut stages = Vec::new();
    let mut spend_by_role: std::collections::BTreeMap<String, (f64, u64, i64)> = Default::default();
    for s in &epic.stages {
        let attempts = match &s.run_id {
            Some(r) => store.attempts(r)?,
            None => Vec::new(),
        };
        let agents: Vec<_> = attempts
            .iter()
            .map(|a| {
                let tokens = a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens;
                let role = data
                    .tasks
                    .iter()
                    .find(|t| t.id == a.task_id)
                    .map(|t| t.role.clone())
                    .unwrap_or_else(|| a.task_id.clone());
                let ms = a.finished_at.unwrap_or(a.started_at) - a.started_at;
                let e = spend_by_role.entry(role).or_default();
                e.0 += a.cost_usd;
                e.1 += tokens;
                e.2 += ms;
                json!({"task": a.task_id, "attempt": a.n, "agent": a.profile, "cli": a.cli, "model": a.model,
                       "outcome": a.outcome, "detail": a.detail, "tokens": tokens, "cost_usd": a.cost_usd,
                       "duration_ms": ms})
            })
            .collect();
        stages.push(json!({"stage": s.stage, "cycle": s.cycle, "state": s.state, "run": s.run_id,
            "started_at": fleet_engine::rfc3339(s.started_at),
            "duration_ms": s.finished_at.map(|f| f - s.started_at), "detail": s.detail, "attempts": agents}));
    }
    let spend: serde_json::Map<String, serde_json::Value> = spend_by_role
        .iter()
        .map(|(r, (usd, tok, ms))| {
            (
                r.clone(),
                json!({"cost_usd": usd, "tokens": tok, "time_ms": ms}),
            )
        })
        .collect();
    let out = json!({
        "id": epic.id, "project": epic.project, "request": epic.request, "state": epic.state,
        "cycle": epic.cycle, "branch": epic.branch, "intent": epic.intent, "roles": epic.roles,
        "stages": stages, "tasks": data.tasks, "reviews": data.reviews, "delivery": data.delivery,
        "spend_by_role": spend, "reason": fleet_pipeline::reason(&epic, &data),
        "blocked": data.machine.as_ref().and_then(|m| m.blocked.clone()), "answers": data.answers,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::PASSED);
    }
    println!("epic     {} ({})", epic.id, epic.state);
    if let Some(b) = data.machine.as_ref().and_then(|m| m.blocked.as_ref()) {
        println!("BLOCKED  at {}: {}", b.at, b.question);
        println!(
            "         answer: fleet task answer {} \"...\"   or fix, then: fleet task retry {}",
            epic.id, epic.id
        );
    } else if let Some(r) = fleet_pipeline::reason(&epic, &data) {
        println!("reason   {}", r.lines().next().unwrap_or(""));
    }
    println!("project  {}", epic.project);
    println!("request  {}", epic.request);
    if let Some(i) = &epic.intent {
        println!("routed   {i} -> {}", epic.roles.join(", "));
    }
    println!("branch   {}", epic.branch);
    println!("cycles   {}", epic.cycle);
    if let Some(d) = &data.delivery {
        println!("delivery {} {}", d.kind, d.url.as_deref().unwrap_or(""));
    }
    println!("\nstages:");
    for s in &stages {
        println!(
            "  c{} {:<10} {:<8} {:>8}  {}",
            s["cycle"],
            s["stage"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["duration_ms"]
                .as_i64()
                .map(
                    |ms| fleet_engine::fmt_duration(std::time::Duration::from_millis(
                        ms.max(0) as u64
                    ))
                )
                .unwrap_or_default(),
            s["detail"].as_str().unwrap_or("")
        );
        for a in s["attempts"].as_array().into_iter().flatten() {
            println!(
                "       {} #{} {} ({}) {} tokens ${:.4}",
                a["task"].as_str().unwrap_or(""),
                a["attempt"],
                a["agent"].as_str().unwrap_or("command"),
                a["outcome"].as_str().unwrap_or(""),
                a["tokens"],
                a["cost_usd"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!("\ntasks:");
    for t in &data.tasks {
        println!(
            "  c{} {:<20} {:<10} {:<10} {}",
            t.cycle, t.id, t.role, t.state, t.title
        );
    }
    if !data.reviews.is_empty() {
        println!("\nreviews:");
        for r in &data.reviews {
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
    if !spend.is_empty() {
        println!("\ntime and spend by role:");
        for (r, v) in &spend {
            println!(
                "  {:<12} {:>10} tokens  ${:.4}  {}",
                r,
                v["tokens"],
                v["cost_usd"].as_f64().unwrap_or(0.0),
                fleet_engine::fmt_duration(std::time::Duration::from_millis(
                    v["time_ms"].as_i64().unwrap_or(0).max(0) as u64
                ))
            );
        }
    }
    Ok(exit::PASSED)
}

pub fn accept(home: &Path, id: &str) -> anyhow::Result<u8> {
    let p = pipeline(home, true)?;
    let e = p.accept(id).map_err(pipeline_error)?;
    println!("epic {} {}", e.id, e.state);
    Ok(exit::PASSED)
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
