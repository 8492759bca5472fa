//! AIMA as tools for an AI agent: a Model Context Protocol server on the official Rust
//! SDK (rmcp). `aima mcp` speaks stdio, as desktop and coding agents launch servers, and
//! the daemon serves the same server over Streamable HTTP at `/mcp`. Either way it is a
//! client of the daemon's API, like the CLI: tools (`tools`), resources with change
//! notifications (`resources`) and prompts that gather facts (`prompts`).

mod args;
mod prompts;
mod resources;
mod sessions;
mod tools;

pub use sessions::{BoundedSessions, DEFAULT_MAX_SESSIONS, HANDSHAKE_GRACE, IDLE_CLOSE};

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt, tool_handler};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cli::{CliError, Client};
use resources::{Changes, Resource};

/// One MCP session's server, over one daemon.
#[derive(Clone)]
pub struct AimaServer {
    client: Client,
    tool_router: ToolRouter<Self>,
    /// `resources/subscribe` subscriptions (clients before protocol 2026-07-28).
    subscribed: Arc<LegacySubscriptions>,
}

impl std::fmt::Debug for AimaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AimaServer").finish_non_exhaustive()
    }
}

/// The URIs an older client subscribed to, and the watcher that notifies it. The watcher
/// ends with the session (when the last clone of its server goes), when nothing is
/// subscribed any more, or when the client stops taking notifications.
#[derive(Default)]
struct LegacySubscriptions {
    uris: Arc<Mutex<Vec<String>>>,
    watcher: tokio::sync::Mutex<Option<Watcher>>,
}

struct Watcher {
    _stop: DropGuard,
    task: tokio::task::JoinHandle<()>,
}

impl AimaServer {
    pub fn new(client: Client) -> Self {
        // The tools and their schemas are the same for every session: built once, shared
        // (a session costs its own state only).
        static TOOLS: std::sync::OnceLock<ToolRouter<AimaServer>> = std::sync::OnceLock::new();
        Self {
            client,
            tool_router: TOOLS.get_or_init(Self::tool_router).clone(),
            subscribed: Arc::default(),
        }
    }

    /// Makes sure a watcher notifies `peer` of changes to the legacy-subscribed URIs:
    /// its event stream is connected before this returns, so no change after the
    /// subscription is missed, and one that ended (the daemon's stream broke) is
    /// started again.
    async fn watch_for_legacy(&self, peer: Peer<RoleServer>) -> Result<(), ErrorData> {
        let mut watcher = self.subscribed.watcher.lock().await;
        if watcher.as_ref().is_some_and(|w| !w.task.is_finished()) {
            return Ok(());
        }
        let mut changes = Changes::new(self.client.clone());
        let events = changes.follow().await.map_err(unavailable)?;
        let stop = CancellationToken::new();
        let uris = self.subscribed.uris.clone();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    () = until.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(event)) => event,
                        _ => return,
                    },
                };
                let subscribed = uris
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                for uri in changes.touched(&event, &subscribed).await.uris {
                    let update = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                    if peer.notify_resource_updated(update).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        *watcher = Some(Watcher {
            _stop: stop.drop_guard(),
            task,
        });
        Ok(())
    }

    fn legacy_uris(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.subscribed
            .uris
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AimaServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("aima", crate::VERSION).with_title("AIMA"))
            .with_instructions(
                "AIMA runs LLM inference engines (vLLM, SGLang, llama.cpp, Ollama) as containers on this GPU host. \
                 Register a model, create a service for it on an engine, start it, and read why it failed if it did \
                 (get_service, service_logs, service_events, or the diagnose_service prompt); check a running model \
                 with chat. Destructive tools need force: true for a running service. Services are resources \
                 (aima://services/NAME) you can subscribe to.",
            )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.client).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(resources::read(&self.client, &request.uri).await?.into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.resources_list_changed = requested.resources_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| Resource::parse(uri).is_some())
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let subscribed = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let list_changed = context.accepted().resources_list_changed == Some(true);
        let mut changes = Changes::new(self.client.clone());
        let events = changes.follow().await.map_err(unavailable)?;
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                () = context.cancelled() => return Ok(()),
                event = events.next() => match event {
                    Some(Ok(event)) => event,
                    Some(Err(e)) => return Err(unavailable(e)),
                    None => return Ok(()), // the daemon is shutting down
                },
            };
            let touched = changes.touched(&event, &subscribed).await;
            if list_changed && touched.list_changed {
                let _ = context.sink().notify_resource_list_changed().await;
            }
            for uri in touched.uris {
                if context.sink().notify_resource_updated(uri).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
        }
    }

    #[allow(deprecated)] // served for clients that speak a protocol before 2026-07-28
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if Resource::parse(&request.uri).is_none() {
            return Err(ErrorData::resource_not_found(
                format!("no resource {} to subscribe to", request.uri),
                None,
            ));
        }
        self.watch_for_legacy(context.peer).await?;
        let mut uris = self.legacy_uris();
        if !uris.contains(&request.uri) {
            uris.push(request.uri);
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let nothing_left = {
            let mut uris = self.legacy_uris();
            uris.retain(|uri| *uri != request.uri);
            uris.is_empty()
        };
        if nothing_left {
            // No reason left to hold a stream open to the daemon.
            self.subscribed.watcher.lock().await.take();
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(prompts::list())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Ok(
            prompts::get(self, &request.name, request.arguments.as_ref())
                .await?
                .into(),
        )
    }
}

fn unavailable(e: CliError) -> ErrorData {
    ErrorData::internal_error(e.message, None)
}

/// The Streamable HTTP transport the daemon serves at `/mcp`. Host, Origin and the token
/// are checked by the daemon's access guard before a request reaches it, as for the API,
/// so rmcp's own loopback-only Host list is left empty here.
pub fn http_service(
    client: Client,
    shutdown: CancellationToken,
    max_sessions: usize,
) -> axum::Router {
    let mut config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default();
    config.allowed_hosts.clear();
    config.cancellation_token = shutdown;
    let sessions = BoundedSessions::new(max_sessions);
    let service = rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(AimaServer::new(client.clone())),
        Arc::new(sessions.clone()),
        config,
    );
    axum::Router::new()
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            sessions::refuse_when_full,
        ))
}

/// `aima mcp`: serves AIMA on stdin/stdout until the client goes away.
pub async fn serve_stdio(client: Client) -> Result<(), CliError> {
    let running = AimaServer::new(client)
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
