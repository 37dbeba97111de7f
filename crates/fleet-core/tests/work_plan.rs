//! The plan contract: validation of planner plans and reviewer verdicts, and the JSON Schemas in
//! `docs/` kept in step with the Rust types.

use fleet_core::work_plan::{
    Acceptance, Bug, PlanContext, PlanError, PlanErrorKind, PlanPhase, PlanTask, Review, Verdict,
    WorkPlan, validate_plan, validate_review,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Helpers

fn ctx() -> PlanContext {
    PlanContext {
        known_roles: vec!["developer".into(), "reviewer".into()],
        existing: vec![],
        max_tasks: 50,
    }
}

fn task(id: &str, deps: &[&str]) -> PlanTask {
    PlanTask {
        id: id.into(),
        title: format!("Do {id}"),
        role: "developer".into(),
        description: format!("Implement {id} in src/{id}.rs"),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        acceptance: Acceptance {
            commands: vec![format!("cargo test -q {id}")],
            statements: vec![],
        },
    }
}

fn phase(id: &str, tasks: Vec<PlanTask>) -> PlanPhase {
    PlanPhase {
        id: id.into(),
        title: format!("Phase {id}"),
        tasks,
    }
}

fn plan(phases: Vec<PlanPhase>) -> WorkPlan {
    WorkPlan {
        summary: "Build it in steps.".into(),
        phases,
        no_change: None,
        questions: vec![],
    }
}

/// Validation errors as `path: message` lines.
fn errors(plan: &WorkPlan, ctx: &PlanContext) -> Vec<String> {
    match validate_plan(plan, ctx) {
        Ok(v) => panic!("expected errors, plan validated: {v:?}"),
        Err(errs) => errs.iter().map(PlanError::to_string).collect(),
    }
}

fn only_error(plan: &WorkPlan, ctx: &PlanContext) -> PlanError {
    let errs = validate_plan(plan, ctx).expect_err("expected an error");
    assert_eq!(errs.len(), 1, "expected exactly one error: {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn order(plan: &WorkPlan, ctx: &PlanContext) -> Vec<String> {
    let valid = validate_plan(plan, ctx).unwrap_or_else(|e| panic!("{e:#?}"));
    valid.tasks().iter().map(|t| t.id.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Valid plans

#[test]
fn the_documented_example_parses_and_validates() {
    let text = r#"{ "summary": "one paragraph",
      "phases": [
        { "id": "core", "title": "Parser", "tasks": [
          { "id": "add-parser", "title": "Add the parser", "role": "developer",
            "description": "what to do, which files",
            "depends_on": ["other-task-id-or-phase-id"],
            "acceptance": { "commands": ["cargo test -q parser"], "statements": ["errors name the line"] } } ] } ] }"#;
    let plan: WorkPlan = serde_json::from_str(text).unwrap();
    let ctx = PlanContext {
        existing: vec!["other-task-id-or-phase-id".into()],
        ..ctx()
    };
    let valid = validate_plan(&plan, &ctx).unwrap();
    assert_eq!(valid.summary(), "one paragraph");
    assert_eq!(valid.phases().len(), 1);
    assert_eq!(valid.phases()[0].id, "core");
    assert_eq!(valid.phases()[0].title, "Parser");
    let t = &valid.tasks()[0];
    assert_eq!(t.id, "add-parser");
    assert_eq!(t.phase, "core");
    assert_eq!(t.role, "developer");
    assert_eq!(t.title, "Add the parser");
    assert_eq!(t.description, "what to do, which files");
    assert_eq!(t.depends_on, ["other-task-id-or-phase-id"]);
    assert_eq!(t.commands, ["cargo test -q parser"]);
    assert_eq!(t.statements, ["errors name the line"]);
}

#[test]
fn optional_fields_default_to_empty() {
    let text = r#"{ "summary": "s", "phases": [ { "id": "p", "title": "P", "tasks": [
        { "id": "a", "title": "A", "role": "developer", "description": "d",
          "acceptance": { "statements": ["it works"] } } ] } ] }"#;
    let plan: WorkPlan = serde_json::from_str(text).unwrap();
    let t = &plan.phases[0].tasks[0];
    assert!(t.depends_on.is_empty());
    assert!(t.acceptance.commands.is_empty());
    validate_plan(&plan, &ctx()).unwrap();

    let review: Review =
        serde_json::from_str(r#"{ "verdict": "approve", "summary": "fine" }"#).unwrap();
    assert_eq!(review.verdict, Verdict::Approve);
    assert!(review.bugs.is_empty());
}

#[test]
fn tasks_come_in_dependency_order_and_otherwise_as_written() {
    let p = plan(vec![
        phase("one", vec![task("d", &["b", "c"]), task("a", &[])]),
        phase(
            "two",
            vec![task("b", &["a"]), task("c", &["a"]), task("e", &[])],
        ),
    ]);
    assert_eq!(order(&p, &ctx()), ["a", "b", "c", "d", "e"]);
    // Deterministic: the same plan gives the same order every time.
    for _ in 0..5 {
        assert_eq!(order(&p, &ctx()), ["a", "b", "c", "d", "e"]);
    }
}

#[test]
fn a_phase_dependency_means_every_task_of_that_phase() {
    let p = plan(vec![
        phase("base", vec![task("a1", &[]), task("a2", &[])]),
        phase("next", vec![task("b", &["base", "old"]), task("c", &["b"])]),
    ]);
    let ctx = PlanContext {
        existing: vec!["old".into()],
        ..ctx()
    };
    let valid = validate_plan(&p, &ctx).unwrap();
    let deps: HashMap<&str, &[String]> = valid
        .tasks()
        .iter()
        .map(|t| (t.id.as_str(), t.depends_on.as_slice()))
        .collect();
    assert_eq!(deps["b"], ["a1", "a2", "old"]);
    assert_eq!(deps["c"], ["b"]);
    assert!(deps["a1"].is_empty());
    assert_eq!(
        valid.tasks().iter().map(|t| &t.phase).collect::<Vec<_>>(),
        ["base", "base", "next", "next"]
    );
}

// ---------------------------------------------------------------------------------------------
// Each kind of error

#[test]
fn no_phases_and_empty_phases_are_refused() {
    let e = only_error(&plan(vec![]), &ctx());
    assert_eq!(e.path, "phases");
    assert!(matches!(e.kind, PlanErrorKind::EmptyList { what: "phase" }));

    let e = only_error(
        &plan(vec![phase("p", vec![task("a", &[])]), phase("q", vec![])]),
        &ctx(),
    );
    assert_eq!(
        e.to_string(),
        "phases[1].tasks: expected at least one task, found none"
    );
}

#[test]
fn hostile_ids_are_refused_for_phases_tasks_and_with_the_rule_in_the_message() {
    let long = "a".repeat(200);
    for bad in [
        "../x",
        "a b",
        "-x",
        "x.lock",
        "",
        "é",
        "ünïcode",
        long.as_str(),
        "A",
        "a/b",
        "x\n",
    ] {
        let e = only_error(&plan(vec![phase("p", vec![task(bad, &[])])]), &ctx());
        assert_eq!(e.path, "phases[0].tasks[0].id", "{bad:?}");
        assert!(
            matches!(&e.kind, PlanErrorKind::InvalidId { id, .. } if id == bad),
            "{bad:?}: {e:?}"
        );
        assert!(e.to_string().contains("[a-z0-9][a-z0-9_-]*"), "{e}");

        let e = only_error(&plan(vec![phase(bad, vec![task("a", &[])])]), &ctx());
        assert_eq!(e.path, "phases[0].id", "{bad:?}");
    }
}

#[test]
fn duplicate_ids_across_phases_tasks_and_existing_are_refused() {
    let p = plan(vec![
        phase("p", vec![task("a", &[]), task("b", &[])]),
        phase("q", vec![task("a", &[]), task("p", &[]), task("old", &[])]),
    ]);
    let ctx = PlanContext {
        existing: vec!["old".into()],
        ..ctx()
    };
    assert_eq!(
        errors(&p, &ctx),
        [
            "phases[1].tasks[0].id: duplicate id \"a\": phases[0].tasks[0] already uses it; expected a unique id",
            "phases[1].tasks[1].id: duplicate id \"p\": phases[0] already uses it; expected a unique id",
            "phases[1].tasks[2].id: id \"old\" is already a task of this epic from an earlier plan; expected a new id (depending on it is fine)",
        ]
    );
}

#[test]
fn unknown_self_own_phase_and_repeated_dependencies_are_located() {
    let p = plan(vec![
        phase("p", vec![task("a", &[])]),
        phase(
            "q",
            vec![task("b", &["a", "nope", "b", "q", "a", "../etc"])],
        ),
    ]);
    let errs = validate_plan(&p, &ctx()).unwrap_err();
    let got: Vec<(&str, &PlanErrorKind)> =
        errs.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
    assert_eq!(
        got,
        [
            (
                "phases[1].tasks[0].depends_on[1]",
                &PlanErrorKind::UnknownDependency { dep: "nope".into() }
            ),
            (
                "phases[1].tasks[0].depends_on[2]",
                &PlanErrorKind::SelfDependency
            ),
            (
                "phases[1].tasks[0].depends_on[3]",
                &PlanErrorKind::DependsOnOwnPhase { phase: "q".into() }
            ),
            (
                "phases[1].tasks[0].depends_on[4]",
                &PlanErrorKind::DuplicateDependency { dep: "a".into() }
            ),
            (
                "phases[1].tasks[0].depends_on[5]",
                &PlanErrorKind::UnknownDependency {
                    dep: "../etc".into()
                }
            ),
        ]
    );
}

#[test]
fn a_cycle_is_reported_with_its_path_at_the_edge_that_closes_it() {
    let p = plan(vec![phase(
        "p",
        vec![
            task("ok", &[]),
            task("a", &["ok", "c"]),
            task("b", &["a"]),
            task("c", &["b"]),
        ],
    )]);
    let e = only_error(&p, &ctx());
    assert_eq!(
        e.kind,
        PlanErrorKind::Cycle {
            path: vec!["a".into(), "c".into(), "b".into(), "a".into()]
        }
    );
    assert_eq!(
        e.to_string(),
        "phases[0].tasks[1].depends_on[1]: dependency cycle: a -> c -> b -> a; \
         expected the dependencies to form no cycle"
    );
}

#[test]
fn a_cycle_through_a_phase_dependency_is_found_and_located_at_the_phase_entry() {
    // a (in p) waits for phase q; b (in q) waits for a.
    let p = plan(vec![
        phase("p", vec![task("a", &["q"])]),
        phase("q", vec![task("x", &[]), task("b", &["a"])]),
    ]);
    let e = only_error(&p, &ctx());
    assert_eq!(
        e.kind,
        PlanErrorKind::Cycle {
            path: vec!["a".into(), "b".into(), "a".into()]
        }
    );
    assert_eq!(e.path, "phases[0].tasks[0].depends_on[0]");
}

#[test]
fn every_task_needs_acceptance_criteria_and_blank_ones_are_refused() {
    let mut none = task("a", &[]);
    none.acceptance = Acceptance::default();
    let mut blank = task("b", &[]);
    blank.acceptance = Acceptance {
        commands: vec![
            "".into(),
            "\n\n".into(),
            "ok\0rm".into(),
            "echo a\necho b".into(),
        ],
        statements: vec!["  \t".into(), "fine".into()],
    };
    let p = plan(vec![phase("p", vec![none, blank])]);
    assert_eq!(
        errors(&p, &ctx()),
        [
            "phases[0].tasks[0].acceptance: no acceptance criteria; expected at least one command in acceptance.commands or one statement in acceptance.statements",
            "phases[0].tasks[1].acceptance.commands[0]: expected a non-empty text, found an empty or blank one",
            "phases[0].tasks[1].acceptance.commands[1]: expected a non-empty text, found an empty or blank one",
            "phases[0].tasks[1].acceptance.commands[2]: command contains a NUL byte; expected shell text",
            "phases[0].tasks[1].acceptance.statements[0]: expected a non-empty text, found an empty or blank one",
        ]
    );
}

#[test]
fn unknown_roles_are_refused_and_the_known_ones_listed() {
    let mut t = task("a", &[]);
    t.role = "wizard".into();
    let p = plan(vec![phase("p", vec![t])]);
    assert_eq!(
        errors(&p, &ctx()),
        ["phases[0].tasks[0].role: unknown role \"wizard\"; expected one of: developer, reviewer"]
    );
    let none = PlanContext {
        known_roles: vec![],
        ..ctx()
    };
    let p = plan(vec![phase("p", vec![task("a", &[])])]);
    assert!(errors(&p, &none)[0].contains("no roles are configured"));
}

#[test]
fn empty_titles_descriptions_and_summary_are_refused() {
    let mut t = task("a", &[]);
    t.title = " ".into();
    t.description = String::new();
    let mut ph = phase("p", vec![t]);
    ph.title = "\n".into();
    let mut p = plan(vec![ph]);
    p.summary = String::new();
    let errs = validate_plan(&p, &ctx()).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "summary",
            "phases[0].title",
            "phases[0].tasks[0].title",
            "phases[0].tasks[0].description"
        ]
    );
    assert!(errs.iter().all(|e| e.kind == PlanErrorKind::EmptyText));
}

#[test]
fn more_tasks_than_allowed_are_refused() {
    let p = plan(vec![
        phase("p", vec![task("a", &[]), task("b", &[])]),
        phase("q", vec![task("c", &[])]),
    ]);
    let small = PlanContext {
        max_tasks: 2,
        ..ctx()
    };
    assert_eq!(
        errors(&p, &small),
        ["phases: 3 tasks; expected at most 2 in one plan"]
    );
    let exact = PlanContext {
        max_tasks: 3,
        ..ctx()
    };
    validate_plan(&p, &exact).unwrap();
}

#[test]
fn all_errors_are_reported_at_once_including_a_cycle_beside_content_errors() {
    let mut a = task("a", &["b"]);
    a.role = "nobody".into();
    let p = plan(vec![phase("p", vec![a, task("b", &["a"])])]);
    let errs = validate_plan(&p, &ctx()).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(matches!(errs[0].kind, PlanErrorKind::UnknownRole { .. }));
    assert!(matches!(errs[1].kind, PlanErrorKind::Cycle { .. }));
}

// ---------------------------------------------------------------------------------------------
// Reviews

fn review(verdict: Verdict, bugs: Vec<Bug>) -> Review {
    Review {
        verdict,
        summary: "Looked at the diff.".into(),
        bugs,
    }
}

fn bug(title: &str) -> Bug {
    Bug {
        title: title.into(),
        details: "steps".into(),
        file: None,
    }
}

#[test]
fn approve_may_list_no_bugs_but_reject_must() {
    validate_review(&review(Verdict::Approve, vec![])).unwrap();
    validate_review(&review(Verdict::Approve, vec![bug("nit")])).unwrap();
    validate_review(&review(Verdict::Reject, vec![bug("crash on empty input")])).unwrap();

    let errs = validate_review(&review(Verdict::Reject, vec![])).unwrap_err();
    assert_eq!(
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ["bugs: verdict is reject but no bug is listed; expected at least one bug with a title"]
    );
    let errs = validate_review(&review(Verdict::Reject, vec![bug("ok"), bug("  ")])).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "bugs[1].title");

    let mut blank = review(Verdict::Approve, vec![]);
    blank.summary = "".into();
    assert_eq!(validate_review(&blank).unwrap_err()[0].path, "summary");
    let mut b = bug("x");
    b.file = Some(" ".into());
    assert_eq!(
        validate_review(&review(Verdict::Reject, vec![b])).unwrap_err()[0].path,
        "bugs[0].file"
    );
}

#[test]
fn review_json_round_trips_and_refuses_unknown_verdicts() {
    let r: Review = serde_json::from_value(json!({
        "verdict": "reject", "summary": "no",
        "bugs": [{ "title": "t", "details": "d", "file": "src/lib.rs" }]
    }))
    .unwrap();
    assert_eq!(r.bugs[0].file.as_deref(), Some("src/lib.rs"));
    let back: Review = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert!(serde_json::from_value::<Review>(json!({"verdict": "maybe", "summary": "s"})).is_err());
    assert!(
        serde_json::from_value::<Review>(json!({"verdict": "Approve", "summary": "s"})).is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Schemas stay in step with the types

fn load_schema(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Follows a local `$ref` (`#/$defs/x`).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("only local refs");
            resolve(
                root,
                root.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => schema,
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Checks one object level of the schema against a full JSON example of that level (every
/// field present) and the Rust type `T` parsing it: same property names, `additionalProperties:
/// false` matching serde refusing an unknown key, and `required` exactly the fields serde cannot
/// do without. Returns the schema's properties for descending further.
fn check_object<T: serde::de::DeserializeOwned>(
    root: &Value,
    schema: &Value,
    example: &Value,
    wrap: &dyn Fn(Value) -> Value,
    at: &str,
) -> BTreeMap<String, Value> {
    let schema = resolve(root, schema);
    assert_eq!(schema["type"], "object", "{at}");
    assert_eq!(schema["additionalProperties"], false, "{at}");
    let props = schema["properties"].as_object().expect("properties");
    assert_eq!(
        props.keys().cloned().collect::<BTreeSet<_>>(),
        keys(example),
        "{at}: schema properties differ from the keys the Rust type serializes"
    );
    serde_json::from_value::<T>(wrap(example.clone()))
        .unwrap_or_else(|e| panic!("{at}: full example refused: {e}"));

    let mut unknown = example.clone();
    unknown["surprise"] = json!(1);
    assert!(
        serde_json::from_value::<T>(wrap(unknown)).is_err(),
        "{at}: serde accepted an unknown key"
    );

    let required: BTreeSet<String> = schema
        .get("required")
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut serde_required = BTreeSet::new();
    for key in keys(example) {
        let mut without = example.clone();
        without.as_object_mut().unwrap().remove(&key);
        if serde_json::from_value::<T>(wrap(without)).is_err() {
            serde_required.insert(key);
        }
    }
    assert_eq!(required, serde_required, "{at}: required lists differ");
    props.clone().into_iter().collect()
}

fn full_plan() -> WorkPlan {
    let mut p = plan(vec![phase("core", vec![task("add-parser", &["old"])])]);
    p.phases[0].tasks[0].acceptance.statements = vec!["errors name the line".into()];
    p
}

#[test]
fn plan_schema_matches_the_rust_types() {
    let root = load_schema("plan.schema.json");
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let full = serde_json::to_value(full_plan()).unwrap();
    let phase_json = full["phases"][0].clone();
    let task_json = phase_json["tasks"][0].clone();
    let acc_json = task_json["acceptance"].clone();

    let id = |v: Value| v;
    let top = check_object::<WorkPlan>(&root, &root, &full, &id, "plan");
    assert_eq!(top["phases"]["minItems"], 1);

    let wrap_phase = |p: Value| json!({ "summary": "s", "phases": [p] });
    let phase_props = check_object::<WorkPlan>(
        &root,
        &top["phases"]["items"],
        &phase_json,
        &wrap_phase,
        "phase",
    );
    assert_eq!(phase_props["tasks"]["minItems"], 1);

    let wrap_task = |t: Value| wrap_phase(json!({ "id": "p", "title": "P", "tasks": [t] }));
    let task_props = check_object::<WorkPlan>(
        &root,
        &phase_props["tasks"]["items"],
        &task_json,
        &wrap_task,
        "task",
    );

    let wrap_acc = |a: Value| {
        let mut t = task_json.clone();
        t["acceptance"] = a;
        wrap_task(t)
    };
    check_object::<WorkPlan>(
        &root,
        &task_props["acceptance"],
        &acc_json,
        &wrap_acc,
        "acceptance",
    );

    // Ids: the schema's pattern and length are fleet-core's id rules.
    let id_schema = resolve(&root, &phase_props["id"]);
    assert_eq!(id_schema["pattern"], "^[a-z0-9][a-z0-9_-]*$");
    assert_eq!(id_schema["maxLength"], fleet_core::id::MAX_ID_LEN);
    for id_ref in [
        &phase_props["id"],
        &task_props["id"],
        &task_props["depends_on"]["items"],
    ] {
        assert_eq!(resolve(&root, id_ref), id_schema);
    }
}

#[test]
fn review_schema_matches_the_rust_types() {
    let root = load_schema("review.schema.json");
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let mut full = review(Verdict::Reject, vec![bug("crash")]);
    full.bugs[0].file = Some("src/main.rs".into());
    let full = serde_json::to_value(full).unwrap();

    let id = |v: Value| v;
    let top = check_object::<Review>(&root, &root, &full, &id, "review");

    // The verdict enum lists exactly what serde writes and reads.
    let verdicts: Vec<Value> = [Verdict::Approve, Verdict::Reject]
        .iter()
        .map(|v| serde_json::to_value(v).unwrap())
        .collect();
    assert_eq!(top["verdict"]["enum"].as_array().unwrap(), &verdicts);

    let bug_json = full["bugs"][0].clone();
    let wrap_bug = |b: Value| json!({ "verdict": "reject", "summary": "s", "bugs": [b] });
    check_object::<Review>(&root, &top["bugs"]["items"], &bug_json, &wrap_bug, "bug");
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A random DAG plan: `n` tasks numbered in plan order, cut into contiguous phases; task `i`
/// may depend on any earlier task, on any phase that ends before it, and on existing tasks.
#[derive(Debug, Clone)]
struct DagPlan {
    plan: WorkPlan,
    existing: Vec<String>,
}

fn tid(i: usize) -> String {
    format!("t{i}")
}

fn dag_plan() -> impl Strategy<Value = DagPlan> {
    (2usize..24)
        .prop_flat_map(|n| {
            (
                Just(n),
                // Phase boundaries: a cut after task i starts a new phase.
                prop::collection::vec(any::<bool>(), n - 1),
                // Per task: chosen earlier tasks, phases and existing ids (as raw picks).
                prop::collection::vec(
                    (
                        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
                        prop::collection::vec(any::<prop::sample::Index>(), 0..2),
                        prop::collection::vec(any::<prop::sample::Index>(), 0..2),
                    ),
                    n,
                ),
                0usize..3,
                // Sort keys: the plan is written with phases and tasks in a random order, so
                // the written order is not already a topological one.
                prop::collection::vec(any::<u16>(), n),
            )
        })
        .prop_map(|(n, cuts, picks, n_existing, keys)| {
            let existing: Vec<String> = (0..n_existing).map(|i| format!("old{i}")).collect();
            // phase_of[i] and the range of each phase.
            let mut phase_of = vec![0usize; n];
            for i in 1..n {
                phase_of[i] = phase_of[i - 1] + usize::from(cuts[i - 1]);
            }
            let n_phases = phase_of[n - 1] + 1;
            let mut phases: Vec<PlanPhase> = (0..n_phases)
                .map(|p| phase(&format!("p{p}"), vec![]))
                .collect();
            for i in 0..n {
                let (tasks, phs, olds) = &picks[i];
                let mut deps: Vec<String> = Vec::new();
                let mut add = |d: String| {
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                };
                if i > 0 {
                    for pick in tasks {
                        add(tid(pick.index(i)));
                    }
                }
                // Phases that end before task i (and so are not its own).
                let done_phases = phase_of[i];
                if done_phases > 0 {
                    for pick in phs {
                        add(format!("p{}", pick.index(done_phases)));
                    }
                }
                if !existing.is_empty() {
                    for pick in olds {
                        add(existing[pick.index(existing.len())].clone());
                    }
                }
                let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
                phases[phase_of[i]].tasks.push(task(&tid(i), &refs));
            }
            for p in &mut phases {
                p.tasks
                    .sort_by_key(|t| keys[t.id[1..].parse::<usize>().unwrap()]);
            }
            phases.sort_by_key(|p| keys[p.id[1..].parse::<usize>().unwrap() % n]);
            DagPlan {
                plan: plan(phases),
                existing,
            }
        })
}

fn dag_ctx(d: &DagPlan) -> PlanContext {
    PlanContext {
        existing: d.existing.clone(),
        ..ctx()
    }
}

/// Effective leaf dependencies as written (phases expanded), computed independently.
fn effective_deps(plan: &WorkPlan) -> HashMap<String, BTreeSet<String>> {
    let phase_tasks: HashMap<&str, Vec<&str>> = plan
        .phases
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.tasks.iter().map(|t| t.id.as_str()).collect(),
            )
        })
        .collect();
    let mut out = HashMap::new();
    for t in plan.phases.iter().flat_map(|p| &p.tasks) {
        let mut deps = BTreeSet::new();
        for d in &t.depends_on {
            match phase_tasks.get(d.as_str()) {
                Some(tasks) => deps.extend(tasks.iter().map(|s| s.to_string())),
                None => {
                    deps.insert(d.clone());
                }
            }
        }
        out.insert(t.id.clone(), deps);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_random_dag_plan_validates_in_dependency_order(d in dag_plan()) {
        let valid = validate_plan(&d.plan, &dag_ctx(&d))
            .unwrap_or_else(|e| panic!("{:#?}\n{:#?}", e, d.plan));
        let tasks = valid.tasks();
        let all: usize = d.plan.phases.iter().map(|p| p.tasks.len()).sum();
        prop_assert_eq!(tasks.len(), all);
        let position: HashMap<&str, usize> =
            tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
        prop_assert_eq!(position.len(), all, "a task appears twice");
        let expected = effective_deps(&d.plan);
        for (i, t) in tasks.iter().enumerate() {
            let got: BTreeSet<String> = t.depends_on.iter().cloned().collect();
            prop_assert_eq!(got.len(), t.depends_on.len(), "repeated dependency in {}", &t.id);
            prop_assert_eq!(&got, &expected[&t.id], "dependencies of {}", &t.id);
            for dep in &t.depends_on {
                match position.get(dep.as_str()) {
                    Some(&j) => prop_assert!(j < i, "{} comes before its dependency {}", &t.id, dep),
                    None => prop_assert!(d.existing.contains(dep), "{} is neither planned nor existing", dep),
                }
            }
        }
        // Same input, same output.
        prop_assert_eq!(validate_plan(&d.plan, &dag_ctx(&d)).unwrap(), valid);
    }

    #[test]
    fn a_back_edge_yields_a_cycle_error_naming_a_real_cycle(
        d in dag_plan(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut plan = d.plan.clone();
        let deps = effective_deps(&plan);
        // Pairs (x, y) where y reaches x through dependencies; x depending on y closes a cycle.
        let ids: Vec<String> = plan.phases.iter().flat_map(|p| &p.tasks).map(|t| t.id.clone()).collect();
        let reach = |from: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.to_string()];
            while let Some(n) = stack.pop() {
                for d in deps.get(&n).into_iter().flatten() {
                    if seen.insert(d.clone()) {
                        stack.push(d.clone());
                    }
                }
            }
            seen
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for y in &ids {
            for x in reach(y) {
                if ids.contains(&x) {
                    pairs.push((x, y.clone()));
                }
            }
        }
        if pairs.is_empty() {
            // Make one: the last task waits for the first.
            let last = plan.phases.last_mut().unwrap().tasks.last_mut().unwrap();
            last.depends_on.push(ids[0].clone());
            pairs.push((ids[0].clone(), last.id.clone()));
        }
        let (x, y) = pick.get(&pairs).clone();
        let x_task = plan.phases.iter_mut().flat_map(|p| &mut p.tasks).find(|t| t.id == x).unwrap();
        prop_assume!(!x_task.depends_on.contains(&y));
        x_task.depends_on.push(y.clone());

        let errs = validate_plan(&plan, &dag_ctx(&d)).unwrap_err();
        prop_assert_eq!(errs.len(), 1, "{:#?}", errs);
        let PlanErrorKind::Cycle { path } = &errs[0].kind else {
            panic!("expected a cycle, got {:#?}", errs);
        };
        prop_assert!(path.len() >= 3, "{:?}", path);
        prop_assert_eq!(path.first(), path.last());
        let deps = effective_deps(&plan);
        for w in path.windows(2) {
            prop_assert!(deps[&w[0]].contains(&w[1]), "{} does not depend on {}: {:?}", &w[0], &w[1], path);
        }
        let inner: BTreeSet<&String> = path[..path.len() - 1].iter().collect();
        prop_assert_eq!(inner.len(), path.len() - 1, "cycle repeats a task: {:?}", path);
        prop_assert!(errs[0].path.contains(".depends_on["), "{}", &errs[0].path);
    }
}

// ---------------------------------------------------------------------------------------------
// "No change needed": the planner's answer to a rework cycle

fn rework_ctx() -> PlanContext {
    PlanContext {
        known_roles: vec!["developer".into()],
        existing: vec!["a".into()],
        max_tasks: 10,
    }
}

#[test]
fn no_change_is_an_answer_to_a_rework_cycle_only() {
    let answer: WorkPlan =
        serde_json::from_str(r#"{"no_change": "README.md already says that"}"#).unwrap();
    let valid = validate_plan(&answer, &rework_ctx()).expect("no_change in a rework cycle");
    assert_eq!(valid.no_change(), Some("README.md already says that"));
    assert!(valid.tasks().is_empty());
    assert_eq!(
        valid.summary(),
        "No change needed: README.md already says that"
    );

    let first = PlanContext {
        existing: vec![],
        ..rework_ctx()
    };
    assert_eq!(
        errors(&answer, &first),
        [
            "no_change: no_change in the first plan of a request; expected phases of tasks \
          (no_change is only an answer to a rework cycle)"
        ]
    );
    let blank: WorkPlan = serde_json::from_str(r#"{"no_change": "  "}"#).unwrap();
    assert_eq!(
        errors(&blank, &rework_ctx()),
        ["no_change: expected a non-empty text, found an empty or blank one"]
    );
    let mut both = plan(vec![phase("p", vec![task("t", &[])])]);
    both.no_change = Some("nothing".into());
    assert!(errors(&both, &rework_ctx())[0].starts_with("phases: no_change together with phases"));
    // An empty plan without the answer is still refused.
    let empty: WorkPlan = serde_json::from_str(r#"{"summary": "s", "phases": []}"#).unwrap();
    assert!(errors(&empty, &rework_ctx())[0].starts_with("phases: expected at least one phase"));
}

#[test]
fn plan_schema_says_plan_or_no_change_or_questions() {
    let root = load_schema("plan.schema.json");
    assert_eq!(
        resolve(&root, &root["properties"]["no_change"])["pattern"],
        "\\S"
    );
    let questions = &root["properties"]["questions"];
    assert_eq!(questions["minItems"], 1);
    assert_eq!(questions["maxItems"], fleet_core::work_plan::MAX_QUESTIONS);
    assert_eq!(resolve(&root, &questions["items"])["pattern"], "\\S");
    let branches = root["oneOf"]
        .as_array()
        .expect("oneOf: a plan, no_change or questions");
    assert_eq!(branches.len(), 3);
    let shapes = [
        (json!(["summary", "phases"]), ["no_change", "questions"]),
        (json!(["no_change"]), ["phases", "questions"]),
        (json!(["questions"]), ["phases", "no_change"]),
    ];
    for (branch, (required, excluded)) in branches.iter().zip(shapes) {
        assert_eq!(branch["required"], required);
        let not: Vec<Value> = excluded
            .iter()
            .map(|k| json!({ "required": [k] }))
            .collect();
        assert_eq!(branch["not"]["anyOf"], json!(not));
    }
    // serde reads every shape.
    serde_json::from_value::<WorkPlan>(json!({"no_change": "why"})).unwrap();
    serde_json::from_value::<WorkPlan>(json!({"questions": ["which page?"]})).unwrap();
    serde_json::from_value::<WorkPlan>(serde_json::to_value(full_plan()).unwrap()).unwrap();
}

// "Too vague to plan": the planner asks the person first

#[test]
fn questions_are_a_plan_of_their_own_and_never_mix_with_tasks() {
    let ask: WorkPlan =
        serde_json::from_str(r#"{"questions": [" Which page? ", "Which colour?"]}"#).unwrap();
    for ctx in [ctx(), rework_ctx()] {
        let valid = validate_plan(&ask, &ctx).expect("questions are a valid answer");
        assert_eq!(valid.questions(), ["Which page?", "Which colour?"]);
        assert!(valid.tasks().is_empty() && valid.no_change().is_none());
    }
    let blank: WorkPlan = serde_json::from_str(r#"{"questions": ["ok?", " "]}"#).unwrap();
    assert_eq!(
        errors(&blank, &rework_ctx()),
        ["questions[1]: expected a non-empty text, found an empty or blank one"]
    );
    let mut both = plan(vec![phase("p", vec![task("t", &[])])]);
    both.questions = vec!["why?".into()];
    assert!(errors(&both, &rework_ctx())[0].starts_with("questions: questions together with"));
    let with_no_change: WorkPlan =
        serde_json::from_str(r#"{"questions": ["a?"], "no_change": "b"}"#).unwrap();
    assert!(errors(&with_no_change, &rework_ctx())[0].starts_with("questions: questions together"));
    let many = WorkPlan {
        questions: (0..11).map(|i| format!("q{i}?")).collect(),
        ..plan(vec![])
    };
    assert_eq!(
        errors(&many, &rework_ctx()),
        ["questions: 11 questions; expected at most 10: ask only what the plan cannot do without"]
    );
    // An empty list is no question: the plan must then plan.
    let none: WorkPlan = serde_json::from_str(r#"{"questions": []}"#).unwrap();
    assert!(
        errors(&none, &ctx())
            .iter()
            .any(|e| e.starts_with("phases:"))
    );
}

proptest! {
    /// Any 1..=10 non-blank questions validate, keep their order, and the one question the
    /// blocked epic asks lists every one of them, numbered, with how to answer.
    #[test]
    fn every_question_reaches_the_person_in_order(
        qs in prop::collection::vec("[A-Za-z ?]{0,12}[A-Za-z?][A-Za-z ?]{0,12}", 1..=10),
        epic in "e[1-9][0-9]{0,3}",
    ) {
        let ask = WorkPlan { questions: qs.clone(), ..plan(vec![]) };
        let valid = validate_plan(&ask, &ctx()).unwrap();
        let want: Vec<String> = qs.iter().map(|q| q.trim().to_string()).collect();
        prop_assert_eq!(valid.questions(), &want[..]);
        let text = fleet_core::work_plan::clarify_question(&epic, valid.questions());
        let mut from = 0;
        for (i, q) in want.iter().enumerate() {
            let line = format!("\n{}. {q}", i + 1);
            let at = text[from..].find(&line);
            prop_assert!(at.is_some(), "{line:?} missing after {from} in {text:?}");
            from += at.unwrap() + line.len();
        }
        let answer = format!("fleet task answer {epic} ");
        prop_assert!(text.contains(&answer));
    }
}
