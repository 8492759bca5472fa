//! Helpers shared by the integration tests: Docker, the stub image, containers that are
//! removed even when a test fails, and polling with deadlines.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures::StreamExt;
use harness::stub_image::{self, StubImage};

/// The stub binary cargo built for this test run.
pub const STUB_BINARY: &str = env!("CARGO_BIN_EXE_aima-stub-engine");
/// The port the stub listens on inside its container (vLLM's default).
pub const ENGINE_PORT: u16 = 8000;
/// Generous for a 2-core machine running tests in parallel; polling ends far sooner.
pub const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

pub async fn docker() -> Docker {
    harness::docker::connect()
        .await
        .expect("these tests need a running docker engine")
}

/// `aima-stub-engine:latest` for the binary under test; built at most once per run
/// (the library serializes concurrent callers).
pub async fn stub_image(docker: &Docker) -> StubImage {
    stub_image::ensure_stub_image(docker, Path::new(STUB_BINARY))
        .await
        .expect("the stub image builds")
}

/// A name no other test, run or process uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it yields a value, failing the test with `what` at the deadline.
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Force-removes a container on drop, so a failing test leaves nothing behind. Drop
/// cannot await, so removal runs on its own thread and runtime and is waited for.
pub struct ContainerGuard {
    pub id: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let id = self.id.clone();
        cleanup(async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(err) = docker().await.remove_container(&id, Some(options)).await {
                eprintln!("warning: could not remove test container {id}: {err}");
            }
        });
    }
}

/// Runs async cleanup from `Drop`, which cannot await: on its own thread and runtime,
/// waited for.
fn cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let removal = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleanup")
            .block_on(work);
    });
    let _ = removal.join();
}

/// Removes a test image (by tag or id) on drop, like `ContainerGuard`.
pub struct ImageGuard {
    pub name: String,
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(async move {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            let _ = docker()
                .await
                .remove_image(&name, Some(options), None)
                .await;
        });
    }
}

/// A started stub engine container, published on 127.0.0.1 at a port Docker picked.
pub struct StubContainer {
    pub docker: Docker,
    pub name: String,
    /// `None` when the container exited before Docker reported the port.
    pub host_port: Option<u16>,
    // Last field: dropped after the others, removes the container.
    pub guard: ContainerGuard,
}

impl StubContainer {
    /// Creates and starts a container from the stub image with engine arguments `args`
    /// and env `env` (`KEY=value`), labelled `aima.test=stub`.
    pub async fn start(test: &str, args: &[&str], env: &[&str]) -> Self {
        let docker = docker().await;
        let image = stub_image(&docker).await;
        let name = unique(&format!("aima-test-stub-{test}"));
        let port_key = format!("{ENGINE_PORT}/tcp");
        let body = ContainerCreateBody {
            image: Some(image.tag),
            cmd: Some(args.iter().map(|a| (*a).to_owned()).collect()),
            env: Some(env.iter().map(|e| (*e).to_owned()).collect()),
            labels: Some(HashMap::from([("aima.test".to_owned(), "stub".to_owned())])),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                // An empty host port lets Docker pick a free one: no race with other tests.
                port_bindings: Some(HashMap::from([(
                    port_key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .expect("create the stub container");
        let guard = ContainerGuard { id: created.id };
        docker
            .start_container(&guard.id, None)
            .await
            .expect("start the stub container");
        let inspected = docker
            .inspect_container(&guard.id, None)
            .await
            .expect("inspect the stub container");
        let host_port = inspected
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&port_key))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|port| port.parse().ok());
        Self {
            docker,
            name,
            host_port,
            guard,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let port = self
            .host_port
            .unwrap_or_else(|| panic!("{} exited before Docker published its port", self.name));
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn id(&self) -> &str {
        &self.guard.id
    }

    /// Waits until `/health` answers 200; fails fast with the logs if the engine exits.
    pub async fn wait_healthy(&self) {
        if self.host_port.is_none() {
            panic!("{} exited at once:\n{}", self.name, self.logs().await);
        }
        let client = &http();
        let url = &self.url("/health");
        poll_until(
            "the stub engine to answer /health",
            DEADLINE,
            || async move {
                if let Some(code) = self.exit_code().await {
                    let logs = self.logs().await;
                    panic!(
                        "the stub engine {} exited with {code} before it was healthy:\n{logs}",
                        self.name
                    );
                }
                let response = client.get(url).send().await.ok()?;
                (response.status() == 200).then_some(())
            },
        )
        .await;
    }

    /// The exit code once the container has stopped, `None` while it runs.
    pub async fn exit_code(&self) -> Option<i64> {
        let state = self
            .docker
            .inspect_container(self.id(), None)
            .await
            .expect("inspect the stub container")
            .state?;
        if state.running == Some(true) {
            return None;
        }
        // Created but not yet started also reads as not running; it has no exit yet.
        match state.status {
            Some(bollard::models::ContainerStateStatusEnum::EXITED) => state.exit_code,
            _ => None,
        }
    }

    pub async fn wait_exit(&self) -> i64 {
        poll_until("the stub container to exit", DEADLINE, || self.exit_code()).await
    }

    pub async fn logs(&self) -> Logs {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = self.docker.logs(self.id(), Some(options));
        let mut logs = Logs::default();
        while let Some(item) = stream.next().await {
            match item.expect("read the container's logs") {
                bollard::container::LogOutput::StdErr { message } => {
                    logs.stderr.push_str(&String::from_utf8_lossy(&message));
                }
                other => logs.stdout.push_str(&other.to_string()),
            }
        }
        logs
    }
}

#[derive(Debug, Default)]
pub struct Logs {
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// A client whose requests cannot hang a test.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an http client")
}
