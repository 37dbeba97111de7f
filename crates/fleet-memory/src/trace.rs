//! A task's trace artifact: what was asked, who did what (agent, profile, model per attempt),
//! why each retry and swap, the checks and their results, and the final change — Markdown,
//! rendered from the store's rows. Pure: the caller reads the rows, redacts and writes.

use fleet_store::{AttemptRow, Event, RunRow, TaskRow};
use serde_json::Value;

/// Longest trace written: a trace is read by people and agents, not archived output.
pub const MAX_TRACE_BYTES: usize = 24 * 1024;
/// Longest piece of a prompt or a check's output quoted in a trace.
const MAX_QUOTE: usize = 1500;
/// Longest one-line summary shown to a later agent.
pub const MAX_SUMMARY_CHARS: usize = 240;

/// The rows a trace is made of: one task of one run.
pub struct TaskTrace<'a> {
    pub run: &'a RunRow,
    pub task: &'a TaskRow,
    /// The prompt (agent tasks) or the command (command tasks).
    pub asked: &'a str,
    /// This task's attempts, in any order.
    pub attempts: &'a [AttemptRow],
    /// This task's events, in any order.
    pub events: &'a [Event],
    /// `git diff --stat` of what it landed (or left on its branch).
    pub diff_stat: Option<&'a str>,
}

/// Where a trace lives under the state directory (`.fleet/`).
pub fn relative_path(run_id: &str, task: &str) -> String {
    format!("traces/{run_id}/{task}.md")
}

/// Whether a task state is an end: a trace is written then.
pub fn is_final(state: &str) -> bool {
    matches!(
        state,
        "merged" | "passed" | "failed" | "skipped" | "cancelled"
    )
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… (cut: {} bytes in all)", &text[..end], text.len())
}

fn who(a: &AttemptRow) -> String {
    match &a.profile {
        Some(p) => {
            let mut s = format!("`{p}`");
            let extra: Vec<&str> = [a.cli.as_deref(), a.model.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            s
        }
        None => "command".into(),
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn fence(body: &str) -> String {
    // A fence longer than any run of backticks inside, so the quote cannot end early.
    let longest = body
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(2);
    let f = "`".repeat(longest + 1);
    format!("{f}\n{}\n{f}", body.trim_end())
}

/// One line of the timeline per event that says why something happened; `None` for events
/// that decide nothing (messages, tool calls, usage).
fn timeline_line(e: &Event) -> Option<String> {
    let d = &e.data;
    let at = e
        .attempt
        .map(|n| format!("attempt {n}: "))
        .unwrap_or_default();
    let line = match e.kind.as_str() {
        "agent.selected" => format!("chose `{}`: {}", text(d, "profile"), text(d, "reason")),
        "attempt.swapped" => format!(
            "swapped `{}` for `{}`: {}",
            text(d, "from"),
            text(d, "to"),
            text(d, "reason")
        ),
        "task.started" => format!("{at}started"),
        "attempt.finished" => {
            let detail = text(d, "detail");
            format!(
                "{at}agent ended `{}`{}",
                text(d, "outcome"),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first_line(&detail))
                }
            )
        }
        "attempt.stalled" | "attempt.rate_limited" | "attempt.error" | "attempt.timed_out" => {
            format!("{at}{}: {}", e.kind, compact(d))
        }
        "task.checks_passed" => format!("{at}checks passed"),
        "task.checks_failed" => {
            let out = text(d, "output_tail");
            let mut s = format!(
                "{at}check `{}` failed (exit {}{})",
                text(d, "check"),
                text(d, "exit_code"),
                if d.get("timed_out") == Some(&Value::Bool(true)) {
                    ", timed out"
                } else {
                    ""
                }
            );
            if !out.trim().is_empty() {
                let tail = tail(&out, MAX_QUOTE);
                s.push_str(&format!("\n\n{}\n", indent(&fence(&tail))));
            }
            s
        }
        "task.retrying" => format!("retry: {}", text(d, "reason")),
        "task.waiting" => format!("waited: {}", compact(d)),
        "task.merge_conflict" => format!("merge conflict in {}", compact(&d["files"])),
        "task.rebased" => "rebased onto the integration branch and checked again".into(),
        "task.passed" => format!("passed (commit {})", short(&text(d, "commit"))),
        "task.merged" => format!("landed (merge {})", short(&text(d, "merge"))),
        "task.failed" => format!("gave up: {}", text(d, "reason")),
        "task.skipped" => format!("skipped: {}", text(d, "reason")),
        "task.cancelled" => format!("cancelled: {}", text(d, "reason")),
        _ => return None,
    };
    Some(line)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    cut(&s, 300).replace('\n', " ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("  {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `max` bytes of `s` (a check's failure is at its end).
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

fn attempts_sorted<'a>(t: &TaskTrace<'a>) -> Vec<&'a AttemptRow> {
    let mut v: Vec<&AttemptRow> = t.attempts.iter().collect();
    v.sort_by_key(|a| a.n);
    v
}

/// The part of a prompt that says what this task is: from a `## Your task` heading (a role
/// template's) to the next heading, or the whole prompt when it has none.
pub fn asked_part(prompt: &str) -> &str {
    let Some(start) = prompt.find("## Your task") else {
        return prompt;
    };
    let rest = &prompt[start..];
    let body = rest.find('\n').map_or(rest.len(), |i| i + 1);
    match rest[body..].find("\n## ") {
        Some(end) => {
            // The acceptance criteria belong to what was asked.
            let more = &rest[body + end + 1..];
            if more.starts_with("## Acceptance") {
                let after = more.find('\n').map_or(more.len(), |i| i + 1);
                let stop = more[after..]
                    .find("\n## ")
                    .map_or(more.len(), |j| after + j);
                &prompt[start..start + body + end + 1 + stop]
            } else {
                &prompt[start..start + body + end]
            }
        }
        None => rest,
    }
}

/// One line for a later agent: the outcome, who tried, and why attempts failed.
pub fn summary(t: &TaskTrace) -> String {
    let attempts = attempts_sorted(t);
    let mut agents: Vec<String> = Vec::new();
    for a in &attempts {
        let w = a.profile.clone().unwrap_or_else(|| "command".into());
        if !agents.contains(&w) {
            agents.push(w);
        }
    }
    let failed_checks = t
        .events
        .iter()
        .filter(|e| e.kind == "task.checks_failed")
        .count();
    let mut s = format!(
        "{} {} after {} attempt{} by {}",
        t.task.id,
        t.task.state,
        attempts.len(),
        if attempts.len() == 1 { "" } else { "s" },
        if agents.is_empty() {
            "nobody".into()
        } else {
            agents.join(", ")
        }
    );
    if failed_checks > 0 {
        s.push_str(&format!("; {failed_checks} failed check run(s)"));
    }
    if let Some(r) = t.task.reason.as_deref().filter(|r| !r.is_empty())
        && t.task.state != "merged"
    {
        s.push_str(&format!("; {}", first_line(r)));
    }
    let s = s.replace('\n', " ");
    match s.char_indices().nth(MAX_SUMMARY_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The trace as Markdown, at most [`MAX_TRACE_BYTES`].
pub fn render(t: &TaskTrace) -> String {
    let mut out = format!(
        "# Trace: task `{}` of run `{}`\n\n{}\n\n",
        t.task.id,
        t.run.name,
        summary(t)
    );
    out.push_str(&format!(
        "- Run: `{}` (integration branch `{}`)\n- Final state: **{}**{}\n",
        t.run.id,
        t.run.integration_branch,
        t.task.state,
        t.task
            .reason
            .as_deref()
            .filter(|r| !r.is_empty() && !matches!(t.task.state.as_str(), "merged" | "passed"))
            .map(|r| format!(" — {}", first_line(r)))
            .unwrap_or_default()
    ));
    if let Some(c) = &t.task.commit_sha {
        out.push_str(&format!("- Commit: `{}`\n", short(c)));
    }
    if let Some(m) = &t.task.merge_sha {
        out.push_str(&format!("- Landed as: `{}`\n", short(m)));
    }
    out.push_str("\n## What was asked\n\n");
    out.push_str(&fence(&cut(asked_part(t.asked).trim(), MAX_QUOTE)));
    out.push_str("\n\n## Attempts\n\n");
    let attempts = attempts_sorted(t);
    if attempts.is_empty() {
        out.push_str("None: the task never started.\n");
    } else {
        out.push_str("| # | who | outcome | seconds | tokens | cost (USD) |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for a in &attempts {
            let secs = a
                .finished_at
                .map(|f| format!("{:.1}", (f - a.started_at) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {} | {} | {}{} | {} | {} | {:.4} |\n",
                a.n,
                who(a),
                a.outcome,
                a.detail
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {}", cut(first_line(d), 160).replace('|', "\\|")))
                    .unwrap_or_default(),
                secs,
                a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens,
                a.cost_usd
            ));
        }
    }
    out.push_str("\n## What happened, and why\n\n");
    let mut events: Vec<&Event> = t.events.iter().collect();
    events.sort_by_key(|e| e.seq);
    for line in events.iter().filter_map(|e| timeline_line(e)) {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str("\n## Final change\n\n");
    match t.diff_stat.map(str::trim).filter(|s| !s.is_empty()) {
        Some(stat) => out.push_str(&fence(&cut(stat, 4000))),
        None => out.push_str("No change recorded."),
    }
    out.push('\n');
    if out.len() > MAX_TRACE_BYTES {
        out = cut(&out, MAX_TRACE_BYTES);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, attempt: Option<u32>, kind: &str, data: Value) -> Event {
        Event {
            seq,
            at: seq as i64,
            run_id: "r1".into(),
            task: Some("t".into()),
            attempt,
            kind: kind.into(),
            data,
        }
    }

    #[test]
    fn what_was_asked_is_the_task_and_its_criteria_not_the_roles_boilerplate() {
        let p = "You are a developer.\n\n## Your task\n\nAdd t1\n\n## Acceptance criteria\n\n- `x` exits 0\n\n## Project context\n\nlong";
        assert_eq!(
            asked_part(p),
            "## Your task\n\nAdd t1\n\n## Acceptance criteria\n\n- `x` exits 0\n"
        );
        assert_eq!(asked_part("just do it"), "just do it");
        assert_eq!(asked_part("## Your task\nall"), "## Your task\nall");
    }

    #[test]
    fn a_retry_after_a_failed_check_and_a_swap_are_explained_and_bounded() {
        let run = RunRow {
            id: "r1".into(),
            name: "e1-implement".into(),
            runbook_path: String::new(),
            runbook_source: String::new(),
            repo: String::new(),
            base_sha: String::new(),
            integration_branch: "fleet/epics/i/e1".into(),
            state: "passed".into(),
            created_at: 0,
            updated_at: 0,
            finished_at: None,
        };
        let task = TaskRow {
            run_id: "r1".into(),
            idx: 0,
            id: "t".into(),
            state: "merged".into(),
            attempts: 2,
            failures: 1,
            not_before: 0,
            reason: None,
            commit_sha: Some("a".repeat(40)),
            merge_sha: Some("b".repeat(40)),
            started_at: None,
            finished_at: None,
        };
        let attempts = vec![
            AttemptRow {
                n: 2,
                outcome: "passed".into(),
                profile: Some("dev-b".into()),
                ..Default::default()
            },
            AttemptRow {
                n: 1,
                outcome: "checks_failed".into(),
                profile: Some("dev-a".into()),
                model: Some("m1".into()),
                ..Default::default()
            },
        ];
        let huge = "x".repeat(100_000);
        let events = vec![
            ev(
                1,
                None,
                "agent.selected",
                json!({"profile": "dev-a", "reason": "first"}),
            ),
            ev(
                2,
                Some(1),
                "task.checks_failed",
                json!({"check": "make test", "exit_code": 2, "output_tail": format!("{huge}\nFAIL: tabs")}),
            ),
            ev(
                3,
                Some(1),
                "task.retrying",
                json!({"reason": "check failed"}),
            ),
            ev(
                4,
                None,
                "attempt.swapped",
                json!({"from": "dev-a", "to": "dev-b", "reason": "kept failing"}),
            ),
            ev(5, Some(2), "agent.message", json!({"text": "hi"})),
            ev(6, Some(2), "task.merged", json!({"merge": "b".repeat(40)})),
        ];
        let t = TaskTrace {
            run: &run,
            task: &task,
            asked: "Add the login page",
            attempts: &attempts,
            events: &events,
            diff_stat: Some(" src/login.rs | 10 ++++"),
        };
        let md = render(&t);
        assert!(md.len() <= MAX_TRACE_BYTES + 1, "{}", md.len());
        for want in [
            "Add the login page",
            "`dev-a` (m1)",
            "check `make test` failed (exit 2)",
            "FAIL: tabs",
            "swapped `dev-a` for `dev-b`: kept failing",
            "retry: check failed",
            "landed (merge bbbbbbbbbbbb)",
            "src/login.rs",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        assert!(!md.contains("hi\""), "messages are not in the timeline");
        assert!(md.find("| 1 |").unwrap() < md.find("| 2 |").unwrap());
        assert_eq!(
            summary(&t),
            "t merged after 2 attempts by dev-a, dev-b; 1 failed check run(s)"
        );
    }
}
