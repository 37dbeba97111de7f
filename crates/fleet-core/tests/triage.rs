//! Properties of the rule-based triage of pull request comments.

use fleet_core::triage::{Comment, FLEET_MARKER, Verdict, triage};

use proptest::prelude::*;

fn user(body: &str) -> Comment<'_> {
    Comment {
        author: "octocat",
        author_type: Some("User"),
        body,
        review_state: None,
    }
}

proptest! {
    /// Whatever the text, triage answers (no panic) and answers the same twice.
    #[test]
    fn total_and_deterministic(author in "\\PC{0,20}", body in "\\PC{0,200}",
                               state in proptest::option::of("APPROVED|CHANGES_REQUESTED|COMMENTED")) {
        let c = Comment { author: &author, author_type: None, body: &body, review_state: state.as_deref() };
        prop_assert_eq!(triage(&c), triage(&c));
    }

    /// Fleet's own replies never start work, whatever they say.
    #[test]
    fn own_replies_are_ignored(before in "\\PC{0,80}", after in "\\PC{0,80}") {
        let body = format!("{before}{FLEET_MARKER}{after}");
        prop_assert_eq!(triage(&user(&body)).0, Verdict::Own);
    }

    /// A `[bot]` author is noise unless the comment is Fleet's own.
    #[test]
    fn bots_never_start_work(name in "[a-z][a-z0-9-]{0,15}", body in "\\PC{0,120}") {
        let author = format!("{name}[bot]");
        let c = Comment { author: &author, author_type: None, body: &body, review_state: None };
        let v = triage(&c).0;
        prop_assert!(v == Verdict::Bot || v == Verdict::Own, "{:?}", v);
    }

    /// An approval followed by a request for a change is a change request.
    #[test]
    fn a_request_after_thanks_is_still_a_request(
        thanks in "(LGTM|Thanks|Looks good|👍|Merging now)[!.,]{0,2}",
        ask in "(please|could you|can you) (add|fix|rename) [a-z]{1,10}(\\.txt)?[.?]?") {
        let body = format!("{thanks} {ask}");
        prop_assert_eq!(triage(&user(&body)).0, Verdict::ChangeRequest);
    }

    /// Case does not matter: "LGTM" and "lgtm", "PLEASE FIX" and "please fix" agree.
    #[test]
    fn case_insensitive(body in "[ -~]{0,120}") {
        prop_assert_eq!(triage(&user(&body.to_uppercase())).0, triage(&user(&body.to_lowercase())).0);
    }

    /// A person's comment is a change request, an approval, or read by an agent; never
    /// noise, unless it reads as a CI report.
    #[test]
    fn people_are_heard(body in "[a-z ,.!?]{0,120}") {
        prop_assume!(!fleet_core::triage::CI_PATTERNS.iter().any(|p| body.contains(p)));
        let v = triage(&user(&body)).0;
        prop_assert!(
            matches!(v, Verdict::ChangeRequest | Verdict::Approval | Verdict::Ambiguous),
            "{:?}", v
        );
    }
}
