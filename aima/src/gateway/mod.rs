//! The model gateway: one OpenAI-compatible endpoint on the daemon's listener. A request
//! names a model or a service in its `model` field; the gateway finds the service,
//! starts it through the daemon's ordinary pipeline if it is not running (one start
//! however many requests wait), and streams the engine's answer back.
//!
//! It uses the daemon's public operations only; its own state (routing catalog, loads in
//! progress, traffic per service) lives here.

mod idle;
mod loading;
mod openai;
mod proxy;
mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::daemon::Daemon;
use crate::domain::{EventKind, Service, ServiceId, ServiceStatus};
use openai::{ModelEntry, ModelList, ModelState, OpenAiError};
use target::{CatalogCache, Unroutable};

/// Largest request body: prompts with long contexts are megabytes of JSON.
const BODY_LIMIT_BYTES: usize = 32 * 1024 * 1024;
/// How often a streaming request that waits for a cold engine hears from the gateway,
/// so clients and proxies in between do not time out.
const LOADING_KEEPALIVE: Duration = Duration::from_secs(3);

/// The gateway's shared state; cheap to clone into handlers.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: Daemon,
    http: reqwest::Client,
    catalog: CatalogCache,
    loads: loading::Loads,
    traffic: Mutex<HashMap<ServiceId, Arc<Traffic>>>,
}

/// Requests of one service: how many are in flight, and when the last one ended.
#[derive(Debug, Default)]
pub struct Traffic {
    in_flight: AtomicUsize,
    last_ended: Mutex<Option<Instant>>,
    /// Requests enter under a read lock; an unload holds the write lock from its last
    /// look at `in_flight` until the engine is stopped, so a request arriving at the
    /// deadline either counts before the look or waits and starts the engine afresh.
    gate: tokio::sync::RwLock<()>,
}

impl Traffic {
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn last_ended(&self) -> Option<Instant> {
        *self.last_ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a request in flight until dropped (when the client has the whole answer, or
/// hangs up).
struct InFlight(Arc<Traffic>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of `daemon`, with its idle-unload task (which ends with the daemon).
    pub fn new(daemon: Daemon) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        let gateway = Self {
            inner: Arc::new(Inner {
                daemon,
                http,
                catalog: CatalogCache::default(),
                loads: loading::Loads::default(),
                traffic: Mutex::default(),
            }),
        };
        tokio::spawn(idle::run(gateway.clone()));
        gateway
    }

    fn traffic(&self, id: &ServiceId) -> Arc<Traffic> {
        let mut traffic = self.inner.traffic.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(traffic.entry(id.clone()).or_default())
    }

    /// Counts a request in for `id`; waits while an unload of it is under way.
    async fn enter(&self, id: &ServiceId) -> InFlight {
        let traffic = self.traffic(id);
        let _open = traffic.gate.read().await;
        traffic.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(&traffic))
    }
}

/// The gateway's routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
/// `/v1/embeddings`. No request timeout: a cold start may take minutes, bounded by each
/// service's load timeout instead.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route(
            "/v1/chat/completions",
            post(|state, headers, body| forward(state, "/v1/chat/completions", headers, body)),
        )
        .route(
            "/v1/completions",
            post(|state, headers, body| forward(state, "/v1/completions", headers, body)),
        )
        .route(
            "/v1/embeddings",
            post(|state, headers, body| forward(state, "/v1/embeddings", headers, body)),
        )
        .method_not_allowed_fallback(|| async {
            OpenAiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "this route takes POST (GET for /v1/models)".to_owned(),
                kind: "invalid_request_error",
                code: None,
                retry_after: None,
            }
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(gateway)
}

async fn list_models(State(gateway): State<Gateway>) -> Result<Response, OpenAiError> {
    let catalog = gateway
        .inner
        .catalog
        .current(&gateway.inner.daemon)
        .await
        .map_err(|e| OpenAiError::unavailable(e.to_string()))?;
    let data = catalog
        .models
        .iter()
        .filter_map(|model| {
            let services: Vec<&Service> = catalog
                .services
                .iter()
                .filter(|s| s.model_id == model.id)
                .collect();
            let has = |status| services.iter().any(|s| s.status == status);
            let status = if has(ServiceStatus::Running) {
                "running"
            } else if has(ServiceStatus::Starting) {
                "starting"
            } else {
                "stopped"
            };
            (!services.is_empty()).then(|| ModelEntry {
                id: model.name.clone(),
                object: "model",
                created: model.created_at.timestamp(),
                owned_by: "aima",
                aima: ModelState {
                    status,
                    model_id: model.id.to_string(),
                    services: services.iter().map(|s| s.name.clone()).collect(),
                },
            })
        })
        .collect();
    Ok(axum::Json(ModelList {
        object: "list",
        data,
    })
    .into_response())
}

/// What the gateway reads of a request body; the rest goes to the engine untouched.
#[derive(serde::Deserialize)]
struct Envelope {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
}

async fn forward(
    State(gateway): State<Gateway>,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match route_and_forward(gateway, path, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route_and_forward(
    gateway: Gateway,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let arrived = Instant::now();
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid(format!("request body is not a JSON object: {e}")))?;
    let Some(serde_json::Value::String(name)) = envelope.model else {
        return Err(OpenAiError::invalid(
            "you must provide a model parameter: the name of a model or a service (see GET /v1/models)",
        ));
    };
    let streaming = envelope.stream == Some(serde_json::Value::Bool(true));
    let daemon = &gateway.inner.daemon;
    let catalog = gateway
        .inner
        .catalog
        .current(daemon)
        .await
        .map_err(|e| OpenAiError::unavailable(e.to_string()))?;
    let service = match catalog.route(&name) {
        Ok(service) => service.clone(),
        Err(Unroutable::Unknown) => {
            return Err(OpenAiError::model_not_found(format!(
                "the model '{}' does not exist; models and services here: {}",
                crate::domain::one_line(&name),
                listed(&catalog.names())
            )));
        }
        Err(Unroutable::NoService) => {
            return Err(OpenAiError::model_not_found(format!(
                "the model '{name}' has no service; create one with 'aima service create --model-id {name} --engine-type vllm'"
            )));
        }
    };
    let in_flight = gateway.enter(&service.id).await;
    // Entering may have waited for an unload: go by the service as it is now.
    let service = match gateway.inner.catalog.current(daemon).await {
        Ok(now) => now
            .services
            .iter()
            .find(|s| s.id == service.id)
            .cloned()
            .unwrap_or(service),
        Err(_) => service,
    };
    if service.status != ServiceStatus::Running {
        if streaming {
            return Ok(loading_stream(
                gateway.clone(),
                service,
                path,
                headers,
                body,
                in_flight,
            ));
        }
        let waited = Instant::now();
        gateway
            .inner
            .loads
            .ready(daemon, &service.id, service.serving.load_timeout)
            .await
            .map_err(OpenAiError::unavailable)?;
        let load = waited.elapsed();
        let sent = Instant::now();
        let upstream = send(&gateway, &service, path, &headers, body).await?;
        let overhead = arrived.elapsed().saturating_sub(load + sent.elapsed());
        return Ok(proxy::downstream(
            upstream,
            &service.name,
            overhead,
            in_flight,
        ));
    }
    let sent = Instant::now();
    let upstream = send(&gateway, &service, path, &headers, body).await?;
    let overhead = arrived.elapsed().saturating_sub(sent.elapsed());
    Ok(proxy::downstream(
        upstream,
        &service.name,
        overhead,
        in_flight,
    ))
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none yet; create a model and a service first".to_owned()
    } else {
        names.join(", ")
    }
}

/// The request, as is, to the service's engine.
async fn send(
    gateway: &Gateway,
    service: &Service,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, OpenAiError> {
    let url = gateway.inner.daemon.engine_url(service.port, path);
    gateway
        .inner
        .http
        .post(url)
        .headers(proxy::upstream_headers(headers))
        .body(body)
        .send()
        .await
        .map_err(|e| {
            OpenAiError::unavailable(format!(
                "the engine of service {} did not answer: {}; see 'aima service status {}'",
                service.name,
                proxy::innermost(&e),
                service.name
            ))
        })
}

/// A streaming request for a cold service: the event stream begins at once, with
/// `: loading <service> <phase>` comments while the engine loads, then carries the
/// engine's own events; a failed start becomes an error event.
fn loading_stream(
    gateway: Gateway,
    service: Service,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
    in_flight: InFlight,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let name = service.name.clone();
    tokio::spawn(async move {
        let comment = |phase: &str| {
            Ok(Bytes::from(format!(
                ": loading {} {phase}\n\n",
                service.name
            )))
        };
        let mut events = gateway.inner.daemon.events().subscribe();
        let mut phase = "waiting".to_owned();
        if tx.send(comment(&phase)).await.is_err() {
            return;
        }
        let ready = gateway.inner.loads.ready(
            &gateway.inner.daemon,
            &service.id,
            service.serving.load_timeout,
        );
        let mut ready = std::pin::pin!(ready);
        let mut tick = tokio::time::interval(LOADING_KEEPALIVE);
        tick.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut ready => break outcome,
                event = events.recv() => {
                    if let Ok(event) = event
                        && event.service_id == service.id
                        && let EventKind::Phase(p) = event.kind
                    {
                        phase = p.to_string();
                        if tx.send(comment(&phase)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tick.tick() => {
                    if tx.send(comment(&phase)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let error_event =
            |error: OpenAiError| Ok(Bytes::from(format!("data: {}\n\n", error.body())));
        if let Err(reason) = outcome {
            let _ = tx.send(error_event(OpenAiError::unavailable(reason))).await;
            return;
        }
        let upstream = match send(&gateway, &service, path, &headers, body).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let _ = tx.send(error_event(error)).await;
                return;
            }
        };
        if !upstream.status().is_success() {
            let status = upstream.status();
            let text = upstream.text().await.unwrap_or_default();
            let error = OpenAiError {
                status: StatusCode::BAD_GATEWAY,
                message: format!(
                    "the engine answered {status}: {}",
                    crate::domain::one_line(&text)
                ),
                kind: "server_error",
                code: Some("engine_error"),
                retry_after: None,
            };
            let _ = tx.send(error_event(error)).await;
            return;
        }
        let mut chunks = std::pin::pin!(proxy::pass_through(
            upstream.bytes_stream(),
            true,
            in_flight
        ));
        while let Some(chunk) = chunks.next().await {
            // A client that hung up ends this task, which drops the engine's connection.
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    proxy::add_aima_headers(headers, &name, Duration::ZERO, true);
    response
}
