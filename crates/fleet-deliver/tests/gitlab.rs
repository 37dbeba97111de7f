//! The GitLab client against the forge double, over real HTTP.

use fleet_deliver::{CommentKind, Forge, ForgeError, ForgeKind, GitLab, PrState, Token};
use fleet_testkit::forge::ForgeDouble;

const TOKEN: &str = "glpat-Fleet0test0token0value0";
const PROJECT: &str = "acme/platform/widgets";

fn setup() -> (ForgeDouble, GitLab, u64) {
    let double = ForgeDouble::start(TOKEN);
    let id = double.add_gitlab_project(PROJECT);
    let gl =
        GitLab::new(PROJECT, Token::named("GITLAB_TOKEN", TOKEN)).with_api_url(double.gitlab_url());
    (double, gl, id)
}

#[tokio::test]
async fn opens_a_merge_request_by_project_path() {
    let (double, gl, _) = setup();
    let mr = gl
        .open_merge_request("fleet/run-1", "main", "Add widgets", "Description")
        .await
        .unwrap();
    assert_eq!((mr.number, mr.created), (1, true));
    assert_eq!(
        mr.url,
        "https://gitlab.com/acme/platform/widgets/-/merge_requests/1"
    );
    assert_eq!(
        mr.api_url,
        format!(
            "{}/projects/acme%2Fplatform%2Fwidgets/merge_requests/1",
            double.gitlab_url()
        )
    );

    let created = double.merge_requests();
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(
        (c.repo.as_str(), c.head.as_str(), c.base.as_str()),
        (PROJECT, "fleet/run-1", "main")
    );
    assert_eq!(
        (c.title.as_str(), c.body.as_str(), c.state.as_str()),
        ("Add widgets", "Description", "opened")
    );
    assert_eq!(c.header("private-token"), Some("[REDACTED]"));
    assert!(c.header("authorization").is_none());
    assert!(!format!("{:?}", double.requests()).contains(TOKEN));
    let reqs = double.requests();
    assert_eq!(
        (reqs[0].path.as_str(), reqs[0].status),
        (
            "/api/v4/projects/acme%2Fplatform%2Fwidgets/merge_requests",
            201
        )
    );
}

#[tokio::test]
async fn opens_a_merge_request_by_numeric_id() {
    let (double, gl, id) = setup();
    let gl = GitLab {
        project: id.to_string(),
        ..gl
    };
    let mr = gl
        .open_merge_request("topic", "main", "t", "")
        .await
        .unwrap();
    assert_eq!(mr.number, 1);
    assert_eq!(
        mr.api_url,
        format!("{}/projects/{id}/merge_requests/1", double.gitlab_url())
    );
    assert_eq!(double.merge_requests()[0].repo, PROJECT);
}

#[tokio::test]
async fn opening_twice_returns_the_open_merge_request() {
    let (double, gl, _) = setup();
    // Another open MR from a different branch must not be mistaken for ours.
    gl.open_merge_request("other", "main", "x", "")
        .await
        .unwrap();
    let first = gl
        .open_merge_request("fleet/run-1", "main", "t", "")
        .await
        .unwrap();
    let again = gl
        .open_merge_request("fleet/run-1", "main", "t", "")
        .await
        .unwrap();
    assert_eq!(
        (again.number, again.url.as_str(), again.created),
        (first.number, first.url.as_str(), false)
    );
    assert_eq!(first.number, 2);
    assert_eq!(double.merge_requests().len(), 2);
    let statuses: Vec<u16> = double.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 201, 409, 200]);
    let lookup = &double.requests()[3];
    assert_eq!(
        lookup.path,
        "/api/v4/projects/acme%2Fplatform%2Fwidgets/merge_requests?source_branch=fleet%2Frun-1&state=opened&per_page=100"
    );

    double.close_merge_request(PROJECT, first.number);
    let third = gl
        .open_merge_request("fleet/run-1", "main", "t", "")
        .await
        .unwrap();
    assert_eq!((third.number, third.created), (3, true));
}

#[tokio::test]
async fn the_same_branch_into_another_target_is_another_merge_request() {
    let (double, gl, _) = setup();
    let a = gl
        .open_merge_request("feature", "main", "t", "")
        .await
        .unwrap();
    let b = gl
        .open_merge_request("feature", "release", "t", "")
        .await
        .unwrap();
    assert_ne!(a.number, b.number);
    let a2 = gl
        .open_merge_request("feature", "main", "t", "")
        .await
        .unwrap();
    assert_eq!((a2.number, a2.created), (a.number, false));
    let b2 = gl
        .open_merge_request("feature", "release", "t", "")
        .await
        .unwrap();
    assert_eq!((b2.number, b2.created), (b.number, false));
    assert_eq!(double.merge_requests().len(), 2);
}

#[tokio::test]
async fn a_rejected_token_names_the_variable_only() {
    let (_double, gl, _) = setup();
    let wrong = "glpat-Wrong0value0000000";
    let gl = GitLab {
        token: Token::named("GITLAB_TOKEN", wrong),
        ..gl
    };
    let err = gl
        .open_merge_request("b", "main", "t", "")
        .await
        .unwrap_err();
    match &err {
        ForgeError::Auth {
            forge: ForgeKind::GitLab,
            status: 401,
            token_name,
            message,
        } => {
            assert_eq!(token_name.as_deref(), Some("GITLAB_TOKEN"));
            assert_eq!(message, "401 Unauthorized");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(err.to_string().contains("GITLAB_TOKEN"));
    assert!(!err.to_string().contains(wrong) && !format!("{err:?}{gl:?}").contains(wrong));
}

#[tokio::test]
async fn an_unknown_project_is_not_found() {
    let (_double, gl, _) = setup();
    let gl = GitLab {
        project: "acme/missing".into(),
        ..gl
    };
    let err = gl
        .open_merge_request("b", "main", "t", "")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ForgeError::NotFound {
            forge: ForgeKind::GitLab,
            what: "project acme/missing".into()
        }
    );
    let err = gl.review_comments(1, None).await.unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn refusals_carry_gitlabs_messages() {
    let (_double, gl, _) = setup();
    let err = gl
        .open_merge_request("main", "main", "t", "")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ForgeError::Validation {
            forge: ForgeKind::GitLab,
            status: 422,
            messages: vec!["You can't use same project/branch for source and target".into()]
        }
    );
    let err = gl
        .open_merge_request("b", "main", "", "")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ForgeError::Validation {
            forge: ForgeKind::GitLab,
            status: 400,
            messages: vec!["title is missing".into()]
        }
    );
}

#[tokio::test]
async fn notes_skip_system_notes_and_follow_pages() {
    let (double, gl, _) = setup();
    let mr = gl
        .open_merge_request("fleet/run-1", "main", "t", "")
        .await
        .unwrap();
    let mut human = Vec::new();
    for i in 0..130u64 {
        match i % 3 {
            0 => {
                double.add_gitlab_note(
                    PROJECT,
                    mr.number,
                    "gitlab-bot",
                    &format!("added {i} commits"),
                    true,
                );
            }
            1 => human.push(double.add_gitlab_note(
                PROJECT,
                mr.number,
                "carol",
                &format!("note {i}"),
                false,
            )),
            _ => human.push(double.add_gitlab_diff_note(
                PROJECT,
                mr.number,
                "dave",
                &format!("diff {i}"),
                "src/main.rs",
                i,
            )),
        }
    }
    let all = gl.review_comments(mr.number, None).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|c| c.id).collect();
    assert_eq!(ids, human, "human notes only, in id order");
    assert!(all.iter().all(|c| c.author != "gitlab-bot"));
    let n = &all[0];
    assert_eq!(
        (
            n.author.as_str(),
            n.body.as_str(),
            n.kind,
            n.path.as_deref(),
            n.line
        ),
        ("carol", "note 1", CommentKind::Conversation, None, None)
    );
    assert_eq!(
        n.url,
        format!(
            "https://gitlab.com/acme/platform/widgets/-/merge_requests/1#note_{}",
            n.id
        )
    );
    let d = &all[1];
    assert_eq!(
        (d.author.as_str(), d.kind, d.path.as_deref(), d.line),
        ("dave", CommentKind::Review, Some("src/main.rs"), Some(2))
    );
    let note_pages = double
        .requests()
        .iter()
        .filter(|r| r.path.contains("/notes?"))
        .count();
    assert_eq!(note_pages, 2, "130 notes are two pages of 100");

    let since = human[50];
    let newer = gl.review_comments(mr.number, Some(since)).await.unwrap();
    assert_eq!(
        newer.iter().map(|c| c.id).collect::<Vec<_>>(),
        human[51..].to_vec()
    );
}

#[tokio::test]
async fn notes_of_a_missing_merge_request_are_not_found() {
    let (_double, gl, _) = setup();
    let err = gl.review_comments(7, None).await.unwrap_err();
    assert_eq!(
        err,
        ForgeError::NotFound {
            forge: ForgeKind::GitLab,
            what: format!("merge request {PROJECT}!7")
        }
    );
}

#[tokio::test]
async fn the_forge_enum_reaches_gitlab() {
    let (double, gl, _) = setup();
    let forge = Forge::GitLab(gl);
    let mr = forge.open("topic", "main", "t", "d").await.unwrap();
    double.add_gitlab_note(PROJECT, mr.number, "erin", "ship it", false);
    let notes = forge.review_comments(mr.number, None).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].body, "ship it");
    assert_eq!(forge.kind(), ForgeKind::GitLab);
}

// ---------------------------------------------------------------------------------------------
// A merge request's life: state, description, notes

#[tokio::test]
async fn the_state_description_and_notes_of_a_merge_request() {
    let (double, gl, _) = setup();
    gl.open_merge_request("a", "main", "A", "old")
        .await
        .unwrap();
    gl.open_merge_request("b", "main", "B", "").await.unwrap();
    let forge = Forge::GitLab(gl.clone());
    assert_eq!(forge.state(1).await.unwrap(), PrState::Open);
    forge.update_body(1, "new description").await.unwrap();
    assert_eq!(double.merge_requests()[0].body, "new description");
    let id = forge
        .post_comment(1, "No change needed: it is there")
        .await
        .unwrap();
    let notes = double.gitlab_notes(PROJECT, 1);
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].id, notes[0].author.as_str()),
        (id, fleet_testkit::forge::TOKEN_USER)
    );
    // The note reads back as a conversation comment.
    let read = gl.review_comments(1, None).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].body, "No change needed: it is there");

    double.merge_merge_request(PROJECT, 1);
    double.close_merge_request(PROJECT, 2);
    assert_eq!(forge.state(1).await.unwrap(), PrState::Merged);
    assert_eq!(forge.state(2).await.unwrap(), PrState::Closed);
    assert!(matches!(
        forge.state(5).await,
        Err(ForgeError::NotFound { .. })
    ));
    assert!(matches!(
        forge.post_comment(5, "x").await,
        Err(ForgeError::NotFound { .. })
    ));
    assert!(matches!(
        forge.update_body(5, "x").await,
        Err(ForgeError::NotFound { .. })
    ));
    let wrong = GitLab::new(PROJECT, Token::named("GITLAB_TOKEN", "glpat-wrong"))
        .with_api_url(double.gitlab_url());
    let err = wrong.post_note(1, "x").await.unwrap_err();
    assert!(matches!(err, ForgeError::Auth { .. }), "{err:?}");
    let puts: Vec<(String, u16)> = double
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" || (r.method == "POST" && r.path.ends_with("/notes")))
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        puts,
        [
            ("PUT".to_string(), 200),
            ("POST".to_string(), 201),
            ("POST".to_string(), 404),
            ("PUT".to_string(), 404),
            ("POST".to_string(), 401),
        ]
    );
}
