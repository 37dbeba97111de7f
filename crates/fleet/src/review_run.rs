//! `fleet review-run RUN|EPIC`: Fleet reviewing its own work (the seeds' "third stream").
//!
//! An agent in role `framework-reviewer` reads what Fleet recorded of a run — its
//! `events.jsonl`, summary and task logs, redacted again and capped — and writes a log
//! analysis, a framework bug report and a fix plan. For an epic, every stage's run.
//!
//! **Never beside a live run**: the review holds the run's lock (and, for an epic, the epic's
//! lease) from before it reads the log until it has written its documents, so it neither starts
//! while the run is live nor lets the run resume under it; a second review of the same target
//! finds the review lock held. Each refusal names who holds what.
//!
//! The review is itself an engine run (one agent task, its acceptance checks the three files)
//! over a throwaway repository holding the bundle, so the fix loop, the agent pool, budgets and
//! redaction apply as to any task. The documents land in `.fleet/reviews/<target>/`.

use crate::{InvalidInput, exit, find_home, load_instance, mcp_server, open_existing_state};
use fleet_engine::{EngineOptions, RunEnd, StateDir};
use fleet_secrets::Redactor;
use fleet_store::Store;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The role that plays the review.
pub const ROLE: &str = "framework-reviewer";
/// The documents a review writes, in the order the role's template names them.
pub const DOCUMENTS: [&str; 3] = ["log-analysis.md", "bug-report.md", "fix-plan.md"];
/// How much of one task log reaches the reviewer: its head and its tail.
const LOG_HEAD: usize = 64 * 1024;
const LOG_TAIL: usize = 64 * 1024;
/// The event log is kept whole up to this size, else head and tail.
const EVENTS_KEEP: usize = 4 * 1024 * 1024;

pub fn run(home: Option<PathBuf>, target: &str) -> anyhow::Result<u8> {
    fleet_engine::signals::hold();
    let cwd = std::env::current_dir()?;
    let home = find_home(home, &cwd).ok_or_else(|| {
        InvalidInput(format!(
            "fleet review-run needs an instance (fleet.yaml) with a profile that plays role {ROLE}"
        ))
    })?;
    let instance = load_instance(Some(&home))?;
    if !instance
        .agents
        .iter()
        .any(|p| p.roles.iter().any(|r| r == ROLE))
    {
        return Err(InvalidInput(format!(
            "no agent profile plays role {ROLE}; add one to fleet.yaml, e.g.\n  agents:\n    \
             framework-reviewer:\n      cli: claude\n      roles: [{ROLE}]"
        ))
        .into());
    }
    let (layout, store) = open_existing_state(Some(home.clone()))?;
    let (runs, epic) = target_runs(&*store, target)?;
    let reviews = layout.root().join("reviews");
    std::fs::create_dir_all(&reviews)?;
    // Held until the documents are written (dropping a File releases its flock).
    let _review = try_flock(&reviews.join(format!("{target}.lock")))?.ok_or_else(|| {
        InvalidInput(format!(
            "a review of {target} is already running; wait for it to end"
        ))
    })?;
    // The epic's lease is in the store (the driver of any process or machine takes it).
    let _epic_lease = match &epic {
        Some(epic) => Some(
            fleet_pipeline::try_lease_epic(store.clone(), epic)?.ok_or_else(|| {
                InvalidInput(format!(
                    "epic {epic} is live (a fleet is working on it); review it when it stops"
                ))
            })?,
        ),
        None => None,
    };
    let mut held: Vec<File> = Vec::new();
    for run in &runs {
        let lock = layout.lock(&run.id);
        if let Some(dir) = lock.parent() {
            std::fs::create_dir_all(dir)?;
        }
        held.push(try_flock(&lock)?.ok_or_else(|| {
            let holder = std::fs::read_to_string(&lock).unwrap_or_default();
            InvalidInput(format!(
                "run {} is live (process {}); review it when it ends",
                run.id,
                holder.trim()
            ))
        })?);
    }
    let redactor = Redactor::from_process_env(&instance.secret_names());
    let out = reviews.join(target);
    let work = bundle(&layout, &*store, &runs, &out, &redactor)?;
    let report = review_in(
        &work,
        &layout,
        store.clone(),
        &instance,
        target,
        &runs,
        &home,
        redactor.clone(),
    )?;
    if report.end != RunEnd::Passed {
        eprintln!(
            "fleet review-run: the review of {target} did not produce its documents (run {} {}); \
             see {}",
            report.run_id,
            if report.end == RunEnd::Failed {
                "failed"
            } else {
                "was interrupted"
            },
            report.summary.display()
        );
        return Ok(if report.end == RunEnd::Failed {
            exit::FAILED
        } else {
            exit::INTERRUPTED
        });
    }
    let repo = fleet_git::Repo::open(&work)?;
    let mut written = Vec::new();
    for doc in DOCUMENTS {
        let text = repo
            .read_file(&report.integration_branch, &format!(".fleet-out/{doc}"))?
            .ok_or_else(|| anyhow::anyhow!("the review passed without .fleet-out/{doc}"))?;
        let path = out.join(doc);
        // Whole or not at all: a kill mid-write leaves the previous review's document.
        fleet_engine::files::write_whole(&path, redactor.clean(&text).as_bytes())?;
        written.push(path);
    }
    let mut text = format!("review of {target}: run {} passed\n", report.run_id);
    for path in written {
        text.push_str(&format!("  {}\n", path.display()));
    }
    let lessons = repo.read_file(&report.integration_branch, ".fleet-out/lessons.json")?;
    if let Some(lessons) = lessons {
        let project = epic
            .as_deref()
            .and_then(|e| store.epic(e).ok().flatten())
            .map(|e| e.project);
        text.push_str(&match remember(&home, target, project, &lessons) {
            Ok(n) => format!("lessons: {n} added to memory\n"),
            Err(e) => format!("lessons: not added: {e}\n"),
        });
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(exit::PASSED)
}

/// Adds the lessons a framework review proposed to the instance's memory, with the reviewed
/// run (or epic) as their provenance; returns how many were added or merged.
fn remember(
    home: &Path,
    target: &str,
    project: Option<String>,
    text: &str,
) -> anyhow::Result<usize> {
    let file = fleet_memory::retro::parse(text)
        .map_err(|e| anyhow::anyhow!("lessons.json is not valid: {e}"))?;
    let now = fleet_engine::now_ms();
    let origin = fleet_memory::retro::Origin {
        project: project.clone().unwrap_or_default(),
        bible: None,
        run: target.to_string(),
        task: ROLE.to_string(),
        attempt: 1,
        at: now,
    };
    let mut db = crate::memory::open(home)?;
    let mut n = 0;
    for mut lesson in fleet_memory::retro::to_lessons(file, &origin) {
        // A review of a plain run has no project: its lessons are the instance's.
        if project.is_none() {
            lesson.scope = fleet_memory::Scope::Instance;
        }
        for p in &mut lesson.provenance {
            p.source = "framework-review".into();
        }
        db.add_lesson(lesson, now, &fleet_memory::Policy::default())?;
        n += 1;
    }
    Ok(n)
}

/// After `fleet run` ended: the framework review of `run`, when `review_runs:` asks for it
/// (the caller checked). The run has released its lock; what the review does never changes
/// the run's exit code, so a failure is only reported.
pub fn after_run(home: &Path, run: &str) {
    eprintln!("fleet run: review_runs: starting the framework review of run {run}");
    match self::run(Some(home.to_path_buf()), run) {
        Ok(code) if code == exit::PASSED => {}
        Ok(code) => eprintln!("fleet run: the framework review of {run} ended with exit {code}"),
        Err(e) => eprintln!("fleet run: the framework review of {run} did not run: {e:#}"),
    }
}

/// After `fleet serve` finished working on `epic` (it awaits a person or ended): the framework
/// review of its runs, when `review_runs:` asks for it — a result awaiting acceptance or done
/// counts as passed; a cancelled epic is a person's choice and is not reviewed. Runs on the
/// drive's thread once the epic's lease is free; the review takes that lease itself, so the
/// driver cannot pick the epic up meanwhile, and a failure is only reported.
pub fn after_epic(home: &Path, cfg: fleet_config::ReviewRuns, epic: &fleet_store::EpicRow) {
    let Some(passed) = ended_as(&epic.state) else {
        return;
    };
    if !cfg.wants(passed) {
        return;
    }
    let id = &epic.id;
    eprintln!("fleet serve: review_runs: starting the framework review of epic {id}");
    match self::run(Some(home.to_path_buf()), id) {
        Ok(code) if code == exit::PASSED => {}
        Ok(code) => eprintln!("fleet serve: the framework review of {id} ended with exit {code}"),
        Err(e) => eprintln!("fleet serve: the framework review of {id} did not run: {e:#}"),
    }
}

/// How an epic the driver let go of ended: `Some(true)` passed (awaiting acceptance or done),
/// `Some(false)` failed, `None` not ended in a way a review is for: cancelled by a person, or
/// blocked on a question (it goes on once answered, and is reviewed when it ends), or a stage
/// another process will carry on.
fn ended_as(state: &str) -> Option<bool> {
    use fleet_core::epic::Stage;
    match Stage::parse(state)? {
        Stage::AwaitingAcceptance | Stage::Done => Some(true),
        Stage::Failed => Some(false),
        _ => None,
    }
}

/// The runs a target names: one run, or every stage run of an epic (and the epic's id).
fn target_runs(
    store: &dyn Store,
    target: &str,
) -> anyhow::Result<(Vec<fleet_store::RunRow>, Option<String>)> {
    if let Some(run) = store.run(target)? {
        return Ok((vec![run], None));
    }
    if let Some(epic) = store.epic(target)? {
        let mut runs = Vec::new();
        for stage in &epic.stages {
            if let Some(id) = &stage.run_id
                && let Some(run) = store.run(id)?
                && !runs.iter().any(|r: &fleet_store::RunRow| r.id == run.id)
            {
                runs.push(run);
            }
        }
        if runs.is_empty() {
            return Err(InvalidInput(format!("epic {target} has no runs to review yet")).into());
        }
        return Ok((runs, Some(epic.id)));
    }
    Err(InvalidInput(format!(
        "no run or epic {target:?} (see `fleet runs`, `fleet task ls`)"
    ))
    .into())
}

/// Takes an exclusive `flock` on `path` without waiting; `None` when another process holds it.
fn try_flock(path: &Path) -> anyhow::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(anyhow::anyhow!("{}: {err}", path.display()));
    }
    Ok(Some(file))
}

/// `text` whole when it fits in `head + tail` bytes, else its head and tail around a marker.
fn head_tail(text: &str, head: usize, tail: usize) -> String {
    if text.len() <= head + tail {
        return text.to_string();
    }
    let mut h = head;
    while !text.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = text.len() - tail;
    while !text.is_char_boundary(t) {
        t += 1;
    }
    format!("{}\n[… {} bytes cut …]\n{}", &text[..h], t - h, &text[t..])
}

/// Makes the throwaway repository the reviewer works in: `input/<run>/` with the event log,
/// summary and task logs, each redacted; returns its path.
fn bundle(
    layout: &StateDir,
    store: &dyn Store,
    runs: &[fleet_store::RunRow],
    out: &Path,
    redactor: &Redactor,
) -> anyhow::Result<PathBuf> {
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let read = |path: &Path| std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
    for run in runs {
        let dir = work.join("input").join(&run.id);
        std::fs::create_dir_all(dir.join("logs"))?;
        // The journal is the record; when a kill left it short, the store has the rest.
        let events = match read(&layout.events(&run.id)) {
            Ok(text) => text,
            Err(_) => store
                .events(Some(&run.id), 0, 1_000_000)?
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
                .collect(),
        };
        let events = head_tail(&events, EVENTS_KEEP / 2, EVENTS_KEEP / 2);
        std::fs::write(dir.join("events.jsonl"), redactor.clean(&events).as_bytes())?;
        let summary = read(&layout.summary(&run.id))
            .unwrap_or_else(|_| format!("(no summary: run {} is {})\n", run.id, run.state));
        std::fs::write(dir.join("summary.md"), redactor.clean(&summary).as_bytes())?;
        if let Ok(entries) = std::fs::read_dir(layout.logs_dir(&run.id)) {
            for entry in entries.flatten() {
                let Ok(text) = read(&entry.path()) else {
                    continue;
                };
                let text = head_tail(&text, LOG_HEAD, LOG_TAIL);
                std::fs::write(
                    dir.join("logs").join(entry.file_name()),
                    redactor.clean(&text).as_bytes(),
                )?;
            }
        }
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = fleet_git::command(&work)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "git {args:?} failed in {}",
            work.display()
        );
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&[
        "commit",
        "-q",
        "-m",
        "what Fleet recorded, for the framework review",
    ])?;
    Ok(work)
}

#[allow(clippy::too_many_arguments)]
fn review_in(
    work: &Path,
    layout: &StateDir,
    store: Arc<dyn Store>,
    instance: &fleet_config::InstanceConfig,
    target: &str,
    runs: &[fleet_store::RunRow],
    home: &Path,
    redactor: Redactor,
) -> anyhow::Result<fleet_engine::RunReport> {
    let library = fleet_config::Library::load(Some(home)).map_err(|e| {
        InvalidInput(
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let role = library
        .role(ROLE)
        .ok_or_else(|| anyhow::anyhow!("the role {ROLE} is missing"))?;
    let glance: String = runs
        .iter()
        .map(|r| format!("- run `{}` ({}): {}\n", r.id, r.name, r.state))
        .collect();
    let vars = std::collections::BTreeMap::from([
        (
            "request",
            format!(
                "The {} of `{target}`: {} run(s), listed below. Their records are under `input/`.",
                if runs.len() == 1 && runs[0].id == target {
                    "run"
                } else {
                    "epic"
                },
                runs.len()
            ),
        ),
        ("context", glance),
    ]);
    let prompt = role
        .render(&vars)
        .map_err(|e| anyhow::anyhow!("role {ROLE}: {e}"))?;
    let checks: Vec<String> = DOCUMENTS
        .iter()
        .map(|d| format!("test -s .fleet-out/{d}"))
        .collect();
    let runbook = serde_json::json!({
        "name": format!("review-{target}"),
        "repo": work,
        "base": "main",
        "concurrency": 1,
        "tasks": [{"id": "review", "role": ROLE, "prompt": prompt, "checks": checks}],
    });
    let source = serde_json::to_string_pretty(&runbook)?;
    let path = work
        .parent()
        .expect("the work directory has a parent")
        .join("review.yaml");
    std::fs::write(&path, &source)?;
    let rb = fleet_config::parse_runbook(&path, &source).map_err(|e| crate::config_errors(&e))?;
    let plan =
        fleet_engine::plan_from_runbook(&rb, instance).map_err(|e| crate::config_errors(&e))?;
    let opts = EngineOptions {
        mcp: mcp_server(home).ok(),
        redactor,
        memory: fleet_engine::lessons::MemorySettings::from_config(&instance.memory),
        ..EngineOptions::default()
    };
    let rt = crate::runtime()?;
    Ok(rt.block_on(fleet_engine::start(layout.clone(), store, plan, opts))?)
}

#[cfg(test)]
mod tests {
    use super::{ended_as, head_tail};

    #[test]
    fn head_tail_keeps_both_ends_on_char_boundaries() {
        assert_eq!(head_tail("short", 4, 4), "short");
        let text = "ééééé-middle-ééééé";
        let cut = head_tail(text, 5, 5);
        assert!(cut.starts_with("éé") && cut.ends_with("éé"), "{cut}");
        assert!(cut.contains("bytes cut"));
    }

    #[test]
    fn only_an_epic_that_ended_is_reviewed_and_a_blocked_one_is_not_a_failure() {
        assert_eq!(ended_as("awaiting_acceptance"), Some(true));
        assert_eq!(ended_as("done"), Some(true));
        assert_eq!(ended_as("failed"), Some(false));
        for waiting in ["blocked", "cancelled", "implement", "review", "qa", "bogus"] {
            assert_eq!(ended_as(waiting), None, "{waiting}");
        }
    }
}
