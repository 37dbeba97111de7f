//! Hard limits of money and time per epic (a project's `budget_usd`, `budget_tokens` and
//! `max_time` in `fleet.yaml`): reaching one ends the epic as `failed` with the reason, the only
//! way to `failed` besides a person cancelling. Plain data in, a reason out: the pipeline sums
//! what the epic's agents spent and how long its stages worked.

use serde::{Deserialize, Serialize};

/// The hard limits of one epic; `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpicBudget {
    pub max_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    /// Working time: the sum of its stages' durations (waiting for a person is not counted).
    pub max_time_ms: Option<u64>,
}

/// What an epic used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub usd: f64,
    /// Input, output and cache tokens of every attempt.
    pub tokens: u64,
    pub time_ms: u64,
}

/// Why the epic must stop (a limit reached: spent >= limit), or `None`. The reason names the
/// limit, what was spent and where it is configured.
pub fn over_limit(spent: &Spent, budget: &EpicBudget) -> Option<String> {
    if let Some(max) = budget.max_usd
        && spent.usd >= max
    {
        return Some(format!(
            "the budget per epic is spent: ${:.4} used of ${max:.4} (`budget_usd` of the project \
             in fleet.yaml)",
            spent.usd
        ));
    }
    if let Some(max) = budget.max_tokens
        && spent.tokens >= max
    {
        return Some(format!(
            "the token budget per epic is spent: {} tokens used of {max} (`budget_tokens` of \
             the project in fleet.yaml)",
            spent.tokens
        ));
    }
    if let Some(max) = budget.max_time_ms
        && spent.time_ms >= max
    {
        return Some(format!(
            "the time per epic is spent: worked {}s of {}s (`max_time` of the project in \
             fleet.yaml)",
            spent.time_ms / 1000,
            max / 1000
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_never_stops() {
        let spent = Spent {
            usd: 1e9,
            tokens: u64::MAX,
            time_ms: u64::MAX,
        };
        assert_eq!(over_limit(&spent, &EpicBudget::default()), None);
    }
}
