//! The contract of the summary reads: an epic's summary follows every epic write (and only a
//! write that happened), and the attempt tallies equal the attempts counted one by one.

use super::{event, run_row, task_row};
use crate::{
    AttemptRow, Batch, EpicRow, EpicSummary, ProfileTally, RunTally, StageRow, Store, summarize,
};
use serde_json::json;

fn stage(name: &str, state: &str, finished_at: Option<i64>, detail: Option<&str>) -> StageRow {
    StageRow {
        stage: name.into(),
        cycle: 1,
        state: state.into(),
        started_at: 1,
        finished_at,
        detail: detail.map(Into::into),
        ..StageRow::default()
    }
}

/// Epic summaries and attempt tallies. Needs a fresh store.
pub fn summaries(store: &dyn Store) {
    assert!(store.epic_summaries().unwrap().is_empty());
    assert_eq!(store.attempt_tallies().unwrap(), Default::default());

    let mut e1 = EpicRow {
        id: "e1".into(),
        project: "web".into(),
        request: "add a login page".into(),
        state: "research".into(),
        cycle: 1,
        branch: "fleet/epics/e1".into(),
        created_at: 20,
        updated_at: 20,
        ..EpicRow::default()
    };
    store.create_epic(&e1, &[]).unwrap();
    let first = EpicSummary {
        id: "e1".into(),
        project: "web".into(),
        request: "add a login page".into(),
        state: "research".into(),
        cycle: 1,
        branch: "fleet/epics/e1".into(),
        created_at: 20,
        updated_at: 20,
        delivered_at: None,
        rejected: false,
        blocked_question: None,
        last_stage_detail: None,
    };
    assert_eq!(
        store.epic_summaries().unwrap(),
        std::slice::from_ref(&first)
    );

    // Delivered twice (the first delivery counts), sent back by a person, now blocked.
    let mut e1b = e1.clone();
    e1b.state = "blocked".into();
    e1b.cycle = 2;
    e1b.updated_at = 30;
    e1b.stages = vec![
        stage("deliver", "passed", Some(25), Some("pushed")),
        stage("deliver", "failed", Some(26), None),
        stage("deliver", "passed", Some(28), Some("pushed again")),
        stage("review", "failed", Some(29), Some("no valid review")),
    ];
    e1b.data = json!({
        "reviews": [{"verdict": "approve"}, {"verdict": "rejected_by_person"}],
        "machine": {"blocked": {"question": "Which database?"}},
    });
    store.update_epic(&e1b, 20, &[]).unwrap();
    let second = EpicSummary {
        state: "blocked".into(),
        cycle: 2,
        updated_at: 30,
        delivered_at: Some(25),
        rejected: true,
        blocked_question: Some("Which database?".into()),
        last_stage_detail: Some("no valid review".into()),
        ..first.clone()
    };
    assert_eq!(summarize(&e1b), second);
    assert_eq!(
        store.epic_summaries().unwrap(),
        std::slice::from_ref(&second)
    );

    // A write that did not happen leaves the summary as it was.
    e1.state = "done".into();
    assert!(store.update_epic(&e1, 20, &[]).is_err());
    assert!(store.create_epic(&e1, &[]).is_err());
    assert_eq!(
        store.epic_summaries().unwrap(),
        std::slice::from_ref(&second)
    );

    // Pull request comments count as a rejection; oldest first.
    let e0 = EpicRow {
        id: "e0".into(),
        project: "api".into(),
        request: "older".into(),
        state: "done".into(),
        created_at: 5,
        updated_at: 6,
        data: json!({"reviews": [{"verdict": "pull_request_comments"}]}),
        ..EpicRow::default()
    };
    store
        .save_epic(&e0, &[event("e0", None, "epic.created")])
        .unwrap();
    let all = store.epic_summaries().unwrap();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1"]
    );
    assert!(all[0].rejected);
    assert_eq!(all[0].delivered_at, None);
    assert_eq!(all[1], second);

    // Attempts: two runs, attempts with and without a profile, a task with two attempts.
    for run in ["e1-implement-c1", "e1-review-c1"] {
        store
            .create_run(
                &run_row(run, 1),
                &[
                    task_row(run, 0, "a", "merged"),
                    task_row(run, 1, "b", "merged"),
                ],
                &[],
            )
            .unwrap();
    }
    let attempt =
        |run: &str, task: &str, n: u32, profile: Option<&str>, outcome: &str, cost| AttemptRow {
            run_id: run.into(),
            task_id: task.into(),
            n,
            started_at: 1,
            outcome: outcome.into(),
            profile: profile.map(Into::into),
            cost_usd: cost,
            ..AttemptRow::default()
        };
    let attempts = vec![
        attempt(
            "e1-implement-c1",
            "a",
            1,
            Some("dev-a"),
            "checks_failed",
            0.5,
        ),
        attempt("e1-implement-c1", "a", 2, Some("dev-a"), "passed", 0.25),
        attempt("e1-implement-c1", "b", 1, Some("dev-b"), "passed", 1.0),
        attempt("e1-review-c1", "a", 1, None, "passed", 0.0),
        attempt("e1-review-c1", "b", 1, Some("dev-a"), "running", 0.125),
    ];
    store
        .commit(&Batch {
            attempts,
            ..Batch::default()
        })
        .unwrap();
    let t = store.attempt_tallies().unwrap();
    let run = |run_id: &str, tasks, attempts, cost_usd| RunTally {
        run_id: run_id.into(),
        tasks,
        attempts,
        cost_usd,
    };
    assert_eq!(
        t.runs,
        [
            run("e1-implement-c1", 2, 3, 1.75),
            run("e1-review-c1", 2, 2, 0.125)
        ]
    );
    let profile = |profile: &str, outcome: &str, attempts, cost_usd| ProfileTally {
        profile: profile.into(),
        outcome: outcome.into(),
        attempts,
        cost_usd,
    };
    assert_eq!(
        t.profiles,
        [
            profile("dev-a", "checks_failed", 1, 0.5),
            profile("dev-a", "passed", 1, 0.25),
            profile("dev-a", "running", 1, 0.125),
            profile("dev-b", "passed", 1, 1.0),
        ]
    );
}
