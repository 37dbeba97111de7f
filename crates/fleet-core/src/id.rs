//! Identifiers for tasks and runs.
//!
//! Ids end up in file paths (`.fleet/runs/<run>/logs/<task>.log`) and git ref names
//! (`fleet/tasks/<run>/<task>`), so the accepted alphabet is deliberately small: anything
//! that could escape a directory, split a shell word or break a ref name is refused.

use std::fmt;

/// Longest accepted id. Keeps paths and ref names comfortably short.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong { len: usize },
    BadFirst { ch: char },
    BadChar { ch: char, at: usize },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "id is empty"),
            IdError::TooLong { len } => {
                write!(
                    f,
                    "id is {len} characters long; at most {MAX_ID_LEN} are allowed"
                )
            }
            IdError::BadFirst { ch } => {
                write!(f, "id starts with {ch:?}; it must start with a-z or 0-9")
            }
            IdError::BadChar { ch, at } => write!(
                f,
                "id has {ch:?} at position {}; only a-z, 0-9, '-' and '_' are allowed",
                at + 1
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Checks an id against `[a-z0-9][a-z0-9_-]*` (at most [`MAX_ID_LEN`] characters).
pub fn validate_id(id: &str) -> Result<(), IdError> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err(IdError::Empty);
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(IdError::BadFirst { ch: first });
    }
    for (at, ch) in id.chars().enumerate().skip(1) {
        if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_') {
            return Err(IdError::BadChar { ch, at });
        }
    }
    let len = id.chars().count();
    if len > MAX_ID_LEN {
        return Err(IdError::TooLong { len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for ok in ["a", "db-schema", "t_1", "0abc", "x-y_z-9"] {
            assert_eq!(validate_id(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_ids_that_escape_paths_or_refs() {
        for bad in [
            "", "../x", "a b", "x;rm", "A", "-a", "_a", "a/b", "a..b", "a.lock", "a~1", "a^",
            "a:b", "é", "a\n", "$(x)",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id(&"a".repeat(64)).is_ok());
    }
}
