//! Memory that learns.
//!
//! Owns: lessons (what an outcome taught, where it applies, how much it helped), the rules
//! that weigh, decay, merge, cap, archive and propose them (`rules.rs`, pure, clock injected),
//! their store with a ranked full-text index over lessons and documents (skills, traces,
//! decision logs, project context, reports) — one API (`db.rs`) over two backends: its own
//! SQLite file with FTS5/BM25 (`sqlite.rs`), or the instance's PostgreSQL store with
//! `tsvector`/GIN/`ts_rank_cd` (`postgres.rs`), shared by every process on it — and the
//! prompt block that injects them (`inject.rs`), and a person's side of proposals: lessons
//! proposed as skills, approved into `skills/<name>.md` or dismissed (`skills.rs`). Optional
//! embeddings (cargo feature `embeddings`, SQLite only, `embed.rs`) fuse cosine similarity
//! into search by reciprocal rank (`fusion.rs`, pure).
//!
//! Must not know: processes, agents, git, the scheduler.

pub mod context;
#[cfg(feature = "contract")]
pub mod contract;
pub mod db;
pub mod decisions;
pub mod fusion;
pub mod graph;
pub mod inject;
pub mod lesson;
mod postgres;
pub mod retro;
pub mod rules;
pub mod skills;
mod sqlite;
pub mod trace;

pub use db::{Added, Hit, Location, MemoryDb, MemoryError};
pub use lesson::{AppliesWhen, Lesson, Millis, Provenance, Scope};
pub use rules::{Policy, TaskContext};
