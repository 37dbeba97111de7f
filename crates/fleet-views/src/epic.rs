//! An epic in detail (`fleet task show`, `GET /api/v1/tasks/{id}`, the dashboard's panel) and
//! the rows of the epic list (`fleet task ls`): live while a stage runs — the current stage,
//! its running attempts with who plays them, since when and what they did last — and, after,
//! every attempt with its agent, model, tokens, cost and why it happened.

use crate::{is_work, stage_of_run, tokens};
use fleet_core::epic::Blocked;
use fleet_core::epic_data::{self, Answer, EpicData, EpicTask, QaRecord, ReviewRecord};
use fleet_store::{AttemptRow, EpicRow, Event, RunRow, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

/// One attempt, as every view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    pub run_id: String,
    pub stage: String,
    pub task_id: String,
    /// The same as `task_id` (the name `fleet task show --json` has always used).
    pub task: String,
    pub n: u32,
    pub attempt: u32,
    pub role: String,
    /// The profile that played it (`None`: a shell command).
    pub agent: Option<String>,
    pub profile: Option<String>,
    pub cli: Option<String>,
    pub model: Option<String>,
    pub account: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub detail: Option<String>,
    pub exit_code: Option<i32>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    /// Why Fleet made this attempt with this agent (the first, a retry, a swap).
    pub why: Option<String>,
    /// The newest thing it did, while it runs.
    pub last_activity: Option<Activity>,
    /// The lessons memory put into its prompt, by id (`fleet memory show ID`).
    pub lessons: Vec<String>,
    /// Whether those lessons helped: the attempt passed (`None` without lessons, or while it
    /// runs). This is what weighed them.
    pub lessons_helped: Option<bool>,
}

/// What a running attempt did last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub at: i64,
    pub kind: String,
    pub text: String,
}

/// One thing that changed the course of the epic: a retry, a swap, a wait, a failing check, a
/// merge conflict, a rejection, a block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    pub at: i64,
    pub run_id: String,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub kind: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageView {
    pub stage: String,
    pub cycle: u32,
    pub state: String,
    pub run_id: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// The stage running now and its running attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Current {
    pub stage: String,
    pub cycle: u32,
    pub since: i64,
    pub run_id: Option<String>,
    pub running: Vec<AttemptView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: EpicTask,
    pub attempts: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryView {
    pub kind: String,
    pub url: Option<String>,
    pub number: Option<u64>,
    pub pushed: Option<String>,
    pub branch: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spend {
    pub cost_usd: f64,
    pub tokens: u64,
    pub time_ms: i64,
    pub attempts: u64,
}

/// Everything about an epic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpicView {
    pub id: String,
    pub project: String,
    pub request: String,
    pub state: String,
    pub cycle: u32,
    pub branch: String,
    pub intent: Option<String>,
    pub roles: Vec<String>,
    pub routed_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why it stands where it does: a blocked epic's question, a failed one's cause.
    pub reason: Option<String>,
    pub blocked: Option<Blocked>,
    pub answers: Vec<Answer>,
    pub delivery: Option<DeliveryView>,
    pub current: Option<Current>,
    /// One line on what its agents are doing now.
    pub now: Option<String>,
    pub stages: Vec<StageView>,
    pub tasks: Vec<TaskView>,
    pub attempts: Vec<AttemptView>,
    pub history: Vec<HistoryItem>,
    pub reviews: Vec<ReviewRecord>,
    /// QA of the deployed app, one per cycle it ran.
    pub qa: Vec<QaRecord>,
    pub spend_by_role: BTreeMap<String, Spend>,
    pub total: Spend,
}

/// The runs of an epic (its stage runs, the running one included: it is on the epic's row only
/// once it finished), oldest first.
pub fn epic_runs(store: &dyn Store, epic: &EpicRow) -> Result<Vec<RunRow>, StoreError> {
    let mut runs = store.runs_named(&format!("{}-", epic.id))?;
    for s in &epic.stages {
        if let Some(id) = &s.run_id
            && !runs.iter().any(|r| &r.id == id)
            && let Some(r) = store.run(id)?
        {
            runs.push(r);
        }
    }
    Ok(runs)
}

/// Events that explain the course of an epic.
const HISTORY: &[&str] = &[
    "task.retrying",
    "attempt.swapped",
    "task.waiting",
    "task.checks_failed",
    "task.merge_conflict",
    "task.failed",
    "attempt.rate_limited",
    "attempt.stalled",
    "epic.stage_finished",
    "epic.delivery_retried",
    "epic.deploy_handed_to_devops",
    "task.review_rejected",
    "task.blocked",
    "task.unblocked",
];

/// The most events read per run: a run of a long agent session holds many messages; what
/// explains its course is among them.
const EVENTS_PER_RUN: usize = 50_000;

fn why_of(e: &Event) -> String {
    let d = &e.data;
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    match e.kind.as_str() {
        "attempt.swapped" => format!("{} -> {}: {}", s("from"), s("to"), s("reason")),
        "task.checks_failed" => {
            let check = s("check");
            let out = s("output");
            let first = out
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("check `{check}` failed {first}").trim().to_string()
        }
        "task.waiting" => match d["until"].as_str() {
            Some(u) => format!("waiting until {u}: {}", s("reason")),
            None => s("reason"),
        },
        "epic.stage_finished" => format!("{} -> {}: {}", s("stage"), s("next"), s("why")),
        "epic.delivery_retried" => format!("{} failed, trying again: {}", s("step"), s("error")),
        "task.review_rejected" => format!("sent back by {}: {}", s("by"), s("comment")),
        "task.blocked" => s("question"),
        "task.merge_conflict" => "merge conflict: reworking".into(),
        _ => ["reason", "detail", "message", "error"]
            .iter()
            .find_map(|k| d[*k].as_str().filter(|v| !v.is_empty()))
            .unwrap_or("")
            .to_string(),
    }
}

fn activity_of(e: &Event) -> Option<String> {
    let d = &e.data;
    let first_line = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|t| t.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("")
            .chars()
            .take(160)
            .collect::<String>()
    };
    Some(match e.kind.as_str() {
        "attempt.started" => "started".into(),
        "attempt.tool_call" => {
            let tool = d["name"]
                .as_str()
                .or(d["tool"].as_str())
                .unwrap_or("a tool");
            format!("calls {tool}")
        }
        "attempt.tool_result" => "reads a tool's result".into(),
        "agent.message" => format!("writes: {}", first_line(&d["text"])),
        "attempt.progress" => format!("reports: {}", first_line(&d["message"])),
        "task.checks_started" => "runs the checks".into(),
        "task.checks_failed" => format!("check `{}` failed", d["check"].as_str().unwrap_or("")),
        "attempt.usage" => "used tokens".into(),
        "attempt.rate_limited" => "hit a rate limit".into(),
        "attempt.cli_retry" => "its CLI retries".into(),
        _ => return None,
    })
}

/// The role an attempt played: the stage's agent, or for implementation its task's role.
fn role_of(data: &EpicData, a: &AttemptRow) -> String {
    match stage_of_run(&a.run_id) {
        "research" => "researcher".into(),
        "architect" => "architect".into(),
        "plan" => "planner".into(),
        "review" if a.task_id.starts_with("verify") => "verify".into(),
        "review" => "reviewer".into(),
        "classify" => "classifier".into(),
        _ => data
            .tasks
            .iter()
            .find(|t| t.id == a.task_id && t.run_id.as_deref().is_none_or(|r| r == a.run_id))
            .map(|t| t.role.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| if is_work(a) { "developer" } else { "command" }.into()),
    }
}

/// An epic's view, or `None` when there is no such epic. `now` is the clock for running
/// durations.
pub fn epic_view(store: &dyn Store, id: &str, now: i64) -> Result<Option<EpicView>, StoreError> {
    view(store, id, now, true)
}

/// [`epic_view`] without reading its events (no history, no reasons, no last activity): for
/// figures that need only its stages, tasks and attempts, such as the ETA.
pub fn epic_view_without_events(
    store: &dyn Store,
    id: &str,
    now: i64,
) -> Result<Option<EpicView>, StoreError> {
    view(store, id, now, false)
}

fn view(
    store: &dyn Store,
    id: &str,
    now: i64,
    with_events: bool,
) -> Result<Option<EpicView>, StoreError> {
    let Some(epic) = store.epic(id)? else {
        return Ok(None);
    };
    // No document yet (an epic written before its first stage) reads as an empty one; a
    // document that cannot be read is an error, never shown as empty.
    let data = if epic.data.is_null() {
        EpicData::default()
    } else {
        epic_data::decode(&epic.id, &epic.data).map_err(|e| StoreError::Corrupt(e.to_string()))?
    };
    let runs = epic_runs(store, &epic)?;
    let mut rows: Vec<AttemptRow> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    for r in &runs {
        rows.extend(store.attempts(&r.id)?);
        if with_events {
            events.extend(store.events(Some(&r.id), 0, EVENTS_PER_RUN)?);
        }
    }
    if with_events {
        events.extend(store.events(Some(&epic.id), 0, EVENTS_PER_RUN)?);
    }
    events.sort_by_key(|e| e.seq);

    let attempts: Vec<AttemptView> = rows
        .iter()
        .map(|a| attempt_view(&data, a, &events, now))
        .collect();
    let history: Vec<HistoryItem> = events
        .iter()
        .filter(|e| HISTORY.contains(&e.kind.as_str()))
        .map(|e| HistoryItem {
            at: e.at,
            run_id: e.run_id.clone(),
            task: e.task.clone(),
            attempt: e.attempt,
            kind: e.kind.clone(),
            why: why_of(e),
        })
        .collect();

    let mut stages: Vec<StageView> = epic
        .stages
        .iter()
        .map(|s| StageView {
            stage: s.stage.clone(),
            cycle: s.cycle,
            state: s.state.clone(),
            run_id: s.run_id.clone(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            duration_ms: s.finished_at.map(|f| f - s.started_at),
            detail: s.detail.clone(),
            attempts: Vec::new(),
        })
        .collect();
    // A stage's run is on its row once it finished; a running one is found by its name.
    let run_of_stage = |s: &StageView| -> Option<String> {
        s.run_id.clone().or_else(|| {
            (s.state == "running")
                .then(|| {
                    runs.iter()
                        .rev()
                        .find(|r| stage_of_run(&r.id) == s.stage)
                        .map(|r| r.id.clone())
                })
                .flatten()
        })
    };
    for s in stages.iter_mut() {
        if let Some(run) = run_of_stage(s) {
            s.run_id = Some(run.clone());
            s.attempts = attempts
                .iter()
                .filter(|a| a.run_id == run)
                .cloned()
                .collect();
        }
    }
    let current = stages
        .iter()
        .rev()
        .find(|s| s.state == "running" && s.finished_at.is_none())
        .map(|s| Current {
            stage: s.stage.clone(),
            cycle: s.cycle,
            since: s.started_at,
            run_id: s.run_id.clone(),
            running: s
                .attempts
                .iter()
                .filter(|a| a.outcome == "running" && a.finished_at.is_none())
                .cloned()
                .collect(),
        });

    // Tasks: the plan, with the engine's live state while their run goes on.
    let live: BTreeMap<(String, String), String> = runs
        .iter()
        .filter(|r| r.state == "running" && stage_of_run(&r.id) == "implement")
        .map(|r| Ok((r.id.clone(), store.tasks(&r.id)?)))
        .collect::<Result<Vec<_>, StoreError>>()?
        .into_iter()
        .flat_map(|(run, tasks)| {
            tasks
                .into_iter()
                .map(move |t| ((run.clone(), t.id), t.state))
        })
        .collect();
    let running_impl = runs
        .iter()
        .rev()
        .find(|r| r.state == "running" && stage_of_run(&r.id) == "implement")
        .map(|r| r.id.clone());
    let tasks: Vec<TaskView> = data
        .tasks
        .iter()
        .map(|t| {
            let mut task = t.clone();
            if t.state == "planned"
                && t.cycle == epic.cycle.max(1)
                && let Some(run) = t.run_id.clone().or(running_impl.clone())
                && let Some(state) = live.get(&(run.clone(), t.id.clone()))
            {
                task.state = state.clone();
                task.run_id = Some(run);
            }
            let n = attempts
                .iter()
                .filter(|a| Some(&a.run_id) == task.run_id.as_ref() && a.task_id == t.id)
                .count();
            TaskView { task, attempts: n }
        })
        .collect();

    let mut spend_by_role: BTreeMap<String, Spend> = BTreeMap::new();
    let mut total = Spend::default();
    for a in &attempts {
        let ms = a.finished_at.unwrap_or(now.max(a.started_at)) - a.started_at;
        for s in [spend_by_role.entry(a.role.clone()).or_default(), &mut total] {
            s.cost_usd += a.cost_usd;
            s.tokens += a.tokens;
            s.time_ms += ms;
            s.attempts += 1;
        }
    }
    let now_line = current.as_ref().and_then(|c| {
        let a = c.running.iter().max_by_key(|a| a.started_at)?;
        let who = match (&a.agent, &a.cli, &a.model) {
            (Some(p), Some(c), Some(m)) => format!("{p} ({c}, {m})"),
            (Some(p), Some(c), None) => format!("{p} ({c})"),
            (Some(p), None, _) => p.clone(),
            _ => "a command".into(),
        };
        let doing = a
            .last_activity
            .as_ref()
            .map(|x| x.text.clone())
            .unwrap_or_else(|| "works".into());
        Some(format!("{}: {who} {doing} (attempt {})", a.task_id, a.n))
    });
    let delivery = data.delivery.as_ref().map(|d| DeliveryView {
        kind: d.kind.clone(),
        url: d.url.clone(),
        number: d.number,
        pushed: d.pushed.clone(),
        branch: epic.branch.clone(),
    });
    Ok(Some(EpicView {
        reason: crate::reason(&epic, &data),
        blocked: data.machine.as_ref().and_then(|m| m.blocked.clone()),
        id: epic.id,
        project: epic.project,
        request: epic.request,
        state: epic.state,
        cycle: epic.cycle,
        branch: epic.branch,
        intent: epic.intent,
        roles: epic.roles,
        routed_by: data.routed_by.clone(),
        created_at: epic.created_at,
        updated_at: epic.updated_at,
        answers: data.answers.clone(),
        delivery,
        current,
        now: now_line,
        stages,
        tasks,
        attempts,
        history,
        reviews: data.reviews.clone(),
        qa: data.qa.clone(),
        spend_by_role,
        total,
    }))
}

/// The ids of the lessons injected into attempt `a` (its `attempt.lessons` event).
fn lessons_of(a: &AttemptRow, events: &[Event]) -> Vec<String> {
    events
        .iter()
        .find(|e| {
            e.kind == "attempt.lessons"
                && e.run_id == a.run_id
                && e.task.as_deref() == Some(a.task_id.as_str())
                && e.attempt == Some(a.n)
        })
        .and_then(|e| e.data["lessons"].as_array())
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn attempt_view(data: &EpicData, a: &AttemptRow, events: &[Event], now: i64) -> AttemptView {
    let of_task =
        |e: &&Event| e.run_id == a.run_id && e.task.as_deref() == Some(a.task_id.as_str());
    // Why: the choice Fleet announced for this attempt (a swap says more than a selection),
    // else the retry that led to it.
    let before: Vec<&Event> = events
        .iter()
        .filter(of_task)
        .filter(|e| e.at <= a.started_at && e.attempt.is_none_or(|n| n < a.n))
        .collect();
    let previous_start = before
        .iter()
        .rev()
        .find(|e| e.kind == "attempt.started")
        .map(|e| e.seq)
        .unwrap_or(0);
    let why = before
        .iter()
        .rev()
        .filter(|e| e.seq > previous_start)
        .find(|e| {
            matches!(
                e.kind.as_str(),
                "attempt.swapped" | "task.retrying" | "agent.selected"
            )
        })
        .map(|e| match e.kind.as_str() {
            "agent.selected" => e.data["reason"].as_str().unwrap_or("").to_string(),
            _ => why_of(e),
        })
        .filter(|w| !w.is_empty());
    let running = a.outcome == "running" && a.finished_at.is_none();
    let lessons = lessons_of(a, events);
    let lessons_helped = (!lessons.is_empty() && !running && a.outcome != "interrupted")
        .then(|| a.outcome == "passed");
    let last_activity = running
        .then(|| {
            events
                .iter()
                .rev()
                .filter(of_task)
                .filter(|e| e.attempt == Some(a.n) || e.kind.starts_with("task.checks"))
                .find_map(|e| {
                    activity_of(e).map(|text| Activity {
                        at: e.at,
                        kind: e.kind.clone(),
                        text,
                    })
                })
        })
        .flatten();
    AttemptView {
        run_id: a.run_id.clone(),
        stage: stage_of_run(&a.run_id).to_string(),
        task_id: a.task_id.clone(),
        task: a.task_id.clone(),
        n: a.n,
        attempt: a.n,
        role: role_of(data, a),
        agent: a.profile.clone(),
        profile: a.profile.clone(),
        cli: a.cli.clone(),
        model: a.model.clone(),
        account: a.account.clone(),
        started_at: a.started_at,
        finished_at: a.finished_at,
        duration_ms: Some(a.finished_at.unwrap_or(now.max(a.started_at)) - a.started_at),
        outcome: a.outcome.clone(),
        detail: a.detail.clone(),
        exit_code: a.exit_code,
        input_tokens: a.input_tokens,
        output_tokens: a.output_tokens,
        cache_read_tokens: a.cache_read_tokens,
        cache_write_tokens: a.cache_write_tokens,
        tokens: tokens(a),
        cost_usd: a.cost_usd,
        why,
        last_activity,
        lessons,
        lessons_helped,
    }
}

/// A row of the epic list, with the reason column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListRow {
    pub id: String,
    pub project: String,
    pub state: String,
    pub cycle: u32,
    pub request: String,
    pub branch: String,
    pub created_at: i64,
    /// Why it is blocked or failed ("?" and the error when its data cannot be read).
    pub reason: Option<String>,
}

/// Every epic as a list row, oldest first, from the store's summaries (no epic document is
/// read, so it stays fast over many epics).
pub fn list_rows(store: &dyn Store) -> Result<Vec<ListRow>, StoreError> {
    Ok(store.epic_summaries()?.into_iter().map(list_row).collect())
}

/// A list row: why it is blocked (its question) or failed (its last stage's detail), as
/// [`crate::reason`] says for a whole epic.
pub fn list_row(e: fleet_store::EpicSummary) -> ListRow {
    let reason = epic_data::reason(
        &e.state,
        e.blocked_question.as_deref(),
        e.last_stage_detail.as_deref(),
    );
    ListRow {
        id: e.id,
        project: e.project,
        state: e.state,
        cycle: e.cycle,
        request: e.request,
        branch: e.branch,
        created_at: e.created_at,
        reason,
    }
}

#[cfg(test)]
mod lesson_tests {
    use super::*;

    fn event(task: &str, attempt: u32, kind: &str, data: serde_json::Value) -> Event {
        Event {
            seq: 1,
            at: 5,
            run_id: "e1-implement-1".into(),
            task: Some(task.into()),
            attempt: Some(attempt),
            kind: kind.into(),
            data,
        }
    }

    fn attempt(n: u32, outcome: &str) -> AttemptRow {
        AttemptRow {
            run_id: "e1-implement-1".into(),
            task_id: "t1".into(),
            n,
            started_at: 5,
            finished_at: (outcome != "running").then_some(9),
            outcome: outcome.into(),
            ..AttemptRow::default()
        }
    }

    /// An attempt shows the lessons its own `attempt.lessons` event names (not another
    /// attempt's or task's) and whether they helped: it passed.
    #[test]
    fn an_attempt_shows_its_lessons_and_whether_they_helped() {
        let events = vec![
            event(
                "t1",
                1,
                "attempt.lessons",
                serde_json::json!({"lessons": ["L-a", "L-b"]}),
            ),
            event(
                "t2",
                2,
                "attempt.lessons",
                serde_json::json!({"lessons": ["L-c"]}),
            ),
        ];
        let data = EpicData::default();
        let passed = attempt_view(&data, &attempt(1, "passed"), &events, 10);
        assert_eq!(passed.lessons, ["L-a", "L-b"]);
        assert_eq!(passed.lessons_helped, Some(true));
        let failed = attempt_view(&data, &attempt(1, "checks_failed"), &events, 10);
        assert_eq!(failed.lessons_helped, Some(false));
        let running = attempt_view(&data, &attempt(1, "running"), &events, 10);
        assert_eq!(running.lessons_helped, None);
        let other = attempt_view(&data, &attempt(2, "passed"), &events, 10);
        assert!(other.lessons.is_empty());
        assert_eq!(other.lessons_helped, None);
    }
}
