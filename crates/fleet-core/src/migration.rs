//! Migration mode: the read-only legacy contour. Research and architect agents study an
//! existing codebase and write eight documents to a fixed directory; nothing else may change
//! until a person approves them. These are the pure parts: which documents, who writes them,
//! where they live, and which changed paths break the read-only rule.

use crate::epic::Stage;

/// The documents a research agent writes (what the legacy system is, and what it lacks).
pub const RESEARCH_DOCS: [&str; 4] = [
    "legacy-snapshot",
    "legacy-tech-spec",
    "legacy-gap-report",
    "legacy-risk-assessment",
];

/// The documents an architect writes (how to move, what a person approves, how to go back).
pub const ARCHITECT_DOCS: [&str; 4] = [
    "legacy-migration-plan",
    "legacy-migration-proposal",
    "approval",
    "rollback-plan",
];

/// All eight, in the order a reader takes them.
pub const DOCUMENTS: [&str; 8] = [
    RESEARCH_DOCS[0],
    RESEARCH_DOCS[1],
    RESEARCH_DOCS[2],
    RESEARCH_DOCS[3],
    ARCHITECT_DOCS[0],
    ARCHITECT_DOCS[1],
    ARCHITECT_DOCS[2],
    ARCHITECT_DOCS[3],
];

/// The one document the reviewer of the implementation checks the work against, beside its
/// tasks' criteria.
pub const ROLLBACK_PLAN: &str = "rollback-plan";

/// The documents `stage` writes in migration mode (none for any other stage).
pub fn documents_of(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Research => &RESEARCH_DOCS,
        Stage::Architect => &ARCHITECT_DOCS,
        _ => &[],
    }
}

/// Where an epic's documents live in the repository (no trailing slash).
pub fn docs_dir(epic: &str) -> String {
    format!("docs/migration/{epic}")
}

/// The repository path of one document.
pub fn doc_path(epic: &str, doc: &str) -> String {
    format!("{}/{doc}.md", docs_dir(epic))
}

/// The changed `paths` that break the read-only rule: everything outside `dir` (a path that
/// only starts with the directory's name, such as `docs/migration/e1x/…` for `e1`, is outside).
pub fn outside_docs<'a>(paths: &'a [String], dir: &str) -> Vec<&'a str> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    paths
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && !p.starts_with(&prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_documents_are_split_between_research_and_architect() {
        let mut all: Vec<&str> = documents_of(Stage::Research).to_vec();
        all.extend(documents_of(Stage::Architect));
        assert_eq!(all, DOCUMENTS);
        assert!(documents_of(Stage::Plan).is_empty());
        assert!(DOCUMENTS.contains(&ROLLBACK_PLAN));
        assert_eq!(doc_path("e3", "approval"), "docs/migration/e3/approval.md");
    }

    #[test]
    fn only_paths_inside_the_directory_are_allowed() {
        let paths: Vec<String> = [
            "docs/migration/e1/approval.md",
            "docs/migration/e1x/notes.md",
            "src/main.rs",
            "docs/migration/e1",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            outside_docs(&paths, "docs/migration/e1"),
            [
                "docs/migration/e1x/notes.md",
                "src/main.rs",
                "docs/migration/e1"
            ]
        );
    }
}
