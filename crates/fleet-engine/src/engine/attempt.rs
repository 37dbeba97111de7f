//! The worker side of an attempt: prepares the task's worktree and log, then runs its command
//! or its agent, and reports how it ended. Also the task log and environment helpers the
//! checks and policies share.

use super::{AttemptEnd, AttemptJob, Ctx, Msg, RUN_TAG, policy_enforce};
use crate::agent;
use crate::layout::task_branch;
use crate::now_ms;
use crate::plan::{AgentProfile, TaskAction};
use crate::process::{self, CommandSpec};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// One attempt's command: prepares the worktree (fresh on a task's first attempt; as left by
/// the previous attempt otherwise) and runs the command in it.
pub(super) async fn attempt_worker(ctx: Arc<Ctx>, job: AttemptJob) {
    let task = job.task;
    let agent = job.profile.is_some() && matches!(ctx.tasks[task].action, TaskAction::Agent(_));
    let refs = match agent {
        true => policy_enforce::refs_before(&ctx).await,
        false => None,
    };
    let result = run_attempt(&ctx, job).await;
    let result = match agent {
        true => policy_enforce::after_attempt(&ctx, task, refs, result).await,
        false => result,
    };
    let _ = ctx.tx.send(Msg::Attempt { task, result });
}

async fn run_attempt(ctx: &Arc<Ctx>, job: AttemptJob) -> Result<AttemptEnd, String> {
    let (task, def) = (job.task, &ctx.tasks[job.task]);
    let cwd = workdir(ctx, task);
    // The log is created off the event loop (creating a file can be slow): in the worktree's
    // hand-off, else by the log maker ahead of the attempt or, if it has not yet, in the
    // command's spawn (`process::run_opening_log`).
    let log = match def.worktree {
        true => Some(prepare_worktree(ctx, &job, &cwd).await?),
        false => None,
    };
    let profile = match (&def.action, job.profile) {
        (TaskAction::Agent(_), Some(p)) => &ctx.profiles[p],
        _ => return run_command(ctx, &job, &cwd, log).await,
    };
    let log = match log {
        Some(log) => log,
        None => open_log(ctx, task).map_err(cannot_log)?,
    };
    run_agent(ctx, job, profile, &cwd, log).await
}

fn cannot_log(e: std::io::Error) -> String {
    format!("cannot open the task log: {e}")
}

/// Opens the task's log and makes its worktree (afresh, or again when it is missing or half
/// made), both on the blocking pool. A worktree that cannot be made fails the attempt.
async fn prepare_worktree(
    ctx: &Arc<Ctx>,
    job: &AttemptJob,
    cwd: &std::path::Path,
) -> Result<File, String> {
    let (task, n, fresh) = (job.task, job.n, job.fresh);
    let c = ctx.clone();
    let path = cwd.to_path_buf();
    let tip = job.tip.clone();
    let (opened, made) = fleet_store::pg::spawn_blocking(move || {
        let opened = open_log(&c, task);
        if opened.is_err() {
            return (opened, Ok(false));
        }
        let def = &c.tasks[task];
        let complete = if fresh {
            Ok(false)
        } else {
            c.repo.is_complete_worktree(&path)
        };
        let made = match complete {
            Ok(true) => Ok(false),
            Ok(false) => c
                .repo
                .add_worktree(&path, &task_branch(&c.task_branches, &def.id), &tip)
                .map(|_| true),
            Err(e) => Err(e),
        };
        (opened, made)
    })
    .await
    .map_err(|e| e.to_string())?;
    let opened = opened.map_err(cannot_log)?;
    if let Err(e) = made {
        let reason = format!("could not create the worktree: {e}");
        log_line!(
            opened,
            "── attempt {n} · {} ──\n{reason}",
            crate::rfc3339(now_ms())
        );
        return Err(reason);
    }
    Ok(opened)
}

/// A command task's attempt: its command, its output in the task log (secrets taken out).
async fn run_command(
    ctx: &Arc<Ctx>,
    job: &AttemptJob,
    cwd: &std::path::Path,
    log: Option<File>,
) -> Result<AttemptEnd, String> {
    let (task, n, def) = (job.task, job.n, &ctx.tasks[job.task]);
    let env = command_env(ctx, task, n, cwd);
    let command = match &def.action {
        TaskAction::Shell(c) => c.as_str(),
        _ => "true",
    };
    // The command as written may hold a literal token: the log shows it redacted.
    let header = ctx.redactor.clean_string(format!(
        "── attempt {n} · {} · in {} ──\n$ {command}\n",
        crate::rfc3339(now_ms()),
        cwd.display()
    ));
    let spec = CommandSpec {
        command,
        cwd,
        env: &env,
        timeout: def.timeout,
        kill_grace: ctx.kill_grace,
    };
    let stop = ctx.stop.clone();
    let (log, from, finished) = match log {
        Some(log) => {
            let _ = (&log).write_all(header.as_bytes());
            let from = log.metadata().map(|m| m.len()).unwrap_or(0);
            let finished = process::run(spec, &log, stop, |_| {}).await;
            (log, from, finished)
        }
        None => {
            let path = ctx.layout.log(&ctx.run_id, &def.id);
            process::run_opening_log(spec, path, header, stop, |_| {})
                .await
                .map_err(cannot_log)?
        }
    };
    let finished = finished.map_err(|e| format!("could not run the command: {e}"))?;
    redact_log_since(ctx, task, &log, from);
    log_line!(
        log,
        "── command: {} after {} ──",
        finished.describe(),
        crate::fmt_duration(finished.elapsed)
    );
    Ok(AttemptEnd {
        finished,
        agent: None,
    })
}

/// An agent task's attempt, played by `profile`: the prompt (with what the worktree holds
/// now), the session to continue if any, and the agent's run under the run's policies.
async fn run_agent(
    ctx: &Arc<Ctx>,
    job: AttemptJob,
    profile: &AgentProfile,
    cwd: &std::path::Path,
    log: File,
) -> Result<AttemptEnd, String> {
    let (task, n, def) = (job.task, job.n, &ctx.tasks[job.task]);
    log_line!(
        log,
        "── attempt {n} · {} · in {} · agent {} ──",
        crate::rfc3339(now_ms()),
        cwd.display(),
        profile.name
    );
    let mut prompt = job.prompt.unwrap_or_default();
    if n > 1
        && def.worktree
        && let Some(changes) = worktree_so_far(ctx, task, cwd).await
    {
        // The handoff note ends with what the worktree holds now.
        prompt.push_str(&format!(
            "\n## Changes in the working tree so far\n\n```\n{changes}\n```\n"
        ));
    }
    // One home per task, made afresh for each attempt, except when this attempt continues the
    // previous one's session: then it is left as that attempt left it. (Same path, because
    // CLIs record absolute paths into their home — codex cannot find a moved thread.)
    let home = ctx.layout.agent_home(&ctx.run_id, &def.id);
    let resume_session = continued_session(job.resume.as_ref(), n, &home, &log);
    let transcript = ctx.layout.transcript(&ctx.run_id, &def.id, n);
    // The handoff quotes check output and the worktree's changes: whatever a secret got into.
    let prompt = ctx.redactor.clean_string(prompt);
    let policy = policy_enforce::attempt_policy(ctx, task, n, cwd).await;
    let env = task_env(ctx, task, n, cwd);
    let run = agent::AgentRun {
        profile,
        prompt: &prompt,
        workdir: cwd,
        home: &home,
        transcript: &transcript,
        log: &log,
        timeout: def.timeout,
        kill_grace: ctx.kill_grace,
        resume_session,
        extra_env: &env,
        secrets: &agent::secret_values(&profile.secrets),
        redactor: &ctx.redactor,
        mcp: ctx.mcp.as_ref(),
        policy: Some(&policy),
    };
    let tx = ctx.tx.clone();
    let (finished, end) = agent::run(run, ctx.stop.clone(), |events| {
        let _ = tx.send(Msg::Agent { task, events });
    })
    .await?;
    log_line!(
        log,
        "── agent: {}{} ({}) after {} ──",
        end.outcome.class.as_str(),
        end.outcome
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default(),
        finished.describe(),
        crate::fmt_duration(finished.elapsed)
    );
    Ok(AttemptEnd {
        finished,
        agent: Some(end),
    })
}

/// The session this attempt continues: the one attempt `n - 1` left, if its home is still
/// there. Said in the log either way.
fn continued_session<'a>(
    resume: Option<&'a (String, u32)>,
    n: u32,
    home: &std::path::Path,
    log: &File,
) -> Option<&'a str> {
    let (session, from) = resume?;
    if *from + 1 == n && home.is_dir() {
        log_line!(log, "   continuing the session {session} of attempt {from}");
        Some(session.as_str())
    } else {
        log_line!(log, "   session {session} is gone: starting afresh");
        None
    }
}

/// What task `task`'s worktree holds for a later attempt (trimmed), `None` if nothing or it
/// cannot be read. Commits an earlier attempt left on the task's branch count too: the work
/// they hold is done and must not be done again (a crash can come between commit and landing).
async fn worktree_so_far(ctx: &Arc<Ctx>, task: usize, cwd: &std::path::Path) -> Option<String> {
    let c = ctx.clone();
    let path = cwd.to_path_buf();
    let changes = fleet_store::pg::spawn_blocking(move || {
        let branch = task_branch(&c.task_branches, &c.tasks[task].id);
        let own = c
            .repo
            .log_subjects(&format!("{}..{branch}", c.integration))?;
        let mut text: String = own
            .iter()
            .map(|(sha, subject)| format!("committed {} {subject}\n", &sha[..sha.len().min(12)]))
            .collect();
        text.push_str(&c.repo.worktree_changes(&path)?);
        Ok::<_, fleet_git::GitError>(text)
    })
    .await;
    match changes {
        Ok(Ok(changes)) if !changes.trim().is_empty() => Some(changes.trim_end().to_string()),
        _ => None,
    }
}

pub(super) fn workdir(ctx: &Ctx, task: usize) -> PathBuf {
    if ctx.tasks[task].worktree {
        ctx.layout.worktree(&ctx.run_id, &ctx.tasks[task].id)
    } else {
        ctx.repo_root.clone()
    }
}

pub(super) fn task_env(
    ctx: &Ctx,
    task: usize,
    n: u32,
    cwd: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    let def = &ctx.tasks[task];
    let mut env = def.env.clone();
    env.insert("FLEET_RUN".into(), ctx.run_id.clone());
    env.insert("FLEET_BRANCH".into(), ctx.integration.clone());
    env.insert(RUN_TAG.into(), ctx.tag.clone());
    env.insert("FLEET_TASK".into(), def.id.clone());
    env.insert("FLEET_ATTEMPT".into(), n.to_string());
    env.insert("FLEET_WORKDIR".into(), cwd.display().to_string());
    env
}

/// The whole environment of a task's command and checks: what Fleet lets commands see of its
/// own, the variables the runbook passes by name, the task's `env:`, and Fleet's markers.
pub(super) fn command_env(
    ctx: &Ctx,
    task: usize,
    n: u32,
    cwd: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    let mut env = ctx.command_env.clone();
    for name in &ctx.tasks[task].pass_env {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.clone(), value);
        }
    }
    env.extend(task_env(ctx, task, n, cwd));
    env
}

pub(super) fn open_log(ctx: &Ctx, task: usize) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.layout.log(&ctx.run_id, &ctx.tasks[task].id))
}

/// Appends one line to a task's log in a single `write`: `writeln!` on a `File` issues one
/// per formatted piece, which adds up over thousands of short tasks.
pub(super) fn write_log_line(mut log: &File, line: std::fmt::Arguments<'_>) {
    let _ = log.write_all(format!("{line}\n").as_bytes());
}

pub(super) fn append_log(ctx: &Ctx, task: usize, text: &str) {
    if let Ok(mut f) = open_log(ctx, task) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Rewrites what a command appended to its log since `from` without secrets, if it printed
/// any (see [`crate::log_clean`]).
pub(super) fn redact_log_since(ctx: &Ctx, task: usize, log: &File, from: u64) {
    let path = ctx.layout.log(&ctx.run_id, &ctx.tasks[task].id);
    crate::log_clean::clean_log_since(&path, log, from, &ctx.redactor);
}

/// A file's bytes from `offset` on (lossy UTF-8), without the trailer line fleet wrote.
pub(super) fn read_from(path: &std::path::Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = f.take(1 << 20).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text.lines()
        .filter(|l| !l.starts_with("── check:"))
        .collect::<Vec<_>>()
        .join("\n")
}
