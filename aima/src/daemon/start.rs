use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::{Daemon, HomeLock, LockError, ServeOptions, serve};
use crate::config::Settings;
use crate::runtime::{ContainerRuntime, DockerRuntime};
use crate::store::{Store, StoreError};

/// Why `aima start` could not run; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Home(#[from] LockError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error(
        "cannot listen on {addr}: {reason}; stop whatever holds it or choose another address with --addr or AIMA_ADDR"
    )]
    Bind {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// `aima start`: runs the daemon in the foreground until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    // Handlers first: a SIGTERM that arrives while we bind must mean "shut down
    // gracefully", not the default action of dying on the spot.
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;

    let data_dir = settings.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| LockError::NotWritable {
        home: settings.home.clone(),
        path: data_dir.clone(),
        source,
    })?;
    let _lock = HomeLock::acquire(&settings.home, &settings.lock_path())?;
    let store = Store::open(&settings.database_path())?;

    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|e| StartError::Bind {
            addr: settings.addr,
            reason: bind_reason(&e),
        })?;
    let local_addr = listener.local_addr().map_err(StartError::Serve)?;

    if let Some((first, last)) = super::ports::ephemeral_range() {
        let range = settings.port_range;
        if range.first <= last && range.last >= first {
            tracing::warn!(
                "AIMA_PORT_RANGE {range} overlaps the kernel's ephemeral ports {first}-{last}: outgoing connections can take service ports for a moment; choose a range below {first}"
            );
        }
    }
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::from_env());
    let options = ServeOptions::from_settings(&settings);
    let daemon = Daemon::new(settings, store, Arc::clone(&runtime))?;
    tokio::spawn(report_docker(runtime));

    tracing::info!(
        addr = %local_addr,
        home = %daemon.settings().home.display(),
        pid = std::process::id(),
        "aima daemon listening on http://{local_addr}"
    );

    let shutdown = async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; send the signal again to exit at once"
        );
        // A second signal means the operator will not wait for the drain.
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::warn!("second signal: exiting without waiting for in-flight requests");
            std::process::exit(1);
        });
    };
    serve(listener, daemon, shutdown, options)
        .await
        .map_err(StartError::Serve)?;
    tracing::info!("aima daemon stopped");
    Ok(())
}

/// Docker's state is worth a line at start, but the API must not wait for it.
async fn report_docker(runtime: Arc<dyn ContainerRuntime>) {
    match runtime.ping().await {
        Ok(v) => {
            tracing::info!(docker = runtime.address(), engine = %v.server_version, api = %v.api_version, "docker reachable")
        }
        Err(e) => tracing::warn!("{e}; service starts will fail until it answers"),
    }
}

fn bind_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_owned()
        }
        _ => e.to_string(),
    }
}
