//! The read model the CLI and the API share (`fleet-views`): `fleet task show` is live while a
//! stage runs (its current stage, the running attempts with their agent and since when, tasks
//! not "planned"), `fleet task show --json` and `GET /api/v1/tasks/{id}` agree, `fleet task
//! ls` has a reason column, and `fleet stats` and `/metrics` give the outcomes. The epic is
//! worked on by the real claude CLI against the scripted model server.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use serde_json::{Value, json};

#[test]
fn task_show_is_live_mid_run_and_agrees_with_the_api() {
    let server = scripted_server();
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    // The developers wait for the test to let them finish: the stage is seen running.
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new().shell(format!(
            "while [ ! -e {} ]; do sleep 0.1; done; echo \"$FLEET_TASK is done\" > \"$FLEET_TASK.txt\"",
            go.display()
        )),
    );
    let inst = Instance::new(&server);
    inst.add_shop();
    let submit = inst
        .ok(&["token", "create", "--scope", "submit"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let api = |path: &str| format!("{}{path}", served.url);
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        json!({"project": "shop", "request": "Add the a, b and c files to the shop"}),
    );
    assert_eq!(s, 201);

    // Mid-run: the CLI shows the implement stage and its running developer attempts.
    let shown = wait_for(120, "developers at work in task show", || {
        let v = inst.show("e1");
        (v["current"]["stage"] == "implement"
            && v["current"]["running"]
                .as_array()
                .is_some_and(|r| r.len() >= 2))
        .then_some(v)
    });
    let running = shown["current"]["running"].as_array().unwrap();
    for a in running {
        assert_eq!(a["agent"], "dev-claude", "{a}");
        assert_eq!(a["cli"], "claude");
        assert_eq!(a["model"], "claude-sonnet-4-5");
        assert!(a["started_at"].as_i64().unwrap() > 0);
        assert_eq!(a["outcome"], "running");
    }
    let states: Vec<&str> = shown["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert!(
        states.iter().filter(|s| **s == "running").count() >= 2 && !states.contains(&"planned"),
        "tasks show their live state: {states:?}"
    );
    let text = inst.ok(&["task", "show", "e1"]);
    assert!(text.contains("now: implement (cycle 1)"), "{text}");
    assert!(
        text.contains("dev-claude (claude-sonnet-4-5) since"),
        "{text}"
    );
    assert!(!text.contains("planned"), "{text}");
    // The API's detail names the same running attempts.
    let (_, d) = http.get(&api("/api/v1/tasks/e1"), None);
    let ids = |v: &Value| -> Vec<(String, u64)> {
        let mut ids: Vec<(String, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["task_id"].as_str().unwrap().to_string(),
                    a["n"].as_u64().unwrap(),
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(d["current"]["stage"], "implement");
    assert!(ids(&d["current"]["running"]).len() >= ids(&shown["current"]["running"]).len().min(2));

    // Let them finish; at rest, every field of the CLI's document equals the API's.
    std::fs::write(&go, "").unwrap();
    wait_for(180, "e1 awaiting acceptance", || {
        let (_, d) = http.get(&api("/api/v1/tasks/e1"), None);
        (d["task"]["state"] == "awaiting_acceptance").then_some(())
    });
    let cli = inst.show("e1");
    let (_, d) = http.get(&api("/api/v1/tasks/e1"), None);
    let fields = cli.as_object().unwrap();
    assert!(fields.len() > 20);
    for (k, v) in fields {
        assert_eq!(
            &d[k], v,
            "field {k} differs between task show --json and the API"
        );
    }
    assert!(cli["current"].is_null());
    // Every attempt says who played it, on which model, its tokens and cost.
    let attempts = cli["attempts"].as_array().unwrap();
    assert!(
        attempts
            .iter()
            .filter(|a| a["agent"] == "dev-claude")
            .all(|a| a["tokens"].as_u64().unwrap() > 0 && a["model"] == "claude-sonnet-4-5")
    );
    // The review rejected cycle 1: the history says so.
    let history = cli["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["kind"] == "epic.stage_finished"
            && h["why"].as_str().unwrap().starts_with("review -> plan")),
        "{history:?}"
    );

    // Outcomes: the CLI and /metrics.
    let stats: Value = serde_json::from_str(&inst.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["total"]["requests"], 1);
    assert_eq!(stats["total"]["delivered"], 1);
    assert_eq!(stats["total"]["accepted"], 0);
    assert!(stats["total"]["to_pull_request_secs_avg"].as_f64().unwrap() > 0.0);
    let dev = stats["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "dev-claude")
        .expect("the developer profile has outcomes");
    assert!(dev["passed"].as_u64().unwrap() >= 4, "{dev}");
    let text = inst.ok(&["stats"]);
    assert!(
        text.contains("dev-claude") && text.contains("shop"),
        "{text}"
    );
    let metrics = http.rt.block_on(async {
        reqwest::get(api("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("fleet_requests{project=\"shop\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("fleet_profile_pass_rate{profile=\"dev-claude\"}"));
}

#[test]
fn task_ls_gives_the_reason_of_blocked_and_failed_epics() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    inst.add_shop();
    {
        let store = inst.store();
        let blocked = fleet_store::EpicRow {
            id: "e7".into(),
            project: "shop".into(),
            request: "Deploy the shop".into(),
            state: "blocked".into(),
            data: json!({"machine": {"stage": "blocked", "cycle": 1, "replans": 0, "rearchitects": 0,
                "has_context": true, "needs_design": false,
                "blocked": {"at": "deliver", "question": "GITHUB_TOKEN is not set: set it, then fleet task retry e7"}}}),
            ..Default::default()
        };
        let failed = fleet_store::EpicRow {
            id: "e8".into(),
            project: "shop".into(),
            request: "Spend too much".into(),
            state: "failed".into(),
            data: json!({}),
            stages: vec![fleet_store::StageRow {
                stage: "implement".into(),
                cycle: 1,
                state: "failed".into(),
                detail: Some("the epic's budget of $5.00 is spent".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.save_epic(&blocked, &[]).unwrap();
        store.save_epic(&failed, &[]).unwrap();
    }
    let text = inst.ok(&["task", "ls"]);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} in {text}"))
            .to_string()
    };
    assert!(text.lines().next().unwrap().ends_with("REASON"), "{text}");
    assert!(line("e7").contains("GITHUB_TOKEN is not set"), "{text}");
    assert!(line("e8").contains("budget of $5.00 is spent"), "{text}");
    let shown = inst.ok(&["task", "show", "e8"]);
    assert!(
        shown.contains("reason   the epic's budget of $5.00 is spent"),
        "{shown}"
    );
    let shown = inst.ok(&["task", "show", "e7"]);
    assert!(
        shown.contains("BLOCKED  at deliver: GITHUB_TOKEN is not set"),
        "{shown}"
    );
}
