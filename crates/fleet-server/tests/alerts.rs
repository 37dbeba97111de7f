//! The notifier follows the event log: an epic that failed, an account out of budget and an
//! account whose credentials were rejected each become one notification (a generic webhook
//! double over real HTTP here), recorded as `notification.sent`; a restarted notifier goes on
//! from its durable cursor without telling anyone twice.

use fleet_config::{InstanceConfig, NotifyKind, NotifySpec, UrlSource};
use fleet_server::Fleet;
use fleet_store::{Batch, EpicRow, NewEvent, SqliteStore, Store};
use fleet_testkit::webhook::WebhookDouble;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn fleet(store: Arc<dyn Store>, hook: &str, dir: &std::path::Path) -> Fleet {
    let mut instance = InstanceConfig::empty();
    instance.notifications.push(NotifySpec {
        kind: NotifyKind::Webhook {
            url: UrlSource::Url(hook.to_string()),
        },
        on: [
            "awaiting_acceptance",
            "failed",
            "budget_exhausted",
            "auth_failed",
        ]
        .map(String::from)
        .to_vec(),
        location: fleet_config::Location { line: 1, col: 1 },
    });
    let pipeline = fleet_pipeline::Pipeline {
        layout: fleet_pipeline::StateDir::new(dir.join(".fleet")),
        store,
        instance,
        library: fleet_config::Library::load(None).unwrap(),
        fleet_exe: "fleet".into(),
        limits: fleet_core::epic::Limits::default(),
        concurrency: 1,
        observer: None,
        shutdown: None,
    };
    let (events, _) = fleet_server::event_channel();
    Fleet::new(Arc::new(pipeline), events, "http://fleet.test".into())
}

fn event(run: &str, task: Option<&str>, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        at: 1,
        run_id: run.into(),
        task: task.map(String::from),
        attempt: None,
        kind: kind.into(),
        data,
    }
}

#[test]
fn failures_budgets_and_rejected_credentials_are_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &dir.path().join("fleet.db"),
            fleet_store::Durability::Process,
        )
        .unwrap(),
    );
    // History before the notifier first starts is not news.
    store
        .commit(&Batch {
            events: vec![event(
                "old",
                None,
                "budget.exhausted",
                json!({"account": "x"}),
            )],
            ..Batch::default()
        })
        .unwrap();
    let hooks = WebhookDouble::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = fleet(store.clone(), &hooks.url(), dir.path());
    let channels = fleet_server::alerts::Channels::from_config(&f.pipeline.instance).unwrap();
    let notifier = rt.spawn(fleet_server::alerts::notifier(
        f.clone(),
        channels,
        f.stop.subscribe(),
    ));
    // Let it take its starting point.
    std::thread::sleep(Duration::from_millis(300));

    let epic = EpicRow {
        id: "e3".into(),
        project: "shop".into(),
        request: "Add a payment page\nwith details".into(),
        state: "failed".into(),
        branch: "fleet/epics/e3".into(),
        stages: vec![fleet_store::StageRow {
            stage: "implement".into(),
            run_id: Some("e3-implement-c1r0a0".into()),
            ..Default::default()
        }],
        ..EpicRow::default()
    };
    store
        .save_epic(
            &epic,
            &[event(
                "e3",
                Some("e3"),
                "task.failed",
                json!({"reason": "tests never passed"}),
            )],
        )
        .unwrap();
    let seqs = store
        .commit(&Batch {
            events: vec![
                // An atomic task's failure inside a run is the engine's business, not news.
                event(
                    "e3-implement-c1r0a0",
                    Some("a"),
                    "task.failed",
                    json!({"reason": "x"}),
                ),
                event(
                    "e3-implement-c1r0a0",
                    Some("a"),
                    "budget.exhausted",
                    json!({"account": "anthropic", "spent_usd": 5.25}),
                ),
                event(
                    "e3-implement-c1r0a0",
                    Some("a"),
                    "account.disabled",
                    json!({"account": "openai"}),
                ),
            ],
            ..Batch::default()
        })
        .unwrap();
    f.published(*seqs.last().unwrap());

    let got = hooks.wait_received(3, Duration::from_secs(10));
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json.clone().unwrap()).collect();
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["failed", "budget_exhausted", "auth_failed"]);
    assert_eq!(bodies[0]["title"], "e3 failed: Add a payment page");
    assert!(
        bodies[0]["text"]
            .as_str()
            .unwrap()
            .contains("tests never passed")
    );
    assert_eq!(bodies[0]["task_url"], "http://fleet.test/#/tasks/e3");
    assert!(bodies[1]["text"].as_str().unwrap().contains("$5.25"));
    assert_eq!(bodies[1]["task"], "e3", "the run's epic is linked");
    assert!(bodies[2]["title"].as_str().unwrap().contains("openai"));
    let sent = |store: &dyn Store| {
        store
            .events(None, 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "notification.sent")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sent(&*store) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sent(&*store), 3);

    // A restart resumes after the handled events: nobody is told twice.
    f.stop.send(true).unwrap();
    rt.block_on(notifier).unwrap();
    let f2 = fleet(store.clone(), &hooks.url(), dir.path());
    let channels = fleet_server::alerts::Channels::from_config(&f2.pipeline.instance).unwrap();
    let again = rt.spawn(fleet_server::alerts::notifier(
        f2.clone(),
        channels,
        f2.stop.subscribe(),
    ));
    store
        .save_epic(
            &epic,
            &[event(
                "e3",
                Some("e3"),
                "task.failed",
                json!({"reason": "again"}),
            )],
        )
        .unwrap();
    let got = hooks.wait_received(4, Duration::from_secs(10));
    assert_eq!(got.len(), 4, "only the new failure was sent");
    assert!(
        got[3].json.as_ref().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("again")
    );
    f2.stop.send(true).unwrap();
    rt.block_on(again).unwrap();
}
