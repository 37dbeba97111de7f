//! The board's ETA in a real browser (Debian's chromium, headless): for a known DAG — `a`,
//! `b` after `a`, `c` — whose developer tasks the real claude CLI plays against the scripted
//! model server, the ETA shown is the remaining critical path at the observed speed: with `a`
//! and `c` running for longer than a developer task took before, what is left is `b`, one
//! observed duration. The observed duration is computed here straight from the store's
//! attempts, not by the read model; the board's average time per task is that same figure,
//! and "in work" counts the request that runs, not one waiting in the queue.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use fleet_testkit::webdriver::Browser;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The dashboard's `dur()`.
fn dur(secs: f64) -> String {
    let secs = secs.max(0.0).round() as i64;
    if secs < 60 {
        return format!("{secs}s");
    }
    let (d, h, m, s) = (
        secs / 86400,
        (secs % 86400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {s}s")
    }
}

/// The mean time, in seconds, from a developer task's first attempt's start to its last
/// attempt's end, over the implementation tasks that passed.
fn observed_developer_secs(store: &dyn Store) -> Option<f64> {
    let mut spans: BTreeMap<(String, String), (i64, i64, bool)> = BTreeMap::new();
    for a in store.attempts_since(i64::MIN).unwrap() {
        if a.run_id.split('-').nth(1) != Some("implement") {
            continue;
        }
        let Some(end) = a.finished_at else { continue };
        let s = spans
            .entry((a.run_id.clone(), a.task_id.clone()))
            .or_insert((a.started_at, end, false));
        s.0 = s.0.min(a.started_at);
        s.1 = s.1.max(end);
        s.2 |= a.outcome == "passed";
    }
    let done: Vec<f64> = spans
        .values()
        .filter(|s| s.2)
        .map(|s| (s.1 - s.0) as f64 / 1000.0)
        .collect();
    (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64)
}

#[test]
fn the_board_shows_the_remaining_critical_path_at_observed_speeds() {
    let server = scripted_server();
    let gate = tempfile::tempdir().unwrap();
    let (hold, go) = (gate.path().join("hold"), gate.path().join("go"));
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new().shell(format!(
            "if [ -e {} ]; then while [ ! -e {} ]; do sleep 0.1; done; fi; echo \"$FLEET_TASK is done\" > \"$FLEET_TASK.txt\"",
            hold.display(),
            go.display()
        )),
    );
    let inst = Instance::new(&server);
    inst.add_shop();
    let token = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    // One request driven at a time: a third one waits in the queue.
    let served = Served::start(&inst, "127.0.0.1", &["--epics", "1"]);
    let http = Http::new();
    let submit = |request: &str| {
        let (s, _) = http.post(
            &format!("{}/api/v1/tasks", served.url),
            Some(&token),
            json!({"project": "shop", "request": request}),
        );
        assert_eq!(s, 201);
    };
    // A first request goes through: its developer tasks are the observed speed.
    submit("Add the a, b and c files to the shop");
    wait_for(300, "e1 awaiting acceptance", || {
        (inst.show("e1")["state"] == "awaiting_acceptance").then_some(())
    });
    let store = inst.store();
    let observed = observed_developer_secs(&store).expect("e1's tasks passed");

    // The second: a and c run and do not end; b waits for a.
    std::fs::write(&hold, "").unwrap();
    submit("Add the a, b and c files to the shop again");
    let started_a = wait_for(300, "e2's a and c running", || {
        let attempts = store.attempts_since(i64::MIN).unwrap();
        let running = |task: &str| {
            attempts.iter().find(|a| {
                a.run_id.starts_with("e2-implement-") && a.task_id == task && a.outcome == "running"
            })
        };
        Some((running("a")?.started_at, running("c")?)).map(|(a, _)| a)
    });
    // Once a has run for longer than a task takes, all that is left is b: one observed time.
    wait_for(120, "a running for longer than the observed time", || {
        (fleet_views::now_ms() - started_a > (observed * 1000.0) as i64 + 1000).then_some(())
    });
    assert_eq!(
        observed_developer_secs(&store),
        Some(observed),
        "nothing else passed"
    );
    let expected = dur(observed);
    let b = http.rt.block_on(Browser::launch()).unwrap();
    http.rt.block_on(async {
        b.goto(&format!("{}/", served.url)).await.unwrap();
        b.wait_text(
            "#epic-progress-label",
            |t| t.contains("e2"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        b.wait_text(
            "[data-metric=eta]",
            |t| t == expected,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        // The average time per task is over the real (implementation) tasks that passed, not
        // the planner's, reviewer's or verify steps.
        b.wait_text(
            "[data-metric=avg_task_time]",
            |t| t == expected,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        b.screenshot_png(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board-eta.png"))
            .await
            .unwrap();
    });
    // A third request waits for the driver e2 holds: "in work" counts what runs, not it.
    submit("Add the d file to the shop");
    http.rt.block_on(async {
        b.wait_text(
            "#epic-progress-label",
            |t| t.contains("e3"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!(b.text("[data-metric=in_work]").await.unwrap(), "1");
        assert_eq!(
            b.attr("[data-metric=in_work]", "title")
                .await
                .unwrap()
                .as_deref(),
            Some("e2")
        );
    });
    std::fs::write(&go, "").unwrap();
}
