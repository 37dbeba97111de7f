//! Paths Fleet will write to, checked before any work runs: a run that cannot write its
//! `report:` should say so at once, not after every task ran.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why the summary cannot be written to `path` (the runbook's directory joined with what
/// `report:` says), or `None` if it can. The engine writes the file through a temporary
/// file in the same directory and creates missing directories first, so the nearest
/// existing ancestor must be a directory this process may write in.
pub(crate) fn report_problem(path: &Path) -> Option<String> {
    let path = lexical(path);
    if path.file_name().is_none() {
        return Some(format!("{} names a directory, not a file", path.display()));
    }
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Some(format!(
                "{} is a directory; expected a file path",
                path.display()
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Some(format!(
                "{} exists and is not a regular file",
                path.display()
            ));
        }
        Ok(_) => {}
        Err(e) if missing(&e) => {}
        Err(e) => return Some(format!("{} cannot be checked: {e}", path.display())),
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        match std::fs::metadata(d) {
            Ok(meta) if meta.is_dir() => {
                return (!writable(d)).then(|| format!("cannot write in {}", d.display()));
            }
            Ok(_) => return Some(format!("{} is not a directory", d.display())),
            Err(e) if missing(&e) => dir = d.parent(),
            Err(e) => return Some(format!("{} cannot be checked: {e}", d.display())),
        }
    }
    Some(format!(
        "{} has no existing directory above it",
        path.display()
    ))
}

/// Not there (yet): the directories above decide.
fn missing(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    matches!(e.kind(), NotFound | NotADirectory)
}

/// `a/./b/../c` as `a/c`: the engine resolves `report:` the same way (no symlinks followed).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether this process may create files in `dir` (permissions, read-only mounts, ACLs: the
/// kernel's own answer, which mode bits alone cannot give).
fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_missing_parents_are_judged_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(
            report_problem(Path::new("/"))
                .unwrap()
                .contains("names a directory")
        );
        assert!(report_problem(d).unwrap().contains("is a directory"));
        assert!(
            report_problem(&d.join("."))
                .unwrap()
                .contains("is a directory")
        );
        assert!(
            report_problem(&d.join("x/.."))
                .unwrap()
                .contains("is a directory")
        );
        std::fs::write(d.join("file"), "").unwrap();
        let under_file = report_problem(&d.join("file/summary.md")).unwrap();
        assert!(under_file.contains("is not a directory"), "{under_file}");
        assert_eq!(
            report_problem(&d.join("file")),
            None,
            "an existing file is replaced"
        );
        assert_eq!(report_problem(&d.join("new/dirs/summary.md")), None);
        let dev = report_problem(Path::new("/dev/null")).unwrap();
        assert!(dev.contains("not a regular file"), "{dev}");
    }
}
