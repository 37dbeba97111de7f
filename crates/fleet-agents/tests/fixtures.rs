//! Every parser against recorded transcripts (`fixtures/<cli>/<case>.stdout`, with `.stderr`
//! and the recording's `.json`: exit code, whether the recorder's timeout killed it). The five
//! real-binary CLIs' files are recordings of the pinned versions against fleet-testkit's
//! scripted model server; cursor, amp, kiro, aider and goose are hand-written from their
//! documented formats (see `fixtures/README-handwritten.md`).

use fleet_agents::{AgentEvent, OutcomeClass, ProcessEnd};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

struct Case {
    cli: &'static str,
    case: &'static str,
    /// Exit status for hand-written cases (recorded ones read theirs from `<case>.json`).
    exit: i32,
    expect: OutcomeClass,
}

const fn c(cli: &'static str, case: &'static str, exit: i32, expect: OutcomeClass) -> Case {
    Case {
        cli,
        case,
        exit,
        expect,
    }
}

use OutcomeClass::*;

const CASES: &[Case] = &[
    c("claude", "ok", 0, Succeeded),
    c("claude", "429", 0, RateLimited),
    c("claude", "429-oauth", 0, QuotaExhausted),
    c("claude", "401", 0, AuthFailed),
    c("claude", "500", 0, UpstreamError),
    c("claude", "529", 0, Overloaded),
    c("claude", "hang", 0, UpstreamError),
    c("claude", "hangmid", 0, TimedOut),
    c("codex", "ok", 0, Succeeded),
    c("codex", "429", 0, RateLimited),
    c("codex", "429-usage", 0, QuotaExhausted),
    c("codex", "401", 0, AuthFailed),
    c("codex", "500", 0, UpstreamError),
    c("codex", "529", 0, Overloaded),
    c("codex", "hang", 0, TimedOut),
    c("codex", "hangmid", 0, UpstreamError),
    c("gemini", "ok", 0, Succeeded),
    c("gemini", "429", 0, QuotaExhausted),
    c("gemini", "401", 0, AuthFailed),
    c("gemini", "500", 0, UpstreamError),
    c("gemini", "529", 0, Overloaded),
    c("qwen", "ok", 0, Succeeded),
    c("qwen", "401", 0, AuthFailed),
    c("qwen", "hang", 0, UpstreamError),
    c("qwen", "429-long", 0, RateLimited),
    c("qwen", "500-long", 0, UpstreamError),
    // qwen prints nothing while its outer loop retries 429/5xx: killed by a timeout, that is
    // all there is to know.
    c("qwen", "429", 0, TimedOut),
    c("qwen", "500", 0, TimedOut),
    c("opencode", "ok", 0, Succeeded),
    c("opencode", "401", 0, AuthFailed),
    c("opencode", "429", 0, RateLimited),
    c("opencode", "500", 0, UpstreamError),
    c("opencode", "529", 0, Overloaded),
    c("cursor", "ok", 0, Succeeded),
    c("cursor", "auth", 1, AuthFailed),
    c("cursor", "ratelimit", 1, QuotaExhausted),
    c("amp", "ok", 0, Succeeded),
    c("amp", "auth", 1, AuthFailed),
    c("kiro", "ok", 0, Succeeded),
    c("kiro", "auth", 1, AuthFailed),
    c("aider", "ok", 0, Succeeded),
    c("aider", "ratelimit", 1, RateLimited),
    c("goose", "ok", 0, Succeeded),
    c("goose", "overloaded", 1, Overloaded),
];

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// How the recorded process ended: its exit code, or the recorder's timeout killing it.
fn end_of(case: &Case) -> ProcessEnd {
    let meta = dir().join(case.cli).join(format!("{}.json", case.case));
    let mut end = match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["killed_by_timeout"] == true {
                ProcessEnd {
                    signal: Some(15),
                    timed_out: true,
                    ..ProcessEnd::default()
                }
            } else {
                ProcessEnd::from_exit_status(v["exit_code"].as_i64().unwrap() as i32)
            }
        }
        Err(_) => ProcessEnd::from_exit_status(case.exit),
    };
    end.ended_at = Some(chrono_now());
    end
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn every_fixture_classifies_as_expected() {
    let mut wrong = Vec::new();
    for case in CASES {
        let base = dir().join(case.cli).join(case.case);
        let stdout_path = base.with_extension("stdout");
        assert!(
            stdout_path.exists(),
            "missing fixture {}",
            stdout_path.display()
        );
        let adapter = fleet_agents::adapter(case.cli).unwrap();
        let r = fleet_agents::replay(
            &*adapter,
            &read(&stdout_path),
            &read(&base.with_extension("stderr")),
            &end_of(case),
        );
        if r.outcome.class != case.expect {
            wrong.push(format!(
                "{}/{}: {:?}, expected {:?} ({:?})",
                case.cli, case.case, r.outcome.class, case.expect, r.outcome.detail
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_cli_has_fixtures() {
    for name in fleet_agents::names() {
        if name == "command" {
            continue;
        }
        assert!(
            CASES.iter().any(|c| c.cli == name && c.expect == Succeeded),
            "{name} has no success fixture"
        );
        assert!(
            CASES.iter().any(|c| c.cli == name && c.expect != Succeeded),
            "{name} has no failure fixture"
        );
    }
}

fn replay(cli: &str, case: &str) -> fleet_agents::Replay {
    let c = CASES
        .iter()
        .find(|c| c.cli == cli && c.case == case)
        .unwrap();
    let base = dir().join(cli).join(case);
    fleet_agents::replay(
        &*fleet_agents::adapter(cli).unwrap(),
        &read(&base.with_extension("stdout")),
        &read(&base.with_extension("stderr")),
        &end_of(c),
    )
}

#[test]
fn successful_runs_report_their_session_tools_and_spend() {
    for cli in [
        "claude", "codex", "gemini", "qwen", "opencode", "cursor", "amp",
    ] {
        let r = replay(cli, "ok");
        assert!(r.session_id.is_some(), "{cli}: no session id");
        assert!(
            r.events
                .iter()
                .any(|e| matches!(e, AgentEvent::ToolCall { .. })),
            "{cli}: no tool call"
        );
        if !["cursor"].contains(&cli) {
            assert!(r.usage.total() > 0, "{cli}: no usage");
        }
    }
    assert!(
        replay("claude", "ok").cost_usd.is_some(),
        "claude reports its cost"
    );
    assert!(
        replay("opencode", "ok").cost_usd.is_some() || replay("opencode", "ok").usage.total() > 0
    );
}

#[test]
fn rate_limits_carry_their_reset_time() {
    let now = chrono_now();
    // From claude's rate_limit_event (subscriber auth) — an exact epoch.
    let r = replay("claude", "429-oauth");
    assert!(
        r.outcome.resets_at.is_some_and(|t| t > now - 86_400 * 365),
        "{:?}",
        r.outcome
    );
    // From opencode's forwarded response headers.
    assert!(replay("opencode", "429").outcome.resets_at.is_some());
    // From codex's words ("Try again at 8:14 AM"): the next such time after the end.
    let codex = replay("codex", "429-usage")
        .outcome
        .resets_at
        .expect("codex reset");
    assert!(codex > now && codex <= now + 86_400, "{codex} vs {now}");
}
