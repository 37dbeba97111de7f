//! Deploys without a deploy command: a DevOps agent (role `devops`) deploys to a test
//! environment and reports the address in `.fleet-out/deploy.json`; Fleet checks that it
//! answers, and QA tests that address. An unreachable or missing address goes back to a new
//! DevOps run with what was wrong, then asks a person — never a dead end. And QA that needs a
//! browser: with chromium missing the epic is `blocked`, and `fleet task retry` checks for it
//! again first (still missing: still blocked, same question, no agent launched).

mod support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use support::scripted::{ALL, Inst};

/// Pops the first line of `$DIR/urls` as the deployed address (none left: no report).
const DEVOPS: &str = r#"set -e
mkdir -p .fleet-out
cat "$FLEET_PROMPT_FILE" >> "$DIR/devops-prompts.txt"
url=$(head -n1 "$DIR/urls" 2>/dev/null || true)
if [ -n "$url" ]; then
  sed -i 1d "$DIR/urls"
  printf '{"url": "%s", "notes": "scripted"}' "$url" > .fleet-out/deploy.json
fi
echo deployed
"#;

/// Records the address it was asked to test, and passes.
const QA: &str = r#"set -e
mkdir -p .fleet-out
echo "$FLEET_QA_URL" >> "$DIR/qa-urls"
printf '{"verdict": "pass", "summary": "it works", "tested": ["the home page"]}' > .fleet-out/qa.json
"#;

fn profiles(inst: &Inst, devops: bool) -> String {
    let mut yaml = String::new();
    let mut add = |role: &str, script: &str| {
        let path = inst.path(&format!("{role}.sh"));
        std::fs::write(&path, script).unwrap();
        yaml.push_str(&format!(
            "  {role}-sh:\n    cli: command\n    command: \"sh {}\"\n    roles: [{role}]\n    env: {{ DIR: \"{}\" }}\n",
            path.display(),
            inst.tmp.path().display()
        ));
    };
    add("qa", QA);
    if devops {
        add("devops", DEVOPS);
    }
    yaml
}

/// A test environment that answers every request with a small page, for as long as the test.
fn environment() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body><h1>shop</h1></body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/")
}

/// An address nothing listens on.
fn nowhere() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/")
}

fn read(inst: &Inst, name: &str) -> String {
    std::fs::read_to_string(inst.path(name)).unwrap_or_default()
}

fn add_deploy_project(inst: &Inst, extra: &[&str]) {
    let mut args = vec![
        "project",
        "add",
        "shop",
        "--repo",
        inst.repo.to_str().unwrap(),
        "--delivery",
        "deploy",
    ];
    args.extend_from_slice(extra);
    inst.expect(&args, 0);
}

#[test]
fn a_devops_agent_deploys_its_unreachable_address_goes_back_and_qa_tests_the_one_that_answers() {
    let inst = Inst::new(&ALL, "");
    inst.configure(&ALL, &profiles(&inst, true));
    add_deploy_project(&inst, &[]);
    let (dead, good) = (nowhere(), environment());
    std::fs::write(inst.path("urls"), format!("{dead}\n{good}\n")).unwrap();
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    // QA tested the address that answers, and only that one.
    assert_eq!(read(&inst, "qa-urls").trim(), good);
    // The first DevOps run's address did not answer: the second run was told so.
    let retried = inst.events_of("e1", "epic.deploy_retried");
    assert_eq!(retried.len(), 1, "{retried:?}");
    let problem = retried[0]["problem"].as_str().unwrap();
    assert!(
        problem.contains(&dead) && problem.contains("cannot reach"),
        "{problem}"
    );
    let prompts = read(&inst, "devops-prompts.txt");
    assert!(
        prompts.contains("deploy.json") && prompts.contains("Fleet cannot reach it"),
        "{prompts}"
    );
    let deployed = inst.events_of("e1", "epic.deployed_by_devops");
    assert_eq!(deployed.len(), 1);
    assert_eq!(deployed[0]["url"], good.as_str());
}

#[test]
fn no_devops_profile_or_no_address_asks_a_person_and_retry_goes_on_from_the_deploy() {
    let inst = Inst::new(&ALL, "");
    inst.configure(&ALL, &profiles(&inst, false));
    add_deploy_project(&inst, &[]);
    let out = inst.expect(&["task", "add", "Add a", "--project", "shop"], 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["blocked"]["at"], "deliver");
    let q = show["blocked"]["question"].as_str().unwrap();
    assert!(
        q.contains("No agent profile plays role devops") && q.contains("fleet task retry e1"),
        "{q}"
    );
    // A DevOps profile now, whose agent reports no address: two runs, then the question.
    inst.configure(&ALL, &profiles(&inst, true));
    let out = inst.expect(&["task", "retry", "e1"], 1);
    assert!(out.contains("epic e1 blocked"), "{out}");
    let q = inst.show("e1")["blocked"]["question"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        q.contains("DevOps agents could not deploy")
            && q.contains("no valid .fleet-out/deploy.json")
            && q.contains("fleet task retry e1"),
        "{q}"
    );
    assert_eq!(inst.events_of("e1", "epic.deploy_retried").len(), 2);
    assert!(read(&inst, "qa-urls").is_empty());
    // The person gets the environment going; retry deploys, QA tests it, the work is kept.
    let good = environment();
    std::fs::write(inst.path("urls"), format!("{good}\n")).unwrap();
    let out = inst.expect(&["task", "retry", "e1"], 0);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(read(&inst, "qa-urls").trim(), good);
    assert_eq!(
        read(&inst, "plans").trim(),
        "1",
        "the work was not planned again"
    );
}

/// A directory of links to every program on this machine but chromium.
fn path_without_chromium(inst: &Inst) -> PathBuf {
    let bin = inst.path("bin-without-chromium");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let link = bin.join(&name);
            if name.to_string_lossy().starts_with("chromium") || link.exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), link);
        }
    }
    bin
}

#[test]
fn qa_blocked_for_a_missing_chromium_stays_blocked_on_retry_until_chromium_is_there() {
    let inst = Inst::new(&ALL, "");
    inst.configure(&ALL, &profiles(&inst, false));
    let url = environment();
    let deploy = format!("echo URL: {url}");
    add_deploy_project(&inst, &["--deploy-command", &deploy, "--qa-browser"]);
    let no_chromium = path_without_chromium(&inst);
    let fleet = |args: &[&str], path: Option<&PathBuf>| {
        let mut c = inst.command(args);
        c.env_remove("FLEET_CHROMIUM");
        if let Some(p) = path {
            c.env("PATH", p);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = fleet(
        &["task", "add", "Add a", "--project", "shop"],
        Some(&no_chromium),
    );
    assert_eq!(code, Some(1), "{out}");
    let show = inst.show("e1");
    assert_eq!(show["blocked"]["at"], "qa");
    let question = show["blocked"]["question"].as_str().unwrap().to_string();
    assert!(
        question.contains("needs a headless browser")
            && question.contains("chromium is not installed")
            && question.contains("fleet task retry e1"),
        "{question}"
    );
    assert!(read(&inst, "qa-urls").is_empty(), "no QA agent ran");
    // Still missing: retry checks first, stays blocked with the same question, runs nothing.
    let (code, out) = fleet(&["task", "retry", "e1"], Some(&no_chromium));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("epic e1 is still blocked") && out.contains(&question),
        "{out}"
    );
    let show = inst.show("e1");
    assert_eq!(show["state"], "blocked");
    assert_eq!(show["blocked"]["question"], question.as_str());
    assert!(read(&inst, "qa-urls").is_empty(), "no QA agent ran");
    // With chromium there, retry renders the deployed page and QA tests it.
    let (code, out) = fleet(&["task", "retry", "e1"], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    assert_eq!(read(&inst, "qa-urls").trim(), url);
    assert_eq!(inst.events_of("e1", "epic.qa_rendered").len(), 1);
}
