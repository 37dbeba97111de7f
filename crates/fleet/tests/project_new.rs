//! `fleet project new NAME --bible B`: a project from nothing — a new repository whose first
//! commit holds a README written from the bible, registered to follow the bible, whose stack,
//! tone and deploy target then reach the researcher's and the planner's prompts of its first
//! request. A taken name or directory, or an unknown bible, is refused (exit 2) and nothing is
//! made.

mod support;
use support::git;
use support::scripted::{ALL, Inst};

const BIBLE: &str = "---\nvalues: [ship small]\ntone: warm and plain\n\
constraints: [\"stack: Rust with axum, SQLite\", \"design system: Pico CSS\"]\n\
deploy: fly.io app shop-prod\n---\nA shop for our bakery.\n";

#[test]
fn a_new_project_starts_from_the_bible_and_its_first_request_is_driven_by_it() {
    let inst = Inst::new(&ALL, "");
    std::fs::create_dir_all(inst.home.join("bibles")).unwrap();
    std::fs::write(inst.home.join("bibles/bakery.md"), BIBLE).unwrap();
    let dir = inst.path("bakery-app");
    let out = inst.expect(
        &[
            "project",
            "new",
            "bakery",
            "--bible",
            "bakery",
            "--dir",
            dir.to_str().unwrap(),
        ],
        0,
    );
    assert!(out.contains("project bakery created"), "{out}");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.starts_with("# bakery\n")
            && readme.contains("Pico CSS")
            && readme.contains("fly.io"),
        "{readme}"
    );
    assert_eq!(
        git(&dir, &["log", "--format=%s"]).trim(),
        "Start the project"
    );
    assert_eq!(git(&dir, &["status", "--porcelain"]).trim(), "");
    let ls = inst.expect(&["project", "ls", "--json"], 0);
    let projects: serde_json::Value = serde_json::from_str(ls.trim()).unwrap();
    assert_eq!(projects[0]["name"], "bakery");
    assert_eq!(projects[0]["bible"], "bakery");

    let out = inst.expect(
        &["task", "add", "Build the order page", "--project", "bakery"],
        0,
    );
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    for role in ["researcher", "planner"] {
        let prompt = inst.prompt(role);
        for part in [
            "Rust with axum",
            "Pico CSS",
            "Tone: warm and plain",
            "Deployment: fly.io",
        ] {
            assert!(
                prompt.contains(part),
                "{role} prompt lacks {part:?}:\n{prompt}"
            );
        }
    }
}

#[test]
fn a_taken_name_or_directory_or_an_unknown_bible_is_refused_and_nothing_is_made() {
    let inst = Inst::new(&ALL, "");
    std::fs::create_dir_all(inst.home.join("bibles")).unwrap();
    std::fs::write(inst.home.join("bibles/bakery.md"), BIBLE).unwrap();
    let out = inst.expect(&["project", "new", "cafe", "--bible", "nope"], 2);
    assert!(
        out.contains("--bible nope: no bibles/nope.md (known: bakery)"),
        "{out}"
    );
    assert!(!inst.home.join(".fleet/repos/cafe").exists());
    // The directory is taken: refused, and the directory is left as it was.
    let taken = inst.path("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let out = inst.expect(
        &[
            "project",
            "new",
            "cafe",
            "--bible",
            "bakery",
            "--dir",
            taken.to_str().unwrap(),
        ],
        2,
    );
    assert!(out.contains("already exists"), "{out}");
    assert_eq!(
        std::fs::read_to_string(taken.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(!taken.join(".git").exists());
    // Made once (in .fleet/repos/cafe), the name is then taken.
    inst.expect(&["project", "new", "cafe", "--bible", "bakery"], 0);
    assert!(inst.home.join(".fleet/repos/cafe/README.md").is_file());
    let out = inst.expect(
        &[
            "project",
            "new",
            "cafe",
            "--bible",
            "bakery",
            "--dir",
            inst.path("other").to_str().unwrap(),
        ],
        2,
    );
    assert!(out.contains("project \"cafe\" already exists"), "{out}");
    assert!(!inst.path("other").exists());
    let out = inst.expect(&["project", "new", "Bad Name", "--bible", "bakery"], 2);
    assert!(out.contains("project name"), "{out}");
}
