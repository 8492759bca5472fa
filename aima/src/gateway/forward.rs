//! The gateway's handlers: the model list, and a request routed to its service's engine
//! (started first when cold), with its answer streamed back.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::metrics::Target;
use super::openai::{ModelEntry, ModelList, ModelState, OpenAiError};
use super::target::Unroutable;
use super::{Exchange, Gateway, proxy};
use crate::domain::{EventKind, Service, ServiceStatus};

/// How often a streaming request that waits for a cold engine hears from the gateway,
/// so clients and proxies in between do not time out.
const LOADING_KEEPALIVE: Duration = Duration::from_secs(3);

pub(super) async fn list_models(State(gateway): State<Gateway>) -> Result<Response, OpenAiError> {
    let catalog = gateway
        .inner
        .catalog
        .current(&gateway.inner.daemon)
        .await
        .map_err(|e| OpenAiError::unavailable(e.to_string()))?;
    let data = catalog
        .models
        .iter()
        .map(|model| {
            let services: Vec<&Service> = catalog
                .services
                .iter()
                .filter(|s| s.model_id == model.id)
                .collect();
            let has = |status| services.iter().any(|s| s.status == status);
            // A model with no service is served too: the first request makes one.
            let status = if has(ServiceStatus::Running) {
                "running"
            } else if has(ServiceStatus::Starting) {
                "starting"
            } else {
                "stopped"
            };
            ModelEntry {
                id: model.name.clone(),
                object: "model",
                created: model.created_at.timestamp(),
                owned_by: "aima",
                aima: ModelState {
                    status,
                    model_id: model.id.to_string(),
                    services: services.iter().map(|s| s.name.clone()).collect(),
                },
            }
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

pub(super) async fn forward(
    State(gateway): State<Gateway>,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut target = None;
    let (arrived, arrived_at) = (std::time::Instant::now(), chrono::Utc::now());
    match route_and_forward(&gateway, path, headers, body, &mut target).await {
        Ok(response) => response,
        Err(error) => {
            let target = target.unwrap_or(Target {
                model: String::new(),
                service: String::new(),
            });
            gateway
                .inner
                .metrics
                .answered(&target, error.status.as_u16());
            gateway.remember(crate::domain::RecentRequest {
                at: arrived_at,
                model: target.model,
                service: target.service,
                status: error.status.as_u16(),
                duration: arrived.elapsed(),
                first_byte: None,
                tokens: None,
                streamed: false,
            });
            error.into_response()
        }
    }
}

async fn route_and_forward(
    gateway: &Gateway,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
    target: &mut Option<Target>,
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
        Err(Unroutable::NoService) if daemon.settings().gateway_auto_create => {
            daemon
                .ensure_service(&name, crate::daemon::Asker::Gateway)
                .await
                .map_err(|e| OpenAiError::unavailable(e.to_string()))?
                .0
        }
        Err(Unroutable::NoService) => {
            return Err(OpenAiError::model_not_found(format!(
                "the model '{name}' has no service (AIMA_GATEWAY_AUTO_CREATE is off); create one with 'aima service create --model-id {name} --engine-type ENGINE'"
            )));
        }
    };
    // A service made just now is in the catalog the next time it is read.
    let catalog = gateway
        .inner
        .catalog
        .current(daemon)
        .await
        .map_err(|e| OpenAiError::unavailable(e.to_string()))?;
    let labels = catalog.target_of(&service);
    // The engine answers to the model's name: a request that named the service says so.
    let body = if name != labels.model && daemon.serves_model_name(&service) {
        named_model(body, &labels.model)?
    } else {
        body
    };
    // Engines count a stream's tokens only when asked to.
    let asked = streaming.then(|| super::stream_usage::ask_for_usage(&body));
    let (body, hide_usage) = match asked {
        Some(Some(asked)) => (asked, true),
        _ => (body, false),
    };
    *target = Some(labels.clone());
    let mut exchange = gateway.enter(&service, labels, arrived).await;
    exchange.hide_usage = hide_usage;
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
    let mut waits = Duration::ZERO;
    if service.status != ServiceStatus::Running {
        if streaming {
            return Ok(loading_stream(
                gateway.clone(),
                service,
                path,
                headers,
                body,
                exchange,
            ));
        }
        let waited = Instant::now();
        let led = super::swap::until_running(gateway, &service, &exchange.target).await?;
        if led {
            gateway.inner.metrics.cold_start(&exchange.target);
        }
        waits += waited.elapsed();
    }
    let queued = Instant::now();
    gateway.take_turn(&service, &mut exchange).await?;
    waits += queued.elapsed();
    let sent = Instant::now();
    let upstream = send(gateway, &service, path, &headers, body).await?;
    // The gateway's own time: neither the engine's nor any cold start or queue wait.
    let overhead = arrived.elapsed().saturating_sub(waits + sent.elapsed());
    Ok(proxy::downstream(upstream, overhead, exchange))
}

/// `body` with its `model` replaced by `model`.
fn named_model(body: Bytes, model: &str) -> Result<Bytes, OpenAiError> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid(format!("request body is not a JSON object: {e}")))?;
    object.insert(
        "model".to_owned(),
        serde_json::Value::String(model.to_owned()),
    );
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| OpenAiError::invalid(format!("request body cannot be written back: {e}")))
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
    mut exchange: Exchange,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let name = service.name.clone();
    gateway.inner.metrics.answered(&exchange.target, 200);
    tokio::spawn(async move {
        let comment = |phase: &str| {
            Ok(Bytes::from(format!(
                ": loading {} {phase}\n\n",
                service.name
            )))
        };
        let error_event =
            |error: OpenAiError| Ok(Bytes::from(format!("data: {}\n\n", error.body())));
        let mut events = gateway.inner.daemon.events().subscribe();
        let mut phase = "waiting".to_owned();
        if tx.send(comment(&phase)).await.is_err() {
            return;
        }
        let target = exchange.target.clone();
        let ready = async {
            super::swap::until_running(&gateway, &service, &target)
                .await
                .map_err(|e| e.message)
        };
        let mut ready = std::pin::pin!(ready);
        let mut tick = tokio::time::interval(LOADING_KEEPALIVE);
        tick.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut ready => break outcome,
                event = events.recv() => {
                    if let Ok(event) = event
                        && event.service_id() == Some(&service.id)
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
        match outcome {
            Ok(true) => gateway.inner.metrics.cold_start(&exchange.target),
            Ok(false) => {}
            Err(reason) => {
                let _ = tx.send(error_event(OpenAiError::unavailable(reason))).await;
                return;
            }
        }
        if let Err(error) = gateway.take_turn(&service, &mut exchange).await {
            let _ = tx.send(error_event(error)).await;
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
        exchange.tap(true);
        let mut chunks =
            std::pin::pin!(proxy::pass_through(upstream.bytes_stream(), true, exchange));
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
