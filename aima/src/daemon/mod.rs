//! The daemon: owns the store and the runtime, runs every operation the API exposes
//! (model registry, service lifecycles, events), watches Docker, and shuts down gracefully.

mod database;
mod events;
mod gpus;
mod health;
mod host_ram;
mod lifecycle;
mod lock;
mod models;
mod placement;
mod ports;
mod pull;
mod reconcile;
mod restart;
mod room;
mod serve;
mod services;
mod watch;

pub use events::EventBus;
pub use gpus::{DeviceReport, GpuPlacementView, ModelAdvice, Recommendation};
pub use host_ram::HOST_RAM;
pub use lock::{HomeLock, LockError};
pub use models::ModelRequest;
pub use ports::{PortHolder, ephemeral_range};
pub use pull::PullUpdate;
pub use reconcile::Reconciled;
pub use room::{RoomNeed, Want};
pub use serve::Asker;
pub use services::{LogOutput, ServiceRequest, ServiceUpdate, Updated};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::{Invalid, ServiceId};
use crate::engines::Engines;
use crate::gpu::{GpuProbe, NvmlProbe, SimulatedProbe};
use crate::runtime::{ContainerRuntime, RuntimeError, RuntimeVersion};
use crate::store::{Store, StoreError};

/// Failures of daemon operations, mapped to HTTP statuses by `api/`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no {kind} with id, name or id prefix '{id}'; list them with 'aima {kind} list'")]
    NotFound { kind: &'static str, id: String },
    /// What was named is not there, in the words of whoever knows (a model with no
    /// service, a repository the hub does not have).
    #[error("{0}")]
    Missing(String),
    /// The disk has no room for what was asked.
    #[error("{0}")]
    NoRoom(String),
    /// The request is valid but clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (Docker) is not available right now.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        match e {
            // Names are the caller's to choose: a taken one is a conflict, not a fault.
            StoreError::NameTaken { name, holder } => Self::Conflict(format!(
                "the name '{name}' is taken by {holder}; pick another --name, or delete {holder}"
            )),
            StoreError::PortHeld(port) => Self::Conflict(format!(
                "port {port} is held by another service; pick another --port"
            )),
            other => Self::Store(other),
        }
    }
}

impl From<RuntimeError> for DaemonError {
    fn from(e: RuntimeError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// The daemon's shared state; cheap to clone into handlers and tasks.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Store,
    runtime: Arc<dyn ContainerRuntime>,
    engines: Engines,
    gpus: Arc<dyn GpuProbe>,
    /// Serializes GPU admission, so two starts never both count the same free memory.
    admission: tokio::sync::Mutex<()>,
    /// Serializes `ensure_service`, so a cold model gets one service however many ask.
    ensuring: tokio::sync::Mutex<()>,
    /// Models being pulled now.
    pulls: Mutex<std::collections::HashSet<crate::domain::ModelId>>,
    /// One engine loading at a time per GPU (by uuid): engines that load together
    /// misjudge free memory.
    gpu_loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `aima.instance` label of this home's containers.
    instance: String,
    bus: EventBus,
    /// One lifecycle operation at a time per service (start, stop, delete, watcher).
    service_locks: Mutex<HashMap<ServiceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Starts in flight, so a stop can cancel them.
    starts: Mutex<HashMap<ServiceId, CancellationToken>>,
    /// Why each service last failed (the status keeps only the words), for callers that
    /// act on the cause, such as the gateway retrying a start refused for room.
    last_failures: Mutex<HashMap<ServiceId, crate::domain::FailureCause>>,
    /// Cancelled at shutdown: background tasks end with it.
    shutdown: CancellationToken,
    started_at: Instant,
    /// What happened, counted for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// The last check that the database takes writes (`/api/v1/health`).
    write_check: database::WriteCheck,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("home", &self.inner.settings.home)
            .finish()
    }
}

/// What `aima status` shows.
#[derive(Debug, Clone)]
pub struct DaemonStatus {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_secs: u64,
    pub home: PathBuf,
    pub database: PathBuf,
    pub instance: String,
    pub docker_address: String,
    pub docker: Result<RuntimeVersion, RuntimeError>,
    pub gpus: crate::domain::GpuInventory,
}

impl Daemon {
    pub fn new(
        settings: Settings,
        store: Store,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> Result<Self, StoreError> {
        let instance = store.instance_id()?;
        let engines = Engines::new(&settings.engine_images);
        let gpus: Arc<dyn GpuProbe> = match &settings.simulate_gpus {
            Some(simulated) => Arc::new(SimulatedProbe::new(
                simulated.clone(),
                settings.simulate_gpu_release,
            )),
            None => Arc::new(NvmlProbe::default()),
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        Ok(Self {
            inner: Arc::new(Inner {
                bus: EventBus::new(store.clone(), metrics.clone()),
                metrics,
                gpus,
                admission: tokio::sync::Mutex::new(()),
                ensuring: tokio::sync::Mutex::new(()),
                pulls: Mutex::default(),
                gpu_loading: Mutex::default(),
                settings,
                store,
                runtime,
                engines,
                instance,
                service_locks: Mutex::default(),
                starts: Mutex::default(),
                last_failures: Mutex::default(),
                shutdown: CancellationToken::new(),
                started_at: Instant::now(),
                write_check: database::WriteCheck::default(),
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Where the daemon reaches Docker (`DOCKER_HOST`, or the default socket).
    pub fn docker_address(&self) -> &str {
        self.inner.runtime.address()
    }

    /// The image each engine of the catalog runs from here (overrides applied).
    pub fn engine_images(&self) -> std::collections::BTreeMap<String, String> {
        crate::engines::CATALOG
            .iter()
            .filter_map(|spec| self.inner.engines.get(spec.name))
            .map(|engine| (engine.spec.name.to_owned(), engine.image))
            .collect()
    }

    /// The `aima.instance` label value of this home.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    fn runtime(&self) -> &dyn ContainerRuntime {
        self.inner.runtime.as_ref()
    }

    /// The URL of `path` on an engine's host port: on the publish address, or on loopback
    /// when engines are published on every interface.
    /// Whether `service`'s engine answers only to its model's AIMA name (vLLM, SGLang,
    /// llama.cpp are started with it as their served name).
    pub fn serves_model_name(&self, service: &crate::domain::Service) -> bool {
        self.inner
            .engines
            .get(&service.engine)
            .is_some_and(|e| e.serves_model_name())
    }

    pub(crate) fn engine_url(&self, port: u16, path: &str) -> String {
        format!("http://{}{path}", self.engine_address(port))
    }

    /// Where the daemon reaches an engine's published port.
    pub(crate) fn engine_address(&self, port: u16) -> std::net::SocketAddr {
        let ip = match self.inner.settings.publish_addr {
            ip if !ip.is_unspecified() => ip,
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        std::net::SocketAddr::new(ip, port)
    }

    /// Labels every container of this instance carries.
    fn instance_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("aima.instance".to_owned(), self.inner.instance.clone())])
    }

    /// The lock serializing lifecycle operations of one service.
    fn service_lock(&self, id: &ServiceId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .service_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.clone()).or_default())
    }

    /// Starts the Docker watcher (which first reconciles every service with Docker) and
    /// the health monitor of running engines, and waits up to `wait` for that
    /// reconciliation. Background tasks end at [`Daemon::shutdown`].
    pub async fn start_background(&self, wait: std::time::Duration) -> Result<Reconciled, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(watch::run(
            self.clone(),
            self.inner.shutdown.clone(),
            Some(tx),
        ));
        tokio::spawn(health::run(self.clone(), self.inner.shutdown.clone()));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the docker watcher ended".to_owned()),
            Err(_) => Err(format!("docker did not answer within {wait:?}")),
        }
    }

    /// Cancelled when the daemon shuts down; following streams end with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Stops background tasks. Engine containers keep running.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Version, paths and whether Docker answers right now.
    pub async fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: crate::VERSION,
            pid: std::process::id(),
            uptime_secs: self.inner.started_at.elapsed().as_secs(),
            home: self.inner.settings.home.clone(),
            database: self.inner.store.path().to_owned(),
            instance: self.inner.instance.clone(),
            docker_address: self.inner.runtime.address().to_owned(),
            docker: self.inner.runtime.ping().await,
            gpus: self.gpu_inventory().await,
        }
    }
}
