//! The accept loop: HTTP/1.1 connections served by hyper under limits an idle or
//! hostile client cannot wear down: a header timeout (which is also the keep-alive idle
//! timeout), a cap on connections served at once, and a graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ServeOptions;

/// At most one "cap reached" line this often, so a flood does not flood the log too.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error (out of file handles): the error repeats at once otherwise.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The connections being served, and their limits; cheap to clone.
#[derive(Clone)]
pub(super) struct Connections {
    options: ServeOptions,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    /// When the cap was last reported, in ms since `epoch` (0: never).
    cap_logged_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Connections {
    pub(super) fn new(options: ServeOptions) -> Self {
        Self {
            options,
            slots: Arc::new(Semaphore::new(options.max_connections)),
            tasks: TaskTracker::new(),
            cap_logged_ms: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// Accepts until `draining`, then drops the listener and tells every connection to
    /// finish its request in flight and close.
    pub(super) async fn accept(
        self,
        listener: TcpListener,
        app: Router,
        draining: CancellationToken,
    ) {
        loop {
            let slot = match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    self.report_cap();
                    tokio::select! {
                        slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => return,
                        },
                        () = draining.cancelled() => break,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = draining.cancelled() => break,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try again soon.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let header_timeout = self.options.header_timeout;
            let draining = draining.clone();
            self.tasks.spawn(async move {
                let _slot = slot;
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true);
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection ended: {e}");
                        }
                        return;
                    }
                    () = draining.cancelled() => {}
                }
                connection.as_mut().graceful_shutdown();
                if let Err(e) = connection.await {
                    tracing::debug!("connection ended while draining: {e}");
                }
            });
        }
        self.tasks.close();
    }

    /// Resolves once every connection has closed (after `accept` ended).
    pub(super) async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn report_cap(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.cap_logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= CAP_LOG_EVERY.as_millis() as u64)
            && self
                .cap_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.options.max_connections,
                "connection cap reached: {} connections are open, new ones wait until one closes (silent ones close after {:?}); raise AIMA_MAX_CONNECTIONS if this load is expected",
                self.options.max_connections,
                self.options.header_timeout
            );
        }
    }
}
