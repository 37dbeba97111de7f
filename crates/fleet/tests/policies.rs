//! Always-on policies (`policies:` in fleet.yaml, issue 21), enforced on real runs: an
//! `after_edit` lint that fails reaches the agent and its change is reverted, a change touching a
//! protected path never lands, a protected branch is neither written by Fleet nor left moved by
//! an agent — with a `command:` agent, and with the real claude through its `PostToolUse` hook
//! against the scripted model server.

mod support;
use support::git;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Instance {
    tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    prompts: PathBuf,
}

impl Instance {
    /// A repository, and an instance whose profile `dev` is `sh agent.sh` (the script given),
    /// with `policies` as the fleet.yaml's `policies:` section.
    fn new(agent: &str, policies: &str) -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("repo");
        let prompts = tmp.path().join("prompts");
        for d in [&home, &repo, &prompts] {
            std::fs::create_dir_all(d).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "hello\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        let script = tmp.path().join("agent.sh");
        std::fs::write(&script, agent).unwrap();
        std::fs::write(
            home.join("fleet.yaml"),
            format!(
                "agents:\n  dev:\n    cli: command\n    command: \"sh {}\"\n    roles: [developer]\n    env: {{ PROMPTS: \"{}\" }}\npolicies:\n{policies}",
                script.display(),
                prompts.display()
            ),
        )
        .unwrap();
        Instance {
            tmp,
            home,
            repo,
            prompts,
        }
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env("ANTHROPIC_API_KEY", "sk-ant-test-secret-1234")
            .env("OPENAI_API_KEY", "sk-test-secret-1234")
            .env("GEMINI_API_KEY", "gemini-test-secret-1234")
            .output()
            .unwrap()
    }

    /// `fleet run` of one agent task; its output and the run's id.
    fn run_task(&self, extra: &str) -> (Output, String) {
        std::fs::write(
            self.repo.join("runbook.yaml"),
            format!(
                "name: pol\ntasks:\n  - id: work\n    agent: dev\n    prompt: \"Write out.txt\"\n    checks: [\"test -s out.txt\"]\n{extra}"
            ),
        )
        .unwrap();
        let out = self.fleet(&["run", "runbook.yaml"]);
        let status = self.fleet(&["status", "--json"]);
        let status: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        let run = status["id"].as_str().unwrap_or_default().to_string();
        (out, run)
    }

    fn events(&self, run: &str) -> Vec<Value> {
        std::fs::read_to_string(self.home.join(".fleet/runs").join(run).join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log(&self, run: &str) -> String {
        std::fs::read_to_string(
            self.home
                .join(".fleet/runs")
                .join(run)
                .join("logs/work.log"),
        )
        .unwrap_or_default()
    }

    fn prompt(&self, n: u32) -> String {
        std::fs::read_to_string(self.prompts.join(format!("prompt-{n}.md"))).unwrap_or_default()
    }
}

fn policy_events<'e>(events: &'e [Value], kind: &str) -> Vec<&'e Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn show(repo: &Path, rev: &str) -> Option<String> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["show", rev])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent's first attempt writes a line the lint refuses; the lint's failure and output are
/// in the second attempt's prompt, which starts from a worktree where the change was undone.
#[test]
fn a_failing_after_edit_lint_reaches_the_next_attempt_and_the_change_is_reverted() {
    let agent = r#"
cp "$FLEET_PROMPT_FILE" "$PROMPTS/prompt-$FLEET_ATTEMPT.md"
if [ -e out.txt ]; then echo present > "$PROMPTS/start-$FLEET_ATTEMPT"; else echo absent > "$PROMPTS/start-$FLEET_ATTEMPT"; fi
case "$FLEET_ATTEMPT" in
1) printf 'TODO: fix later\n' > out.txt ;;
*) printf 'done\n' > out.txt ;;
esac
"#;
    let inst = Instance::new(
        agent,
        "  - name: no-todo\n    after_edit: \"! grep -n TODO out.txt\"\n    revert: true\n",
    );
    let (out, run) = inst.run_task("");
    let log = inst.log(&run);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = inst.events(&run);
    let failed = policy_events(&events, "policy.failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["data"]["rule"], "no-todo");
    assert_eq!(failed[0]["attempt"], 1);
    let reverted = policy_events(&events, "policy.reverted");
    assert_eq!(reverted.len(), 1, "{events:#?}");
    assert_eq!(reverted[0]["data"]["rule"], "no-todo");
    // The failure reached the agent: the rule, the command and its output (grep's match).
    let second = inst.prompt(2);
    assert!(second.contains("policy `no-todo`"), "{second}");
    assert!(second.contains("1:TODO: fix later"), "{second}");
    // ... and its change was undone before the second attempt started.
    let start = std::fs::read_to_string(inst.prompts.join("start-2")).unwrap();
    assert_eq!(start.trim(), "absent");
    let branch = support::fleet_branch(&inst.repo, "runs", &run);
    assert_eq!(
        show(&inst.repo, &format!("{branch}:out.txt")).as_deref(),
        Some("done\n")
    );
}

/// Without `revert`, the failure still reaches the agent but the change stays for it to fix.
#[test]
fn without_revert_the_change_stays_for_the_next_attempt() {
    let agent = r#"
cp "$FLEET_PROMPT_FILE" "$PROMPTS/prompt-$FLEET_ATTEMPT.md"
if [ -e out.txt ]; then echo present > "$PROMPTS/start-$FLEET_ATTEMPT"; else echo absent > "$PROMPTS/start-$FLEET_ATTEMPT"; fi
case "$FLEET_ATTEMPT" in
1) printf 'TODO\n' > out.txt ;;
*) printf 'done\n' > out.txt ;;
esac
"#;
    let inst = Instance::new(
        agent,
        "  - { name: no-todo, after_edit: \"! grep -q TODO out.txt\" }\n",
    );
    let (out, run) = inst.run_task("");
    assert_eq!(out.status.code(), Some(0), "{}", inst.log(&run));
    let events = inst.events(&run);
    assert_eq!(policy_events(&events, "policy.failed").len(), 1);
    assert!(policy_events(&events, "policy.reverted").is_empty());
    let start = std::fs::read_to_string(inst.prompts.join("start-2")).unwrap();
    assert_eq!(start.trim(), "present");
}

/// An agent that keeps changing a protected path never lands anything: every attempt fails
/// with the rule and the path, the path is put back, and the integration branch stays at the
/// base.
#[test]
fn an_attempt_touching_a_protected_path_does_not_land() {
    let agent = r#"
cp "$FLEET_PROMPT_FILE" "$PROMPTS/prompt-$FLEET_ATTEMPT.md"
mkdir -p migrations
printf 'DROP TABLE users;\n' > migrations/001.sql
printf 'hello, edited\n' >> README.md
printf 'done\n' > out.txt
"#;
    let inst = Instance::new(
        agent,
        "  - name: keep-out\n    protected_paths: [migrations/, /README.md]\n",
    );
    let (out, run) = inst.run_task("    max_attempts: 2\n");
    let log = inst.log(&run);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let events = inst.events(&run);
    let protected = policy_events(&events, "policy.protected");
    // Two paths in each of the two attempts.
    assert_eq!(protected.len(), 4, "{events:#?}");
    assert!(protected.iter().all(|e| e["data"]["rule"] == "keep-out"));
    assert!(protected.iter().any(|e| {
        e["data"]["detail"]
            .as_str()
            .unwrap()
            .contains("migrations/001.sql")
    }));
    let second = inst.prompt(2);
    assert!(
        second.contains("migrations/001.sql is protected by policy `keep-out`"),
        "{second}"
    );
    // Nothing landed: the integration branch is the base, and nothing was committed.
    let branch = support::fleet_branch(&inst.repo, "runs", &run);
    assert_eq!(
        git(&inst.repo, &["rev-parse", &branch]).trim(),
        git(&inst.repo, &["rev-parse", "main"]).trim()
    );
    assert_eq!(
        git(&inst.repo, &["log", "--all", "--format=%s"])
            .lines()
            .filter(|l| l.starts_with("fleet: task"))
            .count(),
        0
    );
}

/// Fleet refuses a run whose integration branch is protected (exit 2, before anything starts),
/// and puts back a protected branch an agent moved, failing that attempt.
#[test]
fn protected_branches_are_never_written_and_an_agent_moving_one_fails() {
    let agent = r#"
cp "$FLEET_PROMPT_FILE" "$PROMPTS/prompt-$FLEET_ATTEMPT.md"
printf 'done\n' > out.txt
if [ "$FLEET_ATTEMPT" = 1 ]; then
  git add out.txt && git -c user.name=a -c user.email=a@b commit -qm sneaky
  git update-ref refs/heads/main HEAD
  git branch release/9 HEAD
fi
"#;
    let inst = Instance::new(
        agent,
        "  - name: branches\n    protected_branches: [main, \"release/*\"]\n",
    );
    let main_before = git(&inst.repo, &["rev-parse", "main"]);
    let (out, run) = inst.run_task("");
    let log = inst.log(&run);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(git(&inst.repo, &["rev-parse", "main"]), main_before);
    assert!(
        git(&inst.repo, &["branch", "--list", "release/*"])
            .trim()
            .is_empty()
    );
    let events = inst.events(&run);
    let protected = policy_events(&events, "policy.protected");
    assert_eq!(protected.len(), 2, "{events:#?}");
    assert!(protected.iter().all(|e| e["data"]["rule"] == "branches"));
    assert!(
        inst.prompt(2)
            .contains("branch main is protected by policy `branches`")
    );

    // A run whose own integration branch is protected never starts.
    let strict = Instance::new(
        "true\n",
        "  - name: runs\n    protected_branches: [\"fleet/runs/*/*\"]\n",
    );
    let (out, _) = strict.run_task("");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("protected by policy `runs`"), "{stderr}");
    let _ = &strict.tmp;
}

/// A real CLI with hooks (claude's `PostToolUse`, gemini's `AfterTool`, qwen's
/// `PostToolUse`): its first edit breaks the lint, the hook tells it at once (the lint's
/// failure is in the model's very next request, recorded by the scripted server) and reverts
/// the file; its second edit passes, and the task lands in one attempt, without the reverted
/// file.
fn hears_a_failing_lint_through_its_hook(cli: &str) {
    use fleet_testkit::{ModelServer, Scenario};
    let server = ModelServer::start();
    server.add_scenario(
        cli,
        Scenario::new()
            .write_file("bad.txt", "TODO: later\n")
            .write_file("out.txt", "done\n")
            .text("DONE"),
    );
    let inst = Instance::new(
        "true\n",
        "  - name: no-todo\n    after_edit: \"! grep -rn TODO --include=*.txt .\"\n    revert: true\n",
    );
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        fleet_testkit::agent_bin_dir().display()
    );
    let (model, account, key) = match cli {
        "claude" => ("claude-sonnet-4-5", "anthropic", "ANTHROPIC_API_KEY"),
        "gemini" => ("gemini-2.5-pro", "google", "GEMINI_API_KEY"),
        _ => ("gpt-5.1-codex", "openai", "OPENAI_API_KEY"),
    };
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    let (_, policies) = yaml.split_once("policies:\n").unwrap();
    std::fs::write(
        inst.home.join("fleet.yaml"),
        format!(
            "agents:\n  dev:\n    cli: {cli}\n    model: {model}\n    account: {account}\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\naccounts:\n  {account}: {{ secrets: [{key}] }}\npolicies:\n{policies}",
            server.base_url(cli)
        ),
    )
    .unwrap();
    let (out, run) = inst.run_task("    timeout: 3m\n    max_attempts: 1\n");
    let log = inst.log(&run);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{cli}: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The request after the first edit carries the hook's report: rule, command, grep's match.
    let requests = server.requests(cli);
    let told = requests
        .iter()
        .position(|r| r.contains("Fleet policy `no-todo` failed after your edit of bad.txt"))
        .unwrap_or_else(|| panic!("{cli}: no request carried the hook's report\n{log}"));
    assert!(requests[told].contains("bad.txt:1:TODO: later"), "{cli}");
    assert!(requests[told].contains("Fleet reverted bad.txt"), "{cli}");
    assert!(
        requests[..told]
            .iter()
            .all(|r| !r.contains("Fleet policy `no-todo`")),
        "{cli}"
    );
    let events = inst.events(&run);
    let failed = policy_events(&events, "policy.failed");
    assert_eq!(failed.len(), 1, "{cli}: {events:#?}");
    assert_eq!(failed[0]["data"]["rule"], "no-todo");
    assert!(
        failed[0]["data"]["detail"]
            .as_str()
            .unwrap()
            .contains("bad.txt")
    );
    assert_eq!(policy_events(&events, "policy.reverted").len(), 1, "{cli}");
    let branch = support::fleet_branch(&inst.repo, "runs", &run);
    assert_eq!(
        show(&inst.repo, &format!("{branch}:out.txt")).as_deref(),
        Some("done\n"),
        "{cli}"
    );
    assert_eq!(
        show(&inst.repo, &format!("{branch}:bad.txt")),
        None,
        "{cli}"
    );
    // The hook lives in the attempt's private settings, never in the repository.
    for dir in [".claude", ".gemini", ".qwen"] {
        assert!(
            !inst.repo.join(dir).exists(),
            "{cli}: {dir} in the repository"
        );
    }
}

#[test]
fn real_claude_hears_a_failing_lint_at_once_through_its_hook_and_the_edit_is_reverted() {
    hears_a_failing_lint_through_its_hook("claude");
}

#[test]
fn real_gemini_hears_a_failing_lint_at_once_through_its_hook_and_the_edit_is_reverted() {
    hears_a_failing_lint_through_its_hook("gemini");
}

#[test]
fn real_qwen_hears_a_failing_lint_at_once_through_its_hook_and_the_edit_is_reverted() {
    hears_a_failing_lint_through_its_hook("qwen");
}
