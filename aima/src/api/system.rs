use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::dto::{DaemonSettingsDto, Health, StatusDto};
use crate::daemon::Daemon;

/// The daemon answers and its database takes writes (one small write at most every few
/// seconds; Docker is not asked). 503 with `status: degraded` and the reason when the
/// database cannot be written (read-only file, full disk): a readiness probe fails then,
/// as every request that changes something would.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", responses(
    (status = 200, description = "`status: ok`", body = Health),
    (status = 503, description = "`status: degraded`, with the reason", body = Health)))]
pub async fn health(State(daemon): State<Daemon>) -> (StatusCode, Json<Health>) {
    let (code, status, reason) = match daemon.database_writable().await {
        Ok(()) => (StatusCode::OK, "ok", None),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "degraded", Some(reason)),
    };
    let health = Health {
        status: status.to_owned(),
        reason,
        version: crate::VERSION.to_owned(),
        commit: crate::COMMIT.to_owned(),
        build_date: crate::BUILD_DATE.to_owned(),
    };
    (code, Json(health))
}

/// The settings only the daemon's environment and config file change, as in use now.
#[utoipa::path(get, path = "/api/v1/settings", tag = "system", responses((status = 200, body = DaemonSettingsDto)))]
pub async fn settings(State(daemon): State<Daemon>) -> Json<DaemonSettingsDto> {
    let settings = daemon.settings();
    Json(DaemonSettingsDto {
        docker_host: daemon.docker_address().to_owned(),
        port_range: settings.port_range.to_string(),
        publish_addr: settings.publish_addr.to_string(),
        model_roots: settings
            .model_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect(),
        engine_images: daemon.engine_images(),
        simulated_gpus: settings.simulate_gpus.as_ref().map(|gpus| {
            gpus.iter()
                .map(|(name, mib)| format!("{name}:{mib}"))
                .collect::<Vec<_>>()
                .join(",")
        }),
    })
}

/// Version, home, database and whether Docker answers (a ping with a short timeout).
#[utoipa::path(get, path = "/api/v1/status", tag = "system", responses((status = 200, body = StatusDto)))]
pub async fn status(State(daemon): State<Daemon>) -> Json<StatusDto> {
    Json(daemon.status().await.into())
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}

/// Prometheus metrics: the daemon's (starts, failures, probes, HTTP), what it manages now
/// (models, services, GPU memory), the process's, then the gateway's. OpenMetrics for
/// scrapers that ask for it, Prometheus text 0.0.4 otherwise; the body is the same.
pub async fn metrics(
    State(daemon): State<Daemon>,
    axum::Extension(gateway): axum::Extension<std::sync::Arc<dyn crate::domain::TrafficSource>>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, super::ApiError> {
    let state = metrics_state(&daemon).await?;
    let mut out = String::new();
    daemon.metrics().render(&state, &mut out);
    gateway.render_metrics(&mut out);
    out.push_str("# EOF\n");
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], out))
}

async fn metrics_state(daemon: &Daemon) -> Result<crate::metrics::State, super::ApiError> {
    use crate::metrics::{GpuState, ServiceState};
    let models = daemon.list_models().await?.len();
    let services = daemon.list_services().await?;
    let devices = daemon.devices().await?;
    let claims = daemon.claims().await?;
    let gpu_index = |uuid: &str| {
        devices
            .gpus
            .iter()
            .find(|g| g.gpu.uuid == uuid)
            .map(|g| g.gpu.index)
    };
    Ok(crate::metrics::State {
        models,
        services: services
            .into_iter()
            .map(|s| ServiceState {
                gpu: claims
                    .iter()
                    .find(|c| c.service_id == s.id.as_str())
                    .and_then(|c| Some((gpu_index(&c.gpu_uuid)?, c.claim_mib))),
                id: s.id.to_string(),
                name: s.name,
                engine: s.engine,
                port: s.port,
                status: s.status,
            })
            .collect(),
        gpus: devices
            .gpus
            .iter()
            .map(|g| GpuState {
                index: g.gpu.index,
                uuid: g.gpu.uuid.clone(),
                name: g.gpu.name.clone(),
                total_mib: g.gpu.memory_total_mib,
                used_mib: g.gpu.memory_used_mib,
                free_mib: g.gpu.memory_free_mib,
                claimed_mib: g.claimed_mib,
            })
            .collect(),
    })
}
