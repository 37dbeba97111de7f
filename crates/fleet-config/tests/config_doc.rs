//! docs/CONFIG.md documents exactly the keys the decoders accept: every section's table has a
//! row per key of the list its decoder checks keys against, and no row for a key it does not
//! read. A key added to a decoder without its row fails here.

use std::collections::BTreeSet;

/// The keys of each `### `section`` table in the document, by section.
fn documented(doc: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            let title = title.trim().trim_matches('`').to_string();
            out.push((title, BTreeSet::new()));
        } else if let (Some(row), Some((_, keys))) = (line.strip_prefix("| `"), out.last_mut()) {
            let key = row.split('`').next().unwrap_or("");
            keys.insert(key.to_string());
        }
    }
    out
}

#[test]
fn config_md_documents_every_key_of_every_decoder_and_no_other() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONFIG.md");
    let doc = std::fs::read_to_string(path).expect("docs/CONFIG.md");
    let documented = documented(&doc);
    let sections = fleet_config::keys::sections();
    let mut problems = Vec::new();
    for s in &sections {
        let Some((_, keys)) = documented.iter().find(|(title, _)| title == s.section) else {
            problems.push(format!(
                "no section `### `{}`` in docs/CONFIG.md",
                s.section
            ));
            continue;
        };
        let read: BTreeSet<String> = s.keys.iter().map(|k| k.to_string()).collect();
        for k in read.difference(keys) {
            problems.push(format!(
                "{}: key `{k}` is read but not documented",
                s.section
            ));
        }
        for k in keys.difference(&read) {
            problems.push(format!(
                "{}: key `{k}` is documented but not read",
                s.section
            ));
        }
    }
    for (title, _) in &documented {
        if !sections.iter().any(|s| s.section == title) {
            problems.push(format!(
                "docs/CONFIG.md section `{title}` documents no decoder"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The test reads the document as it is written: a row per key, under its section.
#[test]
fn a_missing_row_or_an_extra_row_is_found() {
    let doc = "### `runbook: defaults`\n\n| Key | Type |\n| --- | --- |\n| `timeout` | duration |\n| `colour` | text |\n";
    let d = documented(doc);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "runbook: defaults");
    assert_eq!(
        d[0].1,
        ["colour", "timeout"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

/// The README sends readers only to files that are in the repository.
#[test]
fn the_readme_links_only_to_files_in_the_repository() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut missing = Vec::new();
    for (i, _) in readme.match_indices("](") {
        let target = readme[i + 2..].split(')').next().unwrap_or("");
        let path = target.split('#').next().unwrap_or("");
        if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
            continue;
        }
        if !std::path::Path::new(root).join(path).exists() {
            missing.push(target.to_string());
        }
    }
    // Plain mentions of a markdown file in the prose count too (`shared/PRODUCT.md` was
    // one); code blocks are examples, not references.
    let mut in_code = false;
    let prose: Vec<&str> = readme
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect();
    let prose = prose.join("\n");
    for word in prose.split(|c: char| c.is_whitespace() || "`()[],;:".contains(c)) {
        if word.ends_with(".md")
            && word.contains('/')
            && !std::path::Path::new(root).join(word).exists()
            && !word.starts_with(".fleet/")
            && !word.contains('*')
            && !word.contains('<')
        {
            missing.push(word.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "README points at files not in the repository: {missing:?}"
    );
}
