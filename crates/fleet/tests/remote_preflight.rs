//! Preflight of the project's git remote (`git ls-remote` under a timeout): unreachable, `fleet
//! project add` refuses it with a clear message and registers nothing; at submit (here under
//! `fleet serve`) the epic is `blocked` with the question before any agent works, and after the
//! remote is fixed `fleet task retry` lets it go on.

mod support;
use std::time::{Duration, Instant};
use support::scripted::{ALL, Inst};

#[test]
fn project_add_refuses_a_remote_that_does_not_exist_and_registers_nothing() {
    let inst = Inst::new(&ALL, "");
    let missing = inst.path("nowhere.git");
    let out = inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--remote",
            missing.to_str().unwrap(),
        ],
        2,
    );
    assert!(
        out.contains(&format!(
            "The git remote {} of project shop cannot be reached",
            missing.display()
        )),
        "{out}"
    );
    let ls = inst.expect(&["project", "ls"], 0);
    assert!(!ls.contains("shop"), "{ls}");
    // Reachable, the same project is registered.
    inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--remote",
            "origin",
        ],
        0,
    );
}

#[test]
fn a_remote_that_never_answers_is_refused_after_the_timeout() {
    let inst = Inst::new(&ALL, "");
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("git://{}/shop.git", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(1) {
            conns.push(c);
            std::thread::sleep(Duration::from_secs(15));
        }
    });
    let started = Instant::now();
    let out = inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--remote",
            &url,
        ],
        2,
    );
    assert!(out.contains("no answer within 10s"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn under_serve_an_unreachable_remote_blocks_a_new_request_until_it_is_fixed() {
    let inst = Inst::new(&ALL, "");
    inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--remote",
            "origin",
        ],
        0,
    );
    let origin = inst.path("origin.git");
    let moved = inst.path("moved.git");
    std::fs::rename(&origin, &moved).unwrap();
    let (submit, read) = (inst.token("submit"), inst.token("read"));
    let served = inst.serve();
    let http = support::server::Http::new();
    let api = |p: &str| format!("{}{p}", served.1);
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        serde_json::json!({"project": "shop", "request": "Add a file"}),
    );
    assert_eq!(s, 201);
    let detail = |want: &str| {
        support::server::wait_for(60, want, || {
            let (_, d) = http.get(&api("/api/v1/tasks/e1"), Some(&read));
            (d["task"]["state"] == want).then_some(d)
        })
    };
    let d = detail("blocked");
    let q = d["task"]["blocked"]["question"].as_str().unwrap();
    assert!(
        q.contains("The git remote origin of project shop cannot be reached")
            && q.contains("fleet task retry e1"),
        "{q}"
    );
    assert_eq!(d["task"]["blocked"]["at"], "research");
    // No agent worked on it.
    assert!(!inst.path("prompts/researcher.txt").exists());
    let out = inst.expect(&["task", "retry", "e1", "--no-wait"], 2);
    assert!(
        out.contains("still blocked") && out.contains("cannot be reached"),
        "{out}"
    );
    std::fs::rename(&moved, &origin).unwrap();
    inst.expect(&["task", "retry", "e1", "--no-wait"], 0);
    detail("awaiting_acceptance");
}
