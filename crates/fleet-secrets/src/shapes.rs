//! What well-known credentials look like: the rule set behind redaction of values Fleet was
//! never told about and the scan of every change before it is committed.
//!
//! The shapes follow the vendors' documented token formats (the same ones secret scanners
//! such as gitleaks match); each is anchored on a vendor prefix so ordinary text does not
//! match.

use regex::Regex;
use std::sync::OnceLock;

/// One kind of credential and the pattern of its values.
struct Shape {
    name: &'static str,
    pattern: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "Anthropic API key",
        pattern: r"sk-ant-[A-Za-z0-9_\-]{20,}",
    },
    Shape {
        name: "OpenAI API key",
        pattern: r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
    },
    Shape {
        name: "GitHub token",
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
    },
    Shape {
        name: "GitLab token",
        pattern: r"\bglpat-[A-Za-z0-9_\-]{20,}",
    },
    Shape {
        name: "Slack token",
        pattern: r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    },
    Shape {
        name: "Slack webhook",
        pattern: r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+",
    },
    Shape {
        name: "AWS access key",
        pattern: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    },
    Shape {
        name: "Google API key",
        pattern: r"\bAIza[0-9A-Za-z_\-]{35}",
    },
    Shape {
        name: "Telegram bot token",
        pattern: r"\b[0-9]{8,10}:[A-Za-z0-9_\-]{35}\b",
    },
    Shape {
        name: "Stripe key",
        pattern: r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,}",
    },
    Shape {
        name: "Hugging Face token",
        pattern: r"\bhf_[A-Za-z0-9]{30,}",
    },
    Shape {
        name: "Fleet API token",
        pattern: r"\bfleet_[0-9a-f]{64}\b",
    },
    Shape {
        name: "private key",
        pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    },
];

struct Compiled {
    /// All shapes in one automaton: most text matches none, and one pass says so.
    any: Regex,
    each: Vec<(&'static str, Regex)>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let any = SHAPES
            .iter()
            .map(|s| format!("(?:{})", s.pattern))
            .collect::<Vec<_>>()
            .join("|");
        Compiled {
            any: Regex::new(&any).expect("the shapes are valid patterns"),
            each: SHAPES
                .iter()
                .map(|s| (s.name, Regex::new(s.pattern).expect("a valid pattern")))
                .collect(),
        }
    })
}

/// The kind of credential `text` contains, if any (the first shape that matches).
pub fn token_shape(text: &str) -> Option<&'static str> {
    let c = compiled();
    if !c.any.is_match(text) {
        return None;
    }
    c.each
        .iter()
        .find(|(_, re)| re.is_match(text))
        .map(|(name, _)| *name)
}

/// `text` with every credential-shaped part replaced by `[redacted <kind>]`; `None` when it
/// holds none (the common case costs one pass).
pub(crate) fn replace_shapes(text: &str) -> Option<String> {
    let c = compiled();
    if !c.any.is_match(text) {
        return None;
    }
    let mut out = text.to_string();
    for (name, re) in &c.each {
        if re.is_match(&out) {
            out = re
                .replace_all(&out, format!("[redacted {name}]").as_str())
                .into_owned();
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vendor_shape_is_recognised_and_prose_is_not() {
        let cases = [
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
                "Anthropic API key",
            ),
            ("sk-proj-abcdefghijklmnopqrstuvwxyz0123", "OpenAI API key"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GitHub token"),
            ("github_pat_11ABCDEFG0123456789_abcdefghij", "GitHub token"),
            ("glpat-abcdefghijklmnopqrst", "GitLab token"),
            ("xoxb-1234567890-abcdefghij", "Slack token"),
            ("AKIAIOSFODNN7EXAMPLE", "AWS access key"),
            (
                "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
                "Telegram bot token",
            ),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
            (
                "fleet_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "Fleet API token",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(token_shape(&format!("x = {text}\n")), Some(want), "{text}");
        }
        for prose in [
            "the task-runner sk-learn module",
            "fix the skip-list for the cache",
            "commit 0123456789abcdef0123456789abcdef01234567",
            "at 12:30:45 the build finished",
            "ghp_short",
        ] {
            assert_eq!(token_shape(prose), None, "{prose}");
        }
    }

    #[test]
    fn replacing_names_the_kind_and_keeps_the_rest() {
        let out = replace_shapes("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 done").unwrap();
        assert_eq!(out, "token [redacted GitHub token] done");
        assert_eq!(replace_shapes("nothing here"), None);
    }
}
