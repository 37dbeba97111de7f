//! The pure parts: remote URLs and pull request descriptions.

use fleet_deliver::{PullRequestSummary, ReviewCycle, TaskLine, parse_remote, pull_request_body};

fn remote(host: &str, owner: &str, repo: &str) -> Option<(String, String, String)> {
    Some((host.into(), owner.into(), repo.into()))
}

#[test]
fn github_remotes() {
    let want = remote("github.com", "acme", "widgets");
    for url in [
        "https://github.com/acme/widgets",
        "https://github.com/acme/widgets.git",
        "https://github.com/acme/widgets/",
        "https://x-access-token:ghs_abc@github.com/acme/widgets.git",
        "git@github.com:acme/widgets.git",
        "git@github.com:acme/widgets",
        "ssh://git@github.com/acme/widgets.git",
        "ssh://git@github.com:22/acme/widgets.git",
        "HTTPS://GitHub.com/acme/widgets.git",
    ] {
        assert_eq!(parse_remote(url), want, "{url}");
    }
    // Dots and dashes are part of names; only a final .git goes.
    assert_eq!(
        parse_remote("git@github.com:my-org/my.repo.git"),
        remote("github.com", "my-org", "my.repo")
    );
    // A page of a repository is not a remote.
    assert_eq!(
        parse_remote("https://github.com/acme/widgets/tree/main"),
        None
    );
}

#[test]
fn gitlab_remotes_with_nested_groups() {
    assert_eq!(
        parse_remote("https://gitlab.com/acme/platform/widgets.git"),
        remote("gitlab.com", "acme/platform", "widgets")
    );
    assert_eq!(
        parse_remote("git@gitlab.com:acme/platform/team/widgets.git"),
        remote("gitlab.com", "acme/platform/team", "widgets")
    );
    assert_eq!(
        parse_remote("ssh://git@gitlab.example.org:2222/group/sub/app.git"),
        remote("gitlab.example.org", "group/sub", "app")
    );
    assert_eq!(
        parse_remote("https://gitlab.example.org:8443/group/app"),
        remote("gitlab.example.org:8443", "group", "app")
    );
}

#[test]
fn what_is_not_a_forge_remote() {
    for url in [
        "",
        "/srv/git/widgets.git",
        "./widgets",
        "../widgets.git",
        "file:///srv/git/widgets.git",
        "C:\\repos\\widgets",
        "c:/repos/widgets",
        "https://github.com/acme",
        "https://github.com/",
        "git@github.com:widgets.git",
        "https://example.com//widgets",
        "https://example.com/acme/../widgets",
        "ftp://example.com/acme/widgets",
    ] {
        assert_eq!(parse_remote(url), None, "{url:?}");
    }
}

fn summary() -> PullRequestSummary {
    PullRequestSummary {
        request: "Add a widgets page.\n\nAsk @alice about the colours; mail bob@example.com."
            .into(),
        plan: "1. Model\n2. Page".into(),
        tasks: vec![
            TaskLine {
                id: "model".into(),
                title: "Widget model | storage".into(),
                status: "passed".into(),
                attempts: 1,
                agents: vec!["claude".into()],
            },
            TaskLine {
                id: "page".into(),
                title: "Widgets\npage".into(),
                status: "passed".into(),
                attempts: 3,
                agents: vec!["codex".into(), "claude".into()],
            },
            TaskLine {
                id: "docs".into(),
                title: "Docs".into(),
                status: "skipped".into(),
                attempts: 0,
                agents: vec![],
            },
        ],
        reviews: vec![
            ReviewCycle {
                cycle: 1,
                verdict: "changes requested".into(),
                summary: "Missing tests for the empty list.\nAlso rename `w`.".into(),
            },
            ReviewCycle {
                cycle: 2,
                verdict: "approved".into(),
                summary: "LGTM".into(),
            },
        ],
        checks: vec!["cargo test".into(), "echo ```".into()],
        run_id: Some("20260102-abc".into()),
    }
}

#[test]
fn the_description_tells_the_whole_story() {
    let body = pull_request_body(&summary());
    let expected_request = "## Request\n\n> Add a widgets page.\n>\n> Ask `@alice` about the colours; mail bob@example.com.\n\n";
    assert!(body.starts_with(expected_request), "{body}");
    assert!(body.contains("## Plan\n\n1. Model\n2. Page\n\n"), "{body}");
    assert!(
        body.contains("3 tasks (2 passed, 1 skipped), 4 attempts."),
        "{body}"
    );
    assert!(
        body.contains(
            "| Task | Title | Status | Attempts | Agents |\n| --- | --- | --- | ---: | --- |\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("| `model` | Widget model \\| storage | passed | 1 | claude |\n"),
        "{body}"
    );
    assert!(
        body.contains("| `page` | Widgets page | passed | 3 | codex, claude |\n"),
        "{body}"
    );
    assert!(
        body.contains("| `docs` | Docs | skipped | 0 |  |\n"),
        "{body}"
    );
    assert!(body.contains("- **Cycle 1: changes requested** — Missing tests for the empty list.\n  Also rename `w`.\n"), "{body}");
    assert!(body.contains("- **Cycle 2: approved** — LGTM\n"), "{body}");
    // The fence is longer than any backtick run in the commands.
    assert!(
        body.contains("## How to check\n\n````sh\ncargo test\necho ```\n````\n"),
        "{body}"
    );
    assert!(
        body.ends_with("<sub>Opened by Fleet, run `20260102-abc`.</sub>\n"),
        "{body}"
    );
    let order: Vec<usize> = [
        "## Request",
        "## Plan",
        "## Tasks",
        "## Review",
        "## How to check",
        "<sub>",
    ]
    .iter()
    .map(|h| body.find(h).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn empty_sections_are_left_out() {
    let body = pull_request_body(&PullRequestSummary::default());
    assert_eq!(body, "<sub>Opened by Fleet.</sub>\n");
    let body = pull_request_body(&PullRequestSummary {
        request: "Fix the typo".into(),
        ..Default::default()
    });
    assert_eq!(
        body,
        "## Request\n\n> Fix the typo\n\n<sub>Opened by Fleet.</sub>\n"
    );
}

#[test]
fn a_huge_description_stays_under_githubs_limit() {
    let mut s = summary();
    s.request = "word ".repeat(50_000);
    s.plan = "step\n".repeat(50_000);
    s.tasks = (0..2_000)
        .map(|i| TaskLine {
            id: format!("t{i}"),
            title: "A task with a reasonably long title to fill the table".into(),
            status: "passed".into(),
            attempts: 1,
            agents: vec!["claude".into()],
        })
        .collect();
    let body = pull_request_body(&s);
    assert!(
        body.chars().count() < 65_536,
        "{} chars",
        body.chars().count()
    );
    assert!(body.contains("… and 1700 more tasks."));
    assert!(body.contains("(cut: "));
}
