//! Read models: what the API, the dashboard and `/metrics` show, computed from the store.
//! Pure queries — nothing here changes state.

use fleet_config::InstanceConfig;
use fleet_core::epic::Stage;
use fleet_engine::rfc3339;
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

/// `fleet budget --json` and `GET /api/v1/budgets`: what each account, profile, role and task
/// spent in the current budget day (each account's own), against the daily budgets, with
/// cooldowns and disabled accounts.
pub fn budget(instance: &InstanceConfig, store: &dyn Store) -> Result<Value, StoreError> {
    use fleet_core::pool::{Clock, day_start};
    use std::collections::BTreeMap;
    let clock = Clock {
        now: fleet_engine::now_ms() as u64,
        utc_offset_secs: chrono::Local::now().offset().local_minus_utc(),
    };
    let day_of = |day_starts: u32| day_start(&clock, day_starts) as i64;
    // Accounts not in fleet.yaml (bare CLIs) count from local midnight.
    let since = instance
        .accounts
        .iter()
        .map(|a| day_of(a.day_starts))
        .chain([day_of(0)])
        .min()
        .unwrap_or(0);
    let attempts = store.attempts_since(since)?;
    let states = store.accounts()?;
    let in_day = |a: &fleet_store::AttemptRow| {
        let start = a
            .account
            .as_ref()
            .and_then(|n| instance.account(n))
            .map(|acc| day_of(acc.day_starts))
            .unwrap_or(day_of(0));
        a.started_at >= start
    };
    #[derive(Default, Clone, Copy, serde::Serialize)]
    struct Spend {
        usd: f64,
        tokens: u64,
        attempts: u64,
    }
    fn add(map: &mut BTreeMap<String, Spend>, key: &str, a: &fleet_store::AttemptRow) {
        let s = map.entry(key.to_string()).or_default();
        s.usd += a.cost_usd;
        s.tokens += a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens;
        s.attempts += 1;
    }
    let (mut by_account, mut by_profile, mut by_role, mut by_task) = (
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    for a in attempts.iter().filter(|a| a.profile.is_some() && in_day(a)) {
        let profile = a.profile.as_deref().unwrap_or("?");
        add(&mut by_account, a.account.as_deref().unwrap_or("(none)"), a);
        add(&mut by_profile, profile, a);
        for role in instance
            .profile(profile)
            .map(|p| p.roles.clone())
            .unwrap_or_default()
        {
            add(&mut by_role, &role, a);
        }
        add(&mut by_task, &format!("{}/{}", a.run_id, a.task_id), a);
    }
    let accounts: Vec<serde_json::Value> = instance
        .accounts
        .iter()
        .map(|acc| {
            let s = by_account.get(&acc.name).copied().unwrap_or_default();
            let st = states.iter().find(|r| r.name == acc.name);
            let cooldown = st
                .and_then(|r| r.cooldown_until)
                .filter(|t| *t > clock.now as i64);
            json!({
                "account": acc.name,
                "spent_usd": s.usd,
                "spent_tokens": s.tokens,
                "attempts": s.attempts,
                "budget_usd": acc.daily_budget_usd,
                "budget_tokens": acc.daily_budget_tokens,
                "left_usd": acc.daily_budget_usd.map(|b| (b - s.usd).max(0.0)),
                "left_tokens": acc.daily_budget_tokens.map(|b| b.saturating_sub(s.tokens)),
                "day_started": rfc3339(day_of(acc.day_starts)),
                "cooldown_until": cooldown.map(rfc3339),
                "disabled": st.and_then(|r| r.disabled.clone()),
            })
        })
        .collect();
    Ok(json!({
        "accounts": accounts, "profiles": by_profile, "roles": by_role, "tasks": by_task,
    }))
}

const HOUR_MS: i64 = 3_600_000;

/// The role an attempt played: the stage's agent (a stage run's id starts with
/// `<epic>-<stage>-`), or for implementation the task's role.
fn role_of(data: &EpicData, a: &AttemptRow) -> String {
    match a.run_id.split('-').nth(1).unwrap_or("") {
        "research" => "researcher".into(),
        "architect" => "architect".into(),
        "plan" => "planner".into(),
        "review" => "reviewer".into(),
        _ => data
            .tasks
            .iter()
            .find(|t| t.id == a.task_id && t.run_id.as_deref() == Some(a.run_id.as_str()))
            .map(|t| t.role.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "developer".into()),
    }
}

/// The ids of an epic's stage runs, the running one included (it is on the epic's row only
/// once it finished).
pub fn epic_runs(store: &dyn Store, epic: &EpicRow) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = epic
        .stages
        .iter()
        .filter_map(|s| s.run_id.clone())
        .collect();
    for r in store.runs_named(&format!("{}-", epic.id))? {
        if !ids.contains(&r.id) {
            ids.push(r.id);
        }
    }
    Ok(ids)
}

/// Every attempt of an epic's stage runs.
pub fn epic_attempts(store: &dyn Store, epic: &EpicRow) -> Result<Vec<AttemptRow>, StoreError> {
    let mut out = Vec::new();
    for run in epic_runs(store, epic)? {
        out.extend(store.attempts(&run)?);
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

/// The seed's metrics (`GET /api/v1/metrics`, the dashboard's panel).
pub fn metrics(p: &Pipeline) -> Result<Value, StoreError> {
    let store = &*p.store;
    let now = fleet_engine::now_ms();
    let budget = budget(&p.instance, store)?;
    let day = store.attempts_since(now - 24 * HOUR_MS)?;
    let spans = task_spans(&day, now);
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
        &day.iter()
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
    let working = page(WORKING)?;
    let mut tasks_left = 0usize;
    let mut epics = Vec::new();
    let mut current: Option<(EpicRow, EpicData)> = None;
    for brief in &working.epics {
        let Some(epic) = store.epic(&brief.id)? else {
            continue;
        };
        let data: EpicData = serde_json::from_value(epic.data.clone()).unwrap_or_default();
        let total = data.tasks.iter().filter(|t| t.state != "skipped").count();
        let merged = data.tasks.iter().filter(|t| t.state == "merged").count();
        tasks_left += data.tasks.iter().filter(|t| t.state == "planned").count();
        epics.push(json!({"id": epic.id, "state": epic.state, "done": merged, "total": total}));
        if current
            .as_ref()
            .is_none_or(|(c, _)| epic.updated_at > c.updated_at)
        {
            current = Some((epic, data));
        }
    }
    let (current_epic, roles) = match &current {
        None => (Value::Null, json!({})),
        Some((epic, data)) => {
            let total = data.tasks.iter().filter(|t| t.state != "skipped").count();
            let merged = data.tasks.iter().filter(|t| t.state == "merged").count();
            let left = data.tasks.iter().filter(|t| t.state == "planned").count();
            let eta = match (epic.state.as_str(), avg_task_secs) {
                ("implement", Some(avg)) => Some(left as f64 * avg / p.concurrency.max(1) as f64),
                _ => None,
            };
            let mut roles: BTreeMap<String, (f64, u64)> = BTreeMap::new();
            for a in epic_attempts(store, epic)? {
                let r = roles.entry(role_of(data, &a)).or_default();
                r.0 += (a.finished_at.unwrap_or(now) - a.started_at) as f64 / 1000.0;
                r.1 +=
                    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens;
            }
            let roles: serde_json::Map<String, Value> = roles
                .into_iter()
                .map(|(k, (secs, tokens))| (k, json!({"secs": secs, "tokens": tokens})))
                .collect();
            (
                json!({"id": epic.id, "state": epic.state, "done": merged, "total": total, "eta_secs": eta}),
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
        "in_work": working.epics.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "in_work_count": working.total,
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
    let now = fleet_engine::now_ms();
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

/// `GET /api/v1/tasks/{id}`: an epic with its stages, plan, attempts, reviews and latest events.
pub fn epic_detail(p: &Pipeline, id: &str) -> Result<Option<Value>, StoreError> {
    let store = &*p.store;
    let Some(epic) = store.epic(id)? else {
        return Ok(None);
    };
    let data: EpicData = serde_json::from_value(epic.data.clone()).unwrap_or_default();
    let attempts = epic_attempts(store, &epic)?;
    let mut runs = epic_runs(store, &epic)?;
    runs.push(epic.id.clone());
    let events = store.latest_events(&runs, 200)?;
    let now_doing = now_doing(&attempts, &events);
    let delivery = data
        .delivery
        .as_ref()
        .map(|d| json!({"kind": d.kind, "url": d.url, "number": d.number, "branch": epic.branch}));
    Ok(Some(json!({
        "task": {
            "id": epic.id, "project": epic.project, "request": epic.request, "state": epic.state,
            "cycle": epic.cycle, "created_at": epic.created_at, "updated_at": epic.updated_at,
            "branch": epic.branch, "intent": epic.intent, "roles": epic.roles,
            "routed_by": data.routed_by, "delivery": delivery, "now": now_doing,
            "reason": fleet_pipeline::reason(&epic, &data),
            "blocked": data.machine.as_ref().and_then(|m| m.blocked.clone()),
        },
        "stages": epic.stages,
        "plan": data.tasks.iter().map(|t| {
            let n = attempts.iter().filter(|a| Some(&a.run_id) == t.run_id.as_ref() && a.task_id == t.id).count();
            json!({"id": t.id, "title": t.title, "role": t.role, "state": t.state, "cycle": t.cycle,
                   "attempts": n, "run_id": t.run_id, "reason": t.reason})
        }).collect::<Vec<_>>(),
        "attempts": attempts,
        "reviews": data.reviews,
        "qa": data.qa,
        "events": events,
    })))
}

/// One line on what the epic's agents are doing now: the newest running attempt and its
/// latest action.
fn now_doing(attempts: &[AttemptRow], events: &[fleet_store::Event]) -> Option<String> {
    let a = attempts
        .iter()
        .filter(|a| a.finished_at.is_none() && a.outcome == "running")
        .max_by_key(|a| a.started_at)?;
    let who = match (&a.cli, &a.model) {
        (Some(c), Some(m)) => format!("{c} ({m})"),
        (Some(c), None) => c.clone(),
        _ => "a command".into(),
    };
    let last = events.iter().rev().find(|e| {
        e.run_id == a.run_id
            && e.task.as_deref() == Some(a.task_id.as_str())
            && e.attempt == Some(a.n)
    });
    let doing = match last.map(|e| (e.kind.as_str(), &e.data)) {
        Some(("attempt.tool_call", d)) => {
            let tool = d["name"]
                .as_str()
                .or(d["tool"].as_str())
                .unwrap_or("a tool");
            format!("is calling {tool}")
        }
        Some(("attempt.progress", d)) => {
            format!("reports: {}", d["message"].as_str().unwrap_or(""))
        }
        Some(("task.checks_started", _)) => "is running the checks".into(),
        Some(("agent.message", _)) => "is writing".into(),
        _ => "is working".into(),
    };
    Some(format!("{}: {who} {doing} (attempt {})", a.task_id, a.n))
}
