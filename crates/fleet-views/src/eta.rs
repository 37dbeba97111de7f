//! How long an epic's current stage has left: its remaining tasks scheduled as the engine
//! schedules them (dependencies first, the longest remaining chain first, at most
//! `concurrency` at a time), each taking what that role's tasks took lately, less what a
//! running one has already spent.

use crate::{epic_of_run, is_work};
use fleet_store::{AttemptRow, Store, StoreError};
use std::collections::{BTreeMap, HashMap};

/// A task still to finish.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub id: String,
    pub deps: Vec<String>,
    /// Seconds it still needs.
    pub remaining_secs: f64,
    /// It runs now: it holds a slot from the start.
    pub running: bool,
}

/// Seconds until every task in `work` is done. Dependencies outside `work` count as done.
pub fn remaining_secs(work: &[Work], concurrency: usize) -> f64 {
    let slots = concurrency.max(1);
    let index: HashMap<&str, usize> = work
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = work
        .iter()
        .map(|w| {
            w.deps
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // The longest chain from each task to the end, itself included (the engine's priority).
    let mut chain = vec![None::<f64>; work.len()];
    fn chain_of(
        i: usize,
        work: &[Work],
        deps: &[Vec<usize>],
        memo: &mut [Option<f64>],
        depth: usize,
    ) -> f64 {
        if let Some(v) = memo[i] {
            return v;
        }
        if depth > work.len() {
            return work[i].remaining_secs; // a cycle: cannot happen in a validated plan
        }
        let mut longest = 0.0f64;
        for (j, d) in deps.iter().enumerate() {
            if d.contains(&i) {
                longest = longest.max(chain_of(j, work, deps, memo, depth + 1));
            }
        }
        let v = work[i].remaining_secs + longest;
        memo[i] = Some(v);
        v
    }
    for i in 0..work.len() {
        chain_of(i, work, &deps, &mut chain, 0);
    }
    let mut finished_at: Vec<Option<f64>> = vec![None; work.len()];
    let mut running: Vec<(usize, f64)> = Vec::new();
    let mut clock = 0.0f64;
    let mut left = work.len();
    while left > 0 {
        let mut ready: Vec<usize> = (0..work.len())
            .filter(|&i| finished_at[i].is_none() && !running.iter().any(|(r, _)| *r == i))
            .filter(|&i| deps[i].iter().all(|&d| finished_at[d].is_some()))
            .collect();
        ready.sort_by(|a, b| {
            (work[*b].running && clock == 0.0)
                .cmp(&(work[*a].running && clock == 0.0))
                .then(
                    chain[*b]
                        .partial_cmp(&chain[*a])
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
        });
        for i in ready {
            if running.len() >= slots {
                break;
            }
            running.push((i, clock + work[i].remaining_secs));
        }
        let Some(&(_, next)) = running
            .iter()
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        else {
            break; // nothing can start: a dependency cycle
        };
        clock = next;
        running.retain(|&(i, end)| {
            if end <= clock {
                finished_at[i] = Some(end);
                left -= 1;
                false
            } else {
                true
            }
        });
    }
    clock
}

/// Seconds a task took, per role, over recent implementation tasks that passed: the first
/// attempt's start to the last attempt's end. Only real work counts (no planner, reviewer or
/// verify steps).
pub fn observed_task_secs(
    store: &dyn Store,
    attempts: &[AttemptRow],
) -> Result<BTreeMap<String, f64>, StoreError> {
    let mut spans: BTreeMap<(String, String), (i64, i64, bool)> = BTreeMap::new();
    for a in attempts.iter().filter(|a| is_work(a)) {
        let Some(end) = a.finished_at else { continue };
        let s = spans
            .entry((a.run_id.clone(), a.task_id.clone()))
            .or_insert((a.started_at, end, false));
        s.0 = s.0.min(a.started_at);
        s.1 = s.1.max(end);
        s.2 |= a.outcome == "passed";
    }
    let mut roles: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for ((run, task), (start, end, passed)) in spans {
        if !passed {
            continue;
        }
        let epic = epic_of_run(&run).to_string();
        if !roles.contains_key(&epic) {
            let map = match store.epic(&epic)? {
                Some(e) => fleet_core::epic_data::decode(&e.id, &e.data)
                    .map(|d| d.tasks.into_iter().map(|t| (t.id, t.role)).collect())
                    .unwrap_or_default(),
                None => HashMap::new(),
            };
            roles.insert(epic.clone(), map);
        }
        let role = roles[&epic]
            .get(&task)
            .filter(|r| !r.is_empty())
            .cloned()
            .unwrap_or_else(|| "developer".into());
        let s = sums.entry(role).or_default();
        s.0 += (end - start) as f64 / 1000.0;
        s.1 += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(r, (sum, n))| (r, sum / n as f64))
        .collect())
}

/// The remaining seconds of an epic's implementation stage, from its view: tasks of the
/// current cycle not yet landed; a running one needs its role's observed time less the time
/// it has already run. `None` when no duration of a needed role was observed yet.
pub fn implement_eta(
    view: &crate::EpicView,
    observed: &BTreeMap<String, f64>,
    concurrency: usize,
    now: i64,
) -> Option<f64> {
    let overall =
        (!observed.is_empty()).then(|| observed.values().sum::<f64>() / observed.len() as f64)?;
    let cycle = view.cycle.max(1);
    let mut work = Vec::new();
    for t in view.tasks.iter().filter(|t| t.task.cycle == cycle) {
        if matches!(
            t.task.state.as_str(),
            "merged" | "passed" | "skipped" | "failed" | "cancelled"
        ) {
            continue;
        }
        let need = observed.get(&t.task.role).copied().unwrap_or(overall);
        let started = view
            .attempts
            .iter()
            .filter(|a| a.task_id == t.task.id && Some(&a.run_id) == t.task.run_id.as_ref())
            .map(|a| a.started_at)
            .min();
        let running = matches!(t.task.state.as_str(), "running" | "checking" | "merging");
        let spent = match started {
            Some(s) if running => (now - s).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        work.push(Work {
            id: t.task.id.clone(),
            deps: t.task.depends_on.clone(),
            remaining_secs: (need - spent).max(0.0),
            running,
        });
    }
    Some(remaining_secs(&work, concurrency))
}

#[cfg(test)]
mod tests {
    use super::{Work, remaining_secs};

    fn w(id: &str, deps: &[&str], secs: f64) -> Work {
        Work {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            remaining_secs: secs,
            running: false,
        }
    }

    #[test]
    fn a_chain_takes_its_length_whatever_the_slots() {
        let dag = [w("a", &[], 10.0), w("b", &["a"], 20.0), w("c", &["b"], 5.0)];
        assert_eq!(remaining_secs(&dag, 4), 35.0);
        assert_eq!(remaining_secs(&dag, 1), 35.0);
    }

    #[test]
    fn parallel_tasks_share_the_slots_longest_chain_first() {
        // a(10) -> b(20); c(15); d(15). Two slots: a and c first (chains 30 and 15 vs 15),
        // then b at 10 and d at 15; b ends at 30.
        let dag = [
            w("a", &[], 10.0),
            w("b", &["a"], 20.0),
            w("c", &[], 15.0),
            w("d", &[], 15.0),
        ];
        assert_eq!(remaining_secs(&dag, 2), 30.0);
        // One slot: everything in a row.
        assert_eq!(remaining_secs(&dag, 1), 60.0);
        // Plenty: the critical path.
        assert_eq!(remaining_secs(&dag, 8), 30.0);
    }

    #[test]
    fn running_tasks_keep_their_slots() {
        // c runs now (40 s left) though a and d have longer chains; two slots: a is started
        // beside it, d when c ends (40 + 100), b after a (70 + 100).
        let mut c = w("c", &[], 40.0);
        c.running = true;
        let mut a = w("a", &[], 70.0);
        a.running = true;
        let dag = [a, w("b", &["a"], 100.0), c, w("d", &[], 100.0)];
        assert_eq!(remaining_secs(&dag, 2), 170.0);
        // Were c not running, d would go first and c last: 100 + 40 after d, b at 170.
        let mut idle = dag.clone();
        idle[2].running = false;
        idle[3].remaining_secs = 150.0;
        assert_eq!(remaining_secs(&idle, 2), 190.0);
    }

    #[test]
    fn landed_dependencies_do_not_wait_and_nothing_left_is_zero() {
        assert_eq!(remaining_secs(&[w("b", &["a"], 7.0)], 2), 7.0);
        assert_eq!(remaining_secs(&[], 2), 0.0);
    }
}
