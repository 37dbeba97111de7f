//! The two Telegram Bot API methods Fleet uses: `sendMessage` and long-polled `getUpdates`.

use crate::channel::{Secret, scrub};
use crate::send::{
    Failure, NotifyError, Retry, Sent, describe, excerpt, retry_after, retryable, with_retry,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Telegram refuses longer messages (4096 characters after entity parsing).
const MAX_TEXT: usize = 4000;

/// One incoming update. Only `message`s carry a chat and text; other kinds (edits, channel
/// posts, callbacks) have `None` in both and are still counted, so the offset moves past them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub update_id: i64,
    pub chat_id: Option<i64>,
    pub text: Option<String>,
}

/// A client of the Telegram Bot API for one bot. Its `Debug` hides the token, and no error it
/// returns contains it (the token is part of every request URL, so request errors are
/// stripped of their URL).
#[derive(Debug, Clone)]
pub struct TelegramApi {
    api_url: String,
    token: Secret,
    client: reqwest::Client,
    retry: Retry,
}

impl TelegramApi {
    /// `api_url` is `https://api.telegram.org` or a stand-in; `client` is shared (see
    /// [`Notifier::http_client`](crate::Notifier::http_client)). Sends use [`Retry::default`].
    pub fn new(api_url: &str, token: Secret, client: reqwest::Client) -> TelegramApi {
        TelegramApi {
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            client,
            retry: Retry::default(),
        }
    }

    /// How [`TelegramApi::send_message`] retries.
    pub fn with_retry(mut self, retry: Retry) -> TelegramApi {
        self.retry = retry;
        self
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token.expose().to_string()]
    }

    /// One call of `method`; the `result` of an `ok` answer.
    async fn call(
        &self,
        method: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<Value, Failure> {
        let url = format!("{}/bot{}/{method}", self.api_url, self.token.expose());
        let mut request = self.client.post(url).json(body);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let header_after = retry_after(response.headers());
        let text = response.text().await.map_err(describe)?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        if let Some(a) = &answer
            && a["ok"] == true
        {
            return Ok(a["result"].clone());
        }
        let answer = answer.unwrap_or(Value::Null);
        let code = answer["error_code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(status);
        let description = match answer["description"].as_str() {
            Some(d) => excerpt(d, 200),
            None if text.trim().is_empty() => "no answer".to_string(),
            None => format!("unexpected answer: {}", excerpt(&text, 200)),
        };
        let after = answer["parameters"]["retry_after"]
            .as_u64()
            .map(Duration::from_secs)
            .or(header_after);
        let message = format!("{method}: {code} {description}");
        if retryable(code) || (200..300).contains(&code) {
            Err(Failure::Retry { message, after })
        } else {
            Err(Failure::Fatal(message))
        }
    }

    /// Sends `text` (cut to Telegram's limit) to `chat_id`, retrying as set by
    /// [`TelegramApi::with_retry`] (honouring a 429's `retry_after`).
    pub async fn send_message(&self, chat_id: i64, text: &str) -> Result<Sent, NotifyError> {
        let text = if text.chars().count() > MAX_TEXT {
            format!("{}…", text.chars().take(MAX_TEXT).collect::<String>())
        } else {
            text.to_string()
        };
        let body = json!({
            "chat_id": chat_id,
            "text": text,
            "link_preview_options": { "is_disabled": true },
        });
        let secrets = self.secrets();
        with_retry(&self.retry, "telegram", &secrets, || async {
            self.call("sendMessage", &body, None).await.map(|_| ())
        })
        .await
    }

    /// One long poll: waits up to `timeout_secs` for updates from `offset` on (which confirms
    /// every update before it, so Telegram forgets them). The request's own timeout is the poll
    /// plus 15 s, whatever the client's. Not retried: a poller simply polls again.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
    ) -> Result<Vec<Update>, NotifyError> {
        let mut body = json!({ "timeout": timeout_secs, "allowed_updates": ["message"] });
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let wait = Duration::from_secs(timeout_secs + 15);
        let result = self
            .call("getUpdates", &body, Some(wait))
            .await
            .map_err(|f| NotifyError {
                channel: "telegram",
                attempts: 1,
                message: scrub(f.message(), &self.secrets()),
            })?;
        let Some(list) = result.as_array() else {
            return Err(NotifyError {
                channel: "telegram",
                attempts: 1,
                message: "getUpdates: the result is not a list".to_string(),
            });
        };
        Ok(list
            .iter()
            .filter_map(|u| {
                let message = &u["message"];
                Some(Update {
                    update_id: u["update_id"].as_i64()?,
                    chat_id: message["chat"]["id"].as_i64(),
                    text: message["text"].as_str().map(str::to_string),
                })
            })
            .collect())
    }
}
