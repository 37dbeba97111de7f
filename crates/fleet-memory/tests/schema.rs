//! `docs/lessons.schema.json` and the Rust types say the same thing.

use fleet_memory::retro::{self, DraftScope, LessonDraft, LessonsFile, MAX_LESSONS};
use fleet_memory::{AppliesWhen, db::MAX_LESSON_CHARS};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/lessons.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
        None => v,
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn lessons_schema_matches_the_rust_types() {
    let root = schema();
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let full = serde_json::to_value(LessonsFile {
        lessons: vec![LessonDraft {
            scope: DraftScope::Project,
            applies_when: AppliesWhen {
                paths: vec!["src/".into()],
                roles: vec!["developer".into()],
                kinds: vec!["bugfix".into()],
                words: vec!["handler".into()],
            },
            lesson: "x".into(),
        }],
    })
    .unwrap();
    // Every level: the schema's properties are exactly the fields serde writes, it refuses
    // others as serde does, and its required fields are those serde cannot default.
    assert_eq!(keys(&root["properties"]), keys(&full));
    assert_eq!(root["additionalProperties"], false);
    assert_eq!(root["properties"]["lessons"]["maxItems"], MAX_LESSONS);
    let lesson = resolve(&root, &root["properties"]["lessons"]["items"]);
    assert_eq!(keys(&lesson["properties"]), keys(&full["lessons"][0]));
    assert_eq!(lesson["additionalProperties"], false);
    assert_eq!(lesson["required"], json!(["scope", "lesson"]));
    let when = resolve(&root, &lesson["properties"]["applies_when"]);
    assert_eq!(
        keys(&when["properties"]),
        keys(&full["lessons"][0]["applies_when"])
    );
    assert_eq!(when["additionalProperties"], false);
    assert_eq!(
        resolve(&root, &lesson["properties"]["lesson"])["maxLength"],
        MAX_LESSON_CHARS
    );
    let scopes: Vec<Value> = [DraftScope::Project, DraftScope::Bible, DraftScope::Instance]
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    assert_eq!(
        lesson["properties"]["scope"]["enum"].as_array().unwrap(),
        &scopes
    );

    // What the schema requires, the parser requires; what it forbids, the parser refuses.
    let ok = json!({"lessons": [{"scope": "bible", "lesson": "Use UTC."}]});
    retro::parse(&ok.to_string()).unwrap();
    retro::parse(r#"{"lessons": []}"#).unwrap();
    for bad in [
        json!({}),
        json!({"lessons": [{"scope": "project"}]}),
        json!({"lessons": [{"lesson": "x"}]}),
        json!({"lessons": [{"scope": "team", "lesson": "x"}]}),
        json!({"lessons": [{"scope": "project", "lesson": "x", "why": "y"}]}),
        json!({"lessons": [{"scope": "project", "lesson": "x", "applies_when": {"files": []}}]}),
        json!({"lessons": [{"scope": "project", "lesson": "  "}]}),
        json!({"lessons": [{"scope": "project", "lesson": "x".repeat(MAX_LESSON_CHARS + 1)}]}),
        json!({"lessons": vec![json!({"scope": "project", "lesson": "x"}); MAX_LESSONS + 1]}),
        json!({"lessons": [], "extra": 1}),
    ] {
        assert!(retro::parse(&bad.to_string()).is_err(), "accepted {bad}");
    }
}

#[test]
fn drafts_become_lessons_with_their_provenance() {
    let file = retro::parse(
        r#"{"lessons": [{"scope": "bible", "lesson": "Dates are UTC."},
                        {"scope": "project", "lesson": "Run make fmt."}]}"#,
    )
    .unwrap();
    let origin = retro::Origin {
        project: "web".into(),
        bible: None,
        run: "r".into(),
        task: "t".into(),
        attempt: 2,
        at: 7,
    };
    let lessons = retro::to_lessons(file, &origin);
    // No bible: the bible lesson falls to the project.
    assert!(
        lessons
            .iter()
            .all(|l| l.scope == fleet_memory::Scope::Project("web".into()))
    );
    assert_eq!(lessons[0].provenance[0].task.as_deref(), Some("t"));
    assert_eq!(lessons[0].provenance[0].attempt, Some(2));
}
