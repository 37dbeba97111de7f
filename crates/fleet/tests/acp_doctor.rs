//! `fleet agents doctor` on ACP profiles: the real agents' `initialize` handshake and their
//! capabilities; an agent that does not speak ACP is a problem with a clear reason.

use serde_json::Value;
use std::process::Command;

#[test]
fn doctor_shakes_hands_with_real_acp_agents_and_lists_their_capabilities() {
    let bin = fleet_testkit::agent_bin_dir();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("instance");
    std::fs::create_dir_all(&home).unwrap();
    // Without a base URL the agents would reach for their vendors (no network here).
    let server = fleet_testkit::ModelServer::start();
    let url = server.base_url("ok");
    let yaml = format!(
        "agents:\n\
         \x20 gem: {{ cli: gemini, transport: acp, base_url: \"{url}\", env: {{ PATH: \"{path}\" }} }}\n\
         \x20 oc: {{ cli: opencode, transport: acp, base_url: \"{url}\", env: {{ PATH: \"{path}\" }} }}\n\
         \x20 cx: {{ cli: acp, command: \"{}/codex-acp\", env: {{ PATH: \"{path}\" }} }}\n\
         \x20 mute: {{ cli: acp, command: \"sleep 600\", env: {{ PATH: \"{path}\" }} }}\n",
        bin.display()
    );
    std::fs::write(home.join("fleet.yaml"), yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["agents", "doctor", "--json"])
        .current_dir(tmp.path())
        .env("FLEET_HOME", &home)
        .env("GEMINI_API_KEY", "gemini-test-0123456789")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
        .env("OPENAI_API_KEY", "sk-test-0123456789")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let entry = |name: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["profile"] == name)
            .unwrap_or_else(|| panic!("no {name}: {report}"))
            .clone()
    };
    for name in ["gem", "oc", "cx"] {
        let e = entry(name);
        assert_eq!(e["ok"], true, "{name}: {e}");
        assert_eq!(e["acp"]["protocol_version"], 1, "{name}: {e}");
    }
    // codex-acp offers session/load; the summary names it.
    assert_eq!(entry("cx")["acp"]["load_session"], true);
    assert!(
        entry("cx")["acp_summary"]
            .as_str()
            .unwrap()
            .contains("loadSession yes")
    );
    let mute = entry("mute");
    assert_eq!(mute["ok"], false);
    assert!(
        mute["problems"][0]
            .as_str()
            .unwrap()
            .contains("no answer to `initialize` within 60s"),
        "{mute}"
    );
    assert_eq!(out.status.code(), Some(1), "one profile has a problem");
}
