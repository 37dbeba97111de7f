//! Migration mode (`fleet task add --mode migrate`) on a small legacy repository, with
//! scripted `command:` agents: research and architect deliver the eight documents on the
//! epic's branch and change no code; `fleet task accept` approves them and the implementation
//! is planned from them (the eight documents in the planner's prompt, the rollback plan among
//! the reviewer's criteria); an agent that edits code in migration mode lands nothing.

mod support;
use support::epics::stage_list;
use support::git;
use support::scripted::Inst;

/// Every role's agent. In migration mode (its prompt says so) the researcher and the architect
/// write their four documents, each with a marker the later prompts are searched for; while
/// `$DIR/hostile` exists they also "fix" the legacy code. Otherwise the ordinary roles: a
/// plan of one task, a developer writing it, a reviewer approving.
const AGENT: &str = r##"set -e
cat "$FLEET_PROMPT_FILE" > "$DIR/prompts/$1.txt"
docs() {
  dir=$(grep -o 'docs/migration/e[0-9]*/' "$FLEET_PROMPT_FILE" | head -n1)
  mkdir -p "$dir"
  for d in "$@"; do printf '# %s\n\nMARKER-%s: what the %s says.\n' "$d" "$d" "$d" > "$dir$d.md"; done
  if [ -f "$DIR/hostile" ]; then echo "print('rewritten')" > legacy.py; fi
}
if grep -q "Migration mode: read-only" "$FLEET_PROMPT_FILE"; then
  case "$1" in
    researcher) docs legacy-snapshot legacy-tech-spec legacy-gap-report legacy-risk-assessment ;;
    architect) docs legacy-migration-plan legacy-migration-proposal approval rollback-plan ;;
  esac
  echo "documents written as $1"; exit 0
fi
mkdir -p .fleet-out
case "$1" in
  researcher) echo "# context" > .fleet-out/context.md ;;
  architect) echo "# architecture" > .fleet-out/architecture.md ;;
  planner)
    printf '%s' '{"summary":"port billing","phases":[{"id":"p1","title":"Port","tasks":[{"id":"port","title":"Port billing","role":"developer","description":"write billing.rs","acceptance":{"commands":["test -s billing.rs"]}}]}]}' > .fleet-out/plan.json ;;
  developer) echo "fn bill() {}" > billing.rs ;;
  reviewer) printf '%s' '{"verdict": "approve", "summary": "fine"}' > .fleet-out/review.json ;;
esac
echo "done as $1"
"##;

const DOCS: [&str; 8] = [
    "legacy-snapshot",
    "legacy-tech-spec",
    "legacy-gap-report",
    "legacy-risk-assessment",
    "legacy-migration-plan",
    "legacy-migration-proposal",
    "approval",
    "rollback-plan",
];

fn legacy_instance() -> Inst {
    let inst = Inst::new(
        &[
            "researcher",
            "architect",
            "planner",
            "developer",
            "reviewer",
        ],
        "",
    );
    std::fs::write(inst.path("agent.sh"), AGENT).unwrap();
    std::fs::write(inst.repo.join("legacy.py"), "print('billing')\n").unwrap();
    git(&inst.repo, &["add", "-A"]);
    git(
        &inst.repo,
        &["commit", "-q", "-m", "the legacy billing script"],
    );
    inst.add_shop();
    inst
}

fn changed(inst: &Inst, from: &str, to: &str) -> Vec<String> {
    let mut files: Vec<String> = git(&inst.repo, &["diff", "--name-only", from, to])
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

#[test]
fn migration_mode_delivers_eight_documents_and_no_code_then_approval_plans_from_them() {
    let inst = legacy_instance();
    let base = git(&inst.repo, &["rev-parse", "main"]).trim().to_string();
    let out = inst.expect(
        &[
            "task",
            "add",
            "--mode",
            "migrate",
            "Move the legacy billing script to Rust",
            "--project",
            "shop",
        ],
        0,
    );
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");
    let show = inst.show("e1");
    assert_eq!(
        stage_list(&show),
        ["research1:passed", "architect1:passed", "deliver1:passed"],
        "read-only: no plan, no implementation, no review before approval"
    );
    // The delivered branch holds the eight documents and nothing else.
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let mut want: Vec<String> = DOCS
        .iter()
        .map(|d| format!("docs/migration/e1/{d}.md"))
        .collect();
    want.sort();
    assert_eq!(changed(&inst, &base, &branch), want);
    assert_eq!(git(&inst.repo, &["rev-parse", "main"]).trim(), base);
    assert!(
        inst.prompt("architect")
            .contains("docs/migration/e1/legacy-snapshot.md")
    );

    // Approval: the implementation is the next cycle, planned from the documents.
    let out = inst.expect(&["task", "accept", "e1"], 0);
    assert!(out.contains("approved"), "{out}");
    let planner = inst.prompt("planner");
    for d in DOCS {
        assert!(
            planner.contains(&format!("MARKER-{d}:")),
            "{d} is missing from the planner's prompt:\n{planner}"
        );
    }
    let reviewer = inst.prompt("reviewer");
    assert!(
        reviewer.contains("rollback plan") && reviewer.contains("MARKER-rollback-plan:"),
        "{reviewer}"
    );
    let show = inst.show("e1");
    assert_eq!(show["state"], "awaiting_acceptance");
    assert_eq!(
        stage_list(&show)[3..],
        [
            "plan1:passed",
            "implement1:passed",
            "review1:passed",
            "deliver1:passed"
        ]
    );
    let files = changed(&inst, &base, &branch);
    assert!(files.contains(&"billing.rs".to_string()), "{files:?}");
    assert_eq!(inst.events_of("e1", "epic.approved").len(), 1);
    // Accepted again, it is done.
    inst.expect(&["task", "accept", "e1"], 0);
    assert_eq!(inst.show("e1")["state"], "done");
}

#[test]
fn an_agent_that_edits_code_in_migration_mode_lands_nothing() {
    let inst = legacy_instance();
    std::fs::write(inst.path("hostile"), "").unwrap();
    let base = git(&inst.repo, &["rev-parse", "main"]).trim().to_string();
    let out = inst.expect(
        &[
            "task",
            "add",
            "--mode",
            "migrate",
            "Move the legacy billing script to Rust",
            "--project",
            "shop",
        ],
        1,
    );
    assert!(out.contains("blocked"), "{out}");
    let show = inst.show("e1");
    assert_eq!(stage_list(&show), ["research1:failed"]);
    let reason = show["blocked"]["question"].as_str().unwrap();
    assert!(reason.contains("read-only"), "{reason}");
    // The agent was told which file broke the rule.
    use fleet_store::Store;
    let store = fleet_store::SqliteStore::open(
        &inst.home.join(".fleet/fleet.db"),
        fleet_store::Durability::Process,
    )
    .unwrap();
    let told = store
        .events(None, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "task.checks_failed")
        .any(|e| {
            e.data["output_tail"]
                .as_str()
                .unwrap_or("")
                .contains("legacy.py")
        });
    assert!(told, "the failing check names legacy.py");
    // Not even the documents landed: the branch is the base.
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    assert_eq!(git(&inst.repo, &["rev-parse", &branch]).trim(), base);
    assert_eq!(
        std::fs::read_to_string(inst.repo.join("legacy.py")).unwrap(),
        "print('billing')\n"
    );
    // A bad mode is bad input.
    let out = inst.expect(
        &["task", "add", "--mode", "rewrite", "x", "--project", "shop"],
        2,
    );
    assert!(out.contains("standard or migrate"), "{out}");
}
