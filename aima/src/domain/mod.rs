//! Pure rules: models, services, ids, statuses, ports and validation. No I/O, no async runtime.

mod duration;
mod event;
mod failure;
mod gpu;
mod history;
mod id;
mod memory;
mod model;
mod restart;
mod service;
mod text;
mod traffic;

pub use duration::{DURATION_FORMS, parse_duration};
pub use event::{Event, EventKind, EventSubject, StartPhase};
pub use failure::{Failure, FailureCause};
pub use gpu::{
    DoesNotFit, Gpu, GpuClaim, GpuInventory, ProcessMemory, available_mib, bytes_to_mib, claim_mib,
    fitting_gpus, largest_fitting_fraction, memory_of_pids, mib, place, place_mib, place_sized,
    share_that_holds,
};
pub use history::{History, Minute};
pub use id::random_hex8;
pub use memory::{DEFAULT_CONTEXT, EngineMemory, Known, MemoryEstimate, ModelFacts, estimate};
pub use model::{Model, ModelId, ModelSource, ModelSpec, ModelStatus, NAME_MAX_CHARS};
pub use restart::{Backoff, HealthChecks, RestartPolicy, Restarts, Verdict, verdict};
pub use service::{
    EnvVar, Service, ServiceId, ServiceStatus, ServingPolicy, is_engine_name, lowest_free_port,
    service_of_model, validate_gpu_memory_utilization, validate_service_name,
};
pub use text::{error_line, is_unsafe_char, one_line, shorten};
pub use traffic::{RecentRequest, ServiceTraffic, Speed, TrafficSource, speed};

/// True for text that parses as a model or service id: names must not, so that a name
/// and an id can never be confused.
pub fn looks_like_an_id(text: &str) -> bool {
    text.parse::<ModelId>().is_ok() || text.parse::<ServiceId>().is_ok()
}

/// Input that breaks a domain rule. `field` is the JSON field / CLI flag at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
