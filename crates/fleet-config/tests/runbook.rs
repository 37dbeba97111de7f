use fleet_config::{
    Action, ConfigError, Location, Prompt, Runbook, TaskSpec, Workspace, load_runbook,
    parse_runbook,
};
use fleet_core::{NodeSpec, TaskKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn parse(text: &str) -> Result<Runbook, Vec<ConfigError>> {
    parse_runbook(Path::new("runbook.yaml"), text)
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(runbook) => panic!("expected errors, got {runbook:#?}"),
        Err(errors) => errors,
    }
}

/// Asserts that one of `errors` is at `line:col` and its message contains `needle`.
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

/// Parses `text` and expects exactly one error, at `line:col`, containing `needle`.
#[track_caller]
fn assert_only_error(text: &str, line: usize, col: usize, needle: &str) {
    let errors = errors_of(text);
    assert_error(&errors, line, col, needle);
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const PRODUCT_EXAMPLE: &str = r#"name: add-auth
repo: .                 # git repo; default: the current one
base: main              # default: current HEAD
concurrency: 4
report: docs/orchestrator-run-summary.md   # optional extra copy of the summary
defaults: { timeout: 30m, retries: 2, env: { RUST_LOG: info, CI: true } }
tasks:
  - id: db-schema                       # [a-z0-9][a-z0-9-_]*, unique
    command: "make schema"              # any shell command; exit 0 = success
    checks: ["cargo test -q"]           # acceptance commands
  - id: api
    depends_on: [db-schema]
    agent: claude
    prompt_file: docs/tasks/api.md      # or prompt: "inline text"
    checks: ["cargo test -q", "cargo clippy -q -- -D warnings"]
    retries: 3
    env: { RUST_LOG: debug, PORT: 8080 }
  - id: lint-report
    depends_on: [api]
    command: "cargo clippy -q 2>&1 | tee clippy.txt"
    workspace: none                     # run in the repo root, no worktree, nothing merged
  - id: review
    kind: task
    depends_on: lint-report
    role: reviewer
    prompt: |
      Review the change.
    timeout: 1h30m
    retry_backoff: 500ms
    checks: cargo test -q
"#;

#[test]
fn the_product_example_decodes_into_typed_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs/tasks")).unwrap();
    std::fs::write(dir.path().join("docs/tasks/api.md"), "Build the API.\n").unwrap();
    let path = dir.path().join("runbook.yaml");
    std::fs::write(&path, PRODUCT_EXAMPLE).unwrap();

    let runbook = load_runbook(&path).unwrap();

    let thirty_minutes = Some(Duration::from_secs(30 * 60));
    let expected = Runbook {
        path: path.clone(),
        source: PRODUCT_EXAMPLE.to_string(),
        name: "add-auth".into(),
        repo: Some(PathBuf::from(".")),
        base: Some("main".into()),
        concurrency: 4,
        report: Some(PathBuf::from("docs/orchestrator-run-summary.md")),
        tasks: vec![
            TaskSpec {
                id: "db-schema".into(),
                kind: TaskKind::Atomic,
                parent: None,
                depends_on: vec![],
                action: Action::Command("make schema".into()),
                checks: vec!["cargo test -q".into()],
                timeout: thirty_minutes,
                retries: 2,
                retry_backoff: Duration::from_secs(1),
                workspace: Workspace::Worktree,
                env: env(&[("CI", "true"), ("RUST_LOG", "info")]),
                pass_env: vec![],
                max_attempts: None,
                escalate_after: None,
                budget_usd: None,
                max_time: None,
                allowed_paths: vec![],
                allowed_tools: vec![],
                location: Location { line: 8, col: 5 },
            },
            TaskSpec {
                id: "api".into(),
                kind: TaskKind::Atomic,
                parent: None,
                depends_on: vec!["db-schema".into()],
                action: Action::Agent {
                    agent: Some("claude".into()),
                    role: None,
                    prompt: Prompt::File("docs/tasks/api.md".into()),
                },
                checks: vec![
                    "cargo test -q".into(),
                    "cargo clippy -q -- -D warnings".into(),
                ],
                timeout: thirty_minutes,
                retries: 3,
                retry_backoff: Duration::from_secs(1),
                workspace: Workspace::Worktree,
                env: env(&[("CI", "true"), ("PORT", "8080"), ("RUST_LOG", "debug")]),
                pass_env: vec![],
                max_attempts: None,
                escalate_after: None,
                budget_usd: None,
                max_time: None,
                allowed_paths: vec![],
                allowed_tools: vec![],
                location: Location { line: 11, col: 5 },
            },
            TaskSpec {
                id: "lint-report".into(),
                kind: TaskKind::Atomic,
                parent: None,
                depends_on: vec!["api".into()],
                action: Action::Command("cargo clippy -q 2>&1 | tee clippy.txt".into()),
                checks: vec![],
                timeout: thirty_minutes,
                retries: 2,
                retry_backoff: Duration::from_secs(1),
                workspace: Workspace::None,
                env: env(&[("CI", "true"), ("RUST_LOG", "info")]),
                pass_env: vec![],
                max_attempts: None,
                escalate_after: None,
                budget_usd: None,
                max_time: None,
                allowed_paths: vec![],
                allowed_tools: vec![],
                location: Location { line: 18, col: 5 },
            },
            TaskSpec {
                id: "review".into(),
                kind: TaskKind::Task,
                parent: None,
                depends_on: vec!["lint-report".into()],
                action: Action::Agent {
                    agent: None,
                    role: Some("reviewer".into()),
                    prompt: Prompt::Inline("Review the change.\n".into()),
                },
                checks: vec!["cargo test -q".into()],
                timeout: Some(Duration::from_secs(90 * 60)),
                retries: 2,
                retry_backoff: Duration::from_millis(500),
                workspace: Workspace::Worktree,
                env: env(&[("CI", "true"), ("RUST_LOG", "info")]),
                pass_env: vec![],
                max_attempts: None,
                escalate_after: None,
                budget_usd: None,
                max_time: None,
                allowed_paths: vec![],
                allowed_tools: vec![],
                location: Location { line: 22, col: 5 },
            },
        ],
    };
    assert_eq!(runbook, expected);

    let specs = runbook.node_specs();
    assert_eq!(
        specs,
        vec![
            NodeSpec::leaf("db-schema", &[]),
            NodeSpec::leaf("api", &["db-schema"]),
            NodeSpec::leaf("lint-report", &["api"]),
            NodeSpec {
                id: "review".into(),
                kind: TaskKind::Task,
                parent: None,
                depends_on: vec!["lint-report".into()]
            },
        ]
    );
    assert!(fleet_core::graph::validate(&specs).is_ok());
}

#[test]
fn defaults_are_applied_when_absent_and_overridden_by_the_task() {
    let text = r#"name: d
tasks:
  - id: bare
    command: "true"
  - id: own
    command: "true"
    timeout: 45
    retries: 1
    retry_backoff: 2m
    workspace: none
    checks: [a, b]
    env: { X: "1" }
"#;
    let runbook = parse(text).unwrap();
    assert_eq!(runbook.concurrency, 4);
    assert_eq!(runbook.repo, None);
    assert_eq!(runbook.base, None);
    assert_eq!(runbook.report, None);
    let bare = &runbook.tasks[0];
    assert_eq!(bare.kind, TaskKind::Atomic);
    assert_eq!(bare.timeout, None);
    assert_eq!(bare.retries, 0);
    assert_eq!(bare.retry_backoff, Duration::from_secs(1));
    assert_eq!(bare.workspace, Workspace::Worktree);
    assert!(bare.checks.is_empty());
    assert!(bare.env.is_empty());
    assert_eq!(bare.action, Action::Command("true".into()));

    let with_defaults = text.replace(
        "tasks:\n",
        "defaults:\n  timeout: 10m\n  retries: 5\n  retry_backoff: 3s\n  workspace: none\n  checks: make check\n  env: { X: \"0\", Y: y }\ntasks:\n",
    );
    let runbook = parse(&with_defaults).unwrap();
    let bare = &runbook.tasks[0];
    assert_eq!(bare.timeout, Some(Duration::from_secs(600)));
    assert_eq!(bare.retries, 5);
    assert_eq!(bare.retry_backoff, Duration::from_secs(3));
    assert_eq!(bare.workspace, Workspace::None);
    assert_eq!(bare.checks, ["make check"]);
    assert_eq!(bare.env, env(&[("X", "0"), ("Y", "y")]));
    let own = &runbook.tasks[1];
    assert_eq!(own.timeout, Some(Duration::from_secs(45)));
    assert_eq!(own.retries, 1);
    assert_eq!(own.retry_backoff, Duration::from_secs(120));
    assert_eq!(own.workspace, Workspace::None);
    assert_eq!(own.checks, ["a", "b"]);
    assert_eq!(own.env, env(&[("X", "1"), ("Y", "y")]));
}

#[test]
fn an_empty_checks_list_replaces_the_default_checks() {
    let text = "name: d\ndefaults: { checks: [make check] }\ntasks:\n  - { id: a, command: x, checks: [] }\n";
    assert!(parse(text).unwrap().tasks[0].checks.is_empty());
}

#[test]
fn containers_are_groups_and_their_children_run() {
    let text = r#"name: nested
tasks:
  - id: auth
    kind: epic
  - id: backend
    kind: phase
    parent: auth
  - id: schema
    parent: backend
    command: make schema
  - id: docs
    parent: auth
    depends_on: [backend]
    command: make docs
"#;
    let runbook = parse(text).unwrap();
    let actions: Vec<&Action> = runbook.tasks.iter().map(|t| &t.action).collect();
    assert_eq!(
        actions,
        [
            &Action::Group,
            &Action::Group,
            &Action::Command("make schema".into()),
            &Action::Command("make docs".into())
        ]
    );
    assert_eq!(runbook.tasks[2].parent.as_deref(), Some("backend"));
    let specs = runbook.node_specs();
    assert_eq!(specs[1].kind, TaskKind::Phase);
    assert_eq!(specs[3].depends_on, ["backend"]);
}

#[test]
fn yaml_syntax_errors_stop_with_the_parser_position() {
    let text = "name: x\ntasks:\n  - id: a\n    command: x\n   bad: 1\n";
    assert_only_error(text, 5, 4, "invalid YAML: while parsing a block collection");
    let text = "name: x\ntasks:\n  - id: a\n    command: \"unterminated\n";
    assert_only_error(text, 4, 14, "invalid YAML: while scanning a quoted scalar");
    assert_only_error("name: [x\n", 2, 1, "invalid YAML");
}

#[test]
fn an_empty_runbook_or_a_second_document_is_refused() {
    assert_only_error("", 1, 1, "the runbook is empty");
    assert_only_error("# nothing here\n", 1, 1, "the runbook is empty");
    let text = "name: x\ntasks: [{id: a, command: x}]\n---\nname: y\n";
    assert_only_error(text, 3, 1, "expected a runbook to be a single document");
}

#[test]
fn unknown_keys_are_reported_at_the_key_with_a_suggestion() {
    let text = r#"name: x
tasks:
  - id: build
    comand: make
"#;
    let errors = errors_of(text);
    assert_error(
        &errors,
        4,
        5,
        "unknown key `comand` in task \"build\"; expected one of: id, kind, parent, depends_on, command,",
    );
    assert_error(&errors, 4, 5, "did you mean `command`?");
    // The misspelt key is the only complaint: no "nothing to run" on top of it.
    assert_eq!(errors.len(), 1, "{errors:#?}");

    let text = "name: x\nconcurency: 2\ndefaults: { banana: 1 }\ntasks: [{id: a, command: x}]\n";
    let errors = errors_of(text);
    assert_error(&errors, 2, 1, "unknown key `concurency` at the top level");
    assert_error(&errors, 2, 1, "did you mean `concurrency`?");
    assert_error(
        &errors,
        3,
        13,
        "unknown key `banana` in `defaults`; expected one of: timeout,",
    );
    let banana = errors
        .iter()
        .find(|e| e.message.contains("banana"))
        .unwrap();
    assert!(!banana.message.contains("did you mean"), "{banana}");
}

#[test]
fn duplicate_keys_are_reported_at_the_second_one() {
    let text = r#"name: x
tasks:
  - id: a
    command: one
    command: two
"#;
    assert_only_error(
        text,
        5,
        5,
        "duplicate key `command` in task \"a\"; it is first given at 4:5",
    );
    let text = "name: x\nname: y\ntasks: [{id: a, command: x}]\n";
    assert_only_error(text, 2, 1, "duplicate key `name` at the top level");
    let text = "name: x\ntasks: [{id: a, command: x, env: {A: 1, A: 2}}]\n";
    assert_only_error(text, 2, 41, "duplicate key `A` in `env`");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let text = r#"name: x
concurrency: many
tasks:
  - id: a
    command: [make]
    depends_on: { b: 1 }
    timeout: soon
    retries: 1.5
    kind: leaf
  - hello
  - id: b
    command: x
    retry_backoff: [1]
    checks: { a: b }
    env: [A]
    workspace: tmp
"#;
    let errors = errors_of(text);
    assert_error(
        &errors,
        2,
        14,
        "`concurrency`: expected a positive integer (1 to 1024), found the text \"many\"",
    );
    assert_error(&errors, 5, 14, "`command`: expected a string, found a list");
    assert_error(
        &errors,
        6,
        17,
        "`depends_on`: expected a list of task ids, found a mapping",
    );
    assert_error(
        &errors,
        7,
        14,
        "`timeout`: expected a duration like 30s, 5m, 1h30m",
    );
    assert_error(
        &errors,
        8,
        14,
        "`retries`: expected a non-negative integer (0 or more), found the number 1.5",
    );
    assert_error(
        &errors,
        9,
        11,
        "`kind`: expected one of epic, phase, task, atomic, found the text \"leaf\"",
    );
    assert_error(
        &errors,
        10,
        5,
        "expected a mapping (a task with an `id`), found the text \"hello\"",
    );
    assert_error(
        &errors,
        13,
        20,
        "`retry_backoff`: expected a duration like 30s, 5m, 1h30m",
    );
    assert_error(
        &errors,
        14,
        13,
        "`checks`: expected a shell command or a list of shell commands",
    );
    assert_error(
        &errors,
        15,
        10,
        "expected a mapping of environment variable names to values, found a list",
    );
    assert_error(
        &errors,
        16,
        16,
        "`workspace`: expected `worktree` or `none`, found the text \"tmp\"",
    );
    assert_eq!(errors.len(), 11, "{errors:#?}");

    assert_only_error(
        "- a\n- b\n",
        1,
        1,
        "expected a mapping with `name` and `tasks`, found a list",
    );
    assert_only_error(
        "name: x\ntasks: {a: 1}\n",
        2,
        8,
        "`tasks`: expected a list of tasks, found a mapping",
    );
    assert_only_error(
        "name: x\ntasks: [{id: a, command: }]\n",
        2,
        24,
        "`command`: expected a string, found nothing",
    );
    assert_only_error(
        "name: x\ntasks: [{id: a, command: ''}]\n",
        2,
        26,
        "`command` is empty",
    );
}

#[test]
fn concurrency_is_bounded() {
    let text = |n: &str| format!("name: x\nconcurrency: {n}\ntasks: [{{id: a, command: x}}]\n");
    assert_eq!(parse(&text("1")).unwrap().concurrency, 1);
    assert_eq!(parse(&text("1024")).unwrap().concurrency, 1024);
    assert_only_error(
        &text("0"),
        2,
        14,
        "expected a positive integer (1 to 1024), found 0",
    );
    assert_only_error(
        &text("1025"),
        2,
        14,
        "expected a positive integer (1 to 1024), found 1025",
    );
    assert_only_error(&text("-3"), 2, 14, "expected a positive integer");
}

#[test]
fn required_keys_are_reported_when_missing() {
    assert_only_error(
        "tasks: [{id: a, command: x}]\n",
        1,
        1,
        "missing required key `name`",
    );
    assert_only_error("name: x\nrepo: .\n", 1, 1, "missing required key `tasks`");
    assert_only_error(
        "name: x\ntasks: []\n",
        2,
        8,
        "`tasks` is empty; expected at least one task",
    );
    let text = "name: x\ntasks:\n  - id: a\n    command: x\n  - command: y\n";
    assert_only_error(text, 5, 5, "missing required key `id` in task #2");
}

#[test]
fn a_leaf_needs_exactly_one_action() {
    let base = "name: x\ntasks:\n  - id: t\n";
    let case = |body: &str| format!("{base}{body}");
    // Line 4 onwards is the task body.
    assert_only_error(
        &case("    kind: atomic\n"),
        3,
        5,
        "task \"t\" has nothing to run",
    );
    assert_only_error(
        &case("    command: make\n    agent: claude\n    prompt: hi\n"),
        5,
        5,
        "task \"t\" has both `command` and `agent`",
    );
    assert_only_error(
        &case("    command: make\n    role: dev\n    prompt: hi\n"),
        5,
        5,
        "task \"t\" has both `command` and `role`",
    );
    assert_only_error(
        &case("    command: make\n    prompt: hi\n"),
        5,
        5,
        "`prompt` is for agent tasks, but task \"t\" runs a `command`",
    );
    assert_only_error(
        &case("    prompt: hi\n"),
        4,
        5,
        "`prompt` needs `agent` or `role` in task \"t\"",
    );
    assert_only_error(
        &case("    prompt_file: p.md\n"),
        4,
        5,
        "`prompt_file` needs `agent` or `role` in task \"t\"",
    );
    assert_only_error(
        &case("    role: dev\n"),
        4,
        5,
        "agent task \"t\" needs a `prompt` or a `prompt_file`",
    );
    assert_only_error(
        &case("    agent: claude\n    prompt: hi\n    prompt_file: p.md\n"),
        6,
        5,
        "task \"t\" has both `prompt` and `prompt_file`",
    );
    let both = parse(&case("    agent: claude\n    role: dev\n    prompt: hi\n")).unwrap();
    assert_eq!(
        both.tasks[0].action,
        Action::Agent {
            agent: Some("claude".into()),
            role: Some("dev".into()),
            prompt: Prompt::Inline("hi".into())
        }
    );
}

#[test]
fn a_container_cannot_run_anything_itself() {
    let text = r#"name: x
tasks:
  - id: phase-1
    kind: phase
    agent: claude
    prompt: do it
  - id: a
    parent: phase-1
    command: make
"#;
    let errors = errors_of(text);
    assert_error(
        &errors,
        5,
        5,
        "task \"phase-1\" is a container (task \"a\" names it as its `parent`), so it cannot have `agent`",
    );
    assert_error(&errors, 6, 5, "so it cannot have `prompt`");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn hostile_ids_are_refused_where_they_are_written() {
    for bad in ["../x", "a b", "x;rm", "A", "-x"] {
        let text = format!(
            "name: '{bad}'\ntasks:\n  - id: '{bad}'\n    command: x\n  - id: ok\n    parent: '{bad}'\n    depends_on: [b, '{bad}']\n    command: x\n  - id: b\n    command: x\n"
        );
        let errors = errors_of(&text);
        assert_error(&errors, 1, 7, &format!("invalid runbook name {bad:?}: id "));
        assert_error(&errors, 3, 9, &format!("invalid task id {bad:?}: id "));
        assert_error(&errors, 6, 13, &format!("invalid parent id {bad:?}: id "));
        assert_error(&errors, 7, 21, &format!("invalid task id {bad:?}: id "));
        assert_eq!(errors.len(), 4, "{bad}: {errors:#?}");
    }
}

#[test]
fn a_cycle_is_named_with_its_path_at_its_first_task() {
    let text = r#"name: x
tasks:
  - id: ok
    command: x
  - id: a
    depends_on: [c]
    command: x
  - id: b
    depends_on: [a]
    command: x
  - id: c
    depends_on: [b]
    command: x
"#;
    assert_only_error(text, 5, 5, "dependency cycle: a -> c -> b -> a");
}

#[test]
fn graph_errors_point_at_the_offending_value() {
    let text = r#"name: x
tasks:
  - id: a
    depends_on: [nope, a, b, b]
    command: x
  - id: b
    parent: ghost
    command: x
  - id: a
    command: x
"#;
    let errors = errors_of(text);
    assert_error(
        &errors,
        4,
        18,
        "task \"a\" depends on \"nope\", which is not defined",
    );
    assert_error(&errors, 4, 24, "task \"a\" depends on itself");
    assert_error(&errors, 4, 30, "task \"a\" lists dependency \"b\" twice");
    assert_error(
        &errors,
        7,
        13,
        "task \"b\" has parent \"ghost\", which is not defined",
    );
    assert_error(
        &errors,
        9,
        9,
        "duplicate task id \"a\"; it is first used at 3:9",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");

    let text = r#"name: x
tasks:
  - id: small
    command: x
  - id: big
    kind: phase
    parent: small
    command: y
"#;
    assert_only_error(
        text,
        7,
        13,
        "phase \"big\" cannot be under atomic \"small\"",
    );

    let text = r#"name: x
tasks:
  - id: p
    kind: phase
  - id: a
    parent: p
    depends_on: [p]
    command: y
"#;
    assert_only_error(
        text,
        7,
        18,
        "task \"a\" depends on \"p\", which contains it",
    );
}

#[test]
fn prompt_files_must_exist_next_to_the_runbook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("here.md"), "hi").unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let path = dir.path().join("rb.yaml");
    let text = r#"name: x
tasks:
  - id: a
    agent: claude
    prompt_file: here.md
  - id: b
    agent: claude
    prompt_file: missing.md
  - id: c
    agent: claude
    prompt_file: adir
"#;
    let errors = parse_runbook(&path, text).unwrap_err();
    assert_error(
        &errors,
        8,
        18,
        "prompt file \"missing.md\" does not exist (looked for ",
    );
    assert_error(&errors, 11, 18, "prompt file \"adir\" is not a file");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0]
            .message
            .contains(&dir.path().join("missing.md").display().to_string())
    );

    let fixed = text
        .replace("missing.md", "here.md")
        .replace("adir", "here.md");
    let runbook = parse_runbook(&path, &fixed).unwrap();
    let Action::Agent { prompt, .. } = &runbook.tasks[1].action else {
        panic!()
    };
    assert_eq!(prompt, &Prompt::File("here.md".into()));
}

#[test]
fn env_names_are_checked_and_scalar_values_stringified() {
    let text = r#"name: x
tasks:
  - id: a
    command: x
    env:
      PORT: 8080
      DEBUG: true
      RATIO: 1.50
      NAME: plain
      EMPTY: ""
      1BAD: x
      bad-name: y
      NOTHING:
"#;
    let errors = errors_of(text);
    assert_error(&errors, 11, 7, "invalid environment variable name \"1BAD\"");
    assert_error(
        &errors,
        12,
        7,
        "invalid environment variable name \"bad-name\"",
    );
    assert_error(
        &errors,
        13,
        14,
        "`env.NOTHING`: expected a string, found nothing",
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");

    let valid: String = text.lines().take(10).map(|l| format!("{l}\n")).collect();
    let runbook = parse(&valid).unwrap();
    assert_eq!(
        runbook.tasks[0].env,
        env(&[
            ("DEBUG", "true"),
            ("EMPTY", ""),
            ("NAME", "plain"),
            ("PORT", "8080"),
            ("RATIO", "1.50")
        ])
    );
}

#[test]
fn durations_in_a_runbook() {
    let text = |t: &str| format!("name: x\ntasks: [{{id: a, command: x, timeout: {t}}}]\n");
    let timeout = |t: &str| parse(&text(t)).unwrap().tasks[0].timeout;
    assert_eq!(timeout("90"), Some(Duration::from_secs(90)));
    assert_eq!(timeout("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(timeout("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(timeout("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(timeout("'45s'"), Some(Duration::from_secs(45)));
    for bad in ["1.5", "-1", "30 minutes", "m30", "true"] {
        assert_only_error(
            &text(bad),
            2,
            38,
            "`timeout`: expected a duration like 30s, 5m, 1h30m",
        );
    }
    assert_only_error(&text("0s"), 2, 38, "`timeout` must be longer than zero");
}

#[test]
fn several_independent_errors_are_all_reported_in_order() {
    let text = r#"name: Bad Name
concurrency: 0
tasks:
  - id: a
    comand: make
  - id: b
    depends_on: [a, zzz]
    command: x
    retries: -2
  - id: c
    agent: claude
"#;
    let errors = errors_of(text);
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(
        at,
        [(1, 7), (2, 14), (5, 5), (7, 21), (9, 14), (11, 5)],
        "{errors:#?}"
    );
    assert_error(&errors, 1, 7, "invalid runbook name \"Bad Name\"");
    assert_error(&errors, 2, 14, "`concurrency`");
    assert_error(&errors, 5, 5, "did you mean `command`?");
    assert_error(&errors, 7, 21, "depends on \"zzz\", which is not defined");
    assert_error(&errors, 9, 14, "`retries`: expected a non-negative integer");
    assert_error(
        &errors,
        11,
        5,
        "agent task \"c\" needs a `prompt` or a `prompt_file`",
    );
}

#[test]
fn errors_display_as_file_line_col_message() {
    let errors = parse_runbook(Path::new("dir/rb.yaml"), "name: x\n").unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "dir/rb.yaml:1:1: missing required key `tasks` (the list of tasks to run)"
    );
    assert_eq!(errors[0].location(), Location { line: 1, col: 1 });
    let as_error: &dyn std::error::Error = &errors[0];
    assert!(as_error.to_string().starts_with("dir/rb.yaml:1:1: "));
}

#[test]
fn an_unreadable_runbook_is_an_error_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let errors = load_runbook(&path).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (1, 1));
    assert_eq!(errors[0].file, path);
    assert!(
        errors[0].message.starts_with("cannot read the runbook: "),
        "{}",
        errors[0]
    );
}

#[test]
fn anchors_and_aliases_can_share_settings() {
    let text = r#"name: x
tasks:
  - id: a
    command: x
    env: &common { A: "1" }
  - id: b
    command: y
    env: *common
"#;
    let runbook = parse(text).unwrap();
    assert_eq!(runbook.tasks[1].env, env(&[("A", "1")]));
}

#[test]
fn keys_must_be_names() {
    let text = "name: x\n[a]: 1\n~: 2\ntasks: [{id: a, command: x}]\n";
    let errors = errors_of(text);
    assert_error(
        &errors,
        2,
        1,
        "expected a key name at the top level, found a list",
    );
    assert_error(
        &errors,
        3,
        1,
        "expected a key name at the top level, found nothing",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn numeric_ids_and_a_single_dependency_are_accepted() {
    let text =
        "name: x\ntasks:\n  - { id: 1, command: x }\n  - { id: 2, depends_on: 1, command: y }\n";
    let runbook = parse(text).unwrap();
    assert_eq!(runbook.tasks[0].id, "1");
    assert_eq!(runbook.tasks[1].depends_on, ["1"]);
}

#[test]
fn without_a_directory_prompt_files_are_not_checked() {
    let text = "name: x\ntasks: [{id: a, role: dev, prompt_file: nowhere/at/all.md}]\n";
    let runbook = parse_runbook(Path::new(""), text).unwrap();
    let expected = Action::Agent {
        agent: None,
        role: Some("dev".into()),
        prompt: Prompt::File("nowhere/at/all.md".into()),
    };
    assert_eq!(runbook.tasks[0].action, expected);
    // A bare file name is in the current directory, where the file is checked.
    let errors = parse_runbook(Path::new("rb.yaml"), text).unwrap_err();
    assert_error(
        &errors,
        2,
        41,
        "prompt file \"nowhere/at/all.md\" does not exist",
    );
}

#[test]
fn fail_until_done_limits_take_defaults_and_are_checked() {
    let text = "name: x\ndefaults: { max_attempts: 5, budget_usd: 1.5, max_time: 1h }\ntasks:\n  - id: a\n    command: true\n    escalate_after: 3\n  - id: b\n    command: true\n    max_attempts: 2\n    budget_usd: 0\n";
    let rb = fleet_config::parse_runbook(std::path::Path::new("rb.yaml"), text).unwrap();
    assert_eq!(rb.tasks[0].max_attempts, Some(5));
    assert_eq!(rb.tasks[0].escalate_after, Some(3));
    assert_eq!(rb.tasks[0].budget_usd, Some(1.5));
    assert_eq!(rb.tasks[0].max_time, Some(Duration::from_secs(3600)));
    assert_eq!(
        (rb.tasks[1].max_attempts, rb.tasks[1].budget_usd),
        (Some(2), Some(0.0))
    );
    let bad = "name: x\ntasks:\n  - id: a\n    command: true\n    max_attempts: 0\n    budget_usd: lots\n";
    let errs = fleet_config::parse_runbook(std::path::Path::new("rb.yaml"), bad).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with("rb.yaml:5:19: `max_attempts`")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.starts_with("rb.yaml:6:17: `budget_usd`")),
        "{text:?}"
    );
}

#[test]
fn pass_env_names_variables_from_defaults_and_the_task() {
    let rb = parse(
        "name: p\ndefaults:\n  pass_env: [CARGO_TARGET_DIR, DEPLOY_TOKEN]\ntasks:\n  - id: a\n    command: make\n    pass_env: [NPM_CONFIG_CACHE, CARGO_TARGET_DIR]\n",
    )
    .unwrap();
    assert_eq!(
        rb.tasks[0].pass_env,
        ["CARGO_TARGET_DIR", "DEPLOY_TOKEN", "NPM_CONFIG_CACHE"]
    );
    assert_only_error(
        "name: p\ntasks:\n  - id: a\n    command: make\n    pass_env: [OK, 1BAD]\n",
        5,
        20,
        "invalid environment variable name \"1BAD\"",
    );
}

#[test]
fn a_literal_secret_in_env_is_refused_without_echoing_it() {
    let key = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let errors = errors_of(&format!(
        "name: p\ntasks:\n  - id: a\n    command: make\n    env:\n      LABEL: {key}\n      API_TOKEN: not-a-placeholder-value\n      TEST_TOKEN: x\n"
    ));
    assert_error(
        &errors,
        6,
        14,
        "`env.LABEL` holds what looks like a GitHub token",
    );
    assert_error(
        &errors,
        7,
        18,
        "`env.API_TOKEN` holds a literal value under a secret's name",
    );
    assert_eq!(
        errors.len(),
        2,
        "a short placeholder is not a secret: {errors:#?}"
    );
    let all: String = errors.iter().map(ToString::to_string).collect();
    assert!(
        !all.contains(key) && !all.contains("not-a-placeholder"),
        "{all}"
    );
    assert!(all.contains("pass_env"), "{all}");
}
