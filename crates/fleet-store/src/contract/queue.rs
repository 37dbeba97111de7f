//! The task queue's contract ([`crate::TaskQueue`]), for backends that have one, and what a
//! backend without one must do (say so, not pretend).

use crate::{Claim, Finish, NewEvent, NextClaim, QueueItem, RunnerAd, Store, TaskQueue};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn item(run: &str, task: &str, deps: &[&str], needs: &[&str]) -> QueueItem {
    QueueItem {
        run_id: run.into(),
        task_id: task.into(),
        deps: deps.iter().map(|s| s.to_string()).collect(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        spec: json!({"run": format!("echo {task}")}),
    }
}

fn runner(name: &str, offers: &[&str]) -> RunnerAd {
    RunnerAd {
        name: name.into(),
        offers: offers.iter().map(|s| s.to_string()).collect(),
        concurrency: 1,
    }
}

fn ev(kind: &str) -> NewEvent {
    NewEvent {
        at: 1,
        run_id: String::new(),
        task: None,
        attempt: None,
        kind: kind.into(),
        data: json!({}),
    }
}

fn done() -> Finish {
    Finish {
        state: "done".into(),
        detail: None,
        merge_sha: Some("abc".into()),
    }
}

const LONG: Duration = Duration::from_secs(60);

fn claim(q: &dyn TaskQueue, r: &RunnerAd) -> Option<Claim> {
    q.claim(r, LONG, 3, &[ev("task.started")]).unwrap()
}

/// A backend without a queue says so.
pub fn has_no_queue(store: &dyn Store) {
    assert!(store.queue().is_none());
}

/// Dependencies, needs, heartbeats, expiry and redo, hand-back, failure and skipping.
pub fn queue(store: &dyn Store) {
    let q = store.queue().expect("this backend has a queue");
    q.enqueue(
        &[
            item("q1", "a", &[], &["sh"]),
            item("q1", "b", &["a"], &["sh"]),
            item("q1", "gpu", &[], &["sh", "label:gpu"]),
            item("q1", "c", &["b"], &["sh"]),
        ],
        &[ev("run.queued")],
    )
    .unwrap();
    assert!(
        q.enqueue(&[item("q1", "a", &[], &[])], &[]).is_err(),
        "a task is queued once"
    );
    let plain = runner("r1", &["sh"]);
    let gpu = runner("r2", &["sh", "label:gpu"]);

    // Only `a` is claimable by a runner without the label: `b` waits for `a`.
    let a = claim(q, &plain).expect("a is ready");
    assert_eq!((a.task_id.as_str(), a.n), ("a", 1));
    assert_eq!(a.spec, json!({"run": "echo a"}));
    assert!(
        claim(q, &plain).is_none(),
        "b waits for a; gpu needs a label"
    );
    let g = claim(q, &gpu).expect("the labelled runner takes gpu");
    assert_eq!(g.task_id, "gpu");
    assert!(q.heartbeat(&a, LONG).unwrap());
    assert!(q.finish(&a, &done(), &[ev("task.done")]).unwrap());
    assert!(!q.finish(&a, &done(), &[]).unwrap(), "a claim ends once");
    assert!(
        !q.heartbeat(&a, LONG).unwrap(),
        "an ended claim is not renewed"
    );

    // A lease that runs out: another runner claims the task again, as claim 2, and the first
    // holder can neither renew nor finish it.
    let b1 = q
        .claim(&plain, Duration::from_millis(200), 3, &[])
        .unwrap()
        .expect("b is ready once a is done");
    assert_eq!(b1.task_id, "b");
    let deadline = Instant::now() + Duration::from_secs(10);
    let b2 = loop {
        if let Some(c) = claim(q, &gpu) {
            break c;
        }
        assert!(Instant::now() < deadline, "b's lease never ran out");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (b2.task_id.as_str(), b2.n, b2.holder.as_str()),
        ("b", 2, "r2")
    );
    assert!(!q.heartbeat(&b1, LONG).unwrap());
    assert!(!q.finish(&b1, &done(), &[]).unwrap());

    // Handed back: claimable at once, and not counted as a claim.
    assert!(q.hand_back(&b2, &[ev("task.handed_back")]).unwrap());
    let b3 = claim(q, &plain).expect("a handed-back task is claimable at once");
    assert_eq!((b3.task_id.as_str(), b3.n), ("b", 2));

    // A failure skips what depends on it, and nothing is claimable after.
    let failed = Finish {
        state: "failed".into(),
        detail: Some("exit 1".into()),
        merge_sha: None,
    };
    assert!(q.finish(&b3, &failed, &[ev("task.failed")]).unwrap());
    assert!(claim(q, &gpu).is_none(), "c was skipped");
    let rows = q.queued("q1").unwrap();
    let states: Vec<(&str, &str, u32)> = rows
        .iter()
        .map(|r| (r.task_id.as_str(), r.state.as_str(), r.claims))
        .collect();
    assert_eq!(
        states,
        [
            ("a", "done", 1),
            ("b", "failed", 2),
            ("c", "skipped", 0),
            ("gpu", "claimed", 1)
        ]
    );
    assert_eq!(rows[0].merge_sha.as_deref(), Some("abc"));

    // The events went with the changes, stamped with the claim.
    let events = store.events(Some("q1"), 0, 100).unwrap();
    let kinds: Vec<(&str, Option<&str>, Option<u32>)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.task.as_deref(), e.attempt))
        .collect();
    assert!(
        kinds.contains(&("task.done", Some("a"), Some(1))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("task.failed", Some("b"), Some(2))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("task.skipped", Some("c"), None)),
        "{kinds:?}"
    );

    // A task whose runner keeps vanishing fails at the claim limit instead of looping.
    q.enqueue(&[item("q2", "x", &[], &[])], &[]).unwrap();
    let x = q
        .claim(&plain, Duration::from_millis(1), 1, &[])
        .unwrap()
        .expect("x is ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.fail_exhausted(1, 5).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "x never failed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(q.claim(&plain, LONG, 1, &[]).unwrap().is_none());
    assert!(!q.finish(&x, &done(), &[]).unwrap());
    assert_eq!(q.queued("q2").unwrap()[0].state, "failed");

    // Advertisements.
    q.advertise(&gpu, LONG).unwrap();
    q.advertise(&plain, LONG).unwrap();
    assert_eq!(q.runners().unwrap(), [plain.clone(), gpu.clone()]);
    q.retire("r1").unwrap();
    assert_eq!(q.runners().unwrap(), [gpu]);
}

fn next<'a>(r: &'a RunnerAd, events: &'a [NewEvent]) -> NextClaim<'a> {
    NextClaim {
        runner: r,
        ttl: LONG,
        max_claims: 3,
        events,
    }
}

/// Ending a task and claiming the next at once: the task just ended counts as done for its
/// dependents, is never claimed again by the same call (even with its lease run out), a lost
/// claim still frees the slot for a claim, a failure skips dependents as `finish` does, and
/// both batches of events are written, stamped, the end's first.
pub fn finish_and_claim(store: &dyn Store) {
    let q = store.queue().expect("this backend has a queue");
    q.enqueue(
        &[
            item("fc", "a", &[], &[]),
            item("fc", "b", &["a"], &[]),
            item("fc", "c", &[], &[]),
            item("fc", "d", &["b"], &[]),
            item("fc", "e", &[], &[]),
        ],
        &[],
    )
    .unwrap();
    let r = runner("r1", &[]);
    let started = [ev("task.started")];
    let a = claim(q, &r).expect("a is ready");
    assert_eq!(a.task_id, "a");
    let (ended, b) = q
        .finish_and_claim(&a, &done(), &[ev("task.done")], next(&r, &started))
        .unwrap();
    assert!(ended);
    let b = b.expect("b, whose dependency just ended, comes first");
    assert_eq!((b.task_id.as_str(), b.n, b.holder.as_str()), ("b", 1, "r1"));
    assert!(q.heartbeat(&b, LONG).unwrap(), "the claim is live");

    // An end that is no longer this claim's writes nothing, and the slot still claims.
    let (ended, c) = q
        .finish_and_claim(&a, &done(), &[ev("task.done")], next(&r, &started))
        .unwrap();
    assert!(!ended, "a claim ends once");
    let c = c.expect("c is ready");
    assert_eq!(c.task_id, "c");

    // A failure skips what depends on it; the claim goes on to the next ready task.
    let failed = Finish {
        state: "failed".into(),
        detail: Some("exit 1".into()),
        merge_sha: None,
    };
    let (ended, e) = q
        .finish_and_claim(&b, &failed, &[ev("task.failed")], next(&r, &started))
        .unwrap();
    assert!(ended);
    let e = e.expect("e is ready; d was skipped");
    assert_eq!(e.task_id, "e");

    // A claim whose lease ran out (nobody took it meanwhile) is ended, not claimed again by
    // the call that ends it.
    let short = RunnerAd {
        name: "r2".into(),
        ..r.clone()
    };
    assert!(q.finish(&e, &done(), &[]).unwrap());
    q.enqueue(&[item("fc2", "x", &[], &[])], &[]).unwrap();
    let x = q
        .claim(&short, Duration::from_millis(1), 3, &[])
        .unwrap()
        .expect("x is ready");
    std::thread::sleep(Duration::from_millis(20));
    let (ended, none) = q
        .finish_and_claim(&x, &done(), &[], next(&short, &started))
        .unwrap();
    let (ended2, nothing) = q
        .finish_and_claim(&c, &done(), &[ev("task.done")], next(&r, &started))
        .unwrap();
    assert!(ended && ended2);
    assert_eq!((none, nothing), (None, None), "nothing left to claim");

    let rows = q.queued("fc").unwrap();
    let states: Vec<(&str, &str, u32)> = rows
        .iter()
        .map(|r| (r.task_id.as_str(), r.state.as_str(), r.claims))
        .collect();
    assert_eq!(
        states,
        [
            ("a", "done", 1),
            ("b", "failed", 1),
            ("c", "done", 1),
            ("d", "skipped", 0),
            ("e", "done", 1)
        ]
    );
    assert_eq!(q.queued("fc2").unwrap()[0].state, "done");
    assert_eq!(q.queued("fc2").unwrap()[0].claims, 1);

    // Every event once, stamped with its own claim, the end's before the claim's.
    let events = store.events(Some("fc"), 0, 100).unwrap();
    let kinds: Vec<(&str, Option<&str>, Option<u32>)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.task.as_deref(), e.attempt))
        .collect();
    assert_eq!(
        kinds,
        [
            ("task.started", Some("a"), Some(1)),
            ("task.done", Some("a"), Some(1)),
            ("task.started", Some("b"), Some(1)),
            ("task.started", Some("c"), Some(1)),
            ("task.failed", Some("b"), Some(1)),
            ("task.skipped", Some("d"), None),
            ("task.started", Some("e"), Some(1)),
            ("task.done", Some("c"), Some(1)),
        ]
    );
    let seqs: Vec<u64> = store
        .events(None, 0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
}

/// Several handles claiming at once: every task is claimed exactly once.
pub fn concurrent_claims(stores: &[Arc<dyn Store>]) {
    let items: Vec<QueueItem> = (0..60)
        .map(|i| item("cc", &format!("t{i:02}"), &[], &[]))
        .collect();
    stores[0].queue().unwrap().enqueue(&items, &[]).unwrap();
    let claimed: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                s.spawn(move || {
                    let q = store.queue().unwrap();
                    let me = runner(&format!("c{i}"), &[]);
                    let mut got = Vec::new();
                    while let Some(c) = claim(q, &me) {
                        got.push(c.task_id.clone());
                        assert!(q.finish(&c, &done(), &[]).unwrap());
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&String> = claimed.iter().flatten().collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "every task claimed once: {claimed:?}");
    assert_eq!(unique.len(), 60);
}

/// A run ends once its every entry ended — passed when all are done, else failed — exactly
/// once whoever asks, with one `run.finished` event; never while an entry is open.
pub fn runs_close_once(stores: &[Arc<dyn Store>]) {
    let store = &*stores[0];
    let q = store.queue().expect("this backend has a queue");
    for run in ["ok", "bad"] {
        store.create_run(&super::run_row(run, 1), &[], &[]).unwrap();
        q.enqueue(
            &[
                item(run, "a", &[], &["sh"]),
                item(run, "b", &["a"], &["sh"]),
            ],
            &[],
        )
        .unwrap();
    }
    assert_eq!(q.close_run_if_ended("ok", 5).unwrap(), None, "entries open");
    assert!(q.has_open_entries("ok").unwrap(), "queued entries are open");
    assert!(
        !q.has_open_entries("none").unwrap(),
        "a run without entries"
    );
    let r = runner("r1", &["sh"]);
    let a = claim(q, &r).unwrap();
    assert!(q.finish(&a, &done(), &[]).unwrap());
    assert_eq!(
        q.close_run_if_ended(&a.run_id, 5).unwrap(),
        None,
        "b is open"
    );
    // `bad`'s `a` fails; its `b` is skipped: that run's entries all ended.
    let (mut ok_b, mut bad_a) = (None, None);
    while let Some(c) = claim(q, &r) {
        match (c.run_id.as_str(), c.task_id.as_str()) {
            ("ok", "b") => ok_b = Some(c),
            ("bad", "a") => bad_a = Some(c),
            other => panic!("claimed {other:?}"),
        }
    }
    let failed = Finish {
        state: "failed".into(),
        detail: Some("exit 1".into()),
        merge_sha: None,
    };
    assert!(q.finish(&bad_a.unwrap(), &failed, &[]).unwrap());
    // Every store handle at once: one ends it.
    let ends: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|st| s.spawn(move || st.queue().unwrap().close_run_if_ended("bad", 6).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ended: Vec<_> = ends.into_iter().flatten().collect();
    assert_eq!(ended.len(), 1, "ended once: {ended:?}");
    assert!(
        !q.has_open_entries("bad").unwrap(),
        "failed and skipped are ended"
    );
    assert_eq!(
        (
            ended[0].state.as_str(),
            ended[0].done,
            ended[0].failed,
            ended[0].skipped
        ),
        ("failed", 0, 1, 1)
    );
    assert_eq!(store.run("bad").unwrap().unwrap().state, "failed");
    assert_eq!(store.run("ok").unwrap().unwrap().state, "running");
    assert!(q.has_open_entries("ok").unwrap(), "a claimed entry is open");
    assert!(q.finish(&ok_b.unwrap(), &done(), &[]).unwrap());
    assert!(!q.has_open_entries("ok").unwrap(), "every entry done");
    let ok = q.close_run_if_ended("ok", 7).unwrap().expect("ended now");
    assert_eq!((ok.state.as_str(), ok.done), ("passed", 2));
    assert_eq!(
        q.close_run_if_ended("ok", 8).unwrap(),
        None,
        "already ended"
    );
    let run = store.run("ok").unwrap().unwrap();
    assert_eq!((run.state.as_str(), run.finished_at), ("passed", Some(7)));
    for id in ["ok", "bad"] {
        let finished = store
            .events(Some(id), 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "run.finished")
            .count();
        assert_eq!(finished, 1, "{id}: one run.finished");
    }
}

/// A need of alternatives (`role:a|role:b`) is met by a runner offering any one of them, and
/// only by such a runner; plain needs stay all-of.
pub fn any_of_needs(store: &dyn Store) {
    let q = store.queue().expect("this backend has a queue");
    q.enqueue(
        &[
            item("n1", "either", &[], &["agent:dev-a|role:dev|role:ops"]),
            item("n1", "both", &[], &["role:dev", "label:gpu"]),
        ],
        &[],
    )
    .unwrap();
    let neither = runner("r-none", &["sh", "role:qa", "agent:dev-b", "label:gpu"]);
    assert!(claim(q, &neither).is_none(), "no alternative is offered");
    let ops = runner("r-ops", &["sh", "role:ops"]);
    let got = claim(q, &ops).expect("role:ops is one of the alternatives");
    assert_eq!(got.task_id, "either");
    assert!(
        claim(q, &ops).is_none(),
        "`both` needs role:dev and label:gpu"
    );
    let dev = runner("r-dev", &["role:dev"]);
    assert!(claim(q, &dev).is_none(), "`both` needs the label too");
    let full = runner("r-full", &["role:dev", "label:gpu"]);
    assert_eq!(claim(q, &full).unwrap().task_id, "both");
    let offers = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let needs = offers(&["agent:dev-a|role:dev"]);
    assert!(crate::meets(&offers(&["role:dev"]), &needs));
    assert!(!crate::meets(&offers(&["role:de"]), &needs));
}

/// Cancelling a run: queued entries are never claimed, a claimed one's holder finds its claim
/// gone (heartbeat and finish fail) and ends it as cancelled, `task.cancelled` once per task,
/// and a second cancel changes nothing.
pub fn cancel(store: &dyn Store) {
    let q = store.queue().expect("this backend has a queue");
    q.enqueue(
        &[
            item("k1", "a", &[], &["sh"]),
            item("k1", "b", &["a"], &["sh"]),
            item("k1", "c", &[], &["sh"]),
            item("k2", "other", &[], &["label:none"]),
        ],
        &[],
    )
    .unwrap();
    let r = runner("r1", &["sh"]);
    let a = claim(q, &r).expect("a is ready");
    assert_eq!(a.task_id, "a");
    let mut cancelled = q
        .cancel_run("k1", "cancelled by a person", 7, &[ev("run.cancelling")])
        .unwrap();
    cancelled.sort();
    assert_eq!(cancelled, ["a", "b", "c"]);
    assert!(claim(q, &r).is_none(), "nothing of k1 is claimable");
    assert!(!q.heartbeat(&a, LONG).unwrap(), "the holder learns it");
    assert!(!q.finish(&a, &done(), &[ev("task.done")]).unwrap());
    assert!(!q.hand_back(&a, &[]).unwrap());
    assert!(q.end_cancelled(&a, &[ev("task.stopped")]).unwrap());
    assert!(!q.end_cancelled(&a, &[]).unwrap(), "ended once");
    let rows = q.queued("k1").unwrap();
    let states: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.task_id.as_str(), r.state.as_str(), r.holder.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            ("a", "cancelled", None),
            ("b", "cancelled", None),
            ("c", "cancelled", None)
        ]
    );
    assert_eq!(rows[1].detail.as_deref(), Some("cancelled by a person"));
    assert!(
        q.cancel_run("k1", "again", 8, &[ev("run.cancelling")])
            .unwrap()
            .is_empty(),
        "an ended run has nothing to cancel"
    );
    assert_eq!(
        q.queued("k2").unwrap()[0].state,
        "queued",
        "other runs stay"
    );
    let events = store.events(Some("k1"), 0, 100).unwrap();
    let cancels: Vec<(Option<&str>, Option<u32>)> = events
        .iter()
        .filter(|e| e.kind == "task.cancelled")
        .map(|e| (e.task.as_deref(), e.attempt))
        .collect();
    assert_eq!(
        cancels,
        [(Some("a"), Some(1)), (Some("b"), None), (Some("c"), None)]
    );
    assert_eq!(
        events.iter().filter(|e| e.kind == "run.cancelling").count(),
        1
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "task.stopped" && e.attempt == Some(1)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.kind == "task.done"));
    let cancelled_a = events
        .iter()
        .find(|e| e.kind == "task.cancelled" && e.task.as_deref() == Some("a"))
        .unwrap();
    assert_eq!(cancelled_a.data["runner"], "r1");
}
