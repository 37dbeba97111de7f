//! `fleet-notify`: telling people what Fleet did, and letting them ask Fleet for work from
//! Telegram.
//!
//! # What it owns
//! - [`Event`] and [`Notification`]: what happened (an epic awaits acceptance, a task failed,
//!   an account spent its daily budget, an account's credentials were rejected) and the
//!   message about it, with its links (task page, branch, pull request, how to run the
//!   result), as plain text ([`Notification::render_text`]) and as JSON.
//! - [`Channel`]: a resolved destination — generic webhook (`POST` JSON), Slack incoming
//!   webhook, Telegram `sendMessage`, email over SMTP — and [`resolve`], which turns
//!   `fleet.yaml`'s [`NotifySpec`](fleet_config::NotifySpec) into one by reading the secrets
//!   from the environment.
//! - [`Notifier::send`]: one notification to one channel, retried with exponential backoff
//!   ([`Retry`]) on connection errors, timeouts, 5xx, 429 (honouring `retry_after` /
//!   `Retry-After` when it is short) and transient SMTP replies; never on other 4xx.
//! - [`TelegramApi`]: `sendMessage` and long-polled `getUpdates`.
//! - The bot: [`parse_command`] (pure) and [`run_bot`], which long-polls Telegram, answers the
//!   allow-listed chats and hands requests to a [`BotBackend`].
//!
//! # What it must not know
//! The store, the pipeline, the engine, SQL, the HTTP server. Callers hand it plain strings
//! (ids, URLs, texts); the bot reaches Fleet only through [`BotBackend`], which the server
//! implements.
//!
//! # Secrets
//! Bot tokens, webhook URLs and SMTP passwords live in [`Secret`]s, whose `Debug` shows
//! `[redacted]`. No error, `Debug` output or returned string of this crate contains one: errors
//! are built here (a `reqwest` error is stripped of its URL, which holds the Telegram token or
//! the Slack secret) and every text that came from elsewhere is scrubbed of the channel's
//! secrets before it is kept.
//!
//! A process using this crate must have installed a rustls crypto provider
//! (`rustls::crypto::ring::default_provider().install_default()`); [`Notifier::new`] does so
//! if none is installed yet.

mod bot;
mod channel;
mod message;
mod send;
mod telegram;

pub use bot::{BotBackend, BotCommand, BotConfig, HELP, parse_command, run_bot};
pub use channel::{Channel, Secret, Tls, resolve, resolve_bot};
pub use message::{Event, Notification};
pub use send::{Notifier, NotifyError, Retry, Sent};
pub use telegram::{TelegramApi, Update};
