//! Files with a contract: those Fleet writes for people and for its other processes to read
//! (summaries, traces, review documents, exports), whole or not at all; and lock files that
//! say which process holds them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers this process's temporary files.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` at `path` whole or not at all. The bytes go to a temporary file of this call's
/// own beside `path` (`.<name>.<pid>.<n>.tmp`), renamed over it: a reader never sees half a
/// file, a kill leaves the old file (and at most that temporary one), and two writers of one
/// path each put a whole file there — the last rename wins. The parent directory must exist.
/// Errors name `path`.
pub fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| named(io::Error::other("not a file name")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut file) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{n}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        // As `File::create` would make it: 0666 less the umask.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // Left by a killed process that had this pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(named(e)),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(e));
    }
    Ok(())
}

/// [`write_whole`], making `path`'s missing parent directories first (a state directory's
/// own files; a path a person gave should not grow directories).
pub fn write_whole_making_dirs(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    write_whole(path, bytes)
}

/// What [`lock_with_pid`] found.
#[derive(Debug)]
pub enum PidLock {
    /// Held by this process for as long as the file is open (the kernel lets go however the
    /// process ends).
    Held(File),
    /// Another process holds it: what it wrote there (its pid).
    HeldBy(String),
}

/// Takes an exclusive `flock` on `path` (made if missing) and writes this process's pid in it.
/// A holder is waited for up to `patience`: one that is exiting lets go in a moment, and a
/// child forked by any process shares the lock's descriptor until its `exec` closes it.
pub fn lock_with_pid(path: &Path, patience: std::time::Duration) -> io::Result<PidLock> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let since = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if since.elapsed() < patience => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Ok(PidLock::HeldBy(holder.trim().to_string()));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(PidLock::Held(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicBool;

    /// Four writers rewrite one path with documents of their own while a reader reads it: every
    /// read is one whole document, and no writer fails.
    #[test]
    fn concurrent_writers_of_one_path_each_leave_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.md");
        let docs: Vec<String> = (0..4).map(|w| format!("{w}").repeat(256 << 10)).collect();
        write_whole(&path, docs[0].as_bytes()).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(
                        docs.contains(&text),
                        "a read saw {} bytes of a mix",
                        text.len()
                    );
                    reads += 1;
                }
                reads
            });
            let writers: Vec<_> = docs
                .iter()
                .map(|doc| {
                    let path = &path;
                    s.spawn(move || (0..40).try_for_each(|_| write_whole(path, doc.as_bytes())))
                })
                .collect();
            let written: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
            done.store(true, Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
            for w in written {
                w.unwrap();
            }
        });
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    #[test]
    fn the_file_gets_the_usual_mode_and_an_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.md");
        write_whole(&path, b"x").unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask);

        let missing = dir.path().join("no/such/dir/doc.md");
        let err = write_whole(&missing, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.starts_with(&missing.display().to_string()), "{text}");
        assert!(
            !text.contains(".doc.md."),
            "the temporary file is not named: {text}"
        );
    }
}
