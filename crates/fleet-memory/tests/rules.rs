//! Property tests of the pure rules, with the clock passed in.

use fleet_memory::rules::{self, Policy, TaskContext};
use fleet_memory::{AppliesWhen, Lesson, Provenance, Scope};
use proptest::prelude::*;

const DAY: i64 = 24 * 60 * 60 * 1000;

fn lesson(scope: Scope, text: &str, at: i64) -> Lesson {
    Lesson::new(
        scope,
        AppliesWhen::default(),
        text.into(),
        Provenance {
            source: "retrospective".into(),
            run: Some("r".into()),
            task: Some(format!("t{at}")),
            attempt: Some(1),
            at,
        },
    )
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Instance),
        Just(Scope::Project("a".into())),
        Just(Scope::Bible("b".into())),
    ]
}

fn vocabulary() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("migrations"),
            Just("always"),
            Just("run"),
            Just("before"),
            Just("commit"),
            Just("snake_case"),
            Just("json"),
            Just("api"),
            Just("never"),
            Just("logs"),
        ],
        1..8,
    )
    .prop_map(|w| w.join(" "))
}

/// Random lessons with random histories of outcomes.
fn lessons() -> impl Strategy<Value = Vec<Lesson>> {
    proptest::collection::vec(
        (
            scope(),
            vocabulary(),
            0i64..200 * DAY,
            proptest::collection::vec((any::<bool>(), 0i64..50 * DAY), 0..8),
        ),
        0..40,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (s, text, at, outcomes))| {
                let mut l = lesson(s, &text, at + i as i64);
                let mut t = l.created_at;
                for (passed, gap) in outcomes {
                    t += gap;
                    rules::record_outcome(&mut l, passed, t, &Policy::default());
                }
                l
            })
            .collect()
    })
}

proptest! {
    /// After upkeep no scope holds more live lessons than its cap.
    #[test]
    fn a_scope_never_exceeds_its_cap(mut ls in lessons(), cap in 1usize..10, now in 0i64..400 * DAY) {
        let p = Policy { scope_cap: cap, ..Policy::default() };
        rules::upkeep(&mut ls, now, &p);
        let mut counts = std::collections::BTreeMap::new();
        for l in ls.iter().filter(|l| !l.is_archived()) {
            *counts.entry(l.scope.clone()).or_insert(0usize) += 1;
        }
        prop_assert!(counts.values().all(|n| *n <= cap), "{counts:?}");
    }

    /// Merging loses no provenance: every origin of every lesson survives upkeep, and no
    /// counted use disappears.
    #[test]
    fn upkeep_keeps_every_provenance_and_use(mut ls in lessons(), now in 0i64..400 * DAY) {
        let p = Policy::default();
        let origins: std::collections::BTreeSet<Provenance> =
            ls.iter().flat_map(|l| l.provenance.clone()).collect();
        let used: u32 = ls.iter().map(|l| l.used).sum();
        let helped: u32 = ls.iter().map(|l| l.helped).sum();
        rules::upkeep(&mut ls, now, &p);
        let after: std::collections::BTreeSet<Provenance> =
            ls.iter().flat_map(|l| l.provenance.clone()).collect();
        prop_assert_eq!(origins, after);
        prop_assert_eq!(used, ls.iter().map(|l| l.used).sum::<u32>());
        prop_assert_eq!(helped, ls.iter().map(|l| l.helped).sum::<u32>());
    }

    /// Upkeep twice at the same moment changes nothing the second time.
    #[test]
    fn upkeep_is_idempotent(mut ls in lessons(), now in 0i64..400 * DAY) {
        let p = Policy { scope_cap: 5, ..Policy::default() };
        rules::upkeep(&mut ls, now, &p);
        let once = ls.clone();
        let second = rules::upkeep(&mut ls, now, &p);
        prop_assert_eq!(once, ls);
        prop_assert!(second.merges.is_empty() && second.archive.is_empty() && second.propose.is_empty());
    }

    /// No two live lessons of a scope are near-duplicates after upkeep.
    #[test]
    fn no_live_duplicates_after_upkeep(mut ls in lessons(), now in 0i64..400 * DAY) {
        let p = Policy::default();
        rules::upkeep(&mut ls, now, &p);
        let live: Vec<&Lesson> = ls.iter().filter(|l| !l.is_archived()).collect();
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                prop_assert!(a.scope != b.scope || rules::similarity(&a.text, &b.text) < p.duplicate_at);
            }
        }
    }

    /// A lesson that never helped is archived once its window has passed, and not before
    /// (unless its weight fell under the floor).
    #[test]
    fn never_helping_lessons_are_archived_after_their_window(
        text in vocabulary(), uses in 0u32..5, window_days in 1i64..90, extra in 0i64..30 * DAY,
    ) {
        let p = Policy { archive_after: window_days * DAY, min_weight: 0.0, ..Policy::default() };
        let mut l = lesson(Scope::Instance, &text, 1_000);
        for k in 0..uses {
            rules::record_outcome(&mut l, false, 1_000 + k as i64 * DAY, &p);
        }
        let touch = rules::last_touch(&l);
        prop_assert!(rules::archive_reason(&l, touch + p.archive_after - 1, &p).is_none());
        prop_assert!(rules::archive_reason(&l, touch + p.archive_after + extra, &p).is_some());
    }

    /// Helping raises weight, not helping lowers it, within the bounds.
    #[test]
    fn weight_follows_outcomes(outcomes in proptest::collection::vec(any::<bool>(), 1..30)) {
        let p = Policy::default();
        let mut l = lesson(Scope::Instance, "x y z", 0);
        for (i, passed) in outcomes.into_iter().enumerate() {
            let before = l.weight;
            rules::record_outcome(&mut l, passed, i as i64, &p);
            if passed {
                prop_assert!(l.weight >= before && l.weight <= p.max_weight);
            } else {
                prop_assert!(l.weight < before && l.weight > 0.0);
            }
        }
    }

    /// Injection never exceeds the token cap and never picks an irrelevant lesson.
    #[test]
    fn injection_respects_the_cap(ls in lessons(), cap in 0usize..200, text in vocabulary()) {
        let p = Policy::default();
        let ctx = TaskContext {
            text,
            scopes: vec![Scope::Instance, Scope::Project("a".into())],
            ..TaskContext::default()
        };
        let scored: Vec<(&Lesson, f64)> = ls
            .iter()
            .map(|l| (l, rules::relevance(l, &ctx, 0.0, 0, &p)))
            .collect();
        let picked = rules::select_for_injection(scored.clone(), cap);
        let used: usize = picked.iter().map(|l| rules::tokens(&l.text) + 8).sum();
        prop_assert!(used <= cap);
        for l in picked {
            prop_assert!(scored.iter().any(|(x, s)| x.id == l.id && *s > 0.0));
        }
    }

    /// A lesson is proposed as a skill once it helped K times, and only once.
    #[test]
    fn proposal_after_k_helps_and_only_once(k in 1u32..6, helps in 0u32..10) {
        let p = Policy { promote_after: k, ..Policy::default() };
        let mut ls = vec![lesson(Scope::Instance, "run the linter", 0)];
        for i in 0..helps {
            rules::record_outcome(&mut ls[0], true, i as i64, &p);
        }
        let first = rules::upkeep(&mut ls, helps as i64, &p);
        prop_assert_eq!(first.propose.len(), usize::from(helps >= k));
        let second = rules::upkeep(&mut ls, helps as i64 + 1, &p);
        prop_assert!(second.propose.is_empty());
    }
}

#[test]
fn idle_weight_halves_every_half_life() {
    let p = Policy::default();
    let l = lesson(Scope::Instance, "a b c", 0);
    let w = rules::effective_weight(&l, p.half_life, &p);
    assert!((w - 0.5).abs() < 1e-9, "{w}");
}

#[test]
fn roles_and_paths_filter_relevance() {
    let p = Policy::default();
    let mut l = lesson(Scope::Instance, "migrations need a down step", 0);
    l.applies_when = AppliesWhen {
        paths: vec!["db/migrations/".into()],
        roles: vec!["developer".into()],
        ..AppliesWhen::default()
    };
    let ctx = |role: &str, path: &str| TaskContext {
        text: "add a column".into(),
        paths: vec![path.into()],
        role: Some(role.into()),
        scopes: vec![Scope::Instance],
        ..TaskContext::default()
    };
    assert!(rules::relevance(&l, &ctx("developer", "db/migrations/0003.sql"), 0.0, 0, &p) > 0.0);
    assert_eq!(
        rules::relevance(&l, &ctx("reviewer", "db/migrations/0003.sql"), 0.0, 0, &p),
        0.0
    );
    assert_eq!(
        rules::relevance(&l, &ctx("developer", "src/api.rs"), 0.0, 0, &p),
        0.0
    );
}
