//! `fleet review-run`: an agent in role framework-reviewer reads a real run's records and
//! writes the three documents; it is refused while the run is live, and two reviews of one run
//! never overlap.

mod support;
use support::git;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The reviewer: counts the events it was given and names the kinds it saw, so the test can
/// tell it read the real log. While `hold` exists it waits (to test overlapping reviews).
fn reviewer(hold: &Path) -> String {
    format!(
        "while [ -e {hold} ]; do sleep 0.1; done; mkdir -p .fleet-out; \
         n=$(cat input/*/events.jsonl | wc -l); \
         kinds=$(cat input/*/events.jsonl | grep -o '\\\"kind\\\":\\\"[a-z_.]*' | sort -u | wc -l); \
         printf 'events: %s\\nkinds: %s\\n' $n $kinds > .fleet-out/log-analysis.md; \
         echo 'No framework defects found.' > .fleet-out/bug-report.md; \
         echo 'Nothing to fix.' > .fleet-out/fix-plan.md",
        hold = hold.display()
    )
}

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    hold: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    let repo = tmp.path().join("repo");
    let hold = tmp.path().join("hold");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# r\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let command = reviewer(&hold).replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        home.join("fleet.yaml"),
        format!(
            "agents:\n  looker:\n    cli: command\n    command: \"{command}\"\n    roles: [framework-reviewer]\n"
        ),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        home,
        repo,
        hold,
    }
}

impl Setup {
    fn fleet(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.fleet(args).output().unwrap()
    }

    fn runbook(&self, name: &str, tasks: &str) -> PathBuf {
        let path = self.repo.join(format!("{name}.yaml"));
        std::fs::write(&path, format!("name: {name}\ntasks:\n{tasks}")).unwrap();
        path
    }

    /// The id of the newest run.
    fn newest_run(&self) -> String {
        let out = self.output(&["runs", "--json"]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        runs[0]["id"].as_str().unwrap().to_string()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_finished_runs_review_writes_three_documents_from_its_real_log() {
    let s = setup();
    let book = s.runbook(
        "work",
        "  - { id: a, command: \"echo a > a.txt\" }\n  - { id: b, command: \"echo b > b.txt\", depends_on: [a] }\n",
    );
    let out = s.output(&["run", book.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = s.newest_run();
    let journal = s.home.join(".fleet/runs").join(&run).join("events.jsonl");
    let events = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert!(events > 5, "a real run records events: {events}");

    let out = s.output(&["review-run", &run]);
    assert!(out.status.success(), "{}", text(&out));
    let docs = s.home.join(".fleet/reviews").join(&run);
    let analysis = std::fs::read_to_string(docs.join("log-analysis.md")).unwrap();
    assert!(
        analysis.contains(&format!("events: {events}\n")),
        "the reviewer got the whole journal ({events} events): {analysis}"
    );
    for doc in ["bug-report.md", "fix-plan.md"] {
        assert!(
            !std::fs::read_to_string(docs.join(doc)).unwrap().is_empty(),
            "{doc}"
        );
    }
    // Unknown targets and missing reviewers are clear refusals (exit 2).
    let out = s.output(&["review-run", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no run or epic"), "{}", text(&out));
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refused_while_the_run_is_live_and_two_reviews_never_overlap() {
    let s = setup();
    let gate = s.repo.join("gate");
    std::fs::write(&gate, "").unwrap();
    let book = s.runbook(
        "slow",
        &format!(
            "  - {{ id: slow, command: \"while [ -e {} ]; do sleep 0.1; done\" }}\n",
            gate.display()
        ),
    );
    let mut live = s
        .fleet(&["run", book.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let logs = s.home.join(".fleet/runs");
    wait_until("the run to start its task", 60, || {
        std::fs::read_dir(&logs).is_ok_and(|mut d| d.next().is_some())
            && s.output(&["runs", "--json"]).status.success()
            && !s.newest_run().is_empty()
            && s.home.join(".fleet/worktrees").exists()
    });
    let run = s.newest_run();
    let out = s.output(&["review-run", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is live"), "{}", text(&out));
    assert!(
        !s.home
            .join(".fleet/reviews")
            .join(&run)
            .join("log-analysis.md")
            .exists()
    );

    std::fs::remove_file(&gate).unwrap();
    assert!(live.wait().unwrap().success());

    // The first review waits on `hold`; a second one meanwhile is refused.
    std::fs::write(&s.hold, "").unwrap();
    let first = s
        .fleet(&["review-run", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reviews = s.home.join(".fleet/reviews").join(&run).join("work");
    wait_until("the first review to start", 60, || reviews.exists());
    let second = s.output(&["review-run", &run]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        text(&second).contains("already running"),
        "{}",
        text(&second)
    );
    std::fs::remove_file(&s.hold).unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        s.home
            .join(".fleet/reviews")
            .join(&run)
            .join("fix-plan.md")
            .exists()
    );
}
