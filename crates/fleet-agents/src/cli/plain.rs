//! The parser for CLIs that print plain text: lines are the agent's messages; the exit code
//! decides, with error words classifying a failure.

use crate::outcome::{Evidence, classify_text};
use crate::{AgentEvent, ErrorClass, Outcome, OutcomeClass, Parser, ProcessEnd};

#[derive(Default)]
pub struct PlainText {
    ev: Evidence,
    lines: usize,
}

/// Words that mark a line as an error report rather than chatter.
fn looks_like_error(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    [
        "error",
        "exception",
        "unauthorized",
        "rate limit",
        "ratelimit",
        "quota",
        "429",
        "401",
        "overloaded",
    ]
    .iter()
    .any(|w| l.contains(w))
}

impl Parser for PlainText {
    fn stdout_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let t = line.trim();
        if t.is_empty() {
            return Vec::new();
        }
        self.lines += 1;
        if looks_like_error(t) {
            let class = classify_text(t);
            if class != ErrorClass::Agent {
                self.ev.error(class, t);
            }
        }
        vec![AgentEvent::Message {
            text: t.chars().take(2000).collect(),
        }]
    }

    fn stderr_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.ev.stderr(line);
        let t = line.trim();
        if looks_like_error(t) {
            let class = classify_text(t);
            if class != ErrorClass::Agent {
                self.ev.error(class, t);
                return vec![AgentEvent::Error {
                    class,
                    message: t.into(),
                }];
            }
        }
        Vec::new()
    }

    fn finish(&mut self, end: &ProcessEnd) -> Outcome {
        if end.exit_code == Some(0) && !end.timed_out && !end.stalled {
            // Exit 0 is success for a plain CLI, unless it said it hit a vendor limit.
            if self.ev.errors.is_empty() {
                return Outcome::new(OutcomeClass::Succeeded);
            }
        }
        self.ev.classify(end)
    }
}
