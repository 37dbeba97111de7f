//! The agent pool: which profile plays a task's next attempt, why a task has to wait, and what
//! an attempt's ending does to its account and to the task.
//!
//! Everything is a function of data the engine passes in: profiles and accounts as configured,
//! each account's live state (cooldown, disablement, today's spend) and a [`Clock`]. The task's
//! own agent history is summarized from its attempts ([`History`]), so nothing here needs to
//! be persisted beyond the attempts themselves and the accounts' state.

use crate::Millis;
use serde::{Deserialize, Serialize};

const MINUTE: Millis = 60_000;
const DAY: Millis = 24 * 60 * MINUTE;

/// Now, and the local time zone's offset (windows and budget days are local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: Millis,
    pub utc_offset_secs: i32,
}

impl Clock {
    fn offset_ms(&self) -> i64 {
        self.utc_offset_secs as i64 * 1000
    }

    /// Minutes since local midnight.
    pub fn local_minute(&self) -> u32 {
        let local = self.now as i64 + self.offset_ms();
        (local.rem_euclid(DAY as i64) / MINUTE as i64) as u32
    }

    /// The next moment (strictly after now, or now if exactly at it) the local clock reads `minute`.
    pub fn next_local(&self, minute: u32) -> Millis {
        let local = self.now as i64 + self.offset_ms();
        let midnight = local - local.rem_euclid(DAY as i64);
        let mut at = midnight + minute as i64 * MINUTE as i64;
        if at < local {
            at += DAY as i64;
        }
        (at - self.offset_ms()).max(0) as Millis
    }
}

/// A local-time window in minutes after midnight; `start > end` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolProfile {
    pub name: String,
    /// Who serves its model (`anthropic`, `openai`, `google`…): a rate-limited task prefers
    /// another vendor next.
    pub vendor: String,
    pub roles: Vec<String>,
    /// Higher is tried first within a tier.
    pub priority: i64,
    /// Escalation tier: the critic swap moves a task to a higher one.
    pub tier: u32,
    /// Index into the accounts, if the profile draws on one.
    pub account: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAccount {
    pub name: String,
    pub window: Option<Window>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// Local minute the budget day starts.
    pub day_starts: u32,
}

/// What is known about an account right now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    pub cooldown_until: Option<Millis>,
    /// Consecutive limits without a known reset time; sets the next backoff.
    pub backoff_level: u32,
    pub disabled: Option<String>,
    /// When disabled because its credentials were rejected: a salted fingerprint of the secret
    /// values that were rejected (never the values). `None`: unknown, or disabled for another
    /// reason; then only a person can enable it again.
    pub rejected_secrets: Option<String>,
    /// Spend since the start of the account's current budget day.
    pub spent_usd: f64,
    pub spent_tokens: u64,
}

/// Why an account cannot be used now.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    Window { opens_at: Millis },
    Cooldown { until: Millis },
    Budget { resets_at: Millis },
    Disabled { reason: String },
}

impl Blocked {
    /// When it stops blocking, if it ever does by itself.
    pub fn until(&self) -> Option<Millis> {
        match self {
            Blocked::Window { opens_at } => Some(*opens_at),
            Blocked::Cooldown { until } => Some(*until),
            Blocked::Budget { resets_at } => Some(*resets_at),
            Blocked::Disabled { .. } => None,
        }
    }

    pub fn describe(&self, account: &str) -> String {
        match self {
            Blocked::Window { .. } => {
                format!("account {account} is outside its availability window")
            }
            Blocked::Cooldown { .. } => {
                format!("account {account} is cooling down after a rate limit")
            }
            Blocked::Budget { .. } => format!("account {account} has spent its daily budget"),
            Blocked::Disabled { reason } => format!("account {account} is disabled: {reason}"),
        }
    }
}

/// The start of the budget day that contains `now` (local `day_starts`).
pub fn day_start(clock: &Clock, day_starts: u32) -> Millis {
    let next = clock.next_local(day_starts);
    if next == clock.now {
        next
    } else {
        next.saturating_sub(DAY)
    }
}

/// Whether the account is over its daily budget (USD or tokens, whichever is set and reached).
pub fn over_budget(acc: &PoolAccount, state: &AccountState) -> bool {
    acc.budget_usd.is_some_and(|b| state.spent_usd >= b)
        || acc.budget_tokens.is_some_and(|b| state.spent_tokens >= b)
}

/// Why the account cannot be used at `clock.now`, or `None` if it can.
pub fn blocked(acc: &PoolAccount, state: &AccountState, clock: &Clock) -> Option<Blocked> {
    if let Some(reason) = &state.disabled {
        return Some(Blocked::Disabled {
            reason: reason.clone(),
        });
    }
    if let Some(until) = state.cooldown_until.filter(|u| *u > clock.now) {
        return Some(Blocked::Cooldown { until });
    }
    if over_budget(acc, state) {
        return Some(Blocked::Budget {
            resets_at: clock.next_local(acc.day_starts).max(clock.now + 1),
        });
    }
    if let Some(w) = acc.window
        && !w.contains(clock.local_minute())
    {
        return Some(Blocked::Window {
            opens_at: clock.next_local(w.start),
        });
    }
    None
}

/// What a task wants from the pool for its next attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Want {
    /// The profile the task names (`agent:`), tried first when usable.
    pub pinned: Option<usize>,
    /// Roles any of which qualifies a profile (`role:`, or the pinned profile's roles).
    pub roles: Vec<String>,
    /// Profiles below this tier are out (the critic swap raised it).
    pub min_tier: u32,
    /// Soft: prefer anyone but this profile (it just stalled, crashed or kept failing).
    pub avoid_profile: Option<usize>,
    /// Soft, but before tier and priority: profiles that stalled, crashed, timed out, gave no
    /// result or kept failing on this task. Any other usable profile of the role is chosen
    /// first, so two bad profiles cannot take turns while a good one is never tried.
    pub failed_here: Vec<usize>,
    /// Soft: prefer another vendor (this one just rate-limited us).
    pub avoid_vendor: Option<String>,
}

/// The pool's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Run {
        profile: usize,
        why: String,
    },
    /// Nothing is usable now; something is at `until`.
    Wait {
        until: Millis,
        why: String,
    },
    /// Nothing will ever be usable (no profile plays the role at this tier, all disabled).
    Nothing {
        why: String,
    },
}

/// Profiles that qualify for `want` regardless of their accounts' state.
pub fn eligible(profiles: &[PoolProfile], want: &Want) -> Vec<usize> {
    (0..profiles.len())
        .filter(|&i| {
            let p = &profiles[i];
            let plays = Some(i) == want.pinned || p.roles.iter().any(|r| want.roles.contains(r));
            plays && p.tier >= want.min_tier
        })
        .collect()
}

/// Picks the profile for the next attempt: usable now, then the lowest tier at or above
/// `min_tier`, then the pinned one, then (softly) not the avoided profile or vendor, then
/// priority, then configuration order.
pub fn choose(
    profiles: &[PoolProfile],
    accounts: &[PoolAccount],
    states: &[AccountState],
    clock: &Clock,
    want: &Want,
) -> Choice {
    let candidates = eligible(profiles, want);
    if candidates.is_empty() {
        return Choice::Nothing {
            why: format!(
                "no profile plays {} at tier {} or above",
                if want.roles.is_empty() {
                    "the task".to_string()
                } else {
                    format!("role {}", want.roles.join("/"))
                },
                want.min_tier
            ),
        };
    }
    let block = |i: usize| {
        profiles[i]
            .account
            .and_then(|a| blocked(&accounts[a], &states[a], clock))
    };
    let mut usable: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| block(i).is_none())
        .collect();
    if usable.is_empty() {
        // Why each account is blocked, once per account.
        let mut reasons: Vec<String> = Vec::new();
        for &c in &candidates {
            if let (Some(a), Some(b)) = (profiles[c].account, block(c)) {
                let r = b.describe(&accounts[a].name);
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
        }
        let reasons = reasons.join("; ");
        let waits: Vec<(Millis, usize)> = candidates
            .iter()
            .filter_map(|&i| block(i).and_then(|b| b.until()).map(|u| (u, i)))
            .collect();
        return match waits.iter().min() {
            Some(&(until, i)) => {
                let acc = &accounts[profiles[i].account.expect("blocked implies an account")].name;
                Choice::Wait {
                    until,
                    why: format!(
                        "no usable profile: {reasons}; waiting for {} ({acc})",
                        profiles[i].name
                    ),
                }
            }
            None => Choice::Nothing {
                why: format!("every profile for the task is unusable for good: {reasons}"),
            },
        };
    }
    // A profile that already did badly on this task yields to any other usable one, even
    // on a higher tier: trying it again would most likely waste the attempt the same way.
    if usable.iter().any(|i| !want.failed_here.contains(i)) {
        usable.retain(|i| !want.failed_here.contains(i));
    }
    let lowest_tier = usable
        .iter()
        .map(|&i| profiles[i].tier)
        .min()
        .expect("non-empty");
    usable.retain(|&i| profiles[i].tier == lowest_tier);
    usable.sort_by_key(|&i| {
        let p = &profiles[i];
        (
            Some(i) == want.avoid_profile,
            want.avoid_vendor.as_deref() == Some(p.vendor.as_str()),
            Some(i) != want.pinned,
            std::cmp::Reverse(p.priority),
            i,
        )
    });
    let pick = usable[0];
    let p = &profiles[pick];
    let mut why = if Some(pick) == want.pinned {
        format!("{} is the task's agent and is usable", p.name)
    } else {
        format!(
            "{} is the best usable profile (tier {}, priority {})",
            p.name, p.tier, p.priority
        )
    };
    if let Some(v) = &want.avoid_vendor
        && *v != p.vendor
    {
        why.push_str(&format!(
            "; another vendor than {v}, which rate-limited the last attempt"
        ));
    }
    if let Some(a) = want.avoid_profile
        && a != pick
    {
        why.push_str(&format!("; swapped away from {}", profiles[a].name));
    }
    if want.failed_here.contains(&pick) {
        why.push_str("; it did badly on this task before, but no other usable profile is left");
    }
    Choice::Run { profile: pick, why }
}

/// How an agent attempt ended, as far as the pool cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Passed,
    /// The agent claimed success but the acceptance checks failed.
    ChecksFailed,
    /// The agent claimed success and changed nothing.
    NoChange,
    AgentError,
    RateLimited,
    QuotaExhausted,
    AuthFailed,
    Overloaded,
    Upstream,
    Stalled,
    TimedOut,
    Crashed,
    NoResult,
}

/// In plain words after a subject, for what a person reads ("claude-dev was rate-limited").
impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ending::Passed => "passed",
            Ending::ChecksFailed => "failed its checks",
            Ending::NoChange => "changed nothing",
            Ending::AgentError => "reported an error",
            Ending::RateLimited => "was rate-limited",
            Ending::QuotaExhausted => "ran out of quota",
            Ending::AuthFailed => "was refused its credentials",
            Ending::Overloaded => "found its vendor overloaded",
            Ending::Upstream => "met a vendor error",
            Ending::Stalled => "stalled",
            Ending::TimedOut => "timed out",
            Ending::Crashed => "crashed",
            Ending::NoResult => "gave no result",
        })
    }
}

impl Ending {
    /// The agent itself did badly (as opposed to its vendor or account): counts toward the
    /// critic swap.
    pub fn is_agent_failure(self) -> bool {
        matches!(
            self,
            Ending::ChecksFailed
                | Ending::NoChange
                | Ending::AgentError
                | Ending::Stalled
                | Ending::TimedOut
                | Ending::Crashed
                | Ending::NoResult
        )
    }

    /// The vendor or account failed, not the work: swap at once, no backoff for the task.
    pub fn is_vendor_failure(self) -> bool {
        matches!(
            self,
            Ending::RateLimited
                | Ending::QuotaExhausted
                | Ending::AuthFailed
                | Ending::Overloaded
                | Ending::Upstream
        )
    }
}

/// What an attempt's ending does to its account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEffect {
    Nothing,
    /// Clear the backoff: the account works.
    Healthy,
    Cooldown {
        until: Millis,
        backoff_level: u32,
        why: String,
    },
    Disable {
        reason: String,
        /// The fingerprint of the rejected secrets (see [`AccountState::rejected_secrets`]).
        rejected_secrets: Option<String>,
    },
    /// Usable again: clears a disablement, a cooldown and the backoff.
    Enable {
        why: String,
    },
}

/// Backoff for limits that came without a reset time: 30 s, 1 min, 2 min… capped at an hour.
pub fn limit_backoff(level: u32) -> Millis {
    (30_000u64 << level.min(20)).min(3_600_000)
}

/// What an attempt's ending does to its account. `secrets` is the fingerprint of the secret
/// values the attempt ran with: kept when they are rejected, so that a changed key is noticed.
pub fn account_effect(
    ending: Ending,
    resets_at: Option<Millis>,
    state: &AccountState,
    now: Millis,
    secrets: Option<&str>,
) -> AccountEffect {
    match ending {
        Ending::RateLimited | Ending::QuotaExhausted => match resets_at.filter(|t| *t > now) {
            Some(until) => AccountEffect::Cooldown {
                until,
                backoff_level: 0,
                why: "the vendor said when the limit resets".into(),
            },
            None => AccountEffect::Cooldown {
                until: now + limit_backoff(state.backoff_level),
                backoff_level: state.backoff_level + 1,
                why: format!(
                    "no reset time given; backing off {} s",
                    limit_backoff(state.backoff_level) / 1000
                ),
            },
        },
        Ending::Overloaded | Ending::Upstream => {
            let wait = (15_000u64 << state.backoff_level.min(20)).min(600_000);
            AccountEffect::Cooldown {
                until: resets_at.filter(|t| *t > now).unwrap_or(now + wait),
                backoff_level: state.backoff_level + 1,
                why: "the vendor is failing; backing off".into(),
            }
        }
        Ending::AuthFailed => AccountEffect::Disable {
            reason: "its credentials were rejected".into(),
            rejected_secrets: secrets.map(String::from),
        },
        Ending::Passed | Ending::ChecksFailed | Ending::NoChange => AccountEffect::Healthy,
        _ => AccountEffect::Nothing,
    }
}

/// Whether a disabled account is tried again by itself, given the fingerprint of its secret
/// values now: yes when its credentials were rejected and the secrets now set are not the ones
/// that were (someone fixed the key). The next attempt on it then probes the new key; another
/// rejection disables it again. The same secrets, none set, an unknown fingerprint or another
/// reason for the disablement: it stays disabled until a person enables it.
pub fn reprobe(state: &AccountState, secrets_now: Option<&str>) -> Option<AccountEffect> {
    state.disabled.as_ref()?;
    let rejected = state.rejected_secrets.as_deref()?;
    let now = secrets_now?;
    (now != rejected).then(|| AccountEffect::Enable {
        why: "its secrets changed since they were rejected; trying it again".into(),
    })
}

/// One earlier attempt of the task, as the pool sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PastAttempt {
    pub profile: usize,
    pub ending: Ending,
}

/// Limits of one task's fail-until-done loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_attempts: u32,
    /// Consecutive agent failures on one tier before escalating to the next.
    pub escalate_after: u32,
    pub budget_usd: Option<f64>,
    /// Wall-clock deadline for the whole task.
    pub deadline: Option<Millis>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attempts: 8,
            escalate_after: 2,
            budget_usd: None,
            deadline: None,
        }
    }
}

/// Decision after an attempt that did not pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try again with the pool asked for `want`, not before `not_before`.
    Retry { want: Want, why: String },
    /// Stop: the task fails with this reason.
    GiveUp { why: String },
}

/// Profiles that did badly on a task, in order of their first attempt: each one that stalled,
/// timed out, crashed or gave no result at least once, or failed (its checks, or otherwise)
/// `kept_failing` times. A single failed check is not enough: the next attempt usually fixes
/// it, in the same session.
pub fn failed_here(history: &[PastAttempt], kept_failing: u32) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for a in history {
        if out.contains(&a.profile) {
            continue;
        }
        let hung = matches!(
            a.ending,
            Ending::Stalled | Ending::TimedOut | Ending::Crashed | Ending::NoResult
        );
        let failures = history
            .iter()
            .filter(|b| b.profile == a.profile && b.ending.is_agent_failure())
            .count() as u32;
        if hung || failures >= kept_failing.max(1) {
            out.push(a.profile);
        }
    }
    out
}

/// What the task wants next, given its attempts so far: escalates a tier after
/// `escalate_after` consecutive agent failures on the current one (at the top tier it stays
/// there), avoids the profile that just stalled or crashed and every profile that did badly on
/// the task ([`failed_here`]), prefers another vendor after a limit, and gives up at the limits (attempts, budget, wall time).
pub fn next_attempt(
    profiles: &[PoolProfile],
    base: &Want,
    history: &[PastAttempt],
    limits: &Limits,
    spent_usd: f64,
    now: Millis,
) -> Next {
    if history.len() as u32 >= limits.max_attempts {
        return Next::GiveUp {
            why: format!(
                "{} attempts made, the limit is {}",
                history.len(),
                limits.max_attempts
            ),
        };
    }
    if let Some(b) = limits.budget_usd
        && spent_usd >= b
    {
        return Next::GiveUp {
            why: format!("the task spent ${spent_usd:.4} of its ${b:.4} budget"),
        };
    }
    if let Some(d) = limits.deadline
        && now >= d
    {
        return Next::GiveUp {
            why: "the task ran out of wall time".into(),
        };
    }
    let mut want = base.clone();
    let mut streak = 0u32;
    for a in history {
        if a.ending.is_agent_failure() {
            streak += 1;
        } else if a.ending == Ending::Passed {
            streak = 0;
        }
        if streak >= limits.escalate_after {
            let tier = profiles[a.profile].tier;
            let higher = eligible(
                profiles,
                &Want {
                    min_tier: tier + 1,
                    ..want.clone()
                },
            )
            .iter()
            .map(|&i| profiles[i].tier)
            .min();
            // At the top tier there is nothing stronger: the loop goes on there, bounded by
            // the task's attempts, budget and time.
            if let Some(t) = higher {
                want.min_tier = t;
            }
            streak = 0;
        }
    }
    want.failed_here = failed_here(history, limits.escalate_after);
    let last = history.last();
    let mut why = String::new();
    if let Some(l) = last {
        match l.ending {
            Ending::Stalled | Ending::TimedOut | Ending::Crashed | Ending::NoResult => {
                want.avoid_profile = Some(l.profile);
                why = format!(
                    "{} {}; swapping to the next profile",
                    profiles[l.profile].name, l.ending
                );
            }
            Ending::RateLimited
            | Ending::QuotaExhausted
            | Ending::AuthFailed
            | Ending::Overloaded
            | Ending::Upstream => {
                want.avoid_profile = Some(l.profile);
                want.avoid_vendor = Some(profiles[l.profile].vendor.clone());
                why = format!(
                    "{} {}; moving to another usable profile, preferably another vendor",
                    profiles[l.profile].name, l.ending
                );
            }
            _ => {
                why = format!("fixing: the last attempt {}", l.ending);
            }
        }
    }
    if want.min_tier > base.min_tier {
        why.push_str(&format!("; escalated to tier {}", want.min_tier));
    }
    Next::Retry { want, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;

    fn clock(hour: u64, minute: u64) -> Clock {
        // 2026-11-21 00:00 UTC = 1795219200000 ms
        Clock {
            now: 1_795_219_200_000 + hour * H + minute * MINUTE,
            utc_offset_secs: 0,
        }
    }

    fn profile(
        name: &str,
        vendor: &str,
        priority: i64,
        tier: u32,
        account: Option<usize>,
    ) -> PoolProfile {
        PoolProfile {
            name: name.into(),
            vendor: vendor.into(),
            roles: vec!["developer".into()],
            priority,
            tier,
            account,
        }
    }

    fn account(name: &str) -> PoolAccount {
        PoolAccount {
            name: name.into(),
            window: None,
            budget_usd: None,
            budget_tokens: None,
            day_starts: 0,
        }
    }

    fn dev() -> Want {
        Want {
            roles: vec!["developer".into()],
            ..Want::default()
        }
    }

    #[test]
    fn windows_cross_midnight() {
        let w = Window {
            start: 22 * 60,
            end: 6 * 60,
        };
        assert!(w.contains(23 * 60) && w.contains(0) && w.contains(5 * 60 + 59));
        assert!(!w.contains(6 * 60) && !w.contains(12 * 60) && !w.contains(21 * 60 + 59));
        let day = Window {
            start: 9 * 60,
            end: 17 * 60,
        };
        assert!(day.contains(9 * 60) && !day.contains(17 * 60));
        let mut acc = account("bob");
        acc.window = Some(Window {
            start: 0,
            end: 8 * 60,
        });
        let st = AccountState::default();
        assert_eq!(blocked(&acc, &st, &clock(7, 59)), None);
        match blocked(&acc, &st, &clock(8, 0)) {
            Some(Blocked::Window { opens_at }) => assert_eq!(opens_at, clock(24, 0).now),
            other => panic!("{other:?}"),
        }
        // Local time, not UTC: at 23:30 UTC it is 00:30 in UTC+1, inside the window.
        let c = Clock {
            utc_offset_secs: 3600,
            ..clock(23, 30)
        };
        assert_eq!(blocked(&acc, &st, &c), None);
    }

    #[test]
    fn cooldown_expires_exactly() {
        let acc = account("a");
        let st = AccountState {
            cooldown_until: Some(clock(10, 5).now),
            ..AccountState::default()
        };
        assert!(matches!(
            blocked(&acc, &st, &clock(10, 4)),
            Some(Blocked::Cooldown { .. })
        ));
        assert_eq!(blocked(&acc, &st, &clock(10, 5)), None);
    }

    #[test]
    fn budget_edges() {
        let mut acc = account("a");
        acc.budget_usd = Some(10.0);
        let under = AccountState {
            spent_usd: 9.999,
            ..AccountState::default()
        };
        let at = AccountState {
            spent_usd: 10.0,
            ..AccountState::default()
        };
        assert_eq!(blocked(&acc, &under, &clock(12, 0)), None);
        match blocked(&acc, &at, &clock(12, 0)) {
            Some(Blocked::Budget { resets_at }) => assert_eq!(resets_at, clock(24, 0).now),
            other => panic!("{other:?}"),
        }
        acc.budget_usd = None;
        acc.budget_tokens = Some(1000);
        assert!(
            blocked(
                &acc,
                &AccountState {
                    spent_tokens: 1000,
                    ..AccountState::default()
                },
                &clock(1, 0)
            )
            .is_some()
        );
        assert!(
            blocked(
                &acc,
                &AccountState {
                    spent_tokens: 999,
                    ..AccountState::default()
                },
                &clock(1, 0)
            )
            .is_none()
        );
        acc.day_starts = 6 * 60;
        assert_eq!(day_start(&clock(5, 0), 6 * 60), clock(6, 0).now - DAY);
        assert_eq!(day_start(&clock(6, 0), 6 * 60), clock(6, 0).now);
        assert_eq!(day_start(&clock(7, 0), 6 * 60), clock(6, 0).now);
    }

    #[test]
    fn selection_prefers_pinned_then_priority_and_waits_for_the_earliest() {
        let profiles = vec![
            profile("codex", "openai", 5, 0, Some(1)),
            profile("claude", "anthropic", 10, 0, Some(0)),
            profile("gemini", "google", 1, 0, None),
        ];
        let accounts = vec![account("anthropic"), account("openai")];
        let mut states = vec![AccountState::default(), AccountState::default()];
        let c = clock(12, 0);
        assert!(matches!(
            choose(&profiles, &accounts, &states, &c, &dev()),
            Choice::Run { profile: 1, .. }
        ));
        let pinned = Want {
            pinned: Some(0),
            ..dev()
        };
        assert!(matches!(
            choose(&profiles, &accounts, &states, &c, &pinned),
            Choice::Run { profile: 0, .. }
        ));
        // Rate-limited on anthropic: another vendor first even though claude has priority.
        let avoid = Want {
            avoid_vendor: Some("anthropic".into()),
            avoid_profile: Some(1),
            ..dev()
        };
        assert!(matches!(
            choose(&profiles, &accounts, &states, &c, &avoid),
            Choice::Run { profile: 0, .. }
        ));
        // Everything with an account blocked, and gemini (no account) excluded by role.
        let mut only_accounts = profiles.clone();
        only_accounts[2].roles.clear();
        states[0].cooldown_until = Some(c.now + 5000);
        states[1].cooldown_until = Some(c.now + 2000);
        match choose(&only_accounts, &accounts, &states, &c, &dev()) {
            Choice::Wait { until, .. } => {
                assert_eq!(until, c.now + 2000, "the earliest usable moment")
            }
            other => panic!("{other:?}"),
        }
        states[0].disabled = Some("bad key".into());
        states[1].disabled = Some("bad key".into());
        assert!(matches!(
            choose(&only_accounts, &accounts, &states, &c, &dev()),
            Choice::Nothing { .. }
        ));
    }

    #[test]
    fn critic_escalates_tier_by_tier_then_stays_on_top_until_the_limit() {
        let profiles = vec![
            profile("cheap", "openai", 5, 0, None),
            profile("cheap2", "google", 4, 0, None),
            profile("strong", "anthropic", 1, 1, None),
            profile("strongest", "anthropic", 1, 2, None),
        ];
        let limits = Limits {
            max_attempts: 20,
            escalate_after: 2,
            ..Limits::default()
        };
        let f = |p, e| PastAttempt {
            profile: p,
            ending: e,
        };
        let want_after =
            |h: &[PastAttempt]| match next_attempt(&profiles, &dev(), h, &limits, 0.0, 0) {
                Next::Retry { want, .. } => want,
                Next::GiveUp { why } => panic!("gave up: {why}"),
            };
        assert_eq!(want_after(&[f(0, Ending::ChecksFailed)]).min_tier, 0);
        assert_eq!(
            want_after(&[f(0, Ending::ChecksFailed), f(0, Ending::ChecksFailed)]).min_tier,
            1
        );
        // Vendor failures do not count toward the critic.
        let w = want_after(&[
            f(0, Ending::ChecksFailed),
            f(0, Ending::RateLimited),
            f(1, Ending::ChecksFailed),
        ]);
        assert_eq!(w.min_tier, 1);
        let w = want_after(&[f(0, Ending::ChecksFailed), f(0, Ending::RateLimited)]);
        assert_eq!((w.min_tier, w.avoid_vendor.as_deref()), (0, Some("openai")));
        let h = [
            f(0, Ending::ChecksFailed),
            f(0, Ending::ChecksFailed),
            f(2, Ending::AgentError),
            f(2, Ending::NoChange),
        ];
        assert_eq!(want_after(&h).min_tier, 2);
        // At the top tier it keeps trying there, until the attempt limit.
        let mut h = h.to_vec();
        h.extend([f(3, Ending::ChecksFailed), f(3, Ending::Stalled)]);
        assert_eq!(want_after(&h).min_tier, 2);
        let tight = Limits {
            max_attempts: h.len() as u32,
            ..limits
        };
        match next_attempt(&profiles, &dev(), &h, &tight, 0.0, 0) {
            Next::GiveUp { why } => assert!(why.contains("6 attempts made"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A stalled profile is avoided next time.
        assert_eq!(want_after(&[f(0, Ending::Stalled)]).avoid_profile, Some(0));
    }

    #[test]
    fn limits_of_the_loop() {
        let profiles = vec![profile("p", "x", 0, 0, None)];
        let f = PastAttempt {
            profile: 0,
            ending: Ending::RateLimited,
        };
        let limits = Limits {
            max_attempts: 3,
            escalate_after: 100,
            budget_usd: Some(1.0),
            deadline: Some(1000),
        };
        assert!(matches!(
            next_attempt(
                &profiles,
                &dev(),
                &[f.clone(), f.clone(), f.clone()],
                &limits,
                0.0,
                0
            ),
            Next::GiveUp { .. }
        ));
        assert!(matches!(
            next_attempt(&profiles, &dev(), std::slice::from_ref(&f), &limits, 1.0, 0),
            Next::GiveUp { .. }
        ));
        assert!(matches!(
            next_attempt(
                &profiles,
                &dev(),
                std::slice::from_ref(&f),
                &limits,
                0.5,
                1000
            ),
            Next::GiveUp { .. }
        ));
        assert!(matches!(
            next_attempt(&profiles, &dev(), &[f], &limits, 0.5, 999),
            Next::Retry { .. }
        ));
    }

    #[test]
    fn account_effects() {
        let st = AccountState {
            backoff_level: 2,
            ..AccountState::default()
        };
        match account_effect(Ending::RateLimited, Some(5000), &st, 1000, None) {
            AccountEffect::Cooldown {
                until,
                backoff_level,
                ..
            } => assert_eq!((until, backoff_level), (5000, 0)),
            other => panic!("{other:?}"),
        }
        match account_effect(Ending::RateLimited, None, &st, 1000, None) {
            AccountEffect::Cooldown {
                until,
                backoff_level,
                ..
            } => assert_eq!((until, backoff_level), (1000 + 120_000, 3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(limit_backoff(40), 3_600_000);
        match account_effect(Ending::AuthFailed, None, &st, 0, Some("fp-1")) {
            AccountEffect::Disable {
                rejected_secrets, ..
            } => assert_eq!(rejected_secrets.as_deref(), Some("fp-1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            account_effect(Ending::Passed, None, &st, 0, None),
            AccountEffect::Healthy
        );
        assert_eq!(
            account_effect(Ending::Stalled, None, &st, 0, None),
            AccountEffect::Nothing
        );
    }

    #[test]
    fn a_rejected_account_is_reprobed_only_when_its_secrets_changed() {
        let rejected = AccountState {
            disabled: Some("its credentials were rejected".into()),
            rejected_secrets: Some("fp-old".into()),
            ..AccountState::default()
        };
        assert!(matches!(
            reprobe(&rejected, Some("fp-new")),
            Some(AccountEffect::Enable { .. })
        ));
        // The same key, no key at all, or no fingerprint kept: a person has to enable it.
        assert_eq!(reprobe(&rejected, Some("fp-old")), None);
        assert_eq!(reprobe(&rejected, None), None);
        let unknown = AccountState {
            rejected_secrets: None,
            ..rejected.clone()
        };
        assert_eq!(reprobe(&unknown, Some("fp-new")), None);
        // Not disabled: nothing to do.
        assert_eq!(reprobe(&AccountState::default(), Some("fp-new")), None);
    }

    #[test]
    fn two_stalling_profiles_do_not_take_turns_while_a_good_one_is_untried() {
        let profiles = vec![
            profile("hang-a", "x", 10, 0, None),
            profile("hang-b", "y", 9, 0, None),
            profile("good", "z", 1, 0, None),
        ];
        let limits = Limits::default();
        let mut history = Vec::new();
        let mut picked = Vec::new();
        for _ in 0..3 {
            let want = match next_attempt(&profiles, &dev(), &history, &limits, 0.0, 0) {
                Next::Retry { want, .. } => want,
                other => panic!("{other:?}"),
            };
            let Choice::Run { profile, .. } = choose(&profiles, &[], &[], &clock(12, 0), &want)
            else {
                panic!("nothing chosen")
            };
            picked.push(profile);
            history.push(PastAttempt {
                profile,
                ending: Ending::Stalled,
            });
        }
        assert_eq!(picked, vec![0, 1, 2]);
        // Failing the checks once keeps the profile (its session goes on); twice, it yields.
        let f = |p, e| PastAttempt {
            profile: p,
            ending: e,
        };
        assert!(failed_here(&[f(0, Ending::ChecksFailed)], 2).is_empty());
        assert_eq!(
            failed_here(
                &[
                    f(0, Ending::ChecksFailed),
                    f(1, Ending::RateLimited),
                    f(0, Ending::NoChange)
                ],
                2
            ),
            vec![0]
        );
    }
}
