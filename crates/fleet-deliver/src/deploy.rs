//! Running a deploy command and reading the URL it deployed to.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What a successful deploy printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The last `http://` or `https://` URL the command printed (on stdout or stderr).
    pub url: String,
    /// The end of its output (stdout and stderr interleaved as written, colours removed,
    /// secrets from the environment redacted).
    pub output_tail: String,
}

/// A deploy that did not give a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("cannot start the deploy command in {}: {message}", cwd.display())]
    Spawn { cwd: PathBuf, message: String },
    #[error("the deploy command failed ({status}); its last output:\n{output_tail}")]
    Failed {
        /// `exit code 3` or `killed by signal 9`.
        status: String,
        /// The exit code, when it exited.
        code: Option<i32>,
        output_tail: String,
    },
    #[error(
        "the deploy command succeeded but printed no http(s) URL; its last output:\n{output_tail}"
    )]
    NoUrl { output_tail: String },
    #[error(
        "the deploy command did not finish within {} s and was killed (with its process group); its last output:\n{output_tail}",
        timeout.as_secs_f64()
    )]
    TimedOut {
        timeout: Duration,
        output_tail: String,
    },
}

/// How much output is kept to look for the URL (the end of it).
const KEEP_BYTES: usize = 1 << 20;
/// How much of the end of the output is reported.
const TAIL_CHARS: usize = 4000;

/// Runs `sh -c command` in `cwd`, with exactly `env` as its environment (nothing inherited:
/// the caller passes what the command may see) and standard input closed, in a process group of its own. Stdout and stderr go to one pipe, so their
/// order is kept. When the shell exits, whatever it left running in its group is killed; when
/// `timeout` passes first, the whole group is killed and [`DeployError::TimedOut`] returned.
///
/// Success is exit code 0 *and* a printed URL; the last URL printed is the deployment's.
pub async fn deploy<I, K, V>(
    command: &str,
    cwd: &Path,
    env: I,
    timeout: Duration,
) -> Result<Deployed, DeployError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = env
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    let spawn_err = |e: std::io::Error| DeployError::Spawn {
        cwd: cwd.to_path_buf(),
        message: e.to_string(),
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let writer2 = writer.try_clone().map_err(spawn_err)?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // The command holds the parent's copies of the pipe's write end: drop them, or the reader
    // never sees the end of the output.
    drop(cmd);
    let mut child = spawned.map_err(spawn_err)?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));

    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let output = output.clone();
        let mut reader = reader;
        std::thread::Builder::new()
            .name("fleet-deploy-output".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                            out.extend_from_slice(&chunk[..n]);
                            if out.len() > 2 * KEEP_BYTES {
                                let cut = out.len() - KEEP_BYTES;
                                out.drain(..cut);
                            }
                        }
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(spawn_err)?;
    }

    // Kills the group however this function ends, also when its future is dropped.
    let group = GroupGuard(pgid);
    let kill_group = || group.kill();
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            kill_group();
            return Err(spawn_err(e));
        }
        Err(_) => None,
    };
    // On a timeout this kills the command; after it exited, what it left behind in its group
    // (which would also keep the output pipe open).
    kill_group();
    if status.is_none() {
        let _ = child.wait().await;
    }
    // A process that left the group (setsid) may still hold the pipe: do not wait for it long.
    let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;

    let raw = output.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text = redact_env_secrets(&strip_ansi(&String::from_utf8_lossy(&raw)), &env);
    let output_tail = tail(&text, TAIL_CHARS);
    let Some(status) = status else {
        return Err(DeployError::TimedOut {
            timeout,
            output_tail,
        });
    };
    if !status.success() {
        let described = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => status.to_string(),
        };
        return Err(DeployError::Failed {
            status: described,
            code: status.code(),
            output_tail,
        });
    }
    match last_url(&text) {
        Some(url) => Ok(Deployed { url, output_tail }),
        None => Err(DeployError::NoUrl { output_tail }),
    }
}

/// Kills a process group when dropped.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `http://` or `https://` URL in `text`, without the punctuation that usually
/// follows a URL in prose (`.`, `,`, `)` that closes no `(` in it, quotes).
pub fn last_url(text: &str) -> Option<String> {
    let mut last = None;
    let mut from = 0;
    while let Some(pos) = find_scheme(&text[from..]) {
        let start = from + pos;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c.is_control() || "<>\"'`|^{}\\".contains(c))
            .unwrap_or(rest.len());
        let mut url = &rest[..end];
        loop {
            let trimmed = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '*']);
            let trimmed = match trimmed.chars().last() {
                Some(')') if trimmed.matches('(').count() < trimmed.matches(')').count() => {
                    &trimmed[..trimmed.len() - 1]
                }
                Some(']') if trimmed.matches('[').count() < trimmed.matches(']').count() => {
                    &trimmed[..trimmed.len() - 1]
                }
                _ => trimmed,
            };
            if trimmed.len() == url.len() {
                break;
            }
            url = trimmed;
        }
        let host = url.split_once("://").map_or("", |(_, h)| h);
        let host = host.split(['/', '?', '#']).next().unwrap_or("");
        if !host.is_empty() {
            last = Some(url.to_string());
        }
        from = start + end.max(1);
    }
    last
}

fn find_scheme(s: &str) -> Option<usize> {
    match (s.find("http://"), s.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `s` without ANSI escape sequences (colours, cursor moves) and carriage-return redraws.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    // OSC (e.g. hyperlinks): up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            }
        } else if c == '\r' {
            if chars.peek() != Some(&'\n') {
                out.push('\n');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a variable's name says it holds a secret.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// `text` with the values of secret-looking variables (those given and those inherited)
/// replaced by `[REDACTED]`.
fn redact_env_secrets(text: &str, env: &[(std::ffi::OsString, std::ffi::OsString)]) -> String {
    let mut values: Vec<String> = std::env::vars_os()
        .chain(env.iter().cloned())
        .filter(|(k, _)| secret_name(&k.to_string_lossy()))
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .filter(|v| v.len() >= 6)
        .collect();
    // Longest first, so a secret containing another is redacted whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut out = text.to_string();
    for v in values {
        out = out.replace(&v, "[REDACTED]");
    }
    out
}

/// The last `max` characters of `s`, starting at a line when one starts near the cut.
fn tail(s: &str, max: usize) -> String {
    let s = s.trim_end();
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let start = s.char_indices().nth(count - max).map_or(0, |(i, _)| i);
    let cut = &s[start..];
    match cut.find('\n') {
        Some(nl) if nl < 200 => format!("…\n{}", &cut[nl + 1..]),
        _ => format!("…{cut}"),
    }
}

/// Whether `url` answers: an HTTP answer below 500 within 15 s is `Ok(status)`; a refused or
/// broken connection, a timeout or a 5xx is `Err` with what happened. Used to check the
/// address a DevOps agent says it deployed to before QA is sent there.
pub async fn probe(url: &str) -> Result<u16, String> {
    let resp = crate::http::client()
        .get(url)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| {
            let mut m = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(s) = cur {
                m.push_str(&format!(": {s}"));
                cur = s.source();
            }
            m
        })?;
    let status = resp.status().as_u16();
    if status >= 500 {
        return Err(format!("it answered {status}"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_url_takes_the_last_and_trims_prose_punctuation() {
        let text = "Preview: https://a.example/x\nProduction: https://b.example/app (ready).\n";
        assert_eq!(last_url(text).as_deref(), Some("https://b.example/app"));
        assert_eq!(
            last_url("see (https://en.wikipedia.org/wiki/Rust_(language)).").as_deref(),
            Some("https://en.wikipedia.org/wiki/Rust_(language)")
        );
        assert_eq!(
            last_url("\"http://127.0.0.1:8080/\"").as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(last_url("no url here, only https:// and http:///x"), None);
        assert_eq!(last_url(""), None);
    }

    #[test]
    fn ansi_colours_do_not_stick_to_the_url() {
        let text = "\u{1b}[32m✓\u{1b}[0m Deployed to \u{1b}[1mhttps://app.example.dev\u{1b}[22m\n";
        assert_eq!(
            last_url(&strip_ansi(text)).as_deref(),
            Some("https://app.example.dev")
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let s: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let t = tail(&s, 100);
        assert!(t.ends_with("line 1999"), "{t}");
        assert!(t.starts_with("…\nline "), "{t}");
        assert!(t.chars().count() <= 102);
        assert_eq!(tail("short\n", 100), "short");
    }

    #[test]
    fn secrets_in_the_environment_are_redacted() {
        let env = vec![
            ("DEPLOY_TOKEN".into(), "s3cr3t-value".into()),
            ("REGION".into(), "eu-west-1".into()),
        ];
        let out = redact_env_secrets("token=s3cr3t-value region=eu-west-1", &env);
        assert_eq!(out, "token=[REDACTED] region=eu-west-1");
    }
}
