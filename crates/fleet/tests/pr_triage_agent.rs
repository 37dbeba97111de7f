//! A pull request comment no triage rule decides goes to a triage agent (here the reviewer
//! profile: no `triage` role is played): its answer — approval, noise or change request, with
//! a reason — decides, and an event records the decision. The GitHub double over real HTTP.

mod support;
use support::scripted::{ALL, Inst};

use fleet_testkit::forge::ForgeDouble;
use serde_json::Value;

const TOKEN: &str = "ghp_triage0123456789abcdef";

fn fleet(inst: &Inst, args: &[&str]) -> String {
    let out = inst
        .command(args)
        .env("GITHUB_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fleet {args:?}: {text}");
    text
}

fn triaged(inst: &Inst) -> Vec<Value> {
    inst.events_of("e1", "pr.comment_triaged")
}

#[test]
fn an_ambiguous_comment_is_decided_by_the_triage_agent_and_recorded() {
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let inst = Inst::new(&ALL, "");
    fleet(
        &inst,
        &[
            "project",
            "add",
            "shop",
            "--repo",
            inst.repo.to_str().unwrap(),
            "--delivery",
            "pull_request",
            "--forge",
            "github",
            "--api-url",
            &forge.base_url(),
            "--forge-repo",
            "acme/shop",
        ],
    );
    let out = fleet(&inst, &["task", "add", "Add a file", "--project", "shop"]);
    assert!(out.contains("epic e1 awaiting_acceptance"), "{out}");

    // The agent reads "Interesting approach here." as approval: nothing starts.
    std::fs::write(inst.path("triage-verdict"), "approval").unwrap();
    forge.add_issue_comment("acme/shop", 1, "octocat", "Interesting approach here.");
    let out = fleet(&inst, &["task", "sync", "e1"]);
    assert!(out.contains("0 new review comment(s)"), "{out}");
    let t = triaged(&inst);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["verdict"], "approval");
    assert_eq!(t[0]["by"], "agent:reviewer");
    assert_eq!(t[0]["reason"], "scripted triage");
    assert_eq!(t[0]["rule"], "7: no rule decides: a triage agent reads it");
    assert!(
        inst.prompt("reviewer")
            .contains("> Interesting approach here.")
    );
    assert_eq!(inst.show("e1")["state"], "awaiting_acceptance");

    // A rule still decides what it can, without an agent: thanks are approval.
    forge.add_issue_comment("acme/shop", 1, "octocat", "Thanks!");
    fleet(&inst, &["task", "sync", "e1"]);
    let t = triaged(&inst);
    assert_eq!(
        (t[1]["verdict"].as_str(), t[1]["by"].as_str()),
        (Some("approval"), Some("rule"))
    );

    // Read as a change request, it starts the next cycle.
    std::fs::write(inst.path("triage-verdict"), "change_request").unwrap();
    forge.add_issue_comment(
        "acme/shop",
        1,
        "octocat",
        "Hmm, I am not convinced by the approach taken here overall, it seems off to me",
    );
    let out = fleet(&inst, &["task", "sync", "e1"]);
    assert!(out.contains("1 new review comment(s)"), "{out}");
    let t = triaged(&inst);
    assert_eq!(t[2]["verdict"], "change_request");
    assert_eq!(t[2]["starts_rework"], true);
    let show = inst.show("e1");
    assert_eq!(
        show["state"], "awaiting_acceptance",
        "driven through the fix cycle"
    );
    assert_eq!(show["cycle"], 2);
}
