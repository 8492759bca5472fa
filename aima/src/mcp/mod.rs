//! AIMA as tools for an AI agent: a Model Context Protocol server on the official Rust
//! SDK (rmcp). `aima mcp` speaks stdio, as desktop and coding agents launch servers, and
//! is a client of the running daemon like the CLI. The tools' input schemas come from the
//! API's own request types (`api::dto`, which derive `JsonSchema` too), and a tool that
//! fails answers with `isError` and the daemon's one-line reason, never a protocol error.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::dto::{CreateModelRequest, CreateServiceRequest, ServiceDto};
use crate::cli::{CliError, Client};

/// The tools, over one daemon.
#[derive(Clone)]
pub struct AimaTools {
    client: Client,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for AimaTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AimaTools").finish_non_exhaustive()
    }
}

/// A model or service named by id, name or unique id prefix.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Target {
    /// The id (model-1a2b3c4d, svc-vllm-1a2b3c4d), the name, or a unique id prefix.
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// The service: id, name or unique id prefix.
    pub id: String,
    /// Wait until it runs or fails (at most `timeout_secs`), and answer with the outcome.
    #[serde(default = "yes")]
    pub wait: bool,
    /// Longest wait, in seconds (default 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopArgs {
    /// The service: id, name or unique id prefix.
    pub id: String,
    /// Required to stop (or delete) a service that is running or starting: it ends the
    /// engine and every request it is answering.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsArgs {
    /// The service: id, name or unique id prefix.
    pub id: String,
    /// The last N lines (default 100, at most 1000).
    #[serde(default)]
    pub tail: Option<usize>,
    /// The lines kept from the container before the current one (a crashed engine's).
    #[serde(default)]
    pub previous: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecommendArgs {
    /// Only this model (default: every registered model).
    #[serde(default)]
    pub model_id: Option<String>,
}

/// The JSON answer of a tool, or its failure as a tool result with `isError`.
fn answer<T: Serialize>(result: Result<T, CliError>) -> CallToolResult {
    match result {
        Ok(value) => match serde_json::to_value(&value) {
            Ok(value) => CallToolResult::structured(wrap(value)),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        },
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.message)]),
    }
}

/// Structured content must be an object: lists come as `{"items": […]}` already, text
/// and other values are wrapped.
fn wrap(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        other => serde_json::json!({ "value": other }),
    }
}

fn segment(id: &str) -> String {
    crate::cli::path_segment(id)
}

#[tool_router]
impl AimaTools {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List the registered models, oldest first.",
        annotations(read_only_hint = true)
    )]
    async fn list_models(&self) -> CallToolResult {
        answer(self.client.get::<Value>("/api/v1/models").await)
    }

    #[tool(description = "Show one model.", annotations(read_only_hint = true))]
    async fn get_model(&self, Parameters(Target { id }): Parameters<Target>) -> CallToolResult {
        answer(
            self.client
                .get::<Value>(&format!("/api/v1/models/{}", segment(&id)))
                .await,
        )
    }

    #[tool(
        description = "Register a model: source ollama, huggingface or modelscope with a repo, or local with a path on the daemon's host under a model root.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false
        )
    )]
    async fn create_model(
        &self,
        Parameters(request): Parameters<CreateModelRequest>,
    ) -> CallToolResult {
        answer(
            self.client
                .post::<_, Value>("/api/v1/models", &request)
                .await,
        )
    }

    #[tool(
        description = "List the services with their status, reason, port and restarts.",
        annotations(read_only_hint = true)
    )]
    async fn list_services(&self) -> CallToolResult {
        answer(self.client.get::<Value>("/api/v1/services").await)
    }

    #[tool(
        description = "Show one service: status and its reason, port, container, restart policy and health settings.",
        annotations(read_only_hint = true)
    )]
    async fn get_service(&self, Parameters(Target { id }): Parameters<Target>) -> CallToolResult {
        answer(
            self.client
                .get::<Value>(&format!("/api/v1/services/{}", segment(&id)))
                .await,
        )
    }

    #[tool(
        description = "Create a service for a model on an engine (vllm, sglang, llamacpp, ollama); it holds its host port until deleted. It does not start it.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false
        )
    )]
    async fn create_service(
        &self,
        Parameters(request): Parameters<CreateServiceRequest>,
    ) -> CallToolResult {
        answer(
            self.client
                .post::<_, Value>("/api/v1/services", &request)
                .await,
        )
    }

    #[tool(
        description = "Start a service's engine. With wait (the default) the answer is the outcome: running, or failed with the reason (a port held by another process, the image missing, the engine out of GPU memory...).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true
        )
    )]
    async fn start_service(&self, Parameters(args): Parameters<StartArgs>) -> CallToolResult {
        answer(self.start(args).await)
    }

    #[tool(
        description = "Stop a service's engine and free its port. Stopping a running or starting service ends its engine and the requests it answers, so it needs force: true.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true
        )
    )]
    async fn stop_service(&self, Parameters(args): Parameters<StopArgs>) -> CallToolResult {
        answer(self.stop(args).await)
    }

    #[tool(
        description = "Delete a service and free its port for good; its events stay in the global history. A running or starting service needs force: true (its engine is stopped first).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false
        )
    )]
    async fn delete_service(&self, Parameters(args): Parameters<StopArgs>) -> CallToolResult {
        let mut path = format!("/api/v1/services/{}", segment(&args.id));
        if args.force {
            path.push_str("?force=true");
        }
        answer(self.client.delete::<Value>(&path).await)
    }

    #[tool(
        description = "The last lines of a service's engine output (kept after a stop or a failure).",
        annotations(read_only_hint = true)
    )]
    async fn service_logs(&self, Parameters(args): Parameters<LogsArgs>) -> CallToolResult {
        let tail = args.tail.unwrap_or(100).min(1000);
        let path = format!(
            "/api/service/logs?service_id={}&tail={tail}&previous={}",
            segment(&args.id),
            args.previous
        );
        answer(self.client.get::<Value>(&path).await)
    }

    #[tool(
        description = "A service's events, oldest first: start phases, status changes with reasons, restarts.",
        annotations(read_only_hint = true)
    )]
    async fn service_events(
        &self,
        Parameters(Target { id }): Parameters<Target>,
    ) -> CallToolResult {
        answer(self.events(&id).await)
    }

    #[tool(
        description = "The host's GPUs (or why there are none), their memory, and what each service claims.",
        annotations(read_only_hint = true)
    )]
    async fn device_detect(&self) -> CallToolResult {
        answer(self.client.get::<Value>("/api/v1/devices").await)
    }

    #[tool(
        description = "Per model, whether it fits on the GPUs now, where, with which engine and memory share, or why not.",
        annotations(read_only_hint = true)
    )]
    async fn recommend(&self, Parameters(args): Parameters<RecommendArgs>) -> CallToolResult {
        let path = match args.model_id {
            Some(id) => format!("/api/v1/recommend?model_id={}", segment(&id)),
            None => "/api/v1/recommend".to_owned(),
        };
        answer(self.client.get::<Value>(&path).await)
    }
}

impl AimaTools {
    async fn start(&self, args: StartArgs) -> Result<ServiceDto, CliError> {
        let path = format!("/api/v1/services/{}/start", segment(&args.id));
        let started: ServiceDto = self.client.post(&path, &serde_json::json!({})).await?;
        if !args.wait {
            return Ok(started);
        }
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs(args.timeout_secs.unwrap_or(600));
        let get = format!("/api/v1/services/{}", segment(&started.id));
        loop {
            let service: ServiceDto = self.client.get(&get).await?;
            match service.status.as_str() {
                "running" => return Ok(service),
                "failed" => {
                    return Err(CliError::new(
                        CliError::FAILED,
                        format!(
                            "service {} failed to start: {}",
                            service.id,
                            service
                                .status_reason
                                .as_deref()
                                .unwrap_or("no reason given")
                        ),
                    ));
                }
                _ if std::time::Instant::now() >= deadline => {
                    return Err(CliError::new(
                        CliError::FAILED,
                        format!(
                            "service {} is still {} after the wait; it goes on, check it again",
                            service.id, service.status
                        ),
                    ));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    async fn stop(&self, args: StopArgs) -> Result<ServiceDto, CliError> {
        let get = format!("/api/v1/services/{}", segment(&args.id));
        let service: ServiceDto = self.client.get(&get).await?;
        if !args.force && matches!(service.status.as_str(), "running" | "starting") {
            return Err(CliError::new(
                CliError::FAILED,
                format!(
                    "service {} is {}; stopping it ends its engine and the requests it answers, so call stop_service again with force: true",
                    service.id, service.status
                ),
            ));
        }
        let path = format!("/api/v1/services/{}/stop", segment(&service.id));
        self.client.post(&path, &serde_json::json!({})).await
    }

    async fn events(&self, id: &str) -> Result<Value, CliError> {
        let path = format!("/api/v1/services/{}/events?follow=false", segment(id));
        let mut stream = std::pin::pin!(self.client.events(&path).await?);
        let mut items = Vec::new();
        while let Some(event) = futures::StreamExt::next(&mut stream).await {
            items.push(event?);
        }
        Ok(serde_json::json!({ "items": items }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AimaTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("aima", crate::VERSION).with_title("AIMA"))
            .with_instructions(
            "AIMA runs LLM inference engines (vLLM, SGLang, llama.cpp, Ollama) as containers on this GPU host. \
             Register a model, create a service for it on an engine, start it and read why it failed if it did \
             (get_service, service_logs, service_events). Destructive tools need force: true for a running service.",
        )
    }
}

/// The Streamable HTTP transport the daemon serves at `/mcp`. Host, Origin and the token
/// are checked by the daemon's access guard before a request reaches it, as for the API,
/// so rmcp's own loopback-only Host list is left empty here.
pub fn http_service(
    client: Client,
    shutdown: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    AimaTools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let mut config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default();
    config.allowed_hosts.clear();
    config.cancellation_token = shutdown;
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(AimaTools::new(client.clone())),
        std::sync::Arc::default(),
        config,
    )
}

/// `aima mcp`: serves the tools on stdin/stdout until the client goes away.
pub async fn serve_stdio(client: Client) -> Result<(), CliError> {
    let running = AimaTools::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| {
            CliError::new(
                CliError::FAILED,
                format!("MCP session failed to start: {e}"),
            )
        })?;
    running
        .waiting()
        .await
        .map_err(|e| CliError::new(CliError::FAILED, format!("MCP session ended: {e}")))?;
    Ok(())
}
