//! Retry policy: how many failed attempts a task may have, and how long to wait between them.

use serde::{Deserialize, Serialize};

/// Exponential backoff: `base * factor^(n-1)`, capped at `max_ms`, after the n-th failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Extra attempts after the first one fails (`retries: 2` = up to 3 attempts).
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_factor: u32,
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            backoff_base_ms: 1_000,
            backoff_factor: 2,
            backoff_max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// After `failures` failed attempts: `Some(delay_ms)` before the next one, or `None` to give up.
    pub fn next_delay(&self, failures: u32) -> Option<u64> {
        if failures == 0 {
            return Some(0);
        }
        if failures > self.retries {
            return None;
        }
        let exp = failures.saturating_sub(1).min(63);
        let mult = (self.backoff_factor.max(1) as u64).saturating_pow(exp);
        Some(
            self.backoff_base_ms
                .saturating_mul(mult)
                .min(self.backoff_max_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_and_gives_up() {
        let p = RetryPolicy {
            retries: 4,
            backoff_base_ms: 100,
            backoff_factor: 2,
            backoff_max_ms: 500,
        };
        let delays: Vec<Option<u64>> = (1..=5).map(|f| p.next_delay(f)).collect();
        assert_eq!(delays, [Some(100), Some(200), Some(400), Some(500), None]);
    }

    #[test]
    fn zero_retries_gives_up_at_first_failure() {
        assert_eq!(RetryPolicy::default().next_delay(1), None);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let p = RetryPolicy {
            retries: u32::MAX,
            backoff_base_ms: u64::MAX / 2,
            backoff_factor: 10,
            backoff_max_ms: u64::MAX,
        };
        assert_eq!(p.next_delay(1000), Some(u64::MAX));
    }
}
