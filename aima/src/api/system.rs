use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::dto::{DaemonSettingsDto, Health, StatusDto};
use crate::daemon::Daemon;

/// The daemon answers. Cheap: touches neither the database nor Docker.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: crate::VERSION.to_owned(),
        commit: crate::COMMIT.to_owned(),
        build_date: crate::BUILD_DATE.to_owned(),
    })
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

/// Prometheus metrics: daemon up and version, models, services by status, GPU claims,
/// then the gateway's (requests, timings, cold starts, unloads, tokens, queue).
pub async fn metrics(
    State(daemon): State<Daemon>,
    axum::Extension(gateway): axum::Extension<std::sync::Arc<dyn crate::domain::TrafficSource>>,
) -> Result<impl IntoResponse, super::ApiError> {
    use std::fmt::Write as _;
    let models = daemon.list_models().await?.len();
    let services = daemon.list_services().await?;
    let devices = daemon.devices().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP aima_up Whether the AIMA daemon answers.\n# TYPE aima_up gauge\naima_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP aima_build_info The running AIMA version.\n# TYPE aima_build_info gauge\naima_build_info{{version=\"{}\"}} 1",
        crate::VERSION
    );
    let _ = writeln!(
        out,
        "# HELP aima_models Registered models.\n# TYPE aima_models gauge\naima_models {models}"
    );
    let _ = writeln!(
        out,
        "# HELP aima_services Services by status.\n# TYPE aima_services gauge"
    );
    for status in crate::domain::ServiceStatus::ALL {
        let count = services.iter().filter(|s| s.status == status).count();
        let _ = writeln!(out, "aima_services{{status=\"{status}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP aima_gpu_memory_claimed_mib GPU memory claimed by starting and running services.\n# TYPE aima_gpu_memory_claimed_mib gauge"
    );
    for gpu in &devices.gpus {
        let _ = writeln!(
            out,
            "aima_gpu_memory_claimed_mib{{gpu=\"{}\",uuid=\"{}\"}} {}",
            gpu.gpu.index, gpu.gpu.uuid, gpu.claimed_mib
        );
    }
    gateway.render_metrics(&mut out);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
