//! People are told, and can answer, from where they are: a request sent to the Telegram bot
//! is planned, built and reviewed by `fleet serve`; when it awaits acceptance the webhook,
//! Slack, Telegram and email channels are told (local doubles over real HTTP and SMTP), with
//! links to the task page, the branch and how to run the result; the bot's /status and
//! /accept finish it. Chats not on the allow-list are ignored.

mod support;
use support::epics::{Instance, scripted_server};
use support::server::{Http, Served, wait_for};

use fleet_store::Store;
use fleet_testkit::smtp::SmtpDouble;
use fleet_testkit::telegram::TelegramDouble;
use fleet_testkit::webhook::WebhookDouble;
use std::time::Duration;

const BOT_TOKEN: &str = "123456:bot-secret-token";
const SMTP_PASSWORD: &str = "smtp-secret-pw";
const CHAT: i64 = 42;

#[test]
fn a_telegram_request_is_delivered_and_every_channel_is_told_it_awaits_acceptance() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    inst.add_shop();
    let hooks = WebhookDouble::start();
    // Slack has its own receiver: the generic webhook's fault below must not depend on which
    // of the two concurrent sends arrives first.
    let slack_hook = WebhookDouble::start();
    let telegram = TelegramDouble::start(BOT_TOKEN);
    let smtp = SmtpDouble::start_with_auth("fleet", SMTP_PASSWORD);
    // The first try of the generic webhook fails: it is retried.
    hooks.fail_next(1, 503);
    let slack_url = format!("{}/slack/T0/B0/secret-part", slack_hook.url());
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    let yaml = format!(
        "{yaml}server:\n  public_url: http://fleet.test:7420\nnotifications:\n\
         \x20 - kind: webhook\n    url: {hook}/generic\n    on: [awaiting_acceptance, failed]\n\
         \x20 - kind: slack\n    url_env: SLACK_HOOK\n\
         \x20 - kind: telegram\n    token_env: TG_TOKEN\n    chat_id: {CHAT}\n    api_url: {tg}\n\
         \x20 - kind: email\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    username: fleet\n\
         \x20   password_env: SMTP_PW\n    from: fleet@test\n    to: [ops@test]\n\
         notify_retry: {{ tries: 3, backoff_ms: 50 }}\n\
         telegram:\n  token_env: TG_TOKEN\n  api_url: {tg}\n  allowed_chats: [{CHAT}]\n  default_project: shop\n",
        hook = hooks.url(),
        tg = telegram.api_url(),
        port = smtp.port(),
    );
    std::fs::write(inst.home.join("fleet.yaml"), yaml).unwrap();
    let served = Served::start_with_env(
        &inst,
        "127.0.0.1",
        &[],
        &[
            ("SLACK_HOOK", slack_url.as_str()),
            ("TG_TOKEN", BOT_TOKEN),
            ("SMTP_PW", SMTP_PASSWORD),
        ],
    );
    let http = Http::new();
    let task = |id: &str| {
        http.get(&format!("{}/api/v1/tasks/{id}", served.url), None)
            .1
    };

    // A stranger's chat is ignored: no reply, no task.
    let stranger = telegram.push_message(99, "/new_task shop: delete everything");
    telegram.wait_confirmed(stranger, Duration::from_secs(20));
    let hello = telegram.push_message(CHAT, "/start");
    telegram.wait_confirmed(hello, Duration::from_secs(20));
    let sent = telegram.wait_sent(1, Duration::from_secs(20));
    assert_eq!(sent[0].0, CHAT);
    assert!(sent[0].1.contains("/new_task"), "{}", sent[0].1);
    assert!(
        task("e1")["error"].is_string(),
        "nothing was created for the stranger"
    );

    telegram.push_message(CHAT, "/new_task Add the a, b and c files to the shop");
    let sent = telegram.wait_sent(2, Duration::from_secs(20));
    assert!(sent[1].1.contains("Created e1 in shop"), "{}", sent[1].1);
    assert!(
        sent[1].1.contains("http://fleet.test:7420/#/tasks/e1"),
        "{}",
        sent[1].1
    );
    wait_for(120, "e1 awaiting acceptance", || {
        (task("e1")["task"]["state"] == "awaiting_acceptance").then_some(())
    });

    // Every channel is told, with the links.
    let link = "http://fleet.test:7420/#/tasks/e1";
    // The generic webhook: a 503, then the retry that succeeds; Slack once.
    let (got, slack_got) = wait_for(20, "two generic webhook calls and one Slack call", || {
        let got = hooks.received();
        let slack = slack_hook.received();
        (got.len() == 2 && slack.len() == 1).then_some((got, slack))
    });
    let generic: Vec<_> = got.iter().filter(|r| r.path == "/generic").collect();
    assert_eq!(generic.len(), 2, "{got:?}");
    assert_eq!(generic[0].status, 503);
    let body = generic[1].json.clone().unwrap();
    assert_eq!(body["event"], "awaiting_acceptance");
    assert_eq!(body["task"], "e1");
    assert_eq!(body["task_url"], link);
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    assert_eq!(body["branch"], branch.as_str());
    assert_eq!(
        body["run_hint"],
        format!("git fetch && git checkout {branch}")
    );
    let slack = &slack_got[0];
    assert!(slack.path.starts_with("/slack/"), "{}", slack.path);
    let text = slack.json.as_ref().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains(link) && text.contains("ready for acceptance"),
        "{text}"
    );
    let sent = telegram.wait_sent(3, Duration::from_secs(20));
    assert!(
        sent[2].1.contains(link) && sent[2].1.contains(&branch),
        "{}",
        sent[2].1
    );
    let mail = smtp.wait_messages(1, Duration::from_secs(20));
    assert_eq!(mail[0].to, ["ops@test"]);
    assert_eq!(
        mail[0].auth,
        Some(("fleet".to_string(), SMTP_PASSWORD.to_string()))
    );
    assert!(
        mail[0]
            .header("Subject")
            .unwrap()
            .contains("e1 is ready for acceptance")
    );
    assert!(mail[0].body().contains(link));

    // The deliveries are recorded as events; the generic webhook took two tries.
    let store = inst.store();
    let notes = wait_for(10, "4 notification.sent events", || {
        let n: Vec<_> = store
            .events(Some("e1"), 0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "notification.sent")
            .collect();
        (n.len() == 4).then_some(n)
    });
    let webhook = notes
        .iter()
        .find(|e| e.data["channel"] == "webhook")
        .unwrap();
    assert_eq!(webhook.data["attempts"], 2);

    // The bot answers status and takes the decision.
    telegram.push_message(CHAT, "/status");
    let sent = telegram.wait_sent(4, Duration::from_secs(20));
    assert!(
        sent[3].1.contains("Ready for acceptance: 1") && sent[3].1.contains("e1"),
        "{}",
        sent[3].1
    );
    telegram.push_message(CHAT, "/reject e1");
    let sent = telegram.wait_sent(5, Duration::from_secs(20));
    assert!(sent[4].1.starts_with("Usage: /reject"), "{}", sent[4].1);
    telegram.push_message(CHAT, "/accept e1");
    let sent = telegram.wait_sent(6, Duration::from_secs(20));
    assert!(sent[5].1.contains("e1 accepted"), "{}", sent[5].1);
    assert_eq!(task("e1")["task"]["state"], "done");

    // No secret reached the event log.
    let log = serde_json::to_string(&store.events(None, 0, 100_000).unwrap()).unwrap();
    for secret in [BOT_TOKEN, SMTP_PASSWORD, "secret-part"] {
        assert!(!log.contains(secret), "{secret} leaked into events");
    }
    assert!(served.stop().success());
}

#[test]
fn a_missing_channel_secret_stops_serve_with_exit_2_naming_the_variable() {
    let server = scripted_server();
    let inst = Instance::new(&server);
    let yaml = std::fs::read_to_string(inst.home.join("fleet.yaml")).unwrap();
    std::fs::write(
        inst.home.join("fleet.yaml"),
        format!("{yaml}notifications:\n  - kind: slack\n    url_env: NOT_SET_ANYWHERE\n"),
    )
    .unwrap();
    let out = inst.fleet(&["serve", "--bind", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
}
