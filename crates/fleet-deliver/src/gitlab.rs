//! GitLab's REST API (v4): merge requests and their notes.

use reqwest::Method;
use reqwest::header::{ACCEPT, USER_AGENT};
use serde_json::{Value, json};

use crate::http::{Call, MAX_PAGES, Reply, client, encode, str_of};
use crate::{CommentKind, ForgeError, ForgeKind, PrState, PullRequest, ReviewComment, Token};

/// A GitLab project, and the token (personal, project or group access token) to act on it with.
#[derive(Debug, Clone)]
pub struct GitLab {
    /// `https://gitlab.com/api/v4` ([`GitLab::DEFAULT_API_URL`]) or `https://HOST/api/v4`.
    pub api_url: String,
    /// The numeric project id (`"1234"`) or its full path (`"group/subgroup/name"`); it is
    /// URL-encoded when sent.
    pub project: String,
    pub token: Token,
}

const PER_PAGE: usize = 100;

impl GitLab {
    pub const DEFAULT_API_URL: &'static str = "https://gitlab.com/api/v4";

    pub fn new(project: impl Into<String>, token: Token) -> GitLab {
        GitLab {
            api_url: GitLab::DEFAULT_API_URL.to_string(),
            project: project.into(),
            token,
        }
    }

    pub fn with_api_url(mut self, api_url: impl Into<String>) -> GitLab {
        self.api_url = api_url.into();
        self
    }

    fn project_path(&self) -> String {
        format!("/projects/{}", encode(&self.project))
    }

    fn api(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Call<'_>, Reply), ForgeError> {
        let call = Call {
            forge: ForgeKind::GitLab,
            token: &self.token,
            request: format!("{method} {}", path.split('?').next().unwrap_or(path)),
        };
        let url = format!("{}{path}", self.api());
        let token = call.credential(self.token.value())?;
        let mut req = client()
            .request(method, &url)
            .header("PRIVATE-TOKEN", token)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, crate::http::USER_AGENT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let reply = call.send(req, &url).await?;
        Ok((call, reply))
    }

    /// Opens a merge request from `source_branch` into `target_branch`. When one is already
    /// open for the source branch, returns it with `created: false` instead of failing.
    pub async fn open_merge_request(
        &self,
        source_branch: &str,
        target_branch: &str,
        title: &str,
        description: &str,
    ) -> Result<PullRequest, ForgeError> {
        let path = format!("{}/merge_requests", self.project_path());
        let payload = json!({
            "source_branch": source_branch,
            "target_branch": target_branch,
            "title": title,
            "description": description,
        });
        let (call, reply) = self.request(Method::POST, &path, Some(&payload)).await?;
        if reply.ok() {
            return self.merge_request(&call, &call.json(&reply)?, true);
        }
        let err = call.error(&reply, &format!("project {}", self.project));
        if let ForgeError::Validation { messages, .. } = &err
            && messages.iter().any(|m| {
                m.to_ascii_lowercase()
                    .contains("another open merge request already exists")
            })
            && let Some(existing) = self
                .find_open_merge_request(source_branch, Some(target_branch))
                .await?
        {
            return Ok(existing);
        }
        Err(err)
    }

    /// The open merge request from `source_branch` (into `target_branch`, when given).
    pub async fn find_open_merge_request(
        &self,
        source_branch: &str,
        target_branch: Option<&str>,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let path = format!(
            "{}/merge_requests?source_branch={}&state=opened&per_page={PER_PAGE}",
            self.project_path(),
            encode(source_branch)
        );
        let (call, reply) = self.request(Method::GET, &path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("project {}", self.project)));
        }
        let list = call.json(&reply)?;
        let list = list
            .as_array()
            .ok_or_else(|| call.invalid("expected a list of merge requests"))?;
        let same_source = |m: &&Value| str_of(m, "source_branch") == source_branch;
        let same_target =
            |m: &&Value| target_branch.is_none_or(|t| str_of(m, "target_branch") == t);
        match list.iter().filter(same_source).find(same_target) {
            Some(m) => Ok(Some(self.merge_request(&call, m, false)?)),
            None => Ok(None),
        }
    }

    fn merge_request(
        &self,
        call: &Call<'_>,
        m: &Value,
        created: bool,
    ) -> Result<PullRequest, ForgeError> {
        let iid = m
            .get("iid")
            .and_then(Value::as_u64)
            .ok_or_else(|| call.invalid("the merge request has no iid"))?;
        Ok(PullRequest {
            number: iid,
            url: str_of(m, "web_url").to_string(),
            api_url: format!("{}{}/merge_requests/{iid}", self.api(), self.project_path()),
            created,
        })
    }

    /// Whether merge request `iid` is open (`opened`, or `locked` while GitLab merges it),
    /// merged or closed.
    pub async fn merge_request_state(&self, iid: u64) -> Result<PrState, ForgeError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path());
        let (call, reply) = self.request(Method::GET, &path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("merge request {}!{iid}", self.project)));
        }
        match str_of(&call.json(&reply)?, "state") {
            "opened" | "locked" => Ok(PrState::Open),
            "merged" => Ok(PrState::Merged),
            "closed" => Ok(PrState::Closed),
            other => Err(call.invalid(&format!("unknown merge request state {other:?}"))),
        }
    }

    /// Replaces the description of merge request `iid` (`PUT /merge_requests/:iid`).
    pub async fn update_merge_request_description(
        &self,
        iid: u64,
        description: &str,
    ) -> Result<(), ForgeError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path());
        let payload = json!({ "description": description });
        let (call, reply) = self.request(Method::PUT, &path, Some(&payload)).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("merge request {}!{iid}", self.project)));
        }
        Ok(())
    }

    /// Posts a note on merge request `iid`; returns its id.
    pub async fn post_note(&self, iid: u64, body: &str) -> Result<u64, ForgeError> {
        let path = format!("{}/merge_requests/{iid}/notes", self.project_path());
        let payload = json!({ "body": body });
        let (call, reply) = self.request(Method::POST, &path, Some(&payload)).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("merge request {}!{iid}", self.project)));
        }
        call.json(&reply)?
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| call.invalid("the note has no id"))
    }

    /// The notes on merge request `iid` that people wrote (system notes such as "added 1
    /// commit" are skipped), those with an id greater than `since_id`, sorted by id. Notes on
    /// the diff come with their file and new line.
    pub async fn review_comments(
        &self,
        iid: u64,
        since_id: Option<u64>,
    ) -> Result<Vec<ReviewComment>, ForgeError> {
        let what = format!("merge request {}!{iid}", self.project);
        let mr_path = format!("{}/merge_requests/{iid}", self.project_path());
        let (call, reply) = self.request(Method::GET, &mr_path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &what));
        }
        let web_url = str_of(&call.json(&reply)?, "web_url").to_string();

        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!(
                "{mr_path}/notes?sort=asc&order_by=created_at&per_page={PER_PAGE}&page={page}"
            );
            let (call, reply) = self.request(Method::GET, &path, None).await?;
            if !reply.ok() {
                return Err(call.error(&reply, &what));
            }
            let json = call.json(&reply)?;
            let notes = json
                .as_array()
                .ok_or_else(|| call.invalid("expected a list of notes"))?;
            out.extend(notes.iter().filter_map(|n| note(n, &web_url)));
            if notes.len() < PER_PAGE {
                break;
            }
        }
        out.retain(|c: &ReviewComment| since_id.is_none_or(|s| c.id > s));
        out.sort_by_key(|c| c.id);
        out.dedup_by_key(|c| c.id);
        Ok(out)
    }
}

fn note(n: &Value, web_url: &str) -> Option<ReviewComment> {
    if n.get("system").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let id = n.get("id")?.as_u64()?;
    let position = n.get("position").filter(|p| p.is_object());
    let kind = if str_of(n, "type") == "DiffNote" || position.is_some() {
        CommentKind::Review
    } else {
        CommentKind::Conversation
    };
    let pos_str = |k: &str| position.and_then(|p| p.get(k)).and_then(Value::as_str);
    let pos_num = |k: &str| position.and_then(|p| p.get(k)).and_then(Value::as_u64);
    Some(ReviewComment {
        id,
        author: n
            .pointer("/author/username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        body: str_of(n, "body").to_string(),
        path: pos_str("new_path")
            .or_else(|| pos_str("old_path"))
            .map(String::from),
        line: pos_num("new_line").or_else(|| pos_num("old_line")),
        url: if web_url.is_empty() {
            String::new()
        } else {
            format!("{web_url}#note_{id}")
        },
        kind,
        author_type: None,
        review_state: None,
    })
}
