//! The board in a real browser (Debian's chromium, headless, over WebDriver) while the real
//! claude CLI works against the scripted model server: a running task's live log, running
//! attempts and activity; after it lands, the epic's diff, the attempt table with agent,
//! model, tokens and cost, and the outcomes; after a reload the heartbeat shows the earlier
//! events; a blocked task shows its question and is answered from the page.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use fleet_testkit::webdriver::Browser;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(180);

#[test]
fn the_board_shows_live_work_its_change_outcomes_history_and_takes_answers() {
    let server = scripted_server();
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new().shell(format!(
            "echo \"working on $FLEET_TASK\"; while [ ! -e {} ]; do sleep 0.1; done; echo \"$FLEET_TASK is done\" > \"$FLEET_TASK.txt\"",
            go.display()
        )),
    );
    let inst = Instance::new(&server);
    inst.add_shop();
    let token = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let (s, _) = http.post(
        &format!("{}/api/v1/tasks", served.url),
        Some(&token),
        json!({"project": "shop", "request": "Add the a, b and c files to the shop"}),
    );
    assert_eq!(s, 201);
    http.rt.block_on(async {
        let b = Browser::launch().await.unwrap();
        b.goto(&format!("{}/#/tasks/e1", served.url)).await.unwrap();
        // While the developers run: who runs, and the live log of their tool calls.
        b.wait_present("#detail-running [data-running-task]", WAIT)
            .await
            .unwrap();
        b.wait_text(
            "#detail-running",
            |t| t.contains("dev-claude") && t.contains("claude-sonnet-4-5"),
            WAIT,
        )
        .await
        .unwrap();
        b.wait_present("#detail-live li[data-kind='attempt.tool_call']", WAIT)
            .await
            .unwrap();
        b.wait_text("#detail-live", |t| t.contains("while [ ! -e"), WAIT)
            .await
            .unwrap();
        b.wait_text("[data-metric=in_work]", |t| t.starts_with('1'), WAIT)
            .await
            .unwrap();

        // Done: the change, the attempts, the outcomes.
        std::fs::write(&go, "").unwrap();
        b.wait_present("[data-column=awaiting_acceptance] [data-task=e1]", WAIT)
            .await
            .unwrap();
        b.wait_present("#detail-diff [data-file='a.txt']", WAIT)
            .await
            .unwrap();
        b.wait_present("#detail-diff [data-file='fix-review.txt']", WAIT)
            .await
            .unwrap();
        b.wait_text("#detail-diff", |t| t.contains("a.txt") && t.contains("+1 -0"), WAIT)
            .await
            .unwrap();
        b.wait_text(
            "#detail-attempts",
            |t| t.contains("dev-claude") && t.contains("claude-sonnet-4-5"),
            WAIT,
        )
        .await
        .unwrap();
        // Its tokens and cost are the API's figures, formatted as the board formats them.
        let detail: serde_json::Value = http
            .client
            .get(format!("{}/api/v1/tasks/e1", served.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let dev = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["profile"] == "dev-claude")
            .expect("a dev-claude attempt")
            .clone();
        let tokens = dev["tokens"].as_u64().unwrap();
        assert!(tokens > 0, "{dev}");
        let row = format!(
            "#detail-attempts tr[data-run='{}'][data-attempt='{}']",
            dev["run_id"].as_str().unwrap(),
            dev["n"]
        );
        assert_eq!(
            b.text(&format!("{row} [data-k=tokens]")).await.unwrap(),
            board_tokens(tokens)
        );
        let cost = dev["cost_usd"].as_f64().unwrap();
        assert_eq!(
            b.text(&format!("{row} [data-k=cost]")).await.unwrap(),
            if cost == 0.0 {
                "—".to_string()
            } else {
                format!("${cost:.2}")
            }
        );
        b.wait_text(
            "#outcomes [data-outcome-total] [data-k=delivered]",
            |t| t == "1",
            WAIT,
        )
        .await
        .unwrap();
        b.wait_present("#outcomes [data-profile=dev-claude]", WAIT)
            .await
            .unwrap();

        // A reload: the heartbeat shows what happened before it, with no new event.
        b.goto(&format!("{}/", served.url)).await.unwrap();
        b.refresh().await.unwrap();
        b.wait_present(
            "#heartbeat li[data-kind='task.awaiting_acceptance']",
            Duration::from_secs(20),
        )
        .await
        .unwrap();

        // A blocked task: its question on the board and in its panel; answered from the page.
        {
            let store = inst.store();
            let blocked = fleet_store::EpicRow {
                id: "e9".into(),
                project: "shop".into(),
                request: "Make the shop fast".into(),
                state: "blocked".into(),
                cycle: 1,
                data: json!({"machine": {"stage": "blocked", "cycle": 1, "replans": 0, "rearchitects": 0,
                    "has_context": true, "needs_design": false,
                    "blocked": {"at": "plan", "question": "Which page is slow: the cart or the search?"}}}),
                created_at: fleet_views::now_ms(),
                updated_at: fleet_views::now_ms(),
                ..Default::default()
            };
            let ev = fleet_store::NewEvent {
                at: fleet_views::now_ms(),
                run_id: "e9".into(),
                task: Some("e9".into()),
                attempt: None,
                kind: "task.blocked".into(),
                data: json!({"stage": "plan", "question": "Which page is slow: the cart or the search?"}),
            };
            store.save_epic(&blocked, &[ev]).unwrap();
        }
        b.wait_present("[data-column=blocked] [data-task=e9]", WAIT)
            .await
            .unwrap();
        b.wait_text(
            "[data-metric=blocked]",
            |t| t.contains("Which page is slow"),
            WAIT,
        )
        .await
        .unwrap();
        b.type_into("#token", &token).await.unwrap();
        b.click("[data-column=blocked] [data-task=e9]").await.unwrap();
        b.wait_text(
            "#blocked-question",
            |t| t.contains("Which page is slow: the cart or the search?"),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        b.type_into("#answer-text", "The search page").await.unwrap();
        b.click("#answer").await.unwrap();
        b.screenshot_png(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board.png"))
            .await
            .unwrap();
        let errors: Vec<String> = b
            .console_errors()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| !e.contains("401"))
            .collect();
        assert!(errors.is_empty(), "console errors: {errors:?}");
    });
    let answered = wait_for(30, "e9's answer recorded", || {
        let shown = inst.show("e9");
        (shown["answers"][0]["answer"] == "The search page").then_some(shown)
    });
    assert_eq!(
        answered["answers"][0]["question"],
        "Which page is slow: the cart or the search?"
    );
}

/// The board's `tokens()`: exact below 1,000, then thousands with one decimal ("1.2k", "3k").
fn board_tokens(v: u64) -> String {
    if v < 1000 {
        return v.to_string();
    }
    let k = format!("{:.1}", v as f64 / 1e3);
    format!("{}k", k.strip_suffix(".0").unwrap_or(&k))
}
