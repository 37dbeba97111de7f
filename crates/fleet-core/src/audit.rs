//! What an audit found, and which findings become new requests.
//!
//! An auditor agent returns findings (title, severity, evidence with paths, suggested acceptance
//! criteria). Each becomes a submitted request unless the fleet already knows it: a similar
//! request is still open, or a similar one was rejected by a person within the dedupe window
//! (people said no; asking again every night is noise). Findings of one audit that repeat each
//! other count once.
//!
//! Similarity is the Jaccard index of the findings' significant words (lower-cased, stop words
//! and very short words dropped) plus their evidence paths, so "SQL injection in
//! src/db.rs query builder" and "Possible SQL injection: src/db.rs builds queries by string
//! concatenation" meet, while two different problems in one file do not.
//!
//! Pure: no IO, no clock (`now` is passed in).

use std::collections::BTreeSet;

use crate::Millis;

/// How serious a finding is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// One piece of evidence: where, and what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub path: String,
    pub detail: String,
}

/// One problem an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub title: String,
    pub severity: Severity,
    pub evidence: Vec<Evidence>,
    pub acceptance: Vec<String>,
}

/// A request the fleet already has, as the dedupe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRequest {
    pub id: String,
    /// The request's text (for an audit's request: the finding's title and evidence).
    pub text: String,
    pub standing: Standing,
}

/// Where a known request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not finished: submitted, in work, blocked or awaiting acceptance.
    Open,
    /// A person rejected or cancelled it at this time.
    Rejected { at: Millis },
    /// Delivered and accepted, or otherwise closed: a new finding like it is a regression and
    /// is submitted again.
    Closed,
}

/// What becomes of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Becomes a new request.
    Submit,
    /// Like the open request `id`: dropped.
    LikeOpen { id: String },
    /// Like the request `id` a person rejected within the window: dropped.
    RecentlyRejected { id: String },
    /// Like an earlier finding of the same audit (its index): dropped.
    Repeats { index: usize },
}

/// Two texts at least this similar are the same problem.
pub const SIMILAR: f64 = 0.5;

const STOP_WORDS: &[&str] = &[
    "the",
    "and",
    "for",
    "with",
    "that",
    "this",
    "from",
    "into",
    "are",
    "was",
    "were",
    "not",
    "but",
    "has",
    "have",
    "had",
    "its",
    "can",
    "may",
    "should",
    "could",
    "would",
    "when",
    "then",
    "than",
    "there",
    "their",
    "which",
    "while",
    "where",
    "what",
    "who",
    "all",
    "any",
    "some",
    "one",
    "per",
    "via",
    "does",
    "did",
    "use",
    "uses",
    "used",
    "using",
    "possible",
    "potential",
];

/// The significant words of a text: lower-cased alphanumeric runs (paths kept whole) of at
/// least three characters, minus stop words.
pub fn significant_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for raw in text.split(|c: char| c.is_whitespace() || ",;:()[]{}\"'`!?".contains(c)) {
        let raw = raw.trim_matches(|c: char| c == '.' || c == '-');
        let lower = raw.to_lowercase();
        if lower.contains('/') {
            words.insert(lower.clone());
        }
        for word in lower.split(|c: char| !c.is_alphanumeric()) {
            if word.chars().count() >= 3 && !STOP_WORDS.contains(&word) {
                words.insert(word.to_string());
            }
        }
    }
    words
}

/// Jaccard similarity of two texts' significant words: 1 for the same words, 0 for none shared
/// (or when either has none).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (significant_words(a), significant_words(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

impl Finding {
    /// The text a finding is compared by (and the start of the request it becomes).
    pub fn summary(&self) -> String {
        let mut text = self.title.clone();
        for evidence in &self.evidence {
            text.push(' ');
            text.push_str(&evidence.path);
        }
        text
    }
}

/// Decides each finding's fate, in order. `window` is how long a person's rejection keeps a
/// similar finding from coming back.
pub fn dispose(
    findings: &[Finding],
    known: &[KnownRequest],
    now: Millis,
    window: Millis,
) -> Vec<Disposition> {
    let summaries: Vec<String> = findings.iter().map(Finding::summary).collect();
    summaries
        .iter()
        .enumerate()
        .map(|(index, summary)| {
            if let Some(earlier) =
                (0..index).find(|&e| similarity(&summaries[e], summary) >= SIMILAR)
            {
                return Disposition::Repeats { index: earlier };
            }
            let like = |request: &&KnownRequest| similarity(&request.text, summary) >= SIMILAR;
            if let Some(open) = known
                .iter()
                .filter(like)
                .find(|r| r.standing == Standing::Open)
            {
                return Disposition::LikeOpen {
                    id: open.id.clone(),
                };
            }
            let recent = known.iter().filter(like).find(|r| match r.standing {
                Standing::Rejected { at } => now.saturating_sub(at) <= window,
                _ => false,
            });
            match recent {
                Some(rejected) => Disposition::RecentlyRejected {
                    id: rejected.id.clone(),
                },
                None => Disposition::Submit,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 24 * 3600 * 1000;

    fn finding(title: &str, path: &str) -> Finding {
        Finding {
            title: title.into(),
            severity: Severity::High,
            evidence: vec![Evidence {
                path: path.into(),
                detail: String::new(),
            }],
            acceptance: vec![],
        }
    }

    #[test]
    fn same_problem_in_other_words_is_similar_and_different_problems_are_not() {
        let a = "SQL injection in src/db.rs query builder";
        let b = "SQL injection: src/db.rs builds the query by concatenation";
        let c = "Missing timeout on HTTP client in src/net.rs";
        assert!(similarity(a, b) >= SIMILAR, "{}", similarity(a, b));
        assert!(similarity(a, c) < SIMILAR, "{}", similarity(a, c));
        assert_eq!(similarity("", ""), 0.0);
    }

    #[test]
    fn open_and_recently_rejected_lookalikes_are_dropped() {
        let findings = vec![
            finding("SQL injection in query builder", "src/db.rs"),
            finding("Hard-coded password in config loader", "src/config.rs"),
            finding("Secrets written to the debug log", "src/log.rs"),
            finding("Unbounded upload size in handler", "src/upload.rs"),
            finding("SQL injection in the query builder", "src/db.rs"),
        ];
        let known = vec![
            KnownRequest {
                id: "e1".into(),
                text: "Hard-coded password in config loader src/config.rs".into(),
                standing: Standing::Open,
            },
            KnownRequest {
                id: "e2".into(),
                text: "Secrets written to debug log src/log.rs".into(),
                standing: Standing::Rejected { at: 10 * DAY },
            },
            KnownRequest {
                id: "e3".into(),
                text: "Unbounded upload size in handler src/upload.rs".into(),
                standing: Standing::Rejected { at: DAY },
            },
        ];
        let verdicts = dispose(&findings, &known, 12 * DAY, 7 * DAY);
        assert_eq!(
            verdicts,
            vec![
                Disposition::Submit,
                Disposition::LikeOpen { id: "e1".into() },
                Disposition::RecentlyRejected { id: "e2".into() },
                Disposition::Submit,
                Disposition::Repeats { index: 0 },
            ]
        );
    }
}
