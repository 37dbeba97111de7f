//! OpenAI Responses API (`POST …/responses`, codex) and Chat Completions
//! (`POST …/chat/completions`, qwen).

use serde_json::{Value, json};

use crate::tools::{Call, Plan, ToolSpec};
use crate::wire::{Ctx, ErrorReply, StatusSpec, reason, sse};

// ---------------------------------------------------------------------------------------------
// Responses API

/// Tools of a `namespace` (codex groups each MCP server's tools in one) are named
/// `<namespace>::<tool>` here; a call to one is answered with its `namespace` field.
const NAMESPACE_SEP: &str = "::";

pub(crate) fn responses_tools(body: &Value) -> Vec<ToolSpec> {
    fn collect(tools: &[Value], ns: Option<&str>, out: &mut Vec<ToolSpec>) {
        for t in tools {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {
                    if let Some(name) = t.get("name").and_then(Value::as_str) {
                        out.push(ToolSpec {
                            name: match ns {
                                Some(ns) => format!("{ns}{NAMESPACE_SEP}{name}"),
                                None => name.to_string(),
                            },
                            schema: t.get("parameters").cloned().unwrap_or(Value::Null),
                            custom: false,
                        });
                    }
                }
                Some("custom") => {
                    if let Some(name) = t.get("name").and_then(Value::as_str) {
                        out.push(ToolSpec {
                            name: name.to_string(),
                            schema: Value::Null,
                            custom: true,
                        });
                    }
                }
                Some("namespace") => {
                    if let Some(inner) = t.get("tools").and_then(Value::as_array) {
                        collect(inner, t.get("name").and_then(Value::as_str), out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        collect(tools, None, &mut out);
    }
    out
}

/// Tool outputs in the input, plus earlier final answers (assistant messages followed by a user
/// message: only a resumed session has them — `codex exec resume`), as for the Messages API.
pub(crate) fn responses_tool_results(body: &Value) -> usize {
    let items: Vec<&Value> = body
        .get("input")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let role = |i: &Value| i.get("role").and_then(Value::as_str).map(str::to_string);
    let answers = items
        .iter()
        .enumerate()
        .filter(|(k, i)| {
            role(i).as_deref() == Some("assistant")
                && items[k + 1..]
                    .iter()
                    .any(|n| role(n).as_deref() == Some("user"))
        })
        .count();
    answers
        + items
            .iter()
            .filter(|i| {
                matches!(
                    i.get("type").and_then(Value::as_str),
                    Some(
                        "function_call_output"
                            | "custom_tool_call_output"
                            | "local_shell_call_output"
                    )
                )
            })
            .count()
}

/// `text.format = {type: json_schema, schema}`.
pub(crate) fn responses_schema(body: &Value) -> Option<Value> {
    let f = body.get("text")?.get("format")?;
    (f.get("type")?.as_str()? == "json_schema").then(|| f.get("schema").cloned())?
}

fn responses_usage(ctx: &Ctx) -> Value {
    let u = &ctx.usage;
    json!({
        "input_tokens": u.prompt_total(),
        "input_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_total() + u.output_tokens,
    })
}

fn response_obj(ctx: &Ctx, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
    json!({
        "id": format!("resp_fleet_{}", ctx.seq), "object": "response", "created_at": ctx.now,
        "status": status, "model": ctx.model, "output": output, "usage": usage,
        "parallel_tool_calls": true, "tool_choice": "auto", "error": null,
    })
}

fn responses_item(plan: &Plan, ctx: &Ctx) -> Value {
    let seq = ctx.seq;
    match plan {
        Plan::Text(t) => json!({
            "type": "message", "id": format!("msg_fleet_{seq}"), "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": t, "annotations": []}]}),
        Plan::Call(Call::Function { name, args }) => {
            let mut item = json!({
                "type": "function_call", "id": format!("fc_fleet_{seq}"),
                "call_id": format!("call_fleet_{seq}"), "name": name,
                "arguments": args.to_string(), "status": "completed"});
            if let Some((ns, tool)) = name.split_once(NAMESPACE_SEP) {
                item["namespace"] = json!(ns);
                item["name"] = json!(tool);
            }
            item
        }
        Plan::Call(Call::Custom { name, input }) => json!({
            "type": "custom_tool_call", "id": format!("ctc_fleet_{seq}"),
            "call_id": format!("call_fleet_{seq}"), "name": name, "input": input,
            "status": "completed"}),
    }
}

pub(crate) fn responses_first_event(ctx: &Ctx) -> String {
    sse(
        Some("response.created"),
        &json!({"type": "response.created", "sequence_number": 0,
                "response": response_obj(ctx, "in_progress", vec![], None)}),
    )
}

pub(crate) fn responses_stream(plan: &Plan, ctx: &Ctx) -> Vec<String> {
    let item = responses_item(plan, ctx);
    let item_id = item["id"].clone();
    let mut n = 0u64;
    let mut ev = |ty: &str, mut data: Value| {
        n += 1;
        data["type"] = json!(ty);
        data["sequence_number"] = json!(n);
        sse(Some(ty), &data)
    };
    let mut out = vec![responses_first_event(ctx)];
    out.push(ev(
        "response.in_progress",
        json!({"response": response_obj(ctx, "in_progress", vec![], None)}),
    ));
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    match plan {
        Plan::Text(t) => {
            added["content"] = json!([]);
            out.push(ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ));
            out.push(ev(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            out.push(ev(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": t}),
            ));
            out.push(ev(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": t}),
            ));
            out.push(ev(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": t, "annotations": []}}),
            ));
        }
        Plan::Call(Call::Function { .. }) => {
            let args = item["arguments"].clone();
            added["arguments"] = json!("");
            out.push(ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ));
            out.push(ev(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": args}),
            ));
            out.push(ev(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": args}),
            ));
        }
        Plan::Call(Call::Custom { .. }) => {
            let input = item["input"].clone();
            added["input"] = json!("");
            out.push(ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ));
            out.push(ev(
                "response.custom_tool_call_input.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": input}),
            ));
            out.push(ev(
                "response.custom_tool_call_input.done",
                json!({"item_id": item_id, "output_index": 0, "input": input}),
            ));
        }
    }
    out.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item.clone()}),
    ));
    out.push(ev(
        "response.completed",
        json!({"response": response_obj(ctx, "completed", vec![item], Some(responses_usage(ctx)))}),
    ));
    out
}

pub(crate) fn responses_json(plan: &Plan, ctx: &Ctx) -> Value {
    response_obj(
        ctx,
        "completed",
        vec![responses_item(plan, ctx)],
        Some(responses_usage(ctx)),
    )
}

// ---------------------------------------------------------------------------------------------
// Chat Completions

pub(crate) fn chat_tools(body: &Value) -> Vec<ToolSpec> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some(ToolSpec {
                name: f.get("name")?.as_str()?.to_string(),
                schema: f.get("parameters").cloned().unwrap_or(Value::Null),
                custom: false,
            })
        })
        .collect()
}

/// The step index of a Chat Completions request: the `tool` messages in its conversation, plus
/// the final answers already in it — assistant messages without tool calls that come after
/// tool work and before a later user message. A fresh conversation has none (CLIs such as qwen
/// open with an assistant acknowledging the environment, before any tool ran); a resumed
/// session (`qwen --resume`) carries the previous run's answer, and its new user turn goes on
/// with the next step instead of replaying the last one.
pub(crate) fn chat_tool_results(body: &Value) -> usize {
    let all: Vec<&Value> = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_string);
    let is_tool = |m: &Value| role(m).as_deref() == Some("tool");
    let results = all.iter().filter(|m| is_tool(m)).count();
    let answers = all
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            role(m).as_deref() == Some("assistant")
                && m.get("tool_calls")
                    .and_then(Value::as_array)
                    .is_none_or(|c| c.is_empty())
                && all[..*i].iter().any(|p| is_tool(p))
                && all[i + 1..]
                    .iter()
                    .any(|n| role(n).as_deref() == Some("user"))
        })
        .count();
    results + answers
}

/// `tool_choice: {type: function, function: {name}}` forces one tool.
pub(crate) fn chat_forced_tool(body: &Value) -> Option<String> {
    let tc = body.get("tool_choice")?;
    tc.get("function")?.get("name")?.as_str().map(String::from)
}

/// `response_format: {type: json_schema, json_schema: {schema}}` (or `json_object`).
pub(crate) fn chat_schema(body: &Value) -> Option<Value> {
    let rf = body.get("response_format")?;
    match rf.get("type")?.as_str()? {
        "json_schema" => rf.get("json_schema")?.get("schema").cloned(),
        "json_object" => Some(json!({"type": "object"})),
        _ => None,
    }
}

pub(crate) fn chat_include_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn chat_usage(ctx: &Ctx) -> Value {
    let u = &ctx.usage;
    json!({
        "prompt_tokens": u.prompt_total(),
        "completion_tokens": u.output_tokens,
        "total_tokens": u.prompt_total() + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
    })
}

fn chat_chunk(ctx: &Ctx, choices: Value, usage: Option<Value>) -> String {
    let mut v = json!({"id": format!("chatcmpl-fleet-{}", ctx.seq), "object": "chat.completion.chunk",
                       "created": ctx.now, "model": ctx.model, "choices": choices});
    if let Some(u) = usage {
        v["usage"] = u;
    }
    sse(None, &v)
}

pub(crate) fn chat_first_event(ctx: &Ctx) -> String {
    chat_chunk(
        ctx,
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    )
}

fn chat_tool_call(call: &Call, ctx: &Ctx) -> (String, String) {
    let _ = ctx;
    match call {
        Call::Function { name, args } => (name.clone(), args.to_string()),
        Call::Custom { name, input } => (name.clone(), json!({"input": input}).to_string()),
    }
}

pub(crate) fn chat_stream(plan: &Plan, ctx: &Ctx, include_usage: bool) -> Vec<String> {
    let mut out = vec![chat_first_event(ctx)];
    let finish = match plan {
        Plan::Text(t) => {
            out.push(chat_chunk(
                ctx,
                json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
                None,
            ));
            "stop"
        }
        Plan::Call(call) => {
            let (name, args) = chat_tool_call(call, ctx);
            out.push(chat_chunk(
                ctx,
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0,
                    "id": format!("call_fleet_{}", ctx.seq), "type": "function",
                    "function": {"name": name, "arguments": ""}}]}, "finish_reason": null}]),
                None,
            ));
            out.push(chat_chunk(
                ctx,
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0,
                    "function": {"arguments": args}}]}, "finish_reason": null}]),
                None,
            ));
            "tool_calls"
        }
    };
    out.push(chat_chunk(
        ctx,
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        None,
    ));
    if include_usage {
        out.push(chat_chunk(ctx, json!([]), Some(chat_usage(ctx))));
    }
    out.push("data: [DONE]\n\n".to_string());
    out
}

pub(crate) fn chat_json(plan: &Plan, ctx: &Ctx) -> Value {
    let (message, finish) = match plan {
        Plan::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Plan::Call(call) => {
            let (name, args) = chat_tool_call(call, ctx);
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": format!("call_fleet_{}", ctx.seq), "type": "function",
                    "function": {"name": name, "arguments": args}}]}),
                "tool_calls",
            )
        }
    };
    json!({"id": format!("chatcmpl-fleet-{}", ctx.seq), "object": "chat.completion",
           "created": ctx.now, "model": ctx.model,
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": chat_usage(ctx)})
}

// ---------------------------------------------------------------------------------------------
// Shared

pub(crate) fn error(spec: &StatusSpec, ctx: &Ctx) -> ErrorReply {
    let code = spec.code;
    let (ty, err_code, msg) = match code {
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-te***. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        403 => (
            "permission_error",
            None,
            "You are not allowed to sample from this model",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests. Please try again later.",
        ),
        400 => ("invalid_request_error", None, "Bad request"),
        _ => (
            "server_error",
            None,
            "The server had an error while processing your request.",
        ),
    };
    let ty = spec.error_type.clone().unwrap_or_else(|| ty.to_string());
    let msg = spec
        .message
        .clone()
        .unwrap_or_else(|| format!("{msg} ({code} {})", reason(code)));
    let mut error = json!({"message": msg, "type": ty, "param": null, "code": err_code});
    if let Some(reset) = spec.reset_at {
        // The shape codex's ChatGPT backend uses for `usage_limit_reached`.
        error["resets_at"] = json!(reset);
        error["resets_in_seconds"] = json!(reset.saturating_sub(ctx.now));
    }
    let mut headers = vec![
        ("x-request-id".to_string(), format!("req_fleet_{}", ctx.seq)),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some(s) = spec.retry_after_secs {
        headers.push(("retry-after".into(), s.to_string()));
    }
    if code == 429 {
        headers.push(("x-ratelimit-limit-requests".into(), "60".into()));
        headers.push(("x-ratelimit-remaining-requests".into(), "0".into()));
        if let Some(s) = spec.reset_in(ctx.now) {
            headers.push(("x-ratelimit-reset-requests".into(), format!("{s}s")));
        }
    }
    ErrorReply {
        status: code,
        headers,
        body: json!({"error": error}),
    }
}

/// `GET …/models`.
pub(crate) fn models(model: &str) -> Value {
    json!({"object": "list", "data": [{"id": model, "object": "model", "created": 1_767_225_600u64,
                                        "owned_by": "fleet-testkit"}]})
}

#[cfg(test)]
mod tests {
    use super::chat_tool_results;
    use serde_json::json;

    fn step(messages: serde_json::Value) -> usize {
        chat_tool_results(&json!({ "messages": messages }))
    }

    #[test]
    fn a_chat_step_counts_tool_results_and_earlier_answers_after_tool_work() {
        let opening = json!([
            {"role": "system", "content": "You are qwen"},
            {"role": "user", "content": "This is the environment"},
            {"role": "assistant", "content": "Got it. Thanks for the context!"},
            {"role": "user", "content": "make out.txt say good"},
        ]);
        // A fresh conversation: the acknowledgement before any tool work is not an answer.
        assert_eq!(step(opening.clone()), 0);
        let mut after_tool = opening.as_array().unwrap().clone();
        after_tool.extend([
            json!({"role": "assistant", "content": null,
                   "tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "run_shell_command", "arguments": "{}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "ok"}),
        ]);
        assert_eq!(step(json!(after_tool)), 1);
        // The answer that ended the first run, then the resumed session's new prompt.
        let mut resumed = after_tool.clone();
        resumed.push(json!({"role": "assistant", "content": "DONE"}));
        assert_eq!(step(json!(resumed)), 1, "no user turn after it yet");
        resumed.push(json!({"role": "user", "content": "the checks failed: fix it"}));
        assert_eq!(step(json!(resumed)), 2);
    }
}
