//! From one sentence to a pull request, with the real claude CLI against the scripted model
//! server playing every role, and a local double of GitHub's REST API:
//! research -> plan (3 tasks, one dependency) -> implement -> review rejects -> fix task ->
//! review approves -> pull request -> awaiting acceptance; then a person rejects with a
//! comment, a fix task runs and lands; a review comment on the pull request does the same; and
//! the person accepts.

mod support;
use support::epics::{Instance, TOKEN, plan, scripted_server, stage_list};
use support::git;

use fleet_testkit::Scenario;
use fleet_testkit::forge::ForgeDouble;
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn a_deploy_project_records_the_url_its_deploy_command_printed() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    // The reviewer profile gets its role from the instance's role file, not from fleet.yaml.
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    std::fs::write(
        inst.home.join("fleet.yaml"),
        yaml.replace("roles: [reviewer]", "roles: []"),
    )
    .unwrap();
    std::fs::create_dir_all(inst.home.join("roles")).unwrap();
    std::fs::write(
        inst.home.join("roles/reviewer.md"),
        "---\ndescription: our reviewer\nartifacts: [review.json]\nprofiles: [reviewer-claude]\n---\n\
         Review this change for {{request}}.\n\nCriteria:\n{{acceptance}}\n\nDiff:\n{{diff}}\n\
         Write .fleet-out/review.json.\n",
    )
    .unwrap();
    std::fs::create_dir_all(inst.home.join("bibles")).unwrap();
    std::fs::write(
        inst.home.join("bibles/internal.md"),
        "---\nvalues: [ship small, keep it readable]\nconstraints: [no external services]\n\
         checks: [\"test -s README.md\"]\n---\nInternal apps for the sales team.\n",
    )
    .unwrap();
    // The deploy runs code agents wrote: it sees the variable it is given, none of Fleet's keys.
    let seen = inst.home.join("deploy-env.txt");
    let command = format!(
        "env > {} && test -s a.txt && test -s fix-review.txt && echo \"preview ready: http://127.0.0.1:8099/site/$(git rev-parse --short HEAD)\"",
        seen.display()
    );
    inst.ok(&[
        "project",
        "add",
        "site",
        "--bible",
        "internal",
        "--repo",
        inst.repo.to_str().unwrap(),
        "--delivery",
        "deploy",
        "--deploy-command",
        &command,
        "--deploy-pass-env",
        "SITE_DEPLOY_TOKEN",
    ]);
    // Names only, and only for a deploy command: anything else is refused, nothing stored.
    let repo = inst.repo.to_str().unwrap();
    for (args, says) in [
        (
            &["--deploy-pass-env", "SITE_DEPLOY_TOKEN"][..],
            "for deploy projects",
        ),
        (
            &["--delivery", "deploy", "--deploy-pass-env", "X"],
            "needs a --deploy-command",
        ),
        (
            &[
                "--delivery",
                "deploy",
                "--deploy-command",
                "true",
                "--deploy-pass-env",
                "1X",
            ],
            "expected an environment variable name",
        ),
    ] {
        let out = inst.fleet(&[&["project", "add", "bad", "--repo", repo][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = inst
        .command(&[
            "task",
            "add",
            "Design and build a landing page with a, b and c",
            "--project",
            "site",
        ])
        .env("SITE_DEPLOY_TOKEN", "site-deploy-0123456789")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(
        env.contains("SITE_DEPLOY_TOKEN=site-deploy-0123456789"),
        "{env}"
    );
    for key in ["sk-ant-oat01-test-secret-0001", TOKEN, "FLEET_HOME"] {
        assert!(!env.contains(key), "the deploy saw {key}:\n{env}");
    }
    let show = inst.show("e1");
    assert_eq!(show["intent"], "new_app", "routed by the built-in rules");
    // The request asks for design: an architecture note comes before the plan and reaches it.
    let stages = stage_list(&show);
    assert_eq!(
        stages[..3],
        ["research1:passed", "architect1:passed", "plan1:passed"]
    );
    assert!(
        server
            .requests("planner")
            .iter()
            .any(|r| r.contains("One static page per file; no build step."))
    );
    assert!(
        server.requests("classifier").is_empty(),
        "a rule matched: no classifier"
    );
    let epic_branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let short = git(&inst.repo, &["rev-parse", "--short", &epic_branch]);
    assert_eq!(show["delivery"]["kind"], "deploy");
    assert_eq!(
        show["delivery"]["url"].as_str().unwrap(),
        format!("http://127.0.0.1:8099/site/{}", short.trim())
    );
    // The bible reaches the agents, and its default checks are part of every task's checks.
    assert!(
        server
            .requests("developer")
            .iter()
            .any(|r| r.contains("Internal apps for the sales team")
                && r.contains("no external services"))
    );
    let runbooks: String = std::fs::read_dir(inst.home.join(".fleet/epics/e1"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-implement-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(runbooks.contains("test -s README.md"), "{runbooks}");
    let reviewer = server.requests("reviewer");
    assert!(
        reviewer
            .iter()
            .any(|r| r.contains("Review this change for Design and build a landing page")),
        "the instance's role file replaced the built-in reviewer template"
    );
    // The deploy worktree is gone; a failing deploy would have failed the epic instead.
    assert!(!inst.home.join(".fleet/worktrees/e1-deploy").exists());
}

#[test]
fn one_sentence_to_a_reviewed_pull_request_then_a_rejection_becomes_a_fix_that_lands() {
    let server = scripted_server();
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Instance::new(&server);

    inst.add_shop_on_github(&forge.base_url());
    let out = inst.ok(&[
        "task",
        "add",
        "Add the a, b and c files to the shop",
        "--project",
        "shop",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");

    let show = inst.show("e1");
    assert_eq!(show["state"], "awaiting_acceptance");
    assert_eq!(show["cycle"], 2, "two review cycles");
    // No routing rule matches the request: the classifier agent named its intent.
    assert_eq!(show["intent"], "db_issue");
    assert_eq!(show["roles"], serde_json::json!(["db"]));
    assert!(
        server
            .requests("classifier")
            .iter()
            .any(|r| r.contains("Add the a, b and c files to the shop") && r.contains("db_issue"))
    );
    assert_eq!(
        stage_list(&show),
        [
            "research1:passed",
            "plan1:passed",
            "implement1:passed",
            "review1:failed",
            "plan2:passed",
            "implement2:passed",
            "review2:passed",
            "deliver2:passed",
        ]
    );
    let reviews = show["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0]["verdict"], "reject");
    assert_eq!(reviews[1]["verdict"], "approve");
    assert!(reviews.iter().all(|r| r["checks_passed"] == true));
    // Every role was played by its agent, and the spend is attributed.
    let agents: Vec<&str> = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["attempts"].as_array().unwrap().iter())
        .filter_map(|a| a["agent"].as_str())
        .collect();
    for who in [
        "researcher-claude",
        "planner-claude",
        "dev-claude",
        "reviewer-claude",
    ] {
        assert!(agents.contains(&who), "{who} played: {agents:?}");
    }

    // The branch holds the work of both cycles and none of the agents' artifacts.
    for f in ["a", "b", "c", "fix-review"] {
        assert_eq!(
            inst.file_on_branch(&format!("{f}.txt")).as_deref(),
            Some(format!("{f} is done\n").as_str()),
            "{f}.txt on the epic branch"
        );
    }
    assert!(inst.file_on_branch(".fleet-out/plan.json").is_none());
    // b started only after a landed: its worktree was made from a branch holding a.txt.
    let log = git(
        &inst.repo,
        &[
            "log",
            "--format=%s",
            &support::fleet_branch(&inst.repo, "epics", "e1"),
        ],
    );
    let pos = |s: &str| log.lines().position(|l| l.starts_with(s)).unwrap();
    assert!(
        pos("fleet: merge task b ") < pos("fleet: merge task a "),
        "{log}"
    );

    // The context the researcher wrote is kept for later agents.
    let ctx = std::fs::read_to_string(inst.home.join(".fleet/context/shop.md")).unwrap();
    assert!(ctx.contains("Layout: README.md only"));
    // The second plan was made from the review's bug report.
    let planner = server.requests("planner");
    assert!(
        planner
            .iter()
            .any(|r| r.contains("the release needs fix-review.txt"))
    );

    // The pull request: opened once on the double, with a body built from the plan and reviews.
    let prs = forge.pull_requests();
    assert_eq!(prs.len(), 1);
    assert_eq!(
        (prs[0].head.as_str(), prs[0].base.as_str()),
        (
            format!("acme:{}", support::fleet_branch(&inst.repo, "epics", "e1")).as_str(),
            "main"
        )
    );
    assert!(
        prs[0].body.contains("Add the a, b and c files"),
        "{}",
        prs[0].body
    );
    assert!(prs[0].body.contains("fix-review"), "{}", prs[0].body);
    assert_eq!(
        show["delivery"]["url"].as_str().unwrap(),
        "https://github.com/acme/shop/pull/1"
    );
    let epic_branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let pushed = git(
        &inst.remote,
        &["rev-parse", &format!("refs/heads/{epic_branch}")],
    );
    assert_eq!(
        pushed.trim(),
        git(&inst.repo, &["rev-parse", &epic_branch]).trim()
    );

    // A person rejects: the comment becomes a fix task that runs and lands.
    let out = inst.ok(&[
        "task",
        "reject",
        "e1",
        "--comment",
        "Please also add fix-accept.txt for the release notes",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["cycle"], 3);
    let fix = show["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "fix-accept")
        .expect("a fix task was planned");
    assert_eq!(fix["state"], "merged");
    assert_eq!(fix["cycle"], 3);
    assert_eq!(
        inst.file_on_branch("fix-accept.txt").as_deref(),
        Some("fix-accept is done\n")
    );
    assert!(
        server
            .requests("planner")
            .iter()
            .any(|r| r.contains("Please also add fix-accept.txt"))
    );
    assert_eq!(
        forge.pull_requests().len(),
        1,
        "the same pull request, updated"
    );
    let epic_branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let pushed = git(
        &inst.remote,
        &["rev-parse", &format!("refs/heads/{epic_branch}")],
    );
    assert_eq!(
        pushed.trim(),
        git(&inst.repo, &["rev-parse", &epic_branch]).trim()
    );

    // A review comment on the pull request becomes rework too.
    assert!(
        inst.ok(&["task", "sync", "e1"])
            .contains("0 new review comment(s)")
    );
    // A watcher polls the pull request while the epic awaits acceptance.
    let mut watcher = inst
        .command(&["task", "sync", "e1", "--every", "1", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    forge.add_review_comment(
        "acme/shop",
        1,
        "octocat",
        "Please add fix-comment.txt as well",
        "README.md",
        Some(1),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let s = inst.show("e1");
        if s["cycle"] == 4 && s["state"] == "awaiting_acceptance" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never turned the comment into a cycle: {s:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(inst.file_on_branch("fix-comment.txt").is_some());
    assert!(
        server
            .requests("planner")
            .iter()
            .any(|r| r.contains("octocat on README.md:1: Please add fix-comment.txt as well"))
    );
    // Seen comments are not turned into work twice.
    assert!(
        inst.ok(&["task", "sync", "e1"])
            .contains("0 new review comment(s)")
    );

    inst.ok(&["task", "accept", "e1"]);
    assert_eq!(inst.show("e1")["state"], "done");
    // The watcher stops once the epic no longer awaits acceptance.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while watcher.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 new review comment(s)"), "{text}");
    assert!(
        text.contains("epic e1 done: no longer awaiting acceptance"),
        "{text}"
    );
    // Nothing secret leaked into the state directory's events.
    let events = inst.ok(&["task", "show", "e1"]);
    assert!(!events.contains(TOKEN));
}

#[test]
fn a_gitlab_project_gets_a_merge_request() {
    let server = scripted_server();
    let forge = ForgeDouble::start(TOKEN);
    forge.add_gitlab_project("acme/site");
    let inst = Instance::new(&server);
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
    let out = inst.ok(&[
        "task",
        "add",
        "Add the a, b and c files",
        "--project",
        "site",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let mrs = forge.merge_requests();
    assert_eq!(mrs.len(), 1);
    assert_eq!(
        (mrs[0].head.as_str(), mrs[0].base.as_str()),
        (
            support::fleet_branch(&inst.repo, "epics", "e1").as_str(),
            "main"
        )
    );
    assert!(
        mrs[0].body.contains("Add the a, b and c files"),
        "{}",
        mrs[0].body
    );
    let show = inst.show("e1");
    assert_eq!(
        show["delivery"]["url"],
        format!(
            "https://gitlab.com/acme/site/-/merge_requests/{}",
            mrs[0].number
        )
    );
    let epic_branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let pushed = git(
        &inst.remote,
        &["rev-parse", &format!("refs/heads/{epic_branch}")],
    );
    assert_eq!(
        pushed.trim(),
        git(&inst.repo, &["rev-parse", &epic_branch]).trim()
    );
}

#[test]
fn tasks_that_fail_after_every_attempt_are_re_planned_and_the_epic_still_delivers() {
    let mark = tempfile::tempdir().unwrap();
    let mark = mark.path().join("planned-once");
    let bad =
        plan("build", &[("x", "Add x", &[])]).replace("test -s x.txt", "test -s never-there.txt");
    let good = plan(
        "replanned",
        &[
            ("y", "Add y instead", &[]),
            ("fix-review", "Add fix-review", &[]),
        ],
    );
    let server = scripted_server();
    server.add_scenario(
        "planner",
        Scenario::new().shell(format!(
            "mkdir -p .fleet-out && if [ -f '{m}' ]; then printf '%s' '{good}'; \
             else touch '{m}'; printf '%s' '{bad}'; fi > .fleet-out/plan.json",
            m = mark.display()
        )),
    );
    let inst = Instance::new(&server);
    inst.ok(&[
        "project",
        "add",
        "shop",
        "--repo",
        inst.repo.to_str().unwrap(),
    ]);
    let out = inst.ok(&["task", "add", "Add x to the shop", "--project", "shop"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(
        stage_list(&show),
        [
            "research1:passed",
            "plan1:passed",
            "implement1:failed",
            "plan1:passed",
            "implement1:passed",
            "review1:passed",
            "deliver1:passed",
        ]
    );
    let state = |id: &str| {
        show["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state("x").as_deref(), Some("failed"));
    assert_eq!(state("y").as_deref(), Some("merged"));
    assert!(
        inst.file_on_branch("x.txt").is_none(),
        "a failed task's work does not land"
    );
    assert!(inst.file_on_branch("y.txt").is_some());
    // The re-plan was asked with the failed task and why it failed.
    assert!(
        server
            .requests("planner")
            .iter()
            .any(|r| r.contains("These tasks could not be done") && r.contains("- x (failed)"))
    );
}

#[test]
fn a_project_registered_by_url_is_cloned_into_the_instance() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    git(&inst.repo, &["push", "-q", "origin", "main"]);
    let url = format!("file://{}", inst.remote.display());
    inst.ok(&["project", "add", "web", "--repo", &url, "--branch", "main"]);
    let list: Value = serde_json::from_str(&inst.ok(&["project", "ls", "--json"])).unwrap();
    let path = PathBuf::from(list[0]["path"].as_str().unwrap());
    assert_eq!(
        path,
        inst.home.join(".fleet/repos/web").canonicalize().unwrap()
    );
    // The remote's HEAD names no branch here; `main` exists locally all the same.
    assert_eq!(git(&path, &["show", "main:README.md"]), "# shop\n");
    // Bad input is refused with a clear error and exit 2, and nothing is registered.
    let out = inst.fleet(&["project", "add", "bad", "--repo", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such directory"));
    let out = inst.fleet(&[
        "project",
        "add",
        "../x",
        "--repo",
        inst.repo.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = inst.fleet(&["task", "add", "anything", "--project", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no project \"nope\""));
    let list: Value = serde_json::from_str(&inst.ok(&["project", "ls", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}
