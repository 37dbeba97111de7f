//! A person's side of skill proposals: the rules propose a lesson that kept helping
//! ([`crate::rules::due_for_proposal`]); nothing becomes a skill until a person approves it
//! (`fleet memory approve`, the dashboard), which writes `skills/<name>.md` in the instance
//! home in the format the skill loader reads. Dismissed, it is never proposed again.

use crate::db::{MemoryDb, MemoryError, Result};
use crate::lesson::{Lesson, Millis};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A lesson waiting for a person's word.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub id: String,
    pub scope: String,
    pub text: String,
    pub used: u32,
    pub helped: u32,
    pub proposed_at: Millis,
    /// The skill name `approve` uses when none is given.
    pub name: String,
}

/// Whether a lesson is a pending proposal: proposed, live, neither approved nor dismissed.
pub fn is_pending(l: &Lesson) -> bool {
    l.proposed_at.is_some()
        && !l.is_archived()
        && l.promoted_to.is_none()
        && l.dismissed_at.is_none()
}

/// The default skill name of a lesson: `lesson-` and its id's hex digits.
pub fn default_name(l: &Lesson) -> String {
    format!("lesson-{}", l.id.trim_start_matches("L-").to_lowercase())
}

/// A skill name is a file name too: lowercase letters, digits, `-` and `_`, at most 64.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(MemoryError::Invalid(format!(
            "skill name {name:?}: lowercase letters, digits, `-` and `_`, at most 64 characters"
        )))
    }
}

/// The skill file for a lesson: front matter (`name`, `tags`, `roles`) the loader reads,
/// then the lesson's text. Lists are written as JSON, which is YAML, so no role or word
/// needs quoting rules of its own.
pub fn skill_markdown(l: &Lesson, name: &str) -> String {
    let roles = serde_json::to_string(&l.applies_when.roles).expect("strings");
    format!(
        "---\nname: {name}\ntags: [\"lesson\"]\nroles: {roles}\n---\n{}\n\n(Approved from lesson {}, which helped {} of {} attempts it was given to.)\n",
        l.text.trim(),
        l.id,
        l.helped,
        l.used
    )
}

impl MemoryDb {
    /// Pending proposals, oldest proposal first.
    pub fn proposals(&self) -> Result<Vec<Proposal>> {
        let mut out: Vec<Proposal> = self
            .lessons(false)?
            .into_iter()
            .filter(is_pending)
            .map(|l| Proposal {
                name: default_name(&l),
                id: l.id,
                scope: l.scope.key(),
                text: l.text,
                used: l.used,
                helped: l.helped,
                proposed_at: l.proposed_at.unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| (a.proposed_at, &a.id).cmp(&(b.proposed_at, &b.id)));
        Ok(out)
    }

    fn pending(&self, id: &str) -> Result<Lesson> {
        let l = self
            .lesson(id)?
            .ok_or_else(|| MemoryError::NoLesson(id.into()))?;
        if !is_pending(&l) {
            return Err(MemoryError::Invalid(format!(
                "lesson {id} is not a pending skill proposal (see `fleet memory proposals`)"
            )));
        }
        Ok(l)
    }

    /// Approves a proposal: writes `<home>/skills/<name>.md` (never over an existing file),
    /// then archives the lesson as promoted, so it is not injected twice. Returns the path.
    pub fn approve(
        &mut self,
        home: &Path,
        id: &str,
        name: Option<&str>,
        now: Millis,
    ) -> Result<PathBuf> {
        let mut l = self.pending(id)?;
        let name = name.map_or_else(|| default_name(&l), str::to_string);
        check_name(&name)?;
        let path = write_new(&home.join("skills"), &name, &skill_markdown(&l, &name))?;
        l.promoted_to = Some(name.clone());
        l.archived_at = Some(now);
        l.archived_why = Some(format!("promoted to the skill {name}"));
        self.restore_lesson(&l)?;
        Ok(path)
    }

    /// Dismisses a proposal: the lesson stays (and is still injected), never proposed again.
    pub fn dismiss(&mut self, id: &str, now: Millis) -> Result<Lesson> {
        let mut l = self.pending(id)?;
        l.dismissed_at = Some(now);
        self.restore_lesson(&l)?;
        Ok(l)
    }
}

/// Writes `dir/<name>.md` whole or not at all, and never over an existing file: the text goes
/// to a temporary file first, then is hard-linked into place, which fails if the name exists.
fn write_new(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let io = |p: &Path, e: std::io::Error| MemoryError::Invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(format!("{name}.md"));
    if path.exists() {
        return Err(exists(&path));
    }
    let tmp = dir.join(format!(".{name}.md.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(&path)),
        Err(e) => Err(io(&path, e)),
    }
}

fn exists(path: &Path) -> MemoryError {
    MemoryError::Invalid(format!(
        "{} already exists; a skill is never overwritten (choose another name with --name)",
        path.display()
    ))
}
