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
