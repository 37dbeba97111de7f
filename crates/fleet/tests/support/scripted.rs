//! A fleet instance whose agents are `cli: command` shell scripts (fast, deterministic), for
//! the pipeline's tests of what happens around the agents: clarification, limits, preflight.
// Each test binary uses a part of this.
#![allow(dead_code)]

use super::git;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Every role's agent. Each keeps its latest prompt in `$DIR/prompts/<role>.txt`.
/// The planner writes `$DIR/ask.json` once when it exists (questions, say), else a plan of one
/// new task `tN` (N counts the plans). The developer writes `$FLEET_TASK.txt` after sleeping
/// `$DIR/dev-sleep` seconds when that file exists. The reviewer rejects while `$DIR/reject`
/// exists (once when `$DIR/reject-once` does); asked to triage a pull request comment, it
/// answers `$DIR/triage-verdict`. The retrospector writes a lesson when its evidence holds the
/// review's "still wrong".
const AGENT: &str = r##"set -e
mkdir -p .fleet-out
cat "$FLEET_PROMPT_FILE" > "$DIR/prompts/$1.txt"
case "$1" in
  researcher) echo "# context" > .fleet-out/context.md ;;
  architect) echo "# architecture" > .fleet-out/architecture.md ;;
  planner)
    if [ -f "$DIR/ask.json" ]; then mv "$DIR/ask.json" .fleet-out/plan.json;
    else
      n=$(cat "$DIR/plans" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DIR/plans"
      printf '{"summary":"one file","phases":[{"id":"p%s","title":"P","tasks":[{"id":"t%s","title":"Add t%s","role":"developer","description":"write t%s.txt","acceptance":{"commands":["test -s t%s.txt"]}}]}]}' $n $n $n $n $n > .fleet-out/plan.json
    fi ;;
  developer)
    if [ -f "$DIR/dev-sleep" ]; then sleep "$(cat "$DIR/dev-sleep")"; fi
    echo "$FLEET_TASK is done" > "$FLEET_TASK.txt" ;;
  reviewer)
    if grep -q "You triage a comment" "$FLEET_PROMPT_FILE"; then
      printf '{"verdict": "%s", "reason": "scripted triage"}' "$(cat "$DIR/triage-verdict")" > .fleet-out/triage.json
    elif [ -f "$DIR/reject" ] || [ -f "$DIR/reject-once" ]; then
      rm -f "$DIR/reject-once"
      printf '%s' '{"verdict": "reject", "summary": "no", "bugs": [{"title": "still wrong", "details": "fix it"}]}' > .fleet-out/review.json
    else printf '%s' '{"verdict": "approve", "summary": "fine"}' > .fleet-out/review.json; fi ;;
  retrospector)
    if grep -q 'still wrong' "$FLEET_PROMPT_FILE"; then
      printf '%s' '{"lessons": [{"scope": "project", "lesson": "Shop reviewers reject a file that is still wrong: read the bug report of the last review first."}]}' > .fleet-out/lessons.json
    else printf '%s' '{"lessons": []}' > .fleet-out/lessons.json; fi ;;
esac
echo "done as $1"
"##;

pub const ALL: [&str; 4] = ["researcher", "planner", "developer", "reviewer"];

pub struct Inst {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
}

impl Inst {
    /// An instance whose agents play `roles` (plus `extra` YAML appended to fleet.yaml), and a
    /// project repository `shop` with a bare origin (not registered yet).
    pub fn new(roles: &[&str], extra: &str) -> Inst {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("shop");
        let remote = tmp.path().join("origin.git");
        for d in [&home, &repo, &tmp.path().join("prompts")] {
            std::fs::create_dir_all(d).unwrap();
        }
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
        inst.configure(roles, extra);
        inst
    }

    pub fn configure(&self, roles: &[&str], extra: &str) {
        let mut yaml = String::from("agents:\n");
        for role in roles {
            yaml.push_str(&format!(
                "  {role}-sh:\n    cli: command\n    command: \"sh {} {role}\"\n    roles: [{role}]\n    env: {{ DIR: \"{}\" }}\n",
                self.path("agent.sh").display(),
                self.tmp.path().display(),
            ));
        }
        yaml.push_str(extra);
        std::fs::write(self.home.join("fleet.yaml"), yaml).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITLAB_TOKEN");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs fleet with `args`, asserts its exit code, returns stdout and stderr.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "fleet {args:?}:\n{text}");
        text
    }

    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&String::from_utf8_lossy(
            &self.run(&["task", "show", id, "--json"]).stdout,
        ))
        .unwrap()
    }

    pub fn prompt(&self, role: &str) -> String {
        std::fs::read_to_string(self.path(&format!("prompts/{role}.txt"))).unwrap()
    }

    /// Registers the repository as project `shop`, delivered as a branch.
    pub fn add_shop(&self) {
        self.expect(
            &[
                "project",
                "add",
                "shop",
                "--repo",
                self.repo.to_str().unwrap(),
            ],
            0,
        );
    }

    /// The events of epic `id` itself (not of its stages' engine runs) of `kind`.
    pub fn events_of(&self, id: &str, kind: &str) -> Vec<Value> {
        use fleet_store::Store;
        let store = fleet_store::SqliteStore::open(
            &self.home.join(".fleet/fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap();
        store
            .events(None, 0, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind && e.run_id == id)
            .map(|e| e.data)
            .collect()
    }
}

/// `fleet serve` of an [`Inst`] on a loopback port; killed when dropped.
pub struct Serving(pub std::process::Child, pub String);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Inst {
    pub fn serve(&self) -> Serving {
        use std::io::BufRead;
        let mut child = self
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

    /// A new API token of `scope`.
    pub fn token(&self, scope: &str) -> String {
        let out = self.expect(&["token", "create", "--scope", scope, "--name", scope], 0);
        out.lines()
            .find(|l| l.starts_with("fleet_"))
            .unwrap_or_else(|| panic!("{out}"))
            .trim()
            .to_string()
    }
}
