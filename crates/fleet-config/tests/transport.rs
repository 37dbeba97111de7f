//! `transport:` and `cli: acp` in fleet.yaml: decoded into typed profiles, bad values located.

use fleet_config::{Transport, parse_instance};
use std::path::Path;

#[test]
fn transport_acp_and_cli_acp_decode() {
    let text = "agents:\n  g:\n    cli: gemini\n    transport: acp\n  n:\n    cli: qwen\n    transport: native\n  goose:\n    cli: acp\n    command: goose acp\n    args: [--with-builtin, developer]\n  plain:\n    cli: claude\n";
    let cfg = parse_instance(Path::new("fleet.yaml"), text).unwrap();
    assert_eq!(cfg.profile("g").unwrap().transport, Transport::Acp);
    assert_eq!(cfg.profile("n").unwrap().transport, Transport::Native);
    assert_eq!(cfg.profile("plain").unwrap().transport, Transport::Native);
    let goose = cfg.profile("goose").unwrap();
    assert_eq!(goose.transport, Transport::Acp);
    assert_eq!(goose.command.as_deref(), Some("goose acp"));
    assert_eq!(goose.args, ["--with-builtin", "developer"]);
}

#[test]
fn bad_transports_are_located_errors() {
    let text = "agents:\n  a:\n    cli: gemini\n    transport: acpp\n  b:\n    cli: aider\n    transport: acp\n  c:\n    cli: acp\n";
    let errs = parse_instance(Path::new("fleet.yaml"), text).unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.starts_with(
            "fleet.yaml:4:16: `transport`: expected `native` or `acp`, found \"acpp\""
        )),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.starts_with("fleet.yaml:5:")
                && e.contains("`transport: acp` is built in for")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.starts_with("fleet.yaml:8:") && e.contains("`cli: acp` but no `command:`")),
        "{all:?}"
    );
}
