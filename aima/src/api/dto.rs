//! Wire shapes of the API, shared with the CLI. Field names here are the contract of
//! DESIGN.md §4 and must not change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::daemon::{DaemonStatus, DeviceReport, ModelRequest, Recommendation, ServiceRequest};
use crate::domain::{Event, EventKind, EventSubject, Gpu, Model, Service};

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
    /// Bytes of the weights, read from the files or stated with `size_bytes`.
    pub size_bytes: Option<u64>,
    pub params: Option<u64>,
    /// `BF16`, `Q4_K`, `awq`…
    pub quantization: Option<String>,
    /// The longest context the model serves, read from its files or stated.
    pub context_length: Option<u32>,
    /// Everything AIMA read or was told about the model, each number with where it came
    /// from (`{"layers": {"value": 32, "from": "config.json: num_hidden_layers"}}`).
    #[schema(value_type = Object)]
    pub facts: serde_json::Value,
    /// GPU memory on the engine a service of this model would most likely use (llama.cpp
    /// for GGUF, vLLM otherwise; `?engine=` for another); null while the size is unknown.
    pub estimate: Option<EstimateDto>,
}

impl From<Model> for ModelDto {
    fn from(m: Model) -> Self {
        Self::estimated_for(m, None, None)
    }
}

impl ModelDto {
    /// The model with its estimate on `engine` (default: the one it most likely runs on)
    /// for `context` tokens (default: its own).
    pub fn estimated_for(m: Model, engine: Option<&str>, context: Option<u32>) -> Self {
        let spec = crate::engines::CATALOG
            .iter()
            .find(|e| e.name == engine.unwrap_or_else(|| crate::engines::default_engine_for(&m)));
        let engine = spec.map_or("vllm", |e| e.name);
        let estimate = spec
            .and_then(|e| crate::domain::estimate(&m.facts, &e.memory, context))
            .map(|e| EstimateDto::new(engine, e, measurements(&m.facts, engine)));
        let facts = &m.facts;
        Self {
            id: m.id.to_string(),
            size_bytes: facts.size_bytes.as_ref().map(|k| k.value),
            params: facts.params.as_ref().map(|k| k.value),
            quantization: facts.quantization.as_ref().map(|k| k.value.clone()),
            context_length: facts.context_length.as_ref().map(|k| k.value),
            facts: serde_json::to_value(facts).unwrap_or_default(),
            estimate,
            name: m.name,
            source: m.source.to_string(),
            repo: m.repo,
            path: m.path,
            status: m.status.as_str().to_owned(),
            created_at: m.created_at,
        }
    }
}

/// What engines of a model held here: on a GPU, and in host memory.
fn measurements(facts: &crate::domain::ModelFacts, engine: &str) -> (Option<u64>, Option<u64>) {
    (facts.measured_on(engine), facts.measured_in_ram(engine))
}

/// GPU memory a model needs on one engine, in bytes, with its parts and assumptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EstimateDto {
    /// The engine the estimate is for.
    pub engine: String,
    pub weights: u64,
    pub kv_cache: u64,
    /// The engine's CUDA context, graphs, activations and buffers.
    pub overhead: u64,
    pub total: u64,
    /// Tokens of context the KV cache is sized for.
    pub context_length: u32,
    /// Sequences of that context held at once.
    pub sequences: u32,
    /// What the numbers take for granted.
    pub assumptions: Vec<String>,
    /// What a running engine of this model really held on this host's GPU (NVML), once
    /// one ran; null before.
    pub measured: Option<u64>,
    /// What a running engine of this model held in host memory when it ran on the CPU
    /// (its container's cgroup), once one ran; null before.
    pub measured_ram: Option<u64>,
}

impl EstimateDto {
    pub fn new(
        engine: &str,
        e: crate::domain::MemoryEstimate,
        (measured, measured_ram): (Option<u64>, Option<u64>),
    ) -> Self {
        Self {
            measured,
            measured_ram,
            engine: engine.to_owned(),
            weights: e.weights,
            kv_cache: e.kv_cache,
            overhead: e.overhead,
            total: e.total,
            context_length: e.context_length,
            sequences: e.sequences,
            assumptions: e.assumptions,
        }
    }
}

/// Body of `POST /api/v1/models`. Remote sources take `repo`; `local` takes `path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    /// Printable text, unique among models, not shaped like an id.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// `ollama`, `huggingface`, `modelscope` or `local`.
    #[schema(pattern = "^(ollama|huggingface|modelscope|local)$")]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Absolute path on the daemon's host; must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Bytes of the weights, for a model whose files AIMA cannot read (remote sources);
    /// overrides what the files say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub size_bytes: Option<u64>,
    /// The longest context to plan for, in tokens; overrides the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000000)]
    pub context_length: Option<u32>,
}

impl From<CreateModelRequest> for ModelRequest {
    fn from(r: CreateModelRequest) -> Self {
        Self {
            name: r.name,
            source: r.source,
            repo: r.repo,
            path: r.path,
            size_bytes: r.size_bytes,
            context_length: r.context_length,
        }
    }
}

/// `GET /api/v1/health`: the daemon answers, and whether its database takes writes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database cannot be written (HTTP 503).
    #[schema(example = "ok")]
    pub status: String,
    /// Why the daemon is degraded (`database … is not writable: the disk is full …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub version: String,
    /// The commit the daemon was built from.
    pub commit: String,
    /// The day the daemon was built (UTC), `YYYY-MM-DD`.
    pub build_date: String,
}

/// A service's logs as JSON (`/api/service/logs`, or `Accept: application/json`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogsDto {
    pub service_id: String,
    /// One entry per line, oldest first, without line ends.
    pub lines: Vec<String>,
}

/// `GET /api/v1/settings`: the settings only the daemon's own environment and config
/// file change, as it uses them now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DaemonSettingsDto {
    /// Where it reaches Docker (`DOCKER_HOST`).
    pub docker_host: String,
    /// `AIMA_PORT_RANGE`, `FIRST-LAST`.
    pub port_range: String,
    /// `AIMA_PUBLISH_ADDR`.
    pub publish_addr: String,
    /// `AIMA_MODEL_ROOTS`.
    pub model_roots: Vec<String>,
    /// The image of each engine (`AIMA_ENGINE_IMAGE_<ENGINE>` or the catalog's).
    pub engine_images: std::collections::BTreeMap<String, String>,
    /// `AIMA_SIMULATE_GPUS` as given (`NAME:MiB,…`); null: real NVML.
    pub simulated_gpus: Option<String>,
}

/// `GET /api/v1/status`: what `aima status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusDto {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub home: String,
    pub database: String,
    /// `aima.instance` label on this home's containers.
    pub instance: String,
    pub docker: DockerStatus,
    /// Detected GPUs (real through NVML, or simulated).
    pub gpus: Vec<GpuDto>,
    /// Why there is no GPU, when there is none.
    pub gpus_none_reason: Option<String>,
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
            instance: s.instance,
            docker,
            gpus: s
                .gpus
                .gpus
                .iter()
                .map(|g| GpuDto::new(g, s.gpus.simulated, 0, Vec::new()))
                .collect(),
            gpus_none_reason: s.gpus.none_reason,
        }
    }
}

/// A service: one engine serving one model on one host port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceDto {
    /// `svc-{engine}-{8 hex}`.
    #[schema(example = "svc-vllm-1a2b3c4d")]
    pub id: String,
    pub name: String,
    pub model_id: String,
    pub engine: String,
    /// Host port, held from create until delete.
    pub port: u16,
    /// `creating`, `starting`, `running`, `stopping`, `stopped`, `failed` or `backoff`.
    pub status: String,
    pub status_reason: Option<String>,
    pub container_id: Option<String>,
    pub gpu_memory_utilization: Option<f64>,
    /// The GPU it is pinned to (`--gpu N`); null: where its model fits best.
    pub gpu: Option<u32>,
    /// Its model's name (the name the gateway routes by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The gateway stops the engine after this long without requests (`5m`); null: never.
    pub idle_timeout: Option<String>,
    /// How long a gateway request waits for the engine to load (`10m`).
    pub load_timeout: String,
    /// Requests the gateway passes to the engine at once; null: no limit.
    pub max_concurrency: Option<u32>,
    /// Never stopped to make room for another engine.
    pub pinned: bool,
    /// Where a request for its model goes when none of the model's services runs.
    pub default: bool,
    /// `no`, `on-failure:MAX` or `always`.
    pub restart: String,
    /// Restarts the restart policy began, ever.
    pub restarts: u32,
    /// Failures since the engine last ran healthy for long; MAX counts these.
    pub restarts_in_a_row: u32,
    /// When the pending restart is due (status `backoff`).
    pub next_restart_at: Option<DateTime<Utc>>,
    /// Exit code of the engine that stopped last, when it exited.
    pub last_exit_code: Option<i64>,
    /// Longest a start may take (`30m`); the engine's default unless set.
    pub start_timeout: Option<String>,
    pub health_interval: String,
    pub health_retries: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// GPU memory its model needs on this engine; null while the model's size is unknown.
    pub estimate: Option<EstimateDto>,
}

impl ServiceDto {
    /// The service with its model's memory estimate on its engine.
    pub fn with_model(service: Service, model: Option<&Model>) -> Self {
        let estimate = model.and_then(|m| {
            let spec = crate::engines::CATALOG
                .iter()
                .find(|e| e.name == service.engine)?;
            crate::domain::estimate(&m.facts, &spec.memory, None)
                .map(|e| EstimateDto::new(spec.name, e, measurements(&m.facts, spec.name)))
        });
        Self {
            estimate,
            model_name: model.map(|m| m.name.clone()),
            ..Self::from(service)
        }
    }
}

impl From<Service> for ServiceDto {
    fn from(s: Service) -> Self {
        Self {
            id: s.id.to_string(),
            name: s.name,
            model_id: s.model_id.to_string(),
            engine: s.engine,
            port: s.port,
            status: s.status.to_string(),
            status_reason: s.status_reason,
            container_id: s.container_id,
            gpu_memory_utilization: s.gpu_memory_utilization,
            gpu: s.gpu_index,
            model_name: None,
            idle_timeout: s
                .serving
                .idle_timeout
                .map(|d| humantime::format_duration(d).to_string()),
            load_timeout: humantime::format_duration(s.serving.load_timeout).to_string(),
            max_concurrency: s.serving.max_concurrency,
            pinned: s.serving.pinned,
            default: s.serving.default,
            restart: s.restart.to_string(),
            restarts: s.restarts.total,
            restarts_in_a_row: s.restarts.in_a_row,
            next_restart_at: s.restarts.next_at,
            last_exit_code: s.restarts.last_exit_code,
            start_timeout: s
                .health
                .start_timeout
                .map(|d| humantime::format_duration(d).to_string()),
            health_interval: humantime::format_duration(s.health.interval).to_string(),
            health_retries: s.health.retries,
            created_at: s.created_at,
            updated_at: s.updated_at,
            estimate: None,
        }
    }
}

/// Body of `POST /api/v1/services`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceRequest {
    /// The model's id, name or a unique prefix of its id.
    #[schema(min_length = 1)]
    pub model_id: String,
    /// `vllm`, `sglang`, `llamacpp` or `ollama`.
    #[schema(pattern = "^(vllm|sglang|llamacpp|ollama)$")]
    pub engine_type: String,
    /// Printable text, unique among services, not shaped like an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
    /// Host port inside the daemon's AIMA_PORT_RANGE; the lowest free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// The share of the GPU's memory the engine may take, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub gpu_memory_utilization: Option<f64>,
    /// `KEY=VALUE` entries passed to the engine container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Stop the engine after this long without gateway requests (`600` seconds, `30s`,
    /// `5m`); default never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^([1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub idle_timeout: Option<String>,
    /// How long a gateway request waits for the engine to load (`600` seconds, `10m`);
    /// default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^([1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub load_timeout: Option<String>,
    /// Requests passed to the engine at once; the rest wait their turn. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrency: Option<u32>,
    /// Never stop this service to make room for another engine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// Send requests for the model here when none of its services runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// What AIMA does when the engine stops on its own: `no`, `on-failure[:MAX]`
    /// (default `on-failure:5`) or `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(no|always|on-failure(:[1-9][0-9]{0,8})?)$")]
    pub restart: Option<String>,
    /// Longest a start may take until the engine answers (`20m`); default the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^([1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub start_timeout: Option<String>,
    /// How often a running engine is probed (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[1-9][0-9]{0,5}(s|m|h)?$")]
    pub health_interval: Option<String>,
    /// Missed probes in a row before a running engine counts as failed (5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub health_retries: Option<u32>,
    /// Pin it to this GPU (its index in `aima device detect`); default: the GPU where its
    /// model fits best, as `recommend` ranks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1023)]
    pub gpu: Option<u32>,
    /// When a service like it exists (the same name, or else the same model and engine),
    /// answer with that one (200) instead of creating another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_not_exists: bool,
}

/// Body of `PATCH /api/v1/services/{id}`: only the settings given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateServiceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub gpu_memory_utilization: Option<f64>,
    /// Replaces the whole environment (`KEY=VALUE` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `5m` or bare seconds (`300`); `never` (or empty) clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^(|never|[1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^([1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub load_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(no|always|on-failure(:[1-9][0-9]{0,8})?)$")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^([1-9][0-9]{0,5}|[1-9][0-9]{0,5}(ms|s|m|h|d)( [1-9][0-9]{0,5}(ms|s|m|h|d))*)$"
    )]
    pub start_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[1-9][0-9]{0,5}(s|m|h)?$")]
    pub health_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub health_retries: Option<u32>,
    /// Pin it to this GPU (`0`, `1`, …), or `any` to let its model's size place it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(any|0|[1-9][0-9]{0,2})$")]
    pub gpu: Option<String>,
    /// A new host port, while the engine does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

impl TryFrom<UpdateServiceRequest> for crate::daemon::ServiceUpdate {
    type Error = crate::domain::Invalid;
    fn try_from(r: UpdateServiceRequest) -> Result<Self, Self::Error> {
        let gpu = match r.gpu.as_deref().map(str::trim) {
            None => None,
            Some("any") => Some(None),
            Some(text) => Some(Some(text.parse::<u32>().map_err(|_| {
                crate::domain::Invalid::new(
                    "gpu",
                    format!("gpu '{text}' is not a GPU index; give 0, 1, … (see 'aima device detect') or any"),
                )
            })?)),
        };
        Ok(Self {
            gpu,
            port: r.port,
            gpu_memory_utilization: r.gpu_memory_utilization,
            env: r.env,
            idle_timeout: r.idle_timeout,
            load_timeout: r.load_timeout,
            max_concurrency: r.max_concurrency,
            pinned: r.pinned,
            default: r.default,
            restart: r.restart,
            start_timeout: r.start_timeout,
            health_interval: r.health_interval,
            health_retries: r.health_retries,
        })
    }
}

/// Answer of `PATCH /api/v1/services/{id}`: the service, and which of the changed
/// settings wait for its next start (a running engine keeps its container).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdatedServiceDto {
    pub service: ServiceDto,
    pub applies_at_next_start: Vec<String>,
}

impl From<CreateServiceRequest> for ServiceRequest {
    fn from(r: CreateServiceRequest) -> Self {
        Self {
            model_id: r.model_id,
            engine: r.engine_type,
            name: r.name,
            port: r.port,
            gpu_memory_utilization: r.gpu_memory_utilization,
            env: r.env,
            idle_timeout: r.idle_timeout,
            load_timeout: r.load_timeout,
            max_concurrency: r.max_concurrency,
            pinned: r.pinned,
            default: r.default,
            restart: r.restart,
            start_timeout: r.start_timeout,
            health_interval: r.health_interval,
            health_retries: r.health_retries,
            gpu: r.gpu,
        }
    }
}

/// One service event, as served by the SSE streams and `aima service events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventDto {
    pub seq: i64,
    /// The service the event is about; absent for a model's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// The model the event is about (`created`, `deleted`); absent for a service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    pub time: DateTime<Utc>,
    /// `phase`, `status`, `note`, `created`, `restarted` or `deleted`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub message: String,
}

impl From<Event> for EventDto {
    fn from(e: Event) -> Self {
        let (kind, phase, status) = match e.kind {
            EventKind::Phase(p) => ("phase", Some(p.to_string()), None),
            EventKind::Status(s) => ("status", None, Some(s.to_string())),
            EventKind::Note => ("note", None, None),
            EventKind::Created => ("created", None, None),
            EventKind::Restarted => ("restarted", None, None),
            EventKind::Deleted => ("deleted", None, None),
        };
        let (service_id, model_id) = match &e.subject {
            EventSubject::Service(id) => (Some(id.to_string()), None),
            EventSubject::Model(id) => (None, Some(id.to_string())),
        };
        Self {
            seq: e.seq,
            service_id,
            model_id,
            time: e.at,
            kind: kind.to_owned(),
            phase,
            status,
            message: e.message,
        }
    }
}

/// One GPU: identity, memory in MiB, utilization, and the AIMA services placed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuDto {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub memory_free_mib: u64,
    /// Memory claimed by starting and running AIMA services.
    pub memory_claimed_mib: u64,
    pub utilization_percent: Option<u32>,
    pub simulated: bool,
    pub services: Vec<String>,
}

impl GpuDto {
    fn new(g: &Gpu, simulated: bool, claimed: u64, services: Vec<String>) -> Self {
        Self {
            index: g.index,
            uuid: g.uuid.clone(),
            name: g.name.clone(),
            memory_total_mib: g.memory_total_mib,
            memory_used_mib: g.memory_used_mib,
            memory_free_mib: g.memory_free_mib,
            memory_claimed_mib: claimed,
            utilization_percent: g.utilization_percent,
            simulated,
            services,
        }
    }
}

/// `GET /api/v1/devices`: the host's NVIDIA GPUs, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DevicesDto {
    pub gpus: Vec<GpuDto>,
    /// True when the GPUs come from `AIMA_SIMULATE_GPUS`.
    pub simulated: bool,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// Why no GPU was found (for example "the NVIDIA driver library is not installed").
    pub none_reason: Option<String>,
}

impl From<DeviceReport> for DevicesDto {
    fn from(r: DeviceReport) -> Self {
        let simulated = r.inventory.simulated;
        Self {
            gpus: r
                .gpus
                .iter()
                .map(|v| GpuDto::new(&v.gpu, simulated, v.claimed_mib, v.services.clone()))
                .collect(),
            simulated,
            driver_version: r.inventory.driver_version,
            cuda_version: r.inventory.cuda_version,
            none_reason: r.inventory.none_reason,
        }
    }
}

/// A loaded service, as `aima ps` shows it: what runs, where, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadedDto {
    pub id: String,
    pub name: String,
    /// The model's name.
    pub model: String,
    pub engine: String,
    pub port: u16,
    /// `starting` or `running`.
    pub status: String,
    /// The GPU it is placed on (index), if any.
    pub gpu: Option<u32>,
    /// The GPU memory it claims.
    pub gpu_memory_mib: Option<u64>,
    /// The host memory it claims, when its engine runs on the CPU.
    pub host_memory_mib: Option<u64>,
    /// Gateway requests being answered now.
    pub in_flight: usize,
    /// When the last gateway request ended.
    pub last_request_at: Option<DateTime<Utc>>,
    pub idle_timeout: Option<String>,
    /// When the gateway unloads it unless a request comes first; null: never, or not
    /// while requests are in flight.
    pub unload_at: Option<DateTime<Utc>>,
    /// Completion tokens per second of its answers in the last 5 minutes.
    pub tokens_per_second: Option<f64>,
    /// Mean time to the first token of its streamed answers in the last 5 minutes.
    pub time_to_first_token_ms: Option<u64>,
}

/// One finished gateway request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestDto {
    /// When it arrived.
    pub time: DateTime<Utc>,
    pub model: String,
    /// The service that answered; empty when none was found.
    pub service: String,
    pub status: u16,
    pub duration_ms: u64,
    /// From arrival to the first byte of the answer (the first token of a stream).
    pub time_to_first_token_ms: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

impl From<crate::domain::RecentRequest> for RequestDto {
    fn from(r: crate::domain::RecentRequest) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            time: r.at,
            model: r.model,
            service: r.service,
            status: r.status,
            duration_ms: ms(r.duration),
            time_to_first_token_ms: r.first_byte.map(ms),
            prompt_tokens: r.tokens.map(|(p, _)| p),
            completion_tokens: r.tokens.map(|(_, c)| c),
        }
    }
}

/// Whether one model fits now, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelAdviceDto {
    pub model_id: String,
    pub model_name: String,
    pub fits: bool,
    pub engine: String,
    pub gpu_index: Option<u32>,
    pub gpu_memory_utilization: Option<f64>,
    pub reason: String,
    /// What the model needs on `engine`; null while its size is unknown.
    pub estimate: Option<EstimateDto>,
    /// Every GPU it fits on now, the one with the most memory left first.
    pub placements: Vec<PlacementDto>,
}

/// One GPU a model fits on now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlacementDto {
    pub gpu_index: u32,
    /// The share a vLLM or SGLang service would take there; null for an engine that
    /// takes what it needs (llama.cpp, Ollama).
    pub gpu_memory_utilization: Option<f64>,
    pub memory_left_mib: u64,
}

/// `GET /api/v1/recommend`: per GPU its free and claimed memory; per model what fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendDto {
    pub devices: DevicesDto,
    pub models: Vec<ModelAdviceDto>,
}

impl From<Recommendation> for RecommendDto {
    fn from(r: Recommendation) -> Self {
        Self {
            devices: r.devices.into(),
            models: r
                .models
                .into_iter()
                .map(|m| ModelAdviceDto {
                    estimate: m
                        .estimate
                        .map(|e| EstimateDto::new(&m.engine, e, (m.measured, None))),
                    placements: m
                        .placements
                        .into_iter()
                        .map(|p| PlacementDto {
                            gpu_index: p.gpu_index,
                            gpu_memory_utilization: p.gpu_memory_utilization,
                            memory_left_mib: p.memory_left_mib,
                        })
                        .collect(),
                    model_id: m.model_id,
                    model_name: m.model_name,
                    fits: m.fits,
                    engine: m.engine,
                    gpu_index: m.gpu_index,
                    gpu_memory_utilization: m.gpu_memory_utilization,
                    reason: m.reason,
                })
                .collect(),
        }
    }
}

/// One line of a pull's progress (`POST /api/v1/models/{id}/pull`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PullProgressDto {
    /// `downloading`, then `success` or `failed`.
    pub status: String,
    /// The file being downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Bytes of the file done, and its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes of the whole pull done, and its size (on `success`: every byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_completed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_total: Option<u64>,
    /// Where the files are, on `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why it stopped, on `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<crate::daemon::PullUpdate> for PullProgressDto {
    fn from(update: crate::daemon::PullUpdate) -> Self {
        use crate::daemon::PullUpdate;
        let empty = Self {
            status: String::new(),
            file: None,
            completed: None,
            total: None,
            all_completed: None,
            all_total: None,
            path: None,
            error: None,
        };
        match update {
            PullUpdate::Progress {
                file,
                completed,
                total,
                all_completed,
                all_total,
            } => Self {
                status: "downloading".into(),
                file: Some(file),
                completed: Some(completed),
                total: Some(total),
                all_completed: Some(all_completed),
                all_total: Some(all_total),
                ..empty
            },
            PullUpdate::Done {
                path,
                files: _,
                bytes,
            } => Self {
                status: "success".into(),
                all_completed: Some(bytes),
                all_total: Some(bytes),
                path: Some(path),
                ..empty
            },
            PullUpdate::Failed(why) => Self {
                status: "failed".into(),
                error: Some(why),
                ..empty
            },
        }
    }
}

/// The last hour a minute at a time (`GET /api/v1/history`), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryDto {
    pub minutes: Vec<MinuteDto>,
}

/// One minute of the gateway's traffic and the services' memory claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MinuteDto {
    /// When the minute began.
    pub time: DateTime<Utc>,
    /// Gateway requests that ended in it, and those answered with an error (≥ 400).
    pub requests: u64,
    pub errors: u64,
    pub completion_tokens: u64,
    /// Completion tokens per second of generating; null without tokens.
    pub tokens_per_second: Option<f64>,
    /// The most GPU memory services claimed on each GPU (index → MiB).
    pub gpu_claimed_mib: std::collections::BTreeMap<u32, u64>,
    /// The most host memory engines on the CPU claimed, MiB.
    pub host_claimed_mib: Option<u64>,
}

impl From<crate::domain::Minute> for MinuteDto {
    fn from(m: crate::domain::Minute) -> Self {
        Self {
            time: m.start,
            requests: m.requests,
            errors: m.errors,
            completion_tokens: m.completion_tokens,
            tokens_per_second: m.tokens_per_second().map(|t| (t * 10.0).round() / 10.0),
            gpu_claimed_mib: m.gpu_claimed_mib,
            host_claimed_mib: m.host_claimed_mib,
        }
    }
}
