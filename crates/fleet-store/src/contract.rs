//! The contract every [`Store`] backend must pass, public so that each backend (and any new
//! one) runs the very same checks: a backend's test calls each function with a fresh store
//! (`basics`, `accounts_and_spend_since`, `leases`, `summaries`), or with several handles on one fresh
//! database (`concurrent_writers`, `wakes_waiters`). Enabled by the `contract` feature.
//!
//! [`pg`] makes a throwaway PostgreSQL database per test.

pub mod pg;
mod summaries;

pub use summaries::summaries;
pub mod queue;

use crate::{AttemptRow, Batch, NewEvent, RunRow, RunStateChange, Store, StoreError, TaskRow};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn run_row(id: &str, created_at: i64) -> RunRow {
    RunRow {
        id: id.into(),
        name: "demo".into(),
        runbook_path: "runbook.yaml".into(),
        runbook_source: "name: demo\n".into(),
        repo: "/tmp/repo".into(),
        base_sha: "abc".into(),
        integration_branch: format!("fleet/runs/{id}"),
        state: "running".into(),
        created_at,
        updated_at: created_at,
        finished_at: None,
    }
}

fn task_row(run: &str, idx: u32, id: &str, state: &str) -> TaskRow {
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

fn event(run: &str, task: Option<&str>, kind: &str) -> NewEvent {
    NewEvent {
        at: 1,
        run_id: run.into(),
        task: task.map(Into::into),
        attempt: None,
        kind: kind.into(),
        data: json!({"k": kind}),
    }
}

/// Runs, tasks, attempts, events, batches (atomic), projects, epics (with compare-and-swap),
/// epic pages, tokens and meta. Needs a fresh store.
pub fn basics(store: &dyn Store) {
    // Creating a run stores it with its tasks and first events.
    let created = store
        .create_run(
            &run_row("r1", 10),
            &[
                task_row("r1", 0, "a", "pending"),
                task_row("r1", 1, "b", "pending"),
            ],
            &[event("r1", None, "run.started")],
        )
        .unwrap();
    assert_eq!(created.len(), 1);
    assert!(matches!(
        store.create_run(&run_row("r1", 11), &[], &[]),
        Err(StoreError::RunExists(_))
    ));
    store
        .create_run(
            &run_row("r2", 20),
            &[task_row("r2", 0, "x", "pending")],
            &[],
        )
        .unwrap();
    let ids: Vec<String> = store.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["r2", "r1"], "newest first");

    // A batch lands whole: task state, attempt, run state and events.
    let mut a = task_row("r1", 0, "a", "running");
    a.attempts = 1;
    a.started_at = Some(100);
    let attempt = AttemptRow {
        run_id: "r1".into(),
        task_id: "a".into(),
        n: 1,
        started_at: 100,
        finished_at: None,
        pgid: Some(4242),
        exit_code: None,
        outcome: "running".into(),
        detail: None,
        profile: Some("claude-dev".into()),
        cli: Some("claude".into()),
        input_tokens: 1200,
        cost_usd: 0.125,
        ..AttemptRow::default()
    };
    let evs = store
        .commit(&Batch {
            run_state: Some(RunStateChange {
                run_id: "r1".into(),
                state: "interrupted".into(),
                at: 101,
                finished_at: None,
            }),
            tasks: vec![a.clone()],
            attempts: vec![attempt.clone()],
            events: vec![
                event("r1", Some("a"), "task.started"),
                event("r1", Some("a"), "attempt.started"),
            ],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(evs.len(), 2);
    assert!(evs[0] > created[0].seq && evs[1] > evs[0], "seq only grows");
    assert_eq!(store.tasks("r1").unwrap()[0], a);
    assert_eq!(store.tasks("r1").unwrap()[1].id, "b");
    assert_eq!(
        store.attempts("r1").unwrap(),
        std::slice::from_ref(&attempt)
    );
    let run = store.run("r1").unwrap().unwrap();
    assert_eq!((run.state.as_str(), run.updated_at), ("interrupted", 101));
    assert!(store.run("nope").unwrap().is_none());

    // Upserts replace the row.
    let mut done = attempt.clone();
    done.finished_at = Some(200);
    done.exit_code = Some(0);
    done.outcome = "passed".into();
    store
        .commit(&Batch {
            attempts: vec![done.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.attempts("r1").unwrap(), [done]);

    // A batch's task row updates the task's row, or adds it if the run did not have it.
    let added = task_row("r2", 1, "y", "ready");
    let mut x = task_row("r2", 0, "x", "ready");
    x.reason = Some("deps passed".into());
    store
        .commit(&Batch {
            tasks: vec![added.clone(), x.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.tasks("r2").unwrap(), [x, added]);

    // Events: filtered by run, after a sequence number, limited, data intact.
    store
        .commit(&Batch {
            events: vec![event("r2", None, "run.started")],
            ..Batch::default()
        })
        .unwrap();
    let all = store.events(None, 0, 100).unwrap();
    assert_eq!(all.len(), 4);
    let r1: Vec<String> = store
        .events(Some("r1"), 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(r1, ["run.started", "task.started", "attempt.started"]);
    let after = store.events(Some("r1"), all[1].seq, 1).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, "attempt.started");
    assert_eq!(after[0].data, json!({"k": "attempt.started"}));
    assert_eq!(after[0].task.as_deref(), Some("a"));

    // A batch that fails part-way leaves nothing behind.
    let before = store.events(None, 0, 100).unwrap().len();
    let bad = Batch {
        tasks: vec![task_row("r1", 1, "b", "ready")],
        attempts: vec![AttemptRow {
            run_id: "no-such-run".into(),
            ..attempt
        }],
        events: vec![event("r1", Some("b"), "task.ready")],
        ..Batch::default()
    };
    assert!(store.commit(&bad).is_err());
    assert_eq!(store.events(None, 0, 100).unwrap().len(), before);
    assert_eq!(store.tasks("r1").unwrap()[1].state, "pending");
    // ... and the store takes the next batch (no transaction was left open).
    store
        .commit(&Batch {
            tasks: vec![task_row("r1", 1, "b", "ready")],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.tasks("r1").unwrap()[1].state, "ready");
    projects_and_epics(store);
}

/// Accounts' live state, and spend summed from attempts since a time. Needs a fresh store.
pub fn accounts_and_spend_since(store: &dyn Store) {
    store.create_run(&run_row("r", 1), &[], &[]).unwrap();
    let acc = crate::AccountRow {
        name: "team".into(),
        cooldown_until: Some(5000),
        backoff_level: 2,
        disabled: None,
        updated_at: 10,
    };
    let attempt = |n: u32, started_at: i64, cost: f64| AttemptRow {
        run_id: "r".into(),
        task_id: "t".into(),
        n,
        started_at,
        outcome: "passed".into(),
        account: Some("team".into()),
        cost_usd: cost,
        input_tokens: 100,
        ..AttemptRow::default()
    };
    store
        .commit(&Batch {
            accounts: vec![acc.clone()],
            attempts: vec![attempt(1, 100, 0.5), attempt(2, 200, 0.25)],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.accounts().unwrap(), std::slice::from_ref(&acc));
    let disabled = crate::AccountRow {
        disabled: Some("auth".into()),
        ..acc
    };
    store
        .commit(&Batch {
            accounts: vec![disabled.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.accounts().unwrap(), [disabled]);
    let since: Vec<f64> = store
        .attempts_since(150)
        .unwrap()
        .iter()
        .map(|a| a.cost_usd)
        .collect();
    assert_eq!(since, [0.25]);
    assert_eq!(store.attempts_since(0).unwrap().len(), 2);

    // A finished run's attempts count while `since` is before the run ended.
    let done = RunRow {
        state: "passed".into(),
        finished_at: Some(400),
        ..run_row("done", 300)
    };
    store.create_run(&done, &[], &[]).unwrap();
    store
        .commit(&Batch {
            attempts: vec![AttemptRow {
                run_id: "done".into(),
                ..attempt(1, 350, 2.0)
            }],
            ..Batch::default()
        })
        .unwrap();
    let costs = |since| -> Vec<f64> {
        let rows = store.attempts_since(since).unwrap();
        rows.iter().map(|a| a.cost_usd).collect()
    };
    assert_eq!(costs(150), [0.25, 2.0]);
    assert_eq!(costs(350), [2.0]);
    assert_eq!(costs(351), Vec::<f64>::new());
}

/// Projects are created once; epics are replaced whole with their events in one transaction.
fn projects_and_epics(store: &dyn Store) {
    use crate::{EpicRow, ProjectRow, StageRow, StoreError};
    let p = ProjectRow {
        name: "web".into(),
        repo: "/src/web".into(),
        path: "/src/web".into(),
        default_branch: "main".into(),
        checks: vec!["make test".into()],
        delivery: serde_json::json!({"kind": "pull_request", "repo": "o/web"}),
        bible: Some("internal-apps".into()),
        created_at: 1,
    };
    store.add_project(&p).unwrap();
    assert!(matches!(
        store.add_project(&p),
        Err(StoreError::Exists("project", _))
    ));
    let mut q = p.clone();
    q.name = "api".into();
    store.add_project(&q).unwrap();
    assert_eq!(store.project("web").unwrap(), Some(p.clone()));
    assert_eq!(store.project("nope").unwrap(), None);
    let names: Vec<String> = store
        .projects()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["api", "web"]);

    let mut e = EpicRow {
        id: "e1".into(),
        project: "web".into(),
        request: "add a login page".into(),
        state: "plan".into(),
        cycle: 1,
        branch: "fleet/epics/e1".into(),
        created_at: 10,
        updated_at: 10,
        ..EpicRow::default()
    };
    let before = store.events(None, 0, 10_000).unwrap().len();
    let seqs = store
        .save_epic(&e, &[event("e1", None, "epic.created")])
        .unwrap();
    assert_eq!(seqs.len(), 1);
    e.stages.push(StageRow {
        stage: "plan".into(),
        cycle: 1,
        run_id: Some("e1-plan-1".into()),
        state: "passed".into(),
        started_at: 11,
        finished_at: Some(12),
        detail: Some("3 tasks".into()),
    });
    e.state = "implement".into();
    e.updated_at = 12;
    let more = store
        .save_epic(
            &e,
            &[
                event("e1", None, "epic.stage"),
                event("e1", None, "epic.stage"),
            ],
        )
        .unwrap();
    assert!(more[0] > seqs[0] && more[1] > more[0]);
    assert_eq!(store.epic("e1").unwrap(), Some(e.clone()));
    let mut e2 = e.clone();
    e2.id = "e2".into();
    e2.created_at = 20;
    store.save_epic(&e2, &[]).unwrap();
    let ids: Vec<String> = store.epics().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["e1", "e2"]);
    assert_eq!(store.events(Some("e1"), 0, 100).unwrap().len(), 3);
    assert_eq!(store.events(None, 0, 10_000).unwrap().len(), before + 3);
    epic_pages(store);
    tokens_and_meta(store);
    epics_compare_and_swap(store);
}

fn epics_compare_and_swap(store: &dyn Store) {
    use crate::{EpicRow, StoreError};
    let mut e = EpicRow {
        id: "cas".into(),
        project: "web".into(),
        request: "first".into(),
        state: "research".into(),
        created_at: 1000,
        updated_at: 1000,
        ..EpicRow::default()
    };
    store
        .create_epic(&e, &[event("cas", None, "task.created")])
        .unwrap();
    assert!(matches!(
        store.create_epic(&e, &[]),
        Err(StoreError::Exists("epic", _))
    ));
    let before = store.events(Some("cas"), 0, 100).unwrap().len();
    // Two writers read version 1000; the first wins, the second learns it lost.
    e.state = "plan".into();
    e.updated_at = 1001;
    store
        .update_epic(&e, 1000, &[event("cas", None, "a")])
        .unwrap();
    let mut stale = e.clone();
    stale.state = "cancelled".into();
    stale.updated_at = 1002;
    assert!(matches!(
        store.update_epic(&stale, 1000, &[event("cas", None, "b")]),
        Err(StoreError::Conflict("epic", _))
    ));
    assert_eq!(store.epic("cas").unwrap().unwrap().state, "plan");
    assert_eq!(
        store.events(Some("cas"), 0, 100).unwrap().len(),
        before + 1,
        "a lost write adds no events"
    );
    let page = store
        .epic_page(&crate::EpicQuery {
            text: Some("first".into()),
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.epics[0].state, "plan");
    // The latest events of some runs, oldest first.
    for i in 0..5 {
        store
            .commit(&crate::Batch {
                events: vec![event("cas-r1", None, &format!("k{i}"))],
                ..Default::default()
            })
            .unwrap();
    }
    let latest = store
        .latest_events(&["cas".to_string(), "cas-r1".to_string()], 3)
        .unwrap();
    let kinds: Vec<&str> = latest.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["k2", "k3", "k4"]);
    assert!(latest.windows(2).all(|w| w[0].seq < w[1].seq));
    // An epic's runs by name prefix: e1's, not e10's.
    for (id, name, at) in [
        ("x1", "e1-plan-c1r0a0", 1),
        ("x2", "e10-plan-c1r0a0", 2),
        ("x3", "e1-review-c1r0a0", 3),
    ] {
        let mut r = run_row(id, at);
        r.name = name.into();
        store.create_run(&r, &[], &[]).unwrap();
    }
    let names: Vec<String> = store
        .runs_named("e1-")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["e1-plan-c1r0a0", "e1-review-c1r0a0"]);
}

fn epic_pages(store: &dyn Store) {
    use crate::{EpicQuery, EpicRow};
    // e1 (implement, web) and e2 (implement, web) exist; add more across states and projects.
    for (i, (state, project, request)) in [
        ("review", "api", "Fix the 100% CPU_bug"),
        ("done", "web", "Dark mode"),
        ("implement", "api", "Add rate limits"),
    ]
    .into_iter()
    .enumerate()
    {
        let e = EpicRow {
            id: format!("p{i}"),
            project: project.into(),
            request: request.into(),
            state: state.into(),
            cycle: i as u32,
            created_at: 100 + i as i64,
            updated_at: 100 + i as i64,
            ..EpicRow::default()
        };
        store.save_epic(&e, &[]).unwrap();
    }
    let all = store
        .epic_page(&EpicQuery {
            limit: 2,
            ..EpicQuery::default()
        })
        .unwrap();
    assert_eq!(all.total, 5);
    let ids: Vec<&str> = all.epics.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["p2", "p1"], "newest first, limited");
    assert_eq!(all.epics[0].request, "Add rate limits");
    assert_eq!(all.epics[0].cycle, 2);
    assert_eq!(all.counts.get("implement"), Some(&3));
    assert_eq!(all.counts.get("review"), Some(&1));
    let next = store
        .epic_page(&EpicQuery {
            limit: 2,
            offset: 2,
            ..EpicQuery::default()
        })
        .unwrap();
    let ids: Vec<&str> = next.epics.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["p0", "e2"]);
    let q = EpicQuery {
        states: vec!["implement".into(), "review".into()],
        project: Some("api".into()),
        limit: 10,
        ..EpicQuery::default()
    };
    let page = store.epic_page(&q).unwrap();
    let ids: Vec<&str> = page.epics.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["p2", "p0"]);
    assert_eq!(page.total, 2);
    // Counts ignore the state filter but keep the project filter.
    assert_eq!(page.counts.get("implement"), Some(&1));
    assert_eq!(page.counts.get("done"), None);
    // Text search is case-insensitive and treats % and _ literally.
    let find = |t: &str| -> Vec<String> {
        let q = EpicQuery {
            text: Some(t.into()),
            limit: 10,
            ..EpicQuery::default()
        };
        store
            .epic_page(&q)
            .unwrap()
            .epics
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(find("cpu_BUG"), ["p0"]);
    assert_eq!(find("100%"), ["p0"]);
    assert!(find("_x%").is_empty());
    assert_eq!(find("P1"), ["p1"]);
    // A later page of a filtered list is the same rows as a slice of one long page, a page
    // past the end is empty, and the counts follow a task that moves.
    let page = |limit: usize, offset: usize| -> (Vec<String>, u64) {
        let p = store
            .epic_page(&EpicQuery {
                states: vec!["implement".into()],
                limit,
                offset,
                ..EpicQuery::default()
            })
            .unwrap();
        (p.epics.into_iter().map(|e| e.id).collect(), p.total)
    };
    let (long, total) = page(10, 0);
    assert_eq!(total, 3);
    assert_eq!(page(1, 1).0, long[1..2]);
    assert_eq!(page(2, 1).0, long[1..3]);
    assert_eq!(page(10, 3), (vec![], 3), "past the end");
    let moved = EpicRow {
        id: "p0".into(),
        project: "api".into(),
        request: "Fix the 100% CPU_bug".into(),
        state: "done".into(),
        created_at: 100,
        updated_at: 101,
        ..EpicRow::default()
    };
    store.save_epic(&moved, &[]).unwrap();
    let counts = store.epic_page(&EpicQuery::default()).unwrap().counts;
    assert_eq!(counts.get("review"), None, "{counts:?}");
    assert_eq!(counts.get("done"), Some(&2), "{counts:?}");
}

fn tokens_and_meta(store: &dyn Store) {
    use crate::{StoreError, TokenRow};
    let t = TokenRow {
        name: "ci".into(),
        scope: "submit".into(),
        hash: "ab".repeat(32),
        created_at: 5,
        revoked_at: None,
    };
    store.add_token(&t).unwrap();
    assert!(matches!(
        store.add_token(&t),
        Err(StoreError::Exists("token", _))
    ));
    assert_eq!(store.token_by_hash(&t.hash).unwrap(), Some(t.clone()));
    assert_eq!(store.token_by_hash("cd").unwrap(), None);
    assert!(store.revoke_token("ci", 9).unwrap());
    assert!(!store.revoke_token("ci", 10).unwrap(), "already revoked");
    assert_eq!(store.token_by_hash(&t.hash).unwrap(), None);
    assert_eq!(store.tokens().unwrap()[0].revoked_at, Some(9));

    assert_eq!(store.meta("notify.cursor").unwrap(), None);
    store.set_meta("notify.cursor", "41").unwrap();
    store.set_meta("notify.cursor", "42").unwrap();
    assert_eq!(store.meta("notify.cursor").unwrap().as_deref(), Some("42"));
}

/// Named leases: one holder at a time, renewed only by the holder, taken over once expired,
/// released only by the holder. Needs a fresh store.
pub fn leases(store: &dyn Store) {
    let long = Duration::from_secs(60);
    assert_eq!(store.lease("epic/e1").unwrap(), None);
    assert!(store.acquire_lease("epic/e1", "a", long).unwrap());
    let held = store.lease("epic/e1").unwrap().expect("held");
    assert_eq!((held.name.as_str(), held.holder.as_str()), ("epic/e1", "a"));
    assert!(
        !store.acquire_lease("epic/e1", "b", long).unwrap(),
        "held by a"
    );
    assert!(
        store.acquire_lease("epic/e1", "a", long).unwrap(),
        "a takes it again"
    );
    assert!(
        store.acquire_lease("epic/e2", "b", long).unwrap(),
        "leases are by name"
    );
    assert!(store.renew_lease("epic/e1", "a", long).unwrap());
    assert!(
        !store.renew_lease("epic/e1", "b", long).unwrap(),
        "b does not hold it"
    );
    // Only the holder releases it.
    store.release_lease("epic/e1", "b").unwrap();
    assert_eq!(store.lease("epic/e1").unwrap().unwrap().holder, "a");
    store.release_lease("epic/e1", "a").unwrap();
    assert_eq!(store.lease("epic/e1").unwrap(), None);
    assert!(
        store.acquire_lease("epic/e1", "b", long).unwrap(),
        "free again"
    );

    // An expired lease is free for anyone, and its old holder can no longer renew it.
    assert!(
        store
            .acquire_lease("run/r1", "a", Duration::from_millis(1))
            .unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.lease("run/r1").unwrap().is_some() {
        assert!(Instant::now() < deadline, "a 1 ms lease never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(store.acquire_lease("run/r1", "b", long).unwrap());
    assert!(
        !store.renew_lease("run/r1", "a", long).unwrap(),
        "a lost it"
    );
    assert_eq!(store.lease("run/r1").unwrap().unwrap().holder, "b");
}

/// Several handles on one database (several processes, in production) commit events at once:
/// each commit's seqs grow, no seq is given twice, together they are dense (no gaps), and a
/// reader tailing `seq > last` meanwhile sees every event exactly once, in order — which fails
/// if a seq can become visible after a larger one. Needs a fresh database.
pub fn concurrent_writers(stores: &[Arc<dyn Store>]) {
    const BATCHES: usize = 40;
    let base = stores[0].newest_seq().unwrap();
    stores[0].create_run(&run_row("cw", 1), &[], &[]).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tail = {
        let (store, done) = (stores[0].clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut last = base;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.events(None, last, 1000).unwrap();
                for e in &page {
                    seen.push(e.seq);
                    last = e.seq;
                }
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };
    let writers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for b in 0..BATCHES {
                    let events: Vec<NewEvent> = (0..1 + (b % 3))
                        .map(|i| event("cw", None, &format!("w{w}.b{b}.{i}")))
                        .collect();
                    let seqs = store
                        .commit(&Batch {
                            events,
                            ..Batch::default()
                        })
                        .unwrap();
                    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "a batch's seqs grow");
                    assert!(
                        mine.last().is_none_or(|l| seqs[0] > *l),
                        "a writer's seqs grow"
                    );
                    mine.extend(seqs);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for w in writers {
        all.extend(w.join().unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tail.join().unwrap();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "no seq given twice");
    let dense: BTreeSet<u64> = (base + 1..=base + all.len() as u64).collect();
    assert_eq!(unique, dense, "seqs are dense: no gaps");
    assert_eq!(
        seen,
        dense.iter().copied().collect::<Vec<_>>(),
        "a tail saw every event once, in seq order"
    );
    assert_eq!(
        stores[1 % stores.len()].newest_seq().unwrap(),
        base + all.len() as u64
    );
}

/// `wait_for_events` returns as soon as another handle commits an event, and after the
/// timeout with the same newest seq when nothing is committed. Needs a fresh database.
pub fn wakes_waiters(writer: Arc<dyn Store>, waiter: Arc<dyn Store>) {
    writer.create_run(&run_row("ww", 1), &[], &[]).unwrap();
    let before = waiter.newest_seq().unwrap();
    let quiet = waiter
        .wait_for_events(before, Duration::from_millis(200))
        .unwrap();
    assert_eq!(
        quiet, before,
        "nothing committed: the timeout ends the wait"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let w = std::thread::spawn(move || {
        tx.send(()).unwrap();
        waiter
            .wait_for_events(before, Duration::from_secs(60))
            .unwrap()
    });
    rx.recv().unwrap();
    let seqs = writer
        .commit(&Batch {
            events: vec![event("ww", None, "woke")],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(w.join().unwrap(), seqs[0], "the waiter saw the new event");
}
