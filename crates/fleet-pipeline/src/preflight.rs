//! Preflight of a project's git remote: reachable, checked with `git ls-remote` under a
//! timeout and a scrubbed environment, at `project add` (a clear refusal) and at submit (the
//! epic is `blocked` with the question, answered by fixing the remote and `fleet task retry`).

use crate::{DeliverySpec, Pipeline};
use fleet_store::ProjectRow;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a remote may take to answer `git ls-remote`.
pub(crate) const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote a project's results are pushed to, if it delivers to one.
pub(crate) fn delivery_remote(delivery: &serde_json::Value) -> Option<String> {
    let spec: DeliverySpec = serde_json::from_value(delivery.clone()).ok()?;
    match spec.kind.as_str() {
        "pull_request" => Some(spec.remote.unwrap_or_else(|| "origin".into())),
        "branch" => spec.remote,
        _ => None,
    }
}

/// `None` when `remote` (a remote's name in `repo`, or a URL) answers `git ls-remote` within
/// `timeout`; otherwise what went wrong. Git runs with Fleet's secrets scrubbed from its
/// environment and may never prompt (a prompt would hang a server).
pub(crate) fn unreachable(repo: &Path, remote: &str, timeout: Duration) -> Option<String> {
    let mut child = match fleet_git::command(repo)
        .args(["ls-remote", "--heads", "--", remote])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o ConnectTimeout=10",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(format!("git could not start: {e}")),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(_)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut err);
                }
                let err: String = err.trim().chars().take(500).collect();
                return Some(if err.is_empty() {
                    "git ls-remote failed".into()
                } else {
                    err
                });
            }
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: kill of the process group this function started.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Some(format!("no answer within {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Some(e.to_string()),
        }
    }
}

use std::os::unix::process::CommandExt;

impl Pipeline {
    /// The question to ask when `project`'s delivery remote cannot be reached, else `None`.
    pub(crate) fn remote_problem(
        &self,
        project: &ProjectRow,
        epic: Option<&str>,
    ) -> Option<String> {
        let remote = delivery_remote(&project.delivery)?;
        let why = unreachable(Path::new(&project.path), &remote, REMOTE_TIMEOUT)?;
        let redacted = self.redactor().clean_string(why);
        let then = match epic {
            Some(id) => format!("then run `fleet task retry {id}`"),
            None => "then add the project again".into(),
        };
        Some(format!(
            "The git remote {remote} of project {} cannot be reached ({redacted}). Fix the remote \
             (its URL, the network, or git's credentials for it), {then}.",
            project.name
        ))
    }
}
