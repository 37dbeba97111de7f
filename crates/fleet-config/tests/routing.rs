use fleet_config::{
    ConfigError, InstanceConfig, Library, Route, RouteSource, Routing, Rule, parse_instance, route,
};
use std::path::Path;

#[track_caller]
fn assert_error(errors: &[ConfigError], line: usize, col: usize, needle: &str) {
    let found = errors
        .iter()
        .any(|e| e.line == line && e.col == col && e.message.contains(needle));
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        found,
        "no error at {line}:{col} containing {needle:?}; got:\n{}",
        all.join("\n")
    );
}

fn routed(request: &str, routing: &Routing) -> (Option<String>, Vec<String>, RouteSource) {
    let r = route(request, routing);
    (r.intent, r.roles, r.by)
}

#[test]
fn the_database_is_slow_goes_to_the_db_role() {
    let routing = Routing::builtin();
    assert_eq!(
        route("The database is slow", &routing),
        Route {
            intent: Some("db_issue".into()),
            roles: vec!["db".into()],
            matched: Some("database*".into()),
            by: RouteSource::Rule,
        }
    );
    assert_eq!(
        routed("Add a migration for users", &routing).0.as_deref(),
        Some("db_issue")
    );
    assert_eq!(
        routed("база данных тормозит", &routing).0.as_deref(),
        Some("db_issue")
    );
}

#[test]
fn builtin_rules_for_apps_and_deployment_and_the_default() {
    let routing = Routing::builtin();
    let (intent, roles, by) = routed("Make a landing page for the hackathon", &routing);
    assert_eq!(
        (intent.as_deref(), by),
        (Some("new_app"), RouteSource::Rule)
    );
    assert_eq!(roles, ["developer", "devops"]);
    let (intent, roles, _) = routed("Deploy the API to staging", &routing);
    assert_eq!(
        (intent.as_deref(), roles),
        (Some("deploy"), vec!["devops".to_string()])
    );
    // "robot" is not "bot", "deployment" is "deploy*".
    let (intent, roles, by) = routed("Teach the robot arm to wave", &routing);
    assert_eq!((intent, by), (None, RouteSource::Default));
    assert_eq!(roles, ["developer"]);
    assert_eq!(
        routed("Fix the deployment script", &routing).0.as_deref(),
        Some("deploy")
    );
}

#[test]
fn matching_is_on_word_boundaries_and_the_first_rule_wins() {
    let routing = Routing::new(
        vec![
            Rule::new("db_issue", &["SQL", "slow query"], &["db"]),
            Rule::new("perf", &["slow*"], &["developer"]),
        ],
        &["developer"],
    );
    // `sql` does not match inside `sqlite` or `mysql`.
    assert_eq!(routed("Port it to SQLite", &routing).0, None);
    assert_eq!(routed("mysql", &routing).0, None);
    assert_eq!(
        routed("a SQL-injection", &routing).0.as_deref(),
        Some("db_issue")
    );
    // Both rules match: the first one written wins.
    let r = route("Slow   query on the dashboard", &routing);
    assert_eq!(r.intent.as_deref(), Some("db_issue"));
    assert_eq!(r.matched.as_deref(), Some("slow query"));
    let r = route("Everything is slower", &routing);
    assert_eq!(
        (r.intent.as_deref(), r.matched.as_deref()),
        (Some("perf"), Some("slow*"))
    );
}

const FLEET: &str = "agents:
  claude-planner:
    cli: claude
routing:
  rules:
    - intent: db_issue
      match: [\"database\", \"slow query\", \"sql\", \"migration\"]
      roles: [db]
    - intent: docs
      match: readme
      roles: [writer, developer]
  classifier: claude-planner
  default_roles: [developer]
";

#[test]
fn routing_is_decoded_from_fleet_yaml() {
    let cfg = parse_instance(Path::new("fleet.yaml"), FLEET).unwrap();
    let r = &cfg.routing;
    assert_eq!(r.rules.len(), 2);
    assert_eq!(r.rules[0].intent, "db_issue");
    assert_eq!(
        r.rules[0].phrases,
        ["database", "slow query", "sql", "migration"]
    );
    assert_eq!(r.rules[0].location.line, 6);
    assert_eq!(r.rules[1].phrases, ["readme"]);
    assert_eq!(r.classifier.as_deref(), Some("claude-planner"));
    assert_eq!(r.default_roles, ["developer"]);
    assert_eq!(r.file, Path::new("fleet.yaml"));
    assert_eq!(
        routed("Update the README", r).1,
        ["writer".to_string(), "developer".to_string()]
    );

    // A role that exists nowhere is an error where it is written.
    let lib = Library::load(None).unwrap();
    let errs = r.unknown_roles(&lib);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_error(
        &errs,
        11,
        15,
        "the routing rule `docs` names the role `writer`, which is neither built in",
    );
    assert!(Routing::builtin().unknown_roles(&lib).is_empty());
}

#[test]
fn without_routing_or_rules_the_builtin_rules_apply() {
    let builtin = Routing::builtin();
    assert_eq!(InstanceConfig::empty().routing, builtin);
    let cfg = parse_instance(Path::new("f.yaml"), "store: sqlite\n").unwrap();
    assert_eq!(cfg.routing.rules, builtin.rules);
    let cfg = parse_instance(Path::new("f.yaml"), "routing:\n  default_roles: [devops]\n").unwrap();
    assert_eq!(cfg.routing.rules, builtin.rules);
    assert_eq!(cfg.routing.default_roles, ["devops"]);
    let cfg = parse_instance(Path::new("f.yaml"), "routing:\n  rules: []\n").unwrap();
    assert!(cfg.routing.rules.is_empty());
    assert_eq!(routed("the database", &cfg.routing).2, RouteSource::Default);
    let cfg = parse_instance(Path::new("f.yaml"), "routing:\n").unwrap();
    assert_eq!(cfg.routing.rules, builtin.rules);
}

#[test]
fn routing_errors_are_located() {
    let text = "routing:
  rulez: []
  rules:
    - intent: DB
      match: [sql]
      roles: [db]
    - intent: ok
      match: []
      role: [db]
    - intent: ok
      match: [\"*\", \"a*b\"]
      roles: []
    - just text
  classifier: nobody
  default_roles: []
";
    let errs = parse_instance(Path::new("fleet.yaml"), text).unwrap_err();
    assert_error(
        &errs,
        2,
        3,
        "unknown key `rulez` in `routing`; expected one of: rules, classifier, default_roles; did you mean `rules`?",
    );
    assert_error(&errs, 4, 15, "invalid intent name \"DB\"");
    assert_error(
        &errs,
        8,
        14,
        "`match`: expected at least one word or phrase",
    );
    assert_error(&errs, 9, 7, "unknown key `role` in a routing rule");
    assert_error(&errs, 7, 7, "a routing rule needs `roles`");
    assert_error(&errs, 10, 15, "the intent `ok` has a rule already, at 7:7");
    assert_error(
        &errs,
        11,
        15,
        "`match`: expected a word or phrase (a `*` only at its end), found \"*\"",
    );
    assert_error(&errs, 11, 20, "found \"a*b\"");
    assert_error(&errs, 12, 14, "`roles`: expected at least one role");
    assert_error(
        &errs,
        13,
        7,
        "expected a mapping with `intent`, `match` and `roles`, found the text \"just text\"",
    );
    assert_error(
        &errs,
        14,
        15,
        "`classifier`: `nobody` is neither a profile under `agents` nor an agent CLI",
    );
    assert_error(&errs, 15, 18, "`default_roles`: expected at least one role");
    assert_eq!(errs.len(), 12, "{errs:#?}");

    // A bare CLI name is a default profile, so it may classify.
    let cfg = parse_instance(Path::new("f.yaml"), "routing:\n  classifier: claude\n").unwrap();
    assert_eq!(cfg.routing.classifier.as_deref(), Some("claude"));
}

#[test]
fn the_classifier_is_asked_and_its_answer_read() {
    let routing = Routing::builtin();
    let prompt = routing.classifier_prompt("  the thing is broken ");
    assert!(
        prompt.contains("- db_issue: handled by db (e.g. \"database\""),
        "{prompt}"
    );
    assert!(
        prompt.contains("- none: anything else (handled by developer)"),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("Request:\nthe thing is broken\n"),
        "{prompt}"
    );
    let r = routing.classify("Intent: `deploy`.").unwrap();
    assert_eq!(
        (r.intent.as_deref(), r.by),
        (Some("deploy"), RouteSource::Classifier)
    );
    assert_eq!(r.roles, ["devops"]);
    assert_eq!(routing.classify("none"), None);
    assert_eq!(routing.classify("redeploy_x"), None);
}
