//! The container runtime boundary. Only this module speaks Docker.

mod docker;

pub use docker::DockerRuntime;

use async_trait::async_trait;

/// What the engine says about itself when it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub server_version: String,
    pub api_version: String,
}

/// Failures talking to the container runtime, already translated into plain words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("docker at {address} is unreachable: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("docker at {address} did not answer within {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u128 },
}

/// A place where engine containers run. The daemon is written against this trait so that
/// a Kubernetes implementation could stand beside Docker.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Where the runtime is, as an operator would write it (`unix:///var/run/docker.sock`).
    fn address(&self) -> &str;

    /// Checks that the runtime answers, within a short deadline.
    async fn ping(&self) -> Result<RuntimeVersion, RuntimeError>;
}
