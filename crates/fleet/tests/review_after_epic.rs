//! `review_runs:` under `fleet serve`: once the driver has finished working on an epic (here it
//! awaits acceptance), Fleet starts the framework review of the epic's runs by itself, after
//! they ended (the reviewer sees each run's final event), and keeps its three documents.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use serde_json::json;

/// The reviewer: notes whether every run it got had ended, and writes the three documents.
const REVIEWER: &str = "mkdir -p .fleet-out; \
    if grep -L run.finished input/*/events.jsonl | grep -q .; then echo 'a run was live' > .fleet-out/log-analysis.md; \
    else echo 'every run had ended' > .fleet-out/log-analysis.md; fi; \
    echo 'No framework defects found.' > .fleet-out/bug-report.md; \
    echo 'Nothing to fix.' > .fleet-out/fix-plan.md";

#[test]
fn an_epic_that_awaits_acceptance_under_serve_is_reviewed_after_its_runs_ended() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    let command = REVIEWER.replace('\\', "\\\\").replace('"', "\\\"");
    let yaml = yaml.replacen(
        "accounts:\n",
        &format!(
            "  looker:\n    cli: command\n    command: \"{command}\"\n    roles: [framework-reviewer]\naccounts:\n"
        ),
        1,
    );
    std::fs::write(
        inst.home.join("fleet.yaml"),
        format!("{yaml}review_runs:\n  after: all\n"),
    )
    .unwrap();
    inst.add_shop();
    let submit = inst
        .ok(&["token", "create", "--scope", "submit", "--name", "ci"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &["--epics", "1"]);
    let http = Http::new();
    let (s, created) = http.post(
        &format!("{}/api/v1/tasks", served.url),
        Some(&submit),
        json!({"project": "shop", "request": "Add the a, b and c files to the shop"}),
    );
    assert_eq!(s, 201, "{created}");
    wait_for(300, "e1 awaiting acceptance", || {
        let (_, d) = http.get(&format!("{}/api/v1/tasks/e1", served.url), None);
        (d["task"]["state"] == "awaiting_acceptance").then_some(())
    });
    // The review writes its three documents one after another: wait for the last.
    let reviews = inst.home.join(".fleet/reviews/e1");
    wait_for(180, "the framework review of e1", || {
        reviews.join("fix-plan.md").is_file().then_some(())
    });
    let text = std::fs::read_to_string(reviews.join("log-analysis.md")).unwrap();
    assert_eq!(text.trim(), "every run had ended", "{text}");
    assert!(reviews.join("bug-report.md").is_file(), "bug-report.md");
}
