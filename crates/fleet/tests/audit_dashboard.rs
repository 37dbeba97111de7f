//! Audit findings and audit history on the dashboard, in a real browser (Debian's chromium,
//! headless, over WebDriver), and the `GET /api/v1/audits` route it reads: a security audit
//! whose auditor reports a finding twice shows one new request (linked to its task) and one
//! dropped repeat, and the configured audits with their schedules.

mod support;
use support::scripted::Inst;

use fleet_testkit::webdriver::Browser;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn the_dashboard_shows_each_audit_run_and_what_became_of_its_findings() {
    let finding = serde_json::json!({
        "title": "SQL built by string concatenation",
        "severity": "high",
        "evidence": [{"path": "src/db.rs", "detail": "line 1"}],
        "acceptance": ["queries use bind parameters"],
    });
    let inst = Inst::new(&["researcher", "planner", "developer", "reviewer"], "");
    std::fs::write(
        inst.path("findings.json"),
        serde_json::json!({"findings": [finding, finding]}).to_string(),
    )
    .unwrap();
    inst.configure(
        &["researcher", "architect", "planner", "developer", "reviewer", "db"],
        &format!(
            "  auditor-sh:\n    cli: command\n    command: \"mkdir -p .fleet-out && cp {} .fleet-out/findings.json\"\n    roles: [auditor]\n\
             audits:\n  - {{ kind: security, schedule: daily 02:00 }}\n",
            inst.path("findings.json").display()
        ),
    );
    inst.add_shop();
    inst.expect(&["audit"], 0);
    let served = inst.serve();
    let base = served.1.clone();

    let http = support::server::Http::new();
    // The route, as scripts read it.
    let (status, doc) = http.get(&format!("{base}/api/v1/audits"), None);
    assert_eq!(status, 200, "{doc}");
    http.rt.block_on(async {
        assert_eq!(doc["configured"][0]["schedule"], "daily 02:00");
        let dispositions: Vec<&str> = doc["history"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["disposition"].as_str().unwrap())
            .collect();
        assert_eq!(dispositions, ["submitted", "repeats"], "{doc}");

        let b = Browser::launch().await.unwrap();
        b.goto(&format!("{base}/")).await.unwrap();
        b.wait_present(
            "#audits-history li[data-audit=security][data-outcome=passed] \
             li[data-finding-disposition=submitted] a[data-finding-epic=e1]",
            WAIT,
        )
        .await
        .unwrap();
        b.wait_text(
            "#audits-history li[data-finding-disposition=repeats]",
            |t| t.contains("SQL built by string concatenation") && t.contains("repeats"),
            WAIT,
        )
        .await
        .unwrap();
        b.wait_text(
            "#audits-configured",
            |t| t.contains("security (daily 02:00)"),
            WAIT,
        )
        .await
        .unwrap();
    });
}
