//! A `fleet serve` process for tests, and a small HTTP client for it.
#![allow(dead_code)]

use super::epics::Instance;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
}

impl Served {
    /// Starts `fleet serve` on a free port of `bind_ip` and waits until it listens.
    pub fn start(inst: &Instance, bind_ip: &str, extra: &[&str]) -> Served {
        Self::start_with_env(inst, bind_ip, extra, &[])
    }

    /// As [`Served::start`], with extra environment (secrets of notification channels).
    pub fn start_with_env(
        inst: &Instance,
        bind_ip: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let bind = format!("{bind_ip}:0");
        let mut args = vec!["serve", "--bind", bind.as_str(), "--pr-poll", "1"];
        args.extend_from_slice(extra);
        let mut cmd = inst.command(&args);
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("fleet serve printed nothing").unwrap();
        let addr = first
            .strip_prefix("fleet serve: listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Served {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// Ends the server the way Ctrl-C does.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: a plain signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking-style HTTP client over reqwest on its own runtime.
pub struct Http {
    pub rt: tokio::runtime::Runtime,
    pub client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Sends a request; returns the status and the body as JSON (or `{"text": body}`).
    pub fn send(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let json = serde_json::from_str(&text).unwrap_or(serde_json::json!({"text": text}));
            (status, json)
        })
    }

    pub fn get(&self, url: &str, token: Option<&str>) -> (u16, Value) {
        self.send("GET", url, token, None)
    }

    pub fn post(&self, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send("POST", url, token, Some(body))
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
