//! The wall clock every crate above the core reads, so none of them depends on the engine for
//! it. The core's own functions never call it: they take `now` as an argument
//! ([`crate::Millis`]), so their tests and simulations choose the time.

/// Wall-clock milliseconds since the Unix epoch (0 if the clock stands before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
