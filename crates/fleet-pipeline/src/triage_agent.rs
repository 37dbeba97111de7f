//! The triage agent: a pull request comment no rule of `fleet_core::triage` decides
//! ([`Verdict::Ambiguous`]) is read by an agent — the `triage` role when a profile plays it,
//! else a reviewer — who answers change request, approval or noise, with a reason. Without
//! such a profile, or when the agent gives no valid answer, the comment counts as a change
//! request (ignoring a person is worse than a cycle the planner can answer "no change").

use crate::{Pipeline, Result, stages};
use fleet_core::triage::{Verdict, agent_verdict};
use fleet_deliver::ReviewComment;
use fleet_store::{EpicRow, ProjectRow};

/// What decided an ambiguous comment.
pub(crate) struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    /// `agent:<role>`, or `default` when no agent answered.
    pub by: String,
}

const ARTIFACT: &str = "triage.json";

fn role(p: &Pipeline) -> Option<&'static str> {
    ["triage", "reviewer"]
        .into_iter()
        .find(|r| p.playable(r) && p.library.role(r).is_some())
}

fn prompt(epic: &EpicRow, c: &ReviewComment) -> String {
    let at = match (&c.path, c.line) {
        (Some(p), Some(l)) => format!(" on {p}:{l}"),
        (Some(p), None) => format!(" on {p}"),
        _ => String::new(),
    };
    format!(
        "You triage a comment left on a pull request Fleet opened for this request:\n\n{}\n\n\
         The comment, by {}{at}:\n\n> {}\n\n\
         Decide what it is:\n\
         - `change_request`: it asks (even politely or indirectly) for something to change;\n\
         - `approval`: it approves, thanks, or only acknowledges;\n\
         - `noise`: automated output, a status note, or talk not about this change.\n\n\
         Write `.fleet-out/{ARTIFACT}` as JSON: {{\"verdict\": \"change_request\" | \"approval\" | \
         \"noise\", \"reason\": \"one sentence\"}}. Do not change any project file.\n",
        epic.request,
        c.author,
        c.body.trim().replace('\n', "\n> "),
    )
}

/// Asks the triage agent about comment `c` of `epic`'s pull request.
pub(crate) async fn decide(
    p: &Pipeline,
    epic: &EpicRow,
    project: &ProjectRow,
    c: &ReviewComment,
) -> Result<Decision> {
    let fallback = |why: String| Decision {
        verdict: Verdict::ChangeRequest,
        reason: why,
        by: "default".into(),
    };
    let Some(role) = role(p) else {
        return Ok(fallback(
            "no profile plays triage or reviewer: read as a change request".into(),
        ));
    };
    let name = format!("{}-triage-{:?}-{}", epic.id, c.kind, c.id).to_lowercase();
    let check = format!(
        "grep -Eq '\"verdict\"[[:space:]]*:[[:space:]]*\"(change_request|approval|noise)\"' \
         .fleet-out/{ARTIFACT}"
    );
    let (_, text) = stages::artifact_stage(
        p,
        epic,
        project,
        &name,
        role,
        prompt(epic, c),
        ARTIFACT,
        check,
    )
    .await?;
    let answer: Option<serde_json::Value> = text.and_then(|t| serde_json::from_str(&t).ok());
    let verdict = answer
        .as_ref()
        .and_then(|a| a["verdict"].as_str())
        .and_then(agent_verdict);
    Ok(match verdict {
        Some(verdict) => Decision {
            verdict,
            reason: answer
                .as_ref()
                .and_then(|a| a["reason"].as_str())
                .unwrap_or("")
                .trim()
                .chars()
                .take(500)
                .collect(),
            by: format!("agent:{role}"),
        },
        None => fallback(format!(
            "the {role} agent gave no valid verdict: read as a change request"
        )),
    })
}
