use super::*;

fn client(resume: Option<&str>) -> AcpClient {
    AcpClient::new(SessionConfig {
        cwd: "/w/repo".into(),
        prompt: "create hello.txt".into(),
        mcp: None,
        resume_session: resume.map(str::to_string),
        policy: Policy {
            roots: vec!["/w/repo".into()],
            deny_kinds: vec!["fetch".into()],
            protected: Vec::new(),
            allowed_paths: None,
            allowed_kinds: Vec::new(),
        },
        fs: true,
        mode: None,
    })
}

fn sent(step: &Step) -> Vec<Value> {
    step.send
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_session_runs_initialize_new_prompt_and_ends_on_the_prompt_response() {
    let mut c = client(None);
    let s = sent(&c.start());
    assert_eq!(s[0]["method"], "initialize");
    assert_eq!(s[0]["params"]["clientCapabilities"]["terminal"], false);
    let s = sent(&c.stdout_line(
        r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":false}}}"#,
    ));
    assert_eq!(s[0]["method"], "session/new");
    assert_eq!(s[0]["params"]["cwd"], "/w/repo");
    let step = c.stdout_line(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"S1"}}"#);
    assert_eq!(step.events, vec![AgentEvent::Session { id: "S1".into() }]);
    let s = sent(&step);
    assert_eq!(s[0]["method"], "session/prompt");
    assert_eq!(s[0]["params"]["prompt"][0]["text"], "create hello.txt");
    let chunk = |t: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"session/update","params":{{"sessionId":"S1","update":{{"sessionUpdate":"agent_message_chunk","content":{{"type":"text","text":"{t}"}}}}}}}}"#
        )
    };
    assert!(c.stdout_line(&chunk("Hel")).events.is_empty());
    assert!(c.stdout_line(&chunk("lo")).events.is_empty());
    let ev = c.stdout_line(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"S1","update":{"sessionUpdate":"tool_call","toolCallId":"t1","title":"WriteFile","kind":"edit","status":"pending","rawInput":{"path":"hello.txt"}}}}"#).events;
    assert_eq!(
        ev[0],
        AgentEvent::Message {
            text: "Hello".into()
        }
    );
    assert!(matches!(&ev[1], AgentEvent::ToolCall { name, .. } if name == "WriteFile"));
    let ev = c.stdout_line(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"S1","update":{"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"completed","content":[{"type":"content","content":{"type":"text","text":"wrote"}}]}}}"#).events;
    assert_eq!(
        ev,
        vec![AgentEvent::ToolResult {
            name: Some("WriteFile".into()),
            ok: true,
            output: "wrote".into()
        }]
    );
    assert!(!c.done());
    let ev = c
        .stdout_line(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":4,"cachedReadTokens":2}}}"#)
        .events;
    assert!(c.done());
    assert!(
        matches!(ev[0], AgentEvent::Usage(u) if u.input_tokens == 10 && u.cache_read_tokens == 2)
    );
    assert_eq!(
        c.finish(&ProcessEnd::default()).class,
        OutcomeClass::Succeeded
    );
}

#[test]
fn permission_outside_the_worktree_is_refused_with_an_event_and_inside_granted() {
    let mut c = client(None);
    let req = |id: u32, path: &str, kind: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"session/request_permission","params":{{"sessionId":"S","toolCall":{{"toolCallId":"t","title":"Write","kind":"{kind}","locations":[{{"path":"{path}"}}]}},"options":[{{"optionId":"yes","kind":"allow_once","name":"Allow"}},{{"optionId":"no","kind":"reject_once","name":"Reject"}}]}}}}"#
        )
    };
    let step = c.stdout_line(&req(7, "/w/repo/../secret.txt", "edit"));
    let s = sent(&step);
    assert_eq!(s[0]["id"], 7);
    assert_eq!(s[0]["result"]["outcome"]["optionId"], "no");
    assert!(matches!(&step.events[0], AgentEvent::ToolCall { name, .. } if name == "Write"));
    assert!(
        matches!(&step.events[1], AgentEvent::ToolResult { ok: false, output, .. } if output.contains("outside the task's worktree"))
    );
    let step = c.stdout_line(&req(8, "/w/repo/src/a.rs", "edit"));
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "yes");
    assert!(step.events.is_empty());
    let step = c.stdout_line(&req(9, "/w/repo/a", "fetch"));
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "no");
    let step = c.stdout_line(&req(10, "/w/repo/.git/hooks/pre-commit", "edit"));
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "no");
    assert!(
        matches!(&step.events[0], AgentEvent::ToolResult { ok: false, output, .. } if output.contains(".git"))
    );
    let step = c.stdout_line(&req(11, "/w/repo/.git/HEAD", "read"));
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "yes");
    let push = r#"{"jsonrpc":"2.0","id":13,"method":"session/request_permission","params":{"sessionId":"S","toolCall":{"toolCallId":"p","title":"git push origin HEAD","kind":"execute"},"options":[{"optionId":"yes","kind":"allow_once"},{"optionId":"no","kind":"reject_once"}]}}"#;
    let step = c.stdout_line(push);
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "no");
    let step = c.stdout_line(&req(12, "/w/repo/.gitignore", "edit"));
    assert_eq!(sent(&step)[0]["result"]["outcome"]["optionId"], "yes");
}

#[test]
fn load_is_used_only_when_offered_and_its_replay_is_not_this_attempts() {
    let mut c = client(Some("OLD"));
    c.start();
    let s = sent(&c.stdout_line(
        r#"{"jsonrpc":"2.0","id":1,"result":{"agentCapabilities":{"loadSession":true}}}"#,
    ));
    assert_eq!(s[0]["method"], "session/load");
    assert_eq!(s[0]["params"]["sessionId"], "OLD");
    let replay = c.stdout_line(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"OLD","update":{"sessionUpdate":"tool_call","toolCallId":"old","title":"old"}}}"#);
    assert!(replay.events.is_empty());
    let step = c.stdout_line(r#"{"jsonrpc":"2.0","id":2,"result":null}"#);
    assert!(c.loaded());
    assert_eq!(sent(&step)[0]["method"], "session/prompt");

    let mut c = client(Some("OLD"));
    c.start();
    let s = sent(&c.stdout_line(r#"{"jsonrpc":"2.0","id":1,"result":{"agentCapabilities":{}}}"#));
    assert_eq!(s[0]["method"], "session/new");
}

#[test]
fn acp_errors_are_classified() {
    let mut c = client(None);
    c.start();
    c.stdout_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    c.stdout_line(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"S"}}"#);
    c.stdout_line(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Internal error","data":{"details":"429 Too Many Requests: rate limit exceeded"}}}"#);
    assert!(c.done());
    assert_eq!(
        c.finish(&ProcessEnd::default()).class,
        OutcomeClass::RateLimited
    );

    let mut c = client(None);
    c.start();
    c.stdout_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    c.stdout_line(
        r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"Authentication required"}}"#,
    );
    assert_eq!(
        c.finish(&ProcessEnd::default()).class,
        OutcomeClass::AuthFailed
    );
}

#[test]
fn cancel_is_sent_once_and_only_in_a_session() {
    let mut c = client(None);
    assert_eq!(c.cancel(), None);
    c.start();
    c.stdout_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    c.stdout_line(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"S"}}"#);
    let line = c.cancel().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["method"], "session/cancel");
    assert_eq!(v["params"]["sessionId"], "S");
    assert_eq!(c.cancel(), None);
}

#[test]
fn a_session_starting_read_only_is_switched_to_an_editing_mode_before_the_prompt() {
    let mut c = client(None);
    c.start();
    c.stdout_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    let s = sent(&c.stdout_line(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"S","modes":{"currentModeId":"read-only","availableModes":[{"id":"read-only"},{"id":"auto"},{"id":"full-access"}]}}}"#));
    assert_eq!(s[0]["method"], "session/set_mode");
    assert_eq!(s[0]["params"]["modeId"], "auto");
    let s = sent(&c.stdout_line(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#));
    assert_eq!(s[0]["method"], "session/prompt");
}

fn policed() -> Policy {
    let mut p = Policy::for_worktree(std::path::Path::new("/w/repo"));
    let rule = |name: &str, pats: &[&str]| {
        fleet_core::policy::ProtectedPaths::new(
            name,
            &pats.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    };
    p.protected = vec![rule("keep-out", &["migrations/", ".env"])];
    p.allowed_paths = Some(rule("allowed_paths", &["src/", "docs/*.md", "migrations/"]));
    p.allowed_kinds = vec!["read".into(), "edit".into(), "search".into()];
    p
}

#[test]
fn permissions_follow_protected_paths_and_the_tasks_allow_lists() {
    let p = policed();
    let judge = |v: Value| p.judge(&v).map_err(|d| (d.rule, d.reason));
    let edit = |path: &str| json!({"kind": "edit", "locations": [{"path": path}]});
    assert_eq!(judge(edit("/w/repo/src/main.rs")), Ok(()));
    assert_eq!(judge(edit("docs/guide.md")), Ok(()));
    // Protected wins over allowed, whatever the spelling of the path.
    let (rule, reason) = judge(edit("/w/repo/src/../migrations/001.sql")).unwrap_err();
    assert_eq!(rule, "keep-out");
    assert!(reason.contains("migrations/001.sql") && reason.contains("migrations/"));
    assert_eq!(
        judge(json!({"kind": "edit", "rawInput": {"file_path": "/w/repo/app/.env"}}))
            .unwrap_err()
            .0,
        "keep-out"
    );
    // Outside the allow-list.
    let (rule, reason) = judge(edit("/w/repo/Cargo.toml")).unwrap_err();
    assert_eq!(rule, "allowed_paths");
    assert!(reason.contains("Cargo.toml"), "{reason}");
    // Reading is not changing: protected and unlisted paths may be read.
    assert_eq!(
        judge(json!({"kind": "read", "locations": [{"path": "/w/repo/.env"}]})),
        Ok(())
    );
    // A kind the task does not allow.
    assert_eq!(
        judge(json!({"kind": "execute", "rawInput": {"command": "ls"}}))
            .unwrap_err()
            .0,
        "allowed_tools"
    );
    // Fleet's fixed rules still come first.
    assert_eq!(judge(edit("/etc/passwd")).unwrap_err().0, "worktree");
}

#[test]
fn a_refused_permission_is_a_policy_event_and_the_agent_is_answered() {
    let mut c = AcpClient::new(SessionConfig {
        cwd: "/w/repo".into(),
        prompt: "p".into(),
        mcp: None,
        resume_session: None,
        policy: policed(),
        fs: true,
        mode: None,
    });
    c.start();
    let step = c.stdout_line(
        r#"{"jsonrpc":"2.0","id":7,"method":"session/request_permission","params":{"sessionId":"S","toolCall":{"toolCallId":"t1","title":"WriteFile","kind":"edit","locations":[{"path":"/w/repo/migrations/1.sql"}]},"options":[{"optionId":"ok","kind":"allow_once"},{"optionId":"no","kind":"reject_once"}]}}"#,
    );
    let answer: Value = serde_json::from_str(&step.send[0]).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["outcome"]["optionId"], "no");
    assert!(step.events.iter().any(|e| matches!(e,
        AgentEvent::Policy { kind, rule, detail }
            if kind == "denied" && rule == "keep-out" && detail.contains("migrations/1.sql"))));
}
