use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceRequest, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, LogChunk, LogQuery,
    RuntimeError, RuntimeVersion,
};

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
        unreachable(&self.address, err)
    }

    /// The containers a listing names, inspected for the full picture (exit code, args);
    /// one removed in between is skipped.
    async fn find(
        &self,
        options: bollard::query_parameters::ListContainersOptions,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let summaries = self
            .client()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(e))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            if let Some(info) = self.inspect(&id).await? {
                containers.push(info);
            }
        }
        Ok(containers)
    }

    fn error(&self, err: bollard::errors::Error) -> RuntimeError {
        translate(&self.address, err)
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
            let version = docker.version().await.map_err(|e| self.error(e))?;
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

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self
            .client()
            .await?
            .inspect_image(image)
            .await
            .map_err(|e| self.error(e))
        {
            Ok(_) => Ok(true),
            Err(RuntimeError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn image_labels(
        &self,
        image: &str,
    ) -> Result<Option<BTreeMap<String, String>>, RuntimeError> {
        match self
            .client()
            .await?
            .inspect_image(image)
            .await
            .map_err(|e| self.error(e))
        {
            Ok(inspect) => Ok(Some(
                inspect
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            )),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| self.error(e))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Failed(format!(
                    "pull of {image} failed: {detail}"
                )));
            }
            let status = info.status.unwrap_or_default();
            let bytes = info
                .progress_detail
                .and_then(|p| Some(format!(" {}/{} bytes", p.current?, p.total?)))
                .unwrap_or_default();
            progress(format!(
                "{}{status}{bytes}",
                info.id.map(|id| format!("{id}: ")).unwrap_or_default()
            ));
        }
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let container_port = format!("{}/tcp", spec.container_port);
        let bindings = HashMap::from([(
            container_port.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.host_ip.to_string()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.args.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: Some(vec![container_port]),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: (!spec.read_only_mounts.is_empty()).then(|| {
                    spec.read_only_mounts
                        .iter()
                        .map(|(host, container)| format!("{host}:{container}:ro"))
                        .collect()
                }),
                device_requests: spec.gpu_device.as_ref().map(|uuid| {
                    vec![DeviceRequest {
                        driver: Some("nvidia".to_owned()),
                        device_ids: Some(vec![uuid.clone()]),
                        capabilities: Some(vec![vec!["gpu".to_owned()]]),
                        ..Default::default()
                    }]
                }),
                shm_size: spec.shm_size_bytes.and_then(|b| i64::try_from(b).ok()),
                // Never a restart policy: AIMA decides what runs, and a crash must be seen.
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.error(e))?;
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        docker
            .start_container(id, None)
            .await
            .map_err(|e| self.error(e))
    }

    async fn wait_exit(&self, id: &str) -> Result<i64, RuntimeError> {
        let docker = self.client().await?;
        let mut waits = docker.wait_container(id, None);
        match waits.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.error(e)),
            None => Err(RuntimeError::Failed(format!(
                "wait on container {id} ended without a status"
            ))),
        }
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        match docker
            .inspect_container(name_or_id, None)
            .await
            .map_err(|e| self.error(e))
        {
            Ok(response) => Ok(Some(container_info(response))),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label", label_filters(labels))]);
        self.find(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        )
        .await
    }

    async fn container_pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let docker = self.client().await?;
        let top = docker
            .top_processes(id, None)
            .await
            .map_err(|e| self.error(e))?;
        let column = top
            .titles
            .unwrap_or_default()
            .iter()
            .position(|t| t == "PID");
        let Some(column) = column else {
            return Ok(Vec::new());
        };
        Ok(top
            .processes
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row.get(column)?.parse().ok())
            .collect())
    }

    async fn memory_usage(&self, id: &str) -> Result<Option<u64>, RuntimeError> {
        let docker = self.client().await?;
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let Some(stats) = docker.stats(id, Some(options)).next().await else {
            return Ok(None);
        };
        let memory = stats.map_err(|e| self.error(e))?.memory_stats;
        Ok(memory.and_then(|m| {
            let stats = m.stats.unwrap_or_default();
            // cgroup v2 names the droppable cache inactive_file, v1 total_inactive_file.
            let cache = stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
                .copied()
                .unwrap_or(0);
            m.usage.map(|usage| usage.saturating_sub(cache))
        }))
    }

    async fn publishers_of(&self, host_port: u16) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("publish", vec![host_port.to_string()])]);
        self.find(
            ListContainersOptionsBuilder::new()
                .filters(&filters)
                .build(),
        )
        .await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let stop = StopContainerOptionsBuilder::new()
            .t(grace.as_secs().try_into().unwrap_or(i32::MAX))
            .build();
        match docker
            .stop_container(id, Some(stop))
            .await
            .map_err(|e| self.error(e))
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            // 304 "already stopped" and 409s are fine: a removal settles them.
            Err(RuntimeError::Transient(_)) | Err(RuntimeError::Failed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.stop(id, grace).await?;
        let docker = self.client().await?;
        let remove = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker
            .remove_container(id, Some(remove))
            .await
            .map_err(|e| self.error(e))
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn logs(
        &self,
        id: &str,
        query: LogQuery,
    ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
        let docker = self.client().await?.clone();
        let tail = query
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let mut options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(query.follow)
            .timestamps(query.timestamps)
            .tail(&tail);
        if let Some(since) = query.since_unix_secs {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let options = options.build();
        let address = self.address.clone();
        let stream = docker
            .logs(id, Some(options))
            .map_ok(|output| {
                use bollard::container::LogOutput;
                let (stderr, bytes) = match output {
                    LogOutput::StdErr { message } => (true, message),
                    LogOutput::StdOut { message }
                    | LogOutput::Console { message }
                    | LogOutput::StdIn { message } => (false, message),
                };
                LogChunk {
                    stderr,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                }
            })
            .map_err(move |e| translate(&address, e));
        Ok(stream.boxed())
    }

    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
        since_unix_secs: Option<i64>,
    ) -> Result<BoxStream<'static, Result<ContainerEvent, RuntimeError>>, RuntimeError> {
        let docker = self.client().await?.clone();
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("label", label_filters(labels)),
        ]);
        let mut options = EventsOptionsBuilder::new().filters(&filters);
        let since = since_unix_secs.map(|s| s.to_string());
        if let Some(since) = &since {
            options = options.since(since);
        }
        let options = options.build();
        let address = self.address.clone();
        let stream = docker
            .events(Some(options))
            .map_err(move |e| translate(&address, e))
            .try_filter_map(|message| async move {
                let Some(actor) = message.actor else {
                    return Ok(None);
                };
                let attributes: BTreeMap<String, String> =
                    actor.attributes.unwrap_or_default().into_iter().collect();
                Ok(Some(ContainerEvent {
                    container_id: actor.id.unwrap_or_default(),
                    action: message.action.unwrap_or_default(),
                    exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
                    labels: attributes,
                }))
            });
        Ok(stream.boxed())
    }
}

fn label_filters(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn container_info(response: ContainerInspectResponse) -> ContainerInfo {
    let config = response.config.unwrap_or_default();
    let state = response.state.unwrap_or_default();
    let host_ports = response
        .host_config
        .and_then(|h| h.port_bindings)
        .unwrap_or_default()
        .into_values()
        .flatten()
        .flatten()
        .filter_map(|b| b.host_port?.parse().ok())
        .collect();
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        args: config.cmd.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        host_ports,
    }
}

/// Maps bollard's errors onto ours, keeping Docker's own message where it is clear.
fn translate(address: &str, err: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => RuntimeError::NotFound(message),
            409 => RuntimeError::Transient(message),
            _ if message.contains("port is already allocated")
                || message.contains("address already in use") =>
            {
                RuntimeError::PortAllocated(message)
            }
            _ => RuntimeError::Failed(message),
        },
        E::RequestTimeoutError => RuntimeError::Timeout {
            address: address.to_owned(),
            timeout_ms: 0,
        },
        other => unreachable(address, &other),
    }
}

fn unreachable(address: &str, err: &bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    let malformed = matches!(
        err,
        E::URLParseError { .. } | E::InvalidURIError { .. } | E::InvalidURIPartsError { .. }
    );
    RuntimeError::Unreachable {
        address: address.to_owned(),
        reason: plain_reason(err),
        transient: !malformed,
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
