//! Limits per project (`projects:` in fleet.yaml): cycles and parallel tasks come from the
//! project's entry; spent cycles block with a question; a hard limit of time (or money) ends
//! the epic as `failed` with the reason; a result delivered once stays acceptable whatever a
//! later fix cycle does.

mod support;
use support::scripted::{ALL, Inst};

#[test]
fn the_projects_cycle_limit_and_concurrency_come_from_fleet_yaml() {
    let inst = Inst::new(
        &ALL,
        "projects:\n  shop:\n    max_cycles: 2\n    concurrency: 1\n",
    );
    inst.add_shop();
    std::fs::write(inst.path("reject"), "").unwrap();
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    let q = show["blocked"]["question"].as_str().unwrap();
    assert!(q.contains("2 cycles were spent (limit 2)"), "{q}");
    assert_eq!(show["blocked"]["at"], "plan");
    // Every stage run of the epic ran one task at a time.
    let runbooks = std::fs::read_dir(inst.home.join(".fleet/epics/e1")).unwrap();
    let mut seen = 0;
    for f in runbooks {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let rb: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(rb["concurrency"], 1, "{text}");
        seen += 1;
    }
    assert!(seen >= 6, "{seen} stage runs");
}

#[test]
fn a_bad_limit_is_refused_with_its_place_in_fleet_yaml() {
    let inst = Inst::new(&ALL, "projects:\n  shop:\n    max_cycles: 0\n");
    let out = inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
        ],
        2,
    );
    assert!(
        out.contains("fleet.yaml:24:17: `max_cycles`: expected an integer from 1 to 100, found 0"),
        "{out}"
    );
}

#[test]
fn the_time_limit_per_epic_fails_it_with_the_reason() {
    let inst = Inst::new(&ALL, "projects:\n  shop:\n    max_time: 1s\n");
    inst.add_shop();
    std::fs::write(inst.path("dev-sleep"), "2").unwrap();
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 1);
    assert!(out.contains("epic e1 failed"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["state"], "failed");
    let failed = inst.events_of("e1", "task.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the time per epic is spent") && reason.contains("max_time"),
        "{reason}"
    );
    // It stopped before the review: no reviewer ran.
    assert!(!inst.path("prompts/reviewer.txt").exists());
    // A failed epic never delivered is not acceptable.
    let out = inst.expect(&["task", "accept", "e1"], 2);
    assert!(out.contains("not awaiting acceptance"), "{out}");
}

#[test]
fn a_delivered_result_stays_acceptable_after_a_later_cycle_blocks() {
    let inst = Inst::new(&ALL, "projects:\n  shop:\n    max_cycles: 1\n");
    inst.add_shop();
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    // A small rejection: the one cycle is spent, so the epic asks a person.
    let out = inst.expect(&["task", "reject", "e1", "--comment", "rename it"], 1);
    assert!(out.contains("blocked"), "{out}");
    assert_eq!(inst.show("e1")["state"], "blocked");
    // The person takes the result delivered earlier after all.
    let out = inst.expect(&["task", "accept", "e1"], 0);
    assert!(out.contains("epic e1 done"), "{out}");
    assert_eq!(inst.show("e1")["state"], "done");
}
