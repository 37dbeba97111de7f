//! Prices for CLIs that report no cost (codex, gemini, qwen, cursor, amp…): cost is computed
//! from the token counts. USD per million tokens; a profile may override them in `fleet.yaml`.

use crate::Usage;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// Known list prices by model-name prefix (longest prefix wins).
const TABLE: &[(&str, Price)] = &[
    (
        "gpt-5.1-codex-mini",
        Price {
            input: 0.25,
            output: 2.0,
            cache_read: 0.025,
            cache_write: 0.0,
        },
    ),
    (
        "gpt-5.1-codex",
        Price {
            input: 1.25,
            output: 10.0,
            cache_read: 0.125,
            cache_write: 0.0,
        },
    ),
    (
        "gpt-5",
        Price {
            input: 1.25,
            output: 10.0,
            cache_read: 0.125,
            cache_write: 0.0,
        },
    ),
    (
        "gpt-4.1",
        Price {
            input: 2.0,
            output: 8.0,
            cache_read: 0.5,
            cache_write: 0.0,
        },
    ),
    (
        "claude-opus",
        Price {
            input: 5.0,
            output: 25.0,
            cache_read: 0.5,
            cache_write: 6.25,
        },
    ),
    (
        "claude-sonnet",
        Price {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        },
    ),
    (
        "claude-haiku",
        Price {
            input: 1.0,
            output: 5.0,
            cache_read: 0.1,
            cache_write: 1.25,
        },
    ),
    (
        "gemini-2.5-pro",
        Price {
            input: 1.25,
            output: 10.0,
            cache_read: 0.31,
            cache_write: 0.0,
        },
    ),
    (
        "gemini-2.5-flash",
        Price {
            input: 0.3,
            output: 2.5,
            cache_read: 0.075,
            cache_write: 0.0,
        },
    ),
    (
        "qwen3-coder",
        Price {
            input: 1.0,
            output: 5.0,
            cache_read: 0.1,
            cache_write: 0.0,
        },
    ),
];

pub fn lookup(model: &str) -> Option<Price> {
    let model = model.rsplit('/').next().unwrap_or(model);
    TABLE
        .iter()
        .filter(|(prefix, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, p)| *p)
}

pub fn cost(price: &Price, u: &Usage) -> f64 {
    (u.input_tokens as f64 * price.input
        + u.output_tokens as f64 * price.output
        + u.cache_read_tokens as f64 * price.cache_read
        + u.cache_write_tokens as f64 * price.cache_write)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_provider_prefixes_are_ignored() {
        assert_eq!(lookup("gpt-5.1-codex-mini").unwrap().input, 0.25);
        assert_eq!(lookup("openai/gpt-5.1-codex").unwrap().input, 1.25);
        assert!(lookup("mock-model").is_none());
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            ..Usage::default()
        };
        assert!((cost(&lookup("claude-sonnet-4-5").unwrap(), &u) - 4.5).abs() < 1e-9);
    }
}
