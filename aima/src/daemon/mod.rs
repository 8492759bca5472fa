//! The daemon: owns the store and the runtime, runs every operation the API exposes,
//! and shuts down gracefully.

mod lock;
mod models;
mod serve;
mod start;

pub use lock::{HomeLock, LockError};
pub use models::ModelRequest;
pub use serve::{ServeOptions, serve};
pub use start::{StartError, run};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::domain::Invalid;
use crate::runtime::{ContainerRuntime, RuntimeError, RuntimeVersion};
use crate::store::{Store, StoreError};

/// Failures of daemon operations, mapped to HTTP statuses by `api/`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no {kind} with id '{id}'; list them with 'aima {kind} list'")]
    NotFound { kind: &'static str, id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
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
    started_at: Instant,
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
    pub docker_address: String,
    pub docker: Result<RuntimeVersion, RuntimeError>,
}

impl Daemon {
    pub fn new(settings: Settings, store: Store, runtime: Arc<dyn ContainerRuntime>) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                runtime,
                started_at: Instant::now(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Version, paths and whether Docker answers right now.
    pub async fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: crate::VERSION,
            pid: std::process::id(),
            uptime_secs: self.inner.started_at.elapsed().as_secs(),
            home: self.inner.settings.home.clone(),
            database: self.inner.store.path().to_owned(),
            docker_address: self.inner.runtime.address().to_owned(),
            docker: self.inner.runtime.ping().await,
        }
    }
}
