//! One agent attempt: a fresh private home, the adapter's launch, the CLI supervised (wall-clock
//! timeout, stall detection, process-group kill), its stream parsed into normalized events as it
//! arrives, and the outcome classified.

use crate::plan::AgentProfile;
use crate::process::{self, Stream, StreamSpec};
use fleet_agents::{AgentEvent, AttemptRequest, Outcome, ProcessEnd, Stdin};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// How an agent attempt ended.
#[derive(Debug, Clone)]
pub struct AgentEnd {
    pub outcome: Outcome,
    pub stalled: bool,
}

pub use fleet_secrets::Redactor;

use crate::capped::HeadTail;

/// What an attempt's transcript keeps of an agent's output: its start and its end (the middle
/// of an endless stream is cut, and the cut is said).
const TRANSCRIPT_HEAD: usize = 8 << 20;
const TRANSCRIPT_TAIL: usize = 2 << 20;
/// The same for the readable lines an attempt adds to its task's log.
const LOG_HEAD: usize = 1 << 20;
const LOG_TAIL: usize = 1 << 20;

/// An agent event without secrets (they may sit in any of its strings).
pub fn clean_event(redactor: &Redactor, e: AgentEvent) -> AgentEvent {
    let Ok(mut json) = serde_json::to_value(&e) else {
        return e;
    };
    redactor.clean_json(&mut json);
    serde_json::from_value(json).unwrap_or(e)
}

/// The values of the profile's secret env vars that are set in fleet's environment.
pub fn secret_values(names: &[String]) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|n| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (n.clone(), v))
        })
        .collect()
}

/// `cli: http`: fleet's own tool loop, in-process.
async fn run_http(
    r: &AgentRun<'_>,
    stop: watch::Receiver<bool>,
    secrets: &BTreeMap<String, String>,
    redactor: &Redactor,
    mut on_events: impl FnMut(Vec<AgentEvent>),
) -> Result<(process::Finished, AgentEnd), String> {
    let profile = r.profile;
    let base_url = profile.base_url.as_deref().ok_or_else(|| {
        format!("profile {}: `cli: http` needs `base_url` (an OpenAI-compatible endpoint, e.g. http://localhost:11434/v1)", profile.name)
    })?;
    let model = profile
        .model
        .as_deref()
        .ok_or_else(|| format!("profile {}: `cli: http` needs `model`", profile.name))?;
    let system = format!(
        "You are a careful coding agent working in a git worktree at {}. Use the tools to inspect and change \
         files and to run commands there. When the task is done, reply with a short summary and no tool call.",
        r.workdir.display()
    );
    let mut log = r.log;
    let _ = writeln!(
        log,
        "POST {base_url}/chat/completions   (agent {} · http · model {model})",
        profile.name
    );
    if let Some(dir) = r.transcript.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let transcript = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(r.transcript)
        .map_err(|e| format!("cannot open the transcript: {e}"))?;
    let mut transcript = HeadTail::new(transcript, TRANSCRIPT_HEAD, TRANSCRIPT_TAIL);
    let mut log = HeadTail::new(log, LOG_HEAD, LOG_TAIL);
    let run = crate::http_agent::HttpRun {
        base_url: &crate::http_agent_base(base_url),
        api_key: secrets.values().next().map(String::as_str),
        model,
        system: &system,
        prompt: r.prompt,
        workdir: r.workdir,
        max_turns: profile.max_turns,
        request_timeout: profile.stall_timeout,
        deadline: r
            .timeout
            .or(profile.timeout)
            .map(|t| std::time::Instant::now() + t),
        env: r.extra_env,
    };
    let (finished, end) = crate::http_agent::run(run, stop, redactor, |events| {
        for e in &events {
            let _ = writeln!(log, "  {}", e.readable());
            let _ = writeln!(
                transcript,
                "{}",
                serde_json::to_string(e).unwrap_or_default()
            );
        }
        on_events(events);
    })
    .await;
    let _ = transcript.finish();
    let _ = log.finish();
    Ok((finished, end))
}

/// Removes an attempt's home when the attempt ends, however it ends, unless `keep` was set.
pub(crate) struct RemoveOnDrop {
    pub(crate) path: std::path::PathBuf,
    pub(crate) keep: bool,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub struct AgentRun<'a> {
    pub profile: &'a AgentProfile,
    pub prompt: &'a str,
    pub workdir: &'a Path,
    pub home: &'a Path,
    pub transcript: &'a Path,
    pub log: &'a std::fs::File,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub resume_session: Option<&'a str>,
    pub extra_env: &'a BTreeMap<String, String>,
    /// The profile's secrets, resolved by the caller (see [`secret_values`]).
    pub secrets: &'a BTreeMap<String, String>,
    /// Every secret Fleet knows of (the profile's are added to it): nothing the agent prints
    /// reaches a log, an event or the transcript before it passes this.
    pub redactor: &'a Redactor,
    /// Fleet's MCP server for this run; the attempt's identity is added to its env.
    pub mcp: Option<&'a fleet_agents::McpServer>,
    /// The run's policies as they apply to this attempt (`after_edit` hook, protected and
    /// allowed paths and tools for permission requests); `None` = none.
    pub policy: Option<&'a crate::AttemptPolicy>,
}

/// Runs the attempt; `on_events` receives normalized events as they are parsed.
pub async fn run(
    r: AgentRun<'_>,
    stop: watch::Receiver<bool>,
    mut on_events: impl FnMut(Vec<AgentEvent>),
) -> Result<(process::Finished, AgentEnd), String> {
    let profile = r.profile;
    let secrets = r.secrets.clone();
    let mut redactor = r.redactor.clone();
    redactor.add(secrets.clone());
    if profile.cli == "http" {
        return run_http(&r, stop, &secrets, &redactor, on_events).await;
    }
    if profile.acp {
        return crate::acp_session::run(&r, stop, &secrets, &redactor, on_events).await;
    }
    let adapter = fleet_agents::adapter(&profile.cli)
        .ok_or_else(|| format!("no adapter for cli {:?}", profile.cli))?;
    let mut env = profile.env.clone();
    env.extend(r.extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(cmd) = &profile.command {
        env.insert("FLEET_AGENT_COMMAND".into(), cmd.clone());
    }
    let resume_session = r.resume_session.filter(|_| adapter.can_resume());
    // A fresh, private home per attempt: no login state, sessions or trust prompts carry over;
    // except the session this attempt continues (the previous attempt left it in this home).
    if r.home.exists() && resume_session.is_none() {
        std::fs::remove_dir_all(r.home)
            .map_err(|e| format!("cannot clear {}: {e}", r.home.display()))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(r.home.join("tmp"))
        .map_err(|e| format!("cannot create the agent's home {}: {e}", r.home.display()))?;
    // The home holds credentials: it goes when the attempt ends, however it ends, unless the
    // next attempt may continue its session (the engine removes it when the task passes or
    // the run ends; a next attempt that does not resume clears it first).
    let mut home_guard = RemoveOnDrop {
        path: r.home.to_path_buf(),
        keep: false,
    };
    let mcp = r.mcp.map(|m| {
        let mut m = m.clone();
        for k in ["FLEET_RUN", "FLEET_TASK", "FLEET_ATTEMPT"] {
            if let Some(v) = r.extra_env.get(k) {
                m.env.insert(k.into(), v.clone());
            }
        }
        m
    });
    let req = AttemptRequest {
        prompt: r.prompt,
        system: None,
        model: profile.model.as_deref(),
        workdir: r.workdir,
        home: r.home,
        base_url: profile.base_url.as_deref(),
        secrets: &secrets,
        env: &env,
        max_turns: profile.max_turns,
        resume_session,
        mcp: mcp.as_ref(),
    };
    let mut launch = adapter
        .launch(&req)
        .map_err(|e| format!("{} adapter: {e}", profile.cli))?;
    if let Some(hook) = r.policy.and_then(|p| p.post_edit_hook.as_deref())
        && adapter.add_post_edit_hook(&mut launch, r.home, hook)
    {
        let mut log = r.log;
        let _ = writeln!(
            log,
            "   after_edit policies run after every file edit ({hook})"
        );
    }
    for f in &launch.files {
        if let Some(dir) = f.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| e.to_string())?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(f.mode)
            .open(&f.path)
            .map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
        file.write_all(f.contents.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let mut full_env = process::scrubbed_env();
    for k in &launch.env_remove {
        full_env.remove(k);
    }
    full_env.extend(launch.env.clone());
    let mut log = r.log;
    let _ = writeln!(
        log,
        "$ {}   (agent {} · cli {} · model {})",
        launch.display(),
        profile.name,
        profile.cli,
        profile.model.as_deref().unwrap_or("default")
    );
    if let Some(dir) = r.transcript.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let transcript = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(r.transcript)
        .map_err(|e| format!("cannot open the transcript: {e}"))?;
    // A chatty agent prints hundreds of lines a second: transcript and log are written in
    // batches (at most ~200 ms old); what counts is already in the store as events.
    let mut transcript = HeadTail::new(
        std::io::BufWriter::with_capacity(64 << 10, transcript),
        TRANSCRIPT_HEAD,
        TRANSCRIPT_TAIL,
    );
    let mut log = HeadTail::new(
        std::io::BufWriter::with_capacity(16 << 10, log),
        LOG_HEAD,
        LOG_TAIL,
    );
    let mut flushed = std::time::Instant::now();
    let mut parser = adapter.parser();
    let stdin = match &launch.stdin {
        Stdin::Text(t) => Some(t.as_str()),
        Stdin::Null => None,
    };
    let spec = StreamSpec {
        program: &launch.program,
        args: &launch.args,
        cwd: r.workdir,
        env: &full_env,
        stdin,
        timeout: r.timeout.or(profile.timeout),
        stall_timeout: Some(profile.stall_timeout),
        kill_grace: r.kill_grace,
        side_logs: launch.side_logs.as_deref(),
    };
    let end = process::run_streaming(spec, stop, |stream, line| {
        let line = redactor.clean(line);
        let prefix = match stream {
            Stream::Stdout => "",
            Stream::Stderr => "[stderr] ",
            Stream::Side => "[log] ",
        };
        let _ = writeln!(transcript, "{prefix}{line}");
        let events: Vec<AgentEvent> = match stream {
            Stream::Stdout => parser.stdout_line(&line),
            Stream::Stderr | Stream::Side => parser.stderr_line(&line),
        };
        for e in &events {
            let _ = writeln!(log, "  {}", e.readable());
        }
        if flushed.elapsed() > std::time::Duration::from_millis(200) {
            let _ = transcript.flush();
            let _ = log.flush();
            flushed = std::time::Instant::now();
        }
        if events.is_empty() {
            return false;
        }
        // Parsed from the already redacted line: no secret can be in them.
        on_events(events);
        parser.verdict().is_some()
    })
    .await
    .map_err(|e| format!("could not run {}: {e}", launch.program))?;
    let _ = transcript.finish();
    let mut log = log
        .finish()
        .map_err(|e| e.to_string())?
        .into_inner()
        .map_err(|e| e.to_string())?;
    let tail = parser.flush();
    if !tail.is_empty() {
        for e in &tail {
            let _ = writeln!(log, "  {}", e.readable());
        }
        on_events(tail);
    }
    let pend = ProcessEnd {
        exit_code: end.finished.code,
        signal: end.finished.signal,
        timed_out: end.finished.timed_out,
        stalled: end.stalled,
        ended_at: Some(chrono::Utc::now().timestamp()),
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    };
    let outcome = match parser.verdict().filter(|_| end.gave_up) {
        Some(v) => v,
        None => parser.finish(&pend),
    };
    // Only an agent that finished normally has a session worth continuing: if the checks
    // fail, the engine may resume it on the next attempt (see `fix_loop::resume_from`).
    home_guard.keep = outcome.succeeded() && adapter.can_resume();
    Ok((
        end.finished,
        AgentEnd {
            outcome,
            stalled: end.stalled,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cleaned_of_every_known_secret() {
        let r = Redactor::new([("KEY".to_string(), "sk-abcdefgh".to_string())]);
        let e = clean_event(
            &r,
            AgentEvent::Message {
                text: "key=sk-abcdefgh".into(),
            },
        );
        assert_eq!(
            e,
            AgentEvent::Message {
                text: "key=[redacted KEY]".into()
            }
        );
    }
}
