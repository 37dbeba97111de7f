//! `fleet-fake-agent`: the scripted stand-in for `claude` used by the chaos and throughput
//! benchmarks. Each test runs the built binary in a temp dir with a clean environment.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-fake-agent");
const PROMPT: &str =
    "Please do the task below.\nFAKE-TASK: out/hello.txt=hello\\nfrom fleet\\n\nThanks.";
const EXPECTED: &str = "hello\nfrom fleet\n";

/// All four fault probabilities, zero unless overridden.
fn probs<'a>(over: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("FAKE_P_WRONG", "0"),
        ("FAKE_P_RATE", "0"),
        ("FAKE_P_HANG", "0"),
        ("FAKE_P_CRASH", "0"),
    ];
    for (k, v) in over {
        env.retain(|(e, _)| e != k);
        env.push((k, v));
    }
    env
}

fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        "--model",
        "claude-sonnet-4-5",
        "--append-system-prompt",
        "be brief",
        "--max-turns",
        "5",
        "--some-future-flag",
        "--another=value",
    ])
    .current_dir(dir)
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("FLEET_TASK", "t1")
    .env("FLEET_ATTEMPT", "1")
    .env("FAKE_ACCOUNT", "acct-a")
    .env("FAKE_LEDGER", dir.join("ledger.jsonl"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn spawn(dir: &Path, env: &[(&str, &str)], prompt: &str) -> Child {
    let mut child = command(dir, env).spawn().expect("spawn fleet-fake-agent");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prompt.as_bytes()).unwrap();
    drop(stdin);
    child
}

fn run(dir: &Path, env: &[(&str, &str)]) -> Output {
    spawn(dir, env, PROMPT).wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn of_type<'a>(lines: &'a [Value], ty: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == ty).collect()
}

fn result(lines: &[Value]) -> &Value {
    let results = of_type(lines, "result");
    assert_eq!(results.len(), 1, "exactly one result line: {lines:#?}");
    assert_eq!(lines.last().unwrap()["type"], "result", "result comes last");
    results[0]
}

fn ledger(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn target(dir: &Path) -> PathBuf {
    dir.join("out/hello.txt")
}

fn assert_init(lines: &[Value]) -> String {
    let init = &lines[0];
    assert_eq!(init["type"], "system");
    assert_eq!(init["subtype"], "init");
    let id = init["session_id"].as_str().expect("session_id").to_string();
    assert_eq!(id.len(), 36, "uuid-like session id: {id}");
    id
}

/// The result's usage and cost are exactly the ledger's line for this attempt.
fn assert_matches_ledger(res: &Value, entry: &Value) {
    assert_eq!(res["usage"]["input_tokens"], entry["input_tokens"]);
    assert_eq!(res["usage"]["output_tokens"], entry["output_tokens"]);
    assert_eq!(res["total_cost_usd"], entry["cost_usd"]);
    let cost = res["total_cost_usd"].as_f64().unwrap();
    assert_eq!(
        (cost * 1e6).round() / 1e6,
        cost,
        "cost has at most 6 decimals"
    );
}

#[test]
fn success_writes_the_file_and_reports_the_ledgers_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &probs(&[]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(target(dir.path())).unwrap(),
        EXPECTED
    );

    let lines = lines(&out);
    let session = assert_init(&lines);
    let tool = of_type(&lines, "assistant")
        .into_iter()
        .flat_map(|l| l["message"]["content"].as_array().unwrap().iter())
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(tool["name"], "Write");
    assert_eq!(tool["input"]["content"], EXPECTED);
    let path = tool["input"]["file_path"].as_str().unwrap();
    assert!(Path::new(path).is_absolute() && path.ends_with("out/hello.txt"));
    let user = of_type(&lines, "user");
    assert_eq!(user.len(), 1);
    assert_eq!(user[0]["message"]["content"][0]["type"], "tool_result");
    assert_eq!(user[0]["message"]["content"][0]["is_error"], false);
    assert!(
        of_type(&lines, "assistant")
            .iter()
            .any(|l| l["message"]["content"][0]["text"] == "DONE")
    );

    let res = result(&lines);
    assert_eq!(res["subtype"], "success");
    assert_eq!(res["is_error"], false);
    assert_eq!(res["session_id"], session.as_str());
    let input = res["usage"]["input_tokens"].as_u64().unwrap();
    let output = res["usage"]["output_tokens"].as_u64().unwrap();
    assert!(input >= 1000 && output >= 50, "{res}");
    // Per-message usage adds up to the total, which only the result line reports.
    let (mut sum_in, mut sum_out) = (0, 0);
    for a in of_type(&lines, "assistant") {
        sum_in += a["message"]["usage"]["input_tokens"].as_u64().unwrap();
        sum_out += a["message"]["usage"]["output_tokens"].as_u64().unwrap();
    }
    assert_eq!((sum_in, sum_out), (input, output));

    let ledger = ledger(dir.path());
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let entry = &ledger[0];
    assert_eq!(entry["fate"], "success");
    assert_eq!(entry["task"], "t1");
    assert_eq!(entry["attempt"], 1);
    assert_eq!(entry["account"], "acct-a");
    assert_matches_ledger(res, entry);
}

#[test]
fn wrong_writes_wrong_content_and_still_claims_success() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &probs(&[("FAKE_P_WRONG", "1")]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = std::fs::read_to_string(target(dir.path())).unwrap();
    assert_ne!(written, EXPECTED);
    assert_ne!(written.trim(), EXPECTED.trim());
    let lines = lines(&out);
    let res = result(&lines);
    assert_eq!(res["subtype"], "success");
    assert_eq!(res["is_error"], false);
    let ledger = ledger(dir.path());
    assert_eq!(ledger[0]["fate"], "wrong");
    assert_matches_ledger(res, &ledger[0]);
}

#[test]
fn a_probability_of_one_forces_its_fate_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    for attempt in ["1", "2", "3", "4", "5"] {
        let out = run(
            dir.path(),
            &[("FAKE_P_WRONG", "1"), ("FLEET_ATTEMPT", attempt)],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let ledger = ledger(dir.path());
    assert_eq!(ledger.len(), 5);
    assert!(ledger.iter().all(|e| e["fate"] == "wrong"), "{ledger:?}");
}

#[test]
fn rate_limit_is_shared_through_the_account_file() {
    let dir = tempfile::tempdir().unwrap();
    let limit = dir.path().join("acct/limit");
    let limit_s = limit.to_str().unwrap();
    let before = now_ms();
    let out = run(
        dir.path(),
        &probs(&[
            ("FAKE_P_RATE", "1"),
            ("FAKE_RATE_LIMIT_FILE", limit_s),
            ("FAKE_RATE_RESET_MS", "30000"),
        ]),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        !target(dir.path()).exists(),
        "a limited attempt does no work"
    );
    let until: u64 = std::fs::read_to_string(&limit)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(until >= before + 30_000 && until <= now_ms() + 30_000);

    let check = |out: &Output, fate: &str, entry: &Value| {
        let lines = lines(out);
        assert_init(&lines);
        let events = of_type(&lines, "rate_limit_event");
        assert_eq!(events.len(), 1);
        let info = &events[0]["rate_limit_info"];
        assert_eq!(info["status"], "rejected");
        assert_eq!(info["resetsAt"].as_u64().unwrap(), until.div_ceil(1000));
        let res = result(&lines);
        assert_eq!(res["subtype"], "success");
        assert_eq!(res["is_error"], true);
        assert_eq!(res["api_error_status"], 429);
        assert!(res["result"].as_str().unwrap().contains("429"));
        assert_eq!(entry["fate"], fate);
        assert_matches_ledger(res, entry);
    };
    check(&out, "rate_limited", &ledger(dir.path())[0]);

    // Another attempt whose own dice say "fine" is still limited while the file's time is ahead.
    let out = run(
        dir.path(),
        &probs(&[("FAKE_RATE_LIMIT_FILE", limit_s), ("FLEET_ATTEMPT", "2")]),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!target(dir.path()).exists());
    check(&out, "rate_limited_account", &ledger(dir.path())[1]);

    // Once the reset time has passed, work resumes.
    std::fs::write(&limit, format!("{}\n", now_ms() - 1)).unwrap();
    let out = run(
        dir.path(),
        &probs(&[("FAKE_RATE_LIMIT_FILE", limit_s), ("FLEET_ATTEMPT", "3")]),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(target(dir.path())).unwrap(),
        EXPECTED
    );
    assert_eq!(ledger(dir.path())[2]["fate"], "success");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("acct"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["limit"], "no temp files left behind");
}

#[test]
fn crash_aborts_without_a_result_or_ledger_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &probs(&[("FAKE_P_CRASH", "1")]));
    assert_eq!(out.status.signal(), Some(6), "SIGABRT: {out:?}");
    let lines = lines(&out);
    assert_init(&lines);
    assert_eq!(of_type(&lines, "assistant").len(), 1);
    assert!(of_type(&lines, "result").is_empty());
    assert!(ledger(dir.path()).is_empty());
}

#[test]
fn hang_keeps_running_after_init() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), &probs(&[("FAKE_P_HANG", "1")]), PROMPT);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let init: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(init["subtype"], "init");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after 1 s"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after init: {rest}");
    assert!(ledger(dir.path()).is_empty());
}

#[test]
fn fate_and_usage_are_deterministic() {
    let defaults: [(&str, &str); 2] = [("FAKE_P_HANG", "0"), ("FAKE_AGENT_SEED", "7")];
    let fingerprint = |env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), env);
        let entry = ledger(dir.path()).pop();
        let session = lines(&out)[0]["session_id"].clone();
        (out.status.code(), out.status.signal(), entry, session)
    };
    let a = fingerprint(&defaults);
    assert_eq!(a, fingerprint(&defaults));
    let other_attempt = [defaults[0], defaults[1], ("FLEET_ATTEMPT", "2")];
    assert_eq!(fingerprint(&other_attempt), fingerprint(&other_attempt));
    assert_ne!(a, fingerprint(&other_attempt));
    let other_seed = [defaults[0], ("FAKE_AGENT_SEED", "8")];
    assert_ne!(a, fingerprint(&other_seed));
}

#[test]
fn fates_follow_the_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let env = probs(&[("FAKE_P_WRONG", "0.3"), ("FAKE_P_RATE", "0.2")]);
    let mut children = Vec::new();
    for n in 0..100 {
        let attempt = n.to_string();
        let mut env = env.clone();
        env.push(("FLEET_ATTEMPT", &attempt));
        children.push(spawn(dir.path(), &env, PROMPT));
        if children.len() == 10 {
            for c in children.drain(..) {
                c.wait_with_output().unwrap();
            }
        }
    }
    let ledger = ledger(dir.path());
    assert_eq!(ledger.len(), 100, "one whole line per attempt");
    let count = |fate: &str| ledger.iter().filter(|e| e["fate"] == fate).count();
    let (ok, wrong, rate) = (count("success"), count("wrong"), count("rate_limited"));
    assert_eq!(ok + wrong + rate, 100);
    assert!((15..=45).contains(&wrong), "wrong {wrong}");
    assert!((8..=35).contains(&rate), "rate {rate}");
    for e in &ledger {
        let (i, o) = (
            e["input_tokens"].as_u64().unwrap(),
            e["output_tokens"].as_u64().unwrap(),
        );
        if e["fate"] == "rate_limited" {
            assert!(i <= 200 && o == 0, "{e}");
        } else {
            assert!((1000..=5000).contains(&i) && (50..=500).contains(&o), "{e}");
        }
        let cost = e["cost_usd"].as_f64().unwrap();
        assert!((cost - (i * 3 + o * 15) as f64 / 1e6).abs() < 1e-12, "{e}");
    }
}

#[test]
fn no_fake_task_line_is_an_error_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = spawn(dir.path(), &probs(&[]), "just a prompt\n")
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = lines(&out);
    assert_eq!(result(&lines)["is_error"], true);
}

#[test]
fn version_answers_without_stdin() {
    let out = Command::new(BIN)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("2."));
}

#[test]
fn stream_mode_paces_lines() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = spawn(
        dir.path(),
        &[
            ("FAKE_AGENT_MODE", "stream"),
            ("FAKE_EVENTS_PER_SEC", "200"),
            ("FAKE_DURATION_SECS", "1"),
        ],
        "stream please",
    )
    .wait_with_output()
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines = lines(&out);
    assert_init(&lines);
    let assistant = of_type(&lines, "assistant");
    assert!(
        (180..=220).contains(&assistant.len()),
        "{} lines",
        assistant.len()
    );
    for raw in text.lines().filter(|l| l.contains(r#""type":"assistant""#)) {
        assert!(
            (300..=520).contains(&raw.len()),
            "{} bytes: {raw}",
            raw.len()
        );
    }
    let (mut sum_in, mut sum_out) = (0, 0);
    for a in &assistant {
        assert_eq!(a["message"]["content"][0]["type"], "text");
        sum_in += a["message"]["usage"]["input_tokens"].as_u64().unwrap();
        sum_out += a["message"]["usage"]["output_tokens"].as_u64().unwrap();
    }
    let res = result(&lines);
    assert_eq!(res["is_error"], false);
    assert_eq!(res["usage"]["input_tokens"], sum_in);
    assert_eq!(res["usage"]["output_tokens"], sum_out);
    let ledger = ledger(dir.path());
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["lines"], lines.len());
    assert_eq!(ledger[0]["messages"], assistant.len());
    assert_matches_ledger(res, &ledger[0]);
}
