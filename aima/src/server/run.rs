use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::{ServeOptions, serve};
use crate::config::Settings;
use crate::daemon::{Daemon, HomeLock, LockError};
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
    #[error(
        "refusing to listen on {addr} without an API token: anyone who reaches it could run containers on this host; set AIMA_API_TOKEN (or write one to {token_file} with mode 600), or listen on 127.0.0.1"
    )]
    ExposedWithoutToken {
        addr: std::net::SocketAddr,
        token_file: std::path::PathBuf,
    },
}

/// File handles kept out of the connection cap for the database, Docker, health probes
/// and the engines' cleanup, so a full house of clients cannot starve them.
const RESERVED_FILES: u64 = 512;

/// `aima start`: runs the daemon in the foreground until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    // Handlers first: a SIGTERM that arrives while we bind must mean "shut down
    // gracefully", not the default action of dying on the spot.
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;

    if !settings.addr.ip().is_loopback() && settings.api_token.is_none() {
        return Err(StartError::ExposedWithoutToken {
            addr: settings.addr,
            token_file: settings.home.join(crate::config::TOKEN_FILE),
        });
    }
    // The database holds service environments (often secrets): files the daemon creates
    // are for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let data_dir = settings.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| LockError::NotWritable {
        home: settings.home.clone(),
        path: data_dir.clone(),
        source,
    })?;
    make_private(&[&settings.home, &data_dir], &settings.database_path());
    let _lock = HomeLock::acquire(&settings.home, &settings.lock_path())?;
    let store = Store::open(&settings.database_path())?;

    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|e| StartError::Bind {
            addr: settings.addr,
            reason: bind_reason(&e),
        })?;
    let local_addr = listener.local_addr().map_err(StartError::Serve)?;

    if let Some((first, last)) = crate::daemon::ephemeral_range() {
        let range = settings.port_range;
        if range.first <= last && range.last >= first {
            tracing::warn!(
                "AIMA_PORT_RANGE {range} overlaps the kernel's ephemeral ports {first}-{last}: outgoing connections can take service ports for a moment; choose a range below {first}"
            );
        }
    }
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::from_env());
    let mut options = ServeOptions::from_settings(&settings);
    options.max_connections = connection_cap(options.max_connections);
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

/// Tightens the home, data directory and database files to the daemon's user (0700 and
/// 0600) when an older version or another tool left them open.
fn make_private(dirs: &[&std::path::Path], database: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let files = ["", "-wal", "-shm"].map(|suffix| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    });
    let wanted = dirs
        .iter()
        .map(|d| (d.to_path_buf(), 0o700))
        .chain(files.into_iter().map(|f| (f, 0o600)));
    for (path, mode) in wanted {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => tracing::info!(path = %path.display(), "made private (mode {mode:o})"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "others can read this; cannot chmod it: {e}")
                }
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit (the default soft limit of
/// 1024 is what a few hundred clients used to exhaust), then fits the connection cap
/// under it with room left for the daemon's own work.
fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => return wanted,
    };
    let room = limit.saturating_sub(RESERVED_FILES).max(16);
    let cap = (wanted as u64).min(room) as usize;
    if cap < wanted {
        tracing::warn!(
            "serving at most {cap} connections, not {wanted}: the open-file limit is {limit} and {RESERVED_FILES} handles are kept for Docker, the database and health probes; raise LimitNOFILE (ulimit -n) to serve more"
        );
    }
    cap
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
