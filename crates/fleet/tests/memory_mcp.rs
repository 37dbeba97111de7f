//! `memory_search` called over MCP by a real agent CLI (the pinned claude) that Fleet launched,
//! against the scripted model server: the model asks for the tool, Fleet's MCP server answers
//! from the instance's memory, and the answer reaches the model's next request.

mod support;
use support::epics::{Instance, scripted_server};

use serde_json::{Value, json};

#[test]
fn a_real_claude_searches_memory_over_mcp_and_the_model_reads_the_result() {
    let server = scripted_server();
    server.add_scenario(
        "developer",
        fleet_testkit::Scenario::new()
            .tool("memory_search", json!({"query": "how are prices stored"}))
            .write_file("done.txt", "done\n"),
    );
    let inst = Instance::new(&server);
    let added: Value = serde_json::from_str(&inst.ok(&[
        "memory",
        "add",
        "Shop prices are integers in cents, never floats.",
        "--json",
    ]))
    .unwrap();
    let id = added["id"].as_str().unwrap().to_string();
    std::fs::write(
        inst.repo.join("book.yaml"),
        "name: mcp\ntasks:\n  - id: work\n    role: developer\n    prompt: \"write done.txt\"\n    checks: [\"test -s done.txt\"]\n",
    )
    .unwrap();
    let out = inst.fleet(&["run", "book.yaml", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = server.requests("developer");
    let with_lesson: Vec<_> = requests
        .iter()
        .filter(|r| r.contains("integers in cents"))
        .collect();
    // The model learns the lesson from the tool's result, named by its id...
    assert!(
        !with_lesson.is_empty(),
        "the search result reached the model"
    );
    assert!(
        with_lesson[0].contains(&id),
        "the result names the lesson's id"
    );
    // ...and only from it: the lesson is not in the task's prompt (nothing there calls for it),
    // so every request that holds it carries a tool result of `memory_search`.
    for r in &with_lesson {
        assert!(
            r.contains("tool_result"),
            "the lesson came another way: {:?}",
            r.body
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| !r.contains("integers in cents") && r.contains("write done.txt")),
        "the model's first request, before the search, holds the task but not the lesson"
    );
}
