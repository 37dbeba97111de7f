//! `summary.md`: what happened in a run, task by task, for a person.

use crate::layout::StateDir;
use fleet_store::{AttemptRow, RunRow, TaskRow};
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

pub fn render(
    run: &RunRow,
    tasks: &[TaskRow],
    attempts: &[AttemptRow],
    layout: &StateDir,
    now: i64,
) -> String {
    let mut s = String::new();
    let count = |st: &[&str]| {
        tasks
            .iter()
            .filter(|t| st.contains(&t.state.as_str()))
            .count()
    };
    let done = count(&["merged", "passed"]);
    let failed = count(&["failed"]);
    let skipped = count(&["skipped"]);
    let cancelled = count(&["cancelled"]);
    let left = tasks.len() - done - failed - skipped - cancelled;
    let _ = writeln!(s, "# Fleet run `{}`\n", run.id);
    let _ = writeln!(s, "- Run: `{}`", run.id);
    let _ = writeln!(s, "- Integration branch: `{}`", run.integration_branch);
    let _ = writeln!(
        s,
        "- Result: **{}** — {done} passed, {failed} failed, {skipped} skipped{}{} ({} tasks)",
        run.state,
        if cancelled > 0 {
            format!(", {cancelled} cancelled")
        } else {
            String::new()
        },
        if left > 0 {
            format!(", {left} not finished")
        } else {
            String::new()
        },
        tasks.len()
    );
    let _ = writeln!(
        s,
        "- Runbook: `{}` · repository `{}` · base `{}`",
        run.runbook_path,
        run.repo,
        short(&run.base_sha)
    );
    let end = run.finished_at.unwrap_or(now);
    let _ = writeln!(
        s,
        "- Started {} · wall time {}",
        crate::rfc3339(run.created_at),
        crate::fmt_duration(ms(end - run.created_at))
    );
    let _ = writeln!(s, "- Logs: `{}`", layout.logs_dir(&run.id).display());
    if run.state == "interrupted" {
        let _ = writeln!(
            s,
            "- Interrupted: continue with `fleet run --resume {}`",
            run.id
        );
    }
    let _ = writeln!(
        s,
        "\n| task | status | attempts | time | notes |\n|---|---|---|---|---|"
    );
    // Grouped once: a filter per task is quadratic, seconds for a run of 10,000 tasks.
    let mut by_task: HashMap<&str, Vec<&AttemptRow>> = HashMap::new();
    for a in attempts {
        by_task.entry(a.task_id.as_str()).or_default().push(a);
    }
    let none = Vec::new();
    for t in tasks {
        let mine = by_task.get(t.id.as_str()).unwrap_or(&none);
        let spent: i64 = mine
            .iter()
            .map(|a| a.finished_at.unwrap_or(now) - a.started_at)
            .sum();
        let time = if mine.is_empty() {
            "–".to_string()
        } else {
            crate::fmt_duration(ms(spent))
        };
        let mut notes: Vec<String> = Vec::new();
        match t.state.as_str() {
            "failed" | "skipped" | "cancelled" => notes.extend(t.reason.clone()),
            _ => {
                for a in mine {
                    if a.outcome != "passed" && a.outcome != "running" {
                        notes.push(format!(
                            "attempt {}: {}",
                            a.n,
                            a.detail.as_deref().unwrap_or(&a.outcome)
                        ));
                    }
                }
            }
        }
        if let Some(m) = &t.merge_sha {
            notes.push(format!("landed as {}", short(m)));
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            t.id,
            t.state,
            t.attempts,
            time,
            notes.join("; ").replace('|', "\\|")
        );
    }
    agent_attempts(&mut s, attempts);
    let failed_tasks: Vec<&TaskRow> = tasks.iter().filter(|t| t.state == "failed").collect();
    if !failed_tasks.is_empty() {
        let _ = writeln!(s, "\n## Failed\n");
        for t in failed_tasks {
            let _ = writeln!(s, "### {}\n", t.id);
            let _ = writeln!(s, "- Why: {}", t.reason.as_deref().unwrap_or("unknown"));
            for a in by_task.get(t.id.as_str()).unwrap_or(&none) {
                let _ = writeln!(
                    s,
                    "- Attempt {}: {}{}",
                    a.n,
                    a.outcome,
                    a.detail
                        .as_deref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(s, "- Log: `{}`", layout.log(&run.id, &t.id).display());
            let _ = writeln!(
                s,
                "- Worktree kept for inspection: `{}`\n",
                layout.worktree(&run.id, &t.id).display()
            );
        }
    }
    let skipped_tasks: Vec<&TaskRow> = tasks.iter().filter(|t| t.state == "skipped").collect();
    if !skipped_tasks.is_empty() {
        let _ = writeln!(s, "\n## Skipped (not run)\n");
        for t in skipped_tasks {
            let _ = writeln!(
                s,
                "- `{}`: {}",
                t.id,
                t.reason.as_deref().unwrap_or("a dependency did not pass")
            );
        }
    }
    let total_attempts: usize = attempts.len();
    let busy: i64 = attempts
        .iter()
        .map(|a| a.finished_at.unwrap_or(now) - a.started_at)
        .sum();
    let _ = writeln!(
        s,
        "\n## Totals\n\n- Tasks: {} · passed {done} · failed {failed} · skipped {skipped}{}",
        tasks.len(),
        if cancelled > 0 {
            format!(" · cancelled {cancelled}")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "- Attempts: {total_attempts} · task time {} · wall time {}",
        crate::fmt_duration(ms(busy)),
        crate::fmt_duration(ms(end - run.created_at))
    );
    s
}

fn tokens(a: &AttemptRow) -> u64 {
    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens
}

/// Who played each agent attempt, on which CLI and model, with its outcome and spend.
fn agent_attempts(s: &mut String, attempts: &[AttemptRow]) {
    let played: Vec<&AttemptRow> = attempts.iter().filter(|a| a.profile.is_some()).collect();
    if played.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Agent attempts\n\n| task | attempt | agent | cli | model | outcome | tokens | cost |\n|---|---|---|---|---|---|---|---|"
    );
    let cell = |v: Option<&str>| v.unwrap_or("–").replace('|', "\\|");
    for a in &played {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | ${:.4} |",
            a.task_id,
            a.n,
            cell(a.profile.as_deref()),
            cell(a.cli.as_deref()),
            cell(a.model.as_deref()),
            a.outcome.replace('_', " "),
            tokens(a),
            a.cost_usd
        );
    }
    let _ = writeln!(
        s,
        "\n- Spend: {} tokens · ${:.4}",
        played.iter().map(|a| tokens(a)).sum::<u64>(),
        played.iter().map(|a| a.cost_usd).sum::<f64>()
    );
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}
