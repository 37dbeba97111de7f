//! `fleet-deliver`: the last step of a piece of work — talking to forges and deploy commands.
//!
//! # What it owns
//! - [`GitHub`] and [`GitLab`]: REST clients that open a pull request / merge request
//!   (idempotently: asking twice for the same branch returns the request already open) and read
//!   its review comments and reviews, update its description, post a reply, and tell whether
//!   it is open, merged or closed ([`PrState`]); [`Forge`] is either of them.
//! - [`ForgeError`]: what went wrong, in classes a caller can act on (the token was rejected,
//!   the repository does not exist, the forge refused the request, the forge could not be
//!   reached, the forge answered something unexpected).
//! - [`deploy`]: runs a deploy command in its own process group under a timeout and returns
//!   the last URL it printed.
//! - [`pull_request_body`]: the Markdown description of a pull request, built from plain inputs.
//! - [`parse_remote`]: host, owner and repository of a git remote URL.
//! - [`create_repository`]: a new private repository on either forge (`fleet project new`).
//!
//! # What it must not know
//! Tasks, the store, the engine. Callers hand it plain strings and numbers.
//!
//! # Secrets
//! A token is held in a [`Token`] whose `Debug` shows only the name it came from. No error,
//! log line or `Debug` output of this crate contains a token's value: every text that came
//! from the network is passed through a redaction of the token before it is kept.

mod body;
mod create;
mod deploy;
mod error;
mod github;
mod gitlab;
mod http;
mod remote;

pub use body::{PullRequestSummary, ReviewCycle, TaskLine, pull_request_body};
pub use create::{NewRepository, RepositoryRequest, create_repository};
pub use deploy::{DeployError, Deployed, deploy, last_url, probe};
pub use error::{ForgeError, ForgeKind};
pub use github::GitHub;
pub use gitlab::GitLab;
pub use remote::parse_remote;

use std::fmt;

/// An API token, and optionally the name of the variable it was read from (used in error
/// messages, so a person knows which token to replace). Its value never appears in `Debug`.
#[derive(Clone)]
pub struct Token {
    name: Option<String>,
    value: String,
}

impl Token {
    /// A token from nowhere in particular.
    pub fn new(value: impl Into<String>) -> Token {
        Token {
            name: None,
            value: value.into(),
        }
    }

    /// A token read from the variable (or setting) `name`.
    pub fn named(name: impl Into<String>, value: impl Into<String>) -> Token {
        Token {
            name: Some(name.into()),
            value: value.into(),
        }
    }

    /// The token in environment variable `var`, if it is set and not empty.
    pub fn from_env(var: &str) -> Option<Token> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(Token::named(var, v.trim())),
            _ => None,
        }
    }

    /// The name the token came from, if known.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// `text` with every occurrence of the token's value replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        if self.value.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.value, "[REDACTED]")
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "Token({n})"),
            None => f.write_str("Token(..)"),
        }
    }
}

/// A pull request (GitHub) or merge request (GitLab) as the forge reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// GitHub's `number`, GitLab's `iid` (the `!N` / `#N` people use).
    pub number: u64,
    /// The page people open: GitHub's `html_url`, GitLab's `web_url`.
    pub url: String,
    /// The API URL of the request itself.
    pub api_url: String,
    /// `true` when this call created it, `false` when it was already open for the branch.
    pub created: bool,
}

/// Where a comment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommentKind {
    /// On a line or file of the diff (GitHub review comment, GitLab diff note).
    Review,
    /// In the conversation of the request (GitHub issue comment, GitLab note).
    Conversation,
    /// A review's verdict with its text (GitHub `GET /pulls/N/reviews`: `APPROVED`,
    /// `CHANGES_REQUESTED`, or `COMMENTED` with a body). Numbered from its own sequence.
    Verdict,
}

/// Where a pull/merge request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrState {
    Open,
    /// Merged into its base: the work is in.
    Merged,
    /// Closed without merging: nobody wants it.
    Closed,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "open",
            PrState::Merged => "merged",
            PrState::Closed => "closed",
        }
    }
}

/// One comment a person (or bot) left on a pull/merge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewComment {
    pub id: u64,
    /// GitHub `login`, GitLab `username`.
    pub author: String,
    pub body: String,
    /// The file commented on, for comments on the diff.
    pub path: Option<String>,
    /// The line (in the new version of the file) commented on, when it is a line comment.
    pub line: Option<u64>,
    /// A link to the comment.
    pub url: String,
    pub kind: CommentKind,
    /// GitHub's `user.type` (`User`, `Bot`); GitLab has none (`None`).
    pub author_type: Option<String>,
    /// For [`CommentKind::Verdict`]: the review's state (`APPROVED`, `CHANGES_REQUESTED`,
    /// `COMMENTED`).
    pub review_state: Option<String>,
}

/// Either forge, for callers that do not care which.
#[derive(Debug, Clone)]
pub enum Forge {
    GitHub(GitHub),
    GitLab(GitLab),
}

impl Forge {
    pub fn kind(&self) -> ForgeKind {
        match self {
            Forge::GitHub(_) => ForgeKind::GitHub,
            Forge::GitLab(_) => ForgeKind::GitLab,
        }
    }

    /// Open a pull/merge request from `head` into `base`, or return the one already open.
    pub async fn open(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, ForgeError> {
        match self {
            Forge::GitHub(g) => g.open_pull_request(head, base, title, body).await,
            Forge::GitLab(g) => g.open_merge_request(head, base, title, body).await,
        }
    }

    /// Whether request `number` is open, merged or closed.
    pub async fn state(&self, number: u64) -> Result<PrState, ForgeError> {
        match self {
            Forge::GitHub(g) => g.pull_request_state(number).await,
            Forge::GitLab(g) => g.merge_request_state(number).await,
        }
    }

    /// Replaces the description of request `number` with `body`.
    pub async fn update_body(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        match self {
            Forge::GitHub(g) => g.update_pull_request_body(number, body).await,
            Forge::GitLab(g) => g.update_merge_request_description(number, body).await,
        }
    }

    /// Posts `body` in the conversation of request `number`; returns the new comment's id.
    pub async fn post_comment(&self, number: u64, body: &str) -> Result<u64, ForgeError> {
        match self {
            Forge::GitHub(g) => g.post_comment(number, body).await,
            Forge::GitLab(g) => g.post_note(number, body).await,
        }
    }

    /// Comments on request `number` with an id greater than `since_id`, sorted by id.
    /// See [`GitHub::review_comments`] for a caveat about ids on GitHub.
    pub async fn review_comments(
        &self,
        number: u64,
        since_id: Option<u64>,
    ) -> Result<Vec<ReviewComment>, ForgeError> {
        match self {
            Forge::GitHub(g) => g.review_comments(number, since_id).await,
            Forge::GitLab(g) => g.review_comments(number, since_id).await,
        }
    }
}
