//! `GET /api/v1/ps`: what is loaded, where, and until when (`aima ps`, as `ollama ps`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;

use super::dto::{ErrorBody, HistoryDto, List, LoadedDto, MinuteDto, RequestDto};
use super::{ApiError, ApiJson};
use crate::daemon::Daemon;
use crate::domain::{ServiceStatus, TrafficSource};

/// The recent past `aima ps` reports speeds over.
const SPEED_WINDOW_MINUTES: i64 = 5;

/// Starting and running services with their GPU placement and gateway traffic.
#[utoipa::path(get, path = "/api/v1/ps", tag = "services",
    responses((status = 200, body = inline(List<LoadedDto>)), (status = 503, body = ErrorBody)))]
pub async fn loaded(
    State(daemon): State<Daemon>,
    Extension(gateway): Extension<Arc<dyn TrafficSource>>,
) -> Result<ApiJson<List<LoadedDto>>, ApiError> {
    let services = daemon.list_services().await?;
    let models: HashMap<_, _> = daemon
        .list_models()
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let claims = daemon.claims().await?;
    let gpus = daemon.gpu_inventory().await.gpus;
    let traffic: HashMap<_, _> = gateway
        .traffic()
        .into_iter()
        .map(|t| (t.service_id.clone(), t))
        .collect();
    let recent = gateway.recent_requests();
    let window = chrono::Utc::now() - chrono::Duration::minutes(SPEED_WINDOW_MINUTES);
    let items = services
        .into_iter()
        .filter(|s| matches!(s.status, ServiceStatus::Starting | ServiceStatus::Running))
        .map(|s| {
            let speed = crate::domain::speed(&recent, &s.name, window);
            let claim = claims.iter().find(|c| c.service_id == s.id.as_str());
            let seen = traffic.get(&s.id);
            let in_flight = seen.map_or(0, |t| t.in_flight);
            let last_request_at = seen.and_then(|t| t.last_request_at);
            // Idle since the last request, or since it began running.
            let idle_since = last_request_at.map_or(s.updated_at, |at| at.max(s.updated_at));
            let unload_at = match (s.status, s.serving.idle_timeout) {
                (ServiceStatus::Running, Some(timeout)) if in_flight == 0 => {
                    chrono::Duration::from_std(timeout)
                        .ok()
                        .map(|t| idle_since + t)
                }
                _ => None,
            };
            LoadedDto {
                id: s.id.to_string(),
                name: s.name.clone(),
                model: models.get(&s.model_id).cloned().unwrap_or_default(),
                engine: s.engine.clone(),
                port: s.port,
                status: s.status.to_string(),
                gpu: claim
                    .and_then(|c| gpus.iter().find(|g| g.uuid == c.gpu_uuid).map(|g| g.index)),
                gpu_memory_mib: claim
                    .filter(|c| c.gpu_uuid != crate::daemon::HOST_RAM)
                    .map(|c| c.claim_mib),
                host_memory_mib: claim
                    .filter(|c| c.gpu_uuid == crate::daemon::HOST_RAM)
                    .map(|c| c.claim_mib),
                in_flight,
                last_request_at,
                idle_timeout: s
                    .serving
                    .idle_timeout
                    .map(|d| humantime::format_duration(d).to_string()),
                unload_at,
                tokens_per_second: speed.tokens_per_second.map(|t| (t * 10.0).round() / 10.0),
                time_to_first_token_ms: speed
                    .time_to_first_token
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }
        })
        .collect();
    Ok(ApiJson(List { items }))
}

/// The gateway's latest finished requests, newest first: model, service, status, latency,
/// time to the first byte of the answer and tokens (the dashboard's activity list).
#[utoipa::path(get, path = "/api/v1/requests", tag = "services",
    responses((status = 200, body = inline(List<RequestDto>))))]
pub async fn recent_requests(
    Extension(gateway): Extension<Arc<dyn TrafficSource>>,
) -> ApiJson<List<RequestDto>> {
    let items = gateway
        .recent_requests()
        .into_iter()
        .map(RequestDto::from)
        .collect();
    ApiJson(List { items })
}

/// The last hour a minute at a time: gateway requests, errors, tokens per second, and
/// the memory services claimed on each GPU and on the host (the dashboard's charts).
#[utoipa::path(get, path = "/api/v1/history", tag = "services",
    responses((status = 200, body = HistoryDto)))]
pub async fn history(Extension(gateway): Extension<Arc<dyn TrafficSource>>) -> ApiJson<HistoryDto> {
    ApiJson(HistoryDto {
        minutes: gateway.history().into_iter().map(MinuteDto::from).collect(),
    })
}
