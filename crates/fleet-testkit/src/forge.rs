//! A faithful local double of the GitHub and GitLab REST endpoints Fleet delivers through,
//! over real HTTP on `127.0.0.1`.
//!
//! GitHub (API base [`ForgeDouble::base_url`], like `https://api.github.com`):
//! - `POST /repos/{owner}/{repo}/pulls` — create a pull request (201; 422 on a duplicate open
//!   pull request for the same head and base, on head = base, on a missing field);
//! - `GET /repos/{owner}/{repo}/pulls` — list, with `state` (default `open`), `head`
//!   (`owner:branch`; a value without `:` is ignored, as GitHub does), `base`;
//! - `GET /repos/{owner}/{repo}/pulls/{n}` (with `merged`, `merged_at`);
//! - `PATCH /repos/{owner}/{repo}/pulls/{n}` — `title`, `body`, `state` (`open`/`closed`;
//!   422 for another state; a merged pull request cannot be reopened);
//! - `GET /repos/{owner}/{repo}/pulls/{n}/comments` — review comments;
//! - `GET /repos/{owner}/{repo}/pulls/{n}/reviews` — reviews (`APPROVED`,
//!   `CHANGES_REQUESTED`, `COMMENTED`, …);
//! - `GET /repos/{owner}/{repo}/issues/{n}/comments` — conversation comments;
//! - `POST /repos/{owner}/{repo}/issues/{n}/comments` — comment as the token's user
//!   ([`TOKEN_USER`]; 201; 422 without `body`; 404 for a pull request that does not exist).
//!
//! GitLab (API base [`ForgeDouble::gitlab_url`], like `https://gitlab.com/api/v4`; the project
//! is its numeric id or its URL-encoded path):
//! - `POST /projects/:id/merge_requests` (201; 409 on a duplicate open merge request for the
//!   same source and target branch; 400 on a missing field; 422 on source = target);
//! - `GET /projects/:id/merge_requests` — list (newest first), with `state` (default all),
//!   `source_branch`, `target_branch`;
//! - `GET /projects/:id/merge_requests/:iid`;
//! - `PUT /projects/:id/merge_requests/:iid` — `title`, `description`, `state_event`
//!   (`close`/`reopen`);
//! - `GET /projects/:id/merge_requests/:iid/notes` — notes (`sort` default `desc`);
//! - `POST /projects/:id/merge_requests/:iid/notes` — a note as [`TOKEN_USER`] (201; 400
//!   `body is missing`; 404 for a merge request that does not exist).
//!
//! Repositories are created on both (`repos.rs`): GitHub `POST /user/repos` and
//! `POST /orgs/{org}/repos`, GitLab `POST /projects` and `GET /namespaces/:id`.
//!
//! As the real services do: GitHub needs a `User-Agent` (403 without), answers 401 `Requires
//! authentication` without a token and `Bad credentials` with a wrong one (`Authorization:
//! Bearer <t>` or `token <t>`), 404 `Not Found` for repositories it was not told about, and
//! 400 for an `X-GitHub-Api-Version` it does not know; GitLab takes `PRIVATE-TOKEN` (or
//! `Authorization: Bearer`) and answers 401 `401 Unauthorized`, 404 `404 Project Not Found`.
//! Lists are paged with `per_page` (GitHub default 30, GitLab 20, both at most 100) and `page`,
//! with a `Link` header (GitLab also `x-total`, `x-next-page`, …).
//!
//! One strictness GitHub does not have: a request without `Accept:
//! application/vnd.github+json` (or `application/vnd.github.v3+json`, `application/json`) is
//! answered 415, so a client that forgets GitHub's recommended header is caught.
//!
//! Ids are realistic in one more way: GitHub numbers review comments and conversation comments
//! from separate sequences (here review comments from 1_000_000_001, conversation comments from
//! 2_000_000_001), so a client that mixes them under one "since id" is caught too.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

mod repos;
pub use repos::CreatedRepository;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// The login the double's token belongs to: the author of what a client posts.
pub const TOKEN_USER: &str = "fleet-bot";

const GITHUB_DOCS: &str = "https://docs.github.com/rest";
const GITHUB_API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];
const NO_USER_AGENT: &str = "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n";

/// A pull request (GitHub) or merge request (GitLab) that was created through the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPullRequest {
    /// `owner/repo` (GitHub) or the project path (GitLab).
    pub repo: String,
    /// GitHub `number`, GitLab `iid`.
    pub number: u64,
    pub title: String,
    /// GitHub `body`, GitLab `description`.
    pub body: String,
    /// As sent: GitHub `head` (`branch` or `owner:branch`), GitLab `source_branch`.
    pub head: String,
    /// GitHub `base`, GitLab `target_branch`.
    pub base: String,
    /// `open`/`closed` (GitHub), `opened`/`closed` (GitLab).
    pub state: String,
    /// The headers of the creating request: lower-cased names, the token redacted
    /// (`authorization: Bearer [REDACTED]`, `private-token: [REDACTED]`).
    pub headers: Vec<(String, String)>,
}

impl CreatedPullRequest {
    /// A header of the creating request by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// One request the double answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRequest {
    pub method: String,
    /// Path and query, as sent (still percent-encoded).
    pub path: String,
    pub status: u16,
    /// Lower-cased names, the token redacted.
    pub headers: Vec<(String, String)>,
}

impl ForgeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

struct Pull {
    repo: String,
    number: u64,
    id: u64,
    title: String,
    body: Option<String>,
    head_ref: String,
    head_label: String,
    base: String,
    state: String,
    merged: bool,
    created_at: String,
    headers: Vec<(String, String)>,
}

struct Review {
    repo: String,
    number: u64,
    id: u64,
    author: String,
    state: String,
    body: String,
    submitted_at: String,
}

/// A comment or note as stored by the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedComment {
    pub id: u64,
    pub author: String,
    pub body: String,
}

struct Comment {
    repo: String,
    number: u64,
    id: u64,
    author: String,
    body: String,
    path: Option<String>,
    line: Option<u64>,
    created_at: String,
}

struct Project {
    id: u64,
    path: String,
}

struct Mr {
    project: u64,
    id: u64,
    iid: u64,
    title: String,
    description: String,
    source: String,
    target: String,
    state: String,
    created_at: String,
    headers: Vec<(String, String)>,
}

struct Note {
    project: u64,
    iid: u64,
    id: u64,
    author: String,
    body: String,
    system: bool,
    position: Option<(String, u64)>,
    created_at: String,
}

#[derive(Default)]
struct Db {
    repos: BTreeSet<String>,
    pulls: Vec<Pull>,
    next_number: HashMap<String, u64>,
    next_pull_id: u64,
    review_comments: Vec<Comment>,
    next_review_comment_id: u64,
    issue_comments: Vec<Comment>,
    next_issue_comment_id: u64,
    reviews: Vec<Review>,
    next_review_id: u64,
    projects: Vec<Project>,
    mrs: Vec<Mr>,
    next_mr_id: u64,
    notes: Vec<Note>,
    next_note_id: u64,
    faults: VecDeque<(u16, String)>,
    requests: Vec<ForgeRequest>,
    orgs: BTreeSet<String>,
    groups: Vec<(u64, String)>,
    git_root: Option<std::path::PathBuf>,
    created: Vec<CreatedRepository>,
}

struct Shared {
    token: String,
    base_url: String,
    db: Mutex<Db>,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running double of GitHub and GitLab that accepts one token. Dropping it stops it.
pub struct ForgeDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the server.
    _served: crate::background::Served,
}

impl ForgeDouble {
    /// Starts the double on a free port of `127.0.0.1`, accepting `token` on both forges.
    pub fn start(token: &str) -> ForgeDouble {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("fleet-testkit: bind the forge double");
        let addr = listener.local_addr().expect("fleet-testkit: local address");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            base_url: format!("http://{addr}"),
            db: Mutex::new(Db {
                next_pull_id: 1_900_000_000,
                next_review_comment_id: 1_000_000_000,
                next_issue_comment_id: 2_000_000_000,
                next_review_id: 80_000_000,
                next_mr_id: 300_000_000,
                next_note_id: 2_500_000_000,
                ..Db::default()
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let served = crate::background::serve_on("fleet-forge-double", listener, app)
            .expect("fleet-testkit: start the forge double");
        ForgeDouble {
            addr,
            shared,
            _served: served,
        }
    }

    /// `http://127.0.0.1:PORT`: the GitHub API base (in place of `https://api.github.com`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `http://127.0.0.1:PORT/api/v4`: the GitLab API base.
    pub fn gitlab_url(&self) -> String {
        format!("{}/api/v4", self.shared.base_url)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes GitHub repository `owner/repo` exist.
    pub fn add_repo(&self, owner: &str, repo: &str) {
        self.shared.db().repos.insert(format!("{owner}/{repo}"));
    }

    /// Makes GitLab project `path` (`group/subgroup/name`) exist; returns its numeric id.
    pub fn add_gitlab_project(&self, path: &str) -> u64 {
        let mut db = self.shared.db();
        if let Some(p) = db.projects.iter().find(|p| p.path == path) {
            return p.id;
        }
        let id = 4_000_000 + db.projects.len() as u64 + 1;
        db.projects.push(Project {
            id,
            path: path.to_string(),
        });
        id
    }

    /// The pull requests created on GitHub, in order.
    pub fn pull_requests(&self) -> Vec<CreatedPullRequest> {
        self.shared
            .db()
            .pulls
            .iter()
            .map(|p| CreatedPullRequest {
                repo: p.repo.clone(),
                number: p.number,
                title: p.title.clone(),
                body: p.body.clone().unwrap_or_default(),
                head: p.head_label.clone(),
                base: p.base.clone(),
                state: p.state.clone(),
                headers: p.headers.clone(),
            })
            .collect()
    }

    /// The merge requests created on GitLab, in order.
    pub fn merge_requests(&self) -> Vec<CreatedPullRequest> {
        let db = self.shared.db();
        db.mrs
            .iter()
            .map(|m| CreatedPullRequest {
                repo: db
                    .projects
                    .iter()
                    .find(|p| p.id == m.project)
                    .map(|p| p.path.clone())
                    .unwrap_or_default(),
                number: m.iid,
                title: m.title.clone(),
                body: m.description.clone(),
                head: m.source.clone(),
                base: m.target.clone(),
                state: m.state.clone(),
                headers: m.headers.clone(),
            })
            .collect()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<ForgeRequest> {
        self.shared.db().requests.clone()
    }

    /// Closes GitHub pull request `number` of `repo` (`owner/name`).
    pub fn close_pull_request(&self, repo: &str, number: u64) {
        let mut db = self.shared.db();
        for p in db
            .pulls
            .iter_mut()
            .filter(|p| p.repo == repo && p.number == number)
        {
            p.state = "closed".into();
        }
    }

    /// Merges GitHub pull request `number` of `repo`: `state` becomes `closed`, `merged` true.
    pub fn merge_pull_request(&self, repo: &str, number: u64) {
        let mut db = self.shared.db();
        for p in db
            .pulls
            .iter_mut()
            .filter(|p| p.repo == repo && p.number == number)
        {
            p.state = "closed".into();
            p.merged = true;
        }
    }

    /// Merges GitLab merge request `iid` of project `path`.
    pub fn merge_merge_request(&self, path: &str, iid: u64) {
        let mut db = self.shared.db();
        let Some(project) = db.projects.iter().find(|p| p.path == path).map(|p| p.id) else {
            return;
        };
        for m in db
            .mrs
            .iter_mut()
            .filter(|m| m.project == project && m.iid == iid)
        {
            m.state = "merged".into();
        }
    }

    /// Submits a review of pull request `number` of `repo` with `state` (`APPROVED`,
    /// `CHANGES_REQUESTED`, `COMMENTED`). Returns its id.
    pub fn add_review(
        &self,
        repo: &str,
        number: u64,
        author: &str,
        state: &str,
        body: &str,
    ) -> u64 {
        let mut db = self.shared.db();
        db.next_review_id += 1;
        let id = db.next_review_id;
        db.reviews.push(Review {
            repo: repo.to_string(),
            number,
            id,
            author: author.to_string(),
            state: state.to_string(),
            body: body.to_string(),
            submitted_at: now_iso(),
        });
        id
    }

    /// The conversation comments of GitHub pull request `number` of `repo`, in order.
    pub fn issue_comments(&self, repo: &str, number: u64) -> Vec<PostedComment> {
        let db = self.shared.db();
        db.issue_comments
            .iter()
            .filter(|c| c.repo == repo && c.number == number)
            .map(|c| PostedComment {
                id: c.id,
                author: c.author.clone(),
                body: c.body.clone(),
            })
            .collect()
    }

    /// The notes of GitLab merge request `iid` of project `path`, in order.
    pub fn gitlab_notes(&self, path: &str, iid: u64) -> Vec<PostedComment> {
        let db = self.shared.db();
        let Some(project) = db.projects.iter().find(|p| p.path == path).map(|p| p.id) else {
            return Vec::new();
        };
        db.notes
            .iter()
            .filter(|n| n.project == project && n.iid == iid)
            .map(|n| PostedComment {
                id: n.id,
                author: n.author.clone(),
                body: n.body.clone(),
            })
            .collect()
    }

    /// Closes GitLab merge request `iid` of project `path`.
    pub fn close_merge_request(&self, path: &str, iid: u64) {
        let mut db = self.shared.db();
        let Some(project) = db.projects.iter().find(|p| p.path == path).map(|p| p.id) else {
            return;
        };
        for m in db
            .mrs
            .iter_mut()
            .filter(|m| m.project == project && m.iid == iid)
        {
            m.state = "closed".into();
        }
    }

    /// Adds a review comment (on the diff) to pull request `number` of `repo` (`owner/name`);
    /// `line: None` makes it a comment on the whole file. Returns its id.
    pub fn add_review_comment(
        &self,
        repo: &str,
        number: u64,
        author: &str,
        body: &str,
        path: &str,
        line: Option<u64>,
    ) -> u64 {
        let mut db = self.shared.db();
        db.next_review_comment_id += 1;
        let id = db.next_review_comment_id;
        db.review_comments.push(Comment {
            repo: repo.to_string(),
            number,
            id,
            author: author.to_string(),
            body: body.to_string(),
            path: Some(path.to_string()),
            line,
            created_at: now_iso(),
        });
        id
    }

    /// Adds a conversation comment to pull request `number` of `repo`. Returns its id.
    pub fn add_issue_comment(&self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut db = self.shared.db();
        db.next_issue_comment_id += 1;
        let id = db.next_issue_comment_id;
        db.issue_comments.push(Comment {
            repo: repo.to_string(),
            number,
            id,
            author: author.to_string(),
            body: body.to_string(),
            path: None,
            line: None,
            created_at: now_iso(),
        });
        id
    }

    /// Adds a note to merge request `iid` of project `path`; `system: true` makes it one of
    /// GitLab's own notes ("added 1 commit"). Returns its id.
    pub fn add_gitlab_note(
        &self,
        path: &str,
        iid: u64,
        author: &str,
        body: &str,
        system: bool,
    ) -> u64 {
        self.note(path, iid, author, body, system, None)
    }

    /// Adds a note on line `line` of file `file` in the diff of merge request `iid`.
    pub fn add_gitlab_diff_note(
        &self,
        path: &str,
        iid: u64,
        author: &str,
        body: &str,
        file: &str,
        line: u64,
    ) -> u64 {
        self.note(
            path,
            iid,
            author,
            body,
            false,
            Some((file.to_string(), line)),
        )
    }

    fn note(
        &self,
        path: &str,
        iid: u64,
        author: &str,
        body: &str,
        system: bool,
        position: Option<(String, u64)>,
    ) -> u64 {
        let mut db = self.shared.db();
        let project = db
            .projects
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.id)
            .unwrap_or_else(|| {
                panic!("fleet-testkit: no GitLab project {path}; add_gitlab_project first")
            });
        db.next_note_id += 1;
        let id = db.next_note_id;
        db.notes.push(Note {
            project,
            iid,
            id,
            author: author.to_string(),
            body: body.to_string(),
            system,
            position,
            created_at: now_iso(),
        });
        id
    }

    /// The next request (to either forge, after the User-Agent check) is answered `status`
    /// with `body` (JSON when it parses, else text), instead of what it would get.
    pub fn fail_next(&self, status: u16, body: &str) {
        self.shared
            .db()
            .faults
            .push_back((status, body.to_string()));
    }
}

/// What a handler answers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
    /// Send `body` as text (when it is a string) instead of JSON.
    text: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
            text: false,
        }
    }

    fn header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let recorded_headers = redact_headers(&headers);
    let raw_path = uri.path();
    let query = parse_query(uri.query().unwrap_or(""));

    let reply = if let Some(rest) = raw_path.strip_prefix("/api/v4") {
        match pending_fault(&shared) {
            Some(r) => r,
            None => gitlab(
                &shared,
                &method,
                rest,
                &query,
                &headers,
                &bytes,
                &recorded_headers,
                &path_and_query,
            ),
        }
    } else {
        let user_agent = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if user_agent.trim().is_empty() {
            Reply {
                status: 403,
                body: Value::String(NO_USER_AGENT.into()),
                headers: Vec::new(),
                text: true,
            }
        } else {
            match pending_fault(&shared) {
                Some(r) => r,
                None => github(
                    &shared,
                    &method,
                    raw_path,
                    &query,
                    &headers,
                    &bytes,
                    &recorded_headers,
                    &path_and_query,
                ),
            }
        }
    };

    shared.db().requests.push(ForgeRequest {
        method: method.to_string(),
        path: path_and_query,
        status: reply.status,
        headers: recorded_headers,
    });
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let body = if reply.text {
        builder = builder.header("content-type", "text/plain; charset=utf-8");
        match reply.body {
            Value::String(s) => s,
            other => other.to_string(),
        }
    } else {
        builder = builder.header("content-type", "application/json; charset=utf-8");
        reply.body.to_string()
    };
    for (k, v) in &reply.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn pending_fault(shared: &Shared) -> Option<Reply> {
    let (status, body) = shared.db().faults.pop_front()?;
    Some(match serde_json::from_str::<Value>(&body) {
        Ok(v) => Reply::json(status, v),
        Err(_) => Reply {
            status,
            body: Value::String(body),
            headers: Vec::new(),
            text: true,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// GitHub

fn github_error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "documentation_url": GITHUB_DOCS, "status": status.to_string()}),
    )
}

fn github_validation(errors: Value) -> Reply {
    Reply::json(
        422,
        json!({"message": "Validation Failed", "errors": errors,
               "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
               "status": "422"}),
    )
}

#[allow(clippy::too_many_arguments)]
fn github(
    shared: &Shared,
    method: &Method,
    raw_path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    bytes: &[u8],
    recorded_headers: &[(String, String)],
    path_and_query: &str,
) -> Reply {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ![
        "application/vnd.github+json",
        "application/vnd.github.v3+json",
        "application/json",
    ]
    .iter()
    .any(|a| accept.contains(a))
    {
        return github_error(
            415,
            &format!(
                "Unsupported 'Accept' header: {accept:?}. Send 'Accept: application/vnd.github+json' (the fleet-testkit double requires it)."
            ),
        );
    }
    if let Some(v) = headers
        .get("x-github-api-version")
        .and_then(|v| v.to_str().ok())
        && !GITHUB_API_VERSIONS.contains(&v)
    {
        return github_error(400, &format!("API Version '{v}' is not supported."));
    }
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return github_error(401, "Requires authentication");
    };
    let presented = auth
        .split_once(' ')
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
        })
        .map(|(_, t)| t.trim());
    if presented != Some(shared.token.as_str()) {
        return github_error(401, "Bad credentials");
    }

    let segments: Vec<String> = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let reply = match seg.as_slice() {
        ["user", "repos"] if method == Method::POST => {
            repos::github_create_repo(shared, None, bytes)
        }
        ["orgs", org, "repos"] if method == Method::POST => {
            repos::github_create_repo(shared, Some(org), bytes)
        }
        ["repos", owner, repo, rest @ ..] => {
            let key = {
                let db = shared.db();
                db.repos
                    .iter()
                    .find(|r| r.eq_ignore_ascii_case(&format!("{owner}/{repo}")))
                    .cloned()
            };
            let Some(key) = key else {
                return github_error(404, "Not Found");
            };
            let number = |s: &str| s.parse::<u64>().ok();
            match (method.as_str(), rest) {
                ("POST", ["pulls"]) => github_create_pull(shared, &key, bytes, recorded_headers),
                ("GET", ["pulls"]) => github_list_pulls(shared, &key, query, path_and_query),
                ("GET", ["pulls", n]) => match number(n).and_then(|n| {
                    let db = shared.db();
                    db.pulls
                        .iter()
                        .find(|p| p.repo == key && p.number == n)
                        .map(|p| single_pull_json(shared, p))
                }) {
                    Some(p) => Reply::json(200, p),
                    None => github_error(404, "Not Found"),
                },
                ("PATCH", ["pulls", n]) => match number(n) {
                    Some(n) => github_update_pull(shared, &key, n, bytes),
                    None => github_error(404, "Not Found"),
                },
                ("GET", ["pulls", n, "reviews"]) => match number(n).filter(|&n| {
                    shared
                        .db()
                        .pulls
                        .iter()
                        .any(|p| p.repo == key && p.number == n)
                }) {
                    Some(n) => {
                        let all: Vec<Value> = {
                            let db = shared.db();
                            db.reviews
                                .iter()
                                .filter(|r| r.repo == key && r.number == n)
                                .map(|r| review_json(shared, r))
                                .collect()
                        };
                        github_page(shared, all, query, path_and_query)
                    }
                    None => github_error(404, "Not Found"),
                },
                ("POST", ["issues", n, "comments"]) => match number(n) {
                    Some(n) => github_create_comment(shared, &key, n, bytes),
                    None => github_error(404, "Not Found"),
                },
                ("GET", ["pulls", n, "comments"]) => match number(n) {
                    Some(n) => {
                        let all = comments_json(
                            shared,
                            &key,
                            n,
                            |db| &db.review_comments,
                            review_comment_json,
                        );
                        github_page(shared, all, query, path_and_query)
                    }
                    None => github_error(404, "Not Found"),
                },
                ("GET", ["issues", n, "comments"]) => match number(n) {
                    Some(n) => {
                        let all = comments_json(
                            shared,
                            &key,
                            n,
                            |db| &db.issue_comments,
                            issue_comment_json,
                        );
                        github_page(shared, all, query, path_and_query)
                    }
                    None => github_error(404, "Not Found"),
                },
                _ => github_error(404, "Not Found"),
            }
        }
        _ => github_error(404, "Not Found"),
    };
    reply
        .header("x-github-api-version-selected", "2022-11-28".into())
        .header("x-ratelimit-limit", "5000".into())
        .header("x-ratelimit-remaining", "4999".into())
}

fn github_create_pull(
    shared: &Shared,
    key: &str,
    bytes: &[u8],
    recorded_headers: &[(String, String)],
) -> Reply {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return github_error(400, "Problems parsing JSON");
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    for required in ["head", "base"] {
        if field(required).is_none_or(|v| v.is_empty()) {
            return github_error(
                422,
                &format!("Invalid request.\n\n\"{required}\" wasn't supplied."),
            );
        }
    }
    let (head, base) = (
        field("head").unwrap_or_default(),
        field("base").unwrap_or_default(),
    );
    let Some(title) = field("title").filter(|t| !t.trim().is_empty()) else {
        return github_validation(
            json!([{"resource": "Issue", "code": "missing_field", "field": "title"}]),
        );
    };
    let owner = key.split('/').next().unwrap_or("");
    let (label, head_ref) = match head.split_once(':') {
        Some((_, branch)) => (head.clone(), branch.to_string()),
        None => (format!("{owner}:{head}"), head.clone()),
    };
    if label.eq_ignore_ascii_case(&format!("{owner}:{base}")) {
        return github_validation(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("No commits between {base} and {head_ref}")}]));
    }
    let mut db = shared.db();
    if db
        .pulls
        .iter()
        .any(|p| p.repo == key && p.state == "open" && p.head_label == label && p.base == base)
    {
        return github_validation(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {label}.")}]));
    }
    let number = {
        let n = db.next_number.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    db.next_pull_id += 1;
    let pull = Pull {
        repo: key.to_string(),
        number,
        id: db.next_pull_id,
        title,
        body: field("body"),
        head_ref,
        head_label: label,
        base,
        state: "open".into(),
        merged: false,
        created_at: now_iso(),
        headers: recorded_headers.to_vec(),
    };
    let json = single_pull_json(shared, &pull);
    db.pulls.push(pull);
    let location = json["url"].as_str().unwrap_or("").to_string();
    Reply::json(201, json).header("location", location)
}

fn github_list_pulls(
    shared: &Shared,
    key: &str,
    query: &BTreeMap<String, String>,
    path_and_query: &str,
) -> Reply {
    let state = query.get("state").map(String::as_str).unwrap_or("open");
    // GitHub filters by head only in the `user:ref-name` form.
    let head = query.get("head").filter(|h| h.contains(':'));
    let base = query.get("base");
    let db = shared.db();
    let mut all: Vec<&Pull> = db
        .pulls
        .iter()
        .filter(|p| p.repo == key)
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| head.is_none_or(|h| p.head_label.eq_ignore_ascii_case(h)))
        .filter(|p| base.is_none_or(|b| &p.base == b))
        .collect();
    // Newest first, GitHub's default (sort=created, direction=desc).
    all.sort_by_key(|p| std::cmp::Reverse(p.number));
    let all: Vec<Value> = all.into_iter().map(|p| pull_json(shared, p)).collect();
    drop(db);
    github_page(shared, all, query, path_and_query)
}

/// `PATCH /pulls/N`: title, body and state, as GitHub validates them.
fn github_update_pull(shared: &Shared, key: &str, number: u64, bytes: &[u8]) -> Reply {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return github_error(400, "Problems parsing JSON");
    };
    let mut db = shared.db();
    let Some(p) = db
        .pulls
        .iter_mut()
        .find(|p| p.repo == key && p.number == number)
    else {
        return github_error(404, "Not Found");
    };
    if let Some(state) = body.get("state") {
        match state.as_str() {
            Some("open") if p.merged => {
                return github_validation(json!([{"resource": "PullRequest", "code": "custom",
                    "message": "state cannot be changed. The pull request has already been merged."}]));
            }
            Some(st @ ("open" | "closed")) => p.state = st.to_string(),
            _ => {
                return github_validation(
                    json!([{"resource": "PullRequest", "code": "invalid", "field": "state"}]),
                );
            }
        }
    }
    if let Some(title) = body.get("title").and_then(Value::as_str) {
        if title.trim().is_empty() {
            return github_validation(
                json!([{"resource": "Issue", "code": "missing_field", "field": "title"}]),
            );
        }
        p.title = title.to_string();
    }
    match body.get("body") {
        Some(Value::String(b)) => p.body = Some(b.clone()),
        Some(Value::Null) => p.body = None,
        _ => {}
    }
    let p = db
        .pulls
        .iter()
        .find(|p| p.repo == key && p.number == number);
    Reply::json(
        200,
        p.map(|p| single_pull_json(shared, p))
            .unwrap_or(Value::Null),
    )
}

/// `POST /issues/N/comments` on a pull request: a conversation comment by [`TOKEN_USER`].
fn github_create_comment(shared: &Shared, key: &str, number: u64, bytes: &[u8]) -> Reply {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return github_error(400, "Problems parsing JSON");
    };
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return github_validation(
            json!([{"resource": "IssueComment", "code": "missing_field", "field": "body"}]),
        );
    };
    let mut db = shared.db();
    if !db.pulls.iter().any(|p| p.repo == key && p.number == number) {
        return github_error(404, "Not Found");
    }
    db.next_issue_comment_id += 1;
    let c = Comment {
        repo: key.to_string(),
        number,
        id: db.next_issue_comment_id,
        author: TOKEN_USER.to_string(),
        body: text.to_string(),
        path: None,
        line: None,
        created_at: now_iso(),
    };
    let json = issue_comment_json(shared, &c);
    db.issue_comments.push(c);
    let location = json["url"].as_str().unwrap_or("").to_string();
    Reply::json(201, json).header("location", location)
}

fn review_json(shared: &Shared, r: &Review) -> Value {
    json!({
        "id": r.id,
        "node_id": format!("PRR_kwDOFLEET{}", r.id),
        "user": user_json(&r.author),
        "body": r.body,
        "state": r.state,
        "html_url": format!("https://github.com/{}/pull/{}#pullrequestreview-{}", r.repo, r.number, r.id),
        "pull_request_url": format!("{}/repos/{}/pulls/{}", shared.base_url, r.repo, r.number),
        "author_association": "MEMBER",
        "submitted_at": r.submitted_at,
        "commit_id": fake_sha(&r.repo),
    })
}

/// A GitHub user object; logins ending in `[bot]` are of type `Bot`, as GitHub Apps are.
fn user_json(login: &str) -> Value {
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    json!({"login": login, "id": user_id(login), "type": kind})
}

/// A pull request as `GET /pulls/N` shows it: the list's fields plus whether it was merged.
fn single_pull_json(shared: &Shared, p: &Pull) -> Value {
    let mut v = pull_json(shared, p);
    v["merged"] = json!(p.merged);
    if p.merged {
        v["merged_at"] = json!(p.created_at);
        v["merge_commit_sha"] = json!(fake_sha(&format!("merge-{}", p.id)));
    }
    if p.state == "closed" {
        v["closed_at"] = json!(p.created_at);
    }
    v
}

fn pull_json(shared: &Shared, p: &Pull) -> Value {
    let (owner, name) = p.repo.split_once('/').unwrap_or((&p.repo, ""));
    let api = format!("{}/repos/{}/pulls/{}", shared.base_url, p.repo, p.number);
    let html = format!("https://github.com/{}/pull/{}", p.repo, p.number);
    let head_owner = p.head_label.split(':').next().unwrap_or(owner);
    json!({
        "url": api,
        "id": p.id,
        "node_id": format!("PR_kwDOFLEET{}", p.id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{}/repos/{}/issues/{}", shared.base_url, p.repo, p.number),
        "comments_url": format!("{}/repos/{}/issues/{}/comments", shared.base_url, p.repo, p.number),
        "review_comments_url": format!("{api}/comments"),
        "number": p.number,
        "state": p.state,
        "locked": false,
        "title": p.title,
        "body": p.body,
        "user": {"login": "fleet-bot", "id": 1, "type": "User"},
        "labels": [],
        "draft": false,
        "created_at": p.created_at,
        "updated_at": p.created_at,
        "closed_at": null,
        "merged_at": null,
        "merge_commit_sha": null,
        "head": {"label": p.head_label, "ref": p.head_ref, "sha": fake_sha(&p.head_label),
                 "user": {"login": head_owner}, "repo": {"full_name": format!("{head_owner}/{name}")}},
        "base": {"label": format!("{owner}:{}", p.base), "ref": p.base, "sha": fake_sha(&p.base),
                 "user": {"login": owner}, "repo": {"full_name": p.repo}},
        "author_association": "OWNER",
        "auto_merge": null,
    })
}

/// The comments of pull request `number` of `repo` in one of the double's lists, as JSON.
fn comments_json(
    shared: &Shared,
    repo: &str,
    number: u64,
    list: impl Fn(&Db) -> &Vec<Comment>,
    to_json: fn(&Shared, &Comment) -> Value,
) -> Vec<Value> {
    let db = shared.db();
    list(&db)
        .iter()
        .filter(|c| c.repo == repo && c.number == number)
        .map(|c| to_json(shared, c))
        .collect()
}

fn review_comment_json(shared: &Shared, c: &Comment) -> Value {
    json!({
        "url": format!("{}/repos/{}/pulls/comments/{}", shared.base_url, c.repo, c.id),
        "pull_request_review_id": c.id + 7,
        "id": c.id,
        "node_id": format!("PRRC_kwDOFLEET{}", c.id),
        "diff_hunk": "@@ -1,3 +1,4 @@",
        "path": c.path,
        "commit_id": fake_sha(&c.repo),
        "original_commit_id": fake_sha(&c.repo),
        "user": user_json(&c.author),
        "body": c.body,
        "created_at": c.created_at,
        "updated_at": c.created_at,
        "html_url": format!("https://github.com/{}/pull/{}#discussion_r{}", c.repo, c.number, c.id),
        "pull_request_url": format!("{}/repos/{}/pulls/{}", shared.base_url, c.repo, c.number),
        "author_association": "MEMBER",
        "line": c.line,
        "original_line": c.line,
        "side": c.line.map(|_| "RIGHT"),
        "subject_type": if c.line.is_some() { "line" } else { "file" },
    })
}

fn issue_comment_json(shared: &Shared, c: &Comment) -> Value {
    json!({
        "url": format!("{}/repos/{}/issues/comments/{}", shared.base_url, c.repo, c.id),
        "html_url": format!("https://github.com/{}/pull/{}#issuecomment-{}", c.repo, c.number, c.id),
        "issue_url": format!("{}/repos/{}/issues/{}", shared.base_url, c.repo, c.number),
        "id": c.id,
        "node_id": format!("IC_kwDOFLEET{}", c.id),
        "user": user_json(&c.author),
        "created_at": c.created_at,
        "updated_at": c.created_at,
        "author_association": "MEMBER",
        "body": c.body,
    })
}

/// One page of `all` per `per_page` (default 30, at most 100) and `page`, with GitHub's `Link`.
fn github_page(
    shared: &Shared,
    all: Vec<Value>,
    query: &BTreeMap<String, String>,
    path_and_query: &str,
) -> Reply {
    let (items, links) = page(&shared.base_url, all, query, path_and_query, 30);
    let mut reply = Reply::json(200, Value::Array(items));
    if let Some(link) = links.link {
        reply = reply.header("link", link);
    }
    reply
}

struct Links {
    link: Option<String>,
    page: usize,
    per_page: usize,
    total: usize,
    total_pages: usize,
}

fn page(
    base_url: &str,
    all: Vec<Value>,
    query: &BTreeMap<String, String>,
    path_and_query: &str,
    default_per_page: usize,
) -> (Vec<Value>, Links) {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default_per_page)
        .min(100);
    let page = query
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let total = all.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    let url = |p: usize| {
        let mut q: Vec<String> = path_and_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("per_page="))
            .map(str::to_string)
            .collect();
        q.push(format!("per_page={per_page}"));
        q.push(format!("page={p}"));
        format!("{base_url}{path}?{}", q.join("&"))
    };
    let mut rels = Vec::new();
    if page > 1 {
        rels.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
    }
    if page < total_pages {
        rels.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        rels.push(format!("<{}>; rel=\"last\"", url(total_pages)));
    }
    if page > 1 {
        rels.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let link = (!rels.is_empty()).then(|| rels.join(", "));
    (
        items,
        Links {
            link,
            page,
            per_page,
            total,
            total_pages,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// GitLab

fn gitlab_error(status: u16, message: Value) -> Reply {
    Reply::json(status, json!({ "message": message }))
}

#[allow(clippy::too_many_arguments)]
fn gitlab(
    shared: &Shared,
    method: &Method,
    rest: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    bytes: &[u8],
    recorded_headers: &[(String, String)],
    path_and_query: &str,
) -> Reply {
    let private = headers.get("private-token").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if private.or(bearer) != Some(shared.token.as_str()) {
        return gitlab_error(401, json!("401 Unauthorized"));
    }
    let segments: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method.as_str(), seg.as_slice()) {
        ("POST", ["projects"]) => return repos::gitlab_create_project(shared, bytes),
        ("GET", ["namespaces", id]) => return repos::gitlab_namespace(shared, id),
        _ => {}
    }
    let ["projects", id, rest @ ..] = seg.as_slice() else {
        return Reply::json(404, json!({"error": "404 Not Found"}));
    };
    let project = {
        let db = shared.db();
        db.projects
            .iter()
            .find(|p| p.id.to_string() == *id || p.path.eq_ignore_ascii_case(id))
            .map(|p| (p.id, p.path.clone()))
    };
    let Some((project, project_path)) = project else {
        return gitlab_error(404, json!("404 Project Not Found"));
    };
    let mr_exists = |iid: u64| {
        shared
            .db()
            .mrs
            .iter()
            .any(|m| m.project == project && m.iid == iid)
    };
    match (method.as_str(), rest) {
        ("POST", ["merge_requests"]) => {
            gitlab_create_mr(shared, project, &project_path, bytes, recorded_headers)
        }
        ("GET", ["merge_requests"]) => {
            let state = query.get("state").map(String::as_str).unwrap_or("all");
            let db = shared.db();
            let mut all: Vec<&Mr> = db
                .mrs
                .iter()
                .filter(|m| m.project == project)
                .filter(|m| state == "all" || m.state == state)
                .filter(|m| query.get("source_branch").is_none_or(|s| &m.source == s))
                .filter(|m| query.get("target_branch").is_none_or(|t| &m.target == t))
                .collect();
            all.sort_by_key(|m| std::cmp::Reverse(m.id));
            let all: Vec<Value> = all.into_iter().map(|m| mr_json(m, &project_path)).collect();
            drop(db);
            gitlab_page(shared, all, query, path_and_query)
        }
        ("GET", ["merge_requests", iid]) => {
            let db = shared.db();
            match iid
                .parse::<u64>()
                .ok()
                .and_then(|iid| db.mrs.iter().find(|m| m.project == project && m.iid == iid))
            {
                Some(m) => Reply::json(200, mr_json(m, &project_path)),
                None => gitlab_error(404, json!("404 Not found")),
            }
        }
        ("PUT", ["merge_requests", iid]) => match iid.parse::<u64>().ok().filter(|&i| mr_exists(i))
        {
            Some(iid) => gitlab_update_mr(shared, project, &project_path, iid, bytes),
            None => gitlab_error(404, json!("404 Not found")),
        },
        ("POST", ["merge_requests", iid, "notes"]) => {
            match iid.parse::<u64>().ok().filter(|&i| mr_exists(i)) {
                Some(iid) => gitlab_create_note(shared, project, iid, bytes),
                None => gitlab_error(404, json!("404 Not found")),
            }
        }
        ("GET", ["merge_requests", iid, "notes"]) => {
            match iid.parse::<u64>().ok().filter(|&i| mr_exists(i)) {
                Some(iid) => {
                    let db = shared.db();
                    let mr_id = db
                        .mrs
                        .iter()
                        .find(|m| m.project == project && m.iid == iid)
                        .map_or(0, |m| m.id);
                    let mut all: Vec<&Note> = db
                        .notes
                        .iter()
                        .filter(|n| n.project == project && n.iid == iid)
                        .collect();
                    all.sort_by_key(|n| n.id);
                    if query.get("sort").map(String::as_str) != Some("asc") {
                        all.reverse();
                    }
                    let all: Vec<Value> = all.into_iter().map(|n| note_json(n, mr_id)).collect();
                    drop(db);
                    gitlab_page(shared, all, query, path_and_query)
                }
                None => gitlab_error(404, json!("404 Not found")),
            }
        }
        _ => Reply::json(404, json!({"error": "404 Not Found"})),
    }
}

/// The fields of a GitLab write: JSON or a form.
fn gitlab_fields(bytes: &[u8]) -> BTreeMap<String, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => o
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect(),
        _ => parse_query(&String::from_utf8_lossy(bytes)),
    }
}

/// `PUT /merge_requests/:iid`: title, description, `state_event` (close, reopen).
fn gitlab_update_mr(
    shared: &Shared,
    project: u64,
    project_path: &str,
    iid: u64,
    bytes: &[u8],
) -> Reply {
    let fields = gitlab_fields(bytes);
    if !["title", "description", "state_event", "target_branch"]
        .iter()
        .any(|k| fields.contains_key(*k))
    {
        return Reply::json(
            400,
            json!({"error": "title, description, state_event, target_branch are missing, at least one parameter must be provided"}),
        );
    }
    let mut db = shared.db();
    let Some(m) = db
        .mrs
        .iter_mut()
        .find(|m| m.project == project && m.iid == iid)
    else {
        return gitlab_error(404, json!("404 Not found"));
    };
    match fields.get("state_event").map(String::as_str) {
        None => {}
        Some("close") if m.state == "opened" => m.state = "closed".into(),
        Some("reopen") if m.state == "closed" => m.state = "opened".into(),
        Some("close" | "reopen") => {}
        Some(_) => {
            return Reply::json(
                400,
                json!({"error": "state_event does not have a valid value"}),
            );
        }
    }
    if let Some(t) = fields.get("title") {
        m.title = t.clone();
    }
    if let Some(d) = fields.get("description") {
        m.description = d.clone();
    }
    Reply::json(200, mr_json(m, project_path))
}

/// `POST /merge_requests/:iid/notes`: a note by [`TOKEN_USER`].
fn gitlab_create_note(shared: &Shared, project: u64, iid: u64, bytes: &[u8]) -> Reply {
    let fields = gitlab_fields(bytes);
    let Some(body) = fields.get("body").filter(|b| !b.is_empty()) else {
        return Reply::json(400, json!({"error": "body is missing"}));
    };
    let mut db = shared.db();
    db.next_note_id += 1;
    let note = Note {
        project,
        iid,
        id: db.next_note_id,
        author: TOKEN_USER.to_string(),
        body: body.clone(),
        system: false,
        position: None,
        created_at: now_iso(),
    };
    let mr_id = db
        .mrs
        .iter()
        .find(|m| m.project == project && m.iid == iid)
        .map_or(0, |m| m.id);
    let json = note_json(&note, mr_id);
    db.notes.push(note);
    Reply::json(201, json)
}

fn gitlab_create_mr(
    shared: &Shared,
    project: u64,
    project_path: &str,
    bytes: &[u8],
    recorded_headers: &[(String, String)],
) -> Reply {
    // GitLab takes JSON or a form.
    let fields: BTreeMap<String, String> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => o
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect(),
        _ => parse_query(&String::from_utf8_lossy(bytes)),
    };
    let missing: Vec<String> = ["source_branch", "target_branch", "title"]
        .iter()
        .filter(|k| fields.get(**k).is_none_or(|v| v.is_empty()))
        .map(|k| format!("{k} is missing"))
        .collect();
    if !missing.is_empty() {
        return Reply::json(400, json!({"error": missing.join(", ")}));
    }
    let source = fields["source_branch"].clone();
    let target = fields["target_branch"].clone();
    if source == target {
        return gitlab_error(
            422,
            json!(["You can't use same project/branch for source and target"]),
        );
    }
    let mut db = shared.db();
    if let Some(existing) = db.mrs.iter().find(|m| {
        m.project == project && m.state == "opened" && m.source == source && m.target == target
    }) {
        return gitlab_error(
            409,
            json!([format!(
                "Another open merge request already exists for this source branch: !{}",
                existing.iid
            )]),
        );
    }
    let iid = db.mrs.iter().filter(|m| m.project == project).count() as u64 + 1;
    db.next_mr_id += 1;
    let mr = Mr {
        project,
        id: db.next_mr_id,
        iid,
        title: fields["title"].clone(),
        description: fields.get("description").cloned().unwrap_or_default(),
        source,
        target,
        state: "opened".into(),
        created_at: now_iso(),
        headers: recorded_headers.to_vec(),
    };
    let json = mr_json(&mr, project_path);
    db.mrs.push(mr);
    Reply::json(201, json)
}

fn mr_json(m: &Mr, project_path: &str) -> Value {
    let web = format!(
        "https://gitlab.com/{project_path}/-/merge_requests/{}",
        m.iid
    );
    json!({
        "id": m.id,
        "iid": m.iid,
        "project_id": m.project,
        "title": m.title,
        "description": m.description,
        "state": m.state,
        "created_at": m.created_at,
        "updated_at": m.created_at,
        "merged_by": if m.state == "merged" { json!({"username": "octocat"}) } else { Value::Null },
        "merged_at": if m.state == "merged" { json!(m.created_at) } else { Value::Null },
        "closed_at": if m.state == "closed" { json!(m.created_at) } else { Value::Null },
        "target_branch": m.target,
        "source_branch": m.source,
        "user_notes_count": 0,
        "author": {"id": 1, "username": "fleet-bot", "name": "Fleet", "state": "active",
                   "web_url": "https://gitlab.com/fleet-bot"},
        "source_project_id": m.project,
        "target_project_id": m.project,
        "labels": [],
        "draft": false,
        "work_in_progress": false,
        "merge_when_pipeline_succeeds": false,
        "merge_status": "checking",
        "detailed_merge_status": "checking",
        "sha": fake_sha(&m.source),
        "merge_commit_sha": null,
        "squash": false,
        "reference": format!("!{}", m.iid),
        "references": {"short": format!("!{}", m.iid), "relative": format!("!{}", m.iid),
                       "full": format!("{project_path}!{}", m.iid)},
        "web_url": web,
        "has_conflicts": false,
        "blocking_discussions_resolved": true,
    })
}

fn note_json(n: &Note, mr_id: u64) -> Value {
    let position = n.position.as_ref().map(|(file, line)| {
        json!({"base_sha": fake_sha("base"), "start_sha": fake_sha("start"), "head_sha": fake_sha("head"),
               "old_path": file, "new_path": file, "position_type": "text",
               "old_line": null, "new_line": line})
    });
    json!({
        "id": n.id,
        "type": if n.position.is_some() { json!("DiffNote") } else { Value::Null },
        "body": n.body,
        "attachment": null,
        "author": {"id": user_id(&n.author), "username": n.author, "name": n.author, "state": "active",
                   "web_url": format!("https://gitlab.com/{}", n.author)},
        "created_at": n.created_at,
        "updated_at": n.created_at,
        "system": n.system,
        "noteable_id": mr_id,
        "noteable_type": "MergeRequest",
        "noteable_iid": n.iid,
        "project_id": n.project,
        "resolvable": n.position.is_some(),
        "confidential": false,
        "internal": false,
        "position": position,
    })
}

/// A page with GitLab's headers: `x-page`, `x-per-page`, `x-total`, `x-total-pages`,
/// `x-next-page`, `x-prev-page` and `Link`.
fn gitlab_page(
    shared: &Shared,
    all: Vec<Value>,
    query: &BTreeMap<String, String>,
    path_and_query: &str,
) -> Reply {
    let (items, l) = page(&shared.base_url, all, query, path_and_query, 20);
    let mut reply = Reply::json(200, Value::Array(items))
        .header("x-page", l.page.to_string())
        .header("x-per-page", l.per_page.to_string())
        .header("x-total", l.total.to_string())
        .header("x-total-pages", l.total_pages.to_string())
        .header(
            "x-next-page",
            if l.page < l.total_pages {
                (l.page + 1).to_string()
            } else {
                String::new()
            },
        )
        .header(
            "x-prev-page",
            if l.page > 1 {
                (l.page - 1).to_string()
            } else {
                String::new()
            },
        );
    if let Some(link) = l.link {
        reply = reply.header("link", link);
    }
    reply
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Lower-cased header names; the values of `authorization` (scheme kept), `private-token`,
/// `cookie` and anything named like a token redacted.
fn redact_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_ascii_lowercase();
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let value = if name == "authorization" {
                match value.split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} [REDACTED]"),
                    None => "[REDACTED]".into(),
                }
            } else if name == "private-token"
                || name == "cookie"
                || name.contains("token")
                || name.contains("secret")
            {
                "[REDACTED]".into()
            } else {
                value
            };
            (name, value)
        })
        .collect()
}

use crate::codec::percent_decode as decode;

fn parse_query(q: &str) -> BTreeMap<String, String> {
    crate::codec::form_pairs(q).into_iter().collect()
}

fn fake_sha(seed: &str) -> String {
    // FNV-1a, widened to 40 hex digits: stable, and looks like a commit id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..3u64 {
        for b in seed.bytes().chain(round.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

fn user_id(login: &str) -> u64 {
    fake_sha(login)[..8].chars().fold(0, |acc, c| {
        acc * 16 + u64::from(c.to_digit(16).unwrap_or(0))
    }) % 90_000_000
        + 1_000
}

/// Now as `2026-01-02T03:04:05Z`.
fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso(secs)
}

fn iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::form_decode as decode_form;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso(1_767_323_045), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("group%2Fsub%2Fname"), "group/sub/name");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode_form("a+b%3Ac"), "a b:c");
    }

    #[test]
    fn pages_and_links() {
        let all: Vec<Value> = (0..150).map(|i| json!(i)).collect();
        let q = parse_query("per_page=100&page=1&x=1");
        let (items, l) = page(
            "http://h",
            all.clone(),
            &q,
            "/p?per_page=100&page=1&x=1",
            30,
        );
        assert_eq!(items.len(), 100);
        assert_eq!(
            l.link.as_deref(),
            Some(
                "<http://h/p?x=1&per_page=100&page=2>; rel=\"next\", <http://h/p?x=1&per_page=100&page=2>; rel=\"last\""
            )
        );
        let q = parse_query("per_page=100&page=2");
        let (items, l) = page("http://h", all.clone(), &q, "/p?per_page=100&page=2", 30);
        assert_eq!(items.len(), 50);
        assert_eq!(items[0], json!(100));
        assert!(l.link.as_deref().unwrap().contains("rel=\"prev\""));
        assert!(!l.link.as_deref().unwrap().contains("rel=\"next\""));
        let (items, l) = page("http://h", all, &BTreeMap::new(), "/p", 30);
        assert_eq!((items.len(), l.total_pages), (30, 5));
    }

    /// One raw HTTP/1.1 exchange: (status, lower-cased head, body).
    pub(super) fn http(
        double: &ForgeDouble,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(double.addr()).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    const GH: &[(&str, &str)] = &[
        ("User-Agent", "test"),
        ("Accept", "application/vnd.github+json"),
        ("Authorization", "Bearer tok"),
    ];

    fn json_of(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn github_checks_user_agent_then_token_like_github() {
        let d = ForgeDouble::start("tok");
        d.add_repo("o", "r");
        let (st, head, body) = http(
            &d,
            "GET",
            "/repos/o/r/pulls",
            &[
                ("Accept", "application/vnd.github+json"),
                ("Authorization", "Bearer tok"),
            ],
            "",
        );
        assert_eq!(st, 403);
        assert!(head.contains("content-type: text/plain"), "{head}");
        assert!(body.contains("User-Agent"), "{body}");
        let (st, _, body) = http(
            &d,
            "GET",
            "/repos/o/r/pulls",
            &[
                ("User-Agent", "t"),
                ("Accept", "application/vnd.github+json"),
            ],
            "",
        );
        assert_eq!(
            (st, json_of(&body)["message"].as_str()),
            (401, Some("Requires authentication"))
        );
        for auth in ["Bearer nope", "token nope", "Basic dG9r"] {
            let (st, _, body) = http(
                &d,
                "GET",
                "/repos/o/r/pulls",
                &[
                    ("User-Agent", "t"),
                    ("Accept", "application/vnd.github+json"),
                    ("Authorization", auth),
                ],
                "",
            );
            assert_eq!(st, 401);
            assert_eq!(
                json_of(&body),
                json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
            );
        }
        let (st, _, _) = http(
            &d,
            "GET",
            "/repos/o/r/pulls",
            &[
                ("User-Agent", "t"),
                ("Accept", "application/vnd.github+json"),
                ("Authorization", "token tok"),
            ],
            "",
        );
        assert_eq!(st, 200);
        let (st, _, _) = http(
            &d,
            "GET",
            "/repos/o/r/pulls",
            &[("User-Agent", "t"), ("Authorization", "Bearer tok")],
            "",
        );
        assert_eq!(st, 415, "the double insists on GitHub's Accept header");
        let (st, _, body) = http(&d, "GET", "/repos/o/missing/pulls", GH, "");
        assert_eq!(
            (st, json_of(&body)["message"].as_str()),
            (404, Some("Not Found"))
        );
        let mut with_version = GH.to_vec();
        with_version.push(("X-GitHub-Api-Version", "2020-01-01"));
        let (st, _, _) = http(&d, "GET", "/repos/o/r/pulls", &with_version, "");
        assert_eq!(st, 400);
        // No token value is ever recorded.
        assert!(
            d.requests()
                .iter()
                .all(|r| !format!("{:?}", r.headers).contains("tok\""))
        );
    }

    #[test]
    fn github_pull_requests_like_github() {
        let d = ForgeDouble::start("tok");
        d.add_repo("o", "r");
        let (st, head, body) = http(
            &d,
            "POST",
            "/repos/o/r/pulls",
            GH,
            r#"{"title":"T","head":"feat","base":"main","body":"B"}"#,
        );
        assert_eq!(st, 201, "{body}");
        let pr = json_of(&body);
        assert_eq!(pr["number"], 1);
        assert_eq!(pr["html_url"], "https://github.com/o/r/pull/1");
        assert_eq!(pr["url"], format!("{}/repos/o/r/pulls/1", d.base_url()));
        assert_eq!(
            (
                pr["state"].as_str(),
                pr["title"].as_str(),
                pr["body"].as_str()
            ),
            (Some("open"), Some("T"), Some("B"))
        );
        assert_eq!(
            (
                pr["head"]["ref"].as_str(),
                pr["head"]["label"].as_str(),
                pr["base"]["ref"].as_str()
            ),
            (Some("feat"), Some("o:feat"), Some("main"))
        );
        assert_eq!(pr["head"]["sha"].as_str().map(str::len), Some(40));
        assert!(
            pr["id"].is_u64()
                && pr["node_id"].is_string()
                && pr["user"]["login"].is_string()
                && pr["created_at"].is_string()
        );
        assert!(
            head.contains(&format!("location: {}/repos/o/r/pulls/1", d.base_url())),
            "{head}"
        );

        let (st, _, body) = http(
            &d,
            "POST",
            "/repos/o/r/pulls",
            GH,
            r#"{"title":"T","head":"o:feat","base":"main"}"#,
        );
        assert_eq!(st, 422);
        let e = json_of(&body);
        assert_eq!(e["message"], "Validation Failed");
        assert_eq!(
            e["errors"],
            json!([{"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for o:feat."}])
        );

        let (st, _, body) = http(
            &d,
            "POST",
            "/repos/o/r/pulls",
            GH,
            r#"{"title":"T","head":"main","base":"main"}"#,
        );
        assert_eq!(st, 422);
        assert_eq!(
            json_of(&body)["errors"][0]["message"],
            "No commits between main and main"
        );
        let (st, _, body) = http(
            &d,
            "POST",
            "/repos/o/r/pulls",
            GH,
            r#"{"title":"T","base":"main"}"#,
        );
        assert_eq!(
            (st, json_of(&body)["message"].as_str()),
            (422, Some("Invalid request.\n\n\"head\" wasn't supplied."))
        );
        let (st, _, _) = http(&d, "POST", "/repos/o/r/pulls", GH, "{not json");
        assert_eq!(st, 400);

        let (st, _, body) = http(
            &d,
            "GET",
            "/repos/o/r/pulls?head=o%3Afeat&state=open",
            GH,
            "",
        );
        assert_eq!(st, 200);
        assert_eq!(json_of(&body).as_array().map(Vec::len), Some(1));
        let (_, _, body) = http(
            &d,
            "GET",
            "/repos/o/r/pulls?head=o%3Aother&state=open",
            GH,
            "",
        );
        assert_eq!(json_of(&body), json!([]));
        d.close_pull_request("o/r", 1);
        let (_, _, body) = http(&d, "GET", "/repos/o/r/pulls?head=o%3Afeat", GH, "");
        assert_eq!(json_of(&body), json!([]), "the default state is open");
        assert_eq!(d.pull_requests().len(), 1);
    }

    #[test]
    fn github_comment_pages_carry_a_link_header() {
        let d = ForgeDouble::start("tok");
        d.add_repo("o", "r");
        let ids: Vec<u64> = (0..5)
            .map(|i| d.add_review_comment("o/r", 1, "a", &format!("c{i}"), "f.rs", Some(i + 1)))
            .collect();
        let issue = d.add_issue_comment("o/r", 1, "b", "hi");
        assert!(issue > ids[4], "separate sequences");
        let (st, head, body) = http(
            &d,
            "GET",
            "/repos/o/r/pulls/1/comments?per_page=2&page=2",
            GH,
            "",
        );
        assert_eq!(st, 200);
        let page: Vec<u64> = json_of(&body)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert_eq!(page, ids[2..4].to_vec());
        let base = d.base_url();
        assert!(head.contains(&format!("link: <{base}/repos/o/r/pulls/1/comments?per_page=2&page=1>; rel=\"prev\", <{base}/repos/o/r/pulls/1/comments?per_page=2&page=3>; rel=\"next\"")), "{head}");
        let (_, _, body) = http(&d, "GET", "/repos/o/r/issues/1/comments", GH, "");
        assert_eq!(
            json_of(&body)[0]["html_url"],
            format!("https://github.com/o/r/pull/1#issuecomment-{issue}")
        );
    }

    #[test]
    fn github_pull_request_life_like_github() {
        let d = ForgeDouble::start("tok");
        d.add_repo("o", "r");
        let pr = r#"{"title":"t","head":"feat","base":"main","body":"b"}"#;
        assert_eq!(http(&d, "POST", "/repos/o/r/pulls", GH, pr).0, 201);
        // Writes need the token like reads.
        let bad: &[(&str, &str)] = &[
            ("User-Agent", "test"),
            ("Accept", "application/vnd.github+json"),
            ("Authorization", "Bearer wrong"),
        ];
        let (st, _, body) = http(&d, "PATCH", "/repos/o/r/pulls/1", bad, r#"{"body":"x"}"#);
        assert_eq!(
            (st, json_of(&body)["message"].clone()),
            (401, json!("Bad credentials"))
        );
        let (st, _, _) = http(
            &d,
            "POST",
            "/repos/o/r/issues/1/comments",
            bad,
            r#"{"body":"x"}"#,
        );
        assert_eq!(st, 401);
        // PATCH: the body is replaced; an unknown state is 422; a missing pull request 404.
        let (st, _, body) = http(&d, "PATCH", "/repos/o/r/pulls/1", GH, r#"{"body":"new"}"#);
        assert_eq!((st, json_of(&body)["body"].clone()), (200, json!("new")));
        let (st, _, body) = http(
            &d,
            "PATCH",
            "/repos/o/r/pulls/1",
            GH,
            r#"{"state":"merged"}"#,
        );
        assert_eq!(
            (st, json_of(&body)["message"].clone()),
            (422, json!("Validation Failed"))
        );
        assert_eq!(http(&d, "PATCH", "/repos/o/r/pulls/9", GH, "{}").0, 404);
        assert_eq!(http(&d, "PATCH", "/repos/o/r/pulls/1", GH, "{nope").0, 400);
        // Comments: 201 by the token's user; 422 without a body; 404 without the pull request.
        let (st, _, body) = http(
            &d,
            "POST",
            "/repos/o/r/issues/1/comments",
            GH,
            r#"{"body":"hi"}"#,
        );
        assert_eq!(st, 201);
        assert_eq!(json_of(&body)["user"]["login"], TOKEN_USER);
        let (st, _, body) = http(&d, "POST", "/repos/o/r/issues/1/comments", GH, "{}");
        assert_eq!(st, 422);
        assert_eq!(json_of(&body)["errors"][0]["field"], "body");
        assert_eq!(
            http(
                &d,
                "POST",
                "/repos/o/r/issues/9/comments",
                GH,
                r#"{"body":"x"}"#
            )
            .0,
            404
        );
        // Merged: `merged` and `merged_at` on the single pull request; it cannot be reopened.
        let (_, _, body) = http(&d, "GET", "/repos/o/r/pulls/1", GH, "");
        assert_eq!(json_of(&body)["merged"], false);
        d.merge_pull_request("o/r", 1);
        let (_, _, body) = http(&d, "GET", "/repos/o/r/pulls/1", GH, "");
        let v = json_of(&body);
        assert_eq!(
            (v["state"].clone(), v["merged"].clone()),
            (json!("closed"), json!(true))
        );
        assert!(v["merged_at"].is_string());
        let (st, _, _) = http(&d, "PATCH", "/repos/o/r/pulls/1", GH, r#"{"state":"open"}"#);
        assert_eq!(st, 422);
        // Reviews: listed with their state; 404 for a pull request that does not exist.
        d.add_review("o/r", 1, "octocat", "APPROVED", "");
        let (st, _, body) = http(&d, "GET", "/repos/o/r/pulls/1/reviews", GH, "");
        assert_eq!(
            (st, json_of(&body)[0]["state"].clone()),
            (200, json!("APPROVED"))
        );
        assert_eq!(http(&d, "GET", "/repos/o/r/pulls/9/reviews", GH, "").0, 404);
    }

    #[test]
    fn gitlab_merge_request_life_like_gitlab() {
        let d = ForgeDouble::start("tok");
        d.add_gitlab_project("g/p");
        let auth: &[(&str, &str)] = &[
            ("PRIVATE-TOKEN", "tok"),
            ("Content-Type", "application/json"),
        ];
        let base = "/api/v4/projects/g%2Fp/merge_requests";
        let mr = r#"{"source_branch":"f","target_branch":"main","title":"t"}"#;
        assert_eq!(http(&d, "POST", base, auth, mr).0, 201);
        let one = format!("{base}/1");
        let (st, _, _) = http(
            &d,
            "PUT",
            &one,
            &[("PRIVATE-TOKEN", "x")],
            r#"{"description":"d"}"#,
        );
        assert_eq!(st, 401);
        let (st, _, body) = http(&d, "PUT", &one, auth, r#"{"description":"d"}"#);
        assert_eq!(
            (st, json_of(&body)["description"].clone()),
            (200, json!("d"))
        );
        assert_eq!(http(&d, "PUT", &one, auth, "{}").0, 400);
        assert_eq!(
            http(&d, "PUT", &format!("{base}/9"), auth, r#"{"title":"x"}"#).0,
            404
        );
        let notes = format!("{one}/notes");
        let (st, _, body) = http(&d, "POST", &notes, auth, r#"{"body":"hi"}"#);
        assert_eq!(st, 201);
        assert_eq!(json_of(&body)["author"]["username"], TOKEN_USER);
        let (st, _, body) = http(&d, "POST", &notes, auth, "{}");
        assert_eq!(
            (st, json_of(&body)),
            (400, json!({"error": "body is missing"}))
        );
        d.merge_merge_request("g/p", 1);
        let (_, _, body) = http(&d, "GET", &one, auth, "");
        let v = json_of(&body);
        assert_eq!(v["state"], "merged");
        assert!(v["merged_at"].is_string());
        let (_, _, body) = http(&d, "PUT", &one, auth, r#"{"state_event":"close"}"#);
        assert_eq!(
            json_of(&body)["state"],
            "merged",
            "a merged request stays merged"
        );
    }

    #[test]
    fn gitlab_merge_requests_like_gitlab() {
        let d = ForgeDouble::start("tok");
        let id = d.add_gitlab_project("g/sub/p");
        let (st, _, body) = http(
            &d,
            "GET",
            "/api/v4/projects/g%2Fsub%2Fp/merge_requests",
            &[("PRIVATE-TOKEN", "nope")],
            "",
        );
        assert_eq!(
            (st, json_of(&body)),
            (401, json!({"message": "401 Unauthorized"}))
        );
        let auth: &[(&str, &str)] = &[
            ("PRIVATE-TOKEN", "tok"),
            ("Content-Type", "application/json"),
        ];
        let (st, _, body) = http(
            &d,
            "GET",
            "/api/v4/projects/g%2Fmissing/merge_requests",
            auth,
            "",
        );
        assert_eq!(
            (st, json_of(&body)),
            (404, json!({"message": "404 Project Not Found"}))
        );
        let (st, _, body) = http(
            &d,
            "POST",
            "/api/v4/projects/g%2Fsub%2Fp/merge_requests",
            auth,
            r#"{"source_branch":"feat","target_branch":"main","title":"T","description":"D"}"#,
        );
        assert_eq!(st, 201, "{body}");
        let mr = json_of(&body);
        assert_eq!(
            (
                mr["iid"].as_u64(),
                mr["project_id"].as_u64(),
                mr["state"].as_str()
            ),
            (Some(1), Some(id), Some("opened"))
        );
        assert_eq!(
            mr["web_url"],
            "https://gitlab.com/g/sub/p/-/merge_requests/1"
        );
        assert_eq!(
            (mr["source_branch"].as_str(), mr["target_branch"].as_str()),
            (Some("feat"), Some("main"))
        );
        // A form works too, and the numeric id.
        let (st, _, body) = http(
            &d,
            "POST",
            &format!("/api/v4/projects/{id}/merge_requests"),
            &[
                ("Authorization", "Bearer tok"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "source_branch=feat&target_branch=main&title=Again",
        );
        assert_eq!(st, 409);
        assert_eq!(
            json_of(&body),
            json!({"message": ["Another open merge request already exists for this source branch: !1"]})
        );
        let (st, _, body) = http(
            &d,
            "POST",
            "/api/v4/projects/g%2Fsub%2Fp/merge_requests",
            auth,
            r#"{"source_branch":"feat"}"#,
        );
        assert_eq!(
            (st, json_of(&body)),
            (
                400,
                json!({"error": "target_branch is missing, title is missing"})
            )
        );
        d.add_gitlab_note("g/sub/p", 1, "sys", "added 1 commit", true);
        d.add_gitlab_diff_note("g/sub/p", 1, "rev", "why?", "a.rs", 4);
        let (st, head, body) = http(
            &d,
            "GET",
            "/api/v4/projects/g%2Fsub%2Fp/merge_requests/1/notes",
            auth,
            "",
        );
        assert_eq!(st, 200);
        let notes = json_of(&body);
        assert_eq!(notes[0]["body"], "why?", "newest first by default");
        assert_eq!(notes[0]["type"], "DiffNote");
        assert_eq!(notes[0]["position"]["new_line"], 4);
        assert_eq!(notes[1]["system"], true);
        assert!(
            head.contains("x-total: 2") && head.contains("x-per-page: 20"),
            "{head}"
        );
        let (st, _, _) = http(
            &d,
            "GET",
            "/api/v4/projects/g%2Fsub%2Fp/merge_requests/9/notes",
            auth,
            "",
        );
        assert_eq!(st, 404);
    }

    #[test]
    fn secrets_are_not_recorded() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer ghp_secret".parse().unwrap());
        h.insert("private-token", "glpat-secret".parse().unwrap());
        h.insert("user-agent", "fleet/0.1".parse().unwrap());
        let r = redact_headers(&h);
        let all = format!("{r:?}");
        assert!(!all.contains("secret"), "{all}");
        assert_eq!(header_in(&r, "Authorization"), Some("Bearer [REDACTED]"));
        assert_eq!(header_in(&r, "user-agent"), Some("fleet/0.1"));
    }
}
