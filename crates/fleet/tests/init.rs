//! `fleet init` on a machine with the pinned agent CLIs: it finds them (here only in
//! `$FLEET_AGENT_BIN`) and which keys are set, by name only, and writes profiles that a
//! `fleet task add` uses at once — run here against the scripted model server.

mod support;
use support::git;

use fleet_testkit::{ModelServer, Scenario};
use serde_json::Value;
use std::process::Command;

const CLAUDE_KEY: &str = "sk-ant-oat01-init-test-secret-0001";
const OPENAI_KEY: &str = "sk-init-test-secret-0002";

/// One script for every role: the stage runs' task ids say which role an agent plays (codex
/// does not pass Fleet's variables to its shell; it plays only the reviewer here).
fn every_role() -> String {
    let plan = serde_json::json!({"summary": "one file", "phases": [{"id": "p", "title": "p", "tasks": [
        {"id": "hello", "title": "Add hello.txt", "role": "developer", "description": "hello.txt says hello",
         "depends_on": [], "acceptance": {"commands": ["grep -q hello hello.txt"], "statements": ["hello.txt says hello"]}}]}]});
    let approve = serde_json::json!({"verdict": "approve", "summary": "hello.txt says hello"});
    format!(
        "mkdir -p .fleet-out; case \"${{FLEET_TASK:-review}}\" in \
         researcher) echo '# project: README only' > .fleet-out/context.md ;; \
         planner) printf '%s' '{plan}' > .fleet-out/plan.json ;; \
         review) printf '%s' '{approve}' > .fleet-out/review.json ;; \
         *) echo hello > hello.txt ;; esac"
    )
}

#[test]
fn init_finds_the_installed_clis_and_writes_profiles_a_request_uses_at_once() {
    let bin = fleet_testkit::agent_bin_dir();
    let server = ModelServer::start();
    server.add_scenario("all", Scenario::new().shell(every_role()).text("DONE"));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("shop");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# shop\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let fleet = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&repo)
            .args(args)
            .env_clear()
            .env("HOME", tmp.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("FLEET_AGENT_BIN", &bin)
            .env("FLEET_HOME", &home)
            .env("CLAUDE_CODE_OAUTH_TOKEN", CLAUDE_KEY)
            .env("OPENAI_API_KEY", OPENAI_KEY)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "fleet {args:?}: {text}");
        text
    };
    let said = fleet(&[
        "init",
        home.to_str().unwrap(),
        "--base-url",
        &server.base_url("all"),
    ]);
    let yaml = std::fs::read_to_string(home.join("fleet.yaml")).unwrap();
    for cli in ["claude", "codex", "gemini", "qwen", "opencode"] {
        assert!(
            said.contains(&bin.join(cli).display().to_string()),
            "{said}"
        );
        assert!(
            yaml.contains(&format!("  {cli}-dev:\n    cli: {cli} ")),
            "{yaml}"
        );
    }
    // Keys by name, never by value.
    assert!(
        said.contains("CLAUDE_CODE_OAUTH_TOKEN") && said.contains("OPENAI_API_KEY"),
        "{said}"
    );
    assert!(
        said.contains("GEMINI_API_KEY"),
        "an unset key is named as missing: {said}"
    );
    for secret in [CLAUDE_KEY, OPENAI_KEY] {
        assert!(!said.contains(secret) && !yaml.contains(secret));
    }
    assert!(
        said.contains("fleet project add") && said.contains("fleet task add"),
        "{said}"
    );

    fleet(&["project", "add", "shop", "--repo", repo.to_str().unwrap()]);
    let out = fleet(&["task", "add", "Add a hello file", "--project", "shop"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show: Value = serde_json::from_str(&fleet(&["task", "show", "e1", "--json"])).unwrap();
    let mut agents: Vec<String> = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["attempts"].as_array().unwrap().iter())
        .filter_map(|a| a["agent"].as_str().map(str::to_string))
        .filter(|a| a != "command")
        .collect();
    agents.sort();
    agents.dedup();
    // The lead CLI researches, plans and develops; another vendor's CLI reviews.
    assert_eq!(agents, ["claude-dev", "codex-dev"], "{show}");
}
