//! The ACP client against transcripts recorded from the real agents over ACP
//! (`fixtures/acp/<cli>-<case>.transcript`, recorded by `FLEET_ACP_RECORD=dir cargo test -p
//! fleet-engine --test real_acp`), and fuzzed: no panic on any bytes, always an outcome.

use fleet_agents::acp::{self, AcpClient, Policy, SessionConfig};
use fleet_agents::{AgentEvent, OutcomeClass, ProcessEnd};
use proptest::prelude::*;
use std::path::Path;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/acp")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn recorded_edits_replay_into_tool_calls_a_session_and_success() {
    for cli in ["gemini", "qwen", "opencode", "claude", "codex"] {
        let r = acp::replay(
            cli,
            &fixture(&format!("{cli}-edit.transcript")),
            &ProcessEnd::default(),
        );
        assert_eq!(
            r.outcome.class,
            OutcomeClass::Succeeded,
            "{cli}: {:?}",
            r.outcome
        );
        assert!(r.session_id.is_some(), "{cli}: no session");
        let calls = r
            .events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ToolCall { .. }))
            .count();
        let done = r
            .events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ToolResult { ok: true, .. }))
            .count();
        assert!(
            calls >= 2 && done >= 2,
            "{cli}: {calls} calls, {done} ok results: {:?}",
            r.events
        );
        assert_eq!(
            r.final_text.as_deref().map(str::trim),
            Some("DONE"),
            "{cli}"
        );
    }
}

#[test]
fn recorded_usage_is_read_where_the_agent_sends_it() {
    // gemini: `_meta.quota.token_count` of the prompt response; qwen: `_meta.usage` of an
    // update per model call; opencode: the prompt response's `usage` and a cost in
    // `usage_update`. claude-code-acp 0.16.2 and codex-acp 0.16.0 send no token counts
    // (codex only the context window's fill: `used`/`size`).
    let usage = |cli: &str| {
        acp::replay(
            cli,
            &fixture(&format!("{cli}-edit.transcript")),
            &ProcessEnd::default(),
        )
    };
    let g = usage("gemini");
    assert_eq!((g.usage.input_tokens, g.usage.output_tokens), (300, 60));
    let q = usage("qwen");
    assert_eq!(
        (q.usage.input_tokens, q.usage.output_tokens),
        (300, 60),
        "three model calls of 100/20"
    );
    let o = usage("opencode");
    assert_eq!((o.usage.input_tokens, o.usage.output_tokens), (100, 20));
    assert_eq!(o.cost_usd, Some(0.0018));
    for cli in ["claude", "codex"] {
        assert!(
            usage(cli).usage.is_zero(),
            "{cli} started reporting usage over ACP: read it"
        );
    }
}

#[test]
fn recorded_failures_replay_into_their_classes() {
    let cases = [
        (
            "gemini-429",
            &[OutcomeClass::RateLimited, OutcomeClass::QuotaExhausted][..],
        ),
        ("gemini-deny", &[OutcomeClass::Succeeded][..]),
    ];
    for (name, expected) in cases {
        let end = ProcessEnd {
            signal: Some(15),
            ..ProcessEnd::default()
        };
        let r = acp::replay("gemini", &fixture(&format!("{name}.transcript")), &end);
        assert!(
            expected.contains(&r.outcome.class),
            "{name}: {:?}",
            r.outcome
        );
    }
    let r = acp::replay(
        "gemini",
        &fixture("gemini-deny.transcript"),
        &ProcessEnd::default(),
    );
    assert!(r.events.iter().any(|e| matches!(e, AgentEvent::ToolResult { ok: false, output, .. } if output.contains("git push"))));
}

const SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true}}}"#,
    r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"S","modes":{"currentModeId":"read-only","availableModes":[{"id":"auto"}]}}}"#,
    r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn","usage":{"inputTokens":18446744073709551615}}}"#,
    r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"Authentication required"}}"#,
    r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"text":"hi"}}}}"#,
    r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"tool_call","toolCallId":"t","title":"x","status":"completed"}}}"#,
    r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"tool_call_update","toolCallId":"t","status":"failed","content":[{"type":"diff"}]}}}"#,
    r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"plan","entries":[{"content":"a"}]}}}"#,
    r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"usage_update","cost":{"amount":1e308}}}}"#,
    r#"{"jsonrpc":"2.0","id":"p","method":"session/request_permission","params":{"toolCall":{"kind":"edit","locations":[{"path":"../../x"}]},"options":[]}}"#,
    r#"{"jsonrpc":"2.0","id":9,"method":"fs/read_text_file","params":{"path":7}}"#,
    r#"{"jsonrpc":"2.0","id":null,"method":"terminal/create"}"#,
    "Attempt 2 failed with status 429. Retrying with backoff...",
];

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (0..SEEDS.len(), 0usize..300).prop_map(|(i, cut)| SEEDS[i].chars().take(cut).collect()),
        (0..SEEDS.len()).prop_map(|i| SEEDS[i].to_string()),
        "\\{[a-z\":,0-9 \\[\\]{}]{0,60}\\}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_acp_reader_never_panics_and_always_classifies(
        out in prop::collection::vec(line(), 0..30),
        err in prop::collection::vec(line(), 0..5),
        stalled in any::<bool>(),
        signal in prop::option::of(1i32..32),
    ) {
        let mut c = AcpClient::new(SessionConfig {
            cwd: "/w".into(),
            prompt: "p".into(),
            mcp: None,
            resume_session: Some("old".into()),
            policy: Policy::for_worktree(Path::new("/w")),
            fs: true,
            mode: None,
        });
        c.start();
        for (i, l) in out.iter().enumerate() {
            let _ = c.stdout_line(l);
            if i == 10 {
                let _ = c.cancel();
            }
        }
        for l in &err {
            let _ = c.stderr_line(l);
        }
        let _ = c.verdict();
        let _ = c.flush();
        let end = ProcessEnd { stalled, signal, ..ProcessEnd::default() };
        let o = c.finish(&end);
        if stalled {
            prop_assert!(matches!(o.class, OutcomeClass::Stalled | OutcomeClass::RateLimited | OutcomeClass::AuthFailed | OutcomeClass::QuotaExhausted | OutcomeClass::Overloaded | OutcomeClass::UpstreamError));
        }
    }
}
