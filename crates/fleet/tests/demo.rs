//! `fleet demo` from the built binary: no key, no network beyond loopback, one sentence through
//! the real pipeline to a branch on a local bare remote, with the story the demo promises
//! recorded in the store: several profiles, a swap after a rate limit, a fix after a failing
//! check, a review rejection.

mod support;
use support::git;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// The attempts of every stage, in order.
fn attempts(show: &Value) -> Vec<Value> {
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["attempts"].as_array().unwrap().clone())
        .collect()
}

/// Whether some task has an attempt ending in `first` followed by a later attempt of the same
/// task that passed, played by a different profile when `other_profile`.
fn followed_by_pass(attempts: &[Value], first: &str, other_profile: bool) -> bool {
    attempts.iter().any(|a| {
        a["outcome"] == first
            && attempts.iter().any(|b| {
                b["task"] == a["task"]
                    && b["attempt"].as_u64() > a["attempt"].as_u64()
                    && b["outcome"] == "passed"
                    && (!other_profile || b["agent"] != a["agent"])
            })
    })
}

#[test]
fn the_demo_shows_a_request_planned_swapped_fixed_reviewed_and_delivered_to_the_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .current_dir(tmp.path())
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .env_remove("FLEET_HOME")
        // The pinned real CLIs are installed (as on CI): one of them joins the demo.
        .env("FLEET_AGENT_BIN", fleet_testkit::agent_bin_dir())
        // No key of any vendor is needed.
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(60), "the demo took {took:?}");
    // The story is told as it happens.
    for line in [
        "agent dev-fast started",
        "rate limited",
        "moved from dev-fast to dev-steady",
        "failed",
        "sent back",
        "ready for acceptance",
    ] {
        assert!(
            stderr.contains(line),
            "{line:?} not in the live story:\n{stderr}"
        );
    }

    let home = dir.join("instance");
    let show = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .current_dir(dir.join("calc"))
        .args(["task", "show", "e1", "--json"])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let show: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["state"], "awaiting_acceptance", "{show}");
    let attempts = attempts(&show);
    let mut profiles: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a["agent"].as_str())
        .collect();
    profiles.sort();
    profiles.dedup();
    profiles.retain(|p| *p != "command");
    assert!(profiles.len() >= 3, "profiles used: {profiles:?}");
    // A real agent CLI, installed on this machine, played an attempt beside Fleet's `http`
    // agent, against the same loopback model, and passed.
    let real: Vec<&Value> = attempts
        .iter()
        .filter(|a| {
            ["claude", "gemini", "opencode"].contains(&a["cli"].as_str().unwrap_or(""))
                && a["outcome"] == "passed"
        })
        .collect();
    assert!(!real.is_empty(), "no real CLI played: {attempts:#?}");
    assert!(attempts.iter().any(|a| a["cli"] == "http"), "{attempts:#?}");
    let cli = real[0]["cli"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("agent {cli} started on researcher")),
        "{stderr}"
    );
    assert!(
        followed_by_pass(&attempts, "rate_limited", true),
        "a rate-limited task moved to another profile and passed: {attempts:#?}"
    );
    assert!(
        followed_by_pass(&attempts, "checks_failed", false),
        "a task whose check failed was fixed: {attempts:#?}"
    );
    let verdicts: Vec<&str> = show["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["verdict"].as_str())
        .collect();
    assert_eq!(verdicts, ["reject", "approve"]);
    // Planned tasks ran in parallel: two of the first plan's tasks have no dependency.
    assert!(
        show["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "plan"
                && s["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("add, mul, calc")),
        "{show}"
    );

    // The branch is on the bare remote, holding the demo's work, the review's fix included.
    let branch = show["branch"].as_str().unwrap();
    let remote = dir.join("origin.git");
    let pushed = git(&remote, &["rev-parse", &format!("refs/heads/{branch}")]);
    assert_eq!(pushed.trim(), show["delivery"]["pushed"].as_str().unwrap());
    let calc = git(&remote, &["show", &format!("{branch}:bin/calc")]);
    assert!(calc.contains("usage: calc"), "{calc}");
    assert_eq!(
        git(&remote, &["show", &format!("{branch}:lib/mul.sh")]),
        "echo $(( $1 * $2 ))\n"
    );
    let run = |a: &str, op: &str, b: &str| {
        let wt = tmp.path().join("checkout");
        if !wt.exists() {
            git(
                tmp.path(),
                &[
                    "clone",
                    "-q",
                    "-b",
                    branch,
                    remote.to_str().unwrap(),
                    wt.to_str().unwrap(),
                ],
            );
        }
        let out = Command::new("sh")
            .arg(wt.join("bin/calc"))
            .args([a, op, b])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run("6", "x", "7"), "42");
    assert_eq!(run("2", "+", "3"), "5");

    // `fleet budget` says "over budget" for an account past its budget, in aligned columns.
    let yaml = std::fs::read_to_string(home.join("fleet.yaml")).unwrap();
    let lowered = yaml.replace(
        "account-b: { daily_budget_tokens: 1000000 }",
        "account-b: { daily_budget_tokens: 1000 }",
    );
    assert_ne!(yaml, lowered, "{yaml}");
    std::fs::write(home.join("fleet.yaml"), lowered).unwrap();
    let budget = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .current_dir(dir.join("calc"))
        .arg("budget")
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    let budget = String::from_utf8_lossy(&budget.stdout).into_owned();
    let table: Vec<&str> = budget.lines().take_while(|l| !l.is_empty()).collect();
    let row = |name: &str| {
        *table
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{budget}"))
    };
    assert!(row("account-b").contains("over budget until"), "{budget}");
    assert!(row("account-a").contains("cooling down until"), "{budget}");
    let state_col = table[0].find("STATE").unwrap();
    for line in &table[1..] {
        let at = ["over budget", "cooling down", "usable"]
            .iter()
            .find_map(|w| line.find(w))
            .unwrap();
        assert_eq!(at, state_col, "columns align:\n{budget}");
    }
    for section in budget.split("\n\n").skip(1) {
        let lines: Vec<&str> = section.lines().collect();
        let end = lines[0].len();
        assert!(
            lines.iter().all(|l| l.len() == end),
            "columns align:\n{section}"
        );
    }

    // `fleet status` (text and JSON) and the run's summary.md name each attempt's agent, model,
    // tokens and cost.
    let implement = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "implement")
        .unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let status = |json: bool| {
        let mut args = vec!["status", implement.as_str()];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(dir.join("calc"))
            .args(&args)
            .env("FLEET_HOME", &home)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status(false);
    assert!(
        text.contains("dev-fast (http, scripted-fast): rate limited, 0 tokens, $0.0000"),
        "{text}"
    );
    assert!(
        text.contains("dev-steady (http, scripted-steady): passed, 3900 tokens"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&status(true)).unwrap();
    let passed: Vec<&Value> = json["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["attempt_list"].as_array().unwrap())
        .filter(|a| a["outcome"] == "passed")
        .collect();
    assert!(!passed.is_empty());
    for a in passed {
        assert_eq!(a["agent"], "dev-steady", "{a}");
        assert_eq!(
            (a["cli"].as_str(), a["model"].as_str()),
            (Some("http"), Some("scripted-steady"))
        );
        assert_eq!(a["tokens"], 3900);
        assert!(a["cost_usd"].is_number());
    }
    let summary = std::fs::read_to_string(json["summary"].as_str().unwrap()).unwrap();
    assert!(summary.contains("## Agent attempts"), "{summary}");
    // dev-fast's account refuses every request: add and mul, started on it together, both
    // move (whichever reached it first), and mul's first version fails on dev-steady.
    for row in [
        "| add | 1 | dev-fast | http | scripted-fast | rate limited | 0 | $0.0000 |",
        "| mul | 1 | dev-fast | http | scripted-fast | rate limited | 0 | $0.0000 |",
        "| mul | 2 | dev-steady | http | scripted-steady | checks failed | 3900 | $0.0000 |",
    ] {
        assert!(summary.contains(row), "{row:?} not in\n{summary}");
    }

    // `fleet task logs` tells the whole story, stage run by stage run.
    let logs = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .current_dir(dir.join("calc"))
        .args(["task", "logs", "e1", "-f"])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    assert!(logs.status.success());
    let logs = String::from_utf8_lossy(&logs.stdout);
    for part in [
        "/ researcher ══",
        "/ planner ══",
        "/ mul ══",
        "/ review ══",
        "tool run_shell_command",
        "$ test \"$(sh lib/mul.sh 4 5)\" = 20",
    ] {
        assert!(logs.contains(part), "{part:?} not in the logs");
    }

    // A second demo in the same place is refused, not mixed into the first.
    let again = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .env_remove("FLEET_HOME")
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn demo_serve_opens_the_dashboard_on_the_demo_while_it_works() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args([
            "demo",
            "--serve",
            "--bind",
            "127.0.0.1:0",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .env_remove("FLEET_HOME")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("fleet serve: listening on ")
                .map(str::to_string)
        })
        .expect("the dashboard's address");
    std::thread::spawn(move || lines.for_each(drop));
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("{url}{path}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    };
    assert_eq!(get("/").0, "200");
    // The served fleet drives the demo's request to acceptance.
    let started = Instant::now();
    loop {
        let (_, body) = get("/api/v1/tasks");
        if body.contains("\"awaiting_acceptance\"") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// A tiny bin directory holding only `claude` of the pinned CLIs.
fn only_claude(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        fleet_testkit::agent_bin_dir().join("claude"),
        bin.join("claude"),
    )
    .unwrap();
    bin
}

#[test]
fn demo_real_without_a_cli_and_its_key_says_what_is_missing_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let real = |agent_bin: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.args(["demo", "--real", "--dir", dir.to_str().unwrap()])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", tmp.path());
        if let Some(b) = agent_bin {
            cmd.env("FLEET_AGENT_BIN", b);
        }
        cmd.output().unwrap()
    };
    // No CLI at all.
    let out = real(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("no agent CLI was found"), "{stderr}");
    assert!(!dir.exists());
    // A CLI without its key: the message names the CLI and the keys it reads.
    let bin = only_claude(tmp.path());
    let out = real(Some(&bin));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("claude (none of ANTHROPIC_API_KEY"),
        "{stderr}"
    );
    assert!(!dir.exists());
}

#[test]
fn demo_real_launches_the_real_cli_with_the_key_from_the_environment_only() {
    use fleet_testkit::{ModelServer, Scenario};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let bin = only_claude(tmp.path());
    // The "vendor" is a scripted model server: every role's conversation records the CLI's
    // environment and writes every stage's artifact (the review's anew each time, so the
    // reviewer changes something), so the real pipeline runs to the end.
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let plan = serde_json::json!({"summary": "one file", "phases": [{"id": "p", "title": "P", "tasks": [
        {"id": "hello", "title": "Hello", "role": "developer", "description": "hello.txt says hello",
         "depends_on": [], "acceptance": {"commands": ["test -s hello.txt"], "statements": ["hello.txt says hello"]}}]}]});
    std::fs::write(files.join("plan.json"), plan.to_string()).unwrap();
    std::fs::write(files.join("context.md"), "# calc\n").unwrap();
    let f = files.display();
    let server = ModelServer::start();
    server.add_scenario(
        "vendor",
        Scenario::new()
            .shell(format!(
                "env >> {f}/env.txt; mkdir -p .fleet-out; cp {f}/context.md {f}/plan.json .fleet-out/; \
                 printf '{{\"verdict\": \"approve\", \"summary\": \"fine %s\"}}' \"$(date +%s%N)\" > .fleet-out/review.json; \
                 echo hello > hello.txt"
            ))
            .text("Done."),
    );
    let key = "sk-ant-test-real-demo-5678";
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["demo", "--real", "--dir", dir.to_str().unwrap()])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", tmp.path())
        .env("FLEET_AGENT_BIN", &bin)
        .env("ANTHROPIC_API_KEY", key)
        .env("ANTHROPIC_BASE_URL", server.base_url("vendor"))
        .env("DEMO_CANARY", "must-not-reach-the-agent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("agent claude-dev started on researcher"),
        "{stderr}"
    );
    assert!(
        server.model_calls("vendor") >= 4,
        "research, plan, develop, review"
    );
    // The CLI got the key and the base URL from Fleet's environment, and nothing else of it.
    let env = std::fs::read_to_string(files.join("env.txt")).unwrap();
    assert!(env.contains(&format!("ANTHROPIC_API_KEY={key}\n")), "{env}");
    assert!(
        env.contains(&format!("ANTHROPIC_BASE_URL={}", server.base_url("vendor"))),
        "{env}"
    );
    assert!(!env.contains("DEMO_CANARY"), "{env}");
    assert!(
        !env.contains(&format!("HOME={}\n", tmp.path().display())),
        "{env}"
    );
    // The key is named in fleet.yaml, its value is nowhere in the instance.
    let home = dir.join("instance");
    let yaml = std::fs::read_to_string(home.join("fleet.yaml")).unwrap();
    assert!(yaml.contains("ANTHROPIC_API_KEY"), "{yaml}");
    let grep = Command::new("grep")
        .args(["-r", "-l", key])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
    // The work is on the demo's remote.
    let show = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["task", "show", "e1", "--json"])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    let show: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["state"], "awaiting_acceptance", "{show}");
    let branch = show["branch"].as_str().unwrap();
    assert_eq!(
        git(
            &dir.join("origin.git"),
            &["show", &format!("{branch}:hello.txt")]
        ),
        "hello\n"
    );
}
