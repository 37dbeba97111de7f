//! Gemini API (`POST …/v1beta/models/<m>:streamGenerateContent?alt=sse`, `:generateContent`),
//! as used by gemini-cli.

use serde_json::{Value, json};

use crate::tools::{Call, Plan, ToolSpec};
use crate::wire::{Ctx, ErrorReply, StatusSpec, reason, sse};

pub(crate) fn tools(body: &Value) -> Vec<ToolSpec> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| {
            Some(ToolSpec {
                name: d.get("name")?.as_str()?.to_string(),
                schema: d
                    .get("parametersJsonSchema")
                    .or_else(|| d.get("parameters"))
                    .cloned()
                    .unwrap_or(Value::Null),
                custom: false,
            })
        })
        .collect()
}

pub(crate) fn tool_results(body: &Value) -> usize {
    body.get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
        .filter(|p| p.get("functionResponse").is_some())
        .count()
}

/// Why the real Gemini API would refuse this conversation, if it would: every model turn with
/// function calls must be followed by a user turn with exactly as many function responses.
pub(crate) fn invalid_history(body: &Value) -> Option<&'static str> {
    let contents: Vec<&Value> = body
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let count = |c: &Value, key: &str| {
        c.get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get(key).is_some())
            .count()
    };
    for (i, c) in contents.iter().enumerate() {
        let calls = count(c, "functionCall");
        if c.get("role").and_then(Value::as_str) != Some("model") || calls == 0 {
            continue;
        }
        // (A history that ends on the calls has nothing to pair yet.)
        if let Some(next) = contents.get(i + 1)
            && count(next, "functionResponse") != calls
        {
            return Some(
                "Please ensure that the number of function response parts is equal to the number \
                 of function call parts of the function call turn.",
            );
        }
    }
    None
}

/// `generationConfig.responseJsonSchema` / `responseSchema` (gemini-cli's router and
/// next-speaker check use these).
pub(crate) fn schema(body: &Value) -> Option<Value> {
    let gc = body.get("generationConfig")?;
    gc.get("responseJsonSchema")
        .or_else(|| gc.get("responseSchema"))
        .cloned()
        .or_else(|| {
            (gc.get("responseMimeType").and_then(Value::as_str) == Some("application/json"))
                .then(|| json!({"type": "object"}))
        })
}

/// `toolConfig.functionCallingConfig = {mode: ANY, allowedFunctionNames: [name, …]}`.
pub(crate) fn forced_tool(body: &Value) -> Option<String> {
    let fc = body.get("toolConfig")?.get("functionCallingConfig")?;
    if fc.get("mode")?.as_str()? != "ANY" {
        return None;
    }
    fc.get("allowedFunctionNames")?
        .as_array()?
        .first()?
        .as_str()
        .map(String::from)
}

/// The model named in the path (`…/models/<m>:streamGenerateContent`).
pub(crate) fn model_from_path(path: &str) -> Option<String> {
    let after = path.rsplit_once("/models/")?.1;
    let m = after.split(':').next()?;
    (!m.is_empty()).then(|| m.to_string())
}

fn usage(ctx: &Ctx) -> Value {
    let u = &ctx.usage;
    json!({
        "promptTokenCount": u.prompt_total(),
        "candidatesTokenCount": u.output_tokens,
        "totalTokenCount": u.prompt_total() + u.output_tokens,
        "cachedContentTokenCount": u.cache_read_input_tokens,
    })
}

fn part(plan: &Plan) -> Value {
    match plan {
        Plan::Text(t) => json!({"text": t}),
        Plan::Call(Call::Function { name, args }) => {
            json!({"functionCall": {"name": name, "args": args}})
        }
        Plan::Call(Call::Custom { name, input }) => {
            json!({"functionCall": {"name": name, "args": {"input": input}}})
        }
    }
}

/// A complete `GenerateContentResponse`.
pub(crate) fn response(plan: &Plan, ctx: &Ctx) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [part(plan)]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage(ctx),
        "modelVersion": ctx.model,
        "responseId": format!("fleet-{}", ctx.seq),
    })
}

/// A partial text chunk, sent before the stall of a mid-stream hang.
pub(crate) fn first_event(ctx: &Ctx) -> String {
    sse(
        None,
        &json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Working"}]},
                                "index": 0}],
                "modelVersion": ctx.model, "responseId": format!("fleet-{}", ctx.seq)}),
    )
}

pub(crate) fn stream(plan: &Plan, ctx: &Ctx) -> Vec<String> {
    vec![sse(None, &response(plan, ctx))]
}

pub(crate) fn error(spec: &StatusSpec, ctx: &Ctx) -> ErrorReply {
    let code = spec.code;
    let status = spec.error_type.clone().unwrap_or_else(|| {
        match code {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            500 => "INTERNAL",
            504 => "DEADLINE_EXCEEDED",
            _ => "UNAVAILABLE",
        }
        .to_string()
    });
    let delay = spec.reset_in(ctx.now);
    let msg = spec.message.clone().unwrap_or_else(|| match code {
        401 => "API key not valid. Please pass a valid API key.".to_string(),
        429 => match delay {
            Some(d) => format!(
                "You exceeded your current quota, please check your plan and billing details. Please retry in {d}s."
            ),
            None => "Resource has been exhausted (e.g. check quota).".to_string(),
        },
        503 | 529 => "The model is overloaded. Please try again later.".to_string(),
        _ => format!("{code} {}", reason(code)),
    });
    let mut details = Vec::new();
    if code == 429 {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]}));
    }
    if let Some(d) = delay {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": format!("{d}s")}));
    }
    if code == 401 {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com"}));
    }
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(s) = spec.retry_after_secs {
        headers.push(("retry-after".into(), s.to_string()));
    }
    ErrorReply {
        status: code,
        headers,
        body: json!({"error": {"code": code, "message": msg, "status": status, "details": details}}),
    }
}

/// `GET …/v1beta/models`.
pub(crate) fn models(model: &str) -> Value {
    json!({"models": [{"name": format!("models/{model}"), "displayName": model,
                       "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}]})
}
