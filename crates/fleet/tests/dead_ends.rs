//! No dead ends: ordinary trouble (a flaky or broken deploy, a missing forge token, a forge
//! answering 500, a role nobody plays) never ends an epic as `failed`. It is retried with
//! backoff, or the epic is `blocked` with one clear question; after `fleet task answer` or a
//! fix and `fleet task retry` it continues from the stage it stopped at, keeping what landed.
//! Agents are `cli: command` scripts (fast and deterministic); the forge is the GitHub double.

mod support;
use support::git;

use fleet_testkit::forge::ForgeDouble;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

const TOKEN: &str = "ghp_deadends0123456789";

/// Every role's agent: writes its artifact; the developer writes `$FLEET_TASK.txt`, DevOps
/// `deploy-ok.txt`. The
/// planner writes `$PLAN` (or, while `$PLAN_FIRST` exists, that file's plan, once) and keeps
/// Every agent keeps its prompt in `$PROMPTS/<role>.txt`.
const AGENT: &str = r##"set -e
mkdir -p .fleet-out
cat "$FLEET_PROMPT_FILE" > "$PROMPTS/$1.txt"
case "$1" in
  researcher) echo "# context" > .fleet-out/context.md ;;
  architect) echo "# architecture" > .fleet-out/architecture.md ;;
  planner)
    if [ -f "$PROMPTS/../broken" ]; then echo '{"summary": "no phases"}' > .fleet-out/plan.json;
    elif [ -f "$PLAN_FIRST" ]; then cat "$PLAN_FIRST" > .fleet-out/plan.json; rm "$PLAN_FIRST";
    else printf '%s' "$PLAN" > .fleet-out/plan.json; fi ;;
  developer) echo "$FLEET_TASK is done" > "$FLEET_TASK.txt" ;;
  devops) echo "fixed by devops" > deploy-ok.txt ;;
  reviewer) printf '%s' '{"verdict": "approve", "summary": "fine"}' > .fleet-out/review.json ;;
esac
echo "done as $1"
"##;

struct Inst {
    tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

impl Inst {
    /// An instance whose agents play `roles`, and a project repository with a bare origin.
    fn new(roles: &[&str]) -> Inst {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("shop");
        let remote = tmp.path().join("origin.git");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(tmp.path().join("prompts")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# shop\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        git(
            tmp.path(),
            &["init", "-q", "--bare", remote.to_str().unwrap()],
        );
        git(
            &repo,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        std::fs::write(tmp.path().join("agent.sh"), AGENT).unwrap();
        let inst = Inst { tmp, home, repo };
        inst.set_roles(roles);
        inst
    }

    fn set_roles(&self, roles: &[&str]) {
        let plan = support::epics::plan("build", &[("a", "Add a", &[])]);
        let mut yaml = String::from("agents:\n");
        for role in roles {
            yaml.push_str(&format!(
                "  {role}-sh:\n    cli: command\n    command: \"sh {} {role}\"\n    roles: [{role}]\n    env: {{ PLAN: {}, PLAN_FIRST: \"{}\", PROMPTS: \"{}\" }}\n",
                self.tmp.path().join("agent.sh").display(),
                serde_json::to_string(&plan).unwrap(),
                self.tmp.path().join("plan-first.json").display(),
                self.tmp.path().join("prompts").display(),
            ));
        }
        std::fs::write(self.home.join("fleet.yaml"), yaml).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITLAB_TOKEN");
        c
    }

    fn run(&self, args: &[&str], token: bool) -> Output {
        let mut c = self.command(args);
        if token {
            c.env("GITHUB_TOKEN", TOKEN);
        }
        c.output().unwrap()
    }

    fn expect(&self, args: &[&str], token: bool, code: i32) -> String {
        let out = self.run(args, token);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "fleet {args:?}:\n{text}");
        text
    }

    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&String::from_utf8_lossy(
            &self.run(&["task", "show", id, "--json"], false).stdout,
        ))
        .unwrap()
    }
}

const ALL: [&str; 4] = ["researcher", "planner", "developer", "reviewer"];

fn stages(show: &Value) -> Vec<String> {
    support::epics::stage_list(show)
}

/// The events of epic `e1` itself (not of its stages' engine runs) of `kind`.
fn events_of(inst: &Inst, kind: &str) -> Vec<Value> {
    use fleet_store::Store;
    let store = fleet_store::SqliteStore::open(
        &inst.home.join(".fleet/fleet.db"),
        fleet_store::Durability::Process,
    )
    .unwrap();
    store
        .events(None, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind && e.run_id == "e1")
        .map(|e| e.data)
        .collect()
}

fn add_deploy_project(inst: &Inst, command: &str) {
    inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--delivery",
            "deploy",
            "--deploy-command",
            command,
        ],
        false,
        0,
    );
}

#[test]
fn a_flaky_deploy_is_retried_and_delivers_without_a_person() {
    let inst = Inst::new(&ALL);
    let count = inst.path("deploys");
    // Exits 1 the first time, then deploys.
    add_deploy_project(
        &inst,
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; \
             if [ $n -eq 0 ]; then echo 'connection reset by peer'; exit 1; fi; \
             echo 'ready: http://127.0.0.1:8099/shop'",
            c = count.display()
        ),
    );
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(
        inst.show("e1")["delivery"]["url"],
        "http://127.0.0.1:8099/shop"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "2");
    let retried = events_of(&inst, "epic.delivery_retried");
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(
        retried[0]["error"]
            .as_str()
            .unwrap()
            .contains("connection reset by peer")
    );
}

#[test]
fn a_deploy_that_keeps_failing_blocks_with_its_output_then_retry_delivers_keeping_the_work() {
    let inst = Inst::new(&ALL);
    let fixed = inst.path("fixed");
    add_deploy_project(
        &inst,
        &format!(
            "test -f {} || {{ echo 'Error: port 8099 is already in use'; exit 1; }}; \
             echo 'ready: http://127.0.0.1:8099/shop'",
            fixed.display()
        ),
    );
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["state"], "blocked");
    assert_eq!(show["blocked"]["at"], "deliver");
    let question = show["blocked"]["question"].as_str().unwrap();
    assert!(
        question.contains("port 8099 is already in use")
            && question.contains("fleet task retry e1"),
        "{question}"
    );
    assert_eq!(show["reason"], question);
    assert_eq!(events_of(&inst, "epic.delivery_retried").len(), 2);
    assert!(events_of(&inst, "task.failed").is_empty());
    let ls = inst.expect(&["task", "ls"], false, 0);
    assert!(ls.contains("blocked") && ls.contains("port 8099"), "{ls}");
    let text = inst.expect(&["task", "show", "e1"], false, 0);
    assert!(text.contains("BLOCKED  at deliver"), "{text}");

    std::fs::write(&fixed, "").unwrap();
    let out = inst.expect(&["task", "retry", "e1"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["delivery"]["url"], "http://127.0.0.1:8099/shop");
    assert!(show["blocked"].is_null() && show["reason"].is_null());
    // Continued at deliver: nothing was planned, built or reviewed again.
    assert_eq!(
        stages(&show),
        [
            "research1:passed",
            "plan1:passed",
            "implement1:passed",
            "review1:passed",
            "deliver1:blocked",
            "deliver1:passed"
        ]
    );
    // Retrying an epic that is not blocked is refused.
    let out = inst.expect(&["task", "retry", "e1"], false, 2);
    assert!(out.contains("not blocked"), "{out}");
}

#[test]
fn a_deploy_that_keeps_failing_goes_to_a_devops_agent_with_its_output_then_deploys() {
    let inst = Inst::new(&["researcher", "planner", "developer", "reviewer", "devops"]);
    add_deploy_project(
        &inst,
        "test -s deploy-ok.txt || { echo 'deploy.sh: deploy-ok.txt is missing'; exit 1; }; \
         echo 'ready: http://127.0.0.1:8099/shop'",
    );
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["delivery"]["url"], "http://127.0.0.1:8099/shop");
    let deliver = show["stages"].as_array().unwrap().last().unwrap().clone();
    assert!(
        deliver["detail"]
            .as_str()
            .unwrap()
            .contains("after a DevOps fix"),
        "{deliver}"
    );
    let prompt = std::fs::read_to_string(inst.path("prompts/devops.txt")).unwrap();
    assert!(
        prompt.contains("deploy-ok.txt is missing") && prompt.contains("test -s deploy-ok.txt"),
        "{prompt}"
    );
    assert_eq!(events_of(&inst, "epic.deploy_handed_to_devops").len(), 1);
    // The fix landed on the epic's branch with the rest of the work.
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let fixed = git(&inst.repo, &["show", &format!("{branch}:deploy-ok.txt")]);
    assert_eq!(fixed.trim(), "fixed by devops");
}

fn add_github_project(inst: &Inst, api_url: &str, token: bool, code: i32) -> String {
    inst.expect(
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--delivery",
            "pull_request",
            "--forge",
            "github",
            "--api-url",
            api_url,
            "--forge-repo",
            "acme/shop",
        ],
        token,
        code,
    )
}

#[test]
fn a_missing_token_blocks_with_the_question_and_retry_opens_the_pull_request() {
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Inst::new(&ALL);
    // `project add` checks the token's env var up front.
    let out = add_github_project(&inst, &forge.base_url(), false, 2);
    assert!(out.contains("GITHUB_TOKEN is not set"), "{out}");
    add_github_project(&inst, &forge.base_url(), true, 0);

    // Fleet runs without the token: the work is done, then the epic asks for it.
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    let question = show["blocked"]["question"].as_str().unwrap();
    assert!(
        question.contains("set GITHUB_TOKEN") && question.contains("fleet task retry e1"),
        "{question}"
    );
    assert!(forge.pull_requests().is_empty());
    // Still unset: retry says so and changes nothing.
    let out = inst.expect(&["task", "retry", "e1"], false, 2);
    assert!(
        out.contains("still blocked") && out.contains("GITHUB_TOKEN"),
        "{out}"
    );
    assert_eq!(inst.show("e1")["state"], "blocked");

    let out = inst.expect(&["task", "retry", "e1"], true, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let prs = forge.pull_requests();
    assert_eq!(prs.len(), 1, "{prs:?}");
    let show = inst.show("e1");
    assert_eq!(show["delivery"]["number"], prs[0].number);
    assert!(stages(&show).ends_with(&["deliver1:blocked".into(), "deliver1:passed".into()]));
}

#[test]
fn a_forge_answering_500_twice_is_retried_and_the_pull_request_opens_without_a_person() {
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Inst::new(&ALL);
    add_github_project(&inst, &forge.base_url(), true, 0);
    forge.fail_next(500, "{\"message\": \"Server Error\"}");
    forge.fail_next(502, "bad gateway");
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], true, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(forge.pull_requests().len(), 1);
    let retried = events_of(&inst, "epic.delivery_retried");
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(retried.iter().all(|e| e["step"] == "open the pull request"));
}

#[test]
fn a_request_for_a_role_nobody_plays_is_refused_at_submit() {
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    // IMR routes it to role `db`; no profile plays it.
    let out = inst.expect(
        &["task", "add", "The database is slow", "--project", "shop"],
        false,
        2,
    );
    assert!(
        out.contains("no agent profile plays role db") && out.contains("roles: [db]"),
        "{out}"
    );
    assert!(inst.expect(&["task", "ls"], false, 0).trim().is_empty());
    assert!(!inst.path("prompts/planner.txt").exists(), "no agent ran");
}

#[test]
fn a_plan_naming_a_role_nobody_plays_goes_back_to_the_planner() {
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    let db_plan = support::epics::plan("build", &[("a", "Add a", &[])]).replace("developer", "db");
    std::fs::write(inst.path("plan-first.json"), db_plan).unwrap();
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["tasks"][0]["role"], "developer");
    let plan_attempts = show["stages"][1]["attempts"].as_array().unwrap().len();
    assert_eq!(plan_attempts, 2, "the db plan was refused by its check");
    // The planner is told which roles have agents.
    let prompt = std::fs::read_to_string(inst.path("prompts/planner.txt")).unwrap();
    let line = prompt
        .lines()
        .find(|l| l.contains("roles you may use here"))
        .unwrap_or_else(|| panic!("{prompt}"));
    assert!(line.contains("developer") && !line.contains("db"), "{line}");
}

#[test]
fn a_stage_whose_role_nobody_plays_blocks_and_continues_after_the_profile_is_added() {
    // No reviewer: research, plan and implement are done; review asks for one.
    let inst = Inst::new(&["researcher", "planner", "developer"]);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["blocked"]["at"], "review");
    let q = show["blocked"]["question"].as_str().unwrap();
    assert!(q.contains("plays role reviewer"), "{q}");
    assert!(events_of(&inst, "task.failed").is_empty());
    inst.set_roles(&ALL);
    let out = inst.expect(&["task", "retry", "e1"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(
        stages(&inst.show("e1")),
        [
            "research1:passed",
            "plan1:passed",
            "implement1:passed",
            "review1:blocked",
            "review1:passed",
            "deliver1:passed"
        ]
    );
}

#[test]
fn an_answer_joins_the_request_and_the_epic_continues() {
    let inst = Inst::new(&["researcher", "planner", "developer"]);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    assert_eq!(inst.show("e1")["blocked"]["at"], "review");
    let out = inst.expect(&["task", "answer", "e1", "  "], false, 2);
    assert!(out.contains("needs text"), "{out}");
    inst.set_roles(&ALL);
    let out = inst.expect(
        &[
            "task",
            "answer",
            "e1",
            "Reviewer added; keep a.txt to one line",
        ],
        false,
        0,
    );
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let prompt = std::fs::read_to_string(inst.path("prompts/reviewer.txt")).unwrap();
    assert!(
        prompt.contains("The person answered: Reviewer added; keep a.txt to one line"),
        "{prompt}"
    );
    let show = inst.show("e1");
    assert_eq!(show["answers"][0]["stage"], "review");
    assert!(
        show["answers"][0]["question"]
            .as_str()
            .unwrap()
            .contains("reviewer")
    );
}

#[test]
fn a_stage_that_cannot_finish_blocks_instead_of_failing_and_retry_runs_it_again() {
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    std::fs::write(inst.path("broken"), "").unwrap();
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], false, 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["blocked"]["at"], "plan");
    let q = show["blocked"]["question"].as_str().unwrap();
    assert!(
        q.contains("plan could not finish") && q.contains("fleet task retry"),
        "{q}"
    );
    assert!(
        events_of(&inst, "task.failed")
            .iter()
            .all(|e| e["reason"].is_null())
    );
    std::fs::remove_file(inst.path("broken")).unwrap();
    let out = inst.expect(&["task", "retry", "e1"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(
        stages(&inst.show("e1"))[..3],
        ["research1:passed", "plan1:failed", "plan1:passed"]
    );
}

/// `fleet serve` of `inst` on a loopback port; killed when dropped.
struct Serving(std::process::Child, String);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(inst: &Inst) -> Serving {
    use std::io::BufRead;
    let mut child = inst
        .command(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("fleet serve: listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Serving(child, addr)
}

#[test]
fn answer_and_retry_over_the_api_need_the_submit_scope_and_continue_a_blocked_task() {
    let inst = Inst::new(&ALL);
    let fixed = inst.path("fixed");
    add_deploy_project(
        &inst,
        &format!(
            "test -f {} || {{ echo 'Error: port 8099 is already in use'; exit 1; }}; \
             echo 'ready: http://127.0.0.1:8099/shop'",
            fixed.display()
        ),
    );
    let token = |scope: &str| {
        let out = inst.expect(
            &["token", "create", "--scope", scope, "--name", scope],
            false,
            0,
        );
        out.lines()
            .find(|l| l.starts_with("fleet_"))
            .unwrap_or_else(|| panic!("{out}"))
            .trim()
            .to_string()
    };
    let (submit, read) = (token("submit"), token("read"));
    // A blocked task is sent on the notification channels, with its question.
    let hooks = fleet_testkit::webhook::WebhookDouble::start();
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    std::fs::write(
        inst.home.join("fleet.yaml"),
        format!(
            "{yaml}notifications:\n  - kind: webhook\n    url: {}/generic\n",
            hooks.url()
        ),
    )
    .unwrap();
    let served = serve(&inst);
    let http = support::server::Http::new();
    let api = |p: &str| format!("{}{p}", served.1);
    let (s, _) = http.post(
        &api("/api/v1/tasks"),
        Some(&submit),
        serde_json::json!({"project": "shop", "request": "Add a"}),
    );
    assert_eq!(s, 201);
    let detail = |want: &str| -> Value {
        for _ in 0..600 {
            let (_, d) = http.get(&api("/api/v1/tasks/e1"), Some(&read));
            if d["task"]["state"] == want {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("e1 never became {want}");
    };
    let d = detail("blocked");
    assert_eq!(d["task"]["blocked"]["at"], "deliver");
    assert!(
        d["task"]["reason"]
            .as_str()
            .unwrap()
            .contains("port 8099 is already in use"),
        "{d}"
    );
    let sent = hooks.wait_received(1, std::time::Duration::from_secs(30));
    let note = sent[0].json.clone().unwrap();
    assert_eq!(note["event"], "blocked", "{note}");
    assert!(
        note["text"]
            .as_str()
            .unwrap()
            .contains("port 8099 is already in use")
            && note["text"]
                .as_str()
                .unwrap()
                .contains("fleet task retry e1"),
        "{note}"
    );
    let (s, _) = http.post(&api("/api/v1/tasks/e1/retry"), Some(&read), Value::Null);
    assert_eq!(s, 403);
    let (s, e) = http.post(
        &api("/api/v1/tasks/e1/answer"),
        Some(&submit),
        serde_json::json!({"comment": "x"}),
    );
    assert_eq!(s, 400, "{e}");
    std::fs::write(&fixed, "").unwrap();
    let (s, e) = http.post(&api("/api/v1/tasks/e1/retry"), Some(&submit), Value::Null);
    assert_eq!(s, 200, "{e}");
    let d = detail("awaiting_acceptance");
    assert_eq!(d["task"]["delivery"]["url"], "http://127.0.0.1:8099/shop");
    // Nothing to answer now.
    let (s, e) = http.post(
        &api("/api/v1/tasks/e1/answer"),
        Some(&submit),
        serde_json::json!({"answer": "thanks"}),
    );
    assert_eq!(s, 409, "{e}");
}

#[test]
fn epic_data_fleet_cannot_read_is_never_overwritten_by_an_empty_default() {
    use fleet_store::Store;
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    inst.expect(
        &["task", "add", "Add a", "--project", "shop", "--no-wait"],
        false,
        0,
    );
    let store = fleet_store::SqliteStore::open(
        &inst.home.join(".fleet/fleet.db"),
        fleet_store::Durability::Process,
    )
    .unwrap();
    let mut epic = store.epic("e1").unwrap().unwrap();
    // A plan written by a newer (or broken) Fleet: `tasks` is not a list.
    epic.data["tasks"] = serde_json::json!("written by someone else");
    let before = epic.data.clone();
    let expected = epic.updated_at;
    epic.updated_at += 1;
    store.update_epic(&epic, expected, &[]).unwrap();
    for args in [
        &["task", "cancel", "e1"][..],
        &["task", "show", "e1"][..],
        &["task", "resume", "e1"][..],
    ] {
        let out = inst.run(args, false);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("its stored data cannot be read"),
            "{args:?}: {text}"
        );
    }
    let after = store.epic("e1").unwrap().unwrap();
    assert_eq!(
        after.data, before,
        "nothing was written over the stored data"
    );
    assert_eq!(after.state, epic.state);
}

#[test]
fn an_architecture_step_without_an_architect_profile_blocks_instead_of_failing() {
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo http://127.0.0.1:1/x");
    let out = inst.expect(
        &["task", "add", "Design and add a", "--project", "shop"],
        false,
        1,
    );
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["blocked"]["at"], "architect");
    assert!(
        show["reason"]
            .as_str()
            .unwrap()
            .contains("No agent profile plays role architect"),
        "{show}"
    );
    let mut roles = ALL.to_vec();
    roles.push("architect");
    inst.set_roles(&roles);
    let out = inst.expect(&["task", "retry", "e1"], false, 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(
        stages(&inst.show("e1"))[..3],
        [
            "research1:passed",
            "architect1:blocked",
            "architect1:passed"
        ]
    );
}

#[test]
fn a_token_pasted_into_a_request_is_never_stored_or_shown() {
    let inst = Inst::new(&ALL);
    add_deploy_project(&inst, "echo 'ready: http://127.0.0.1:8099/shop'");
    let pasted = "ghp_pastedbyaperson0123456789abcdefghijkl";
    let request = format!("Add a, see {pasted}");
    let out = inst.expect(&["task", "add", &request, "--project", "shop"], false, 0);
    assert!(!out.contains(pasted), "{out}");
    let show = inst.show("e1");
    let request = show["request"].as_str().unwrap();
    assert!(request.contains("[redacted GitHub token]"), "{request}");
    for entry in std::fs::read_dir(inst.home.join(".fleet"))
        .unwrap()
        .flatten()
    {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(pasted),
                "{} holds the token",
                entry.path().display()
            );
        }
    }
}
