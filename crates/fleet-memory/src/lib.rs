//! Memory that learns.
//!
//! Owns: lessons (what an outcome taught, where it applies, how much it helped), the rules
//! that weigh, decay, merge, cap, archive and propose them (`rules.rs`, pure, clock injected),
//! their store with a BM25-ranked full-text index over lessons and documents (skills, traces,
//! decision logs, project context, reports) in its own SQLite file (`db.rs`), and the
//! prompt block that injects them (`inject.rs`), and a person's side of proposals: lessons
//! proposed as skills, approved into `skills/<name>.md` or dismissed (`skills.rs`). Optional
//! embeddings (cargo feature `embeddings`, `db/embed.rs` via `embed.rs`) fuse cosine similarity
//! into search by reciprocal rank (`fusion.rs`, pure).
//!
//! Must not know: processes, agents, git, the scheduler.

pub mod context;
pub mod db;
pub mod decisions;
pub mod fusion;
pub mod graph;
pub mod inject;
pub mod lesson;
pub mod retro;
pub mod rules;
pub mod skills;
pub mod trace;

pub use db::{Added, Hit, MemoryDb, MemoryError};
pub use lesson::{AppliesWhen, Lesson, Millis, Provenance, Scope};
pub use rules::{Policy, TaskContext};
