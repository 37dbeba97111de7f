//! Sending one notification to one channel, with retries.

use crate::channel::{Channel, Secret, Tls, scrub};
use crate::message::Notification;
use crate::telegram::TelegramApi;
use serde_json::json;
use std::future::Future;
use std::time::Duration;

pub(crate) const USER_AGENT: &str = concat!("fleet/", env!("CARGO_PKG_VERSION"));

/// How a send is retried: at most `tries` attempts, waiting `backoff`, then twice that, … in
/// between (the default: 4 tries after 0.2 s, 0.4 s, 0.8 s). A 429's `retry_after` /
/// `Retry-After` is waited instead when it is longer, unless it is longer than
/// `max_retry_after`: then the send gives up at once rather than retry too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// At least 1 (0 counts as 1).
    pub tries: u32,
    pub backoff: Duration,
    pub max_retry_after: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            tries: 4,
            backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl From<fleet_config::NotifyRetry> for Retry {
    fn from(r: fleet_config::NotifyRetry) -> Retry {
        Retry {
            tries: r.tries,
            backoff: Duration::from_millis(r.backoff_ms),
            ..Retry::default()
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based): `backoff * 2^(attempt-1)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
    }
}

/// A notification was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// How many attempts it took (1 = the first one).
    pub attempts: u32,
}

/// A notification could not be delivered. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel}: {message} ({attempts} attempt{})", if *.attempts == 1 { "" } else { "s" })]
pub struct NotifyError {
    /// [`Channel::name`].
    pub channel: &'static str,
    pub attempts: u32,
    pub message: String,
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another try, after at least `after` when the other side said so.
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Trying again would fail the same way.
    Fatal(String),
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Retry { message, .. } | Failure::Fatal(message) => message,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `retry.tries` are spent. Every message
/// is scrubbed of `secrets`.
pub(crate) async fn with_retry<F, Fut>(
    retry: &Retry,
    channel: &'static str,
    secrets: &[String],
    mut attempt: F,
) -> Result<Sent, NotifyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let tries = retry.tries.max(1);
    let fail = |attempts: u32, message: &str| NotifyError {
        channel,
        attempts,
        message: scrub(message, secrets),
    };
    for n in 1..=tries {
        match attempt().await {
            Ok(()) => return Ok(Sent { attempts: n }),
            Err(Failure::Fatal(message)) => return Err(fail(n, &message)),
            Err(Failure::Retry { message, after }) => {
                if n == tries {
                    return Err(fail(n, &message));
                }
                let mut wait = retry.delay(n);
                if let Some(after) = after {
                    if after > retry.max_retry_after {
                        let message = format!(
                            "{message}; asked to wait {} s, longer than the {} s allowed",
                            after.as_secs(),
                            retry.max_retry_after.as_secs()
                        );
                        return Err(fail(n, &message));
                    }
                    wait = wait.max(after);
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
    unreachable!("the loop returns on its last try")
}

/// A secret-free description of a failed request: what kind of failure and its innermost
/// cause (`cannot connect: Connection refused (os error 111)`), never the URL.
pub(crate) fn describe(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let kind = if e.is_builder() {
        return Failure::Fatal("invalid request (check the URL)".to_string());
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = None;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    Failure::Retry {
        message: match cause {
            Some(c) => format!("{kind}: {c}"),
            None => kind.to_string(),
        },
        after: None,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Whether an HTTP status is worth another try: 408, 429 and 5xx.
pub(crate) fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The first `max` characters of a text from the network, on one line.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max + 1)
        .collect();
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

/// Sends notifications over one HTTP client, each with [`Retry`].
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    retry: Retry,
}

impl Notifier {
    /// A notifier with its own HTTP client (10 s to connect, 30 s per request). Installs the
    /// ring crypto provider for rustls if the process has none yet.
    pub fn new(retry: Retry) -> Notifier {
        Notifier::with_client(Notifier::http_client(), retry)
    }

    /// A notifier over `client` (share it with [`TelegramApi`]).
    pub fn with_client(client: reqwest::Client, retry: Retry) -> Notifier {
        Notifier { client, retry }
    }

    /// The HTTP client [`Notifier::new`] builds.
    pub fn http_client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a default reqwest client builds")
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Delivers `n` to `channel`, retrying as [`Retry`] says.
    pub async fn send(&self, channel: &Channel, n: &Notification) -> Result<Sent, NotifyError> {
        let secrets = channel.secrets();
        let name = channel.name();
        match channel {
            Channel::Webhook { url } => {
                let body = n.to_json();
                with_retry(&self.retry, name, &secrets, || {
                    post_json(&self.client, url, &body)
                })
                .await
            }
            Channel::Slack { url } => {
                let body = json!({ "text": n.render_text() });
                with_retry(&self.retry, name, &secrets, || {
                    post_json(&self.client, url, &body)
                })
                .await
            }
            Channel::Telegram {
                api_url,
                token,
                chat_id,
            } => {
                let api = TelegramApi::new(api_url, token.clone(), self.client.clone())
                    .with_retry(self.retry);
                api.send_message(*chat_id, &n.render_text()).await
            }
            Channel::Email { .. } => {
                with_retry(&self.retry, name, &secrets, || email_once(channel, n)).await
            }
        }
    }

    /// Delivers `n` to every channel at once; the results are in the order of `channels`.
    pub async fn send_all<'c>(
        &self,
        channels: impl IntoIterator<Item = &'c Channel>,
        n: &Notification,
    ) -> Vec<(&'c Channel, Result<Sent, NotifyError>)> {
        let sends = channels
            .into_iter()
            .map(|c| async move { (c, self.send(c, n).await) });
        futures_util::future::join_all(sends).await
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: &Secret,
    body: &serde_json::Value,
) -> Result<(), Failure> {
    let response = client
        .post(url.expose())
        .json(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let after = retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    let mut message = format!("HTTP {status}");
    if !text.trim().is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt(&text, 200));
    }
    if retryable(status.as_u16()) {
        Err(Failure::Retry { message, after })
    } else {
        Err(Failure::Fatal(message))
    }
}

async fn email_once(channel: &Channel, n: &Notification) -> Result<(), Failure> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let Channel::Email {
        host,
        port,
        tls,
        username,
        password,
        from,
        to,
    } = channel
    else {
        unreachable!("email_once is given an email channel")
    };
    let mailbox = |s: &str, key: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| Failure::Fatal(format!("invalid `{key}` address {s:?}: {e}")))
    };
    let mut builder = lettre::Message::builder()
        .from(mailbox(from, "from")?)
        .subject(n.subject())
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        builder = builder.to(mailbox(t, "to")?);
    }
    let message = builder
        .body(n.render_text())
        .map_err(|e| Failure::Fatal(format!("cannot build the email: {e}")))?;
    let transport = match tls {
        Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str()),
        Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| Failure::Fatal(format!("TLS setup for {host}: {e}")))?,
        Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|e| Failure::Fatal(format!("TLS setup for {host}: {e}")))?,
    };
    let mut transport = transport.port(*port).timeout(Some(Duration::from_secs(30)));
    if let Some(user) = username {
        let password = password.as_ref().map(|p| p.expose()).unwrap_or("");
        transport = transport.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    let transport = transport.build();
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let message = format!("SMTP {host}:{port}: {e}");
            if e.is_permanent() || e.is_client() {
                Err(Failure::Fatal(message))
            } else {
                Err(Failure::Retry {
                    message,
                    after: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        let r = Retry::default();
        assert_eq!(
            (1..=3).map(|n| r.delay(n).as_millis()).collect::<Vec<_>>(),
            [200, 400, 800]
        );
        assert_eq!(
            Retry::from(fleet_config::NotifyRetry {
                tries: 2,
                backoff_ms: 10
            })
            .delay(2),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        assert!(retryable(429) && retryable(500) && retryable(503) && retryable(408));
        assert!(!retryable(400) && !retryable(401) && !retryable(404) && !retryable(410));
    }

    #[test]
    fn errors_read_well() {
        let e = NotifyError {
            channel: "slack",
            attempts: 1,
            message: "HTTP 404 Not Found: no_service".into(),
        };
        assert_eq!(
            e.to_string(),
            "slack: HTTP 404 Not Found: no_service (1 attempt)"
        );
        assert_eq!(excerpt(" a\nb ", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
