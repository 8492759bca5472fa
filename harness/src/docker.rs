//! Connecting to the Docker engine the way the docker CLI does, with errors an operator
//! can act on instead of bollard's client jargon.

use std::error::Error as _;

use anyhow::anyhow;
use bollard::Docker;

const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Where `connect` looks: `DOCKER_HOST`, else the default socket.
pub fn address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}

/// Connects and negotiates the API version (the engine here may be older than
/// bollard's default, e.g. 20.10 speaks 1.41).
pub async fn connect() -> anyhow::Result<Docker> {
    let unreachable = |err: &bollard::errors::Error| {
        anyhow!(
            "cannot reach the docker engine at {}: {}; start it or point DOCKER_HOST at it",
            address(),
            plain_reason(err)
        )
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))
}

/// The part of a bollard error worth showing: the engine's own message, or the
/// innermost cause ("connection refused") rather than "error in the hyper legacy client".
pub fn plain_reason(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match err {
        E::SocketNotFoundError(path) => format!("socket {path} does not exist"),
        E::DockerResponseServerError {
            status_code,
            message,
        } => format!("engine answered {status_code}: {message}"),
        other if other.source().is_none() => other.to_string().to_lowercase(),
        other => {
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let text = cause.to_string().to_lowercase();
            text.strip_suffix(" (os error 111)")
                .map_or(text.clone(), str::to_owned)
        }
    }
}
