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

mod stages;

use fleet_config::{InstanceConfig, Library};
use fleet_core::epic::{self, EpicState, Limits, Outcome, Stage};
use fleet_engine::{EngineOptions, StateDir};
use fleet_store::{EpicRow, Event, NewEvent, ProjectRow, StageRow, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

pub use stages::artifact_check;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request or a name in it is wrong (exit 2 at the CLI).
    #[error("{0}")]
    Invalid(String),
    #[error("no epic {0:?}")]
    NoSuchEpic(String),
    #[error(transparent)]
    Store(#[from] fleet_store::StoreError),
    #[error(transparent)]
    Git(#[from] fleet_git::GitError),
    #[error(transparent)]
    Engine(#[from] fleet_engine::EngineError),
    /// Fleet was stopped while a stage's run was going; driving the epic again resumes it.
    #[error("interrupted during run {0}; `fleet task resume` continues")]
    Interrupted(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// Called with every event the pipeline and its engine runs commit (progress display).
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// One task of the epic's plan, across cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpicTask {
    pub id: String,
    pub phase: String,
    pub title: String,
    pub role: String,
    pub description: String,
    pub depends_on: Vec<String>,
    pub commands: Vec<String>,
    pub statements: Vec<String>,
    pub cycle: u32,
    /// `planned`, then the engine's final state (`merged`, `failed`, `skipped`).
    pub state: String,
    pub run_id: Option<String>,
    pub reason: Option<String>,
}

/// One review (or acceptance) verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReviewRecord {
    pub cycle: u32,
    /// `approve`, `reject`, or `rejected_by_person`.
    pub verdict: String,
    pub summary: String,
    pub bugs: Vec<String>,
    /// Whether Fleet's own run of every acceptance command passed.
    pub checks_passed: bool,
}

/// What was delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delivery {
    pub kind: String,
    pub url: Option<String>,
    pub number: Option<u64>,
    pub pushed: Option<String>,
    /// Highest review-comment id already turned into rework, per comment kind.
    pub seen_review_comment: Option<u64>,
    pub seen_conversation_comment: Option<u64>,
}

/// The epic's data column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpicData {
    pub machine: Option<EpicState>,
    pub plan_summary: String,
    pub architecture: String,
    pub tasks: Vec<EpicTask>,
    pub reviews: Vec<ReviewRecord>,
    /// What the next plan must address (review bugs, a person's comment, failed tasks).
    pub feedback: String,
    pub delivery: Option<Delivery>,
    /// How the request was routed (IMR).
    pub routed_by: String,
    pub matched: Option<String>,
    /// The classifier agent was asked (when no rule matched and one is configured).
    pub classified: bool,
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
    /// Deploys: the command; the last URL it prints is the result.
    pub command: Option<String>,
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
        epic.updated_at = now_ms();
        epic.data = serde_json::to_value(data).map_err(|e| PipelineError::Other(e.to_string()))?;
        self.record(epic, events)
    }

    /// Writes `epic` as it is with `events`, then shows them to the observer.
    fn record(&self, epic: &EpicRow, events: Vec<NewEvent>) -> Result<()> {
        let seqs = self.store.save_epic(epic, &events)?;
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
        Ok(())
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
        let data: EpicData = serde_json::from_value(epic.data.clone()).unwrap_or_default();
        Ok((epic, data))
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
        let n = self.store.epics()?.len() + 1;
        let mut id = format!("e{n}");
        while self.store.epic(&id)?.is_some() {
            id.push('x');
        }
        let needs_design = needs_design(request);
        let machine = EpicState::new(self.context_file(project).is_file(), needs_design);
        let now = now_ms();
        let mut epic = EpicRow {
            id: id.clone(),
            project: project.to_string(),
            request: request.to_string(),
            state: machine.stage.as_str().into(),
            cycle: 0,
            branch: format!("fleet/epics/{id}"),
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
        let created = self.emit(
            &epic,
            "task.created",
            json!({"kind": "epic", "project": project, "request": request,
                   "intent": route.intent, "roles": route.roles, "matched": route.matched,
                   "next": machine.stage.as_str()}),
        );
        self.save(&mut epic, &data, vec![created])?;
        // The epic's branch exists from the start: every stage builds on it.
        if repo.branch_tip(&epic.branch)?.is_none() {
            repo.set_branch(&epic.branch, &base)?;
        }
        Ok(epic)
    }

    /// Works on the epic until it needs a person (awaiting acceptance) or ends.
    pub async fn drive(&self, id: &str) -> Result<EpicRow> {
        loop {
            let (mut epic, mut data) = self.epic(id)?;
            let machine = data
                .machine
                .clone()
                .ok_or_else(|| PipelineError::Other(format!("epic {id} has no state")))?;
            if !machine.stage.is_working() {
                return Ok(epic);
            }
            let project = self.project(&epic.project)?;
            // The epic's branch is made at intake, after the epic is saved: a crash in between
            // leaves it to be made here.
            let repo = fleet_git::Repo::open(std::path::Path::new(&project.path))?;
            if repo.branch_tip(&epic.branch)?.is_none() {
                repo.set_branch(&epic.branch, &epic.base_sha)?;
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
                self.save(&mut epic, &data, events)?;
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
                self.save(&mut epic, &data, vec![ev])?;
            }
            let ended = stages::run_stage(self, &mut epic, &mut data, &project, stage, &name).await;
            let (outcome, detail, run_id) = match ended {
                Ok(x) => x,
                Err(e @ PipelineError::Interrupted(_)) => return Err(e),
                Err(e) => (Outcome::Failed { why: e.to_string() }, e.to_string(), None),
            };
            let step = epic::next(&machine, &outcome, &self.limits);
            if let Some(s) = epic.stages.last_mut() {
                s.state = match outcome {
                    Outcome::Passed | Outcome::Approved => "passed".into(),
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
                _ => {}
            }
            epic.state = step.state.stage.as_str().into();
            epic.cycle = step.state.cycle;
            data.machine = Some(step.state);
            self.save(&mut epic, &data, events)?;
        }
    }

    /// A person accepts the delivered result: the epic is done.
    pub fn accept(&self, id: &str) -> Result<EpicRow> {
        let (mut epic, mut data) = self.epic(id)?;
        let machine = self.awaiting(&epic, &data)?;
        let step = epic::next(&machine, &Outcome::Accepted, &self.limits);
        epic.state = step.state.stage.as_str().into();
        data.machine = Some(step.state);
        let ev = vec![
            self.emit(&epic, "epic.accepted", json!({})),
            self.emit(&epic, "task.done", json!({"cycles": epic.cycle})),
        ];
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
        let step = epic::next(&machine, &Outcome::Reworked, &self.limits);
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

    /// Reads new review comments on the epic's pull request; if there are any, they become
    /// rework (the next cycle's fix tasks). Returns how many were new.
    pub async fn poll_review_comments(&self, id: &str) -> Result<usize> {
        let (epic, mut data) = self.epic(id)?;
        self.awaiting(&epic, &data)?;
        let project = self.project(&epic.project)?;
        let Some(delivery) = data.delivery.clone() else {
            return Ok(0);
        };
        let Some(number) = delivery.number else {
            return Ok(0);
        };
        let forge = stages::forge_of(&project)?;
        let comments = forge
            .review_comments(number, None)
            .await
            .map_err(|e| PipelineError::Other(e.to_string()))?;
        let new: Vec<_> = comments
            .into_iter()
            .filter(|c| match c.kind {
                fleet_deliver::CommentKind::Review => {
                    delivery.seen_review_comment.is_none_or(|s| c.id > s)
                }
                fleet_deliver::CommentKind::Conversation => {
                    delivery.seen_conversation_comment.is_none_or(|s| c.id > s)
                }
            })
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let mut d = delivery.clone();
        for c in &new {
            match c.kind {
                fleet_deliver::CommentKind::Review => {
                    d.seen_review_comment = d.seen_review_comment.max(Some(c.id))
                }
                fleet_deliver::CommentKind::Conversation => {
                    d.seen_conversation_comment = d.seen_conversation_comment.max(Some(c.id))
                }
            }
        }
        data.delivery = Some(d);
        let text = new
            .iter()
            .map(|c| {
                let at = match (&c.path, c.line) {
                    (Some(p), Some(l)) => format!(" on {p}:{l}"),
                    (Some(p), None) => format!(" on {p}"),
                    _ => String::new(),
                };
                format!("- {}{at}: {}", c.author, c.body.trim())
            })
            .collect::<Vec<_>>()
            .join("\n");
        let n = new.len();
        self.rework(epic, data, "pull_request_comments", &text)?;
        Ok(n)
    }

    /// Cancels an epic that has not ended.
    pub fn cancel(&self, id: &str) -> Result<EpicRow> {
        let (mut epic, mut data) = self.epic(id)?;
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        if machine.stage.is_final() {
            return Err(PipelineError::Invalid(format!(
                "epic {id} has already ended ({})",
                machine.stage
            )));
        }
        let step = epic::next(&machine, &Outcome::Cancel, &self.limits);
        epic.state = step.state.stage.as_str().into();
        data.machine = Some(step.state);
        let ev = vec![self.emit(
            &epic,
            "task.cancelled",
            json!({"reason": "cancelled by a person"}),
        )];
        self.save(&mut epic, &data, ev)?;
        Ok(epic)
    }

    fn awaiting(&self, epic: &EpicRow, data: &EpicData) -> Result<EpicState> {
        let machine = data.machine.clone().unwrap_or(EpicState::new(true, false));
        if machine.stage != Stage::AwaitingAcceptance {
            return Err(PipelineError::Invalid(format!(
                "epic {} is not awaiting acceptance (it is {})",
                epic.id, machine.stage
            )));
        }
        Ok(machine)
    }

    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            observer: self.observer.clone().map(|o| {
                let b: fleet_engine::Observer = Box::new(move |e: &Event| o(e));
                b
            }),
            ..EngineOptions::default()
        }
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
    format!(
        "{epic}-{}-c{}r{}a{}",
        stage.as_str(),
        m.cycle.max(1),
        m.replans,
        m.rearchitects
    )
}
