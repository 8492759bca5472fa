//! The server entry: `aima start` and the in-process test daemon both come through here.
//! It sits above `api/`, `gateway/` and `daemon/` and composes them on one listener; the
//! connection limits live in `connections.rs`.

mod body_deadline;
mod connections;
mod run;

pub use body_deadline::{BodyRules, MIN_BODY_RATE};

pub use run::{StartError, run};

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::daemon::Daemon;

/// Longest the daemon waits for the first reconciliation before serving anyway.
const RECONCILE_WAIT: Duration = Duration::from_secs(30);

/// Timing knobs and limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// How long a request may take to produce its response head.
    pub request_timeout: Duration,
    /// How long a connection may take to send a request head, counted from when the
    /// server waits for it: on a new connection, and between requests on a kept-alive one
    /// (so it is the idle timeout too).
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long request bodies on `/v1` and `/mcp` may take.
    pub body: BodyRules,
    /// MCP sessions over HTTP at once (`AIMA_MCP_MAX_SESSIONS`).
    pub mcp_sessions: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: crate::config::DEFAULT_SHUTDOWN_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            body: BodyRules::default(),
            mcp_sessions: crate::mcp::DEFAULT_MAX_SESSIONS,
        }
    }
}

impl ServeOptions {
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Apache's keep-alive timeout is 5 s, nginx's header timeout 60 s; a local CLI sends
    /// its request at once, so 10 s is generous and frees a silent slot soon.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            drain_timeout: settings.shutdown_timeout,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_connections: settings.max_connections,
            body: BodyRules::default(),
            mcp_sessions: settings.mcp_max_sessions,
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
    // Ready means reconciled: the service list agrees with Docker before the first request.
    let started = std::time::Instant::now();
    match daemon.start_background(RECONCILE_WAIT).await {
        Ok(done) => tracing::info!(elapsed = ?started.elapsed(), ?done, "ready"),
        Err(e) => tracing::warn!("ready without reconciling ({e}); it runs when docker answers"),
    }
    // Under systemd (Type=notify) this marks the unit started; elsewhere it does nothing.
    notify_systemd(sd_notify::NotifyState::Ready);
    let app = app(daemon.clone(), &options, listener.local_addr()?);

    let draining = CancellationToken::new();
    let connections = connections::Connections::new(options);
    let accepting = tokio::spawn(connections.clone().accept(listener, app, draining.clone()));

    shutdown.await;
    tracing::info!(drain_timeout = ?options.drain_timeout, "shutting down: no new connections, draining in-flight requests");
    notify_systemd(sd_notify::NotifyState::Stopping);
    draining.cancel();
    // The accept loop owns the listener: once it ends, new connections are refused.
    let _ = accepting.await;
    // Background tasks and following streams end now; engine containers keep running.
    daemon.shutdown();
    if tokio::time::timeout(options.drain_timeout, connections.closed())
        .await
        .is_err()
    {
        tracing::warn!(drain_timeout = ?options.drain_timeout, "drain time is up; closing the remaining connections");
    }
    Ok(())
}

/// Everything on the one listener: the model gateway (`/v1/...`), the dashboard, the MCP
/// server (`/mcp`, a client of the API on `own_addr`), and the API and metrics for the
/// rest, behind one access guard and one request trace.
pub fn app(daemon: Daemon, options: &ServeOptions, own_addr: std::net::SocketAddr) -> axum::Router {
    let policy = std::sync::Arc::new(crate::api::AccessPolicy::new(
        daemon.settings().api_token.clone(),
    ));
    let gateway = crate::gateway::Gateway::new(daemon.clone());
    let traffic: std::sync::Arc<dyn crate::domain::TrafficSource> =
        std::sync::Arc::new(gateway.clone());
    let metrics = daemon.metrics().clone();
    // The MCP tools call the API through the front door, with the daemon's own token.
    let loopback = match own_addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let mcp_client = crate::cli::Client::new(
        std::net::SocketAddr::new(loopback, own_addr.port()),
        daemon.settings().api_token.clone(),
    );
    crate::gateway::router(gateway)
        .merge(crate::ui::router())
        .nest_service(
            "/mcp",
            crate::mcp::http_service(mcp_client, daemon.shutdown_token(), options.mcp_sessions),
        )
        .fallback_service(crate::api::router(daemon, options.request_timeout, traffic))
        // Inside the guard: a caller it refuses never gets to send a body.
        .layer(axum::middleware::from_fn_with_state(
            options.body,
            body_deadline::read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            policy,
            crate::api::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::record_http,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Tells systemd about readiness and stopping when it is the supervisor (`NOTIFY_SOCKET`).
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
