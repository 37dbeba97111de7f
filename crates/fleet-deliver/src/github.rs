//! GitHub's REST API (v3, `X-GitHub-Api-Version: 2022-11-28`): pull requests and their comments.

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use serde_json::{Value, json};

use crate::http::{Call, MAX_PAGES, Reply, client, encode, str_of};
use crate::{CommentKind, ForgeError, ForgeKind, PrState, PullRequest, ReviewComment, Token};

/// A GitHub repository, and the token to act on it with.
#[derive(Debug, Clone)]
pub struct GitHub {
    /// `https://api.github.com` ([`GitHub::DEFAULT_API_URL`]), or a GitHub Enterprise
    /// `https://HOST/api/v3`.
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    pub token: Token,
}

const API_VERSION: &str = "2022-11-28";
const PER_PAGE: usize = 100;

impl GitHub {
    pub const DEFAULT_API_URL: &'static str = "https://api.github.com";

    pub fn new(owner: impl Into<String>, repo: impl Into<String>, token: Token) -> GitHub {
        GitHub {
            api_url: GitHub::DEFAULT_API_URL.to_string(),
            owner: owner.into(),
            repo: repo.into(),
            token,
        }
    }

    pub fn with_api_url(mut self, api_url: impl Into<String>) -> GitHub {
        self.api_url = api_url.into();
        self
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", encode(&self.owner), encode(&self.repo))
    }

    fn full(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// Sends `METHOD path` (path starting with `/`, query included) with GitHub's headers.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Call<'_>, Reply), ForgeError> {
        let call = Call {
            forge: ForgeKind::GitHub,
            token: &self.token,
            request: format!("{method} {}", path.split('?').next().unwrap_or(path)),
        };
        let url = format!("{}{path}", self.api_url.trim_end_matches('/'));
        let auth = call.credential(&format!("Bearer {}", self.token.value()))?;
        let mut req = client()
            .request(method, &url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(USER_AGENT, crate::http::USER_AGENT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let reply = call.send(req, &url).await?;
        Ok((call, reply))
    }

    /// Opens a pull request merging `head` (a branch of this repository, or `owner:branch` for
    /// a fork) into `base`. When one is already open for the same head and base, returns it
    /// with `created: false` instead of failing.
    pub async fn open_pull_request(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, ForgeError> {
        let path = format!("{}/pulls", self.repo_path());
        let payload = json!({"title": title, "head": head, "base": base, "body": body});
        let (call, reply) = self.request(Method::POST, &path, Some(&payload)).await?;
        if reply.ok() {
            return self.pull_request(&call, &call.json(&reply)?, true);
        }
        let err = call.error(&reply, &format!("repository {}", self.full()));
        if let ForgeError::Validation { messages, .. } = &err
            && messages.iter().any(|m| {
                m.to_ascii_lowercase()
                    .contains("pull request already exists")
            })
            && let Some(existing) = self.find_open_pull_request(head, Some(base)).await?
        {
            return Ok(existing);
        }
        Err(err)
    }

    /// The open pull request from `head` (into `base`, when given), if there is one.
    pub async fn find_open_pull_request(
        &self,
        head: &str,
        base: Option<&str>,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let label = if head.contains(':') {
            head.to_string()
        } else {
            format!("{}:{head}", self.owner)
        };
        let path = format!(
            "{}/pulls?head={}&state=open&per_page={PER_PAGE}",
            self.repo_path(),
            encode(&label)
        );
        let (call, reply) = self.request(Method::GET, &path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("repository {}", self.full())));
        }
        let list = call.json(&reply)?;
        let list = list
            .as_array()
            .ok_or_else(|| call.invalid("expected a list of pull requests"))?;
        // The `head` filter is exact on GitHub, but check: a wrong match would be worse than none.
        // Owners are case-insensitive on GitHub, branch names are not.
        let (owner, branch) = label.split_once(':').unwrap_or(("", head));
        let same_head = |p: &&Value| {
            p.pointer("/head/label")
                .and_then(Value::as_str)
                .and_then(|l| l.split_once(':'))
                .is_some_and(|(o, b)| o.eq_ignore_ascii_case(owner) && b == branch)
        };
        let same_base = |p: &&Value| {
            base.is_none_or(|b| p.pointer("/base/ref").and_then(Value::as_str) == Some(b))
        };
        match list.iter().filter(same_head).find(same_base) {
            Some(p) => Ok(Some(self.pull_request(&call, p, false)?)),
            None => Ok(None),
        }
    }

    fn pull_request(
        &self,
        call: &Call<'_>,
        p: &Value,
        created: bool,
    ) -> Result<PullRequest, ForgeError> {
        let number = p
            .get("number")
            .and_then(Value::as_u64)
            .ok_or_else(|| call.invalid("the pull request has no number"))?;
        Ok(PullRequest {
            number,
            url: str_of(p, "html_url").to_string(),
            api_url: str_of(p, "url").to_string(),
            created,
        })
    }

    /// Whether pull request `number` is open, merged or closed (`GET /pulls/N`: `state` and
    /// `merged`; a merged pull request is also `closed`).
    pub async fn pull_request_state(&self, number: u64) -> Result<PrState, ForgeError> {
        let path = format!("{}/pulls/{number}", self.repo_path());
        let (call, reply) = self.request(Method::GET, &path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("pull request {}#{number}", self.full())));
        }
        let p = call.json(&reply)?;
        let merged = p.get("merged").and_then(Value::as_bool) == Some(true)
            || p.get("merged_at").is_some_and(|m| !m.is_null());
        match (str_of(&p, "state"), merged) {
            (_, true) => Ok(PrState::Merged),
            ("open", false) => Ok(PrState::Open),
            ("closed", false) => Ok(PrState::Closed),
            (other, _) => Err(call.invalid(&format!("unknown pull request state {other:?}"))),
        }
    }

    /// Replaces the description of pull request `number` (`PATCH /pulls/N`).
    pub async fn update_pull_request_body(
        &self,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let path = format!("{}/pulls/{number}", self.repo_path());
        let payload = json!({ "body": body });
        let (call, reply) = self.request(Method::PATCH, &path, Some(&payload)).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("pull request {}#{number}", self.full())));
        }
        Ok(())
    }

    /// Posts `body` in the conversation of pull request `number` (`POST /issues/N/comments`);
    /// returns the comment's id.
    pub async fn post_comment(&self, number: u64, body: &str) -> Result<u64, ForgeError> {
        let path = format!("{}/issues/{number}/comments", self.repo_path());
        let payload = json!({ "body": body });
        let (call, reply) = self.request(Method::POST, &path, Some(&payload)).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("pull request {}#{number}", self.full())));
        }
        call.json(&reply)?
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| call.invalid("the comment has no id"))
    }

    /// Every page of a list endpoint (`per_page=100`, until a short page).
    async fn pages(&self, path: &str, what: &str) -> Result<Vec<Value>, ForgeError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let (call, reply) = self
                .request(
                    Method::GET,
                    &format!("{path}?per_page={PER_PAGE}&page={page}"),
                    None,
                )
                .await?;
            if !reply.ok() {
                return Err(call.error(&reply, what));
            }
            let json = call.json(&reply)?;
            let items = json
                .as_array()
                .ok_or_else(|| call.invalid("expected a list"))?;
            all.extend(items.iter().cloned());
            if items.len() < PER_PAGE {
                break;
            }
        }
        Ok(all)
    }

    /// The comments on pull request `number`: review comments on the diff
    /// (`GET /pulls/N/comments`), the conversation (`GET /issues/N/comments`) and the reviews'
    /// verdicts (`GET /pulls/N/reviews`, see [`CommentKind::Verdict`]), those with
    /// an id greater than `since_id`, sorted by id.
    ///
    /// Caveat: GitHub numbers review comments and conversation comments from two different
    /// sequences, so one `since_id` over both can hide new comments of the kind whose ids are
    /// lower. Callers that poll should keep one watermark per [`CommentKind`] and call with the
    /// smaller one, filtering the rest themselves.
    pub async fn review_comments(
        &self,
        number: u64,
        since_id: Option<u64>,
    ) -> Result<Vec<ReviewComment>, ForgeError> {
        let what = format!("pull request {}#{number}", self.full());
        let review = self
            .pages(
                &format!("{}/pulls/{number}/comments", self.repo_path()),
                &what,
            )
            .await?;
        let conversation = self
            .pages(
                &format!("{}/issues/{number}/comments", self.repo_path()),
                &what,
            )
            .await?;
        let reviews = self
            .pages(
                &format!("{}/pulls/{number}/reviews", self.repo_path()),
                &what,
            )
            .await?;
        let mut out: Vec<ReviewComment> = review
            .iter()
            .filter_map(|c| comment(c, CommentKind::Review))
            .chain(
                conversation
                    .iter()
                    .filter_map(|c| comment(c, CommentKind::Conversation)),
            )
            .chain(reviews.iter().filter_map(verdict))
            .filter(|c| since_id.is_none_or(|s| c.id > s))
            .collect();
        out.sort_by_key(|c| c.id);
        out.dedup_by_key(|c| c.id);
        Ok(out)
    }
}

fn comment(c: &Value, kind: CommentKind) -> Option<ReviewComment> {
    let id = c.get("id")?.as_u64()?;
    let path = match kind {
        CommentKind::Review => c.get("path").and_then(Value::as_str).map(String::from),
        CommentKind::Conversation | CommentKind::Verdict => None,
    };
    // `line` is null on outdated comments; `original_line` still says where it was made.
    let line = match kind {
        CommentKind::Review => c
            .get("line")
            .and_then(Value::as_u64)
            .or_else(|| c.get("original_line").and_then(Value::as_u64)),
        CommentKind::Conversation | CommentKind::Verdict => None,
    };
    Some(ReviewComment {
        id,
        // A deleted account shows as a null user; GitHub calls it "ghost".
        author: c
            .pointer("/user/login")
            .and_then(Value::as_str)
            .unwrap_or("ghost")
            .to_string(),
        body: str_of(c, "body").to_string(),
        path,
        line,
        url: str_of(c, "html_url").to_string(),
        kind,
        author_type: c
            .pointer("/user/type")
            .and_then(Value::as_str)
            .map(String::from),
        review_state: None,
    })
}

/// A review as a comment: its verdict and text. A pending review (not submitted) is nobody's
/// word yet, and a plain `COMMENTED` review without text only wraps line comments, which come
/// through `GET /pulls/N/comments`.
fn verdict(r: &Value) -> Option<ReviewComment> {
    let state = str_of(r, "state");
    let body = str_of(r, "body");
    if state == "PENDING"
        || state == "DISMISSED"
        || (state == "COMMENTED" && body.trim().is_empty())
    {
        return None;
    }
    let mut c = comment(r, CommentKind::Conversation)?;
    c.kind = CommentKind::Verdict;
    c.review_state = Some(state.to_string());
    Some(c)
}
