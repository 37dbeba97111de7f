//! A minimal W3C WebDriver client for browser tests: it launches its own `chromedriver`, which
//! drives a headless Chromium.
//!
//! ```no_run
//! # async fn t() -> Result<(), String> {
//! use std::time::Duration;
//! use fleet_testkit::webdriver::Browser;
//! let b = Browser::launch().await?;
//! b.goto("http://127.0.0.1:7420/").await?;
//! b.wait_present(".card[data-task=\"e1\"]", Duration::from_secs(5)).await?;
//! b.click(".card[data-task=\"e1\"]").await?;
//! b.wait_text("#detail-title", |t| t.contains("e1"), Duration::from_secs(5)).await?;
//! assert!(b.console_errors().await?.is_empty());
//! # Ok(()) }
//! ```
//!
//! Every error is a `String` naming what was attempted (the selector, the URL) and what the
//! driver said. Dropping the [`Browser`] ends the session and kills chromedriver and every
//! browser process it started (they share one process group).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

/// The W3C key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const POLL: Duration = Duration::from_millis(100);

/// A reference to an element of the current page, as the driver names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElementId(pub String);

/// Where the driver and the browser are, and how the window is set up.
#[derive(Clone, Debug)]
pub struct BrowserConfig {
    /// The `chromedriver` binary (default `$CHROMEDRIVER` or `/usr/bin/chromedriver`).
    pub chromedriver: PathBuf,
    /// The Chromium binary (default `$CHROMIUM` or `/usr/bin/chromium`).
    pub chromium: PathBuf,
    /// Command-line arguments for Chromium.
    pub args: Vec<String>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        let env = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(d))
        };
        BrowserConfig {
            chromedriver: env("CHROMEDRIVER", "/usr/bin/chromedriver"),
            chromium: env("CHROMIUM", "/usr/bin/chromium"),
            args: [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One headless browser session with its own chromedriver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of chromedriver.
    base: String,
    port: u16,
    session: String,
    driver: Child,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session
    /// (see [`BrowserConfig::default`]).
    pub async fn launch() -> Result<Browser, String> {
        Self::launch_with(BrowserConfig::default()).await
    }

    pub async fn launch_with(cfg: BrowserConfig) -> Result<Browser, String> {
        for (what, path, var) in [
            ("chromedriver", &cfg.chromedriver, "CHROMEDRIVER"),
            ("chromium", &cfg.chromium, "CHROMIUM"),
        ] {
            if !path.is_file() {
                return Err(format!(
                    "{what} not found at {} (install it or set ${var} to its path)",
                    path.display()
                ));
            }
        }
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "fleet-chromedriver-{}-{port}.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        let mut cmd = Command::new(&cfg.chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // Its own process group, so that Drop can kill the browsers it spawned too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cfg.chromedriver.display()))?;

        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut b = Browser {
            http,
            base: format!("http://127.0.0.1:{port}"),
            port,
            session: String::new(),
            driver,
            log,
        };
        b.wait_ready().await?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": cfg.chromium.to_string_lossy(),
                "args": cfg.args,
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b
            .raw(Method::POST, "/session", Some(caps))
            .await
            .map_err(|e| format!("cannot open a browser session: {e}{}", b.log_tail()))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {v}"))?
            .to_string();
        Ok(b)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!(
                    "chromedriver exited before it was ready ({status}){}",
                    self.log_tail()
                ));
            }
            let last = match self.raw(Method::GET, "/status", None).await {
                Ok(v) if v["ready"] == json!(true) => return Ok(()),
                Ok(v) => v.to_string(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver on port {} not ready after 20s: {last}{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!("\nchromedriver log ({}):\n{tail}", self.log.display())
        }
    }

    /// One request to chromedriver; returns the reply's `value`.
    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{method} {path}: reading the reply: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{method} {path}: {status}: not JSON ({e}): {}",
                clip(&text, 300)
            )
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() || value.get("error").is_some_and(Value::is_string) {
            let error = value["error"].as_str().unwrap_or("error");
            let message = value["message"].as_str().unwrap_or("");
            let message = message.lines().next().unwrap_or("");
            return Err(format!("{status} {error}: {message}"));
        }
        Ok(value)
    }

    /// A command of this session (`path` is what follows `/session/{id}`).
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        self.raw(method, &path, body).await
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
            .map_err(|e| format!("goto {url}: {e}"))
    }

    /// The current page's URL.
    pub async fn url(&self) -> Result<String, String> {
        let v = self
            .cmd(Method::GET, "/url", None)
            .await
            .map_err(|e| format!("current url: {e}"))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Reloads the current page.
    pub async fn refresh(&self) -> Result<(), String> {
        self.cmd(Method::POST, "/refresh", Some(json!({})))
            .await
            .map(drop)
            .map_err(|e| format!("refresh: {e}"))
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<ElementId, String> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .map_err(|e| format!("find `{css}`: {e}"))?;
        element_id(&v).ok_or_else(|| format!("find `{css}`: no element reference in {v}"))
    }

    /// Every element matching a CSS selector (empty when none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<ElementId>, String> {
        let v = self
            .cmd(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .map_err(|e| format!("find all `{css}`: {e}"))?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(element_id).collect())
            .unwrap_or_default())
    }

    /// Clicks the first element matching `css` (scrolled into view by the driver).
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        self.click_element(&el)
            .await
            .map_err(|e| format!("click `{css}`: {e}"))
    }

    pub async fn click_element(&self, el: &ElementId) -> Result<(), String> {
        self.cmd(
            Method::POST,
            &format!("/element/{}/click", el.0),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// The rendered (visible) text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let el = self.find(css).await?;
        self.element_text(&el)
            .await
            .map_err(|e| format!("text of `{css}`: {e}"))
    }

    pub async fn element_text(&self, el: &ElementId) -> Result<String, String> {
        let v = self
            .cmd(Method::GET, &format!("/element/{}/text", el.0), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// An attribute of the first element matching `css` (`None` when it is absent).
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>, String> {
        let el = self.find(css).await?;
        let v = self
            .cmd(
                Method::GET,
                &format!("/element/{}/attribute/{name}", el.0),
                None,
            )
            .await
            .map_err(|e| format!("attribute {name} of `{css}`: {e}"))?;
        Ok(v.as_str().map(String::from))
    }

    /// Whether the first element matching `css` is displayed.
    pub async fn displayed(&self, css: &str) -> Result<bool, String> {
        let el = self.find(css).await?;
        let v = self
            .cmd(Method::GET, &format!("/element/{}/displayed", el.0), None)
            .await
            .map_err(|e| format!("displayed `{css}`: {e}"))?;
        Ok(v.as_bool().unwrap_or(false))
    }

    /// Clears the first element matching `css` and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        let id = &el.0;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await
        .map_err(|e| format!("clear `{css}`: {e}"))?;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
        .map_err(|e| format!("type into `{css}`: {e}"))
    }

    /// Runs `js` as the body of a function (use `return …` and `arguments[i]`) and returns
    /// its result.
    pub async fn execute(&self, js: &str, args: Vec<Value>) -> Result<Value, String> {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": args})),
        )
        .await
        .map_err(|e| format!("execute `{}`: {e}", clip(js, 80)))
    }

    /// Polls `cond` every 100 ms until it yields `Some`. An `Err` from `cond` counts as "not
    /// yet"; the last one is named on timeout, with `what`.
    pub async fn wait_for<T, F>(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) -> Result<T, String>
    where
        F: AsyncFnMut(&Browser) -> Result<Option<T>, String>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match cond(self).await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last.clear(),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let last = if last.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last}")
                };
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}{last}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matches `css`.
    pub async fn wait_present(&self, css: &str, timeout: Duration) -> Result<ElementId, String> {
        self.wait_for(
            &format!("`{css}` to be present"),
            timeout,
            async |b: &Browser| Ok(b.find_all(css).await?.into_iter().next()),
        )
        .await
    }

    /// Waits until no element matches `css`.
    pub async fn wait_absent(&self, css: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for(
            &format!("`{css}` to be gone"),
            timeout,
            async |b: &Browser| Ok(b.find_all(css).await?.is_empty().then_some(())),
        )
        .await
    }

    /// Waits until the text of the first element matching `css` satisfies `pred`; returns
    /// that text. On timeout the error names the selector and the last text seen.
    pub async fn wait_text(
        &self,
        css: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.text(css).await {
                Ok(t) if pred(&t) => return Ok(t),
                other => other,
            };
            if Instant::now() >= deadline {
                let last = match seen {
                    Ok(t) => format!("last text: {:?}", clip(&t, 500)),
                    Err(e) => format!("last error: {e}"),
                };
                return Err(format!(
                    "timed out after {timeout:?} waiting for the text of `{css}`; {last}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `count(css)` satisfies `pred`; returns the count.
    pub async fn wait_count(
        &self,
        css: &str,
        pred: impl Fn(usize) -> bool,
        timeout: Duration,
    ) -> Result<usize, String> {
        let mut n = 0;
        self.wait_for(
            &format!("the number of `{css}` to match"),
            timeout,
            async |b: &Browser| {
                n = b.find_all(css).await?.len();
                Ok(pred(n).then_some(n))
            },
        )
        .await
        .map_err(|e| format!("{e} (last count {n})"))
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot_png(&self, path: impl AsRef<Path>) -> Result<(), String> {
        let path = path.as_ref();
        let v = self
            .cmd(Method::GET, "/screenshot", None)
            .await
            .map_err(|e| format!("screenshot: {e}"))?;
        let png = base64_decode(v.as_str().unwrap_or_default())
            .ok_or_else(|| "screenshot: the driver's reply is not base64".to_string())?;
        std::fs::write(path, png).map_err(|e| format!("screenshot: write {}: {e}", path.display()))
    }

    /// The browser console's errors (`console.error`, uncaught exceptions, failed resource
    /// loads) since the previous call, through chromedriver's log endpoint.
    pub async fn console_errors(&self) -> Result<Vec<String>, String> {
        let v = self
            .cmd(Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await
            .map_err(|e| format!("browser log: {e}"))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// The port chromedriver listens on.
    pub fn driver_port(&self) -> u16 {
        self.port
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Blocking on purpose: Drop cannot await, and the runtime may be shutting down.
        if !self.session.is_empty() {
            let _ = delete_session(self.port, &self.session);
        }
        let pid = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created for chromedriver (its pid).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `DELETE /session/{id}` over a plain socket (quits the browser cleanly).
fn delete_session(port: u16, session: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // chromedriver keeps the connection open despite `Connection: close`: read one reply by
    // its Content-Length.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn element_id(v: &Value) -> Option<ElementId> {
    v.get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|s| ElementId(s.to_string()))
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

use crate::codec::base64_decode;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::response::Html;
    use axum::routing::get;

    const PAGE: &str = r#"<!doctype html><html><body>
<p id="msg">before</p>
<button id="go" onclick="setTimeout(() => { document.getElementById('msg').textContent = 'after ' + document.getElementById('name').value; }, 300)">go</button>
<input id="name" value="old">
<ul><li class="i">1</li><li class="i">2</li><li class="i">3</li></ul>
<script>console.error('deliberate ' + 'error');</script>
</body></html>"#;

    async fn serve() -> String {
        let app = Router::new().route("/", get(|| async { Html(PAGE) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/")
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbA==").unwrap(), b"hell");
        assert_eq!(base64_decode("aGVs").unwrap(), b"hel");
        assert!(base64_decode("a$==").is_none());
    }

    #[tokio::test]
    async fn missing_driver_is_a_clear_error() {
        let cfg = BrowserConfig {
            chromedriver: "/nonexistent/chromedriver".into(),
            ..BrowserConfig::default()
        };
        let err = Browser::launch_with(cfg).await.err().expect("must fail");
        assert!(
            err.contains("/nonexistent/chromedriver") && err.contains("CHROMEDRIVER"),
            "{err}"
        );
    }

    /// Needs chromedriver and chromium (see `BrowserConfig::default`); fails, never skips,
    /// without them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drives_a_real_browser() {
        let url = serve().await;
        let b = Browser::launch()
            .await
            .unwrap_or_else(|e| panic!("the webdriver self-test needs a browser: {e}"));
        b.goto(&url).await.unwrap();
        assert_eq!(b.url().await.unwrap(), url);
        assert_eq!(b.text("#msg").await.unwrap(), "before");
        assert_eq!(b.find_all("li.i").await.unwrap().len(), 3);
        assert!(b.find_all(".nothing").await.unwrap().is_empty());
        let err = b.find("#nope").await.unwrap_err();
        assert!(
            err.contains("#nope") && err.contains("no such element"),
            "{err}"
        );

        b.type_into("#name", "fleet").await.unwrap();
        let v = b
            .execute(
                "return document.getElementById(arguments[0]).value",
                vec![json!("name")],
            )
            .await
            .unwrap();
        assert_eq!(v, json!("fleet"));
        assert_eq!(b.attr("#go", "id").await.unwrap().as_deref(), Some("go"));
        assert_eq!(b.attr("#go", "data-x").await.unwrap(), None);
        assert!(b.displayed("#go").await.unwrap());

        b.click("#go").await.unwrap();
        let text = b
            .wait_text("#msg", |t| t.starts_with("after"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(text, "after fleet");
        b.wait_present("li.i", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            b.wait_count("li.i", |n| n == 3, Duration::from_secs(1))
                .await
                .unwrap(),
            3
        );

        // A timeout names the selector and what was last seen.
        let err = b
            .wait_text("#msg", |t| t == "never", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.contains("`#msg`") && err.contains("after fleet"),
            "{err}"
        );
        let err = b
            .wait_present("#absent", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("`#absent`"), "{err}");

        let errors = b.console_errors().await.unwrap();
        assert!(
            errors.iter().any(|e| e.contains("deliberate error")),
            "{errors:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("shot.png");
        b.screenshot_png(&png).await.unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

        let port = b.driver_port();
        drop(b);
        // chromedriver is gone with the Browser.
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "chromedriver still listening"
        );
    }
}
