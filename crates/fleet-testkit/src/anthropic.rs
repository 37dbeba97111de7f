//! Anthropic Messages API (`POST …/v1/messages`), as used by claude and opencode.

use serde_json::{Value, json};

use crate::tools::{Call, Plan, ToolSpec};
use crate::wire::{Ctx, ErrorReply, StatusSpec, reason, rfc3339, sse};

pub(crate) fn tools(body: &Value) -> Vec<ToolSpec> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(ToolSpec {
                name: t.get("name")?.as_str()?.to_string(),
                schema: t.get("input_schema").cloned().unwrap_or(Value::Null),
                custom: false,
            })
        })
        .collect()
}

/// The step index of a Messages request: the tool results in its conversation, plus the final
/// answers (assistant turns without a tool call) already in it — there are none in a fresh
/// conversation, but a resumed session (`claude --resume`) carries the previous run's answer,
/// and its new user turn goes on with the next step instead of replaying the last one.
pub(crate) fn tool_results(body: &Value) -> usize {
    let messages = body.get("messages").and_then(Value::as_array);
    let blocks = |m: &Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let is = |b: &Value, t: &str| b.get("type").and_then(Value::as_str) == Some(t);
    let results: usize = messages
        .into_iter()
        .flatten()
        .map(|m| blocks(m).iter().filter(|b| is(b, "tool_result")).count())
        .sum();
    let all: Vec<&Value> = messages.into_iter().flatten().collect();
    // An answer counts once a later user turn follows it (the request being answered now is
    // not one of its own earlier answers).
    let answers = all
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            m.get("role").and_then(Value::as_str) == Some("assistant")
                && !blocks(m).iter().any(|b| is(b, "tool_use"))
                && all[i + 1..]
                    .iter()
                    .any(|n| n.get("role").and_then(Value::as_str) == Some("user"))
        })
        .count();
    results + answers
}

/// `tool_choice: {type: "tool", name}` forces one tool.
pub(crate) fn forced_tool(body: &Value) -> Option<String> {
    let tc = body.get("tool_choice")?;
    (tc.get("type")?.as_str()? == "tool").then(|| tc.get("name")?.as_str().map(String::from))?
}

fn usage_start(ctx: &Ctx) -> Value {
    json!({
        "input_tokens": ctx.usage.input_tokens,
        "cache_creation_input_tokens": ctx.usage.cache_creation_input_tokens,
        "cache_read_input_tokens": ctx.usage.cache_read_input_tokens,
        "output_tokens": 0,
    })
}

fn usage_final(ctx: &Ctx) -> Value {
    json!({
        "input_tokens": ctx.usage.input_tokens,
        "cache_creation_input_tokens": ctx.usage.cache_creation_input_tokens,
        "cache_read_input_tokens": ctx.usage.cache_read_input_tokens,
        "output_tokens": ctx.usage.output_tokens,
    })
}

fn block(plan: &Plan, ctx: &Ctx) -> (Value, &'static str) {
    match plan {
        Plan::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Plan::Call(Call::Function { name, args }) => (
            json!({"type": "tool_use", "id": format!("toolu_fleet_{}", ctx.seq), "name": name, "input": args}),
            "tool_use",
        ),
        Plan::Call(Call::Custom { name, input }) => (
            json!({"type": "tool_use", "id": format!("toolu_fleet_{}", ctx.seq), "name": name, "input": {"input": input}}),
            "tool_use",
        ),
    }
}

fn message_start(ctx: &Ctx) -> String {
    sse(
        Some("message_start"),
        &json!({"type": "message_start", "message": {
            "id": format!("msg_fleet_{}", ctx.seq), "type": "message", "role": "assistant",
            "model": ctx.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage_start(ctx)}}),
    )
}

/// The first event of a stream (used by the mid-stream hang).
pub(crate) fn first_event(ctx: &Ctx) -> String {
    message_start(ctx)
}

pub(crate) fn stream(plan: &Plan, ctx: &Ctx) -> Vec<String> {
    let (block, stop) = block(plan, ctx);
    let mut out = vec![message_start(ctx)];
    match block.get("type").and_then(Value::as_str) {
        Some("text") => {
            out.push(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            out.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}}),
            ));
        }
        _ => {
            out.push(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            ));
            out.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            ));
        }
    }
    out.push(sse(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(sse(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": usage_final(ctx)}),
    ));
    out.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
    out
}

pub(crate) fn message(plan: &Plan, ctx: &Ctx) -> Value {
    let (block, stop) = block(plan, ctx);
    json!({"id": format!("msg_fleet_{}", ctx.seq), "type": "message", "role": "assistant",
           "model": ctx.model, "content": [block], "stop_reason": stop, "stop_sequence": null,
           "usage": usage_final(ctx)})
}

pub(crate) fn error(spec: &StatusSpec, ctx: &Ctx) -> ErrorReply {
    let code = spec.code;
    let ty = spec.error_type.clone().unwrap_or_else(|| {
        match code {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
        .to_string()
    });
    let msg = spec.message.clone().unwrap_or_else(|| match code {
        401 => "invalid x-api-key".to_string(),
        429 => "This request would exceed your account's rate limit. Please try again later."
            .to_string(),
        529 => "Overloaded".to_string(),
        500 => "Internal server error".to_string(),
        _ => format!("{code} {}", reason(code)),
    });
    let mut headers = vec![
        ("request-id".to_string(), format!("req_fleet_{}", ctx.seq)),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some(s) = spec.retry_after_secs {
        headers.push(("retry-after".into(), s.to_string()));
    }
    if code == 429 {
        // The unified headers are what claude turns into `rate_limit_event` (it reads them only
        // when logged in with a claude.ai subscription, e.g. CLAUDE_CODE_OAUTH_TOKEN).
        headers.push((
            "anthropic-ratelimit-unified-status".into(),
            "rejected".into(),
        ));
        headers.push((
            "anthropic-ratelimit-unified-representative-claim".into(),
            "five_hour".into(),
        ));
        headers.push(("anthropic-ratelimit-requests-remaining".into(), "0".into()));
        if let Some(reset) = spec
            .reset_at
            .or_else(|| spec.retry_after_secs.map(|s| ctx.now + s))
        {
            headers.push((
                "anthropic-ratelimit-unified-reset".into(),
                reset.to_string(),
            ));
            headers.push((
                "anthropic-ratelimit-unified-5h-reset".into(),
                reset.to_string(),
            ));
            headers.push((
                "anthropic-ratelimit-unified-5h-utilization".into(),
                "1.0".into(),
            ));
            headers.push(("anthropic-ratelimit-requests-reset".into(), rfc3339(reset)));
        }
    }
    ErrorReply {
        status: code,
        headers,
        body: json!({"type": "error", "error": {"type": ty, "message": msg},
                     "request_id": format!("req_fleet_{}", ctx.seq)}),
    }
}

/// `GET …/v1/models`.
pub(crate) fn models(model: &str) -> Value {
    json!({"data": [{"type": "model", "id": model, "display_name": model,
                     "created_at": "2026-01-01T00:00:00Z"}],
           "has_more": false, "first_id": model, "last_id": model})
}
