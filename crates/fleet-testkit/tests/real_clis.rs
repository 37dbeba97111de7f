//! The happy path of all five real agent CLIs against the scripted model server: each one must
//! create `hello.txt` through its own write tool, edit it through its own edit tool, and finish.
//!
//! The CLIs come from `FLEET_AGENT_BIN` (the bin directory printed by
//! `scripts/install-agent-clis.sh`) or, when that is unset, from running the script. These
//! tests FAIL, never skip, when the CLIs are missing: CI installs them first.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fleet_testkit::{ModelServer, Scenario, Usage};
use serde_json::Value;

const PROMPT: &str = "create hello.txt containing 'hello from fleet', then edit it";
const EXPECTED: &str = "hello from fleet, edited\n";
const LIMIT: Duration = Duration::from_secs(150);

fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("FLEET_AGENT_BIN") {
            Some(d) => PathBuf::from(d),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../scripts/install-agent-clis.sh");
                let out = Command::new("bash")
                    .arg(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(
                    out.status.success(),
                    "{} failed ({}); the real CLIs are required",
                    script.display(),
                    out.status
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().unwrap_or("").trim())
            }
        };
        for cli in ["claude", "codex", "gemini", "qwen", "opencode"] {
            assert!(
                dir.join(cli).exists(),
                "{cli} not found in {} (set FLEET_AGENT_BIN to the output of scripts/install-agent-clis.sh)",
                dir.display()
            );
        }
        dir
    })
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    repo: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Run {
    fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn context(&self) -> String {
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        format!(
            "exit {:?}\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
            self.code,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    fn assert_edited(&self) {
        assert_eq!(self.code, Some(0), "{}", self.context());
        let got = std::fs::read_to_string(self.repo.join("hello.txt"))
            .unwrap_or_else(|e| panic!("hello.txt: {e}\n{}", self.context()));
        assert_eq!(got, EXPECTED, "{}", self.context());
    }
}

/// Run one CLI headless in a fresh git repo with a fresh HOME, `env -i` style, stdin null.
fn run(cli: &str, server: &ModelServer, scenario: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&repo)
        .status()
        .expect("git");
    assert!(git.success());
    let base = server.base_url(scenario);
    let exe = bin_dir().join(cli);
    let mut cmd = Command::new(&exe);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TERM", "dumb")
        .env("LANG", "C.UTF-8")
        .current_dir(&repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match cli {
        "claude" => {
            cmd.env("IS_SANDBOX", "1")
                .env("ANTHROPIC_BASE_URL", &base)
                .env("ANTHROPIC_API_KEY", "sk-ant-test")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .env("CLAUDE_CODE_MAX_RETRIES", "2")
                .args(["-p", PROMPT, "--output-format", "stream-json", "--verbose"])
                .args([
                    "--dangerously-skip-permissions",
                    "--model",
                    "claude-sonnet-4-5",
                ]);
        }
        "codex" => {
            std::fs::create_dir_all(home.join(".codex")).unwrap();
            std::fs::write(
                home.join(".codex/config.toml"),
                format!(
                    "model = \"mock-model\"\nmodel_provider = \"mock\"\n[model_providers.mock]\nname = \"mock\"\n\
                     base_url = \"{base}/v1\"\nenv_key = \"MOCK_API_KEY\"\nwire_api = \"responses\"\n\
                     request_max_retries = 1\nstream_max_retries = 1\nstream_idle_timeout_ms = 20000\n"
                ),
            )
            .unwrap();
            cmd.env("MOCK_API_KEY", "sk-test").args([
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                PROMPT,
            ]);
        }
        "gemini" => {
            std::fs::create_dir_all(home.join(".gemini")).unwrap();
            std::fs::write(
                home.join(".gemini/settings.json"),
                r#"{"security":{"auth":{"selectedType":"gemini-api-key"}},"privacy":{"usageStatisticsEnabled":false},"general":{"maxAttempts":2}}"#,
            )
            .unwrap();
            cmd.env("GOOGLE_GEMINI_BASE_URL", &base)
                .env("GEMINI_API_KEY", "test-key")
                .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
                .args([
                    "-p",
                    PROMPT,
                    "--output-format",
                    "stream-json",
                    "--yolo",
                    "--skip-trust",
                ]);
        }
        "qwen" => {
            std::fs::create_dir_all(home.join(".qwen")).unwrap();
            std::fs::write(
                home.join(".qwen/settings.json"),
                r#"{"model":{"generationConfig":{"timeout":20000,"maxRetries":1}}}"#,
            )
            .unwrap();
            cmd.env("OPENAI_BASE_URL", format!("{base}/v1"))
                .env("OPENAI_API_KEY", "sk-test")
                .env("OPENAI_MODEL", "mock-model")
                .args([
                    "-p",
                    PROMPT,
                    "--output-format",
                    "stream-json",
                    "--yolo",
                    "--auth-type",
                    "openai",
                ]);
        }
        "opencode" => {
            std::fs::write(
                repo.join("opencode.json"),
                format!(
                    r#"{{"provider":{{"anthropic":{{"options":{{"baseURL":"{base}/v1","apiKey":"sk-ant-test","headerTimeout":20000,"chunkTimeout":20000}}}}}},"model":"anthropic/claude-sonnet-4-5","autoupdate":false,"share":"disabled"}}"#
                ),
            )
            .unwrap();
            cmd.env("OPENCODE_DISABLE_MODELS_FETCH", "1")
                .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
                .env("ANTHROPIC_API_KEY", "sk-ant-test")
                .args(["run", "--format", "json", "--auto", PROMPT]);
        }
        other => panic!("unknown CLI {other}"),
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        repo,
        _tmp: tmp,
    };
    assert!(
        status.is_some(),
        "{cli} still running after {LIMIT:?}\n{}",
        run.context()
    );
    run
}

fn start(scenario: &str) -> ModelServer {
    let server = ModelServer::start();
    server.add_scenario(
        scenario,
        Scenario::hello().usage(Usage::new(120, 30).with_cache(40, 8)),
    );
    server
}

/// The scripted steps 0, 1, 2 were each answered (write, edit, final text).
fn assert_script_ran(server: &ModelServer, scenario: &str) {
    let steps: Vec<usize> = server
        .requests(scenario)
        .iter()
        .filter_map(|r| r.step)
        .collect();
    for s in 0..3 {
        assert!(steps.contains(&s), "step {s} never requested: {steps:?}");
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn claude_writes_and_edits() {
    let server = start("claude");
    let run = run("claude", &server, "claude");
    run.assert_edited();
    assert_script_ran(&server, "claude");
    let events = run.events();
    let result = events
        .iter()
        .find(|e| e["type"] == "result")
        .expect("a result line");
    assert_eq!(result["is_error"], false, "{}", run.context());
    assert_eq!(result["result"], "DONE");
    // The spend claude reports is what the server sent.
    let truth = server.total_usage("claude");
    assert_eq!(u(&result["usage"]["input_tokens"]), truth.input_tokens);
    assert_eq!(u(&result["usage"]["output_tokens"]), truth.output_tokens);
    assert_eq!(
        u(&result["usage"]["cache_read_input_tokens"]),
        truth.cache_read_input_tokens
    );
    assert_eq!(
        u(&result["usage"]["cache_creation_input_tokens"]),
        truth.cache_creation_input_tokens
    );
    // The prompt reached the model.
    assert!(server.requests("claude").iter().any(|r| r.contains(PROMPT)));
}

#[test]
fn codex_writes_and_edits() {
    let server = start("codex");
    let run = run("codex", &server, "codex");
    run.assert_edited();
    assert_script_ran(&server, "codex");
    let events = run.events();
    let done = events
        .iter()
        .find(|e| e["type"] == "turn.completed")
        .unwrap_or_else(|| panic!("no turn.completed\n{}", run.context()));
    let truth = server.total_usage("codex");
    assert_eq!(u(&done["usage"]["input_tokens"]), truth.prompt_total());
    assert_eq!(
        u(&done["usage"]["cached_input_tokens"]),
        truth.cache_read_input_tokens
    );
    assert_eq!(u(&done["usage"]["output_tokens"]), truth.output_tokens);
    assert!(events.iter().any(|e| e["type"] == "item.completed"
        && e["item"]["type"] == "agent_message"
        && e["item"]["text"] == "DONE"));
}

#[test]
fn gemini_writes_and_edits() {
    let server = start("gemini");
    let run = run("gemini", &server, "gemini");
    run.assert_edited();
    assert_script_ran(&server, "gemini");
    let events = run.events();
    let result = events
        .iter()
        .find(|e| e["type"] == "result")
        .expect("a result line");
    assert_eq!(result["status"], "success", "{}", run.context());
    // gemini's stats include its router side call, as the server's total does.
    let truth = server.total_usage("gemini");
    assert_eq!(u(&result["stats"]["input_tokens"]), truth.prompt_total());
    assert_eq!(u(&result["stats"]["output_tokens"]), truth.output_tokens);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "tool_use" && e["tool_name"] == "write_file")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "tool_use" && e["tool_name"] == "replace")
    );
}

#[test]
fn qwen_writes_and_edits() {
    let server = start("qwen");
    let run = run("qwen", &server, "qwen");
    run.assert_edited();
    assert_script_ran(&server, "qwen");
    let events = run.events();
    let result = events
        .iter()
        .find(|e| e["type"] == "result")
        .expect("a result line");
    assert_eq!(result["is_error"], false, "{}", run.context());
    assert_eq!(result["result"], "DONE");
    let truth = server.total_usage("qwen");
    assert_eq!(u(&result["usage"]["output_tokens"]), truth.output_tokens);
}

#[test]
fn opencode_writes_and_edits() {
    let server = start("opencode");
    let run = run("opencode", &server, "opencode");
    run.assert_edited();
    assert_script_ran(&server, "opencode");
    let events = run.events();
    let finishes: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "step_finish")
        .collect();
    assert_eq!(
        finishes.last().map(|e| e["part"]["reason"].clone()),
        Some(Value::from("stop")),
        "{}",
        run.context()
    );
    // opencode's step_finish tokens cover the scripted steps, not its title side call.
    let steps: u64 = server
        .requests("opencode")
        .iter()
        .filter(|r| r.step.is_some())
        .filter_map(|r| r.usage)
        .map(|u| u.output_tokens)
        .sum();
    let reported: u64 = finishes
        .iter()
        .map(|e| u(&e["part"]["tokens"]["output"]))
        .sum();
    assert_eq!(reported, steps, "{}", run.context());
}
