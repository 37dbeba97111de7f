//! Live progress of a run on stderr: a redrawn status line on a terminal, plain timestamped
//! lines otherwise (logs, CI), nothing with `--quiet`.

use fleet_engine::Observer;
use fleet_store::{Event, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Progress {
    state: Arc<Mutex<State>>,
}

struct State {
    quiet: bool,
    tty: bool,
    started: Instant,
    total: usize,
    done: usize,
    failed: usize,
    skipped: usize,
    running: BTreeSet<String>,
    /// Tasks waiting for an account (cooldown, budget, window), with until when.
    waiting: BTreeMap<String, String>,
}

impl Progress {
    pub fn new(quiet: bool, total: usize) -> Progress {
        Progress {
            state: Arc::new(Mutex::new(State {
                quiet,
                tty: std::io::stderr().is_terminal(),
                started: Instant::now(),
                total,
                done: 0,
                failed: 0,
                skipped: 0,
                running: BTreeSet::new(),
                waiting: BTreeMap::new(),
            })),
        }
    }

    /// Counts what a resumed run already finished.
    pub fn seed(&self, store: &dyn Store, run: &str) -> anyhow::Result<()> {
        let mut st = self.state.lock().unwrap();
        for t in store.tasks(run)? {
            match t.state.as_str() {
                "merged" | "passed" => st.done += 1,
                "failed" => st.failed += 1,
                "skipped" | "cancelled" => st.skipped += 1,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn observer(&self) -> Observer {
        let state = self.state.clone();
        Box::new(move |e: &Event| state.lock().unwrap().on_event(e))
    }

    /// Redraws the status line while the run goes on (terminal only).
    pub fn ticker(&self) -> tokio::task::JoinHandle<()> {
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let st = state.lock().unwrap();
                if st.tty && !st.quiet {
                    st.draw_status();
                }
            }
        })
    }

    /// Removes the status line before the final report.
    pub fn clear(&self) {
        let st = self.state.lock().unwrap();
        if st.tty && !st.quiet {
            eprint!("\r\x1b[2K");
        }
    }
}

impl State {
    fn on_event(&mut self, e: &Event) {
        let task = e.task.as_deref().unwrap_or("");
        let reason = || {
            e.data
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_string()
        };
        let line = match e.kind.as_str() {
            "task.started" => {
                self.waiting.remove(task);
                self.running.insert(task.to_string());
                format!("start   {task} (attempt {})", e.attempt.unwrap_or(1))
            }
            "task.checks_started" => format!("checks  {task}"),
            "task.retrying" => {
                self.running.remove(task);
                format!("retry   {task}: {}", reason())
            }
            "task.passed" => {
                self.running.remove(task);
                return;
            }
            "task.done" => {
                self.done += 1;
                format!("done    {task}")
            }
            "task.failed" => {
                self.running.remove(task);
                self.failed += 1;
                format!("FAILED  {task}: {}", reason())
            }
            "task.skipped" => {
                self.skipped += 1;
                format!("skipped {task}: {}", reason())
            }
            "task.cancelled" => {
                self.running.remove(task);
                self.skipped += 1;
                format!("cancel  {task}: {}", reason())
            }
            "task.waiting" => {
                let until = e.data["until"]
                    .as_str()
                    .map(crate::local_time::clock)
                    .unwrap_or_else(|| "it can go on".into());
                self.waiting.insert(task.to_string(), until.clone());
                format!("wait    {task} until {until}: {}", reason())
            }
            "account.cooldown" => format!(
                "cooldown account {} until {}: {}",
                e.data["account"].as_str().unwrap_or(""),
                e.data["until"]
                    .as_str()
                    .map(crate::local_time::clock)
                    .unwrap_or_default(),
                reason()
            ),
            "budget.exhausted" => format!(
                "budget  account {} spent its daily budget; it waits for its next budget day",
                e.data["account"].as_str().unwrap_or("")
            ),
            "task.merge_conflict" => format!("CONFLICT {task}: {}", e.data["files"]),
            "run.started" => format!("run     {} ({} tasks)", e.run_id, self.total),
            "run.resumed" => format!("resume  {}", e.run_id),
            "run.stopping" => format!("stopping: {} — running tasks are being ended", reason()),
            _ => return,
        };
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}\n");
            drop(err);
            self.draw_status();
        } else {
            let at = chrono::Local::now().format("%H:%M:%S");
            let _ = writeln!(err, "{at} {line}");
        }
    }

    fn draw_status(&self) {
        let left = self
            .total
            .saturating_sub(self.done + self.failed + self.skipped);
        let names: Vec<&str> = self.running.iter().map(String::as_str).take(4).collect();
        let more = self.running.len().saturating_sub(names.len());
        let mut now = names.join(", ");
        if more > 0 {
            now.push_str(&format!(" +{more}"));
        }
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[2K[{}] running {}{} · done {}/{} · failed {} · skipped {} · left {}{}",
            fleet_engine::fmt_duration(self.started.elapsed()),
            self.running.len(),
            match self.waiting.values().min() {
                Some(first) => format!(" · waiting {} (until {first})", self.waiting.len()),
                None => String::new(),
            },
            self.done,
            self.total,
            self.failed,
            self.skipped,
            left,
            if now.is_empty() {
                String::new()
            } else {
                format!(" · {now}")
            }
        );
    }
}
