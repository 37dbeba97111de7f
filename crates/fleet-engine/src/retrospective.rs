//! After a run: the memory's maintenance pass (merge, archive, cap, propose) and a
//! retrospective for each task that failed and then passed.
//!
//! It runs once the run has ended — every passed task has landed — so learning never delays
//! landing. A retrospective is a run of its own: one task, role `retrospector` (any profile
//! that plays it; none, no retrospective), handed the evidence (what happened, the failing
//! output, the fixing diff, the lessons memory already has) in the role's prompt, whose
//! `.fleet-out/lessons.json` becomes 0-3 lessons with their provenance (run, task, attempt),
//! through the one redactor.

use crate::engine::{EngineOptions, RunReport};
use crate::lessons::{MemorySettings, Trouble, open_memory};
use crate::plan::{AgentPool, AgentTask, Plan, TaskAction, TaskDef};
use crate::{EngineError, StateDir};
use fleet_core::NodeSpec;
use fleet_core::pool::Limits;
use fleet_git::Repo;
use fleet_memory::MemoryDb;
use fleet_memory::retro::{self, Origin};
use fleet_store::Store;
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Retrospectives after one run at most: each is an agent run.
const MAX_PER_RUN: usize = 3;
/// The fixing diff handed over is cut here.
const MAX_DIFF: usize = 8_000;
/// The failing output handed over is its last this many characters.
const MAX_EVIDENCE: usize = 6_000;
const ARTIFACT: &str = ".fleet-out/lessons.json";

/// What a retrospective needs of the run it follows, taken before the run starts.
pub(crate) struct Learner {
    repo: Repo,
    base: String,
    layout: StateDir,
    store: Arc<dyn Store>,
    pool: Arc<AgentPool>,
    plan_name: String,
    /// The run's first task: the provenance of what a rejection taught.
    first_task: String,
    repo_path: PathBuf,
    kill_grace: Duration,
    mcp: Option<fleet_agents::McpServer>,
    redactor: fleet_secrets::Redactor,
    settings: MemorySettings,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<RunReport, EngineError>> + Send + 'a>>;

impl Learner {
    pub(crate) fn new(
        repo: &Repo,
        base: &str,
        layout: &StateDir,
        store: &Arc<dyn Store>,
        plan: &Plan,
        opts: &EngineOptions,
    ) -> Learner {
        Learner {
            repo: repo.clone(),
            base: base.to_string(),
            layout: layout.clone(),
            store: store.clone(),
            pool: plan.pool.clone(),
            plan_name: plan.name.clone(),
            first_task: plan.tasks.first().map(|t| t.id.clone()).unwrap_or_default(),
            repo_path: plan.repo.clone(),
            kill_grace: opts.kill_grace,
            mcp: opts.mcp.clone(),
            redactor: opts.redactor.clone(),
            settings: opts.memory.clone(),
        }
    }

    /// The maintenance pass, then the retrospectives of `report`'s troubles. Failures are
    /// reported on stderr and never change how the run ended.
    /// Boxed (and declared `Send`): a retrospective is an engine run, so this future is part
    /// of the engine run's own future.
    pub(crate) fn after(self, report: &RunReport) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.after_inner(report))
    }

    async fn after_inner(self, report: &RunReport) {
        if !self.settings.enabled {
            return;
        }
        let opened = open_memory(
            self.layout.root(),
            &*self.store,
            &self.settings,
            self.redactor.clone(),
        );
        let mut db = match opened {
            Ok(db) => db,
            Err(e) => return eprintln!("fleet: memory upkeep skipped: {e}"),
        };
        if let Err(e) = db.upkeep(self.settings.now(), &self.settings.policy) {
            eprintln!("fleet: memory upkeep failed: {e}");
        }
        let mut troubles = report.troubles.clone();
        if let (Some(words), crate::RunEnd::Passed) = (&self.settings.rejection, report.end) {
            troubles.push(Trouble {
                task: self.first_task.clone(),
                attempt: 1,
                what: "a review, QA or a person rejected earlier work; this run fixed it".into(),
                evidence: words.clone(),
                prompt: format!("The fix of: {words}"),
                commit: self
                    .repo
                    .branch_tip(&report.integration_branch)
                    .ok()
                    .flatten(),
            });
        }
        if !self.settings.retrospectives || troubles.is_empty() {
            return;
        }
        if !self
            .pool
            .profiles
            .iter()
            .any(|p| p.roles.iter().any(|r| r == "retrospector"))
        {
            return;
        }
        for t in troubles.iter().take(MAX_PER_RUN) {
            match self.learn(&mut db, &report.run_id, t).await {
                Ok(n) => eprintln!(
                    "fleet: retrospective of {}: {n} lesson{} written",
                    t.task,
                    if n == 1 { "" } else { "s" }
                ),
                Err(e) => eprintln!("fleet: retrospective of {} failed: {e}", t.task),
            }
        }
    }

    /// One retrospective: the retrospector's run, then its lessons into memory.
    async fn learn(&self, db: &mut MemoryDb, run: &str, t: &Trouble) -> Result<usize, String> {
        let prompt = self.prompt(db, t)?;
        let plan = self.plan(&t.task, prompt).map_err(|e| e.to_string())?;
        let mut settings = self.settings.clone();
        settings.enabled = false;
        settings.retrospectives = false;
        let opts = EngineOptions {
            kill_grace: self.kill_grace,
            observer: None,
            mcp: self.mcp.clone(),
            stop: None,
            redactor: self.redactor.clone(),
            memory: settings,
        };
        let fut: Boxed<'_> = Box::pin(crate::engine::start_in(
            self.repo.clone(),
            self.base.clone(),
            self.layout.clone(),
            self.store.clone(),
            plan,
            opts,
        ));
        let report = fut.await.map_err(|e| e.to_string())?;
        if report.end != crate::RunEnd::Passed {
            return Err(format!("its run {} did not pass", report.run_id));
        }
        let text = self
            .repo
            .read_file(&report.integration_branch, ARTIFACT)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("its run {} wrote no {ARTIFACT}", report.run_id))?;
        let file = retro::parse(&text).map_err(|e| format!("{ARTIFACT}: {e}"))?;
        let now = self.settings.now();
        let origin = Origin {
            project: self.settings.project_of(self.repo.root()),
            bible: self.settings.bible.clone(),
            run: run.to_string(),
            task: t.task.clone(),
            attempt: t.attempt,
            at: now,
        };
        let mut n = 0;
        for lesson in retro::to_lessons(file, &origin) {
            db.add_lesson(lesson, now, &self.settings.policy)
                .map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    /// The retrospector role's prompt (the instance's `roles/retrospector.md` or the
    /// built-in one) with the evidence.
    fn prompt(&self, db: &MemoryDb, t: &Trouble) -> Result<String, String> {
        let home = self.layout.root().parent().map(Path::to_path_buf);
        let library = fleet_config::Library::load(home.as_deref())
            .or_else(|_| fleet_config::Library::load(None))
            .map_err(|e| format!("{} error(s) in roles", e.len()))?;
        let role = library.role("retrospector").ok_or("no retrospector role")?;
        let diff = match &t.commit {
            Some(c) => self
                .repo
                .diff(&self.base, c, MAX_DIFF)
                .unwrap_or_else(|e| format!("(the fixing diff could not be read: {e})")),
            None => String::new(),
        };
        let evidence: String = {
            let chars: Vec<char> = t.evidence.chars().collect();
            chars[chars.len().saturating_sub(MAX_EVIDENCE)..]
                .iter()
                .collect()
        };
        let known: Vec<String> = db
            .lessons(false)
            .map_err(|e| e.to_string())?
            .iter()
            .rev()
            .take(20)
            .map(|l| format!("- [{}] {}", l.id, l.text))
            .collect();
        let mut vars = std::collections::BTreeMap::new();
        for k in fleet_config::TEMPLATE_VARS {
            vars.insert(*k, String::new());
        }
        vars.insert("request", format!("Task `{}`: {}.", t.task, t.what));
        vars.insert("project", self.settings.project_of(self.repo.root()));
        vars.insert("task", t.prompt.clone());
        vars.insert("feedback", evidence);
        vars.insert("diff", diff);
        vars.insert("context", known.join("\n"));
        let text = role.render(&vars)?;
        Ok(self.redactor.clean(&text).into_owned())
    }

    /// A one-task plan: the retrospector writes `lessons.json` on a branch of its own.
    fn plan(&self, task: &str, prompt: String) -> Result<Plan, EngineError> {
        let name = format!("{}-retro", self.plan_name);
        let check = format!("test -s {ARTIFACT}");
        let source = serde_json::to_string_pretty(&json!({
            "name": name,
            "repo": self.repo_path,
            "tasks": [{"id": "retrospective", "role": "retrospector", "prompt": prompt,
                       "checks": [check], "max_attempts": 2}],
        }))
        .expect("runbooks serialize");
        let dir = self.layout.root().join("retrospectives");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}-{task}.json"));
        std::fs::write(&path, &source)?;
        Ok(Plan {
            name,
            runbook_path: path,
            source,
            repo: self.repo_path.clone(),
            base: None,
            integration: None,
            concurrency: 1,
            report: None,
            nodes: vec![NodeSpec::leaf("retrospective", &[])],
            tasks: vec![TaskDef {
                id: "retrospective".into(),
                action: TaskAction::Agent(Box::new(AgentTask {
                    pinned: None,
                    roles: vec!["retrospector".into()],
                    prompt,
                    limits: Limits {
                        max_attempts: 2,
                        ..Limits::default()
                    },
                })),
                checks: vec![check],
                timeout: None,
                worktree: true,
                env: Default::default(),
                pass_env: Vec::new(),
                retry: Default::default(),
                max_time: None,
                allowed_paths: Vec::new(),
                allowed_tools: Vec::new(),
            }],
            pool: self.pool.clone(),
            // The retrospector writes only its `lessons.json`, which never lands: the
            // project's rules for code changes have nothing to judge.
            policies: Vec::new(),
        })
    }
}
