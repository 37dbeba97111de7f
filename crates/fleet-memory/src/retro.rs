//! The retrospector's artifact (`lessons.json`, `docs/lessons.schema.json`): 0-3 lessons
//! drawn from a task's trouble, and turning them into [`Lesson`]s with their provenance.

use crate::lesson::{AppliesWhen, Lesson, Millis, Provenance, Scope};
use serde::{Deserialize, Serialize};

/// Most lessons one retrospective may write.
pub const MAX_LESSONS: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonsFile {
    pub lessons: Vec<LessonDraft>,
}

/// Which scope a retrospector may name; the project's bible and name are Fleet's to fill in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftScope {
    Project,
    Bible,
    Instance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonDraft {
    pub scope: DraftScope,
    #[serde(default)]
    pub applies_when: AppliesWhen,
    pub lesson: String,
}

/// Where the trouble happened: fills in the scopes' names and the provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub project: String,
    pub bible: Option<String>,
    pub run: String,
    pub task: String,
    pub attempt: u32,
    pub at: Millis,
}

/// Parses and checks a `lessons.json`; the error says what is wrong.
pub fn parse(text: &str) -> Result<LessonsFile, String> {
    let file: LessonsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.lessons.len() > MAX_LESSONS {
        return Err(format!(
            "at most {MAX_LESSONS} lessons; this file has {}",
            file.lessons.len()
        ));
    }
    for (i, l) in file.lessons.iter().enumerate() {
        if l.lesson.trim().is_empty() {
            return Err(format!("lessons[{i}].lesson is empty"));
        }
        if l.lesson.chars().count() > crate::db::MAX_LESSON_CHARS {
            return Err(format!(
                "lessons[{i}].lesson is longer than {} characters",
                crate::db::MAX_LESSON_CHARS
            ));
        }
    }
    Ok(file)
}

/// The drafts as lessons; a `bible` draft of a project without a bible falls to the project.
pub fn to_lessons(file: LessonsFile, origin: &Origin) -> Vec<Lesson> {
    file.lessons
        .into_iter()
        .map(|d| {
            let scope = match (d.scope, &origin.bible) {
                (DraftScope::Instance, _) => Scope::Instance,
                (DraftScope::Bible, Some(b)) => Scope::Bible(b.clone()),
                _ => Scope::Project(origin.project.clone()),
            };
            Lesson::new(
                scope,
                d.applies_when,
                d.lesson.trim().to_string(),
                Provenance {
                    source: "retrospective".into(),
                    run: Some(origin.run.clone()),
                    task: Some(origin.task.clone()),
                    attempt: Some(origin.attempt),
                    at: origin.at,
                },
            )
        })
        .collect()
}
