//! Outcomes: what the fleet delivered, per project and per week, and how each agent profile
//! fared — the figures `fleet stats`, `/metrics` and the board show.
//!
//! Definitions (the test `outcomes.rs` computes the same with SQL straight on the store):
//! - a request is an epic; it counts in the week (ISO, UTC) it was submitted;
//! - delivered: a `deliver` stage of it passed at least once;
//! - accepted: it is `done`; rejected: a person or a pull request comment sent it back at
//!   least once (a review record `rejected_by_person` or `pull_request_comments`);
//!   blocked: it is `blocked` now;
//! - tasks and attempts: its implementation tasks (distinct run and task of an `implement`
//!   stage run with an attempt) and their attempts;
//! - cost: every attempt of every stage of it; cost per accepted request = cost / accepted;
//! - time to pull request: submission to the first passed `deliver` stage's end;
//! - per profile, over all attempts it played: pass rate = passed / ended, stalls
//!   (`stalled`), rate limits (`rate_limited` and `quota_exhausted`), cost per passed task
//!   = its cost / its passed attempts.

use crate::{WORK_STAGE, epic_of_run, stage_of_run};
use fleet_store::{Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// `*` in the totals.
    pub project: String,
    /// ISO week, `2026-W49`; `*` in the totals.
    pub week: String,
    pub requests: u64,
    pub delivered: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub blocked: u64,
    pub tasks: u64,
    pub attempts: u64,
    pub attempts_per_task: Option<f64>,
    pub cost_usd: f64,
    pub cost_per_accepted_usd: Option<f64>,
    pub to_pull_request_secs_avg: Option<f64>,
    #[serde(skip)]
    to_pr_sum_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileOutcome {
    pub profile: String,
    pub attempts: u64,
    pub passed: u64,
    pub pass_rate: Option<f64>,
    pub stalls: u64,
    pub rate_limits: u64,
    pub cost_usd: f64,
    pub cost_per_passed_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcomes {
    /// Newest week first, then by project.
    pub weeks: Vec<Bucket>,
    /// Per project, all weeks together (`week` is `*`).
    pub projects: Vec<Bucket>,
    pub profiles: Vec<ProfileOutcome>,
    pub total: Bucket,
}

/// `2026-W49` for a time in ms.
pub fn iso_week(ms: i64) -> String {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let w = d.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

#[derive(Default)]
struct EpicFacts {
    cost: f64,
    tasks: u64,
    attempts: u64,
}

/// Every epic and attempt in the store, summed. Two summary reads (the epics' summaries and the
/// attempts counted per run and per profile), so it stays fast over many epics.
pub fn outcomes(store: &dyn Store) -> Result<Outcomes, StoreError> {
    let epics = store.epic_summaries()?;
    let tallies = store.attempt_tallies()?;
    let mut facts: HashMap<&str, EpicFacts> = HashMap::new();
    for r in &tallies.runs {
        let f = facts.entry(epic_of_run(&r.run_id)).or_default();
        f.cost += r.cost_usd;
        // A run's tasks are distinct (run, task) pairs: tasks of different runs add up.
        if stage_of_run(&r.run_id) == WORK_STAGE {
            f.tasks += r.tasks;
            f.attempts += r.attempts;
        }
    }
    let mut profiles: BTreeMap<String, ProfileOutcome> = BTreeMap::new();
    for t in &tallies.profiles {
        let p = profiles.entry(t.profile.clone()).or_default();
        p.profile = t.profile.clone();
        p.cost_usd += t.cost_usd;
        // A running attempt has not ended: its cost counts, the attempt not yet.
        if t.outcome != "running" {
            p.attempts += t.attempts;
        }
        match t.outcome.as_str() {
            "passed" => p.passed += t.attempts,
            "stalled" => p.stalls += t.attempts,
            "rate_limited" | "quota_exhausted" => p.rate_limits += t.attempts,
            _ => {}
        }
    }
    for p in profiles.values_mut() {
        p.pass_rate = (p.attempts > 0).then(|| p.passed as f64 / p.attempts as f64);
        p.cost_per_passed_usd = (p.passed > 0).then(|| p.cost_usd / p.passed as f64);
    }
    let mut buckets: BTreeMap<(String, String), Bucket> = BTreeMap::new();
    let mut per_project: BTreeMap<String, Bucket> = BTreeMap::new();
    let mut total = Bucket {
        project: "*".into(),
        week: "*".into(),
        ..Bucket::default()
    };
    for e in &epics {
        let week = iso_week(e.created_at);
        let b = buckets
            .entry((week.clone(), e.project.clone()))
            .or_insert_with(|| Bucket {
                project: e.project.clone(),
                week,
                ..Bucket::default()
            });
        let pb = per_project
            .entry(e.project.clone())
            .or_insert_with(|| Bucket {
                project: e.project.clone(),
                week: "*".into(),
                ..Bucket::default()
            });
        let (delivered_at, rejected) = (e.delivered_at, e.rejected);
        let f = facts.get(e.id.as_str());
        for b in [&mut *b, &mut *pb, &mut total] {
            b.requests += 1;
            if let Some(at) = delivered_at {
                b.delivered += 1;
                b.to_pr_sum_ms += (at - e.created_at).max(0);
            }
            b.accepted += u64::from(e.state == "done");
            b.blocked += u64::from(e.state == "blocked");
            b.rejected += u64::from(rejected);
            if let Some(f) = f {
                b.cost_usd += f.cost;
                b.tasks += f.tasks;
                b.attempts += f.attempts;
            }
        }
    }
    let finish = |b: &mut Bucket| {
        b.attempts_per_task = (b.tasks > 0).then(|| b.attempts as f64 / b.tasks as f64);
        b.cost_per_accepted_usd = (b.accepted > 0).then(|| b.cost_usd / b.accepted as f64);
        b.to_pull_request_secs_avg =
            (b.delivered > 0).then(|| b.to_pr_sum_ms as f64 / 1000.0 / b.delivered as f64);
    };
    let mut weeks: Vec<Bucket> = buckets.into_values().collect();
    weeks.iter_mut().for_each(finish);
    let mut projects: Vec<Bucket> = per_project.into_values().collect();
    projects.iter_mut().for_each(finish);
    finish(&mut total);
    weeks.sort_by(|a, b| b.week.cmp(&a.week).then(a.project.cmp(&b.project)));
    Ok(Outcomes {
        weeks,
        projects,
        profiles: profiles.into_values().collect(),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::iso_week;

    #[test]
    fn weeks_are_iso_weeks_in_utc() {
        // 2026-12-06 is a Sunday: still week 49; the Monday after starts week 50.
        assert_eq!(iso_week(1_796_515_200_000), "2026-W49");
        assert_eq!(iso_week(1_796_601_600_000), "2026-W50");
        // 2027-01-01 is a Friday in ISO week 53 of 2026.
        assert_eq!(iso_week(1_798_761_600_000), "2026-W53");
    }
}
