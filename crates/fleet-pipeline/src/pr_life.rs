//! A delivered pull/merge request's life: comments are triaged (only change requests start
//! rework), Fleet answers each one it handled, the description follows every cycle, and a
//! merged or closed request ends the epic.
//!
//! Why here and not in `stages.rs`: these steps talk to the forge between stages (while the
//! epic awaits acceptance) or right after one (delivery, a plan saying "no change needed").

use crate::{EpicData, PendingReply, Pipeline, PipelineError, Result, ReviewRecord, stages};
use fleet_core::epic::{self, Outcome, Stage, Step};
use fleet_core::triage::{self, FLEET_MARKER, Verdict};
use fleet_deliver::{CommentKind, Forge, PrState, ReviewComment};
use fleet_store::{EpicRow, NewEvent, ProjectRow};
use serde_json::json;
use std::collections::BTreeMap;

fn forge_error(e: fleet_deliver::ForgeError) -> PipelineError {
    PipelineError::Other(e.to_string())
}

/// See [`Pipeline::poll_review_comments`].
pub(crate) async fn poll(p: &Pipeline, id: &str) -> Result<usize> {
    let (epic, data) = p.epic(id)?;
    p.awaiting(&epic, &data)?;
    let project = p.project(&epic.project)?;
    let Some(delivery) = data.delivery.clone() else {
        return Ok(0);
    };
    let Some(number) = delivery.number else {
        return Ok(0);
    };
    let forge = stages::forge_of(&project)?;
    match forge.state(number).await.map_err(forge_error)? {
        PrState::Open => {}
        ended => {
            end(p, epic, data, ended)?;
            return Ok(0);
        }
    }
    let comments = forge
        .review_comments(number, None)
        .await
        .map_err(forge_error)?;
    let new: Vec<ReviewComment> = comments
        .into_iter()
        .filter(|c| watermark(&delivery, c.kind).is_none_or(|s| c.id > s))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    // What no rule decides, an agent reads (before anything is saved: a crash re-reads them).
    let mut decided = BTreeMap::new();
    for c in &new {
        if rule_verdict(c).0 == Verdict::Ambiguous {
            let d = crate::triage_agent::decide(p, &epic, &project, c).await?;
            decided.insert((c.id, format!("{:?}", c.kind)), d);
        }
    }
    // The agent's run took a while: a person may have accepted or cancelled meanwhile.
    let (epic, data) = p.epic(id)?;
    p.awaiting(&epic, &data)?;
    triaged(p, epic, data, new, decided)
}

fn rule_verdict(c: &ReviewComment) -> (Verdict, &'static str) {
    triage::triage(&triage::Comment {
        author: &c.author,
        author_type: c.author_type.as_deref(),
        body: &c.body,
        review_state: c.review_state.as_deref(),
    })
}

/// The highest comment id of `kind` already read (GitHub numbers each kind separately).
fn watermark(d: &crate::Delivery, kind: CommentKind) -> Option<u64> {
    match kind {
        CommentKind::Review => d.seen_review_comment,
        CommentKind::Conversation => d.seen_conversation_comment,
        CommentKind::Verdict => d.seen_review_verdict,
    }
}

/// Records the verdict on every new comment; the change requests among them start rework.
/// Returns how many did.
fn triaged(
    p: &Pipeline,
    mut epic: EpicRow,
    mut data: EpicData,
    new: Vec<ReviewComment>,
    mut decided: BTreeMap<(u64, String), crate::triage_agent::Decision>,
) -> Result<usize> {
    let mut d = data.delivery.clone().unwrap_or_default();
    let mut events = Vec::new();
    let mut asks = Vec::new();
    for c in new {
        let slot = match c.kind {
            CommentKind::Review => &mut d.seen_review_comment,
            CommentKind::Conversation => &mut d.seen_conversation_comment,
            CommentKind::Verdict => &mut d.seen_review_verdict,
        };
        *slot = (*slot).max(Some(c.id));
        let (mut verdict, rule) = rule_verdict(&c);
        let mut by = json!("rule");
        let mut reason = serde_json::Value::Null;
        if verdict == Verdict::Ambiguous {
            let d = decided.remove(&(c.id, format!("{:?}", c.kind))).unwrap_or(
                crate::triage_agent::Decision {
                    verdict: Verdict::ChangeRequest,
                    reason: "not read by an agent: read as a change request".into(),
                    by: "default".into(),
                },
            );
            verdict = d.verdict;
            by = json!(d.by);
            reason = json!(d.reason);
        }
        // Fleet's own replies are not news to anyone.
        if verdict != Verdict::Own {
            events.push(p.emit(
                &epic,
                "pr.comment_triaged",
                json!({"comment": c.id, "author": c.author, "url": c.url,
                       "verdict": verdict.as_str(), "rule": rule, "by": by, "reason": reason,
                       "starts_rework": verdict.is_change_request()}),
            ));
        }
        if verdict.is_change_request() {
            asks.push(c);
        }
    }
    if asks.is_empty() {
        data.delivery = Some(d);
        p.save(&mut epic, &data, events)?;
        return Ok(0);
    }
    d.pending_replies = asks
        .iter()
        .map(|c| PendingReply {
            id: c.id,
            author: c.author.clone(),
            body: c.body.trim().to_string(),
            url: c.url.clone(),
        })
        .collect();
    data.delivery = Some(d);
    let n = asks.len();
    rework(p, epic, data, &asks, events)?;
    Ok(n)
}

/// The next cycle, planned from the change requests (as [`Pipeline::reject`] does for a
/// person's rejection), saved with the triage events in one transaction.
fn rework(
    p: &Pipeline,
    mut epic: EpicRow,
    mut data: EpicData,
    asks: &[ReviewComment],
    mut events: Vec<NewEvent>,
) -> Result<()> {
    let text = asks
        .iter()
        .map(|c| {
            let at = match (&c.path, c.line) {
                (Some(p), Some(l)) => format!(" on {p}:{l}"),
                (Some(p), None) => format!(" on {p}"),
                _ => String::new(),
            };
            format!("- {}{at}: {}", c.author, c.body.trim())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let machine = p.awaiting(&epic, &data)?;
    let step = epic::next(&machine, &Outcome::Reworked, &p.limits_of(&epic.project));
    data.reviews.push(ReviewRecord {
        cycle: machine.cycle,
        verdict: "pull_request_comments".into(),
        summary: text.clone(),
        bugs: vec![text.clone()],
        checks_passed: true,
    });
    data.feedback = format!(
        "People commented on the pull request and asked for changes:\n\n{text}\n\n\
         If a comment needs no change (it asks for what is already there, or only asks a \
         question), say so: write {{\"no_change\": \"the answer, for the pull request\"}} as \
         the plan instead of phases."
    );
    events.push(p.emit(
        &epic,
        "task.review_rejected",
        json!({"by": "pull_request_comments", "comment": text,
               "next": step.state.stage.as_str(), "why": step.why}),
    ));
    epic.state = step.state.stage.as_str().into();
    epic.cycle = step.state.cycle;
    data.machine = Some(step.state);
    p.save(&mut epic, &data, events)
}

/// A merged pull request is the person's acceptance: the epic is done. A closed one is a
/// cancellation. Both through the pure machine's own transitions.
fn end(p: &Pipeline, mut epic: EpicRow, mut data: EpicData, state: PrState) -> Result<()> {
    let machine = p.awaiting(&epic, &data)?;
    let url = data.delivery.as_ref().and_then(|d| d.url.clone());
    let (outcome, events) = if state == PrState::Merged {
        let why = "the pull request was merged";
        (
            Outcome::Accepted,
            vec![
                p.emit(&epic, "pr.merged", json!({"url": url})),
                p.emit(&epic, "epic.accepted", json!({"by": "pull_request_merged"})),
                p.emit(
                    &epic,
                    "task.done",
                    json!({"cycles": epic.cycle, "reason": why, "url": url}),
                ),
            ],
        )
    } else {
        let why = "the pull request was closed without merging";
        (
            Outcome::Cancel,
            vec![
                p.emit(&epic, "pr.closed", json!({"url": url})),
                p.emit(&epic, "task.cancelled", json!({"reason": why, "url": url})),
            ],
        )
    };
    let step = epic::next(&machine, &outcome, &p.limits_of(&epic.project));
    epic.state = step.state.stage.as_str().into();
    data.machine = Some(step.state);
    p.save(&mut epic, &data, events)
}

/// After a plan stage: when the planner answered "no change needed", no task runs — the epic
/// awaits acceptance again and the reason is posted on the pull request. Otherwise `step` as
/// it is.
pub(crate) async fn after_plan(
    project: &ProjectRow,
    data: &mut EpicData,
    stage: Stage,
    mut step: Step,
) -> Step {
    if stage != Stage::Plan {
        return step;
    }
    let Some(why) = data.delivery.as_mut().and_then(|d| d.no_change.take()) else {
        return step;
    };
    step.state.stage = Stage::AwaitingAcceptance;
    step.why = format!("the planner found nothing to change: {why}");
    let replies = data
        .delivery
        .as_ref()
        .map(|d| d.pending_replies.clone())
        .unwrap_or_default();
    let body = reply_text(&replies, &format!("No change needed: {why}"));
    if let Some(number) = data.delivery.as_ref().and_then(|d| d.number)
        && let Ok(forge) = stages::forge_of(project)
    {
        match forge.post_comment(number, &body).await {
            Ok(_) => {
                if let Some(d) = data.delivery.as_mut() {
                    d.pending_replies.clear();
                }
            }
            Err(e) => step
                .why
                .push_str(&format!(" (the reply could not be posted: {e})")),
        }
    }
    step
}

/// One reply answering `replies` (quoted, so each person sees which comment it answers).
fn reply_text(replies: &[PendingReply], answer: &str) -> String {
    let mut out = format!("{FLEET_MARKER}\n{answer}\n");
    for r in replies {
        let first = r.body.lines().next().unwrap_or("").trim();
        let quoted: String = first.chars().take(200).collect();
        out.push_str(&format!(
            "\n> @{} wrote: {quoted}",
            r.author.replace('@', "")
        ));
        if !r.url.is_empty() {
            out.push_str(&format!(" ([comment]({}))", r.url));
        }
    }
    out
}

/// After the pull request was opened (or found open) in a delivery: the description is
/// replaced (it tells this cycle too), and every change request this cycle worked on is
/// answered with the commit that fixed it. Returns what went wrong, if anything: a reply or
/// description that could not be written does not undo a delivery.
pub(crate) async fn after_delivery(
    forge: &Forge,
    number: u64,
    created: bool,
    body: &str,
    tip: &str,
    data: &mut EpicData,
) -> Option<String> {
    let mut problems = Vec::new();
    if !created && let Err(e) = forge.update_body(number, body).await {
        problems.push(format!("the description could not be updated: {e}"));
    }
    let replies = data
        .delivery
        .as_ref()
        .map(|d| d.pending_replies.clone())
        .unwrap_or_default();
    if !replies.is_empty() {
        let cycle = data.tasks.iter().map(|t| t.cycle).max().unwrap_or(0);
        let fixes: Vec<String> = data
            .tasks
            .iter()
            .filter(|t| t.cycle == cycle && t.state == "merged")
            .map(|t| format!("{} ({})", t.title, t.id))
            .collect();
        let short: String = tip.chars().take(12).collect();
        let answer = format!("Fixed in {short}: {}", fixes.join("; "));
        match forge
            .post_comment(number, &reply_text(&replies, &answer))
            .await
        {
            Ok(_) => {
                if let Some(d) = data.delivery.as_mut() {
                    d.pending_replies.clear();
                }
            }
            Err(e) => problems.push(format!("the reply could not be posted: {e}")),
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// What a pull request says: the plan, every task with the attempts and agents that played
/// it (read from the stage runs' attempts), every review.
pub(crate) fn summary(
    p: &Pipeline,
    epic: &EpicRow,
    data: &EpicData,
    project: &ProjectRow,
) -> Result<fleet_deliver::PullRequestSummary> {
    let mut checks: Vec<String> = Vec::new();
    for c in data
        .tasks
        .iter()
        .filter(|t| t.state == "merged")
        .flat_map(|t| t.commands.iter())
        .chain(project.checks.iter())
    {
        if !checks.contains(c) {
            checks.push(c.clone());
        }
    }
    // (run, task) -> (attempts, agents in order without repeats).
    let mut played: BTreeMap<(String, String), (u32, Vec<String>)> = BTreeMap::new();
    let runs: std::collections::BTreeSet<&String> = data
        .tasks
        .iter()
        .filter_map(|t| t.run_id.as_ref())
        .collect();
    for run in runs {
        for a in p.store.attempts(run)? {
            let e = played.entry((run.clone(), a.task_id.clone())).or_default();
            e.0 += 1;
            if let Some(who) = a.profile.filter(|w| !e.1.contains(w)) {
                e.1.push(who);
            }
        }
    }
    Ok(fleet_deliver::PullRequestSummary {
        request: epic.request.clone(),
        plan: data.plan_summary.clone(),
        tasks: data
            .tasks
            .iter()
            .map(|t| {
                let (attempts, agents) = t
                    .run_id
                    .as_ref()
                    .and_then(|r| played.get(&(r.clone(), t.id.clone())).cloned())
                    .unwrap_or_default();
                fleet_deliver::TaskLine {
                    id: t.id.clone(),
                    title: t.title.clone(),
                    status: t.state.clone(),
                    attempts,
                    agents,
                }
            })
            .collect(),
        reviews: data
            .reviews
            .iter()
            .map(|r| fleet_deliver::ReviewCycle {
                cycle: r.cycle,
                verdict: r.verdict.clone(),
                summary: r.summary.clone(),
            })
            .collect(),
        checks,
        run_id: Some(epic.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_marked_as_fleets_and_quotes_what_it_answers() {
        let replies = [PendingReply {
            id: 7,
            author: "octocat".into(),
            body: "Please add x\nand more detail".into(),
            url: "https://github.com/o/r/pull/1#discussion_r7".into(),
        }];
        let text = reply_text(&replies, "Fixed in abc: Add x (x)");
        assert!(text.starts_with(FLEET_MARKER));
        assert!(text.contains(
            "> @octocat wrote: Please add x ([comment](https://github.com/o/r/pull/1#discussion_r7))"
        ));
        // Read back, it is Fleet's own and starts nothing.
        let (verdict, _) = triage::triage(&triage::Comment {
            author: "fleet-bot",
            author_type: Some("User"),
            body: &text,
            review_state: None,
        });
        assert_eq!(verdict, Verdict::Own);
    }
}
