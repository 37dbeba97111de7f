//! `fleet project new NAME --bible B`: an app from nothing. A new git repository (an initial
//! commit with a README written from the bible), registered as a project that follows the
//! bible, so the bible's stack, design system, tone and deploy target reach the research,
//! architecture and planning prompts of its first request. Nothing is left half-made: a
//! failure removes the directory it created and registers nothing.

use crate::{NewProject, Pipeline, PipelineError, Result};
use fleet_store::ProjectRow;
use std::path::{Path, PathBuf};
use std::process::Command;

impl Pipeline {
    /// Creates project `name` from `bible` in `dir` (default `.fleet/repos/<name>`).
    pub fn new_project(&self, name: &str, bible: &str, dir: Option<PathBuf>) -> Result<ProjectRow> {
        fleet_core::validate_id(name)
            .map_err(|e| PipelineError::Invalid(format!("project name {name:?}: {e}")))?;
        let Some(b) = self.library.bible(bible) else {
            let known: Vec<&str> = self.library.bibles.keys().map(String::as_str).collect();
            return Err(PipelineError::Invalid(format!(
                "--bible {bible}: no bibles/{bible}.md (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if self.store.project(name)?.is_some() {
            return Err(PipelineError::NotNow(format!(
                "project {name:?} already exists"
            )));
        }
        let dir = dir.unwrap_or_else(|| self.layout.root().join("repos").join(name));
        if dir.exists() {
            return Err(PipelineError::NotNow(format!(
                "{} already exists; choose another --dir (or `fleet project add` it)",
                dir.display()
            )));
        }
        let readme = format!(
            "# {name}\n\nA new project made by Fleet, following the bible `{bible}`.\n\n{}\n",
            b.prompt_text().trim()
        );
        let made = init_repo(&dir, &readme).and_then(|()| {
            self.add_project(NewProject {
                name: name.to_string(),
                repo: dir.display().to_string(),
                branch: Some("main".into()),
                delivery: "branch".into(),
                bible: Some(bible.to_string()),
                ..NewProject::default()
            })
        });
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }
}

/// `git init` in a new `dir`, then one commit of `README.md`.
fn init_repo(dir: &Path, readme: &str) -> Result<()> {
    let io = |e: std::io::Error| PipelineError::Other(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("README.md"), readme).map_err(io)?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README.md"],
        &[
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "Start the project",
        ],
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env_clear()
            .envs(fleet_engine::process::command_env(&[]))
            .env("GIT_AUTHOR_NAME", "Fleet")
            .env("GIT_AUTHOR_EMAIL", "fleet@localhost")
            .env("GIT_COMMITTER_NAME", "Fleet")
            .env("GIT_COMMITTER_EMAIL", "fleet@localhost")
            .output()
            .map_err(io)?;
        if !out.status.success() {
            return Err(PipelineError::Other(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}
