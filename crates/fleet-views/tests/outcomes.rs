//! The outcome figures equal counts computed independently, with SQL straight on the store's
//! tables, for a known workload (`support/workload.rs`: 3 projects, 3 weeks, every state,
//! three agent profiles with every kind of ending).

mod support;

use fleet_store::{Durability, SqliteStore};
use rusqlite::Connection;
use std::collections::BTreeMap;
use support::workload;

const WEEK: i64 = 7 * 86_400_000;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn opt_close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => close(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// (requests, delivered, accepted, rejected, blocked, tasks, attempts, cost, to-PR ms sum)
type Row = (i64, i64, i64, i64, i64, i64, i64, f64, i64);

fn by_sql(conn: &Connection, group: &str) -> BTreeMap<String, Row> {
    let sql = format!(
        "WITH e AS (
           SELECT id, project, state, created_at, doc,
             (SELECT min(json_extract(s.value, '$.finished_at')) FROM json_each(doc, '$.stages') s
               WHERE json_extract(s.value, '$.stage') = 'deliver'
                 AND json_extract(s.value, '$.state') = 'passed') AS delivered_at,
             EXISTS (SELECT 1 FROM json_each(doc, '$.data.reviews') r
               WHERE json_extract(r.value, '$.verdict') IN ('rejected_by_person', 'pull_request_comments')) AS rejected,
             (SELECT count(DISTINCT a.run_id || '/' || a.task_id) FROM attempts a
               WHERE a.run_id LIKE epics.id || '-implement-%') AS tasks,
             (SELECT count(*) FROM attempts a WHERE a.run_id LIKE epics.id || '-implement-%') AS attempts,
             (SELECT coalesce(sum(a.cost_usd), 0) FROM attempts a WHERE a.run_id LIKE epics.id || '-%') AS cost
           FROM epics)
         SELECT {group} AS g, count(*), count(delivered_at), sum(state = 'done'), sum(rejected),
                sum(state = 'blocked'), sum(tasks), sum(attempts), sum(cost),
                coalesce(sum(delivered_at - created_at), 0)
         FROM e GROUP BY g"
    );
    let mut st = conn.prepare(&sql).unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn same(b: &fleet_views::outcomes::Bucket, r: &Row, what: &str) {
    let (req, del, acc, rej, blk, tasks, att, cost, to_pr) = *r;
    assert_eq!(b.requests as i64, req, "{what}: requests");
    assert_eq!(b.delivered as i64, del, "{what}: delivered");
    assert_eq!(b.accepted as i64, acc, "{what}: accepted");
    assert_eq!(b.rejected as i64, rej, "{what}: rejected");
    assert_eq!(b.blocked as i64, blk, "{what}: blocked");
    assert_eq!(b.tasks as i64, tasks, "{what}: tasks");
    assert_eq!(b.attempts as i64, att, "{what}: attempts");
    assert!(
        close(b.cost_usd, cost),
        "{what}: cost {} vs {cost}",
        b.cost_usd
    );
    let per_task = (tasks > 0).then(|| att as f64 / tasks as f64);
    assert!(
        opt_close(b.attempts_per_task, per_task),
        "{what}: attempts per task"
    );
    let per_accepted = (acc > 0).then(|| cost / acc as f64);
    assert!(
        opt_close(b.cost_per_accepted_usd, per_accepted),
        "{what}: cost per accepted"
    );
    let to_pr = (del > 0).then(|| to_pr as f64 / 1000.0 / del as f64);
    assert!(
        opt_close(b.to_pull_request_secs_avg, to_pr),
        "{what}: time to PR"
    );
}

#[test]
fn outcome_figures_equal_sql_counts_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    workload::write(&store, 126);
    let o = fleet_views::outcomes(&store).unwrap();
    let conn = Connection::open(&path).unwrap();

    let totals = by_sql(&conn, "'*'");
    same(&o.total, &totals["*"], "total");
    assert_eq!(o.total.requests, 126);
    // The workload has every kind: none of the figures is trivially zero.
    let t = &o.total;
    for (name, v) in [
        ("delivered", t.delivered),
        ("accepted", t.accepted),
        ("rejected", t.rejected),
        ("blocked", t.blocked),
    ] {
        assert!(v > 0 && v < t.requests, "{name} = {v} of {}", t.requests);
    }

    let projects = by_sql(&conn, "project");
    assert_eq!(o.projects.len(), projects.len());
    for b in &o.projects {
        same(b, &projects[&b.project], &b.project);
    }

    // Weeks: the workload starts on the Monday of ISO week 47 of 2026.
    let weeks = by_sql(
        &conn,
        &format!(
            "project || '/' || printf('2026-W%02d', 47 + (created_at - {}) / {WEEK})",
            workload::T0
        ),
    );
    assert_eq!(o.weeks.len(), weeks.len());
    assert_eq!(o.weeks.len(), 9, "3 projects x 3 weeks");
    for b in &o.weeks {
        let key = format!("{}/{}", b.project, b.week);
        same(b, &weeks[&key], &key);
    }

    // Per profile.
    let mut st = conn
        .prepare(
            "SELECT profile, count(*) FILTER (WHERE outcome != 'running'),
                    sum(outcome = 'passed'), sum(outcome = 'stalled'),
                    sum(outcome IN ('rate_limited', 'quota_exhausted')), sum(cost_usd)
             FROM attempts WHERE profile IS NOT NULL GROUP BY profile ORDER BY profile",
        )
        .unwrap();
    let rows: Vec<(String, i64, i64, i64, i64, f64)> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(o.profiles.len(), rows.len());
    for (p, (name, ended, passed, stalls, limits, cost)) in o.profiles.iter().zip(&rows) {
        assert_eq!(&p.profile, name);
        assert_eq!(p.attempts as i64, *ended, "{name}: attempts");
        assert_eq!(p.passed as i64, *passed, "{name}: passed");
        assert_eq!(p.stalls as i64, *stalls, "{name}: stalls");
        assert_eq!(p.rate_limits as i64, *limits, "{name}: rate limits");
        assert!(close(p.cost_usd, *cost), "{name}: cost");
        assert!(opt_close(p.pass_rate, Some(*passed as f64 / *ended as f64)));
        assert!(opt_close(
            p.cost_per_passed_usd,
            (*passed > 0).then(|| cost / *passed as f64)
        ));
    }
    assert!(o.profiles.iter().any(|p| p.stalls > 0 && p.rate_limits > 0));
}
