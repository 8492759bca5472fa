use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use futures::StreamExt;

use super::dto::{CreateModelRequest, ErrorBody, List, ModelDto, PullProgressDto};
use super::{ApiError, ApiJson, ApiQuery};
use crate::daemon::Daemon;

/// Filters of a model list; each one given must match (`?source=local`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelFilter {
    /// The model's name.
    pub name: Option<String>,
    /// `ollama`, `huggingface`, `modelscope` or `local`.
    pub source: Option<String>,
}

/// All models, oldest first; `name` and `source` narrow the list.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(ModelFilter),
    responses((status = 200, body = inline(List<ModelDto>)),
        (status = 400, description = "an unknown filter", body = ErrorBody)))]
pub async fn list_models(
    State(daemon): State<Daemon>,
    ApiQuery(filter): ApiQuery<ModelFilter>,
) -> Result<ApiJson<List<ModelDto>>, ApiError> {
    let items = daemon
        .list_models()
        .await?
        .into_iter()
        .filter(|m| filter.name.as_deref().is_none_or(|n| m.name == n))
        .filter(|m| {
            filter
                .source
                .as_deref()
                .is_none_or(|s| m.source.as_str() == s)
        })
        .map(ModelDto::from)
        .collect();
    Ok(ApiJson(List { items }))
}

/// Same as `GET /api/v1/models`, at the route the operator scripts use.
#[utoipa::path(get, path = "/api/model/list", tag = "models", params(ModelFilter),
    responses((status = 200, body = inline(List<ModelDto>)),
        (status = 400, description = "an unknown filter", body = ErrorBody)))]
pub async fn legacy_list_models(
    state: State<Daemon>,
    filter: ApiQuery<ModelFilter>,
) -> Result<ApiJson<List<ModelDto>>, ApiError> {
    list_models(state, filter).await
}

/// Registers a model. Nothing is written when validation fails.
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = CreateModelRequest,
    responses(
        (status = 201, body = ModelDto),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
        (status = 422, description = "invalid field", body = ErrorBody),
    ))]
pub async fn create_model(
    State(daemon): State<Daemon>,
    ApiJson(request): ApiJson<CreateModelRequest>,
) -> Result<(StatusCode, ApiJson<ModelDto>), ApiError> {
    let model = daemon.create_model(request.into()).await?;
    Ok((StatusCode::CREATED, ApiJson(model.into())))
}

/// The engine and context a model's estimate is for (`?engine=llamacpp&context_length=32768`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EstimateQuery {
    /// `vllm`, `sglang`, `llamacpp` or `ollama`; default: the engine the model most
    /// likely runs on (llama.cpp for GGUF, vLLM otherwise).
    #[param(pattern = "^(vllm|sglang|llamacpp|ollama)$")]
    pub engine: Option<String>,
    /// Tokens of context to size the KV cache for; default: the model's own.
    #[param(minimum = 1, maximum = 100000000)]
    pub context_length: Option<u32>,
}

/// One model, with its memory estimate on an engine and context of the caller's choice.
#[utoipa::path(get, path = "/api/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "model id, e.g. model-1a2b3c4d"), EstimateQuery),
    responses((status = 200, body = ModelDto), (status = 404, body = ErrorBody),
        (status = 400, description = "an unknown engine or a context out of range", body = ErrorBody)))]
pub async fn get_model(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EstimateQuery>,
) -> Result<ApiJson<ModelDto>, ApiError> {
    let model = daemon.get_model(&id).await?;
    if let Some(engine) = query.engine.as_deref()
        && !crate::engines::CATALOG.iter().any(|e| e.name == engine)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "engine '{}' is not one of {}",
                crate::domain::one_line(engine),
                crate::engines::Engines::names()
            ),
        ));
    }
    Ok(ApiJson(ModelDto::estimated_for(
        model,
        query.engine.as_deref(),
        query.context_length,
    )))
}

/// Deletes a model and answers with it.
#[utoipa::path(delete, path = "/api/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "model id, e.g. model-1a2b3c4d")),
    responses((status = 200, body = ModelDto), (status = 404, body = ErrorBody),
        (status = 409, description = "services still use the model; they are named", body = ErrorBody)))]
pub async fn delete_model(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<ApiJson<ModelDto>, ApiError> {
    Ok(ApiJson(daemon.delete_model(&id).await?.into()))
}

/// Downloads a Hugging Face model's files into the first model root, answering with its
/// progress as it goes: one JSON object per line (`application/x-ndjson`, as Ollama's
/// pull), the last `success` (with the path) or `failed` (with why). Closing the
/// connection stops it; pulling again resumes from what was fetched.
#[utoipa::path(post, path = "/api/v1/models/{id}/pull", tag = "models",
    params(("id" = String, Path, description = "model id, name or unique id prefix")),
    responses(
        (status = 200, description = "progress lines, one JSON object each", body = PullProgressDto, content_type = "application/x-ndjson"),
        (status = 404, description = "unknown model, or a repository the hub does not have", body = ErrorBody),
        (status = 409, description = "a pull of it runs already", body = ErrorBody),
        (status = 422, description = "not a Hugging Face model", body = ErrorBody),
        (status = 503, description = "the hub cannot be reached", body = ErrorBody),
        (status = 507, description = "not enough disk space for its files", body = ErrorBody),
    ))]
pub async fn pull_model(
    State(daemon): State<Daemon>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let updates = daemon.pull_model(&id).await?;
    let lines = tokio_stream::wrappers::ReceiverStream::new(updates).map(|update| {
        let mut line = serde_json::to_vec(&PullProgressDto::from(update)).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    Ok(axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_default())
}
