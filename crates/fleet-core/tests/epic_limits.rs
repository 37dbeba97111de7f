//! Hard limits and acceptance: a reached limit of money or time ends any epic that has not
//! ended as `failed` with the reason (and nothing else does, besides a cancellation); a result
//! delivered once stays acceptable whatever a later fix cycle does.

use fleet_core::budget::{EpicBudget, Spent, over_limit};
use fleet_core::epic::{EpicState, Limits, Outcome, Stage, acceptable, next};
use proptest::prelude::*;

fn any_stage() -> impl Strategy<Value = Stage> {
    prop::sample::select(Stage::ALL.to_vec())
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Passed),
        Just(Outcome::Approved),
        Just(Outcome::Rejected),
        Just(Outcome::Reworked),
        Just(Outcome::Unblocked),
        "[a-z ]{0,12}".prop_map(|why| Outcome::Failed { why }),
        "[a-z ]{0,12}".prop_map(|question| Outcome::NeedsPerson { question }),
        prop::collection::vec("[a-z]{1,4}", 0..3).prop_map(|tasks| Outcome::TasksFailed { tasks }),
    ]
}

proptest! {
    #[test]
    fn a_reached_limit_fails_any_epic_not_ended_with_its_reason(
        stage in any_stage(), cycle in 0u32..6, why in "[ -~]{1,40}",
    ) {
        let mut s = EpicState::new(true, false);
        s.stage = stage;
        s.cycle = cycle;
        let step = next(&s, &Outcome::LimitReached { why: why.clone() }, &Limits::default());
        if stage.is_final() {
            prop_assert_eq!(step.state, s);
        } else {
            prop_assert_eq!(step.state.stage, Stage::Failed);
            prop_assert_eq!(step.state.blocked, None);
            prop_assert_eq!(step.why, why);
            prop_assert_eq!(step.state.cycle, cycle);
        }
    }

    /// Once a result was delivered, whatever outcomes a later fix cycle reports (a person's
    /// rejection, failing tasks, spent cycles, a hard limit), the epic is acceptable whenever
    /// it is not working, until it is accepted or cancelled.
    #[test]
    fn a_delivered_result_stays_acceptable_whatever_a_later_cycle_does(
        max_cycles in 1u32..4,
        outcomes in prop::collection::vec(outcome(), 0..25),
        limit_at_end: bool,
    ) {
        let l = Limits { max_cycles, ..Limits::default() };
        let mut s = EpicState::new(true, false);
        for o in [Outcome::Passed, Outcome::Passed, Outcome::Approved, Outcome::Passed] {
            s = next(&s, &o, &l).state;
        }
        prop_assert_eq!(s.stage, Stage::AwaitingAcceptance);
        s = next(&s, &Outcome::Reworked, &l).state;
        for o in &outcomes {
            s = next(&s, o, &l).state;
        }
        if limit_at_end {
            s = next(&s, &Outcome::LimitReached { why: "money".into() }, &l).state;
        }
        prop_assert!(s.delivered);
        let stopped = !s.stage.is_working() && s.stage != Stage::Done;
        prop_assert_eq!(acceptable(&s), stopped, "{:?}", s);
        let accepted = next(&s, &Outcome::Accepted, &l).state;
        if stopped {
            prop_assert_eq!(accepted.stage, Stage::Done);
            prop_assert_eq!(accepted.blocked, None);
        } else {
            prop_assert_eq!(accepted, s);
        }
    }

    #[test]
    fn the_budget_stops_exactly_when_a_limit_is_reached(
        usd in 0.0f64..10.0, tokens in 0u64..10_000, time_ms in 0u64..100_000,
        max_usd in prop::option::of(0.0f64..10.0),
        max_tokens in prop::option::of(0u64..10_000),
        max_time_ms in prop::option::of(0u64..100_000),
    ) {
        let spent = Spent { usd, tokens, time_ms };
        let budget = EpicBudget { max_usd, max_tokens, max_time_ms };
        let reached = max_usd.is_some_and(|m| usd >= m)
            || max_tokens.is_some_and(|m| tokens >= m)
            || max_time_ms.is_some_and(|m| time_ms >= m);
        let why = over_limit(&spent, &budget);
        prop_assert_eq!(why.is_some(), reached);
        if let Some(why) = why {
            prop_assert!(why.contains("fleet.yaml"), "{}", why);
        }
    }
}

#[test]
fn an_epic_never_delivered_cannot_be_accepted_when_blocked_or_failed() {
    let l = Limits::default();
    let mut s = EpicState::new(true, false);
    s.stage = Stage::Implement;
    let b = next(
        &s,
        &Outcome::NeedsPerson {
            question: "?".into(),
        },
        &l,
    )
    .state;
    assert!(!acceptable(&b));
    assert_eq!(next(&b, &Outcome::Accepted, &l).state, b);
    let f = next(&s, &Outcome::LimitReached { why: "time".into() }, &l).state;
    assert!(!acceptable(&f));
    assert_eq!(next(&f, &Outcome::Accepted, &l).state, f);
}
