//! A minimal real SMTP server on `127.0.0.1` (plain TCP, no TLS) that records the mail it is
//! given.
//!
//! It speaks RFC 5321 as far as a mail client needs: the `220` greeting, `EHLO`/`HELO`
//! (advertising `8BITMIME` and `AUTH PLAIN LOGIN`), `AUTH PLAIN` and `AUTH LOGIN` (with or
//! without an initial response), `MAIL FROM`, `RCPT TO`, `DATA` (ended by `<CRLF>.<CRLF>`,
//! dot-unstuffed), `RSET`, `NOOP` and `QUIT`; out-of-order commands get `503`, unknown ones
//! `502`. [`SmtpDouble::start_with_auth`] requires credentials (`530` before `AUTH`, `535` for
//! wrong ones); [`SmtpDouble::fail_next`] answers the next `MAIL FROM`s with `451` (transient),
//! so retries can be tested.
//!
//! ```no_run
//! use fleet_testkit::smtp::SmtpDouble;
//! use std::time::Duration;
//! let smtp = SmtpDouble::start_with_auth("fleet", "pw");
//! // … send mail to 127.0.0.1:smtp.port() …
//! let mail = smtp.wait_messages(1, Duration::from_secs(5));
//! assert!(mail[0].data.contains("Subject:"));
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest command or data line read (RFC 5321 allows 1000; some slack).
const MAX_LINE: usize = 64 * 1024;
/// Largest message accepted.
const MAX_MESSAGE: usize = 16 << 20;

/// One message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMessage {
    /// The `MAIL FROM` address, without `<>`.
    pub from: String,
    /// The `RCPT TO` addresses, without `<>`.
    pub to: Vec<String>,
    /// Headers and body as sent (lines joined by CRLF), dot-unstuffed, without the final `.`.
    pub data: String,
    /// The credentials the session authenticated with.
    pub auth: Option<(String, String)>,
}

impl SmtpMessage {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = &mut value {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The body: everything after the first empty line.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// One `AUTH` exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
    /// Whether it was accepted.
    pub accepted: bool,
}

#[derive(Default)]
struct Book {
    messages: Vec<SmtpMessage>,
    auths: Vec<SmtpAuth>,
    /// How many coming `MAIL FROM`s to answer 451.
    fail_next: usize,
    connections: usize,
}

struct Shared {
    required: Option<(String, String)>,
    book: Mutex<Book>,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running SMTP double. Dropping it stops it.
pub struct SmtpDouble {
    port: u16,
    shared: Arc<Shared>,
    /// Dropping it stops the server.
    _served: crate::background::Served,
}

impl SmtpDouble {
    /// A server that takes mail from anyone (it still accepts and records `AUTH`).
    pub fn start() -> SmtpDouble {
        SmtpDouble::launch(None)
    }

    /// A server that takes mail only after `AUTH` with these credentials.
    pub fn start_with_auth(username: &str, password: &str) -> SmtpDouble {
        SmtpDouble::launch(Some((username.to_string(), password.to_string())))
    }

    fn launch(required: Option<(String, String)>) -> SmtpDouble {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("fleet-testkit: bind the SMTP double");
        listener
            .set_nonblocking(true)
            .expect("fleet-testkit: nonblocking listener");
        let port = listener
            .local_addr()
            .expect("fleet-testkit: local address")
            .port();
        let shared = Arc::new(Shared {
            required,
            book: Mutex::new(Book::default()),
        });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fleet-testkit: a runtime for the SMTP double");
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-smtp-double".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("fleet-smtp-double: {e}");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    let shared = served.clone();
                                    tokio::spawn(async move {
                                        let _ = session(stream, &shared).await;
                                    });
                                }
                                Err(e) => eprintln!("fleet-smtp-double: accept: {e}"),
                            },
                            _ = &mut stop_rx => break,
                        }
                    }
                });
                runtime.shutdown_background();
            })
            .expect("fleet-testkit: start the SMTP double");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        SmtpDouble {
            port,
            shared,
            _served: crate::background::Served::new(addr, stop_tx, thread),
        }
    }

    /// The port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers the next `n` `MAIL FROM` commands `451 4.3.0` (a transient failure).
    pub fn fail_next(&self, n: usize) {
        self.shared.book().fail_next += n;
    }

    /// The messages delivered so far, in order.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.shared.book().messages.clone()
    }

    /// Every `AUTH` exchange so far, accepted or not.
    pub fn auths(&self) -> Vec<SmtpAuth> {
        self.shared.book().auths.clone()
    }

    /// How many connections were opened.
    pub fn connections(&self) -> usize {
        self.shared.book().connections
    }

    /// Waits until `n` messages were delivered and returns them all; panics after `timeout`.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<SmtpMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "SMTP double: expected {n} messages within {timeout:?}, got {}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn send(&mut self, reply: &str) -> std::io::Result<()> {
        // One write per reply: split writes meet Nagle and delayed ACKs (40 ms each).
        self.writer
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
        self.writer.flush().await
    }

    /// One line without its CRLF; `None` at the end of the stream.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    shared.book().connections += 1;
    let _ = stream.set_nodelay(true);
    let (read, writer) = stream.into_split();
    let mut c = Conn {
        reader: BufReader::new(read),
        writer,
    };
    c.send("220 fleet-smtp-double ESMTP ready").await?;
    let mut greeted = false;
    let mut authed: Option<(String, String)> = None;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    while let Some(line) = c.line().await? {
        let (verb, arg) = match line.find(' ') {
            Some(i) => (
                line[..i].to_ascii_uppercase(),
                line[i + 1..].trim().to_string(),
            ),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => {
                greeted = true;
                (from, rcpts) = (None, Vec::new());
                c.send(&format!(
                    "250-fleet-smtp-double greets {arg}\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE {MAX_MESSAGE}"
                ))
                .await?;
            }
            "HELO" => {
                greeted = true;
                (from, rcpts) = (None, Vec::new());
                c.send("250 fleet-smtp-double").await?;
            }
            "AUTH" => {
                if !greeted {
                    c.send("503 5.5.1 EHLO first").await?;
                    continue;
                }
                if authed.is_some() {
                    c.send("503 5.5.1 Already authenticated").await?;
                    continue;
                }
                let mut words = arg.split_whitespace();
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_string);
                let creds = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(i) => Some(i),
                            None => {
                                c.send("334 ").await?;
                                c.line().await?
                            }
                        };
                        response
                            .filter(|r| r != "*")
                            .and_then(|r| base64_decode(&r))
                            .and_then(|raw| {
                                let mut parts = raw.split(|b| *b == 0);
                                let _authzid = parts.next()?;
                                let user = parts.next()?;
                                let pass = parts.next()?;
                                Some((
                                    String::from_utf8_lossy(user).into_owned(),
                                    String::from_utf8_lossy(pass).into_owned(),
                                ))
                            })
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(i) => Some(i),
                            None => {
                                c.send("334 VXNlcm5hbWU6").await?;
                                c.line().await?
                            }
                        };
                        let user = user.filter(|u| u != "*").and_then(|u| base64_decode(&u));
                        match user {
                            Some(user) => {
                                c.send("334 UGFzc3dvcmQ6").await?;
                                c.line()
                                    .await?
                                    .filter(|p| p != "*")
                                    .and_then(|p| base64_decode(&p))
                                    .map(|pass| {
                                        (
                                            String::from_utf8_lossy(&user).into_owned(),
                                            String::from_utf8_lossy(&pass).into_owned(),
                                        )
                                    })
                            }
                            None => None,
                        }
                    }
                    _ => {
                        c.send("504 5.5.4 Unrecognized authentication type").await?;
                        continue;
                    }
                };
                let Some((username, password)) = creds else {
                    c.send("501 5.5.2 Cannot decode the response").await?;
                    continue;
                };
                let accepted = shared
                    .required
                    .as_ref()
                    .is_none_or(|(u, p)| *u == username && *p == password);
                shared.book().auths.push(SmtpAuth {
                    mechanism,
                    username: username.clone(),
                    password: password.clone(),
                    accepted,
                });
                if accepted {
                    authed = Some((username, password));
                    c.send("235 2.7.0 Authentication successful").await?;
                } else {
                    c.send("535 5.7.8 Authentication credentials invalid")
                        .await?;
                }
            }
            "MAIL" => {
                let Some(addr) = path_arg(&arg, "FROM:") else {
                    c.send("501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                    continue;
                };
                if !greeted {
                    c.send("503 5.5.1 EHLO first").await?;
                } else if from.is_some() {
                    c.send("503 5.5.1 Nested MAIL command").await?;
                } else if shared.required.is_some() && authed.is_none() {
                    c.send("530 5.7.0 Authentication required").await?;
                } else if take_fault(shared) {
                    c.send("451 4.3.0 Try again later").await?;
                } else {
                    from = Some(addr);
                    c.send("250 2.1.0 OK").await?;
                }
            }
            "RCPT" => {
                let Some(addr) = path_arg(&arg, "TO:") else {
                    c.send("501 5.5.4 Syntax: RCPT TO:<address>").await?;
                    continue;
                };
                if from.is_none() {
                    c.send("503 5.5.1 Need MAIL before RCPT").await?;
                } else if addr.is_empty() {
                    c.send("553 5.1.3 An empty recipient").await?;
                } else {
                    rcpts.push(addr);
                    c.send("250 2.1.5 OK").await?;
                }
            }
            "DATA" => {
                if from.is_none() || rcpts.is_empty() {
                    c.send("503 5.5.1 Need MAIL and RCPT before DATA").await?;
                    continue;
                }
                c.send("354 End data with <CR><LF>.<CR><LF>").await?;
                let mut lines: Vec<String> = Vec::new();
                let mut size = 0;
                loop {
                    let Some(l) = c.line().await? else {
                        return Ok(()); // the client left mid-message: nothing is delivered
                    };
                    if l == "." {
                        break;
                    }
                    let l = l.strip_prefix('.').map(str::to_string).unwrap_or(l);
                    size += l.len() + 2;
                    lines.push(l);
                }
                if size > MAX_MESSAGE {
                    c.send("552 5.3.4 Message too big").await?;
                } else {
                    let n = {
                        let mut book = shared.book();
                        book.messages.push(SmtpMessage {
                            from: from.take().unwrap_or_default(),
                            to: std::mem::take(&mut rcpts),
                            data: lines.join("\r\n"),
                            auth: authed.clone(),
                        });
                        book.messages.len()
                    };
                    c.send(&format!("250 2.0.0 OK queued as {n}")).await?;
                }
                (from, rcpts) = (None, Vec::new());
            }
            "RSET" => {
                (from, rcpts) = (None, Vec::new());
                c.send("250 2.0.0 OK").await?;
            }
            "NOOP" => c.send("250 2.0.0 OK").await?,
            "QUIT" => {
                c.send("221 2.0.0 Bye").await?;
                return Ok(());
            }
            "STARTTLS" => c.send("454 4.7.0 TLS not available").await?,
            _ => c.send("502 5.5.2 Command not recognized").await?,
        }
    }
    Ok(())
}

fn take_fault(shared: &Shared) -> bool {
    let mut book = shared.book();
    if book.fail_next > 0 {
        book.fail_next -= 1;
        true
    } else {
        false
    }
}

/// The address of `FROM:<a@b> PARAMS` (`prefix` = `FROM:`), without the brackets.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let path = rest.split_whitespace().next().unwrap_or("");
    let addr = path.strip_prefix('<')?.strip_suffix('>')?;
    Some(addr.to_string())
}

use crate::codec::base64_decode;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader as StdReader, Write};

    #[test]
    fn base64() {
        assert_eq!(base64_decode("VXNlcm5hbWU6").unwrap(), b"Username:");
        assert_eq!(base64_decode("AHVAaABwdw==").unwrap(), b"\0u@h\0pw");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_arg("FROM:<a@b> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b")
        );
        assert_eq!(path_arg("to: <c@d>", "TO:").as_deref(), Some("c@d"));
        assert_eq!(path_arg("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_arg("FROM:a@b", "FROM:"), None);
    }

    /// A scripted client: sends each line, checks each reply's code.
    fn talk(port: u16, script: &[(&str, &str)]) {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = StdReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut read_reply = || {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                all.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return all;
                }
            }
        };
        assert!(read_reply().starts_with("220 "));
        for (send, expect) in script {
            write!(writer, "{send}\r\n").unwrap();
            if expect.is_empty() {
                continue; // a DATA line: no reply
            }
            let reply = read_reply();
            assert!(
                reply.starts_with(expect),
                "{send:?} got {reply:?}, expected {expect}"
            );
        }
    }

    #[test]
    fn login_auth_dot_unstuffing_and_transient_failures() {
        let smtp = SmtpDouble::start_with_auth("u@h", "pw");
        smtp.fail_next(1);
        talk(
            smtp.port(),
            &[
                ("MAIL FROM:<a@b>", "503"),
                ("EHLO client", "250"),
                ("MAIL FROM:<a@b>", "530"),
                ("AUTH LOGIN", "334 VXNlcm5hbWU6"),
                ("dUBo", "334 UGFzc3dvcmQ6"),
                ("d3Jvbmc=", "535"),
                ("AUTH PLAIN", "334"),
                ("AHVAaABwdw==", "235"),
                ("MAIL FROM:<a@b>", "451"),
                ("MAIL FROM:<a@b> BODY=8BITMIME", "250"),
                ("DATA", "503"),
                ("RCPT TO:<c@d>", "250"),
                ("RCPT TO:<e@f>", "250"),
                ("DATA", "354"),
                ("Subject: hi", ""),
                ("", ""),
                ("..leading dot", ""),
                ("body", ""),
                (".", "250"),
                ("NOOP", "250"),
                ("RSET", "250"),
                ("VRFY x", "502"),
                ("QUIT", "221"),
            ],
        );
        let auths = smtp.auths();
        assert_eq!(
            auths
                .iter()
                .map(|a| (
                    a.mechanism.as_str(),
                    a.username.as_str(),
                    a.password.as_str(),
                    a.accepted
                ))
                .collect::<Vec<_>>(),
            [
                ("LOGIN", "u@h", "wrong", false),
                ("PLAIN", "u@h", "pw", true)
            ]
        );
        let mail = smtp.messages();
        assert_eq!(mail.len(), 1);
        assert_eq!(mail[0].from, "a@b");
        assert_eq!(mail[0].to, ["c@d", "e@f"]);
        assert_eq!(mail[0].data, "Subject: hi\r\n\r\n.leading dot\r\nbody");
        assert_eq!(mail[0].header("subject").as_deref(), Some("hi"));
        assert_eq!(mail[0].body(), ".leading dot\r\nbody");
        assert_eq!(mail[0].auth, Some(("u@h".to_string(), "pw".to_string())));
    }
}
