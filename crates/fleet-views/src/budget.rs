//! Budgets: what each account, profile, role and task spent in the current budget day, in
//! USD and in tokens, against the daily budgets.

use fleet_config::InstanceConfig;
use fleet_store::{Store, StoreError};
use serde_json::{Value, json};

/// `fleet budget --json` and `GET /api/v1/budgets`: what each account, profile, role and task
/// spent in the current budget day (each account's own), against the daily budgets, with
/// cooldowns and disabled accounts.
pub fn budget(instance: &InstanceConfig, store: &dyn Store) -> Result<Value, StoreError> {
    use fleet_core::pool::{Clock, day_start};
    use std::collections::BTreeMap;
    let clock = Clock {
        now: crate::now_ms() as u64,
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    };
    let day_of = |day_starts: u32| day_start(&clock, day_starts) as i64;
    // Accounts not in fleet.yaml (bare CLIs) count from local midnight.
    let since = instance
        .accounts
        .iter()
        .map(|a| day_of(a.day_starts))
        .chain([day_of(0)])
        .min()
        .unwrap_or(0);
    let attempts = store.attempts_since(since)?;
    let states = store.accounts()?;
    let in_day = |a: &fleet_store::AttemptRow| {
        let start = a
            .account
            .as_ref()
            .and_then(|n| instance.account(n))
            .map(|acc| day_of(acc.day_starts))
            .unwrap_or(day_of(0));
        a.started_at >= start
    };
    #[derive(Default, Clone, Copy, serde::Serialize)]
    struct Spend {
        usd: f64,
        tokens: u64,
        attempts: u64,
    }
    fn add(map: &mut BTreeMap<String, Spend>, key: &str, a: &fleet_store::AttemptRow) {
        let s = map.entry(key.to_string()).or_default();
        s.usd += a.cost_usd;
        s.tokens += crate::tokens(a);
        s.attempts += 1;
    }
    let (mut by_account, mut by_profile, mut by_role, mut by_task) = (
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    for a in attempts.iter().filter(|a| a.profile.is_some() && in_day(a)) {
        let profile = a.profile.as_deref().unwrap_or("?");
        add(&mut by_account, a.account.as_deref().unwrap_or("(none)"), a);
        add(&mut by_profile, profile, a);
        for role in instance
            .profile(profile)
            .map(|p| p.roles.clone())
            .unwrap_or_default()
        {
            add(&mut by_role, &role, a);
        }
        add(&mut by_task, &format!("{}/{}", a.run_id, a.task_id), a);
    }
    let accounts: Vec<serde_json::Value> = instance
        .accounts
        .iter()
        .map(|acc| {
            let s = by_account.get(&acc.name).copied().unwrap_or_default();
            let st = states.iter().find(|r| r.name == acc.name);
            let cooldown = st
                .and_then(|r| r.cooldown_until)
                .filter(|t| *t > clock.now as i64);
            json!({
                "account": acc.name,
                "spent_usd": s.usd,
                "spent_tokens": s.tokens,
                "attempts": s.attempts,
                "budget_usd": acc.daily_budget_usd,
                "budget_tokens": acc.daily_budget_tokens,
                "left_usd": acc.daily_budget_usd.map(|b| (b - s.usd).max(0.0)),
                "left_tokens": acc.daily_budget_tokens.map(|b| b.saturating_sub(s.tokens)),
                "day_started": crate::rfc3339(day_of(acc.day_starts)),
                "cooldown_until": cooldown.map(crate::rfc3339),
                "disabled": st.and_then(|r| r.disabled.clone()),
            })
        })
        .collect();
    Ok(json!({
        "accounts": accounts, "profiles": by_profile, "roles": by_role, "tasks": by_task,
    }))
}
