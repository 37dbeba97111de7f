//! The dashboard in a real browser (Debian's chromium, headless, driven over WebDriver): it
//! loads from the binary, a task submitted from the page moves across the board live while
//! the real claude CLI works on it, the metrics update, and accepting from the page finishes
//! it. A second test loads it over 10,000 tasks.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served};

use fleet_store::Store;
use fleet_testkit::webdriver::Browser;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn a_task_moves_across_the_board_live_and_is_accepted_from_the_page() {
    let server = scripted_server();
    // The developer takes a moment, so the task is seen in work.
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new()
            .shell("sleep 1; echo \"$FLEET_TASK is done\" > \"$FLEET_TASK.txt\""),
    );
    let inst = Instance::new(&server);
    inst.add_shop();
    let token = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    http.rt.block_on(async {
        let b = Browser::launch().await.unwrap();
        b.goto(&format!("{}/", served.url)).await.unwrap();
        b.wait_present("#live[data-state=open]", Duration::from_secs(20))
            .await
            .unwrap();
        b.wait_text(
            "[data-metric=in_work]",
            |t| t.starts_with('0'),
            Duration::from_secs(20),
        )
        .await
        .unwrap();

        // Without a token the page says what is missing.
        b.wait_present(
            "#new-task-project option[value=shop]",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        b.type_into("#new-task-request", "Add the a, b and c files to the shop")
            .await
            .unwrap();
        b.click("#new-task-submit").await.unwrap();
        b.wait_text("#error", |t| t.contains("submit"), Duration::from_secs(20))
            .await
            .unwrap();

        // With one, the task is filed and travels the board as the fleet works.
        b.type_into("#token", &token).await.unwrap();
        b.type_into("#new-task-request", "Add the a, b and c files to the shop")
            .await
            .unwrap();
        b.click("#new-task-submit").await.unwrap();
        b.wait_present("[data-column=planning] [data-task=e1]", WAIT)
            .await
            .unwrap();
        b.wait_text("[data-metric=in_work]", |t| t.starts_with('1'), WAIT)
            .await
            .unwrap();
        b.wait_present("[data-column=implementing] [data-task=e1]", WAIT)
            .await
            .unwrap();
        b.wait_present("#heartbeat li[data-kind='attempt.started']", WAIT)
            .await
            .unwrap();
        b.wait_present("[data-column=awaiting_acceptance] [data-task=e1]", WAIT)
            .await
            .unwrap();
        b.wait_text("[data-metric=ready_for_acceptance] .n", |t| t == "1", WAIT)
            .await
            .unwrap();
        b.wait_text("[data-metric=in_work]", |t| t.starts_with('0'), WAIT)
            .await
            .unwrap();
        b.wait_text(
            "[data-metric=avg_task_time]",
            |t| t.chars().any(|c| c.is_ascii_digit()),
            WAIT,
        )
        .await
        .unwrap();

        // The task's page: stages as a timeline, the plan, and the decision.
        // (Filing it from the page opened its panel already; a click on the card does the same.)
        if b.attr("#detail", "data-open-task")
            .await
            .unwrap()
            .as_deref()
            != Some("e1")
        {
            b.click("[data-column=awaiting_acceptance] [data-task=e1]")
                .await
                .unwrap();
        }
        b.wait_present("#detail[data-open-task=e1]", Duration::from_secs(20))
            .await
            .unwrap();
        b.wait_present(
            "#detail-stages li[data-stage=review][data-cycle='2']",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        b.wait_present(
            "#detail-plan tr[data-plan-task=fix-review]",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        b.screenshot_png(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"))
            .await
            .unwrap();
        b.click("#accept").await.unwrap();
        b.wait_present("[data-column=done] [data-task=e1]", Duration::from_secs(20))
            .await
            .unwrap();
        b.wait_text(
            "[data-metric=ready_for_acceptance] .n",
            |t| t == "0",
            Duration::from_secs(20),
        )
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
    let (_, d) = http.get(&format!("{}/api/v1/tasks/e1", served.url), None);
    assert_eq!(d["task"]["state"], "done");
}

#[test]
fn the_board_stays_usable_with_ten_thousand_tasks() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    inst.ok(&[
        "project",
        "add",
        "shop",
        "--repo",
        inst.repo.to_str().unwrap(),
    ]);
    {
        let store = inst.store();
        let states = ["done", "failed", "awaiting_acceptance", "cancelled"];
        for i in 0..10_000 {
            let e = fleet_store::EpicRow {
                id: format!("h{i}"),
                project: "shop".into(),
                request: format!("Historic request number {i}"),
                state: states[i % states.len()].into(),
                created_at: i as i64,
                updated_at: i as i64,
                ..Default::default()
            };
            store.save_epic(&e, &[]).unwrap();
        }
    }
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    http.rt.block_on(async {
        let b = Browser::launch().await.unwrap();
        let started = std::time::Instant::now();
        b.goto(&format!("{}/", served.url)).await.unwrap();
        b.wait_text(
            "[data-column=done] .count",
            |t| t.contains("2500") || t.contains("2,500"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let loaded = started.elapsed();
        let cards = b.find_all("[data-column=done] .card").await.unwrap().len();
        assert_eq!(cards, 50, "a column shows its newest 50, not 2,500");
        assert_eq!(
            b.attr("[data-column=done] .card", "data-task")
                .await
                .unwrap()
                .as_deref(),
            Some("h9996")
        );
        b.click("[data-column=done] button.more").await.unwrap();
        b.wait_count(
            "[data-column=done] .card",
            |n| n == 100,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        b.wait_text(
            "[data-metric=ready_for_acceptance] .n",
            |t| t == "2500",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        // A deep link opens the task's page.
        b.goto(&format!("{}/#/tasks/h42", served.url))
            .await
            .unwrap();
        b.wait_text(
            "#detail-request",
            |t| t.contains("Historic request number 42"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        eprintln!("dashboard over 10,000 tasks: first full board in {loaded:?}");
    });
}
