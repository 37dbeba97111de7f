use fleet_config::{
    BUILTIN_ROLES, ConfigError, Library, TEMPLATE_VARS, parse_bible, parse_instance, parse_role,
    parse_skill, render, skills_text,
};
use std::collections::BTreeMap;
use std::path::Path;

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

fn all_vars(value: &str) -> BTreeMap<&'static str, String> {
    TEMPLATE_VARS
        .iter()
        .map(|v| (*v, format!("<{v}: {value}>")))
        .collect()
}

#[test]
fn a_role_file_is_decoded() {
    let text = "---\nname: dba\ndescription: Database work\nartifacts: [notes.md]\nprofiles: [claude-dev]\nskills: [postgres, indexes]\nwrites_code: true\n---\n\nYou fix {{task}}.\n{{#if feedback}}\nFix: {{feedback}}\n{{/if}}\n";
    let role = parse_role(Path::new("roles/dba.md"), text).unwrap();
    assert_eq!(role.name, "dba");
    assert_eq!(role.description, "Database work");
    assert_eq!(role.artifacts, ["notes.md"]);
    assert_eq!(role.profiles, ["claude-dev"]);
    assert_eq!(role.skills, ["postgres", "indexes"]);
    assert!(role.writes_code);
    assert!(!role.builtin);
    assert_eq!(role.location.line, 2);
    assert_eq!(
        role.template,
        "You fix {{task}}.\n{{#if feedback}}\nFix: {{feedback}}\n{{/if}}"
    );
    let mut vars = BTreeMap::new();
    vars.insert("task", "the index".to_string());
    vars.insert("feedback", String::new());
    assert_eq!(role.render(&vars).unwrap(), "You fix the index.\n");
}

#[test]
fn the_name_defaults_to_the_file_stem_and_front_matter_is_optional() {
    let role = parse_role(Path::new("x/roles/writer.md"), "Write {{request}}\n").unwrap();
    assert_eq!(role.name, "writer");
    assert!(!role.writes_code);
    assert_eq!(role.template, "Write {{request}}");
    let skill = parse_skill(Path::new("skills/tdd.md"), "---\n---\nTests first.").unwrap();
    assert_eq!(
        (skill.name.as_str(), skill.body.as_str()),
        ("tdd", "Tests first.")
    );
    let errs = parse_skill(Path::new("skills/Bad Name.md"), "x").unwrap_err();
    assert_error(
        &errs,
        1,
        1,
        "the file name gives the skill the name \"Bad Name\"",
    );
}

#[test]
fn front_matter_errors_have_the_file_position() {
    let text = "---\nname: dba\ndescripton: x\nwrites_code: yes\nartifacts: [../../etc/passwd, ok.json]\nskills: [Not-An-Id]\n---\nbody\n";
    let errs = parse_role(Path::new("roles/dba.md"), text).unwrap_err();
    assert_error(
        &errs,
        3,
        1,
        "unknown key `descripton` in the front matter of a role; expected one of: name, description, artifacts, profiles, skills, writes_code; did you mean `description`?",
    );
    assert_error(
        &errs,
        4,
        14,
        "`writes_code`: expected `true` or `false`, found the text \"yes\"",
    );
    assert_error(&errs, 5, 13, "`artifacts`: expected a file name");
    assert_error(&errs, 6, 10, "`skills`: invalid skill name \"Not-An-Id\"");
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].to_string().starts_with("roles/dba.md:3:1: "));

    let errs = parse_bible(Path::new("b.md"), "---\nname: b\ntone: [a\n---\n").unwrap_err();
    assert!(errs[0].message.starts_with("invalid YAML"), "{errs:?}");
    assert!(errs[0].line >= 3, "{errs:?}");

    let errs = parse_skill(Path::new("s.md"), "---\nname: s\nbody\n").unwrap_err();
    assert_error(&errs, 1, 1, "never closed");

    let errs = parse_skill(Path::new("s.md"), "---\n- a\n---\n").unwrap_err();
    assert_error(
        &errs,
        2,
        1,
        "expected a mapping of name, tags, roles, found a list",
    );

    let errs = parse_role(Path::new("r.md"), "---\nname: Dev\n---\n").unwrap_err();
    assert_error(&errs, 2, 7, "invalid role name \"Dev\"");
}

#[test]
fn template_errors_point_into_the_file() {
    let text = "---\nname: r\n---\n\nLine one\n  see {{contxt}}\n";
    let errs = parse_role(Path::new("roles/r.md"), text).unwrap_err();
    assert_error(&errs, 6, 7, "unknown placeholder `{{contxt}}`");
    assert!(
        errs[0]
            .message
            .contains("the variables are: request, project")
    );
    let errs = parse_role(Path::new("roles/r.md"), "{{#if task}}\nx\n").unwrap_err();
    assert_error(&errs, 1, 1, "never closed by `{{/if}}`");
}

#[test]
fn a_bible_is_decoded_and_rendered_for_agents() {
    let text = "---\nname: internal-apps\nvalues: [ship small, users first]\ntone: plain and friendly\nconstraints: [no external SaaS]\ndeploy: \"fly deploy --app staging\"\nchecks: [\"npm test\", \"npm run lint\"]\nmodels: [claude-dev]\nskills: [react]\n---\nWe build tools for our colleagues.\n";
    let b = parse_bible(Path::new("bibles/internal-apps.md"), text).unwrap();
    assert_eq!(b.values, ["ship small", "users first"]);
    assert_eq!(b.tone.as_deref(), Some("plain and friendly"));
    assert_eq!(b.constraints, ["no external SaaS"]);
    assert_eq!(b.deploy.as_deref(), Some("fly deploy --app staging"));
    assert_eq!(b.checks, ["npm test", "npm run lint"]);
    assert_eq!(b.models, ["claude-dev"]);
    assert_eq!(b.skills, ["react"]);
    assert_eq!(b.body, "We build tools for our colleagues.");
    let text = b.prompt_text();
    for needle in [
        "# internal-apps",
        "- ship small",
        "Tone: plain and friendly",
        "- no external SaaS",
        "Deployment: fly deploy --app staging",
        "- `npm test`",
        "We build tools",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let errs = parse_bible(Path::new("b.md"), "---\nvalue: [x]\n---\n").unwrap_err();
    assert_error(&errs, 2, 1, "did you mean `values`?");
}

#[test]
fn a_skill_is_decoded() {
    let text =
        "---\ntags: [testing, rust]\nroles: [developer, qa]\n---\nWrite the failing test first.\n";
    let s = parse_skill(Path::new("skills/tdd.md"), text).unwrap();
    assert_eq!(s.name, "tdd");
    assert_eq!(s.tags, ["testing", "rust"]);
    assert_eq!(s.roles, ["developer", "qa"]);
    assert!(s.applies_to("qa") && !s.applies_to("planner"));
    assert_eq!(
        skills_text(&[&s]),
        "## Skill: tdd\n\nWrite the failing test first.\n"
    );
}

#[test]
fn the_builtin_roles_keep_their_contract() {
    let lib = Library::load(None).unwrap();
    let names: Vec<&str> = lib.roles.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "architect",
            "auditor",
            "db",
            "developer",
            "devops",
            "framework-reviewer",
            "planner",
            "qa",
            "researcher",
            "retrospector",
            "reviewer"
        ]
    );
    assert_eq!(BUILTIN_ROLES.len(), names.len());
    let artifacts = |r: &str| lib.role(r).unwrap().artifacts.clone();
    assert_eq!(artifacts("researcher"), ["context.md"]);
    assert_eq!(artifacts("architect"), ["architecture.md"]);
    assert_eq!(artifacts("planner"), ["plan.json"]);
    assert_eq!(artifacts("reviewer"), ["review.json"]);
    assert_eq!(artifacts("qa"), ["qa.json"]);
    assert_eq!(artifacts("auditor"), ["findings.json"]);
    assert_eq!(
        artifacts("framework-reviewer"),
        ["log-analysis.md", "bug-report.md", "fix-plan.md"]
    );
    assert_eq!(artifacts("retrospector"), ["lessons.json"]);
    for r in lib.roles.values() {
        assert!(r.builtin);
        assert!(!r.description.is_empty(), "{}", r.name);
        assert_eq!(
            r.writes_code,
            matches!(r.name.as_str(), "developer" | "devops" | "db"),
            "{}",
            r.name
        );
        for a in &r.artifacts {
            assert!(
                r.template.contains(&format!(".fleet-out/{a}")),
                "{} does not name its artifact {a}",
                r.name
            );
        }
        if !r.writes_code {
            assert!(
                r.template.contains("Write only inside `.fleet-out/`"),
                "{} must be told to write only in .fleet-out/",
                r.name
            );
        }
    }
    let planner = &lib.role("planner").unwrap().template;
    for needle in [
        "\"depends_on\"",
        "\"acceptance\"",
        "\"statements\"",
        "[a-z0-9][a-z0-9_-]*",
    ] {
        assert!(planner.contains(needle), "{needle}");
    }
    for r in ["reviewer", "qa"] {
        let t = &lib.role(r).unwrap().template;
        assert!(t.contains("\"verdict\"") && t.contains("\"bugs\""), "{r}");
    }
    assert!(lib.role("devops").unwrap().template.contains("URL: "));
}

#[test]
fn every_builtin_template_renders_with_the_full_variable_set() {
    let lib = Library::load(None).unwrap();
    for role in lib.roles.values() {
        let full = role
            .render(&all_vars("x"))
            .unwrap_or_else(|e| panic!("{}: {e}", role.name));
        assert!(
            !full.contains("{{"),
            "{}: a tag is left:\n{full}",
            role.name
        );
        assert!(full.contains("<request: x>"), "{}", role.name);
        // The variables every template uses unconditionally; the others may be empty.
        let mut vars: BTreeMap<&str, String> =
            TEMPLATE_VARS.iter().map(|v| (*v, String::new())).collect();
        for v in ["request", "task", "acceptance"] {
            vars.insert(v, format!("<{v}>"));
        }
        let empty = role.render(&vars).unwrap();
        assert!(!empty.contains("{{"), "{}", role.name);
        assert!(
            !empty.contains("\n\n\n"),
            "{}: blank lines pile up:\n{empty}",
            role.name
        );
        // Missing variables are an error naming them.
        let e = role.render(&BTreeMap::new()).unwrap_err();
        assert!(e.contains("unknown placeholder `{{"), "{}: {e}", role.name);
    }
    let planner = lib.role("planner").unwrap();
    let mut vars = all_vars("");
    vars.values_mut().for_each(String::clear);
    vars.insert("request", "add a parser".into());
    let first = planner.render(&vars).unwrap();
    assert!(!first.contains("follow-up"));
    vars.insert("existing_tasks", "- add-parser: done".into());
    vars.insert("cycle", "2".into());
    let later = planner.render(&vars).unwrap();
    assert!(
        later.contains("## This is a follow-up plan (cycle 2)"),
        "{later}"
    );
    assert!(later.contains("only new tasks"));
}

#[test]
fn render_names_an_unknown_placeholder() {
    let vars: BTreeMap<&str, String> = [("request", "r".to_string())].into();
    let e = render("Do {{request}} in {{projct}}", &vars).unwrap_err();
    assert!(e.contains("unknown placeholder `{{projct}}`"), "{e}");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_instance_overrides_and_adds_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "roles/developer.md",
        "---\nwrites_code: true\nskills: [tdd]\ndescription: ours\n---\nOur developer: {{task}}\n",
    );
    write(d, "roles/translator.md", "Translate {{request}}\n");
    write(d, "roles/notes.txt", "not markdown: ignored");
    write(
        d,
        "bibles/apps.md",
        "---\nskills: [tdd, react, style]\n---\nApps.\n",
    );
    write(
        d,
        "skills/tdd.md",
        "---\nroles: [developer, qa]\n---\nTests first.\n",
    );
    write(
        d,
        "skills/react.md",
        "---\nroles: [developer]\n---\nHooks.\n",
    );
    write(
        d,
        "skills/style.md",
        "---\nroles: [planner]\n---\nShort tasks.\n",
    );
    write(d, "skills/git.md", "Small commits.\n");
    write(
        d,
        "skills/review.md",
        "---\nroles: [reviewer, developer]\n---\nLook twice.\n",
    );
    let lib = Library::load(Some(d)).unwrap();
    let dev = lib.role("developer").unwrap();
    assert!(!dev.builtin);
    assert_eq!(dev.description, "ours");
    assert_eq!(dev.path, d.join("roles/developer.md"));
    assert!(lib.role("translator").is_some());
    assert!(lib.role("planner").unwrap().builtin);
    assert_eq!(lib.roles.len(), BUILTIN_ROLES.len() + 1);

    let names = |v: Vec<&fleet_config::Skill>| -> Vec<String> {
        v.into_iter().map(|s| s.name.clone()).collect()
    };
    // The role's own, then the bible's that apply, then those naming the role; once each.
    assert_eq!(
        names(lib.skills_for("developer", Some("apps"))),
        ["tdd", "react", "review"]
    );
    assert_eq!(
        names(lib.skills_for("developer", None)),
        ["tdd", "react", "review"]
    );
    assert_eq!(names(lib.skills_for("planner", Some("apps"))), ["style"]);
    assert_eq!(names(lib.skills_for("qa", Some("apps"))), ["tdd"]);
    assert_eq!(
        names(lib.skills_for("translator", Some("nope"))),
        Vec::<String>::new()
    );
}

#[test]
fn references_and_duplicates_are_checked_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "roles/a.md", "---\nname: twin\nskills: [nope]\n---\n");
    write(d, "roles/b.md", "---\n# a comment\nname: twin\n---\n");
    write(d, "skills/s.md", "---\nroles: [developer, ghost]\n---\n");
    write(d, "bibles/x.md", "---\nskills: [s, missing]\n---\n");
    write(d, "bibles/broken.md", "---\nnme: x\n---\n");
    let errs = Library::load(Some(d)).unwrap_err();
    let rel = |e: &ConfigError| e.file.strip_prefix(d).unwrap().display().to_string();
    let all: Vec<String> = errs
        .iter()
        .map(|e| format!("{}:{}:{}: {}", rel(e), e.line, e.col, e.message))
        .collect();
    let has = |prefix: &str, needle: &str| {
        assert!(
            all.iter()
                .any(|e| e.starts_with(prefix) && e.contains(needle)),
            "{prefix} {needle:?} not in {all:#?}"
        )
    };
    has("roles/b.md:3:7:", "role `twin` is also defined in");
    has(
        "roles/a.md:3:10:",
        "unknown skill `nope`; the known skills are: s",
    );
    has("skills/s.md:2:20:", "unknown role `ghost`");
    has("bibles/x.md:2:13:", "unknown skill `missing`");
    has("bibles/broken.md:2:1:", "unknown key `nme`");
    assert_eq!(all.len(), 5, "{all:#?}");
}

#[test]
fn profiles_named_by_roles_and_bibles_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "roles/r.md",
        "---\nprofiles: [claude-dev, codex, ghost]\n---\n",
    );
    write(
        d,
        "bibles/b.md",
        "---\nmodels: [claude-dev, phantom]\n---\n",
    );
    let lib = Library::load(Some(d)).unwrap();
    let cfg = parse_instance(
        Path::new("fleet.yaml"),
        "agents:\n  claude-dev:\n    cli: claude\n",
    )
    .unwrap();
    let errs = lib.unknown_profiles(&cfg);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_error(
        &errs,
        2,
        31,
        "`profiles`: `ghost` is neither an agent profile",
    );
    assert_error(&errs, 2, 22, "`models`: `phantom`");
}
