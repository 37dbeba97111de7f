//! A known workload written straight into a real SQLite store: epics over three projects and
//! three weeks in every state, their plan and implementation runs, and attempts of three
//! agent profiles with every kind of ending. Deterministic for a given size.
#![allow(dead_code)]

use fleet_store::{
    AttemptRow, Batch, EpicRow, NewEvent, RunRow, SqliteStore, StageRow, Store, TaskRow,
};
use serde_json::json;

/// Monday 2026-11-16 00:00 UTC.
pub const T0: i64 = 1_794_787_200_000;
const DAY: i64 = 86_400_000;

pub const STATES: &[&str] = &[
    "done",
    "awaiting_acceptance",
    "blocked",
    "implement",
    "failed",
    "cancelled",
    "done",
];
pub const PROFILES: &[&str] = &["dev-a", "dev-b", "dev-c"];
pub const OUTCOMES: &[&str] = &[
    "passed",
    "checks_failed",
    "stalled",
    "passed",
    "rate_limited",
    "passed",
    "quota_exhausted",
    "agent_error",
];

fn run(id: &str, created: i64) -> RunRow {
    RunRow {
        id: id.into(),
        name: id.rsplit_once("-2026").map(|(n, _)| n).unwrap_or(id).into(),
        runbook_path: String::new(),
        runbook_source: String::new(),
        repo: "/nowhere".into(),
        base_sha: "0".repeat(40),
        integration_branch: "fleet/x".into(),
        state: "passed".into(),
        created_at: created,
        updated_at: created,
        finished_at: Some(created + 1),
    }
}

fn task(run: &str, idx: u32, id: &str) -> TaskRow {
    TaskRow {
        run_id: run.into(),
        idx,
        id: id.into(),
        state: "merged".into(),
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

/// Writes `n` epics (ids `w0`…) with their runs and attempts.
pub fn write(store: &SqliteStore, n: usize) {
    let projects = ["shop", "blog", "api"];
    for i in 0..n {
        let id = format!("w{i}");
        let created = T0 + (i as i64 % 21) * DAY + i as i64 * 1000;
        let state = STATES[i % STATES.len()];
        let mut stages = vec![StageRow {
            stage: "plan".into(),
            cycle: 1,
            run_id: Some(format!("{id}-plan-c1r0a0-20261116-000000")),
            state: "passed".into(),
            started_at: created + 1000,
            finished_at: Some(created + 2000),
            detail: None,
        }];
        if matches!(state, "done" | "awaiting_acceptance") || i % 11 == 0 {
            if i % 5 == 0 {
                stages.push(StageRow {
                    stage: "deliver".into(),
                    cycle: 1,
                    run_id: None,
                    state: "blocked".into(),
                    started_at: created + 3000,
                    finished_at: Some(created + 4000),
                    detail: Some("GITHUB_TOKEN is not set".into()),
                });
            }
            stages.push(StageRow {
                stage: "deliver".into(),
                cycle: 1,
                run_id: None,
                state: "passed".into(),
                started_at: created + 5000,
                finished_at: Some(created + 60_000 * (1 + i as i64 % 9)),
                detail: None,
            });
        }
        let verdict = match i % 6 {
            0 => "rejected_by_person",
            3 if i % 4 == 1 => "pull_request_comments",
            _ => "approve",
        };
        let data = json!({
            "tasks": [{"id": "t0", "role": "developer", "cycle": 1, "state": "merged", "title": "t0"}],
            "reviews": [{"cycle": 1, "verdict": verdict, "summary": "", "bugs": [], "checks_passed": true}],
        });
        let epic = EpicRow {
            id: id.clone(),
            project: projects[i % projects.len()].into(),
            request: format!("Request number {i}"),
            state: state.into(),
            cycle: 1,
            branch: format!("fleet/epics/i/{id}"),
            stages,
            data,
            created_at: created,
            updated_at: created + 70_000,
            ..EpicRow::default()
        };
        store.save_epic(&epic, &[]).unwrap();

        let plan_run = format!("{id}-plan-c1r0a0-20261116-000000");
        store
            .create_run(&run(&plan_run, created), &[task(&plan_run, 0, "plan")], &[])
            .unwrap();
        let impl_run = format!("{id}-implement-c1r0a0-20261116-000001");
        let tasks_n = 1 + i % 3;
        let tasks: Vec<TaskRow> = (0..tasks_n)
            .map(|t| task(&impl_run, t as u32, &format!("t{t}")))
            .collect();
        store
            .create_run(&run(&impl_run, created), &tasks, &[])
            .unwrap();
        let mut attempts = vec![AttemptRow {
            run_id: plan_run.clone(),
            task_id: "plan".into(),
            n: 1,
            started_at: created + 1000,
            finished_at: Some(created + 2000),
            outcome: "passed".into(),
            profile: Some("planner-x".into()),
            cost_usd: 0.01,
            input_tokens: 100,
            ..AttemptRow::default()
        }];
        let mut k = i;
        for t in 0..tasks_n {
            let tries = 1 + (k % 3);
            for n in 1..=tries {
                k = k.wrapping_mul(31).wrapping_add(7);
                let outcome = if n == tries {
                    "passed"
                } else {
                    OUTCOMES[k % OUTCOMES.len()]
                };
                attempts.push(AttemptRow {
                    run_id: impl_run.clone(),
                    task_id: format!("t{t}"),
                    n: n as u32,
                    started_at: created + 10_000 * n as i64,
                    finished_at: Some(created + 10_000 * n as i64 + 5000),
                    outcome: outcome.into(),
                    profile: Some(PROFILES[(k / 3) % PROFILES.len()].into()),
                    cost_usd: 0.001 * ((k % 50) as f64 + 1.0),
                    input_tokens: 10 * (k % 100) as u64,
                    output_tokens: (k % 10) as u64,
                    ..AttemptRow::default()
                });
            }
        }
        // A command attempt (no profile) counts in the tasks, not in any profile.
        if i % 4 == 0 {
            attempts.push(AttemptRow {
                run_id: impl_run.clone(),
                task_id: "t9".into(),
                n: 1,
                started_at: created + 2000,
                finished_at: Some(created + 3000),
                outcome: "passed".into(),
                ..AttemptRow::default()
            });
        }
        store
            .commit(&Batch {
                attempts,
                events: vec![NewEvent {
                    at: created,
                    run_id: impl_run.clone(),
                    task: Some("t0".into()),
                    attempt: None,
                    kind: "task.ready".into(),
                    data: json!({}),
                }],
                ..Batch::default()
            })
            .unwrap();
    }
}
