//! `memory.embeddings`: decoded by a build with the `embeddings` feature, refused at load with
//! its position by a build without it (never silently ignored).

use fleet_config::parse_instance;
use std::path::Path;

const YAML: &str = "store: sqlite
memory:
  embeddings:
    base_url: http://127.0.0.1:9/v1/
    model: text-embedding-3-small
    key_env: OPENAI_API_KEY
";

#[cfg(not(feature = "embeddings"))]
#[test]
fn a_build_without_the_feature_refuses_the_key_at_its_position() {
    let errs = parse_instance(Path::new("fleet.yaml"), YAML).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(text[0].starts_with("fleet.yaml:4:5: "), "{text:?}");
    assert!(
        text[0].contains("built without the `embeddings` feature"),
        "{text:?}"
    );
}

#[cfg(feature = "embeddings")]
#[test]
fn a_build_with_the_feature_decodes_it() {
    let cfg = parse_instance(Path::new("fleet.yaml"), YAML).unwrap();
    let e = cfg.memory.embeddings.expect("set");
    assert_eq!(e.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(e.model, "text-embedding-3-small");
    assert_eq!(e.key_env.as_deref(), Some("OPENAI_API_KEY"));
}

#[cfg(feature = "embeddings")]
#[test]
fn a_missing_model_and_a_bad_url_are_errors_with_positions() {
    let yaml = "memory:\n  embeddings:\n    base_url: ftp://x\n";
    let errs = parse_instance(Path::new("fleet.yaml"), yaml).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("fleet.yaml:3:15: ") && t.contains("http(s) URL")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("needs `base_url` and `model`")),
        "{text:?}"
    );
}

#[test]
fn without_the_key_there_are_no_embeddings() {
    let cfg = parse_instance(Path::new("fleet.yaml"), "store: sqlite\n").unwrap();
    assert_eq!(cfg.memory.embeddings, None);
}
