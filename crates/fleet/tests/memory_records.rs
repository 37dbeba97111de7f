//! Memory's records of work (issue 20): each ended task's trace and each epic's decision log,
//! written under `.fleet/`, redacted, searchable, and shown to the agents of the epic's next
//! cycle; the project context refreshed once the repository moved on; the task graph's export
//! committed on the delivered branch when the project opted in. Real pipeline, real git,
//! scripted command agents.

mod support;
use serde_json::Value;
use support::git;
use support::scripted::{ALL, Inst};

/// A secret that a failing check prints; Fleet knows it from its environment (its name says
/// it is one).
const SECRET: &str = "s3cr3t-shop-value-9f8e7d";

/// Agents for these tests: the planner copies `$DIR/planN.json` for its Nth plan; a developer
/// writes `bad` on a task's first attempt and `good` after; the reviewer rejects once when
/// `$DIR/reject` exists; the researcher counts its runs in `$DIR/researched`.
const AGENT: &str = r##"set -e
mkdir -p .fleet-out
cat "$FLEET_PROMPT_FILE" > "$DIR/prompts/$1.txt"
case "$1" in
  researcher) echo x >> "$DIR/researched"; echo "# context of shop" > .fleet-out/context.md ;;
  planner)
    n=$(cat "$DIR/plans" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DIR/plans"
    if [ -f "$DIR/plan$n.json" ]; then cp "$DIR/plan$n.json" .fleet-out/plan.json;
    else
      printf '{"summary":"one file","phases":[{"id":"p%s","title":"P","tasks":[{"id":"t%s","title":"Add t%s","role":"developer","description":"write t%s.txt","acceptance":{"commands":["test -s t%s.txt"]}}]}]}' $n $n $n $n $n > .fleet-out/plan.json
    fi ;;
  developer)
    if [ -f "$DIR/tried-$FLEET_TASK" ]; then echo good > "$FLEET_TASK.txt";
    else touch "$DIR/tried-$FLEET_TASK"; echo bad > "$FLEET_TASK.txt"; fi ;;
  reviewer)
    if [ -f "$DIR/reject" ]; then rm "$DIR/reject";
      printf '%s' '{"verdict": "reject", "summary": "t1 is not enough", "bugs": [{"title": "t2 missing", "details": "add t2"}]}' > .fleet-out/review.json
    else printf '%s' '{"verdict": "approve", "summary": "fine"}' > .fleet-out/review.json; fi ;;
esac
echo "done as $1"
"##;

fn inst(extra: &str) -> Inst {
    let inst = Inst::new(&ALL, extra);
    std::fs::write(inst.path("agent.sh"), AGENT).unwrap();
    inst
}

fn plan(task: &str, check: &str) -> String {
    serde_json::json!({"summary": format!("do {task}"), "phases": [{"id": format!("p{task}"), "title": "P",
        "tasks": [{"id": task, "title": format!("Add {task}"), "role": "developer",
                   "description": format!("write {task}.txt"),
                   "acceptance": {"commands": [check]}}]}]})
    .to_string()
}

fn search(inst: &Inst, query: &str, kind: &str) -> Vec<Value> {
    let out = inst.expect(&["memory", "search", query, "--kind", kind, "--json"], 0);
    let json = &out[..out.rfind(']').map_or(0, |i| i + 1)];
    serde_json::from_str::<Vec<Value>>(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn files_under(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for run in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let f = run.path().join(name);
        if f.is_file() {
            out.push(f);
        }
    }
    out
}

#[test]
fn a_tasks_trace_explains_its_retry_without_the_secret_and_the_next_cycle_is_shown_it() {
    let inst = inst("");
    inst.add_shop();
    // The acceptance command prints a secret when it fails (read from outside the change:
    // Fleet refuses a plan that holds one).
    std::fs::write(
        inst.path("deploy.log"),
        format!("deploy key {SECRET} rejected\n"),
    )
    .unwrap();
    let check = format!(
        "grep -q good t1.txt || {{ cat {}; exit 1; }}",
        inst.path("deploy.log").display()
    );
    std::fs::write(inst.path("plan1.json"), plan("t1", &check)).unwrap();
    std::fs::write(inst.path("reject"), "").unwrap();
    let out = {
        let o = inst
            .command(&["task", "add", "Add the t files", "--project", "shop"])
            .env("SHOP_API_TOKEN", SECRET)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");

    // t1's trace: its two attempts, the failed check with its output, the retry, the landing.
    let traces = inst.home.join(".fleet/traces");
    let t1 = files_under(&traces, "t1.md");
    assert_eq!(t1.len(), 1, "{t1:?}\n{out}");
    let md = std::fs::read_to_string(&t1[0]).unwrap();
    for want in [
        "# Trace: task `t1`",
        "t1 merged after 2 attempts by developer-sh",
        "## What was asked\n\n```\n## Your task\n\nAdd t1 (t1)",
        "| 1 | `developer-sh`",
        "| 2 | `developer-sh`",
        "attempt 1: check `grep -q good t1.txt",
        "rejected",
        "retry:",
        "landed (merge",
        "t1.txt",
        "[redacted SHOP_API_TOKEN]",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    assert!(!md.contains(SECRET), "{md}");
    // Every task of every stage run has one (the researcher's, the planners', the reviewers').
    assert!(!files_under(&traces, "researcher.md").is_empty());

    // Searchable, redacted there too.
    let hits = search(&inst, "deploy key rejected", "trace");
    assert!(
        hits.iter()
            .any(|h| h["key"].as_str().unwrap().ends_with("/t1")),
        "{hits:?}"
    );
    assert!(!serde_json::to_string(&hits).unwrap().contains(SECRET));

    // The decision log: routing, the plans, the review's rejection, the delivery.
    let log = std::fs::read_to_string(inst.home.join(".fleet/decisions/e1.md")).unwrap();
    for want in [
        "# Decision log: epic `e1` (project `shop`)",
        "## Routing",
        "plan started (cycle 1)",
        "review ended",
        "t1 is not enough",
        "plan started (cycle 2)",
        "delivered (branch)",
    ] {
        assert!(log.contains(want), "missing {want:?} in\n{log}");
    }
    assert!(!log.contains(SECRET));
    let hits = search(&inst, "enough", "decision");
    assert_eq!(
        hits.first().map(|h| h["key"].clone()),
        Some("e1".into()),
        "{hits:?}"
    );

    // The second cycle's planner and developer were shown the log and t1's trace.
    for role in ["planner", "developer"] {
        let prompt = inst.prompt(role);
        let at = prompt
            .find("## Earlier work on this request")
            .unwrap_or_else(|| panic!("{role}:\n{prompt}"));
        let section = &prompt[at..];
        assert!(
            section.contains(&format!("`{}`", t1[0].display()))
                && section.contains("t1 merged after 2 attempts")
                && section.contains(".fleet/decisions/e1.md"),
            "{role}:\n{section}"
        );
    }
    // Without the opt-in, nothing of memory is committed on the delivered branch.
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let log = git(&inst.repo, &["log", "--format=%s", &branch]);
    assert!(!log.contains("the task graph"), "{log}");
}

#[test]
fn the_context_is_refreshed_after_n_commits_and_not_before() {
    let inst =
        inst("projects:\n  shop:\n    context_refresh_commits: 2\n    context_refresh_days: 0\n");
    inst.add_shop();
    let researched = || {
        std::fs::read_to_string(inst.path("researched"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let commit = |n: u32| {
        std::fs::write(inst.repo.join(format!("f{n}.txt")), "x").unwrap();
        git(&inst.repo, &["add", "-A"]);
        git(&inst.repo, &["commit", "-q", "-m", &format!("f{n}")]);
        git(&inst.repo, &["rev-parse", "HEAD"]).trim().to_string()
    };
    let stamp = || -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(inst.home.join(".fleet/context/shop.json")).unwrap(),
        )
        .unwrap()
    };
    let head = git(&inst.repo, &["rev-parse", "HEAD"]).trim().to_string();
    inst.expect(&["task", "add", "Add t1", "--project", "shop"], 0);
    assert_eq!(researched(), 1);
    assert_eq!(stamp()["commit"], head.as_str());
    // One commit: under the measure, the context stands.
    commit(1);
    inst.expect(&["task", "add", "Add t2", "--project", "shop"], 0);
    assert_eq!(researched(), 1, "refreshed before 2 commits");
    // Two: the next request refreshes it, and the stamp names the commit it describes.
    let second = commit(2);
    inst.expect(&["task", "add", "Add t3", "--project", "shop"], 0);
    assert_eq!(researched(), 2, "not refreshed after 2 commits");
    assert_eq!(stamp()["commit"], second.as_str());
    let hits = search(&inst, "context shop", "context");
    assert_eq!(
        hits.first().map(|h| h["key"].clone()),
        Some("shop".into()),
        "{hits:?}"
    );
}

#[test]
fn a_project_that_opted_in_gets_the_task_graph_committed_on_its_delivered_branch() {
    let inst = inst("projects:\n  shop:\n    memory_export: memory/graph.jsonl\n");
    inst.add_shop();
    inst.expect(&["task", "add", "Add t1", "--project", "shop"], 0);
    let branch = support::fleet_branch(&inst.repo, "epics", "e1");
    let committed = git(
        &inst.repo,
        &["show", &format!("{branch}:memory/graph.jsonl")],
    );
    let subject = git(&inst.repo, &["log", "-1", "--format=%s", &branch]);
    assert!(
        subject.contains("the task graph (memory/graph.jsonl)"),
        "{subject}"
    );
    let now = inst.expect(&["memory", "export"], 0);
    let lines = |text: &str| -> Vec<Value> {
        text.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (committed, now) = (lines(&committed), lines(&now));
    assert_eq!(committed.len(), now.len());
    assert!(
        committed
            .iter()
            .any(|l| l["type"] == "task" && l["id"] == "t1")
    );
    for (c, n) in committed.iter().zip(&now) {
        if c["type"] == "epic" {
            // The epic's own line moved on after its delivery was committed (the deliver
            // stage ended, it awaits acceptance); it is the same epic.
            assert_eq!((&c["id"], &c["request"]), (&n["id"], &n["request"]));
            assert_eq!(c["state"], "deliver");
        } else {
            assert_eq!(c, n);
        }
    }
}
