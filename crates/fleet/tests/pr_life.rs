//! A delivered pull request's life, with the real claude CLI against the scripted model server
//! and the GitHub double: approvals, thanks and bot comments start nothing; a change request
//! starts one cycle, answered on the pull request with the fixing commit, the description
//! updated; the planner may answer "no change needed"; a merged pull request ends the epic as
//! done, a closed one as cancelled.

mod support;
use support::epics::{Instance, TOKEN, plan, scripted_server, stage_list};
use support::git;
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use fleet_testkit::Scenario;
use fleet_testkit::forge::{ForgeDouble, TOKEN_USER};
use serde_json::Value;

/// The planner plans `a` first, then the fix a comment asked for, then answers that nothing
/// needs to change.
fn planner() -> String {
    let first = plan("build", &[("a", "Add a", &[])]);
    let fix = plan(
        "comment-fixes",
        &[("fix-comment", "Add what the PR comment asked", &[])],
    );
    let none =
        serde_json::json!({"no_change": "README.md is already there and says what the shop is"})
            .to_string();
    format!(
        "mkdir -p .fleet-out && if [ -f fix-comment.txt ]; then printf '%s' '{none}'; \
         elif [ -f a.txt ]; then printf '%s' '{fix}'; else printf '%s' '{first}'; fi \
         > .fleet-out/plan.json"
    )
}

fn events(inst: &Instance, epic: &str, kind: &str) -> Vec<Value> {
    inst.store()
        .events(Some(epic), 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

/// Scripted agents (the planner above, a reviewer that approves), the GitHub double, and the
/// project `shop` delivered as pull requests to `acme/shop` on it.
fn setup() -> (fleet_testkit::ModelServer, ForgeDouble, Instance) {
    let server = scripted_server();
    server.add_scenario("planner", Scenario::new().shell(planner()));
    let approve =
        serde_json::json!({"verdict": "approve", "summary": "all criteria hold"}).to_string();
    server.add_scenario(
        "reviewer",
        Scenario::new().shell(format!(
            "mkdir -p .fleet-out && printf '%s' '{approve}' > .fleet-out/review.json"
        )),
    );
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Instance::new(&server);
    inst.add_shop_on_github(&forge.base_url());
    (server, forge, inst)
}

#[test]
fn approvals_and_bots_start_nothing_a_change_request_is_one_cycle_answered_on_the_pull_request() {
    let (_server, forge, inst) = setup();
    let out = inst.ok(&[
        "task",
        "add",
        "Add the a file to the shop",
        "--project",
        "shop",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(inst.show("e1")["cycle"], 1);
    let body = forge.pull_requests()[0].body.clone();
    // The description names the agent that played each task and its attempts.
    assert!(body.contains("1 task (1 merged), 1 attempt."), "{body}");
    assert!(
        body.contains("| `a` | Add a | merged | 1 | dev-claude |"),
        "{body}"
    );

    // Approval, thanks and bots: recorded, no new cycle.
    forge.add_issue_comment("acme/shop", 1, "octocat", "LGTM, thanks! Merging now.");
    forge.add_issue_comment(
        "acme/shop",
        1,
        "github-actions[bot]",
        "All checks have passed. Please see the workflow run for details.",
    );
    forge.add_review("acme/shop", 1, "hubot", "APPROVED", "");
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("0 new review comment(s)"), "{out}");
    let show = inst.show("e1");
    assert_eq!(
        (show["state"].as_str(), show["cycle"].as_u64()),
        (Some("awaiting_acceptance"), Some(1))
    );
    let mut verdicts: Vec<(String, String)> = events(&inst, "e1", "pr.comment_triaged")
        .iter()
        .map(|e| {
            (
                e["author"].as_str().unwrap().to_string(),
                e["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    verdicts.sort();
    assert_eq!(
        verdicts,
        [
            ("github-actions[bot]".to_string(), "bot".to_string()),
            ("hubot".into(), "approval".into()),
            ("octocat".into(), "approval".into()),
        ]
    );

    // A change request: one cycle, answered with the commit that fixed it.
    forge.add_review_comment(
        "acme/shop",
        1,
        "octocat",
        "Please add fix-comment.txt as well",
        "README.md",
        Some(1),
    );
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("1 new review comment(s)"), "{out}");
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["cycle"], 2);
    assert!(inst.file_on_branch("fix-comment.txt").is_some());
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let tip = git(&inst.repo, &["rev-parse", &branch]);
    let replies: Vec<String> = forge
        .issue_comments("acme/shop", 1)
        .into_iter()
        .filter(|c| c.author == TOKEN_USER)
        .map(|c| c.body)
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains(&format!(
            "Fixed in {}: Add what the PR comment asked (fix-comment)",
            &tip.trim()[..12]
        )),
        "{}",
        replies[0]
    );
    assert!(replies[0].contains("@octocat wrote: Please add fix-comment.txt as well"));
    assert_eq!(forge.pull_requests().len(), 1, "the same pull request");
    let body = forge.pull_requests()[0].body.clone();
    assert!(
        body.contains("| `fix-comment` |"),
        "the description follows: {body}"
    );
    assert!(
        body.contains("Please add fix-comment.txt as well"),
        "{body}"
    );
    // Fleet's own reply is not a comment to act on.
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("0 new review comment(s)"), "{out}");
    assert_eq!(inst.show("e1")["cycle"], 2);

    // A comment whose answer is "nothing to change": no implement stage, a reply, awaiting.
    forge.add_issue_comment(
        "acme/shop",
        1,
        "octocat",
        "Could you double-check the README?",
    );
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["cycle"], 3);
    let stages = stage_list(&show);
    assert_eq!(
        stages.last().map(String::as_str),
        Some("plan3:passed"),
        "{stages:?}"
    );
    assert!(
        !stages.iter().any(|s| s.starts_with("implement3")),
        "{stages:?}"
    );
    let last = forge.issue_comments("acme/shop", 1).pop().unwrap();
    assert_eq!(last.author, TOKEN_USER);
    assert!(
        last.body
            .contains("No change needed: README.md is already there"),
        "{}",
        last.body
    );
}

#[test]
fn a_merged_pull_request_ends_the_epic_done_and_a_closed_one_cancelled() {
    let (_server, forge, inst) = setup();
    let out = inst.ok(&["task", "add", "Add the a file", "--project", "shop"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");

    // Merged on the forge: the epic is done.
    forge.merge_pull_request("acme/shop", 1);
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("0 new review comment(s)"), "{out}");
    assert_eq!(inst.show("e1")["state"], "done");
    assert_eq!(events(&inst, "e1", "pr.merged").len(), 1);
    assert_eq!(
        events(&inst, "e1", "task.done")[0]["reason"],
        "the pull request was merged"
    );

    // Another request, its pull request closed without merging: cancelled.
    let out = inst.ok(&["task", "add", "Add the a file again", "--project", "shop"]);
    assert!(out.contains("epic e2 awaiting_acceptance"), "{out}");
    let number = inst.show("e2")["delivery"]["number"].as_u64().unwrap();
    assert_eq!(number, 2);
    forge.close_pull_request("acme/shop", 2);
    inst.ok(&["task", "sync", "e2"]);
    assert_eq!(inst.show("e2")["state"], "cancelled");
    // Ended epics are not polled any more.
    let out = inst.fleet(&["task", "sync", "e2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not awaiting acceptance"));
    assert_eq!(
        events(&inst, "e2", "task.cancelled")[0]["reason"],
        "the pull request was closed without merging"
    );
}

#[test]
fn under_fleet_serve_approval_and_bot_comments_do_not_loop_and_a_merge_ends_the_epic() {
    let (_server, forge, inst) = setup();
    let out = inst.ok(&["token", "create", "--scope", "submit", "--name", "ci"]);
    let submit = out.lines().last().unwrap().trim().to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let detail = format!("{}/api/v1/tasks/e1", served.url);
    let (s, _) = http.post(
        &format!("{}/api/v1/tasks", served.url),
        Some(&submit),
        serde_json::json!({"project": "shop", "request": "Add the a file"}),
    );
    assert_eq!(s, 201);
    wait_for(120, "e1 awaiting acceptance", || {
        let (_, d) = http.get(&detail, None);
        (d["task"]["state"] == "awaiting_acceptance").then_some(())
    });
    forge.add_issue_comment("acme/shop", 1, "octocat", "LGTM, thanks! Merging now.");
    forge.add_issue_comment(
        "acme/shop",
        1,
        "codecov[bot]",
        "Codecov Report: coverage 100%",
    );
    // The watcher (every second) triages both ...
    wait_for(60, "both comments triaged", || {
        (events(&inst, "e1", "pr.comment_triaged").len() == 2).then_some(())
    });
    // ... and keeps polling without starting a cycle.
    let polls = |forge: &ForgeDouble| {
        forge
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/repos/acme/shop/pulls/1")
            .count()
    };
    let seen = polls(&forge);
    wait_for(60, "three more polls", || {
        (polls(&forge) >= seen + 3).then_some(())
    });
    let (_, d) = http.get(&detail, None);
    assert_eq!(
        (d["task"]["state"].as_str(), d["task"]["cycle"].as_u64()),
        (Some("awaiting_acceptance"), Some(1)),
        "{d}"
    );
    assert_eq!(events(&inst, "e1", "task.review_rejected").len(), 0);
    forge.merge_pull_request("acme/shop", 1);
    wait_for(60, "e1 done once its pull request was merged", || {
        let (_, d) = http.get(&detail, None);
        (d["task"]["state"] == "done").then_some(())
    });
    served.stop();
}

#[test]
fn on_gitlab_a_change_note_is_answered_with_a_note_and_a_merge_ends_the_epic() {
    let (_server, forge, inst) = setup();
    forge.add_gitlab_project("acme/site");
    inst.ok(&[
        "project",
        "add",
        "site",
        "--repo",
        inst.repo.to_str().unwrap(),
        "--delivery",
        "pull_request",
        "--forge",
        "gitlab",
        "--api-url",
        &forge.gitlab_url(),
        "--forge-repo",
        "acme/site",
        "--token-env",
        "GITLAB_TOKEN",
    ]);
    let out = inst.ok(&["task", "add", "Add the a file", "--project", "site"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    // GitLab's own notes and a thank-you start nothing.
    forge.add_gitlab_note("acme/site", 1, "octocat", "added 1 commit", true);
    forge.add_gitlab_note("acme/site", 1, "octocat", "Thanks, looks great 🎉", false);
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("0 new review comment(s)"), "{out}");
    assert_eq!(inst.show("e1")["cycle"], 1);
    forge.add_gitlab_diff_note(
        "acme/site",
        1,
        "octocat",
        "Please add fix-comment.txt as well",
        "README.md",
        1,
    );
    let out = inst.ok(&["task", "sync", "e1"]);
    assert!(out.contains("1 new review comment(s)"), "{out}");
    assert_eq!(inst.show("e1")["cycle"], 2);
    let ours: Vec<String> = forge
        .gitlab_notes("acme/site", 1)
        .into_iter()
        .filter(|n| n.author == TOKEN_USER)
        .map(|n| n.body)
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("Fixed in "), "{}", ours[0]);
    assert!(
        forge.merge_requests()[0].body.contains("| `fix-comment` |"),
        "the description follows"
    );
    forge.merge_merge_request("acme/site", 1);
    inst.ok(&["task", "sync", "e1"]);
    assert_eq!(inst.show("e1")["state"], "done");
}
