//! `fleet project new NAME --bible B` with a `forge:` in fleet.yaml, against the faithful forge
//! double over real HTTP: the repository is created on the forge (private), the first commit
//! is pushed to it (a real bare repository the double hosts), it is the project's `origin`, and
//! the project's first request ends in a pull request there. A forge 5xx is tried again; a
//! refused token or a taken name is exit 5 with what to do, and nothing is made: no project
//! row, no local directory. The same over `POST /api/v1/projects/new` (GitLab, in a group).

mod support;
use fleet_testkit::forge::ForgeDouble;
use support::git;
use support::scripted::{ALL, Inst};

const BIBLE: &str = "---\ntone: warm\ndeploy: fly.io\n---\nA shop for our bakery.\n";
const TOKEN: &str = "ghp_forge_double_token_123";

fn instance(forge: &ForgeDouble, kind: &str, extra: &str) -> Inst {
    let api = if kind == "gitlab" {
        forge.gitlab_url()
    } else {
        forge.base_url()
    };
    let inst = Inst::new(
        &ALL,
        &format!("forge:\n  kind: {kind}\n  api_url: {api}\n  token_env: FORGE_T\n{extra}"),
    );
    std::fs::create_dir_all(inst.home.join("bibles")).unwrap();
    std::fs::write(inst.home.join("bibles/bakery.md"), BIBLE).unwrap();
    inst
}

/// Runs fleet with the forge token in `FORGE_T` (`None`: unset); asserts the exit code.
fn fleet(inst: &Inst, token: Option<&str>, args: &[&str], code: i32) -> String {
    let mut c = inst.command(args);
    match token {
        Some(t) => c.env("FORGE_T", t),
        None => c.env_remove("FORGE_T"),
    };
    let out = c.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "fleet {args:?}:\n{text}");
    text
}

fn projects(inst: &Inst) -> serde_json::Value {
    serde_json::from_str(inst.expect(&["project", "ls", "--json"], 0).trim()).unwrap()
}

#[test]
fn a_new_project_is_made_on_github_pushed_and_its_first_request_opens_a_pull_request_there() {
    let forge = ForgeDouble::start(TOKEN);
    let inst = instance(&forge, "github", "");
    let hosted = inst.path("hosted");
    forge.host_git(&hosted);
    // GitHub has a bad moment: the create is tried again, not given up.
    forge.fail_next(502, "<html>502 Bad Gateway</html>");
    let out = fleet(
        &inst,
        Some(TOKEN),
        &["project", "new", "bakery", "--bible", "bakery"],
        0,
    );
    assert!(out.contains("project bakery created"), "{out}");
    let created = forge.created_repositories();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        (created[0].full_name.as_str(), created[0].private),
        ("fleet-bot/bakery", true)
    );
    let creates: Vec<u16> = forge
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/user/repos")
        .map(|r| r.status)
        .collect();
    assert_eq!(creates, [502, 201]);
    // The first commit is on the forge's repository, which is the project's origin.
    let bare = hosted.join("fleet-bot/bakery.git");
    assert_eq!(
        git(&bare, &["log", "--format=%s", "main"]).trim(),
        "Start the project"
    );
    let local = inst.home.join(".fleet/repos/bakery");
    assert_eq!(
        git(&local, &["remote", "get-url", "origin"]).trim(),
        bare.display().to_string()
    );
    let p = &projects(&inst)[0];
    assert_eq!(p["bible"], "bakery");
    assert_eq!(p["delivery"]["kind"], "pull_request", "{p}");
    assert_eq!(p["delivery"]["repo"], "fleet-bot/bakery", "{p}");
    // Its first request is delivered as a pull request on the new repository.
    let out = fleet(
        &inst,
        Some(TOKEN),
        &["task", "add", "Build the order page", "--project", "bakery"],
        0,
    );
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let prs = forge.pull_requests();
    assert_eq!(prs.len(), 1, "{prs:?}");
    assert_eq!(
        (prs[0].repo.as_str(), prs[0].base.as_str()),
        ("fleet-bot/bakery", "main")
    );
    assert!(git(&bare, &["branch", "--list"]).contains("fleet/epics/"));
}

#[test]
fn a_refused_token_a_taken_name_or_a_forge_that_keeps_failing_makes_nothing() {
    let forge = ForgeDouble::start(TOKEN);
    let inst = instance(&forge, "github", "");
    forge.host_git(&inst.path("hosted"));
    let local = inst.home.join(".fleet/repos/bakery");
    let nothing_made = |inst: &Inst| {
        assert!(!local.exists(), "{} was left behind", local.display());
        assert_eq!(projects(inst), serde_json::json!([]));
    };
    // No token: refused before anything is made (bad input).
    let out = fleet(
        &inst,
        None,
        &["project", "new", "bakery", "--bible", "bakery"],
        2,
    );
    assert!(
        out.contains("the token env var FORGE_T is not set"),
        "{out}"
    );
    nothing_made(&inst);
    // A token GitHub rejects: exit 5, what to do, and the token is never shown.
    let out = fleet(
        &inst,
        Some("ghp_wrong_secret_456"),
        &["project", "new", "bakery", "--bible", "bakery"],
        5,
    );
    assert!(
        out.contains("GitHub rejected the token from FORGE_T (401: Bad credentials)")
            && out.contains("Nothing was made")
            && out.contains("replace the token in FORGE_T"),
        "{out}"
    );
    assert!(!out.contains("ghp_wrong_secret_456"), "{out}");
    nothing_made(&inst);
    // The name is taken on the forge.
    forge.add_repo("fleet-bot", "bakery");
    let out = fleet(
        &inst,
        Some(TOKEN),
        &["project", "new", "bakery", "--bible", "bakery"],
        5,
    );
    assert!(
        out.contains("name already exists on this account") && out.contains("choose another name"),
        "{out}"
    );
    nothing_made(&inst);
    // A forge that keeps failing is tried three times, then given up cleanly.
    for _ in 0..3 {
        forge.fail_next(503, "{\"message\": \"Service Unavailable\"}");
    }
    let out = fleet(
        &inst,
        Some(TOKEN),
        &["project", "new", "cakes", "--bible", "bakery"],
        5,
    );
    assert!(
        out.contains("GitHub answered 503") && out.contains("3 tries"),
        "{out}"
    );
    assert!(!inst.home.join(".fleet/repos/cakes").exists());
    assert_eq!(projects(&inst), serde_json::json!([]));
    assert!(forge.created_repositories().is_empty());
}

#[test]
fn over_the_api_a_new_project_is_made_in_a_gitlab_group_and_needs_admin() {
    use std::io::BufRead;
    let forge = ForgeDouble::start(TOKEN);
    let inst = instance(&forge, "gitlab", "  owner: acme/apps\n");
    forge.host_git(&inst.path("hosted"));
    forge.add_gitlab_group("acme/apps");
    let (admin, submit) = (inst.token("admin"), inst.token("submit"));
    let mut child = inst
        .command(&["serve", "--bind", "127.0.0.1:0"])
        .env("FORGE_T", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first
        .strip_prefix("fleet serve: listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let served = support::scripted::Serving(child, base.clone());
    let http = support::server::Http::new();
    let url = format!("{base}/api/v1/projects/new");
    let body = serde_json::json!({"name": "bakery", "bible": "bakery"});
    let (s, _) = http.post(&url, Some(&submit), body.clone());
    assert_eq!(s, 403);
    assert!(forge.created_repositories().is_empty());
    let (s, v) = http.post(&url, Some(&admin), body.clone());
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["project"]["name"], "bakery");
    let created = forge.created_repositories();
    assert_eq!(
        (
            created[0].full_name.as_str(),
            created[0].forge,
            created[0].private
        ),
        ("acme/apps/bakery", "gitlab", true)
    );
    assert_eq!(
        git(
            &inst.path("hosted/acme/apps/bakery.git"),
            &["log", "--format=%s", "main"]
        )
        .trim(),
        "Start the project"
    );
    // The name is now taken (here by Fleet's own project): 409, nothing more is made.
    let (s, v) = http.post(&url, Some(&admin), body);
    assert_eq!(s, 409, "{v}");
    // Taken on the forge only: 409 with GitLab's reason, no project row, no directory.
    forge.add_gitlab_project("acme/apps/cakes");
    let (s, v) = http.post(
        &url,
        Some(&admin),
        serde_json::json!({"name": "cakes", "bible": "bakery"}),
    );
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("has already been taken"), "{v}");
    assert!(!inst.home.join(".fleet/repos/cakes").exists());
    drop(served);
    assert_eq!(projects(&inst).as_array().unwrap().len(), 1);
}
