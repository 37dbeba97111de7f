//! The read models over many epics (issue 22: "fast with 10,000 epics"): writes the known
//! workload of `tests/support/workload.rs` (N epics, each with a plan and an implementation
//! run and their attempts) into a fresh SQLite store, then times the store's summary reads,
//! `outcomes` (summaries and attempt tallies), `list_rows` (`fleet task ls`, from the
//! summaries), `epic_view` of one epic (`fleet task show`, the API's detail) and the ETA's
//! observed durations. Run by `bench/views.sh`.
//!
//! Usage: views_bench [N] (default 10000)

#[path = "../tests/support/workload.rs"]
mod workload;

use fleet_store::{Durability, SqliteStore, Store};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut out = None;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        out = Some(f());
        samples.push(t.elapsed());
    }
    let max = *samples.iter().max().unwrap();
    (median(samples), max, out.unwrap())
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("fleet.db"), Durability::Process).unwrap();
    let t = Instant::now();
    workload::write(&store, n);
    let attempts = store.attempts_since(i64::MIN).unwrap().len();
    println!(
        "workload: {n} epics, {attempts} attempts, written in {:.1?}",
        t.elapsed()
    );

    let (med, max, _) = time(3, || store.epics().unwrap().len());
    println!("  of which the store's epics(): median {med:.1?}, max {max:.1?}");
    let (med, max, _) = time(3, || store.attempts_since(i64::MIN).unwrap().len());
    println!("  of which the store's attempts_since(): median {med:.1?}, max {max:.1?}");
    let (med, max, _) = time(5, || store.epic_summaries().unwrap().len());
    println!("  the store's epic_summaries(): median {med:.1?}, max {max:.1?}");
    let (med, max, _) = time(5, || store.attempt_tallies().unwrap().runs.len());
    println!("  the store's attempt_tallies(): median {med:.1?}, max {max:.1?}");
    let (med, max, o) = time(5, || fleet_views::outcomes(&store).unwrap());
    println!(
        "outcomes (fleet stats, /api/v1/outcomes, /metrics): median {med:.1?}, max {max:.1?} ({} weeks x projects, {} profiles)",
        o.weeks.len(),
        o.profiles.len()
    );
    let (med, max, rows) = time(5, || fleet_views::list_rows(&store).unwrap());
    println!(
        "list_rows (fleet task ls): median {med:.1?}, max {max:.1?} ({} rows)",
        rows.len()
    );
    let id = format!("w{}", n / 2);
    let (med, max, v) = time(20, || {
        fleet_views::epic_view(&store, &id, fleet_views::now_ms())
            .unwrap()
            .unwrap()
    });
    println!(
        "epic_view (fleet task show, GET /api/v1/tasks/ID): median {med:.1?}, max {max:.1?} ({} attempts)",
        v.attempts.len()
    );
    let all = store.attempts_since(i64::MIN).unwrap();
    let (med, max, obs) = time(3, || {
        fleet_views::eta::observed_task_secs(&store, &all).unwrap()
    });
    println!(
        "observed durations per role over all {} attempts: median {med:.1?}, max {max:.1?} ({} roles)",
        all.len(),
        obs.len()
    );
}
