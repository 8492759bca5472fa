use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use tokio::sync::OnceCell;

use super::{ContainerRuntime, RuntimeError, RuntimeVersion};

/// How long `ping` waits: long enough for a loaded engine, short enough for a person.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The Docker engine named by `DOCKER_HOST` (or the default socket), through bollard.
pub struct DockerRuntime {
    address: String,
    /// The client, created and version-negotiated on first success. A failed attempt is
    /// retried on the next call, so the daemon recovers when Docker comes up later.
    client: OnceCell<Docker>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("address", &self.address)
            .finish()
    }
}

impl DockerRuntime {
    /// Uses the same settings as the docker CLI (`DOCKER_HOST`), connecting lazily.
    pub fn from_env() -> Self {
        let address = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        Self {
            address,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults().map_err(|e| self.unreachable(&e))?;
                // The engine here may speak an older API than bollard's default.
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unreachable(&e))
            })
            .await
    }

    fn unreachable(&self, err: &bollard::errors::Error) -> RuntimeError {
        RuntimeError::Unreachable {
            address: self.address.clone(),
            reason: plain_reason(err),
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn address(&self) -> &str {
        &self.address
    }

    async fn ping(&self) -> Result<RuntimeVersion, RuntimeError> {
        let attempt = async {
            let docker = self.client().await?;
            let version = docker.version().await.map_err(|e| self.unreachable(&e))?;
            Ok(RuntimeVersion {
                server_version: version.version.unwrap_or_default(),
                api_version: docker.client_version().to_string(),
            })
        };
        tokio::time::timeout(PING_TIMEOUT, attempt)
            .await
            .map_err(|_| RuntimeError::Timeout {
                address: self.address.clone(),
                timeout_ms: PING_TIMEOUT.as_millis(),
            })?
    }
}

/// bollard's messages wrap the cause in client jargon ("Error in the hyper legacy
/// client"); the innermost cause ("Connection refused") is what an operator needs.
fn plain_reason(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match err {
        E::SocketNotFoundError(path) => {
            format!("socket {path} does not exist; is the Docker engine running?")
        }
        E::DockerResponseServerError {
            status_code,
            message,
        } => format!("engine answered {status_code}: {message}"),
        other => {
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let text = cause.to_string();
            let text = text
                .strip_suffix(" (os error 111)")
                .unwrap_or(&text)
                .to_lowercase();
            if other.source().is_none() {
                return other.to_string().to_lowercase();
            }
            text
        }
    }
}
