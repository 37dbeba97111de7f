//! Reading a git remote URL.

/// `(host, owner, repo)` of a git remote URL, or `None` when it is not a remote on a forge
/// (a local path, `file://`, fewer than two path segments).
///
/// Understands `https://HOST/OWNER/REPO(.git)`, `http://…`, `ssh://[user@]HOST[:port]/…`,
/// `git://…` and the scp-like `[user@]HOST:OWNER/REPO(.git)`. Credentials in the URL are
/// dropped. The host is lower-cased; it keeps its port for http(s) (where the port also serves
/// the API) and loses it for ssh (where it is the ssh port). On GitLab the owner may be a
/// nested group path (`group/subgroup`); on `github.com` exactly two segments are required.
pub fn parse_remote(url: &str) -> Option<(String, String, String)> {
    let url = url.trim();
    if url.is_empty() || url.contains('\\') || url.chars().any(char::is_whitespace) {
        return None;
    }
    let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let keep_port = match scheme.as_str() {
            "https" | "http" => true,
            "ssh" | "git" | "git+ssh" | "ssh+git" => false,
            _ => return None,
        };
        let (authority, path) = rest.split_once('/')?;
        // user:password@host:port — the password may hold '@' only encoded, so the last '@'.
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if keep_port {
            hostport
        } else {
            hostport.split(':').next().unwrap_or("")
        };
        (host, path)
    } else {
        // scp-like: [user@]host:path, where host has no '/' (else it is a local path).
        let (left, path) = url.split_once(':')?;
        if left.contains('/') || path.starts_with("//") {
            return None;
        }
        let host = left.rsplit_once('@').map_or(left, |(_, h)| h);
        // `c:foo` is a Windows drive, not a host.
        if host.len() < 2 {
            return None;
        }
        (host, path)
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() || host.starts_with(':') {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == ".." || s.starts_with('~'))
    {
        return None;
    }
    if host == "github.com" && segments.len() != 2 {
        return None;
    }
    let (repo, owner) = segments.split_last()?;
    Some((host, owner.join("/"), repo.to_string()))
}
