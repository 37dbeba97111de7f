//! `fleet logs RUN TASK [-f]` and `fleet task logs ID [-f]`: a task's log, or every log of a
//! request's stage runs, printed; with `-f`, streamed as they grow until the task (or the
//! request) stops working.

use crate::{InvalidInput, exit};
use fleet_engine::StateDir;
use fleet_store::Store;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);

/// Task states after which nothing more is written to its log (a passed task in a run that
/// goes on may still be merged, and that is logged too).
fn task_done(state: &str) -> bool {
    matches!(state, "merged" | "failed" | "skipped" | "cancelled")
}

/// Run states in which no process of the run writes any more.
fn run_done(state: &str) -> bool {
    state != "running"
}

/// Epic states in which nothing is being worked on until a person acts.
fn epic_resting(state: &str) -> bool {
    matches!(
        state,
        "awaiting_acceptance" | "done" | "blocked" | "cancelled" | "failed"
    )
}

/// Prints what `path` gained since `offset`, and moves `offset` past it.
fn print_new(path: &Path, offset: &mut u64, out: &mut impl Write) -> anyhow::Result<bool> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(false);
    };
    let len = f.metadata()?.len();
    if len <= *offset {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::with_capacity((len - *offset) as usize);
    f.take(len - *offset).read_to_end(&mut buf)?;
    *offset += buf.len() as u64;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(true)
}

/// `fleet logs RUN TASK [-f]`.
pub fn task_log(
    layout: &StateDir,
    store: &dyn Store,
    run: &str,
    task: &str,
    follow: bool,
) -> anyhow::Result<u8> {
    let row = store
        .run(run)?
        .ok_or_else(|| InvalidInput(format!("no run {run:?} (`fleet runs` lists them)")))?;
    let tasks = store.tasks(run)?;
    if !tasks.iter().any(|t| t.id == task) {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        return Err(InvalidInput(format!(
            "run {run} has no task {task:?}; its tasks: {}",
            ids.join(", ")
        ))
        .into());
    }
    let path = layout.log(&row.id, task);
    if !path.exists() && crate::remote_logs::on_runners(store, run)? {
        return runner_log(store, run, task, follow);
    }
    let mut offset = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = print_new(&path, &mut offset, &mut out)?;
    if !follow {
        return match printed {
            true => Ok(exit::PASSED),
            false => no_log(store, run, task, &path),
        };
    }
    loop {
        let state = store
            .tasks(run)?
            .into_iter()
            .find(|t| t.id == task)
            .map(|t| t.state);
        let run_state = store.run(run)?.map(|r| r.state).unwrap_or_default();
        let finished = state.as_deref().is_none_or(task_done) || run_done(&run_state);
        let grew = print_new(&path, &mut offset, &mut out)?;
        printed |= grew;
        if finished && !grew {
            return match printed {
                true => Ok(exit::PASSED),
                false => no_log(store, run, task, &path),
            };
        }
        if !grew {
            std::thread::sleep(POLL);
        }
    }
}

/// A local task with nothing in its log: says why (exit 1) rather than print nothing.
fn no_log(store: &dyn Store, run: &str, task: &str, path: &Path) -> anyhow::Result<u8> {
    let state = store
        .tasks(run)?
        .into_iter()
        .find(|t| t.id == task)
        .map(|t| t.state)
        .unwrap_or_default();
    let why = match state.as_str() {
        "pending" | "ready" => "it has not started yet".to_string(),
        "skipped" | "cancelled" => format!("it was {state} before it ran"),
        _ if path.exists() => "its command printed nothing".to_string(),
        _ => format!("{} is not on this machine", path.display()),
    };
    eprintln!("fleet: task {task} of run {run} has no log to show: {why}");
    Ok(exit::FAILED)
}

/// A task of a run on runners: its log is on the runner that played it; the store has its
/// end (the end event's `log_tail`), shown here once the task ended. `-f` waits for it.
fn runner_log(store: &dyn Store, run: &str, task: &str, follow: bool) -> anyhow::Result<u8> {
    let mut said_waiting = false;
    loop {
        let logs = crate::remote_logs::remote_logs(store, run)?;
        let log = logs.get(task).cloned().unwrap_or_default();
        if let Some(tail) = &log.tail {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            writeln!(
                out,
                "── the end of the log ({}; the store keeps its last lines) ──",
                log.place()
            )?;
            writeln!(out, "{tail}")?;
            out.flush()?;
            return Ok(exit::PASSED);
        }
        let state = store
            .tasks(run)?
            .into_iter()
            .find(|t| t.id == task)
            .map(|t| t.state)
            .unwrap_or_default();
        let ended = log.ended || task_done(&state) || state == "passed";
        if ended || !follow {
            let why = match (log.runner.is_some(), ended) {
                (false, _) if state == "skipped" => {
                    "it was skipped before any runner ran it".to_string()
                }
                (false, _) => "no runner has claimed it yet".to_string(),
                (true, false) => format!(
                    "it is running on {}; the log's end comes to the store when it ends (`-f` waits for it)",
                    log.place()
                ),
                (true, true) => format!(
                    "it ended ({state}) without a log in the store (an agent task's log is its sub-run's; a runner that died leaves its log on {})",
                    log.place()
                ),
            };
            eprintln!(
                "fleet: task {task} of run {run} ran on runners and has no log to show: {why}"
            );
            return Ok(exit::FAILED);
        }
        if !said_waiting {
            eprintln!(
                "fleet: task {task} of run {run} runs on runners: waiting for its end to show its log"
            );
            said_waiting = true;
        }
        std::thread::sleep(POLL);
    }
}

/// The log files of a request's stage runs, oldest run first, in each run the order its logs
/// were made.
fn epic_logs(
    layout: &StateDir,
    store: &dyn Store,
    epic: &str,
) -> anyhow::Result<(Vec<(String, PathBuf)>, bool)> {
    let mut runs = store.runs_named(&format!("{epic}-"))?;
    runs.retain(|r| r.id.starts_with(&format!("{epic}-")));
    runs.sort_by_key(|r| (r.created_at, r.id.clone()));
    let mut files = Vec::new();
    let mut running = false;
    for r in &runs {
        running |= !run_done(&r.state);
        let Ok(dir) = std::fs::read_dir(layout.logs_dir(&r.id)) else {
            continue;
        };
        let mut logs: Vec<(std::time::SystemTime, PathBuf)> = dir
            .flatten()
            .map(|e| {
                let made = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (made, e.path())
            })
            .collect();
        logs.sort();
        for (_, p) in logs {
            let task = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((format!("{} / {task}", r.id), p));
        }
    }
    Ok((files, running))
}

/// `fleet task logs ID [-f]`.
pub fn epic_log(
    layout: &StateDir,
    store: &dyn Store,
    epic: &str,
    follow: bool,
) -> anyhow::Result<u8> {
    if store.epic(epic)?.is_none() {
        return Err(InvalidInput(format!("no epic {epic:?} (`fleet task ls` lists them)")).into());
    }
    let mut offsets: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut current: Option<PathBuf> = None;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let (files, running) = epic_logs(layout, store, epic)?;
        let resting = store.epic(epic)?.is_none_or(|e| epic_resting(&e.state));
        let mut grew = false;
        for (title, path) in &files {
            let offset = offsets.entry(path.clone()).or_insert(0);
            let before = *offset;
            let mut chunk = Vec::new();
            if print_new(path, offset, &mut chunk)? {
                if current.as_ref() != Some(path) {
                    if before == 0 || current.is_some() {
                        writeln!(out, "══ {title} ══")?;
                    }
                    current = Some(path.clone());
                }
                out.write_all(&chunk)?;
                out.flush()?;
                grew = true;
            }
        }
        if !follow || (resting && !running && !grew) {
            return Ok(exit::PASSED);
        }
        if !grew {
            std::thread::sleep(POLL);
        }
    }
}
