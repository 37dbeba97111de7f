//! The HTTP server: routing by scenario, decisions, recording.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::scenario::{Fault, Scenario, Usage};
use crate::tools::{self, Call, Plan, ToolSpec};
use crate::wire::{Ctx, ErrorReply, StatusSpec, now_unix};
use crate::{anthropic, gemini, openai};

/// Which API a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST …/v1/messages` (Anthropic).
    AnthropicMessages,
    /// `POST …/v1/messages/count_tokens` (Anthropic).
    AnthropicCountTokens,
    /// `POST …/responses` (OpenAI Responses).
    OpenAiResponses,
    /// `POST …/chat/completions` (OpenAI Chat Completions).
    OpenAiChat,
    /// `POST …/models/<m>:generateContent` (Gemini).
    GeminiGenerate,
    /// `POST …/models/<m>:streamGenerateContent` (Gemini).
    GeminiStream,
    /// `POST …/models/<m>:countTokens` (Gemini).
    GeminiCountTokens,
    /// `GET …/models` or `GET …/models/<id>`.
    Models,
    /// `HEAD` anything (claude's preflight of the base URL).
    Head,
    /// Anything else (answered 404).
    Unknown,
}

impl Api {
    fn classify(method: &Method, path: &str) -> Api {
        if method == Method::HEAD {
            return Api::Head;
        }
        let p = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if method == Method::POST {
            if p.ends_with("/messages/count_tokens") {
                return Api::AnthropicCountTokens;
            }
            if p.ends_with("/messages") {
                return Api::AnthropicMessages;
            }
            if p.ends_with("/responses") {
                return Api::OpenAiResponses;
            }
            if p.ends_with("/chat/completions") {
                return Api::OpenAiChat;
            }
            if p.ends_with(":streamGenerateContent") {
                return Api::GeminiStream;
            }
            if p.ends_with(":generateContent") {
                return Api::GeminiGenerate;
            }
            if p.ends_with(":countTokens") {
                return Api::GeminiCountTokens;
            }
        }
        if method == Method::GET && (p.ends_with("/models") || p.contains("/models/")) {
            return Api::Models;
        }
        Api::Unknown
    }

    /// Whether requests to this API are model calls (counted for faults, answered by the script).
    pub fn is_model_call(self) -> bool {
        matches!(
            self,
            Api::AnthropicMessages
                | Api::OpenAiResponses
                | Api::OpenAiChat
                | Api::GeminiGenerate
                | Api::GeminiStream
        )
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 0-based position among all requests of the scenario.
    pub seq: u64,
    pub scenario: String,
    pub method: String,
    /// The API path after `/s/<scenario>`, with the query string.
    pub path: String,
    /// Lower-cased names; secrets (`authorization`, `x-api-key`, `x-goog-api-key`, …) redacted.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or the raw body as a string when it is not JSON (`null` when empty).
    pub body: Value,
    pub api: Api,
    /// Step index (tool results in the conversation) for scripted model calls.
    pub step: Option<usize>,
    /// What was answered: `tool_call <name>`, `text "…"`, `json`, `fault 429`,
    /// `hang_before_headers`, `hang_mid_stream`, `head`, `models`, `not_found`, ….
    pub outcome: String,
    /// Tokens reported in the reply, if it was a model reply.
    pub usage: Option<Usage>,
    /// The scripted reply: `{"tool": name, "args": …}` / `{"tool": name, "input": …}` for a
    /// tool call, `{"text": …}` for text; `null` for faults and non-model requests.
    #[serde(default)]
    pub reply: Value,
    /// Milliseconds since the unix epoch when the request arrived.
    pub unix_ms: u64,
}

impl RecordedRequest {
    /// All string values of the body, joined with newlines.
    pub fn text(&self) -> String {
        let mut all = Vec::new();
        tools::strings(&self.body, &mut all);
        all.join("\n")
    }

    /// Whether any string in the body contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        let mut all = Vec::new();
        tools::strings(&self.body, &mut all);
        all.iter().any(|s| s.contains(needle))
    }

    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "proxy-authorization",
];

fn record_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_ascii_lowercase();
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

struct Slot {
    scenario: Scenario,
    model_calls: u64,
    log: Vec<RecordedRequest>,
}

struct Shared {
    slots: Mutex<HashMap<String, Slot>>,
    auto_scenarios: bool,
    record: Option<Mutex<std::fs::File>>,
}

/// What to send back.
enum Decision {
    Sse {
        events: Vec<String>,
        stall: bool,
        headers: Vec<(String, String)>,
    },
    Json {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
    Hang,
    Empty,
}

impl Shared {
    fn decide(
        &self,
        name: &str,
        method: &Method,
        api_path: &str,
        headers: &HeaderMap,
        body: Value,
    ) -> Decision {
        let api = Api::classify(method, api_path);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !slots.contains_key(name) {
            match self
                .auto_scenarios
                .then(|| Scenario::builtin(name))
                .flatten()
            {
                Some(s) => {
                    slots.insert(
                        name.to_string(),
                        Slot {
                            scenario: s,
                            model_calls: 0,
                            log: Vec::new(),
                        },
                    );
                }
                None => {
                    return Decision::Json {
                        status: 404,
                        headers: vec![],
                        body: json!({"error": {"message": format!("fleet-testkit: unknown scenario {name:?}"),
                                               "type": "not_found_error", "code": 404}}),
                    };
                }
            }
        }
        let slot = slots.get_mut(name).expect("inserted above");
        let seq = slot.log.len() as u64;
        let now = now_unix();
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .map(String::from)
            .or_else(|| gemini::model_from_path(api_path))
            .unwrap_or_else(|| slot.scenario.model.clone());
        let ctx = Ctx {
            model,
            usage: slot.scenario.usage_for(&body),
            seq,
            now,
        };
        let anthropic_client = headers.contains_key("anthropic-version")
            || headers.contains_key("x-api-key")
            || api_path.contains("/v1/messages");
        let mut step = None;
        let mut usage = None;
        let mut reply = Value::Null;
        let (outcome, decision) = match api {
            Api::Head => ("head".to_string(), Decision::Empty),
            Api::Models => {
                let m = slot.scenario.model.clone();
                let body = if api_path.contains("/v1beta/") {
                    gemini::models(&m)
                } else if anthropic_client {
                    anthropic::models(&m)
                } else {
                    openai::models(&m)
                };
                (
                    "models".to_string(),
                    Decision::Json {
                        status: 200,
                        headers: vec![],
                        body,
                    },
                )
            }
            Api::AnthropicCountTokens => (
                "count_tokens".to_string(),
                Decision::Json {
                    status: 200,
                    headers: vec![],
                    body: json!({"input_tokens": ctx.usage.prompt_total()}),
                },
            ),
            Api::GeminiCountTokens => (
                "count_tokens".to_string(),
                Decision::Json {
                    status: 200,
                    headers: vec![],
                    body: json!({"totalTokens": ctx.usage.prompt_total()}),
                },
            ),
            Api::Unknown => (
                "not_found".to_string(),
                Decision::Json {
                    status: 404,
                    headers: vec![],
                    body: json!({"error": {"message": format!("fleet-testkit: no API at {method} {api_path}"),
                                           "type": "not_found_error", "code": 404}}),
                },
            ),
            _ => {
                let index = slot.model_calls;
                slot.model_calls += 1;
                match slot.scenario.fault.clone().filter(|f| f.applies_to(index)) {
                    Some(Fault::Status {
                        code,
                        retry_after_secs,
                        reset_at,
                        error_type,
                        message,
                        ..
                    }) => {
                        let spec = StatusSpec {
                            code,
                            retry_after_secs,
                            reset_at,
                            error_type,
                            message,
                        };
                        let ErrorReply {
                            status,
                            headers,
                            body,
                        } = match api {
                            Api::AnthropicMessages => anthropic::error(&spec, &ctx),
                            Api::OpenAiResponses | Api::OpenAiChat => openai::error(&spec, &ctx),
                            _ => gemini::error(&spec, &ctx),
                        };
                        (
                            format!("fault {code}"),
                            Decision::Json {
                                status,
                                headers,
                                body,
                            },
                        )
                    }
                    Some(Fault::HangBeforeHeaders { .. }) => {
                        ("hang_before_headers".to_string(), Decision::Hang)
                    }
                    Some(Fault::HangMidStream { .. }) => {
                        let first = match api {
                            Api::AnthropicMessages => anthropic::first_event(&ctx),
                            Api::OpenAiResponses => openai::responses_first_event(&ctx),
                            Api::OpenAiChat => openai::chat_first_event(&ctx),
                            _ => gemini::first_event(&ctx),
                        };
                        (
                            "hang_mid_stream".to_string(),
                            Decision::Sse {
                                events: vec![first],
                                stall: true,
                                headers: vec![],
                            },
                        )
                    }
                    None if matches!(api, Api::GeminiGenerate | Api::GeminiStream)
                        && gemini::invalid_history(&body).is_some() =>
                    {
                        // As the real API does: refused before any model work, nothing billed.
                        let spec = StatusSpec {
                            code: 400,
                            retry_after_secs: None,
                            reset_at: None,
                            error_type: None,
                            message: gemini::invalid_history(&body).map(str::to_string),
                        };
                        let ErrorReply {
                            status,
                            headers,
                            body: reply_body,
                        } = gemini::error(&spec, &ctx);
                        (
                            "invalid_request 400".to_string(),
                            Decision::Json {
                                status,
                                headers,
                                body: reply_body,
                            },
                        )
                    }
                    None => {
                        let (plan, s) = script(api, &body, &slot.scenario);
                        step = s;
                        usage = Some(ctx.usage);
                        reply = match &plan {
                            Plan::Text(t) => json!({"text": t}),
                            Plan::Call(Call::Function { name, args }) => {
                                json!({"tool": name, "args": args})
                            }
                            Plan::Call(Call::Custom { name, input }) => {
                                json!({"tool": name, "input": input})
                            }
                        };
                        (plan_outcome(&plan, s), encode(api, &plan, &ctx, &body))
                    }
                }
            }
        };
        let record = RecordedRequest {
            seq,
            scenario: name.to_string(),
            method: method.to_string(),
            path: api_path.to_string(),
            headers: record_headers(headers),
            body,
            api,
            step,
            outcome,
            usage,
            reply,
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        if let Some(file) = &self.record
            && let Ok(line) = serde_json::to_string(&record)
        {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{line}");
        }
        slot.log.push(record);
        decision
    }
}

fn plan_outcome(plan: &Plan, step: Option<usize>) -> String {
    match step {
        Some(_) => plan.describe(),
        None => format!("side {}", plan.describe()),
    }
}

/// Decide the plan of a model call; the step is `None` for side calls (forced tool, JSON schema).
fn script(api: Api, body: &Value, scenario: &Scenario) -> (Plan, Option<usize>) {
    let (tools, results, forced, schema): (Vec<ToolSpec>, usize, Option<String>, Option<Value>) =
        match api {
            Api::AnthropicMessages => (
                anthropic::tools(body),
                anthropic::tool_results(body),
                anthropic::forced_tool(body),
                None,
            ),
            Api::OpenAiResponses => (
                openai::responses_tools(body),
                openai::responses_tool_results(body),
                None,
                openai::responses_schema(body),
            ),
            Api::OpenAiChat => (
                openai::chat_tools(body),
                openai::chat_tool_results(body),
                openai::chat_forced_tool(body),
                openai::chat_schema(body),
            ),
            _ => (
                gemini::tools(body),
                gemini::tool_results(body),
                gemini::forced_tool(body),
                gemini::schema(body),
            ),
        };
    if let Some(name) = forced
        && let Some(tool) = tools.iter().find(|t| t.name == name)
    {
        let args = tools::value_for_schema(&tool.schema, None);
        return (Plan::Call(Call::Function { name, args }), None);
    }
    if let Some(schema) = &schema
        && tools.is_empty()
    {
        return (
            Plan::Text(tools::value_for_schema(schema, None).to_string()),
            None,
        );
    }
    let cwd = tools::find_cwd(body);
    let plan = tools::plan(&scenario.action_at(results), &tools, cwd.as_deref());
    // A request that offers no tools is a side request (title, summary, …), not a step.
    let step = (!tools.is_empty()).then_some(results);
    let plan = match (plan, &schema) {
        (Plan::Text(_), Some(schema)) => {
            Plan::Text(tools::value_for_schema(schema, None).to_string())
        }
        (plan, _) => plan,
    };
    (plan, step)
}

fn is_stream(api: Api, body: &Value) -> bool {
    match api {
        Api::GeminiStream => true,
        Api::GeminiGenerate => false,
        _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn encode(api: Api, plan: &Plan, ctx: &Ctx, body: &Value) -> Decision {
    let stream = is_stream(api, body);
    if stream {
        let events = match api {
            Api::AnthropicMessages => anthropic::stream(plan, ctx),
            Api::OpenAiResponses => openai::responses_stream(plan, ctx),
            Api::OpenAiChat => openai::chat_stream(plan, ctx, openai::chat_include_usage(body)),
            _ => gemini::stream(plan, ctx),
        };
        let mut headers = Vec::new();
        if api == Api::AnthropicMessages {
            headers.push(("request-id".to_string(), format!("req_fleet_{}", ctx.seq)));
        }
        Decision::Sse {
            events,
            stall: false,
            headers,
        }
    } else {
        let body = match api {
            Api::AnthropicMessages => anthropic::message(plan, ctx),
            Api::OpenAiResponses => openai::responses_json(plan, ctx),
            Api::OpenAiChat => openai::chat_json(plan, ctx),
            _ => gemini::response(plan, ctx),
        };
        Decision::Json {
            status: 200,
            headers: vec![],
            body,
        }
    }
}

fn with_headers(
    mut builder: axum::http::response::Builder,
    headers: &[(String, String)],
) -> axum::http::response::Builder {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            builder = builder.header(k, v);
        }
    }
    builder
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), 256 << 20)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let path = uri.path();
    // Embeddings under any base URL (`/v1/embeddings`, `/s/NAME/v1/embeddings`): they are
    // computed, not scripted.
    if method == Method::POST && path.ends_with("/embeddings") {
        return match crate::embeddings::respond(&body) {
            Ok(v) => json_response(200, &[], &v),
            Err(m) => json_response(
                400,
                &[],
                &json!({"error": {"message": m, "type": "invalid_request_error"}}),
            ),
        };
    }
    let Some(rest) = path.strip_prefix("/s/") else {
        if method == Method::HEAD {
            return Response::new(Body::empty());
        }
        return json_response(
            404,
            &[],
            &json!({"error": {"message": "fleet-testkit: use a base URL of the form http://HOST:PORT/s/<scenario>",
                              "type": "not_found_error", "code": 404}}),
        );
    };
    let (name, api_path) = match rest.split_once('/') {
        Some((n, r)) => (n, format!("/{r}")),
        None => (rest, String::new()),
    };
    let api_path = match uri.query() {
        Some(q) => format!("{api_path}?{q}"),
        None => api_path,
    };
    let decision = shared.decide(name, &method, &api_path, &headers, body);
    match decision {
        Decision::Empty => {
            let b = Response::builder()
                .status(200)
                .header("content-type", "application/json");
            b.body(Body::empty()).expect("valid response")
        }
        Decision::Json {
            status,
            headers,
            body,
        } => json_response(status, &headers, &body),
        Decision::Hang => std::future::pending::<Response>().await,
        Decision::Sse {
            events,
            stall,
            headers,
        } => {
            let items = futures_util::stream::iter(
                events
                    .into_iter()
                    .map(|e| Ok::<Bytes, Infallible>(Bytes::from(e))),
            );
            let body = if stall {
                Body::from_stream(items.chain(futures_util::stream::pending()))
            } else {
                Body::from_stream(items)
            };
            let b = Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache");
            with_headers(b, &headers)
                .body(body)
                .expect("valid response")
        }
    }
}

fn json_response(status: u16, headers: &[(String, String)], body: &Value) -> Response {
    let b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let has_ct = headers.iter().any(|(k, _)| k == "content-type");
    let b = if has_ct {
        b
    } else {
        b.header("content-type", "application/json")
    };
    with_headers(b, headers)
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

/// Options for [`ModelServer`].
#[derive(Debug, Clone)]
pub struct ModelServerBuilder {
    addr: SocketAddr,
    auto_scenarios: bool,
    record_path: Option<PathBuf>,
}

impl Default for ModelServerBuilder {
    fn default() -> Self {
        ModelServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auto_scenarios: false,
            record_path: None,
        }
    }
}

impl ModelServerBuilder {
    /// Listen address (default `127.0.0.1:0`, an ephemeral port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Create unknown scenarios from their names (see [`Scenario::builtin`]).
    pub fn auto_scenarios(mut self, on: bool) -> Self {
        self.auto_scenarios = on;
        self
    }

    /// Also append every recorded request to this JSONL file.
    pub fn record_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.record_path = Some(path.into());
        self
    }

    /// Bind and serve on a background thread with its own tokio runtime.
    pub fn start(self) -> std::io::Result<ModelServer> {
        let listener = std::net::TcpListener::bind(self.addr)?;
        let addr = listener.local_addr()?;
        let record = match &self.record_path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            slots: Mutex::new(HashMap::new()),
            auto_scenarios: self.auto_scenarios,
            record,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let served = crate::background::serve_on("fleet-model-server", listener, app)?;
        Ok(ModelServer {
            addr,
            shared,
            _served: served,
        })
    }
}

/// A running scripted model server. Dropping it stops the server and drops open connections.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the server.
    _served: crate::background::Served,
}

impl std::fmt::Debug for ModelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ModelServer {
    /// Start on `127.0.0.1:<ephemeral>`. Works from sync and async code (the server has its
    /// own runtime thread). Panics if it cannot bind.
    pub fn start() -> ModelServer {
        ModelServer::builder()
            .start()
            .expect("fleet-testkit: start model server")
    }

    pub fn builder() -> ModelServerBuilder {
        ModelServerBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/s/<scenario>`: the base URL to give a CLI.
    pub fn base_url(&self, scenario: &str) -> String {
        format!("http://{}/s/{scenario}", self.addr)
    }

    /// Register (or replace) a scenario; its request log and counters start empty.
    pub fn add_scenario(&self, name: &str, scenario: Scenario) {
        let mut slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.insert(
            name.to_string(),
            Slot {
                scenario,
                model_calls: 0,
                log: Vec::new(),
            },
        );
    }

    /// Every request the scenario received so far, in arrival order.
    pub fn requests(&self, scenario: &str) -> Vec<RecordedRequest> {
        let slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get(scenario)
            .map(|s| s.log.clone())
            .unwrap_or_default()
    }

    /// Number of model calls (messages/responses/chat/generateContent) the scenario received.
    pub fn model_calls(&self, scenario: &str) -> u64 {
        let slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(scenario).map_or(0, |s| s.model_calls)
    }

    /// Sum of the usage reported in the scenario's replies: the ground truth of its spend.
    pub fn total_usage(&self, scenario: &str) -> Usage {
        let mut total = Usage::default();
        for r in self.requests(scenario) {
            if let Some(u) = &r.usage {
                total.add(u);
            }
        }
        total
    }

    /// Names of the registered scenarios.
    pub fn scenarios(&self) -> Vec<String> {
        let slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = slots.keys().cloned().collect();
        names.sort();
        names
    }
}

impl Scenario {
    /// Scenarios named by convention (used with [`ModelServerBuilder::auto_scenarios`]):
    /// `ok` ([`Scenario::hello`]), `hang`, `hangmid`, `<code>` (always that status, with
    /// `retry-after: 1`; a 429 also carries a reset one hour after the scenario's creation),
    /// `<code>x<N>` (only the first N model calls fail). A `-suffix` is ignored, so
    /// `429x2-claude` is a private copy of `429x2`.
    pub fn builtin(name: &str) -> Option<Scenario> {
        let base = name.split('-').next().unwrap_or(name);
        let hello = Scenario::hello();
        match base {
            "ok" => return Some(hello),
            "hang" => return Some(hello.fault(Fault::HangBeforeHeaders { times: None })),
            "hangmid" => return Some(hello.fault(Fault::HangMidStream { times: None })),
            _ => {}
        }
        let (code, times) = match base.split_once('x') {
            Some((c, n)) => (c.parse::<u16>().ok()?, Some(n.parse::<u32>().ok()?)),
            None => (base.parse::<u16>().ok()?, None),
        };
        if !(400..=599).contains(&code) {
            return None;
        }
        let mut fault = Fault::status(code);
        if code == 429 || code >= 500 {
            fault = fault.retry_after(1);
        }
        if code == 429 {
            fault = fault.reset_at(now_unix() + 3600);
        }
        if let Some(n) = times {
            fault = fault.times(n);
        }
        Some(hello.fault(fault))
    }
}
