//! The GitHub client against the forge double, over real HTTP.

use fleet_deliver::{CommentKind, Forge, ForgeError, ForgeKind, GitHub, PrState, Token};
use fleet_testkit::forge::ForgeDouble;

const TOKEN: &str = "ghp_Fleet0test0token0value0123456789";

fn setup() -> (ForgeDouble, GitHub) {
    let double = ForgeDouble::start(TOKEN);
    double.add_repo("acme", "widgets");
    let gh = GitHub::new("acme", "widgets", Token::named("GITHUB_TOKEN", TOKEN))
        .with_api_url(double.base_url());
    (double, gh)
}

#[tokio::test]
async fn opens_a_pull_request_with_githubs_headers() {
    let (double, gh) = setup();
    let pr = gh
        .open_pull_request("fleet/run-1", "main", "Add widgets", "The body")
        .await
        .expect("created");
    assert_eq!(pr.number, 1);
    assert!(pr.created);
    assert_eq!(pr.url, "https://github.com/acme/widgets/pull/1");
    assert_eq!(
        pr.api_url,
        format!("{}/repos/acme/widgets/pulls/1", double.base_url())
    );

    let created = double.pull_requests();
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!((c.repo.as_str(), c.number), ("acme/widgets", 1));
    assert_eq!(
        (c.head.as_str(), c.base.as_str()),
        ("acme:fleet/run-1", "main")
    );
    assert_eq!(
        (c.title.as_str(), c.body.as_str(), c.state.as_str()),
        ("Add widgets", "The body", "open")
    );
    assert_eq!(c.header("authorization"), Some("Bearer [REDACTED]"));
    assert_eq!(c.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(c.header("x-github-api-version"), Some("2022-11-28"));
    assert!(
        c.header("user-agent")
            .is_some_and(|ua| ua.starts_with("fleet/")),
        "{:?}",
        c.headers
    );
    assert!(!format!("{:?}", double.requests()).contains(TOKEN));

    let reqs = double.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (
            reqs[0].method.as_str(),
            reqs[0].path.as_str(),
            reqs[0].status
        ),
        ("POST", "/repos/acme/widgets/pulls", 201)
    );

    // A second branch gets the next number.
    let pr2 = gh
        .open_pull_request("fleet/run-2", "main", "More", "")
        .await
        .unwrap();
    assert_eq!((pr2.number, pr2.created), (2, true));
}

#[tokio::test]
async fn a_rejected_token_is_an_auth_error_that_names_the_variable_not_the_value() {
    let (double, gh) = setup();
    let wrong = "ghp_Wrong0token0value0987654321";
    let gh = GitHub {
        token: Token::named("GITHUB_TOKEN", wrong),
        ..gh
    };
    let err = gh
        .open_pull_request("fleet/run-1", "main", "t", "b")
        .await
        .unwrap_err();
    match &err {
        ForgeError::Auth {
            forge,
            status,
            token_name,
            message,
        } => {
            assert_eq!(*forge, ForgeKind::GitHub);
            assert_eq!(*status, 401);
            assert_eq!(token_name.as_deref(), Some("GITHUB_TOKEN"));
            assert_eq!(message, "Bad credentials");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("GITHUB_TOKEN") && text.contains("Bad credentials"),
        "{text}"
    );
    assert!(
        !text.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{text}"
    );
    assert!(
        !format!("{gh:?}").contains(wrong),
        "Debug of the client shows the token"
    );
    assert!(double.pull_requests().is_empty());
}

#[tokio::test]
async fn opening_twice_returns_the_open_pull_request() {
    let (double, gh) = setup();
    let first = gh
        .open_pull_request("fleet/run-1", "main", "Add widgets", "b")
        .await
        .unwrap();
    let again = gh
        .open_pull_request("fleet/run-1", "main", "Add widgets", "b")
        .await
        .unwrap();
    assert_eq!(again.number, first.number);
    assert_eq!(again.url, first.url);
    assert_eq!(again.api_url, first.api_url);
    assert!(first.created && !again.created);
    assert_eq!(double.pull_requests().len(), 1);
    let trail: Vec<(String, u16)> = double
        .requests()
        .iter()
        .map(|r| (format!("{} {}", r.method, r.path), r.status))
        .collect();
    assert_eq!(
        trail,
        vec![
            ("POST /repos/acme/widgets/pulls".to_string(), 201),
            ("POST /repos/acme/widgets/pulls".to_string(), 422),
            (
                "GET /repos/acme/widgets/pulls?head=acme%3Afleet%2Frun-1&state=open&per_page=100"
                    .to_string(),
                200
            ),
        ]
    );

    // Once it is closed, a new one is opened.
    double.close_pull_request("acme/widgets", first.number);
    let third = gh
        .open_pull_request("fleet/run-1", "main", "Add widgets", "b")
        .await
        .unwrap();
    assert_eq!((third.number, third.created), (2, true));
}

#[tokio::test]
async fn the_same_branch_into_another_base_is_another_pull_request() {
    let (double, gh) = setup();
    let a = gh
        .open_pull_request("feature", "main", "t", "")
        .await
        .unwrap();
    let b = gh
        .open_pull_request("feature", "release", "t", "")
        .await
        .unwrap();
    assert_ne!(a.number, b.number);
    // And asking again for the second finds the second, not the first.
    let b2 = gh
        .open_pull_request("feature", "release", "t", "")
        .await
        .unwrap();
    assert_eq!((b2.number, b2.created), (b.number, false));
    let a2 = gh
        .open_pull_request("feature", "main", "t", "")
        .await
        .unwrap();
    assert_eq!((a2.number, a2.created), (a.number, false));
    assert_eq!(double.pull_requests().len(), 2);
}

#[tokio::test]
async fn an_unknown_repository_is_not_found() {
    let (double, gh) = setup();
    let gh = GitHub {
        repo: "nope".into(),
        ..gh
    };
    let err = gh
        .open_pull_request("b", "main", "t", "")
        .await
        .unwrap_err();
    match &err {
        ForgeError::NotFound {
            forge: ForgeKind::GitHub,
            what,
        } => assert_eq!(what, "repository acme/nope"),
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(err.to_string().contains("acme/nope"), "{err}");
    assert!(double.pull_requests().is_empty());
}

#[tokio::test]
async fn validation_errors_carry_githubs_messages() {
    let (_double, gh) = setup();
    let err = gh
        .open_pull_request("main", "main", "t", "")
        .await
        .unwrap_err();
    match &err {
        ForgeError::Validation {
            status: 422,
            messages,
            ..
        } => {
            assert_eq!(
                messages,
                &vec!["No commits between main and main".to_string()]
            );
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let err = gh.open_pull_request("b", "main", "", "").await.unwrap_err();
    match &err {
        ForgeError::Validation {
            status: 422,
            messages,
            ..
        } => assert_eq!(messages, &vec!["Issue.title missing_field".to_string()]),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn review_comments_follow_pages_and_since_id() {
    let (double, gh) = setup();
    let pr = gh
        .open_pull_request("fleet/run-1", "main", "t", "")
        .await
        .unwrap();
    let mut review_ids = Vec::new();
    for i in 0..150u64 {
        let line = if i % 10 == 0 { None } else { Some(i + 1) };
        review_ids.push(double.add_review_comment(
            "acme/widgets",
            pr.number,
            "alice",
            &format!("nit {i}"),
            "src/lib.rs",
            line,
        ));
    }
    let conv = double.add_issue_comment("acme/widgets", pr.number, "bob", "Looks good overall");
    // Comments on another pull request are not ours.
    double.add_review_comment("acme/widgets", 99, "mallory", "elsewhere", "x.rs", Some(1));

    let all = gh.review_comments(pr.number, None).await.unwrap();
    assert_eq!(all.len(), 151);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
    assert!(all.iter().all(|c| c.author != "mallory"));
    let first = &all[0];
    assert_eq!(first.id, review_ids[0]);
    assert_eq!(
        (first.author.as_str(), first.body.as_str()),
        ("alice", "nit 0")
    );
    assert_eq!(
        (first.path.as_deref(), first.line, first.kind),
        (Some("src/lib.rs"), None, CommentKind::Review)
    );
    assert_eq!(
        first.url,
        format!(
            "https://github.com/acme/widgets/pull/1#discussion_r{}",
            review_ids[0]
        )
    );
    let second = &all[1];
    assert_eq!(second.line, Some(2));
    let last = all.last().unwrap();
    assert_eq!(
        (last.id, last.kind, last.path.as_deref(), last.line),
        (conv, CommentKind::Conversation, None, None)
    );
    assert_eq!(
        last.url,
        format!("https://github.com/acme/widgets/pull/1#issuecomment-{conv}")
    );

    let paths: Vec<String> = double
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/repos/acme/widgets/pulls/1/comments?per_page=100&page=1",
            "/repos/acme/widgets/pulls/1/comments?per_page=100&page=2",
            "/repos/acme/widgets/issues/1/comments?per_page=100&page=1",
            "/repos/acme/widgets/pulls/1/reviews?per_page=100&page=1",
        ]
    );

    let since = review_ids[119];
    let newer = gh.review_comments(pr.number, Some(since)).await.unwrap();
    let ids: Vec<u64> = newer.iter().map(|c| c.id).collect();
    let mut expected: Vec<u64> = review_ids[120..].to_vec();
    expected.push(conv);
    assert_eq!(ids, expected);

    assert!(
        gh.review_comments(pr.number, Some(conv))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn exactly_a_full_page_reads_one_more_empty_page() {
    let (double, gh) = setup();
    // Reviews of a pull request that does not exist are 404, as on GitHub.
    gh.open_pull_request("a", "main", "A", "").await.unwrap();
    for i in 0..100 {
        double.add_issue_comment("acme/widgets", 1, "bob", &format!("c{i}"));
    }
    let all = gh.review_comments(1, None).await.unwrap();
    assert_eq!(all.len(), 100);
    assert!(
        double
            .requests()
            .iter()
            .any(|r| r.path == "/repos/acme/widgets/issues/1/comments?per_page=100&page=2")
    );
}

#[tokio::test]
async fn unexpected_answers_are_clipped_and_never_echo_the_token() {
    let (double, gh) = setup();
    let body = format!(
        "{{\"oops\": \"upstream echoed {TOKEN} back\", \"pad\": \"{}\"}}",
        "x".repeat(1000)
    );
    double.fail_next(502, &body);
    let err = gh
        .open_pull_request("b", "main", "t", "")
        .await
        .unwrap_err();
    match &err {
        ForgeError::UnexpectedStatus {
            status: 502,
            request,
            body,
            ..
        } => {
            assert_eq!(request, "POST /repos/acme/widgets/pulls");
            assert!(
                body.contains("[REDACTED]") && !body.contains(TOKEN),
                "{body}"
            );
            assert!(
                body.chars().count() <= 301,
                "{} chars",
                body.chars().count()
            );
        }
        other => panic!("expected an unexpected status, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn a_used_up_rate_limit_is_not_an_auth_error() {
    let (double, gh) = setup();
    double.fail_next(403, r#"{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com/rest"}"#);
    let err = gh.review_comments(1, None).await.unwrap_err();
    assert!(
        matches!(err, ForgeError::RateLimited { status: 403, .. }),
        "{err:?}"
    );
    // A plain 403 is.
    double.fail_next(
        403,
        r#"{"message":"Resource not accessible by personal access token"}"#,
    );
    let err = gh
        .open_pull_request("b", "main", "t", "")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::Auth { status: 403, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("GITHUB_TOKEN")
            && err.to_string().contains("Resource not accessible"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_api_is_a_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gh = GitHub::new("acme", "widgets", Token::new(TOKEN))
        .with_api_url(format!("http://127.0.0.1:{port}"));
    let err = gh
        .open_pull_request("b", "main", "t", "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForgeError::Transport {
                forge: ForgeKind::GitHub,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn the_forge_enum_reaches_github() {
    let (double, gh) = setup();
    let forge = Forge::GitHub(gh);
    assert_eq!(forge.kind(), ForgeKind::GitHub);
    let pr = forge.open("topic", "main", "t", "b").await.unwrap();
    double.add_review_comment(
        "acme/widgets",
        pr.number,
        "alice",
        "fix this",
        "a.rs",
        Some(3),
    );
    let comments = forge.review_comments(pr.number, None).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, "fix this");
}

/// A caller may use the client from one runtime, keep that runtime, and go on in another (the
/// CLI does: one per step). No connection opened in the first may be waited on in the second.
#[test]
fn calls_from_a_second_runtime_do_not_wait_on_the_firsts_connections() {
    let (double, gh) = setup();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pr = first
        .block_on(gh.open_pull_request("fleet/a", "main", "A", "body"))
        .unwrap();
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let again = second
        .block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(20),
                gh.open_pull_request("fleet/a", "main", "A", "body"),
            )
            .await
        })
        .expect("answered, not stuck on a connection of the first runtime")
        .unwrap();
    assert_eq!(again.number, pr.number);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(double.pull_requests().len(), 1);
    drop(first);
}

// ---------------------------------------------------------------------------------------------
// A pull request's life: state, description, replies, reviews

#[tokio::test]
async fn the_state_tells_open_merged_and_closed_apart() {
    let (double, gh) = setup();
    gh.open_pull_request("a", "main", "A", "").await.unwrap();
    gh.open_pull_request("b", "main", "B", "").await.unwrap();
    let forge = Forge::GitHub(gh.clone());
    assert_eq!(forge.state(1).await.unwrap(), PrState::Open);
    double.merge_pull_request("acme/widgets", 1);
    double.close_pull_request("acme/widgets", 2);
    assert_eq!(forge.state(1).await.unwrap(), PrState::Merged);
    assert_eq!(forge.state(2).await.unwrap(), PrState::Closed);
    assert!(matches!(
        forge.state(9).await,
        Err(ForgeError::NotFound { .. })
    ));
    let wrong = GitHub::new("acme", "widgets", Token::named("GITHUB_TOKEN", "ghp_wrong"))
        .with_api_url(double.base_url());
    let err = wrong.pull_request_state(1).await.unwrap_err();
    assert!(matches!(err, ForgeError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("GITHUB_TOKEN"), "{err}");
}

#[tokio::test]
async fn the_description_is_replaced_and_a_reply_is_posted_as_the_tokens_user() {
    let (double, gh) = setup();
    gh.open_pull_request("a", "main", "A", "old body")
        .await
        .unwrap();
    let forge = Forge::GitHub(gh.clone());
    forge.update_body(1, "new body").await.unwrap();
    let pr = &double.pull_requests()[0];
    assert_eq!((pr.body.as_str(), pr.title.as_str()), ("new body", "A"));

    let id = forge.post_comment(1, "Fixed in abc123").await.unwrap();
    let posted = double.issue_comments("acme/widgets", 1);
    assert_eq!(posted.len(), 1);
    assert_eq!(
        (
            posted[0].id,
            posted[0].author.as_str(),
            posted[0].body.as_str()
        ),
        (id, fleet_testkit::forge::TOKEN_USER, "Fixed in abc123")
    );
    // Read back as a conversation comment of that user.
    let read = gh.review_comments(1, None).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].author_type.as_deref(), Some("User"));

    let methods: Vec<(String, String, u16)> = double
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.status))
        .filter(|(m, _, _)| m != "GET")
        .collect();
    assert_eq!(
        methods[1..],
        [
            ("PATCH".into(), "/repos/acme/widgets/pulls/1".into(), 200),
            (
                "POST".into(),
                "/repos/acme/widgets/issues/1/comments".into(),
                201
            ),
        ]
    );
    // Neither exists for a pull request that does not.
    assert!(matches!(
        forge.update_body(7, "x").await,
        Err(ForgeError::NotFound { .. })
    ));
    assert!(matches!(
        forge.post_comment(7, "x").await,
        Err(ForgeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn reviews_come_with_their_state_and_bots_with_their_type() {
    let (double, gh) = setup();
    gh.open_pull_request("a", "main", "A", "").await.unwrap();
    let approved = double.add_review("acme/widgets", 1, "octocat", "APPROVED", "");
    let asked = double.add_review(
        "acme/widgets",
        1,
        "hubot",
        "CHANGES_REQUESTED",
        "Please rename x",
    );
    // A bare COMMENTED review only wraps line comments: not a comment of its own.
    double.add_review("acme/widgets", 1, "octocat", "COMMENTED", "");
    let bot = double.add_issue_comment("acme/widgets", 1, "codecov[bot]", "Coverage: 91%");
    let all = gh.review_comments(1, None).await.unwrap();
    let seen: Vec<(u64, CommentKind, Option<&str>, Option<&str>)> = all
        .iter()
        .map(|c| {
            (
                c.id,
                c.kind,
                c.review_state.as_deref(),
                c.author_type.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                approved,
                CommentKind::Verdict,
                Some("APPROVED"),
                Some("User")
            ),
            (
                asked,
                CommentKind::Verdict,
                Some("CHANGES_REQUESTED"),
                Some("User")
            ),
            (bot, CommentKind::Conversation, None, Some("Bot")),
        ]
    );
}
