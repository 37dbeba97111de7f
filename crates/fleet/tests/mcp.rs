//! Fleet's MCP server driven by the official Rust MCP client (rmcp): on stdio (`fleet mcp`,
//! as agents launched by Fleet get it) and on `/mcp` of `fleet serve` (streamable HTTP with a
//! bearer token). Progress and error reports land as events of the attempt they came from.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served};

use fleet_store::Store;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn call<S>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    tool: &str,
    a: Value,
) -> (bool, String)
where
    S: rmcp::service::Service<rmcp::RoleClient>,
{
    let r = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args(a)))
        .await
        .unwrap();
    (r.is_error == Some(true), text(&r))
}

/// An instance with project `shop` and one finished run `r` with task `t`.
fn instance() -> (fleet_testkit::ModelServer, Instance, String) {
    let server = scripted_server();
    let inst = Instance::new(&server);
    inst.add_shop();
    std::fs::write(
        inst.repo.join("book.yaml"),
        "name: r\ntasks:\n  - id: t\n    command: \"true\"\n",
    )
    .unwrap();
    inst.ok(&["run", "book.yaml", "-q"]);
    let runs: Value = serde_json::from_str(&inst.ok(&["runs", "--json"])).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    (server, inst, run)
}

#[test]
fn the_stdio_server_serves_its_tools_to_an_mcp_client() {
    let (_server, inst, run) = instance();
    let http = Http::new();
    http.rt.block_on(async {
        // A person's (or a tool's) server: every tool.
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env_remove("FLEET_RUN");
        let person = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        let names = |tools: Vec<rmcp::model::Tool>| {
            let mut n: Vec<String> = tools.into_iter().map(|t| t.name.to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(
            names(person.list_all_tools().await.unwrap()),
            [
                "answer_task",
                "create_task",
                "get_status",
                "list_blocked",
                "list_tasks",
                "memory_search",
                "read_context",
                "remember",
                "report_error",
                "report_progress",
                "retry_task"
            ]
        );
        let (err, out) = call(
            &person,
            "create_task",
            json!({"project": "shop", "request": "Add a changelog"}),
        )
        .await;
        assert!(!err, "{out}");
        let created: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(created["id"], "e1");
        let (err, out) = call(
            &person,
            "create_task",
            json!({"project": "nope", "request": "x"}),
        )
        .await;
        assert!(
            err && out.contains("nope"),
            "an unknown project is a readable error: {out}"
        );
        person.cancel().await.unwrap();

        // An agent's server (launched with its attempt in the environment): no create_task.
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env("FLEET_RUN", &run)
            .env("FLEET_TASK", "t")
            .env("FLEET_ATTEMPT", "1");
        let client = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        assert_eq!(
            names(client.list_all_tools().await.unwrap()),
            [
                "get_status",
                "list_blocked",
                "list_tasks",
                "memory_search",
                "read_context",
                "remember",
                "report_error",
                "report_progress"
            ]
        );
        assert!(
            client
                .call_tool(
                    CallToolRequestParams::new("create_task")
                        .with_arguments(args(json!({"project": "shop", "request": "spawn"})))
                )
                .await
                .is_err(),
            "an agent cannot file work"
        );

        let (_, out) = call(&client, "get_status", json!({"id": "e1"})).await;
        let status: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(status["task"]["request"], "Add a changelog");
        assert_eq!(status["task"]["state"], "research");
        let (err, out) = call(&client, "get_status", json!({"id": "e7"})).await;
        assert!(err && out.contains("e7"));

        let (_, out) = call(&client, "list_tasks", json!({"state": "research,plan"})).await;
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["total"], 1);
        let (_, out) = call(&client, "list_tasks", json!({"state": "done"})).await;
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 0);

        let (err, out) = call(
            &client,
            "report_progress",
            json!({"message": "running the tests", "percent": 40}),
        )
        .await;
        assert!(!err, "{out}");
        let (err, out) = call(
            &client,
            "report_error",
            json!({"message": "npm is not installed"}),
        )
        .await;
        assert!(!err, "{out}");
        let (err, _) = call(&client, "report_progress", json!({"message": "  "})).await;
        assert!(err, "an empty report is refused");

        let (_, out) = call(&client, "read_context", json!({"project": "shop"})).await;
        let ctx: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(ctx["checks"], json!(["test -s README.md"]));
        client.cancel().await.unwrap();
    });
    // The reports are events of the attempt the server was launched for.
    let events = inst.store().events(Some(&run), 0, 1000).unwrap();
    let progress = events
        .iter()
        .find(|e| e.kind == "attempt.progress")
        .expect("a progress event");
    assert_eq!(
        (progress.task.as_deref(), progress.attempt),
        (Some("t"), Some(1))
    );
    assert_eq!(progress.data["message"], "running the tests");
    assert_eq!(progress.data["percent"], 40.0);
    let error = events
        .iter()
        .find(|e| e.kind == "attempt.reported_error")
        .expect("an error event");
    assert_eq!(error.data["message"], "npm is not installed");
}

#[test]
fn the_http_server_needs_a_submit_token_and_records_reports() {
    let (_server, inst, run) = instance();
    let submit = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    let read = inst
        .ok(&["token", "create", "--scope", "read"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let url = format!("{}/mcp", served.url);
    http.rt.block_on(async {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let connect = |token: Option<&str>| {
            let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.clone());
            if let Some(t) = token {
                cfg = cfg.auth_header(t.to_string());
            }
            ().serve(StreamableHttpClientTransport::from_config(cfg))
        };
        assert!(connect(None).await.is_err(), "no token: refused");
        assert!(connect(Some(&read)).await.is_err(), "a read token: refused");
        let client = connect(Some(&submit)).await.unwrap();
        let (err, out) = call(
            &client,
            "report_progress",
            json!({"message": "reading the code"}),
        )
        .await;
        assert!(
            err && out.contains("run"),
            "over HTTP the caller names its attempt: {out}"
        );
        let (err, out) = call(
            &client,
            "report_progress",
            json!({"message": "reading the code", "run": run, "task": "t", "attempt": 1}),
        )
        .await;
        assert!(!err, "{out}");
        let (err, out) = call(
            &client,
            "report_progress",
            json!({"message": "x", "run": "nope", "task": "t"}),
        )
        .await;
        assert!(err && out.contains("nope"), "{out}");
        let (err, out) = call(
            &client,
            "create_task",
            json!({"project": "shop", "request": "Add a license"}),
        )
        .await;
        assert!(!err, "{out}");
        client.cancel().await.unwrap();
    });
    let events = inst.store().events(Some(&run), 0, 1000).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "attempt.progress" && e.data["message"] == "reading the code")
    );
    // The task the MCP client created is worked on by the server (it fails for want of a
    // researcher profile here, which is still work started).
    let (_, d) = http.get(&format!("{}/api/v1/tasks/e1", served.url), None);
    assert_eq!(d["task"]["request"], "Add a license");
}

#[test]
fn a_real_claude_launched_by_fleet_reports_progress_through_the_mcp_server() {
    let server = scripted_server();
    // The scripted model has claude call Fleet's MCP tool, then do the work.
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new()
            .tool(
                "report_progress",
                json!({"message": "halfway there", "percent": 50}),
            )
            .write_file("done.txt", "done\n"),
    );
    let inst = Instance::new(&server);
    std::fs::write(
        inst.repo.join("book.yaml"),
        "name: mcp\ntasks:\n  - id: work\n    role: developer\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n",
    )
    .unwrap();
    let out = inst.fleet(&["run", "book.yaml", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Value = serde_json::from_str(&inst.ok(&["runs", "--json"])).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let events = inst.store().events(Some(&run), 0, 10_000).unwrap();
    let progress = events
        .iter()
        .find(|e| e.kind == "attempt.progress")
        .unwrap_or_else(|| {
            panic!(
                "no progress event: {:?}",
                events.iter().map(|e| &e.kind).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        (progress.task.as_deref(), progress.attempt),
        (Some("work"), Some(1))
    );
    assert_eq!(progress.data["message"], "halfway there");
    assert_eq!(progress.data["percent"], 50.0);
    // claude saw the tool's answer.
    let second = server.requests("developer");
    assert!(
        second.iter().any(|r| r.contains("attempt.progress")),
        "the tool result reached the model"
    );
}

/// codex and gemini get Fleet's MCP server through their own config files (`[mcp_servers]` in
/// codex's config.toml, `mcpServers` in gemini's settings) and call it like claude does. (qwen
/// gets it in its settings too, but offers MCP tools only through its `tool_search` tool,
/// which the scripted model does not drive.)
#[test]
fn codex_and_gemini_launched_by_fleet_report_progress_too() {
    let server = fleet_testkit::ModelServer::start();
    let inst = Instance::new(&server);
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        fleet_testkit::agent_bin_dir().display()
    );
    let mut yaml = String::from("agents:\n");
    for (cli, model, account) in [
        ("codex", "gpt-5.1-codex", "openai"),
        ("gemini", "gemini-2.5-pro", "google"),
    ] {
        server.add_scenario(
            cli,
            fleet_testkit::Scenario::new()
                .tool(
                    "report_progress",
                    json!({"message": format!("{cli} is halfway")}),
                )
                .write_file("done.txt", "done\n"),
        );
        yaml.push_str(&format!(
            "  {cli}-dev:\n    cli: {cli}\n    model: {model}\n    account: {account}\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\n",
            server.base_url(cli)
        ));
    }
    yaml.push_str("accounts:\n  openai: { secrets: [OPENAI_API_KEY] }\n  google: { secrets: [GEMINI_API_KEY] }\n");
    std::fs::write(inst.home.join("fleet.yaml"), yaml).unwrap();
    for cli in ["codex", "gemini"] {
        std::fs::write(
            inst.repo.join("book.yaml"),
            format!("name: mcp-{cli}\ntasks:\n  - id: work\n    agent: {cli}-dev\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n"),
        )
        .unwrap();
        let out = inst
            .command(&["run", "book.yaml", "-q"])
            .env("OPENAI_API_KEY", "sk-test-0123456789")
            .env("GEMINI_API_KEY", "gemini-test-0123456789")
            .output()
            .unwrap();
        if !out.status.success() {
            let logs = std::fs::read_dir(inst.home.join(".fleet/runs"))
                .unwrap()
                .flatten()
                .filter(|d| d.file_name().to_string_lossy().contains(cli))
                .map(|d| {
                    std::fs::read_to_string(d.path().join("logs/work.log")).unwrap_or_default()
                })
                .collect::<String>();
            let tail: String = logs
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "{cli}: the run failed: {}\n{tail}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let runs: Value = serde_json::from_str(&inst.ok(&["runs", "--json"])).unwrap();
        let run = runs[0]["id"].as_str().unwrap().to_string();
        assert!(run.contains(cli), "{run}");
        let events = inst.store().events(Some(&run), 0, 10_000).unwrap();
        let progress = events
            .iter()
            .find(|e| e.kind == "attempt.progress")
            .unwrap_or_else(|| {
                panic!(
                    "{cli}: no progress event; requests: {:?}",
                    server
                        .requests(cli)
                        .iter()
                        .map(|r| format!(
                            "{} | tools {:?} | outputs {:?}",
                            r.outcome,
                            r.body["tools"].as_array().map(|t| t
                                .iter()
                                .filter(|x| x["name"] == "mcp__fleet")
                                .map(|x| x.to_string().chars().take(900).collect::<String>())
                                .collect::<Vec<_>>()),
                            r.body["input"].as_array().map(|t| t
                                .iter()
                                .filter(|x| x["type"] == "function_call_output")
                                .map(|x| x["output"].to_string())
                                .collect::<Vec<_>>())
                        ))
                        .collect::<Vec<_>>()
                )
            });
        assert_eq!(progress.data["message"], format!("{cli} is halfway"));
        assert_eq!(
            (progress.task.as_deref(), progress.attempt),
            (Some("work"), Some(1))
        );
    }
}

/// An agent remembers a lesson over MCP (its attempt is the provenance) and finds it again with
/// `memory_search`; a person's CLI sees the same lesson.
#[test]
fn agents_remember_and_search_memory_over_mcp() {
    let (_server, inst, run) = instance();
    let http = Http::new();
    let id = http.rt.block_on(async {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env("FLEET_RUN", &run)
            .env("FLEET_TASK", "t")
            .env("FLEET_ATTEMPT", "1");
        let client = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        let (err, out) = call(
            &client,
            "remember",
            json!({"lesson": "Shop prices are integers in cents, never floats.",
                   "project": "shop", "words": ["price"]}),
        )
        .await;
        assert!(!err, "{out}");
        let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (err, out) = call(
            &client,
            "memory_search",
            json!({"query": "how are prices stored in cents"}),
        )
        .await;
        assert!(!err, "{out}");
        let found: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            found["results"][0]["key"],
            Value::String(id.clone()),
            "{found}"
        );
        let (err, out) = call(
            &client,
            "memory_search",
            json!({"query": "x", "kinds": ["emails"]}),
        )
        .await;
        assert!(err && out.contains("emails"), "{out}");
        let (err, out) = call(
            &client,
            "remember",
            json!({"lesson": "x y z", "project": "nope"}),
        )
        .await;
        assert!(err && out.contains("nope"), "{out}");
        client.cancel().await.unwrap();
        id
    });
    let shown: Value = serde_json::from_str(&inst.ok(&["memory", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["scope"], json!({"kind": "project", "name": "shop"}));
    assert_eq!(shown["provenance"][0]["source"], "agent");
    assert_eq!(shown["provenance"][0]["task"], "t");
    assert_eq!(shown["provenance"][0]["attempt"], 1);
}
