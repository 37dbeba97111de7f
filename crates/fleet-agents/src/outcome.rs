//! How an attempt ended, and the shared rules that decide it.
//!
//! Exit codes lie (claude reports `subtype: success` with `is_error: true`; qwen exits 0 on a
//! 401; gemini exits 145), so every parser collects [`Evidence`] and classifies in this order:
//! structured error fields, the terminal event, error text, and only then the exit code.

use crate::event::ErrorClass;
use serde::Serialize;

/// How the process ended, as the supervisor saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed by fleet for exceeding its wall-clock timeout.
    pub timed_out: bool,
    /// Killed by fleet for producing no output for too long.
    pub stalled: bool,
    /// When the process ended (Unix seconds) and the local UTC offset then: reset times in
    /// error text ("try again at 3:28 PM") are relative to them.
    pub ended_at: Option<i64>,
    pub utc_offset_secs: i32,
}

impl ProcessEnd {
    /// From a shell-style exit status: 128+N means killed by signal N (137 = KILL, 143 = TERM).
    pub fn from_exit_status(code: i32) -> ProcessEnd {
        if code > 128 && code <= 128 + 64 {
            ProcessEnd {
                exit_code: None,
                signal: Some(code - 128),
                ..ProcessEnd::default()
            }
        } else {
            ProcessEnd {
                exit_code: Some(code),
                ..ProcessEnd::default()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    Succeeded,
    AgentError,
    RateLimited,
    QuotaExhausted,
    AuthFailed,
    Overloaded,
    UpstreamError,
    Crashed,
    Stalled,
    TimedOut,
    NoResult,
}

impl OutcomeClass {
    /// In plain words after "the agent", for what a person reads ("the agent was
    /// rate-limited"); `as_str` is the stable name for JSON and the store.
    pub fn in_words(self) -> &'static str {
        match self {
            OutcomeClass::Succeeded => "succeeded",
            OutcomeClass::AgentError => "failed",
            OutcomeClass::RateLimited => "was rate-limited",
            OutcomeClass::QuotaExhausted => "ran out of quota",
            OutcomeClass::AuthFailed => "was refused its credentials",
            OutcomeClass::Overloaded => "found its vendor overloaded",
            OutcomeClass::UpstreamError => "met a vendor error",
            OutcomeClass::Crashed => "crashed",
            OutcomeClass::Stalled => "stalled",
            OutcomeClass::TimedOut => "timed out",
            OutcomeClass::NoResult => "gave no result",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Succeeded => "succeeded",
            OutcomeClass::AgentError => "agent_error",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::QuotaExhausted => "quota_exhausted",
            OutcomeClass::AuthFailed => "auth_failed",
            OutcomeClass::Overloaded => "overloaded",
            OutcomeClass::UpstreamError => "upstream_error",
            OutcomeClass::Crashed => "crashed",
            OutcomeClass::Stalled => "stalled",
            OutcomeClass::TimedOut => "timed_out",
            OutcomeClass::NoResult => "no_result",
        }
    }

    fn from_error(class: ErrorClass) -> OutcomeClass {
        match class {
            ErrorClass::RateLimited => OutcomeClass::RateLimited,
            ErrorClass::QuotaExhausted => OutcomeClass::QuotaExhausted,
            ErrorClass::AuthFailed => OutcomeClass::AuthFailed,
            ErrorClass::Overloaded => OutcomeClass::Overloaded,
            ErrorClass::Upstream => OutcomeClass::UpstreamError,
            ErrorClass::Agent => OutcomeClass::AgentError,
        }
    }
}

/// The class of an attempt's ending, with what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    #[serde(rename = "outcome")]
    pub class: OutcomeClass,
    /// For rate limits and quotas: when the vendor said it resets (Unix seconds).
    pub resets_at: Option<i64>,
    pub detail: Option<String>,
}

impl Outcome {
    pub fn new(class: OutcomeClass) -> Outcome {
        Outcome {
            class,
            resets_at: None,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Outcome {
        self.detail = Some(detail.into());
        self
    }

    pub fn succeeded(&self) -> bool {
        self.class == OutcomeClass::Succeeded
    }
}

/// What a parser learned while reading; [`Evidence::classify`] turns it into an [`Outcome`].
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The CLI's own terminal event: `Some(Ok(()))` success, `Some(Err(..))` a failure.
    pub terminal: Option<Result<(), (ErrorClass, String)>>,
    /// Errors seen along the way (retried ones included).
    pub errors: Vec<(ErrorClass, String)>,
    pub resets_at: Option<i64>,
    /// Last stderr lines, for a crash's detail.
    pub stderr_tail: Vec<String>,
    /// Retries the CLI reported making on its own, by class.
    pub cli_retries: Vec<ErrorClass>,
}

impl Evidence {
    pub fn error(&mut self, class: ErrorClass, message: impl Into<String>) {
        self.errors.push((class, message.into()));
    }

    /// Whether retrying is pointless already: one retry of a rate limit, quota or auth failure
    /// (the CLI will wait minutes for what fleet answers by swapping), or two of an outage.
    pub fn verdict(&self) -> Option<Outcome> {
        let n = |c: ErrorClass| self.cli_retries.iter().filter(|x| **x == c).count();
        let class = [
            ErrorClass::AuthFailed,
            ErrorClass::QuotaExhausted,
            ErrorClass::RateLimited,
        ]
        .into_iter()
        .find(|c| n(*c) >= 1)
        .or_else(|| {
            [ErrorClass::Overloaded, ErrorClass::Upstream]
                .into_iter()
                .find(|c| n(*c) >= 2)
        })?;
        let detail = self
            .errors
            .iter()
            .rev()
            .find(|(c, _)| *c == class)
            .map(|(_, m)| m.clone());
        Some(Outcome {
            class: OutcomeClass::from_error(class),
            resets_at: self.resets_at,
            detail,
        })
    }

    /// Reads a CLI's "Attempt 2 failed with status 429. Retrying with backoff..." (gemini on
    /// stderr, qwen in its debug log); records it and returns the event.
    pub fn cli_retry_line(&mut self, line: &str) -> Option<crate::AgentEvent> {
        let at = line.find("Attempt ")?;
        let rest = &line[at + "Attempt ".len()..];
        let (n, tail) = rest.split_once(" failed")?;
        let n: u32 = n.trim().parse().ok()?;
        let detail: String = line[at..].chars().take(300).collect();
        let class = classify_text(tail.split("Retrying").next().unwrap_or(tail));
        self.error(class, detail.clone());
        self.cli_retries.push(class);
        Some(crate::AgentEvent::Retrying {
            attempt: n,
            class,
            detail,
        })
    }

    pub fn stderr(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if self.stderr_tail.len() == 5 {
            self.stderr_tail.remove(0);
        }
        self.stderr_tail.push(line.chars().take(300).collect());
    }

    /// The most telling error seen: vendor limits and auth before anything generic.
    fn worst_error(&self) -> Option<&(ErrorClass, String)> {
        let rank = |c: ErrorClass| match c {
            ErrorClass::AuthFailed => 0,
            ErrorClass::QuotaExhausted => 1,
            ErrorClass::RateLimited => 2,
            ErrorClass::Overloaded => 3,
            ErrorClass::Upstream => 4,
            ErrorClass::Agent => 5,
        };
        self.errors.iter().min_by_key(|(c, _)| rank(*c))
    }

    pub fn classify(&self, end: &ProcessEnd) -> Outcome {
        let with_reset = |mut o: Outcome| {
            if matches!(
                o.class,
                OutcomeClass::RateLimited | OutcomeClass::QuotaExhausted
            ) {
                o.resets_at = self.resets_at.or_else(|| {
                    let now = end.ended_at?;
                    let texts = self
                        .errors
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .chain(o.detail.as_deref());
                    texts
                        .into_iter()
                        .find_map(|t| reset_from_text(t, now, end.utc_offset_secs))
                });
            }
            o
        };
        // A vendor limit or bad credentials explain a hang better than "stalled": CLIs retry them.
        let decisive = self.worst_error().filter(|(c, _)| {
            matches!(
                c,
                ErrorClass::AuthFailed | ErrorClass::QuotaExhausted | ErrorClass::RateLimited
            )
        });
        if end.timed_out || end.stalled {
            // The CLI was still retrying something it had reported: that is the real cause.
            let retried = self
                .worst_error()
                .filter(|(c, _)| matches!(c, ErrorClass::Overloaded | ErrorClass::Upstream));
            if let Some((c, m)) = decisive.or(retried) {
                return with_reset(
                    Outcome::new(OutcomeClass::from_error(*c)).with_detail(m.clone()),
                );
            }
            let class = if end.timed_out {
                OutcomeClass::TimedOut
            } else {
                OutcomeClass::Stalled
            };
            return Outcome::new(class);
        }
        match &self.terminal {
            Some(Ok(())) => return Outcome::new(OutcomeClass::Succeeded),
            Some(Err((class, message))) => {
                // The terminal error may be generic ("turn failed"); an earlier specific one wins.
                let (c, m) = match self.worst_error() {
                    Some((c, m))
                        if *class == ErrorClass::Agent || *class == ErrorClass::Upstream =>
                    {
                        if rank_specific(*c) < rank_specific(*class) {
                            (*c, m.clone())
                        } else {
                            (*class, message.clone())
                        }
                    }
                    _ => (*class, message.clone()),
                };
                return with_reset(Outcome::new(OutcomeClass::from_error(c)).with_detail(m));
            }
            None => {}
        }
        if let Some((c, m)) = self.worst_error() {
            return with_reset(Outcome::new(OutcomeClass::from_error(*c)).with_detail(m.clone()));
        }
        let tail = self.stderr_tail.join(" | ");
        match (end.exit_code, end.signal) {
            (_, Some(sig)) => {
                Outcome::new(OutcomeClass::Crashed).with_detail(format!("killed by signal {sig}"))
            }
            (Some(0), _) => Outcome::new(OutcomeClass::NoResult),
            (Some(code), _) => {
                Outcome::new(OutcomeClass::Crashed).with_detail(if tail.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {tail}")
                })
            }
            (None, None) => Outcome::new(OutcomeClass::NoResult),
        }
    }
}

fn rank_specific(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::AuthFailed => 0,
        ErrorClass::QuotaExhausted => 1,
        ErrorClass::RateLimited => 2,
        ErrorClass::Overloaded => 3,
        ErrorClass::Upstream => 4,
        ErrorClass::Agent => 5,
    }
}

/// Classifies an error message by its words and HTTP status, the way vendors and CLIs phrase
/// them. Used when a CLI gives no structured error field.
pub fn classify_text(message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| contains_term(&m, w));
    if has(&[
        "401",
        "403 ",
        "unauthorized",
        "unauthenticated",
        "invalid api key",
        "incorrect api key",
        "invalid x-api-key",
        "authentication",
        "not logged in",
        "login expired",
        "oauth token",
        "permission_denied",
        "missing environment variable",
    ]) {
        ErrorClass::AuthFailed
    } else if has(&[
        "quota exceeded",
        "exceeded your current quota",
        "insufficient_quota",
        "usage limit",
        "credit balance",
        "spend limit",
        "out of credits",
        "402",
        "terminalquotaerror",
        "per day",
        "perday",
        "hit your weekly limit",
        "hit your session limit",
        "hit your limit",
    ]) {
        ErrorClass::QuotaExhausted
    } else if has(&[
        "429",
        "rate limit",
        "rate_limit",
        "too many requests",
        "resource_exhausted",
        "ratelimit",
    ]) {
        ErrorClass::RateLimited
    } else if has(&["529", "overloaded"]) {
        ErrorClass::Overloaded
    } else if has(&[
        "500",
        "502",
        "503",
        "504",
        "server error",
        "internal error",
        "server_error",
        "api_error",
        "high demand",
        "stream disconnected",
        "connection failed",
        "connection reset",
        "fetch failed",
        "timed out",
        "request timeout",
        "unavailable",
        "bad gateway",
    ]) {
        ErrorClass::Upstream
    } else {
        ErrorClass::Agent
    }
}

/// Whether `text` contains `term`; a status code (digits) only as a word of its own, so "401"
/// is not found in a path like `runs/canary-20261206-134019` or a name like `.tmpa401f`.
fn contains_term(text: &str, term: &str) -> bool {
    if !term.trim_end().bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(term);
    }
    let bytes = text.as_bytes();
    let code = term.trim_end().len();
    text.match_indices(term).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + code).copied();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// When a limit resets, read from the words CLIs use: "Try again at 3:28 PM" (local time),
/// "resets 8:08am (UTC)", "Please retry in 3600s", "usage limit reached|1774447200".
/// `now` is Unix seconds; a time of day without a date is its next occurrence.
pub fn reset_from_text(text: &str, now: i64, utc_offset_secs: i32) -> Option<i64> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, tail)) = lower.split_once("limit reached|") {
        let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(t) = digits.parse::<i64>() {
            return Some(if t > 100_000_000_000 { t / 1000 } else { t });
        }
    }
    for key in ["retry in ", "retry after ", "try again in "] {
        if let Some((_, tail)) = lower.split_once(key)
            && let Some(secs) = duration_prefix(tail)
        {
            return Some(now + secs);
        }
    }
    for key in ["try again at ", "resets at ", "resets "] {
        let Some((_, tail)) = lower.split_once(key) else {
            continue;
        };
        let utc = tail.contains("(utc)") || tail.contains(" utc");
        if let Some(minutes) = clock_prefix(tail) {
            let offset = if utc { 0 } else { utc_offset_secs as i64 };
            let local_now = now + offset;
            let day_start = local_now.div_euclid(86_400) * 86_400;
            let mut at = day_start + minutes * 60;
            if at <= local_now {
                at += 86_400;
            }
            return Some(at - offset);
        }
    }
    None
}

/// "3600s", "90 seconds", "1h2m3s", "5m" at the start of `s`, in seconds.
fn duration_prefix(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let mut total = 0f64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = match num.parse() {
            Ok(n) => n,
            Err(_) => break,
        };
        match c {
            'h' => total += n * 3600.0,
            'm' => total += n * 60.0,
            's' | ' ' => total += n,
            _ => break,
        }
        any = true;
        num.clear();
        if c == ' ' {
            break;
        }
    }
    any.then_some(total.ceil() as i64)
}

/// "3:28 pm", "8:08am", "12:00am", "1pm" at the start of `s`: minutes after midnight.
fn clock_prefix(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let digits: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':')
        .collect();
    let rest = s[digits.len()..].trim_start();
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
        None => (digits.parse::<i64>().ok()?, 0),
    };
    let pm = rest.starts_with("pm") || rest.starts_with("p.m");
    let am = rest.starts_with("am") || rest.starts_with("a.m");
    if !(am || pm || digits.contains(':')) || h > 23 || m > 59 {
        return None;
    }
    let h = match (am, pm) {
        (true, _) if h == 12 => 0,
        (_, true) if h < 12 => h + 12,
        _ => h,
    };
    Some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_times_from_text() {
        // 2026-11-21 07:00:00 UTC
        let now = 1_795_244_400;
        assert_eq!(
            reset_from_text("resets 8:08am (UTC)", now, 0),
            Some(now + 68 * 60)
        );
        assert_eq!(
            reset_from_text(
                "You've hit your usage limit. Try again at 8:14 AM.",
                now,
                3600
            ),
            Some(now + 14 * 60)
        );
        assert_eq!(
            reset_from_text("Try again at 6:00 AM", now, 0),
            Some(now + 23 * 3600)
        );
        assert_eq!(
            reset_from_text("Please retry in 3600s.", now, 0),
            Some(now + 3600)
        );
        assert_eq!(reset_from_text("retry in 1h2m3s", now, 0), Some(now + 3723));
        assert_eq!(
            reset_from_text("Claude AI usage limit reached|1795248000", now, 0),
            Some(1_795_248_000)
        );
        assert_eq!(
            reset_from_text("resets 12:00am", now, 0),
            Some(now + 17 * 3600)
        );
        assert_eq!(reset_from_text("no time here", now, 0), None);
    }

    #[test]
    fn a_status_code_counts_only_as_a_number_of_its_own() {
        // A command agent printing its environment at 13:40:19: the run's name holds "401".
        assert_eq!(
            classify_text("XDG_CACHE_HOME=/tmp/i/.fleet/homes/canary-20261206-134019/leak/.cache"),
            ErrorClass::Agent
        );
        assert_eq!(classify_text("wrote /tmp/.tmpa429f/out"), ErrorClass::Agent);
        assert_eq!(classify_text("HTTP/1.1 401"), ErrorClass::AuthFailed);
        assert_eq!(classify_text("status=429;"), ErrorClass::RateLimited);
        assert_eq!(classify_text("(503) try later"), ErrorClass::Upstream);
        assert_eq!(classify_text("403 Forbidden"), ErrorClass::AuthFailed);
    }

    #[test]
    fn text_classes() {
        assert_eq!(
            classify_text("API Error: 401 Invalid authentication credentials"),
            ErrorClass::AuthFailed
        );
        assert_eq!(
            classify_text("Invalid API key · Fix external API key"),
            ErrorClass::AuthFailed
        );
        assert_eq!(
            classify_text("You've hit your usage limit. Try again at 3:28 PM."),
            ErrorClass::QuotaExhausted
        );
        assert_eq!(
            classify_text("API Error: Request rejected (429) · slow down"),
            ErrorClass::RateLimited
        );
        assert_eq!(
            classify_text("exceeded retry limit, last status: 429 Too Many Requests"),
            ErrorClass::RateLimited
        );
        assert_eq!(
            classify_text("API Error: 529 Overloaded."),
            ErrorClass::Overloaded
        );
        assert_eq!(
            classify_text("API Error: 500 boom. This is a server-side issue"),
            ErrorClass::Upstream
        );
        assert_eq!(
            classify_text("Maximum session turns exceeded"),
            ErrorClass::Agent
        );
    }

    #[test]
    fn killed_processes_crash_unless_a_vendor_limit_explains_them() {
        let end = ProcessEnd::from_exit_status(137);
        assert_eq!(end.signal, Some(9));
        let ev = Evidence::default();
        assert_eq!(ev.classify(&end).class, OutcomeClass::Crashed);
        let stalled = ProcessEnd {
            stalled: true,
            ..end
        };
        assert_eq!(ev.classify(&stalled).class, OutcomeClass::Stalled);
        let mut limited = Evidence {
            resets_at: Some(99),
            ..Evidence::default()
        };
        limited.error(ErrorClass::RateLimited, "429");
        let o = limited.classify(&stalled);
        assert_eq!(
            (o.class, o.resets_at),
            (OutcomeClass::RateLimited, Some(99))
        );
    }

    #[test]
    fn success_needs_a_terminal_event() {
        let ok = Evidence {
            terminal: Some(Ok(())),
            ..Evidence::default()
        };
        assert_eq!(
            ok.classify(&ProcessEnd::from_exit_status(0)).class,
            OutcomeClass::Succeeded
        );
        assert_eq!(
            Evidence::default()
                .classify(&ProcessEnd::from_exit_status(0))
                .class,
            OutcomeClass::NoResult
        );
        assert_eq!(
            Evidence::default()
                .classify(&ProcessEnd::from_exit_status(1))
                .class,
            OutcomeClass::Crashed
        );
    }

    #[test]
    fn a_generic_terminal_failure_yields_to_a_specific_earlier_error() {
        let mut ev = Evidence {
            terminal: Some(Err((ErrorClass::Agent, "turn failed".into()))),
            ..Evidence::default()
        };
        ev.error(ErrorClass::AuthFailed, "unexpected status 401 Unauthorized");
        let o = ev.classify(&ProcessEnd::from_exit_status(1));
        assert_eq!(o.class, OutcomeClass::AuthFailed);
    }
}
