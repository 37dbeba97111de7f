//! The five real agent CLIs, driven by fleet's agent runner against the scripted model server:
//! each error case must end with the right outcome class within a stated bound — the stall
//! timeout plus the kill grace — without waiting for a CLI's own minutes of retries.

use fleet_agents::OutcomeClass;
use fleet_engine::AgentProfile;
use fleet_engine::agent::{self, AgentRun};
use fleet_testkit::{Fault, ModelServer, Scenario};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STALL: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(2);
/// Every case must end by then: a stalled CLI at STALL + GRACE, plus start-up and slack for
/// a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(45);

fn profile(cli: &str, base_url: String) -> AgentProfile {
    let mut p = AgentProfile::bare(cli);
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

struct Ended {
    class: OutcomeClass,
    resets_at: Option<i64>,
    took: Duration,
    log: String,
}

async fn attempt(server: &ModelServer, cli: &str, case: &str, scenario: Scenario) -> Ended {
    let name = format!("{case}-{cli}");
    server.add_scenario(&name, scenario);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&repo)
        .status()
        .unwrap();
    let profile = profile(cli, server.base_url(&name));
    let prompt = "create hello.txt";
    let log_path = dir.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let env = BTreeMap::new();
    let secrets = secrets(cli);
    let run = AgentRun {
        profile: &profile,
        prompt,
        workdir: &repo,
        home: &dir.path().join("home"),
        transcript: &dir.path().join("transcript"),
        log: &log,
        timeout: Some(Duration::from_secs(120)),
        kill_grace: GRACE,
        resume_session: None,
        mcp: None,
        extra_env: &env,
        secrets: &secrets,
        redactor: &fleet_secrets::Redactor::default(),
        policy: None,
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let (_, end) = agent::run(run, rx, |_| {}).await.unwrap();
    let mut log = std::fs::read_to_string(&log_path).unwrap();
    log.push_str(&std::fs::read_to_string(dir.path().join("transcript")).unwrap_or_default());
    assert!(
        !log.contains("0123456789"),
        "{cli}/{case}: a secret reached the log or transcript"
    );
    Ended {
        class: end.outcome.class,
        resets_at: end.outcome.resets_at,
        took: started.elapsed(),
        log,
    }
}

fn cases() -> Vec<(&'static str, Scenario, Vec<OutcomeClass>)> {
    let in_an_hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
        + 3600;
    vec![
        // A 429 with a reset time an hour ahead: a rate limit (or, for CLIs that read it as a
        // daily quota — gemini's TerminalQuotaError — an exhausted quota).
        (
            "429",
            Scenario::hello().fault(Fault::status(429).retry_after(3600).reset_at(in_an_hour)),
            vec![OutcomeClass::RateLimited, OutcomeClass::QuotaExhausted],
        ),
        (
            "401",
            Scenario::hello().fault(Fault::status(401)),
            vec![OutcomeClass::AuthFailed],
        ),
        (
            "500",
            Scenario::hello().fault(Fault::status(500).retry_after(1)),
            vec![OutcomeClass::UpstreamError],
        ),
        (
            "hang",
            Scenario::hello().fault(Fault::HangBeforeHeaders { times: None }),
            vec![OutcomeClass::Stalled],
        ),
    ]
}

async fn matrix(cli: &'static str) {
    let server = ModelServer::start();
    let mut wrong = Vec::new();
    for (case, scenario, expected) in cases() {
        let e = attempt(&server, cli, case, scenario).await;
        if !expected.contains(&e.class) || e.took > BOUND {
            wrong.push(format!(
                "{cli}/{case}: {:?} after {:?} (expected {expected:?} within {BOUND:?})\n{}",
                e.class,
                e.took,
                e.log
                    .chars()
                    .rev()
                    .take(1500)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            ));
        }
        if case == "429" && e.class == OutcomeClass::QuotaExhausted {
            assert!(
                e.resets_at.is_some(),
                "{cli}: a quota with a reset time must carry it"
            );
        }
        eprintln!(
            "{cli}/{case}: {:?} in {:.1}s",
            e.class,
            e.took.as_secs_f64()
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_outcomes() {
    matrix("claude").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_outcomes() {
    matrix("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_outcomes() {
    matrix("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_outcomes() {
    matrix("qwen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_outcomes() {
    matrix("opencode").await;
}

/// `cli: http`: fleet's own tool loop over Chat Completions, against the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_agent_edits_files_and_classifies_errors() {
    let server = ModelServer::start();
    let http = |name: &str| {
        let mut p = AgentProfile::bare("http");
        p.base_url = Some(server.base_url(name));
        p.model = Some("gpt-4.1".into());
        p.stall_timeout = Duration::from_secs(3);
        p
    };
    server.add_scenario(
        "http-ok",
        Scenario::new()
            .write_file("notes/hello.txt", "hello from fleet\n")
            .edit_file("notes/hello.txt", "hello", "hello again")
            .shell("ls notes > listing.txt")
            .usage(fleet_testkit::Usage::new(400, 20)),
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let run_one = |name: &'static str| {
        let profile = http(name);
        let repo = repo.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let env = BTreeMap::new();
            let secrets = BTreeMap::from([(
                "OPENROUTER_API_KEY".to_string(),
                "sk-or-test-0123456789".to_string(),
            )]);
            let run = AgentRun {
                profile: &profile,
                prompt: "write notes/hello.txt",
                workdir: &repo,
                home: &dir.join(format!("{name}-home")),
                transcript: &dir.join(format!("{name}.transcript")),
                log: &log,
                timeout: Some(Duration::from_secs(60)),
                kill_grace: GRACE,
                resume_session: None,
                mcp: None,
                extra_env: &env,
                secrets: &secrets,
                redactor: &fleet_secrets::Redactor::default(),
                policy: None,
            };
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let mut events = Vec::new();
            let started = Instant::now();
            let (_, end) = agent::run(run, rx, |e| events.extend(e)).await.unwrap();
            (end, events, started.elapsed())
        }
    };
    let (end, events, _) = run_one("http-ok").await;
    assert_eq!(
        end.outcome.class,
        OutcomeClass::Succeeded,
        "{:?} {events:?}",
        end.outcome
    );
    let written = std::fs::read_to_string(repo.join("notes/hello.txt"))
        .unwrap_or_else(|e| panic!("{e}: {events:#?}"));
    assert_eq!(written, "hello again from fleet\n");
    assert_eq!(
        std::fs::read_to_string(repo.join("listing.txt")).unwrap(),
        "hello.txt\n"
    );
    let usage: u64 = events
        .iter()
        .filter_map(|e| match e {
            fleet_agents::AgentEvent::Usage(u) => {
                Some(u.input_tokens + u.cache_read_tokens + u.output_tokens)
            }
            _ => None,
        })
        .sum();
    assert_eq!(
        usage,
        server.model_calls("http-ok") * 420,
        "usage equals the server's ground truth"
    );
    // The key went out in the Authorization header (the server records it redacted).
    let req = &server.requests("http-ok")[0];
    assert!(req.header("authorization").is_some(), "{req:?}");
    assert!(
        !req.text().contains("0123456789"),
        "the key must not be in the request body"
    );

    server.add_scenario(
        "http-429",
        Scenario::hello().fault(Fault::status(429).retry_after(30)),
    );
    server.add_scenario("http-401", Scenario::hello().fault(Fault::status(401)));
    server.add_scenario("http-500", Scenario::hello().fault(Fault::status(500)));
    server.add_scenario(
        "http-hang",
        Scenario::hello().fault(Fault::HangBeforeHeaders { times: None }),
    );
    let (e429, _, _) = run_one("http-429").await;
    assert_eq!(e429.outcome.class, OutcomeClass::RateLimited);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        e429.outcome
            .resets_at
            .is_some_and(|t| (t - (now + 30)).abs() <= 2),
        "{:?}",
        e429.outcome
    );
    assert_eq!(
        run_one("http-401").await.0.outcome.class,
        OutcomeClass::AuthFailed
    );
    assert_eq!(
        run_one("http-500").await.0.outcome.class,
        OutcomeClass::UpstreamError
    );
    let (hang, _, took) = run_one("http-hang").await;
    assert_eq!(hang.outcome.class, OutcomeClass::Stalled);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn http_tools_stay_inside_the_worktree() {
    let dir = tempfile::tempdir().unwrap();
    assert!(fleet_engine::http_agent::confine(dir.path(), "../escape").is_err());
}
