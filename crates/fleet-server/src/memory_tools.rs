//! The MCP tools `memory_search` and `remember` over the instance's memory (`.fleet/memory.db`,
//! or the PostgreSQL store when the instance has one).

use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, MemoryError, Provenance, Scope};
use fleet_pipeline::Pipeline;
use rmcp::schemars;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct MemorySearch {
    /// Words to look for in lessons, skills, traces, decision logs, project context and reports.
    pub query: String,
    /// Only these kinds (lesson, skill, trace, decision, context, report).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// At most this many results (default 10, max 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Remember {
    /// The lesson: one or two imperative sentences a later agent should follow.
    pub lesson: String,
    /// The project it is about (default: a lesson for every project of the instance).
    #[serde(default)]
    pub project: Option<String>,
    /// Path prefixes it applies to.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Words in a task's text that call for it.
    #[serde(default)]
    pub words: Vec<String>,
}

fn open(p: &Pipeline) -> Result<MemoryDb, MemoryError> {
    let redactor = fleet_secrets::Redactor::from_process_env(&p.instance.secret_names());
    // With `memory.embeddings` (and the feature) configured, agents' searches fuse them in.
    MemoryDb::open_configured(
        &fleet_pipeline::memory_location(p),
        redactor,
        &p.instance.memory,
    )
}

/// The store kept open between calls (these tools, and the memory API): opening `memory.db`
/// costs more CPU than a search does (schema check, FTS5 set-up, a cold page cache and no
/// cached term counts; M1 in docs/BENCHMARKS.md), and on PostgreSQL a connection and login.
/// Another process's writes are seen: the SQLite store checks `PRAGMA data_version` before
/// each search, and PostgreSQL is read afresh by every statement.
static KEPT: std::sync::Mutex<Option<(fleet_memory::Location, MemoryDb)>> =
    std::sync::Mutex::new(None);

/// Runs `f` on the kept memory handle (opened first when there is none, or it is of another
/// place); `failed` turns a failure to open into the caller's error.
pub(crate) fn with_memory<T, E>(
    p: &Pipeline,
    failed: impl FnOnce(MemoryError) -> E,
    f: impl FnOnce(&mut MemoryDb) -> Result<T, E>,
) -> Result<T, E> {
    let at = fleet_pipeline::memory_location(p);
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let db = match kept.take() {
        Some((k, db)) if k == at => db,
        _ => open(p).map_err(failed)?,
    };
    let (_, db) = kept.insert((at, db));
    f(db)
}

fn with_db<T>(
    p: &Pipeline,
    f: impl FnOnce(&mut MemoryDb) -> Result<T, String>,
) -> Result<T, String> {
    with_memory(p, |e| e.to_string(), f)
}

pub fn search(p: &Pipeline, q: MemorySearch) -> Result<Value, String> {
    if let Some(bad) = q
        .kinds
        .iter()
        .find(|k| !fleet_memory::db::KINDS.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown kind {bad:?} (one of {})",
            fleet_memory::db::KINDS.join(", ")
        ));
    }
    let limit = q.limit.unwrap_or(10).min(50);
    let hits = with_db(p, |db| {
        db.search(&q.query, &q.kinds, limit)
            .map_err(|e| e.to_string())
    })?;
    Ok(json!({ "results": hits }))
}

/// A lesson from an agent: its provenance is the attempt it runs in, when Fleet launched it.
pub fn remember(
    p: &Pipeline,
    attempt: Option<(String, String, u32)>,
    r: Remember,
) -> Result<Value, String> {
    let scope = match r.project {
        Some(name) => {
            p.project(&name).map_err(|e| e.to_string())?;
            Scope::Project(name)
        }
        None => Scope::Instance,
    };
    let now = fleet_core::clock::now_ms();
    let (run, task, n) = match attempt {
        Some((run, task, n)) => (Some(run), Some(task), Some(n)),
        None => (None, None, None),
    };
    let lesson = Lesson::new(
        scope,
        AppliesWhen {
            paths: r.paths,
            words: r.words,
            ..AppliesWhen::default()
        },
        r.lesson,
        Provenance {
            source: "agent".into(),
            run,
            task,
            attempt: n,
            at: now,
        },
    );
    let added = with_db(p, |db| {
        db.add_lesson(lesson, now, &Policy::default())
            .map_err(|e| e.to_string())
    })?;
    serde_json::to_value(added).map_err(|e| e.to_string())
}
