//! The progress display says when a task waits, until when (local time) and why — at once,
//! not when the wait is over.

mod support;
use support::git;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn a_task_waiting_for_its_accounts_window_says_until_when_and_why_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    // The only profile's account opens two hours from now.
    let before = chrono::Local::now();
    let opens = before + chrono::Duration::hours(2);
    let closes = opens + chrono::Duration::hours(1);
    std::fs::write(
        home.join("fleet.yaml"),
        format!(
            "agents:\n  night: {{ cli: command, command: \"true\", roles: [developer], account: nightly }}\naccounts:\n  nightly: {{ window: \"{}-{}\" }}\n",
            opens.format("%H:%M"),
            closes.format("%H:%M")
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("rb.yaml"),
        "name: w\ntasks:\n  - id: job\n    role: developer\n    prompt: \"do it\"\n",
    )
    .unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .current_dir(&repo)
        .args(["run", "rb.yaml"])
        .env("FLEET_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = run.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("wait ") => break line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no waiting line ({e}): {seen:?}"),
        }
    };
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let _ = run.wait();
    // Local time, with the day when it is not today's (two hours from now may be tomorrow):
    // today as the display saw it, between the start of the run and its line.
    let after = chrono::Local::now();
    let shown = |now: chrono::DateTime<chrono::Local>| {
        if opens.date_naive() == now.date_naive() {
            opens.format("%H:%M").to_string()
        } else {
            opens.format("%b %-d %H:%M").to_string()
        }
    };
    assert!(
        [shown(before), shown(after)]
            .iter()
            .any(|at| wait.contains(&format!("job until {at}: "))),
        "{wait}"
    );
    assert!(wait.contains("outside its availability window"), "{wait}");
    assert!(
        !wait.contains('T') || !wait.contains('Z'),
        "no UTC stamp: {wait}"
    );
}
