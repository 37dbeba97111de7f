//! Fail until done, with the real claude and codex CLIs against the scripted model server:
//! a rate-limited agent is swapped for another vendor's in the same run and its account cools
//! down until the announced reset; a failing check is fixed on the next attempt, whose prompt
//! quotes the check's output; a stalling agent is killed at its stall timeout and another
//! finishes the task.

mod support;
use support::git;

use fleet_testkit::{Fault, ModelServer, Scenario, Usage};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Instance {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

impl Instance {
    /// An instance with `claude-dev` (priority 10, anthropic) and `codex-dev` (priority 5,
    /// openai), both developers, pointed at the given scenarios.
    fn new(server: &ModelServer, claude: &str, codex: &str, claude_stall: &str) -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            fleet_testkit::agent_bin_dir().display()
        );
        std::fs::write(
            home.join("fleet.yaml"),
            format!(
                "agents:\n  claude-dev:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [developer]\n    priority: 10\n    account: anthropic\n    base_url: \"{}\"\n    stall_timeout: {claude_stall}\n    env: {{ PATH: \"{path}\" }}\n  codex-dev:\n    cli: codex\n    model: gpt-5.1-codex\n    roles: [developer]\n    priority: 5\n    account: openai\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\naccounts:\n  anthropic: {{ secrets: [CLAUDE_CODE_OAUTH_TOKEN], daily_budget_usd: 100 }}\n  openai: {{ secrets: [OPENAI_API_KEY], daily_budget_usd: 100 }}\n",
                server.base_url(claude),
                server.base_url(codex)
            ),
        )
        .unwrap();
        Instance {
            _tmp: tmp,
            home,
            repo,
        }
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-test-secret-0001")
            .env("OPENAI_API_KEY", "sk-test-secret-0002")
            .output()
            .unwrap()
    }

    fn run(&self, runbook: &str) -> (Output, Value) {
        std::fs::write(self.repo.join("runbook.yaml"), runbook).unwrap();
        let out = self.fleet(&["run", "runbook.yaml"]);
        let status = self.fleet(&["status", "--json"]);
        let status: Value = serde_json::from_slice(&status.stdout).unwrap();
        (out, status)
    }

    fn events(&self, run: &str) -> Vec<Value> {
        std::fs::read_to_string(self.home.join(".fleet/runs").join(run).join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn logs(&self, status: &Value) -> String {
        let dir = PathBuf::from(status["logs"].as_str().unwrap());
        let mut s = String::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        s
    }
}

fn task<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
}

/// Two rounds of the same command, each ended by "DONE": it writes "bad" on the first attempt
/// and "good" afterwards (FLEET_ATTEMPT reaches the agent's shell tool through the CLI's
/// environment). A resumed session goes on at step 2, a fresh one starts again at step 0:
/// either way the second attempt fixes the file.
fn fixed_on_the_second_attempt(usage: Usage) -> Scenario {
    let fix =
        "if [ \"$FLEET_ATTEMPT\" -ge 2 ]; then echo good > out.txt; else echo bad > out.txt; fi";
    Scenario::new()
        .shell(fix)
        .text("DONE")
        .shell(fix)
        .text("DONE")
        .usage(usage)
}

/// The tokens of each finished attempt, in order.
fn finished_tokens(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["kind"] == "attempt.finished")
        .map(|e| e["data"]["tokens"].as_u64().unwrap_or(0))
        .collect()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_rate_limited_claude_is_swapped_for_codex_then_chosen_again_after_its_reset() {
    let server = ModelServer::start();
    let reset = now_s() + 12;
    // Claude's first request gets a 429 announcing the reset; afterwards it works.
    server.add_scenario(
        "claude",
        Scenario::new()
            .write_file("second.txt", "by claude\n")
            .usage(Usage::new(500, 20))
            .fault(
                Fault::status(429)
                    .reset_at(reset as u64)
                    .retry_after(12)
                    .times(1),
            ),
    );
    server.add_scenario(
        "codex",
        Scenario::new()
            .write_file("first.txt", "by codex\n")
            .usage(Usage::new(500, 20)),
    );
    let inst = Instance::new(&server, "claude", "codex", "60s");
    let runbook = format!(
        "name: swap\nconcurrency: 2\ntasks:\n  - id: first\n    role: developer\n    prompt: \"write first.txt\"\n    checks: [\"test -s first.txt\"]\n  - id: wait-for-reset\n    depends_on: [first]\n    workspace: none\n    command: \"while [ $(date +%s) -le {reset} ]; do sleep 0.2; done\"\n  - id: second\n    depends_on: [wait-for-reset]\n    role: developer\n    prompt: \"write second.txt\"\n    checks: [\"test -s second.txt\"]\n"
    );
    let (out, status) = inst.run(&runbook);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.logs(&status)
    );
    let first = task(&status, "first")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    let run = status["id"].as_str().unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        ["rate_limited", "quota_exhausted"].contains(&first[0]["outcome"].as_str().unwrap()),
        "{first:?}"
    );
    assert_eq!(first[1]["outcome"], "passed");
    let attempts = inst.events(run);
    let profile_of = |task: &str, n: u64| {
        attempts
            .iter()
            .find(|e| e["kind"] == "attempt.started" && e["task"] == task && e["attempt"] == n)
            .map(|e| e["data"]["agent"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(profile_of("first", 1), "claude-dev");
    assert_eq!(
        profile_of("first", 2),
        "codex-dev",
        "moved at once to another vendor's usable profile"
    );
    // The claude account cooled down until exactly the announced reset.
    let cooldown = attempts
        .iter()
        .find(|e| e["kind"] == "account.cooldown")
        .expect("a cooldown event");
    assert_eq!(cooldown["data"]["account"], "anthropic");
    let until = cooldown["data"]["until"].as_str().unwrap();
    let until_s = chrono_secs(until);
    assert_eq!(until_s, reset, "cooldown until {until}, reset {reset}");
    assert!(
        attempts
            .iter()
            .any(|e| e["kind"] == "attempt.swapped" && e["task"] == "first")
    );
    // After the reset, claude (priority 10) is chosen again.
    assert_eq!(profile_of("second", 1), "claude-dev");
    assert_eq!(
        git(
            &inst.repo,
            &[
                "show",
                &format!(
                    "{}:first.txt",
                    support::fleet_branch(&inst.repo, "runs", run)
                )
            ]
        ),
        "by codex\n"
    );
    assert_eq!(
        git(
            &inst.repo,
            &[
                "show",
                &format!(
                    "{}:second.txt",
                    support::fleet_branch(&inst.repo, "runs", run)
                )
            ]
        ),
        "by claude\n"
    );
    // The decision and its reason are in the task log.
    let log =
        std::fs::read_to_string(PathBuf::from(status["logs"].as_str().unwrap()).join("first.log"))
            .unwrap();
    assert!(
        log.contains("fleet chose codex-dev") && log.contains("another vendor"),
        "{log}"
    );
    // `fleet budget` shows the account's state and spend.
    let budget: Value = serde_json::from_slice(&inst.fleet(&["budget", "--json"]).stdout).unwrap();
    let anthropic = budget["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "anthropic")
        .unwrap();
    assert!(anthropic["spent_usd"].as_f64().unwrap() > 0.0, "{budget}");
    assert!(
        budget["profiles"]["codex-dev"]["attempts"].as_u64() == Some(1),
        "{budget}"
    );
    assert!(
        budget["roles"]["developer"]["attempts"].as_u64() == Some(3),
        "{budget}"
    );
}

/// `2026-11-21T07:00:12.000Z` as Unix seconds.
fn chrono_secs(at: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", at, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_failing_check_is_fixed_on_the_next_attempt_with_its_output_in_the_prompt() {
    let server = ModelServer::start();
    // The second attempt continues the first one's claude session.
    server.add_scenario("claude", fixed_on_the_second_attempt(Usage::new(300, 10)));
    server.add_scenario("codex", Scenario::new().usage(Usage::new(1, 1)));
    let inst = Instance::new(&server, "claude", "codex", "60s");
    let runbook = "name: fix\ntasks:\n  - id: fixme\n    agent: claude-dev\n    prompt: \"make out.txt say good\"\n    checks: [\"grep -qx good out.txt || { echo MARKER-expected-good-found-$(cat out.txt); exit 3; }\"]\n";
    let (out, status) = inst.run(runbook);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.logs(&status)
    );
    let attempts = task(&status, "fixme")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "checks_failed");
    assert_eq!(attempts[1]["outcome"], "passed");
    // The second attempt's prompt carried the failing command, its exit code and its output.
    let requests = server.requests("claude");
    let second = requests
        .iter()
        .filter(|r| r.contains("MARKER-expected-good-found-bad"))
        .collect::<Vec<_>>();
    assert!(!second.is_empty(), "no request carried the check's output");
    assert!(
        second[0].contains("exited with 3"),
        "the exit code is in the prompt"
    );
    assert!(
        second[0].contains("out.txt"),
        "the changes so far are in the prompt"
    );
    assert!(
        !requests[0].contains("MARKER-expected"),
        "the first prompt had no feedback"
    );
    // Same profile, the agent ended normally, only the check failed: the second attempt resumed
    // the first one's session — its first request already holds the first attempt's tool call.
    let run = status["id"].as_str().unwrap();
    let events = inst.events(run);
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "attempt.started" && e["task"] == "fixme")
        .collect();
    let session = events
        .iter()
        .find(|e| e["kind"] == "attempt.session" && e["attempt"] == 1)
        .map(|e| e["data"]["session_id"].clone())
        .expect("claude reported its session");
    assert_eq!(started[0]["data"].get("resume_session"), None);
    assert_eq!(started[1]["data"]["resume_session"], session, "{started:?}");
    assert!(
        second[0].contains("FLEET_ATTEMPT") && second[0].contains("DONE"),
        "the resumed conversation carries the first attempt"
    );
    assert!(
        inst.logs(&status).contains("continuing the session"),
        "the task log says so"
    );
    // Both attempts made the same model calls: the resumed session's usage is this run's only.
    let tokens = finished_tokens(&events);
    assert!(tokens[0] > 0 && tokens[0] == tokens[1], "{tokens:?}");
    // Homes hold credentials: none is left once the run is over.
    assert!(
        !inst.home.join(".fleet/homes").join(run).exists(),
        "agent homes removed at the end of the run"
    );
}

#[test]
fn a_stalling_agent_is_killed_at_its_stall_timeout_and_another_finishes() {
    let server = ModelServer::start();
    server.add_scenario(
        "claude",
        Scenario::new().fault(Fault::HangBeforeHeaders { times: None }),
    );
    server.add_scenario(
        "codex",
        Scenario::new()
            .write_file("done.txt", "done\n")
            .usage(Usage::new(100, 5)),
    );
    let inst = Instance::new(&server, "claude", "codex", "6s");
    let runbook = "name: stall\ntasks:\n  - id: work\n    role: developer\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n";
    let started = Instant::now();
    let (out, status) = inst.run(runbook);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.logs(&status)
    );
    let attempts = task(&status, "work")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts[0]["outcome"], "stalled", "{attempts:?}");
    assert_eq!(attempts[1]["outcome"], "passed");
    let took = |a: &Value| {
        chrono_secs(a["finished_at"].as_str().unwrap())
            - chrono_secs(a["started_at"].as_str().unwrap())
    };
    assert!(
        took(&attempts[0]) <= 6 + 5 + 2,
        "stalled attempt lasted {} s",
        took(&attempts[0])
    );
    assert!(started.elapsed() < Duration::from_secs(90));
    let run = status["id"].as_str().unwrap();
    let events = inst.events(run);
    assert!(events.iter().any(|e| e["kind"] == "attempt.stalled"));
    let swapped = events
        .iter()
        .find(|e| e["kind"] == "attempt.swapped")
        .expect("a swap event");
    assert_eq!(
        (
            swapped["data"]["from"].as_str(),
            swapped["data"]["to"].as_str()
        ),
        (Some("claude-dev"), Some("codex-dev"))
    );
}

#[test]
fn codex_continues_its_thread_after_failed_checks_and_counts_only_the_new_turn() {
    let server = ModelServer::start();
    server.add_scenario("claude", Scenario::new().usage(Usage::new(1, 1)));
    server.add_scenario("codex", fixed_on_the_second_attempt(Usage::new(1000, 10)));
    let inst = Instance::new(&server, "claude", "codex", "60s");
    let runbook = "name: fixcodex\ntasks:\n  - id: fixme\n    agent: codex-dev\n    prompt: \"make out.txt say good\"\n    checks: [\"grep -qx good out.txt\"]\n";
    let (out, status) = inst.run(runbook);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.logs(&status)
    );
    let attempts = task(&status, "fixme")["attempt_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "checks_failed");
    assert_eq!(attempts[1]["outcome"], "passed");
    let run = status["id"].as_str().unwrap();
    let events = inst.events(run);
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "attempt.started")
        .collect();
    let session = events
        .iter()
        .find(|e| e["kind"] == "attempt.session" && e["attempt"] == 1)
        .map(|e| e["data"]["session_id"].clone())
        .expect("codex reported its thread");
    assert_eq!(started[1]["data"]["resume_session"], session, "{started:?}");
    let requests = server.requests("codex");
    assert!(
        requests
            .iter()
            .any(|r| r.contains("FLEET_ATTEMPT") && r.contains("DONE") && r.contains("-ge 2")),
        "a request of the second attempt carries the first attempt's thread"
    );
    // Each attempt made the same two model calls (1000 input + 10 output tokens each): the
    // resumed thread's usage must not count the first attempt's calls again.
    let tokens = finished_tokens(&events);
    assert_eq!(tokens, vec![2020, 2020], "{events:?}");
}
