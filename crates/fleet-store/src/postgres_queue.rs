//! [`TaskQueue`] on PostgreSQL: claims are `SELECT … FOR UPDATE SKIP LOCKED`, so claimers
//! never queue behind each other's row locks, and a claim's lease is judged by the server's
//! clock (runners' clocks need not agree).
//!
//! The run's `tasks` rows (what the API and the CLI show) follow the queue in the same
//! transactions: `running` when claimed, `merged`/`passed`/`failed`/`skipped` when it ends,
//! `ready` when handed back, `cancelled` when its run is cancelled.

use crate::pg::Planning;
use crate::postgres::{CHANNEL, NOW_MS, PostgresStore, event_arrays, events_ctes, insert_events};
use crate::queue::{Claim, Finish, NextClaim, QueueItem, QueueRow, RunEnded, RunnerAd, TaskQueue};
use crate::{NewEvent, Result, StoreError};
use postgres::Transaction;
use serde_json::json;
use std::time::Duration;

/// The queue's tables: a new migration (appended to `postgres::MIGRATIONS`).
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE task_queue (
    seq BIGSERIAL NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    deps TEXT[] NOT NULL,
    needs TEXT[] NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    holder TEXT,
    expires_at BIGINT,
    claims BIGINT NOT NULL DEFAULT 0,
    detail TEXT,
    merge_sha TEXT,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX task_queue_open ON task_queue (seq) WHERE state IN ('queued', 'claimed');
CREATE TABLE runners (
    name TEXT PRIMARY KEY,
    offers TEXT[] NOT NULL,
    concurrency BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#;

/// Finds a run's open entries without reading its ended ones: a run closes when its last
/// entry ends, and the runner that ended it asks at once.
pub(crate) const OPEN_BY_RUN: &str = r#"
CREATE INDEX task_queue_open_by_run ON task_queue (run_id) WHERE state IN ('queued', 'claimed');
"#;

/// Events a queue change writes get the claim's run, task and number.
fn stamped(events: &[NewEvent], run: &str, task: &str, n: u32) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| NewEvent {
            run_id: run.to_string(),
            task: Some(task.to_string()),
            attempt: Some(n),
            ..e.clone()
        })
        .collect()
}

/// Skips the queued tasks that depend, directly or not, on `task`; returns their ids.
fn skip_dependents(tx: &mut Transaction<'_>, run: &str, task: &str) -> Result<Vec<String>> {
    let rows = tx.query(
        "WITH RECURSIVE down(task_id) AS (
             SELECT task_id FROM task_queue WHERE run_id = $1 AND $2 = ANY(deps)
             UNION
             SELECT q.task_id FROM task_queue q JOIN down d ON d.task_id = ANY(q.deps)
             WHERE q.run_id = $1)
         UPDATE task_queue SET state = 'skipped', detail = 'a dependency failed: ' || $2
         WHERE run_id = $1 AND state = 'queued' AND task_id IN (SELECT task_id FROM down)
         RETURNING task_id",
        &[&run, &task],
    )?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    tx.execute(
        "UPDATE tasks SET state = 'skipped' WHERE run_id = $1 AND id = ANY($2)",
        &[&run, &ids],
    )?;
    Ok(ids)
}

/// The claim in `row`'s columns `i` to `i + 3` (run, task, claims, spec).
fn claim_of(row: &postgres::Row, i: usize, runner: &RunnerAd) -> Result<Claim> {
    let spec: String = row.get(i + 3);
    Ok(Claim {
        run_id: row.get(i),
        task_id: row.get(i + 1),
        n: row.get::<_, i64>(i + 2) as u32,
        holder: runner.name.clone(),
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(format!("queued task spec: {e}")))?,
    })
}

/// The `tasks` row's state for a finished queue entry.
fn task_state(end: &Finish) -> &'static str {
    match (end.state.as_str(), &end.merge_sha) {
        ("done", Some(_)) => "merged",
        ("done", None) => "passed",
        _ => "failed",
    }
}

/// The CTEs of a claim (`pick`, `claimed`, `running`), binding `$p` to `$p + 4` to the
/// runner's offers, its name, the TTL (ms), the claim limit and the start time. `after_end`: in
/// [`PostgresStore::finish_and_claim`]'s statement, where `$1`/`$2` name the task the `ended`
/// CTE ends as done: that task is not a candidate, and counts as done for its dependents (the
/// statement's snapshot still shows it claimed).
fn claim_ctes(p: usize, after_end: bool) -> String {
    let (offers, name, ttl, max, started) = (p, p + 1, p + 2, p + 3, p + 4);
    let (not_ended, ended_done) = if after_end {
        (
            "AND NOT (q.run_id = $1 AND q.task_id = $2)",
            "AND NOT (q.run_id = $1 AND dep = $2 AND EXISTS (SELECT 1 FROM ended))",
        )
    } else {
        ("", "")
    };
    // A need of alternatives (`a|b`, `crate::ANY_OF`) is met by any of them; plain needs
    // are met by the one containment test, before the alternatives are looked at.
    // The dependency check is per candidate, and every open entry is one (they are sorted
    // before the LIMIT): it must cost nothing for tasks without dependencies and one key
    // lookup per dependency otherwise. As a bare anti-join over the run's entries it made
    // each claim O(tasks) and a run O(tasks²): 0.5 s a claim at 1,000 open tasks.
    format!(
        "pick AS (
            SELECT q.run_id, q.task_id FROM task_queue q
            WHERE (q.state = 'queued'
                   OR (q.state = 'claimed' AND q.expires_at <= {NOW_MS} AND q.claims < ${max}))
              AND (q.needs <@ ${offers}::text[] OR NOT EXISTS (
                  SELECT 1 FROM unnest(q.needs) need
                  WHERE NOT (string_to_array(need, '|') && ${offers}::text[]))) {not_ended}
              AND (cardinality(q.deps) = 0 OR NOT EXISTS (
                  SELECT 1 FROM unnest(q.deps) dep
                  WHERE (SELECT d.state FROM task_queue d
                         WHERE d.run_id = q.run_id AND d.task_id = dep) <> 'done'
                    {ended_done}))
            ORDER BY q.seq
            LIMIT 1
            FOR UPDATE OF q SKIP LOCKED
         ), claimed AS (
            UPDATE task_queue t SET state = 'claimed', holder = ${name},
               expires_at = {NOW_MS} + ${ttl}, claims = t.claims + 1
            FROM pick WHERE t.run_id = pick.run_id AND t.task_id = pick.task_id
            RETURNING t.run_id, t.task_id, t.claims, t.spec
         ), running AS (
            UPDATE tasks SET state = 'running', attempts = c.claims,
               started_at = COALESCE(tasks.started_at, ${started}::bigint)
            FROM claimed c WHERE tasks.run_id = c.run_id AND tasks.id = c.task_id
         )"
    )
}

/// The CTEs ending a done task's claim (`ended`: the queue row, if the claim is still this
/// one's) and marking its `tasks` row (`marked`), binding `$1`–`$9`: run, task, holder, claim
/// number, queue state, detail, merge commit, task state, end time.
const ENDED: &str = "WITH ended AS (
        UPDATE task_queue SET state = $5, detail = $6, merge_sha = $7,
           holder = NULL, expires_at = NULL
        WHERE run_id = $1 AND task_id = $2 AND holder = $3 AND claims = $4
          AND state = 'claimed'
        RETURNING run_id, task_id, claims
     ), marked AS (
        UPDATE tasks SET state = $8, merge_sha = $7, reason = $6, finished_at = $9
        FROM ended WHERE tasks.run_id = ended.run_id AND tasks.id = ended.task_id
     ),";

impl PostgresStore {
    /// `finish` of a task that is done (nothing depending on it is skipped): one statement,
    /// one round trip, as `claim`.
    fn finish_done(&self, claim: &Claim, end: &Finish, events: &[NewEvent]) -> Result<bool> {
        let (n_events, at, kind, data) = event_arrays(events);
        let finished = events.first().map_or(0, |e| e.at);
        let attempt = i64::from(claim.n);
        let row = self.with_planning(Planning::Cached, |c| {
            Ok(c.query_one(
                &format!(
                    "{ENDED} owner AS (
                        SELECT run_id, task_id AS task, claims AS attempt FROM ended
                     ), {}
                     SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM notified)",
                    events_ctes("owner", 10)
                ),
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &attempt,
                    &end.state,
                    &end.detail,
                    &end.merge_sha,
                    &task_state(end),
                    &finished,
                    &n_events,
                    &at,
                    &kind,
                    &data,
                ],
            )?)
        })?;
        Ok(row.get::<_, i64>(0) == 1)
    }

    /// [`TaskQueue::finish_and_claim`] of a task that is done: the end, the next claim and
    /// both event batches in one statement (one round trip, one commit). The events are
    /// numbered as one batch from the counter row, the end's first.
    fn finish_done_and_claim(
        &self,
        claim: &Claim,
        end: &Finish,
        events: &[NewEvent],
        next: NextClaim<'_>,
    ) -> Result<(bool, Option<Claim>)> {
        let all: Vec<(i32, &NewEvent)> = events
            .iter()
            .map(|e| (0, e))
            .chain(next.events.iter().map(|e| (1, e)))
            .collect();
        let at: Vec<i64> = all.iter().map(|(_, e)| e.at).collect();
        let kind: Vec<String> = all.iter().map(|(_, e)| e.kind.clone()).collect();
        let data: Vec<String> = all.iter().map(|(_, e)| e.data.to_string()).collect();
        let which: Vec<i32> = all.iter().map(|(w, _)| *w).collect();
        let finished = events.first().map_or(0, |e| e.at);
        let started = next.events.first().map_or(0, |e| e.at);
        let (attempt, ttl) = (i64::from(claim.n), next.ttl.as_millis() as i64);
        let max = i64::from(next.max_claims);
        let row = self.with_planning(Planning::Cached, |c| {
            Ok(c.query_one(
                &format!(
                    "{ENDED} {}, owners AS (
                        SELECT 0 AS k, run_id, task_id AS task, claims AS attempt FROM ended
                        UNION ALL
                        SELECT 1, run_id, task_id, claims FROM claimed
                     ), evs AS (
                        SELECT o.run_id, o.task, o.attempt, e.at, e.kind, e.data,
                               row_number() OVER (ORDER BY o.k, e.ord) AS ord
                        FROM owners o
                        JOIN unnest($15::bigint[], $16::text[], $17::text[], $18::int[])
                             WITH ORDINALITY AS e(at, kind, data, which, ord)
                             ON e.which = o.k
                     ), counter AS (
                        UPDATE event_seq SET last = last + (SELECT count(*) FROM evs)
                        WHERE EXISTS (SELECT 1 FROM evs) RETURNING last
                     ), added AS (
                        INSERT INTO events (seq, at, run_id, task, attempt, kind, data)
                        SELECT counter.last - (SELECT count(*) FROM evs) + evs.ord, evs.at,
                               evs.run_id, evs.task, evs.attempt, evs.kind, evs.data
                        FROM counter, evs
                     ), notified AS (
                        SELECT pg_notify('{CHANNEL}', last::text) FROM counter
                     )
                     SELECT c.run_id, c.task_id, c.claims, c.spec,
                            (SELECT count(*) FROM ended), (SELECT count(*) FROM notified)
                     FROM (SELECT 1) one LEFT JOIN claimed c ON true",
                    claim_ctes(10, true)
                ),
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &attempt,
                    &end.state,
                    &end.detail,
                    &end.merge_sha,
                    &task_state(end),
                    &finished,
                    &next.runner.offers,
                    &next.runner.name,
                    &ttl,
                    &max,
                    &started,
                    &at,
                    &kind,
                    &data,
                    &which,
                ],
            )?)
        })?;
        let ended = row.get::<_, i64>(4) == 1;
        let claimed = match row.get::<_, Option<String>>(0) {
            Some(_) => Some(claim_of(&row, 0, next.runner)?),
            None => None,
        };
        Ok((ended, claimed))
    }
}

impl TaskQueue for PostgresStore {
    fn enqueue(&self, items: &[QueueItem], events: &[NewEvent]) -> Result<()> {
        self.in_transaction(|tx| {
            let st = tx.prepare(
                "INSERT INTO task_queue (run_id, task_id, deps, needs, spec, state)
                 VALUES ($1, $2, $3, $4, $5, 'queued')",
            )?;
            for it in items {
                let spec = it.spec.to_string();
                tx.execute(&st, &[&it.run_id, &it.task_id, &it.deps, &it.needs, &spec])
                    .map_err(|e| match e.code() {
                        Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => StoreError::Exists(
                            "queued task",
                            format!("{}/{}", it.run_id, it.task_id),
                        ),
                        _ => e.into(),
                    })?;
            }
            insert_events(tx, events)?;
            Ok(())
        })
    }

    fn claim(
        &self,
        runner: &RunnerAd,
        ttl: Duration,
        max_claims: u32,
        events: &[NewEvent],
    ) -> Result<Option<Claim>> {
        let ttl = ttl.as_millis() as i64;
        let max = i64::from(max_claims);
        // One statement, committed on its own: the claim, the task's row and the events in one
        // round trip (each round trip is a wait for the database to be scheduled, and a
        // loaded machine makes those long); the counter row is locked only when a task was
        // claimed, and from there to the commit.
        let (n_events, at, kind, data) = event_arrays(events);
        let started = events.first().map_or(0, |e| e.at);
        let row = self.with_planning(Planning::Cached, |c| {
            Ok(c.query_opt(
                &format!(
                    "WITH {}, owner AS (
                        SELECT run_id, task_id AS task, claims AS attempt FROM claimed
                     ), {}
                     SELECT run_id, task_id, claims, spec, (SELECT count(*) FROM notified)
                     FROM claimed",
                    claim_ctes(1, false),
                    events_ctes("owner", 6)
                ),
                &[
                    &runner.offers,
                    &runner.name,
                    &ttl,
                    &max,
                    &started,
                    &n_events,
                    &at,
                    &kind,
                    &data,
                ],
            )?)
        })?;
        let Some(row) = row else { return Ok(None) };
        claim_of(&row, 0, runner).map(Some)
    }

    fn heartbeat(&self, claim: &Claim, ttl: Duration) -> Result<bool> {
        let ttl = ttl.as_millis() as i64;
        self.with_planning(Planning::Cached, |c| {
            let n = c.execute(
                &format!(
                    "UPDATE task_queue SET expires_at = {NOW_MS} + $5
                     WHERE run_id = $1 AND task_id = $2 AND holder = $3 AND claims = $4
                       AND state = 'claimed'"
                ),
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &i64::from(claim.n),
                    &ttl,
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn finish(&self, claim: &Claim, end: &Finish, events: &[NewEvent]) -> Result<bool> {
        if end.state == "done" {
            return self.finish_done(claim, end, events);
        }
        self.in_transaction(|tx| {
            let n = tx.execute(
                "UPDATE task_queue SET state = $5, detail = $6, merge_sha = $7, holder = NULL,
                    expires_at = NULL
                 WHERE run_id = $1 AND task_id = $2 AND holder = $3 AND claims = $4
                   AND state = 'claimed'",
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &i64::from(claim.n),
                    &end.state,
                    &end.detail,
                    &end.merge_sha,
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            let at = events.first().map_or(0, |e| e.at);
            tx.execute(
                "UPDATE tasks SET state = $3, merge_sha = $4, reason = $5, finished_at = $6
                 WHERE run_id = $1 AND id = $2",
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &task_state(end),
                    &end.merge_sha,
                    &end.detail,
                    &at,
                ],
            )?;
            let mut all = stamped(events, &claim.run_id, &claim.task_id, claim.n);
            if end.state != "done" {
                for id in skip_dependents(tx, &claim.run_id, &claim.task_id)? {
                    all.push(NewEvent {
                        at,
                        run_id: claim.run_id.clone(),
                        task: Some(id),
                        attempt: None,
                        kind: "task.skipped".into(),
                        data: json!({"reason": format!("a dependency failed: {}", claim.task_id)}),
                    });
                }
            }
            insert_events(tx, &all)?;
            Ok(true)
        })
    }

    fn finish_and_claim(
        &self,
        claim: &Claim,
        end: &Finish,
        events: &[NewEvent],
        next: NextClaim<'_>,
    ) -> Result<(bool, Option<Claim>)> {
        if end.state != "done" {
            // A failure skips dependents (several statements): no gain in sharing its commit.
            let ended = self.finish(claim, end, events)?;
            let claimed = self.claim(next.runner, next.ttl, next.max_claims, next.events)?;
            return Ok((ended, claimed));
        }
        self.finish_done_and_claim(claim, end, events, next)
    }

    fn hand_back(&self, claim: &Claim, events: &[NewEvent]) -> Result<bool> {
        self.in_transaction(|tx| {
            let n = tx.execute(
                "UPDATE task_queue SET state = 'queued', holder = NULL, expires_at = NULL,
                    claims = claims - 1
                 WHERE run_id = $1 AND task_id = $2 AND holder = $3 AND claims = $4
                   AND state = 'claimed'",
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &i64::from(claim.n),
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE tasks SET state = 'ready' WHERE run_id = $1 AND id = $2",
                &[&claim.run_id, &claim.task_id],
            )?;
            insert_events(tx, &stamped(events, &claim.run_id, &claim.task_id, claim.n))?;
            Ok(true)
        })
    }

    fn fail_exhausted(&self, max_claims: u32, at: i64) -> Result<Vec<String>> {
        let max = i64::from(max_claims);
        self.in_transaction(|tx| {
            let rows = tx.query(
                &format!(
                    "UPDATE task_queue SET state = 'failed', holder = NULL,
                        detail = 'its runner stopped answering ' || claims || ' times'
                     WHERE state = 'claimed' AND expires_at <= {NOW_MS} AND claims >= $1
                     RETURNING run_id, task_id, detail"
                ),
                &[&max],
            )?;
            let mut events = Vec::new();
            for r in &rows {
                let (run, task, detail): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                tx.execute(
                    "UPDATE tasks SET state = 'failed', reason = $3, finished_at = $4
                     WHERE run_id = $1 AND id = $2",
                    &[&run, &task, &detail, &at],
                )?;
                events.push(NewEvent {
                    at,
                    run_id: run.clone(),
                    task: Some(task.clone()),
                    attempt: None,
                    kind: "task.failed".into(),
                    data: json!({"reason": detail}),
                });
                for id in skip_dependents(tx, &run, &task)? {
                    events.push(NewEvent {
                        at,
                        run_id: run.clone(),
                        task: Some(id),
                        attempt: None,
                        kind: "task.skipped".into(),
                        data: json!({"reason": format!("a dependency failed: {task}")}),
                    });
                }
            }
            insert_events(tx, &events)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn has_open_entries(&self, run_id: &str) -> Result<bool> {
        // By the partial index of open entries (`OPEN_BY_RUN`), on its own: no transaction,
        // no lock, a prepared statement.
        self.with_planning(Planning::Cached, |c| {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM task_queue
                                WHERE run_id = $1 AND state IN ('queued', 'claimed'))",
                &[&run_id],
            )?
            .get::<_, bool>(0))
        })
    }

    fn close_run_if_ended(&self, run_id: &str, at: i64) -> Result<Option<RunEnded>> {
        let run = run_id.to_string();
        // The open-entries probe first: most calls end here.
        if self.has_open_entries(run_id)? {
            return Ok(None);
        }
        self.in_transaction(|tx| {
            // The run's row, locked: of two closers, the second finds it ended.
            let state = tx.query_opt("SELECT state FROM runs WHERE id = $1 FOR UPDATE", &[&run])?;
            if state.map(|r| r.get::<_, String>(0)).as_deref() != Some("running") {
                return Ok(None);
            }
            let rows = tx.query(
                "SELECT state, count(*) FROM task_queue WHERE run_id = $1 GROUP BY state",
                &[&run],
            )?;
            let count = |s: &str| {
                rows.iter()
                    .filter(|r| r.get::<_, String>(0) == s)
                    .map(|r| r.get::<_, i64>(1) as usize)
                    .sum::<usize>()
            };
            let total: usize = rows.iter().map(|r| r.get::<_, i64>(1) as usize).sum();
            // Re-read under the lock: an entry handed back meanwhile keeps the run open.
            if total == 0 || count("queued") + count("claimed") > 0 {
                return Ok(None);
            }
            let done = count("done");
            let tally = RunEnded {
                state: if done == total { "passed" } else { "failed" }.into(),
                done,
                failed: count("failed"),
                skipped: count("skipped"),
            };
            tx.execute(
                "UPDATE runs SET state = $2, updated_at = $3, finished_at = $3 WHERE id = $1",
                &[&run, &tally.state, &at],
            )?;
            insert_events(
                tx,
                &[NewEvent {
                    at,
                    run_id: run.clone(),
                    task: None,
                    attempt: None,
                    kind: "run.finished".into(),
                    data: json!({"state": tally.state, "done": tally.done,
                                 "failed": tally.failed, "skipped": tally.skipped}),
                }],
            )?;
            Ok(Some(tally))
        })
    }

    fn cancel_run(
        &self,
        run_id: &str,
        reason: &str,
        at: i64,
        events: &[NewEvent],
    ) -> Result<Vec<String>> {
        self.in_transaction(|tx| {
            // A claimed entry keeps its holder: its heartbeat and finish now fail, and it ends
            // the claim with `end_cancelled`.
            let mut rows = tx.query(
                "UPDATE task_queue SET state = 'cancelled', detail = $2, expires_at = NULL
                 WHERE run_id = $1 AND state IN ('queued', 'claimed')
                 RETURNING task_id, holder, claims",
                &[&run_id, &reason],
            )?;
            // RETURNING follows the rows' physical order: the events go in task order.
            rows.sort_by_key(|r| r.get::<_, String>(0));
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute(
                "UPDATE tasks SET state = 'cancelled', reason = $3, finished_at = $4
                 WHERE run_id = $1 AND id = ANY($2)",
                &[&run_id, &ids, &reason, &at],
            )?;
            let mut all = Vec::with_capacity(rows.len() + events.len());
            for r in &rows {
                let holder: Option<String> = r.get(1);
                let claims = r.get::<_, i64>(2) as u32;
                all.push(NewEvent {
                    at,
                    run_id: run_id.to_string(),
                    task: Some(r.get(0)),
                    attempt: holder.as_ref().map(|_| claims),
                    kind: "task.cancelled".into(),
                    data: json!({"reason": reason, "runner": holder}),
                });
            }
            all.extend(events.iter().map(|e| NewEvent {
                run_id: run_id.to_string(),
                ..e.clone()
            }));
            // The run ends in the same transaction: nobody may see it with every entry ended
            // and still running (and end it a second time as failed).
            let ended = tx.execute(
                "UPDATE runs SET state = 'cancelled', updated_at = $2, finished_at = $2
                 WHERE id = $1 AND state = 'running'",
                &[&run_id, &at],
            )?;
            if ended == 1 {
                all.push(NewEvent {
                    at,
                    run_id: run_id.to_string(),
                    task: None,
                    attempt: None,
                    kind: "run.finished".into(),
                    data: json!({"state": "cancelled", "reason": reason, "cancelled": ids.len()}),
                });
            }
            insert_events(tx, &all)?;
            Ok(ids)
        })
    }

    fn end_cancelled(&self, claim: &Claim, events: &[NewEvent]) -> Result<bool> {
        self.in_transaction(|tx| {
            let n = tx.execute(
                "UPDATE task_queue SET holder = NULL
                 WHERE run_id = $1 AND task_id = $2 AND holder = $3 AND claims = $4
                   AND state = 'cancelled'",
                &[
                    &claim.run_id,
                    &claim.task_id,
                    &claim.holder,
                    &i64::from(claim.n),
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            insert_events(tx, &stamped(events, &claim.run_id, &claim.task_id, claim.n))?;
            Ok(true)
        })
    }

    fn queued(&self, run_id: &str) -> Result<Vec<QueueRow>> {
        let run = run_id.to_string();
        self.with(|c| {
            let rows = c.query(
                "SELECT run_id, task_id, state, holder, claims, detail, merge_sha
                 FROM task_queue WHERE run_id = $1 ORDER BY task_id",
                &[&run],
            )?;
            Ok(rows
                .iter()
                .map(|r| QueueRow {
                    run_id: r.get(0),
                    task_id: r.get(1),
                    state: r.get(2),
                    holder: r.get(3),
                    claims: r.get::<_, i64>(4) as u32,
                    detail: r.get(5),
                    merge_sha: r.get(6),
                })
                .collect())
        })
    }

    fn advertise(&self, runner: &RunnerAd, ttl: Duration) -> Result<()> {
        let ttl = ttl.as_millis() as i64;
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO runners (name, offers, concurrency, expires_at)
                     VALUES ($1, $2, $3, {NOW_MS} + $4)
                     ON CONFLICT (name) DO UPDATE SET offers = excluded.offers,
                        concurrency = excluded.concurrency, expires_at = excluded.expires_at"
                ),
                &[
                    &runner.name,
                    &runner.offers,
                    &i64::from(runner.concurrency),
                    &ttl,
                ],
            )?;
            Ok(())
        })
    }

    fn retire(&self, name: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM runners WHERE name = $1", &[&name])?;
            Ok(())
        })
    }

    fn runners(&self) -> Result<Vec<RunnerAd>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT name, offers, concurrency FROM runners
                     WHERE expires_at > {NOW_MS} ORDER BY name"
                ),
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| RunnerAd {
                    name: r.get(0),
                    offers: r.get(1),
                    concurrency: r.get::<_, i64>(2) as u32,
                })
                .collect())
        })
    }
}
