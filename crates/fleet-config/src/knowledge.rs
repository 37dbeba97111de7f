//! Knowledge files: roles, bibles and skills — Markdown with YAML front matter.
//!
//! ```text
//! ---
//! name: developer            # front matter: YAML between two `---` lines
//! writes_code: true
//! ---
//! The body: a role's prompt template, a bible's text for agents, a skill's knowledge.
//! ```
//!
//! Built-in roles are compiled in from `defaults/roles/*.md`; an instance's `roles/`, `bibles/`
//! and `skills/` directories add files or replace built-ins by name. Errors name
//! `file:line:col` of the whole file (the front matter's lines are counted from the opening
//! `---`), and references between files (a role's skills, a skill's roles) are checked.

use crate::decode::{Decoder, Field};
use crate::instance::string_list_spanned;
use crate::template::{self, TEMPLATE_VARS};
use crate::yaml::{self, Node, ScalarKind, Value};
use crate::{CLIS, ConfigError, InstanceConfig, Location};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The built-in roles: `(name, file text)`.
pub const BUILTIN_ROLES: &[(&str, &str)] = &[
    (
        "researcher",
        include_str!("../defaults/roles/researcher.md"),
    ),
    ("architect", include_str!("../defaults/roles/architect.md")),
    ("planner", include_str!("../defaults/roles/planner.md")),
    ("developer", include_str!("../defaults/roles/developer.md")),
    ("reviewer", include_str!("../defaults/roles/reviewer.md")),
    ("qa", include_str!("../defaults/roles/qa.md")),
    ("devops", include_str!("../defaults/roles/devops.md")),
    ("db", include_str!("../defaults/roles/db.md")),
    ("auditor", include_str!("../defaults/roles/auditor.md")),
    (
        "framework-reviewer",
        include_str!("../defaults/roles/framework-reviewer.md"),
    ),
    (
        "retrospector",
        include_str!("../defaults/roles/retrospector.md"),
    ),
];

/// Where built-in files are said to be in errors.
const BUILTIN_DIR: &str = "(built-in)";

pub(crate) const ROLE_KEYS: &[&str] = &[
    "name",
    "description",
    "artifacts",
    "profiles",
    "skills",
    "writes_code",
];
pub(crate) const BIBLE_KEYS: &[&str] = &[
    "name",
    "values",
    "tone",
    "constraints",
    "deploy",
    "checks",
    "models",
    "skills",
    "policies",
];
pub(crate) const SKILL_KEYS: &[&str] = &["name", "tags", "roles"];

/// A name one file gives for something defined elsewhere, kept to check it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    key: &'static str,
    name: String,
    at: Location,
}

/// What an agent playing a role is told, and what it must hand back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    /// File names the agent must write under `.fleet-out/` in its worktree.
    pub artifacts: Vec<String>,
    /// Profiles allowed to play the role besides those whose `roles:` in fleet.yaml name it.
    pub profiles: Vec<String>,
    /// Skills always given to this role.
    pub skills: Vec<String>,
    /// Whether the role changes the project's files (developer, devops, db) or only writes
    /// its artifacts (researcher, architect, planner, reviewer, qa).
    pub writes_code: bool,
    /// The prompt template (the file's body); see [`crate::render`].
    pub template: String,
    /// The file it came from (`(built-in)/roles/<name>.md` for built-ins).
    pub path: PathBuf,
    pub builtin: bool,
    /// Where the name is given (`name:`, or 1:1 when it is the file's stem).
    pub location: Location,
    refs: Vec<Ref>,
}

impl Role {
    /// The role's prompt for these variables; see [`crate::render`].
    pub fn render(&self, vars: &BTreeMap<&str, String>) -> Result<String, String> {
        template::render(&self.template, vars)
    }
}

/// A vertical (value stream): who we are, for whom, how and where things ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bible {
    pub name: String,
    pub values: Vec<String>,
    pub tone: Option<String>,
    pub constraints: Vec<String>,
    /// Where and how to deploy, in words or as a command.
    pub deploy: Option<String>,
    /// Default checks (shell commands) of the bible's projects.
    pub checks: Vec<String>,
    /// Preferred agent profiles.
    pub models: Vec<String>,
    pub skills: Vec<String>,
    /// Always-on rules of the bible's projects (added to the instance's and the project's).
    pub policies: Vec<crate::PolicyRule>,
    /// Free text given to agents.
    pub body: String,
    pub path: PathBuf,
    pub location: Location,
    refs: Vec<Ref>,
}

impl Bible {
    /// The bible as agents read it (the `bible` template variable): its values, tone,
    /// constraints, deployment and default checks, then its text.
    pub fn prompt_text(&self) -> String {
        let mut out = format!("# {}\n", self.name);
        let list = |out: &mut String, title: &str, items: &[String], code: bool| {
            if !items.is_empty() {
                out.push_str(&format!("\n{title}:\n"));
                for item in items {
                    if code {
                        out.push_str(&format!("- `{item}`\n"));
                    } else {
                        out.push_str(&format!("- {item}\n"));
                    }
                }
            }
        };
        list(&mut out, "Values", &self.values, false);
        if let Some(tone) = &self.tone {
            out.push_str(&format!("\nTone: {tone}\n"));
        }
        list(&mut out, "Constraints", &self.constraints, false);
        if let Some(deploy) = &self.deploy {
            out.push_str(&format!("\nDeployment: {deploy}\n"));
        }
        list(&mut out, "Checks that must pass", &self.checks, true);
        if !self.body.is_empty() {
            out.push('\n');
            out.push_str(&self.body);
            out.push('\n');
        }
        out
    }
}

/// Knowledge injected into prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    pub tags: Vec<String>,
    /// Roles the skill applies to; empty: every role.
    pub roles: Vec<String>,
    pub body: String,
    pub path: PathBuf,
    pub location: Location,
    refs: Vec<Ref>,
}

impl Skill {
    /// Whether the skill is meant for `role` (its `roles` name it, or are empty).
    pub fn applies_to(&self, role: &str) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| r == role)
    }
}

/// Skills as agents read them (the `skills` template variable), one section each.
pub fn skills_text(skills: &[&Skill]) -> String {
    let mut out = String::new();
    for skill in skills {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("## Skill: {}\n\n{}\n", skill.name, skill.body));
    }
    out
}

/// Every role, bible and skill an instance knows, by name. ([`Library::default`] is empty:
/// [`Library::load`] adds the built-in roles.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Library {
    pub roles: BTreeMap<String, Role>,
    pub bibles: BTreeMap<String, Bible>,
    pub skills: BTreeMap<String, Skill>,
}

impl Library {
    /// The built-in roles, then the instance's `roles/*.md`, `bibles/*.md` and `skills/*.md`
    /// (each directory optional), which add to them or replace them by name. Every error of
    /// every file is returned, with references between files checked.
    pub fn load(instance_dir: Option<&Path>) -> Result<Library, Vec<ConfigError>> {
        let mut lib = Library::default();
        let mut errors = Vec::new();
        for (name, text) in BUILTIN_ROLES {
            let path = Path::new(BUILTIN_DIR)
                .join("roles")
                .join(format!("{name}.md"));
            match parse_role(&path, text) {
                Ok(mut role) => {
                    role.builtin = true;
                    lib.roles.insert(role.name.clone(), role);
                }
                Err(e) => errors.extend(e),
            }
        }
        if let Some(dir) = instance_dir {
            let mut seen: HashMap<(&str, String), PathBuf> = HashMap::new();
            let mut first =
                |kind: &'static str, name: &str, path: &Path, at, errors: &mut Vec<_>| match seen
                    .get(&(kind, name.to_string()))
                {
                    Some(other) => {
                        errors.push(ConfigError::new(
                            path,
                            at,
                            format!(
                                "{kind} `{name}` is also defined in {}; a name may be defined once",
                                other.display()
                            ),
                        ));
                        false
                    }
                    None => {
                        seen.insert((kind, name.to_string()), path.to_path_buf());
                        true
                    }
                };
            for path in markdown_files(&dir.join("roles"), &mut errors) {
                let parsed = read(&path).and_then(|text| parse_role(&path, &text));
                match parsed {
                    Ok(role) => {
                        if first("role", &role.name, &path, role.location, &mut errors) {
                            lib.roles.insert(role.name.clone(), role);
                        }
                    }
                    Err(e) => errors.extend(e),
                }
            }
            for path in markdown_files(&dir.join("bibles"), &mut errors) {
                match read(&path).and_then(|text| parse_bible(&path, &text)) {
                    Ok(bible) => {
                        if first("bible", &bible.name, &path, bible.location, &mut errors) {
                            lib.bibles.insert(bible.name.clone(), bible);
                        }
                    }
                    Err(e) => errors.extend(e),
                }
            }
            for path in markdown_files(&dir.join("skills"), &mut errors) {
                match read(&path).and_then(|text| parse_skill(&path, &text)) {
                    Ok(skill) => {
                        if first("skill", &skill.name, &path, skill.location, &mut errors) {
                            lib.skills.insert(skill.name.clone(), skill);
                        }
                    }
                    Err(e) => errors.extend(e),
                }
            }
        }
        lib.check_references(&mut errors);
        if errors.is_empty() {
            Ok(lib)
        } else {
            errors.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
            Err(errors)
        }
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn bible(&self, name: &str) -> Option<&Bible> {
        self.bibles.get(name)
    }

    pub fn skill(&self, name: &str) -> Option<&Skill> {
        self.skills.get(name)
    }

    /// The skills an agent playing `role` under `bible` is given, each once, in this order:
    /// the role's own `skills`, then the bible's `skills` that apply to the role, then every
    /// skill whose `roles` name the role (by name). A skill with no `roles` applies to every
    /// role but is given only where a role or a bible names it.
    pub fn skills_for(&self, role: &str, bible: Option<&str>) -> Vec<&Skill> {
        let own = self.role(role).into_iter().flat_map(|r| &r.skills);
        let own = own.filter_map(|name| self.skill(name));
        let of_bible = bible.and_then(|b| self.bible(b)).into_iter();
        let of_bible = of_bible
            .flat_map(|b| &b.skills)
            .filter_map(|name| self.skill(name))
            .filter(|s| s.applies_to(role));
        let naming = self
            .skills
            .values()
            .filter(|s| s.roles.iter().any(|r| r == role));
        let mut out: Vec<&Skill> = Vec::new();
        for skill in own.chain(of_bible).chain(naming) {
            if !out.iter().any(|s| s.name == skill.name) {
                out.push(skill);
            }
        }
        out
    }

    /// Roles' `profiles` and bibles' `models` that name neither a profile of `instance` nor
    /// an agent CLI (a bare CLI name is a default profile).
    pub fn unknown_profiles(&self, instance: &InstanceConfig) -> Vec<ConfigError> {
        let known = |name: &str| instance.profile(name).is_some() || CLIS.contains(&name);
        let defined: Vec<&str> = instance.agents.iter().map(|p| p.name.as_str()).collect();
        let defined = if defined.is_empty() {
            "none".to_string()
        } else {
            defined.join(", ")
        };
        let mut errors = Vec::new();
        let refs = self
            .roles
            .values()
            .flat_map(|r| r.refs.iter().map(move |x| (&r.path, x)))
            .chain(
                self.bibles
                    .values()
                    .flat_map(|b| b.refs.iter().map(move |x| (&b.path, x))),
            );
        for (path, r) in refs {
            if (r.key == "profiles" || r.key == "models") && !known(&r.name) {
                errors.push(ConfigError::new(
                    path,
                    r.at,
                    format!(
                        "`{}`: `{}` is neither an agent profile of the instance (defined: {defined}) nor an agent CLI",
                        r.key, r.name
                    ),
                ));
            }
        }
        errors
    }

    fn check_references(&self, errors: &mut Vec<ConfigError>) {
        let skills: Vec<&str> = self.skills.keys().map(String::as_str).collect();
        let roles: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        let missing = |what: &str, name: &str, known: &[&str]| {
            format!(
                "unknown {what} `{name}`; the known {what}s are: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        };
        let mut check = |path: &Path, refs: &[Ref]| {
            for r in refs {
                let (what, known) = match r.key {
                    "skills" => ("skill", &skills),
                    "roles" => ("role", &roles),
                    _ => continue,
                };
                if !known.contains(&r.name.as_str()) {
                    errors.push(ConfigError::new(path, r.at, missing(what, &r.name, known)));
                }
            }
        };
        for r in self.roles.values() {
            check(&r.path, &r.refs);
        }
        for b in self.bibles.values() {
            check(&b.path, &b.refs);
        }
        for s in self.skills.values() {
            check(&s.path, &s.refs);
        }
    }
}

fn read(path: &Path) -> Result<String, Vec<ConfigError>> {
    crate::read_text(path, "the file").map_err(|e| vec![e])
}

/// The `*.md` files of `dir`, sorted; none when it does not exist.
fn markdown_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    let start = Location { line: 1, col: 1 };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(ConfigError::new(
                dir,
                start,
                format!("cannot list the directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
        .collect();
    files.sort();
    files
}

/// A Markdown file split into its front matter and its body.
pub(crate) struct Document<'t> {
    /// `None`: no front matter, or an empty one.
    pub front: Option<Node>,
    /// Without leading blank lines and trailing whitespace.
    pub body: &'t str,
    /// The 1-based line of the body's first character in the file.
    pub body_line: usize,
}

/// Splits `text` at its front matter: a first line `---`, YAML, and a line `---`. The
/// front matter's nodes carry their line in the whole file.
pub(crate) fn split_front_matter<'t>(
    path: &Path,
    text: &'t str,
) -> Result<Document<'t>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let (front, mut body_start, mut body_line) = match lines.next() {
        Some(first) if first.trim_end() == "---" => {
            let mut offset = first.len();
            let mut line = 1;
            let mut close = None;
            for l in lines {
                line += 1;
                if l.trim_end() == "---" {
                    close = Some((offset, offset + l.len()));
                    break;
                }
                offset += l.len();
            }
            let Some((yaml_end, body_start)) = close else {
                return Err(ConfigError::new(
                    path,
                    Location { line: 1, col: 1 },
                    "the front matter opened by `---` on line 1 is never closed; expected a line `---` after it",
                ));
            };
            // One empty line stands for the opening `---`, so positions are the file's.
            let yaml_text = format!("\n{}", &text[first.len()..yaml_end]);
            let front =
                yaml::parse(&yaml_text).map_err(|e| ConfigError::new(path, e.loc, e.message))?;
            (front, body_start, line + 1)
        }
        _ => (None, 0, 1),
    };
    // Leading blank lines are not part of the body.
    while let Some(nl) = text[body_start..].find('\n') {
        if !text[body_start..body_start + nl].trim().is_empty() {
            break;
        }
        body_start += nl + 1;
        body_line += 1;
    }
    Ok(Document {
        front,
        body: text[body_start..].trim_end(),
        body_line,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Role,
    Bible,
    Skill,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Bible => "bible",
            Kind::Skill => "skill",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Role => ROLE_KEYS,
            Kind::Bible => BIBLE_KEYS,
            Kind::Skill => SKILL_KEYS,
        }
    }
}

/// What every kind of knowledge file has.
struct Common<'t> {
    name: String,
    location: Location,
    body: &'t str,
    body_line: usize,
}

/// Decodes the front matter of a knowledge file: `name` here, every other known key through
/// `field`. Returns `None` when errors were recorded.
fn decode<'t>(
    d: &mut Decoder<'_>,
    text: &'t str,
    kind: Kind,
    mut field: impl FnMut(&mut Decoder<'_>, &Field<'_>),
) -> Option<Common<'t>> {
    let label = kind.label();
    let doc = match split_front_matter(d.file, text) {
        Ok(doc) => doc,
        Err(e) => {
            d.errors.push(e);
            return None;
        }
    };
    let start = Location { line: 1, col: 1 };
    let mut name = None;
    let mut name_given = false;
    if let Some(front) = &doc.front {
        let context = format!("in the front matter of a {label}");
        let expected = format!("a mapping of {}", kind.keys().join(", "));
        if let Some(fields) = d.fields(front, kind.keys(), &context, &expected) {
            for f in &fields.list {
                if f.key == "name" {
                    name_given = true;
                    name = d.id(f.value, "name", &format!("{label} name"));
                } else {
                    field(d, f);
                }
            }
        }
    }
    let name = match name {
        Some(n) => Some((n.value, n.at)),
        None if name_given => None,
        None => {
            let stem = d
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match fleet_core::validate_id(&stem) {
                Ok(()) => Some((stem, start)),
                Err(e) => {
                    d.error(
                        start,
                        format!(
                            "the file name gives the {label} the name {stem:?}, which is invalid: {e}; \
                             rename the file or give a `name:` in the front matter"
                        ),
                    );
                    None
                }
            }
        }
    };
    let (name, location) = name?;
    if !d.errors.is_empty() {
        return None;
    }
    Some(Common {
        name,
        location,
        body: doc.body,
        body_line: doc.body_line,
    })
}

fn finish<T>(d: Decoder<'_>, value: Option<T>) -> Result<T, Vec<ConfigError>> {
    match value {
        Some(v) if d.errors.is_empty() => Ok(v),
        _ => {
            let mut errors = d.errors;
            errors.sort_by_key(ConfigError::location);
            Err(errors)
        }
    }
}

fn decoder(path: &Path) -> Decoder<'_> {
    Decoder {
        file: path,
        base_dir: None,
        errors: Vec::new(),
    }
}

/// A list of names, each a valid id, with its position.
fn name_list(d: &mut Decoder<'_>, node: &Node, key: &'static str, what: &str) -> Vec<Ref> {
    string_list_spanned(d, node, key)
        .into_iter()
        .filter_map(|(name, at)| match fleet_core::validate_id(&name) {
            Ok(()) => Some(Ref { key, name, at }),
            Err(e) => {
                d.error(at, format!("`{key}`: invalid {what} name {name:?}: {e}"));
                None
            }
        })
        .collect()
}

fn texts(d: &mut Decoder<'_>, node: &Node, key: &str) -> Vec<String> {
    string_list_spanned(d, node, key)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn names(refs: &[Ref], key: &str) -> Vec<String> {
    refs.iter()
        .filter(|r| r.key == key)
        .map(|r| r.name.clone())
        .collect()
}

/// Parses a role file. Its body is a template checked against [`TEMPLATE_VARS`].
pub fn parse_role(path: &Path, text: &str) -> Result<Role, Vec<ConfigError>> {
    let mut d = decoder(path);
    let mut description = String::new();
    let mut artifacts = Vec::new();
    let mut writes_code = false;
    let mut refs = Vec::new();
    let common = decode(&mut d, text, Kind::Role, |d, f| match f.key {
        "description" => {
            if let Some(s) = d.text(f.value, "description") {
                description = s.value;
            }
        }
        "artifacts" => {
            for (file, at) in string_list_spanned(d, f.value, "artifacts") {
                let plain =
                    !file.starts_with('.') && !file.contains(['/', '\\']) && file.trim() == file;
                if plain {
                    artifacts.push(file);
                } else {
                    d.error(
                        at,
                        format!(
                            "`artifacts`: expected a file name the agent writes under `.fleet-out/` (like `plan.json`), found {file:?}"
                        ),
                    );
                }
            }
        }
        "profiles" => refs.extend(name_list(d, f.value, "profiles", "profile")),
        "skills" => refs.extend(name_list(d, f.value, "skills", "skill")),
        "writes_code" => match &f.value.value {
            Value::Scalar {
                kind: ScalarKind::Bool,
                text,
            } => writes_code = text.eq_ignore_ascii_case("true"),
            _ => d.error(
                f.value.loc,
                format!(
                    "`writes_code`: expected `true` or `false`, found {}",
                    f.value.describe()
                ),
            ),
        },
        _ => unreachable!("fields() keeps known keys only"),
    });
    let role = common.and_then(|c| {
        if let Err(e) = template::check(c.body, TEMPLATE_VARS) {
            let (line, col) = template::position(c.body, e.offset);
            let at = Location {
                line: c.body_line + line - 1,
                col,
            };
            d.error(
                at,
                format!(
                    "in the role's template: {}; the variables are: {}",
                    e.message,
                    TEMPLATE_VARS.join(", ")
                ),
            );
            return None;
        }
        Some(Role {
            name: c.name,
            description,
            artifacts,
            profiles: names(&refs, "profiles"),
            skills: names(&refs, "skills"),
            writes_code,
            template: c.body.to_string(),
            path: path.to_path_buf(),
            builtin: false,
            location: c.location,
            refs,
        })
    });
    finish(d, role)
}

/// Parses a bible file.
pub fn parse_bible(path: &Path, text: &str) -> Result<Bible, Vec<ConfigError>> {
    let mut d = decoder(path);
    let (mut values, mut constraints, mut checks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tone, mut deploy) = (None, None);
    let mut refs = Vec::new();
    let mut policies = Vec::new();
    let common = decode(&mut d, text, Kind::Bible, |d, f| match f.key {
        "policies" => policies = crate::policies::policies(d, f.value),
        "values" => values = texts(d, f.value, "values"),
        "constraints" => constraints = texts(d, f.value, "constraints"),
        "tone" => tone = d.text(f.value, "tone").map(|s| s.value),
        "deploy" => deploy = d.text(f.value, "deploy").map(|s| s.value),
        "checks" => checks = d.checks(f.value).unwrap_or_default(),
        "models" => refs.extend(name_list(d, f.value, "models", "agent profile")),
        "skills" => refs.extend(name_list(d, f.value, "skills", "skill")),
        _ => unreachable!("fields() keeps known keys only"),
    });
    let bible = common.map(|c| Bible {
        name: c.name,
        values,
        tone,
        constraints,
        deploy,
        checks,
        models: names(&refs, "models"),
        skills: names(&refs, "skills"),
        policies,
        body: c.body.to_string(),
        path: path.to_path_buf(),
        location: c.location,
        refs,
    });
    finish(d, bible)
}

/// Parses a skill file.
pub fn parse_skill(path: &Path, text: &str) -> Result<Skill, Vec<ConfigError>> {
    let mut d = decoder(path);
    let mut tags = Vec::new();
    let mut refs = Vec::new();
    let common = decode(&mut d, text, Kind::Skill, |d, f| match f.key {
        "tags" => tags = texts(d, f.value, "tags"),
        "roles" => refs.extend(name_list(d, f.value, "roles", "role")),
        _ => unreachable!("fields() keeps known keys only"),
    });
    let skill = common.map(|c| Skill {
        name: c.name,
        tags,
        roles: names(&refs, "roles"),
        body: c.body.to_string(),
        path: path.to_path_buf(),
        location: c.location,
        refs,
    });
    finish(d, skill)
}
