//! Fleet's MCP server (the official Rust SDK, rmcp): the same tools on stdio (`fleet mcp`,
//! which Fleet puts in the MCP config of the agents it launches) and on `/mcp` (streamable
//! HTTP, bearer token with the `submit` scope).
//!
//! Agents use `report_progress` and `report_error` as their heartbeat: each call becomes an
//! event of the attempt it came from (`attempt.progress`, `attempt.reported_error`), so the
//! dashboard's "what is it doing now" and the timeline show it. On stdio the attempt is known
//! from the environment Fleet launched the agent with (`FLEET_RUN`, `FLEET_TASK`,
//! `FLEET_ATTEMPT`); over HTTP the caller names it. A person's client also lists blocked tasks
//! with their questions and answers or retries them. An agent's server (the attempt is known)
//! has no `create_task`, `answer_task` or `retry_task`: agents do not file work nor answer for
//! the person.

use crate::report;
use fleet_pipeline::Pipeline;
use fleet_store::{Batch, EpicQuery, NewEvent};
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Which attempt an agent's reports belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub run: String,
    pub task: String,
    pub n: u32,
}

impl Attempt {
    /// From the environment Fleet gives every agent it launches.
    pub fn from_env() -> Option<Attempt> {
        Some(Attempt {
            run: std::env::var("FLEET_RUN").ok().filter(|s| !s.is_empty())?,
            task: std::env::var("FLEET_TASK").ok().filter(|s| !s.is_empty())?,
            n: std::env::var("FLEET_ATTEMPT").ok()?.parse().ok()?,
        })
    }
}

#[derive(Clone)]
pub struct FleetMcp {
    pipeline: Arc<Pipeline>,
    attempt: Option<Attempt>,
    /// Called after events are committed (the server's wake-up); `None` on stdio.
    on_commit: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Called after a task is submitted, so a serving fleet starts it at once.
    on_submit: Option<Arc<dyn Fn() + Send + Sync>>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateTask {
    /// The registered project (see list_projects / `fleet project ls`).
    pub project: String,
    /// What a person wants, in plain words; Fleet plans it into atomic tasks.
    pub request: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskId {
    /// The task (epic) id, e.g. `e12`.
    pub id: String,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListTasks {
    /// Only these states, comma-separated (e.g. `implement,review`).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// At most this many (default 50, max 500).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// What you are doing now, or what went wrong, in one sentence.
    pub message: String,
    /// How far along, 0-100, if you know.
    #[serde(default)]
    pub percent: Option<f64>,
    /// The run, task and attempt reported on; Fleet fills these in for agents it launched.
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AnswerTask {
    /// The blocked task (epic), e.g. `e12`.
    pub id: String,
    /// The answer to its question, in plain words; it joins the request.
    pub answer: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Project {
    /// The project name.
    pub project: String,
}

fn ok(v: Value) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )]))
}

/// A failure the caller should read (MCP clients hide protocol errors' messages).
fn failed(msg: impl Into<String>) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(msg.into())]))
}

/// Runs blocking work (SQLite, git) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    fleet_store::pg::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

impl FleetMcp {
    pub fn new(pipeline: Arc<Pipeline>, attempt: Option<Attempt>) -> FleetMcp {
        let mut tool_router = Self::tool_router();
        if attempt.is_some() {
            // An agent Fleet launched reports on its attempt and reads; it does not file new
            // work (a prompt-injected agent must not spawn epics, each launching more agents).
            for person_only in ["create_task", "answer_task", "retry_task"] {
                tool_router.remove_route(person_only);
            }
        }
        FleetMcp {
            pipeline,
            attempt,
            on_commit: None,
            on_submit: None,
            tool_router,
        }
    }

    pub fn with_hooks(
        mut self,
        on_commit: Arc<dyn Fn(u64) + Send + Sync>,
        on_submit: Arc<dyn Fn() + Send + Sync>,
    ) -> FleetMcp {
        self.on_commit = Some(on_commit);
        self.on_submit = Some(on_submit);
        self
    }

    async fn record(&self, r: Report, kind: &str) -> Result<CallToolResult, ErrorData> {
        let message = r.message.trim().to_string();
        if message.is_empty() {
            return failed("`message` is empty: say what you are doing");
        }
        let attempt = match (&self.attempt, r.run, r.task) {
            (Some(a), _, _) => a.clone(),
            (None, Some(run), Some(task)) => Attempt {
                run,
                task,
                n: r.attempt.unwrap_or(1),
            },
            _ => {
                return failed(
                    "this server does not know your attempt: pass `run`, `task` and `attempt`",
                );
            }
        };
        let mut data = json!({"message": message, "via": "mcp"});
        if let Some(p) = r.percent {
            data["percent"] = json!(p.clamp(0.0, 100.0));
        }
        let store = self.pipeline.store.clone();
        let ev = NewEvent {
            at: fleet_core::clock::now_ms(),
            run_id: attempt.run.clone(),
            task: Some(attempt.task.clone()),
            attempt: Some(attempt.n),
            kind: kind.to_string(),
            data,
        };
        let res = blocking(move || {
            if store.run(&ev.run_id).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no run {:?}", ev.run_id));
            }
            store
                .commit(&Batch {
                    events: vec![ev],
                    ..Batch::default()
                })
                .map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(seqs) => {
                if let (Some(f), Some(seq)) = (&self.on_commit, seqs.last()) {
                    f(*seq);
                }
                ok(
                    json!({"recorded": kind, "run": attempt.run, "task": attempt.task,
                          "attempt": attempt.n}),
                )
            }
            Err(e) => failed(e),
        }
    }
}

impl FleetMcp {
    /// The answer to answer_task and retry_task: where the task goes on; a serving fleet
    /// drives it at once.
    fn unblocked(
        &self,
        res: Result<fleet_store::EpicRow, String>,
    ) -> Result<CallToolResult, ErrorData> {
        match res {
            Ok(epic) => {
                if let Some(f) = &self.on_submit {
                    f();
                }
                ok(json!({"id": epic.id, "state": epic.state}))
            }
            Err(e) => failed(e),
        }
    }
}

#[tool_router]
impl FleetMcp {
    #[tool(
        description = "Submit a task (an epic) to a project: Fleet researches, plans it into \
        atomic tasks with acceptance checks, implements, reviews and delivers it. Returns its id."
    )]
    async fn create_task(
        &self,
        Parameters(t): Parameters<CreateTask>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        match blocking(move || p.submit(&t.project, &t.request).map_err(|e| e.to_string())).await {
            Ok(epic) => {
                if let Some(f) = &self.on_submit {
                    f();
                }
                ok(
                    json!({"id": epic.id, "project": epic.project, "state": epic.state,
                          "branch": epic.branch}),
                )
            }
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "A task's status: state, cycle, stages, plan tasks with their states, \
        reviews and what its agents are doing now."
    )]
    async fn get_status(
        &self,
        Parameters(t): Parameters<TaskId>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let id = t.id.clone();
        match blocking(move || report::epic_detail(&p, &id).map_err(|e| e.to_string())).await {
            Ok(Some(mut v)) => {
                // The attempts and events lists are for the dashboard; an agent needs the gist.
                if let Some(o) = v.as_object_mut() {
                    o.remove("attempts");
                    o.remove("events");
                }
                ok(v)
            }
            Ok(None) => failed(format!("no task {:?}", t.id)),
            Err(e) => failed(e),
        }
    }

    #[tool(description = "List tasks (epics), newest first, optionally by state and project.")]
    async fn list_tasks(
        &self,
        Parameters(q): Parameters<ListTasks>,
    ) -> Result<CallToolResult, ErrorData> {
        let store = self.pipeline.store.clone();
        let query = EpicQuery {
            states: q
                .state
                .map(|s| {
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            project: q.project,
            text: None,
            limit: q.limit.unwrap_or(50).min(500),
            offset: 0,
        };
        match blocking(move || store.epic_page(&query).map_err(|e| e.to_string())).await {
            Ok(page) => ok(json!({"total": page.total, "tasks": page.epics})),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "List the blocked tasks, each with the one question it asks a person and \
        the stage it continues at once answered (answer_task) or fixed and retried (retry_task)."
    )]
    async fn list_blocked(&self) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let res = blocking(move || {
            let query = EpicQuery {
                states: vec!["blocked".into()],
                limit: 500,
                ..EpicQuery::default()
            };
            let page = p.store.epic_page(&query).map_err(|e| e.to_string())?;
            let tasks: Vec<Value> = page
                .epics
                .iter()
                .map(|brief| {
                    let blocked = p
                        .epic(&brief.id)
                        .ok()
                        .and_then(|(_, d)| d.machine)
                        .and_then(|m| m.blocked);
                    let e = brief;
                    json!({"id": e.id, "project": e.project, "request": e.request,
                           "question": blocked.as_ref().map(|b| b.question.clone()),
                           "at": blocked.map(|b| b.at.as_str())})
                })
                .collect();
            Ok(json!({"total": page.total, "tasks": tasks}))
        })
        .await;
        match res {
            Ok(v) => ok(v),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Answer a blocked task's question: the answer joins the request and the \
        task continues at the stage it stopped at."
    )]
    async fn answer_task(
        &self,
        Parameters(a): Parameters<AnswerTask>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let res = blocking(move || p.answer(&a.id, &a.answer).map_err(|e| e.to_string())).await;
        self.unblocked(res)
    }

    #[tool(
        description = "Retry a blocked task after fixing what it asked about (a token, a \
        profile, a remote): Fleet checks again and the task continues where it stopped."
    )]
    async fn retry_task(
        &self,
        Parameters(t): Parameters<TaskId>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let res = blocking(move || p.retry(&t.id).map_err(|e| e.to_string())).await;
        self.unblocked(res)
    }

    #[tool(
        description = "Report what you are doing now (your heartbeat). Call it when you start \
        a step: reading the code, writing a change, running the tests."
    )]
    async fn report_progress(
        &self,
        Parameters(r): Parameters<Report>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(r, "attempt.progress").await
    }

    #[tool(
        description = "Report a problem you cannot solve yourself (a missing dependency, an \
        impossible requirement, a broken environment)."
    )]
    async fn report_error(
        &self,
        Parameters(r): Parameters<Report>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(r, "attempt.reported_error").await
    }

    #[tool(
        description = "Read a project's context: what the researcher learned about the \
        repository, its checks (what green means) and its bible."
    )]
    async fn read_context(
        &self,
        Parameters(q): Parameters<Project>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let res = blocking(move || {
            let project = p.project(&q.project).map_err(|e| e.to_string())?;
            let context = std::fs::read_to_string(p.context_file(&q.project)).ok();
            Ok(
                json!({"project": project.name, "default_branch": project.default_branch,
                      "checks": project.checks, "bible": project.bible,
                      "context": context.unwrap_or_else(|| "(no research yet)".into())}),
            )
        })
        .await;
        match res {
            Ok(v) => ok(v),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Search Fleet's memory (BM25-ranked): lessons learned, skills, task \
        traces, decision logs, project context and past bug reports."
    )]
    async fn memory_search(
        &self,
        Parameters(q): Parameters<crate::memory_tools::MemorySearch>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        match blocking(move || crate::memory_tools::search(&p, q)).await {
            Ok(v) => ok(v),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Remember a lesson for later agents: one or two imperative sentences, \
        optionally for one project, some paths or words."
    )]
    async fn remember(
        &self,
        Parameters(r): Parameters<crate::memory_tools::Remember>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.pipeline.clone();
        let at = self
            .attempt
            .as_ref()
            .map(|a| (a.run.clone(), a.task.clone(), a.n));
        match blocking(move || crate::memory_tools::remember(&p, at, r)).await {
            Ok(v) => ok(v),
            Err(e) => failed(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FleetMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Fleet orchestrates coding agents. Use report_progress as your heartbeat and \
             report_error for problems you cannot solve; read_context for the project.",
        )
    }
}

/// `fleet mcp`: serves the tools on stdin/stdout until the client hangs up.
pub async fn serve_stdio(pipeline: Arc<Pipeline>) -> Result<(), String> {
    use rmcp::ServiceExt;
    let server = FleetMcp::new(pipeline, Attempt::from_env())
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    server.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `/mcp`: the tools over streamable HTTP.
pub fn http_service(
    fleet: crate::Fleet,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    FleetMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "[::1]".into()];
    if let Some(host) = fleet
        .public_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .filter(|h| !h.is_empty())
    {
        hosts.push(host.to_string());
    }
    let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
    StreamableHttpService::new(
        move || {
            let f1 = fleet.clone();
            let f2 = fleet.clone();
            Ok(FleetMcp::new(fleet.pipeline.clone(), None).with_hooks(
                Arc::new(move |seq| f1.published(seq)),
                Arc::new(move || f2.work.notify_one()),
            ))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
