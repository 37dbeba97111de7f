//! Clarify: a request the planner finds too vague becomes `blocked` with the planner's
//! questions as its one question; `fleet task answer` joins the answer to the request (a
//! marked "Answers from the person" section of every later prompt) and planning runs again.

mod support;
use support::scripted::{ALL, Inst};

#[test]
fn a_vague_request_blocks_with_the_planners_questions_and_the_answer_replans() {
    let inst = Inst::new(&ALL, "");
    inst.add_shop();
    std::fs::write(
        inst.path("ask.json"),
        r#"{"questions": ["Which page gets dark mode?", "Should it follow the OS setting?"]}"#,
    )
    .unwrap();
    let out = inst.expect(&["task", "add", "Make it nicer", "--project", "shop"], 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["state"], "blocked");
    assert_eq!(show["blocked"]["at"], "plan");
    let q = show["blocked"]["question"].as_str().unwrap();
    assert!(
        q.contains("1. Which page gets dark mode?")
            && q.contains("2. Should it follow the OS setting?")
            && q.contains("fleet task answer e1"),
        "{q}"
    );
    let blocked = inst.events_of("e1", "task.blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["question"], q);
    // Nothing was planned or run.
    assert!(
        show["tasks"].as_array().is_none_or(|t| t.is_empty()),
        "{show}"
    );

    let out = inst.expect(
        &["task", "answer", "e1", "The shop page; yes, follow the OS"],
        0,
    );
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let prompt = inst.prompt("planner");
    let request = prompt.find("Make it nicer").unwrap();
    let answers = prompt.find("## Answers from the person").expect(&prompt);
    assert!(request < answers, "{prompt}");
    assert!(
        prompt[answers..].contains("Which page gets dark mode?")
            && prompt[answers..].contains("The person answered: The shop page; yes, follow the OS"),
        "{prompt}"
    );
    // The developer's task comes from the second plan; the reviewer sees the answer too.
    assert!(inst.prompt("reviewer").contains("The shop page; yes"));
    let show = inst.show("e1");
    let stages = support::epics::stage_list(&show);
    assert_eq!(
        stages[..3],
        ["research1:passed", "plan1:blocked", "plan1:passed"],
        "{stages:?}"
    );
}
