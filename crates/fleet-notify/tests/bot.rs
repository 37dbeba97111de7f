//! The Telegram bot against the testkit's Telegram double, with a backend that records what it
//! was asked.

use fleet_notify::{BotBackend, BotConfig, Notifier, Secret, TelegramApi, run_bot};
use fleet_testkit::telegram::TelegramDouble;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "5555:bot-token-secret";
const ME: i64 = 1001;
const STRANGER: i64 = 666;
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) -> usize {
        let mut calls = self.calls.lock().unwrap();
        calls.push(call);
        calls.len()
    }
}

impl BotBackend for Recorder {
    fn submit(&self, project: &str, text: &str) -> Result<String, String> {
        let n = self.record(format!("submit {project} | {text}"));
        if project == "nope" {
            return Err("no project `nope`".into());
        }
        Ok(format!("e{n}"))
    }

    fn status(&self) -> String {
        self.record("status".into());
        "2 running, 1 awaiting acceptance".into()
    }

    fn accept(&self, id: &str) -> Result<String, String> {
        self.record(format!("accept {id}"));
        if id == "e1" {
            Ok("Accepted e1.".into())
        } else {
            Err(format!("no epic {id} awaits acceptance"))
        }
    }

    fn reject(&self, id: &str, reason: &str) -> Result<String, String> {
        self.record(format!("reject {id} | {reason}"));
        Ok(format!("Rejected {id}; rework starts."))
    }

    fn answer(&self, id: &str, text: &str) -> Result<String, String> {
        self.record(format!("answer {id} | {text}"));
        Ok(format!("{id} goes on with your answer."))
    }

    fn retry(&self, id: &str) -> Result<String, String> {
        self.record(format!("retry {id}"));
        Err(format!("epic {id} is still blocked: set GITHUB_TOKEN"))
    }
}

/// A bot running on its own runtime; stopped (and awaited) on drop.
struct Bot {
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    backend: Arc<Recorder>,
}

impl Bot {
    fn start(tg: &TelegramDouble, default_project: Option<&str>) -> Bot {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let backend = Arc::new(Recorder::default());
        let api = TelegramApi::new(&tg.api_url(), Secret::new(TOKEN), Notifier::http_client());
        let cfg = BotConfig {
            allowed_chats: vec![ME],
            default_project: default_project.map(str::to_string),
            poll_timeout_secs: 5,
            public_url: Some("http://fleet.test".into()),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(run_bot(api, cfg, backend.clone(), async {
            let _ = stopped.await;
        }));
        Bot {
            runtime,
            stop: Some(stop),
            task: Some(task),
            backend,
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let finished = self
                .runtime
                .block_on(async { tokio::time::timeout(WAIT, task).await });
            if !std::thread::panicking() {
                assert!(finished.is_ok(), "the bot did not stop on shutdown");
            }
        }
    }
}

#[test]
fn the_bot_answers_every_command() {
    let tg = TelegramDouble::start(TOKEN);
    let bot = Bot::start(&tg, Some("shop"));
    let script = [
        "/start",
        "/new_task shop: add a readme",
        "/new_task@FleetBot add x",
        "/status",
        "/accept e1",
        "/reject e1 too slow",
        "/accept e9",
        "/new_task nope: something",
        "/reject e1",
        "hello?",
    ];
    for text in script {
        tg.push_message(ME, text);
    }
    let sent = tg.wait_sent(script.len(), WAIT);
    assert!(sent.iter().all(|(chat, _)| *chat == ME), "{sent:?}");
    let replies: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        replies[0].contains("/new_task") && replies[0].contains("/reject ID REASON"),
        "{}",
        replies[0]
    );
    assert_eq!(
        replies[1],
        "Created e1 in shop: add a readme\nhttp://fleet.test/#/tasks/e1"
    );
    assert_eq!(
        replies[2],
        "Created e2 in shop: add x\nhttp://fleet.test/#/tasks/e2"
    );
    assert_eq!(replies[3], "2 running, 1 awaiting acceptance");
    assert_eq!(replies[4], "Accepted e1.");
    assert_eq!(replies[5], "Rejected e1; rework starts.");
    assert_eq!(replies[6], "Cannot accept e9: no epic e9 awaits acceptance");
    assert_eq!(
        replies[7],
        "Cannot create the task in nope: no project `nope`"
    );
    assert!(
        replies[8].starts_with("Usage: /reject ID REASON"),
        "{}",
        replies[8]
    );
    assert!(
        replies[9].starts_with("I did not understand that."),
        "{}",
        replies[9]
    );
    assert_eq!(
        bot.backend.calls(),
        [
            "submit shop | add a readme",
            "submit shop | add x",
            "status",
            "accept e1",
            "reject e1 | too slow",
            "accept e9",
            "submit nope | something",
        ]
    );
}

#[test]
fn blocked_tasks_are_answered_and_retried_from_the_chat() {
    let tg = TelegramDouble::start(TOKEN);
    let bot = Bot::start(&tg, Some("shop"));
    let script = [
        "/answer e4 the shop page, and follow the OS",
        "/retry e4",
        "/answer e4",
        "/help",
    ];
    for text in script {
        tg.push_message(ME, text);
    }
    let sent = tg.wait_sent(script.len(), WAIT);
    let replies: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(replies[0], "e4 goes on with your answer.");
    assert_eq!(
        replies[1],
        "Cannot retry e4: epic e4 is still blocked: set GITHUB_TOKEN"
    );
    assert!(
        replies[2].starts_with("Usage: /answer ID TEXT"),
        "{}",
        replies[2]
    );
    assert!(
        replies[3].contains("/answer ID TEXT") && replies[3].contains("/retry ID"),
        "{}",
        replies[3]
    );
    assert_eq!(
        bot.backend.calls(),
        ["answer e4 | the shop page, and follow the OS", "retry e4"]
    );
}

#[test]
fn other_chats_are_ignored_and_no_update_is_handled_twice() {
    let tg = TelegramDouble::start(TOKEN);
    let bot = Bot::start(&tg, Some("shop"));
    let evil = tg.push_message(STRANGER, "/new_task shop: delete everything");
    let first = tg.push_message(ME, "/status");
    let sent = tg.wait_sent(1, WAIT);
    tg.wait_confirmed(first, WAIT);
    assert_eq!(sent, [(ME, "2 running, 1 awaiting acceptance".to_string())]);
    assert_eq!(bot.backend.calls(), ["status"]);

    // Later messages: still exactly one call each, and nothing for the stranger.
    let second = tg.push_message(ME, "/status");
    let third = tg.push_message(STRANGER, "/status");
    let fourth = tg.push_message(ME, "/accept e1");
    let sent = tg.wait_sent(3, WAIT);
    tg.wait_confirmed(fourth, WAIT);
    assert!(sent.iter().all(|(chat, _)| *chat == ME), "{sent:?}");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(bot.backend.calls(), ["status", "status", "accept e1"]);
    for id in [evil, first, second, third, fourth] {
        assert_eq!(
            tg.deliveries(id),
            1,
            "update {id} was delivered more than once"
        );
    }
    let polls = tg.polls();
    assert_eq!(polls[0], None, "the first poll has no offset");
    let offsets: Vec<i64> = polls.iter().flatten().copied().collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{polls:?}");
    assert!(offsets.contains(&(first + 1)), "{polls:?}");
    assert_eq!(*offsets.last().unwrap(), fourth + 1, "{polls:?}");
}

#[test]
fn a_request_without_a_project_asks_for_one() {
    let tg = TelegramDouble::start(TOKEN);
    let bot = Bot::start(&tg, None);
    tg.push_message(ME, "/new_task add x");
    let sent = tg.wait_sent(1, WAIT);
    assert!(sent[0].1.starts_with("Which project?"), "{sent:?}");
    assert!(bot.backend.calls().is_empty());
}

#[test]
fn failed_polls_and_rate_limited_replies_do_not_stop_the_bot() {
    let tg = TelegramDouble::start(TOKEN);
    tg.fail_next_polls(1, 502);
    tg.fail_next(1, 429, Some(1));
    let bot = Bot::start(&tg, Some("shop"));
    let id = tg.push_message(ME, "/status");
    let sent = tg.wait_sent(1, WAIT);
    assert_eq!(sent, [(ME, "2 running, 1 awaiting acceptance".to_string())]);
    assert_eq!(tg.send_calls(), 2, "the 429 reply was retried once");
    assert!(
        tg.polls().len() >= 2,
        "the bot polled again after the failure"
    );
    assert_eq!(tg.deliveries(id), 1);
    assert_eq!(bot.backend.calls(), ["status"]);
}
