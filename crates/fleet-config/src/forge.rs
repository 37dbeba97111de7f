//! `fleet.yaml`'s `forge:` section: the forge new projects are created on
//! (`fleet project new`, `POST /api/v1/projects/new`).
//!
//! ```yaml
//! forge:
//!   kind: github              # github | gitlab
//!   owner: acme               # a GitHub organization / GitLab group path (default: the token's user)
//!   api_url: https://github.example.com/api/v3   # default api.github.com / gitlab.com/api/v4
//!   token_env: GITHUB_TOKEN   # default GITHUB_TOKEN / GITLAB_TOKEN
//! ```
//!
//! The token is never written here: the file names the environment variable that holds it.

use crate::Location;
use crate::decode::Decoder;
use crate::yaml::Node;

pub(crate) const FORGE_KEYS: &[&str] = &["kind", "owner", "api_url", "token_env"];

/// The instance's forge, when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeSpec {
    /// `github` or `gitlab`.
    pub kind: String,
    /// GitHub organization or GitLab group path; `None`: the token's own user.
    pub owner: Option<String>,
    /// `None`: the forge's public API.
    pub api_url: Option<String>,
    /// The variable holding the token (default `GITHUB_TOKEN` / `GITLAB_TOKEN`).
    pub token_env: String,
    pub location: Location,
}

pub(crate) fn forge(d: &mut Decoder<'_>, node: &Node) -> Option<ForgeSpec> {
    let fields = d.fields(
        node,
        FORGE_KEYS,
        "in `forge`",
        "a mapping with `kind` (github or gitlab)",
    )?;
    let before = d.errors.len();
    let (mut kind, mut owner, mut api_url, mut token_env) = (None, None, None, None);
    for f in &fields.list {
        match f.key {
            "kind" => {
                if let Some(k) = d.text(f.value, "kind") {
                    match k.value.as_str() {
                        "github" | "gitlab" => kind = Some(k.value),
                        other => d.error(
                            k.at,
                            format!("`kind`: expected github or gitlab, found {other:?}"),
                        ),
                    }
                }
            }
            "owner" => {
                if let Some(o) = d.text(f.value, "owner") {
                    let bad = o.value.is_empty()
                        || o.value.split('/').any(|s| {
                            s.is_empty()
                                || s == "."
                                || s == ".."
                                || !s
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                        });
                    if bad {
                        d.error(
                            o.at,
                            "`owner`: expected an organization or group path (letters, digits, `-_.`, groups joined by `/`)",
                        );
                    } else {
                        owner = Some(o.value);
                    }
                }
            }
            "api_url" => api_url = crate::notify::http_url(d, f.value, "api_url"),
            "token_env" => {
                token_env =
                    crate::notify::env_name(d, f.value, "token_env", "GITHUB_TOKEN", "forge token")
            }
            _ => unreachable!("fields() keeps known keys only"),
        }
    }
    if !fields.has("kind") {
        d.error(fields.start, "`forge` needs `kind` (github or gitlab)");
    }
    if d.errors.len() > before {
        return None;
    }
    let kind = kind?;
    let token_env = token_env.unwrap_or_else(|| {
        if kind == "gitlab" {
            "GITLAB_TOKEN".into()
        } else {
            "GITHUB_TOKEN".into()
        }
    });
    Some(ForgeSpec {
        kind,
        owner,
        api_url,
        token_env,
        location: fields.start,
    })
}

#[cfg(test)]
mod tests {
    use crate::parse_instance;
    use std::path::Path;

    #[test]
    fn decodes_forge_with_defaults_and_its_token_is_a_secret() {
        let cfg = parse_instance(
            Path::new("fleet.yaml"),
            "forge:\n  kind: gitlab\n  owner: acme/apps\n  api_url: http://127.0.0.1:9/api/v4/\n",
        )
        .unwrap();
        let f = cfg.forge.clone().unwrap();
        assert_eq!(
            (
                f.kind.as_str(),
                f.owner.as_deref(),
                f.api_url.as_deref(),
                f.token_env.as_str()
            ),
            (
                "gitlab",
                Some("acme/apps"),
                Some("http://127.0.0.1:9/api/v4"),
                "GITLAB_TOKEN"
            )
        );
        assert!(cfg.secret_names().contains(&"GITLAB_TOKEN".to_string()));
        let cfg = parse_instance(Path::new("fleet.yaml"), "forge: { kind: github }\n").unwrap();
        assert_eq!(cfg.forge.unwrap().token_env, "GITHUB_TOKEN");
    }

    #[test]
    fn bad_forge_is_located() {
        let errors = parse_instance(
            Path::new("fleet.yaml"),
            "forge:\n  kind: bitbucket\n  owner: ../x\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("fleet.yaml:2:9") && e.contains("github or gitlab")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("fleet.yaml:3:10")),
            "{text:?}"
        );
        let errors =
            parse_instance(Path::new("fleet.yaml"), "forge:\n  owner: acme\n").unwrap_err();
        assert!(errors[0].to_string().contains("needs `kind`"), "{errors:?}");
    }
}
