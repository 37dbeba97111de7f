//! IMR (Intent-Motivation-Role) routing: which role(s) implement a person's request.
//!
//! ```yaml
//! routing:
//!   rules:
//!     - intent: db_issue
//!       match: ["database", "slow query", "sql", "migration*"]
//!       roles: [db]
//!   classifier: claude-planner      # optional: the profile asked when no rule matches
//!   default_roles: [developer]
//! ```
//!
//! The first rule (in the order written) with a phrase in the request wins. Phrases match
//! case-insensitively, on word boundaries — `sql` does not match `sqlite`, `bot` does not
//! match `robot` — with runs of whitespace counting as one space; a trailing `*` matches any
//! ending (`migration*` matches `migrations`). Without `routing:` in fleet.yaml (or without
//! `rules:` in it) the built-in rules of `defaults/routing.yaml` apply.

use crate::decode::Decoder;
use crate::instance::string_list_spanned;
use crate::knowledge::Library;
use crate::yaml::{self, Node, ScalarKind, Value};
use crate::{ConfigError, Location};
use std::path::{Path, PathBuf};

const BUILTIN_ROUTING: &str = include_str!("../defaults/routing.yaml");
const BUILTIN_PATH: &str = "(built-in)/routing.yaml";

pub(crate) const ROUTING_KEYS: &[&str] = &["rules", "classifier", "default_roles"];
pub(crate) const RULE_KEYS: &[&str] = &["intent", "match", "roles"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// In the order written: the first match wins.
    pub rules: Vec<Rule>,
    /// The agent profile (or bare CLI name) asked to classify a request no rule matches.
    pub classifier: Option<String>,
    /// Who implements a request no rule (and no classifier) routes.
    pub default_roles: Vec<String>,
    /// Where the routing was written (fleet.yaml, or `(built-in)/routing.yaml`).
    pub file: PathBuf,
    default_roles_at: Vec<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A name, valid as an id (`db_issue`).
    pub intent: String,
    /// Lowercase phrases; a trailing `*` matches any ending.
    pub phrases: Vec<String>,
    /// The roles that implement the work, never empty.
    pub roles: Vec<String>,
    /// Where the rule starts.
    pub location: Location,
    roles_at: Vec<Location>,
}

impl Rule {
    pub fn new(intent: &str, phrases: &[&str], roles: &[&str]) -> Rule {
        Rule {
            intent: intent.to_string(),
            phrases: phrases.iter().map(|p| normalize(p)).collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            location: Location { line: 1, col: 1 },
            roles_at: Vec::new(),
        }
    }
}

/// How a request was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// A rule's phrase is in the request.
    Rule,
    /// The classifier's answer named an intent ([`Routing::classify`]).
    Classifier,
    /// Nothing matched: `default_roles`.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub intent: Option<String>,
    pub roles: Vec<String>,
    /// The rule's phrase that matched, as configured (`migration*`).
    pub matched: Option<String>,
    pub by: RouteSource,
}

impl Default for Routing {
    fn default() -> Routing {
        Routing::builtin()
    }
}

impl Routing {
    /// The built-in rules (`defaults/routing.yaml`).
    pub fn builtin() -> Routing {
        let path = Path::new(BUILTIN_PATH);
        let root = yaml::parse(BUILTIN_ROUTING)
            .ok()
            .flatten()
            .expect("the built-in routing is valid YAML (tested)");
        let mut d = Decoder {
            file: path,
            base_dir: None,
            errors: Vec::new(),
        };
        let routing = decode_routing(&mut d, &root, None);
        assert!(d.errors.is_empty(), "built-in routing: {:?}", d.errors);
        routing
    }

    /// A routing with these rules and defaults (for tests and programs; files use fleet.yaml).
    pub fn new(rules: Vec<Rule>, default_roles: &[&str]) -> Routing {
        Routing {
            rules,
            classifier: None,
            default_roles: default_roles.iter().map(|r| r.to_string()).collect(),
            file: PathBuf::new(),
            default_roles_at: Vec::new(),
        }
    }

    pub fn rule(&self, intent: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.intent == intent)
    }

    /// Every role a rule or `default_roles` names that `library` does not have, where it is
    /// written.
    pub fn unknown_roles(&self, library: &Library) -> Vec<ConfigError> {
        let known: Vec<&str> = library.roles.keys().map(String::as_str).collect();
        let mut errors = Vec::new();
        let mut check = |role: &str, at: Location, whose: &str| {
            if library.role(role).is_none() {
                errors.push(ConfigError::new(
                    &self.file,
                    at,
                    format!(
                        "{whose} names the role `{role}`, which is neither built in nor in the \
                         instance's roles/ (known roles: {})",
                        known.join(", ")
                    ),
                ));
            }
        };
        for rule in &self.rules {
            for (i, role) in rule.roles.iter().enumerate() {
                let at = rule.roles_at.get(i).copied().unwrap_or(rule.location);
                check(role, at, &format!("the routing rule `{}`", rule.intent));
            }
        }
        for (i, role) in self.default_roles.iter().enumerate() {
            let at = self
                .default_roles_at
                .get(i)
                .copied()
                .unwrap_or(Location { line: 1, col: 1 });
            check(role, at, "`default_roles`");
        }
        errors
    }

    /// The question for the classifier when no rule matched: the intents and the request.
    /// Its answer goes to [`Routing::classify`].
    pub fn classifier_prompt(&self, request: &str) -> String {
        let mut out = String::from(
            "Classify a request sent to a team of coding agents by its intent.\n\
             Answer with exactly one intent name from the list below, or `none` if no intent fits. \
             Do not change any files.\n\nIntents:\n",
        );
        for rule in &self.rules {
            let examples: Vec<String> = rule
                .phrases
                .iter()
                .take(6)
                .map(|p| format!("\"{}\"", p.trim_end_matches('*')))
                .collect();
            out.push_str(&format!(
                "- {}: handled by {} (e.g. {})\n",
                rule.intent,
                rule.roles.join(", "),
                examples.join(", ")
            ));
        }
        out.push_str(&format!(
            "- none: anything else (handled by {})\n\nRequest:\n{}\n",
            self.default_roles.join(", "),
            request.trim()
        ));
        out
    }

    /// The route the classifier's `answer` names: the first intent (in rule order) that it
    /// contains as a word; `None` when it names none (then the default route stands).
    pub fn classify(&self, answer: &str) -> Option<Route> {
        let text = normalize(answer);
        self.rules
            .iter()
            .find(|rule| phrase_matches(&text, &rule.intent))
            .map(|rule| Route {
                intent: Some(rule.intent.clone()),
                roles: rule.roles.clone(),
                matched: None,
                by: RouteSource::Classifier,
            })
    }
}

/// Routes `request`: the first rule with a phrase in it, or the default roles.
pub fn route(request: &str, routing: &Routing) -> Route {
    let text = normalize(request);
    for rule in &routing.rules {
        if let Some(phrase) = rule.phrases.iter().find(|p| phrase_matches(&text, p)) {
            return Route {
                intent: Some(rule.intent.clone()),
                roles: rule.roles.clone(),
                matched: Some(phrase.clone()),
                by: RouteSource::Rule,
            };
        }
    }
    Route {
        intent: None,
        roles: routing.default_roles.clone(),
        matched: None,
        by: RouteSource::Default,
    }
}

/// Lowercase, with every run of whitespace one space.
fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether normalized `text` holds `phrase` on word boundaries (a trailing `*`: any ending).
fn phrase_matches(text: &str, phrase: &str) -> bool {
    let (core, open_end) = match phrase.strip_suffix('*') {
        Some(core) => (core, true),
        None => (phrase, false),
    };
    let Some(first) = core.chars().next() else {
        return false;
    };
    let last = core.chars().next_back().unwrap_or(first);
    text.match_indices(core).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + core.len()..].chars().next();
        let start_ok = !is_word(first) || !before.is_some_and(is_word);
        let end_ok = open_end || !is_word(last) || !after.is_some_and(is_word);
        start_ok && end_ok
    })
}

/// Decodes fleet.yaml's `routing:`. `builtin`: the rules used when `rules:` is absent.
pub(crate) fn decode(d: &mut Decoder<'_>, node: &Node) -> Routing {
    decode_routing(d, node, Some(Routing::builtin()))
}

fn decode_routing(d: &mut Decoder<'_>, node: &Node, builtin: Option<Routing>) -> Routing {
    let (rules, default_roles, default_roles_at) = match builtin {
        Some(b) => (b.rules, b.default_roles, b.default_roles_at),
        None => (Vec::new(), vec!["developer".to_string()], Vec::new()),
    };
    let mut routing = Routing {
        rules,
        classifier: None,
        default_roles,
        file: d.file.to_path_buf(),
        default_roles_at,
    };
    if matches!(
        node.value,
        Value::Scalar {
            kind: ScalarKind::Null,
            ..
        }
    ) {
        return routing;
    }
    let Some(fields) = d.fields(
        node,
        ROUTING_KEYS,
        "in `routing`",
        "a mapping with `rules`, `classifier`, `default_roles`",
    ) else {
        return routing;
    };
    for f in &fields.list {
        match f.key {
            "rules" => routing.rules = decode_rules(d, f.value),
            "classifier" => {
                routing.classifier = d
                    .id(f.value, "classifier", "agent profile name")
                    .map(|s| s.value)
            }
            "default_roles" => {
                let roles = role_list(d, f.value, "default_roles");
                if roles.is_empty() {
                    d.error(
                        f.value.loc,
                        "`default_roles`: expected at least one role (like [developer])",
                    );
                }
                routing.default_roles = roles.iter().map(|r| r.0.clone()).collect();
                routing.default_roles_at = roles.iter().map(|r| r.1).collect();
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    routing
}

fn role_list(d: &mut Decoder<'_>, node: &Node, key: &str) -> Vec<(String, Location)> {
    string_list_spanned(d, node, key)
        .into_iter()
        .filter(|(name, at)| match fleet_core::validate_id(name) {
            Ok(()) => true,
            Err(e) => {
                d.error(*at, format!("`{key}`: invalid role name {name:?}: {e}"));
                false
            }
        })
        .collect()
}

fn decode_rules(d: &mut Decoder<'_>, node: &Node) -> Vec<Rule> {
    let Value::Seq(items) = &node.value else {
        d.error(
            node.loc,
            format!(
                "`rules`: expected a list of rules (each with `intent`, `match`, `roles`), found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<Rule> = Vec::new();
    for item in items {
        let Some(fields) = d.fields(
            item,
            RULE_KEYS,
            "in a routing rule",
            "a mapping with `intent`, `match` and `roles`",
        ) else {
            continue;
        };
        let mut rule = Rule {
            intent: String::new(),
            phrases: Vec::new(),
            roles: Vec::new(),
            location: fields.start,
            roles_at: Vec::new(),
        };
        for f in &fields.list {
            match f.key {
                "intent" => {
                    if let Some(intent) = d.id(f.value, "intent", "intent name") {
                        if let Some(first) = out.iter().find(|r| r.intent == intent.value) {
                            let at = first.location;
                            d.error(
                                intent.at,
                                format!(
                                    "the intent `{}` has a rule already, at {at}; give each intent one rule",
                                    intent.value
                                ),
                            );
                        }
                        rule.intent = intent.value;
                    }
                }
                "match" => {
                    for (phrase, at) in string_list_spanned(d, f.value, "match") {
                        let p = normalize(&phrase);
                        let core = p.strip_suffix('*').unwrap_or(&p);
                        if core.is_empty() || core.contains('*') {
                            d.error(
                                at,
                                format!(
                                    "`match`: expected a word or phrase (a `*` only at its end), found {phrase:?}"
                                ),
                            );
                        } else {
                            rule.phrases.push(p);
                        }
                    }
                    if matches!(&f.value.value, Value::Seq(items) if items.is_empty()) {
                        d.error(f.value.loc, "`match`: expected at least one word or phrase");
                    }
                }
                "roles" => {
                    let roles = role_list(d, f.value, "roles");
                    if matches!(&f.value.value, Value::Seq(items) if items.is_empty()) {
                        d.error(f.value.loc, "`roles`: expected at least one role");
                    }
                    rule.roles = roles.iter().map(|r| r.0.clone()).collect();
                    rule.roles_at = roles.iter().map(|r| r.1).collect();
                }
                _ => unreachable!("fields() keeps known keys only"),
            }
        }
        for key in RULE_KEYS {
            if !fields.has(key) {
                d.error(
                    fields.start,
                    format!("a routing rule needs `{key}` (each has `intent`, `match`, `roles`)"),
                );
            }
        }
        out.push(rule);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_boundaries_and_wildcards() {
        let m = |t: &str, p: &str| phrase_matches(&normalize(t), p);
        assert!(m("Fix the SQL", "sql"));
        assert!(m("sql-injection in login", "sql"));
        assert!(!m("move to sqlite", "sql"));
        assert!(!m("mysql is down", "sql"));
        assert!(m("the   slow\n query", "slow query"));
        assert!(!m("a robot", "bot"));
        assert!(m("add migrations", "migration*"));
        assert!(!m("remigration", "migration*"));
        assert!(m("Сделай лендинг", "лендинг*"));
        assert!(m("use ci/cd", "ci/cd"));
        assert!(!m("civic", "ci"));
        assert!(!m("anything", "*"));
    }

    #[test]
    fn the_builtin_routing_decodes() {
        let r = Routing::builtin();
        assert_eq!(r.default_roles, ["developer"]);
        assert_eq!(r.rule("db_issue").unwrap().roles, ["db"]);
        assert!(r.rules.iter().all(|r| !r.roles_at.is_empty()));
    }
}
