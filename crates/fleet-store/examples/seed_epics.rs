//! Seeds a store with tasks (epics) for the API task-list benchmark (bench/api_tasks.py):
//! N epics in the mix of states a busy fleet has, each written through
//! `Store::create_epic` (its row, its summary and its `task.created` event, as Fleet writes
//! them), from THREADS threads with a handle each. The documents are shaped like real ones
//! (stages, a plan of three tasks, a review: ~2 KB), as in bench/server.py's P6.
//!
//! `cargo run -p fleet-store --example seed_epics -- STORE_URL N THREADS`

use fleet_store::{EpicRow, NewEvent, PostgresStore, Store};
use serde_json::json;

/// State mix (weights out of 100), as bench/server.py's P6.
const STATES: &[(&str, usize)] = &[
    ("done", 60),
    ("failed", 8),
    ("cancelled", 4),
    ("awaiting_acceptance", 8),
    ("implement", 8),
    ("review", 4),
    ("plan", 4),
    ("research", 2),
    ("deliver", 1),
    ("architect", 1),
];

fn epic(i: usize, state: &str) -> EpicRow {
    let at = 1_700_000_000_000 + i as i64 * 1000;
    let stages: Vec<_> = ["research", "plan", "implement", "review"]
        .iter()
        .map(|s| {
            json!({"stage": s, "cycle": 1, "run_id": format!("e{i}-{s}-c1r0a0"),
                   "state": "passed", "started_at": at, "finished_at": at + 60_000,
                   "detail": "3 atomic tasks: a, b, c"})
        })
        .collect();
    let tasks: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|t| {
            json!({"id": t, "phase": "build", "title": format!("Add {t}"), "role": "developer",
                   "description": format!("Create {t}.txt and its test."), "depends_on": [],
                   "commands": [format!("test -s {t}.txt")],
                   "statements": [format!("{t}.txt exists")], "cycle": 1, "state": "merged",
                   "run_id": format!("e{i}-implement-c1r0a0")})
        })
        .collect();
    let words = [
        "Add a login page",
        "Fix the cart total",
        "Export orders as CSV",
        "Dark mode",
        "Rate limits",
    ];
    let doc = json!({
        "id": format!("e{i}"), "project": if i.is_multiple_of(3) { "api" } else { "shop" },
        "request": format!("{} (#{i})", words[i % 5]), "state": state, "cycle": 1,
        "branch": format!("fleet/epics/e{i}"), "base_sha": "0".repeat(40), "intent": "feature",
        "roles": ["developer"], "stages": stages,
        "data": {"plan_summary": "three small files", "tasks": tasks, "reviews": [
            {"cycle": 1, "verdict": "approve", "summary": "fine", "bugs": [],
             "checks_passed": true}]},
        "created_at": at, "updated_at": at,
    });
    serde_json::from_value(doc).expect("an epic document")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, n, threads) = (
        args[1].clone(),
        args[2].parse::<usize>().expect("N"),
        args[3].parse::<usize>().expect("THREADS"),
    );
    let states: Vec<&str> = STATES
        .iter()
        .flat_map(|(s, w)| std::iter::repeat_n(*s, *w))
        .collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (url, states) = (url.clone(), &states);
            s.spawn(move || {
                let store = PostgresStore::open(&url).expect("open the store");
                for i in (1..=n).filter(|i| i % threads == t) {
                    let e = epic(i, states[i % states.len()]);
                    let created = NewEvent {
                        at: e.created_at,
                        run_id: e.id.clone(),
                        task: Some(e.id.clone()),
                        attempt: None,
                        kind: "task.created".into(),
                        data: json!({"project": e.project, "request": e.request}),
                    };
                    store.create_epic(&e, &[created]).expect("create the epic");
                }
            });
        }
    });
}
