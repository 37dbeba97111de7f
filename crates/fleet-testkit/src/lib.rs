//! `fleet-testkit`: a deterministic stand-in for model vendors' HTTP APIs, for tests and
//! benchmarks that drive the real coding-agent CLIs (claude, codex, gemini, qwen, opencode)
//! headless.
//!
//! # What it owns
//! - [`ModelServer`]: an HTTP/1.1 server on `127.0.0.1` that speaks, streaming (SSE) and not,
//!   the Anthropic Messages API (`POST …/v1/messages`, plus the `HEAD` preflight), the OpenAI
//!   Responses API (`POST …/responses`), OpenAI Chat Completions (`POST …/chat/completions`)
//!   and the Gemini API (`POST …/models/<m>:streamGenerateContent` / `:generateContent`), plus
//!   model listings and token counting.
//! - [`Scenario`]: the script that decides every reply from the request alone. The base URL
//!   `http://127.0.0.1:PORT/s/<scenario>` selects it; everything after is the API path. The
//!   step of a request is the number of tool results in its conversation; each [`Action`] is
//!   carried out through the tool the CLI itself offered (argument names read from the offered
//!   schema), so the CLI really edits files. [`Fault`]s inject the vendors' real error
//!   shapes, hangs and stalls; [`Usage`] fixes the reported tokens.
//! - A record of every request ([`RecordedRequest`], secrets redacted) so tests can assert on
//!   prompts and compare the spend a CLI reports with [`ModelServer::total_usage`].
//!
//! # What it must not know
//! Fleet's engine, adapters, task model or storage. It knows vendors' wire formats and the
//! tool names the CLIs offer, nothing about who drives the CLIs. Tests of Fleet use it; it uses
//! nothing of Fleet.
//!
//! ```no_run
//! use fleet_testkit::{ModelServer, Scenario, Fault};
//! let server = ModelServer::start();
//! server.add_scenario("hello", Scenario::hello());
//! server.add_scenario("limited", Scenario::hello().fault(Fault::status(429).retry_after(1).times(2)));
//! let base = server.base_url("hello"); // give this to the CLI, e.g. ANTHROPIC_BASE_URL
//! // … run the CLI …
//! assert!(server.requests("hello").iter().any(|r| r.contains("hello.txt")));
//! ```

mod anthropic;
mod background;
mod codec;
pub mod embeddings;
pub mod forge;
mod gemini;
mod openai;
mod scenario;
mod server;
pub mod smtp;
pub mod telegram;
mod tools;
pub mod webdriver;
pub mod webhook;
mod wire;

pub use scenario::{Action, Fault, LoadError, Scenario, Usage, parse_scenarios};
pub use server::{Api, ModelServer, ModelServerBuilder, RecordedRequest};

#[cfg(test)]
mod http_tests;

/// The directory holding the pinned real agent CLIs (`claude`, `codex`, `gemini`, `qwen`,
/// `opencode`): `$FLEET_AGENT_BIN`, or what `scripts/install-agent-clis.sh` prints (it installs
/// them on first use). Panics — tests must fail, not skip — when they cannot be had.
pub fn agent_bin_dir() -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("FLEET_AGENT_BIN") {
            Some(d) => PathBuf::from(d),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-agent-clis.sh");
                let out = std::process::Command::new("bash")
                    .arg(&script)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(out.status.success(), "{} failed ({}); the real CLIs are required", script.display(), out.status);
                PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim())
            }
        };
        for cli in ["claude", "codex", "gemini", "qwen", "opencode"] {
            assert!(
                dir.join(cli).exists(),
                "{cli} not found in {} (set FLEET_AGENT_BIN to the output of scripts/install-agent-clis.sh)",
                dir.display()
            );
        }
        dir
    })
    .clone()
}
