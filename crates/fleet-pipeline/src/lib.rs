//! `fleet-pipeline`: an epic's life, from a person's one-sentence request to a delivered,
//! accepted result — Research -> (Architect) -> Plan -> Implement -> Review -> Deliver ->
//! awaiting acceptance, with review cycles and the recurring-problem ladder.
//!
//! Owns: intake (routing a request to roles, creating the epic), turning each stage into an
//! engine run (a generated runbook: one agent task for research, architecture, planning and
//! review; the validated plan's atomic tasks for implementation), reading the artifacts those
//! agents return (`.fleet-out/…` on the stage run's own branch, never on the epic's), feeding
//! the outcome to the pure machine in `fleet_core::epic`, delivery, acceptance and rejection.
//!
//! Must not know: how an agent is launched or a task is retried (the engine), git plumbing
//! (`fleet-git`), SQL (`fleet-store`), HTTP details of forges (`fleet-deliver`). The epic row
//! with its stage and data is saved before each stage starts, so a killed fleet resumes an
//! epic where it was (the stage's engine run is resumed, not restarted).
//!
//! Why agents cannot write code before the work is atomic: research, architecture, planning
//! and review run on a throwaway branch of their own run; only the implement stage — atomic
//! tasks of a validated plan — lands on the epic's branch.

pub mod audit;
mod devops_deploy;
mod limits;
mod memory_edge;
pub use memory_edge::{memory_location, open_memory};
pub mod migrate;
mod new_project;
mod on_runners;
mod pr_life;
mod preflight;
mod qa;
mod stages;
mod triage_agent;

use fleet_config::{InstanceConfig, Library};
use fleet_core::epic::{self, EpicState, Limits, Outcome, Stage};
use fleet_engine::EngineOptions;
use fleet_store::{EpicRow, Event, NewEvent, ProjectRow, StageRow, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

// The epic's document lives in the core, below the read models; re-exported for the
// pipeline's callers.
pub use fleet_core::epic_data::{
    Answer, Delivery, EpicData, EpicTask, PendingReply, QaRecord, ReviewRecord,
};
pub use fleet_deliver::ForgeError;
/// The state directory a [`Pipeline`] works in (re-exported: callers build pipelines without
/// naming the engine).
pub use fleet_engine::StateDir;
pub use stages::artifact_check;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request or a name in it is wrong (exit 2 at the CLI).
    #[error("{0}")]
    Invalid(String),
    /// The request is fine but clashes with the state of things: accepting an epic that is
    /// not awaiting acceptance, cancelling one that ended, a project name that is taken
    /// (exit 2 at the CLI, 409 over HTTP).
    #[error("{0}")]
    NotNow(String),
    #[error("no epic {0:?}")]
    NoSuchEpic(String),
    #[error(transparent)]
    Store(#[from] fleet_store::StoreError),
    #[error(transparent)]
    Git(#[from] fleet_git::GitError),
    #[error(transparent)]
    Engine(#[from] fleet_engine::EngineError),
    /// Someone else changed the epic meanwhile (a person cancelled, accepted or rejected it,
    /// another process worked on it); nothing was written.
    #[error("epic {0} was changed meanwhile; nothing was written (try again)")]
    Conflict(String),
    /// Fleet was stopped while a stage's run was going; driving the epic again resumes it.
    #[error("interrupted during run {0}; `fleet task resume` continues")]
    Interrupted(String),
    /// The driver lost the epic's lease (its renewals failed for too long, or another process
    /// took it over): it stopped the epic's stage run and wrote nothing more of the epic.
    #[error("epic {0}: {1}")]
    LeaseLost(String, String),
    /// A forge refused or could not be reached (after retries, when it may pass): a token
    /// it rejected, a name already taken there (exit 5 at the CLI; 409 or 502 over HTTP).
    #[error("{0}")]
    Forge(String, fleet_deliver::ForgeError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// Called with every event the pipeline and its engine runs commit (progress display).
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// A project to register (`fleet project add`, `POST /api/v1/projects`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    /// A local repository, or a URL to clone.
    pub repo: String,
    /// The branch results build on (default: the checked-out one).
    pub branch: Option<String>,
    pub checks: Vec<String>,
    /// `branch` (the default), `pull_request` or `deploy`.
    #[serde(default = "branch_delivery")]
    pub delivery: String,
    pub forge: Option<String>,
    pub api_url: Option<String>,
    pub forge_repo: Option<String>,
    pub token_env: Option<String>,
    pub remote: Option<String>,
    pub deploy_command: Option<String>,
    /// Deploys with a command: the names of Fleet's environment variables it may see besides
    /// the command environment every check gets (the deploy tool's token, say).
    pub deploy_pass_env: Vec<String>,
    pub bible: Option<String>,
    /// Deploys: a QA agent tests the deployed app before a person is asked to accept.
    pub qa: Option<QaSpec>,
}

/// How QA tests a deployed project (`"qa"` of its delivery).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QaSpec {
    /// Fleet renders the deployed URL with headless chromium (DOM and a screenshot) and gives
    /// the QA agent the rendered page; the agent may run chromium itself too.
    pub browser: bool,
}

/// An epic's branch: `fleet/epics/<instance>/<epic>`. Epic ids are unique only within an
/// instance; two instances (or one made anew after `.fleet/` was deleted) may share a
/// repository.
pub fn epic_branch(instance: &str, epic: &str) -> String {
    format!("fleet/epics/{instance}/{epic}")
}

/// The names a deploy command may see: environment variable names, and only with a command
/// (an agent that deploys gets its own environment, not these).
fn check_pass_env(names: &[String], has_command: bool) -> Result<()> {
    if !names.is_empty() && !has_command {
        return Err(PipelineError::Invalid(
            "--deploy-pass-env needs a --deploy-command (a DevOps agent that deploys sees only \
             its own profile's environment)"
                .into(),
        ));
    }
    for name in names {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(PipelineError::Invalid(format!(
                "--deploy-pass-env {name:?}: expected an environment variable name \
                 (letters, digits and _, not starting with a digit)"
            )));
        }
    }
    Ok(())
}

fn branch_delivery() -> String {
    "branch".into()
}

/// How a project delivers (the `delivery` JSON of its row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySpec {
    /// `branch` (the epic's branch is the result), `pull_request` or `deploy`.
    pub kind: String,
    /// Pull requests: `github` or `gitlab`.
    pub forge: Option<String>,
    pub api_url: Option<String>,
    /// `owner/name` (GitHub) or the project path or id (GitLab).
    pub repo: Option<String>,
    /// Name of the env var holding the forge token (never the token).
    pub token_env: Option<String>,
    /// The git remote (name or URL) the branch is pushed to.
    pub remote: Option<String>,
    /// Deploys: the command; the last URL it prints is the result. `None`: a DevOps agent
    /// deploys and reports the address (`.fleet-out/deploy.json`).
    pub command: Option<String>,
    /// Deploys with a command: what it may see of Fleet's environment besides the command
    /// environment (`--deploy-pass-env`); nothing else of Fleet's keys reaches it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// Deploys: QA tests the deployed app (also on when some profile plays `qa`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaSpec>,
}

pub struct Pipeline {
    pub layout: StateDir,
    pub store: Arc<dyn Store>,
    pub instance: InstanceConfig,
    pub library: Library,
    /// The `fleet` binary: agents' artifact checks run it (`fleet artifact check …`).
    pub fleet_exe: PathBuf,
    pub limits: Limits,
    /// Tasks of a stage run at once.
    pub concurrency: usize,
    pub observer: Option<Observer>,
    /// Raised when the process is stopping (`fleet serve` shutting down): stage runs stop as
    /// on SIGTERM and resume on the next start.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

fn now_ms() -> i64 {
    fleet_engine::now_ms()
}

impl Pipeline {
    fn emit(&self, epic: &EpicRow, kind: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            at: now_ms(),
            run_id: epic.id.clone(),
            task: Some(epic.id.clone()),
            attempt: None,
            kind: kind.into(),
            data,
        }
    }

    /// Saves the epic with `events` in one transaction, then shows them to the observer.
    fn save(&self, epic: &mut EpicRow, data: &EpicData, events: Vec<NewEvent>) -> Result<()> {
        epic.data = serde_json::to_value(data).map_err(|e| PipelineError::Other(e.to_string()))?;
        self.record(epic, events)
    }

    /// Writes `epic` as it is with `events` — only if nobody changed it since it was read
    /// (compare-and-swap on `updated_at`; [`PipelineError::Conflict`] otherwise) — then shows
    /// them to the observer.
    fn record(&self, epic: &mut EpicRow, mut events: Vec<NewEvent>) -> Result<()> {
        self.redact(epic, &mut events);
        let expected = epic.updated_at;
        epic.updated_at = now_ms().max(expected + 1);
        let seqs = match self.store.update_epic(epic, expected, &events) {
            Ok(seqs) => seqs,
            Err(fleet_store::StoreError::Conflict(..)) => {
                epic.updated_at = expected;
                return Err(PipelineError::Conflict(epic.id.clone()));
            }
            Err(e) => {
                epic.updated_at = expected;
                return Err(e.into());
            }
        };
        self.publish(events, seqs);
        memory_edge::decision_log(self, epic);
        Ok(())
    }

    /// Fleet's one redactor: the instance's configured secrets and every variable named like one.
    fn redactor(&self) -> fleet_secrets::Redactor {
        fleet_secrets::Redactor::from_process_env(&self.instance.secret_names())
    }

    /// Takes secrets out of what is about to be stored of an epic: its document (a question may
    /// quote a deploy's output), its request (a person may paste a token) and its events.
    fn redact(&self, epic: &mut EpicRow, events: &mut [NewEvent]) {
        let redactor = self.redactor();
        redactor.clean_json(&mut epic.data);
        epic.request = redactor.clean_string(std::mem::take(&mut epic.request));
        for e in events {
            redactor.clean_json(&mut e.data);
        }
    }

    /// Writes events that change no epic, then shows them to the observer.
    fn record_events(&self, mut events: Vec<NewEvent>) -> Result<()> {
        let redactor = self.redactor();
        for e in &mut events {
            redactor.clean_json(&mut e.data);
        }
        let seqs = self.store.commit(&fleet_store::Batch {
            events: events.clone(),
            ..fleet_store::Batch::default()
        })?;
        self.publish(events, seqs);
        Ok(())
    }

    fn publish(&self, events: Vec<NewEvent>, seqs: Vec<u64>) {
        if let Some(obs) = &self.observer {
            for (e, seq) in events.into_iter().zip(seqs) {
                obs(&Event {
                    seq,
                    at: e.at,
                    run_id: e.run_id,
                    task: e.task,
                    attempt: e.attempt,
                    kind: e.kind,
                    data: e.data,
                });
            }
        }
    }

    pub fn project(&self, name: &str) -> Result<ProjectRow> {
        self.store.project(name)?.ok_or_else(|| {
            PipelineError::Invalid(format!("no project {name:?} (fleet project add)"))
        })
    }

    pub fn epic(&self, id: &str) -> Result<(EpicRow, EpicData)> {
        let epic = self
            .store
            .epic(id)?
            .ok_or_else(|| PipelineError::NoSuchEpic(id.to_string()))?;
        let data = decode_data(&epic)?;
        Ok((epic, data))
    }

    /// Registers a project: a local repository or a URL to clone into `.fleet/repos/<name>`,
    /// its checks and how its results are delivered. Nothing is stored unless all of it is
    /// valid.
    pub fn add_project(&self, p: NewProject) -> Result<ProjectRow> {
        fleet_core::validate_id(&p.name)
            .map_err(|e| PipelineError::Invalid(format!("project name {:?}: {e}", p.name)))?;
        if !p.deploy_pass_env.is_empty() && p.delivery != "deploy" {
            return Err(PipelineError::Invalid(format!(
                "--deploy-pass-env is for deploy projects with a --deploy-command; this one \
                 delivers as {:?}",
                p.delivery
            )));
        }
        let delivery = match p.delivery.as_str() {
            "branch" => json!({"kind": "branch", "remote": p.remote}),
            "pull_request" | "pr" => {
                let forge = p.forge.clone().unwrap_or_else(|| "github".into());
                let repo = p.forge_repo.clone().or_else(|| {
                    fleet_deliver::parse_remote(&p.repo).map(|(_, o, r)| format!("{o}/{r}"))
                });
                let Some(repo) = repo else {
                    return Err(PipelineError::Invalid(
                        "--delivery pull_request needs --forge-repo OWNER/NAME (or a GitHub/GitLab --repo URL)".into(),
                    )
                    );
                };
                // Checked now, not after every agent's work is done and paid for.
                let token_env = p
                    .token_env
                    .clone()
                    .unwrap_or_else(|| stages::default_token_env(Some(&forge)).into());
                if fleet_deliver::Token::from_env(&token_env).is_none() {
                    return Err(PipelineError::Invalid(format!(
                        "--delivery pull_request: the forge token env var {token_env} is not set; \
                         set it (a token that may push to and open pull requests on {repo}) or \
                         name another with --token-env"
                    )));
                }
                json!({"kind": "pull_request", "forge": forge, "api_url": p.api_url, "repo": repo,
                       "token_env": p.token_env, "remote": p.remote.clone().unwrap_or_else(|| "origin".into())})
            }
            // Without a command, a DevOps agent deploys and reports the address.
            "deploy" => {
                check_pass_env(&p.deploy_pass_env, p.deploy_command.is_some())?;
                json!({"kind": "deploy", "command": p.deploy_command, "qa": p.qa,
                       "pass_env": p.deploy_pass_env})
            }
            other => {
                return Err(PipelineError::Invalid(format!(
                    "--delivery {other:?}: expected branch, pull_request or deploy"
                )));
            }
        };
        // A password or token in the URL would be stored and shown to every reader of the
        // project: credentials belong to git's credential helper or an SSH key.
        if let Some((scheme, rest)) = p.repo.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && userinfo.contains(':')
            {
                return Err(PipelineError::Invalid(format!(
                    "repo {scheme}://…: the URL carries a password or token; use a credential \
                     helper or an SSH URL instead (the URL is stored and shown)"
                )));
            }
        }
        let layout = &self.layout;
        let store = &self.store;
        if store.project(&p.name)?.is_some() {
            return Err(PipelineError::NotNow(format!(
                "project {:?} already exists",
                p.name
            )));
        }
        let local = std::path::Path::new(&p.repo);
        let repo = if local.exists() {
            fleet_git::Repo::open(local)
                .map_err(|e| PipelineError::Invalid(format!("--repo {}: {e}", p.repo)))?
        } else if p.repo.contains("://") || p.repo.contains('@') {
            let dest = layout.root().join("repos").join(&p.name);
            fleet_git::Repo::clone_from(&p.repo, &dest)
                .map_err(|e| PipelineError::Invalid(format!("cannot clone {}: {e}", p.repo)))?
        } else {
            return Err(PipelineError::Invalid(format!(
                "--repo {}: no such directory, and not a URL",
                p.repo
            )));
        };
        let branch = match p.branch {
            Some(b) => b,
            None => repo
                .list_worktrees()?
                .into_iter()
                .find(|w| w.path == repo.root())
                .and_then(|w| w.branch)
                .map(|b| b.trim_start_matches("refs/heads/").to_string())
                .unwrap_or_else(|| "main".into()),
        };
        if repo.resolve(&branch).is_err() {
            // A clone has only the remote's default branch locally; others are origin/<branch>.
            if let Ok(sha) = repo.resolve(&format!("origin/{branch}")) {
                repo.set_branch(&branch, &sha)?;
            }
        }
        repo.resolve(&branch)
            .map_err(|e| PipelineError::Invalid(format!("--branch {branch}: {e}")))?;
        if let Some(b) = &p.bible
            && self.library.bible(b).is_none()
        {
            return Err(PipelineError::Invalid(format!(
                "--bible {b}: no bibles/{b}.md"
            )));
        }
        let row = ProjectRow {
            name: p.name.clone(),
            repo: p.repo.clone(),
            path: repo.root().display().to_string(),
            default_branch: branch,
            checks: p.checks,
            delivery,
            bible: p.bible,
            created_at: fleet_engine::now_ms(),
        };
        // Found now, not when the finished work cannot be pushed.
        if let Some(q) = self.remote_problem(&row, None) {
            return Err(PipelineError::Invalid(q));
        }
        store.add_project(&row)?;
        Ok(row)
    }

    /// Whether some agent profile plays `role`.
    pub fn playable(&self, role: &str) -> bool {
        self.instance
            .agents
            .iter()
            .any(|a| a.roles.iter().any(|r| r == role))
    }

    /// Refuses a request routed only to roles nobody plays: it would fail at once after
    /// research and planning were paid for. (A request routed to several roles needs one
    /// playable: the planner is told which ones are.)
    fn preflight_roles(&self, route: &fleet_config::Route) -> Result<()> {
        if route.roles.is_empty() || route.roles.iter().any(|r| self.playable(r)) {
            return Ok(());
        }
        let role = &route.roles[0];
        Err(PipelineError::Invalid(format!(
            "no agent profile plays role {} (the request was routed as {}); add one to \
             fleet.yaml, e.g.\n  agents:\n    {role}-agent:\n      cli: claude\n      roles: [{role}]\n\
             then submit the request again",
            route.roles.join(" or "),
            route.intent.as_deref().unwrap_or("default"),
        )))
    }

    /// The project's context file, written by the researcher and read by every later agent.
    pub fn context_file(&self, project: &str) -> PathBuf {
        self.layout
            .root()
            .join("context")
            .join(format!("{project}.md"))
    }

    /// Intake: a person's request becomes an epic of `project`, routed to roles (IMR).
    pub fn submit(&self, project: &str, request: &str) -> Result<EpicRow> {
        self.submit_as(project, request, epic::Mode::Standard)
    }

    /// [`Pipeline::submit`] in `mode`: [`epic::Mode::Migrate`] is the read-only legacy
    /// contour (eight documents, approval, then the implementation; see `migrate`).
    pub fn submit_as(&self, project: &str, request: &str, mode: epic::Mode) -> Result<EpicRow> {
        let request = request.trim();
        if request.is_empty() {
            return Err(PipelineError::Invalid("the request is empty".into()));
        }
        let p = self.project(project)?;
        let repo = fleet_git::Repo::open(std::path::Path::new(&p.path))?;
        let base = repo.resolve(&p.default_branch).map_err(|e| {
            PipelineError::Invalid(format!(
                "project {project}: branch {:?}: {e}",
                p.default_branch
            ))
        })?;
        let route = fleet_config::route(request, &self.instance.routing);
        self.preflight_roles(&route)?;
        // Counted, not loaded: an instance may hold many thousands of epics.
        let n = self
            .store
            .epic_page(&fleet_store::EpicQuery::default())?
            .total
            + 1;
        let mut n = n;
        let needs_design = needs_design(request);
        let mut machine = match mode {
            epic::Mode::Migrate => EpicState::migration(),
            epic::Mode::Standard => EpicState::new(
                memory_edge::context_is_fresh(self, &p, &repo, &base),
                needs_design,
            ),
        };
        let now = now_ms();
        let id = format!("e{n}");
        let instance = fleet_engine::layout::instance_id(&*self.store)?;
        let mut epic = EpicRow {
            id: id.clone(),
            project: project.to_string(),
            request: request.to_string(),
            state: machine.stage.as_str().into(),
            cycle: 0,
            branch: epic_branch(&instance, &id),
            base_sha: base.clone(),
            intent: route.intent.clone(),
            roles: route.roles.clone(),
            stages: Vec::new(),
            data: json!({}),
            created_at: now,
            updated_at: now,
        };
        let data = EpicData {
            machine: Some(machine.clone()),
            routed_by: format!("{:?}", route.by).to_lowercase(),
            matched: route.matched.clone(),
            ..EpicData::default()
        };
        let mut created = vec![self.emit(
            &epic,
            "task.created",
            json!({"kind": "epic", "project": project, "request": request,
                   "intent": route.intent, "roles": route.roles, "matched": route.matched,
                   "mode": mode.as_str(), "next": machine.stage.as_str()}),
        )];
        // An unreachable remote would waste every agent's work: the epic waits for a person
        // from the start (the question names the epic: it is renamed below with the epic).
        if let Some(question) = self.remote_problem(&p, Some(&id)) {
            let first = machine.stage;
            machine = epic::next(
                &machine,
                &Outcome::NeedsPerson { question },
                &self.limits_of(project),
            )
            .state;
            epic.state = machine.stage.as_str().into();
            created.push(self.emit(
                &epic,
                "task.blocked",
                json!({"stage": first.as_str(),
                       "question": machine.blocked.as_ref().map(|b| b.question.clone())}),
            ));
        }
        let data = EpicData {
            machine: Some(machine.clone()),
            ..data
        };
        epic.data = serde_json::to_value(&data).map_err(|e| PipelineError::Other(e.to_string()))?;
        self.redact(&mut epic, &mut created);
        // Ids are taken by inserting: two requests filed at once get two epics, never one.
        // The epic's lease is held from before it is visible until its branch is claimed, so
        // no driver (a `fleet serve` on this store) works on it meanwhile: one that did would
        // make the branch first, and the rename below would lose its compare-and-swap.
        let (seqs, _not_yet) = loop {
            let lease = fleet_store::Lease::try_take(
                self.store.clone(),
                &epic_lease_name(&epic.id)?,
                EPIC_LEASE_TTL,
            )?;
            let created_now = match lease {
                Some(_) => self.store.create_epic(&epic, &created),
                // Someone works on an epic of this id: it exists.
                None => Err(fleet_store::StoreError::Exists("epic", epic.id.clone())),
            };
            match created_now {
                Ok(seqs) => break (seqs, lease),
                Err(fleet_store::StoreError::Exists(..)) => {
                    n += 1;
                    let retry = |id: &str| format!("fleet task retry {id}`");
                    let (old, new) = (retry(&epic.id), retry(&format!("e{n}")));
                    if let Ok(text) = serde_json::to_string(&epic.data) {
                        epic.data = serde_json::from_str(&text.replace(&old, &new))
                            .unwrap_or_else(|_| epic.data.clone());
                    }
                    for c in &mut created {
                        if let Ok(text) = serde_json::to_string(&c.data) {
                            c.data = serde_json::from_str(&text.replace(&old, &new))
                                .unwrap_or_else(|_| c.data.clone());
                        }
                    }
                    epic.id = format!("e{n}");
                    epic.branch = epic_branch(&instance, &epic.id);
                    for c in &mut created {
                        c.run_id = epic.id.clone();
                        c.task = Some(epic.id.clone());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.publish(created, seqs);
        // The epic's branch exists from the start: every stage builds on it.
        self.claim_branch(&repo, &mut epic)?;
        Ok(epic)
    }

    /// Creates the epic's branch at its base, never building on one this instance did not
    /// make for this epic: if the name is taken (by a copy of this instance's database, say),
    /// the epic gets a fresh name, and an `epic.branch_renamed` event says so.
    fn claim_branch(&self, repo: &fleet_git::Repo, epic: &mut EpicRow) -> Result<()> {
        let wanted = epic.branch.clone();
        let mut n = 1;
        while !repo.create_branch(&epic.branch, &epic.base_sha)? {
            n += 1;
            epic.branch = format!("{wanted}-{n}");
        }
        if epic.branch != wanted {
            let event = self.emit(
                epic,
                "epic.branch_renamed",
                json!({"wanted": wanted, "branch": epic.branch,
                       "why": format!("branch {wanted} exists and was not made by this instance for epic {}", epic.id)}),
            );
            self.record(epic, vec![event])?;
        }
        Ok(())
    }

    /// Works on the epic until it needs a person (awaiting acceptance) or ends. When another
    /// process (a `fleet serve`, another CLI) is working on it, waits for that to finish.
    pub async fn drive(&self, id: &str) -> Result<EpicRow> {
        let (store, name) = (self.store.clone(), epic_lease_name(id)?);
        let lease = fleet_store::pg::spawn_blocking(move || {
            fleet_store::Lease::take(store, &name, EPIC_LEASE_TTL, EPIC_LEASE_POLL)
        })
        .await
        .map_err(|e| PipelineError::Other(e.to_string()))??;
        self.drive_held(id, &lease).await
    }

    /// As [`Pipeline::drive`], but `Ok(None)` at once when another process is working on the
    /// epic (the server's driver skips it).
    pub async fn try_drive(&self, id: &str) -> Result<Option<EpicRow>> {
        let (store, name) = (self.store.clone(), epic_lease_name(id)?);
        let lease = fleet_store::pg::spawn_blocking(move || {
            fleet_store::Lease::try_take(store, &name, EPIC_LEASE_TTL)
        })
        .await
        .map_err(|e| PipelineError::Other(e.to_string()))??;
        let Some(lease) = lease else {
            return Ok(None);
        };
        self.drive_held(id, &lease).await.map(Some)
    }

    /// Drives the epic while `lease` is held. Once it is lost the drive stops: the stage run
    /// going is stopped (see [`Pipeline::engine_options`]), nothing more of the epic is written
    /// (the new holder resumes it), and the error says why.
    async fn drive_held(&self, id: &str, lease: &fleet_store::Lease) -> Result<EpicRow> {
        let lease = lease.watch();
        let driven = DRIVING
            .scope(lease.clone(), self.drive_leased(id, &lease))
            .await;
        match driven {
            // A stage run stopped for it ends as interrupted: the lost lease is the reason.
            Err(PipelineError::Interrupted(_)) if lease.is_lost() => {
                Err(self.lease_lost(id, &lease))
            }
            other => other,
        }
    }

    /// Why the drive of epic `id` stopped, told as an event too (only an event: the epic's
    /// document is the new holder's to write).
    fn lease_lost(&self, id: &str, lease: &fleet_store::LeaseWatch) -> PipelineError {
        let why = format!(
            "this process ({}) lost the lease {} (its renewals failed for too long, or another \
             process took it over); it stopped driving the epic, and whoever holds the lease now \
             continues it",
            lease.holder().as_str(),
            lease.name()
        );
        let event = NewEvent {
            at: now_ms(),
            run_id: id.to_string(),
            task: Some(id.to_string()),
            attempt: None,
            kind: "epic.lease_lost".into(),
            data: json!({"lease": lease.name(), "holder": lease.holder().as_str(), "why": why}),
        };
        // The store may be what failed the renewals: the error below says it all the same.
        let _ = self.record_events(vec![event]);
        PipelineError::LeaseLost(id.to_string(), why)
    }

    async fn drive_leased(&self, id: &str, lease: &fleet_store::LeaseWatch) -> Result<EpicRow> {
        loop {
            if !lease.still_held() {
                return Err(self.lease_lost(id, lease));
            }
            let (mut epic, mut data) = self.epic(id)?;
            let machine = data
                .machine
                .clone()
                .ok_or_else(|| PipelineError::Other(format!("epic {id} has no state")))?;
            if !machine.stage.is_working() {
                return Ok(epic);
            }
            // A configured hard limit of money or time ends the epic: the one way to `failed`
            // besides a person cancelling.
            if let Some(why) = self.hard_limit(&epic)? {
                let limits = self.limits_of(&epic.project);
                let step = epic::next(&machine, &Outcome::LimitReached { why }, &limits);
                let ev = vec![self.emit(
                    &epic,
                    "task.failed",
                    json!({"stage": machine.stage.as_str(), "reason": step.why}),
                )];
                epic.state = step.state.stage.as_str().into();
                data.machine = Some(step.state);
                self.saved(lease, &mut epic, &data, ev)?;
                continue;
            }
            let project = self.project(&epic.project)?;
            // The epic's branch is made at intake, after the epic is saved: a crash in between
            // leaves it to be made here.
            let repo = fleet_git::Repo::open(std::path::Path::new(&project.path))?;
            if repo.branch_tip(&epic.branch)?.is_none() {
                repo.create_branch(&epic.branch, &epic.base_sha)?;
            }
            // No routing rule matched: the classifier agent, if configured, names the intent.
            if data.routed_by == "default"
                && !data.classified
                && let Some(profile) = self.instance.routing.classifier.clone()
            {
                let route = stages::classify(self, &epic, &project, &profile).await?;
                data.classified = true;
                let mut events = Vec::new();
                if let Some(r) = route {
                    epic.intent = r.intent.clone();
                    epic.roles = r.roles.clone();
                    data.routed_by = "classifier".into();
                    events.push(self.emit(
                        &epic,
                        "epic.routed",
                        json!({"by": "classifier", "profile": profile, "intent": r.intent, "roles": r.roles}),
                    ));
                } else {
                    events.push(self.emit(
                        &epic,
                        "epic.routed",
                        json!({"by": "default", "profile": profile, "roles": epic.roles,
                               "why": "the classifier named no known intent"}),
                    ));
                }
                if self.saved(lease, &mut epic, &data, events)? {
                    continue;
                }
            }
            let stage = machine.stage;
            // The stage is recorded before it runs; a resumed drive continues its run.
            let name = stage_run_name(&epic.id, stage, &machine);
            if !epic
                .stages
                .last()
                .is_some_and(|s| s.state == "running" && s.stage == stage.as_str())
            {
                epic.stages.push(StageRow {
                    stage: stage.as_str().into(),
                    cycle: machine.cycle.max(1),
                    run_id: None,
                    state: "running".into(),
                    started_at: now_ms(),
                    finished_at: None,
                    detail: None,
                });
                let ev = self.emit(
                    &epic,
                    "epic.stage_started",
                    json!({"stage": stage.as_str(), "cycle": machine.cycle.max(1)}),
                );
                if self.saved(lease, &mut epic, &data, vec![ev])? {
                    continue;
                }
            }
            let ended = stages::run_stage(self, &mut epic, &mut data, &project, stage, &name).await;
            let (outcome, detail, run_id) = match ended {
                Ok(x) => x,
                Err(e @ PipelineError::Interrupted(_)) => return Err(e),
                Err(e) => (Outcome::Failed { why: e.to_string() }, e.to_string(), None),
            };
            let step = epic::next(&machine, &outcome, &self.limits_of(&epic.project));
            let step = pr_life::after_plan(&project, &mut data, stage, step).await;
            if let Some(s) = epic.stages.last_mut() {
                s.state = match outcome {
                    Outcome::Passed | Outcome::Approved | Outcome::Deployed => "passed".into(),
                    Outcome::NeedsPerson { .. } => "blocked".into(),
                    _ => "failed".into(),
                };
                s.finished_at = Some(now_ms());
                s.detail = Some(detail.clone());
                if run_id.is_some() {
                    s.run_id = run_id.clone();
                }
            }
            let mut events = vec![self.emit(
                &epic,
                "epic.stage_finished",
                json!({"stage": stage.as_str(), "outcome": format!("{outcome:?}"), "detail": detail,
                       "run": run_id, "next": step.state.stage.as_str(), "why": step.why}),
            )];
            match step.state.stage {
                Stage::AwaitingAcceptance => events.push(self.emit(
                    &epic,
                    "task.awaiting_acceptance",
                    json!({"branch": epic.branch, "delivery": data.delivery}),
                )),
                Stage::Failed => {
                    events.push(self.emit(&epic, "task.failed", json!({"reason": step.why})))
                }
                Stage::Blocked => events.push(self.emit(
                    &epic,
                    "task.blocked",
                    json!({"stage": stage.as_str(),
                           "question": step.state.blocked.as_ref().map(|b| b.question.clone())}),
                )),
                _ => {}
            }
            epic.state = step.state.stage.as_str().into();
            epic.cycle = step.state.cycle;
            data.machine = Some(step.state);
            self.saved(lease, &mut epic, &data, events)?;
        }
    }

    /// [`Pipeline::save`] for the driving loop, only while `lease` is held: `Ok(true)` when
    /// someone changed the epic meanwhile (a cancellation, usually), so the loop reads it again
    /// and obeys.
    fn saved(
        &self,
        lease: &fleet_store::LeaseWatch,
        epic: &mut EpicRow,
        data: &EpicData,
        events: Vec<NewEvent>,
    ) -> Result<bool> {
        // Read from the store, as the epic is: a write only the holder may make.
        if !lease.still_held() {
            return Err(self.lease_lost(&epic.id, lease));
        }
        match self.save(epic, data, events) {
            Ok(()) => Ok(false),
            Err(PipelineError::Conflict(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// A person accepts the delivered result: the epic is done. A result delivered once stays
    /// acceptable when a later fix cycle stopped (blocked, or failed at a hard limit).
    pub fn accept(&self, id: &str) -> Result<EpicRow> {
        let (mut epic, mut data) = self.epic(id)?;
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        if !epic::acceptable(&machine) {
            self.awaiting(&epic, &data)?;
        }
        let step = epic::next(&machine, &Outcome::Accepted, &self.limits_of(&epic.project));
        epic.state = step.state.stage.as_str().into();
        let ev = if step.state.stage == Stage::Done {
            vec![
                self.emit(&epic, "epic.accepted", json!({})),
                self.emit(&epic, "task.done", json!({"cycles": epic.cycle})),
            ]
        } else {
            // Migration mode: the documents are approved; the implementation is the next
            // cycle (the caller drives the epic on).
            epic.cycle = step.state.cycle;
            vec![self.emit(
                &epic,
                "epic.approved",
                json!({"next": step.state.stage.as_str(), "why": step.why}),
            )]
        };
        data.machine = Some(step.state);
        self.save(&mut epic, &data, ev)?;
        Ok(epic)
    }

    /// A person rejects the delivered result with a comment: fix tasks are planned from it in
    /// the next cycle (the caller drives the epic on).
    pub fn reject(&self, id: &str, comment: &str) -> Result<EpicRow> {
        let comment = comment.trim();
        if comment.is_empty() {
            return Err(PipelineError::Invalid(
                "a rejection needs a comment saying what to change".into(),
            ));
        }
        let (epic, data) = self.epic(id)?;
        self.awaiting(&epic, &data)?;
        self.rework(epic, data, "rejected_by_person", comment)
    }

    fn rework(
        &self,
        mut epic: EpicRow,
        mut data: EpicData,
        verdict: &str,
        feedback: &str,
    ) -> Result<EpicRow> {
        let machine = self.awaiting(&epic, &data)?;
        let step = epic::next(&machine, &Outcome::Reworked, &self.limits_of(&epic.project));
        data.reviews.push(ReviewRecord {
            cycle: machine.cycle,
            verdict: verdict.into(),
            summary: feedback.into(),
            bugs: vec![feedback.into()],
            checks_passed: true,
        });
        data.feedback =
            format!("A person reviewed the delivered result and asked for changes:\n\n{feedback}");
        let ev = vec![self.emit(
            &epic,
            "task.review_rejected",
            json!({"by": verdict, "comment": feedback, "next": step.state.stage.as_str(), "why": step.why}),
        )];
        epic.state = step.state.stage.as_str().into();
        epic.cycle = step.state.cycle;
        data.machine = Some(step.state);
        self.save(&mut epic, &data, ev)?;
        Ok(epic)
    }

    /// Looks at the epic's pull request: merged, the epic is done; closed, it is cancelled.
    /// Otherwise its new comments are triaged (`fleet_core::triage`): approvals, thanks, bot
    /// and CI noise are recorded as events; change requests become rework (the next cycle's
    /// fix tasks), answered on the pull request when that cycle ends. Returns how many
    /// comments started rework.
    pub async fn poll_review_comments(&self, id: &str) -> Result<usize> {
        pr_life::poll(self, id).await
    }

    /// Cancels an epic that has not ended.
    pub fn cancel(&self, id: &str) -> Result<EpicRow> {
        let (mut epic, mut data) = self.epic(id)?;
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        if machine.stage.is_final() {
            return Err(PipelineError::NotNow(format!(
                "epic {id} has already ended ({})",
                machine.stage
            )));
        }
        let step = epic::next(&machine, &Outcome::Cancel, &self.limits_of(&epic.project));
        epic.state = step.state.stage.as_str().into();
        data.machine = Some(step.state);
        let ev = vec![self.emit(
            &epic,
            "task.cancelled",
            json!({"reason": "cancelled by a person"}),
        )];
        self.save(&mut epic, &data, ev)?;
        // A stage on runners goes on there unless its run is cancelled too.
        on_runners::cancel_runs(self, id)?;
        Ok(epic)
    }

    /// A person answers a blocked epic's question: the answer joins the request (every later
    /// agent reads it) and the epic continues at the stage it stopped at (the caller drives it).
    pub fn answer(&self, id: &str, text: &str) -> Result<EpicRow> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PipelineError::Invalid(
                "an answer needs text (or fix the config and `fleet task retry`)".into(),
            ));
        }
        let (epic, mut data) = self.epic(id)?;
        let (machine, blocked) = self.blocked(&epic, &data)?;
        data.answers.push(Answer {
            stage: blocked.at.as_str().into(),
            question: blocked.question.clone(),
            answer: text.into(),
        });
        self.unblock(epic, data, machine, json!({"by": "answer", "answer": text}))
    }

    /// A person fixed what the blocked epic asked about (a token, a profile, a deploy): the
    /// config is checked again and the epic continues at the stage it stopped at. Still
    /// missing: [`PipelineError::NotNow`] with the question, and nothing changes.
    pub fn retry(&self, id: &str) -> Result<EpicRow> {
        let (epic, data) = self.epic(id)?;
        let (machine, blocked) = self.blocked(&epic, &data)?;
        let project = self.project(&epic.project)?;
        if let Some(q) = stages::blocker(self, &epic, &data, &project, blocked.at)
            .or_else(|| self.remote_problem(&project, Some(id)))
        {
            return Err(PipelineError::NotNow(format!(
                "epic {id} is still blocked: {q}"
            )));
        }
        self.unblock(epic, data, machine, json!({"by": "retry"}))
    }

    fn unblock(
        &self,
        mut epic: EpicRow,
        mut data: EpicData,
        machine: EpicState,
        mut detail: serde_json::Value,
    ) -> Result<EpicRow> {
        let step = epic::next(
            &machine,
            &Outcome::Unblocked,
            &self.limits_of(&epic.project),
        );
        detail["next"] = json!(step.state.stage.as_str());
        detail["why"] = json!(step.why);
        let ev = vec![self.emit(&epic, "task.unblocked", detail)];
        epic.state = step.state.stage.as_str().into();
        data.machine = Some(step.state);
        self.save(&mut epic, &data, ev)?;
        Ok(epic)
    }

    fn blocked(&self, epic: &EpicRow, data: &EpicData) -> Result<(EpicState, epic::Blocked)> {
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        match (&machine.stage, machine.blocked.clone()) {
            (Stage::Blocked, Some(b)) => Ok((machine, b)),
            _ => Err(PipelineError::NotNow(format!(
                "epic {} is not blocked (it is {}); nothing to answer or retry",
                epic.id, machine.stage
            ))),
        }
    }

    fn awaiting(&self, epic: &EpicRow, data: &EpicData) -> Result<EpicState> {
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        if machine.stage != Stage::AwaitingAcceptance {
            return Err(PipelineError::NotNow(format!(
                "epic {} is not awaiting acceptance (it is {})",
                epic.id, machine.stage
            )));
        }
        Ok(machine)
    }

    /// The options of a stage run of `epic`. The guard watches the epic while the run goes:
    /// when a person cancels it (here, or from another process), or the drive that started
    /// the run loses the epic's lease, the run is stopped.
    fn engine_options(&self, epic: &str) -> (EngineOptions, CancelWatch) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let store = self.store.clone();
        let id = epic.to_string();
        let mut shutdown = self.shutdown.clone();
        let lease = DRIVING.try_with(|l| l.clone()).ok();
        let watcher = tokio::spawn(async move {
            loop {
                let stopping = async {
                    match shutdown.as_mut() {
                        Some(s) => {
                            let _ = s.wait_for(|stop| *stop).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = stopping => {
                        let _ = tx.send(true);
                        return;
                    }
                }
                let (s, i, l) = (store.clone(), id.clone(), lease.clone());
                let (state, held) = fleet_store::pg::spawn_blocking(move || {
                    let state = s.epic(&i).ok().flatten().map(|e| e.state);
                    (state, l.is_none_or(|l| l.still_held()))
                })
                .await
                .unwrap_or((None, true));
                if state.as_deref() == Some(Stage::Cancelled.as_str()) || !held {
                    let _ = tx.send(true);
                    return;
                }
            }
        });
        let mut opts = self.engine_options_base();
        opts.stop = Some(rx);
        (opts, CancelWatch(watcher))
    }

    fn engine_options_base(&self) -> EngineOptions {
        EngineOptions {
            observer: self.observer.clone().map(|o| {
                let b: fleet_engine::Observer = Box::new(move |e: &Event| o(e));
                b
            }),
            // Agents report progress and problems through `fleet mcp` of this instance.
            mcp: self
                .layout
                .root()
                .parent()
                .map(|home| mcp_server(&self.fleet_exe, home)),
            // Forge tokens are named `*_TOKEN` (see `looks_like_secret_name`): covered too.
            redactor: fleet_secrets::Redactor::from_process_env(&self.instance.secret_names()),
            memory: fleet_engine::lessons::MemorySettings::from_config(&self.instance.memory),
            ..EngineOptions::default()
        }
    }
}

/// One process works on an epic at a time: a lease in the store, so processes on several
/// machines sharing one PostgreSQL agree too. It is renewed every third of its TTL; when its
/// holder dies, another machine takes it over after the TTL, this machine at once (see
/// `fleet_store::Lease`).
const EPIC_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

tokio::task_local! {
    /// The lease of the epic the current task drives: every stage run started under it stops
    /// once it is lost (`engine_options`). Task-local because stage runs are started deep in
    /// `stages.rs`, `qa.rs` and `migrate.rs`; the lease would be one more argument to each.
    static DRIVING: fleet_store::LeaseWatch;
}

/// How often a driver waiting for an epic's lease tries again.
const EPIC_LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Takes epic `id`'s lease without waiting (`None`: a fleet is working on the epic), for work
/// that must not overlap its driving (`fleet review-run`). Released when dropped.
pub fn try_lease_epic(
    store: std::sync::Arc<dyn Store>,
    id: &str,
) -> Result<Option<fleet_store::Lease>> {
    Ok(fleet_store::Lease::try_take(
        store,
        &epic_lease_name(id)?,
        EPIC_LEASE_TTL,
    )?)
}

fn epic_lease_name(id: &str) -> Result<String> {
    fleet_core::validate_id(id).map_err(|e| PipelineError::Invalid(format!("epic {id:?}: {e}")))?;
    Ok(format!("epic/{id}"))
}

/// Stops watching an epic for cancellation when dropped.
pub(crate) struct CancelWatch(tokio::task::JoinHandle<()>);

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fleet's MCP server (`fleet mcp` of the instance at `home`) for the agents Fleet launches.
pub fn mcp_server(fleet_exe: &std::path::Path, home: &std::path::Path) -> fleet_agents::McpServer {
    fleet_agents::McpServer {
        name: "fleet".into(),
        command: fleet_exe.display().to_string(),
        args: vec!["mcp".into()],
        env: [("FLEET_HOME".to_string(), home.display().to_string())].into(),
    }
}

/// A request that asks for new structure gets an architecture note before planning.
fn needs_design(request: &str) -> bool {
    let r = request.to_lowercase();
    [
        "architect",
        "design",
        "redesign",
        "new service",
        "from scratch",
        "rewrite",
    ]
    .iter()
    .any(|w| r.contains(w))
}

/// The engine run name of a stage: unique per epic, stage, cycle, re-plan and re-architecture,
/// so a resumed drive finds the run it had started.
fn stage_run_name(epic: &str, stage: Stage, m: &EpicState) -> String {
    // After a person unblocked the epic the stage runs anew (its earlier run had ended).
    let resumed = if m.resumes > 0 {
        format!("u{}", m.resumes)
    } else {
        String::new()
    };
    format!(
        "{epic}-{}-c{}r{}a{}{resumed}",
        stage.as_str(),
        m.cycle.max(1),
        m.replans,
        m.rearchitects
    )
}

/// Why the epic stands where it does, for lists and details: the question of a blocked epic,
/// the detail of the stage that failed it.
pub fn reason(epic: &EpicRow, data: &EpicData) -> Option<String> {
    let last_detail = epic.stages.last().and_then(|s| s.detail.as_deref());
    fleet_core::epic_data::reason(&epic.state, data.blocked_question(), last_detail)
}

/// The epic's data column, read loudly (see [`fleet_core::epic_data::decode`]).
pub fn decode_data(epic: &EpicRow) -> Result<EpicData> {
    fleet_core::epic_data::decode(&epic.id, &epic.data)
        .map_err(|e| PipelineError::Other(e.to_string()))
}
