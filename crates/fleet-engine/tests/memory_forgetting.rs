//! Forgetting through the product, with an injected clock: real engine runs (real git, real
//! SQLite store and memory file, scripted `cli: command` agents) inject, weigh and archive
//! lessons, and retrospectives add them, at times the test chooses. A lesson that never helps
//! is archived once its window has passed (not a day before); a retrospective's
//! near-duplicate is merged keeping both provenances; a scope never exceeds its cap.

use fleet_engine::lessons::{MemorySettings, memory_file};
use fleet_engine::{EngineOptions, RunEnd, StateDir};
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Policy, Provenance, Scope};
use fleet_store::{Durability, Store, StoreUrl};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const DAY: i64 = 24 * 60 * 60 * 1000;
const T0: i64 = 1_700_000_000_000;

const CHECK: &str = r#"head -n1 "$1" | grep -qx '// SPDX-License-Identifier: MIT' || { echo "$1: the first line must be the license header // SPDX-License-Identifier: MIT"; exit 1; }
"#;
/// Follows the convention only once the failing check's output is in its prompt.
const DEV: &str = r#"set -e
f="$FLEET_TASK.txt"
: > "$f"
if grep -q 'the first line must be the license header' "$FLEET_PROMPT_FILE"; then echo '// SPDX-License-Identifier: MIT' > "$f"; fi
echo "module $FLEET_TASK" >> "$f"
"#;
/// Writes whatever lessons the test left in `$DIR/lessons.json`.
const RETRO: &str = r#"set -e
mkdir -p .fleet-out
cp "$DIR/lessons.json" .fleet-out/lessons.json
"#;

fn git(dir: &Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    repo: PathBuf,
    layout: StateDir,
    store: Arc<dyn Store>,
    instance: fleet_config::InstanceConfig,
    clock: Arc<AtomicI64>,
    policy: Policy,
}

impl World {
    fn new() -> World {
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
        let d = dir.display();
        let yaml = format!(
            "agents:\n  dev:\n    cli: command\n    command: \"sh {d}/dev.sh\"\n    roles: [developer]\n    env: {{ DIR: \"{d}\" }}\n  retro:\n    cli: command\n    command: \"sh {d}/retro.sh\"\n    roles: [retrospector]\n    env: {{ DIR: \"{d}\" }}\nmemory:\n  archive_after_days: 60\n  scope_cap: 3\n"
        );
        let instance = fleet_config::parse_instance(&dir.join("fleet.yaml"), &yaml).unwrap();
        let layout = StateDir::new(dir.join(".fleet"));
        std::fs::create_dir_all(layout.root()).unwrap();
        let store = StoreUrl::Sqlite(layout.db())
            .open(Durability::Process)
            .unwrap();
        let policy = Policy::from_config(&instance.memory);
        World {
            _tmp: tmp,
            dir,
            repo,
            layout,
            store,
            instance,
            clock: Arc::new(AtomicI64::new(T0)),
            policy,
        }
    }

    fn at(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }

    fn db(&self) -> MemoryDb {
        MemoryDb::open(
            &memory_file(self.layout.root()),
            fleet_secrets::Redactor::from_process_env(&[]),
        )
        .unwrap()
    }

    /// A person's lesson of project `shop`, added now.
    fn seed(&self, text: &str, words: &[&str]) -> String {
        let now = self.clock.load(Ordering::SeqCst);
        let l = Lesson::new(
            Scope::Project("shop".into()),
            AppliesWhen {
                words: words.iter().map(|w| w.to_string()).collect(),
                ..AppliesWhen::default()
            },
            text.into(),
            Provenance {
                source: "person".into(),
                run: None,
                task: None,
                attempt: None,
                at: now,
            },
        );
        self.db().add_lesson(l, now, &self.policy).unwrap().id
    }

    async fn run(&self, name: &str, tasks: &str) -> RunEnd {
        let path = self.repo.join(format!("{name}.yaml"));
        let text = format!("name: {name}\ntasks:\n{tasks}");
        std::fs::write(&path, &text).unwrap();
        let rb = fleet_config::parse_runbook(&path, &text).unwrap();
        let plan = fleet_engine::plan_from_runbook(&rb, &self.instance).unwrap();
        let clock = self.clock.clone();
        let memory = MemorySettings {
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..MemorySettings::from_config(&self.instance.memory)
        };
        let opts = EngineOptions {
            memory,
            kill_grace: std::time::Duration::from_secs(1),
            ..EngineOptions::default()
        };
        fleet_engine::start(self.layout.clone(), self.store.clone(), plan, opts)
            .await
            .unwrap()
            .end
    }

    /// A run with nothing for memory to do but its upkeep.
    async fn idle_run(&self, name: &str) {
        let end = self
            .run(name, "  - id: noop\n    command: \"true\"\n")
            .await;
        assert_eq!(end, RunEnd::Passed);
    }
}

fn agent_task(id: &str, max_attempts: u32) -> String {
    format!(
        "  - id: {id}\n    role: developer\n    prompt: Add the module {id} in {id}.txt.\n    checks: [\"sh check.sh {id}.txt\"]\n    max_attempts: {max_attempts}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesson_that_never_helps_is_archived_after_its_window_through_real_runs() {
    let w = World::new();
    let useless = w.seed("Module files are indented with tabs.", &["module"]);

    // Injected into an attempt that then fails: used, never helped.
    w.at(T0 + DAY);
    assert_eq!(
        w.run("weekly", &agent_task("alpha", 1)).await,
        RunEnd::Failed
    );
    let l = w.db().lesson(&useless).unwrap().unwrap();
    assert_eq!((l.used, l.helped, l.last_used_at), (1, 0, Some(T0 + DAY)));

    // A day short of the window: kept.
    w.at(T0 + DAY + 59 * DAY);
    w.idle_run("later").await;
    assert!(
        w.db()
            .lesson(&useless)
            .unwrap()
            .unwrap()
            .archived_at
            .is_none()
    );

    // The window since its last use has passed: archived, not deleted, with the reason.
    w.at(T0 + DAY + 60 * DAY);
    w.idle_run("much-later").await;
    let l = w.db().lesson(&useless).unwrap().unwrap();
    assert_eq!(l.archived_at, Some(T0 + DAY + 60 * DAY));
    assert_eq!(
        l.archived_why.as_deref(),
        Some("injected 1 times, never helped, idle 60 days")
    );
    let archived: Vec<String> = w
        .db()
        .lessons(true)
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(archived, [useless]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrospective_lessons_merge_with_their_twin_and_keep_the_scope_under_its_cap() {
    let w = World::new();
    let twin = w.seed(
        "Run the formatter before committing Rust code.",
        &["rustfmt"],
    );
    w.seed(
        "Keep the changelog in CHANGES.md, newest first.",
        &["changelog"],
    );
    w.seed("Migrations are numbered with four digits.", &["migration"]);
    std::fs::write(
        w.dir.join("lessons.json"),
        r#"{"lessons": [
            {"scope": "project", "lesson": "Run the formatter before committing Rust code!"},
            {"scope": "project", "lesson": "Every module file starts with the SPDX license header line."},
            {"scope": "project", "lesson": "Prefer small commits that each pass the checks."}
        ]}"#,
    )
    .unwrap();

    // A task fails its check, then passes: the retrospective writes three lessons.
    w.at(T0 + 2 * DAY);
    assert_eq!(
        w.run("convention", &agent_task("beta", 3)).await,
        RunEnd::Passed
    );

    let live = w.db().lessons(false).unwrap();
    let scope = Scope::Project("shop".into());
    assert_eq!(
        live.iter().filter(|l| l.scope == scope).count(),
        3,
        "the scope stays at its cap: {live:#?}"
    );
    // The near-duplicate was folded into the person's lesson: both origins are kept.
    let kept = w.db().lesson(&twin).unwrap().unwrap();
    let sources: Vec<(&str, Option<&str>, Option<u32>)> = kept
        .provenance
        .iter()
        .map(|p| (p.source.as_str(), p.task.as_deref(), p.attempt))
        .collect();
    assert_eq!(
        sources,
        [
            ("person", None, None),
            ("retrospective", Some("beta"), Some(2))
        ]
    );
    // Two lessons went over the cap and were archived (kept, with the reason).
    let archived = w.db().lessons(true).unwrap();
    assert_eq!(archived.len(), 2, "{archived:#?}");
    assert!(
        archived
            .iter()
            .all(|l| l.archived_why.as_deref() == Some("scope project:shop over its cap of 3"))
    );
}
