//! Property tests of an epic's `blocked` state: from any working stage, with any counters,
//! a question then an answer brings the epic back to the stage it stopped at, with every
//! counter kept (what landed stays); and nothing but an answer or a cancellation moves a
//! blocked epic.

use fleet_core::epic::{EpicState, Limits, Outcome, Stage, next};
use proptest::prelude::*;

fn working_stage() -> impl Strategy<Value = Stage> {
    prop::sample::select(
        Stage::ALL
            .into_iter()
            .filter(|s| s.is_working())
            .collect::<Vec<_>>(),
    )
}

fn other_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Passed),
        Just(Outcome::Approved),
        Just(Outcome::Rejected),
        Just(Outcome::Accepted),
        Just(Outcome::Reworked),
        "[a-z ]{0,12}".prop_map(|why| Outcome::Failed { why }),
        "[a-z ]{0,12}".prop_map(|question| Outcome::NeedsPerson { question }),
        prop::collection::vec("[a-z]{1,4}", 0..3).prop_map(|tasks| Outcome::TasksFailed { tasks }),
    ]
}

proptest! {
    #[test]
    fn a_question_then_an_answer_resumes_the_same_stage_with_its_counters(
        stage in working_stage(),
        cycle in 0u32..6, replans in 0u32..3, rearchitects in 0u32..3,
        has_context: bool, needs_design: bool, resumes in 0u32..4,
        question in "[ -~]{1,40}",
        noise in prop::collection::vec(other_outcome(), 0..6),
    ) {
        let l = Limits::default();
        let mut s = EpicState::new(has_context, needs_design);
        s.stage = stage;
        s.cycle = cycle;
        s.replans = replans;
        s.rearchitects = rearchitects;
        s.resumes = resumes;
        let b = next(&s, &Outcome::NeedsPerson { question: question.clone() }, &l).state;
        prop_assert_eq!(b.stage, Stage::Blocked);
        prop_assert_eq!(b.blocked.as_ref().map(|b| (b.at, b.question.clone())), Some((stage, question)));
        // Whatever else is reported meanwhile, the blocked epic stays as it is.
        for o in &noise {
            prop_assert_eq!(&next(&b, o, &l).state, &b);
        }
        let u = next(&b, &Outcome::Unblocked, &l).state;
        let mut want = s.clone();
        want.resumes = resumes + 1;
        prop_assert_eq!(u, want);
    }
}

fn any_stage() -> impl Strategy<Value = Stage> {
    prop::sample::select(Stage::ALL.to_vec())
}

proptest! {
    /// No outcome a stage or a person reports ends an epic as `failed`: trouble blocks it
    /// with a question, and only a cancellation ends it early.
    #[test]
    fn no_sequence_of_outcomes_fails_an_epic(
        start in any_stage(),
        cycle in 0u32..8, replans in 0u32..3, rearchitects in 0u32..3,
        outcomes in prop::collection::vec(
            prop_oneof![other_outcome(), Just(Outcome::Unblocked)], 0..30),
    ) {
        prop_assume!(start != Stage::Failed && start != Stage::Blocked);
        let l = Limits::default();
        let mut s = EpicState::new(true, false);
        s.stage = start;
        s.cycle = cycle;
        s.replans = replans;
        s.rearchitects = rearchitects;
        for o in &outcomes {
            s = next(&s, o, &l).state;
            prop_assert_ne!(s.stage, Stage::Failed);
            // A blocked epic always says where it continues and what it asks.
            prop_assert_eq!(s.stage == Stage::Blocked, s.blocked.is_some());
        }
    }
}

proptest! {
    /// Migration mode is read-only until a person approves: whatever the stages and a person
    /// report, short of an acceptance, the epic never reaches a stage that plans or writes
    /// code; and an acceptance of the delivered documents plans cycle 1, approved.
    #[test]
    fn a_migration_epic_plans_no_code_before_approval(
        outcomes in prop::collection::vec(
            prop_oneof![other_outcome(), Just(Outcome::Unblocked), Just(Outcome::Deployed)], 0..30),
    ) {
        let l = Limits::default();
        let mut s = EpicState::migration();
        for o in &outcomes {
            let before = s.clone();
            s = next(&s, o, &l).state;
            if before.read_only() && *o == Outcome::Accepted && before.stage == Stage::AwaitingAcceptance {
                prop_assert_eq!((s.stage, s.cycle, s.approved), (Stage::Plan, 1, true));
                break;
            }
            prop_assert!(s.read_only(), "{:?} approved it", o);
            prop_assert!(
                !matches!(s.stage, Stage::Plan | Stage::Implement | Stage::Review | Stage::Qa | Stage::Done),
                "{:?} led a read-only epic to {}", o, s.stage
            );
            prop_assert!(!s.delivered);
            prop_assert_eq!(s.stage == Stage::Blocked, s.blocked.is_some());
        }
    }
}
