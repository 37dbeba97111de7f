//! Every channel over real HTTP / SMTP against the testkit's doubles: what arrives, retries,
//! and that no error carries a secret.

use fleet_notify::{Channel, Event, Notification, Notifier, Retry, Secret, Tls};
use fleet_testkit::smtp::SmtpDouble;
use fleet_testkit::telegram::TelegramDouble;
use fleet_testkit::webhook::WebhookDouble;
use std::time::{Duration, Instant};

const PUBLIC: &str = "http://fleet.example:7420";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Fast retries, so the tests stay quick: 10 ms, 20 ms, 40 ms.
fn fast() -> Retry {
    Retry {
        tries: 4,
        backoff: Duration::from_millis(10),
        max_retry_after: Duration::from_secs(5),
    }
}

fn notifier() -> Notifier {
    init();
    Notifier::new(fast())
}

fn accepted_epic() -> Notification {
    let mut n = Notification::new(
        Event::AwaitingAcceptance,
        "Epic e1 awaits acceptance",
        "Add a password reset page: 4 tasks passed review.",
    )
    .with_task(PUBLIC, "e1");
    n.project = Some("shop".into());
    n.branch = Some("fleet/epics/e1".into());
    n.pr_url = Some("https://github.com/acme/shop/pull/7".into());
    n.run_hint = Some(Notification::checkout_hint("fleet/epics/e1"));
    n
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn webhook_gets_the_json_with_its_links() {
    let hook = WebhookDouble::start();
    let channel = Channel::Webhook {
        url: Secret::new(format!("{}/hooks/fleet", hook.url())),
    };
    let sent = notifier().send(&channel, &accepted_epic()).await.unwrap();
    assert_eq!(sent.attempts, 1);
    let got = hook.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/fleet")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json = r.json.as_ref().expect("a JSON body");
    assert_eq!(json["event"], "awaiting_acceptance");
    assert_eq!(json["task"], "e1");
    assert_eq!(json["project"], "shop");
    assert_eq!(json["task_url"], "http://fleet.example:7420/#/tasks/e1");
    assert_eq!(json["branch"], "fleet/epics/e1");
    assert_eq!(json["pr_url"], "https://github.com/acme/shop/pull/7");
    assert_eq!(json["run_hint"], "git fetch && git checkout fleet/epics/e1");
    assert_eq!(json["title"], "Epic e1 awaits acceptance");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("Run it: git fetch")
    );
}

#[tokio::test]
async fn slack_gets_text_with_the_task_url() {
    let hook = WebhookDouble::start();
    let channel = Channel::Slack {
        url: Secret::new(format!("{}/services/T000/B000/SlackSecret123", hook.url())),
    };
    notifier().send(&channel, &accepted_epic()).await.unwrap();
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T000/B000/SlackSecret123");
    let json = got[0].json.as_ref().expect("a JSON body");
    let object = json.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["text"]);
    let text = json["text"].as_str().unwrap();
    assert!(text.starts_with("Epic e1 awaits acceptance\n"), "{text}");
    assert!(
        text.contains("Task: http://fleet.example:7420/#/tasks/e1"),
        "{text}"
    );
    assert!(
        text.contains("Pull request: https://github.com/acme/shop/pull/7"),
        "{text}"
    );
}

#[tokio::test]
async fn telegram_gets_send_message_to_the_chat() {
    let token = "4242:telegram-secret-token";
    let tg = TelegramDouble::start(token);
    let channel = Channel::Telegram {
        api_url: tg.api_url(),
        token: Secret::new(token),
        chat_id: -100_777,
    };
    let n = accepted_epic();
    let sent = notifier().send(&channel, &n).await.unwrap();
    assert_eq!(sent.attempts, 1);
    assert_eq!(tg.sent(), [(-100_777, n.render_text())]);
    assert!(tg.sent()[0].1.contains("Branch: fleet/epics/e1"));
}

#[tokio::test]
async fn email_arrives_over_smtp_with_auth_subject_and_links() {
    let smtp = SmtpDouble::start_with_auth("fleet", "smtp-secret-pw");
    let channel = Channel::Email {
        host: "127.0.0.1".into(),
        port: smtp.port(),
        tls: Tls::None,
        username: Some("fleet".into()),
        password: Some(Secret::new("smtp-secret-pw")),
        from: "Fleet <fleet@example.com>".into(),
        to: vec!["a@example.com".into(), "b@example.com".into()],
    };
    let mut n = accepted_epic();
    n.event = Event::Failed;
    n.title = "Task t3 failed".into();
    let sent = notifier().send(&channel, &n).await.unwrap();
    assert_eq!(sent.attempts, 1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.from, "fleet@example.com");
    assert_eq!(m.to, ["a@example.com", "b@example.com"]);
    assert_eq!(m.auth, Some(("fleet".into(), "smtp-secret-pw".into())));
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[fleet] Task t3 failed")
    );
    assert_eq!(
        m.header("From").as_deref(),
        Some("Fleet <fleet@example.com>")
    );
    let body = m.body();
    for line in [
        "Task: http://fleet.example:7420/#/tasks/e1",
        "Branch: fleet/epics/e1",
        "Pull request: https://github.com/acme/shop/pull/7",
        "Run it: git fetch && git checkout fleet/epics/e1",
    ] {
        assert!(body.contains(line), "{line:?} missing from {body:?}");
    }
    let auths = smtp.auths();
    assert_eq!(auths.len(), 1);
    assert!(auths[0].accepted);
}

#[tokio::test]
async fn a_transient_smtp_failure_is_retried_and_bad_credentials_are_not() {
    let smtp = SmtpDouble::start_with_auth("fleet", "right-password");
    let channel = |password: &str| Channel::Email {
        host: "127.0.0.1".into(),
        port: smtp.port(),
        tls: Tls::None,
        username: Some("fleet".into()),
        password: Some(Secret::new(password)),
        from: "fleet@example.com".into(),
        to: vec!["a@example.com".into()],
    };
    smtp.fail_next(2);
    let sent = notifier()
        .send(&channel("right-password"), &accepted_epic())
        .await
        .unwrap();
    assert_eq!(sent.attempts, 3);
    assert_eq!(smtp.messages().len(), 1);

    let err = notifier()
        .send(&channel("wrong-secret-pw"), &accepted_epic())
        .await
        .unwrap_err();
    assert_eq!((err.channel, err.attempts), ("email", 1), "{err}");
    assert!(err.message.contains("535"), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("wrong-secret-pw"),
        "{err:?}"
    );
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_webhook_failing_twice_with_503_succeeds_on_the_third_try() {
    let hook = WebhookDouble::start();
    hook.fail_next(2, 503);
    let channel = Channel::Webhook {
        url: Secret::new(format!("{}/h", hook.url())),
    };
    let sent = notifier().send(&channel, &accepted_epic()).await.unwrap();
    assert_eq!(sent.attempts, 3);
    let statuses: Vec<u16> = hook.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn retries_stop_after_the_last_try() {
    let hook = WebhookDouble::start();
    hook.fail_next(10, 500);
    let channel = Channel::Webhook {
        url: Secret::new(format!("{}/h", hook.url())),
    };
    let err = notifier()
        .send(&channel, &accepted_epic())
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 4);
    assert_eq!(hook.received().len(), 4);
    assert!(err.message.starts_with("HTTP 500"), "{err}");
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let hook = WebhookDouble::start();
    hook.fail_next(1, 400);
    let channel = Channel::Slack {
        url: Secret::new(format!("{}/services/x/y/z", hook.url())),
    };
    let err = notifier()
        .send(&channel, &accepted_epic())
        .await
        .unwrap_err();
    assert_eq!((err.channel, err.attempts), ("slack", 1));
    assert!(err.message.contains("400"), "{err}");
    assert_eq!(hook.received().len(), 1);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let hook = WebhookDouble::start();
    hook.fail_next_retry_after(1, 429, 1);
    let channel = Channel::Webhook {
        url: Secret::new(format!("{}/h", hook.url())),
    };
    let started = Instant::now();
    let sent = notifier().send(&channel, &accepted_epic()).await.unwrap();
    assert_eq!(sent.attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
}

#[tokio::test]
async fn telegram_429_retry_after_is_honoured() {
    let token = "1:tok";
    let tg = TelegramDouble::start(token);
    tg.fail_next(1, 429, Some(1));
    let channel = Channel::Telegram {
        api_url: tg.api_url(),
        token: Secret::new(token),
        chat_id: 5,
    };
    let started = Instant::now();
    let sent = notifier().send(&channel, &accepted_epic()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(sent.attempts, 2);
    assert_eq!(tg.send_calls(), 2);
    assert_eq!(tg.sent().len(), 1);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");

    // Asked to wait longer than allowed: give up at once rather than retry too early.
    tg.fail_next(1, 429, Some(120));
    let err = notifier()
        .send(&channel, &accepted_epic())
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1, "{err}");
    assert!(err.message.contains("120"), "{err}");
    assert_eq!(tg.send_calls(), 3);
}

#[tokio::test]
async fn errors_never_carry_secrets() {
    let n = accepted_epic();
    let port = closed_port();
    let token = "987654:TOKEN-SECRET-abcdef";
    let hook_secret = "HookSecretPathXyz";
    let password = "smtp-password-secret";
    let channels = [
        Channel::Telegram {
            api_url: format!("http://127.0.0.1:{port}"),
            token: Secret::new(token),
            chat_id: 1,
        },
        Channel::Slack {
            url: Secret::new(format!(
                "http://127.0.0.1:{port}/services/T/B/{hook_secret}"
            )),
        },
        Channel::Webhook {
            url: Secret::new(format!(
                "http://127.0.0.1:{port}/{hook_secret}?k={hook_secret}"
            )),
        },
        Channel::Email {
            host: "127.0.0.1".into(),
            port,
            tls: Tls::None,
            username: Some("fleet".into()),
            password: Some(Secret::new(password)),
            from: "fleet@example.com".into(),
            to: vec!["a@example.com".into()],
        },
    ];
    let results = notifier().send_all(&channels, &n).await;
    assert_eq!(results.len(), 4);
    for (channel, result) in results {
        let err = result.expect_err("nothing listens there");
        assert_eq!(err.attempts, 4, "{err}: a refused connection is retried");
        let shown = format!("{err} | {err:?} | {channel:?}");
        for secret in [token, "TOKEN-SECRET", hook_secret, password] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(
            err.message.contains("connect") || err.message.contains("refused"),
            "{shown}"
        );
    }

    // A rejected token: answered, not retried, and still not shown.
    let tg = TelegramDouble::start("1:right");
    let wrong = Channel::Telegram {
        api_url: tg.api_url(),
        token: Secret::new(token),
        chat_id: 1,
    };
    let err = notifier().send(&wrong, &n).await.unwrap_err();
    assert_eq!(err.attempts, 1);
    assert!(err.message.contains("401 Unauthorized"), "{err}");
    assert!(!format!("{err:?}").contains("TOKEN-SECRET"), "{err:?}");
}
