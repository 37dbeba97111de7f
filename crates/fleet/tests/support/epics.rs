//! A fleet instance for the pipeline's tests: a git project with a bare remote, and claude
//! profiles for every role pointed at the scripted model server.
// Each test binary uses a part of this.
#![allow(dead_code)]

use super::git;
use fleet_testkit::{ModelServer, Scenario};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

pub const TOKEN: &str = "ghp_testtoken0123456789";

pub fn plan(phase: &str, tasks: &[(&str, &str, &[&str])]) -> String {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(id, title, deps)| {
            serde_json::json!({
                "id": id, "title": title, "role": "developer",
                "description": format!("Create {id}.txt saying that {id} is done."),
                "depends_on": deps,
                "acceptance": {"commands": [format!("test -s {id}.txt")],
                               "statements": [format!("{id}.txt names its task")]}
            })
        })
        .collect();
    serde_json::json!({"summary": format!("{phase}: small files, one per task"),
                       "phases": [{"id": phase, "title": phase, "tasks": tasks}]})
    .to_string()
}

/// The planner looks at the repository and plans what is missing: the first plan, then the
/// fix the review asked for, then the fix the person asked for, then the fix a pull request
/// review comment asked for.
pub fn planner_script() -> String {
    let p1 = plan(
        "build",
        &[
            ("a", "Add a", &[]),
            ("b", "Add b after a", &["a"]),
            ("c", "Add c", &[]),
        ],
    );
    let p2 = plan(
        "review-fixes",
        &[("fix-review", "Add what the review asked", &[])],
    );
    let p3 = plan(
        "person-fixes",
        &[("fix-accept", "Add what the person asked", &[])],
    );
    let p4 = plan(
        "comment-fixes",
        &[("fix-comment", "Add what the PR comment asked", &[])],
    );
    format!(
        "mkdir -p .fleet-out && if [ -f fix-accept.txt ]; then printf '%s' '{p4}'; \
         elif [ -f fix-review.txt ]; then printf '%s' '{p3}'; \
         elif [ -f a.txt ]; then printf '%s' '{p2}'; else printf '%s' '{p1}'; fi > .fleet-out/plan.json"
    )
}

/// The reviewer rejects until the fix it asks for is on the branch.
pub fn reviewer_script() -> String {
    let reject = serde_json::json!({"verdict": "reject", "summary": "fix-review.txt is missing",
        "bugs": [{"title": "no fix-review.txt", "details": "the release needs fix-review.txt", "file": "fix-review.txt"}]})
    .to_string();
    let approve =
        serde_json::json!({"verdict": "approve", "summary": "all criteria hold"}).to_string();
    format!(
        "mkdir -p .fleet-out && if [ -f fix-review.txt ]; then printf '%s' '{approve}'; \
         else printf '%s' '{reject}'; fi > .fleet-out/review.json"
    )
}

pub struct Instance {
    pub _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
    pub remote: PathBuf,
}

impl Instance {
    pub fn new(server: &ModelServer) -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("shop");
        let remote = tmp.path().join("origin.git");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
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
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            fleet_testkit::agent_bin_dir().display()
        );
        let profile = |name: &str, role: &str, scenario: &str| {
            format!(
                "  {name}:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [{role}]\n    account: anthropic\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\n",
                server.base_url(scenario)
            )
        };
        let yaml = format!(
            "agents:\n{}{}{}{}{}{}accounts:\n  anthropic: {{ secrets: [CLAUDE_CODE_OAUTH_TOKEN], daily_budget_usd: 100 }}\nrouting:\n  classifier: classifier-claude\n",
            profile("researcher-claude", "researcher", "researcher"),
            profile("planner-claude", "planner", "planner"),
            profile("dev-claude", "developer", "developer"),
            profile("reviewer-claude", "reviewer", "reviewer"),
            profile("classifier-claude", "classifier", "classifier"),
            profile("architect-claude", "architect", "architect"),
        );
        std::fs::write(home.join("fleet.yaml"), yaml).unwrap();
        Instance {
            _tmp: tmp,
            home,
            repo,
            remote,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-test-secret-0001")
            .env("GITHUB_TOKEN", TOKEN)
            .env("GITLAB_TOKEN", TOKEN);
        c
    }

    pub fn fleet(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.fleet(args);
        assert!(
            out.status.success(),
            "fleet {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers the repository as project `shop` (branch delivery) with one check.
    pub fn add_shop(&self) {
        self.ok(&[
            "project",
            "add",
            "shop",
            "--repo",
            self.repo.to_str().unwrap(),
            "--check",
            "test -s README.md",
        ]);
    }

    /// `shop`, delivered as a pull request to `acme/shop` on the GitHub double at `api_url`.
    pub fn add_shop_on_github(&self, api_url: &str) {
        self.ok(&[
            "project",
            "add",
            "shop",
            "--repo",
            self.repo.to_str().unwrap(),
            "--check",
            "test -s README.md",
            "--delivery",
            "pull_request",
            "--forge",
            "github",
            "--api-url",
            api_url,
            "--forge-repo",
            "acme/shop",
        ]);
    }

    /// The instance's store, opened beside a running fleet (SQLite in WAL mode allows that).
    pub fn store(&self) -> fleet_store::SqliteStore {
        fleet_store::SqliteStore::open(
            &self.home.join(".fleet/fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap()
    }

    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["task", "show", id, "--json"])).unwrap()
    }

    pub fn file_on_branch(&self, file: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args([
                "show",
                &format!("{}:{file}", super::fleet_branch(&self.repo, "epics", "e1")),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub fn stage_list(show: &Value) -> Vec<String> {
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}{}:{}",
                s["stage"].as_str().unwrap(),
                s["cycle"],
                s["state"].as_str().unwrap()
            )
        })
        .collect()
}

/// The scripted model server with every role's scenario.
pub fn scripted_server() -> ModelServer {
    let server = ModelServer::start();
    server.add_scenario(
        "researcher",
        Scenario::new().write_file(
            ".fleet-out/context.md",
            "# shop\nLayout: README.md only. Build: none. Test: `test -s <file>`.\n",
        ),
    );
    server.add_scenario("planner", Scenario::new().shell(planner_script()));
    server.add_scenario(
        "developer",
        Scenario::new().shell("echo \"$FLEET_TASK is done\" > \"$FLEET_TASK.txt\""),
    );
    server.add_scenario("reviewer", Scenario::new().shell(reviewer_script()));
    server.add_scenario(
        "architect",
        Scenario::new().write_file(
            ".fleet-out/architecture.md",
            "# Architecture\nOne static page per file; no build step.\n",
        ),
    );
    server.add_scenario(
        "classifier",
        Scenario::new().write_file(".fleet-out/intent.txt", "db_issue\n"),
    );
    server
}
