//! A blocked epic is answered from where the person is: the Telegram notification carries its
//! question and the bot takes `/answer e1 …` and `/retry e1` (the Telegram double over real
//! HTTP, `fleet serve`); an MCP client (the official rmcp client on `fleet mcp`) lists blocked
//! tasks with their questions and answers or retries them. An agent's MCP server cannot.

mod support;
use support::scripted::{ALL, Inst};
use support::server::{Http, wait_for};

use fleet_testkit::telegram::TelegramDouble;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::time::Duration;

const BOT_TOKEN: &str = "123456:bot-secret-token";
const CHAT: i64 = 42;
const ASK: &str = r#"{"questions": ["Which page gets dark mode?"]}"#;

#[test]
fn the_telegram_bot_shows_the_question_and_takes_the_answer_and_the_retry() {
    let telegram = TelegramDouble::start(BOT_TOKEN);
    let inst = Inst::new(
        &ALL,
        &format!(
            "notifications:\n  - kind: telegram\n    token_env: TG_TOKEN\n    chat_id: {CHAT}\n    \
             api_url: {tg}\n    on: [blocked, awaiting_acceptance]\n\
             telegram:\n  token_env: TG_TOKEN\n  api_url: {tg}\n  allowed_chats: [{CHAT}]\n  \
             default_project: shop\n",
            tg = telegram.api_url()
        ),
    );
    inst.add_shop();
    std::fs::write(inst.path("ask.json"), ASK).unwrap();
    let mut cmd = inst.command(&["serve", "--bind", "127.0.0.1:0"]);
    cmd.env("TG_TOKEN", BOT_TOKEN);
    let served = spawn_serve(cmd);
    let http = Http::new();
    let state = |id: &str| {
        http.get(&format!("{}/api/v1/tasks/{id}", served.1), Some(&served.2))
            .1["task"]["state"]
            .clone()
    };

    telegram.push_message(CHAT, "/new_task Make it nicer");
    let sent = telegram.wait_sent(1, Duration::from_secs(20));
    assert!(sent[0].1.contains("Created e1 in shop"), "{}", sent[0].1);
    // The blocked notification carries the planner's question and how to answer in the chat.
    let sent = telegram.wait_sent(2, Duration::from_secs(60));
    let note = &sent[1].1;
    assert!(
        note.contains("e1 needs you")
            && note.contains("1. Which page gets dark mode?")
            && note.contains("/answer e1")
            && note.contains("/retry e1"),
        "{note}"
    );
    assert_eq!(state("e1"), "blocked");
    telegram.push_message(CHAT, "/answer e1 The shop page");
    let sent = telegram.wait_sent(3, Duration::from_secs(20));
    assert!(
        sent[2].1.contains("e1 goes on with your answer"),
        "{}",
        sent[2].1
    );
    wait_for(60, "e1 awaiting acceptance", || {
        (state("e1") == "awaiting_acceptance").then_some(())
    });
    assert!(
        inst.prompt("planner")
            .contains("The person answered: The shop page")
    );
    let sent = telegram.wait_sent(4, Duration::from_secs(20));
    assert!(sent[3].1.contains("ready for acceptance"), "{}", sent[3].1);

    // Nothing blocked any more: /retry says so.
    telegram.push_message(CHAT, "/retry e1");
    let sent = telegram.wait_sent(5, Duration::from_secs(20));
    assert!(
        sent[4]
            .1
            .starts_with("Cannot retry e1: epic e1 is not blocked"),
        "{}",
        sent[4].1
    );
}

/// `fleet serve` with stdout read for its address, and a read token; killed when dropped.
struct Serve(std::process::Child, String, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_serve(mut cmd: std::process::Command) -> Serve {
    use std::io::BufRead;
    let home = cmd
        .get_envs()
        .find(|(k, _)| *k == "FLEET_HOME")
        .and_then(|(_, v)| v)
        .unwrap()
        .to_owned();
    let token = std::process::Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["token", "create", "--scope", "read", "--name", "reader"])
        .env("FLEET_HOME", &home)
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&token.stdout)
        .lines()
        .find(|l| l.starts_with("fleet_"))
        .unwrap()
        .trim()
        .to_string();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("fleet serve: listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Serve(child, addr, token)
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
        .call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(a.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let text = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    (r.is_error == Some(true), text)
}

#[test]
fn an_mcp_client_lists_blocked_tasks_with_their_questions_and_answers_them() {
    let inst = Inst::new(&ALL, "");
    inst.add_shop();
    std::fs::write(inst.path("ask.json"), ASK).unwrap();
    inst.expect(&["task", "add", "Make it nicer", "--project", "shop"], 1);
    // e2 is blocked on a missing role instead: retry is its way on.
    inst.configure(&["researcher", "planner", "developer"], "");
    inst.expect(&["task", "add", "Add a file", "--project", "shop"], 1);
    let http = Http::new();
    http.rt.block_on(async {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env_remove("FLEET_RUN");
        let person = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        let (err, out) = call(&person, "list_blocked", json!({})).await;
        assert!(!err, "{out}");
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["total"], 2, "{list}");
        let by_id = |id: &str| {
            list["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == id)
                .cloned()
                .unwrap()
        };
        let e1 = by_id("e1");
        assert_eq!(e1["at"], "plan");
        assert!(
            e1["question"]
                .as_str()
                .unwrap()
                .contains("1. Which page gets dark mode?")
        );
        let e2 = by_id("e2");
        assert_eq!(e2["at"], "review");
        assert!(
            e2["question"].as_str().unwrap().contains("role reviewer"),
            "{e2}"
        );

        let (err, out) = call(&person, "answer_task", json!({"id": "e1", "answer": " "})).await;
        assert!(err && out.contains("needs text"), "{out}");
        let (err, out) = call(
            &person,
            "answer_task",
            json!({"id": "e1", "answer": "The shop page"}),
        )
        .await;
        assert!(!err, "{out}");
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["state"],
            "plan"
        );
        // Still no reviewer: the retry is refused with the question, nothing changes.
        let (err, out) = call(&person, "retry_task", json!({"id": "e2"})).await;
        assert!(
            err && out.contains("still blocked") && out.contains("reviewer"),
            "{out}"
        );
        person.cancel().await.unwrap();
        // With the profile added, a client of the server started on the new config retries.
        inst.configure(&ALL, "");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env_remove("FLEET_RUN");
        let person = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        let (err, out) = call(&person, "retry_task", json!({"id": "e2"})).await;
        assert!(!err, "{out}");
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["state"],
            "review"
        );
        person.cancel().await.unwrap();

        // An agent's server lists but cannot answer for the person.
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet"));
        cmd.arg("mcp")
            .env("FLEET_HOME", &inst.home)
            .env("FLEET_RUN", "r")
            .env("FLEET_TASK", "t")
            .env("FLEET_ATTEMPT", "1");
        let agent = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        assert!(
            agent
                .call_tool(
                    CallToolRequestParams::new("answer_task").with_arguments(
                        json!({"id": "e1", "answer": "x"})
                            .as_object()
                            .unwrap()
                            .clone()
                    )
                )
                .await
                .is_err()
        );
        agent.cancel().await.unwrap();
    });
    // Driven on, both reach acceptance.
    for id in ["e1", "e2"] {
        let out = inst.expect(&["task", "resume", id], 0);
        assert!(
            out.contains(&format!("epic {id} awaiting_acceptance")),
            "{out}"
        );
    }
}
