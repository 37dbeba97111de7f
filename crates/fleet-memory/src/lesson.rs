//! What a lesson is: the data every rule and the store work on.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the rules never read a clock, they are handed the time.
pub type Millis = i64;

/// Where a lesson applies: to every project of the instance, to the projects sharing a bible,
/// or to one project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Scope {
    Instance,
    Bible(String),
    Project(String),
}

impl Scope {
    /// `instance`, `bible:NAME` or `project:NAME`: how the CLI and the store write it.
    pub fn key(&self) -> String {
        match self {
            Scope::Instance => "instance".into(),
            Scope::Bible(b) => format!("bible:{b}"),
            Scope::Project(p) => format!("project:{p}"),
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text.split_once(':') {
            None if text == "instance" => Some(Scope::Instance),
            Some(("bible", n)) if !n.is_empty() => Some(Scope::Bible(n.into())),
            Some(("project", n)) if !n.is_empty() => Some(Scope::Project(n.into())),
            _ => None,
        }
    }
}

/// When a lesson is relevant. Empty lists match anything; a lesson whose every list is empty
/// is relevant by its words alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppliesWhen {
    /// Path prefixes or globs with `*` (`src/api/`, `*.sql`).
    pub paths: Vec<String>,
    /// Roles (`developer`, `reviewer`).
    pub roles: Vec<String>,
    /// Kinds of task (`bugfix`, `feature`, `migration`).
    pub kinds: Vec<String>,
    /// Words in the task's text that call for it.
    pub words: Vec<String>,
}

/// Where a lesson came from: the attempt whose outcome taught it (empty for a person's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Provenance {
    /// `retrospective`, `person`, `import`.
    pub source: String,
    pub run: Option<String>,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lesson {
    /// `L-` followed by 12 hex digits of a hash of the first text, scope and time: stable
    /// across export and import.
    pub id: String,
    pub scope: Scope,
    pub applies_when: AppliesWhen,
    pub text: String,
    /// Every origin, merged duplicates' included, oldest first.
    pub provenance: Vec<Provenance>,
    /// Multiplies relevance when lessons are ranked; starts at 1, grows when injected lessons
    /// help, shrinks when they do not or are not used.
    pub weight: f64,
    pub created_at: Millis,
    /// Injected this many times.
    pub used: u32,
    /// Of those, the attempt then passed.
    pub helped: u32,
    pub last_used_at: Option<Millis>,
    /// Archived is not deleted: `fleet memory ls --archived` shows it, search skips it.
    pub archived_at: Option<Millis>,
    pub archived_why: Option<String>,
    /// When a person was asked to make it a skill (never promoted without them).
    pub proposed_at: Option<Millis>,
    /// The skill a person made of it (`skills/<name>.md`); the lesson is then archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_to: Option<String>,
    /// A person declined the proposal: it is not proposed again (and stays a lesson).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_at: Option<Millis>,
}

impl Lesson {
    pub fn new(
        scope: Scope,
        applies_when: AppliesWhen,
        text: String,
        provenance: Provenance,
    ) -> Lesson {
        let at = provenance.at;
        Lesson {
            id: lesson_id(&scope, &text, at),
            scope,
            applies_when,
            text,
            provenance: vec![provenance],
            weight: 1.0,
            created_at: at,
            used: 0,
            helped: 0,
            last_used_at: None,
            archived_at: None,
            archived_why: None,
            proposed_at: None,
            promoted_to: None,
            dismissed_at: None,
        }
    }

    pub fn is_archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

/// FNV-1a: stable across builds and platforms (std's hasher is not).
fn lesson_id(scope: &Scope, text: &str, at: Millis) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in scope
        .key()
        .bytes()
        .chain([0])
        .chain(text.bytes())
        .chain(at.to_le_bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("L-{:012x}", h & 0xffff_ffff_ffff)
}
