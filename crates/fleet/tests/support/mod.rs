//! Helpers shared by the `fleet` binary's integration tests.

pub mod epics;
pub mod kill;
pub mod runners;
pub mod scripted;
pub mod server;

use std::path::Path;
use std::process::Command;

/// Runs git in `dir` with a fixed identity; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one branch `fleet/<kind>/<instance>/<name>`: branch names carry the id of the instance
/// that made them.
pub fn fleet_branch(repo: &Path, kind: &str, name: &str) -> String {
    let pattern = format!("refs/heads/fleet/{kind}/*/{name}");
    let out = git(
        repo,
        &["for-each-ref", "--format=%(refname:short)", &pattern],
    );
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 1, "branches {pattern}: {names:?}");
    names[0].to_string()
}
