//! The block of lessons put into an attempt's prompt.

use crate::lesson::Lesson;

/// Markdown naming each lesson by id (so the attempt can cite it and Fleet can record it);
/// empty when there is none.
pub fn lessons_block(lessons: &[Lesson]) -> String {
    if lessons.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## Lessons from earlier work\n\nFleet learned these from earlier tasks' outcomes; \
         follow them unless this task says otherwise.\n\n",
    );
    for l in lessons {
        out.push_str(&format!("- [{}] {}\n", l.id, l.text.replace('\n', " ")));
    }
    out
}
