//! The epic's document: what the pipeline stores in an epic's `data` column (its machine, plan,
//! reviews, delivery, answers, QA reports), and what every read model shows of it. Here, below
//! both, so the CLI's and the server's views read the pipeline's document without depending on
//! the pipeline.

use crate::epic::{EpicState, Stage};
use serde::{Deserialize, Serialize};

/// One task of the epic's plan, across cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpicTask {
    pub id: String,
    pub phase: String,
    pub title: String,
    pub role: String,
    pub description: String,
    pub depends_on: Vec<String>,
    pub commands: Vec<String>,
    pub statements: Vec<String>,
    pub cycle: u32,
    /// `planned`, then the engine's final state (`merged`, `failed`, `skipped`).
    pub state: String,
    pub run_id: Option<String>,
    pub reason: Option<String>,
}

/// One review (or acceptance) verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReviewRecord {
    pub cycle: u32,
    /// `approve`, `reject`, or `rejected_by_person`.
    pub verdict: String,
    pub summary: String,
    pub bugs: Vec<String>,
    /// Whether Fleet's own run of every acceptance command passed.
    pub checks_passed: bool,
}

/// What was delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delivery {
    pub kind: String,
    pub url: Option<String>,
    pub number: Option<u64>,
    pub pushed: Option<String>,
    /// Highest review-comment id already turned into rework, per comment kind.
    pub seen_review_comment: Option<u64>,
    pub seen_conversation_comment: Option<u64>,
    /// Highest review (verdict) id read: GitHub numbers reviews on their own.
    pub seen_review_verdict: Option<u64>,
    /// Change requests the current cycle works on; answered on the pull request after it.
    pub pending_replies: Vec<PendingReply>,
    /// The planner's "no change needed" answer, until the drive acts on it.
    pub no_change: Option<String>,
}

/// A change request being worked on: answered on the pull request once its cycle ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PendingReply {
    pub id: u64,
    pub author: String,
    pub body: String,
    pub url: String,
}

/// One QA run on the deployed app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QaRecord {
    pub cycle: u32,
    pub url: String,
    /// `pass` or `fail`.
    pub verdict: String,
    pub summary: String,
    pub bugs: Vec<String>,
    /// Fleet's own rendering of the page (headless chromium), when the project asks for it.
    pub dom: Option<String>,
    pub screenshot: Option<String>,
}

/// The epic's data column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpicData {
    pub machine: Option<EpicState>,
    pub plan_summary: String,
    pub architecture: String,
    pub tasks: Vec<EpicTask>,
    pub reviews: Vec<ReviewRecord>,
    /// What the next plan must address (review bugs, a person's comment, failed tasks).
    pub feedback: String,
    pub delivery: Option<Delivery>,
    /// How the request was routed (IMR).
    pub routed_by: String,
    pub matched: Option<String>,
    /// The classifier agent was asked (when no rule matched and one is configured).
    pub classified: bool,
    /// A person's answers to the questions a blocked epic asked; they join the request every
    /// later agent reads.
    pub answers: Vec<Answer>,
    /// Deploys: QA's reports on the deployed app, one per QA run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub qa: Vec<QaRecord>,
}

/// A question Fleet asked about an epic, and what a person answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Answer {
    pub stage: String,
    pub question: String,
    pub answer: String,
}

/// An epic's document that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

/// Epic `id`'s document, read loudly from whatever holds it (the store's JSON column): a
/// document Fleet cannot read is never replaced by an empty default (accept, reject or cancel
/// would then write that over the stored plan, reviews and delivery).
pub fn decode<'de, D: serde::Deserializer<'de>>(id: &str, doc: D) -> Result<EpicData, Unreadable> {
    EpicData::deserialize(doc).map_err(|e| {
        Unreadable(format!(
            "epic {id}: its stored data cannot be read ({e}); nothing was changed"
        ))
    })
}

impl EpicData {
    /// The question a blocked epic asks.
    pub fn blocked_question(&self) -> Option<&str> {
        let blocked = self.machine.as_ref()?.blocked.as_ref()?;
        Some(&blocked.question)
    }
}

/// Why the epic stands where it does, for lists and details: the question of a blocked epic,
/// the detail of the last stage of a failed one (`state`: the epic's).
pub fn reason(
    state: &str,
    blocked_question: Option<&str>,
    last_stage_detail: Option<&str>,
) -> Option<String> {
    let failed = (state == Stage::Failed.as_str()).then_some(last_stage_detail);
    blocked_question.or(failed.flatten()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epic::{Blocked, EpicState};

    #[test]
    fn an_unreadable_document_is_an_error_naming_the_epic_never_an_empty_one() {
        let doc = serde_json::json!({"tasks": "not a list"});
        let err = decode("e7", &doc).unwrap_err().to_string();
        assert!(
            err.starts_with("epic e7: its stored data cannot be read ("),
            "{err}"
        );
        assert!(err.ends_with("nothing was changed"), "{err}");
        let ok = decode("e7", serde_json::json!({"plan_summary": "x"})).unwrap();
        assert_eq!(ok.plan_summary, "x");
    }

    #[test]
    fn the_reason_is_a_blocked_epics_question_or_a_failed_ones_last_detail() {
        let mut data = EpicData::default();
        let q = data.blocked_question();
        assert_eq!(
            reason("failed", q, Some("over budget")).as_deref(),
            Some("over budget")
        );
        assert_eq!(reason("implement", q, Some("detail")), None);
        let mut machine = EpicState::new(true, false);
        machine.blocked = Some(Blocked {
            at: Stage::Plan,
            question: "which database?".into(),
        });
        data.machine = Some(machine);
        let q = data.blocked_question();
        assert_eq!(
            reason("blocked", q, None).as_deref(),
            Some("which database?")
        );
    }
}
