//! The normalized vocabulary every parser speaks.

use serde::{Deserialize, Serialize};

/// Token counts of one report. Parsers emit per-turn usage; totals are sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Takes what is left of `base` out of `self` (never below zero) and shrinks `base` by as
    /// much: for a CLI whose reports after a resume include the session's earlier runs.
    pub fn take_out(&mut self, base: &mut Usage) {
        fn take(v: &mut u64, b: &mut u64) {
            let d = (*v).min(*b);
            *v -= d;
            *b -= d;
        }
        take(&mut self.input_tokens, &mut base.input_tokens);
        take(&mut self.output_tokens, &mut base.output_tokens);
        take(&mut self.cache_read_tokens, &mut base.cache_read_tokens);
        take(&mut self.cache_write_tokens, &mut base.cache_write_tokens);
    }

    pub fn add(&mut self, other: &Usage) {
        // Saturating: a CLI reporting absurd counts must not crash the supervisor.
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
    }

    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

/// What kind of error an agent reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    RateLimited,
    QuotaExhausted,
    AuthFailed,
    Overloaded,
    Upstream,
    /// The request was bad, a tool failed fatally, the turn limit hit…
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// What the agent said (a whole text block, not a delta).
    Message {
        text: String,
    },
    ToolCall {
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        name: Option<String>,
        ok: bool,
        output: String,
    },
    Usage(Usage),
    /// Cost reported by the CLI for the turn it covers.
    Cost {
        usd: f64,
    },
    Session {
        id: String,
    },
    /// The vendor said we are rate limited; `resets_at` is a Unix time in seconds.
    RateLimit {
        resets_at: Option<i64>,
        detail: String,
    },
    /// The CLI is retrying an upstream error on its own.
    Retrying {
        attempt: u32,
        class: ErrorClass,
        detail: String,
    },
    Error {
        class: ErrorClass,
        message: String,
    },
    /// Fleet enforced one of its policies on the agent (`denied`: a permission request was
    /// refused; `failed`/`reverted`: an `after_edit` command failed, the edit was undone).
    Policy {
        kind: String,
        rule: String,
        detail: String,
    },
}

impl AgentEvent {
    /// One line for a task log: what the agent said, which tool it called.
    pub fn readable(&self) -> String {
        /// At most `n` characters, on one line.
        fn clip(s: &str, n: usize) -> String {
            let mut out = String::with_capacity(s.len().min(n + 4));
            for (i, c) in s.trim().chars().enumerate() {
                if i == n {
                    out.push('…');
                    break;
                }
                out.push(if c == '\n' || c == '\r' || c == '\t' {
                    ' '
                } else {
                    c
                });
            }
            out
        }
        match self {
            AgentEvent::Message { text } => format!("agent: {}", clip(text, 400)),
            AgentEvent::ToolCall { name, input } => {
                format!("tool {name} {}", clip(&input.to_string(), 200))
            }
            AgentEvent::ToolResult { name, ok, output } => format!(
                "tool result{}{}: {}",
                name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
                if *ok { "" } else { " (error)" },
                clip(output, 200)
            ),
            AgentEvent::Usage(u) => format!(
                "usage: {} in, {} out, {} cache read, {} cache write",
                u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens
            ),
            AgentEvent::Cost { usd } => format!("cost: ${usd:.6}"),
            AgentEvent::Session { id } => format!("session {id}"),
            AgentEvent::RateLimit { resets_at, detail } => format!(
                "rate limited{}: {}",
                resets_at.map(|t| format!(" until {t}")).unwrap_or_default(),
                clip(detail, 200)
            ),
            AgentEvent::Retrying {
                attempt,
                class,
                detail,
            } => {
                format!("cli retrying ({attempt}, {class:?}): {}", clip(detail, 200))
            }
            AgentEvent::Error { class, message } => {
                format!("error ({class:?}): {}", clip(message, 400))
            }
            AgentEvent::Policy { kind, rule, detail } => {
                format!("policy {rule} {kind}: {}", clip(detail, 400))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn take_out_removes_the_base_once_and_never_goes_below_zero() {
        let u = |i, o, r, w| Usage {
            input_tokens: i,
            output_tokens: o,
            cache_read_tokens: r,
            cache_write_tokens: w,
        };
        let mut base = u(100, 10, 5, 0);
        let mut first = u(150, 4, 5, 7);
        first.take_out(&mut base);
        assert_eq!(first, u(50, 0, 0, 7));
        assert_eq!(base, u(0, 6, 0, 0));
        let mut second = u(30, 20, 1, 1);
        second.take_out(&mut base);
        assert_eq!(second, u(30, 14, 1, 1));
        assert_eq!(base, Usage::default());
    }
}
