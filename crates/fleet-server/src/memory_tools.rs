//! The MCP tools `memory_search` and `remember` over the instance's `.fleet/memory.db`.

use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, Provenance, Scope};
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

fn open(p: &Pipeline) -> Result<MemoryDb, String> {
    let redactor = fleet_secrets::Redactor::from_process_env(&p.instance.secret_names());
    // With `memory.embeddings` (and the feature) configured, agents' searches fuse them in.
    MemoryDb::open_configured(
        &p.layout.root().join("memory.db"),
        redactor,
        &p.instance.memory,
    )
    .map_err(|e| e.to_string())
}

/// The store kept open between tool calls: opening `memory.db` costs more CPU than a search
/// does (schema check, FTS5 set-up, a cold page cache and no cached term counts; M1 in
/// docs/BENCHMARKS.md). Another process's writes are seen: the store checks
/// `PRAGMA data_version` before each search.
static KEPT: std::sync::Mutex<Option<(std::path::PathBuf, MemoryDb)>> = std::sync::Mutex::new(None);

fn with_db<T>(
    p: &Pipeline,
    f: impl FnOnce(&mut MemoryDb) -> Result<T, String>,
) -> Result<T, String> {
    let path = p.layout.root().join("memory.db");
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let db = match kept.take() {
        Some((k, db)) if k == path => db,
        _ => open(p)?,
    };
    let (_, db) = kept.insert((path, db));
    f(db)
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
