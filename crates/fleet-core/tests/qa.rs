//! The QA loop: the report's contract (validation, and `docs/qa.schema.json` in step with the
//! types), and the epic machine's deploy -> QA -> (bugs: next cycle | passed: a person accepts)
//! as properties: QA never ends an epic, a deployed epic awaits acceptance only after QA
//! passed, and every bug report costs exactly one counted cycle until a person is asked.

use fleet_core::epic::{EpicState, Limits, Outcome, Stage, next};
use fleet_core::qa::{QaBug, QaReport, QaVerdict, validate_qa_report};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn bug(title: &str) -> QaBug {
    QaBug {
        title: title.into(),
        steps: "open /".into(),
        expected: "a greeting".into(),
        actual: "a 404".into(),
        page: None,
    }
}

fn report(verdict: QaVerdict, bugs: Vec<QaBug>) -> QaReport {
    QaReport {
        verdict,
        summary: "tested the home page".into(),
        tested: vec!["home page loads".into()],
        bugs,
    }
}

#[test]
fn a_report_is_valid_only_when_its_verdict_and_bugs_agree_and_every_text_is_there() {
    validate_qa_report(&report(QaVerdict::Pass, vec![])).unwrap();
    validate_qa_report(&report(QaVerdict::Fail, vec![bug("404 on /")])).unwrap();
    let errs = validate_qa_report(&report(QaVerdict::Fail, vec![])).unwrap_err();
    assert_eq!(errs[0].path, "bugs");
    let errs = validate_qa_report(&report(QaVerdict::Pass, vec![bug("x")])).unwrap_err();
    assert_eq!(errs[0].path, "verdict");
    let mut b = bug("t");
    b.actual = "  ".into();
    b.page = Some(String::new());
    let mut r = report(QaVerdict::Fail, vec![b]);
    r.summary = "\n".into();
    r.tested.push(" ".into());
    let paths: Vec<String> = validate_qa_report(&r)
        .unwrap_err()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        paths,
        ["summary", "tested[1]", "bugs[0].actual", "bugs[0].page"]
    );
    assert!(
        serde_json::from_value::<QaReport>(json!({"verdict": "approve", "summary": "s"})).is_err(),
        "a review's verdict is not a QA verdict"
    );
}

fn load_schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/qa.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(root, root.pointer(r.strip_prefix('#').unwrap()).unwrap()),
        None => schema,
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// One object level: the schema's properties are the keys the type writes, unknown keys are
/// refused by both, and `required` is exactly what serde cannot do without.
fn check_object(root: &Value, schema: &Value, example: &Value, wrap: &dyn Fn(Value) -> Value) {
    let schema = resolve(root, schema);
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(keys(&schema["properties"]), keys(example));
    serde_json::from_value::<QaReport>(wrap(example.clone())).unwrap();
    let mut unknown = example.clone();
    unknown["surprise"] = json!(1);
    assert!(serde_json::from_value::<QaReport>(wrap(unknown)).is_err());
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let serde_required: BTreeSet<String> = keys(example)
        .into_iter()
        .filter(|k| {
            let mut without = example.clone();
            without.as_object_mut().unwrap().remove(k);
            serde_json::from_value::<QaReport>(wrap(without)).is_err()
        })
        .collect();
    assert_eq!(required, serde_required);
}

#[test]
fn the_qa_schema_matches_the_rust_types() {
    let root = load_schema();
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let mut b = bug("404 on /");
    b.page = Some("/".into());
    let full = serde_json::to_value(report(QaVerdict::Fail, vec![b])).unwrap();
    check_object(&root, &root, &full, &|v| v);
    let verdicts: Vec<Value> = [QaVerdict::Pass, QaVerdict::Fail]
        .iter()
        .map(|v| serde_json::to_value(v).unwrap())
        .collect();
    assert_eq!(
        root["properties"]["verdict"]["enum"].as_array().unwrap(),
        &verdicts
    );
    let wrap_bug = |b: Value| json!({"verdict": "fail", "summary": "s", "bugs": [b]});
    check_object(
        &root,
        &root["properties"]["bugs"]["items"],
        &full["bugs"][0],
        &wrap_bug,
    );
}

/// What QA says about one deployed cycle.
#[derive(Debug, Clone)]
enum QaSays {
    Bugs,
    Passes,
    CannotFinish,
}

fn qa_says() -> impl Strategy<Value = QaSays> {
    prop_oneof![
        Just(QaSays::Bugs),
        Just(QaSays::Passes),
        Just(QaSays::CannotFinish)
    ]
}

/// Drives an epic from plan to the QA stage of its current cycle.
fn to_qa(mut s: EpicState, l: &Limits) -> EpicState {
    for (o, want) in [
        (Outcome::Passed, Stage::Implement),
        (Outcome::Passed, Stage::Review),
        (Outcome::Approved, Stage::Deliver),
        (Outcome::Deployed, Stage::Qa),
    ] {
        s = next(&s, &o, l).state;
        assert_eq!(s.stage, want);
    }
    s
}

proptest! {
    #[test]
    fn qa_never_fails_an_epic_and_only_a_pass_reaches_acceptance(
        max_cycles in 1u32..5,
        says in prop::collection::vec(qa_says(), 1..10),
    ) {
        let l = Limits { max_cycles, ..Limits::default() };
        let mut s = to_qa(EpicState::new(true, false), &l);
        prop_assert_eq!(s.cycle, 1);
        for say in &says {
            prop_assert_eq!(s.stage, Stage::Qa);
            let cycle = s.cycle;
            match say {
                QaSays::Passes => {
                    let step = next(&s, &Outcome::Passed, &l);
                    prop_assert_eq!(step.state.stage, Stage::AwaitingAcceptance);
                    prop_assert_eq!(step.state.cycle, cycle);
                    return Ok(());
                }
                QaSays::Bugs => {
                    let step = next(&s, &Outcome::Rejected, &l);
                    prop_assert!(step.why.contains("QA found bugs"), "{}", step.why);
                    if cycle < max_cycles {
                        // The bug report is the next cycle's plan.
                        prop_assert_eq!((step.state.stage, step.state.cycle), (Stage::Plan, cycle + 1));
                        s = to_qa(step.state, &l);
                    } else {
                        // Cycles spent: a person is asked; answered, one more cycle is planned.
                        prop_assert_eq!(step.state.stage, Stage::Blocked);
                        let b = step.state.blocked.clone().unwrap();
                        prop_assert_eq!(b.at, Stage::Plan);
                        let u = next(&step.state, &Outcome::Unblocked, &l).state;
                        prop_assert_eq!((u.stage, u.cycle), (Stage::Plan, cycle + 1));
                        s = to_qa(u, &l);
                    }
                }
                QaSays::CannotFinish => {
                    // QA could not test (no report after every agent tried): a person is asked,
                    // and QA runs again once answered — same cycle, nothing re-planned.
                    let step = next(&s, &Outcome::Failed { why: "no report".into() }, &l);
                    prop_assert_eq!(step.state.stage, Stage::Blocked);
                    prop_assert_eq!(step.state.blocked.as_ref().map(|b| b.at), Some(Stage::Qa));
                    s = next(&step.state, &Outcome::Unblocked, &l).state;
                    prop_assert_eq!((s.stage, s.cycle), (Stage::Qa, cycle));
                }
            }
            prop_assert_ne!(s.stage, Stage::Failed);
        }
    }

    #[test]
    fn a_deployed_epic_skips_qa_only_when_delivery_says_passed(deployed: bool) {
        let l = Limits::default();
        let mut s = EpicState::new(true, false);
        s.stage = Stage::Deliver;
        s.cycle = 1;
        let o = if deployed { Outcome::Deployed } else { Outcome::Passed };
        let n = next(&s, &o, &l).state;
        prop_assert_eq!(n.stage, if deployed { Stage::Qa } else { Stage::AwaitingAcceptance });
        // Nothing but QA's verdict (or a person) moves an epic out of QA.
        let mut q = s.clone();
        q.stage = Stage::Qa;
        for o in [Outcome::Approved, Outcome::Accepted, Outcome::Reworked, Outcome::Deployed] {
            prop_assert_eq!(&next(&q, &o, &l).state, &q);
        }
    }
}
