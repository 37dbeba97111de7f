//! Where a task of a run on runners keeps its log: on the runner that played it (under its
//! `--workspace`), with the log's end in the store (the `log_tail` of the task's end event),
//! so `fleet logs` and `fleet status` can say and show it from any machine.

use fleet_store::Store;
use std::collections::BTreeMap;

/// What the store knows of one task's log on runners: its latest claim's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteLog {
    pub runner: Option<String>,
    pub claim: Option<u32>,
    /// The log's path on the runner's machine.
    pub path: Option<String>,
    /// The log's last lines (redacted by the runner), once the claim ended.
    pub tail: Option<String>,
    pub ended: bool,
}

/// Whether run `run` was queued for runners.
pub fn on_runners(store: &dyn Store, run: &str) -> anyhow::Result<bool> {
    Ok(match store.queue() {
        Some(q) => !q.queued(run)?.is_empty(),
        None => false,
    })
}

/// Each task's latest claim and log, from the run's events.
pub fn remote_logs(store: &dyn Store, run: &str) -> anyhow::Result<BTreeMap<String, RemoteLog>> {
    let mut out: BTreeMap<String, RemoteLog> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.events(Some(run), after, 1000)?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = last.seq;
        for e in &page {
            let Some(task) = &e.task else { continue };
            let text = |k: &str| e.data[k].as_str().map(str::to_string);
            match e.kind.as_str() {
                "task.started" => {
                    out.insert(
                        task.clone(),
                        RemoteLog {
                            runner: text("runner"),
                            claim: e.attempt,
                            ..RemoteLog::default()
                        },
                    );
                }
                "task.done" | "task.failed" => {
                    let l = out.entry(task.clone()).or_default();
                    l.ended = true;
                    l.runner = text("runner").or(l.runner.take());
                    l.claim = e.attempt.or(l.claim);
                    l.path = text("log_path");
                    l.tail = text("log_tail");
                }
                _ => {}
            }
        }
    }
}

impl RemoteLog {
    /// "runner NAME, claim N, at PATH" (what is known of it).
    pub fn place(&self) -> String {
        let mut s = format!("runner {}", self.runner.as_deref().unwrap_or("?"));
        if let Some(n) = self.claim {
            s.push_str(&format!(", claim {n}"));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(", at {p} on that machine"));
        }
        s
    }
}
