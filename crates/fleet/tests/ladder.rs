//! The ladder's "another agent" rung: two developer profiles at one tier, the preferred one
//! failing its checks every time. After its failures the other profile is tried (before any
//! re-plan or question), finishes the task, and the epic awaits acceptance.

mod support;
use support::scripted::Inst;

#[test]
fn a_profile_that_keeps_failing_its_checks_yields_to_another_at_the_same_tier() {
    let inst = Inst::new(&["researcher", "planner", "reviewer"], "");
    // `dev-bad` (preferred) answers but writes nothing, so the task's check always fails.
    let extra = format!(
        "  dev-bad:\n    cli: command\n    command: \"echo nothing to do\"\n    roles: [developer]\n    priority: 10\n\
         \x20 dev-good:\n    cli: command\n    command: \"sh {} developer\"\n    roles: [developer]\n    env: {{ DIR: \"{}\" }}\n",
        inst.path("agent.sh").display(),
        inst.tmp.path().display()
    );
    inst.configure(&["researcher", "planner", "reviewer"], &extra);
    inst.add_shop();
    let out = inst.expect(&["task", "add", "Add a file", "--project", "shop"], 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    let attempts: Vec<(String, String)> = show["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("{show}"))
        .iter()
        .filter(|a| a["role"] == "developer" || a["task"] == "t1")
        .map(|a| {
            (
                a["agent"].as_str().unwrap_or("").to_string(),
                a["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        attempts.iter().any(|(agent, _)| agent == "dev-bad")
            && attempts
                .last()
                .is_some_and(|(agent, _)| agent == "dev-good"),
        "{attempts:?}"
    );
    // One plan: the other profile was tried before any re-plan.
    assert_eq!(
        std::fs::read_to_string(inst.path("plans")).unwrap().trim(),
        "1"
    );
}
