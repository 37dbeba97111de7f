//! Shared pieces of the vendor wire formats: reply context, SSE framing, error replies, time.

use serde_json::Value;

use crate::scenario::Usage;

/// Everything a vendor encoder needs besides the plan.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub model: String,
    pub usage: Usage,
    /// Per-scenario request number, used to make ids unique and deterministic.
    pub seq: u64,
    /// Unix seconds.
    pub now: u64,
}

/// The parameters of a status fault.
#[derive(Debug, Clone)]
pub(crate) struct StatusSpec {
    pub code: u16,
    pub retry_after_secs: Option<u64>,
    pub reset_at: Option<u64>,
    pub error_type: Option<String>,
    pub message: Option<String>,
}

impl StatusSpec {
    /// Seconds until the reset: from `reset_at`, else `retry_after_secs`.
    pub fn reset_in(&self, now: u64) -> Option<u64> {
        self.reset_at
            .map(|r| r.saturating_sub(now))
            .or(self.retry_after_secs)
    }
}

/// An HTTP error reply.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// One SSE event, with an `event:` line when `event` is given.
pub(crate) fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp for unix seconds (no external date crate).
pub(crate) fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// The reason phrase we use in default error messages.
pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_values() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_774_447_200), "2026-03-25T14:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
