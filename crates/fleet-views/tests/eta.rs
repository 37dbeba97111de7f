//! The ETA of an epic in implementation, from the store: observed durations per role (real
//! work only: the planner's and reviewer's time does not count), the remaining critical path,
//! and the time running tasks have already spent.

use fleet_store::{
    AttemptRow, Batch, Durability, EpicRow, RunRow, SqliteStore, StageRow, Store, TaskRow,
};
use serde_json::json;

fn run(id: &str, state: &str, at: i64) -> RunRow {
    RunRow {
        id: id.into(),
        name: id.into(),
        runbook_path: String::new(),
        runbook_source: String::new(),
        repo: "/nowhere".into(),
        base_sha: "0".repeat(40),
        integration_branch: "fleet/x".into(),
        state: state.into(),
        created_at: at,
        updated_at: at,
        finished_at: None,
    }
}

fn task(run: &str, idx: u32, id: &str, state: &str) -> TaskRow {
    TaskRow {
        run_id: run.into(),
        idx,
        id: id.into(),
        state: state.into(),
        attempts: 0,
        failures: 0,
        not_before: 0,
        reason: None,
        commit_sha: None,
        merge_sha: None,
        started_at: None,
        finished_at: None,
    }
}

fn attempt(run: &str, task: &str, n: u32, from: i64, to: Option<i64>, outcome: &str) -> AttemptRow {
    AttemptRow {
        run_id: run.into(),
        task_id: task.into(),
        n,
        started_at: from,
        finished_at: to,
        outcome: outcome.into(),
        profile: Some("dev".into()),
        ..AttemptRow::default()
    }
}

fn epic(id: &str, state: &str, tasks: serde_json::Value, stages: Vec<StageRow>) -> EpicRow {
    EpicRow {
        id: id.into(),
        project: "shop".into(),
        state: state.into(),
        cycle: 1,
        stages,
        data: json!({ "tasks": tasks }),
        ..EpicRow::default()
    }
}

#[test]
fn the_eta_is_the_remaining_critical_path_at_observed_speeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("fleet.db"), Durability::Process).unwrap();
    let now = 1_800_000_000_000i64;
    let s = 1000i64;

    // Done before: a developer task took 100 s (a failed try, then a passing one), a tester
    // task 50 s; its planner took 900 s and its reviewer 600 s, which must not count.
    let past = "p0-implement-c1r0a0-20270115-000000";
    let past_plan = "p0-plan-c1r0a0-20270115-000000";
    let past_review = "p0-review-c1r0a0-20270115-000000";
    store
        .save_epic(
            &epic(
                "p0",
                "done",
                json!([{"id": "x", "role": "developer", "cycle": 1, "state": "merged"},
                       {"id": "y", "role": "tester", "cycle": 1, "state": "merged"}]),
                vec![],
            ),
            &[],
        )
        .unwrap();
    let t0 = now - 3600 * s;
    for (r, tasks) in [
        (
            past,
            vec![task(past, 0, "x", "merged"), task(past, 1, "y", "merged")],
        ),
        (past_plan, vec![task(past_plan, 0, "plan", "passed")]),
        (past_review, vec![task(past_review, 0, "review", "passed")]),
    ] {
        store
            .create_run(&run(r, "passed", t0), &tasks, &[])
            .unwrap();
    }
    store
        .commit(&Batch {
            attempts: vec![
                attempt(past, "x", 1, t0, Some(t0 + 40 * s), "checks_failed"),
                attempt(past, "x", 2, t0 + 50 * s, Some(t0 + 100 * s), "passed"),
                attempt(past, "y", 1, t0, Some(t0 + 50 * s), "passed"),
                attempt(past_plan, "plan", 1, t0, Some(t0 + 900 * s), "passed"),
                attempt(past_review, "review", 1, t0, Some(t0 + 600 * s), "passed"),
            ],
            ..Batch::default()
        })
        .unwrap();

    // Now: a (developer) has run 30 s, c (tester) 10 s; b waits for a; d (developer) waits
    // for a slot. Two slots: c ends at 40, d runs 40..140; a ends at 70, b runs 70..170.
    let live = "e1-implement-c1r0a0-20270115-010000";
    store
        .save_epic(
            &epic(
                "e1",
                "implement",
                json!([{"id": "a", "role": "developer", "cycle": 1, "state": "planned"},
                       {"id": "b", "role": "developer", "cycle": 1, "state": "planned", "depends_on": ["a"]},
                       {"id": "c", "role": "tester", "cycle": 1, "state": "planned"},
                       {"id": "d", "role": "developer", "cycle": 1, "state": "planned"}]),
                vec![StageRow {
                    stage: "implement".into(),
                    cycle: 1,
                    run_id: None,
                    state: "running".into(),
                    started_at: now - 60 * s,
                    finished_at: None,
                    detail: None,
                }],
            ),
            &[],
        )
        .unwrap();
    store
        .create_run(
            &run(live, "running", now - 60 * s),
            &[
                task(live, 0, "a", "running"),
                task(live, 1, "b", "pending"),
                task(live, 2, "c", "running"),
                task(live, 3, "d", "ready"),
            ],
            &[],
        )
        .unwrap();
    store
        .commit(&Batch {
            attempts: vec![
                attempt(live, "a", 1, now - 30 * s, None, "running"),
                attempt(live, "c", 1, now - 10 * s, None, "running"),
            ],
            ..Batch::default()
        })
        .unwrap();

    let week = store.attempts_since(now - 7 * 86_400 * s).unwrap();
    let observed = fleet_views::eta::observed_task_secs(&store, &week).unwrap();
    assert_eq!(observed.get("developer"), Some(&100.0));
    assert_eq!(observed.get("tester"), Some(&50.0));
    assert_eq!(observed.len(), 2, "only real work counts: {observed:?}");

    let view = fleet_views::epic_view(&store, "e1", now).unwrap().unwrap();
    let states: Vec<&str> = view.tasks.iter().map(|t| t.task.state.as_str()).collect();
    assert_eq!(
        states,
        ["running", "pending", "running", "ready"],
        "live, not planned"
    );
    let current = view.current.as_ref().expect("a stage runs");
    assert_eq!(current.stage, "implement");
    assert_eq!(current.running.len(), 2);

    let eta = fleet_views::eta::implement_eta(&view, &observed, 2, now).unwrap();
    assert_eq!(eta, 170.0);
    // With one slot everything queues: c's 40, a's 70, then b and d, 100 each.
    assert_eq!(
        fleet_views::eta::implement_eta(&view, &observed, 1, now).unwrap(),
        310.0
    );
}
