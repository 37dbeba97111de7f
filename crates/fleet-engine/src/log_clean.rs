//! What a task log keeps of a command's output: secrets taken out, and the middle of an
//! output longer than twice [`LOG_KEEP`] cut. The local engine's attempts and checks and a
//! runner's shell tasks pass every command's output through this one place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How much of a command's output a task log keeps at its head and at its tail when the
/// output is longer than twice that.
pub(crate) const LOG_KEEP: usize = 1 << 20;

/// Rewrites what a command appended to the log at `path` (open as `log`, for appending)
/// since `from`, without secrets and cut to its head and tail, if it printed any (the command
/// writes the file itself, so this is the first point Fleet sees it).
pub(crate) fn clean_log_since(
    path: &Path,
    log: &File,
    from: u64,
    redactor: &fleet_secrets::Redactor,
) {
    if log.metadata().map_or(true, |m| m.len() <= from) {
        return; // It printed nothing (most commands): no file to open.
    }
    let Ok(mut reader) = File::open(path) else {
        return;
    };
    if reader.seek(SeekFrom::Start(from)).is_err() {
        return;
    }
    let mut bytes = Vec::new();
    if reader.read_to_end(&mut bytes).is_err() {
        return;
    }
    let mut text = String::from_utf8_lossy(&bytes);
    let cut = bytes.len() > 2 * LOG_KEEP;
    if cut {
        let (head, tail) = (
            String::from_utf8_lossy(&bytes[..LOG_KEEP]),
            String::from_utf8_lossy(&bytes[bytes.len() - LOG_KEEP..]),
        );
        let cut = bytes.len() - 2 * LOG_KEEP;
        text = std::borrow::Cow::Owned(format!(
            "{head}\n[… {cut} bytes of output cut: the first and last {} kept …]\n{tail}",
            LOG_KEEP
        ));
    }
    let clean = redactor.clean(&text);
    if cut || matches!(clean, std::borrow::Cow::Owned(_)) {
        // The log is opened for appending: cut it back, then write the clean text.
        if log.set_len(from).is_ok() {
            let _ = (&*log).write_all(clean.as_bytes());
        }
    }
}

/// The last `max_lines` lines (at most `max_bytes`) of the file at `path`, read from its end
/// only: a log may be megabytes.
pub(crate) fn tail_of(path: &Path, max_lines: usize, max_bytes: usize) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(2 * max_bytes as u64);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(crate::fix_loop::tail(&text, max_lines, max_bytes))
}

/// The tail of what the log at `path` holds from `from` on (one check's output), without the
/// trailer line Fleet wrote after it.
pub(crate) fn tail_from(path: &Path, from: u64, max_lines: usize, max_bytes: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(4 * max_bytes as u64));
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("── check:"))
        .collect();
    crate::fix_loop::tail(&kept.join("\n"), max_lines, max_bytes)
}
