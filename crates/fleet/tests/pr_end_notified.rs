//! A merged pull request ends its epic as done, a closed one as cancelled, and every
//! notification channel is told (`pr_merged`, `pr_closed`), under `fleet serve` with the GitHub
//! double and a webhook and a Slack receiver over real HTTP.

mod support;
use support::scripted::{ALL, Inst};
use support::server::wait_for;

use fleet_testkit::forge::ForgeDouble;
use fleet_testkit::webhook::WebhookDouble;
use std::io::BufRead;

const TOKEN: &str = "ghp_prend0123456789abcdef";

#[test]
fn a_merged_and_a_closed_pull_request_are_told_on_every_channel() {
    let forge = ForgeDouble::start(TOKEN);
    forge.add_repo("acme", "shop");
    let hooks = WebhookDouble::start();
    let inst = Inst::new(
        &ALL,
        &format!(
            "notifications:\n  - kind: webhook\n    url: {h}/generic\n  - kind: slack\n    \
             url_env: SLACK_HOOK\n",
            h = hooks.url()
        ),
    );
    let slack = format!("{}/slack/T0/B0/x", hooks.url());
    let fleet = |args: &[&str]| {
        let out = inst
            .command(args)
            .env("GITHUB_TOKEN", TOKEN)
            .env("SLACK_HOOK", &slack)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "fleet {args:?}: {text}");
        text
    };
    fleet(&[
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
    ]);
    let mut child = inst
        .command(&["serve", "--bind", "127.0.0.1:0", "--pr-poll", "1"])
        .env("GITHUB_TOKEN", TOKEN)
        .env("SLACK_HOOK", &slack)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let served = support::scripted::Serving(child, String::new());
    for (n, request) in ["Add a file", "Add another file"].iter().enumerate() {
        let out = fleet(&["task", "add", request, "--project", "shop"]);
        assert!(
            out.contains(&format!("epic e{} awaiting_acceptance", n + 1)),
            "{out}"
        );
    }
    assert_eq!(forge.pull_requests().len(), 2);
    // The notifier follows the log: both results were announced on both channels.
    wait_for(60, "4 awaiting-acceptance notifications", || {
        (hooks.received().len() >= 4).then_some(())
    });
    forge.merge_pull_request("acme/shop", 1);
    forge.close_pull_request("acme/shop", 2);
    let got = wait_for(60, "two more notifications on each of two channels", || {
        let got = hooks.received();
        (got.len() >= 8).then_some(got)
    });
    let text_of = |path_prefix: &str, event: &str| -> Vec<String> {
        got.iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .filter_map(|r| r.json.clone())
            .filter(|j| path_prefix.starts_with("/slack") || j["event"] == event)
            .map(|j| {
                let field = if path_prefix == "/generic" {
                    "message"
                } else {
                    "text"
                };
                j[field].as_str().unwrap_or_default().to_string()
            })
            .filter(|t| {
                t.contains(if event == "pr_merged" {
                    "was merged"
                } else {
                    "was closed without merging"
                })
            })
            .collect()
    };
    let merged = text_of("/generic", "pr_merged");
    assert_eq!(merged.len(), 1, "{got:?}");
    assert!(
        merged[0].contains("e1") && merged[0].contains("The epic is done"),
        "{}",
        merged[0]
    );
    let closed = text_of("/generic", "pr_closed");
    assert_eq!(closed.len(), 1, "{got:?}");
    assert!(
        closed[0].contains("e2") && closed[0].contains("cancelled"),
        "{}",
        closed[0]
    );
    assert_eq!(text_of("/slack", "pr_merged").len(), 1, "{got:?}");
    assert_eq!(text_of("/slack", "pr_closed").len(), 1, "{got:?}");
    assert_eq!(inst.show("e1")["state"], "done");
    assert_eq!(inst.show("e2")["state"], "cancelled");
    drop(served);
}
