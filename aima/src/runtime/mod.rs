//! The container runtime boundary. Only this module speaks Docker.

mod docker;

pub use docker::DockerRuntime;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// What the engine says about itself when it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub server_version: String,
    pub api_version: String,
}

/// Failures talking to the container runtime, already translated into plain words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "docker at {address} is unreachable: {reason}; check DOCKER_HOST and that the Docker engine runs"
    )]
    Unreachable {
        address: String,
        reason: String,
        /// A refused connection may pass (the engine restarting); a malformed address won't.
        transient: bool,
    },
    #[error("docker at {address} did not answer within {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u128 },
    #[error("{0} not found")]
    NotFound(String),
    /// Docker could not publish the host port: something else holds it.
    #[error("docker could not publish host port: {0}")]
    PortAllocated(String),
    /// The engine refused for a reason that may pass (a name still being released, a 5xx).
    #[error("docker: {0}")]
    Transient(String),
    #[error("docker: {0}")]
    Failed(String),
}

impl RuntimeError {
    /// Worth another attempt: the cause may go away by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transient(_) | Self::Timeout { .. } => true,
            Self::Unreachable { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Everything needed to create one engine container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub container_port: u16,
    pub host_port: u16,
    /// The host address the port is published on (`AIMA_PUBLISH_ADDR`).
    pub host_ip: std::net::IpAddr,
    /// A GPU (by uuid) to hand to the container through the NVIDIA runtime.
    pub gpu_device: Option<String>,
    /// Host paths mounted read-only: (host path, path in the container).
    pub read_only_mounts: Vec<(String, String)>,
    /// Size of the container's `/dev/shm`, when the engine needs more than the
    /// runtime's default (Docker's is 64 MiB).
    pub shm_size_bytes: Option<u64>,
}

/// A container as the runtime sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Host ports the container publishes.
    pub host_ports: Vec<u16>,
}

/// A lifecycle event of a labelled container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEvent {
    pub container_id: String,
    /// Docker's action: `die`, `destroy`, `oom`, `start`…
    pub action: String,
    pub labels: BTreeMap<String, String>,
    pub exit_code: Option<i64>,
}

/// Which output of a container to read, as `docker logs` takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Keep reading new output.
    pub follow: bool,
    /// Only output written at or after this time (unix seconds).
    pub since_unix_secs: Option<i64>,
    /// Each line begins with the RFC 3339 time Docker recorded it at.
    pub timestamps: bool,
}

/// A chunk of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stderr: bool,
    pub text: String,
}

/// A place where engine containers run. The daemon is written against this trait so that
/// a Kubernetes implementation could stand beside Docker.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Where the runtime is, as an operator would write it (`unix:///var/run/docker.sock`).
    fn address(&self) -> &str;

    /// Checks that the runtime answers, within a short deadline.
    async fn ping(&self) -> Result<RuntimeVersion, RuntimeError>;

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;

    /// The labels of a local image, or `None` when the image is not on this host.
    async fn image_labels(
        &self,
        image: &str,
    ) -> Result<Option<BTreeMap<String, String>>, RuntimeError>;

    /// Pulls an image, reporting progress lines as they come.
    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), RuntimeError>;

    /// Creates a container and returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// Resolves with the exit code once the container stops.
    async fn wait_exit(&self, id: &str) -> Result<i64, RuntimeError>;

    /// The container named or identified by `name_or_id`, if it exists.
    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>, RuntimeError>;

    /// Containers (running or not) carrying every label in `labels`.
    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// Host process ids of a running container's processes (to match NVML's
    /// per-process GPU memory); none where the runtime cannot tell.
    async fn container_pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let _ = id;
        Ok(Vec::new())
    }

    /// Bytes of host memory a running container holds now, as `docker stats` counts
    /// them (its cgroup's usage less the page cache it could drop); none where the
    /// runtime cannot tell.
    async fn memory_usage(&self, id: &str) -> Result<Option<u64>, RuntimeError> {
        let _ = id;
        Ok(None)
    }

    /// Containers of anyone that publish `host_port`.
    async fn publishers_of(&self, host_port: u16) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// Stops the container (SIGTERM, then SIGKILL after `grace`) and keeps it; a missing
    /// or stopped container is not an error.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Stops (as [`ContainerRuntime::stop`]) and removes the container; a missing
    /// container is not an error.
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// The output `query` selects: the last lines, since a time, then new output while
    /// it follows.
    async fn logs(
        &self,
        id: &str,
        query: LogQuery,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError>;

    /// Container events for containers carrying every label in `labels`, starting at
    /// `since_unix_secs` when given (Docker replays what happened since then).
    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
        since_unix_secs: Option<i64>,
    ) -> Result<BoxStream<'static, Result<ContainerEvent, RuntimeError>>, RuntimeError>;
}
