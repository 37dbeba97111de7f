//! The task list's page on PostgreSQL (`Store::epic_page`) over a large `epics` table: the
//! per-state counts come from a table triggers keep in step with `epics` (counting 100,000
//! rows per request took 60–100 ms), and a deep page finds where it starts with an
//! index-only scan instead of reading every skipped row.

use super::{EpicBrief, EpicPage, EpicQuery, Params, Result, counts, epic_filter, narrow, refs};
use postgres::Client;

/// `epic_counts` and its triggers (a migration appended to `postgres::MIGRATIONS`). The
/// triggers are made before the counts are filled in: they lock `epics` against writes until
/// the migration commits, so no write falls between the count and the triggers.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE epic_counts (
    project TEXT NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (project, state)
);
CREATE FUNCTION epic_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE epic_counts SET n = n - 1 WHERE project = OLD.project AND state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO epic_counts (project, state, n) VALUES (NEW.project, NEW.state, 1)
        ON CONFLICT (project, state) DO UPDATE SET n = epic_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER epics_counted AFTER INSERT OR DELETE ON epics
    FOR EACH ROW EXECUTE FUNCTION epic_counts_follow();
CREATE TRIGGER epics_recounted AFTER UPDATE OF project, state ON epics
    FOR EACH ROW WHEN (OLD.project IS DISTINCT FROM NEW.project OR OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION epic_counts_follow();
INSERT INTO epic_counts (project, state, n)
    SELECT project, state, count(*) FROM epics GROUP BY project, state;
"#;

/// Counts by state of the epics `q` selects, all states (the page's filter by state is not
/// applied: the board shows every column's count).
fn state_counts(c: &mut Client, q: &EpicQuery) -> Result<std::collections::BTreeMap<String, u64>> {
    if q.text.as_deref().is_some_and(|t| !t.is_empty()) {
        // A text search has no kept count: only scanning finds what matches.
        let (filter, args) = epic_filter(q, false);
        let rows = c.query(
            &format!("SELECT state, count(*) FROM epics {filter} GROUP BY state"),
            &refs(&args),
        )?;
        return counts(&rows);
    }
    let rows = match &q.project {
        Some(p) => c.query(
            "SELECT state, n FROM epic_counts WHERE project = $1 AND n > 0",
            &[p],
        )?,
        None => c.query(
            "SELECT state, sum(n)::bigint FROM epic_counts GROUP BY state HAVING sum(n) > 0",
            &[],
        )?,
    };
    counts(&rows)
}

pub(super) fn epic_page(c: &mut Client, q: &EpicQuery) -> Result<EpicPage> {
    let counts = state_counts(c, q)?;
    let total: u64 = counts
        .iter()
        .filter(|(s, _)| q.states.is_empty() || q.states.contains(s))
        .map(|(_, n)| *n)
        .sum();
    let (filter, mut args): (String, Params) = epic_filter(q, true);
    args.push(Box::new(q.limit.min(i64::MAX as usize) as i64));
    let limit = args.len();
    // Past the first page, the page starts at the key the OFFSET lands on, found on the
    // (created_at, id) columns alone (an index-only scan), then only the page's rows are read.
    let start = if q.offset > 0 {
        args.push(Box::new(q.offset.min(i64::MAX as usize) as i64));
        let and = if filter.is_empty() { "WHERE" } else { "AND" };
        format!(
            "{and} (created_at, id) <= (SELECT created_at, id FROM epics {filter}
                 ORDER BY created_at DESC, id DESC OFFSET ${} LIMIT 1)",
            args.len()
        )
    } else {
        String::new()
    };
    let rows = c.query(
        &format!(
            "SELECT id, project, request, state, cycle, created_at, updated_at
             FROM epics {filter} {start} ORDER BY created_at DESC, id DESC LIMIT ${limit}"
        ),
        &refs(&args),
    )?;
    let epics = rows
        .iter()
        .map(|r| {
            Ok(EpicBrief {
                id: r.try_get(0)?,
                project: r.try_get(1)?,
                request: r.try_get(2)?,
                state: r.try_get(3)?,
                cycle: narrow(r, 4)?,
                created_at: r.try_get(5)?,
                updated_at: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EpicPage {
        total,
        counts,
        epics,
    })
}
