//! The learning loop through the real binary, with scripted `cli: command` agents, real git
//! and real SQLite: a project convention the first task breaks (its check fails, the fix
//! passes) becomes a lesson by a retrospective; a later similar task gets it in its prompt and
//! passes on its first attempt, while with memory off (`memory: { enabled: false }`) the same
//! kind of task needs two.

mod support;
use support::git;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// The project's convention, which only its check states (so a first attempt cannot know it).
const CHECK: &str = r#"head -n1 "$1" | grep -qx '// SPDX-License-Identifier: MIT' || { echo "$1: the first line must be the license header // SPDX-License-Identifier: MIT"; exit 1; }
"#;

/// The developer follows the convention only when its prompt states it: the lesson in the
/// prompt, or the failing check's output in the handoff note of a retry.
const DEV: &str = r#"set -e
cp "$FLEET_PROMPT_FILE" "$DIR/prompt-$FLEET_TASK-$(date +%s%N).txt"
f="$FLEET_TASK.txt"
: > "$f"
if grep -q 'SPDX-License-Identifier: MIT' "$FLEET_PROMPT_FILE"; then echo '// SPDX-License-Identifier: MIT' > "$f"; fi
echo "module $FLEET_TASK" >> "$f"
"#;

/// The retrospector writes the lesson only when the evidence it is handed shows the failure.
const RETRO: &str = r#"set -e
mkdir -p .fleet-out
cp "$FLEET_PROMPT_FILE" "$DIR/retro-prompt.txt"
if grep -q 'the first line must be the license header' "$FLEET_PROMPT_FILE"; then
  printf '%s' '{"lessons":[{"scope":"project","applies_when":{"words":["module"]},"lesson":"Every module file starts with the line // SPDX-License-Identifier: MIT"}]}' > .fleet-out/lessons.json
else
  printf '%s' '{"lessons":[]}' > .fleet-out/lessons.json
fi
"#;

struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    repo: PathBuf,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let repo = dir.join("shop");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(dir.join("dev.sh"), DEV).unwrap();
        std::fs::write(dir.join("retro.sh"), RETRO).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("check.sh"), CHECK).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        let p = Project {
            _tmp: tmp,
            dir,
            repo,
        };
        p.configure("");
        p
    }

    fn configure(&self, extra: &str) {
        let d = self.dir.display();
        std::fs::write(
            self.repo.join("fleet.yaml"),
            format!(
                "agents:\n  dev:\n    cli: command\n    command: \"sh {d}/dev.sh\"\n    roles: [developer]\n    env: {{ DIR: \"{d}\" }}\n  retro:\n    cli: command\n    command: \"sh {d}/retro.sh\"\n    roles: [retrospector]\n    env: {{ DIR: \"{d}\" }}\n{extra}"
            ),
        )
        .unwrap();
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(FLEET)
            .current_dir(&self.repo)
            .args(args)
            .env_remove("FLEET_HOME")
            .output()
            .unwrap()
    }

    /// Runs a one-task runbook named `name` whose developer adds module `task`.
    fn run(&self, name: &str, task: &str) -> Output {
        std::fs::write(
            self.repo.join(format!("{name}.yaml")),
            format!(
                "name: {name}\ntasks:\n  - id: {task}\n    role: developer\n    prompt: Add the module {task} in {task}.txt.\n    checks: [\"sh check.sh {task}.txt\"]\n"
            ),
        )
        .unwrap();
        self.fleet(&["run", &format!("{name}.yaml"), "--quiet"])
    }

    /// The events of the run named `name` (the only one of that name).
    fn events(&self, name: &str) -> Vec<Value> {
        let runs = self.repo.join(".fleet/runs");
        let dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_string_lossy().into_owned();
                f.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with("-2"))
            })
            .collect();
        assert_eq!(dirs.len(), 1, "runs named {name}: {dirs:?}");
        read_events(&dirs[0].join("events.jsonl"))
    }

    fn lessons(&self) -> Vec<Value> {
        let out = self.fleet(&["memory", "ls", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn attempts(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| e["kind"] == "attempt.started")
        .count()
}

fn passed(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_convention_becomes_a_lesson_that_a_later_task_passes_with_first_time() {
    let p = Project::new();
    // The first task breaks the convention, learns it from its check, and passes.
    passed(&p.run("first", "billing"));
    assert_eq!(
        attempts(&p.events("first")),
        2,
        "the first task needs a retry"
    );

    // The retrospective was handed the failing output and the fixing diff, and wrote a lesson
    // with its provenance.
    let retro = std::fs::read_to_string(p.dir.join("retro-prompt.txt")).unwrap();
    assert!(
        retro.contains("the first line must be the license header"),
        "{retro}"
    );
    assert!(
        retro.contains("+// SPDX-License-Identifier: MIT"),
        "the fixing diff: {retro}"
    );
    let lessons = p.lessons();
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    let lesson = &lessons[0];
    let id = lesson["id"].as_str().unwrap().to_string();
    assert_eq!(
        lesson["scope"],
        serde_json::json!({"kind": "project", "name": "shop"})
    );
    assert_eq!(lesson["provenance"][0]["task"], "billing");
    assert_eq!(lesson["provenance"][0]["attempt"], 2);
    assert_eq!(lesson["used"], 0);

    // A later similar task gets the lesson in its prompt and passes on its first attempt; the
    // injection is an event of that attempt and counts as helping.
    passed(&p.run("second", "invoices"));
    let second = p.events("second");
    assert_eq!(
        attempts(&second),
        1,
        "the lesson makes the first attempt pass"
    );
    let injected = second
        .iter()
        .find(|e| e["kind"] == "attempt.lessons")
        .expect("an attempt.lessons event");
    assert_eq!(injected["attempt"], 1);
    assert_eq!(injected["data"]["lessons"], serde_json::json!([id]));
    let lesson = &p.lessons()[0];
    assert_eq!(
        (lesson["used"].as_u64(), lesson["helped"].as_u64()),
        (Some(1), Some(1))
    );

    // With memory off the same kind of task needs two attempts: nothing is injected.
    p.configure("memory:\n  enabled: false\n");
    passed(&p.run("third", "refunds"));
    let third = p.events("third");
    assert_eq!(
        attempts(&third),
        2,
        "without the lesson the first attempt fails"
    );
    assert!(!third.iter().any(|e| e["kind"] == "attempt.lessons"));
    // ...and no retrospective ran for it (memory off), so the lesson is unchanged.
    let lessons = p.lessons();
    assert_eq!(lessons.len(), 1);
    assert_eq!(lessons[0]["used"], 1);
}

/// A review rejection is a trigger too: once the next cycle's fix has passed (and landed), a
/// retrospective is handed the reviewer's words and the fixing diff, and writes a lesson whose
/// provenance is the fix's run and task.
#[test]
fn a_review_rejection_fixed_in_the_next_cycle_becomes_a_lesson() {
    use support::scripted::Inst;
    let inst = Inst::new(
        &[
            "researcher",
            "planner",
            "developer",
            "reviewer",
            "retrospector",
        ],
        "",
    );
    inst.add_shop();
    std::fs::write(inst.path("reject-once"), "").unwrap();
    let out = inst.run(&["task", "add", "Add a file", "--project", "shop"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("awaiting_acceptance"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let retro = inst.prompt("retrospector");
    assert!(
        retro.contains("still wrong"),
        "the reviewer's words: {retro}"
    );
    assert!(retro.contains("+t2 is done"), "the fixing diff: {retro}");
    let out = inst.run(&["memory", "ls", "--json"]);
    let lessons: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lessons = lessons.as_array().unwrap();
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    assert!(lessons[0]["text"].as_str().unwrap().contains("still wrong"));
    let origin = &lessons[0]["provenance"][0];
    assert_eq!(origin["source"], "retrospective");
    assert_eq!(origin["task"], "t2");
    assert!(
        origin["run"].as_str().unwrap().starts_with("e1-implement"),
        "{origin}"
    );
}
