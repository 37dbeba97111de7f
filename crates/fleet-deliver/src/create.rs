//! Creating a repository on a forge: GitHub `POST /user/repos` (or `POST /orgs/{org}/repos`),
//! GitLab `POST /projects` (in a group: its id from `GET /namespaces/{path}` first). Used by
//! `fleet project new` to give a project from nothing a home on the forge.

use reqwest::Method;
use serde_json::{Value, json};

use crate::http::{encode, str_of};
use crate::{ForgeError, ForgeKind, GitHub, GitLab, Token};

/// A repository the forge just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepository {
    /// `owner/name` (GitHub `full_name`, GitLab `path_with_namespace`): the `repo` deliveries use.
    pub full_name: String,
    /// The URL git pushes to (GitHub `clone_url`, GitLab `http_url_to_repo`).
    pub clone_url: String,
    /// The page people open.
    pub web_url: String,
}

/// Where and how to create a repository.
#[derive(Debug, Clone)]
pub struct RepositoryRequest<'a> {
    pub forge: ForgeKind,
    /// `None`: the forge's public API.
    pub api_url: Option<&'a str>,
    /// A GitHub organization or GitLab group path; `None`: the token's own user.
    pub owner: Option<&'a str>,
    pub name: &'a str,
    pub description: &'a str,
    pub token: &'a Token,
}

/// Creates a private, empty repository (no README: the first commit is pushed by the caller).
/// A taken name is [`ForgeError::Validation`]; a refused token [`ForgeError::Auth`].
pub async fn create_repository(r: &RepositoryRequest<'_>) -> Result<NewRepository, ForgeError> {
    match r.forge {
        ForgeKind::GitHub => github(r).await,
        ForgeKind::GitLab => gitlab(r).await,
    }
}

async fn github(r: &RepositoryRequest<'_>) -> Result<NewRepository, ForgeError> {
    let mut g = GitHub::new(r.owner.unwrap_or(""), r.name, r.token.clone());
    if let Some(u) = r.api_url {
        g = g.with_api_url(u);
    }
    let path = match r.owner {
        Some(org) => format!("/orgs/{}/repos", encode(org)),
        None => "/user/repos".to_string(),
    };
    let payload = json!({"name": r.name, "description": r.description, "private": true,
                         "auto_init": false});
    let (call, reply) = g.request(Method::POST, &path, Some(&payload)).await?;
    if !reply.ok() {
        let what = match r.owner {
            Some(org) => format!("organization {org}"),
            None => "the token's user".to_string(),
        };
        return Err(call.error(&reply, &what));
    }
    let v = call.json(&reply)?;
    read(&call, &v, "full_name", "clone_url", "html_url")
}

async fn gitlab(r: &RepositoryRequest<'_>) -> Result<NewRepository, ForgeError> {
    let mut g = GitLab::new(r.name, r.token.clone());
    if let Some(u) = r.api_url {
        g = g.with_api_url(u);
    }
    let mut payload = json!({"name": r.name, "path": r.name, "description": r.description,
                             "visibility": "private", "initialize_with_readme": false});
    if let Some(group) = r.owner {
        let path = format!("/namespaces/{}", encode(group));
        let (call, reply) = g.request(Method::GET, &path, None).await?;
        if !reply.ok() {
            return Err(call.error(&reply, &format!("group {group}")));
        }
        let id = call
            .json(&reply)?
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| call.invalid("the namespace has no id"))?;
        payload["namespace_id"] = json!(id);
    }
    let (call, reply) = g.request(Method::POST, "/projects", Some(&payload)).await?;
    if !reply.ok() {
        return Err(call.error(&reply, "the namespace"));
    }
    let v = call.json(&reply)?;
    read(
        &call,
        &v,
        "path_with_namespace",
        "http_url_to_repo",
        "web_url",
    )
}

fn read(
    call: &crate::http::Call<'_>,
    v: &Value,
    name: &str,
    clone: &str,
    web: &str,
) -> Result<NewRepository, ForgeError> {
    let repo = NewRepository {
        full_name: str_of(v, name).to_string(),
        clone_url: str_of(v, clone).to_string(),
        web_url: str_of(v, web).to_string(),
    };
    if repo.full_name.is_empty() || repo.clone_url.is_empty() {
        return Err(call.invalid(&format!("the new repository has no {name} or {clone}")));
    }
    Ok(repo)
}
