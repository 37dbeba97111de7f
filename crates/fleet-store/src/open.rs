//! One way in: a store URL names the backend, and an unknown or unreachable one is an error
//! with the reason, never a quiet fallback to another store.

use crate::{Durability, PostgresStore, Result, SqliteStore, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file (`sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl StoreUrl {
    /// Reads a store URL: `sqlite:PATH`, `postgres://…`, `postgresql://…`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::UnknownScheme(url.to_string()));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            crate::pg::split_url(url).map_err(StoreError::InvalidUrl)?;
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        Err(StoreUrl::unknown(url))
    }

    fn unknown(url: &str) -> StoreError {
        StoreError::UnknownScheme(url.to_string())
    }

    /// Opens the store it names (creating a SQLite file's directory is the caller's business).
    pub fn open(&self, durability: Durability) -> Result<Arc<dyn Store>> {
        Ok(match self {
            StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path, durability)?),
            StoreUrl::Postgres(url) => Arc::new(PostgresStore::open(url)?),
        })
    }
}

/// Opens the store at `url` (see [`StoreUrl::parse`]); `durability` matters to SQLite only
/// (PostgreSQL commits are as durable as the server is configured to make them).
pub fn open(url: &str, durability: Durability) -> Result<Arc<dyn Store>> {
    StoreUrl::parse(url)?.open(durability)
}
