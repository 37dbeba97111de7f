//! Every parser must survive anything a CLI (or a broken pipe) can print: arbitrary bytes,
//! truncated lines, valid JSON of the wrong shape. No panic, and a classification always.

use fleet_agents::{OutcomeClass, ProcessEnd, Verification};
use proptest::prelude::*;

/// Real-looking lines of every format, to be truncated and mixed.
const SEEDS: &[&str] = &[
    r#"{"type":"system","subtype":"init","session_id":"s","model":"m","tools":["Write"]}"#,
    r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t","name":"Write","input":{"file_path":"/a"}}],"usage":{"input_tokens":3}}}"#,
    r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"ok"}]}]}}"#,
    r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"total_cost_usd":0.1,"modelUsage":{"m":{"inputTokens":1}}}"#,
    r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":17}}"#,
    r#"{"type":"thread.started","thread_id":"x"}"#,
    r#"{"type":"item.completed","item":{"type":"command_execution","exit_code":0}}"#,
    r#"{"type":"turn.completed","usage":{"input_tokens":5,"cached_input_tokens":9}}"#,
    r#"{"type":"turn.failed","error":{"message":"429"}}"#,
    r#"{"type":"init","session_id":"g"}"#,
    r#"{"type":"message","role":"assistant","content":"hi","delta":true}"#,
    r#"{"type":"result","status":"error","error":{"type":"TerminalQuotaError"},"stats":{"input_tokens":"x"}}"#,
    r#"{"type":"step_finish","part":{"reason":"stop","cost":-1,"tokens":{"input":1e30}}}"#,
    r#"{"type":"tool_call","subtype":"started","tool_call":{"writeToolCall":{"args":{}}}}"#,
    r#"{"type":"error","error":{"data":{"statusCode":"429"}}}"#,
    "Attempt 3 failed with status 429. Retrying with backoff...",
    "[API Error: 401 Incorrect API key provided]",
];

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (0..SEEDS.len(), 0usize..400).prop_map(|(i, cut)| SEEDS[i].chars().take(cut).collect()),
        (0..SEEDS.len()).prop_map(|i| SEEDS[i].to_string()),
        "\\{[a-z\":,0-9 \\[\\]{}]{0,60}\\}",
    ]
}

fn end() -> impl Strategy<Value = ProcessEnd> {
    (
        prop::option::of(-1i32..300),
        prop::option::of(1i32..32),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(exit_code, signal, timed_out, stalled)| ProcessEnd {
            exit_code,
            signal,
            timed_out,
            stalled,
            ended_at: Some(1_795_244_400),
            utc_offset_secs: 0,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_and_always_classify(
        out in prop::collection::vec(line(), 0..30),
        err in prop::collection::vec(line(), 0..5),
        end in end(),
    ) {
        for adapter in fleet_agents::cli::all() {
            let r = fleet_agents::replay(&*adapter, &out.join("\n"), &err.join("\n"), &end);
            if end.timed_out || end.stalled {
                prop_assert!(
                    !matches!(r.outcome.class, OutcomeClass::Succeeded | OutcomeClass::NoResult),
                    "{}: a killed attempt is never a success", adapter.name()
                );
            }
            prop_assert!(r.cost_usd.is_none_or(|c| c.is_finite()), "{}", adapter.name());
        }
    }

    /// Text with no JSON object in it and a clean exit is "no result" for every stream-json
    /// parser (never a success), and a success for plain-text CLIs.
    #[test]
    fn garbage_with_exit_0_is_no_result(out in prop::collection::vec("[^{}\\[\\]]{0,80}", 0..20)) {
        let out: Vec<String> = out.into_iter().filter(|l| {
            let l = l.to_ascii_lowercase();
            !["error", "429", "401", "quota", "limit", "overloaded", "exception", "unauthorized"].iter().any(|w| l.contains(w))
        }).collect();
        let end = ProcessEnd { exit_code: Some(0), ..ProcessEnd::default() };
        for adapter in fleet_agents::cli::all() {
            let r = fleet_agents::replay(&*adapter, &out.join("\n"), "", &end);
            let plain = ["kiro", "aider", "goose", "command"].contains(&adapter.name());
            let expected = if plain { OutcomeClass::Succeeded } else { OutcomeClass::NoResult };
            prop_assert_eq!(r.outcome.class, expected, "{}", adapter.name());
        }
    }
}

#[test]
fn real_binary_adapters_are_the_five_verified_ones() {
    let real: Vec<&str> = fleet_agents::cli::all()
        .iter()
        .filter(|a| a.verification() == Verification::RealBinary && a.name() != "command")
        .map(|a| a.name())
        .collect();
    assert_eq!(real, ["claude", "codex", "gemini", "qwen", "opencode"]);
}
