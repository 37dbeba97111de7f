//! An epic's decision log: how it was routed, what was planned, which agents were swapped and
//! why, what reviews said, what people answered, what was delivered — Markdown rendered from
//! the epic's row and events (and the swaps of its stage runs). Pure: the caller reads the
//! rows, redacts and writes.

use crate::trace::cut;
use fleet_store::{EpicRow, Event};
use serde_json::Value;

/// Longest decision log written.
pub const MAX_DECISIONS_BYTES: usize = 32 * 1024;

/// Where an epic's decision log lives under the state directory (`.fleet/`).
pub fn relative_path(epic: &str) -> String {
    format!("decisions/{epic}.md")
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn one_line(x: &str, max: usize) -> String {
    cut(x.trim(), max).replace('\n', " ")
}

/// One decision per event that records one; `None` for bookkeeping.
fn decision(e: &Event) -> Option<String> {
    let d = &e.data;
    Some(match e.kind.as_str() {
        "task.created" => format!(
            "request filed; routed as `{}` (roles {})",
            match s(d, "intent") {
                i if i.is_empty() => "default".into(),
                i => i,
            },
            one_line(&d["roles"].to_string(), 200)
        ),
        "epic.routed" => format!(
            "routed by {} (`{}`): roles {}{}",
            s(d, "by"),
            s(d, "profile"),
            one_line(&d["roles"].to_string(), 200),
            match s(d, "why") {
                w if w.is_empty() => String::new(),
                w => format!(" — {w}"),
            }
        ),
        "epic.stage_started" => format!("{} started (cycle {})", s(d, "stage"), s(d, "cycle")),
        "epic.stage_finished" => format!(
            "{} ended {}: {}{}",
            s(d, "stage"),
            s(d, "outcome"),
            one_line(&s(d, "detail"), 400),
            match s(d, "next") {
                n if n.is_empty() => String::new(),
                n => format!(" → next: {n}"),
            }
        ),
        "attempt.swapped" => format!(
            "swapped `{}` for `{}` on task {}: {}",
            s(d, "from"),
            s(d, "to"),
            e.task.as_deref().unwrap_or("?"),
            one_line(&s(d, "reason"), 300)
        ),
        "task.review_rejected" => {
            let mut x = format!(
                "review rejected{}",
                match s(d, "by") {
                    b if b.is_empty() => String::new(),
                    b => format!(" by {b}"),
                }
            );
            for key in ["comment", "why"] {
                let v = s(d, key);
                if !v.is_empty() {
                    x.push_str(&format!(": {}", one_line(&v, 400)));
                }
            }
            if let Some(bugs) = d.get("bugs").and_then(Value::as_array) {
                for b in bugs.iter().take(10) {
                    x.push_str(&format!(
                        "\n  - bug: {}",
                        one_line(b.as_str().unwrap_or(&b.to_string()), 300)
                    ));
                }
            }
            x
        }
        "task.blocked" => format!(
            "blocked at {}: asked a person: {}",
            s(d, "stage"),
            one_line(&s(d, "question"), 400)
        ),
        "task.unblocked" => format!("a person answered: {}", one_line(&d.to_string(), 400)),
        "task.awaiting_acceptance" => {
            let del = &d["delivery"];
            format!(
                "delivered ({}) on branch `{}`{}",
                match s(del, "kind") {
                    k if k.is_empty() => "branch".into(),
                    k => k,
                },
                s(d, "branch"),
                match s(del, "url") {
                    u if u.is_empty() => String::new(),
                    u => format!(": {u}"),
                }
            )
        }
        "epic.accepted" => "accepted".into(),
        "task.done" => "done".into(),
        "task.failed" => format!("failed: {}", one_line(&s(d, "reason"), 400)),
        "task.cancelled" => "cancelled".into(),
        "epic.qa_passed" => "QA passed".into(),
        "task.qa_failed" => format!("QA failed: {}", one_line(&d.to_string(), 400)),
        "epic.deploy_handed_to_devops" => "the deploy kept failing: handed to DevOps".into(),
        _ => return None,
    })
}

/// The decision log as Markdown, at most [`MAX_DECISIONS_BYTES`]: `events` are the epic's
/// own and those of its stage runs (swaps), in any order.
pub fn render(epic: &EpicRow, events: &[Event]) -> String {
    let mut out = format!(
        "# Decision log: epic `{}` (project `{}`)\n\nState: **{}**, cycle {}, branch `{}`.\n\n\
         ## The request\n\n{}\n",
        epic.id,
        epic.project,
        epic.state,
        epic.cycle.max(1),
        epic.branch,
        cut(epic.request.trim(), 2000)
    );
    let data = &epic.data;
    let routed = s(data, "routed_by");
    if !routed.is_empty() {
        out.push_str(&format!(
            "\n## Routing\n\nBy {routed}{}: intent `{}`, roles {}.\n",
            match s(data, "matched") {
                m if m.is_empty() => String::new(),
                m => format!(" (matched {m:?})"),
            },
            epic.intent.as_deref().unwrap_or("default"),
            epic.roles.join(", ")
        ));
    }
    let plan = s(data, "plan_summary");
    if !plan.is_empty() {
        out.push_str(&format!("\n## The plan\n\n{}\n", cut(plan.trim(), 3000)));
        if let Some(tasks) = data.get("tasks").and_then(Value::as_array) {
            out.push('\n');
            for t in tasks.iter().take(60) {
                out.push_str(&format!(
                    "- `{}` (cycle {}, {}, {}): {}\n",
                    s(t, "id"),
                    s(t, "cycle"),
                    s(t, "role"),
                    s(t, "state"),
                    one_line(&s(t, "title"), 160)
                ));
            }
        }
    }
    if let Some(reviews) = data
        .get("reviews")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    {
        out.push_str("\n## Reviews\n\n");
        for r in reviews {
            out.push_str(&format!(
                "- cycle {}: {} — {}\n",
                s(r, "cycle"),
                s(r, "verdict"),
                one_line(&s(r, "summary"), 400)
            ));
        }
    }
    if let Some(answers) = data
        .get("answers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        out.push_str("\n## Answers from people\n\n");
        for a in answers {
            out.push_str(&format!(
                "- Asked ({} stage): {}\n  Answered: {}\n",
                s(a, "stage"),
                one_line(&s(a, "question"), 400),
                one_line(&s(a, "answer"), 400)
            ));
        }
    }
    if let Some(d) = data.get("delivery").filter(|d| !d.is_null()) {
        out.push_str(&format!(
            "\n## Delivery\n\n{}{}\n",
            match s(d, "kind") {
                k if k.is_empty() => "branch".into(),
                k => k,
            },
            match s(d, "url") {
                u if u.is_empty() => String::new(),
                u => format!(": {u}"),
            }
        ));
    }
    out.push_str("\n## Decisions, in order\n\n");
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| (e.at, e.seq));
    for e in events {
        if let Some(line) = decision(e) {
            out.push_str(&format!("- {line}\n"));
        }
    }
    if out.len() > MAX_DECISIONS_BYTES {
        out = cut(&out, MAX_DECISIONS_BYTES);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routing_plan_swaps_reviews_answers_and_delivery_are_logged_in_order() {
        let epic = EpicRow {
            id: "e1".into(),
            project: "shop".into(),
            request: "Add a login page".into(),
            state: "awaiting_acceptance".into(),
            cycle: 2,
            branch: "fleet/epics/i/e1".into(),
            intent: Some("feature".into()),
            roles: vec!["developer".into()],
            data: json!({"routed_by": "rule", "matched": "login", "plan_summary": "two tasks",
                "tasks": [{"id": "a", "cycle": 1, "role": "developer", "state": "merged", "title": "A"}],
                "reviews": [{"cycle": 1, "verdict": "reject", "summary": "no tests"}],
                "answers": [{"stage": "plan", "question": "Which DB?", "answer": "Postgres"}],
                "delivery": {"kind": "pull_request", "url": "http://pr/1"}}),
            ..EpicRow::default()
        };
        let ev = |seq: u64, kind: &str, data: Value| Event {
            seq,
            at: seq as i64,
            run_id: "e1".into(),
            task: Some("e1".into()),
            attempt: None,
            kind: kind.into(),
            data,
        };
        let events = vec![
            ev(
                3,
                "task.review_rejected",
                json!({"cycle": 1, "bugs": ["no tests"]}),
            ),
            ev(
                1,
                "epic.stage_started",
                json!({"stage": "plan", "cycle": 1}),
            ),
            ev(
                2,
                "attempt.swapped",
                json!({"from": "dev-a", "to": "dev-b", "reason": "stalled"}),
            ),
            ev(4, "agent.message", json!({"text": "noise"})),
        ];
        let md = render(&epic, &events);
        for want in [
            "By rule (matched \"login\"): intent `feature`",
            "## The plan\n\ntwo tasks",
            "cycle 1: reject — no tests",
            "Asked (plan stage): Which DB?\n  Answered: Postgres",
            "pull_request: http://pr/1",
            "swapped `dev-a` for `dev-b` on task e1: stalled",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        assert!(md.find("plan started").unwrap() < md.find("swapped").unwrap());
        assert!(md.find("swapped").unwrap() < md.find("review rejected").unwrap());
        assert!(!md.contains("noise"));
    }
}
