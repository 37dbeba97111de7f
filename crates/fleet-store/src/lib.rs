//! Durable state behind one trait.
//!
//! Owns: the [`Store`] trait, the rows it persists (runs, tasks, attempts, events), the
//! SQLite implementation ([`SqliteStore`], WAL mode) and its migrations. A [`Batch`] is
//! written in one transaction: the engine commits every transition together with its events
//! before it acts on them, which is what makes `kill -9` at any moment recoverable.
//!
//! [`PostgresStore`] is the same contract on a shared PostgreSQL, for several processes on
//! several machines; [`open`] picks the backend from a URL. Both pass the public contract
//! suite ([`contract`], feature `contract`), which any new backend must pass too.
//!
//! Must not know: processes, git, YAML, the scheduler's rules.

#[cfg(feature = "contract")]
pub mod contract;
mod lease;
mod open;
pub mod pg;
mod postgres;
mod postgres_queue;
pub mod queue;
mod sqlite;
mod summary;

pub use lease::{Lease, LeaseHolder, LeaseWatch};
pub use open::{StoreUrl, open};
pub use postgres::PostgresStore;
pub use queue::{
    ANY_OF, Claim, Finish, NextClaim, QueueItem, QueueRow, RunEnded, RunnerAd, TaskQueue, meets,
};
pub use sqlite::{Durability, SqliteStore};
pub use summary::{AttemptTallies, EpicSummary, ProfileTally, RunTally, summarize};

use serde::{Deserialize, Serialize};

/// What a store can fail with, the same for every backend: callers never see a driver's
/// error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend refused or failed a statement (its message, as the driver gave it).
    #[error("database error: {0}")]
    Backend(String),
    /// Another writer holds the database; the statement may succeed if tried again.
    #[error("database is busy: {0}")]
    Busy(String),
    /// The store cannot be reached (no server, refused, authentication, lost connection).
    #[error("cannot reach the store at {0}: {1}")]
    Unreachable(String, String),
    /// A store URL this build does not know (`sqlite:PATH` and `postgres://…` are known).
    #[error("unknown store {0:?}: expected `sqlite`, `sqlite:PATH` or `postgres://…`")]
    UnknownScheme(String),
    /// A store URL of a known kind with a parameter Fleet reads set wrong.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database was written by a newer fleet (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("run {0:?} already exists")]
    RunExists(String),
    #[error("{0} {1:?} already exists")]
    Exists(&'static str, String),
    /// A compare-and-swap lost: someone else changed the row since it was read.
    #[error("{0} {1:?} was changed meanwhile")]
    Conflict(&'static str, String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A run of a runbook (or, later, of an epic's plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub name: String,
    /// The runbook as it was when the run started; `--resume` uses this, not the file.
    pub runbook_path: String,
    pub runbook_source: String,
    pub repo: String,
    pub base_sha: String,
    pub integration_branch: String,
    /// `running`, `interrupted`, `passed`, `failed`, `cancelled`.
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// One task of a run: the core's record plus what the engine learned doing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub run_id: String,
    /// Position in the runbook (the core's node index).
    pub idx: u32,
    pub id: String,
    pub state: String,
    pub attempts: u32,
    pub failures: u32,
    pub not_before: i64,
    pub reason: Option<String>,
    /// The task branch's commit with the task's work, once committed.
    pub commit_sha: Option<String>,
    /// The integration branch commit that landed it.
    pub merge_sha: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One attempt of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub run_id: String,
    pub task_id: String,
    pub n: u32,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Process group of the running command, so a restarted fleet can kill leftovers.
    pub pgid: Option<i32>,
    pub exit_code: Option<i32>,
    /// `running`, `passed`, `failed`, `checks_failed`, `timed_out`, `interrupted`, `merge_conflict`.
    pub outcome: String,
    pub detail: Option<String>,
    /// For agent attempts: who did it.
    pub profile: Option<String>,
    pub cli: Option<String>,
    pub model: Option<String>,
    pub account: Option<String>,
    pub session_id: Option<String>,
    /// What it cost (tokens from the agent's reports; USD reported or priced).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// An event before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: i64,
    pub run_id: String,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub kind: String,
    pub data: serde_json::Value,
}

/// A persisted event; `seq` is monotonic per instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: i64,
    pub run_id: String,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub kind: String,
    pub data: serde_json::Value,
}

/// The live state of an agent account (cooldown after a rate limit, disabled after an auth
/// failure). Spend is not stored here: it is summed from the attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountRow {
    pub name: String,
    pub cooldown_until: Option<i64>,
    pub backoff_level: u32,
    pub disabled: Option<String>,
    pub updated_at: i64,
}

/// A registered project: the repository Fleet works in and how its results are delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectRow {
    pub name: String,
    /// As given: a local path or a remote URL.
    pub repo: String,
    /// The local git repository Fleet works in (the path itself, or its clone of the URL).
    pub path: String,
    pub default_branch: String,
    /// Commands that define "green" for every task of the project.
    pub checks: Vec<String>,
    /// How results are delivered (see `fleet project add --help`), as JSON.
    pub delivery: serde_json::Value,
    pub bible: Option<String>,
    pub created_at: i64,
}

/// One stage of an epic's life (research, architect, plan, implement, review, deliver), with
/// the engine run that did it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageRow {
    pub stage: String,
    pub cycle: u32,
    pub run_id: Option<String>,
    /// `running`, `passed`, `failed`.
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// What came out of it: the plan's task ids, the review's verdict, the PR's URL, why it failed.
    pub detail: Option<String>,
}

/// An epic: a person's request and everything Fleet did with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpicRow {
    pub id: String,
    pub project: String,
    pub request: String,
    /// Where the epic is: a stage name, `awaiting_acceptance`, `done`, `failed`, `cancelled`.
    pub state: String,
    /// Plan -> result cycles so far (a review rejection or a person's rejection starts one).
    pub cycle: u32,
    /// The branch holding the epic's work.
    pub branch: String,
    pub base_sha: String,
    pub intent: Option<String>,
    pub roles: Vec<String>,
    pub stages: Vec<StageRow>,
    /// Stage outputs and bookkeeping (plan, reviews, delivery, feedback), as JSON.
    pub data: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A run's new state.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStateChange {
    pub run_id: String,
    pub state: String,
    pub at: i64,
    pub finished_at: Option<i64>,
}

/// Everything that changes together, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub run_state: Option<RunStateChange>,
    pub tasks: Vec<TaskRow>,
    pub attempts: Vec<AttemptRow>,
    pub accounts: Vec<AccountRow>,
    pub events: Vec<NewEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.run_state.is_none()
            && self.tasks.is_empty()
            && self.attempts.is_empty()
            && self.accounts.is_empty()
            && self.events.is_empty()
    }
}

/// Durable state. Implementations must make [`Store::commit`] atomic and durable before it
/// returns, and hand out event sequence numbers that only grow. Seqs are also *dense in commit
/// order*: a reader that saw seq `n` will never later see a new event with a seq `<= n`, even
/// with several processes writing at once, so a tail that remembers the last seq it read
/// misses nothing and sees nothing twice.
pub trait Store: Send + Sync {
    /// The queue `fleet runner` workers claim tasks from; `None` for a backend on one machine
    /// (SQLite), where a run's own process runs its tasks.
    fn queue(&self) -> Option<&dyn TaskQueue> {
        None
    }
    /// The URL of the PostgreSQL database holding this store (password included: it is for
    /// connecting, never for messages); `None` for SQLite. What else lives beside the state
    /// (memory) follows it there.
    fn postgres_url(&self) -> Option<&str> {
        None
    }
    /// Takes the lease `name` for `holder` until `ttl` from now, if it is free, expired, or
    /// already `holder`'s (then it is renewed). Whether `holder` holds it now. Expiry is judged
    /// by the store's clock (the server's for PostgreSQL), so holders on several machines agree.
    fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool>;
    /// Extends `holder`'s lease to `ttl` from now; `false` when `holder` no longer holds it
    /// (someone took it after it expired), and then it is not extended.
    fn renew_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool>;
    /// Gives the lease up if `holder` holds it; a no-op otherwise.
    fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// The lease's live holder and when it expires (store clock, ms), `None` when it is free
    /// or expired.
    fn lease(&self, name: &str) -> Result<Option<LeaseRow>>;
    /// Blocks until an event newer than `after` is committed (by any process) or `timeout`
    /// passes; returns the newest seq then. Backends wake waiters when a commit happens
    /// (PostgreSQL: LISTEN/NOTIFY) and poll only as a fallback.
    fn wait_for_events(&self, after: u64, timeout: std::time::Duration) -> Result<u64>;

    /// Creates a run with its tasks; fails with [`StoreError::RunExists`] if the id is taken.
    fn create_run(
        &self,
        run: &RunRow,
        tasks: &[TaskRow],
        events: &[NewEvent],
    ) -> Result<Vec<Event>>;
    /// Writes a batch atomically; returns the sequence numbers given to its events, in order.
    fn commit(&self, batch: &Batch) -> Result<Vec<u64>>;
    fn run(&self, id: &str) -> Result<Option<RunRow>>;
    /// All runs, newest first.
    fn runs(&self) -> Result<Vec<RunRow>>;
    /// Runs whose name starts with `prefix`, oldest first (an epic's stage runs are named
    /// `<epic>-<stage>-…`).
    fn runs_named(&self, prefix: &str) -> Result<Vec<RunRow>>;
    /// A run's tasks in runbook order.
    fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>>;
    /// A run's attempts, by task then number.
    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>>;
    /// Every account's live state.
    fn accounts(&self) -> Result<Vec<AccountRow>>;
    /// Attempts of all runs that started at or after `since` (ms), oldest first: spend is
    /// summed from them. A run's `finished_at` is never before any of its attempts started
    /// (a resumed run clears it), so a store may skip runs that finished before `since`.
    fn attempts_since(&self, since: i64) -> Result<Vec<AttemptRow>>;
    /// Events with `seq > after`, oldest first, optionally of one run only.
    fn events(&self, run_id: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The newest `limit` events of these runs, oldest first.
    fn latest_events(&self, run_ids: &[String], limit: usize) -> Result<Vec<Event>>;
    /// Registers a project; fails with [`StoreError::Exists`] if the name is taken.
    fn add_project(&self, project: &ProjectRow) -> Result<()>;
    fn project(&self, name: &str) -> Result<Option<ProjectRow>>;
    /// All projects by name.
    fn projects(&self) -> Result<Vec<ProjectRow>>;
    /// Creates or replaces an epic and appends its events, in one transaction; returns the
    /// events' sequence numbers.
    fn save_epic(&self, epic: &EpicRow, events: &[NewEvent]) -> Result<Vec<u64>>;
    /// Creates an epic with its events; fails with [`StoreError::Exists`] if the id is taken.
    fn create_epic(&self, epic: &EpicRow, events: &[NewEvent]) -> Result<Vec<u64>>;
    /// Replaces an epic only if its stored `updated_at` is still `expected` (it was not changed
    /// since it was read), with its events; [`StoreError::Conflict`] otherwise.
    fn update_epic(&self, epic: &EpicRow, expected: i64, events: &[NewEvent]) -> Result<Vec<u64>>;
    fn epic(&self, id: &str) -> Result<Option<EpicRow>>;
    /// All epics, oldest first.
    fn epics(&self) -> Result<Vec<EpicRow>>;
    /// One page of epics, newest first, with the total and the count per state (the board).
    fn epic_page(&self, query: &EpicQuery) -> Result<EpicPage>;
    /// Every epic's summary (no stages, no data), oldest first: what lists and outcomes read
    /// over many epics. Kept in the transaction of every epic write (see [`summarize`]).
    fn epic_summaries(&self) -> Result<Vec<EpicSummary>>;
    /// Every attempt, counted per run and per profile and outcome.
    fn attempt_tallies(&self) -> Result<AttemptTallies>;
    /// Stores an API token (by its hash); fails with [`StoreError::Exists`] if the name is taken.
    fn add_token(&self, token: &TokenRow) -> Result<()>;
    /// The live (not revoked) token with this hash.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>>;
    /// All tokens, revoked ones included, by creation.
    fn tokens(&self) -> Result<Vec<TokenRow>>;
    /// Revokes the named token; returns whether one was live.
    fn revoke_token(&self, name: &str, at: i64) -> Result<bool>;
    /// The newest event's `seq` (0 when there is none).
    fn newest_seq(&self) -> Result<u64>;
    /// Whole-instance counters for `/metrics`.
    fn totals(&self) -> Result<Totals>;
    /// A small durable value (cursors of background services).
    fn meta(&self, key: &str) -> Result<Option<String>>;
    fn set_meta(&self, key: &str, value: &str) -> Result<()>;
}

/// A lease as stored: who holds it and until when (store clock, ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub expires_at: i64,
}

/// What [`Store::epic_page`] selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpicQuery {
    /// Any of these states (all when empty).
    pub states: Vec<String>,
    pub project: Option<String>,
    /// A substring of the request or the id, case-insensitive for ASCII letters.
    pub text: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// An epic without its stages and data: what lists show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpicBrief {
    pub id: String,
    pub project: String,
    pub request: String,
    pub state: String,
    pub cycle: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpicPage {
    /// Epics matching the whole query but `limit`/`offset`.
    pub total: u64,
    /// Per state, over epics matching `project` and `text` (not `states`).
    pub counts: std::collections::BTreeMap<String, u64>,
    pub epics: Vec<EpicBrief>,
}

/// Whole-instance counters (monotonic but for the task states).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Tasks of all runs (runbooks and epics' stage runs) by state.
    pub tasks_by_state: std::collections::BTreeMap<String, u64>,
    pub attempts_by_outcome: std::collections::BTreeMap<String, u64>,
    /// Per account (`""` for attempts without one): USD and tokens, all time.
    pub spend_by_account: std::collections::BTreeMap<String, (f64, u64)>,
}

/// An API token. Only the SHA-256 of the secret is stored; the secret is shown once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    pub name: String,
    /// `admin`, `submit` or `read`.
    pub scope: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}
