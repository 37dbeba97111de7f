//! The seed's app flow, end to end with the real claude CLI against the scripted model server:
//! a project delivered by deploy to a local test environment (its deploy command publishes the
//! branch and starts a web server on loopback, printing `URL:`), QA renders the deployed page
//! with headless chromium and finds a bug, the planner plans the fix from QA's bug report, the
//! app is deployed again, QA passes, and the person accepts.

mod support;
use support::epics::{Instance, stage_list};

use fleet_testkit::{ModelServer, Scenario};
use serde_json::json;
use std::path::Path;

/// Stops the web servers the deploy commands started (their pids are in `pids`).
struct Servers<'a>(&'a Path);

impl Drop for Servers<'_> {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.0).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = std::process::Command::new("kill").arg(pid).status();
        }
    }
}

/// The page's greeting is written by a script: only a browser sees it.
const PAGE_WITH_TYPO: &str = "<html><body><h1 id=greeting></h1><script>\
    document.getElementById('greeting').textContent = 'Helo, Fleet';</script></body></html>";

fn qa_script() -> String {
    let fail = json!({"verdict": "fail", "summary": "the greeting is misspelt",
        "tested": ["the home page greets the visitor"],
        "bugs": [{"title": "greeting misspelt", "steps": "open the address of the app",
                  "expected": "the heading says Hello, Fleet", "actual": "it says Helo, Fleet",
                  "page": "/"}]})
    .to_string();
    let pass = json!({"verdict": "pass", "summary": "the greeting is right",
        "tested": ["the home page greets the visitor"]})
    .to_string();
    // QA fetches the deployed address itself and reads the page Fleet's browser rendered.
    format!(
        "mkdir -p .fleet-out && curl -fsS \"$FLEET_QA_URL\" > .fleet-out/raw.html && \
         if grep -q 'Hello, Fleet' \"$FLEET_QA_PAGE\"; then printf '%s' '{pass}'; \
         else printf '%s' '{fail}'; fi > .fleet-out/qa.json"
    )
}

fn planner_script() -> String {
    let task = |id: &str, title: &str| {
        json!({"summary": title, "phases": [{"id": format!("{id}-phase"), "title": title, "tasks": [
            {"id": id, "title": title, "role": "developer",
             "description": "Write index.html as the request says.", "depends_on": [],
             "acceptance": {"commands": ["test -s index.html"], "statements": ["the page greets"]}}]}]})
        .to_string()
    };
    format!(
        "mkdir -p .fleet-out && if [ -f index.html ]; then printf '%s' '{}'; \
         else printf '%s' '{}'; fi > .fleet-out/plan.json",
        task("fix-greeting", "Fix the greeting QA reported"),
        task("page", "Add the greeting page")
    )
}

fn server() -> ModelServer {
    let server = ModelServer::start();
    server.add_scenario(
        "researcher",
        Scenario::new().write_file(
            ".fleet-out/context.md",
            "# greeter\nA static site: index.html. Test: `test -s index.html`.\n",
        ),
    );
    server.add_scenario("planner", Scenario::new().shell(planner_script()));
    server.add_scenario(
        "developer",
        Scenario::new().shell(format!(
            "if [ \"$FLEET_TASK\" = page ]; then printf '%s' \"{PAGE_WITH_TYPO}\" > index.html; \
             else sed -i 's/Helo, Fleet/Hello, Fleet/' index.html; fi"
        )),
    );
    server.add_scenario(
        "reviewer",
        Scenario::new().write_file(
            ".fleet-out/review.json",
            r#"{"verdict": "approve", "summary": "the page is there"}"#,
        ),
    );
    server.add_scenario("qa", Scenario::new().shell(qa_script()));
    server
}

#[test]
fn qa_finds_a_bug_at_the_deployed_url_the_planner_fixes_it_qa_passes_and_the_person_accepts() {
    let server = server();
    let inst = Instance::new(&server);
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        fleet_testkit::agent_bin_dir().display()
    );
    let qa_profile = format!(
        "  qa-claude:\n    cli: claude\n    model: claude-sonnet-4-5\n    roles: [qa]\n    account: anthropic\n    base_url: \"{}\"\n    stall_timeout: 60s\n    env: {{ PATH: \"{path}\" }}\naccounts:",
        server.base_url("qa")
    );
    std::fs::write(
        inst.home.join("fleet.yaml"),
        yaml.replacen("accounts:", &qa_profile, 1),
    )
    .unwrap();
    let site = inst.home.parent().unwrap().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let pids = site.join("pids");
    let _servers = Servers(&pids);
    // The test environment: each deploy publishes the branch's files and serves them on a
    // free loopback port, in a session of its own (the deploy's process group is killed when
    // the command ends).
    let deploy = format!(
        "set -e; d={site}/$(git rev-parse --short HEAD); mkdir -p \"$d\"; cp index.html \"$d\"/; \
         port=$(python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'); \
         setsid sh -c 'echo $$ >> {pids}; exec python3 -m http.server '\"$port\"' --bind 127.0.0.1 --directory '\"$d\"'' \
           </dev/null >/dev/null 2>&1 & \
         for i in $(seq 50); do curl -fsS \"http://127.0.0.1:$port/\" >/dev/null 2>&1 && break; sleep 0.1; done; \
         echo \"URL: http://127.0.0.1:$port/\"",
        site = site.display(),
        pids = pids.display()
    );
    inst.ok(&[
        "project",
        "add",
        "greeter",
        "--repo",
        inst.repo.to_str().unwrap(),
        "--delivery",
        "deploy",
        "--deploy-command",
        &deploy,
        "--qa-browser",
    ]);
    let out = inst.ok(&[
        "task",
        "add",
        "Build a landing page that greets visitors with Hello, Fleet",
        "--project",
        "greeter",
    ]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(
        stage_list(&show),
        [
            "research1:passed",
            "plan1:passed",
            "implement1:passed",
            "review1:passed",
            "deliver1:passed",
            "qa1:failed",
            "plan2:passed",
            "implement2:passed",
            "review2:passed",
            "deliver2:passed",
            "qa2:passed",
        ]
    );
    assert_eq!(show["cycle"], 2);
    // QA's two reports: the bug at the first deployment, the pass at the second.
    let qa = show["qa"].as_array().unwrap();
    assert_eq!(qa.len(), 2, "{show}");
    assert_eq!(
        (qa[0]["verdict"].as_str(), qa[1]["verdict"].as_str()),
        (Some("fail"), Some("pass"))
    );
    let first_url = qa[0]["url"].as_str().unwrap();
    assert!(first_url.starts_with("http://127.0.0.1:"), "{first_url}");
    assert_ne!(first_url, qa[1]["url"], "each cycle is deployed anew");
    assert_eq!(show["delivery"]["url"], qa[1]["url"]);
    // Fleet's browser rendered the script-written greeting: the DOM file and a screenshot.
    let dom = std::fs::read_to_string(qa[0]["dom"].as_str().unwrap()).unwrap();
    assert!(dom.contains("Helo, Fleet</h1>"), "{dom}");
    let shot = std::fs::read(qa[0]["screenshot"].as_str().unwrap()).unwrap();
    assert_eq!(&shot[1..4], b"PNG");
    // The QA agent was given the address and the rendered page; the raw page it fetched
    // from the test environment has no greeting in it (a script writes it).
    let qa_prompts = server.requests("qa");
    assert!(
        qa_prompts
            .iter()
            .any(|r| r.contains(first_url) && r.contains("Helo, Fleet</h1>")),
        "the QA prompt has the URL and the rendered page"
    );
    // The bug report reached the planner, and the second QA and reviewer were told of it.
    assert!(
        server
            .requests("planner")
            .iter()
            .any(|r| r.contains("QA tested the app deployed at") && r.contains("greeting misspelt")),
        "the planner got QA's bug report"
    );
    assert!(
        qa_prompts
            .iter()
            .any(|r| r.contains("Earlier bug reports") && r.contains("greeting misspelt"))
    );
    assert!(
        server
            .requests("reviewer")
            .iter()
            .any(|r| r.contains("greeting misspelt"))
    );
    // The page QA passed is the fixed one, live at the delivered address.
    let live = std::process::Command::new("curl")
        .args(["-fsS", show["delivery"]["url"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&live.stdout).contains("Hello, Fleet"));

    let out = inst.ok(&["task", "accept", "e1"]);
    assert!(out.contains("done"), "{out}");
    assert_eq!(inst.show("e1")["state"], "done");
}
