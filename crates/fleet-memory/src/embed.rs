//! The optional embeddings (cargo feature `embeddings`, `fleet.yaml: memory.embeddings`):
//! vectors from an OpenAI-compatible `POST {base_url}/embeddings`, kept in `memory.db` next to
//! the documents, and fused with BM25 by reciprocal rank at search time.
//!
//! Never required, never in the way: an endpoint that fails costs a warning, not a write
//! (documents are stored first, their vectors after, outside the transaction) and not a
//! search (it falls back to BM25 alone). A child module of `sqlite` so it can reach the store's
//! connection without widening its API.

use super::SqliteMemory;
use crate::db::{Hit, MemoryError, Result, passage, query_terms};
use crate::fusion;
use fleet_config::EmbeddingsConfig;
use rusqlite::params;
use std::time::Duration;

/// Documents without a vector embedded after one write (the rest after later writes).
const BACKFILL_BATCH: i64 = 64;
/// How many of each ranking are fused.
const FUSED_DEPTH: usize = 50;

/// Kept by triggers: a changed or deleted document loses its (now stale) vector.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS embeddings (
    doc INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    vec BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS embeddings_au AFTER UPDATE ON documents
WHEN old.title IS NOT new.title OR old.body IS NOT new.body BEGIN
    DELETE FROM embeddings WHERE doc = old.id;
END;
CREATE TRIGGER IF NOT EXISTS embeddings_ad AFTER DELETE ON documents BEGIN
    DELETE FROM embeddings WHERE doc = old.id;
END;
"#;

pub(super) struct Embedder {
    url: String,
    model: String,
    key_env: Option<String>,
}

impl Embedder {
    /// The key is read from its variable at each call, never kept in a field that a `Debug`
    /// could print.
    fn key(&self) -> std::result::Result<Option<String>, String> {
        match &self.key_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Ok(Some(k)),
                _ => Err(format!(
                    "the variable {var} (memory.embeddings.key_env) is not set"
                )),
            },
        }
    }

    /// One vector per text, in order; a message (the key never in it) when the endpoint
    /// cannot give them.
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String> {
        let key = self.key()?;
        // Its own thread and runtime: the store is synchronous and is called from inside
        // async code as well as from plain threads.
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(self.post(texts, key.as_deref()))
            })
            .join()
            .unwrap_or_else(|_| Err("the embeddings request panicked".into()))
        });
        out.map_err(|m| match &key {
            Some(k) => m.replace(k.as_str(), "[REDACTED]"),
            None => m,
        })
    }

    async fn post(
        &self,
        texts: &[String],
        key: Option<&str>,
    ) -> std::result::Result<Vec<Vec<f32>>, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client
            .post(&self.url)
            .json(&serde_json::json!({"model": self.model, "input": texts}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("POST {}: HTTP {status}", self.url));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let mut data: Vec<(u64, Vec<f32>)> = body["data"]
            .as_array()
            .ok_or("the response has no `data` list")?
            .iter()
            .map(|d| {
                let v = d["embedding"]
                    .as_array()
                    .ok_or("an item has no `embedding`")?
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .map(|x| x as f32)
                            .ok_or("a non-number in an embedding")
                    })
                    .collect::<std::result::Result<Vec<f32>, _>>()?;
                Ok((d["index"].as_u64().unwrap_or(0), v))
            })
            .collect::<std::result::Result<_, &str>>()?;
        if data.len() != texts.len() {
            return Err(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                data.len()
            ));
        }
        data.sort_by_key(|(i, _)| *i);
        Ok(data.into_iter().map(|(_, v)| v).collect())
    }
}

impl SqliteMemory {
    /// Turns the embeddings on for this store (creating their table and triggers in
    /// `memory.db` the first time) and embeds what has no vector yet, as far as the endpoint
    /// answers.
    pub(super) fn with_embeddings(&mut self, cfg: &EmbeddingsConfig) -> Result<()> {
        self.conn.execute_batch(SCHEMA)?;
        self.embedder = Some(Embedder {
            url: format!("{}/embeddings", cfg.base_url.trim_end_matches('/')),
            model: cfg.model.clone(),
            key_env: cfg.key_env.clone(),
        });
        self.backfill();
        Ok(())
    }

    fn warn(&self, what: &str) {
        let line = format!(
            "embeddings unavailable ({}); search uses BM25 only",
            self.redactor.clean_string(what.to_string())
        );
        eprintln!("fleet: warning: {line}");
        self.embed_warnings.borrow_mut().push(line);
    }

    /// Embeds documents that have no vector of this model yet (new, changed, or written while
    /// the endpoint was down). Failing costs a warning: the documents are already stored.
    pub(super) fn backfill(&self) {
        let Some(e) = &self.embedder else { return };
        let todo: Result<Vec<(i64, String)>> = (|| {
            let mut st = self.conn.prepare_cached(
                "SELECT d.id, d.title || '\n' || d.body FROM documents d
                 LEFT JOIN embeddings e ON e.doc = d.id AND e.model = ?1
                 WHERE e.doc IS NULL ORDER BY d.id LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![e.model, BACKFILL_BATCH], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            Ok(rows)
        })();
        let todo = match todo {
            Ok(t) if t.is_empty() => return,
            Ok(t) => t,
            Err(err) => return self.warn(&err.to_string()),
        };
        let texts: Vec<String> = todo.iter().map(|(_, t)| t.clone()).collect();
        match e.embed(&texts) {
            Ok(vecs) => {
                for ((id, _), v) in todo.iter().zip(vecs) {
                    let put = self.conn.execute(
                        "INSERT OR REPLACE INTO embeddings (doc, model, vec) VALUES (?1, ?2, ?3)",
                        params![id, e.model, fusion::to_blob(&v)],
                    );
                    if let Err(err) = put {
                        return self.warn(&err.to_string());
                    }
                }
            }
            Err(m) => self.warn(&m),
        }
    }

    /// Each live lesson's cosine similarity to `text`, best first (those above 0); `None`
    /// when embeddings are off or `text` cannot be embedded (a warning): recall then ranks
    /// by BM25 alone.
    pub(super) fn lesson_similarities(&self, text: &str) -> Option<Vec<(String, f32)>> {
        let e = self.embedder.as_ref()?;
        let q = match e.embed(&[text.to_string()]) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => return None,
            Err(m) => {
                self.warn(&m);
                return None;
            }
        };
        let rows: Result<Vec<(String, Vec<u8>)>> = (|| {
            let mut st = self.conn.prepare_cached(
                "SELECT d.key, e.vec FROM embeddings e JOIN documents d ON d.id = e.doc
                 WHERE e.model = ?1 AND d.kind = 'lesson'",
            )?;
            let rows = st
                .query_map([&e.model], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<std::result::Result<_, _>>()?;
            Ok(rows)
        })();
        let rows = match rows {
            Ok(r) => r,
            Err(err) => {
                self.warn(&err.to_string());
                return None;
            }
        };
        let mut near: Vec<(String, f32)> = rows
            .into_iter()
            .map(|(k, blob)| {
                let c = fusion::cosine(&q, &fusion::from_blob(&blob));
                (k, c)
            })
            .filter(|(_, c)| *c > 0.0)
            .collect();
        near.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Some(near)
    }

    /// BM25 fused with cosine similarity, or BM25 alone (with a warning) when the query
    /// cannot be embedded.
    pub(super) fn fused(
        &self,
        query: &str,
        kinds: &[String],
        limit: usize,
    ) -> Result<Vec<(i64, Hit)>> {
        let Some(e) = &self.embedder else {
            return self.search_bm25(query, kinds, limit);
        };
        let bm25 = self.search_bm25(query, kinds, FUSED_DEPTH.max(limit))?;
        let q = match e.embed(&[query.to_string()]) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => Vec::new(),
            Err(m) => {
                self.warn(&m);
                return Ok(bm25.into_iter().take(limit).collect());
            }
        };
        let mut st = self.conn.prepare_cached(
            "SELECT e.doc, d.kind, e.vec FROM embeddings e JOIN documents d ON d.id = e.doc
             WHERE e.model = ?1",
        )?;
        let mut near: Vec<(i64, f32)> = st
            .query_map([&e.model], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .filter_map(|row| {
                let (id, kind, blob) = row.ok()?;
                if !kinds.is_empty() && !kinds.contains(&kind) {
                    return None;
                }
                let s = fusion::cosine(&q, &fusion::from_blob(&blob));
                (s > 0.0).then_some((id, s))
            })
            .collect();
        near.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        near.truncate(FUSED_DEPTH.max(limit));
        let lists = vec![
            bm25.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            near.iter().map(|(id, _)| *id).collect(),
        ];
        let words = query_terms(query);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut doc = self
            .conn
            .prepare_cached("SELECT kind, key, title, body FROM documents WHERE id = ?1")?;
        let mut out = Vec::new();
        for (id, score) in fusion::reciprocal_rank_fusion(&lists, fusion::RRF_K)
            .into_iter()
            .take(limit)
        {
            let hit = match bm25.iter().find(|(b, _)| *b == id) {
                Some((_, h)) => Hit { score, ..h.clone() },
                None => {
                    let (kind, key, title, body): (String, String, String, String) = doc
                        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                        .map_err(MemoryError::from)?;
                    Hit {
                        snippet: passage(&body, &words),
                        kind,
                        key,
                        title,
                        score,
                    }
                }
            };
            out.push((id, hit));
        }
        Ok(out)
    }
}
