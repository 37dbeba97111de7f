//! Start-up overhead of each transport per CLI: the wall time of one trivial attempt (the
//! scripted model answers "DONE" at once, no tool) through the CLI's own headless mode and
//! through ACP, run by Fleet's agent runner against the scripted model server. Prints one
//! Markdown table row per CLI: median, min and max of `RUNS` runs each.
//!
//! `bash bench/acp_startup.sh` (runs `cargo run -p fleet-engine --example acp_startup`).

use fleet_engine::AgentProfile;
use fleet_engine::agent::{self, AgentRun};
use fleet_testkit::{ModelServer, Scenario};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn profile(cli: &str, base_url: String, acp: bool) -> AgentProfile {
    let mut p = AgentProfile::bare(cli);
    p.acp = acp;
    p.base_url = Some(base_url);
    p.model = Some(match cli {
        "opencode" => "anthropic/claude-sonnet-4-5".into(),
        "claude" => "claude-sonnet-4-5".into(),
        "gemini" => "gemini-2.5-pro".into(),
        _ => "mock-model".into(),
    });
    p.stall_timeout = Duration::from_secs(60);
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        fleet_testkit::agent_bin_dir().display()
    );
    p.env.insert("PATH".into(), path);
    p
}

fn secrets(cli: &str) -> BTreeMap<String, String> {
    let (k, v) = match cli {
        "claude" | "opencode" => ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789"),
        "gemini" => ("GEMINI_API_KEY", "gemini-test-0123456789"),
        _ => ("OPENAI_API_KEY", "sk-test-0123456789"),
    };
    BTreeMap::from([(k.to_string(), v.to_string())])
}

async fn once(server: &ModelServer, cli: &str, acp: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&repo)
        .status()
        .unwrap();
    let profile = profile(cli, server.base_url("done"), acp);
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let env = BTreeMap::new();
    let secrets = secrets(cli);
    let run = AgentRun {
        profile: &profile,
        prompt: "say DONE",
        workdir: &repo,
        home: &dir.path().join("home"),
        transcript: &dir.path().join("transcript"),
        log: &log,
        timeout: Some(Duration::from_secs(120)),
        kill_grace: Duration::from_secs(2),
        resume_session: None,
        mcp: None,
        extra_env: &env,
        secrets: &secrets,
        redactor: &fleet_secrets::Redactor::default(),
        policy: None,
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let (_, end) = agent::run(run, rx, |_| {}).await.unwrap();
    let took = started.elapsed();
    assert!(
        end.outcome.succeeded(),
        "{cli} (acp: {acp}): {:?}\n{}",
        end.outcome,
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
    took
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if v.len() % 2 == 1 {
        ms(v[v.len() / 2])
    } else {
        (ms(v[v.len() / 2 - 1]) + ms(v[v.len() / 2])) / 2.0
    };
    (median, ms(v[0]), ms(v[v.len() - 1]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let clis: Vec<String> = std::env::args().skip(1).collect();
    let clis: Vec<&str> = if clis.is_empty() {
        vec!["gemini", "qwen", "opencode", "claude", "codex"]
    } else {
        clis.iter().map(String::as_str).collect()
    };
    let server = ModelServer::start();
    server.add_scenario("done", Scenario::new().text("DONE"));
    println!("| CLI | headless median (min–max) ms | ACP median (min–max) ms | ACP − headless |");
    println!("|---|---|---|---|");
    for cli in clis {
        // One unmeasured run each: the first start fills the OS file cache.
        once(&server, cli, false).await;
        once(&server, cli, true).await;
        let (mut native, mut acp) = (Vec::new(), Vec::new());
        // Interleaved, so a noisy neighbour hits both transports alike.
        for _ in 0..runs {
            native.push(once(&server, cli, false).await);
            acp.push(once(&server, cli, true).await);
        }
        let (n, nmin, nmax) = stats(native);
        let (a, amin, amax) = stats(acp);
        println!(
            "| {cli} | {n:.0} ({nmin:.0}–{nmax:.0}) | {a:.0} ({amin:.0}–{amax:.0}) | {:+.0} |",
            a - n
        );
    }
}
