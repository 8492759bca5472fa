use axum::Json;
use axum::extract::State;
use utoipa::OpenApi;

use super::dto::{Health, StatusDto};
use crate::daemon::Daemon;

/// The daemon answers. Cheap: touches neither the database nor Docker.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: crate::VERSION.to_owned(),
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
