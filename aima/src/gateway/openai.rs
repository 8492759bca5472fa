//! The OpenAI wire shapes the gateway speaks itself: errors and the model list.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as OpenAI's API reports it: `{"error":{"message","type","code"}}`.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            retry_after: None,
        }
    }

    pub fn model_not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    /// The engine cannot serve now: a start failed, or it is not reachable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            code: Some("service_unavailable"),
            retry_after: None,
        }
    }

    /// The JSON body, also sent as an SSE `data:` event once a stream has begun.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {"message": self.message, "type": self.kind, "code": self.code}
        })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `GET /v1/models`: OpenAI's list shape; `aima` carries where each model stands.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Serialize)]
pub struct ModelEntry {
    /// The name to send as `model`.
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
    pub aima: ModelState,
}

#[derive(Debug, Serialize)]
pub struct ModelState {
    /// `running` when one of its services runs, else `starting`, else `stopped`.
    pub status: &'static str,
    pub model_id: String,
    /// Its services by name; each name is also a valid `model`.
    pub services: Vec<String>,
}
