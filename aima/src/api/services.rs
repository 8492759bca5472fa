use std::convert::Infallible;
use std::time::Duration;

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::dto::{
    CreateServiceRequest, ErrorBody, EventDto, List, LogsDto, ServiceDto, UpdateServiceRequest,
    UpdatedServiceDto,
};
use super::{ApiError, ApiJson, ApiQuery};
use crate::daemon::{Daemon, LogOutput};
use crate::domain::{Service, ServiceId, ServiceStatus};

/// Filters of a service list; each one given must match (`?status=running&engine=vllm`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ServiceFilter {
    /// `creating`, `starting`, `running`, `stopping`, `stopped` or `failed`.
    pub status: Option<String>,
    /// `vllm`, `sglang`, `llamacpp` or `ollama`.
    pub engine: Option<String>,
    /// The model's id or name.
    pub model: Option<String>,
    /// The service's name.
    pub name: Option<String>,
}

impl ServiceFilter {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.engine.is_none()
            && self.model.is_none()
            && self.name.is_none()
    }
}

/// All services, oldest first; `status`, `engine`, `model` and `name` narrow the list.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(ServiceFilter),
    responses((status = 200, body = inline(List<ServiceDto>)),
        (status = 400, description = "an unknown filter or value", body = ErrorBody)))]
pub async fn list_services(
    State(daemon): State<Daemon>,
    Extension(cache): Extension<Arc<ListCache>>,
    ApiQuery(filter): ApiQuery<ServiceFilter>,
) -> Result<Response, ApiError> {
    if !filter.is_empty() {
        let items = filtered_services(&daemon, &filter).await?;
        return Ok(ApiJson(List { items }).into_response());
    }
    // Scripts and dashboards poll this: the encoded list is kept until a service row
    // changes (the store's generation), so a poll costs a copy, not a query and an encode.
    let generation = daemon.store().generation();
    if let Some(body) = cache.get(generation) {
        return Ok(json_body(body));
    }
    let models = daemon.list_models().await?;
    let items: Vec<ServiceDto> = daemon
        .list_services()
        .await?
        .into_iter()
        .map(|s| shown_with(s, &models))
        .collect();
    let body = Bytes::from(serde_json::to_vec(&List { items }).unwrap_or_default());
    cache.put(generation, body.clone());
    Ok(json_body(body))
}

/// The services `filter` keeps; a status or engine that cannot exist is the caller's
/// mistake (a 400 with the accepted values), an unknown model or name just matches nothing.
async fn filtered_services(
    daemon: &Daemon,
    filter: &ServiceFilter,
) -> Result<Vec<ServiceDto>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let status = match filter.status.as_deref() {
        Some(s) => Some(s.parse::<ServiceStatus>().map_err(|_| {
            bad(format!(
                "status '{}' is not one of {}",
                crate::domain::one_line(s),
                ServiceStatus::ALL.map(ServiceStatus::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    if let Some(engine) = filter.engine.as_deref()
        && !crate::engines::CATALOG.iter().any(|e| e.name == engine)
    {
        return Err(bad(format!(
            "engine '{}' is not one of {}",
            crate::domain::one_line(engine),
            crate::engines::Engines::names()
        )));
    }
    // The model filter takes a name as readily as an id.
    let model_ids: Option<Vec<String>> = match filter.model.as_deref() {
        Some(wanted) => Some(
            daemon
                .list_models()
                .await?
                .into_iter()
                .filter(|m| m.id.as_str() == wanted || m.name == wanted)
                .map(|m| m.id.to_string())
                .collect(),
        ),
        None => None,
    };
    let models = daemon.list_models().await?;
    Ok(daemon
        .list_services()
        .await?
        .into_iter()
        .filter(|s| status.is_none_or(|wanted| s.status == wanted))
        .filter(|s| filter.engine.as_deref().is_none_or(|e| s.engine == e))
        .filter(|s| filter.name.as_deref().is_none_or(|n| s.name == n))
        .filter(|s| {
            model_ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == s.model_id.as_str()))
        })
        .map(|s| shown_with(s, &models))
        .collect())
}

/// Same as `GET /api/v1/services`, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/service/list", tag = "services", params(ServiceFilter),
    responses((status = 200, body = inline(List<ServiceDto>)),
        (status = 400, description = "an unknown filter or value", body = ErrorBody)))]
pub async fn legacy_list_services(
    state: State<Daemon>,
    cache: Extension<Arc<ListCache>>,
    filter: ApiQuery<ServiceFilter>,
) -> Result<Response, ApiError> {
    list_services(state, cache, filter).await
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The last encoded service list and the store generation it shows.
#[derive(Debug, Default)]
pub struct ListCache(std::sync::Mutex<Option<(u64, Bytes)>>);

impl ListCache {
    fn get(&self, generation: u64) -> Option<Bytes> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((cached, body)) if *cached == generation => Some(body.clone()),
            _ => None,
        }
    }

    fn put(&self, generation: u64, body: Bytes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, body));
    }
}

/// Creates a service in `creating` and assigns its host port.
#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = CreateServiceRequest,
    responses(
        (status = 201, body = ServiceDto),
        (status = 200, description = "with if_not_exists: the service like it that exists", body = ServiceDto),
        (status = 404, description = "unknown model", body = ErrorBody),
        (status = 409, description = "port unavailable", body = ErrorBody),
        (status = 422, description = "invalid field", body = ErrorBody),
    ))]
pub async fn create_service(
    State(daemon): State<Daemon>,
    ApiJson(request): ApiJson<CreateServiceRequest>,
) -> Result<(StatusCode, ApiJson<ServiceDto>), ApiError> {
    let if_not_exists = request.if_not_exists;
    let request: crate::daemon::ServiceRequest = request.into();
    if if_not_exists && let Some(existing) = daemon.existing_service(&request).await? {
        return Ok((StatusCode::OK, ApiJson(shown(&daemon, existing).await)));
    }
    let service = daemon.create_service(request).await?;
    Ok((StatusCode::CREATED, ApiJson(shown(&daemon, service).await)))
}

/// The service that serves a model: the one a gateway request for it goes to, or, when
/// it has none, a new one with the engine its files call for (`aima run`).
#[utoipa::path(post, path = "/api/v1/models/{id}/service", tag = "services",
    params(("id" = String, Path, description = "model id, name or unique id prefix")),
    responses(
        (status = 200, description = "the service it has", body = ServiceDto),
        (status = 201, description = "a service made for it now", body = ServiceDto),
        (status = 404, description = "unknown model", body = ErrorBody),
        (status = 409, description = "no port left for a new service", body = ErrorBody),
    ))]
pub async fn ensure_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<ServiceDto>), ApiError> {
    let (service, created) = daemon
        .ensure_service(&id, crate::daemon::Asker::Run)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ApiJson(shown(&daemon, service).await)))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = String, Path, description = "service id, e.g. svc-vllm-1a2b3c4d")),
    responses((status = 200, body = ServiceDto), (status = 404, body = ErrorBody)))]
pub async fn get_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<ApiJson<ServiceDto>, ApiError> {
    Ok(ApiJson(
        shown(&daemon, daemon.get_service(&id).await?).await,
    ))
}

/// `?service_id=` for the operator scripts' routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceIdQuery {
    pub service_id: String,
}

/// A service by `?service_id=`, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/service/status", tag = "services", params(ServiceIdQuery),
    responses((status = 200, body = ServiceDto), (status = 404, body = ErrorBody)))]
pub async fn legacy_service_status(
    State(daemon): State<Daemon>,
    ApiQuery(query): ApiQuery<ServiceIdQuery>,
) -> Result<ApiJson<ServiceDto>, ApiError> {
    let service = daemon.get_service(&query.service_id).await?;
    Ok(ApiJson(shown(&daemon, service).await))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Stop a running or starting service first instead of refusing (409).
    pub force: Option<bool>,
}

/// Deletes a service and frees its port; a running or starting one only with `force`.
#[utoipa::path(delete, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = String, Path, description = "service id"), DeleteQuery),
    responses((status = 200, body = ServiceDto), (status = 404, body = ErrorBody),
        (status = 409, description = "running or starting, and no force", body = ErrorBody)))]
pub async fn delete_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<ApiJson<ServiceDto>, ApiError> {
    let force = query.force.unwrap_or(false);
    let service = daemon.delete_service(&id, force).await?;
    Ok(ApiJson(shown(&daemon, service).await))
}

/// Begins a start and answers at once (`starting`); follow the events for its phases.
/// Starting a running or starting service changes nothing.
#[utoipa::path(post, path = "/api/v1/services/{id}/start", tag = "services",
    params(("id" = String, Path, description = "service id")),
    responses((status = 202, body = ServiceDto), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<ServiceDto>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(shown(&daemon, daemon.start_service(&id).await?).await),
    ))
}

/// Changes a service's settings (restart policy, timeouts, health checks, env, serving)
/// without deleting it; what shapes the container applies at its next start.
#[utoipa::path(patch, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = String, Path, description = "service id")),
    request_body = UpdateServiceRequest,
    responses((status = 200, body = UpdatedServiceDto), (status = 404, body = ErrorBody),
        (status = 409, description = "the port is taken, or the engine runs on it", body = ErrorBody),
        (status = 422, description = "a setting breaks a rule, or nothing to change", body = ErrorBody)))]
pub async fn update_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateServiceRequest>,
) -> Result<ApiJson<UpdatedServiceDto>, ApiError> {
    let update = crate::daemon::ServiceUpdate::try_from(request)
        .map_err(crate::daemon::DaemonError::from)?;
    let updated = daemon.update_service(&id, update).await?;
    Ok(ApiJson(UpdatedServiceDto {
        service: shown(&daemon, updated.service).await,
        applies_at_next_start: updated
            .at_next_start
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }))
}

/// Stops the service from any status and answers once its host port is free.
#[utoipa::path(post, path = "/api/v1/services/{id}/stop", tag = "services",
    params(("id" = String, Path, description = "service id")),
    responses((status = 200, body = ServiceDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stop_service(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<ApiJson<ServiceDto>, ApiError> {
    Ok(ApiJson(
        shown(&daemon, daemon.stop_service(&id).await?).await,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep streaming new output.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only output since then: an RFC 3339 time, unix seconds, or a duration ago (10m).
    pub since: Option<String>,
    /// Begin each line with the time Docker recorded it at.
    #[serde(default)]
    pub timestamps: bool,
    /// The lines kept from the container before the current one (a crashed engine's).
    #[serde(default)]
    pub previous: bool,
}

impl LogsQuery {
    /// The runtime's query, or a 400 naming a `since` that is not a time.
    fn to_runtime(&self) -> Result<crate::runtime::LogQuery, ApiError> {
        let since_unix_secs = match self.since.as_deref() {
            None | Some("") => None,
            Some(text) => Some(since_unix_secs(text, chrono::Utc::now()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "since '{}' is not a time; write an RFC 3339 time (2026-12-02T10:00:00Z), unix seconds, or a duration ago such as 10m",
                        crate::domain::one_line(text)
                    ),
                )
            })?),
        };
        Ok(crate::runtime::LogQuery {
            tail: self.tail,
            follow: self.follow,
            since_unix_secs,
            timestamps: self.timestamps,
        })
    }
}

/// `docker logs --since`'s forms: RFC 3339, unix seconds, or a duration before `now`.
fn since_unix_secs(text: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp());
    }
    if let Ok(secs) = text.parse::<i64>() {
        return (secs >= 0).then_some(secs);
    }
    let ago = humantime::parse_duration(text).ok()?;
    let ago = chrono::Duration::from_std(ago).ok()?;
    now.checked_sub_signed(ago).map(|at| at.timestamp())
}

/// Container output (stdout and stderr) as text; when no container runs, the last lines
/// kept from the last one (after a stop or a failure).
#[utoipa::path(get, path = "/api/v1/services/{id}/logs", tag = "services",
    params(("id" = String, Path, description = "service id"), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 400, description = "a since that is not a time", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn service_logs(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    // Text for people and `docker logs` habits; the JSON shape for a client that asks.
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        return logs_json(&daemon, &id, query).await;
    }
    logs_response(&daemon, &id, query).await
}

/// `{"service_id": …, "lines": […]}`: the logs for scripts that pipe them to `jq`.
async fn logs_json(daemon: &Daemon, id: &str, query: LogsQuery) -> Result<Response, ApiError> {
    if query.follow {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "follow streams text; ask without follow for JSON, or without Accept: application/json to follow",
        ));
    }
    let service = daemon.get_service(id).await?;
    let text = match daemon
        .service_logs(id, query.to_runtime()?, query.previous)
        .await?
    {
        LogOutput::Saved(text) => text,
        LogOutput::Live(stream) => {
            let chunks: Vec<_> = stream.collect().await;
            chunks
                .into_iter()
                .filter_map(Result::ok)
                .map(|c| c.text)
                .collect()
        }
    };
    Ok(ApiJson(LogsDto {
        service_id: service.id.to_string(),
        lines: text.lines().map(str::to_owned).collect(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LegacyLogsQuery {
    pub service_id: String,
    #[serde(default)]
    pub follow: bool,
    pub tail: Option<usize>,
    /// Only output since then: an RFC 3339 time, unix seconds, or a duration ago (10m).
    pub since: Option<String>,
    /// Begin each line with the time Docker recorded it at.
    #[serde(default)]
    pub timestamps: bool,
    /// The lines kept from the container before the current one.
    #[serde(default)]
    pub previous: bool,
}

/// Logs by `?service_id=` as JSON, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/service/logs", tag = "services", params(LegacyLogsQuery),
    responses((status = 200, body = LogsDto),
        (status = 400, description = "a since that is not a time", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn legacy_service_logs(
    State(daemon): State<Daemon>,
    ApiQuery(query): ApiQuery<LegacyLogsQuery>,
) -> Result<Response, ApiError> {
    let LegacyLogsQuery {
        service_id,
        follow,
        tail,
        since,
        timestamps,
        previous,
    } = query;
    let query = LogsQuery {
        follow,
        tail,
        since,
        timestamps,
        previous,
    };
    logs_json(&daemon, &service_id, query).await
}

async fn logs_response(daemon: &Daemon, id: &str, query: LogsQuery) -> Result<Response, ApiError> {
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match daemon
        .service_logs(id, query.to_runtime()?, query.previous)
        .await?
    {
        LogOutput::Saved(text) => Ok((text_plain, text).into_response()),
        LogOutput::Live(stream) => {
            let shutdown = daemon.shutdown_token();
            // The container can go mid-stream (stopped, removed): the log simply ends there,
            // as `docker logs` does, rather than as a broken chunked body.
            let body = stream
                .take_until(async move { shutdown.cancelled().await })
                .take_while(|chunk| {
                    if let Err(e) = chunk {
                        tracing::debug!("log stream ended: {e}");
                    }
                    std::future::ready(chunk.is_ok())
                })
                .filter_map(|chunk| {
                    std::future::ready(chunk.ok().map(|c| Ok::<_, std::io::Error>(c.text)))
                });
            Ok((text_plain, Body::from_stream(body)).into_response())
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Keep the stream open for new events (default true); false ends after the history.
    pub follow: Option<bool>,
    /// Only events after this sequence number; `latest` for new events only.
    pub after: Option<String>,
}

/// Server-sent events of one service: its stored history, then live events.
#[utoipa::path(get, path = "/api/v1/services/{id}/events", tag = "events",
    params(("id" = String, Path, description = "service id"), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event (what an EventSource sends when it reconnects)")),
    responses((status = 200, content_type = "text/event-stream", body = EventDto), (status = 404, body = ErrorBody)))]
pub async fn service_events(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let service = daemon.get_service(&id).await?;
    events_response(daemon, Some(service.id), query, &headers).await
}

/// Server-sent events of all services: stored history, then live events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event (what an EventSource sends when it reconnects)")),
    responses((status = 200, content_type = "text/event-stream", body = EventDto)))]
pub async fn all_events(
    State(daemon): State<Daemon>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    events_response(daemon, None, query, &headers).await
}

async fn events_response(
    daemon: Daemon,
    service: Option<ServiceId>,
    query: EventsQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Subscribe before reading history, so nothing falls between the two.
    let live = daemon.events().subscribe();
    // A reconnecting EventSource names the last event it saw: resume right after it.
    let resume = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().trim().to_owned());
    let after = match resume.as_deref().or(query.after.as_deref()) {
        Some(id) if resume.is_some() => digits(id).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Last-Event-ID '{}' is not an event's sequence number; send the id of the last event received",
                    crate::domain::one_line(id)
                ),
            )
        })?,
        None => 0,
        Some("latest") => daemon
            .events()
            .latest_seq()
            .await
            .map_err(crate::daemon::DaemonError::from)?,
        Some(n) => digits(n).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("after '{n}' is not a sequence number; pass a number or 'latest'"),
            )
        })?,
    };
    let history = daemon
        .events()
        .history(service.clone().map(Into::into), after)
        .await
        .map_err(crate::daemon::DaemonError::from)?;
    let stream = event_stream(
        daemon,
        service,
        history,
        live,
        after,
        query.follow.unwrap_or(true),
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A sequence number: digits only (no sign), as the document's pattern says.
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// History first, then live events with `seq` past what was sent; a subscriber that falls
/// behind the bus re-reads the gap from the store instead of losing events.
fn event_stream(
    daemon: Daemon,
    service: Option<ServiceId>,
    history: Vec<crate::domain::Event>,
    mut live: tokio::sync::broadcast::Receiver<crate::domain::Event>,
    after: i64,
    follow: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let shutdown = daemon.shutdown_token();
    async_stream_events(move |tx| async move {
        let mut last = after;
        for event in history {
            last = last.max(event.seq);
            if tx.send(to_sse(event)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = live.recv() => received,
            };
            let batch = match received {
                Ok(event) => vec![event],
                Err(RecvError::Lagged(_)) => daemon
                    .events()
                    .history(service.clone().map(Into::into), last)
                    .await
                    .unwrap_or_default(),
                Err(RecvError::Closed) => return,
            };
            for event in batch {
                if event.seq <= last || service.is_some() && event.service_id() != service.as_ref()
                {
                    continue;
                }
                last = event.seq;
                if tx.send(to_sse(event)).await.is_err() {
                    return;
                }
            }
        }
    })
}

fn to_sse(event: crate::domain::Event) -> Result<Event, Infallible> {
    let dto = EventDto::from(event);
    let data = serde_json::to_string(&dto).unwrap_or_default();
    Ok(Event::default()
        .id(dto.seq.to_string())
        .event(dto.kind.clone())
        .data(data))
}

/// A stream fed by a producer task through a small channel; the task ends when the
/// client goes away (the channel closes).
fn async_stream_events<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A service as the API shows it: with its model's GPU memory estimate on its engine.
pub(super) async fn shown(daemon: &Daemon, service: Service) -> ServiceDto {
    let model = daemon.get_model(service.model_id.as_str()).await.ok();
    ServiceDto::with_model(service, model.as_ref())
}

fn shown_with(service: Service, models: &[crate::domain::Model]) -> ServiceDto {
    let model = models.iter().find(|m| m.id == service.model_id);
    ServiceDto::with_model(service, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_docker_logs_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let at = |t: &str| since_unix_secs(t, now);
        assert_eq!(at("2026-12-02T09:50:00Z"), Some(now.timestamp() - 600));
        assert_eq!(at("10m"), Some(now.timestamp() - 600));
        assert_eq!(at("1764669000"), Some(1_764_669_000));
        assert_eq!(at("yesterday"), None);
        assert_eq!(at("-5"), None);
    }
}
