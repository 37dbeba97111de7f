//! Policies at project scope (`projects.NAME.policies`) reach the epic's stage runs: the
//! developer's file that a project rule protects never lands, and every refusal is a
//! `policy.protected` event naming the project's rule.

mod support;
use support::scripted::{ALL, Inst};

#[test]
fn a_projects_protected_path_never_lands_from_its_epics() {
    let inst = Inst::new(
        &ALL,
        "projects:\n  shop:\n    max_replans: 1\n    policies:\n      - { name: no-t1, protected_paths: [/t1.txt] }\n",
    );
    inst.add_shop();
    let out = inst.run(&["task", "add", "Add a file", "--project", "shop"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    use fleet_store::Store;
    let store = fleet_store::SqliteStore::open(
        &inst.home.join(".fleet/fleet.db"),
        fleet_store::Durability::Process,
    )
    .unwrap();
    let refused: Vec<serde_json::Value> = store
        .events(None, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "policy.protected")
        .map(|e| e.data)
        .collect();
    assert!(!refused.is_empty(), "{text}");
    assert!(
        refused
            .iter()
            .all(|d| d["rule"] == "no-t1" && d["detail"].as_str().unwrap().contains("t1.txt")),
        "{refused:?}"
    );
    // The epic's branch never got t1.txt.
    let branches = support::git(&inst.repo, &["branch", "--list", "fleet/epics/**"]);
    assert!(!branches.trim().is_empty(), "no epic branch\n{text}");
    for b in branches.lines() {
        let b = b.trim_start_matches(['*', '+', ' ']);
        let ls = support::git(&inst.repo, &["ls-tree", "-r", "--name-only", b]);
        assert!(!ls.lines().any(|f| f == "t1.txt"), "{b}: {ls}");
    }
}
