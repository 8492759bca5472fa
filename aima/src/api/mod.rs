//! The HTTP API: routes, wire shapes, error mapping and the OpenAPI document.
//! The only module that speaks HTTP.

mod contract;
mod devices;
pub mod dto;
mod error;
mod guard;
mod models;
mod params;
mod ps;
mod services;
mod system;

use contract::Contract;
pub use error::ApiError;
pub use guard::{AccessPolicy, guard};

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use crate::daemon::Daemon;

/// Largest request body accepted; every body the API takes is a small JSON object.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// `axum::Json`, but its rejections are reported in the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query`, with its rejections in the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The OpenAPI document served at `/api/v1/openapi.json`, built from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIMA",
        description = "Run several LLM inference engines on one GPU host"
    ),
    paths(
        system::health,
        system::status,
        system::settings,
        models::list_models,
        models::create_model,
        models::get_model,
        models::delete_model,
        models::pull_model,
        models::legacy_list_models,
        services::list_services,
        services::create_service,
        services::ensure_service,
        services::get_service,
        services::delete_service,
        services::update_service,
        services::start_service,
        services::stop_service,
        services::service_logs,
        services::service_events,
        services::all_events,
        services::legacy_list_services,
        services::legacy_service_status,
        services::legacy_service_logs,
        devices::devices,
        devices::legacy_detect,
        devices::recommend,
        devices::legacy_recommend,
        ps::loaded,
        ps::recent_requests,
        ps::history,
    ),
    modifiers(&Contract),
    components(schemas(
        dto::ErrorBody,
        dto::DaemonSettingsDto,
        dto::LogsDto,
        dto::ErrorDetail,
        dto::ModelDto,
        dto::PullProgressDto,
        dto::EstimateDto,
        dto::CreateModelRequest,
        dto::ServiceDto,
        dto::CreateServiceRequest,
        dto::UpdateServiceRequest,
        dto::UpdatedServiceDto,
        dto::EventDto,
        dto::DevicesDto,
        dto::GpuDto,
        dto::RecommendDto,
        dto::ModelAdviceDto,
        dto::PlacementDto,
        dto::LoadedDto,
        dto::RequestDto,
        dto::HistoryDto,
        dto::MinuteDto
    ))
)]
pub struct ApiDoc;

/// All routes, with JSON errors, a body limit and a request timeout. The server adds
/// the access guard and request tracing around this and the gateway alike.
pub fn router(
    daemon: Daemon,
    request_timeout: Duration,
    gateway: std::sync::Arc<dyn crate::domain::TrafficSource>,
) -> Router {
    let v1 = Router::new()
        .route("/health", get(system::health))
        .route("/status", get(system::status))
        .route("/settings", get(system::settings))
        .route("/openapi.json", get(system::openapi))
        .route(
            "/models",
            get(models::list_models).post(models::create_model),
        )
        .route(
            "/models/{id}",
            get(models::get_model).delete(models::delete_model),
        )
        .route("/models/{id}/service", post(services::ensure_service))
        .route("/models/{id}/pull", post(models::pull_model));
    let v1 = v1
        .route(
            "/services",
            get(services::list_services).post(services::create_service),
        )
        .route(
            "/services/{id}",
            get(services::get_service)
                .delete(services::delete_service)
                .patch(services::update_service),
        )
        .route("/services/{id}/start", post(services::start_service))
        .route("/services/{id}/stop", post(services::stop_service))
        .route("/services/{id}/logs", get(services::service_logs))
        .route("/services/{id}/events", get(services::service_events))
        .route("/events", get(services::all_events))
        .route("/devices", get(devices::devices))
        .route("/ps", get(ps::loaded))
        .route("/requests", get(ps::recent_requests))
        .route("/history", get(ps::history))
        .route("/recommend", get(devices::recommend));
    // The operator scenario scripts use these older routes; same bodies.
    let legacy = Router::new()
        .route("/model/list", get(models::legacy_list_models))
        .route("/service/list", get(services::legacy_list_services))
        .route("/service/status", get(services::legacy_service_status))
        .route("/service/logs", get(services::legacy_service_logs))
        .route("/service/recommend", get(devices::legacy_recommend))
        .route("/device/detect", get(devices::legacy_detect));

    let declared = std::sync::Arc::new(params::DeclaredParams::from_doc(&ApiDoc::openapi()));
    let routes = Router::new()
        .nest("/api/v1", v1)
        .nest("/api", legacy)
        .route("/metrics", get(system::metrics))
        .route_layer(axum::middleware::from_fn(crate::metrics::tag_route))
        .fallback(unknown_route)
        .with_state(daemon)
        .layer(axum::Extension(gateway))
        .layer(axum::Extension(std::sync::Arc::new(
            services::ListCache::default(),
        )))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            declared,
            params::refuse_unknown,
        ));
    // `Router::layer` wraps each route inside the point where axum adds `Allow` to a 405,
    // so the JSON error mapping wraps the whole routed service instead.
    Router::new()
        .fallback_service(routes)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(error::json_error_bodies))
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {method} {}; see /api/v1/openapi.json",
            uri.path()
        ),
    )
}

/// One schema of the OpenAPI document (`CreateServiceRequest`) as a self-contained JSON
/// Schema, its `$ref`s inlined: the MCP tools take the API's bodies with this schema, so
/// both interfaces share one contract, patterns and bounds included.
pub fn component_schema(name: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let doc = serde_json::to_value(ApiDoc::openapi()).ok()?;
    let components = doc.pointer("/components/schemas")?;
    let mut schema = components.get(name)?.clone();
    inline_refs(&mut schema, components, 0);
    match schema {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Replaces each `{"$ref": "#/components/schemas/X"}` with X, to a bounded depth (the
/// request bodies nest one or two levels; a recursive schema would stop there).
fn inline_refs(value: &mut serde_json::Value, components: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| components.get(name));
            if let Some(target) = target
                && depth < 8
            {
                let mut target = target.clone();
                inline_refs(&mut target, components, depth + 1);
                *value = target;
                return;
            }
            for v in map.values_mut() {
                inline_refs(v, components, depth);
            }
        }
        Value::Array(items) => {
            for v in items {
                inline_refs(v, components, depth);
            }
        }
        _ => {}
    }
}
