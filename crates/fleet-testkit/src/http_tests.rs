//! Tests over real HTTP with a tiny hand-written HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Api, Fault, ModelServer, Scenario, Usage};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// `data:` payloads of an SSE body, parsed as JSON (`[DONE]` skipped).
    fn events(&self) -> Vec<Value> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    s
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = raw.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        raw = &rest[n + 2..];
    }
}

fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    Resp {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

fn request(
    server: &ModelServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Resp {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut s = send(server.addr(), method, path, headers, &body);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&String::from_utf8(raw).unwrap())
}

fn post(server: &ModelServer, path: &str, body: Value) -> Resp {
    request(
        server,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("x-api-key", "sk-secret"),
        ],
        &body,
    )
}

/// Bytes that arrive within `wait`.
fn read_for(server: &ModelServer, path: &str, body: &Value, wait: Duration) -> String {
    let mut s = send(
        server.addr(),
        "POST",
        path,
        &[("content-type", "application/json")],
        &body.to_string(),
    );
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn server_with(name: &str, scenario: Scenario) -> ModelServer {
    let server = ModelServer::start();
    server.add_scenario(name, scenario);
    server
}

// ---- request bodies shaped like the real CLIs' ------------------------------------------------

fn anthropic_body(tool_results: usize, stream: bool) -> Value {
    let mut messages =
        vec![json!({"role": "user", "content": [{"type": "text", "text": "make hello.txt"}]})];
    for i in 0..tool_results {
        messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{i}"), "name": "Write", "input": {}}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{i}"), "content": "ok"}]}));
    }
    json!({
        "model": "claude-test", "stream": stream, "max_tokens": 1000,
        "system": [{"type": "text", "text": "Environment:\n - Primary working directory: /work/repo\n - Is a git repository: true"}],
        "messages": messages,
        "tools": [
            {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
            {"name": "Write", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}, "required": ["file_path", "content"]}},
            {"name": "Edit", "input_schema": {"type": "object", "properties": {"file_path": {}, "old_string": {}, "new_string": {}, "replace_all": {"type": "boolean"}}, "required": ["file_path", "old_string", "new_string"]}}
        ]
    })
}

fn responses_body(tool_results: usize) -> Value {
    let mut input = vec![
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/work/repo</cwd>\n</environment_context>"}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "make hello.txt"}]}),
    ];
    for i in 0..tool_results {
        input.push(json!({"type": "function_call", "call_id": format!("c{i}"), "name": "exec_command", "arguments": "{}"}));
        input.push(json!({"type": "function_call_output", "call_id": format!("c{i}"), "output": "Process exited with code 0"}));
    }
    json!({
        "model": "mock-model", "stream": true, "input": input,
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}}, "required": ["cmd"]}}]
    })
}

fn chat_body(tool_results: usize, stream: bool) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "I'm currently working in the directory: /work/repo\nHere is the folder structure"}),
        json!({"role": "user", "content": "make hello.txt"}),
    ];
    for i in 0..tool_results {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("c{i}"), "type": "function", "function": {"name": "write_file", "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("c{i}"), "content": "ok"}));
    }
    json!({
        "model": "mock-model", "stream": stream, "stream_options": {"include_usage": true},
        "messages": messages,
        "tools": [
            {"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}, "required": ["file_path", "content"]}}},
            {"type": "function", "function": {"name": "run_shell_command", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}
        ]
    })
}

fn gemini_body(tool_results: usize) -> Value {
    let mut contents = vec![
        json!({"role": "user", "parts": [{"text": "- **Workspace Directories:**\n  - /work/repo\n"}, {"text": "make hello.txt"}]}),
    ];
    for _ in 0..tool_results {
        contents.push(json!({"role": "model", "parts": [{"functionCall": {"name": "write_file", "args": {}}}]}));
        contents.push(json!({"role": "user", "parts": [{"functionResponse": {"name": "write_file", "response": {"output": "ok"}}}]}));
    }
    json!({
        "contents": contents,
        "tools": [{"functionDeclarations": [
            {"name": "write_file", "parametersJsonSchema": {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}, "required": ["file_path", "content"]}},
            {"name": "replace", "parametersJsonSchema": {"type": "object", "properties": {"file_path": {}, "instruction": {"type": "string"}, "old_string": {}, "new_string": {}}, "required": ["file_path", "instruction", "old_string", "new_string"]}}
        ]}]
    })
}

const MSG: &str = "/v1/messages?beta=true";
const RESP: &str = "/v1/responses";
const CHAT: &str = "/v1/chat/completions";
const GEM: &str = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse";

// ---- Anthropic ---------------------------------------------------------------------------------

#[test]
fn anthropic_tool_call_then_final_reply() {
    let server = server_with(
        "s",
        Scenario::hello().usage(Usage::new(7, 3).with_cache(5, 2)),
    );
    let url = "/s/s".to_string();
    let r = post(&server, &format!("{url}{MSG}"), anthropic_body(0, true));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = r.events();
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[0]["message"]["usage"]["input_tokens"], 7);
    assert_eq!(ev[0]["message"]["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(ev[1]["content_block"]["name"], "Write");
    let input: Value =
        serde_json::from_str(ev[2]["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(
        input,
        json!({"file_path": "/work/repo/hello.txt", "content": "hello from fleet\n"})
    );
    assert_eq!(ev[4]["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[4]["usage"]["output_tokens"], 3);

    let r = post(&server, &format!("{url}{MSG}"), anthropic_body(1, true));
    let ev = r.events();
    assert_eq!(ev[1]["content_block"]["name"], "Edit");
    let input: Value =
        serde_json::from_str(ev[2]["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input["old_string"], "hello from fleet");

    let r = post(&server, &format!("{url}{MSG}"), anthropic_body(2, true));
    let ev = r.events();
    assert_eq!(
        ev[2]["delta"],
        json!({"type": "text_delta", "text": "DONE"})
    );
    assert_eq!(ev[4]["delta"]["stop_reason"], "end_turn");

    // Past the script: DONE again; non-streaming JSON when stream is false.
    let r = post(&server, &format!("{url}{MSG}"), anthropic_body(5, false));
    let m = r.json();
    assert_eq!(m["content"][0], json!({"type": "text", "text": "DONE"}));
    assert_eq!(m["stop_reason"], "end_turn");

    let reqs = server.requests("s");
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].api, Api::AnthropicMessages);
    assert_eq!(reqs[0].step, Some(0));
    assert_eq!(reqs[0].outcome, "tool_call Write");
    assert_eq!(reqs[0].header("x-api-key"), Some("[redacted]"));
    assert!(reqs[0].contains("make hello.txt"));
    assert_eq!(
        reqs[1].reply["args"]["new_string"],
        "hello from fleet, edited"
    );
    assert_eq!(
        server.total_usage("s"),
        Usage {
            input_tokens: 28,
            output_tokens: 12,
            cache_read_input_tokens: 20,
            cache_creation_input_tokens: 8
        }
    );
    assert_eq!(server.model_calls("s"), 4);
}

#[test]
fn anthropic_preflight_models_and_unknown_paths() {
    let server = server_with("s", Scenario::hello());
    let r = request(&server, "HEAD", "/s/s", &[], &Value::Null);
    assert_eq!(r.status, 200);
    let r = request(
        &server,
        "GET",
        "/s/s/v1/models",
        &[("anthropic-version", "2023-06-01")],
        &Value::Null,
    );
    assert_eq!(r.json()["data"][0]["type"], "model");
    let r = request(&server, "GET", "/s/s/v1/models", &[], &Value::Null);
    assert_eq!(r.json()["object"], "list");
    let r = request(&server, "GET", "/s/s/v1beta/models", &[], &Value::Null);
    assert!(
        r.json()["models"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("models/")
    );
    let r = post(
        &server,
        "/s/s/v1/messages/count_tokens",
        json!({"messages": []}),
    );
    assert_eq!(r.json()["input_tokens"], 100);
    assert_eq!(post(&server, "/s/s/v1/nothing", json!({})).status, 404);
    assert_eq!(
        post(&server, "/s/nope/v1/messages", anthropic_body(0, true)).status,
        404
    );
    assert_eq!(server.model_calls("s"), 0);
    assert_eq!(server.requests("s").len(), 6);
}

#[test]
fn anthropic_faults() {
    let server = ModelServer::start();
    server.add_scenario(
        "429",
        Scenario::hello().fault(
            Fault::status(429)
                .retry_after(2)
                .reset_at(2_000_000_000)
                .times(1),
        ),
    );
    let r = post(&server, &format!("/s/429{MSG}"), anthropic_body(0, true));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(
        r.header("anthropic-ratelimit-unified-status"),
        Some("rejected")
    );
    assert_eq!(
        r.header("anthropic-ratelimit-unified-reset"),
        Some("2000000000")
    );
    assert_eq!(
        r.header("anthropic-ratelimit-requests-reset"),
        Some("2033-05-18T03:33:20Z")
    );
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // Only the first call fails.
    assert_eq!(
        post(&server, &format!("/s/429{MSG}"), anthropic_body(0, true)).status,
        200
    );
    assert_eq!(server.requests("429")[0].outcome, "fault 429");
    assert_eq!(server.requests("429")[0].usage, None);

    for (code, ty) in [
        (401, "authentication_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let name = code.to_string();
        server.add_scenario(&name, Scenario::hello().fault(Fault::status(code)));
        for _ in 0..2 {
            let r = post(&server, &format!("/s/{name}{MSG}"), anthropic_body(0, true));
            assert_eq!(r.status, code);
            assert_eq!(r.json()["error"]["type"], ty);
            assert_eq!(r.header("retry-after"), None);
        }
    }
}

#[test]
fn hang_before_headers_and_mid_stream() {
    let server = ModelServer::start();
    server.add_scenario(
        "hang",
        Scenario::hello().fault(Fault::HangBeforeHeaders { times: Some(1) }),
    );
    server.add_scenario(
        "mid",
        Scenario::hello().fault(Fault::HangMidStream { times: None }),
    );
    let wait = Duration::from_millis(400);
    let got = read_for(
        &server,
        &format!("/s/hang{MSG}"),
        &anthropic_body(0, true),
        wait,
    );
    assert_eq!(got, "", "no byte before the hang ends");
    // The second request behaves (times = 1).
    let got = read_for(
        &server,
        &format!("/s/hang{MSG}"),
        &anthropic_body(0, true),
        wait,
    );
    assert!(got.contains("message_stop"), "{got}");
    assert_eq!(server.requests("hang")[0].outcome, "hang_before_headers");

    let cases = [
        (MSG, anthropic_body(0, true), "message_start"),
        (RESP, responses_body(0), "response.created"),
        (CHAT, chat_body(0, true), "chat.completion.chunk"),
        (GEM, gemini_body(0), "Working"),
    ];
    for (path, body, first) in cases {
        let got = read_for(&server, &format!("/s/mid{path}"), &body, wait);
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.contains(first), "{path}: {got}");
        assert_eq!(
            got.matches("data: ").count(),
            1,
            "{path}: only the first event: {got}"
        );
    }
    assert!(
        server
            .requests("mid")
            .iter()
            .all(|r| r.outcome == "hang_mid_stream")
    );
}

// ---- OpenAI Responses --------------------------------------------------------------------------

#[test]
fn responses_tool_call_then_final_reply() {
    let server = server_with(
        "s",
        Scenario::hello().usage(Usage::new(10, 4).with_cache(6, 0)),
    );
    let r = post(&server, &format!("/s/s{RESP}"), responses_body(0));
    assert_eq!(r.status, 200);
    let ev = r.events();
    assert_eq!(ev[0]["type"], "response.created");
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(done["item"]["type"], "function_call");
    assert_eq!(done["item"]["name"], "exec_command");
    let args: Value = serde_json::from_str(done["item"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["cmd"].as_str().unwrap().contains("hello from fleet"),
        "{args}"
    );
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["usage"]["input_tokens"], 16);
    assert_eq!(
        last["response"]["usage"]["input_tokens_details"]["cached_tokens"],
        6
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 4);

    let r = post(&server, &format!("/s/s{RESP}"), responses_body(2));
    let ev = r.events();
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(done["item"]["type"], "message");
    assert_eq!(done["item"]["content"][0]["text"], "DONE");
    assert!(
        ev.iter()
            .any(|e| e["type"] == "response.output_text.delta" && e["delta"] == "DONE")
    );
}

#[test]
fn responses_faults() {
    let server = ModelServer::start();
    server.add_scenario(
        "429",
        Scenario::hello().fault(
            Fault::status(429)
                .retry_after(1)
                .reset_at(crate::wire::now_unix() + 60),
        ),
    );
    let r = post(&server, &format!("/s/429{RESP}"), responses_body(0));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let reset = r.header("x-ratelimit-reset-requests").unwrap();
    assert!(
        reset.ends_with('s') && reset.trim_end_matches('s').parse::<u64>().unwrap() >= 58,
        "{reset}"
    );
    let e = &r.json()["error"];
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(e["message"].is_string() && e["type"].is_string());
    assert!(e["resets_in_seconds"].as_u64().unwrap() >= 58);

    server.add_scenario(
        "usage",
        Scenario::hello().fault(Fault::status(429).error_type("usage_limit_reached")),
    );
    assert_eq!(
        post(&server, &format!("/s/usage{RESP}"), responses_body(0)).json()["error"]["type"],
        "usage_limit_reached"
    );

    for (code, ty) in [
        (401, "invalid_request_error"),
        (500, "server_error"),
        (529, "server_error"),
    ] {
        let name = code.to_string();
        server.add_scenario(&name, Scenario::hello().fault(Fault::status(code)));
        let r = post(&server, &format!("/s/{name}{RESP}"), responses_body(0));
        assert_eq!(r.status, code);
        assert_eq!(r.json()["error"]["type"], ty);
    }
}

// ---- OpenAI Chat Completions -------------------------------------------------------------------

#[test]
fn chat_tool_call_then_final_reply() {
    let server = server_with("s", Scenario::hello());
    let r = post(&server, &format!("/s/s{CHAT}"), chat_body(0, true));
    assert!(r.body.ends_with("data: [DONE]\n\n"));
    let ev = r.events();
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        ev[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "write_file"
    );
    let args: Value = serde_json::from_str(
        ev[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args["file_path"], "/work/repo/hello.txt");
    assert_eq!(ev[3]["choices"][0]["finish_reason"], "tool_calls");
    // stream_options.include_usage: a final chunk with no choices and the usage.
    assert_eq!(ev[4]["choices"], json!([]));
    assert_eq!(ev[4]["usage"]["prompt_tokens"], 100);
    assert_eq!(ev[4]["usage"]["completion_tokens"], 20);

    let r = post(&server, &format!("/s/s{CHAT}"), chat_body(2, true));
    let ev = r.events();
    assert_eq!(ev[1]["choices"][0]["delta"]["content"], "DONE");
    assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");

    // Without include_usage there is no usage chunk.
    let mut body = chat_body(2, true);
    body.as_object_mut().unwrap().remove("stream_options");
    assert!(
        post(&server, &format!("/s/s{CHAT}"), body)
            .events()
            .iter()
            .all(|e| e.get("usage").is_none())
    );

    // Non-streaming JSON.
    let m = post(&server, &format!("/s/s{CHAT}"), chat_body(1, false)).json();
    assert_eq!(m["object"], "chat.completion");
    assert_eq!(m["choices"][0]["finish_reason"], "tool_calls");
    let call = &m["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(
        call["name"], "run_shell_command",
        "no edit tool offered: shell fallback"
    );
    assert!(
        call["arguments"]
            .as_str()
            .unwrap()
            .contains("hello from fleet, edited")
    );
    assert_eq!(m["usage"]["total_tokens"], 120);
}

#[test]
fn chat_faults() {
    let server = ModelServer::start();
    server.add_scenario("401", Scenario::hello().fault(Fault::status(401)));
    let r = post(&server, &format!("/s/401{CHAT}"), chat_body(0, true));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    server.add_scenario(
        "500",
        Scenario::hello().fault(Fault::status(500).retry_after(1).times(2)),
    );
    assert_eq!(
        post(&server, &format!("/s/500{CHAT}"), chat_body(0, true)).status,
        500
    );
    assert_eq!(
        post(&server, &format!("/s/500{CHAT}"), chat_body(0, true)).status,
        500
    );
    assert_eq!(
        post(&server, &format!("/s/500{CHAT}"), chat_body(0, true)).status,
        200
    );
}

// ---- Gemini ------------------------------------------------------------------------------------

#[test]
fn gemini_tool_call_then_final_reply_and_side_calls() {
    let server = server_with("s", Scenario::hello());
    let r = post(&server, &format!("/s/s{GEM}"), gemini_body(0));
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    let cand = &ev[0]["candidates"][0];
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(
        cand["content"]["parts"][0]["functionCall"]["name"],
        "write_file"
    );
    assert_eq!(
        cand["content"]["parts"][0]["functionCall"]["args"]["file_path"],
        "/work/repo/hello.txt"
    );
    assert_eq!(ev[0]["usageMetadata"]["promptTokenCount"], 100);
    assert_eq!(ev[0]["modelVersion"], "gemini-test");

    let ev = post(&server, &format!("/s/s{GEM}"), gemini_body(1)).events();
    let call = &ev[0]["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "replace");
    assert!(call["args"]["instruction"].is_string());

    let ev = post(&server, &format!("/s/s{GEM}"), gemini_body(2)).events();
    assert_eq!(
        ev[0]["candidates"][0]["content"]["parts"][0]["text"],
        "DONE"
    );

    // gemini-cli's router: generateContent with a JSON schema and no tools.
    let router = json!({"contents": [{"role": "user", "parts": [{"text": "classify"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object",
            "properties": {"complexity_reasoning": {"type": "string"}, "complexity_score": {"type": "integer"}},
            "required": ["complexity_reasoning", "complexity_score"]}}});
    let r = post(
        &server,
        "/s/s/v1beta/models/gemini-lite:generateContent",
        router,
    );
    let text = r.json()["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["complexity_reasoning"].is_string() && v["complexity_score"].is_number());
    // Next-speaker check.
    let next = json!({"contents": gemini_body(2)["contents"], "generationConfig": {"responseJsonSchema": {"type": "object",
        "properties": {"reasoning": {"type": "string"}, "next_speaker": {"type": "string", "enum": ["user", "model"]}}}}});
    let r = post(
        &server,
        "/s/s/v1beta/models/gemini-lite:generateContent",
        next,
    );
    let text = r.json()["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["next_speaker"],
        "user"
    );
    let reqs = server.requests("s");
    assert_eq!(reqs[3].step, None);
    assert_eq!(reqs[3].api, Api::GeminiGenerate);
}

#[test]
fn gemini_faults() {
    let server = ModelServer::start();
    server.add_scenario(
        "429",
        Scenario::hello().fault(Fault::status(429).retry_after(3)),
    );
    let r = post(&server, &format!("/s/429{GEM}"), gemini_body(0));
    assert_eq!(r.status, 429);
    let e = &r.json()["error"];
    assert_eq!(e["code"], 429);
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Please retry in 3s")
    );
    let details = e["details"].as_array().unwrap();
    assert!(details.iter().any(|d| d["retryDelay"] == "3s"));
    for (code, status) in [
        (401, "UNAUTHENTICATED"),
        (500, "INTERNAL"),
        (529, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
    ] {
        let name = code.to_string();
        server.add_scenario(&name, Scenario::hello().fault(Fault::status(code)));
        let r = post(&server, &format!("/s/{name}{GEM}"), gemini_body(0));
        assert_eq!(r.status, code);
        assert_eq!(r.json()["error"]["status"], status);
    }
}

#[test]
fn builtin_scenarios_and_recording_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("req.jsonl");
    let server = ModelServer::builder()
        .auto_scenarios(true)
        .record_to(&log)
        .start()
        .unwrap();
    assert_eq!(
        post(&server, &format!("/s/ok-x{MSG}"), anthropic_body(0, true)).status,
        200
    );
    assert_eq!(
        post(
            &server,
            &format!("/s/503x1-a{MSG}"),
            anthropic_body(0, true)
        )
        .status,
        503
    );
    assert_eq!(
        post(
            &server,
            &format!("/s/503x1-a{MSG}"),
            anthropic_body(0, true)
        )
        .status,
        200
    );
    let r = post(&server, &format!("/s/429-b{MSG}"), anthropic_body(0, true));
    assert_eq!(r.status, 429);
    assert!(r.header("anthropic-ratelimit-unified-reset").is_some());
    assert_eq!(
        post(&server, &format!("/s/bogus{MSG}"), anthropic_body(0, true)).status,
        404
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<crate::RecordedRequest> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 4);
    assert!(!lines.contains("sk-secret"));
    assert_eq!(server.scenarios(), ["429-b", "503x1-a", "ok-x"]);
}

#[test]
fn count_prompt_reports_input_tokens_from_the_request_size() {
    let server = server_with("c", Scenario::new().text("DONE").count_prompt());
    let short = json!({"model": "m", "max_tokens": 10, "stream": false,
                       "messages": [{"role": "user", "content": "hi"}]});
    let long = json!({"model": "m", "max_tokens": 10, "stream": false,
                      "messages": [{"role": "user", "content": "hi ".repeat(400)}]});
    let tokens = |body: &Value| {
        let m = post(&server, &format!("/s/c{MSG}"), body.clone()).json();
        m["usage"]["input_tokens"].as_u64().unwrap()
    };
    let size = |body: &Value| serde_json::to_string(body).unwrap().len().div_ceil(4) as u64;
    assert_eq!(tokens(&short), size(&short));
    assert_eq!(tokens(&long), size(&long));
    assert!(
        tokens(&long) >= tokens(&short) + 299,
        "1,198 more characters"
    );
    // The other counts stay as scripted.
    let m = post(&server, &format!("/s/c{MSG}"), short).json();
    assert_eq!(m["usage"]["output_tokens"], 20);
}
