//! Secret canaries: values planted in an agent's account secret, another account's secret, a
//! forge token and a bot token never appear in anything Fleet keeps, shows or commits — while
//! a hostile agent prints its environment, writes a failing test that prints the environment,
//! and writes its key into a file of the repository.

mod support;
use support::git;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The planted values, each under a name Fleet learns from `fleet.yaml` or recognises.
const CANARIES: &[(&str, &str)] = &[
    // The agent's own account (`accounts.mine.secrets`).
    ("CANARY_AGENT_KEY", "canary-agent-7f3a9c1e5b"),
    // Another account's; its name says nothing, only the configuration does.
    ("CANARY_OTHER", "canary-other-2d8e4f6a0c"),
    // A forge token, by its conventional name.
    ("GITHUB_TOKEN", "canary-forge-9b1d3f5h7j"),
    // The bot's token, named by `notifications[].token_env` only.
    ("CANARY_BOT", "canary-bot-4k6m8n0p2r"),
];

/// The agent: every attempt prints its environment and saves the prompt it was given; the
/// first writes a test that prints the environment and fails, and puts its key in a file;
/// the second makes the test pass but leaves the key; the third removes the key.
const AGENT: &str = r#"
env
cp "$FLEET_PROMPT_FILE" "$PROMPTS/prompt-$FLEET_ATTEMPT.md"
case "$FLEET_ATTEMPT" in
1) printf 'env\necho "key: $CANARY_AGENT_KEY other: $CANARY_OTHER forge: $GITHUB_TOKEN"\nexit 1\n' > test.sh
   printf 'api_key = "%s"\n' "$CANARY_AGENT_KEY" > config.toml ;;
2) printf 'env\nexit 0\n' > test.sh ;;
*) printf 'api_key_env = "MY_KEY"\n' > config.toml ;;
esac
"#;

struct Instance {
    tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    prompts: PathBuf,
}

impl Instance {
    fn new() -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("repo");
        let prompts = tmp.path().join("prompts");
        for d in [&home, &repo, &prompts] {
            std::fs::create_dir_all(d).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
        // The repository's hooks run inside Fleet's git commands (a worktree's checkout, a
        // commit): code Fleet did not write, which prints the environment it gets.
        let hooks = tmp.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        for hook in ["post-checkout", "pre-commit", "post-commit"] {
            let file = repo.join(".git/hooks").join(hook);
            std::fs::write(
                &file,
                format!("#!/bin/sh\nenv >> {}/{hook}.env\n", hooks.display()),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let agent = tmp.path().join("agent.sh");
        std::fs::write(&agent, AGENT).unwrap();
        std::fs::write(
            home.join("fleet.yaml"),
            format!(
                "agents:\n  dev:\n    cli: command\n    command: \"sh {}\"\n    roles: [developer]\n    account: mine\n    env: {{ PROMPTS: \"{}\" }}\n  other-dev:\n    cli: command\n    command: \"true\"\n    roles: [reviewer]\n    account: other\naccounts:\n  mine: {{ secrets: [CANARY_AGENT_KEY] }}\n  other: {{ secrets: [CANARY_OTHER] }}\nnotifications:\n  - kind: telegram\n    token_env: CANARY_BOT\n    chat_id: 1\n    api_url: \"http://127.0.0.1:9\"\n",
                agent.display(),
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home);
        for (k, v) in CANARIES {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Everything git holds that any ref reaches: every commit's message and every blob.
fn git_history(repo: &Path) -> Vec<u8> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["log", "--all", "-p", "--format=%H %B", "--binary"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// What `fleet serve` shows of the instance from loopback without a token: the API's read
/// routes, Prometheus and the live stream replayed from its start.
fn served(inst: &Instance) -> Vec<(String, Vec<u8>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet"));
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("FLEET_HOME", &inst.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in CANARIES {
        cmd.env(k, v);
    }
    let mut serve = cmd.spawn().unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("fleet serve: listening on http://")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let get = |path: &str, extra: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(1500)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
        )
        .unwrap();
        let mut body = Vec::new();
        let _ = s.read_to_end(&mut body); // the stream never ends: read until the timeout
        body
    };
    let mut out = Vec::new();
    for path in [
        "/api/v1/runs",
        "/api/v1/agents",
        "/api/v1/accounts",
        "/api/v1/budgets",
        "/api/v1/metrics",
        "/metrics",
    ] {
        let body = get(path, "");
        assert!(
            body.starts_with(b"HTTP/1.1 200"),
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        out.push((format!("GET {path}"), body));
    }
    let stream = get("/api/v1/events", "Last-Event-ID: 0\r\n");
    assert!(
        contains(&stream, "attempt.started"),
        "the stream replayed nothing: {}",
        String::from_utf8_lossy(&stream)
    );
    out.push(("the event stream".into(), stream));
    let _ = serve.kill();
    let _ = serve.wait();
    out
}

#[test]
fn planted_secrets_never_leave_the_environment() {
    let inst = Instance::new();
    std::fs::write(
        inst.repo.join("runbook.yaml"),
        "name: canary\ntasks:\n  - id: leak\n    role: developer\n    prompt: \"Add a test.\"\n    checks: [\"sh test.sh\"]\n    max_attempts: 5\n",
    )
    .unwrap();
    let run = inst.fleet(&["run", "runbook.yaml"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The agent really did try: three attempts, the checks' output and its own env in logs.
    let state = files(&inst.home.join(".fleet"));
    let logs: String = state
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(logs.contains("── check 1/1 ──"), "{logs}");
    assert!(
        logs.contains("the change holds secrets, so it cannot be committed"),
        "the attempt that wrote the key was not refused:\n{logs}"
    );
    assert!(
        logs.contains("config.toml:1: the value of CANARY_AGENT_KEY"),
        "{logs}"
    );
    let prompts = files(&inst.prompts);
    assert_eq!(prompts.len(), 3, "three attempts, three prompts");

    // No planted value anywhere: state, logs, events, the database, transcripts, the prompts,
    // the output of fleet itself, any git object any ref reaches.
    let history = git_history(&inst.repo);
    let mut places: Vec<(String, Vec<u8>)> = state
        .into_iter()
        .chain(prompts)
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    places.push(("fleet run's output".into(), run.stdout.clone()));
    places.push(("fleet run's errors".into(), run.stderr.clone()));
    places.push(("git history".into(), history.clone()));
    for read in [
        &["status", "--json"][..],
        &["task", "ls", "--json"][..],
        &["agents", "ls", "--json"][..],
    ] {
        let out = inst.fleet(read);
        places.push((format!("fleet {}", read.join(" ")), out.stdout));
    }
    places.extend(served(&inst));
    let hooks = files(&inst.tmp.path().join("hooks"));
    assert!(
        hooks.len() >= 2,
        "the repository's hooks did not run: {:?}",
        hooks.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    places.extend(
        hooks
            .into_iter()
            .map(|(p, b)| (format!("a git hook's environment ({})", p.display()), b)),
    );
    let mut leaks = Vec::new();
    for (name, value) in CANARIES {
        for (place, bytes) in &places {
            if contains(bytes, value) {
                leaks.push(format!("{name} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "leaked:\n{}", leaks.join("\n"));

    // What landed is the third attempt's: the key was never committed, the fix was.
    assert!(contains(&history, "api_key_env = \"MY_KEY\""));
    // The redaction says what it hid.
    assert!(
        places
            .iter()
            .any(|(_, b)| contains(b, "[redacted CANARY_AGENT_KEY]")),
        "the agent's printed env was not redacted but dropped?"
    );
    drop(inst.tmp);
}

/// A command written with a literal token (a mistake, but a common one): the task runs it as
/// written, and neither its log nor the commit that lands it shows the token.
#[test]
fn a_literal_token_in_a_command_stays_out_of_logs_and_history() {
    let inst = Instance::new();
    let token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    std::fs::write(
        inst.repo.join("runbook.yaml"),
        format!(
            "name: literal\ntasks:\n  - id: t\n    command: \"test {token} = {token} && echo ran > out.txt\"\n"
        ),
    )
    .unwrap();
    let run = inst.fleet(&["run", "runbook.yaml"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let history = git_history(&inst.repo);
    assert!(contains(&history, "ran"), "the task's work landed");
    let mut places: Vec<(String, Vec<u8>)> = files(&inst.home.join(".fleet"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    assert!(!places.is_empty(), "no task log");
    places.push(("git history".into(), history));
    for (place, bytes) in &places {
        assert!(!contains(bytes, token), "the token is in {place}");
    }
}
