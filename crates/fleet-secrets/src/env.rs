//! What a child process may see of Fleet's own environment: Fleet's keys and tokens are its
//! environment's values, so the allow-lists here are the other side of the redactor — a
//! secret that never reaches an agent or a check cannot be printed by one.

use std::collections::BTreeMap;

/// The part of fleet's own environment an agent may see: enough to find programs and speak
/// the user's locale, and nothing else (no other account's keys, no parent agent's markers).
pub fn scrubbed_env() -> BTreeMap<String, String> {
    const KEEP: &[&str] = &[
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
    ];
    std::env::vars()
        .filter(|(k, _)| KEEP.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect()
}

/// What commands and checks may see of Fleet's own environment besides [`scrubbed_env`]'s:
/// where programs, the home and temporary files are, the terminal, toolchain homes, proxies.
/// Documented in the README ("What a command sees"); a runbook passes more by name.
const COMMAND_KEEP: &[&str] = &[
    "HOME",
    "TERM",
    "TMPDIR",
    "CI",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "JAVA_HOME",
    "NVM_DIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PKG_CONFIG_PATH",
    "LD_LIBRARY_PATH",
    "CC",
    "CXX",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The environment a task's command and its checks start from: the allow-list above (never
/// a variable whose name says it holds a secret) plus the variables the runbook names in
/// `pass_env`, which pass whatever their names. Checks run code an agent wrote: Fleet's own
/// keys and tokens must not be there to print.
pub fn command_env(pass: &[String]) -> BTreeMap<String, String> {
    let mut env = scrubbed_env();
    for (k, v) in std::env::vars() {
        if pass.contains(&k)
            || (COMMAND_KEEP.contains(&k.as_str()) && !crate::looks_like_secret_name(&k))
        {
            env.insert(k, v);
        }
    }
    env
}

/// What git may see besides [`command_env`]'s: how it reaches remotes (the ssh agent, the ssh
/// command, an askpass program) and where its configuration is. Git runs the repository's
/// hooks with its own environment, and a hook is code Fleet did not write (an agent may even
/// have written it), so Fleet's keys and tokens stay out of git's environment too.
/// `GIT_DIR`, `GIT_WORK_TREE` and the like are left out on purpose: inherited from a parent
/// git (Fleet started by a hook), they would point every command at another repository.
const GIT_KEEP: &[&str] = &[
    "SSH_AUTH_SOCK",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_TERMINAL_PROMPT",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
];

/// The environment every git command Fleet runs starts from: [`command_env`] with nothing
/// passed by name, plus [`GIT_KEEP`]'s variables (never one whose name says it holds a secret).
pub fn git_env() -> BTreeMap<String, String> {
    let mut env = command_env(&[]);
    for (k, v) in std::env::vars() {
        if GIT_KEEP.contains(&k.as_str()) && !crate::looks_like_secret_name(&k) {
            env.insert(k, v);
        }
    }
    env
}
