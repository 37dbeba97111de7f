//! Read models: what the API, the dashboard and `/metrics` show, computed from the store.
//! Pure queries — nothing here changes state.

use fleet_core::epic::Stage;
use fleet_pipeline::{EpicData, Pipeline};
use fleet_store::{AttemptRow, EpicQuery, EpicRow, Store, StoreError};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The states of an epic that is being worked on (the board's "in work").
pub const WORKING: &[&str] = &[
    "research",
    "architect",
    "plan",
    "implement",
    "review",
    "deliver",
];

/// `fleet budget --json` and `GET /api/v1/budgets` (the read model is `fleet_views::budget`).
pub use fleet_views::budget;

const HOUR_MS: i64 = 3_600_000;

/// Every attempt of an epic's stage runs.
pub fn epic_attempts(store: &dyn Store, epic: &EpicRow) -> Result<Vec<AttemptRow>, StoreError> {
    let mut out = Vec::new();
    for run in fleet_views::epic::epic_runs(store, epic)? {
        out.extend(store.attempts(&run.id)?);
    }
    Ok(out)
}

/// Seconds a task took: first attempt's start to last attempt's end (or now).
fn task_spans(
    attempts: &[AttemptRow],
    now: i64,
) -> BTreeMap<(String, String), (i64, i64, u32, bool)> {
    let mut spans: BTreeMap<(String, String), (i64, i64, u32, bool)> = BTreeMap::new();
    for a in attempts {
        let end = a.finished_at.unwrap_or(now);
        let e = spans
            .entry((a.run_id.clone(), a.task_id.clone()))
            .or_insert((a.started_at, end, 0, false));
        e.0 = e.0.min(a.started_at);
        e.1 = e.1.max(end);
        e.2 += 1;
        e.3 |= a.outcome == "passed";
    }
    spans
}

/// The agent attempts among `attempts` that are running now: who, on which model, since when.
pub fn agents_running(attempts: &[AttemptRow]) -> Vec<Value> {
    attempts
        .iter()
        .filter(|a| a.outcome == "running" && a.finished_at.is_none() && a.profile.is_some())
        .map(|a| {
            json!({"run_id": a.run_id, "task": a.task_id, "attempt": a.n, "profile": a.profile,
                   "cli": a.cli, "model": a.model, "account": a.account, "since": a.started_at})
        })
        .collect()
}

/// The seed's metrics (`GET /api/v1/metrics`, the dashboard's panel). Averages count real
/// work only (implementation tasks, not planner, reviewer or verify steps); "in work" counts
/// epics with a stage running now, not queued ones; the ETA is the current epic's remaining
/// critical path (`fleet_views::eta`).
pub fn metrics(p: &Pipeline) -> Result<Value, StoreError> {
    let store = &*p.store;
    let now = fleet_views::now_ms();
    let budget = budget(&p.instance, store)?;
    let day = store.attempts_since(now - 24 * HOUR_MS)?;
    let work: Vec<AttemptRow> = day
        .iter()
        .filter(|a| fleet_views::is_work(a))
        .cloned()
        .collect();
    let spans = task_spans(&work, now);
    let done: Vec<f64> = spans
        .values()
        .filter(|s| s.3)
        .map(|s| (s.1 - s.0) as f64 / 1000.0)
        .collect();
    let avg_task_secs = (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64);
    let today = chrono::Local::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(chrono::Local).single())
        .map(|t| t.timestamp_millis())
        .unwrap_or(now - 24 * HOUR_MS);
    let longest = spans
        .iter()
        .filter(|(_, s)| s.0 >= today)
        .max_by_key(|(_, s)| s.1 - s.0)
        .map(|((run, task), s)| json!({"run_id": run, "task": task, "secs": (s.1 - s.0) as f64 / 1000.0}));
    let recent = task_spans(
        &work
            .iter()
            .filter(|a| a.started_at >= now - 2 * HOUR_MS)
            .cloned()
            .collect::<Vec<_>>(),
        now,
    );
    let most_retried = recent
        .iter()
        .filter(|(_, s)| s.2 > 1)
        .max_by_key(|(_, s)| s.2)
        .map(|((run, task), s)| json!({"run_id": run, "task": task, "attempts": s.2}));
    let running = agents_running(&day);

    let page = |states: &[&str]| {
        store.epic_page(&EpicQuery {
            states: states.iter().map(|s| s.to_string()).collect(),
            limit: 500,
            ..EpicQuery::default()
        })
    };
    let awaiting_page = page(&["awaiting_acceptance"])?;
    let awaiting: Vec<String> = awaiting_page.epics.into_iter().map(|e| e.id).collect();
    let blocked_page = page(&["blocked"])?;
    let mut blocked = Vec::new();
    for b in &blocked_page.epics {
        if let Some(e) = store.epic(&b.id)? {
            let question = fleet_pipeline::decode_data(&e)
                .ok()
                .and_then(|d| d.machine.and_then(|m| m.blocked))
                .map(|b| b.question);
            blocked.push(json!({"id": e.id, "project": e.project, "request": e.request, "question": question}));
        }
    }
    let working = page(WORKING)?;
    let mut tasks_left = 0usize;
    let mut epics = Vec::new();
    let mut in_work = Vec::new();
    let mut current: Option<EpicRow> = None;
    for brief in &working.epics {
        let Some(epic) = store.epic(&brief.id)? else {
            continue;
        };
        let data: EpicData = serde_json::from_value(epic.data.clone()).unwrap_or_default();
        let total = data.tasks.iter().filter(|t| t.state != "skipped").count();
        let merged = data.tasks.iter().filter(|t| t.state == "merged").count();
        tasks_left += data.tasks.iter().filter(|t| t.state == "planned").count();
        epics.push(json!({"id": epic.id, "state": epic.state, "done": merged, "total": total}));
        if epic
            .stages
            .iter()
            .any(|s| s.state == "running" && s.finished_at.is_none())
        {
            in_work.push(epic.id.clone());
        }
        if current
            .as_ref()
            .is_none_or(|c| epic.updated_at > c.updated_at)
        {
            current = Some(epic);
        }
    }
    let (current_epic, roles) = match current
        .as_ref()
        .map(|e| fleet_views::epic::epic_view_without_events(store, &e.id, now))
        .transpose()?
        .flatten()
    {
        None => (Value::Null, json!({})),
        Some(view) => {
            let total = view
                .tasks
                .iter()
                .filter(|t| t.task.state != "skipped")
                .count();
            let merged = view
                .tasks
                .iter()
                .filter(|t| t.task.state == "merged")
                .count();
            // The observed durations read a week of attempts: only when an ETA is wanted.
            let eta = match view.state.as_str() {
                "implement" => {
                    let week = store.attempts_since(now - 7 * 24 * HOUR_MS)?;
                    let observed = fleet_views::eta::observed_task_secs(store, &week)?;
                    fleet_views::eta::implement_eta(&view, &observed, p.concurrency, now)
                }
                _ => None,
            };
            let mut roles: BTreeMap<String, (f64, u64)> = BTreeMap::new();
            for a in &view.attempts {
                let r = roles.entry(a.role.clone()).or_default();
                r.0 += a.duration_ms.unwrap_or(0) as f64 / 1000.0;
                r.1 += a.tokens;
            }
            let roles: serde_json::Map<String, Value> = roles
                .into_iter()
                .map(|(k, (secs, tokens))| (k, json!({"secs": secs, "tokens": tokens})))
                .collect();
            (
                json!({"id": view.id, "state": view.state, "done": merged, "total": total,
                       "eta_secs": eta, "now": view.now}),
                Value::Object(roles),
            )
        }
    };
    Ok(json!({
        "accounts": budget["accounts"],
        "tasks_left": tasks_left,
        "avg_task_secs": avg_task_secs,
        "current_epic": current_epic,
        "epics": epics,
        // The lists hold the newest 500; the counts are exact.
        "awaiting_acceptance": awaiting,
        "awaiting_acceptance_count": awaiting_page.total,
        "blocked": blocked,
        "blocked_count": blocked_page.total,
        "in_work": in_work,
        "in_work_count": in_work.len(),
        "queued_count": working.total as usize - in_work.len().min(working.total as usize),
        "longest_task_today": longest,
        "most_retried_2h": most_retried,
        "agents_running": running,
        "roles": roles,
    }))
}

/// `/metrics` in Prometheus' text format.
pub fn prometheus(p: &Pipeline) -> Result<String, StoreError> {
    use std::fmt::Write;
    let store = &*p.store;
    let now = fleet_views::now_ms();
    let mut out = String::new();
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let epics = store.epic_page(&EpicQuery {
        limit: 0,
        ..EpicQuery::default()
    })?;
    family(
        "fleet_epics",
        "gauge",
        "Epics (tasks people submitted) by state.",
        epics
            .counts
            .iter()
            .map(|(s, n)| (format!("{{state=\"{}\"}}", esc(s)), n.to_string()))
            .collect(),
    );
    let totals = store.totals()?;
    family(
        "fleet_tasks",
        "gauge",
        "Tasks of all runs by state.",
        totals
            .tasks_by_state
            .iter()
            .map(|(s, n)| (format!("{{state=\"{}\"}}", esc(s)), n.to_string()))
            .collect(),
    );
    family(
        "fleet_attempts_total",
        "counter",
        "Attempts by outcome.",
        totals
            .attempts_by_outcome
            .iter()
            .map(|(s, n)| (format!("{{outcome=\"{}\"}}", esc(s)), n.to_string()))
            .collect(),
    );
    family(
        "fleet_spend_usd_total",
        "counter",
        "Money spent by agents, per account.",
        totals
            .spend_by_account
            .iter()
            .map(|(a, (usd, _))| (format!("{{account=\"{}\"}}", esc(a)), format!("{usd}")))
            .collect(),
    );
    family(
        "fleet_spend_tokens_total",
        "counter",
        "Tokens used by agents, per account.",
        totals
            .spend_by_account
            .iter()
            .map(|(a, (_, t))| (format!("{{account=\"{}\"}}", esc(a)), t.to_string()))
            .collect(),
    );
    let outcomes = outcomes(store)?;
    let by_project = |f: &dyn Fn(&fleet_views::outcomes::Bucket) -> Vec<(&'static str, u64)>| {
        outcomes
            .projects
            .iter()
            .flat_map(|b| {
                f(b).into_iter().map(|(k, n)| {
                    (
                        format!("{{project=\"{}\",outcome=\"{k}\"}}", esc(&b.project)),
                        n.to_string(),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "fleet_requests",
        "gauge",
        "Requests (epics) per project: submitted, delivered, accepted, rejected (sent back by a person or a pull request comment at least once), blocked now.",
        by_project(&|b| {
            vec![
                ("submitted", b.requests),
                ("delivered", b.delivered),
                ("accepted", b.accepted),
                ("rejected", b.rejected),
                ("blocked", b.blocked),
            ]
        }),
    );
    let per_project = |f: &dyn Fn(&fleet_views::outcomes::Bucket) -> Option<f64>| {
        outcomes
            .projects
            .iter()
            .filter_map(|b| {
                f(b).map(|v| {
                    (
                        format!("{{project=\"{}\"}}", esc(&b.project)),
                        format!("{v}"),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "fleet_attempts_per_task",
        "gauge",
        "Attempts per implementation task, per project.",
        per_project(&|b| b.attempts_per_task),
    );
    family(
        "fleet_cost_per_accepted_request_usd",
        "gauge",
        "Money spent per accepted request, per project.",
        per_project(&|b| b.cost_per_accepted_usd),
    );
    family(
        "fleet_request_to_pull_request_seconds",
        "gauge",
        "Average seconds from a request to its delivery (pull request, branch or deploy), per project.",
        per_project(&|b| b.to_pull_request_secs_avg),
    );
    let per_profile = |f: &dyn Fn(&fleet_views::outcomes::ProfileOutcome) -> Option<String>| {
        outcomes
            .profiles
            .iter()
            .filter_map(|p| f(p).map(|v| (format!("{{profile=\"{}\"}}", esc(&p.profile)), v)))
            .collect::<Vec<_>>()
    };
    family(
        "fleet_profile_attempts",
        "gauge",
        "Ended attempts each agent profile played.",
        per_profile(&|p| Some(p.attempts.to_string())),
    );
    family(
        "fleet_profile_pass_rate",
        "gauge",
        "Share of an agent profile's ended attempts that passed.",
        per_profile(&|p| p.pass_rate.map(|v| v.to_string())),
    );
    family(
        "fleet_profile_stalls",
        "gauge",
        "Attempts of an agent profile that stalled.",
        per_profile(&|p| Some(p.stalls.to_string())),
    );
    family(
        "fleet_profile_rate_limits",
        "gauge",
        "Attempts of an agent profile that hit a rate limit or quota.",
        per_profile(&|p| Some(p.rate_limits.to_string())),
    );
    family(
        "fleet_profile_cost_per_passed_task_usd",
        "gauge",
        "Money an agent profile spent per attempt of it that passed.",
        per_profile(&|p| p.cost_per_passed_usd.map(|v| v.to_string())),
    );
    let running = agents_running(&store.attempts_since(now - 24 * HOUR_MS)?).len();
    family(
        "fleet_agents_running",
        "gauge",
        "Agent attempts running now.",
        vec![(String::new(), running.to_string())],
    );
    // Queue latency: how long submitted epics waited for their first stage to start (still
    // waiting ones count up to now), over the newest 500.
    let recent = store.epic_page(&EpicQuery {
        limit: 500,
        ..EpicQuery::default()
    })?;
    let mut waits = Vec::new();
    for b in recent
        .epics
        .iter()
        .filter(|b| b.created_at >= now - 24 * HOUR_MS)
    {
        if let Some(e) = store.epic(&b.id)? {
            let start = e.stages.first().map(|s| s.started_at);
            if start.is_some() || Stage::parse(&e.state).is_some_and(|s| s.is_working()) {
                waits.push((start.unwrap_or(now) - e.created_at).max(0) as f64 / 1000.0);
            }
        }
    }
    let avg = if waits.is_empty() {
        0.0
    } else {
        waits.iter().sum::<f64>() / waits.len() as f64
    };
    let max = waits.iter().cloned().fold(0.0, f64::max);
    family(
        "fleet_queue_latency_seconds",
        "gauge",
        "Seconds from submission to the first stage's start, epics of the last 24 h.",
        vec![
            ("{stat=\"avg\"}".into(), format!("{avg}")),
            ("{stat=\"max\"}".into(), format!("{max}")),
        ],
    );
    Ok(out)
}

/// `GET /api/v1/tasks/{id}`: the epic's read model (`fleet_views::EpicView`, the same
/// `fleet task show --json` prints), with the header the dashboard reads as `task`, the plan
/// as `plan`, and its latest events.
pub fn epic_detail(p: &Pipeline, id: &str) -> Result<Option<Value>, StoreError> {
    let store = &*p.store;
    let now = fleet_views::now_ms();
    let Some(view) = fleet_views::epic_view(store, id, now)? else {
        return Ok(None);
    };
    let mut runs: Vec<String> = view
        .stages
        .iter()
        .filter_map(|s| s.run_id.clone())
        .collect();
    if let Some(epic) = store.epic(id)? {
        for r in fleet_views::epic::epic_runs(store, &epic)? {
            if !runs.contains(&r.id) {
                runs.push(r.id);
            }
        }
    }
    runs.push(view.id.clone());
    let events = store.latest_events(&runs, 200)?;
    let mut out = serde_json::to_value(&view).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    out["task"] = json!({
        "id": view.id, "project": view.project, "request": view.request, "state": view.state,
        "cycle": view.cycle, "created_at": view.created_at, "updated_at": view.updated_at,
        "branch": view.branch, "intent": view.intent, "roles": view.roles,
        "routed_by": view.routed_by, "delivery": view.delivery, "now": view.now,
        "reason": view.reason, "blocked": view.blocked,
    });
    out["plan"] = out["tasks"].clone();
    out["events"] = json!(events);
    Ok(Some(out))
}

/// The outcomes, computed at most once per [`OUTCOMES_FRESH`] while events keep coming (they
/// read every epic and attempt: a board polling them and a Prometheus scraping them must not
/// keep a core busy over 10,000 epics), and again at once after a quiet spell's first event.
pub fn outcomes(store: &dyn Store) -> Result<std::sync::Arc<fleet_views::Outcomes>, StoreError> {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Instant;
    type Cached = (usize, u64, Instant, Arc<fleet_views::Outcomes>);
    static CACHE: OnceLock<Mutex<Option<Cached>>> = OnceLock::new();
    let key = store as *const dyn Store as *const () as usize;
    let seq = store.newest_seq()?;
    let cache = CACHE.get_or_init(|| Mutex::new(None));
    if let Some((k, s, at, o)) = cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && *k == key
        && (*s == seq || at.elapsed() < OUTCOMES_FRESH)
    {
        return Ok(o.clone());
    }
    let o = Arc::new(fleet_views::outcomes(store)?);
    *cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, seq, Instant::now(), o.clone()));
    Ok(o)
}

/// How stale the outcomes may be while the fleet works.
const OUTCOMES_FRESH: std::time::Duration = std::time::Duration::from_secs(5);
