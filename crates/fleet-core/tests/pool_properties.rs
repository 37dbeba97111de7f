//! Properties of the agent pool: whatever the accounts' windows, cooldowns and budgets,
//! `choose` never picks a blocked profile, and when it says "wait until T", something is usable
//! exactly at T (a task starts the moment an agent becomes usable, not later). A profile that
//! stalled, crashed or kept failing on a task is not chosen again while an untried usable one
//! exists, and a disabled account comes back by itself only when its rejected key was replaced.

use fleet_core::pool::{
    AccountEffect, AccountState, Choice, Clock, Ending, Limits, Next, PastAttempt, PoolAccount,
    PoolProfile, Want, Window, blocked, choose, next_attempt, reprobe,
};
use proptest::prelude::*;

const DAY: u64 = 86_400_000;
const T0: u64 = 1_795_219_200_000; // 2026-11-21 00:00 UTC

fn window() -> impl Strategy<Value = Option<Window>> {
    prop::option::of(
        (0u32..1440, 0u32..1440)
            .prop_filter("non-empty", |(a, b)| a != b)
            .prop_map(|(start, end)| Window { start, end }),
    )
}

fn account() -> impl Strategy<Value = (PoolAccount, AccountState)> {
    (
        window(),
        prop::option::of(0.5f64..5.0),
        prop::option::of(0u64..4 * 3_600_000),
        0f64..6.0,
        any::<bool>(),
        0u32..1440,
    )
        .prop_map(|(window, budget, cooldown, spent, disabled, day_starts)| {
            (
                PoolAccount {
                    name: "a".into(),
                    window,
                    budget_usd: budget,
                    budget_tokens: None,
                    day_starts,
                },
                AccountState {
                    cooldown_until: cooldown.map(|c| T0 + 12 * 3_600_000 + c),
                    backoff_level: 0,
                    disabled: disabled.then(|| "no".into()),
                    rejected_secrets: None,
                    spent_usd: spent,
                    spent_tokens: 0,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_window_is_left_and_reentered_where_it_says(w in window(), now in 0u64..DAY, offset in -12i32..14) {
        let Some(w) = w else { return Ok(()) };
        let clock = Clock { now: T0 + now, utc_offset_secs: offset * 3600 };
        let opens = clock.next_local(w.start);
        prop_assert!(opens >= clock.now && opens < clock.now + DAY + 1);
        let then = Clock { now: opens, ..clock };
        prop_assert_eq!(then.local_minute(), w.start);
        prop_assert!(w.contains(then.local_minute()));
    }

    #[test]
    fn choose_never_picks_a_blocked_profile_and_waits_exactly_long_enough(
        accounts in prop::collection::vec(account(), 1..4),
        roles in prop::collection::vec(0usize..2, 1..6),
        hour_min in 0u64..(24 * 60),
    ) {
        let clock = Clock { now: T0 + 12 * 3_600_000 + (hour_min % 720) * 60_000, utc_offset_secs: 0 };
        let (pool_accounts, states): (Vec<_>, Vec<_>) = accounts.into_iter().unzip();
        let profiles: Vec<PoolProfile> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| PoolProfile {
                name: format!("p{i}"),
                vendor: format!("v{}", i % 2),
                roles: vec![if *r == 0 { "developer".into() } else { "reviewer".into() }],
                priority: (i * 7 % 5) as i64,
                tier: 0,
                account: Some(i % pool_accounts.len()),
            })
            .collect();
        let want = Want { roles: vec!["developer".into()], ..Want::default() };
        match choose(&profiles, &pool_accounts, &states, &clock, &want) {
            Choice::Run { profile, .. } => {
                let a = profiles[profile].account.unwrap();
                prop_assert!(blocked(&pool_accounts[a], &states[a], &clock).is_none());
                prop_assert!(profiles[profile].roles.contains(&"developer".to_string()));
            }
            Choice::Wait { until, .. } => {
                prop_assert!(until > clock.now);
                // The wait is never longer than needed: no developer profile becomes usable at
                // any moment before `until` (checked at several points). At `until` one
                // blocker ends; if another then applies, the task simply waits again.
                let usable_at = |t: u64| {
                    let c = Clock { now: t, ..clock };
                    profiles.iter().filter(|p| p.roles[0] == "developer").any(|p| {
                        let a = p.account.unwrap();
                        blocked(&pool_accounts[a], &states[a], &c).is_none()
                    })
                };
                for k in 0..8u64 {
                    let t = clock.now + (until - clock.now) * k / 8;
                    prop_assert!(!usable_at(t), "usable at {t}, before the announced {until}");
                }
                prop_assert!(!usable_at(until - 1));
            }
            Choice::Nothing { .. } => {
                // Every developer profile is disabled (or there is none).
                for p in profiles.iter().filter(|p| p.roles[0] == "developer") {
                    let a = p.account.unwrap();
                    prop_assert!(states[a].disabled.is_some());
                }
            }
        }
    }

    #[test]
    fn a_profile_that_did_badly_yields_to_any_untried_usable_one(
        accounts in prop::collection::vec(account(), 1..3),
        shapes in prop::collection::vec((0u32..3, 0i64..5, any::<bool>(), any::<bool>()), 2..6),
        history in prop::collection::vec((0usize..6, 0usize..ENDINGS.len()), 0..10),
        escalate_after in 1u32..4,
    ) {
        let clock = Clock { now: T0 + 12 * 3_600_000, utc_offset_secs: 0 };
        let (pool_accounts, states): (Vec<_>, Vec<_>) = accounts.into_iter().unzip();
        let profiles: Vec<PoolProfile> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(tier, priority, developer, has_account))| PoolProfile {
                name: format!("p{i}"),
                vendor: format!("v{}", i % 3),
                roles: vec![if developer || i == 0 { "developer".into() } else { "reviewer".into() }],
                priority,
                tier,
                account: has_account.then_some(i % pool_accounts.len()),
            })
            .collect();
        let history: Vec<PastAttempt> = history
            .iter()
            .map(|&(p, e)| PastAttempt { profile: p % profiles.len(), ending: ENDINGS[e] })
            .collect();
        let limits = Limits { max_attempts: 100, escalate_after, ..Limits::default() };
        let base = Want { roles: vec!["developer".into()], ..Want::default() };
        let Next::Retry { want, .. } = next_attempt(&profiles, &base, &history, &limits, 0.0, clock.now) else {
            return Err(TestCaseError::fail("gave up below every limit"));
        };
        let Choice::Run { profile, .. } = choose(&profiles, &pool_accounts, &states, &clock, &want) else {
            return Ok(());
        };
        // Did badly, by the rule's own words: stalled, timed out, crashed or no result once,
        // or failed `escalate_after` times.
        let did_badly = |p: usize| {
            let mine = history.iter().filter(|a| a.profile == p);
            mine.clone().any(|a| matches!(a.ending, Ending::Stalled | Ending::TimedOut | Ending::Crashed | Ending::NoResult))
                || mine.filter(|a| a.ending.is_agent_failure()).count() as u32 >= escalate_after
        };
        if did_badly(profile) {
            let untried_usable = (0..profiles.len()).find(|&q| {
                let p = &profiles[q];
                p.roles.contains(&"developer".to_string())
                    && p.tier >= want.min_tier
                    && !history.iter().any(|a| a.profile == q)
                    && p.account.is_none_or(|a| blocked(&pool_accounts[a], &states[a], &clock).is_none())
            });
            prop_assert!(untried_usable.is_none(),
                "chose p{profile}, which did badly, while p{} was untried and usable", untried_usable.unwrap_or_default());
        }
    }

    #[test]
    fn a_disabled_account_comes_back_by_itself_only_with_other_secrets(
        disabled in any::<bool>(),
        rejected in prop::option::of(0u8..3),
        now in prop::option::of(0u8..3),
    ) {
        let state = AccountState {
            disabled: disabled.then(|| "its credentials were rejected".into()),
            rejected_secrets: rejected.map(|r| format!("fp{r}")),
            ..AccountState::default()
        };
        let now_fp = now.map(|n| format!("fp{n}"));
        let back = reprobe(&state, now_fp.as_deref());
        let changed = disabled && rejected.is_some() && now.is_some() && rejected != now;
        prop_assert_eq!(back.is_some(), changed);
        if let Some(effect) = back {
            prop_assert!(matches!(effect, AccountEffect::Enable { .. }), "unexpected effect");
        }
    }
}

const ENDINGS: [Ending; 13] = [
    Ending::Passed,
    Ending::ChecksFailed,
    Ending::NoChange,
    Ending::AgentError,
    Ending::RateLimited,
    Ending::QuotaExhausted,
    Ending::AuthFailed,
    Ending::Overloaded,
    Ending::Upstream,
    Ending::Stalled,
    Ending::TimedOut,
    Ending::Crashed,
    Ending::NoResult,
];
