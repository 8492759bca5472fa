//! The tools: AIMA's operations, each a call to the daemon's API. Destructive ones say
//! what they do and need `force` for a running service; a failure is a tool result with
//! `isError` and the daemon's one-line reason, as the CLI prints it.

use std::time::Duration;

use futures::StreamExt;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, tool, tool_router};
use serde::Serialize;
use serde_json::{Value, json};

use super::AimaServer;
use super::args::{
    Args, Body, ChatArgs, LogsArgs, ModelArgs, RecommendArgs, StartArgs, StopArgs, Target,
    api_schema, schema,
};
use crate::api::dto::{EventDto, ServiceDto};
use crate::cli::{CliError, path_segment as segment};

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

/// A tool's answer once its arguments parsed; their error otherwise.
async fn with<T, R, F>(args: Args<T>, run: impl FnOnce(T) -> F) -> CallToolResult
where
    R: Serialize,
    F: Future<Output = Result<R, CliError>>,
{
    match args.0 {
        Ok(args) => answer(run(args).await),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e)]),
    }
}

/// Structured content must be an object: lists come as `{"items": […]}` already, text
/// and other values are wrapped.
fn wrap(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        other => json!({ "value": other }),
    }
}

fn failed(message: String) -> CliError {
    CliError::new(CliError::FAILED, message)
}

#[tool_router(vis = "pub(super)")]
impl AimaServer {
    #[tool(
        description = "List the registered models, oldest first.",
        annotations(read_only_hint = true)
    )]
    async fn list_models(&self) -> CallToolResult {
        answer(self.client.get::<Value>("/api/v1/models").await)
    }

    #[tool(
        description = "Show one model: what AIMA read from its files (size, parameters, quantization, context, attention shape, each with where it came from) and the GPU memory it needs on an engine for a context, with its parts (weights, KV cache, overhead) and assumptions.",
        input_schema = schema::<ModelArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn get_model(&self, args: Args<ModelArgs>) -> CallToolResult {
        with(args, |args| async move {
            let path =
                crate::cli::estimate_path(&args.id, args.engine.as_deref(), args.context_length);
            self.client.get::<Value>(&path).await
        })
        .await
    }

    #[tool(
        description = "Register a model: source ollama, huggingface or modelscope with a repo, or local with a path on the daemon's host under a model root. Names are unique.",
        input_schema = api_schema("CreateModelRequest", false),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false
        )
    )]
    async fn create_model(&self, args: Args<Body>) -> CallToolResult {
        with(args, |body| async move {
            self.client.post::<_, Value>("/api/v1/models", &body).await
        })
        .await
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
        input_schema = schema::<Target>(),
        annotations(read_only_hint = true)
    )]
    async fn get_service(&self, args: Args<Target>) -> CallToolResult {
        with(args, |Target { id }| async move {
            self.client
                .get::<Value>(&format!("/api/v1/services/{}", segment(&id)))
                .await
        })
        .await
    }

    #[tool(
        description = "Create a service for a model on an engine (vllm, sglang, llamacpp, ollama); it holds its host port (picked by AIMA unless given) until deleted. It does not start it.",
        input_schema = api_schema("CreateServiceRequest", false),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false
        )
    )]
    async fn create_service(&self, args: Args<Body>) -> CallToolResult {
        with(args, |body| async move {
            self.client
                .post::<_, Value>("/api/v1/services", &body)
                .await
        })
        .await
    }

    #[tool(
        description = "Change a service's settings (environment, GPU memory share, restart policy, timeouts, gateway settings). What the engine reads at start applies at its next start; the answer says which.",
        input_schema = api_schema("UpdateServiceRequest", true),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true
        )
    )]
    async fn update_service(&self, args: Args<Body>) -> CallToolResult {
        with(args, |mut body| async move {
            let Some(Value::String(id)) = body.remove("id") else {
                return Err(failed(
                    "invalid arguments: `id` (the service's id, name or unique id prefix) is required".to_owned(),
                ));
            };
            self.client
                .patch::<_, Value>(&format!("/api/v1/services/{}", segment(&id)), &body)
                .await
        })
        .await
    }

    #[tool(
        description = "Start a service's engine. With wait (the default) the answer is the outcome: running, or an error with the reason (a port held by another process, the image missing, the engine out of GPU memory...); each phase is reported as progress when the call sends a progress token.",
        input_schema = schema::<StartArgs>(),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true
        )
    )]
    async fn start_service(
        &self,
        context: RequestContext<RoleServer>,
        args: Args<StartArgs>,
    ) -> CallToolResult {
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| (context.peer.clone(), token));
        with(args, |args| self.start(args, progress)).await
    }

    #[tool(
        description = "Stop a service's engine; its port stays held for the next start. Stopping a running or starting service ends its engine and the requests it answers, so it needs force: true.",
        input_schema = schema::<StopArgs>(),
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true
        )
    )]
    async fn stop_service(&self, args: Args<StopArgs>) -> CallToolResult {
        with(args, |args| self.stop(args)).await
    }

    #[tool(
        description = "Delete a service and free its port for good; its events stay in the global history. A running or starting service needs force: true (its engine is stopped first).",
        input_schema = schema::<StopArgs>(),
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false
        )
    )]
    async fn delete_service(&self, args: Args<StopArgs>) -> CallToolResult {
        with(args, |args| async move {
            let mut path = format!("/api/v1/services/{}", segment(&args.id));
            if args.force {
                path.push_str("?force=true");
            }
            self.client.delete::<Value>(&path).await
        })
        .await
    }

    #[tool(
        description = "The last lines of a service's engine output (kept after a stop or a failure).",
        input_schema = schema::<LogsArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn service_logs(&self, args: Args<LogsArgs>) -> CallToolResult {
        with(args, |args| async move {
            let tail = args.tail.unwrap_or(100).clamp(1, 1000);
            // The route that answers JSON without content negotiation.
            let path = format!(
                "/api/service/logs?service_id={}&tail={tail}&previous={}",
                segment(&args.id),
                args.previous
            );
            self.client.get::<Value>(&path).await
        })
        .await
    }

    #[tool(
        description = "A service's events, oldest first: start phases, status changes with reasons, restarts.",
        input_schema = schema::<Target>(),
        annotations(read_only_hint = true)
    )]
    async fn service_events(&self, args: Args<Target>) -> CallToolResult {
        with(args, |Target { id }| async move {
            let items = self.events(&id).await?;
            Ok(json!({ "items": items }))
        })
        .await
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
        input_schema = schema::<RecommendArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn recommend(&self, args: Args<RecommendArgs>) -> CallToolResult {
        with(args, |args| async move {
            let path = match args.model_id {
                Some(id) => format!("/api/v1/recommend?model_id={}", segment(&id)),
                None => "/api/v1/recommend".to_owned(),
            };
            self.client.get::<Value>(&path).await
        })
        .await
    }

    #[tool(
        description = "Send one chat message through AIMA's OpenAI-compatible gateway, as an application would, to check that a model answers. The gateway starts the model's service if none runs (which may take a while) and may stop an idle one to make room.",
        input_schema = schema::<ChatArgs>(),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn chat(&self, args: Args<ChatArgs>) -> CallToolResult {
        with(args, |args| self.chat_once(args)).await
    }
}

impl AimaServer {
    /// Starts a service and, with `wait`, follows its events until it runs or fails,
    /// forwarding each phase to the caller as progress.
    async fn start(
        &self,
        args: StartArgs,
        progress: Option<(Peer<RoleServer>, ProgressToken)>,
    ) -> Result<ServiceDto, CliError> {
        let id = segment(&args.id);
        // Subscribe before starting, so no phase is missed.
        let events = if args.wait {
            Some(
                self.client
                    .events(&format!("/api/v1/services/{id}/events?after=latest"))
                    .await?,
            )
        } else {
            None
        };
        let started: ServiceDto = self
            .client
            .post(&format!("/api/v1/services/{id}/start"), &json!({}))
            .await?;
        let Some(events) = events else {
            return Ok(started);
        };
        if started.status == "running" {
            return Ok(started);
        }
        let timeout = Duration::from_secs(args.timeout_secs.unwrap_or(600));
        let followed = tokio::time::timeout(timeout, async {
            let mut events = std::pin::pin!(events);
            let mut step = 0.0;
            while let Some(event) = events.next().await {
                let event = event?;
                if let Some((peer, token)) = &progress
                    && let Some(message) = progress_message(&event)
                {
                    step += 1.0;
                    let note =
                        ProgressNotificationParam::new(token.clone(), step).with_message(message);
                    // A client that stopped listening still gets the outcome.
                    let _ = peer.notify_progress(note).await;
                }
                if matches!(
                    event.status.as_deref(),
                    Some("running" | "failed" | "stopped" | "stopping" | "backoff")
                ) {
                    return Ok(());
                }
            }
            Err(failed(
                "the daemon closed the event stream before the start finished".to_owned(),
            ))
        })
        .await;
        let service: ServiceDto = self
            .client
            .get(&format!("/api/v1/services/{}", segment(&started.id)))
            .await?;
        match followed {
            Ok(Ok(())) if service.status == "running" => Ok(service),
            Ok(Ok(())) => Err(failed(format!(
                "service {} did not start, it is {}: {}",
                service.id,
                service.status,
                service
                    .status_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(failed(format!(
                "service {} is still {} after {} s; the start goes on: call get_service or service_events to follow it",
                service.id,
                service.status,
                timeout.as_secs()
            ))),
        }
    }

    async fn stop(&self, args: StopArgs) -> Result<ServiceDto, CliError> {
        let get = format!("/api/v1/services/{}", segment(&args.id));
        let service: ServiceDto = self.client.get(&get).await?;
        if !args.force && matches!(service.status.as_str(), "running" | "starting") {
            return Err(failed(format!(
                "service {} is {}; stopping it ends its engine and the requests it answers, so call stop_service again with force: true",
                service.id, service.status
            )));
        }
        let path = format!("/api/v1/services/{}/stop", segment(&service.id));
        self.client.post(&path, &json!({})).await
    }

    /// The events recorded for a service so far, oldest first.
    pub(super) async fn events(&self, id: &str) -> Result<Vec<EventDto>, CliError> {
        super::resources::recorded_events(&self.client, id).await
    }

    async fn chat_once(&self, args: ChatArgs) -> Result<Value, CliError> {
        let body = json!({
            "model": args.model,
            "messages": [{"role": "user", "content": args.message}],
            "max_tokens": args.max_tokens.unwrap_or(64),
        });
        let completion: Value = self.client.post("/v1/chat/completions", &body).await?;
        Ok(json!({
            "model": completion["model"],
            "reply": completion.pointer("/choices/0/message/content"),
            "finish_reason": completion.pointer("/choices/0/finish_reason"),
            "usage": completion["usage"],
        }))
    }
}

/// "phase: message" for a start phase, "status: reason" for a status change.
fn progress_message(event: &EventDto) -> Option<String> {
    let what = event.phase.as_deref().or(event.status.as_deref())?;
    Some(if event.message.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {}", event.message)
    })
}
