//! `export` -> `import` -> `export` over an instance with 1,000 tasks: the same lines, and the
//! same rows in the rebuilt store.

use fleet_memory::graph::{self, Line};
use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
use fleet_secrets::Redactor;
use fleet_store::{
    AttemptRow, Batch, Durability, EpicRow, ProjectRow, RunRow, SqliteStore, StageRow, Store,
    TaskRow,
};

fn instance(dir: &std::path::Path) -> (SqliteStore, MemoryDb) {
    let store = SqliteStore::open(&dir.join("fleet.db"), Durability::Process).unwrap();
    let memory = MemoryDb::open(&dir.join("memory.db"), Redactor::new([])).unwrap();
    (store, memory)
}

const STATES: &[&str] = &["passed", "failed", "skipped", "ready", "pending"];

fn fill(store: &SqliteStore, memory: &mut MemoryDb) {
    store
        .add_project(&ProjectRow {
            name: "web".into(),
            repo: "/srv/web".into(),
            path: "/srv/web".into(),
            default_branch: "main".into(),
            checks: vec!["make test".into()],
            delivery: serde_json::json!({"mode": "branch", "export": "fleet/graph.jsonl"}),
            bible: Some("saas".into()),
            created_at: 5,
        })
        .unwrap();
    store
        .create_epic(
            &EpicRow {
                id: "e-1".into(),
                project: "web".into(),
                request: "Add sign-up".into(),
                state: "implement".into(),
                cycle: 1,
                branch: "fleet/epics/x/e-1".into(),
                base_sha: "abc".into(),
                intent: Some("feature".into()),
                roles: vec!["developer".into()],
                stages: vec![StageRow {
                    stage: "plan".into(),
                    cycle: 1,
                    run_id: Some("run-0".into()),
                    state: "passed".into(),
                    started_at: 10,
                    finished_at: Some(20),
                    detail: Some("t0001 t0002".into()),
                }],
                data: serde_json::json!({"plan": {"tasks": [{"id": "t0001", "acceptance": ["tests pass"]}]}}),
                created_at: 1,
                updated_at: 30,
            },
            &[],
        )
        .unwrap();
    // Four runs of 250 tasks: each task depends on the one before, with its own check.
    for r in 0..4 {
        let run_id = format!("run-{r}");
        let mut yaml = format!("name: r{r}\ntasks:\n");
        let mut tasks = Vec::new();
        let mut attempts = Vec::new();
        for i in 0..250u32 {
            let id = format!("t{:04}", r * 250 + i);
            yaml.push_str(&format!(
                "  - id: {id}\n    command: echo {i}\n    checks: [test -f {id}]\n"
            ));
            if i > 0 {
                yaml.push_str(&format!("    depends_on: [t{:04}]\n", r * 250 + i - 1));
            }
            let state = STATES[(i as usize) % STATES.len()];
            let n_attempts = i % 3;
            tasks.push(TaskRow {
                run_id: run_id.clone(),
                idx: i,
                id: id.clone(),
                state: state.into(),
                attempts: n_attempts,
                failures: n_attempts.saturating_sub(1),
                not_before: i as i64,
                reason: (state == "failed").then(|| "checks failed".into()),
                commit_sha: (state == "passed").then(|| format!("c{i:039}")),
                merge_sha: (state == "passed").then(|| format!("m{i:039}")),
                started_at: Some(100 + i as i64),
                finished_at: (state != "ready").then_some(200 + i as i64),
            });
            for n in 1..=n_attempts {
                attempts.push(AttemptRow {
                    run_id: run_id.clone(),
                    task_id: id.clone(),
                    n,
                    started_at: 100 + n as i64,
                    finished_at: Some(150 + n as i64),
                    exit_code: Some(if n == n_attempts { 0 } else { 1 }),
                    outcome: if n == n_attempts {
                        "passed"
                    } else {
                        "checks_failed"
                    }
                    .into(),
                    detail: Some(format!("attempt {n} of {id}")),
                    profile: Some("claude-sonnet".into()),
                    cli: Some("claude".into()),
                    input_tokens: 1000 * n as u64,
                    output_tokens: 100 + i as u64,
                    cost_usd: 0.25 * n as f64,
                    ..AttemptRow::default()
                });
            }
        }
        store
            .create_run(
                &RunRow {
                    id: run_id.clone(),
                    name: format!("r{r}"),
                    runbook_path: format!("/srv/web/r{r}.yaml"),
                    runbook_source: yaml,
                    repo: "/srv/web".into(),
                    base_sha: "abc".into(),
                    integration_branch: format!("fleet/runs/x/{run_id}"),
                    state: "passed".into(),
                    created_at: r as i64,
                    updated_at: 10 + r as i64,
                    finished_at: Some(20 + r as i64),
                },
                &tasks,
                &[],
            )
            .unwrap();
        store
            .commit(&Batch {
                attempts,
                ..Batch::default()
            })
            .unwrap();
    }
    let p = Policy::default();
    for (i, text) in ["Run make fmt before committing.", "Quote shell variables."]
        .iter()
        .enumerate()
    {
        let l = Lesson::new(
            Scope::Project("web".into()),
            AppliesWhen {
                paths: vec!["src/".into()],
                ..AppliesWhen::default()
            },
            text.to_string(),
            Provenance {
                source: "retrospective".into(),
                run: Some("run-0".into()),
                task: Some(format!("t{i:04}")),
                attempt: Some(2),
                at: 50 + i as i64,
            },
        );
        memory.add_lesson(l, 50, &p).unwrap();
    }
    let first = memory.lessons(false).unwrap()[0].id.clone();
    memory.forget(&first, 60).unwrap();
}

#[test]
fn export_import_round_trips_1000_tasks_exactly() {
    let a = tempfile::tempdir().unwrap();
    let (store, mut memory) = instance(a.path());
    fill(&store, &mut memory);
    let lines = graph::export(&store, &memory).unwrap();
    let tasks = lines.iter().filter(|l| matches!(l, Line::Task(_))).count();
    assert_eq!(tasks, 1000);
    let Some(Line::Task(t)) = lines
        .iter()
        .find(|l| matches!(l, Line::Task(t) if t.row.id == "t0007"))
    else {
        panic!("t0007 exported");
    };
    assert_eq!(t.depends_on, vec!["t0006"]);
    assert_eq!(t.checks, vec!["test -f t0007"]);
    let text = graph::to_jsonl(&lines);

    let b = tempfile::tempdir().unwrap();
    let (store2, mut memory2) = instance(b.path());
    graph::import(&store2, &mut memory2, &graph::parse_jsonl(&text).unwrap()).unwrap();
    let again = graph::to_jsonl(&graph::export(&store2, &memory2).unwrap());
    assert!(again == text, "the second export differs from the first");
    // The rebuilt store holds the same rows, read back through the store itself.
    assert_eq!(store.projects().unwrap(), store2.projects().unwrap());
    assert_eq!(store.epics().unwrap(), store2.epics().unwrap());
    for run in store.runs().unwrap() {
        assert_eq!(Some(&run), store2.run(&run.id).unwrap().as_ref());
        assert_eq!(
            store.tasks(&run.id).unwrap(),
            store2.tasks(&run.id).unwrap()
        );
        assert_eq!(
            store.attempts(&run.id).unwrap(),
            store2.attempts(&run.id).unwrap()
        );
    }
    assert_eq!(
        memory.all_lessons().unwrap(),
        memory2.all_lessons().unwrap()
    );
    assert_eq!(
        memory2.lessons(true).unwrap().len(),
        1,
        "archived stays archived"
    );

    // Into a non-empty instance: refused, nothing written.
    let err = graph::import(&store2, &mut memory2, &graph::parse_jsonl(&text).unwrap());
    assert!(matches!(err, Err(graph::GraphError::NotEmpty(_))));
}

#[test]
fn a_bad_line_is_reported_by_number_and_nothing_is_written() {
    let text = "{\"type\":\"project\",\"name\":\"web\"}\n{\"type\":\"task\",\"run_id\":\"nope\"\n";
    match graph::parse_jsonl(text) {
        Err(graph::GraphError::Line { line, column, .. }) => {
            assert_eq!((line, column), (2, Some(30)))
        }
        other => panic!("{other:?}"),
    }
    // A task of a run the file does not hold: refused before the project is written.
    let orphan = concat!(
        "{\"type\":\"project\",\"name\":\"web\"}\n",
        "{\"type\":\"task\",\"run_id\":\"nope\",\"idx\":0,\"id\":\"a\",\"state\":\"passed\",\"attempts\":1,\"failures\":0,\"not_before\":0,\"reason\":null,\"commit_sha\":null,\"merge_sha\":null,\"started_at\":null,\"finished_at\":null,\"depends_on\":[],\"checks\":[]}\n",
    );
    let d = tempfile::tempdir().unwrap();
    let (store, mut memory) = instance(d.path());
    let err = graph::import(&store, &mut memory, &graph::parse_jsonl(orphan).unwrap());
    assert!(
        matches!(err, Err(graph::GraphError::Line { line: 2, .. })),
        "{err:?}"
    );
    assert!(store.projects().unwrap().is_empty());
}
