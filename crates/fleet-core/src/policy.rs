//! Always-on rules an attempt must obey: paths agents must not touch, branches they must not
//! write. Enforced, not suggested: an attempt whose change breaks a rule does not land, and the
//! next agent is told which rule and which path.
//!
//! Patterns are globs relative to the repository root (`**` crosses directories, `*` does not;
//! a pattern without `/` matches a name at any depth, as in `.gitignore`). A rule that does not
//! compile is refused where the configuration is read, with the rule's name.
//!
//! Pure: the caller passes the paths an attempt changed.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A named set of protected path patterns.
#[derive(Debug, Clone)]
pub struct ProtectedPaths {
    pub rule: String,
    patterns: Vec<String>,
    set: GlobSet,
}

/// A path a change touched that a rule protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: String,
    pub pattern: String,
    pub path: String,
}

/// A pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is not a valid path pattern: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for PatternError {}

fn compile(pattern: &str) -> Result<Glob, PatternError> {
    let anchored = pattern.trim_start_matches('/');
    // gitignore-like: a bare name (no slash but a trailing one) matches at any depth; a
    // leading slash anchors it at the root.
    let rooted = pattern.starts_with('/') || anchored.trim_end_matches('/').contains('/');
    let full = if rooted {
        anchored.to_string()
    } else {
        format!("**/{anchored}")
    };
    // A directory pattern protects everything under it.
    let full = match full.strip_suffix('/') {
        Some(dir) => format!("{dir}/**"),
        None => full,
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .build()
        .map_err(|error| PatternError {
            pattern: pattern.to_string(),
            reason: error.kind().to_string(),
        })
}

impl ProtectedPaths {
    pub fn new(rule: &str, patterns: &[String]) -> Result<ProtectedPaths, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(compile(pattern)?);
            // `dir/**` also protects `dir` itself, and `dir` protects what is under it.
            if !pattern.ends_with("**") {
                let under = format!("{}/**", pattern.trim_end_matches('/'));
                builder.add(compile(&under)?);
            }
        }
        let set = builder.build().map_err(|error| PatternError {
            pattern: patterns.join(", "),
            reason: error.to_string(),
        })?;
        Ok(ProtectedPaths {
            rule: rule.to_string(),
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    fn pattern_of(&self, path: &str) -> Option<&str> {
        // Two globs per pattern (itself and what is under it), in order.
        let hit = self.set.matches(path).into_iter().min()?;
        self.patterns.get(self.glob_owner(hit)).map(String::as_str)
    }

    fn glob_owner(&self, glob_index: usize) -> usize {
        let mut index = 0;
        for (owner, pattern) in self.patterns.iter().enumerate() {
            let globs = if pattern.ends_with("**") { 1 } else { 2 };
            if glob_index < index + globs {
                return owner;
            }
            index += globs;
        }
        self.patterns.len().saturating_sub(1)
    }
}

/// Every changed path a rule protects, in the order of `changed` then of `rules`.
pub fn violations(rules: &[ProtectedPaths], changed: &[String]) -> Vec<Violation> {
    let mut found = Vec::new();
    for path in changed {
        let path_clean = path.trim_start_matches("./");
        for rule in rules {
            if let Some(pattern) = rule.pattern_of(path_clean) {
                found.push(Violation {
                    rule: rule.rule.clone(),
                    pattern: pattern.to_string(),
                    path: path.clone(),
                });
            }
        }
    }
    found
}

/// Whether `branch` is protected by any of `patterns` (globs over branch names, `*` does not
/// cross `/`).
pub fn branch_protected(patterns: &[String], branch: &str) -> Result<bool, PatternError> {
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|error| PatternError {
                pattern: pattern.clone(),
                reason: error.kind().to_string(),
            })?;
        if glob.compile_matcher().is_match(branch) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(patterns: &[&str]) -> ProtectedPaths {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        ProtectedPaths::new("no-touch", &patterns).unwrap()
    }

    fn hits(rule: &ProtectedPaths, paths: &[&str]) -> Vec<(String, String)> {
        let changed: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        violations(std::slice::from_ref(rule), &changed)
            .into_iter()
            .map(|v| (v.pattern, v.path))
            .collect()
    }

    #[test]
    fn protects_directories_names_and_globs() {
        let rule = rule(&["migrations/", ".env", "src/**/*.pem", "/Cargo.lock"]);
        assert_eq!(
            hits(
                &rule,
                &[
                    "migrations/001.sql",
                    "app/.env",
                    ".env",
                    "src/keys/a.pem",
                    "src/main.rs",
                    "Cargo.lock",
                    "sub/Cargo.lock",
                    "migrationsx/1.sql",
                ]
            ),
            vec![
                ("migrations/".to_string(), "migrations/001.sql".to_string()),
                (".env".to_string(), "app/.env".to_string()),
                (".env".to_string(), ".env".to_string()),
                ("src/**/*.pem".to_string(), "src/keys/a.pem".to_string()),
                ("/Cargo.lock".to_string(), "Cargo.lock".to_string()),
            ]
        );
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_text() {
        let error = ProtectedPaths::new("r", &["src/[".to_string()]).unwrap_err();
        assert_eq!(error.pattern, "src/[");
        assert!(error.to_string().contains("not a valid path pattern"));
    }

    #[test]
    fn branches_match_without_crossing_slashes() {
        let patterns = vec!["main".to_string(), "release/*".to_string()];
        assert!(branch_protected(&patterns, "main").unwrap());
        assert!(branch_protected(&patterns, "release/1.2").unwrap());
        assert!(!branch_protected(&patterns, "release/1.2/hotfix").unwrap());
        assert!(!branch_protected(&patterns, "fleet/tasks/a/b").unwrap());
    }
}
