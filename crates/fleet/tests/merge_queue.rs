//! The merge queue: tasks that passed side by side land one at a time. One whose work
//! conflicts with what landed first goes back to its agent with the conflict in its prompt and
//! the markers in its worktree, and lands once resolved; one that does not conflict is rebased
//! onto what landed and checked again before it lands. No commit is lost or landed twice
//! (checked by walking the integration branch).

mod support;
use support::git;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The agent: a shell script playing one (`cli: command`). Its prompt's first line says which
/// line to add to `shared.txt` (or which file to write, with the task's id or with `same`). Tasks other than `a` wait until `a`
/// has landed, so the order is fixed: `b` and `c` start from the old base and must catch up.
/// Given a worktree with conflict markers, it resolves them by keeping both sides.
const AGENT: &str = r#"#!/bin/sh
set -e
if grep -q '^<<<<<<< ' shared.txt 2>/dev/null; then
  grep -v -e '^<<<<<<< ' -e '^=======$' -e '^>>>>>>> ' shared.txt > shared.tmp
  mv shared.tmp shared.txt
  grep -i -e 'conflicts with this task' -e 'conflict markers' "$FLEET_PROMPT_FILE" | tr '\n' ' '; echo
  echo "resolved the conflict in shared.txt"
  exit 0
fi
if [ "$FLEET_TASK" != a ]; then
  i=0
  until git log --all --format=%s | grep -q 'merge task a '; do
    i=$((i+1)); [ $i -lt 600 ] || { echo "a never landed" >&2; exit 3; }
    sleep 0.1
  done
fi
what=$(head -n1 "$FLEET_PROMPT_FILE")
case "$what" in
  line:*) echo "${what#line: }" >> shared.txt ;;
  file:*) echo "$FLEET_TASK" > "${what#file: }" ;;
  same:*) echo same > "${what#same: }" ;;
esac
echo "did: $what"
"#;

struct Instance {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

impl Instance {
    fn new() -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("shared.txt"), "header\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        let agent = tmp.path().join("agent.sh");
        std::fs::write(&agent, AGENT).unwrap();
        std::fs::write(
            home.join("fleet.yaml"),
            format!(
                "agents:\n  scripted:\n    cli: command\n    command: \"sh {}\"\n    roles: [developer]\n",
                agent.display()
            ),
        )
        .unwrap();
        Instance {
            _tmp: tmp,
            home,
            repo,
        }
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .output()
            .unwrap()
    }

    fn events(&self, run: &str) -> Vec<Value> {
        std::fs::read_to_string(self.home.join(".fleet/runs").join(run).join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// What happened, in order, one event a line: quoted when an assertion fails.
fn story(events: &[Value]) -> String {
    let lines: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {}", e["task"], e["kind"], e["data"]))
        .collect();
    lines.join("\n")
}

fn read_at(repo: &Path, rev: &str, file: &str) -> String {
    git(repo, &["show", &format!("{rev}:{file}")])
}

#[test]
fn a_conflict_is_reworked_and_a_clean_late_task_is_rebased_and_rechecked_then_all_land() {
    let inst = Instance::new();
    let c_log = inst.repo.parent().unwrap().join("c-checks.log");
    std::fs::write(
        inst.repo.join("runbook.yaml"),
        format!("name: mq\nconcurrency: 3\ntasks:\n\
         - {{ id: a, agent: scripted, prompt: \"line: from-a\", checks: [\"grep -q from-a shared.txt\"] }}\n\
         - {{ id: b, agent: scripted, prompt: \"line: from-b\", checks: [\"grep -q from-b shared.txt\", \"! grep -q '<<<<<<<' shared.txt\"] }}\n\
         - {{ id: c, agent: scripted, prompt: \"file: c.txt\", checks: [\"test -f c.txt\", \"echo checked >> {}\"] }}\n", c_log.display()),
    )
    .unwrap();
    let out = inst.fleet(&["run", "runbook.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status: Value = serde_json::from_slice(&inst.fleet(&["status", "--json"]).stdout).unwrap();
    let run = status["id"].as_str().unwrap().to_string();
    let branch = status["integration_branch"].as_str().unwrap().to_string();
    let events = inst.events(&run);
    let of = |task: &str, kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["task"] == task && e["kind"] == kind)
            .collect()
    };

    // b conflicted with a, went back to its agent once, and landed after resolving.
    let conflicts = of("b", "task.merge_conflict");
    assert_eq!(conflicts.len(), 1, "{events:#?}");
    assert_eq!(
        conflicts[0]["data"]["files"],
        serde_json::json!(["shared.txt"])
    );
    assert_eq!(conflicts[0]["data"]["rework"], true);
    let log =
        std::fs::read_to_string(PathBuf::from(status["logs"].as_str().unwrap()).join("b.log"))
            .unwrap();
    let story = story(&events);
    assert_eq!(
        of("b", "attempt.started").len(),
        2,
        "b's attempts:\n{story}\n--- b.log ---\n{log}"
    );
    assert!(log.contains("resolved the conflict"), "{log}");
    assert!(
        log.contains("conflicts with this task's work in: shared.txt")
            && log.contains("conflict markers"),
        "the rework prompt names the conflict: {log}"
    );

    // c did not conflict: rebased onto what landed, its checks ran again, no second attempt.
    assert_eq!(of("c", "task.rebased").len(), 1, "{events:#?}");
    assert_eq!(of("c", "attempt.started").len(), 1, "{story}");
    let c_checks = std::fs::read_to_string(&c_log).unwrap_or_default();
    assert_eq!(
        c_checks.lines().count(),
        2,
        "c's checks ran before and after the rebase:\n{story}"
    );

    // Everything landed, once: walk the integration branch.
    for t in ["a", "b", "c"] {
        assert_eq!(of(t, "task.merged").len(), 1, "{t} merged once");
    }
    let shared = read_at(&inst.repo, &branch, "shared.txt");
    let mut lines: Vec<&str> = shared.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["from-a", "from-b", "header"],
        "both lines kept, no markers"
    );
    assert_eq!(read_at(&inst.repo, &branch, "c.txt").trim(), "c");
    let subjects = git(&inst.repo, &["log", "--format=%s", &branch]);
    for t in ["a", "b", "c"] {
        let task_commits = subjects
            .lines()
            .filter(|s| s.starts_with(&format!("fleet: task {t} ")))
            .count();
        let merges = subjects
            .lines()
            .filter(|s| s.starts_with(&format!("fleet: merge task {t} ")))
            .count();
        assert!(
            task_commits >= 1,
            "{t}'s commit is on the branch:\n{subjects}"
        );
        assert_eq!(merges, 1, "{t} landed exactly once:\n{subjects}");
    }
    // b's original commit (before the conflict) is kept too: its resolution merges it.
    let b_commits = subjects
        .lines()
        .filter(|s| s.starts_with("fleet: task b "))
        .count();
    assert_eq!(
        b_commits, 2,
        "b's first commit and its resolution:\n{subjects}"
    );
}

/// Two tasks make the same change. The second, rebased onto what the first landed, has nothing
/// left to add: it lands as already merged, without a merge commit and without being sent back
/// to its agent for "changing nothing".
#[test]
fn a_task_whose_change_landed_meanwhile_lands_as_already_merged() {
    let inst = Instance::new();
    std::fs::write(
        inst.repo.join("runbook.yaml"),
        "name: twins\nconcurrency: 2\ntasks:\n\
         - { id: a, agent: scripted, prompt: \"same: twin.txt\", checks: [\"grep -qx same twin.txt\"] }\n\
         - { id: d, agent: scripted, prompt: \"same: twin.txt\", checks: [\"grep -qx same twin.txt\"] }\n",
    )
    .unwrap();
    let out = inst.fleet(&["run", "runbook.yaml"]);
    let status: Value = serde_json::from_slice(&inst.fleet(&["status", "--json"]).stdout).unwrap();
    let run = status["id"].as_str().unwrap().to_string();
    let branch = status["integration_branch"].as_str().unwrap().to_string();
    let events = inst.events(&run);
    let story = story(&events);
    assert!(
        out.status.success(),
        "run failed: {}\n{story}",
        String::from_utf8_lossy(&out.stderr)
    );
    let of = |task: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e["task"] == task && e["kind"] == kind)
            .count()
    };
    assert_eq!(of("d", "task.rebased"), 1, "{story}");
    assert_eq!(
        of("d", "attempt.started"),
        1,
        "one attempt, not sent back: {story}"
    );
    assert_eq!(of("d", "task.merged"), 1, "{story}");
    let log =
        std::fs::read_to_string(PathBuf::from(status["logs"].as_str().unwrap()).join("d.log"))
            .unwrap();
    assert!(
        log.contains("already has all of this task's branch"),
        "{log}"
    );
    assert!(!log.contains("changed nothing"), "{log}");
    let subjects = git(&inst.repo, &["log", "--format=%s", &branch]);
    assert_eq!(
        subjects
            .lines()
            .filter(|s| s.starts_with("fleet: merge task "))
            .count(),
        1,
        "only a's merge:\n{subjects}"
    );
    assert_eq!(read_at(&inst.repo, &branch, "twin.txt").trim(), "same");
}
