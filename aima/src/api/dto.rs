//! Wire shapes of the API, shared with the CLI. Field names here are the contract of
//! DESIGN.md §4 and must not change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::daemon::{DaemonStatus, ModelRequest};
use crate::domain::Model;

/// `{"error":{"code","message"}}`, the body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_argument`.
    pub code: String,
    /// One line for people: what went wrong and how to fix it.
    pub message: String,
}

/// `{"items":[…]}`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelDto {
    /// `model-` + 8 hex digits.
    #[schema(example = "model-1a2b3c4d")]
    pub id: String,
    pub name: String,
    /// `ollama`, `huggingface`, `modelscope` or `local`.
    pub source: String,
    pub repo: Option<String>,
    pub path: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<Model> for ModelDto {
    fn from(m: Model) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name,
            source: m.source.to_string(),
            repo: m.repo,
            path: m.path,
            status: m.status.as_str().to_owned(),
            created_at: m.created_at,
        }
    }
}

/// Body of `POST /api/v1/models`. Remote sources take `repo`; `local` takes `path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    pub name: String,
    /// `ollama`, `huggingface`, `modelscope` or `local`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Absolute path on the daemon's host; must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl From<CreateModelRequest> for ModelRequest {
    fn from(r: CreateModelRequest) -> Self {
        Self {
            name: r.name,
            source: r.source,
            repo: r.repo,
            path: r.path,
        }
    }
}

/// `GET /api/v1/health`: the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `GET /api/v1/status`: what `aima status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusDto {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub home: String,
    pub database: String,
    pub docker: DockerStatus,
    /// Detected GPUs; empty until GPU detection lands.
    pub gpus: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DockerStatus {
    pub address: String,
    pub reachable: bool,
    pub server_version: Option<String>,
    pub api_version: Option<String>,
    pub error: Option<String>,
}

impl From<DaemonStatus> for StatusDto {
    fn from(s: DaemonStatus) -> Self {
        let docker = match s.docker {
            Ok(v) => DockerStatus {
                address: s.docker_address,
                reachable: true,
                server_version: Some(v.server_version),
                api_version: Some(v.api_version),
                error: None,
            },
            Err(e) => DockerStatus {
                address: s.docker_address,
                reachable: false,
                server_version: None,
                api_version: None,
                error: Some(e.to_string()),
            },
        };
        Self {
            version: s.version.to_owned(),
            pid: s.pid,
            uptime_secs: s.uptime_secs,
            home: s.home.display().to_string(),
            database: s.database.display().to_string(),
            docker,
            gpus: Vec::new(),
        }
    }
}
