//! `fleet project new NAME --bible B` (and `POST /api/v1/projects/new`): an app from nothing.
//! A new git repository (an initial commit with a README written from the bible), registered
//! as a project that follows the bible, so the bible's stack, design system, tone and deploy
//! target reach the research, architecture and planning prompts of its first request.
//!
//! When `fleet.yaml` configures a `forge:`, the repository is also created there (private),
//! the first commit is pushed to it, it becomes the project's `origin`, and the project
//! delivers pull (merge) requests to it. Nothing is left half-made: a failure removes the
//! directory it created and registers nothing; a forge that answers 5xx (or cannot be
//! reached) is tried again with backoff first.

use crate::{NewProject, Pipeline, PipelineError, Result};
use fleet_config::ForgeSpec;
use fleet_deliver::{ForgeError, ForgeKind, NewRepository, RepositoryRequest, Token};
use fleet_store::ProjectRow;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tries of a forge call or push that may pass by itself (5xx, network, rate limit).
const FORGE_TRIES: u32 = 3;

impl Pipeline {
    /// Creates project `name` from `bible` in `dir` (default `.fleet/repos/<name>`), and on the
    /// instance's forge when one is configured.
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
        // The token is checked before anything is made.
        let forge = match &self.instance.forge {
            Some(f) => {
                let token = Token::from_env(&f.token_env).ok_or_else(|| {
                    PipelineError::Invalid(format!(
                        "fleet.yaml `forge`: the token env var {} is not set; set it (a token \
                         that may create repositories on {}) and try again",
                        f.token_env, f.kind
                    ))
                })?;
                Some((f, token))
            }
            None => None,
        };
        let readme = format!(
            "# {name}\n\nA new project made by Fleet, following the bible `{bible}`.\n\n{}\n",
            b.prompt_text().trim()
        );
        let made = init_repo(&dir, &readme).and_then(|()| {
            let mut new = NewProject {
                name: name.to_string(),
                repo: dir.display().to_string(),
                branch: Some("main".into()),
                delivery: "branch".into(),
                bible: Some(bible.to_string()),
                ..NewProject::default()
            };
            if let Some((spec, token)) = &forge {
                let repo = publish(spec, token, name, bible, &dir)?;
                new.delivery = "pull_request".into();
                new.forge = Some(spec.kind.clone());
                new.api_url = spec.api_url.clone();
                new.forge_repo = Some(repo.full_name);
                new.token_env = Some(spec.token_env.clone());
                new.remote = Some("origin".into());
            }
            self.add_project(new)
        });
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }
}

/// Creates the repository on the forge, makes it `origin` of `dir` and pushes `main` to it.
fn publish(
    spec: &ForgeSpec,
    token: &Token,
    name: &str,
    bible: &str,
    dir: &Path,
) -> Result<NewRepository> {
    let kind = if spec.kind == "gitlab" {
        ForgeKind::GitLab
    } else {
        ForgeKind::GitHub
    };
    let description = format!("Made by Fleet, following the bible {bible}.");
    let request = RepositoryRequest {
        forge: kind,
        api_url: spec.api_url.as_deref(),
        owner: spec.owner.as_deref(),
        name,
        description: &description,
        token,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PipelineError::Other(format!("a runtime for the forge call: {e}")))?;
    let mut tries = 0;
    let created = loop {
        tries += 1;
        match rt.block_on(fleet_deliver::create_repository(&request)) {
            Err(e) if e.is_transient() && tries < FORGE_TRIES => std::thread::sleep(backoff(tries)),
            other => break other,
        }
    };
    let repo = created.map_err(|e| refused(&e, spec, name, tries))?;
    git(dir, &["remote", "add", "origin", &repo.clone_url])?;
    let mut tries = 0;
    loop {
        tries += 1;
        match git(dir, &["push", "--quiet", "origin", "main:main"]) {
            Ok(()) => return Ok(repo),
            Err(_) if tries < FORGE_TRIES => std::thread::sleep(backoff(tries)),
            Err(e) => {
                return Err(PipelineError::Other(format!(
                    "{} was created on {}, but pushing the first commit to it failed \
                     {tries} times ({e}); nothing was registered and the local directory was \
                     removed. Delete the empty repository on the forge (or fix git's \
                     credentials for it) and try again.",
                    repo.full_name, spec.kind
                )));
            }
        }
    }
}

/// 0.5 s, 1 s, 2 s …
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500u64 << (tries - 1).min(6))
}

/// The error for a repository the forge would not create: what to do about it.
fn refused(e: &ForgeError, spec: &ForgeSpec, name: &str, tries: u32) -> PipelineError {
    let owner = spec.owner.as_deref().unwrap_or("the token's user");
    let what = match e {
        ForgeError::Auth { .. } => format!(
            "replace the token in {} (it must be allowed to create repositories for {owner})",
            spec.token_env
        ),
        ForgeError::Validation { .. } => format!(
            "a repository named {name:?} probably exists already for {owner}; choose another name"
        ),
        ForgeError::NotFound { .. } => {
            format!("check `forge.owner` ({owner}) and that the token can see it")
        }
        _ if e.is_transient() => format!("the forge kept failing ({tries} tries); try again later"),
        _ => "see the forge's answer".to_string(),
    };
    PipelineError::Forge(
        format!(
            "creating {name} on {} failed: {e}. Nothing was made (no project registered, the \
             local directory removed): {what}.",
            spec.kind
        ),
        e.clone(),
    )
}

/// `git init` in a new `dir`, then one commit of `README.md`.
fn init_repo(dir: &Path, readme: &str) -> Result<()> {
    let io = |e: std::io::Error| PipelineError::Other(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("README.md"), readme).map_err(io)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    git(dir, &["add", "README.md"])?;
    git(
        dir,
        &[
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "Start the project",
        ],
    )
}

/// Runs `git -C dir ARGS` in Fleet's command environment.
fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = fleet_git::command(dir)
        .args(args)
        .output()
        .map_err(|e| PipelineError::Other(format!("{}: {e}", dir.display())))?;
    if !out.status.success() {
        return Err(PipelineError::Other(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
