//! The bug report a QA agent returns after testing the deployed app (`.fleet-out/qa.json`),
//! and its validation. `docs/qa.schema.json` describes the same shape; `tests/qa.rs` keeps
//! them in step.
//!
//! Why a shape of its own and not the review's: QA tests a running system, not a diff. A
//! bug is a user's journey (steps, what was expected, what happened, on which page), which the
//! planner turns into fix tasks for agents who never saw the app running.

use serde::{Deserialize, Serialize};

/// What a QA agent returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaReport {
    pub verdict: QaVerdict,
    /// What was tested and the result.
    pub summary: String,
    /// The test cases tried (journeys, edge cases), passed or not.
    #[serde(default)]
    pub tested: Vec<String>,
    #[serde(default)]
    pub bugs: Vec<QaBug>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaVerdict {
    /// The deployed app does what the request asks; no real bug found.
    Pass,
    /// At least one bug: the next cycle plans its fix.
    Fail,
}

/// One problem found in the running app, reproducible by someone who was not there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaBug {
    pub title: String,
    /// How to reproduce it, from the app's address.
    pub steps: String,
    pub expected: String,
    pub actual: String,
    /// The page or endpoint where it shows (a path or URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
}

/// One thing wrong with a report, at a JSON path (`bugs[0].steps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaReportError {
    pub path: String,
    pub problem: &'static str,
}

impl std::fmt::Display for QaReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

const BLANK: &str = "expected a non-empty text, found an empty or blank one";

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Validates a QA report: a `fail` lists at least one bug, a `pass` lists none (a bug found is
/// a bug to fix), and every text a fixer needs is there.
pub fn validate_qa_report(r: &QaReport) -> Result<(), Vec<QaReportError>> {
    let mut errors = Vec::new();
    let mut err = |path: String, problem: &'static str| {
        errors.push(QaReportError { path, problem });
    };
    if is_blank(&r.summary) {
        err("summary".into(), BLANK);
    }
    match (r.verdict, r.bugs.is_empty()) {
        (QaVerdict::Fail, true) => err(
            "bugs".into(),
            "verdict is fail but no bug is listed; expected at least one bug",
        ),
        (QaVerdict::Pass, false) => err(
            "verdict".into(),
            "verdict is pass but bugs are listed; a real bug means fail, a remark goes in the summary",
        ),
        _ => {}
    }
    for (i, t) in r.tested.iter().enumerate() {
        if is_blank(t) {
            err(format!("tested[{i}]"), BLANK);
        }
    }
    for (i, b) in r.bugs.iter().enumerate() {
        for (field, text) in [
            ("title", &b.title),
            ("steps", &b.steps),
            ("expected", &b.expected),
            ("actual", &b.actual),
        ] {
            if is_blank(text) {
                err(format!("bugs[{i}].{field}"), BLANK);
            }
        }
        if b.page.as_deref().is_some_and(is_blank) {
            err(format!("bugs[{i}].page"), BLANK);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl QaBug {
    /// The bug as one line of a bug report for the planner.
    pub fn line(&self) -> String {
        let page = self
            .page
            .as_deref()
            .map(|p| format!(" (at {p})"))
            .unwrap_or_default();
        format!(
            "{}{page}: steps: {}; expected: {}; actual: {}",
            self.title, self.steps, self.expected, self.actual
        )
    }
}
