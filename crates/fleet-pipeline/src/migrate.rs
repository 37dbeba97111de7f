//! Migration mode's IO (`fleet task add --mode migrate`): the read-only legacy contour.
//!
//! Before a person approves, research and architect are one agent task each that writes its
//! four documents (`fleet_core::migration`) to `docs/migration/<epic>/` and nothing else; the
//! task lands on the epic's branch, so that branch is the docs-only branch that is delivered.
//! Two walls keep code out: the task's acceptance check refuses any change outside the
//! directory (an agent that edits code is sent back by the fix loop and, if it keeps doing
//! it, lands nothing), and Fleet itself compares the delivered branch with the epic's base
//! before every stage end and before delivery.
//!
//! After approval the epic is an ordinary one whose planner, developers and reviewer read the
//! eight documents, and whose reviewer checks the work against the rollback plan.

use crate::stages::{self, StageEnd, shell_quote};
use crate::{EpicData, Pipeline, PipelineError, Result};
use fleet_core::epic::{Mode, Outcome, Stage};
use fleet_core::migration::{self, DOCUMENTS, ROLLBACK_PLAN};
use fleet_store::{EpicRow, ProjectRow};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// The migration mode's part of `stage`: `Some` when it runs the stage itself (research and
/// architect before approval) or refuses it (a delivery whose branch changed code); `None`:
/// the ordinary stage runs.
pub(crate) async fn stage(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    stage: Stage,
    name: &str,
    v: &BTreeMap<&'static str, String>,
) -> Result<Option<StageEnd>> {
    if !data.machine.as_ref().is_some_and(|m| m.read_only()) {
        return Ok(None);
    }
    match stage {
        Stage::Research | Stage::Architect => documents(p, epic, data, project, stage, name, v)
            .await
            .map(Some),
        Stage::Deliver => Ok(code_changed(project, epic)?
            .map(|why| (Outcome::Failed { why: why.clone() }, why, None))),
        _ => Ok(None),
    }
}

/// Why the epic's branch is no docs-only branch (the paths it changed outside the documents'
/// directory), or `None` when it is one.
pub fn code_changed(project: &ProjectRow, epic: &EpicRow) -> Result<Option<String>> {
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let changed = repo.changed_files(&epic.base_sha, &epic.branch)?;
    let dir = migration::docs_dir(&epic.id);
    let outside = migration::outside_docs(&changed, &dir);
    if outside.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "migration mode is read-only until the documents are approved, but {} changes {} \
         outside {dir}/: {}",
        epic.branch,
        outside.len(),
        outside.join(", ")
    )))
}

/// Research or architect before approval: one agent task that writes the stage's documents,
/// landing on the epic's branch only if nothing else changed.
async fn documents(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    stage: Stage,
    name: &str,
    v: &BTreeMap<&'static str, String>,
) -> Result<StageEnd> {
    let role = if stage == Stage::Research {
        "researcher"
    } else {
        "architect"
    };
    let docs = migration::documents_of(stage);
    let dir = migration::docs_dir(&epic.id);
    let mut prompt = stages::render(p, role, v, project.bible.as_deref())?;
    prompt.push_str(&instructions(epic, data, stage));
    let paths: Vec<String> = docs
        .iter()
        .map(|d| shell_quote(&migration::doc_path(&epic.id, d)))
        .collect();
    let present = format!(
        "for f in {}; do test -s \"$f\" || {{ echo \"missing or empty: $f\"; exit 1; }}; done",
        paths.join(" ")
    );
    // Uncommitted changes and commits the agent made itself, both against the epic's base.
    let read_only = format!(
        "bad=$( {{ git status --porcelain --untracked-files=all -- . ':(exclude){dir}'; \
         git diff --name-only {base} -- . ':(exclude){dir}'; }} ); if [ -n \"$bad\" ]; then \
         echo 'migration mode is read-only before approval: only {dir}/ may change, and \
         these changed:'; echo \"$bad\"; exit 1; fi",
        base = epic.base_sha
    );
    let task = json!({"id": role, "role": role, "prompt": prompt, "checks": [present, read_only]});
    let rb = stages::base_runbook(p, epic, project, name, vec![task]);
    let row = stages::run(p, epic, name, rb, Some(&epic.branch)).await?;
    if row.state != "passed" {
        return Ok(stages::fail(
            format!(
                "the {role} delivered no valid migration documents: {}",
                stages::run_failure(p, &row)
            ),
            &row,
        ));
    }
    // Fleet's own proof, whatever the check saw: the branch changed documents only.
    if let Some(why) = code_changed(project, epic)? {
        return Ok(stages::fail(why, &row));
    }
    Ok((
        Outcome::Passed,
        format!(
            "{} written to {dir}/ (no code changed)",
            docs.iter()
                .map(|d| format!("{d}.md"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(row.id),
    ))
}

/// What the agent must do in migration mode, after its role's own instructions (which it
/// follows for how to study; this says what to deliver and what not to touch).
fn instructions(epic: &EpicRow, data: &EpicData, stage: Stage) -> String {
    let dir = migration::docs_dir(&epic.id);
    let list = |docs: &[&str]| {
        docs.iter()
            .map(|d| format!("- `{}`", migration::doc_path(&epic.id, d)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut text = format!(
        "\n\n## Migration mode: read-only\n\nThis request is a legacy migration. Until a person \
         approves the migration documents, **no code changes**: do not edit, create, move or \
         delete any file outside `{dir}/`, do not commit, and do not write `.fleet-out/` \
         either. Any other change fails the check and nothing you did lands.\n\nWrite these \
         Markdown documents (each non-empty):\n{}\n",
        list(migration::documents_of(stage))
    );
    if stage == Stage::Architect {
        text.push_str(&format!(
            "\nRead the research documents first:\n{}\n\n`approval.md` lists what a person \
             approves (scope, risks accepted, the go/no-go criteria); `rollback-plan.md` says \
             how each step of the migration is undone, and how to tell it worked.\n",
            list(&migration::RESEARCH_DOCS)
        ));
    }
    if !data.feedback.is_empty() {
        text.push_str(&format!(
            "\nA person sent the documents back; address this:\n\n{}\n",
            data.feedback
        ));
    }
    text
}

/// The eight documents as read from the epic's branch, for the prompts of the implementation.
pub fn read_documents(project: &ProjectRow, epic: &EpicRow) -> Result<Vec<(String, String)>> {
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let mut out = Vec::new();
    for doc in DOCUMENTS {
        let path = migration::doc_path(&epic.id, doc);
        if let Some(text) = repo.read_file(&epic.branch, &path)? {
            out.push((path, text));
        }
    }
    Ok(out)
}

/// After approval: the planner and the developers read the eight documents with the
/// architecture (the migration plan is what the implementation follows).
pub(crate) fn extend_vars(
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    stage: Stage,
    v: &mut BTreeMap<&'static str, String>,
) -> Result<()> {
    let approved_migration = data
        .machine
        .as_ref()
        .is_some_and(|m| m.mode == Mode::Migrate && m.approved);
    if !approved_migration || !matches!(stage, Stage::Plan | Stage::Implement) {
        return Ok(());
    }
    let mut text = v.get("architecture").cloned().unwrap_or_default();
    text.push_str(
        "\n\n## The approved migration documents\n\nA person approved these; plan and build \
         the implementation from the migration plan, keeping every step undoable as the \
         rollback plan says.\n",
    );
    for (path, body) in read_documents(project, epic)? {
        text.push_str(&format!("\n### {path}\n\n{}\n", body.trim()));
    }
    v.insert("architecture", text);
    Ok(())
}

/// After approval: the reviewer's criteria include the rollback plan.
pub(crate) fn review_criteria(
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
) -> Result<Vec<String>> {
    if !data
        .machine
        .as_ref()
        .is_some_and(|m| m.mode == Mode::Migrate && m.approved)
    {
        return Ok(Vec::new());
    }
    let path = migration::doc_path(&epic.id, ROLLBACK_PLAN);
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let plan = repo
        .read_file(&epic.branch, &path)?
        .ok_or_else(|| PipelineError::Other(format!("{path} is missing on {}", epic.branch)))?;
    Ok(vec![format!(
        "The change can be undone as the approved rollback plan ({path}) says:\n{}",
        plan.trim()
    )])
}
