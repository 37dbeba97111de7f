//! Secrets: which values are secret, what a credential looks like, and the one redactor every
//! sink of Fleet's (logs, events, the store, prompts, transcripts, the API, notifications,
//! pull request bodies) passes its text through.
//!
//! A secret reaches Fleet only as the value of an environment variable: configuration names
//! the variables (`accounts.*.secrets`, `token_env`, …), never holds the values. The
//! [`Redactor`] therefore knows every configured secret's value (read once from Fleet's own
//! environment), every variable whose name says it holds one (`*_TOKEN`, `*_API_KEY`, …),
//! and the shapes of well-known credentials ([`token_shape`]) for values it was never told
//! about. The same knowledge decides what a child process may see of Fleet's environment
//! (`env`: the allow-lists that keep Fleet's keys from agents and checks).
//!
//! Must not know: where text goes, files, how processes are started, configuration syntax.

pub mod env;
mod shapes;

pub use shapes::token_shape;

use std::borrow::Cow;

/// Values shorter than this are not treated as secrets: redacting them would rewrite
/// ordinary words, and real credentials are far longer.
pub const MIN_SECRET_LEN: usize = 8;

/// Replaces secret values and credential-shaped text with `[redacted NAME]`.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (name, value), longest value first so that a secret containing another is replaced
    /// whole.
    values: Vec<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    // Never the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether an environment variable's name says it holds a secret: one of its `_`-separated
/// words is TOKEN, SECRET, PASSWORD, KEY, … (`GITHUB_TOKEN`, `ANTHROPIC_API_KEY`,
/// `SMTP_PASSWORD`; not `KEYBOARD_LAYOUT` or `SSH_AUTH_SOCK`, whose value is a path).
pub fn looks_like_secret_name(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "TOKEN",
        "TOKENS",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "KEY",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "PAT",
        "WEBHOOK",
        "AUTH",
        "COOKIE",
    ];
    const NOT: &[&str] = &["SSH_AUTH_SOCK", "GPG_AGENT_INFO", "XDG_SESSION_ID"];
    let upper = name.to_ascii_uppercase();
    !NOT.contains(&upper.as_str())
        && upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| WORDS.contains(&w))
}

impl Redactor {
    /// A redactor for exactly these (name, value) pairs, plus the credential shapes.
    pub fn new(named: impl IntoIterator<Item = (String, String)>) -> Redactor {
        let mut r = Redactor::default();
        r.add(named);
        r
    }

    /// Fleet's redactor: the values of `configured` names (a configuration's secrets) and of
    /// every variable in `env` whose name says it is secret.
    pub fn from_env(
        configured: &[String],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Redactor {
        Redactor::new(
            env.into_iter()
                .filter(|(k, _)| configured.contains(k) || looks_like_secret_name(k)),
        )
    }

    /// Fleet's redactor from its own process environment (see [`Redactor::from_env`]).
    pub fn from_process_env(configured: &[String]) -> Redactor {
        Redactor::from_env(configured, std::env::vars())
    }

    /// Adds more secrets (e.g. a profile's, resolved later).
    pub fn add(&mut self, named: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in named {
            let value = value.trim().to_string();
            if value.len() >= MIN_SECRET_LEN && !self.values.iter().any(|(_, v)| *v == value) {
                self.values.push((name, value));
            }
        }
        self.values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    }

    /// The names of the secrets it knows (never their values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|(n, _)| n.as_str())
    }

    /// Whether it knows no value (it still redacts credential shapes).
    pub fn knows_no_value(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` without secrets, copied only when something was redacted.
    pub fn clean<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (name, value) in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), &format!("[redacted {name}]")));
            }
        }
        match shapes::replace_shapes(&out) {
            Some(replaced) => Cow::Owned(replaced),
            None => out,
        }
    }

    /// Like [`Redactor::clean`], always returning an owned string.
    pub fn clean_string(&self, text: String) -> String {
        match self.clean(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// Redacts every string (keys included) inside a JSON value, in place.
    pub fn clean_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(c) = self.clean(s) {
                    *s = c;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.clean_json(v)),
            Value::Object(map) => {
                let dirty: Vec<String> = map
                    .keys()
                    .filter(|k| matches!(self.clean(k), Cow::Owned(_)))
                    .cloned()
                    .collect();
                for k in dirty {
                    if let Some(v) = map.remove(&k) {
                        map.insert(self.clean(&k).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.clean_json(v));
            }
            _ => {}
        }
    }

    /// Where `text` holds a secret: one finding per line and kind, naming the secret (its
    /// variable or its kind), never its value. Lines count from 1.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        for (i, line) in text.lines().enumerate() {
            for (name, value) in &self.values {
                if line.contains(value.as_str()) {
                    found.push(Finding {
                        line: i + 1,
                        what: format!("the value of {name}"),
                    });
                }
            }
            if let Some(kind) = token_shape(line) {
                found.push(Finding {
                    line: i + 1,
                    what: format!("a {kind}"),
                });
            }
        }
        found
    }
}

/// A secret found by [`Redactor::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    /// "the value of GITHUB_TOKEN", "a GitHub token".
    pub what: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn values_are_replaced_longest_first_and_short_ones_are_ignored() {
        let r = Redactor::new(pairs(&[
            ("KEY", "abcdefgh12"),
            ("LONG", "abcdefgh12345"),
            ("SHORT", "abc"),
        ]));
        assert_eq!(
            r.clean("a abcdefgh12345 b abcdefgh12 c abc"),
            "a [redacted LONG] b [redacted KEY] c abc"
        );
        assert!(matches!(r.clean("nothing"), Cow::Borrowed(_)));
        assert_eq!(r.names().collect::<Vec<_>>(), ["LONG", "KEY"]);
        assert!(!format!("{r:?}").contains("abcdefgh"));
    }

    #[test]
    fn the_environment_gives_configured_and_secret_looking_names() {
        let env = pairs(&[
            ("MY_ACCOUNT", "value-of-my-account"),
            ("GITHUB_TOKEN", "ghtokenvalue123"),
            ("SMTP_PASSWORD", "hunter2hunter2"),
            ("HOME", "/home/someone/else"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock"),
        ]);
        let r = Redactor::from_env(&["MY_ACCOUNT".to_string()], env);
        let mut names: Vec<_> = r.names().collect();
        names.sort();
        assert_eq!(names, ["GITHUB_TOKEN", "MY_ACCOUNT", "SMTP_PASSWORD"]);
    }

    #[test]
    fn json_strings_and_keys_are_cleaned_in_place() {
        let r = Redactor::new(pairs(&[("T", "s3cr3t-value")]));
        let mut v = serde_json::json!({"a": ["x s3cr3t-value y"], "s3cr3t-value": 1, "n": 2});
        r.clean_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(text.contains("[redacted T]"));
    }

    #[test]
    fn scan_names_the_line_and_the_secret_but_never_the_value() {
        let r = Redactor::new(pairs(&[("BOT_TOKEN", "planted-canary-1234")]));
        let found =
            r.scan("ok\nkey = planted-canary-1234\nghp_abcdefghijklmnopqrstuvwxyz0123456789\n");
        assert_eq!(
            found,
            [
                Finding {
                    line: 2,
                    what: "the value of BOT_TOKEN".into()
                },
                Finding {
                    line: 3,
                    what: "a GitHub token".into()
                }
            ]
        );
    }
}
