//! What can go wrong talking to a forge.

use std::fmt;

/// Which forge answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    GitHub,
    GitLab,
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForgeKind::GitHub => "GitHub",
            ForgeKind::GitLab => "GitLab",
        })
    }
}

/// A failed forge call. No variant ever holds a token's value: texts that came from the
/// network are redacted before they are stored here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// 401 or 403: the token was rejected, or lacks the permission the call needs.
    #[error("{}", auth_message(*forge, *status, token_name.as_deref(), message))]
    Auth {
        forge: ForgeKind,
        /// 401 or 403; 0 when the token could not even be sent (not a valid header value).
        status: u16,
        /// The variable the token was read from, when the caller said.
        token_name: Option<String>,
        /// The forge's own message, e.g. "Bad credentials".
        message: String,
    },
    /// 404: the repository/project (or the request in it) does not exist, or the token may
    /// not see it (both forges answer 404 for private repositories the token cannot read).
    #[error("{forge}: {what} not found (it does not exist, or the token cannot see it)")]
    NotFound { forge: ForgeKind, what: String },
    /// 400/409/422: the forge refused the request itself (GitHub's `errors` messages, GitLab's
    /// `message`s).
    #[error("{forge} refused the request ({status}): {}", messages.join("; "))]
    Validation {
        forge: ForgeKind,
        status: u16,
        messages: Vec<String>,
    },
    /// 429, or 403 with the rate limit used up.
    #[error("{forge} rate limit exceeded ({status}){}: {message}",
        retry_after_secs.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited {
        forge: ForgeKind,
        status: u16,
        retry_after_secs: Option<u64>,
        message: String,
    },
    /// The forge could not be reached, or the connection broke.
    #[error("cannot reach {forge} at {url}: {message}")]
    Transport {
        forge: ForgeKind,
        url: String,
        message: String,
    },
    /// Any other status; `body` is the first 300 characters of the answer.
    #[error("{forge} answered {status} to {request}: {body}")]
    UnexpectedStatus {
        forge: ForgeKind,
        status: u16,
        request: String,
        body: String,
    },
    /// A successful status with an answer that is not what the API documents.
    #[error("{forge} sent an unreadable answer to {request}: {message}")]
    InvalidResponse {
        forge: ForgeKind,
        request: String,
        message: String,
    },
}

fn auth_message(forge: ForgeKind, status: u16, token_name: Option<&str>, message: &str) -> String {
    let token = match token_name {
        Some(n) => format!("the token from {n}"),
        None => "the token".to_string(),
    };
    match status {
        401 => format!("{forge} rejected {token} (401: {message})"),
        0 => format!("cannot use {token} with {forge}: {message}"),
        s => format!("{forge} refused the request made with {token} ({s}: {message})"),
    }
}

impl ForgeError {
    pub fn forge(&self) -> ForgeKind {
        match self {
            ForgeError::Auth { forge, .. }
            | ForgeError::NotFound { forge, .. }
            | ForgeError::Validation { forge, .. }
            | ForgeError::RateLimited { forge, .. }
            | ForgeError::Transport { forge, .. }
            | ForgeError::UnexpectedStatus { forge, .. }
            | ForgeError::InvalidResponse { forge, .. } => *forge,
        }
    }

    /// Whether trying again later may succeed (transport failures, rate limits, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ForgeError::Transport { .. } | ForgeError::RateLimited { .. } => true,
            ForgeError::UnexpectedStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
