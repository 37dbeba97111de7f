//! Where notifications go, with their secrets read from the environment.

use crate::bot::BotConfig;
use crate::telegram::TelegramApi;
use fleet_config::{NotifyKind, NotifySpec, TelegramSpec, UrlSource};
use std::fmt;

/// How an SMTP connection is secured (`none`, `starttls`, `tls`).
pub use fleet_config::EmailTls as Tls;

/// A secret value (a token, a webhook URL, a password). Its `Debug` shows `[redacted]`; only
/// [`Secret::expose`] gives the value, to put it on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A destination, ready to send to. Its `Debug` redacts every secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `POST {url}` with the notification as JSON ([`Notification::to_json`]).
    ///
    /// [`Notification::to_json`]: crate::Notification::to_json
    Webhook { url: Secret },
    /// `POST {url}` with `{"text": …}` (a Slack incoming webhook).
    Slack { url: Secret },
    /// `POST {api_url}/bot{token}/sendMessage` to `chat_id`.
    Telegram {
        api_url: String,
        token: Secret,
        chat_id: i64,
    },
    /// An email over SMTP to every address of `to`.
    Email {
        host: String,
        port: u16,
        tls: Tls,
        username: Option<String>,
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
}

impl Channel {
    /// `webhook`, `slack`, `telegram` or `email`.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Slack { .. } => "slack",
            Channel::Telegram { .. } => "telegram",
            Channel::Email { .. } => "email",
        }
    }

    /// Every text that must never appear in what this crate returns about this channel: the
    /// secret values, and the path of a webhook URL (the secret part of a Slack URL).
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Channel::Webhook { url } | Channel::Slack { url } => {
                out.push(url.expose().to_string());
                if let Some(path) = url_path(url.expose()) {
                    out.push(path.to_string());
                }
            }
            Channel::Telegram { token, .. } => out.push(token.expose().to_string()),
            Channel::Email { password, .. } => {
                out.extend(password.iter().map(|p| p.expose().to_string()))
            }
        }
        out.retain(|s| s.len() >= 4);
        out
    }
}

/// The path and query of an `http(s)://host/path?query` URL, when there is more than `/`.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    (path.len() > 1).then_some(path)
}

/// Replaces every secret in `text` by `[redacted]`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

/// The value of the variable `name`, trimmed; an error naming the variable (never a value)
/// when it is unset or empty.
fn read(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
    key: &str,
) -> Result<String, String> {
    match env(name).map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "{what}: the environment variable {name} (named by `{key}`) is not set or empty"
        )),
    }
}

fn http_secret(url: String, what: &str, name: &str) -> Result<Secret, String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(Secret(url))
    } else {
        // Not echoed: it is a secret.
        Err(format!(
            "{what}: the environment variable {name} does not hold an http:// or https:// URL"
        ))
    }
}

/// The channel `spec` describes, its secrets read through `env` (usually
/// `|name| std::env::var(name).ok()`). An error names the missing variable, never a value.
pub fn resolve(spec: &NotifySpec, env: impl Fn(&str) -> Option<String>) -> Result<Channel, String> {
    let env: &dyn Fn(&str) -> Option<String> = &env;
    let what = format!("the {} notification", spec.kind.name());
    Ok(match &spec.kind {
        NotifyKind::Webhook { url } => match url {
            UrlSource::Url(u) => Channel::Webhook {
                url: Secret(u.clone()),
            },
            UrlSource::Env(name) => Channel::Webhook {
                url: http_secret(read(env, name, &what, "url_env")?, &what, name)?,
            },
        },
        NotifyKind::Slack { url_env } => Channel::Slack {
            url: http_secret(read(env, url_env, &what, "url_env")?, &what, url_env)?,
        },
        NotifyKind::Telegram {
            token_env,
            chat_id,
            api_url,
        } => Channel::Telegram {
            api_url: api_url.clone(),
            token: Secret(read(env, token_env, &what, "token_env")?),
            chat_id: *chat_id,
        },
        NotifyKind::Email(e) => Channel::Email {
            host: e.host.clone(),
            port: e.port,
            tls: e.tls,
            username: e.username.clone(),
            password: match &e.password_env {
                Some(name) => Some(Secret(read(env, name, &what, "password_env")?)),
                None => None,
            },
            from: e.from.clone(),
            to: e.to.clone(),
        },
    })
}

/// The Telegram client and bot settings `spec` describes, the token read through `env`.
/// `client` must be built as by [`Notifier::new`](crate::Notifier::new) (any client works:
/// long polls set their own timeout).
pub fn resolve_bot(
    spec: &TelegramSpec,
    env: impl Fn(&str) -> Option<String>,
    client: reqwest::Client,
) -> Result<(TelegramApi, BotConfig), String> {
    let token = read(&env, &spec.token_env, "the telegram bot", "token_env")?;
    let api = TelegramApi::new(&spec.api_url, Secret(token), client);
    let cfg = BotConfig {
        allowed_chats: spec.allowed_chats.clone(),
        default_project: spec.default_project.clone(),
        ..BotConfig::default()
    };
    Ok((api, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_config::{EmailSpec, Location};

    fn spec(kind: NotifyKind) -> NotifySpec {
        NotifySpec {
            kind,
            on: vec!["failed".into()],
            location: Location { line: 1, col: 1 },
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_stay_out_of_debug() {
        let env = |name: &str| match name {
            "HOOK" => Some("https://hooks.slack.com/services/T0/B0/sekrit\n".to_string()),
            "TOKEN" => Some("123:tok-en".to_string()),
            "PW" => Some("hunter2!".to_string()),
            _ => None,
        };
        let slack = resolve(
            &spec(NotifyKind::Slack {
                url_env: "HOOK".into(),
            }),
            env,
        )
        .unwrap();
        assert_eq!(
            slack,
            Channel::Slack {
                url: Secret::new("https://hooks.slack.com/services/T0/B0/sekrit")
            }
        );
        assert_eq!(slack.name(), "slack");
        let tg = resolve(
            &spec(NotifyKind::Telegram {
                token_env: "TOKEN".into(),
                chat_id: 7,
                api_url: "http://t".into(),
            }),
            env,
        )
        .unwrap();
        let mail = resolve(
            &spec(NotifyKind::Email(EmailSpec {
                host: "h".into(),
                port: 25,
                tls: Tls::None,
                username: Some("u".into()),
                password_env: Some("PW".into()),
                from: "f@x".into(),
                to: vec!["t@x".into()],
            })),
            env,
        )
        .unwrap();
        let debug = format!("{slack:?} {tg:?} {mail:?}");
        for secret in ["sekrit", "tok-en", "hunter2"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(
            debug.contains("[redacted]") && debug.contains("chat_id: 7"),
            "{debug}"
        );
        assert_eq!(
            scrub(
                "POST /services/T0/B0/sekrit failed; token 123:tok-en",
                &[slack.secrets(), tg.secrets()].concat()
            ),
            "POST [redacted] failed; token [redacted]"
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = resolve(
            &spec(NotifyKind::Telegram {
                token_env: "FLEET_TELEGRAM_TOKEN".into(),
                chat_id: 7,
                api_url: "http://t".into(),
            }),
            |_| Some("  ".into()),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "the telegram notification: the environment variable FLEET_TELEGRAM_TOKEN \
             (named by `token_env`) is not set or empty"
        );
        let err = resolve(
            &spec(NotifyKind::Webhook {
                url: UrlSource::Env("HOOK".into()),
            }),
            |_| Some("not-a-url-secret".into()),
        )
        .unwrap_err();
        assert!(
            err.contains("HOOK") && !err.contains("not-a-url-secret"),
            "{err}"
        );
    }
}
