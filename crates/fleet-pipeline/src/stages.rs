//! Each stage as an engine run: the runbook it generates, how its artifact is read back, and
//! what the pure machine is told about how it ended.

use crate::{DeliverySpec, EpicData, EpicTask, Pipeline, PipelineError, Result, ReviewRecord};
use fleet_core::epic::{Outcome, Stage};
use fleet_core::work_plan::{
    PlanContext, Review, Verdict, WorkPlan, validate_plan, validate_review,
};
use fleet_store::{EpicRow, ProjectRow, RunRow};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Where agents of non-code roles leave what they return.
pub(crate) const OUT: &str = ".fleet-out";
const MAX_TASKS: usize = 50;

/// `fleet artifact check KIND FILE`: what a stage's acceptance check runs on the artifact an
/// agent wrote, so an invalid plan or review goes back to the agent with the errors (the
/// Do -> Check -> Fix loop) before it ever reaches the pipeline.
pub fn artifact_check(
    kind: &str,
    text: &str,
    roles: &[String],
    existing: &[String],
) -> std::result::Result<(), Vec<String>> {
    match kind {
        "plan" => {
            let plan: WorkPlan = serde_json::from_str(text)
                .map_err(|e| vec![format!("plan.json is not a valid plan: {e}")])?;
            let ctx = PlanContext {
                known_roles: roles.to_vec(),
                existing: existing.to_vec(),
                max_tasks: MAX_TASKS,
            };
            validate_plan(&plan, &ctx)
                .map(|_| ())
                .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
        }
        "review" => {
            let review: Review = serde_json::from_str(text)
                .map_err(|e| vec![format!("review.json is not a valid review: {e}")])?;
            validate_review(&review).map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
        }
        "findings" => crate::audit::parse_findings(text).map(|_| ()),
        "deploy" => crate::devops_deploy::parse_report(text).map(|_| ()),
        "qa" => {
            let report: fleet_core::qa::QaReport = serde_json::from_str(text)
                .map_err(|e| vec![format!("qa.json is not a valid QA report: {e}")])?;
            fleet_core::qa::validate_qa_report(&report)
                .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
        }
        other => Err(vec![format!(
            "unknown artifact kind {other:?} (expected plan, review, qa, deploy or findings)"
        )]),
    }
}

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The roles atomic tasks may be given: every role that writes code and some profile plays
/// (a plan naming another goes back to the planner instead of failing at implement).
fn code_roles(p: &Pipeline) -> Vec<String> {
    p.library
        .roles
        .values()
        .filter(|r| r.writes_code && p.playable(&r.name))
        .map(|r| r.name.clone())
        .collect()
}

/// The forge token's env var when the project names none.
pub(crate) fn default_token_env(forge: Option<&str>) -> &'static str {
    match forge {
        Some("gitlab") => "GITLAB_TOKEN",
        _ => "GITHUB_TOKEN",
    }
}

/// What a person must do before `stage` can run, as the one question a blocked epic asks:
/// a role of the stage (or of its planned tasks) nobody plays, or, for a pull request, the
/// forge token's env var unset. `None`: the stage can run.
pub(crate) fn blocker(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    stage: Stage,
) -> Option<String> {
    let mut roles: Vec<String> = match stage {
        Stage::Research => vec!["researcher".into()],
        Stage::Architect => vec!["architect".into()],
        Stage::Plan => vec!["planner".into()],
        Stage::Review => vec!["reviewer".into()],
        Stage::Qa => vec!["qa".into()],
        Stage::Implement => data
            .tasks
            .iter()
            .filter(|t| t.state == "planned")
            .map(|t| t.role.clone())
            .collect(),
        _ => Vec::new(),
    };
    roles.sort();
    roles.dedup();
    if let Some(role) = roles.iter().find(|r| !p.playable(r)) {
        return Some(format!(
            "No agent profile plays role {role}, which the {stage} stage needs. Add one to \
             fleet.yaml (`agents: {{ {role}-agent: {{ cli: claude, roles: [{role}] }} }}`), then \
             run `fleet task retry {}`.",
            epic.id
        ));
    }
    if matches!(stage, Stage::Plan | Stage::Implement) && code_roles(p).is_empty() {
        return Some(format!(
            "No agent profile plays a role that writes code (such as developer), so no plan \
             can be carried out. Add one to fleet.yaml (`agents: {{ dev: {{ cli: claude, roles: \
             [developer] }} }}`), then run `fleet task retry {}`.",
            epic.id
        ));
    }
    if stage == Stage::Qa
        && let Some(q) = delivery_spec(project)
            .ok()
            .and_then(|spec| crate::qa::browser_missing(&spec, data, &epic.id))
    {
        return Some(q);
    }
    if stage == Stage::Deliver {
        let spec = delivery_spec(project).ok()?;
        if spec.kind == "deploy" && spec.command.is_none() && !p.playable("devops") {
            return Some(format!(
                "No agent profile plays role devops, which deploys this project (it has no \
                 deploy command). Add one to fleet.yaml (`agents: {{ ops: {{ cli: claude, \
                 roles: [devops] }} }}`) or give the project a deploy command, then run `fleet \
                 task retry {}`.",
                epic.id
            ));
        }
        if spec.kind == "pull_request" {
            let var = spec
                .token_env
                .clone()
                .unwrap_or_else(|| default_token_env(spec.forge.as_deref()).into());
            if fleet_deliver::Token::from_env(&var).is_none() {
                return Some(format!(
                    "The forge token is missing: set {var} (a token that may push to and open \
                     pull requests on {}) in the environment of Fleet, then run `fleet task \
                     retry {}`.",
                    spec.repo.as_deref().unwrap_or("the project's repository"),
                    epic.id
                ));
            }
        }
    }
    None
}

/// What defines "green" for every task: the project's checks, then its bible's defaults.
fn project_checks(p: &Pipeline, project: &ProjectRow) -> Vec<String> {
    let mut checks = project.checks.clone();
    if let Some(b) = project.bible.as_deref().and_then(|b| p.library.bible(b)) {
        for c in &b.checks {
            if !checks.contains(c) {
                checks.push(c.clone());
            }
        }
    }
    checks
}

fn bullet(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("- {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The variables every role template may use.
pub(crate) fn vars(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
) -> BTreeMap<&'static str, String> {
    let mut v: BTreeMap<&'static str, String> = BTreeMap::new();
    for k in fleet_config::TEMPLATE_VARS {
        v.insert(k, String::new());
    }
    let mut request = epic.request.clone();
    if let Some(intent) = &epic.intent {
        request.push_str(&format!(
            "\n\n(Fleet routed this request as `{intent}`; roles for its work: {}.)",
            epic.roles.join(", ")
        ));
    }
    if !data.answers.is_empty() {
        // Marked so that every agent tells the person's later words from the request itself.
        request.push_str("\n\n## Answers from the person");
    }
    for a in &data.answers {
        request.push_str(&format!(
            "\n\nFleet asked ({} stage): {}\nThe person answered: {}",
            a.stage, a.question, a.answer
        ));
    }
    v.insert("request", request);
    v.insert("roles", code_roles(p).join(", "));
    v.insert("project", project.name.clone());
    let bible = project.bible.as_deref().and_then(|b| p.library.bible(b));
    v.insert("bible", bible.map(|b| b.prompt_text()).unwrap_or_default());
    v.insert(
        "context",
        std::fs::read_to_string(p.context_file(&project.name)).unwrap_or_default()
            + &crate::memory_edge::history(p, epic, data),
    );
    v.insert("architecture", data.architecture.clone());
    v.insert("feedback", data.feedback.clone());
    v.insert("cycle", epic.cycle.max(1).to_string());
    v.insert(
        "existing_tasks",
        data.tasks
            .iter()
            .map(|t| format!("- {} ({}, cycle {}): {}", t.id, t.state, t.cycle, t.title))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    v
}

pub(crate) fn render(
    p: &Pipeline,
    role: &str,
    vars: &BTreeMap<&'static str, String>,
    bible: Option<&str>,
) -> Result<String> {
    let r = p
        .library
        .role(role)
        .ok_or_else(|| PipelineError::Invalid(format!("no role {role:?}")))?;
    let mut vars = vars.clone();
    let skills = p.library.skills_for(role, bible);
    vars.insert("skills", fleet_config::skills_text(&skills));
    let borrowed: BTreeMap<&str, String> = vars.into_iter().collect();
    r.render(&borrowed)
        .map_err(|e| PipelineError::Other(format!("role {role}: {e}")))
}

/// Starts (or, after a crash, resumes or reads back) the engine run `name` of `runbook`.
pub(crate) async fn run(
    p: &Pipeline,
    epic: &EpicRow,
    name: &str,
    runbook: Value,
    integration: Option<&str>,
) -> Result<RunRow> {
    run_fixing(p, epic, name, runbook, integration, None).await
}

/// [`run`] of work that fixes what a review, QA or a person rejected (`rejection`: their
/// words): once it passes, the engine's retrospective learns from those words and the fix.
async fn run_fixing(
    p: &Pipeline,
    epic: &EpicRow,
    name: &str,
    runbook: Value,
    integration: Option<&str>,
    rejection: Option<String>,
) -> Result<RunRow> {
    // The project's own policies and its bible's join the instance's (on resume too).
    let instance = with_project_policies(p, &epic.project);
    if let Some(row) = p.store.runs()?.into_iter().find(|r| r.name == name) {
        if !matches!(row.state.as_str(), "passed" | "failed" | "cancelled") {
            let (mut opts, _watch) = p.engine_options(&epic.id);
            if crate::on_runners::is_remote(p, &row.id) {
                let repo = Path::new(&row.repo);
                let repo = match p.store.project(&epic.project)? {
                    Some(project) => std::path::PathBuf::from(project.path),
                    None => repo.to_path_buf(),
                };
                crate::on_runners::resume(p, &epic.project, &repo, &row.id, opts.stop.take())
                    .await?;
            } else {
                fleet_engine::resume(p.layout.clone(), p.store.clone(), &row.id, &instance, opts)
                    .await?;
            }
        }
        return finished(p, &row.id);
    }
    let source = serde_json::to_string_pretty(&runbook).expect("runbooks serialize");
    let dir = p.layout.root().join("epics").join(&epic.id);
    std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Other(e.to_string()))?;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, &source).map_err(|e| PipelineError::Other(e.to_string()))?;
    let rb = fleet_config::parse_runbook(&path, &source).map_err(|e| {
        PipelineError::Other(
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let mut plan = fleet_engine::plan_from_runbook(&rb, &instance).map_err(|e| {
        PipelineError::Invalid(
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    plan.integration = integration.map(str::to_string);
    let (mut opts, _watch) = p.engine_options(&epic.id);
    if crate::on_runners::enabled(p) {
        let id = crate::on_runners::start(p, &epic.project, plan, opts.stop.take()).await?;
        return finished(p, &id);
    }
    opts.memory.rejection = rejection;
    let report = fleet_engine::start(p.layout.clone(), p.store.clone(), plan, opts).await?;
    finished(p, &report.run_id)
}

/// The instance configuration with `project`'s policies (`projects.NAME.policies`) and its
/// bible's added to the instance's own.
pub(crate) fn with_project_policies(p: &Pipeline, project: &str) -> fleet_config::InstanceConfig {
    let mut instance = p.instance.clone();
    instance
        .policies
        .extend(p.instance.project_limits(project).policies);
    if let Ok(Some(row)) = p.store.project(project)
        && let Some(bible) = row.bible.as_deref().and_then(|b| p.library.bible(b))
    {
        instance.policies.extend(bible.policies.iter().cloned());
    }
    instance
}

fn finished(p: &Pipeline, run_id: &str) -> Result<RunRow> {
    let row = p
        .store
        .run(run_id)?
        .ok_or_else(|| PipelineError::Other(format!("run {run_id} vanished")))?;
    if row.state == "interrupted" || row.state == "running" {
        return Err(PipelineError::Interrupted(run_id.to_string()));
    }
    crate::memory_edge::traces_of_run(p, &row);
    Ok(row)
}

pub(crate) fn base_runbook(
    p: &Pipeline,
    epic: &EpicRow,
    project: &ProjectRow,
    name: &str,
    tasks: Vec<Value>,
) -> Value {
    let concurrency = p.concurrency_of(&project.name);
    json!({
        "name": name,
        "repo": project.path,
        "base": epic.branch,
        "concurrency": concurrency,
        "tasks": tasks,
    })
}

/// A stage whose one agent writes one artifact, checked by `check`. Returns the run and the
/// artifact's text (`None` when the agent never produced a valid one).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn artifact_stage(
    p: &Pipeline,
    epic: &EpicRow,
    project: &ProjectRow,
    name: &str,
    role: &str,
    prompt: String,
    artifact: &str,
    check: String,
) -> Result<(RunRow, Option<String>)> {
    let task = json!({
        "id": role,
        "role": role,
        "prompt": prompt,
        "checks": [check],
    });
    let rb = base_runbook(p, epic, project, name, vec![task]);
    let row = run(p, epic, name, rb, None).await?;
    if row.state != "passed" {
        return Ok((row, None));
    }
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let text = repo.read_file(&row.integration_branch, &format!("{OUT}/{artifact}"))?;
    Ok((row, text))
}

/// Why the run's tasks did not pass, for stage details.
pub(crate) fn run_failure(p: &Pipeline, row: &RunRow) -> String {
    p.store
        .tasks(&row.id)
        .map(|ts| {
            ts.iter()
                .filter(|t| t.state != "merged" && t.state != "passed")
                .map(|t| {
                    format!(
                        "{} {}: {}",
                        t.id,
                        t.state,
                        t.reason.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

pub(crate) type StageEnd = (Outcome, String, Option<String>);

/// Asks the classifier `profile` for the request's intent (IMR, when no rule matched). `None`:
/// it named no known intent, or could not answer; the default route stands.
pub(crate) async fn classify(
    p: &Pipeline,
    epic: &EpicRow,
    project: &ProjectRow,
    profile: &str,
) -> Result<Option<fleet_config::Route>> {
    let prompt = format!(
        "{}\nWrite your answer — the intent name only — to `{OUT}/intent.txt`; that file is the \
         only one you may create.\n",
        p.instance.routing.classifier_prompt(&epic.request)
    );
    let name = format!("{}-classify", epic.id);
    let task = json!({
        "id": "classify",
        "agent": profile,
        "prompt": prompt,
        "checks": [format!("test -s {OUT}/intent.txt")],
    });
    let rb = base_runbook(p, epic, project, &name, vec![task]);
    let row = run(p, epic, &name, rb, None).await?;
    if row.state != "passed" {
        return Ok(None);
    }
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let answer = repo.read_file(&row.integration_branch, &format!("{OUT}/intent.txt"))?;
    Ok(answer.and_then(|a| p.instance.routing.classify(&a)))
}

pub(crate) async fn run_stage(
    p: &Pipeline,
    epic: &mut EpicRow,
    data: &mut EpicData,
    project: &ProjectRow,
    stage: Stage,
    name: &str,
) -> Result<StageEnd> {
    if let Some(question) = blocker(p, epic, data, project, stage) {
        return Ok(needs_person(question));
    }
    let mut v = vars(p, epic, data, project);
    if let Some(end) = crate::migrate::stage(p, epic, data, project, stage, name, &v).await? {
        return Ok(end);
    }
    crate::migrate::extend_vars(epic, data, project, stage, &mut v)?;
    let bible = project.bible.as_deref();
    match stage {
        Stage::Research => {
            let prompt = render(p, "researcher", &v, bible)?;
            let (row, text) = artifact_stage(
                p,
                epic,
                project,
                name,
                "researcher",
                prompt,
                "context.md",
                format!("test -s {OUT}/context.md"),
            )
            .await?;
            let Some(text) = text else {
                return Ok(fail(
                    format!("no context file: {}", run_failure(p, &row)),
                    &row,
                ));
            };
            let path = p.context_file(&project.name);
            crate::memory_edge::context_written(p, &project.name, &path, &text, &epic.base_sha)?;
            Ok((
                Outcome::Passed,
                format!("context written to {}", path.display()),
                Some(row.id),
            ))
        }
        Stage::Architect => {
            let prompt = render(p, "architect", &v, bible)?;
            let (row, text) = artifact_stage(
                p,
                epic,
                project,
                name,
                "architect",
                prompt,
                "architecture.md",
                format!("test -s {OUT}/architecture.md"),
            )
            .await?;
            let Some(text) = text else {
                return Ok(fail(
                    format!("no architecture note: {}", run_failure(p, &row)),
                    &row,
                ));
            };
            data.architecture = text;
            Ok((
                Outcome::Passed,
                "architecture note written".into(),
                Some(row.id),
            ))
        }
        Stage::Plan => {
            let roles = code_roles(p);
            let existing: Vec<String> = data.tasks.iter().map(|t| t.id.clone()).collect();
            let check = format!(
                "{} artifact check plan {OUT}/plan.json --roles {} --existing {}",
                shell_quote(&p.fleet_exe.display().to_string()),
                shell_quote(&roles.join(",")),
                shell_quote(&existing.join(","))
            );
            let prompt = render(p, "planner", &v, bible)?;
            let (row, text) = artifact_stage(
                p,
                epic,
                project,
                name,
                "planner",
                prompt,
                "plan.json",
                check,
            )
            .await?;
            let Some(text) = text else {
                return Ok(fail(
                    format!("no valid plan: {}", run_failure(p, &row)),
                    &row,
                ));
            };
            let plan: WorkPlan = serde_json::from_str(&text)
                .map_err(|e| PipelineError::Other(format!("plan.json: {e}")))?;
            let ctx = PlanContext {
                known_roles: roles,
                existing,
                max_tasks: MAX_TASKS,
            };
            let valid = validate_plan(&plan, &ctx).map_err(|e| {
                PipelineError::Other(format!(
                    "the plan passed its check but not validation: {}",
                    e.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
            if !valid.questions().is_empty() {
                // Too vague to plan: the person is asked; answered, planning runs again with
                // the answers joined to the request.
                let question = fleet_core::work_plan::clarify_question(&epic.id, valid.questions());
                return Ok((
                    Outcome::NeedsPerson { question },
                    format!("the planner asks {} question(s)", valid.questions().len()),
                    Some(row.id),
                ));
            }
            if let Some(why) = valid.no_change() {
                // After a delivery (a rework cycle), the drive sees this and skips to awaiting
                // acceptance (`pr_life::after_plan`). Before one (re-planning failed tasks),
                // nothing is planned and the epic goes on to review as usual.
                if let Some(d) = data.delivery.as_mut().filter(|d| !d.kind.is_empty()) {
                    d.no_change = Some(why.into());
                }
                data.feedback.clear();
                return Ok((
                    Outcome::Passed,
                    format!("no change needed: {why}"),
                    Some(row.id),
                ));
            }
            let cycle = epic.cycle.max(1);
            data.plan_summary = valid.summary().to_string();
            let mut ids = Vec::new();
            for t in valid.into_tasks() {
                ids.push(t.id.clone());
                data.tasks.push(EpicTask {
                    id: t.id,
                    phase: t.phase,
                    title: t.title,
                    role: t.role,
                    description: t.description,
                    depends_on: t.depends_on,
                    commands: t.commands,
                    statements: t.statements,
                    cycle,
                    state: "planned".into(),
                    run_id: None,
                    reason: None,
                });
            }
            data.feedback.clear();
            Ok((
                Outcome::Passed,
                format!("{} atomic tasks: {}", ids.len(), ids.join(", ")),
                Some(row.id),
            ))
        }
        Stage::Implement => implement(p, epic, data, project, name, &v).await,
        Stage::Review => review(p, epic, data, project, name, &v).await,
        Stage::Deliver => deliver(p, epic, data, project, name).await,
        Stage::Qa => crate::qa::run(p, epic, data, project, name, &v).await,
        other => Ok((
            Outcome::Failed {
                why: format!("{other} is not a stage Fleet runs"),
            },
            String::new(),
            None,
        )),
    }
}

/// The stage stops and the epic asks a person `question` (never `failed`: the cause is
/// fixable).
pub(crate) fn needs_person(question: String) -> StageEnd {
    (
        Outcome::NeedsPerson {
            question: question.clone(),
        },
        question,
        None,
    )
}

pub(crate) fn fail(why: String, row: &RunRow) -> StageEnd {
    (
        Outcome::Failed { why: why.clone() },
        why,
        Some(row.id.clone()),
    )
}

/// The words that sent an earlier cycle's work back (a review, QA or a person), when this
/// cycle's implementation is what fixes them.
fn rejection_fixed(data: &EpicData, cycle: u32) -> Option<String> {
    let review = data
        .reviews
        .last()
        .filter(|r| r.verdict != "approve" && r.cycle < cycle)
        .map(|r| (r.cycle, r.verdict.replace('_', " "), &r.summary, &r.bugs));
    let qa = data
        .qa
        .last()
        .filter(|q| q.verdict != "pass" && q.cycle < cycle)
        .map(|q| (q.cycle, format!("QA at {}", q.url), &q.summary, &q.bugs));
    // The later of the two is what this cycle fixes (QA runs after the review of its cycle).
    let (at, by, summary, bugs) = match (review, qa) {
        (Some(r), Some(q)) => {
            if q.0 >= r.0 {
                q
            } else {
                r
            }
        }
        (r, q) => r.or(q)?,
    };
    Some(format!(
        "{by} rejected the work of cycle {at}: {summary}\n{}",
        bullet(bugs)
    ))
}

async fn implement(
    p: &Pipeline,
    epic: &EpicRow,
    data: &mut EpicData,
    project: &ProjectRow,
    name: &str,
    v: &BTreeMap<&'static str, String>,
) -> Result<StageEnd> {
    let planned: Vec<usize> = (0..data.tasks.len())
        .filter(|&i| data.tasks[i].state == "planned")
        .collect();
    if planned.is_empty() {
        return Ok((Outcome::Passed, "nothing left to implement".into(), None));
    }
    let in_run: Vec<String> = planned.iter().map(|&i| data.tasks[i].id.clone()).collect();
    let green = project_checks(p, project);
    let mut tasks = Vec::new();
    for &i in &planned {
        let t = &data.tasks[i];
        let mut v = v.clone();
        v.insert(
            "task",
            format!("{} ({})\n\n{}", t.title, t.id, t.description),
        );
        let mut acceptance: Vec<String> = t
            .commands
            .iter()
            .map(|c| format!("`{c}` exits 0"))
            .collect();
        acceptance.extend(t.statements.iter().cloned());
        acceptance.extend(
            project
                .checks
                .iter()
                .map(|c| format!("`{c}` exits 0 (project check)")),
        );
        v.insert("acceptance", bullet(&acceptance));
        let prompt = render(p, &t.role, &v, project.bible.as_deref())?;
        let mut checks = t.commands.clone();
        checks.extend(green.iter().cloned());
        // Tasks of earlier cycles have landed already; only this run's order matters.
        let deps: Vec<&String> = t.depends_on.iter().filter(|d| in_run.contains(d)).collect();
        tasks.push(json!({
            "id": t.id,
            "role": t.role,
            "prompt": prompt,
            "checks": checks,
            "depends_on": deps,
        }));
    }
    let rb = base_runbook(p, epic, project, name, tasks);
    let rejection = rejection_fixed(data, epic.cycle);
    let row = run_fixing(p, epic, name, rb, Some(&epic.branch), rejection).await?;
    let rows = p.store.tasks(&row.id)?;
    let mut failed = Vec::new();
    for r in &rows {
        if let Some(t) = data
            .tasks
            .iter_mut()
            .find(|t| t.id == r.id && t.state == "planned")
        {
            t.state = r.state.clone();
            t.run_id = Some(row.id.clone());
            t.reason = r.reason.clone();
            if r.state != "merged" {
                failed.push(r.id.clone());
            }
        }
    }
    if failed.is_empty() {
        return Ok((
            Outcome::Passed,
            format!("{} tasks landed on {}", rows.len(), epic.branch),
            Some(row.id),
        ));
    }
    data.feedback = format!(
        "These tasks could not be done, after every agent tried (re-plan them as new, smaller \
         tasks with new ids; what landed stays):\n{}",
        rows.iter()
            .filter(|r| failed.contains(&r.id))
            .map(|r| format!(
                "- {} ({}): {}",
                r.id,
                r.state,
                r.reason.as_deref().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok((
        Outcome::TasksFailed {
            tasks: failed.clone(),
        },
        format!("failed: {}", failed.join(", ")),
        Some(row.id),
    ))
}

async fn review(
    p: &Pipeline,
    epic: &EpicRow,
    data: &mut EpicData,
    project: &ProjectRow,
    name: &str,
    v: &BTreeMap<&'static str, String>,
) -> Result<StageEnd> {
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    let mut commands: Vec<String> = Vec::new();
    let mut statements: Vec<String> = Vec::new();
    // The criteria of what landed: a task that failed for good was re-planned, and the tasks
    // that replaced it carry the criteria now.
    for t in data.tasks.iter().filter(|t| t.state == "merged") {
        for c in &t.commands {
            if !commands.contains(c) {
                commands.push(c.clone());
            }
        }
        statements.extend(t.statements.iter().map(|s| format!("{} ({})", s, t.id)));
    }
    for c in project_checks(p, project) {
        if !commands.contains(&c) {
            commands.push(c);
        }
    }
    statements.extend(crate::migrate::review_criteria(epic, data, project)?);
    let mut v = v.clone();
    // The reviewer gets no developer context: the request, the criteria and the diff — and
    // the bug reports of earlier cycles (review and QA), to check that they were fixed.
    v.insert("feedback", crate::qa::earlier_reports(data));
    v.insert("architecture", String::new());
    let mut acceptance: Vec<String> = commands.iter().map(|c| format!("`{c}` exits 0")).collect();
    acceptance.extend(statements.iter().cloned());
    v.insert("acceptance", bullet(&acceptance));
    v.insert("diff", repo.diff(&epic.base_sha, &epic.branch, 40_000)?);
    v.insert(
        "plan",
        data.tasks
            .iter()
            .map(|t| format!("- {}: {} [{}]", t.id, t.title, t.state))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let prompt = render(p, "reviewer", &v, project.bible.as_deref())?;
    let check = format!(
        "{} artifact check review {OUT}/review.json",
        shell_quote(&p.fleet_exe.display().to_string())
    );
    // Fleet runs every acceptance command itself, in a fresh worktree of the epic's branch.
    let verify = json!({"id": "verify", "command": "true", "checks": commands, "retries": 0});
    let reviewer = json!({"id": "review", "role": "reviewer", "prompt": prompt, "checks": [check]});
    let rb = base_runbook(p, epic, project, name, vec![verify, reviewer]);
    let row = run(p, epic, name, rb, None).await?;
    let rows = p.store.tasks(&row.id)?;
    let state_of = |id: &str| rows.iter().find(|r| r.id == id).cloned();
    let verify_row = state_of("verify");
    let checks_passed = verify_row
        .as_ref()
        .is_some_and(|r| r.state == "merged" || r.state == "passed");
    let review_ok = state_of("review").is_some_and(|r| r.state == "merged");
    let review: Option<Review> = if review_ok {
        repo.read_file(&row.integration_branch, &format!("{OUT}/review.json"))?
            .and_then(|t| serde_json::from_str(&t).ok())
    } else {
        None
    };
    let cycle = epic.cycle.max(1);
    let Some(review) = review else {
        return Ok(fail(
            format!("no valid review: {}", run_failure(p, &row)),
            &row,
        ));
    };
    let mut bugs: Vec<String> = review
        .bugs
        .iter()
        .map(|b| {
            let at = b
                .file
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            format!("{}{at}: {}", b.title, b.details)
        })
        .collect();
    if !checks_passed {
        bugs.push(format!(
            "acceptance checks fail on {}: {}",
            epic.branch,
            verify_row.and_then(|r| r.reason).unwrap_or_default()
        ));
    }
    let approved = review.verdict == Verdict::Approve && checks_passed;
    data.reviews.push(ReviewRecord {
        cycle,
        verdict: if approved { "approve" } else { "reject" }.into(),
        summary: review.summary.clone(),
        bugs: bugs.clone(),
        checks_passed,
    });
    if approved {
        return Ok((
            Outcome::Approved,
            format!("approved: {}", review.summary),
            Some(row.id),
        ));
    }
    data.feedback = format!(
        "An independent review of cycle {cycle} sent the work back. Plan fix tasks (new ids) \
         for this bug report:\n{}\n\nReview summary: {}",
        bullet(&bugs),
        review.summary
    );
    let ev = vec![p.emit(
        epic,
        "task.review_rejected",
        json!({"cycle": cycle, "bugs": bugs, "checks_passed": checks_passed}),
    )];
    p.record_events(ev)?;
    Ok((
        Outcome::Rejected,
        format!("rejected: {} bug(s)", bugs.len()),
        Some(row.id),
    ))
}

pub(crate) fn delivery_spec(project: &ProjectRow) -> Result<DeliverySpec> {
    serde_json::from_value(project.delivery.clone())
        .map_err(|e| PipelineError::Invalid(format!("project {}: delivery: {e}", project.name)))
}

/// The forge client for a project delivering pull requests (token read from its env var).
pub(crate) fn forge_of(project: &ProjectRow) -> Result<fleet_deliver::Forge> {
    let spec = delivery_spec(project)?;
    let token_env = spec
        .token_env
        .clone()
        .unwrap_or_else(|| default_token_env(spec.forge.as_deref()).into());
    let token = fleet_deliver::Token::from_env(&token_env).ok_or_else(|| {
        PipelineError::Invalid(format!(
            "project {}: the forge token env var {token_env} is not set",
            project.name
        ))
    })?;
    let repo = spec.repo.clone().ok_or_else(|| {
        PipelineError::Invalid(format!("project {}: delivery has no repo", project.name))
    })?;
    Ok(match spec.forge.as_deref().unwrap_or("github") {
        "gitlab" => {
            let mut g = fleet_deliver::GitLab::new(repo, token);
            if let Some(u) = &spec.api_url {
                g = g.with_api_url(u.clone());
            }
            fleet_deliver::Forge::GitLab(g)
        }
        "github" => {
            let (owner, name) = repo.split_once('/').ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "project {}: GitHub repo must be owner/name, got {repo:?}",
                    project.name
                ))
            })?;
            let mut g = fleet_deliver::GitHub::new(owner, name, token);
            if let Some(u) = &spec.api_url {
                g = g.with_api_url(u.clone());
            }
            fleet_deliver::Forge::GitHub(g)
        }
        other => {
            return Err(PipelineError::Invalid(format!(
                "project {}: unknown forge {other:?} (github or gitlab)",
                project.name
            )));
        }
    })
}

async fn deliver(
    p: &Pipeline,
    epic: &EpicRow,
    data: &mut EpicData,
    project: &ProjectRow,
    name: &str,
) -> Result<StageEnd> {
    let spec = delivery_spec(project)?;
    let repo = fleet_git::Repo::open(Path::new(&project.path))?;
    crate::memory_edge::commit_export(p, epic, project)?;
    let tip = repo
        .branch_tip(&epic.branch)?
        .ok_or_else(|| PipelineError::Other(format!("branch {} is gone", epic.branch)))?;
    let mut delivery = data.delivery.clone().unwrap_or_default();
    delivery.kind = spec.kind.clone();
    match spec.kind.as_str() {
        "branch" | "" => {
            if let Some(remote) = &spec.remote {
                repo.push(remote, &epic.branch)?;
                delivery.pushed = Some(tip.clone());
            }
            data.delivery = Some(delivery);
            Ok((
                Outcome::Passed,
                format!("the result is branch {}", epic.branch),
                None,
            ))
        }
        "pull_request" => {
            let remote = spec.remote.clone().unwrap_or_else(|| "origin".into());
            if let Err(e) = push_retried(p, epic, &repo, &remote).await {
                return Ok(needs_person(format!(
                    "Pushing {} to {remote} failed {DELIVERY_TRIES} times (last: {e}). Fix the \
                     remote or its credentials, then run `fleet task retry {}`.",
                    epic.branch, epic.id
                )));
            }
            delivery.pushed = Some(tip.clone());
            let forge = forge_of(project)?;
            let title = format!(
                "{} [fleet {}]",
                epic.request
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(72)
                    .collect::<String>(),
                epic.id
            );
            let body =
                fleet_deliver::pull_request_body(&crate::pr_life::summary(p, epic, data, project)?);
            let mut tries = 0;
            let opened = loop {
                tries += 1;
                match forge
                    .open(&epic.branch, &project.default_branch, &title, &body)
                    .await
                {
                    Err(e) if e.is_transient() && tries < DELIVERY_TRIES => {
                        delivery_retry(p, epic, "open the pull request", tries, &e.to_string())
                            .await?
                    }
                    other => break other,
                }
            };
            match opened {
                Ok(pr) => {
                    delivery.url = Some(pr.url.clone());
                    delivery.number = Some(pr.number);
                    data.delivery = Some(delivery);
                    let mut detail = format!("pull request {}", pr.url);
                    let life = crate::pr_life::after_delivery(
                        &forge, pr.number, pr.created, &body, &tip, data,
                    );
                    if let Some(problem) = life.await {
                        detail.push_str(&format!(" ({problem})"));
                    }
                    Ok((Outcome::Passed, detail, None))
                }
                Err(e) => {
                    data.delivery = Some(delivery);
                    Ok(needs_person(forge_question(&e, tries, &epic.id)))
                }
            }
        }
        "deploy" => {
            let Some(command) = spec.command.clone() else {
                // No deploy command: a DevOps agent deploys and reports the address.
                return match crate::devops_deploy::deploy(p, epic, data, project, name).await? {
                    Ok(url) => {
                        delivery.url = Some(url.clone());
                        data.delivery = Some(delivery);
                        let outcome = if crate::qa::wanted(p, &spec) {
                            Outcome::Deployed
                        } else {
                            Outcome::Passed
                        };
                        Ok((
                            outcome,
                            format!("deployed at {url} by a DevOps agent"),
                            None,
                        ))
                    }
                    Err(why) => Ok(needs_person(format!(
                        "DevOps agents could not deploy to a test environment ({} runs): \
                         {why}\nGive them what they need (access, a target in the bible, or \
                         a deploy command: `fleet project add --deploy-command`), then run \
                         `fleet task retry {}`.",
                        crate::devops_deploy::DEPLOY_RUNS,
                        epic.id
                    ))),
                };
            };
            let mut result = deploy_retried(p, epic, &repo, &spec, &command, &tip).await?;
            // A deploy that keeps failing goes to a DevOps agent with its output (when one
            // is configured); what it fixes lands on the epic's branch, then Fleet deploys again.
            let mut handed = None;
            if let Err(e) = &result
                && p.playable("devops")
            {
                let fixed =
                    devops_fix(p, epic, data, project, name, &command, &e.to_string()).await?;
                handed = Some(fixed.clone());
                if fixed.is_ok() {
                    let tip = repo.branch_tip(&epic.branch)?.ok_or_else(|| {
                        PipelineError::Other(format!("branch {} is gone", epic.branch))
                    })?;
                    result = deploy_retried(p, epic, &repo, &spec, &command, &tip).await?;
                }
            }
            match result {
                Ok(d) => {
                    delivery.url = Some(d.url.clone());
                    data.delivery = Some(delivery);
                    let by = if handed.is_some() {
                        " after a DevOps fix"
                    } else {
                        ""
                    };
                    // A deployed app is tested by QA before a person is asked to accept it.
                    let outcome = if crate::qa::wanted(p, &spec) {
                        Outcome::Deployed
                    } else {
                        Outcome::Passed
                    };
                    Ok((outcome, format!("deployed at {}{by}", d.url), None))
                }
                Err(e) => {
                    let devops = match handed {
                        None => String::new(),
                        Some(Ok(())) => {
                            "\nA DevOps agent's fix landed, and the deploy still fails.".into()
                        }
                        Some(Err(why)) => format!("\nA DevOps agent could not fix it: {why}"),
                    };
                    Ok(needs_person(format!(
                        "The deploy command `{command}` keeps failing: {e}{devops}\nFix the deploy \
                         (or its environment), then run `fleet task retry {}`.",
                        epic.id
                    )))
                }
            }
        }
        other => Err(PipelineError::Invalid(format!(
            "project {}: unknown delivery {other:?} (branch, pull_request, deploy)",
            project.name
        ))),
    }
}

/// Tries of a delivery step whose failure may pass by itself (forge 5xx, network, a push
/// race, a flaky deploy) before the epic asks a person.
const DELIVERY_TRIES: u32 = 3;

/// Runs the project's deploy command on `tip` in a worktree of its own, trying again after a
/// failure (a flaky deploy) up to [`DELIVERY_TRIES`] times.
async fn deploy_retried(
    p: &Pipeline,
    epic: &EpicRow,
    repo: &fleet_git::Repo,
    spec: &DeliverySpec,
    command: &str,
    tip: &str,
) -> Result<std::result::Result<fleet_deliver::Deployed, fleet_deliver::DeployError>> {
    let path = p.layout.worktrees().join(format!("{}-deploy", epic.id));
    // Under the epic's own branch name, so two instances' deploys never share one.
    let branch = epic.branch.replacen("fleet/epics/", "fleet/deploy/", 1);
    repo.add_worktree(&path, &branch, tip)?;
    let mut tries = 0;
    let result = loop {
        tries += 1;
        let r = fleet_deliver::deploy(
            command,
            &path,
            // Agents wrote the code the command builds and runs: Fleet's keys stay out.
            fleet_secrets::env::command_env(&spec.pass_env),
            std::time::Duration::from_secs(1800),
        )
        .await;
        match r {
            // A deploy that could not even start will not start on a second try.
            Err(e)
                if tries < DELIVERY_TRIES
                    && !matches!(e, fleet_deliver::DeployError::Spawn { .. }) =>
            {
                if let Err(err) = delivery_retry(p, epic, "deploy", tries, &e.to_string()).await {
                    let _ = repo.remove_worktree(&path);
                    return Err(err);
                }
            }
            other => break other,
        }
    };
    let _ = repo.remove_worktree(&path);
    Ok(result)
}

/// Hands a failing deploy to a DevOps agent: one task with the deploy's output, run through
/// Do -> Check -> Fix like any task and landed on the epic's branch. `Err`: why it did not land.
async fn devops_fix(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
    name: &str,
    command: &str,
    failure: &str,
) -> Result<std::result::Result<(), String>> {
    let mut v = vars(p, epic, data, project);
    v.insert(
        "task",
        format!(
            "The project's deploy command fails on this branch after {DELIVERY_TRIES} tries:\n\n             `{command}`\n\n{failure}\n\nFind the cause in the repository (scripts, config, \
             code) and fix it. Fleet runs the deploy command again once your fix has landed; do \
             not deploy yourself."
        ),
    );
    let green = project_checks(p, project);
    v.insert(
        "acceptance",
        bullet(
            &green
                .iter()
                .map(|c| format!("`{c}` exits 0"))
                .collect::<Vec<_>>(),
        ),
    );
    let prompt = render(p, "devops", &v, project.bible.as_deref())?;
    let task = json!({"id": "fix-deploy", "role": "devops", "prompt": prompt, "checks": green});
    let run_name = format!("{name}-devops");
    let rb = base_runbook(p, epic, project, &run_name, vec![task]);
    p.record_events(vec![p.emit(
        epic,
        "epic.deploy_handed_to_devops",
        json!({"run": run_name, "failure": failure}),
    )])?;
    let row = run(p, epic, &run_name, rb, Some(&epic.branch)).await?;
    let landed = p
        .store
        .tasks(&row.id)?
        .iter()
        .any(|t| t.id == "fix-deploy" && t.state == "merged");
    Ok(if landed {
        Ok(())
    } else {
        Err(run_failure(p, &row))
    })
}

/// Records why a delivery step is tried again, then waits (0.5 s, 1 s, 2 s …).
async fn delivery_retry(
    p: &Pipeline,
    epic: &EpicRow,
    step: &str,
    tries: u32,
    error: &str,
) -> Result<()> {
    let wait = std::time::Duration::from_millis(500u64 << (tries - 1).min(6));
    p.record_events(vec![p.emit(
        epic,
        "epic.delivery_retried",
        json!({"step": step, "try": tries, "of": DELIVERY_TRIES, "error": error,
               "wait_ms": wait.as_millis() as u64}),
    )])?;
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Pushes the epic's branch, trying again after a failure (a race with another push, a
/// network hiccup).
async fn push_retried(
    p: &Pipeline,
    epic: &EpicRow,
    repo: &fleet_git::Repo,
    remote: &str,
) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match repo.push(remote, &epic.branch) {
            Ok(_) => return Ok(()),
            Err(e) if tries < DELIVERY_TRIES => {
                delivery_retry(p, epic, "push", tries, &e.to_string()).await?
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The question a forge refusal asks: what to fix, and how to go on.
fn forge_question(e: &fleet_deliver::ForgeError, tries: u32, epic: &str) -> String {
    let what = match e {
        fleet_deliver::ForgeError::Auth { .. } => "Replace the token (or give it the permission)",
        fleet_deliver::ForgeError::NotFound { .. } => {
            "Check the project's forge repository and that the token can see it"
        }
        _ if e.is_transient() => "Check that the forge is up and reachable",
        _ => "Fix what the forge refused",
    };
    format!(
        "Opening the pull request failed ({tries} tries): {e}. {what}, then run `fleet task \
         retry {epic}`."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_check_reports_every_plan_error_and_accepts_a_good_plan() {
        let roles = vec!["developer".to_string()];
        let bad = r#"{"summary":"s","phases":[{"id":"p","title":"P","tasks":[
            {"id":"a","title":"A","role":"wizard","description":"d","depends_on":["b"],"acceptance":{}},
            {"id":"b","title":"B","role":"developer","description":"d","depends_on":["a"],"acceptance":{"commands":["true"]}}]}]}"#;
        let errs = artifact_check("plan", bad, &roles, &[]).unwrap_err();
        let text = errs.join("\n");
        assert!(text.contains("wizard"), "{text}");
        assert!(text.contains("acceptance"), "{text}");
        let good = r#"{"summary":"s","phases":[{"id":"p","title":"P","tasks":[
            {"id":"a","title":"A","role":"developer","description":"d","acceptance":{"commands":["true"]}}]}]}"#;
        assert_eq!(artifact_check("plan", good, &roles, &[]), Ok(()));
        assert!(artifact_check("plan", good, &roles, &["a".into()]).is_err());
        assert!(artifact_check("plan", "not json", &roles, &[]).is_err());
        assert!(
            artifact_check("review", r#"{"verdict":"reject","summary":"s"}"#, &[], &[]).is_err()
        );
        assert_eq!(
            artifact_check(
                "review",
                r#"{"verdict":"approve","summary":"fine"}"#,
                &[],
                &[]
            ),
            Ok(())
        );
        assert!(artifact_check("poem", "{}", &[], &[]).is_err());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
