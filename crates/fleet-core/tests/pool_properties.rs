//! Properties of the agent pool: whatever the accounts' windows, cooldowns and budgets,
//! `choose` never picks a blocked profile, and when it says "wait until T", something is usable
//! exactly at T (a task starts the moment an agent becomes usable, not later).

use fleet_core::pool::{
    AccountState, Choice, Clock, PoolAccount, PoolProfile, Want, Window, blocked, choose,
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
}
