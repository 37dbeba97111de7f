//! Skill proposals under `fleet serve`: the API's scopes (read lists, only admin approves or
//! dismisses) and the dashboard's "Proposed skills" box in a real browser (Debian's chromium,
//! headless), whose buttons write the skill file or drop the proposal.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served};

use fleet_memory::{MemoryDb, Policy};
use fleet_testkit::webdriver::Browser;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn db(home: &Path) -> MemoryDb {
    MemoryDb::open(
        &home.join(".fleet").join("memory.db"),
        fleet_secrets::Redactor::new(Vec::new()),
    )
    .unwrap()
}

/// A lesson added with the CLI, then injected into K attempts that each passed, so that
/// upkeep proposes it.
fn helpful_lesson(inst: &Instance, text: &str, now: i64) -> String {
    let added: Value =
        serde_json::from_str(&inst.ok(&["memory", "add", text, "--role", "developer", "--json"]))
            .unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    let mut db = db(&inst.home);
    for a in 1..=Policy::default().promote_after {
        db.record_injection(std::slice::from_ref(&id), "run-1", &id, a, now)
            .unwrap();
        db.record_result("run-1", &id, a, true, now, &Policy::default())
            .unwrap();
    }
    id
}

#[test]
fn proposals_are_listed_with_read_and_only_admin_approves_or_dismisses_them_api_and_dashboard() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    let now = 1_800_000_000_000;
    let by_api = helpful_lesson(&inst, "Write every SQL migration so it can run twice.", now);
    let by_click = helpful_lesson(
        &inst,
        "Keep HTTP handlers free of SQL; call the store.",
        now,
    );
    let dismissed = helpful_lesson(&inst, "Name feature flags after their ticket.", now);
    let proposed = db(&inst.home).upkeep(now, &Policy::default()).unwrap();
    assert_eq!(proposed.propose.len(), 3, "{proposed:?}");
    let read = inst
        .ok(&["token", "create", "--scope", "read"])
        .trim()
        .to_string();
    let admin = inst
        .ok(&["token", "create", "--scope", "admin"])
        .trim()
        .to_string();
    let served = Served::start(&inst, "127.0.0.1", &[]);
    let http = Http::new();
    let url = |p: &str| format!("{}/api/v1/memory/proposals{p}", served.url);
    let skills = inst.home.join("skills");

    // Read lists them, with how often each helped.
    let (s, list) = http.get(&url(""), Some(&read));
    assert_eq!(s, 200, "{list}");
    let rows = list["proposals"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list}");
    let k = Policy::default().promote_after;
    assert!(
        rows.iter().all(|r| r["helped"] == k && r["used"] == k),
        "{list}"
    );

    // Read cannot approve or dismiss, nor can no token at all; nothing is written.
    let named = json!({"name": "sql-migrations"});
    let (s, body) = http.post(
        &url(&format!("/{by_api}/approve")),
        Some(&read),
        named.clone(),
    );
    assert_eq!(s, 403, "{body}");
    let (s, _) = http.post(&url(&format!("/{by_api}/approve")), None, named.clone());
    assert_eq!(s, 401);
    let (s, _) = http.post(
        &url(&format!("/{dismissed}/dismiss")),
        Some(&read),
        json!({}),
    );
    assert_eq!(s, 403);
    assert!(!skills.exists(), "a refused approve wrote a skill");

    // Admin approves: the file is written, and the skill loader reads it.
    let (s, body) = http.post(
        &url(&format!("/{by_api}/approve")),
        Some(&admin),
        named.clone(),
    );
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["skill"], "skills/sql-migrations.md");
    let lib = fleet_config::Library::load(Some(&inst.home)).unwrap();
    assert!(
        lib.skill("sql-migrations")
            .unwrap()
            .body
            .contains("can run twice")
    );
    // Twice is refused, as is an unknown lesson.
    let (s, body) = http.post(&url(&format!("/{by_api}/approve")), Some(&admin), named);
    assert_eq!(s, 409, "{body}");
    let (s, _) = http.post(&url("/L-000000000000/approve"), Some(&admin), json!({}));
    assert_eq!(s, 404);

    http.rt.block_on(async {
        let b = Browser::launch().await.unwrap();
        b.goto(&format!("{}/", served.url)).await.unwrap();
        // Read needs no token on this machine: the box lists the two left.
        let item = |id: &str| format!("#proposals li[data-proposal='{id}']");
        b.wait_present(&item(&by_click), WAIT).await.unwrap();
        b.wait_present(&item(&dismissed), WAIT).await.unwrap();
        b.wait_absent(&item(&by_api), WAIT).await.unwrap();
        b.wait_text(
            &item(&by_click),
            |t| t.contains(&format!("helped {k} of {k}")),
            WAIT,
        )
        .await
        .unwrap();
        // Without an admin token the button says what is missing, and nothing is written.
        b.click(&format!("{} button[data-action=approve]", item(&by_click)))
            .await
            .unwrap();
        b.wait_text(
            &format!("{} [data-k=result]", item(&by_click)),
            |t| t.contains("admin"),
            WAIT,
        )
        .await
        .unwrap();
        assert!(
            !skills
                .join(format!("lesson-{}.md", &by_click[2..]))
                .exists()
        );

        b.execute(
            "window.localStorage.setItem('fleet.token', arguments[0]);",
            vec![json!(admin)],
        )
        .await
        .unwrap();
        b.refresh().await.unwrap();
        b.wait_present(&item(&by_click), WAIT).await.unwrap();
        b.click(&format!("{} button[data-action=approve]", item(&by_click)))
            .await
            .unwrap();
        b.wait_text("#proposals-last", |t| t.contains("approved"), WAIT)
            .await
            .unwrap();
        b.wait_absent(&item(&by_click), WAIT).await.unwrap();
        b.wait_present(&item(&dismissed), WAIT).await.unwrap();
        b.click(&format!("{} button[data-action=dismiss]", item(&dismissed)))
            .await
            .unwrap();
        b.wait_text("#proposals-last", |t| t.contains("dismissed"), WAIT)
            .await
            .unwrap();
        b.wait_present("#proposals-none", WAIT).await.unwrap();
        b.screenshot_png(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("memory-proposals.png"),
        )
        .await
        .unwrap();
    });
    let clicked = skills.join(format!("lesson-{}.md", &by_click[2..]));
    let text = std::fs::read_to_string(&clicked).unwrap();
    assert!(text.contains("Keep HTTP handlers free of SQL"), "{text}");
    let db = db(&inst.home);
    assert!(
        db.lesson(&dismissed)
            .unwrap()
            .unwrap()
            .dismissed_at
            .is_some()
    );
    assert!(db.proposals().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&skills).unwrap().count(), 2);
}
