//! The hard limits of money and tokens per epic (`projects: {P: {budget_usd, budget_tokens}}`)
//! with agents that really report what they spent: each plays the `claude` CLI (a stand-in on
//! the profile's PATH that does the scripted role's work, then prints claude's stream-json
//! `result` with `total_cost_usd` and `usage`), so the cost comes through Fleet's real claude
//! parser into the store. The epic ends `failed` with the limit named only once the limit is
//! really passed (research, plan and implementation ran; the review did not), and the same
//! workload under a generous budget delivers.

mod support;
use support::scripted::{ALL, Inst};

/// `claude` as far as Fleet can tell: the prompt on stdin, stream-json on stdout.
const CLAUDE: &str = r#"#!/bin/sh
set -e
prompt="$DIR/stdin-$$.txt"
cat > "$prompt"
FLEET_PROMPT_FILE="$prompt" sh "$DIR/agent.sh" "$ROLE" > /dev/null
rm -f "$prompt"
printf '{"type":"system","subtype":"init","session_id":"s-%s","model":"claude-sonnet-4-5","tools":[]}\n' $$
printf '{"type":"result","subtype":"success","is_error":false,"result":"DONE","session_id":"s-%s","total_cost_usd":0.4,"usage":{"input_tokens":1000,"output_tokens":100}}\n' $$
"#;

/// An instance whose every role is played by the stand-in at $0.40 and 1100 tokens a run.
fn instance(limits: &str) -> Inst {
    let inst = Inst::new(&[], "");
    let bin = inst.path("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, CLAUDE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut yaml = String::new();
    for role in ALL {
        yaml.push_str(&format!(
            "  {role}-claude:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [{role}]\n    env: {{ PATH: \"{}:/usr/bin:/bin\", ROLE: {role}, DIR: \"{}\" }}\n",
            bin.display(),
            inst.tmp.path().display()
        ));
    }
    yaml.push_str(&format!("projects:\n  shop:\n{limits}"));
    inst.configure(&[], &yaml);
    inst.add_shop();
    inst
}

fn failed_reason(inst: &Inst) -> String {
    let failed = inst.events_of("e1", "task.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    failed[0]["reason"].as_str().unwrap().to_string()
}

#[test]
fn the_money_budget_fails_the_epic_once_really_spent_and_a_generous_one_delivers() {
    let inst = instance("    budget_usd: 1\n");
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 1);
    assert!(out.contains("epic e1 failed"), "{out}");
    assert_eq!(inst.show("e1")["state"], "failed");
    // Research and plan ($0.80) stayed under the limit; the implementation passed it.
    let reason = failed_reason(&inst);
    assert!(
        reason.contains("the budget per epic is spent: $1.2000 used of $1.0000")
            && reason.contains("budget_usd"),
        "{reason}"
    );
    assert!(inst.path("prompts/developer.txt").exists());
    assert!(
        !inst.path("prompts/reviewer.txt").exists(),
        "it stopped before the review"
    );

    let inst = instance("    budget_usd: 10\n");
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert!(inst.events_of("e1", "task.failed").is_empty());
}

#[test]
fn the_token_budget_fails_the_epic_with_its_reason() {
    let inst = instance("    budget_tokens: 3000\n");
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 1);
    assert!(out.contains("epic e1 failed"), "{out}");
    let reason = failed_reason(&inst);
    assert!(
        reason.contains("3300 tokens used of 3000") && reason.contains("budget_tokens"),
        "{reason}"
    );
    assert!(!inst.path("prompts/reviewer.txt").exists());
}
