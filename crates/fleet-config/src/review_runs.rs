//! `fleet.yaml`'s `review_runs:` section: Fleet reviews its own runs when they end.
//!
//! ```yaml
//! review_runs:
//!   after: failed   # failed (runs that did not pass) or all
//! ```
//!
//! After `fleet run` ends (and after `fleet serve` finishes working on an epic), Fleet starts
//! `fleet review-run` on it; the review never starts while the run is live.

use crate::Location;
use crate::decode::Decoder;
use crate::yaml::Node;

pub(crate) const REVIEW_RUNS_KEYS: &[&str] = &["after"];

/// Which ended runs are reviewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewAfter {
    /// Only runs that did not pass.
    Failed,
    /// Every run.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewRuns {
    pub after: ReviewAfter,
    pub location: Location,
}

impl ReviewRuns {
    /// Whether a run that ended `passed` (or not) is reviewed.
    pub fn wants(&self, passed: bool) -> bool {
        match self.after {
            ReviewAfter::All => true,
            ReviewAfter::Failed => !passed,
        }
    }
}

pub(crate) fn decode(d: &mut Decoder<'_>, node: &Node) -> Option<ReviewRuns> {
    let fields = d.fields(
        node,
        REVIEW_RUNS_KEYS,
        "in `review_runs`",
        "a mapping with `after: failed` or `after: all`",
    )?;
    let mut after = ReviewAfter::Failed;
    for f in &fields.list {
        match f.key {
            "after" => {
                let text = d.text(f.value, "after")?;
                after = match text.value.trim() {
                    "failed" => ReviewAfter::Failed,
                    "all" => ReviewAfter::All,
                    other => {
                        d.error(
                            text.at,
                            format!("`after`: expected `failed` or `all`, found {other:?}"),
                        );
                        return None;
                    }
                };
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    Some(ReviewRuns {
        after,
        location: fields.start,
    })
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use std::path::Path;

    #[test]
    fn after_is_failed_or_all_and_anything_else_is_located() {
        let p = Path::new("fleet.yaml");
        let cfg = parse_instance(p, "review_runs:\n  after: all\n").unwrap();
        assert!(cfg.review_runs.unwrap().wants(true));
        let cfg = parse_instance(p, "review_runs: {}\n").unwrap();
        let r = cfg.review_runs.unwrap();
        assert!(!r.wants(true) && r.wants(false));
        let errs = parse_instance(p, "review_runs:\n  after: sometimes\n").unwrap_err();
        assert!(
            errs[0].to_string().contains("fleet.yaml:2:10"),
            "{}",
            errs[0]
        );
        assert!(parse_instance(p, "review_runs:\n  before: all\n").is_err());
        assert_eq!(parse_instance(p, "agents: {}\n").unwrap().review_runs, None);
    }
}
