use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{DevicesDto, ErrorBody, RecommendDto};
use super::{ApiError, ApiJson, ApiQuery};
use crate::daemon::Daemon;

/// The host's NVIDIA GPUs (or why there are none) and the services placed on each.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", responses((status = 200, body = DevicesDto)))]
pub async fn devices(State(daemon): State<Daemon>) -> Result<ApiJson<DevicesDto>, ApiError> {
    Ok(ApiJson(daemon.devices().await?.into()))
}

/// Same as `GET /api/v1/devices`, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/device/detect", tag = "devices", responses((status = 200, body = DevicesDto)))]
pub async fn legacy_detect(state: State<Daemon>) -> Result<ApiJson<DevicesDto>, ApiError> {
    devices(state).await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendQuery {
    /// Only this model (default: every registered model).
    pub model_id: Option<String>,
}

/// Per GPU its free and claimed memory; per model whether it fits now, where, with
/// which utilization and engine, or why not.
#[utoipa::path(get, path = "/api/v1/recommend", tag = "devices", params(RecommendQuery),
    responses((status = 200, body = RecommendDto), (status = 404, body = ErrorBody)))]
pub async fn recommend(
    State(daemon): State<Daemon>,
    ApiQuery(query): ApiQuery<RecommendQuery>,
) -> Result<ApiJson<RecommendDto>, ApiError> {
    Ok(ApiJson(
        daemon.recommend(query.model_id.as_deref()).await?.into(),
    ))
}

/// Same as `GET /api/v1/recommend`, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/service/recommend", tag = "devices", params(RecommendQuery),
    responses((status = 200, body = RecommendDto), (status = 404, body = ErrorBody)))]
pub async fn legacy_recommend(
    state: State<Daemon>,
    query: ApiQuery<RecommendQuery>,
) -> Result<ApiJson<RecommendDto>, ApiError> {
    recommend(state, query).await
}
