//! The Telegram bot: requests and decisions from allow-listed chats, by long polling.

use crate::message::Notification;
use crate::telegram::TelegramApi;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What `/start` and `/help` answer.
pub const HELP: &str = "Fleet takes requests here.\n\
/new_task [PROJECT:] what to do — ask for work (e.g. /new_task shop: add a password reset page)\n\
/status — what Fleet is working on\n\
/accept ID — accept a delivered epic\n\
/reject ID REASON — send it back with what to change\n\
/answer ID TEXT — answer a blocked task's question; it goes on\n\
/retry ID — after fixing what a blocked task asked about, let it go on\n\
/help — this list";

/// One message to the bot, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotCommand {
    Start,
    Help,
    /// `/new_task [PROJECT:] text`.
    NewTask {
        project: Option<String>,
        text: String,
    },
    Status,
    Accept {
        id: String,
    },
    Reject {
        id: String,
        reason: String,
    },
    /// `/answer ID text`: the answer to a blocked task's question.
    Answer {
        id: String,
        text: String,
    },
    /// `/retry ID`: the person fixed what a blocked task asked about.
    Retry {
        id: String,
    },
    /// A known command without what it needs; the text says how to use it.
    Usage(String),
    /// Not a command this bot knows (or not a command at all): what was written.
    Unknown(String),
}

/// Reads one message. Commands may carry the bot's name (`/status@FleetBot`) and are matched
/// case-insensitively. In `/new_task P: text`, `P` is the project when it is a single word
/// of letters, digits, `-` and `_` directly followed by `:` and a space (so a URL in the text
/// is never taken for a project); otherwise the whole rest is the text.
pub fn parse_command(text: &str) -> BotCommand {
    let text = text.trim();
    let Some(command) = text.strip_prefix('/') else {
        return BotCommand::Unknown(text.to_string());
    };
    let (word, rest) = match command.find(char::is_whitespace) {
        Some(i) => (&command[..i], command[i..].trim()),
        None => (command, ""),
    };
    let name = word
        .split_once('@')
        .map_or(word, |(n, _)| n)
        .to_ascii_lowercase();
    let mut args = rest.split_whitespace();
    match name.as_str() {
        "start" => BotCommand::Start,
        "help" => BotCommand::Help,
        "status" => BotCommand::Status,
        "new_task" | "newtask" => {
            let usage = || {
                BotCommand::Usage(
                    "Usage: /new_task [PROJECT:] what to do — e.g. /new_task shop: add a \
                     password reset page"
                        .to_string(),
                )
            };
            if rest.is_empty() {
                return usage();
            }
            let (project, body) = match rest.split_once(':') {
                Some((p, body))
                    if !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
                        && (body.is_empty() || body.starts_with(char::is_whitespace)) =>
                {
                    (Some(p.to_string()), body.trim())
                }
                _ => (None, rest),
            };
            if body.is_empty() {
                return usage();
            }
            BotCommand::NewTask {
                project,
                text: body.to_string(),
            }
        }
        "accept" => match (args.next(), args.next()) {
            (Some(id), None) => BotCommand::Accept { id: id.to_string() },
            _ => BotCommand::Usage("Usage: /accept ID — e.g. /accept e1".to_string()),
        },
        "reject" => {
            let id = args.next();
            let reason = id.map(|id| rest[id.len()..].trim()).unwrap_or("");
            match id {
                Some(id) if !reason.is_empty() => BotCommand::Reject {
                    id: id.to_string(),
                    reason: reason.to_string(),
                },
                _ => BotCommand::Usage(
                    "Usage: /reject ID REASON — e.g. /reject e1 the reset link expires too soon"
                        .to_string(),
                ),
            }
        }
        "answer" => {
            let id = args.next();
            let answer = id.map(|id| rest[id.len()..].trim()).unwrap_or("");
            match id {
                Some(id) if !answer.is_empty() => BotCommand::Answer {
                    id: id.to_string(),
                    text: answer.to_string(),
                },
                _ => BotCommand::Usage(
                    "Usage: /answer ID TEXT — e.g. /answer e1 the shop page, and follow the OS \
                     setting"
                        .to_string(),
                ),
            }
        }
        "retry" => match (args.next(), args.next()) {
            (Some(id), None) => BotCommand::Retry { id: id.to_string() },
            _ => BotCommand::Usage("Usage: /retry ID — e.g. /retry e1".to_string()),
        },
        _ => BotCommand::Unknown(text.to_string()),
    }
}

/// What the bot asks of Fleet. The methods may block (the server's implementation calls the
/// pipeline); the bot calls them off the async threads. Errors are texts for a person.
pub trait BotBackend: Send + Sync {
    /// Files `text` as a new request in `project`; the new task's id.
    fn submit(&self, project: &str, text: &str) -> Result<String, String>;
    /// A short overview of what is running and waiting.
    fn status(&self) -> String;
    /// Accepts a delivered epic; what to tell the person.
    fn accept(&self, id: &str) -> Result<String, String>;
    /// Rejects a delivered epic with `reason` (which becomes rework); what to tell the person.
    fn reject(&self, id: &str, reason: &str) -> Result<String, String>;
    /// Answers a blocked epic's question; what to tell the person.
    fn answer(&self, id: &str, text: &str) -> Result<String, String>;
    /// Lets a blocked epic go on after the person fixed the cause; what to tell the person.
    fn retry(&self, id: &str) -> Result<String, String>;
}

/// How the bot runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotConfig {
    /// The chats the bot answers. Messages from any other chat are ignored without a reply:
    /// a reply would tell whoever found the bot that it is live and whom it serves, and would
    /// let strangers spend its rate limit. (The ignored chat's id is logged, so an operator
    /// can find the id to allow.)
    pub allowed_chats: Vec<i64>,
    /// The project of `/new_task` requests that name none.
    pub default_project: Option<String>,
    /// How long one `getUpdates` waits for news (default 30 s).
    pub poll_timeout_secs: u64,
    /// When set, replies to `/new_task` link the new task's page.
    pub public_url: Option<String>,
}

impl Default for BotConfig {
    fn default() -> BotConfig {
        BotConfig {
            allowed_chats: Vec::new(),
            default_project: None,
            poll_timeout_secs: 30,
            public_url: None,
        }
    }
}

/// The longest wait between failed polls.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);

/// Long-polls `getUpdates` until `shutdown` completes, answering each message from an allowed
/// chat. The offset moves past every update, answered or not, so none is handled twice. A
/// failed poll is logged and retried after a growing pause (1 s, 2 s, … 60 s); nothing ends
/// the loop but `shutdown`.
pub async fn run_bot(
    api: TelegramApi,
    cfg: BotConfig,
    backend: Arc<dyn BotBackend>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut offset: Option<i64> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let polled = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            r = api.get_updates(offset, cfg.poll_timeout_secs) => r,
        };
        let updates = match polled {
            Ok(u) => {
                backoff = Duration::from_secs(1);
                u
            }
            Err(e) => {
                eprintln!(
                    "fleet: telegram bot: polling failed, again in {} s: {e}",
                    backoff.as_secs()
                );
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_POLL_BACKOFF);
                continue;
            }
        };
        for update in updates {
            offset = Some(offset.unwrap_or(i64::MIN).max(update.update_id + 1));
            let (Some(chat), Some(text)) = (update.chat_id, update.text) else {
                continue;
            };
            if !cfg.allowed_chats.contains(&chat) {
                eprintln!(
                    "fleet: telegram bot: ignored a message from chat {chat}, which is not in \
                     `allowed_chats`"
                );
                continue;
            }
            let reply = answer(&cfg, &backend, &text).await;
            if let Err(e) = api.send_message(chat, &reply).await {
                eprintln!("fleet: telegram bot: cannot reply to chat {chat}: {e}");
            }
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    backend: &Arc<dyn BotBackend>,
    f: impl FnOnce(&dyn BotBackend) -> T + Send + 'static,
) -> Result<T, String> {
    let backend = backend.clone();
    tokio::task::spawn_blocking(move || f(backend.as_ref()))
        .await
        .map_err(|_| "Fleet hit an internal error; see its log.".to_string())
}

/// The reply to one message from an allowed chat.
async fn answer(cfg: &BotConfig, backend: &Arc<dyn BotBackend>, text: &str) -> String {
    match parse_command(text) {
        BotCommand::Start | BotCommand::Help => HELP.to_string(),
        BotCommand::Usage(usage) => usage,
        BotCommand::Unknown(_) => format!("I did not understand that.\n\n{HELP}"),
        BotCommand::Status => blocking(backend, |b| b.status())
            .await
            .unwrap_or_else(|e| e),
        BotCommand::NewTask { project, text } => {
            let Some(project) = project.or_else(|| cfg.default_project.clone()) else {
                return "Which project? Write /new_task PROJECT: what to do (no default \
                        project is configured)."
                    .to_string();
            };
            let (p, t) = (project.clone(), text.clone());
            match blocking(backend, move |b| b.submit(&p, &t)).await {
                Ok(Ok(id)) => {
                    let mut reply = format!("Created {id} in {project}: {}", summary(&text));
                    if let Some(base) = &cfg.public_url {
                        reply.push('\n');
                        reply.push_str(&Notification::task_page(base, &id));
                    }
                    reply
                }
                Ok(Err(e)) | Err(e) => format!("Cannot create the task in {project}: {e}"),
            }
        }
        BotCommand::Accept { id } => {
            let i = id.clone();
            match blocking(backend, move |b| b.accept(&i)).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) | Err(e) => format!("Cannot accept {id}: {e}"),
            }
        }
        BotCommand::Reject { id, reason } => {
            let i = id.clone();
            match blocking(backend, move |b| b.reject(&i, &reason)).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) | Err(e) => format!("Cannot reject {id}: {e}"),
            }
        }
        BotCommand::Answer { id, text } => {
            let i = id.clone();
            match blocking(backend, move |b| b.answer(&i, &text)).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) | Err(e) => format!("Cannot answer {id}: {e}"),
            }
        }
        BotCommand::Retry { id } => {
            let i = id.clone();
            match blocking(backend, move |b| b.retry(&i)).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) | Err(e) => format!("Cannot retry {id}: {e}"),
            }
        }
    }
}

/// The first line of a request, at most 120 characters.
fn summary(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BotCommand::*;

    fn new_task(project: Option<&str>, text: &str) -> BotCommand {
        NewTask {
            project: project.map(str::to_string),
            text: text.to_string(),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("/start"), Start);
        assert_eq!(parse_command("  /help  "), Help);
        assert_eq!(parse_command("/status@FleetBot"), Status);
        assert_eq!(parse_command("/STATUS extra"), Status);
        assert_eq!(parse_command("/accept e1"), Accept { id: "e1".into() });
        assert_eq!(
            parse_command("/accept@FleetBot e1"),
            Accept { id: "e1".into() }
        );
        assert_eq!(
            parse_command("/reject e1 too slow\nand ugly"),
            Reject {
                id: "e1".into(),
                reason: "too slow\nand ugly".into()
            }
        );
        assert_eq!(
            parse_command("/frobnicate x"),
            Unknown("/frobnicate x".into())
        );
        assert_eq!(parse_command("hello there"), Unknown("hello there".into()));
    }

    #[test]
    fn new_task_project_prefix() {
        assert_eq!(
            parse_command("/new_task shop: add a readme"),
            new_task(Some("shop"), "add a readme")
        );
        assert_eq!(
            parse_command("/new_task@FleetBot my-app_2:  fix it "),
            new_task(Some("my-app_2"), "fix it")
        );
        assert_eq!(parse_command("/new_task add x"), new_task(None, "add x"));
        assert_eq!(
            parse_command("/new_task two words: text"),
            new_task(None, "two words: text")
        );
        assert_eq!(
            parse_command("/new_task http://example.com is down"),
            new_task(None, "http://example.com is down")
        );
        assert_eq!(
            parse_command("/new_task note:no space"),
            new_task(None, "note:no space")
        );
        assert_eq!(
            parse_command("/new_task\nmulti\nline"),
            new_task(None, "multi\nline")
        );
    }

    #[test]
    fn answer_and_retry() {
        assert_eq!(
            parse_command("/answer e3 the shop page\nand the admin"),
            Answer {
                id: "e3".into(),
                text: "the shop page\nand the admin".into()
            }
        );
        assert_eq!(
            parse_command("/retry@FleetBot e3"),
            Retry { id: "e3".into() }
        );
        for usage in [
            "/answer",
            "/answer e3",
            "/answer e3   ",
            "/retry",
            "/retry e1 e2",
        ] {
            assert!(
                matches!(parse_command(usage), Usage(_)),
                "{usage:?} should answer with its usage"
            );
        }
    }

    #[test]
    fn missing_arguments_give_usage() {
        for text in [
            "/new_task",
            "/new_task   ",
            "/new_task shop:",
            "/new_task shop:   ",
            "/accept",
            "/accept e1 e2",
            "/reject",
            "/reject e1",
            "/reject e1   ",
        ] {
            match parse_command(text) {
                Usage(u) => assert!(u.starts_with("Usage: /"), "{text:?}: {u}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summary("add a readme\nwith details"), "add a readme");
        assert_eq!(summary(&"x".repeat(200)).chars().count(), 121);
    }
}
