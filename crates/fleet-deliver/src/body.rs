//! The description of a pull/merge request, in Markdown.

use std::collections::BTreeMap;

/// Everything the description tells, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullRequestSummary {
    /// What the person asked for, as they wrote it.
    pub request: String,
    /// The plan, summarised (Markdown is kept).
    pub plan: String,
    pub tasks: Vec<TaskLine>,
    pub reviews: Vec<ReviewCycle>,
    /// The commands that run the acceptance checks, in order.
    pub checks: Vec<String>,
    /// The run that produced the work, for the footer.
    pub run_id: Option<String>,
}

/// One task of the plan and how it went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLine {
    pub id: String,
    pub title: String,
    /// `passed`, `failed`, `skipped`, …
    pub status: String,
    pub attempts: u32,
    /// The agents (profiles) that played its attempts, in order, without repeats.
    pub agents: Vec<String>,
}

/// One review of the work and its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCycle {
    /// 1-based.
    pub cycle: u32,
    /// `approved`, `changes requested`, …
    pub verdict: String,
    pub summary: String,
}

/// GitHub refuses descriptions over 65,536 characters; stay well below.
const MAX_BODY_CHARS: usize = 60_000;
const MAX_REQUEST_CHARS: usize = 8_000;
const MAX_PLAN_CHARS: usize = 16_000;
const MAX_TASK_ROWS: usize = 300;

/// The Markdown description of a pull/merge request: the request (quoted), the plan, a table
/// of the tasks, the review cycles, and how to run the checks. Sections with nothing to say are
/// left out. `@name` in free text is put in code so it notifies nobody; the result stays under
/// GitHub's size limit.
pub fn pull_request_body(s: &PullRequestSummary) -> String {
    let mut out = String::new();

    let request = s.request.trim();
    if !request.is_empty() {
        out.push_str("## Request\n\n");
        for line in clip(&defuse_mentions(request), MAX_REQUEST_CHARS).lines() {
            if line.trim().is_empty() {
                out.push_str(">\n");
            } else {
                out.push_str("> ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    }

    let plan = s.plan.trim();
    if !plan.is_empty() {
        out.push_str("## Plan\n\n");
        out.push_str(&clip(&defuse_mentions(plan), MAX_PLAN_CHARS));
        out.push_str("\n\n");
    }

    if !s.tasks.is_empty() {
        out.push_str("## Tasks\n\n");
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &s.tasks {
            *by_status.entry(t.status.trim()).or_default() += 1;
        }
        let counts: Vec<String> = by_status
            .iter()
            .map(|(st, n)| format!("{n} {st}"))
            .collect();
        let attempts: u64 = s.tasks.iter().map(|t| u64::from(t.attempts)).sum();
        out.push_str(&format!(
            "{} task{} ({}), {attempts} attempt{}.\n\n",
            s.tasks.len(),
            plural(s.tasks.len()),
            counts.join(", "),
            plural(attempts as usize)
        ));
        out.push_str("| Task | Title | Status | Attempts | Agents |\n");
        out.push_str("| --- | --- | --- | ---: | --- |\n");
        for t in s.tasks.iter().take(MAX_TASK_ROWS) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&t.id),
                cell(&defuse_mentions(&t.title)),
                cell(&t.status),
                t.attempts,
                cell(&t.agents.join(", "))
            ));
        }
        if s.tasks.len() > MAX_TASK_ROWS {
            out.push_str(&format!(
                "\n… and {} more tasks.\n",
                s.tasks.len() - MAX_TASK_ROWS
            ));
        }
        out.push('\n');
    }

    if !s.reviews.is_empty() {
        out.push_str("## Review\n\n");
        for r in &s.reviews {
            out.push_str(&format!("- **Cycle {}: {}**", r.cycle, cell(&r.verdict)));
            let summary = defuse_mentions(r.summary.trim());
            let mut lines = summary.lines();
            if let Some(first) = lines.next() {
                out.push_str(" — ");
                out.push_str(first);
            }
            out.push('\n');
            for line in lines {
                if !line.trim().is_empty() {
                    out.push_str("  ");
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        out.push('\n');
    }

    let checks: Vec<&str> = s
        .checks
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    if !checks.is_empty() {
        out.push_str("## How to check\n\n");
        let fence = "`".repeat(longest_backtick_run(&checks.join("\n")).max(2) + 1);
        out.push_str(&format!("{fence}sh\n"));
        for c in &checks {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&format!("{fence}\n\n"));
    }

    match &s.run_id {
        Some(id) if !id.trim().is_empty() => out.push_str(&format!(
            "<sub>Opened by Fleet, run {}.</sub>\n",
            code(id.trim())
        )),
        _ => out.push_str("<sub>Opened by Fleet.</sub>\n"),
    }
    clip(&out, MAX_BODY_CHARS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Text safe in one table cell: no line breaks, pipes escaped.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `s` as inline code, with a fence longer than any backtick run inside it.
fn code(s: &str) -> String {
    let s = cell(s);
    let fence = "`".repeat(longest_backtick_run(&s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `@name` → `` `@name` ``, so quoting a request or a summary pings nobody. Leaves e-mail
/// addresses (a word character before the `@`) and text already in code alone.
fn defuse_mentions(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_code = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            in_code = !in_code;
        }
        let prev_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '`');
        if c == '@' && !in_code && !prev_word {
            let mut j = i + 1;
            while j < chars.len()
                && (chars[j].is_ascii_alphanumeric()
                    || chars[j] == '-'
                    || chars[j] == '/'
                    || chars[j] == '_')
            {
                j += 1;
            }
            if j > i + 1 {
                out.push('`');
                out.extend(&chars[i..j]);
                out.push('`');
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!(
            "{}\n\n… (cut: {} more characters)",
            &s[..i],
            s[i..].chars().count()
        ),
        None => s.to_string(),
    }
}
