//! The real agent CLIs driven over the Agent Client Protocol (`transport: acp`) against the
//! scripted model server: the edit lands through ACP, tool calls and usage arrive as events,
//! a permission outside the worktree is refused and the agent goes on, a 429 is classified
//! for the swap, a hang is cancelled through `session/cancel` before the kill.

use fleet_agents::{AgentEvent, OutcomeClass};
use fleet_engine::AgentProfile;
use fleet_engine::agent::{self, AgentRun};
use fleet_testkit::{Fault, ModelServer, Scenario};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Node CLIs take up to ~20 s to answer `initialize` on this loaded 2-core machine (qwen,
/// opencode), silent meanwhile.
const STALL: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(2);
/// What an agent takes to start and reach its model before it hangs (opencode ~20 s here).
const START_UP: Duration = Duration::from_secs(40);

fn profile(cli: &str, base_url: String) -> AgentProfile {
    let mut p = AgentProfile::bare(cli);
    p.acp = true;
    p.base_url = Some(base_url);
    p.model = Some(match cli {
        "opencode" => "anthropic/claude-sonnet-4-5".into(),
        "claude" => "claude-sonnet-4-5".into(),
        "gemini" => "gemini-2.5-pro".into(),
        _ => "mock-model".into(),
    });
    p.stall_timeout = STALL;
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        fleet_testkit::agent_bin_dir().display()
    );
    p.env.insert("PATH".into(), path);
    p
}

fn secrets(cli: &str) -> BTreeMap<String, String> {
    let (k, v) = match cli {
        "claude" | "opencode" => ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789"),
        "gemini" => ("GEMINI_API_KEY", "gemini-test-0123456789"),
        _ => ("OPENAI_API_KEY", "sk-test-0123456789"),
    };
    BTreeMap::from([(k.to_string(), v.to_string())])
}

pub struct Ended {
    pub class: OutcomeClass,
    pub events: Vec<AgentEvent>,
    pub took: Duration,
    pub transcript: String,
    pub log: String,
    pub repo: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

async fn attempt(server: &ModelServer, cli: &str, case: &str, scenario: Scenario) -> Ended {
    attempt_in(
        server,
        cli,
        case,
        scenario,
        tempfile::tempdir().unwrap(),
        None,
    )
    .await
}

/// An attempt in `dir` (its `repo` and `home` are made if missing), continuing `resume`.
async fn attempt_in(
    server: &ModelServer,
    cli: &str,
    case: &str,
    scenario: Scenario,
    dir: tempfile::TempDir,
    resume: Option<&str>,
) -> Ended {
    attempt_under(server, cli, case, scenario, dir, resume, None).await
}

/// [`attempt_in`] under the run's policies as they apply to the attempt.
async fn attempt_under(
    server: &ModelServer,
    cli: &str,
    case: &str,
    scenario: Scenario,
    dir: tempfile::TempDir,
    resume: Option<&str>,
    policy: Option<&fleet_engine::AttemptPolicy>,
) -> Ended {
    let name = format!("acp-{case}-{cli}");
    server.add_scenario(&name, scenario);
    let repo = dir.path().join("repo");
    if !repo.exists() {
        std::fs::create_dir(&repo).unwrap();
        std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(&repo)
            .status()
            .unwrap();
    }
    let _ = std::fs::remove_file(dir.path().join("transcript"));
    let mut profile = profile(cli, server.base_url(&name));
    // `native…` cases run the same CLI through its own headless mode, for comparison.
    profile.acp = !case.starts_with("native");
    let log_path = dir.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let env = BTreeMap::new();
    let secrets = secrets(cli);
    let run = AgentRun {
        profile: &profile,
        prompt: "create hello.txt",
        workdir: &repo,
        home: &dir.path().join("home"),
        transcript: &dir.path().join("transcript"),
        log: &log,
        timeout: Some(Duration::from_secs(150)),
        kill_grace: GRACE,
        resume_session: resume,
        mcp: None,
        extra_env: &env,
        secrets: &secrets,
        redactor: &fleet_secrets::Redactor::default(),
        policy,
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut events = Vec::new();
    let (_, end) = agent::run(run, rx, |e| events.extend(e)).await.unwrap();
    drop(log);
    let transcript = std::fs::read_to_string(dir.path().join("transcript")).unwrap_or_default();
    let log = std::fs::read_to_string(&log_path).unwrap();
    // FLEET_ACP_RECORD=dir keeps the transcripts (how fixtures/acp/ was recorded).
    if let Some(dir) = std::env::var_os("FLEET_ACP_RECORD") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{cli}-{case}.transcript")), &transcript).unwrap();
    }
    assert!(
        !transcript.contains("0123456789") && !log.contains("0123456789"),
        "{cli}/{case}: a secret reached the log or transcript"
    );
    Ended {
        class: end.outcome.class,
        events,
        took: started.elapsed(),
        transcript,
        log,
        repo,
        dir,
    }
}

fn session_of(events: &[AgentEvent]) -> Option<String> {
    events.iter().rev().find_map(|e| match e {
        AgentEvent::Session { id } => Some(id.clone()),
        _ => None,
    })
}

/// A second attempt continues the first one's session through `session/load` (all five
/// agents advertise `loadSession`): the home is kept, the same session id comes back, and the
/// new prompt's edit lands.
async fn continues(cli: &str) {
    let server = ModelServer::start();
    let first = attempt(&server, cli, "first", Scenario::hello()).await;
    assert_eq!(
        first.class,
        OutcomeClass::Succeeded,
        "{cli}\n{}",
        tail(&first.transcript)
    );
    let id = session_of(&first.events).expect("a session");
    assert!(
        first.dir.path().join("home").is_dir(),
        "{cli}: the home of a loadable session was not kept"
    );
    // The scripted server's step is the number of tool results (and answered turns) in the
    // conversation: a loaded session carries the first attempt's two tool results and its
    // DONE, so its first reply is step 3 (second.txt); a fresh session would start again at
    // hello.txt.
    let second = Scenario::new()
        .write_file("hello.txt", "hello from fleet\n")
        .edit_file("hello.txt", "hello from fleet", "hello from fleet, edited")
        .text("DONE")
        .write_file("second.txt", "again\n")
        .text("DONE");
    // The same scenario name (so the same base URL) with the second script.
    let e = attempt_in(&server, cli, "first", second, first.dir, Some(&id)).await;
    assert!(
        e.transcript.contains("\"session/load\""),
        "{cli}: no session/load\n{}",
        tail(&e.transcript)
    );
    assert_eq!(
        e.class,
        OutcomeClass::Succeeded,
        "{cli}\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
    assert_eq!(
        session_of(&e.events).as_deref(),
        Some(id.as_str()),
        "{cli}: another session"
    );
    assert!(
        !e.log.contains("session/load failed"),
        "{cli}: the load failed\n{}",
        tail(&e.transcript)
    );
    assert_eq!(
        std::fs::read_to_string(e.repo.join("second.txt")).unwrap_or_default(),
        "again\n",
        "{cli}\n{}",
        tail(&e.transcript)
    );
    // The agent's first model request of the second attempt already carried the first
    // attempt's conversation.
    let first_step = server
        .requests(&format!("acp-first-{cli}"))
        .iter()
        .find_map(|r| r.step);
    assert_eq!(
        first_step,
        Some(3),
        "{cli}: the loaded session did not reach the model\n{}",
        tail(&e.transcript)
    );
}

fn tail(s: &str) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(3000)).collect()
}

/// The edit lands through ACP; tool calls and usage are events.
async fn edits(cli: &str) {
    let server = ModelServer::start();
    let e = attempt(&server, cli, "edit", Scenario::hello()).await;
    let hello = std::fs::read_to_string(e.repo.join("hello.txt")).unwrap_or_default();
    assert!(
        e.class == OutcomeClass::Succeeded && hello.contains("hello from fleet, edited"),
        "{cli}: {:?}, hello.txt = {hello:?}\n{}\n{}",
        e.class,
        e.log,
        tail(&e.transcript)
    );
    assert!(
        e.events
            .iter()
            .any(|ev| matches!(ev, AgentEvent::ToolCall { .. })),
        "{cli}: no tool call event\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
    assert!(
        e.events
            .iter()
            .any(|ev| matches!(ev, AgentEvent::Session { .. })),
        "{cli}: no session event"
    );
    assert!(e.transcript.contains("\"session/prompt\""));
    eprintln!(
        "{cli}: edit over ACP in {:.1}s; events: {}",
        e.took.as_secs_f64(),
        e.events
            .iter()
            .map(|e| e.readable())
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

/// A hang is cancelled through session/cancel, then killed, within the stall timeout + grace.
async fn hang(cli: &str) {
    let server = ModelServer::start();
    let e = attempt(
        &server,
        cli,
        "hang",
        Scenario::hello().fault(Fault::HangBeforeHeaders { times: None }),
    )
    .await;
    // qwen reports its own request timeout in its debug log (UpstreamError, as headless).
    assert!(
        matches!(e.class, OutcomeClass::Stalled | OutcomeClass::UpstreamError),
        "{cli}: {:?}\n{}",
        e.class,
        tail(&e.transcript)
    );
    assert!(
        e.transcript.contains("\"session/cancel\""),
        "{cli}: no session/cancel sent\n{}",
        tail(&e.transcript)
    );
    assert!(
        e.took < STALL + GRACE + START_UP,
        "{cli}: took {:?}",
        e.took
    );
}

/// A 429 with a reset time: rate limited (or quota), so the pool swaps to another vendor.
async fn rate_limited(cli: &str) {
    let server = ModelServer::start();
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let e = attempt(
        &server,
        cli,
        "429",
        Scenario::hello().fault(Fault::status(429).retry_after(3600).reset_at(in_an_hour)),
    )
    .await;
    assert!(
        matches!(
            e.class,
            OutcomeClass::RateLimited | OutcomeClass::QuotaExhausted
        ),
        "{cli}: {:?} after {:?}\n{}",
        e.class,
        e.took,
        tail(&e.transcript)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_over_acp() {
    edits("gemini").await;
    rate_limited("gemini").await;
    hang("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_continues_its_session_through_session_load() {
    continues("codex").await;
}

/// A `git push` asks for permission; Fleet's policy refuses it with an event and the agent
/// goes on to the edit. (A path outside the worktree, or in its .git, is refused by gemini
/// itself before any permission request: "Path not in workspace".)
async fn denied_then_goes_on(cli: &str) {
    let server = ModelServer::start();
    let scenario = Scenario::new()
        .shell("git push origin HEAD && touch pushed.txt")
        .write_file("hello.txt", "hello from fleet\n")
        .text("DONE");
    let e = attempt(&server, cli, "deny", scenario).await;
    let landed = e.repo.join("pushed.txt").exists();
    assert!(!landed, "{cli}: the push ran\n{}", tail(&e.transcript));
    let hello = std::fs::read_to_string(e.repo.join("hello.txt")).unwrap_or_default();
    assert_eq!(
        hello,
        "hello from fleet\n",
        "{cli}: did not go on\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
    assert!(
        e.events.iter().any(|ev| matches!(ev, AgentEvent::ToolResult { ok: false, output, .. } if output.contains("permission denied by Fleet's policy"))),
        "{cli}: no refusal event\n{}\n{}", e.log, tail(&e.transcript)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_permission_outside_policy_is_denied() {
    denied_then_goes_on("gemini").await;
}

/// A write to a path a policy protects (`policies: protected_paths`) is refused when the agent
/// asks permission for it, with a `policy.denied` event naming the rule, and the agent goes on
/// to the edit it may make.
async fn protected_write_denied_then_goes_on(cli: &str) {
    let server = ModelServer::start();
    let scenario = Scenario::new()
        .write_file("migrations/001.sql", "DROP TABLE users;\n")
        .write_file("hello.txt", "hello from fleet\n")
        .text("DONE");
    let policy = fleet_engine::AttemptPolicy {
        protected: vec![
            fleet_core::policy::ProtectedPaths::new("keep-out", &["migrations/".to_string()])
                .unwrap(),
        ],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let e = attempt_under(
        &server,
        cli,
        "protected",
        scenario,
        dir,
        None,
        Some(&policy),
    )
    .await;
    assert!(
        !e.repo.join("migrations/001.sql").exists(),
        "{cli}: the protected file was written\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
    let hello = std::fs::read_to_string(e.repo.join("hello.txt")).unwrap_or_default();
    assert_eq!(
        hello,
        "hello from fleet\n",
        "{cli}: did not go on\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
    assert!(
        e.events
            .iter()
            .any(|ev| matches!(ev, AgentEvent::Policy { kind, rule, detail }
            if kind == "denied" && rule == "keep-out" && detail.contains("migrations/001.sql"))),
        "{cli}: no policy.denied event\n{}\n{}",
        e.log,
        tail(&e.transcript)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_write_to_a_protected_path_is_denied() {
    protected_write_denied_then_goes_on("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_write_to_a_protected_path_is_denied() {
    protected_write_denied_then_goes_on("qwen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_over_acp() {
    edits("qwen").await;
    rate_limited("qwen").await;
    hang("qwen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_over_acp() {
    edits("opencode").await;
    rate_limited("opencode").await;
    hang("opencode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_over_acp_through_the_npm_adapter() {
    edits("claude").await;
    hang("claude").await;
}

/// claude-code-acp 0.16.2 says nothing while claude retries a 429 (no update, no stderr line;
/// its headless stream has `rate_limit_event` and `system/api_retry`): over ACP a rate limit is
/// only seen as a stall, cancelled through session/cancel — the pool then moves the task to the
/// next profile, but cannot cool the account down until the reset time. Fails once the adapter
/// reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_over_acp_sees_a_429_only_as_a_stall() {
    let server = ModelServer::start();
    let e = attempt(
        &server,
        "claude",
        "429",
        Scenario::hello().fault(Fault::status(429).retry_after(3600)),
    )
    .await;
    assert_eq!(e.class, OutcomeClass::Stalled, "{}", tail(&e.transcript));
    assert!(e.transcript.contains("\"session/cancel\""));
    assert!(
        server
            .requests("acp-429-claude")
            .iter()
            .any(|r| r.outcome == "fault 429")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_over_acp_through_the_npm_adapter() {
    edits("codex").await;
    rate_limited("codex").await;
    hang("codex").await;
}

/// gemini 0.61.0 advertises `loadSession`, but a loaded session replays each earlier tool
/// result twice (as its `--resume`: google-gemini/gemini-cli#29365) and the next model call is
/// refused with 400, or the session is not found yet: Fleet does not load gemini's sessions
/// (see `fleet_agents::acp::loads_sessions`), its home is not kept, and the next attempt starts
/// a new session that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_sessions_are_not_loaded() {
    let server = ModelServer::start();
    let first = attempt(&server, "gemini", "first", Scenario::hello()).await;
    assert_eq!(first.class, OutcomeClass::Succeeded);
    assert!(
        !first.dir.path().join("home").exists(),
        "gemini's home was kept"
    );
    let id = session_of(&first.events).expect("a session");
    let e = attempt_in(
        &server,
        "gemini",
        "first",
        Scenario::hello(),
        first.dir,
        Some(&id),
    )
    .await;
    assert!(
        !e.transcript.contains("\"session/load\""),
        "{}",
        tail(&e.transcript)
    );
    assert_eq!(e.class, OutcomeClass::Succeeded, "{}", tail(&e.transcript));
    assert_ne!(session_of(&e.events), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_continues_its_session_through_session_load() {
    continues("opencode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_continues_its_session_through_session_load() {
    continues("claude").await;
}

/// What an event is, without its contents: the shape two transports are compared by.
fn kind(e: &AgentEvent) -> &'static str {
    match e {
        AgentEvent::Message { .. } => "message",
        AgentEvent::ToolCall { .. } => "tool_call",
        AgentEvent::ToolResult { ok: true, .. } => "tool_ok",
        AgentEvent::ToolResult { ok: false, .. } => "tool_failed",
        AgentEvent::Usage(_) => "usage",
        AgentEvent::Cost { .. } => "cost",
        AgentEvent::Session { .. } => "session",
        AgentEvent::RateLimit { .. } => "rate_limit",
        AgentEvent::Retrying { .. } => "retrying",
        AgentEvent::Error { .. } => "error",
        AgentEvent::Policy { .. } => "policy",
    }
}

/// The same task through the CLI's headless mode and through ACP: both land the edit, and both
/// report a session, two tool calls that succeeded, and the final DONE; the event streams are
/// printed side by side.
async fn side_by_side(cli: &str) {
    let server = ModelServer::start();
    let native = attempt(&server, cli, "native-same", Scenario::hello()).await;
    let acp = attempt(&server, cli, "acp-same", Scenario::hello()).await;
    let rows = native.events.len().max(acp.events.len());
    eprintln!("{cli}: {:<60} | ACP", "headless");
    for i in 0..rows {
        let cell = |v: &Vec<AgentEvent>| {
            v.get(i)
                .map(|e| e.readable().chars().take(58).collect::<String>())
                .unwrap_or_default()
        };
        eprintln!("  {:<60} | {}", cell(&native.events), cell(&acp.events));
    }
    for (name, e) in [("headless", &native), ("acp", &acp)] {
        let hello = std::fs::read_to_string(e.repo.join("hello.txt")).unwrap_or_default();
        assert_eq!(
            hello, "hello from fleet, edited\n",
            "{cli} {name}\n{}",
            e.log
        );
        assert_eq!(e.class, OutcomeClass::Succeeded, "{cli} {name}");
        let count = |k: &str| e.events.iter().filter(|ev| kind(ev) == k).count();
        assert!(count("session") >= 1, "{cli} {name}: {:?}", e.events);
        assert_eq!(
            (count("tool_call"), count("tool_ok")),
            (2, 2),
            "{cli} {name}: {:?}",
            e.events
        );
        let last = e.events.iter().rev().find_map(|ev| match ev {
            AgentEvent::Message { text } => Some(text.trim().to_string()),
            _ => None,
        });
        assert_eq!(last.as_deref(), Some("DONE"), "{cli} {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_headless_and_acp_side_by_side() {
    side_by_side("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_headless_and_acp_side_by_side() {
    side_by_side("claude").await;
}
