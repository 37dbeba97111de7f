//! Accounts and the pool under bad agents, with real processes (`cli: command` profiles):
//! a rejected key disables its account until the key is replaced — the next run then uses the
//! account again by itself, without anyone touching the database — or until `fleet accounts
//! enable`; `fleet accounts ls`, `fleet agents ls` and `fleet agents doctor` say so. Two hanging
//! profiles do not take turns while a good one of the same role is never tried.

mod support;
use support::git;

use fleet_store::Store;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Plays an agent whose vendor accepts only `good-key` in `$ACME_KEY`: anything else gets the
/// vendor's 401, as a CLI prints it.
const KEYED: &str = r#"if [ "$ACME_KEY" = good-key ]; then echo done > done.txt; echo wrote done.txt; else echo "API Error: 401 Unauthorized: invalid api key" >&2; exit 1; fi"#;

struct Instance {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

impl Instance {
    fn new(fleet_yaml: &str) -> Instance {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("instance");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
        std::fs::write(home.join("fleet.yaml"), fleet_yaml).unwrap();
        Instance {
            _tmp: tmp,
            home,
            repo,
        }
    }

    /// `fleet ARGS` with `ACME_KEY` set to `key`.
    fn fleet(&self, key: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .current_dir(&self.repo)
            .args(args)
            .env("FLEET_HOME", &self.home)
            .env("ACME_KEY", key)
            .output()
            .unwrap()
    }

    fn run(&self, key: &str, runbook: &str) -> (Output, Value) {
        std::fs::write(self.repo.join("runbook.yaml"), runbook).unwrap();
        let out = self.fleet(key, &["run", "runbook.yaml"]);
        let status = self.fleet(key, &["status", "--json"]);
        (out, serde_json::from_slice(&status.stdout).unwrap())
    }

    fn json(&self, key: &str, args: &[&str]) -> Value {
        let out = self.fleet(key, args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn store(&self) -> fleet_store::SqliteStore {
        fleet_store::SqliteStore::open(
            &self.home.join(".fleet/fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap()
    }

    /// Every stored event of this kind, in order.
    fn events(&self, kind: &str) -> Vec<fleet_store::Event> {
        self.store()
            .events(None, 0, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn attempts(status: &Value, task: &str) -> Vec<Value> {
    status["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task)
        .unwrap()["attempt_list"]
        .as_array()
        .unwrap()
        .clone()
}

fn keyed_instance() -> Instance {
    Instance::new(&format!(
        "agents:\n  keyed:\n    cli: command\n    command: {}\n    roles: [developer]\n    account: acme\naccounts:\n  acme: {{ secrets: [ACME_KEY] }}\n",
        serde_json::to_string(KEYED).unwrap()
    ))
}

const WORK: &str = "name: work\ntasks:\n  - id: work\n    role: developer\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n";

fn account<'a>(ls: &'a Value, name: &str) -> &'a Value {
    ls.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no account {name} in {ls}"))
}

#[test]
fn a_rejected_key_disables_the_account_until_the_key_is_fixed_then_the_next_run_uses_it() {
    let inst = keyed_instance();
    let (out, status) = inst.run("bad-key", WORK);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(attempts(&status, "work")[0]["outcome"], "auth_failed");
    let ls = inst.json("bad-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["state"], "disabled", "{ls}");
    assert_eq!(account(&ls, "acme")["reprobe"], false, "{ls}");
    // Doctor does not call the profile ok while its account is disabled.
    let doctor = inst.fleet("bad-key", &["agents", "doctor"]);
    assert_eq!(doctor.status.code(), Some(1), "{}", text(&doctor));
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains("PROBLEM") && said.contains("account acme: disabled since"),
        "{said}"
    );
    // The same bad key again: the account stays disabled, no attempt is made.
    let (out, status) = inst.run("bad-key", WORK);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(attempts(&status, "work").is_empty(), "{status}");
    // Once the key is fixed, `accounts ls` says the next run tries it again, and it does.
    let ls = inst.json("good-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["reprobe"], true, "{ls}");
    let (out, status) = inst.run("good-key", WORK);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list = attempts(&status, "work");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["outcome"], "passed");
    let enabled = inst.events("account.enabled");
    assert_eq!(enabled.len(), 1, "{enabled:?}");
    assert_eq!(enabled[0].data["account"], "acme");
    let ls = inst.json("good-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["state"], "usable", "{ls}");
    // Neither key is kept in the state directory, only their salted fingerprint.
    for entry in std::fs::read_dir(inst.home.join(".fleet"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for key in [&b"bad-key"[..], b"good-key"] {
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key),
                    "{} holds a key",
                    entry.path().display()
                );
            }
        }
    }
}

#[test]
fn accounts_enable_clears_a_disablement_as_an_event_and_refuses_unknown_names() {
    let inst = keyed_instance();
    let (out, _) = inst.run("bad-key", WORK);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let table = inst.fleet("bad-key", &["accounts", "ls"]);
    let said = String::from_utf8_lossy(&table.stdout);
    assert!(
        said.contains("disabled since") && said.contains("because its credentials were rejected"),
        "{said}"
    );
    let agents = inst.json("bad-key", &["agents", "ls", "--json"]);
    assert_eq!(agents["accounts"][0]["state"], "disabled", "{agents}");
    let unknown = inst.fleet("bad-key", &["accounts", "enable", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no account named \"nope\""),
        "{}",
        text(&unknown)
    );
    let enable = inst.fleet("bad-key", &["accounts", "enable", "acme"]);
    assert_eq!(enable.status.code(), Some(0), "{}", text(&enable));
    let ls = inst.json("bad-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["state"], "usable", "{ls}");
    let enabled = inst.events("account.enabled");
    assert_eq!(enabled.len(), 1, "{enabled:?}");
    assert!(
        enabled[0].data["was_disabled"]
            .as_str()
            .is_some_and(|w| w.contains("rejected")),
        "{enabled:?}"
    );
    let doctor = inst.fleet("bad-key", &["agents", "doctor"]);
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor));
}

#[test]
fn two_hanging_profiles_do_not_take_turns_while_a_good_one_is_never_tried() {
    let hang = "exec sleep 1000";
    let inst = Instance::new(&format!(
        "agents:\n\
         \x20 hang-a: {{ cli: command, command: \"{hang}\", roles: [developer], priority: 10, stall_timeout: 2s }}\n\
         \x20 hang-b: {{ cli: command, command: \"{hang}\", roles: [developer], priority: 9, stall_timeout: 2s }}\n\
         \x20 good: {{ cli: command, command: \"echo done > done.txt\", roles: [developer], priority: 1 }}\n"
    ));
    let runbook = "name: hang\ntasks:\n  - id: work\n    role: developer\n    max_attempts: 5\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n";
    let (out, status) = inst.run("", runbook);
    let list = attempts(&status, "work");
    let played: Vec<String> = inst
        .events("attempt.started")
        .iter()
        .map(|e| e.data["agent"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nplayed by {played:?}\n{list:?}",
        text(&out)
    );
    assert_eq!(played, ["hang-a", "hang-b", "good"], "{list:?}");
    assert_eq!(list[0]["outcome"], "stalled");
    assert_eq!(list[1]["outcome"], "stalled");
    assert_eq!(list[2]["outcome"], "passed");
}

#[test]
fn a_cooldown_is_shown_everywhere_and_cleared_by_hand() {
    let limited = r#"echo "Error: 429 rate limit exceeded" >&2; exit 1"#;
    let inst = Instance::new(&format!(
        "agents:\n  limited:\n    cli: command\n    command: {}\n    roles: [developer]\n    account: acme\naccounts:\n  acme: {{ secrets: [ACME_KEY] }}\n",
        serde_json::to_string(limited).unwrap()
    ));
    let runbook = "name: limited\ntasks:\n  - id: work\n    role: developer\n    max_attempts: 1\n    prompt: \"write done.txt\"\n";
    let (out, status) = inst.run("good-key", runbook);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(attempts(&status, "work")[0]["outcome"], "rate_limited");
    let ls = inst.json("good-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["state"], "cooling_down", "{ls}");
    let table = inst.fleet("good-key", &["accounts", "ls"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("cooling down until"),
        "{}",
        text(&table)
    );
    // A cooldown delays the profile's attempts; doctor notes it without failing.
    let doctor = inst.fleet("good-key", &["agents", "doctor"]);
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor));
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("note: account acme: cooling down until"),
        "{}",
        text(&doctor)
    );
    let agents = inst.json("good-key", &["agents", "ls", "--json"]);
    assert_eq!(agents["accounts"][0]["state"], "cooling_down", "{agents}");
    let enable = inst.fleet("good-key", &["accounts", "enable", "acme"]);
    assert_eq!(enable.status.code(), Some(0), "{}", text(&enable));
    assert!(
        String::from_utf8_lossy(&enable.stdout).contains("was cooling down until"),
        "{}",
        text(&enable)
    );
    let ls = inst.json("good-key", &["accounts", "ls", "--json"]);
    assert_eq!(account(&ls, "acme")["state"], "usable", "{ls}");
    let enabled = inst.events("account.enabled");
    assert_eq!(enabled.len(), 1, "{enabled:?}");
    assert!(
        enabled[0].data["was_cooling_down_until"].is_string(),
        "{enabled:?}"
    );
    // Nothing left to clear: said so, nothing recorded.
    let again = inst.fleet("good-key", &["accounts", "enable", "acme"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(inst.events("account.enabled").len(), 1);
}
