//! `fleet memory`: lessons and knowledge search, and the task graph as JSONL.

use crate::{InvalidInput, exit};
use clap::Subcommand;
use fleet_memory::graph::{self, GraphError};
use fleet_memory::rules::Policy;
use fleet_memory::{AppliesWhen, Lesson, MemoryDb, MemoryError, Provenance, Scope};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// Ranked full-text search (BM25) over lessons, skills, traces, decision logs, project
    /// context and reports.
    Search {
        query: String,
        /// Only these kinds (lesson, skill, trace, decision, context, report); repeatable.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Add a lesson by hand.
    Add {
        text: String,
        /// `instance`, `bible:NAME` or `project:NAME`.
        #[arg(long, default_value = "instance")]
        scope: String,
        /// Applies when the task touches this path prefix (`*` globs); repeatable.
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Applies to this role; repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Applies to this kind of task; repeatable.
        #[arg(long = "task-kind")]
        kinds: Vec<String>,
        /// Applies when the task's text has these words; repeatable.
        #[arg(long = "word")]
        words: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List live lessons (or archived ones).
    Ls {
        #[arg(long)]
        archived: bool,
        #[arg(long)]
        json: bool,
    },
    /// One lesson with its provenance and counters.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Archive a lesson (kept, listed by `ls --archived`, no longer injected or searched).
    Forget { id: String },
    /// Write the task graph and lessons as JSONL, one object per line, sorted.
    Export {
        /// Default: standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Rebuild an exported graph into this (empty) instance.
    Import { file: PathBuf },
    /// Lessons proposed as skills (they kept helping), waiting for a person's word.
    Proposals {
        #[arg(long)]
        json: bool,
    },
    /// Make a proposed lesson a skill: writes `skills/<name>.md` (never over an existing one)
    /// and archives the lesson as promoted.
    Approve {
        id: String,
        /// The skill's name (default `lesson-<id>`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Decline a proposal: the lesson stays, and is not proposed again.
    Dismiss { id: String },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The instance's memory, every write through the one redactor: where its store is
/// (`store: postgres://…` shares it with every process on that database), else the file
/// `.fleet/memory.db`. An unreachable database is an error (exit 4), never a local file.
pub fn open(home: &Path) -> anyhow::Result<MemoryDb> {
    let instance = crate::load_instance(Some(home))?;
    let at = match &instance.store {
        fleet_config::StoreConfig::Sqlite => {
            fleet_memory::Location::File(home.join(".fleet").join("memory.db"))
        }
        fleet_config::StoreConfig::Postgres(url) => fleet_memory::Location::Postgres(url.clone()),
    };
    MemoryDb::open_configured(&at, redactor(home)?, &instance.memory)
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot open memory at {}", at.shown())))
}

/// The instance's one redactor: its configured secrets and the environment's.
fn redactor(home: &Path) -> anyhow::Result<fleet_secrets::Redactor> {
    let instance = crate::load_instance(Some(home))?;
    Ok(fleet_secrets::Redactor::from_process_env(
        &instance.secret_names(),
    ))
}

/// `text` with every secret the redactor knows replaced, line by line (a replacement holds no
/// quote or backslash, so each JSON line stays JSON).
fn redact_lines(redactor: &fleet_secrets::Redactor, text: &str) -> String {
    text.lines()
        .map(|l| redactor.clean(l).into_owned() + "\n")
        .collect()
}

fn invalid(e: MemoryError) -> anyhow::Error {
    match e {
        MemoryError::Invalid(_) | MemoryError::NoLesson(_) => InvalidInput(e.to_string()).into(),
        other => other.into(),
    }
}

pub fn run(home: Option<PathBuf>, command: MemoryCommand) -> anyhow::Result<u8> {
    let home = crate::epics::instance_home(home)?;
    let mut db = open(&home)?;
    match command {
        MemoryCommand::Search {
            query,
            kinds,
            limit,
            json,
        } => {
            if let Some(bad) = kinds
                .iter()
                .find(|k| !fleet_memory::db::KINDS.contains(&k.as_str()))
            {
                return Err(InvalidInput(format!(
                    "unknown kind {bad:?} (one of {})",
                    fleet_memory::db::KINDS.join(", ")
                ))
                .into());
            }
            let hits = db.search(&query, &kinds, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else if hits.is_empty() {
                println!("nothing found");
            } else {
                // Shown relative to the best hit. Raw scores depend on the backend and the
                // corpus: SQLite's BM25 weighs a word found in half the documents or more at
                // ~0, so in a two-lesson memory every hit read 0.00. `--json` has them raw.
                let best = hits.iter().map(|h| h.score).fold(0.0, f64::max);
                for h in hits {
                    let relevance = if best > 0.0 { h.score / best } else { 1.0 };
                    println!(
                        "{:<8} {:<16} {:>6.2}  {}",
                        h.kind, h.key, relevance, h.title
                    );
                    println!("         {}", h.snippet.replace('\n', " "));
                }
            }
        }
        MemoryCommand::Add {
            text,
            scope,
            paths,
            roles,
            kinds,
            words,
            json,
        } => {
            let scope = Scope::parse(&scope).ok_or_else(|| {
                InvalidInput(format!(
                    "--scope {scope:?}: one of instance, bible:NAME, project:NAME"
                ))
            })?;
            let now = now_ms();
            let lesson = Lesson::new(
                scope,
                AppliesWhen {
                    paths,
                    roles,
                    kinds,
                    words,
                },
                text,
                Provenance {
                    source: "person".into(),
                    run: None,
                    task: None,
                    attempt: None,
                    at: now,
                },
            );
            let added = db
                .add_lesson(lesson, now, &Policy::default())
                .map_err(invalid)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                match &added.merged_into {
                    Some(into) => println!("merged into {into} (a near-duplicate)"),
                    None => println!("{}", added.id),
                }
                for a in &added.archived {
                    println!("archived {a}: its scope was over its cap");
                }
            }
        }
        MemoryCommand::Ls { archived, json } => {
            let lessons = db.lessons(archived)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lessons)?);
            } else if lessons.is_empty() {
                println!("no {}lessons", if archived { "archived " } else { "" });
            } else {
                for l in lessons {
                    println!(
                        "{}  {:<20} w={:.2} used={} helped={}  {}",
                        l.id,
                        l.scope.key(),
                        l.weight,
                        l.used,
                        l.helped,
                        first_line(&l.text)
                    );
                }
            }
        }
        MemoryCommand::Show { id, json } => {
            let l = db
                .lesson(&id)?
                .ok_or_else(|| InvalidInput(format!("no lesson {id:?}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                println!("{}  ({})", l.id, l.scope.key());
                println!("{}", l.text);
                println!(
                    "weight {:.2}, used {}, helped {}{}",
                    l.weight,
                    l.used,
                    l.helped,
                    l.archived_why
                        .as_deref()
                        .map(|w| format!(", archived: {w}"))
                        .unwrap_or_default()
                );
                for p in &l.provenance {
                    println!(
                        "from {} {} {}",
                        p.source,
                        p.task.as_deref().unwrap_or("-"),
                        p.attempt
                            .map(|a| format!("attempt {a}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        MemoryCommand::Forget { id } => {
            let l = db.forget(&id, now_ms()).map_err(invalid)?;
            println!("archived {}", l.id);
        }
        MemoryCommand::Export { out } => {
            let store = crate::epics::store(&home)?;
            let text = graph::to_jsonl(&graph::export(&*store, &db).map_err(graph_error)?);
            // An export is made to be shared: secrets out, as at every other sink. (A run
            // keeps its runbook verbatim in the store for `--resume`; its exported copy does
            // not need to run.)
            let instance = crate::load_instance(Some(&home))?;
            let redactor = fleet_secrets::Redactor::from_process_env(&instance.secret_names());
            let text = redactor.clean_string(text);
            match out {
                // A reader never sees half an export.
                Some(path) => {
                    fleet_engine::files::write_whole(&path, text.as_bytes()).map_err(|e| {
                        use std::io::ErrorKind as K;
                        match e.kind() {
                            K::NotFound
                            | K::PermissionDenied
                            | K::NotADirectory
                            | K::IsADirectory
                            | K::ReadOnlyFilesystem
                            | K::InvalidInput => {
                                anyhow::Error::new(InvalidInput(format!("--out {e}")))
                            }
                            _ => e.into(),
                        }
                    })?
                }
                None => print!("{text}"),
            }
        }
        MemoryCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| InvalidInput(format!("{}: {e}", file.display())))?;
            // A file from elsewhere goes through the one redactor like every other write:
            // a token pasted into a lesson or a runbook must not land in this instance.
            let text = redact_lines(&redactor(&home)?, &text);
            let lines = graph::parse_jsonl(&text).map_err(|e| match e {
                GraphError::Line { .. } => InvalidInput(format!("{}:{e}", file.display())).into(),
                other => graph_error(other),
            })?;
            let store = crate::epics::store(&home)?;
            graph::import(&*store, &mut db, &lines).map_err(|e| match e {
                GraphError::Line { .. } => InvalidInput(format!("{}:{e}", file.display())).into(),
                other => graph_error(other),
            })?;
            println!("imported {} objects", lines.len());
        }
        MemoryCommand::Proposals { json } => {
            let proposals = db.proposals()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&proposals)?);
            } else if proposals.is_empty() {
                println!("no proposals");
            } else {
                for p in proposals {
                    println!(
                        "{}  {:<20} helped {} of {}  {}",
                        p.id,
                        p.scope,
                        p.helped,
                        p.used,
                        first_line(&p.text)
                    );
                }
            }
        }
        MemoryCommand::Approve { id, name } => {
            let path = db
                .approve(&home, &id, name.as_deref(), now_ms())
                .map_err(invalid)?;
            println!("wrote {}", path.display());
        }
        MemoryCommand::Dismiss { id } => {
            let l = db.dismiss(&id, now_ms()).map_err(invalid)?;
            println!(
                "dismissed {}: it stays a lesson and is not proposed again",
                l.id
            );
        }
    }
    Ok(exit::PASSED)
}

fn graph_error(e: GraphError) -> anyhow::Error {
    match e {
        GraphError::NotEmpty(_) | GraphError::Line { .. } => InvalidInput(e.to_string()).into(),
        other => other.into(),
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(100) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}
