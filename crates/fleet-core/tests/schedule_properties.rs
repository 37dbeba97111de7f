//! Properties of recurring schedules and audit dedupe, over random clocks and texts.

use fleet_core::audit::{SIMILAR, similarity};
use fleet_core::schedule::{Schedule, Weekday, due};
use proptest::prelude::*;

fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        (0u32..1440).prop_map(|minute| Schedule::Daily { minute }),
        (0usize..7, 0u32..1440).prop_map(|(day, minute)| Schedule::Weekly {
            day: Weekday::ALL[day],
            minute
        }),
    ]
}

proptest! {
    /// The latest slot is at or before now, the next one after it, and nothing lies between.
    #[test]
    fn slots_bracket_now(s in schedule(), now in -1_000_000i64..100_000_000) {
        let latest = s.latest_slot(now);
        let next = s.next_slot(now);
        prop_assert!(latest <= now && now < next);
        prop_assert_eq!(s.latest_slot(next), next);
        prop_assert_eq!(s.latest_slot(next - 1), latest);
    }

    /// However long the downtime, walking the clock forward minute by minute from the last run
    /// fires each slot exactly once, and a jump over many slots fires once.
    #[test]
    fn each_slot_fires_once(s in schedule(), start in 0i64..50_000_000, steps in 1usize..400, stride in 1i64..5_000) {
        let mut since = start;
        let mut fired = Vec::new();
        let mut now = start;
        for _ in 0..steps {
            now += stride;
            if let Some(slot) = due(s, since, now) {
                fired.push(slot);
                since = slot;
            }
        }
        // Strictly increasing: no slot twice.
        prop_assert!(fired.windows(2).all(|w| w[0] < w[1]));
        // A jump from start to the end fires at most once.
        let jump = due(s, start, now);
        prop_assert_eq!(jump.is_some(), !fired.is_empty());
        if let Some(slot) = jump {
            prop_assert_eq!(Some(&slot), fired.last());
        }
    }

    /// Printing and parsing a schedule gives it back.
    #[test]
    fn display_round_trips(s in schedule()) {
        prop_assert_eq!(Schedule::parse(&s.to_string()).unwrap(), s);
    }

    /// Similarity is symmetric, in [0, 1], and a text with words is like itself.
    #[test]
    fn similarity_is_a_similarity(a in "[a-z /.]{0,60}", b in "[a-z /.]{0,60}") {
        let ab = similarity(&a, &b);
        prop_assert!((0.0..=1.0).contains(&ab));
        prop_assert_eq!(ab, similarity(&b, &a));
        if similarity(&a, &a) > 0.0 {
            prop_assert!(similarity(&a, &a) >= SIMILAR);
        }
    }
}
