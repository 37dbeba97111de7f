//! Prompt templates: `{{name}}` placeholders and `{{#if name}}…{{/if}}` sections.
//!
//! Deliberately tiny. A placeholder is replaced by its variable's value, which is never scanned
//! again (a request that contains `{{x}}` stays as written). A section is kept when its variable
//! holds more than whitespace and vanishes otherwise; sections may nest. A section tag alone on
//! its line takes the whole line with it, so sections leave no blank lines behind. Every name
//! must be a known variable: a typo is an error, never an empty string in a prompt.

use std::collections::BTreeMap;

/// The variables the pipeline passes to a role's template (all strings, any may be empty).
pub const TEMPLATE_VARS: &[&str] = &[
    "request",
    "project",
    "bible",
    "skills",
    "context",
    "architecture",
    "task",
    "acceptance",
    "feedback",
    "diff",
    "plan",
    "existing_tasks",
    "cycle",
    // The code-writing roles some profile plays (the planner may give tasks only these).
    "roles",
    // QA: the deployed app's address, and the page as Fleet's headless browser rendered it.
    "url",
    "page",
];

/// Fills `template` with `vars`. The error names the unknown placeholder (or the malformed
/// tag) and its line and column in the template.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let pieces = parse(template, &|name| vars.contains_key(name)).map_err(|e| {
        let at = position(template, e.offset);
        format!("line {}, col {}: {}", at.0, at.1, e.message)
    })?;
    let mut out = String::with_capacity(template.len());
    emit(&pieces, vars, &mut out);
    Ok(out)
}

/// A template problem at a byte offset of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// Checks `template` against the variables in `known` without rendering it.
pub(crate) fn check(template: &str, known: &[&str]) -> Result<(), TemplateError> {
    parse(template, &|name| known.contains(&name)).map(|_| ())
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, col)
}

#[derive(Debug)]
enum Piece<'t> {
    Text(&'t str),
    Var(&'t str),
    If(&'t str, Vec<Piece<'t>>),
}

fn emit(pieces: &[Piece<'_>], vars: &BTreeMap<&str, String>, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => out.push_str(vars.get(name).map_or("", String::as_str)),
            Piece::If(name, body) => {
                if vars.get(name).is_some_and(|v| !v.trim().is_empty()) {
                    emit(body, vars, out);
                }
            }
        }
    }
}

/// An open `{{#if}}`: its name, where it was opened, and the pieces before it.
struct Open<'t> {
    name: &'t str,
    offset: usize,
    outer: Vec<Piece<'t>>,
}

fn parse<'t>(
    template: &'t str,
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<Piece<'t>>, TemplateError> {
    let err = |offset: usize, message: String| TemplateError { offset, message };
    let mut pieces: Vec<Piece<'t>> = Vec::new();
    let mut stack: Vec<Open<'t>> = Vec::new();
    let mut rest = 0;
    while let Some(found) = template[rest..].find("{{") {
        let start = rest + found;
        let Some(len) = template[start + 2..].find("}}") else {
            return Err(err(start, "`{{` is never closed by `}}`".into()));
        };
        let inner = &template[start + 2..start + 2 + len];
        let end = start + 2 + len + 2;
        let tag = inner.trim();
        let (kind, name) = if let Some(name) = tag.strip_prefix("#if") {
            (Tag::Open, name.trim())
        } else if tag == "/if" {
            (Tag::Close, "")
        } else {
            (Tag::Var, tag)
        };
        if kind != Tag::Close {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(err(
                    start,
                    format!(
                        "malformed tag `{{{{{inner}}}}}`; expected `{{{{name}}}}`, `{{{{#if name}}}}` or `{{{{/if}}}}` with a lowercase name"
                    ),
                ));
            }
            if !known(name) {
                return Err(err(start, format!("unknown placeholder `{{{{{name}}}}}`")));
            }
        }
        // A section tag alone on its line takes the line with it.
        let mut text_end = start;
        let mut next = end;
        if kind != Tag::Var {
            let line_start = template[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = template[end..]
                .find('\n')
                .map_or(template.len(), |i| end + i);
            let blank = |s: &str| s.chars().all(|c| c == ' ' || c == '\t' || c == '\r');
            if blank(&template[line_start..start]) && blank(&template[end..line_end]) {
                text_end = line_start.max(rest);
                next = (line_end + 1).min(template.len());
            }
        }
        if text_end > rest {
            pieces.push(Piece::Text(&template[rest..text_end]));
        }
        match kind {
            Tag::Var => pieces.push(Piece::Var(name)),
            Tag::Open => stack.push(Open {
                name,
                offset: start,
                outer: std::mem::take(&mut pieces),
            }),
            Tag::Close => {
                let Some(open) = stack.pop() else {
                    return Err(err(start, "`{{/if}}` without an open `{{#if …}}`".into()));
                };
                let body = std::mem::replace(&mut pieces, open.outer);
                pieces.push(Piece::If(open.name, body));
            }
        }
        rest = next;
    }
    if let Some(open) = stack.pop() {
        return Err(err(
            open.offset,
            format!(
                "`{{{{#if {}}}}}` is never closed by `{{{{/if}}}}`",
                open.name
            ),
        ));
    }
    if rest < template.len() {
        pieces.push(Piece::Text(&template[rest..]));
    }
    Ok(pieces)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Var,
    Open,
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn placeholders_are_replaced_once() {
        let v = vars(&[("request", "fix {{task}}"), ("task", "T")]);
        assert_eq!(
            render("Do: {{request}} / {{ task }}", &v).unwrap(),
            "Do: fix {{task}} / T"
        );
    }

    #[test]
    fn unknown_placeholder_is_named_with_its_position() {
        let v = vars(&[("request", "x")]);
        let e = render("a\n  {{reqest}}", &v).unwrap_err();
        assert_eq!(e, "line 2, col 3: unknown placeholder `{{reqest}}`");
        let e = render("{{#if nope}}x{{/if}}", &v).unwrap_err();
        assert!(e.contains("`{{nope}}`"), "{e}");
    }

    #[test]
    fn malformed_and_unbalanced_tags_are_errors() {
        let v = vars(&[("a", "x")]);
        for (t, needle) in [
            ("{{a", "never closed"),
            ("{{A}}", "malformed"),
            ("{{}}", "malformed"),
            ("{{#if a}}x", "never closed by `{{/if}}`"),
            ("x{{/if}}", "without an open"),
        ] {
            let e = render(t, &v).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn sections_vanish_when_empty_and_take_their_lines() {
        let t = "A\n{{#if a}}\nhas a: {{a}}\n{{#if b}}\nand b\n{{/if}}\n{{/if}}\nZ\n";
        assert_eq!(
            render(t, &vars(&[("a", "1"), ("b", "")])).unwrap(),
            "A\nhas a: 1\nZ\n"
        );
        assert_eq!(
            render(t, &vars(&[("a", "1"), ("b", "2")])).unwrap(),
            "A\nhas a: 1\nand b\nZ\n"
        );
        assert_eq!(
            render(t, &vars(&[("a", " \n"), ("b", "2")])).unwrap(),
            "A\nZ\n"
        );
        // Inline sections keep the text around them.
        assert_eq!(
            render("x {{#if a}}[{{a}}]{{/if}} y", &vars(&[("a", "1")])).unwrap(),
            "x [1] y"
        );
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(position("ab\ncé{{", 6), (2, 3));
        assert_eq!(position("", 0), (1, 1));
    }
}
