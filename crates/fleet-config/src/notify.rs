//! `fleet.yaml`'s `notifications:`, `notify_retry:` and `telegram:` sections: who is told what,
//! and the Telegram bot that takes requests.
//!
//! ```yaml
//! notifications:
//!   - kind: webhook               # webhook | slack | telegram | email
//!     url: https://example/hook   # or url_env: NAME
//!     on: [awaiting_acceptance, failed]   # default: all events
//!   - kind: slack
//!     url_env: FLEET_SLACK_WEBHOOK          # a Slack webhook URL is a secret: env only
//!   - kind: telegram
//!     token_env: FLEET_TELEGRAM_TOKEN
//!     chat_id: 12345
//!     api_url: https://api.telegram.org     # the default
//!   - kind: email
//!     host: smtp.example
//!     port: 587                   # default: 587 starttls, 465 tls, 25 none
//!     tls: starttls               # none | starttls | tls (default starttls)
//!     username: fleet             # optional
//!     password_env: SMTP_PASSWORD # optional
//!     from: fleet@example
//!     to: [a@example, b@example]
//! notify_retry: { tries: 4, backoff_ms: 200 }
//! telegram:
//!   token_env: FLEET_TELEGRAM_TOKEN
//!   allowed_chats: [12345]
//!   default_project: shop
//! ```
//!
//! Secrets (bot tokens, Slack webhook URLs, SMTP passwords) are never written here: the file
//! names the environment variable that holds each one, and no error echoes what was written in
//! a place meant for a variable name.

use crate::Location;
use crate::decode::{Decoder, Field};
use crate::instance::string_list_spanned;
use crate::yaml::{Node, Value};

/// Every event a notification may be sent `on:`, in the order of the product contract.
/// (`fleet-notify` has one `Event` per entry; a test there keeps the two lists equal.)
pub const NOTIFY_EVENTS: &[&str] = &[
    "awaiting_acceptance",
    "failed",
    "budget_exhausted",
    "auth_failed",
    "blocked",
    "pr_merged",
    "pr_closed",
];

/// Every `kind:` of notification.
pub const NOTIFY_KINDS: &[&str] = &["webhook", "slack", "telegram", "email"];

/// Where the Telegram Bot API is, unless `api_url:` says otherwise.
pub const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";

pub(crate) const COMMON_KEYS: &[&str] = &["kind", "on"];
pub(crate) const WEBHOOK_KEYS: &[&str] = &["kind", "on", "url", "url_env"];
pub(crate) const SLACK_KEYS: &[&str] = &["kind", "on", "url", "url_env"];
pub(crate) const TELEGRAM_KEYS: &[&str] = &["kind", "on", "token_env", "chat_id", "api_url"];
pub(crate) const EMAIL_KEYS: &[&str] = &[
    "kind",
    "on",
    "host",
    "port",
    "tls",
    "username",
    "password_env",
    "from",
    "to",
];
pub(crate) const RETRY_KEYS: &[&str] = &["tries", "backoff_ms"];
pub(crate) const BOT_KEYS: &[&str] = &["token_env", "api_url", "allowed_chats", "default_project"];

/// One entry of `notifications:`, as written (secrets are still variable names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySpec {
    pub kind: NotifyKind,
    /// The events (names from [`NOTIFY_EVENTS`]) this channel is told about; never empty.
    pub on: Vec<String>,
    /// Where the entry starts.
    pub location: Location,
}

impl NotifySpec {
    /// Whether this channel wants `event` (a name from [`NOTIFY_EVENTS`]).
    pub fn wants(&self, event: &str) -> bool {
        self.on.iter().any(|e| e == event)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyKind {
    /// `POST` of the notification as JSON.
    Webhook {
        url: UrlSource,
    },
    /// A Slack incoming webhook; its URL is a secret, so only `url_env` is accepted.
    Slack {
        url_env: String,
    },
    /// A Telegram Bot API `sendMessage` to one chat.
    Telegram {
        token_env: String,
        chat_id: i64,
        /// No trailing `/`.
        api_url: String,
    },
    Email(EmailSpec),
}

impl NotifyKind {
    /// `webhook`, `slack`, `telegram` or `email`.
    pub fn name(&self) -> &'static str {
        match self {
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Slack { .. } => "slack",
            NotifyKind::Telegram { .. } => "telegram",
            NotifyKind::Email(_) => "email",
        }
    }
}

/// A URL written in the file, or the name of the variable holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Url(String),
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    /// The variable holding the SMTP password.
    pub password_env: Option<String>,
    pub from: String,
    /// Never empty.
    pub to: Vec<String>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailTls {
    /// Plain text (a local relay).
    None,
    /// Plain text upgraded with `STARTTLS`, which is required (port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl EmailTls {
    /// The usual port: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            EmailTls::None => 25,
            EmailTls::StartTls => 587,
            EmailTls::Tls => 465,
        }
    }
}

/// `notify_retry:`: how often a notification is tried, with exponential backoff between
/// tries (`backoff_ms`, then twice that, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyRetry {
    /// 1 to 20; default 4.
    pub tries: u32,
    /// Default 200.
    pub backoff_ms: u64,
}

impl Default for NotifyRetry {
    fn default() -> NotifyRetry {
        NotifyRetry {
            tries: 4,
            backoff_ms: 200,
        }
    }
}

/// `telegram:`: the bot that takes requests by long polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramSpec {
    /// The variable holding the bot token.
    pub token_env: String,
    /// No trailing `/`.
    pub api_url: String,
    /// The chats the bot answers; never empty.
    pub allowed_chats: Vec<i64>,
    /// The project of `/new_task` requests that name none.
    pub default_project: Option<String>,
    pub location: Location,
}

pub(crate) fn notifications(d: &mut Decoder<'_>, node: &Node) -> Vec<NotifySpec> {
    let items = match &node.value {
        Value::Seq(items) => items,
        _ => {
            d.error(
                node.loc,
                format!(
                    "`notifications`: expected a list of channels (each with `kind`), found {}",
                    node.describe()
                ),
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .filter_map(|item| notification(d, item))
        .collect()
}

fn notification(d: &mut Decoder<'_>, node: &Node) -> Option<NotifySpec> {
    let expected = format!("a mapping with `kind` ({})", NOTIFY_KINDS.join(", "));
    let Some(kind_node) = node.get("kind") else {
        // Report the shape (or unknown keys) first, then the missing kind.
        let fields = d.fields(node, COMMON_KEYS, "in a notification", &expected)?;
        d.error(
            fields.start,
            format!(
                "a notification needs `kind` (one of: {})",
                NOTIFY_KINDS.join(", ")
            ),
        );
        return None;
    };
    let kind = d.text(kind_node, "kind")?;
    let (known, context): (&[&str], &str) = match kind.value.as_str() {
        "webhook" => (WEBHOOK_KEYS, "in a `webhook` notification"),
        "slack" => (SLACK_KEYS, "in a `slack` notification"),
        "telegram" => (TELEGRAM_KEYS, "in a `telegram` notification"),
        "email" => (EMAIL_KEYS, "in an `email` notification"),
        other => {
            d.error(
                kind.at,
                format!(
                    "`kind`: unknown notification kind {other:?}; expected one of: {}",
                    NOTIFY_KINDS.join(", ")
                ),
            );
            return None;
        }
    };
    let fields = d.fields(node, known, context, &expected)?;
    let start = fields.start;
    let before = d.errors.len();
    let get = |key: &str| fields.list.iter().find(|f| f.key == key);
    let on = match get("on") {
        Some(f) => events(d, f.value),
        None => NOTIFY_EVENTS.iter().map(|e| e.to_string()).collect(),
    };
    let missing = |d: &mut Decoder<'_>, key: &str, what: &str| {
        d.error(
            start,
            format!(
                "{} notification needs `{key}` ({what})",
                article(&kind.value)
            ),
        );
    };
    let kind = match kind.value.as_str() {
        "webhook" => {
            let url = match (get("url"), get("url_env")) {
                (Some(_), Some(env)) => {
                    d.error(env.at, "give either `url` or `url_env`, not both");
                    None
                }
                (Some(u), None) => http_url(d, u.value, "url").map(UrlSource::Url),
                (None, Some(e)) => {
                    env_name(d, e.value, "url_env", "WEBHOOK_URL", "URL").map(UrlSource::Env)
                }
                (None, None) => {
                    missing(d, "url", "or `url_env`: the variable that holds the URL");
                    None
                }
            };
            url.map(|url| NotifyKind::Webhook { url })
        }
        "slack" => {
            if let Some(u) = get("url") {
                // Never echo it: it is the secret.
                d.error(
                    u.at,
                    "a Slack webhook URL is a secret: put it in an environment variable and \
                     name that variable with `url_env` (like `url_env: FLEET_SLACK_WEBHOOK`)",
                );
            }
            match get("url_env") {
                Some(e) => env_name(d, e.value, "url_env", "FLEET_SLACK_WEBHOOK", "URL")
                    .map(|url_env| NotifyKind::Slack { url_env }),
                None => {
                    if get("url").is_none() {
                        missing(d, "url_env", "the variable that holds the webhook URL");
                    }
                    None
                }
            }
        }
        "telegram" => {
            let token_env = match get("token_env") {
                Some(f) => env_name(d, f.value, "token_env", "FLEET_TELEGRAM_TOKEN", "token"),
                None => {
                    missing(d, "token_env", "the variable that holds the bot token");
                    None
                }
            };
            let chat_id = match get("chat_id") {
                Some(f) => chat_id(d, f.value, "chat_id"),
                None => {
                    missing(d, "chat_id", "the numeric id of the chat to write to");
                    None
                }
            };
            let api_url = match get("api_url") {
                Some(f) => http_url(d, f.value, "api_url"),
                None => Some(DEFAULT_TELEGRAM_API.to_string()),
            };
            match (token_env, chat_id, api_url) {
                (Some(token_env), Some(chat_id), Some(api_url)) => Some(NotifyKind::Telegram {
                    token_env,
                    chat_id,
                    api_url,
                }),
                _ => None,
            }
        }
        "email" => email(d, &fields.list, start).map(NotifyKind::Email),
        _ => unreachable!("checked above"),
    };
    if d.errors.len() > before {
        return None;
    }
    Some(NotifySpec {
        kind: kind?,
        on,
        location: start,
    })
}

fn article(kind: &str) -> String {
    if kind == "email" {
        "an `email`".to_string()
    } else {
        format!("a `{kind}`")
    }
}

fn email(d: &mut Decoder<'_>, list: &[Field<'_>], start: Location) -> Option<EmailSpec> {
    let mut host = None;
    let mut port = None;
    let mut tls = EmailTls::default();
    let mut username = None;
    let mut password_env = None;
    let mut from = None;
    let mut to = None;
    for f in list {
        let v = f.value;
        match f.key {
            "kind" | "on" => {}
            "host" => host = d.text(v, "host").map(|s| s.value),
            "port" => {
                if let Some(n) = d.integer(v, "port", "a port number (1 to 65535)") {
                    match u16::try_from(n) {
                        Ok(p) if p > 0 => port = Some(p),
                        _ => d.error(
                            v.loc,
                            format!("`port`: expected a port number (1 to 65535), found {n}"),
                        ),
                    }
                }
            }
            "tls" => match v.scalar_text() {
                Some("none") => tls = EmailTls::None,
                Some("starttls") => tls = EmailTls::StartTls,
                Some("tls") => tls = EmailTls::Tls,
                _ => d.error(
                    v.loc,
                    format!(
                        "`tls`: expected `none`, `starttls` or `tls`, found {}",
                        v.describe()
                    ),
                ),
            },
            "username" => username = d.text(v, "username").map(|s| s.value),
            "password_env" => {
                password_env = env_name(d, v, "password_env", "SMTP_PASSWORD", "password")
            }
            "from" => from = address(d, v, "from"),
            "to" => {
                let list: Vec<Option<String>> = string_list_spanned(d, v, "to")
                    .into_iter()
                    .map(|(s, at)| check_address(d, s, at, "to"))
                    .collect();
                if list.is_empty() && matches!(v.value, Value::Seq(_)) {
                    d.error(v.loc, "`to` is empty; expected at least one address");
                }
                to = Some(list.into_iter().flatten().collect::<Vec<_>>());
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    let need = |d: &mut Decoder<'_>, key: &str, what: &str| {
        d.error(
            start,
            format!("an `email` notification needs `{key}` ({what})"),
        );
    };
    if host.is_none() && !list.iter().any(|f| f.key == "host") {
        need(d, "host", "the SMTP server");
    }
    if from.is_none() && !list.iter().any(|f| f.key == "from") {
        need(d, "from", "the sender's address");
    }
    if to.is_none() {
        need(d, "to", "a list of recipients' addresses");
    }
    if password_env.is_some() && username.is_none() {
        d.error(
            start,
            "an `email` notification with `password_env` needs `username` too",
        );
    }
    Some(EmailSpec {
        host: host?,
        port: port.unwrap_or(tls.default_port()),
        tls,
        username,
        password_env,
        from: from?,
        to: to.filter(|t| !t.is_empty())?,
    })
}

fn address(d: &mut Decoder<'_>, node: &Node, key: &str) -> Option<String> {
    let s = d.text(node, key)?;
    check_address(d, s.value, s.at, key)
}

/// A loose check (`name@domain`, or `Name <name@domain>`); the mailer checks it fully.
fn check_address(d: &mut Decoder<'_>, s: String, at: Location, key: &str) -> Option<String> {
    let addr = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim(),
        _ => s.trim(),
    };
    let ok = addr
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !addr.contains(char::is_whitespace);
    if ok {
        Some(s)
    } else {
        d.error(
            at,
            format!("`{key}`: expected an email address like fleet@example.com, found {s:?}"),
        );
        None
    }
}

fn events(d: &mut Decoder<'_>, node: &Node) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let written = string_list_spanned(d, node, "on");
    if written.is_empty() && matches!(node.value, Value::Seq(_)) {
        d.error(
            node.loc,
            format!(
                "`on` is empty; expected at least one of: {} (leave `on` out for all)",
                NOTIFY_EVENTS.join(", ")
            ),
        );
    }
    for (event, at) in written {
        if !NOTIFY_EVENTS.contains(&event.as_str()) {
            d.error(
                at,
                format!(
                    "`on`: unknown event {event:?}; expected one of: {}",
                    NOTIFY_EVENTS.join(", ")
                ),
            );
        } else if !out.contains(&event) {
            out.push(event);
        }
    }
    out
}

/// An `http://` or `https://` URL, without its trailing `/`. The value is not echoed: a URL
/// may carry a token.
pub(crate) fn http_url(d: &mut Decoder<'_>, node: &Node, key: &str) -> Option<String> {
    let u = d.text(node, key)?;
    let rest = u
        .value
        .strip_prefix("https://")
        .or_else(|| u.value.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace)) {
        d.error(
            u.at,
            format!("`{key}`: expected an http:// or https:// URL"),
        );
        return None;
    }
    Some(u.value.trim_end_matches('/').to_string())
}

/// The name of an environment variable (`[A-Za-z_][A-Za-z0-9_]*`). What was written is not
/// echoed when it is not a name: it may be the secret itself.
pub(crate) fn env_name(
    d: &mut Decoder<'_>,
    node: &Node,
    key: &str,
    example: &str,
    what: &str,
) -> Option<String> {
    let s = d.text(node, key)?;
    let mut chars = s.value.chars();
    let is_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if is_name {
        Some(s.value)
    } else {
        d.error(
            s.at,
            format!(
                "`{key}` names the environment variable that holds the {what} (like {example}); \
                 this is not a variable name"
            ),
        );
        None
    }
}

fn chat_id(d: &mut Decoder<'_>, node: &Node, key: &str) -> Option<i64> {
    let id = d.integer(
        node,
        key,
        "a numeric Telegram chat id like 12345 or -100123",
    )?;
    if id == 0 {
        d.error(node.loc, format!("`{key}`: 0 is not a Telegram chat id"));
        return None;
    }
    Some(id)
}

pub(crate) fn retry(d: &mut Decoder<'_>, node: &Node) -> Option<NotifyRetry> {
    let fields = d.fields(
        node,
        RETRY_KEYS,
        "in `notify_retry`",
        "a mapping with `tries` and/or `backoff_ms`",
    )?;
    let mut r = NotifyRetry::default();
    let before = d.errors.len();
    for f in &fields.list {
        let v = f.value;
        match f.key {
            "tries" => {
                let expected = "a number of tries from 1 to 20";
                if let Some(n) = d.integer(v, "tries", expected) {
                    match u32::try_from(n) {
                        Ok(n @ 1..=20) => r.tries = n,
                        _ => d.error(v.loc, format!("`tries`: expected {expected}, found {n}")),
                    }
                }
            }
            "backoff_ms" => {
                let expected = "milliseconds from 0 to 600000";
                if let Some(n) = d.integer(v, "backoff_ms", expected) {
                    match u64::try_from(n) {
                        Ok(n @ 0..=600_000) => r.backoff_ms = n,
                        _ => d.error(
                            v.loc,
                            format!("`backoff_ms`: expected {expected}, found {n}"),
                        ),
                    }
                }
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    (d.errors.len() == before).then_some(r)
}

pub(crate) fn telegram(d: &mut Decoder<'_>, node: &Node) -> Option<TelegramSpec> {
    let fields = d.fields(
        node,
        BOT_KEYS,
        "in `telegram`",
        "a mapping with `token_env` and `allowed_chats`",
    )?;
    let before = d.errors.len();
    let mut token_env = None;
    let mut api_url = Some(DEFAULT_TELEGRAM_API.to_string());
    let mut allowed_chats = None;
    let mut default_project = None;
    for f in &fields.list {
        let v = f.value;
        match f.key {
            "token_env" => {
                token_env = env_name(d, v, "token_env", "FLEET_TELEGRAM_TOKEN", "bot token")
            }
            "api_url" => api_url = http_url(d, v, "api_url"),
            "allowed_chats" => {
                let ids: Vec<Option<i64>> = match &v.value {
                    Value::Seq(items) => items
                        .iter()
                        .map(|i| chat_id(d, i, "allowed_chats"))
                        .collect(),
                    _ => vec![chat_id(d, v, "allowed_chats")],
                };
                if ids.is_empty() {
                    d.error(
                        v.loc,
                        "`allowed_chats` is empty; the bot answers only the chats listed here",
                    );
                }
                allowed_chats = Some(ids.into_iter().flatten().collect::<Vec<_>>());
            }
            "default_project" => {
                default_project = d.id(v, "default_project", "project name").map(|s| s.value)
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    if !fields.has("token_env") {
        d.error(
            fields.start,
            "`telegram` needs `token_env` (the variable that holds the bot token)",
        );
    }
    if !fields.has("allowed_chats") {
        d.error(
            fields.start,
            "`telegram` needs `allowed_chats` (the chat ids the bot answers; it ignores all others)",
        );
    }
    if d.errors.len() > before {
        return None;
    }
    Some(TelegramSpec {
        token_env: token_env?,
        api_url: api_url?,
        allowed_chats: allowed_chats?,
        default_project,
        location: fields.start,
    })
}

/// `server.public_url`: an http(s) URL without its trailing `/`.
pub(crate) fn public_url(d: &mut Decoder<'_>, node: &Node) -> Option<String> {
    http_url(d, node, "public_url")
}
