//! Requests from trackers through `fleet serve`'s signed webhooks: a GitHub issue labelled for
//! the fleet becomes one request, a replay of the same delivery does not make a second (not even
//! when deliveries race), an unsigned or wrongly signed body is refused, and an error-tracker
//! alert becomes a request once per fingerprint.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served};

use fleet_store::Store;
use fleet_testkit::forge::ForgeDouble;
use serde_json::{Value, json};

const KEY: &str = "intake-signing-key-for-tests-0001";

fn sign(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs `body` with the given headers; returns the status and the JSON answer.
fn post(http: &Http, url: &str, headers: &[(&str, String)], body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    http.rt.block_on(async {
        let mut req = http.client.post(url).body(bytes);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

fn issue_event(number: u64, title: &str, labels: &[&str]) -> Value {
    json!({
        "action": "opened",
        "issue": {
            "number": number,
            "title": title,
            "body": "Steps: open /reset, nothing happens.",
            "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "html_url": format!("https://github.com/acme/shop/issues/{number}"),
        },
        "repository": {"full_name": "acme/shop"},
    })
}

fn github(http: &Http, served: &Served, body: &Value) -> (u16, Value) {
    let signature = sign(&serde_json::to_vec(body).unwrap());
    post(
        http,
        &format!("{}/api/v1/intake/github", served.url),
        &[
            ("x-github-event", "issues".into()),
            ("x-hub-signature-256", signature),
            ("content-type", "application/json".into()),
        ],
        body,
    )
}

/// An instance with the intake configured beside the scripted agents (what arrives is the
/// subject here, not how it is worked).
fn setup() -> (
    fleet_testkit::ModelServer,
    ForgeDouble,
    Instance,
    Served,
    Http,
) {
    let server = scripted_server();
    let forge = ForgeDouble::start(support::epics::TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Instance::new(&server);
    inst.add_shop_on_github(&forge.base_url());
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    std::fs::write(
        inst.home.join("fleet.yaml"),
        format!("{yaml}intake:\n  secret_env: FLEET_INTAKE_SECRET\n  label: fleet\n"),
    )
    .unwrap();
    let served = Served::start_with_env(&inst, "127.0.0.1", &[], &[("FLEET_INTAKE_SECRET", KEY)]);
    (server, forge, inst, served, Http::new())
}

fn epics(inst: &Instance) -> Vec<fleet_store::EpicRow> {
    inst.store().epics().unwrap()
}

#[test]
fn a_labelled_issue_becomes_one_request_and_a_replay_does_not_make_another() {
    let (_server, _forge, inst, served, http) = setup();
    let event = issue_event(12, "Password reset page does nothing", &["bug", "Fleet"]);

    let (status, answer) = github(&http, &served, &event);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let id = answer["task"]["id"].as_str().unwrap().to_string();
    let all = epics(&inst);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].project, "shop");
    assert!(
        all[0]
            .request
            .starts_with("Password reset page does nothing")
    );
    assert!(
        all[0].request.contains("Source: GitHub issue acme/shop#12"),
        "{}",
        all[0].request
    );

    // GitHub redelivers; someone replays the body: the same request, not a second.
    let (status, answer) = github(&http, &served, &event);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["task"]["id"], id.as_str());
    assert_eq!(epics(&inst).len(), 1);

    // Not labelled for the fleet, or an action that adds nothing: ignored, nothing made.
    let (status, answer) = github(&http, &served, &issue_event(13, "Typo in footer", &["bug"]));
    assert_eq!(status, 202, "{answer}");
    let mut closed = issue_event(14, "Slow checkout", &["fleet"]);
    closed["action"] = json!("closed");
    assert_eq!(github(&http, &served, &closed).0, 202);
    assert_eq!(epics(&inst).len(), 1);
}

#[test]
fn unsigned_and_wrongly_signed_deliveries_are_refused_and_make_nothing() {
    let (_server, _forge, inst, served, http) = setup();
    let url = format!("{}/api/v1/intake/github", served.url);
    let event = issue_event(20, "Add dark mode", &["fleet"]);
    let (status, answer) = post(&http, &url, &[("x-github-event", "issues".into())], &event);
    assert_eq!(status, 401, "{answer}");
    // Signed with another key.
    let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"not-the-key");
    let tag = ring::hmac::sign(&other, &serde_json::to_vec(&event).unwrap());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let headers = [
        ("x-github-event", "issues".to_string()),
        ("x-hub-signature-256", format!("sha256={hex}")),
    ];
    let (status, answer) = post(&http, &url, &headers, &event);
    assert_eq!(status, 401, "{answer}");
    // The right signature over another body.
    let headers = [
        ("x-github-event", "issues".to_string()),
        ("x-hub-signature-256", sign(b"{}")),
    ];
    assert_eq!(post(&http, &url, &headers, &event).0, 401);
    assert!(epics(&inst).is_empty());
    assert!(
        !answer.to_string().contains(KEY),
        "the key never appears in an answer"
    );
}

#[test]
fn racing_deliveries_of_one_issue_make_one_request() {
    let (_server, _forge, inst, served, http) = setup();
    let event = issue_event(30, "Checkout total ignores the discount", &["fleet"]);
    let body = serde_json::to_vec(&event).unwrap();
    let signature = sign(&body);
    let url = format!("{}/api/v1/intake/github", served.url);
    let statuses: Vec<u16> = http.rt.block_on(async {
        let sends = (0..6).map(|_| {
            http.client
                .post(&url)
                .header("x-github-event", "issues")
                .header("x-hub-signature-256", &signature)
                .body(body.clone())
                .send()
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(epics(&inst).len(), 1);
}

#[test]
fn an_alert_becomes_a_request_once_per_fingerprint() {
    let (_server, _forge, inst, served, http) = setup();
    let url = format!("{}/api/v1/intake/alert", served.url);
    let alert = json!({
        "project": "shop",
        "title": "TypeError: cart is undefined in checkout.js",
        "message": "Seen 41 times in the last hour",
        "fingerprint": "a1b2c3",
        "severity": "error",
    });
    let send = |body: &Value| {
        let signature = sign(&serde_json::to_vec(body).unwrap());
        post(&http, &url, &[("x-fleet-signature-256", signature)], body)
    };
    let (status, answer) = send(&alert);
    assert_eq!(status, 201, "{answer}");
    assert!(
        epics(&inst)[0]
            .request
            .starts_with("Fix: TypeError: cart is undefined")
    );
    let mut again = alert.clone();
    again["message"] = json!("Seen 90 times in the last hour");
    let (status, answer) = send(&again);
    assert_eq!(
        (status, answer["duplicate"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    // An unknown project or a malformed alert is a clear refusal.
    let mut stray = alert.clone();
    stray["project"] = json!("nope");
    stray["fingerprint"] = json!("zzz");
    assert_eq!(send(&stray).0, 422);
    let (status, answer) = send(&json!({"title": "no project"}));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(epics(&inst).len(), 1);
}

/// Two `fleet serve` replicas (separate homes) on one PostgreSQL, each receiving three of six
/// racing deliveries of one issue: one request, whichever replica took it. Within one process a
/// mutex would do; across replicas only the store's lease (`intake/<project>`) does.
#[test]
fn racing_deliveries_across_two_replicas_make_one_request() {
    use fleet_store::contract::pg::TestDb;
    let db = TestDb::create();
    let server = scripted_server();
    let forge = ForgeDouble::start(support::epics::TOKEN);
    forge.add_repo("acme", "shop");
    let a = Instance::new(&server);
    let yaml = format!(
        "store: {}\n{}intake:\n  secret_env: FLEET_INTAKE_SECRET\n  label: fleet\n",
        db.url(),
        std::fs::read_to_string(a.home.join("fleet.yaml")).unwrap()
    );
    std::fs::write(a.home.join("fleet.yaml"), &yaml).unwrap();
    a.add_shop_on_github(&forge.base_url());
    let b_tmp = tempfile::tempdir().unwrap();
    let b = Instance {
        home: b_tmp.path().join("instance-b"),
        _tmp: b_tmp,
        repo: a.repo.clone(),
        remote: a.remote.clone(),
    };
    std::fs::create_dir_all(&b.home).unwrap();
    std::fs::write(b.home.join("fleet.yaml"), &yaml).unwrap();
    let env = [("FLEET_INTAKE_SECRET", KEY)];
    let ra = Served::start_with_env(&a, "127.0.0.1", &[], &env);
    let rb = Served::start_with_env(&b, "127.0.0.1", &[], &env);
    let http = Http::new();

    let event = issue_event(31, "Search results lose the selected filter", &["fleet"]);
    let body = serde_json::to_vec(&event).unwrap();
    let signature = sign(&body);
    let urls: Vec<String> = [&ra.url, &rb.url]
        .iter()
        .map(|u| format!("{u}/api/v1/intake/github"))
        .collect();
    let statuses: Vec<u16> = http.rt.block_on(async {
        let sends = (0..6).map(|i| {
            http.client
                .post(&urls[i % 2])
                .header("x-github-event", "issues")
                .header("x-hub-signature-256", &signature)
                .body(body.clone())
                .send()
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    let store = fleet_store::PostgresStore::open(db.url()).unwrap();
    assert_eq!(store.epics().unwrap().len(), 1);
}
