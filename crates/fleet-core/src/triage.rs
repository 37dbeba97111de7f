//! Triage of a comment left on a delivered pull/merge request: does it ask for a change?
//!
//! Only a change request starts rework. Approvals, thanks and the noise of bots and CI are
//! recorded and ignored — otherwise "LGTM, thanks! Merging now." would start a new cycle, and
//! under `fleet serve` a CI bot commenting on every push would loop until the cycle limit.
//!
//! # The rules, in order (the first that applies decides)
//! 1. **Fleet's own** — the body carries [`FLEET_MARKER`] (every reply Fleet posts does):
//!    [`Verdict::Own`].
//! 2. **Bot** — the author is a bot: GitHub's user type `Bot`, a login ending in `[bot]` or
//!    `-bot`/`_bot`, or one of [`KNOWN_BOTS`] (CI, coverage, dependency and review services):
//!    [`Verdict::Bot`].
//! 3. **Review state** — a review whose state is `APPROVED` (GitHub) is [`Verdict::Approval`]
//!    unless its text asks for a change (rule 5); `CHANGES_REQUESTED` is always a
//!    [`Verdict::ChangeRequest`].
//! 4. **CI noise** — a body that is a CI/coverage/deployment report ([`CI_PATTERNS`]):
//!    [`Verdict::Bot`], whoever posted it.
//! 5. **Change request** — anything asking for a change: an imperative or request word
//!    ([`CHANGE_WORDS`]: "please", "fix", "add", "should", "can you", "nit", …), a question
//!    mark, or a suggestion block: [`Verdict::ChangeRequest`].
//! 6. **Approval or thanks** — what is left is approval/thanks when it is short (at most
//!    [`SHORT_WORDS`] words) and says so ([`APPROVAL_WORDS`]: "lgtm", "looks good", "thanks",
//!    "merging", 👍, 🎉, …), or empty: [`Verdict::Approval`].
//! 7. **Anything else** no rule decides: [`Verdict::Ambiguous`]. The pipeline hands it to a
//!    triage agent (the `triage` role, else a reviewer) whose answer ([`agent_verdict`]) decides;
//!    without one it is a change request — ignoring a person is worse than a cycle the
//!    planner can answer with "no change needed".
//!
//! Pure: no IO, no clock; matching is on lower-cased words, so "LGTM!" and "lgtm" agree.

/// Marks a comment Fleet posted, so reading it back never triggers anything.
pub const FLEET_MARKER: &str = "<!-- fleet:reply -->";

/// Logins of well-known bots that do not carry a `[bot]` suffix on every forge.
pub const KNOWN_BOTS: &[&str] = &[
    "dependabot",
    "renovate",
    "codecov",
    "coveralls",
    "github-actions",
    "gitlab-bot",
    "sonarcloud",
    "sonarqubecloud",
    "netlify",
    "vercel",
    "snyk-bot",
    "mergify",
    "greenkeeper",
    "travis-ci",
    "circleci",
    "ghost",
];

/// Phrases of CI, coverage, dependency and deployment reports.
pub const CI_PATTERNS: &[&str] = &[
    "codecov report",
    "coverage report",
    "coverage increased",
    "coverage decreased",
    "build succeeded",
    "build failed",
    "pipeline succeeded",
    "pipeline failed",
    "all checks have passed",
    "deploy preview",
    "successfully deployed",
    "bumps ",
    "dependabot",
    "quality gate",
];

/// Words and phrases that ask for a change.
pub const CHANGE_WORDS: &[&str] = &[
    "please",
    "pls",
    "fix",
    "add",
    "remove",
    "delete",
    "rename",
    "change",
    "update",
    "replace",
    "move",
    "should",
    "shouldn't",
    "must",
    "need",
    "needs",
    "missing",
    "instead",
    "wrong",
    "broken",
    "bug",
    "fails",
    "failing",
    "can you",
    "could you",
    "would you",
    "why",
    "nit",
    "typo",
    "todo",
    "don't",
    "do not",
    "avoid",
    "use",
    "```suggestion",
];

/// Words and phrases of approval and thanks.
pub const APPROVAL_WORDS: &[&str] = &[
    "lgtm",
    "looks good",
    "look good",
    "looks great",
    "approved",
    "approve",
    "ship it",
    "thanks",
    "thank you",
    "thx",
    "ty",
    "merging",
    "merged",
    "great",
    "nice",
    "perfect",
    "awesome",
    "+1",
    "👍",
    "🎉",
    "🚀",
    "✅",
    "❤️",
];

/// An approval or thanks is short; a long comment is read as content.
pub const SHORT_WORDS: usize = 12;

/// What a comment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Asks for a change: starts rework.
    ChangeRequest,
    /// Approval or thanks: recorded, ignored.
    Approval,
    /// A bot's or CI's comment: recorded, ignored.
    Bot,
    /// A reply Fleet posted itself.
    Own,
    /// No rule decides: an agent reads it.
    Ambiguous,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::ChangeRequest => "change_request",
            Verdict::Approval => "approval",
            Verdict::Bot => "bot",
            Verdict::Own => "own",
            Verdict::Ambiguous => "ambiguous",
        }
    }

    /// Whether the comment starts rework.
    pub fn is_change_request(self) -> bool {
        self == Verdict::ChangeRequest
    }
}

/// A comment as triage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comment<'a> {
    pub author: &'a str,
    /// GitHub's `user.type` (`User`, `Bot`, `Organization`) when known.
    pub author_type: Option<&'a str>,
    pub body: &'a str,
    /// A review's state (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) when it is one.
    pub review_state: Option<&'a str>,
}

/// The verdict on `c`, and the rule (its number in the module docs) that decided it.
pub fn triage(c: &Comment<'_>) -> (Verdict, &'static str) {
    let body = c.body.trim();
    let lower = body.to_lowercase();
    if body.contains(FLEET_MARKER) {
        return (Verdict::Own, "1: posted by Fleet");
    }
    if is_bot(c.author, c.author_type) {
        return (Verdict::Bot, "2: the author is a bot");
    }
    let state = c.review_state.map(str::to_ascii_uppercase);
    if state.as_deref() == Some("CHANGES_REQUESTED") {
        return (Verdict::ChangeRequest, "3: the review requests changes");
    }
    let asks = asks_for_change(&lower);
    if state.as_deref() == Some("APPROVED") && !asks {
        return (Verdict::Approval, "3: the review approves");
    }
    if CI_PATTERNS.iter().any(|p| lower.contains(p)) {
        return (Verdict::Bot, "4: a CI or coverage report");
    }
    if asks {
        return (Verdict::ChangeRequest, "5: it asks for a change");
    }
    if lower.is_empty() {
        return (Verdict::Approval, "6: an empty comment");
    }
    if words(&lower).len() <= SHORT_WORDS && APPROVAL_WORDS.iter().any(|w| has(&lower, w)) {
        return (Verdict::Approval, "6: approval or thanks");
    }
    (
        Verdict::Ambiguous,
        "7: no rule decides: a triage agent reads it",
    )
}

/// A triage agent's answer (`change_request`, `approval` or `noise`, any case, surrounding
/// blanks ignored) as a verdict; `None` for anything else.
pub fn agent_verdict(answer: &str) -> Option<Verdict> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "change_request" => Some(Verdict::ChangeRequest),
        "approval" => Some(Verdict::Approval),
        "noise" => Some(Verdict::Bot),
        _ => None,
    }
}

/// Rule 2: whether `login` (of type `user_type`) is a bot.
pub fn is_bot(login: &str, user_type: Option<&str>) -> bool {
    let l = login.trim().to_ascii_lowercase();
    user_type.is_some_and(|t| t.eq_ignore_ascii_case("bot"))
        || l.ends_with("[bot]")
        || l.ends_with("-bot")
        || l.ends_with("_bot")
        || KNOWN_BOTS.contains(&l.as_str())
}

fn asks_for_change(lower: &str) -> bool {
    lower.contains('?') || CHANGE_WORDS.iter().any(|w| has(lower, w))
}

/// The words of `s`: runs of letters, digits and apostrophes.
fn words(s: &str) -> Vec<&str> {
    s.split(|ch: char| !(ch.is_alphanumeric() || ch == '\''))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `needle` occurs in `hay` on word boundaries (a needle that is not alphanumeric at
/// an end, like an emoji or "+1", needs no boundary there). "add" is not found in "address".
fn has(hay: &str, needle: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '\'';
    let (first, last) = match (needle.chars().next(), needle.chars().last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return false,
    };
    hay.match_indices(needle).any(|(i, m)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + m.len()..].chars().next();
        (!word(first) || before.is_none_or(|b| !word(b)))
            && (!word(last) || after.is_none_or(|a| !word(a)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(author: &str, body: &str) -> Verdict {
        triage(&Comment {
            author,
            author_type: None,
            body,
            review_state: None,
        })
        .0
    }

    #[test]
    fn approvals_and_thanks_start_nothing() {
        for body in [
            "LGTM, thanks! Merging now.",
            "lgtm",
            "Looks good to me 👍",
            "Thanks!",
            "👍",
            "+1",
            "Ship it 🚀",
            "Thank you, merged.",
            "",
        ] {
            assert_eq!(of("octocat", body), Verdict::Approval, "{body:?}");
        }
    }

    #[test]
    fn bots_and_ci_are_noise() {
        assert_eq!(of("dependabot[bot]", "Please fix this"), Verdict::Bot);
        assert_eq!(of("codecov", "anything"), Verdict::Bot);
        assert_eq!(of("ci-bot", "Build failed"), Verdict::Bot);
        assert_eq!(
            of("octocat", "## Codecov Report\nCoverage decreased by 0.1%"),
            Verdict::Bot
        );
        let typed = Comment {
            author: "acme-ci",
            author_type: Some("Bot"),
            body: "Please rebase",
            review_state: None,
        };
        assert_eq!(triage(&typed).0, Verdict::Bot);
    }

    #[test]
    fn requests_for_change_start_rework() {
        for body in [
            "Please add fix-comment.txt as well",
            "This should handle the empty case",
            "Can you rename this?",
            "nit: typo in the title",
            "The header is broken on mobile",
            "Why is this here?",
            "```suggestion\nlet x = 1;\n```",
            "LGTM but please add a test",
            "Thanks! Could you also update the README?",
        ] {
            assert_eq!(of("octocat", body), Verdict::ChangeRequest, "{body:?}");
        }
    }

    #[test]
    fn what_no_rule_decides_goes_to_an_agent() {
        for body in [
            "Interesting approach here.",
            "Hmm, I am not convinced by the approach taken here overall, it seems off to me",
            "Merged the other branch first, this one is next after lunch today probably",
        ] {
            assert_eq!(of("octocat", body), Verdict::Ambiguous, "{body:?}");
            assert!(!Verdict::Ambiguous.is_change_request());
        }
        assert_eq!(
            agent_verdict(" Change_Request\n"),
            Some(Verdict::ChangeRequest)
        );
        assert_eq!(agent_verdict("approval"), Some(Verdict::Approval));
        assert_eq!(agent_verdict("noise"), Some(Verdict::Bot));
        for odd in ["", "ambiguous", "own", "yes", "change request"] {
            assert_eq!(agent_verdict(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn review_states_decide_unless_the_text_asks() {
        let review = |state, body| {
            triage(&Comment {
                author: "octocat",
                author_type: Some("User"),
                body,
                review_state: Some(state),
            })
            .0
        };
        assert_eq!(review("APPROVED", ""), Verdict::Approval);
        assert_eq!(
            review(
                "APPROVED",
                "Approving; the code base is in better shape now than before"
            ),
            Verdict::Approval
        );
        assert_eq!(
            review("APPROVED", "Approved, please fix the typo first"),
            Verdict::ChangeRequest
        );
        assert_eq!(review("CHANGES_REQUESTED", "lgtm"), Verdict::ChangeRequest);
    }

    #[test]
    fn fleet_replies_are_its_own() {
        let body = format!("{FLEET_MARKER}\nFixed in abc123: please add x");
        assert_eq!(of("fleet-user", &body), Verdict::Own);
    }

    #[test]
    fn words_match_on_boundaries() {
        assert!(!has("the address is ok", "add"));
        assert!(has("add it", "add"));
        assert!(has("great 👍", "👍"));
        assert_eq!(of("octocat", "Great address!"), Verdict::Approval);
    }
}
