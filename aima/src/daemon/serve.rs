use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Daemon;
use crate::config::Settings;

/// Longest the daemon waits for the first reconciliation before serving anyway.
const RECONCILE_WAIT: Duration = Duration::from_secs(30);

/// Timing knobs of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// How long a request may take to produce its response head.
    pub request_timeout: Duration,
}

impl ServeOptions {
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            drain_timeout: settings.shutdown_timeout,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting at once
/// (the listener is closed, so new connections are refused) and gives in-flight requests
/// up to `drain_timeout` to finish. Production passes the signal future; tests bind
/// `127.0.0.1:0` and pass a oneshot.
pub async fn serve(
    listener: TcpListener,
    daemon: Daemon,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    let (draining_tx, mut draining_rx) = watch::channel(false);
    // Ready means reconciled: the service list agrees with Docker before the first request.
    let started = std::time::Instant::now();
    match daemon.start_background(RECONCILE_WAIT).await {
        Ok(done) => tracing::info!(elapsed = ?started.elapsed(), ?done, "ready"),
        Err(e) => tracing::warn!("ready without reconciling ({e}); it runs when docker answers"),
    }
    // Under systemd (Type=notify) this marks the unit started; elsewhere it does nothing.
    notify_systemd(sd_notify::NotifyState::Ready);
    let app = crate::api::router(daemon.clone(), options.request_timeout);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = draining_rx.wait_for(|draining| *draining).await;
        })
        .into_future();
    let mut server = std::pin::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!(drain_timeout = ?options.drain_timeout, "shutting down: no new connections, draining in-flight requests");
    notify_systemd(sd_notify::NotifyState::Stopping);
    let _ = draining_tx.send(true);
    // Background tasks and following streams end now; engine containers keep running.
    daemon.shutdown();
    // axum waits for in-flight requests without a limit, so the drain time is ours to enforce.
    match tokio::time::timeout(options.drain_timeout, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(drain_timeout = ?options.drain_timeout, "drain time is up; closing the remaining connections");
            Ok(())
        }
    }
}

/// Tells systemd about readiness and stopping when it is the supervisor (`NOTIFY_SOCKET`).
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
