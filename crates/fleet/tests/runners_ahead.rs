//! `fleet runner` claims the next task while the current one runs (after quick tasks), and
//! that claim ahead is a claim like any other: a runner told to stop hands it back at once,
//! without counting it (the task's claim count and the runner's tally are as if it never
//! was), and one `kill -9`ed leaves it to run out, after which another runner redoes it.
//!
//! One runner at a time, so the order of the claims is the queue's: four quick tasks, `hold1`
//! (waits for a mark) with `pre1` claimed ahead of it; after the first runner drained and
//! exited, a second one does `pre1`, `hold2` and claims `pre2` ahead; it is killed, and a third
//! one finishes the run.

mod support;
use support::git;
use support::kill::wait_until;
use support::runners::{Runners, pid_of, run_on_runners, spawn_runner};
use support::server::wait_for;

use fleet_store::contract::pg::TestDb;
use fleet_store::{PostgresStore, QueueRow, Store};
use std::path::Path;
use std::time::{Duration, Instant};

const TTL_SECS: u64 = 2;

/// A project whose runbook has `workspace: none` tasks only (all quick but the two holds).
fn project(root: &Path, marks: &Path) -> std::path::PathBuf {
    git(
        root,
        &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
    );
    git(
        root,
        &[
            "clone",
            "--quiet",
            root.join("remote.git").to_str().unwrap(),
            "proj",
        ],
    );
    let work = root.join("proj");
    let mut y = String::from("name: ahead\ntasks:\n");
    let quick = |id: &str| format!("  - id: {id}\n    workspace: none\n    command: \"true\"\n");
    for i in 0..4 {
        y += &quick(&format!("f{i}"));
    }
    for n in 1..=2 {
        y += &format!(
            "  - id: hold{n}\n    workspace: none\n    command: \"while [ ! -e {}/go{n} ]; do sleep 0.05; done\"\n",
            marks.display()
        );
        y += &quick(&format!("pre{n}"));
    }
    std::fs::write(work.join("runbook.yaml"), y).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "seed"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    work
}

/// `task`'s queue entry (none until the run's tasks are queued).
fn entry(store: &dyn Store, run: &str, task: &str) -> Option<QueueRow> {
    let rows = store.queue().unwrap().queued(run).unwrap();
    rows.into_iter().find(|r| r.task_id == task)
}

fn row(store: &dyn Store, run: &str, task: &str) -> QueueRow {
    entry(store, run, task).unwrap()
}

/// `task` claimed (claim `n`) by the runner `pid`.
fn claimed_by(store: &dyn Store, run: &str, task: &str, pid: u32, n: u32) -> Option<()> {
    let r = entry(store, run, task)?;
    let mine = r.holder.as_deref().map(pid_of) == Some(pid);
    (r.state == "claimed" && mine && r.claims == n).then_some(())
}

#[test]
fn a_claim_ahead_is_handed_back_on_stop_and_redone_after_a_kill() {
    let db = TestDb::create();
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let work = project(tmp.path(), &marks);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("fleet.yaml"), format!("store: {}\n", db.url())).unwrap();
    let store = PostgresStore::open(db.url()).unwrap();
    let runner = |i: usize| {
        spawn_runner(
            db.url(),
            &tmp.path().join(format!("ws{i}")),
            &tmp.path().join(format!("runner{i}.out")),
            TTL_SECS,
            // Long enough that only the stop or the kill ends the claim ahead here.
            &["--claim-ahead", "600"],
        )
    };
    let mut guard = Runners::new(vec![runner(0)], &marks, &["go1", "go2"]);
    let coordinator = run_on_runners(&work.join("runbook.yaml"), &home);
    let run = wait_for(30, "the run to be queued", || {
        store.runs().unwrap().first().map(|r| r.id.clone())
    });

    // While `hold1` runs, its runner also holds `pre1`: one claim ahead, no more.
    let first = guard.children[0].id();
    wait_for(30, "hold1 running with pre1 claimed ahead", || {
        claimed_by(&store, &run, "hold1", first, 1)?;
        claimed_by(&store, &run, "pre1", first, 1)
    });
    assert_eq!(
        row(&store, &run, "hold2").state,
        "queued",
        "one ahead at most"
    );

    // Told to stop, it hands `pre1` back at once (not counted), and finishes `hold1`.
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGTERM) }, 0);
    wait_for(10, "pre1 handed back while hold1 still runs", || {
        let r = row(&store, &run, "pre1");
        (r.state == "queued" && r.claims == 0).then_some(())
    });
    assert_eq!(row(&store, &run, "hold1").state, "claimed");
    std::fs::write(marks.join("go1"), "").unwrap();
    let status = wait_until(
        &mut guard.children[0],
        Instant::now() + Duration::from_secs(60),
    )
    .expect("the stopped runner exits");
    assert!(status.success(), "{status:?}");
    let out = std::fs::read_to_string(tmp.path().join("runner0.out")).unwrap();
    assert!(
        out.contains("stopped: 5 done, 0 failed, 0 handed back, 0 lost"),
        "{out}"
    );

    // The next runner does `pre1` (its first claim), runs `hold2` and claims `pre2` ahead;
    // killed, both are claimed again by another runner once their leases ran out.
    guard.children.push(runner(1));
    let second = guard.children[1].id();
    wait_for(30, "hold2 running with pre2 claimed ahead", || {
        claimed_by(&store, &run, "hold2", second, 1)?;
        claimed_by(&store, &run, "pre2", second, 1)
    });
    guard.children[1].kill().unwrap();
    let killed_at = Instant::now();
    guard.children[1].wait().unwrap();
    std::fs::write(marks.join("go2"), "").unwrap();
    guard.children.push(runner(2));
    let third = guard.children[2].id();
    wait_for(TTL_SECS + 20, "pre2 claimed again", || {
        let r = row(&store, &run, "pre2");
        let by_third = r.holder.as_deref().map(pid_of) == Some(third);
        (r.claims == 2 && (by_third || r.state == "done")).then_some(())
    });
    assert!(killed_at.elapsed() <= Duration::from_secs(TTL_SECS + 10));

    let out = coordinator.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("8 done, 0 failed, 0 skipped"), "{stdout}");
    let claims: Vec<(String, String, u32)> = store
        .queue()
        .unwrap()
        .queued(&run)
        .unwrap()
        .into_iter()
        .map(|r| (r.task_id, r.state, r.claims))
        .collect();
    let want = |t: &str, n: u32| (t.to_string(), "done".to_string(), n);
    assert_eq!(
        claims,
        [
            want("f0", 1),
            want("f1", 1),
            want("f2", 1),
            want("f3", 1),
            want("hold1", 1),
            want("hold2", 2),
            want("pre1", 1),
            want("pre2", 2),
        ]
    );
    // Each task done once; `pre1`'s claim by the stopped runner handed back, on the record.
    let events = store.events(Some(&run), 0, 10_000).unwrap();
    let count = |kind: &str, task: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.task.as_deref() == Some(task))
            .count()
    };
    for t in ["f0", "f1", "f2", "f3", "hold1", "hold2", "pre1", "pre2"] {
        assert_eq!(count("task.done", t), 1, "{t}");
    }
    assert_eq!(count("task.handed_back", "pre1"), 1);

    let r = &mut guard.children[2];
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(r.id() as i32, libc::SIGTERM) }, 0);
    let _ = wait_until(r, Instant::now() + Duration::from_secs(30));
}
