//! Creating repositories, as the forges do: GitHub `POST /user/repos` and
//! `POST /orgs/{org}/repos` (201 with the repository; 422 "name already exists on this
//! account"; 404 for an organization the double was not told about), GitLab `POST /projects`
//! (201; 400 `has already been taken`; 400 without a name or path) and `GET /namespaces/:id`
//! (the token's user and the groups it was told about; 404 `Namespace Not Found`).
//!
//! With [`ForgeDouble::host_git`], each created repository is also a real bare git repository
//! on disk and its clone URL points there, so a client can push its first commit.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{
    ForgeDouble, Project, Reply, Shared, TOKEN_USER, github_error, gitlab_error, gitlab_fields,
    now_iso, user_id, user_json,
};

/// A repository created through the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRepository {
    /// `github` or `gitlab`.
    pub forge: &'static str,
    /// `owner/name` (GitLab: the path with its namespace).
    pub full_name: String,
    pub private: bool,
    /// Where git pushes to: the bare repository under [`ForgeDouble::host_git`]'s directory
    /// (an absolute path), else a URL on the double that serves no git.
    pub clone_url: String,
}

impl ForgeDouble {
    /// Created repositories become bare git repositories under `dir` (`dir/owner/name.git`),
    /// and their clone URLs point there.
    pub fn host_git(&self, dir: &Path) {
        self.shared.db().git_root = Some(dir.to_path_buf());
    }

    /// Makes GitHub organization `org` exist (repositories may be created in it).
    pub fn add_org(&self, org: &str) {
        self.shared.db().orgs.insert(org.to_string());
    }

    /// Makes GitLab group `path` exist; returns its namespace id.
    pub fn add_gitlab_group(&self, path: &str) -> u64 {
        let mut db = self.shared.db();
        if let Some((id, _)) = db.groups.iter().find(|(_, p)| p == path) {
            return *id;
        }
        let id = 70_000 + db.groups.len() as u64 + 1;
        db.groups.push((id, path.to_string()));
        id
    }

    /// The repositories created through the API, in order.
    pub fn created_repositories(&self) -> Vec<CreatedRepository> {
        self.shared.db().created.clone()
    }
}

/// A bare repository for `full_name` under the git root, or `fallback` without one.
fn clone_url(shared: &Shared, full_name: &str, fallback: String) -> Result<String, String> {
    let Some(root) = shared.db().git_root.clone() else {
        return Ok(fallback);
    };
    let path: PathBuf = root.join(format!("{full_name}.git"));
    std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(path.display().to_string())
}

/// `POST /user/repos` (`org` `None`) or `POST /orgs/{org}/repos`.
pub(super) fn github_create_repo(shared: &Shared, org: Option<&str>, bytes: &[u8]) -> Reply {
    if let Some(o) = org
        && !shared.db().orgs.iter().any(|k| k.eq_ignore_ascii_case(o))
    {
        return github_error(404, "Not Found");
    }
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return github_error(400, "Problems parsing JSON");
    };
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let owner = org.unwrap_or(TOKEN_USER);
    let docs = match org {
        Some(_) => "https://docs.github.com/rest/repos/repos#create-an-organization-repository",
        None => {
            "https://docs.github.com/rest/repos/repos#create-a-repository-for-the-authenticated-user"
        }
    };
    let failed = |errors: Value| {
        Reply::json(
            422,
            json!({"message": "Repository creation failed.", "errors": errors,
                   "documentation_url": docs, "status": "422"}),
        )
    };
    if name.is_empty() {
        return failed(
            json!([{"resource": "Repository", "code": "missing_field", "field": "name"}]),
        );
    }
    let full_name = format!("{owner}/{name}");
    if shared
        .db()
        .repos
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&full_name))
    {
        return failed(
            json!([{"resource": "Repository", "code": "custom", "field": "name",
                               "message": "name already exists on this account"}]),
        );
    }
    let private = body
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let url = match clone_url(
        shared,
        &full_name,
        format!("{}/{full_name}.git", shared.base_url),
    ) {
        Ok(u) => u,
        Err(e) => return github_error(500, &e),
    };
    let mut db = shared.db();
    db.repos.insert(full_name.clone());
    db.created.push(super::repos::CreatedRepository {
        forge: "github",
        full_name: full_name.clone(),
        private,
        clone_url: url.clone(),
    });
    let id = 800_000_000 + db.created.len() as u64;
    drop(db);
    let base = &shared.base_url;
    Reply::json(
        201,
        json!({
            "id": id, "node_id": format!("R_kgDO{id}"), "name": name, "full_name": full_name,
            "private": private, "owner": user_json(owner),
            "html_url": format!("{base}/{full_name}"),
            "description": body.get("description").cloned().unwrap_or(Value::Null),
            "fork": false, "url": format!("{base}/repos/{full_name}"),
            "clone_url": url, "git_url": format!("git://127.0.0.1/{full_name}.git"),
            "ssh_url": format!("git@127.0.0.1:{full_name}.git"),
            "visibility": if private { "private" } else { "public" },
            "default_branch": "main", "created_at": now_iso(), "pushed_at": Value::Null,
            "size": 0, "permissions": {"admin": true, "push": true, "pull": true},
        }),
    )
}

/// `GET /namespaces/:id`: the token's user's namespace or a known group, by id or path.
pub(super) fn gitlab_namespace(shared: &Shared, id: &str) -> Reply {
    if id == TOKEN_USER || id == user_id(TOKEN_USER).to_string() {
        return Reply::json(
            200,
            json!({"id": user_id(TOKEN_USER), "name": TOKEN_USER, "path": TOKEN_USER,
                   "kind": "user", "full_path": TOKEN_USER}),
        );
    }
    let db = shared.db();
    match db
        .groups
        .iter()
        .find(|(n, p)| n.to_string() == id || p.eq_ignore_ascii_case(id))
    {
        Some((n, p)) => Reply::json(
            200,
            json!({"id": n, "name": p.rsplit('/').next().unwrap_or(p), "path": p.rsplit('/').next().unwrap_or(p),
                   "kind": "group", "full_path": p}),
        ),
        None => gitlab_error(404, json!("404 Namespace Not Found")),
    }
}

/// `POST /projects`: `name` and/or `path`, `namespace_id` (default the user's), `visibility`.
pub(super) fn gitlab_create_project(shared: &Shared, bytes: &[u8]) -> Reply {
    let f = gitlab_fields(bytes);
    let name = f.get("name").or(f.get("path")).cloned().unwrap_or_default();
    let path = f.get("path").or(f.get("name")).cloned().unwrap_or_default();
    if name.is_empty() {
        return Reply::json(
            400,
            json!({"error": "name, path are missing, at least one parameter must be provided"}),
        );
    }
    let namespace = match f.get("namespace_id") {
        None => TOKEN_USER.to_string(),
        Some(id) => {
            let db = shared.db();
            match db.groups.iter().find(|(n, _)| n.to_string() == *id) {
                Some((_, p)) => p.clone(),
                None => return gitlab_error(404, json!("404 Namespace Not Found")),
            }
        }
    };
    let full = format!("{namespace}/{path}");
    if shared
        .db()
        .projects
        .iter()
        .any(|p| p.path.eq_ignore_ascii_case(&full))
    {
        return gitlab_error(
            400,
            json!({"name": ["has already been taken"], "path": ["has already been taken"]}),
        );
    }
    let visibility = f
        .get("visibility")
        .cloned()
        .unwrap_or_else(|| "private".into());
    let base = &shared.base_url;
    let url = match clone_url(shared, &full, format!("{base}/{full}.git")) {
        Ok(u) => u,
        Err(e) => return gitlab_error(500, json!(e)),
    };
    let mut db = shared.db();
    let id = 4_000_000 + db.projects.len() as u64 + 1;
    db.projects.push(Project {
        id,
        path: full.clone(),
    });
    db.created.push(CreatedRepository {
        forge: "gitlab",
        full_name: full.clone(),
        private: visibility == "private",
        clone_url: url.clone(),
    });
    drop(db);
    Reply::json(
        201,
        json!({
            "id": id, "name": name, "path": path, "path_with_namespace": full,
            "name_with_namespace": full.replace('/', " / "),
            "namespace": {"path": namespace, "full_path": namespace},
            "visibility": visibility, "default_branch": Value::Null,
            "http_url_to_repo": url, "ssh_url_to_repo": format!("git@127.0.0.1:{full}.git"),
            "web_url": format!("{base}/{full}"), "created_at": now_iso(),
            "empty_repo": true,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::ForgeDouble;
    use serde_json::Value;

    fn call(
        forge: &ForgeDouble,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut all = vec![
            ("User-Agent", "t"),
            ("Accept", "application/vnd.github+json"),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        let (status, _, body) =
            super::super::tests::http(forge, method, path, &all, body.unwrap_or(""));
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    #[test]
    fn github_creates_repositories_like_github() {
        let forge = ForgeDouble::start("t0k");
        let git = tempfile::tempdir().unwrap();
        forge.host_git(git.path());
        let user = "/user/repos";
        let body = r#"{"name":"shop","private":true}"#;
        let (s, v) = call(&forge, "POST", user, &[], Some(body));
        assert_eq!(
            (s, v["message"].as_str()),
            (401, Some("Requires authentication"))
        );
        let (s, _) = call(
            &forge,
            "POST",
            user,
            &[("authorization", "Bearer nope")],
            Some(body),
        );
        assert_eq!(s, 401);
        let auth = [("authorization", "Bearer t0k")];
        let (s, v) = call(&forge, "POST", user, &auth, Some(body));
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["full_name"], "fleet-bot/shop");
        assert_eq!(v["private"], true);
        assert_eq!(v["owner"]["login"], "fleet-bot");
        let clone = v["clone_url"].as_str().unwrap();
        assert!(
            std::path::Path::new(clone).join("HEAD").is_file(),
            "{clone}"
        );
        let (s, v) = call(&forge, "POST", user, &auth, Some(body));
        assert_eq!(s, 422);
        assert_eq!(
            v["errors"][0]["message"],
            "name already exists on this account"
        );
        let org = "/orgs/acme/repos";
        assert_eq!(call(&forge, "POST", org, &auth, Some(body)).0, 404);
        forge.add_org("acme");
        let (s, v) = call(&forge, "POST", org, &auth, Some(body));
        assert_eq!((s, v["full_name"].as_str()), (201, Some("acme/shop")));
        assert_eq!(forge.created_repositories().len(), 2);
    }

    #[test]
    fn gitlab_creates_projects_like_gitlab() {
        let forge = ForgeDouble::start("t0k");
        let url = "/api/v4/projects";
        let body = r#"{"name":"shop","path":"shop","visibility":"private"}"#;
        let (s, _) = call(&forge, "POST", url, &[("private-token", "bad")], Some(body));
        assert_eq!(s, 401);
        let auth = [("private-token", "t0k")];
        let (s, v) = call(&forge, "POST", url, &auth, Some(body));
        assert_eq!(
            (s, v["path_with_namespace"].as_str()),
            (201, Some("fleet-bot/shop"))
        );
        let (s, v) = call(&forge, "POST", url, &auth, Some(body));
        assert_eq!(s, 400);
        assert_eq!(v["message"]["name"][0], "has already been taken");
        let ns = "/api/v4/namespaces/acme%2Fapps";
        assert_eq!(call(&forge, "GET", ns, &auth, None).0, 404);
        let id = forge.add_gitlab_group("acme/apps");
        let (s, v) = call(&forge, "GET", ns, &auth, None);
        assert_eq!((s, v["id"].as_u64()), (200, Some(id)));
        let body = format!(r#"{{"name":"shop","namespace_id":{id}}}"#);
        let (s, v) = call(&forge, "POST", url, &auth, Some(&body));
        assert_eq!(
            (s, v["path_with_namespace"].as_str()),
            (201, Some("acme/apps/shop"))
        );
    }
}
