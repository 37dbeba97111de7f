//! One attempt over the Agent Client Protocol: the agent process (scrubbed env, private home,
//! its own process group), its stdin/stdout carrying JSON-RPC both ways, and the supervision
//! the other adapters get — wall-clock timeout, stall detection, stop — except that an attempt
//! is first cancelled through `session/cancel` and only then killed. The protocol itself (what
//! to send, what the agent's messages mean, which permissions to grant) is
//! `fleet_agents::acp::AcpClient`; this file does its IO: the process, the file-system calls
//! (confined to the worktree), the transcript (`> ` sent, `< ` received, `[stderr] `), the log.

use crate::agent::{AgentEnd, AgentRun, Redactor, clean_event};
use crate::capped::HeadTail;
use crate::process::{self, Finished};
use fleet_agents::acp::{AcpClient, FsCall, Policy, SessionConfig};
use fleet_agents::{AgentEvent, AttemptRequest, Launch, ProcessEnd};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Longest line read from the agent; a longer one is cut (never buffered without end).
const MAX_LINE: usize = 16 << 20;
/// How long an agent that answered its prompt gets to exit by itself once stdin is closed.
const EXIT_AFTER_DONE: Duration = Duration::from_secs(2);
/// How long a cancelled prompt gets to come back before the kill (capped by the kill grace).
const CANCEL_GRACE: Duration = Duration::from_secs(5);
const FS_READ_MAX: u64 = 8 << 20;
/// How often side logs are read.
const SIDE_LOG_TICK: Duration = Duration::from_millis(250);

/// New complete lines appended to the files of a directory since the last look (qwen's debug
/// log, where it reports its retries).
#[derive(Default)]
struct SideLogs {
    offsets: BTreeMap<std::path::PathBuf, u64>,
}

impl SideLogs {
    fn read(&mut self, dir: &std::path::Path) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut lines = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return lines;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let offset = self.offsets.entry(path.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.take(1 << 20).read_to_end(&mut buf).is_err() {
                continue;
            }
            let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            *offset += end as u64 + 1;
            lines.extend(
                String::from_utf8_lossy(&buf[..end])
                    .lines()
                    .map(str::to_string),
            );
        }
        lines
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at end of stream.
async fn read_line(r: &mut (impl AsyncBufRead + Unpin)) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) => b,
            Err(_) => return (!line.is_empty()).then(|| lossy(line)),
        };
        if buf.is_empty() {
            return (!line.is_empty()).then(|| lossy(line));
        }
        let (take, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        r.consume(take);
        if found || line.len() >= MAX_LINE {
            while line.last() == Some(&b'\n') || line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(lossy(line));
        }
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

enum FsError {
    /// Outside the worktree, or unreadable: an event says so.
    Refused(String),
    /// ACP's "Resource not found" (-32002): how an agent learns a file is new.
    Missing(String),
}

impl From<String> for FsError {
    fn from(e: String) -> FsError {
        FsError::Refused(e)
    }
}

/// The attempt's file-system call, inside the worktree only.
fn fs_call(workdir: &std::path::Path, call: &FsCall) -> Result<serde_json::Value, FsError> {
    match call {
        FsCall::Read {
            path, line, limit, ..
        } => {
            let p = crate::http_agent::confine(workdir, path)?;
            let meta = match std::fs::metadata(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(FsError::Missing(path.clone()));
                }
                other => other.map_err(|e| format!("{path}: {e}"))?,
            };
            if meta.len() > FS_READ_MAX {
                return Err(format!("{path}: larger than {FS_READ_MAX} bytes").into());
            }
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{path}: {e}"))?;
            let content = match (line, limit) {
                (None, None) => text,
                _ => {
                    let skip = line.unwrap_or(1).saturating_sub(1) as usize;
                    let take = limit.map(|l| l as usize).unwrap_or(usize::MAX);
                    text.lines()
                        .skip(skip)
                        .take(take)
                        .map(|l| format!("{l}\n"))
                        .collect()
                }
            };
            Ok(json!({"content": content}))
        }
        FsCall::Write { path, content, .. } => {
            let p = crate::http_agent::confine(workdir, path)?;
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{path}: {e}"))?;
            }
            std::fs::write(&p, content).map_err(|e| format!("{path}: {e}"))?;
            Ok(serde_json::Value::Null)
        }
    }
}

/// Builds the launch of the profile's ACP agent.
fn acp_launch(r: &AgentRun<'_>, req: &AttemptRequest<'_>) -> Result<Launch, String> {
    let p = r.profile;
    fleet_agents::acp::launch(&p.cli, p.command.as_deref(), &p.args, req)
        .map_err(|e| format!("{} over ACP: {e}", p.cli))
}

fn write_files(launch: &Launch) -> Result<(), String> {
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
    Ok(())
}

/// A stderr or side-log line: read by the CLI's own parser where it has one, else by the ACP
/// client's generic rules.
fn side_line(
    client: &mut AcpClient,
    native: Option<&mut Box<dyn fleet_agents::Parser>>,
    line: &str,
) -> Vec<AgentEvent> {
    match native {
        Some(n) => {
            client.stderr_tail(line);
            n.stderr_line(line)
        }
        None => client.stderr_line(line),
    }
}

/// The attempt has already failed (a rate limit the agent retries on its own…).
fn verdict(
    client: &AcpClient,
    native: Option<&dyn fleet_agents::Parser>,
) -> Option<fleet_agents::Outcome> {
    client
        .verdict()
        .or_else(|| native.and_then(|n| n.verdict()))
}

/// Ends the agent's process group: TERM, then KILL after `grace`.
async fn end_group(
    child: &mut tokio::process::Child,
    pgid: i32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Why the session loop ended.
#[derive(Default)]
struct Ending {
    stalled: bool,
    timed_out: bool,
    stopped: bool,
    gave_up: bool,
}

/// Runs one attempt over ACP (see the module docs).
pub async fn run(
    r: &AgentRun<'_>,
    mut stop: watch::Receiver<bool>,
    secrets: &BTreeMap<String, String>,
    redactor: &Redactor,
    mut on_events: impl FnMut(Vec<AgentEvent>),
) -> Result<(Finished, AgentEnd), String> {
    let profile = r.profile;
    let started = Instant::now();
    let resume = r
        .resume_session
        .filter(|_| fleet_agents::acp::loads_sessions(&profile.cli));
    if r.home.exists() && resume.is_none() {
        std::fs::remove_dir_all(r.home)
            .map_err(|e| format!("cannot clear {}: {e}", r.home.display()))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(r.home.join("tmp"))
        .map_err(|e| format!("cannot create the agent's home {}: {e}", r.home.display()))?;
    let mut home_guard = crate::agent::RemoveOnDrop {
        path: r.home.to_path_buf(),
        keep: false,
    };
    let mut env = profile.env.clone();
    env.extend(r.extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));
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
        secrets,
        env: &env,
        max_turns: profile.max_turns,
        resume_session: None,
        mcp: mcp.as_ref(),
    };
    let launch = acp_launch(r, &req)?;
    write_files(&launch)?;
    let mut full_env = process::scrubbed_env();
    for k in &launch.env_remove {
        full_env.remove(k);
    }
    full_env.extend(launch.env.clone());
    let mut header = r.log;
    let _ = writeln!(
        header,
        "$ {}   (agent {} · cli {} · acp · model {})",
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
    let mut transcript = HeadTail::new(transcript, 8 << 20, 2 << 20);
    let mut log = HeadTail::new(r.log, 1 << 20, 1 << 20);
    let mut policy = Policy::for_worktree(r.workdir);
    if let Some(p) = r.policy {
        policy.protected = p.protected.clone();
        policy.allowed_paths = p.allowed_paths.clone();
        policy.allowed_kinds = p.allowed_tools.clone();
    }
    let mut client = AcpClient::new(SessionConfig {
        cwd: r.workdir.to_path_buf(),
        prompt: r.prompt.to_string(),
        mcp: mcp.clone(),
        resume_session: resume.map(str::to_string),
        policy: policy.clone(),
        fs: fleet_agents::acp::offers_fs(&profile.cli),
        mode: fleet_agents::acp::preferred_mode(&profile.cli),
    });
    let mut emit = |events: Vec<AgentEvent>, log: &mut HeadTail<&std::fs::File>| {
        if events.is_empty() {
            return;
        }
        let events: Vec<AgentEvent> = events
            .into_iter()
            .map(|e| clean_event(redactor, e))
            .collect();
        for e in &events {
            let _ = writeln!(log, "  {}", e.readable());
        }
        on_events(events);
    };

    let program = crate::spawn::resolve(&launch.program, &full_env)
        .unwrap_or_else(|_| launch.program.clone().into());
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&launch.args)
        .current_dir(r.workdir)
        .env_clear()
        .envs(&full_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let detail = format!("cannot run {:?}: {e}", launch.program);
            let _ = writeln!(log, "  {detail}");
            let finished = Finished {
                code: Some(127),
                signal: None,
                timed_out: false,
                stopped: false,
                elapsed: started.elapsed(),
            };
            let outcome = fleet_agents::acp::not_started(detail);
            return Ok((
                finished,
                AgentEnd {
                    outcome,
                    stalled: false,
                },
            ));
        }
    };
    let pgid = child.id().expect("just spawned") as i32;
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut out_open = true;
    let mut err_open = true;
    let deadline = r.timeout.or(profile.timeout).map(|t| started + t);
    let stall = profile.stall_timeout;
    let mut last = Instant::now();
    let mut ending = Ending::default();
    // Set once session/cancel went out: the kill follows at this instant.
    let mut kill_at: Option<Instant> = None;
    let mut side = SideLogs::default();
    // A built-in CLI reports its retries on stderr or in its logs as in headless mode: its own
    // parser reads them (opencode's "stream error", qwen's debug log, gemini's "Attempt N").
    let mut native: Option<Box<dyn fleet_agents::Parser>> = (profile.cli != "acp")
        .then(|| fleet_agents::adapter(&profile.cli).map(|a| a.parser()))
        .flatten();

    let send = |lines: Vec<String>, transcript: &mut HeadTail<std::fs::File>| {
        let mut bytes = Vec::new();
        for l in lines {
            let _ = writeln!(transcript, "> {}", redactor.clean(&l));
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        bytes
    };
    let first = client.start();
    let bytes = send(first.send, &mut transcript);
    let _ = stdin.write_all(&bytes).await;
    let _ = stdin.flush().await;

    while out_open && !client.done() {
        let now = Instant::now();
        let mut wake = last + stall;
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if let Some(k) = kill_at {
            wake = wake.min(k);
        }
        if launch.side_logs.is_some() {
            wake = wake.min(now + SIDE_LOG_TICK);
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake.max(now)));
        tokio::select! {
            line = read_line(&mut out) => match line {
                None => out_open = false,
                Some(line) => {
                    last = Instant::now();
                    let _ = writeln!(transcript, "< {}", redactor.clean(&line));
                    let step = client.stdout_line(&line);
                    let mut replies = step.send;
                    for call in &step.fs {
                        let (id, result) = match call {
                            FsCall::Read { id, .. } => (id, fs_call(r.workdir, call)),
                            // A write goes through the same policy as a permission request.
                            FsCall::Write { id, path, .. } => match policy.judge(&json!({"kind": "edit", "locations": [{"path": path}]})) {
                                Ok(()) => (id, fs_call(r.workdir, call)),
                                Err(denial) => {
                                    emit(vec![AgentEvent::Policy { kind: "denied".into(), rule: denial.rule, detail: format!("write {path}: {}", denial.reason) }], &mut log);
                                    (id, Err(FsError::Refused(denial.reason)))
                                }
                            },
                        };
                        match &result {
                            Err(FsError::Refused(e)) => emit(vec![AgentEvent::ToolResult { name: Some("fs".into()), ok: false, output: format!("refused: {e}") }], &mut log),
                            Err(FsError::Missing(_)) | Ok(_) => {}
                        }
                        replies.push(match result {
                            Ok(v) => client.answer(id, Ok(v)),
                            Err(FsError::Missing(p)) => fleet_agents::acp::error_line(id, -32002, &format!("Resource not found: {p}")),
                            Err(FsError::Refused(e)) => client.answer(id, Err(e)),
                        });
                    }
                    emit(step.events, &mut log);
                    if !replies.is_empty() {
                        let bytes = send(replies, &mut transcript);
                        let _ = stdin.write_all(&bytes).await;
                        let _ = stdin.flush().await;
                    }
                    if kill_at.is_none() && verdict(&client, native.as_deref()).is_some() {
                        ending.gave_up = true;
                        kill_at = Some(Instant::now() + CANCEL_GRACE.min(r.kill_grace));
                        if let Some(c) = client.cancel() {
                            let bytes = send(vec![c], &mut transcript);
                            let _ = stdin.write_all(&bytes).await;
                            let _ = stdin.flush().await;
                        }
                    }
                }
            },
            line = read_line(&mut err), if err_open => match line {
                None => err_open = false,
                Some(line) => {
                    last = Instant::now();
                    let line = redactor.clean(&line);
                    let _ = writeln!(transcript, "[stderr] {line}");
                    let events = side_line(&mut client, native.as_mut(), &line);
                    emit(events, &mut log);
                    if kill_at.is_none() && verdict(&client, native.as_deref()).is_some() {
                        ending.gave_up = true;
                        kill_at = Some(Instant::now() + CANCEL_GRACE.min(r.kill_grace));
                        if let Some(c) = client.cancel() {
                            let bytes = send(vec![c], &mut transcript);
                            let _ = stdin.write_all(&bytes).await;
                            let _ = stdin.flush().await;
                        }
                    }
                }
            },
            _ = stop.changed() => {
                if *stop.borrow() {
                    ending.stopped = true;
                    break;
                }
            }
            _ = sleep => {
                if let Some(dir) = &launch.side_logs {
                    for line in side.read(dir) {
                        last = Instant::now();
                        let line = redactor.clean(&line);
                        let _ = writeln!(transcript, "[log] {line}");
                        let events = side_line(&mut client, native.as_mut(), &line);
                        emit(events, &mut log);
                    }
                    if kill_at.is_none() && verdict(&client, native.as_deref()).is_some() {
                        ending.gave_up = true;
                        kill_at = Some(Instant::now() + CANCEL_GRACE.min(r.kill_grace));
                        if let Some(c) = client.cancel() {
                            let bytes = send(vec![c], &mut transcript);
                            let _ = stdin.write_all(&bytes).await;
                            let _ = stdin.flush().await;
                        }
                    }
                }
                let now = Instant::now();
                if kill_at.is_some_and(|k| now >= k) {
                    break;
                }
                if kill_at.is_none() && (now >= last + stall || deadline.is_some_and(|d| now >= d)) {
                    if deadline.is_some_and(|d| now >= d) {
                        ending.timed_out = true;
                    } else {
                        ending.stalled = true;
                    }
                    let _ = writeln!(log, "  no output for {}s: session/cancel, then the kill", stall.as_secs());
                    kill_at = Some(now + CANCEL_GRACE.min(r.kill_grace));
                    match client.cancel() {
                        Some(c) => {
                            let bytes = send(vec![c], &mut transcript);
                            let _ = stdin.write_all(&bytes).await;
                            let _ = stdin.flush().await;
                        }
                        None => break,
                    }
                }
            }
        }
    }
    // The prompt was answered (or the session is over): stdin closes, the agent may exit by
    // itself; then TERM and KILL.
    drop(stdin);
    let status = match tokio::time::timeout(EXIT_AFTER_DONE, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => end_group(&mut child, pgid, r.kill_grace).await,
    };
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    // What it printed while exiting.
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_millis(200), read_line(&mut err)).await
    {
        let line = redactor.clean(&line);
        let _ = writeln!(transcript, "[stderr] {line}");
        let events = side_line(&mut client, native.as_mut(), &line);
        emit(events, &mut log);
    }
    let tail = client.flush();
    emit(tail, &mut log);
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        timed_out: ending.timed_out,
        stopped: ending.stopped,
        elapsed: started.elapsed(),
    };
    let pend = ProcessEnd {
        // A session that ended by its prompt's answer is judged by that, not by our TERM.
        exit_code: finished.code,
        signal: if client.done() { None } else { finished.signal },
        timed_out: ending.timed_out,
        stalled: ending.stalled,
        ended_at: Some(chrono::Utc::now().timestamp()),
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    };
    let outcome = match verdict(&client, native.as_deref()).filter(|_| ending.gave_up) {
        Some(v) => v,
        None => client.finish(&pend),
    };
    let _ = transcript.finish();
    let _ = log.finish();
    home_guard.keep = outcome.succeeded()
        && fleet_agents::acp::loads_sessions(&profile.cli)
        && client.capabilities().is_some_and(|c| c.load_session);
    Ok((
        finished,
        AgentEnd {
            outcome,
            stalled: ending.stalled,
        },
    ))
}

/// `fleet agents doctor`: starts the agent, sends `initialize`, and returns what it answered
/// (within `timeout`), then ends it.
pub async fn handshake(
    launch: &Launch,
    cwd: &std::path::Path,
    timeout: Duration,
) -> Result<fleet_agents::acp::Capabilities, String> {
    let mut env = process::scrubbed_env();
    env.extend(launch.env.clone());
    write_files(launch)?;
    let program = crate::spawn::resolve(&launch.program, &env)
        .unwrap_or_else(|_| launch.program.clone().into());
    let mut child = tokio::process::Command::new(program)
        .args(&launch.args)
        .current_dir(cwd)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", launch.program))?;
    let pgid = child.id().expect("just spawned") as i32;
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let line = fleet_agents::acp::request_line(
        1,
        "initialize",
        fleet_agents::acp::initialize_params(true),
    );
    let result = async {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())?;
        loop {
            let Some(l) = read_line(&mut out).await else {
                return Err("the agent closed its output before answering `initialize`".to_string());
            };
            if let Some(fleet_agents::acp::Incoming::Response { result, .. }) =
                fleet_agents::acp::parse_line(&l)
            {
                return result
                    .map(|v| fleet_agents::acp::Capabilities::from_initialize(&v))
                    .map_err(|e| format!("`initialize` failed: {}", e.text()));
            }
        }
    };
    let result = tokio::time::timeout(timeout, result)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer to `initialize` within {}s",
                timeout.as_secs()
            ))
        });
    drop(stdin);
    end_group(&mut child, pgid, Duration::from_secs(1)).await;
    result
}
