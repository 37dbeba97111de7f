//! Memory inside one run, through the real binary with scripted `cli: command` agents, real
//! git and real SQLite: a task that fails for good becomes a lesson by a retrospective handed
//! every attempt's failing output (the recurring-failure trigger), and a task's trace reaches
//! the prompt of a task that depends on it in the same run.

mod support;
use support::git;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// Fails until the file starts with the license header (which only this output states).
const CHECK: &str = r#"head -n1 "$1" | grep -qx '// SPDX-License-Identifier: MIT' || { echo "$1: the first line must be the license header // SPDX-License-Identifier: MIT"; exit 1; }
"#;

/// Never passes: prices are always written in euros.
const CENTS: &str = r#"grep -q cents "$1" || { echo "$1: prices must be in cents, found euros"; exit 1; }
"#;

/// Keeps each prompt it gets; follows the header convention only when its prompt states it.
const DEV: &str = r#"set -e
cp "$FLEET_PROMPT_FILE" "$DIR/prompt-$FLEET_TASK-$(date +%s%N).txt"
f="$FLEET_TASK.txt"
: > "$f"
if grep -q 'SPDX-License-Identifier: MIT' "$FLEET_PROMPT_FILE"; then echo '// SPDX-License-Identifier: MIT' > "$f"; fi
echo "module $FLEET_TASK: 12.50 euros" >> "$f"
"#;

/// Writes a lesson only when handed the failing output of both attempts.
const RETRO: &str = r#"set -e
mkdir -p .fleet-out
cp "$FLEET_PROMPT_FILE" "$DIR/retro-prompt.txt"
if grep -q 'Attempt 1' "$FLEET_PROMPT_FILE" && grep -q 'Attempt 2' "$FLEET_PROMPT_FILE" && grep -q 'prices must be in cents' "$FLEET_PROMPT_FILE"; then
  printf '%s' '{"lessons":[{"scope":"project","applies_when":{"words":["prices"]},"lesson":"Write prices in cents, never in euros"}]}' > .fleet-out/lessons.json
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
        std::fs::write(repo.join("cents.sh"), CENTS).unwrap();
        let d = dir.display();
        std::fs::write(
            repo.join("fleet.yaml"),
            format!(
                "agents:\n  dev:\n    cli: command\n    command: \"sh {d}/dev.sh\"\n    roles: [developer]\n    env: {{ DIR: \"{d}\" }}\n  retro:\n    cli: command\n    command: \"sh {d}/retro.sh\"\n    roles: [retrospector]\n    env: {{ DIR: \"{d}\" }}\n"
            ),
        )
        .unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        Project {
            _tmp: tmp,
            dir,
            repo,
        }
    }

    fn fleet(&self, args: &[&str]) -> Output {
        Command::new(FLEET)
            .current_dir(&self.repo)
            .args(args)
            .env_remove("FLEET_HOME")
            .output()
            .unwrap()
    }

    fn run(&self, name: &str, yaml: &str) -> Output {
        std::fs::write(self.repo.join(format!("{name}.yaml")), yaml).unwrap();
        self.fleet(&["run", &format!("{name}.yaml"), "--quiet"])
    }

    /// The prompts task `task`'s attempts got, in order.
    fn prompts(&self, task: &str) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_string_lossy().into_owned();
                f.starts_with(&format!("prompt-{task}-"))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    /// The id of the only run named `name`.
    fn run_id(&self, name: &str) -> String {
        let ids: Vec<String> = std::fs::read_dir(self.repo.join(".fleet/runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| {
                f.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with("-2"))
            })
            .collect();
        assert_eq!(ids.len(), 1, "runs named {name}: {ids:?}");
        ids[0].clone()
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
fn a_task_that_fails_for_good_becomes_a_lesson_with_its_provenance() {
    let p = Project::new();
    let out = p.run(
        "prices",
        "name: prices\ntasks:\n  - id: billing\n    role: developer\n    prompt: Add the billing module in billing.txt.\n    checks: [\"sh cents.sh billing.txt\"]\n    max_attempts: 2\n",
    );
    assert!(
        !out.status.success(),
        "the task cannot pass: {}",
        text(&out)
    );
    assert_eq!(
        p.prompts("billing").len(),
        2,
        "two attempts, then it gave up"
    );

    // The retrospective was handed each attempt's failing output and what happened.
    let retro = std::fs::read_to_string(p.dir.join("retro-prompt.txt"))
        .unwrap_or_else(|e| panic!("no retrospective ran ({e}): {}", text(&out)));
    assert!(retro.contains("a recurring failure"), "{retro}");
    assert!(
        retro.contains("billing.txt: prices must be in cents, found euros"),
        "{retro}"
    );
    let lessons = p.fleet(&["memory", "ls", "--json"]);
    let lessons: Value = serde_json::from_slice(&lessons.stdout).unwrap();
    let lessons = lessons.as_array().unwrap();
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    assert!(lessons[0]["text"].as_str().unwrap().contains("in cents"));
    let origin = &lessons[0]["provenance"][0];
    assert_eq!(origin["source"], "retrospective");
    assert_eq!(origin["task"], "billing");
    assert_eq!(origin["attempt"], 2);
    assert_eq!(origin["run"].as_str().unwrap(), p.run_id("prices"));
}

#[test]
fn a_dependent_task_is_shown_the_trace_of_the_task_it_builds_on() {
    let p = Project::new();
    // `a` breaks the header convention once (its check says so), then passes; `b` needs `a`.
    let out = p.run(
        "graph",
        "name: graph\ntasks:\n  - id: a\n    role: developer\n    prompt: Add the module a in a.txt.\n    checks: [\"sh check.sh a.txt\"]\n  - id: b\n    role: developer\n    prompt: Add the module b in b.txt, next to a.\n    depends_on: [a]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.prompts("a").len(), 2, "a failed once, then passed");
    let run = p.run_id("graph");
    let trace = p.repo.join(format!(".fleet/traces/{run}/a.md"));
    let body =
        std::fs::read_to_string(&trace).unwrap_or_else(|e| panic!("{}: {e}", trace.display()));
    assert!(body.starts_with("# Trace: task `a`"), "{body}");
    assert!(
        body.contains("the first line must be the license header"),
        "{body}"
    );

    let b = p.prompts("b");
    assert_eq!(b.len(), 1, "b passes first time");
    let b = &b[0];
    let section = b
        .split("## Earlier work this task builds on")
        .nth(1)
        .unwrap_or_else(|| panic!("no earlier-work section in b's prompt:\n{b}"));
    let path = trace.canonicalize().unwrap();
    assert!(
        section.contains(&format!("`{}`", path.display()))
            || section.contains(&format!("`{}`", trace.display())),
        "{section}"
    );
    assert!(
        section.contains("a merged after 2 attempts by dev"),
        "{section}"
    );
    // `a` builds on nothing: its own prompts have no such section.
    assert!(
        p.prompts("a")
            .iter()
            .all(|x| !x.contains("Earlier work this task builds on"))
    );
}
