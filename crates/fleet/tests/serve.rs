//! `fleet serve` over real HTTP: submit, list, detail, reject, accept; tokens and scopes
//! (401/403, loopback-only reads); the SSE stream live and resumed with Last-Event-ID without
//! gaps or duplicates; `/metrics`, `/healthz` and the OpenAPI document. The epic is worked on
//! by the real claude CLI against the scripted model server.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A non-loopback address of this machine, to call the server "from outside".
fn outside_ip() -> String {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // No packet is sent: connect() on UDP only picks the route and local address.
    sock.connect("192.0.2.254:9")
        .or_else(|_| sock.connect("10.255.255.254:9"))
        .unwrap();
    let ip = sock.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback(),
        "this machine has no non-loopback address"
    );
    ip.to_string()
}

/// Waits for epic e1 to await acceptance in `cycle`; its detail.
fn awaiting(http: &Http, base: &str, cycle: u64) -> Value {
    wait_for(
        120,
        &format!("e1 awaiting acceptance in cycle {cycle}"),
        || {
            let (_, d) = http.get(&format!("{base}/api/v1/tasks/e1"), None);
            (d["task"]["state"] == "awaiting_acceptance" && d["task"]["cycle"] == cycle)
                .then_some(d)
        },
    )
}

fn token(inst: &Instance, scope: &str, name: &str) -> String {
    let out = inst.ok(&["token", "create", "--scope", scope, "--name", name]);
    out.lines().last().unwrap().trim().to_string()
}

/// Reads an SSE stream in the background: (seq, kind) of every event, until dropped.
struct SseReader {
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseReader {
    fn open(http: &Http, url: String, last_event_id: Option<u64>) -> SseReader {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let client = reqwest::Client::new();
        let task = http.rt.spawn(async move {
            let mut req = client.get(url);
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", id.to_string());
            }
            let mut resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(
                resp.headers()["content-type"].to_str().unwrap(),
                "text/event-stream"
            );
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let mut id = None;
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().parse::<u64>().unwrap());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if let Some(id) = id {
                        let ev: Value = serde_json::from_str(&data).unwrap();
                        assert_eq!(ev["seq"], id, "the SSE id is the event's seq");
                        out.lock()
                            .unwrap()
                            .push((id, ev["kind"].as_str().unwrap().to_string()));
                    }
                }
            }
        });
        SseReader { seen, task }
    }

    fn seen(&self) -> Vec<(u64, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn the_api_submits_lists_details_rejects_and_accepts_with_live_events_that_resume() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    inst.add_shop();
    let submit = token(&inst, "submit", "ci");
    let read = token(&inst, "read", "viewer");
    let admin = token(&inst, "admin", "root");
    assert!(submit.starts_with("fleet_") && submit != read);
    // Only hashes are stored.
    let db = std::fs::read(inst.home.join(".fleet/fleet.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(&submit[6..]));

    let ip = outside_ip();
    let served = Served::start(&inst, "0.0.0.0", &["--epics", "1"]);
    let http = Http::new();
    let api = |path: &str| format!("{}{path}", served.url);
    let from_outside = |path: &str| format!("http://{ip}:{}{path}", served.port);

    let (status, health) = http.get(&api("/healthz"), None);
    assert_eq!((status, health["ok"].clone()), (200, json!(true)));

    // A live stream from the start, opened before anything happens.
    let first = SseReader::open(&http, api("/api/v1/events?after=0"), None);

    // Auth: writes need a token with the submit scope; reads without one only from loopback.
    let new_task = json!({"project": "shop", "request": "Add the a, b and c files to the shop"});
    let (s, e) = http.post(&api("/api/v1/tasks"), None, new_task.clone());
    assert_eq!(s, 401, "{e}");
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some("fleet_not_a_token"),
        new_task.clone(),
    );
    assert_eq!(s, 401);
    let (s, e) = http.post(&api("/api/v1/tasks"), Some(&read), new_task.clone());
    assert_eq!(s, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("scope read"), "{e}");
    let (s, _) = http.get(&from_outside("/api/v1/tasks"), None);
    assert_eq!(s, 401, "no token from outside the machine");
    let (s, _) = http.get(&from_outside("/api/v1/tasks"), Some(&read));
    assert_eq!(s, 200, "a read token works from outside");
    let (s, _) = http.get(&from_outside("/metrics"), None);
    assert_eq!(s, 401);
    let (s, _) = http.post(&from_outside("/mcp"), None, json!({}));
    assert_eq!(s, 401);
    // Bad input is a 400 that says what was wrong, and changes nothing.
    let (s, e) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        json!({"project": "shop"}),
    );
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("request"), "{e}");
    let (s, e) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        json!({"project": "nope", "request": "x"}),
    );
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("nope"), "{e}");
    let (s, e) = http.get(&api("/api/v1/tasks?limit=5000"), None);
    assert_eq!(s, 400, "{e}");

    // Submit: the server works on it by itself.
    let (s, created) = http.post(&api("/api/v1/tasks"), Some(&submit), new_task);
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["task"]["id"], "e1");
    assert!(created["url"].as_str().unwrap().ends_with("/#/tasks/e1"));
    let (s, e) = http.post(&api("/api/v1/tasks/e1/accept"), Some(&submit), json!({}));
    assert_eq!(s, 409, "accepting work in progress: {e}");

    let awaiting = |cycle: u64| awaiting(&http, &served.url, cycle);
    let detail = awaiting(2);
    let stages: Vec<String> = detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}{}", s["stage"].as_str().unwrap(), s["cycle"]))
        .collect();
    assert_eq!(
        stages,
        [
            "research1",
            "plan1",
            "implement1",
            "review1",
            "plan2",
            "implement2",
            "review2",
            "deliver2"
        ]
    );
    let plan: Vec<&str> = detail["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(plan, ["a", "b", "c", "fix-review"]);
    assert!(
        detail["plan"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "merged")
    );
    let attempts = detail["attempts"].as_array().unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a["cli"] == "claude" && a["outcome"] == "passed")
    );
    assert_eq!(detail["reviews"][0]["verdict"], "reject");

    // List with filters and counts.
    let (s, list) = http.get(
        &api("/api/v1/tasks?state=awaiting_acceptance&project=shop"),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(list["total"], 1);
    assert_eq!(list["tasks"][0]["id"], "e1");
    assert_eq!(list["counts"]["awaiting_acceptance"], 1);
    let (_, none) = http.get(&api("/api/v1/tasks?state=done"), None);
    assert_eq!(
        (
            none["total"].clone(),
            none["counts"]["awaiting_acceptance"].clone()
        ),
        (json!(0), json!(1))
    );
    let (_, found) = http.get(&api("/api/v1/tasks?q=B%20AND%20C"), None);
    assert_eq!(found["total"], 1);

    // The first stream saw everything so far live; drop it midway and resume from its last id.
    let seen_first = wait_for(10, "the first stream to catch up", || {
        let seen = first.seen();
        seen.iter()
            .any(|(_, k)| k == "task.awaiting_acceptance")
            .then_some(seen)
    });
    drop(first);
    let resume_from = seen_first.last().unwrap().0;

    // Reject with a read token: 403; with a submit token: the next cycle runs.
    let why = json!({"comment": "Also add fix-accept.txt"});
    let (s, _) = http.post(&api("/api/v1/tasks/e1/reject"), Some(&read), why.clone());
    assert_eq!(s, 403);
    let (s, e) = http.post(
        &api("/api/v1/tasks/e1/reject"),
        Some(&submit),
        json!({"comment": " "}),
    );
    assert_eq!(s, 400, "{e}");
    let second = SseReader::open(&http, api("/api/v1/events"), Some(resume_from));
    let (s, r) = http.post(&api("/api/v1/tasks/e1/reject"), Some(&submit), why);
    assert_eq!(s, 200, "{r}");
    let detail = awaiting(3);
    assert!(
        detail["plan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "fix-accept" && t["state"] == "merged")
    );
    assert!(inst.file_on_branch("fix-accept.txt").is_some());

    let (s, r) = http.post(&api("/api/v1/tasks/e1/accept"), Some(&admin), json!({}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["task"]["state"], "done");
    let (s, _) = http.post(&api("/api/v1/tasks/e1/accept"), Some(&submit), json!({}));
    assert_eq!(s, 409, "already done");
    let (s, _) = http.get(&api("/api/v1/tasks/e9"), None);
    assert_eq!(s, 404);

    // The resumed stream continues exactly after the first: together they hold every event
    // of the store once, in order.
    let store = inst.store();
    let all: Vec<u64> = store
        .events(None, 0, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let seen_second = wait_for(10, "the resumed stream to see the acceptance", || {
        let seen = second.seen();
        seen.iter().any(|(_, k)| k == "task.done").then_some(seen)
    });
    let mut seqs: Vec<u64> = seen_first
        .iter()
        .chain(&seen_second)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        seen_second[0].0,
        resume_from + 1,
        "no gap after Last-Event-ID"
    );
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event twice");
    seqs.sort();
    let last = *seqs.last().unwrap();
    let expected: Vec<u64> = all.iter().copied().filter(|s| *s <= last).collect();
    assert_eq!(
        seqs, expected,
        "every stored event up to the last seen, once"
    );
    assert!(
        seen_first.iter().any(|(_, k)| k == "attempt.started"),
        "agents' events stream too"
    );

    // Metrics, in Prometheus' format and as JSON.
    let text = http.rt.block_on(async {
        reqwest::get(api("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(text.contains("fleet_epics{state=\"done\"} 1"), "{text}");
    assert!(
        text.contains("fleet_attempts_total{outcome=\"passed\"}"),
        "{text}"
    );
    assert!(
        text.contains("fleet_spend_tokens_total{account=\"anthropic\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE fleet_agents_running gauge\nfleet_agents_running 0"),
        "{text}"
    );
    let (_, m) = http.get(&api("/api/v1/metrics"), None);
    assert_eq!(m["accounts"][0]["account"], "anthropic");
    assert!(m["avg_task_secs"].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        m["longest_task_today"]["secs"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    let (_, b) = http.get(&api("/api/v1/budgets"), None);
    assert!(
        b["accounts"][0]["spent_tokens"].as_u64().unwrap() > 0,
        "{b}"
    );
    let (_, agents) = http.get(&api("/api/v1/agents"), None);
    assert!(
        agents["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["cli"] == "claude")
    );
    assert!(
        !agents.to_string().contains("PATH"),
        "profiles' env is never shown"
    );
    let (_, projects) = http.get(&api("/api/v1/projects"), None);
    assert_eq!(projects["projects"][0]["name"], "shop");
    // Registering a project needs the admin scope.
    let site = json!({"name": "site", "repo": inst.repo.to_str().unwrap(), "checks": ["true"]});
    let (s, _) = http.post(&api("/api/v1/projects"), Some(&submit), site.clone());
    assert_eq!(s, 403);
    let (s, e) = http.post(
        &api("/api/v1/projects"),
        Some(&admin),
        json!({"name": "x", "repo": "/nowhere"}),
    );
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap().contains("no such directory"),
        "{e}"
    );
    let (s, e) = http.post(
        &api("/api/v1/projects"),
        Some(&admin),
        json!({"name": "x", "repo": "/tmp", "colour": 1}),
    );
    assert_eq!(s, 400, "unknown fields are refused: {e}");
    let (s, e) = http.post(
        &api("/api/v1/projects"),
        Some(&admin),
        json!({"name": "x", "repo": "https://bob:ghp_secret123@github.com/acme/shop.git"}),
    );
    assert_eq!(s, 400, "credentials in a URL are refused: {e}");
    assert!(!e.to_string().contains("ghp_secret123"), "{e}");
    let (s, created) = http.post(&api("/api/v1/projects"), Some(&admin), site.clone());
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["project"]["delivery"]["kind"], "branch");
    let (s, _) = http.post(&api("/api/v1/projects"), Some(&admin), site);
    assert_eq!(s, 409);
    let (_, one) = http.get(&api("/api/v1/projects/site"), None);
    assert_eq!(one["project"]["checks"], json!(["true"]));

    // The OpenAPI document covers every route the server has.
    let (_, doc) = http.get(&api("/openapi.json"), None);
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/accept",
        "/api/v1/tasks/{id}/reject",
        "/api/v1/tasks/{id}/cancel",
        "/api/v1/projects",
        "/api/v1/projects/{name}",
        "/api/v1/runs",
        "/api/v1/runners",
        "/api/v1/agents",
        "/api/v1/accounts",
        "/api/v1/budgets",
        "/api/v1/metrics",
        "/api/v1/events",
        "/metrics",
        "/healthz",
        "/openapi.json",
        "/mcp",
        "/",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi.json lacks {path}");
        if path == "/api/v1/events" {
            continue; // a stream: tested above
        }
        let (s, _) = http.get(
            &api(&path.replace("{id}", "e1").replace("{name}", "shop")),
            None,
        );
        assert_ne!(s, 404, "{path} is in the document but not served");
    }
    // Nothing secret reached the API: not the tokens, not the account's secret.
    let (_, full) = http.get(&api("/api/v1/tasks/e1"), None);
    let everything = format!("{full}{text}{m}{b}");
    for secret in [
        submit.as_str(),
        read.as_str(),
        "sk-ant-oat01-test-secret-0001",
    ] {
        assert!(!everything.contains(secret));
    }
    let status = served.stop();
    assert!(
        status.success(),
        "fleet serve ends cleanly on Ctrl-C: {status}"
    );
}

#[test]
fn cancelling_a_task_in_work_stops_its_agents() {
    let server = scripted_server();
    // The developer would take a minute.
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new().shell("sleep 60; echo late > late.txt"),
    );
    let inst = Instance::new(&server);
    inst.add_shop();
    let submit = token(&inst, "submit", "ci");
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let api = |path: &str| format!("{}{path}", served.url);
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        json!({"project": "shop", "request": "Add the a, b and c files to the shop"}),
    );
    assert_eq!(s, 201);
    wait_for(120, "a developer at work", || {
        let (_, m) = http.get(&api("/api/v1/metrics"), None);
        let running = m["agents_running"].as_array().cloned().unwrap_or_default();
        running
            .iter()
            .any(|a| a["run_id"].as_str().unwrap_or("").contains("-implement-"))
            .then_some(())
    });
    // The running stage is on the task's page: what its agent is doing now.
    let (_, d) = http.get(&api("/api/v1/tasks/e1"), None);
    let now = d["task"]["now"].as_str().unwrap_or_default().to_string();
    assert!(now.contains("claude"), "{now}");
    assert!(
        d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["outcome"] == "running"),
        "{d}"
    );
    let started = std::time::Instant::now();
    let (s, r) = http.post(&api("/api/v1/tasks/e1/cancel"), Some(&submit), json!({}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["task"]["state"], "cancelled");
    wait_for(30, "the stage run to stop", || {
        let (_, m) = http.get(&api("/api/v1/metrics"), None);
        let (_, runs) = http.get(&api("/api/v1/runs"), None);
        let implement = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str().unwrap_or("").contains("-implement-"))
            .cloned()
            .unwrap();
        (m["agents_running"].as_array().unwrap().is_empty() && implement["state"] == "interrupted")
            .then_some(())
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "stopped long before the agent's minute"
    );
    assert!(inst.file_on_branch("late.txt").is_none());
    let (_, d) = http.get(&api("/api/v1/tasks/e1"), None);
    assert_eq!(d["task"]["state"], "cancelled");
}

#[test]
fn a_review_comment_on_the_pull_request_sends_the_task_back_to_work_while_serving() {
    let server = scripted_server();
    let forge = fleet_testkit::forge::ForgeDouble::start(support::epics::TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Instance::new(&server);
    inst.add_shop_on_github(&forge.base_url());
    let submit = token(&inst, "submit", "ci");
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let api = |path: &str| format!("{}{path}", served.url);
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        json!({"project": "shop", "request": "Add the a, b and c files to the shop"}),
    );
    assert_eq!(s, 201);
    let awaiting = |cycle: u64| awaiting(&http, &served.url, cycle);
    let d = awaiting(2);
    assert_eq!(d["task"]["delivery"]["kind"], "pull_request");
    assert_eq!(forge.pull_requests().len(), 1);
    // The server polls the pull request (every second here): a review comment is rework.
    forge.add_review_comment(
        "acme/shop",
        1,
        "octocat",
        "Please add fix-accept.txt",
        "README.md",
        Some(1),
    );
    let d = awaiting(3);
    assert!(
        d["plan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "fix-accept" && t["state"] == "merged")
    );
    let by_comment = d["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verdict"] == "pull_request_comments")
        .expect("the comment was recorded as a review");
    assert!(by_comment["summary"].as_str().unwrap().contains("octocat"));
    assert_eq!(
        forge.pull_requests().len(),
        1,
        "the same pull request is updated"
    );
}
